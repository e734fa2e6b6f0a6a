"""The conda side: channels laid out as the anaconda mirrors do (`pkgs/<name>`, `cloud/<name>`)."""
