"""The access log: one line per request, written in batches.

Python's `logging` costs about a third of a warm project page's time (a record, a formatted time and a flushed
write for every request), so request lines bypass it: each is one f-string, and the lines go out together every
`FLUSH_SECONDS` (and at shutdown). The lines keep the shape of pkgcache's other log lines. They are written when
the `pkgcache.access` logger is enabled for INFO, which `server.log_level` decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import TextIO

LOGGER_NAME = "pkgcache.access"
FLUSH_SECONDS = 0.2
MAX_BUFFERED_LINES = 1000


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream  # None: whatever sys.stderr is when lines are written
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        self._flusher: asyncio.Task[None] | None = None
        self.enabled = logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO)

    def record(
        self,
        method: str,
        path: str,
        status: int,
        cache: str,
        size: int,
        seconds: float,
        upstream: str,
        now: float | None = None,
    ) -> None:
        if not self.enabled:
            return
        if now is None:
            now = time.time()
        if not path.isprintable():
            path = _escaped(path)  # a CR/LF in a request path must not forge a line of its own
        if "@" in upstream:
            # Named by its host and port: a page or index file kept from before an upstream's credentials were taken
            # out of its name (`office:password@central:3150`) still names it so.
            upstream = upstream.rpartition("@")[2]
        line = (
            f"{self._timestamp(now)},{int(now % 1 * 1000):03d} INFO {LOGGER_NAME}: {method} {path} {status} "
            f"cache={cache} bytes={size} ms={seconds * 1000:.1f} upstream={upstream}\n"
        )
        self._lines.append(line)
        if len(self._lines) >= MAX_BUFFERED_LINES:
            self.flush()

    def _timestamp(self, now: float) -> str:
        # Formatting a time is the dear part of a line: do it once a second.
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._stamp

    def flush(self) -> None:
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        stream = self._stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):  # a closed or full log must not take requests down
            stream.flush()  # what other writers left in it goes first
            try:
                fd = stream.fileno()
            except (OSError, ValueError, AttributeError):
                stream.write(text)
                stream.flush()
                return
            _write_all(fd, text.encode())

    def start(self) -> None:
        if self.enabled and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()


def _write_all(fd: int, data: bytes) -> None:
    # One write call per batch of whole lines: worker processes share the log, and a single write to a file is not
    # interleaved with another's, where a buffered stream could split a line between two calls.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _escaped(text: str) -> str:
    """Control characters and other unprintables as \\xHH escapes, so one request stays one line."""
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
