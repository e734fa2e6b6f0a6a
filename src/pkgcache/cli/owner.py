"""Acting as the data directory's owner when run as root (`sudo pkgcache import ...`).

The service runs as its own user (`pkgcache` under systemd, uid 10001 in the container). A command run as root on
its data directory would leave root-owned files and folders there, and the service would then fail to write next to
them (a 500 saying EACCES on the next file it caches, an eviction or an import that cannot remove). So every command
that works on a data directory, given the effective uid 0 and a data directory owned by another user, becomes that
user (its group and supplementary groups too) before it touches anything, and says so on stderr.

It happens where a command learns its data directory: `locate.locate_instance` for every command after `start`
(import, export, seed, gc, purge, refresh, verify, block, unblock, stop, restart...), `start` and `serve` for
theirs. A data directory that does not exist yet, or that root owns, is left to root.

Before switching it checks, as root, that the owner can read what the process still needs: its Python (that `start`
runs again), the standard library and the folders of the modules imported so far (lazy imports, such as
encodings.idna at the first getaddrinfo). A Python under /root, say, would make the command fail part way with a
traceback once switched; it is refused at once instead, saying which path and what to do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable
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
    as_owner = f"sudo -u {name or '#' + str(uid)} pkgcache ..."
    # Once switched, this process still imports modules lazily (encodings.idna at the first getaddrinfo, say) and
    # `start` execs this Python again: a Python the owner cannot read (one under /root) would crash later with a
    # traceback, after the switch. So check first, as root, and refuse with what to do instead.
    refused = first_unreadable(needed_paths(), uid, _groups_of(name, gid))
    if refused is not None:
        needed, at = refused
        where = "" if at == needed else f": {at} {_mode_of(at)} refuses it"
        raise click.ClickException(
            f"not switching to {who}, the owner of the data directory {data_dir}: that user cannot read {needed}"
            f"{where}, and this command still needs it (its Python or its modules), so it would fail part way. "
            f"Install pkgcache where {who} can read it (as deploy/pkgcache.service and the container do), or run "
            f"the command as that user ({as_owner}), or, if no service runs as that user, give the data directory "
            f"to the user running the command (chown -R)"
        )
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
            f"({as_owner})"
        ) from None


def _groups_of(name: str | None, gid: int) -> frozenset[int]:
    """The groups the process will have once switched (those initgroups gives, or the one group)."""
    if name is None:
        return frozenset({gid})
    try:
        return frozenset(os.getgrouplist(name, gid))
    except OSError:
        return frozenset({gid})


def needed_paths() -> list[tuple[Path, int]]:
    """What this process reads after the switch, each with the access it needs: the interpreter (`start` runs it
    again), its prefixes and standard library, and the folder of every module imported so far (pkgcache, its
    dependencies, lib-dynload), where its lazy imports find their modules."""
    folders = {sys.prefix, sys.base_prefix}
    for module in list(sys.modules.values()):  # encodings among them: the standard library's folder
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            folders.add(os.path.dirname(os.path.abspath(file)))
    needs = [(Path(folder), os.R_OK | os.X_OK) for folder in sorted(folders)]
    if sys.executable:
        needs.insert(0, (Path(sys.executable), os.R_OK | os.X_OK))
    return needs


def first_unreadable(needs: Iterable[tuple[Path, int]], uid: int, gids: Collection[int]) -> tuple[Path, Path] | None:
    """The first path that `uid` with the groups `gids` cannot use as `needs` says (os.R_OK, os.X_OK: a folder
    wants both, to be searched and listed), with where it is refused (itself or a folder above it); else None.

    Every folder above a path must let it search (x). A link is followed: the folders above its target count too.
    A path that does not exist is skipped (nothing to read there). Mode bits only: ACLs are not consulted."""
    for path, access in needs:
        absolute = Path(os.path.abspath(path))
        if not absolute.exists():
            continue
        for target in dict.fromkeys([absolute, Path(os.path.realpath(absolute))]):
            for folder in reversed(target.parents):
                if not _allowed(folder, uid, gids, os.X_OK):
                    return path, folder
            if not _allowed(target, uid, gids, access):
                return path, target
    return None


def _allowed(path: Path, uid: int, gids: Collection[int], access: int) -> bool:
    """Whether the mode bits of `path` give `access` to `uid`: the owner's bits when it owns the path, else the
    group's when one of `gids` owns it, else the others' (the kernel's order: a class that matches never falls
    through to the next one)."""
    try:
        info = path.stat()
    except OSError:
        return True  # gone meanwhile: nothing there to be refused
    shift = 6 if info.st_uid == uid else 3 if info.st_gid in gids else 0
    granted = (info.st_mode >> shift) & 0o7
    wanted = (4 if access & os.R_OK else 0) | (1 if access & os.X_OK else 0)
    return granted & wanted == wanted


def _mode_of(path: Path) -> str:
    """`path`'s mode and owners, as the error shows them (e.g. "(0700, uid 0, gid 0)")."""
    try:
        info = path.stat()
    except OSError:
        return ""
    return f"({info.st_mode & 0o7777:04o}, uid {info.st_uid}, gid {info.st_gid})"
