"""Acting as the data directory's owner when run as root (`sudo pkgcache import ...`).

The service runs as its own user (`pkgcache` under systemd, uid 10001 in the container). A command run as root on
its data directory would leave root-owned files and folders there, and the service would then fail to write next to
them (a 500 saying EACCES on the next file it caches, an eviction or an import that cannot remove). So every command
that works on a data directory, given the effective uid 0 and a data directory owned by another user, becomes that
user (its group and supplementary groups too) before it touches anything, and says so on stderr.

It happens where a command learns its data directory: `locate.locate_instance` for every command after `start`
(import, export, seed, gc, purge, refresh, verify, block, unblock, stop, restart...), `start` and `serve` for
theirs. A data directory that does not exist yet, or that root owns, is left to root.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

try:
    import pwd
except ImportError:  # not on POSIX: there is no root to switch from
    pwd = None  # type: ignore[assignment]


def act_as_data_dir_owner(data_dir: Path) -> None:
    """Become the owner of `data_dir` if this process runs as root and another user owns it; else do nothing."""
    if pwd is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    try:
        owner = data_dir.stat()
    except OSError:
        return  # not there yet (start makes it, as root) or not a directory: nothing of another user's to keep
    if owner.st_uid == 0:
        return
    uid = owner.st_uid
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        entry = None  # a uid with no account here (a container's, say): its folder's group, and no other groups
    name = entry.pw_name if entry is not None else None
    gid = entry.pw_gid if entry is not None else owner.st_gid
    who = f"{name} (uid {uid})" if name else f"uid {uid}"
    click.echo(
        f"pkgcache: the data directory {data_dir} belongs to {who}: running as that user, not as root, so that "
        "the service can still write everything this command writes there",
        err=True,
    )
    try:
        os.setgid(gid)
        if name is not None:
            os.initgroups(name, gid)
        else:
            os.setgroups([gid])
        os.setuid(uid)
    except OSError as exc:
        raise click.ClickException(
            f"cannot switch to {who}, the owner of {data_dir}: {exc.strerror or exc}; run the command as that user "
            f"(sudo -u {name or '#' + str(uid)} pkgcache ...)"
        ) from None
