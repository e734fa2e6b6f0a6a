"""The cache on disk: where each entry lives, and writing small files so that a reader never sees half of one.

Every path is built from validated segments and checked to stay inside the data directory, whatever a request
asked for. Files are written under `tmp/` and moved into place with one rename, so a crash at any moment leaves
either the old entry, the new one, or none, never a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pkgcache.storage.file_use import FileUse

_R = TypeVar("_R")

MAX_SEGMENT_LENGTH = 255
MAX_FOLDERS_REMEMBERED = 100_000
# A process that only reads the cache looks again at the files behind what it holds in memory this often, so what
# the writing process changed (a revalidated page, a purge) reaches it within about this long.
READER_RECHECK_SECONDS = 1.0
# Separators, and control characters (NUL among them).
_FORBIDDEN_CHARACTER = re.compile(r"[/\\\x00-\x1f]")


class UnsafePath(ValueError):
    """A path segment that could reach outside the cache (or is just not a file name)."""


class StorageError(Exception):
    """The cache could not write (`disk_full` when there was no room): the cache's fault, never an upstream's.

    Its text is for the operator (what failed, its errno's name, where); `reason` is what a client may be told:
    the same without the server's paths."""

    def __init__(self, message: str, *, disk_full: bool = False, reason: str | None = None) -> None:
        super().__init__(message)
        self.disk_full = disk_full
        self.reason = reason or message


def storage_error(exc: OSError) -> StorageError:
    disk_full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = errno.errorcode.get(exc.errno) if exc.errno else None
    reason = f"cannot write to the cache: {exc.strerror or exc}" + (f" ({code})" if code else "")
    return StorageError(reason + _where(exc), disk_full=disk_full, reason=reason)


def _where(exc: OSError) -> str:
    """The path(s) an OSError names: what an operator has to fix (a folder made read-only, a file in its place)."""
    if exc.filename is None:
        return ""
    if exc.filename2 is None:
        return f" at {exc.filename}"
    return f" at {exc.filename} -> {exc.filename2}"


def check_folder(folder: Path) -> None:
    """Check that files can be renamed into `folder`, or into the folder it will be made in (blocking); an OSError
    naming the folder at fault if not. Makes nothing: a download that fails leaves no empty folder behind.

    Called once per download, before its first byte: a folder that cannot take the file (a file in its place, a
    read-only mount, another user's folder) then fails the download while its clients can still be answered,
    instead of at the rename into place, after they were sent all of the file but its last byte."""
    existing, found = folder, None
    while found is None:
        try:
            found = os.stat(existing)
        except (FileNotFoundError, NotADirectoryError):
            if existing.parent == existing:
                raise
            existing = existing.parent  # made at the commit: its nearest existing folder must take it
    if not stat.S_ISDIR(found.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(existing))


async def in_storage_thread(function: Callable[..., _R], *args: object) -> _R:
    """Run a blocking operation that writes the cache (a file made here, a download's chunk) in a worker thread;
    its OSError is the cache's, never an upstream's: a StorageError, so a full disk answers 507, not 500."""
    try:
        return await asyncio.to_thread(function, *args)
    except OSError as exc:
        raise storage_error(exc) from exc


class CacheIsReadOnly(Exception):
    """This process only reads the cache: fetching or writing is another process's job (see workers/)."""


def check_segment(segment: str) -> str:
    """Return `segment` if it is safe as one file or folder name inside the cache, else raise UnsafePath."""
    if not segment or segment in (".", ".."):
        raise UnsafePath(f"empty or relative path segment {segment!r}")
    if len(segment.encode()) > MAX_SEGMENT_LENGTH:
        raise UnsafePath("path segment is too long")
    if _FORBIDDEN_CHARACTER.search(segment):
        raise UnsafePath(f"forbidden character in path segment {segment!r}")
    if segment.startswith("."):
        # Hidden names are ours (temporary files, metadata); no request may address them.
        raise UnsafePath(f"path segment {segment!r} starts with a dot")
    return segment


class CacheStore:
    """The data directory: cached entries under their areas (`pypi/`, `conda/`), temporary files under `tmp/`.

    With several worker processes only one may write (`writable`); the others read what it wrote, and every path
    that would fetch or write calls `require_writable` first, so that they hand such requests over instead.
    """

    def __init__(self, root: Path, *, writable: bool = True) -> None:
        self.root = root.absolute()
        self.tmp_dir = self.root / "tmp"
        self.writable = writable
        # Which files are being sent and when each was last served: what sends files tells what evicts them.
        self.file_use = FileUse()
        self._real_root: Path | None = None
        self._folders_inside: set[Path] = set()

    def require_writable(self) -> None:
        if not self.writable:
            raise CacheIsReadOnly("this worker only reads the cache")

    def prepare(self) -> None:
        """Create the directory tree and drop leftovers of downloads cut off by a crash or kill."""
        self.require_writable()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, *segments: str) -> Path:
        """The path of a cache entry, from segments that are each checked; never outside the data directory."""
        for segment in segments:
            check_segment(segment)
        path = self.root.joinpath(*segments)
        if not self._stays_inside(path):
            raise UnsafePath("path leaves the data directory")
        return path

    def _stays_inside(self, path: Path) -> bool:
        """Belt and braces: the segments are safe already, but a symlink planted in the tree must not lead out.

        Resolving a whole path is a dozen system calls and cost more than the rest of serving a cached file, so each
        folder is resolved once (there are few, and pkgcache makes them) and the entry itself is checked every time
        with one lstat. A folder replaced by a symlink after it was first checked is followed until restart.
        """
        if self._real_root is None:
            self._real_root = self.root.resolve(strict=False)
        parent = path.parent
        if parent not in self._folders_inside:
            if not parent.resolve(strict=False).is_relative_to(self._real_root):
                return False
            if len(self._folders_inside) >= MAX_FOLDERS_REMEMBERED:
                self._folders_inside.clear()
            self._folders_inside.add(parent)
        if os.path.islink(path):
            return path.resolve(strict=False).is_relative_to(self._real_root)
        return True

    def new_temp_path(self, hint: str = "") -> Path:
        self.require_writable()
        suffix = f"-{hint[:40]}" if hint else ""
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}.part"

    def write_bytes_atomic(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        """Write a small file whole, or not at all (blocking: call from a worker thread on hot paths).

        `durable`: flushed to the disk before it is renamed into place, so that it survives a power cut whole.
        Entries that are copies pkgcache can make again (a page.json, a metadata.json) pass False: a power cut
        may then leave one empty or cut short, which its reader takes for absent (it is not valid JSON), and
        the fsync would cost every cold miss a wait for the disk."""
        self.require_writable()
        temp = self.new_temp_path(path.name)
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, path)
        except OSError as exc:
            raise storage_error(exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def write_json_atomic(self, path: Path, value: Any, *, durable: bool = True) -> None:
        self.write_bytes_atomic(path, json.dumps(value, separators=(",", ":")).encode(), durable=durable)

    def commit_file(self, temp: Path, path: Path) -> None:
        """Move a finished, verified temporary file into place (blocking), its bytes flushed to the disk first.

        Without the flush, a power cut soon after the rename can leave the entry cut short or empty (the file
        system writes the rename before data it has not yet placed), and a cached file is served without being
        hashed again. The flush costs about 0.5 ms a MB on a disk that caches writes, paid once per download."""
        self.require_writable()
        try:
            _flush_to_disk(temp)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, path)
        except OSError as exc:
            raise storage_error(exc) from exc

    def read_json(self, path: Path) -> Any | None:
        """The JSON in `path`, or None if it is missing or unreadable (a damaged entry is treated as absent)."""
        found = self.read_json_stamped(path)
        return None if found is None else found[0]

    def read_json_stamped(self, path: Path) -> tuple[Any, Stamp] | None:
        """The JSON in `path` and the stamp of the very file it was read from, or None (missing or damaged)."""
        try:
            with path.open("rb") as handle:
                return json.loads(handle.read()), stamp_of(os.fstat(handle.fileno()))
        except (OSError, ValueError):
            return None


def _flush_to_disk(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)


# What tells one version of a file from the next: its modification time, size and inode. Files here are replaced by
# rename, never rewritten in place, so a new version always brings a new inode, even when its mtime was set back
# (an import gives files the mtime they had on the machine they come from) and its size is the same.
Stamp = tuple[int, int, int]


def stamp_of(stat: os.stat_result) -> Stamp:
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def file_stamp(path: Path) -> Stamp | None:
    """The stamp of the file at `path`, or None if there is none (blocking)."""
    try:
        return stamp_of(path.stat())
    except OSError:
        return None
