"""The cache on disk: where each entry lives, and writing small files so that a reader never sees half of one.

Every path is built from validated segments and checked to stay inside the data directory, whatever a request
asked for. Files are written under `tmp/` and moved into place with one rename, so a crash at any moment leaves
either the old entry, the new one, or none, never a partial file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

MAX_SEGMENT_LENGTH = 255
_FORBIDDEN_CHARACTERS = frozenset("/\\\x00")


class UnsafePath(ValueError):
    """A path segment that could reach outside the cache (or is just not a file name)."""


def check_segment(segment: str) -> str:
    """Return `segment` if it is safe as one file or folder name inside the cache, else raise UnsafePath."""
    if not segment or segment in (".", ".."):
        raise UnsafePath(f"empty or relative path segment {segment!r}")
    if len(segment.encode()) > MAX_SEGMENT_LENGTH:
        raise UnsafePath("path segment is too long")
    if any(char in _FORBIDDEN_CHARACTERS for char in segment) or any(ord(char) < 32 for char in segment):
        raise UnsafePath(f"forbidden character in path segment {segment!r}")
    if segment.startswith("."):
        # Hidden names are ours (temporary files, metadata); no request may address them.
        raise UnsafePath(f"path segment {segment!r} starts with a dot")
    return segment


class CacheStore:
    """The data directory: cached entries under their areas (`pypi/`, `conda/`), temporary files under `tmp/`."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.tmp_dir = self.root / "tmp"

    def prepare(self) -> None:
        """Create the directory tree and drop leftovers of downloads cut off by a crash or kill."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, *segments: str) -> Path:
        """The path of a cache entry, from segments that are each checked; never outside the data directory."""
        for segment in segments:
            check_segment(segment)
        path = self.root.joinpath(*segments)
        # Belt and braces: the segments are already safe, but a symlink planted in the tree must not lead out.
        if not path.resolve(strict=False).is_relative_to(self.root.resolve()):
            raise UnsafePath("path leaves the data directory")
        return path

    def new_temp_path(self, hint: str = "") -> Path:
        suffix = f"-{hint[:40]}" if hint else ""
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}.part"

    def write_bytes_atomic(self, path: Path, data: bytes) -> None:
        """Write a small file whole, or not at all (blocking: call from a worker thread on hot paths)."""
        temp = self.new_temp_path(path.name)
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def write_json_atomic(self, path: Path, value: Any) -> None:
        self.write_bytes_atomic(path, json.dumps(value, separators=(",", ":")).encode())

    def commit_file(self, temp: Path, path: Path) -> None:
        """Move a finished, verified temporary file into place (blocking)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, path)

    def read_json(self, path: Path) -> Any | None:
        """The JSON in `path`, or None if it is missing or unreadable (a damaged entry is treated as absent)."""
        try:
            return json.loads(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            return None
