"""The container as its users run it: image, compose file and real clients (run by scripts/test_container)."""
