"""What `/-/health` checks: that this node can serve, which is what a load balancer needs to know.

"Can serve" is three things, all checked on every call:
- the process answers (the check is answered by the event loop that serves everything else);
- the data directory takes writes: a small file is created, written and removed in its `tmp/`, where downloads
  are written (this catches a read-only remount, a lost permission, a dead disk);
- it has room: the free space of its file system is at least `[server] min_free_space`.

It does not look at the upstreams: while every upstream fails, the node still serves everything it has cached (and
its pages stale), so it stays healthy, and a load balancer must keep sending it requests (taking it out would only
move its requests to nodes that have neither the files nor better upstreams). Upstream health is in `/-/status`,
the page and `/metrics`.

The check runs in a thread (a disk that hangs must not hang the event loop), one at a time, and gives up after
`PROBE_TIMEOUT` seconds: a data directory that does not answer in that time is unhealthy.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pkgcache.formatting import format_bytes

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Readiness:
    """The outcome of one check: `problem` is None when the node can serve, else what is wrong, in words."""

    problem: str | None
    free_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class DataDirCheck:
    """Whether a data directory takes writes and has room; asked off the event loop, one probe at a time."""

    def __init__(self, write_dir: Path, min_free: int, timeout: float = PROBE_TIMEOUT) -> None:
        self.write_dir = write_dir
        self.min_free = min_free
        self.timeout = timeout
        self._probe: asyncio.Future[Readiness] | None = None

    async def readiness(self) -> Readiness:
        if self._probe is None or self._probe.done():
            # A probe still running (a slow disk) is waited for again rather than doubled.
            self._probe = asyncio.ensure_future(asyncio.to_thread(probe_data_dir, self.write_dir, self.min_free))
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), self.timeout)
        except TimeoutError:
            return Readiness(f"the data directory did not answer within {self.timeout:g} s")


def probe_data_dir(write_dir: Path, min_free: int) -> Readiness:
    """Write, remove and measure, in `write_dir` (blocking)."""
    try:
        usage = os.statvfs(write_dir)
    except OSError as exc:
        return Readiness(f"cannot look at the data directory {write_dir}: {exc.strerror or exc}")
    free = usage.f_bavail * usage.f_frsize
    try:
        handle, name = tempfile.mkstemp(prefix=".health-", dir=write_dir)
        try:
            os.write(handle, b"pkgcache health check\n")
        finally:
            os.close(handle)
            os.unlink(name)
    except OSError as exc:
        return Readiness(f"cannot write in the data directory {write_dir}: {exc.strerror or exc}", free)
    if free < min_free:
        return Readiness(
            f"only {format_bytes(free)} free in the data directory, under the {format_bytes(min_free)} kept free",
            free,
        )
    return Readiness(None, free)
