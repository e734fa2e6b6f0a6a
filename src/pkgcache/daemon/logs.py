"""The log file of a background instance: rotated at start, read from its end, followed as it grows."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOG_ROTATE_BYTES = 20 * 1024 * 1024
# A record below WARNING, as `serve` formats them ("2026-11-30 08:00:00,123 INFO pkgcache.access: ..."): the access
# lines and start-up notes, which say nothing about why a start failed.
_ROUTINE_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO) ")


def rotate_log(path: Path, limit: int = LOG_ROTATE_BYTES) -> None:
    """Keep one previous log (`.1`) when the log has grown past `limit`."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))


def tail_lines(path: Path, count: int, block: int = 8192) -> list[bytes]:
    """The last `count` lines of a file, read from its end."""
    if count <= 0:
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.splitlines(keepends=True)
    return lines[-count:]


def follow(path: Path, out: IO[bytes], keep_going: Callable[[], bool] = lambda: True, poll: float = 0.25) -> None:
    """Copy what is appended to `path` to `out` as it arrives; follows a rotated or truncated log."""
    handle: IO[bytes] = path.open("rb")
    handle.seek(0, os.SEEK_END)
    try:
        while keep_going():
            chunk = handle.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if _replaced_or_truncated(handle, path):
                handle.close()
                reopened = _wait_open(path, keep_going, poll)
                if reopened is None:
                    return
                handle = reopened
                continue
            time.sleep(poll)
    finally:
        if not handle.closed:
            handle.close()


def _replaced_or_truncated(handle: IO[bytes], path: Path) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return True
    return current.st_ino != os.fstat(handle.fileno()).st_ino or current.st_size < handle.tell()


def _wait_open(path: Path, keep_going: Callable[[], bool], poll: float) -> IO[bytes] | None:
    while keep_going():
        with contextlib.suppress(FileNotFoundError):
            return path.open("rb")
        time.sleep(poll)
    return None


def read_from(path: Path, offset: int) -> str:
    """What was written to a file after `offset` (for showing why a start failed)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def problem_lines(text: str, limit: int) -> list[str]:
    """The last `limit` lines of `text` that are not routine log records: warnings, errors, tracebacks, and what
    the process printed itself."""
    lines = [line for line in text.splitlines() if line.strip() and not _ROUTINE_RECORD.match(line)]
    return lines[-limit:]
