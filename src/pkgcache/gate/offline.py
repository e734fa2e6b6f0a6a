"""Offline: the pool that never sends a request, and when a side's upstreams are all down.

With `[server] offline = true` each side's pool is an `OfflinePool`: every fetch fails at once, before any
connection, so no request can leave whatever layer asks. The side's filter layer shows the offline view (only
what the cache holds) and answers what is missing with a clear 404.

Without it, a side whose every upstream is resting after failures (`all_resting`) is shown the same offline view
until one of them is tried again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pkgcache.upstream.pool import Upstream, UpstreamPool, UpstreamsUnavailable

T = TypeVar("T")

OFFLINE_REASON = "offline mode ([server] offline = true): no upstream is asked"


class OfflinePool(UpstreamPool):
    """A pool with the configured upstreams (for the status page) that never contacts any of them."""

    def candidates(self) -> list[Upstream]:
        return []

    async def fetch(self, target: Callable[[Upstream], str | None], handle: Callable[..., Awaitable[T]], **_: Any) -> T:
        raise UpstreamsUnavailable({upstream.name: OFFLINE_REASON for upstream in self.upstreams})

    def status(self) -> list[dict[str, object]]:
        return [
            {**entry, "healthy": False, "offline": True, "last_error": OFFLINE_REASON} for entry in super().status()
        ]


def all_resting(pool: UpstreamPool, now: float | None = None) -> bool:
    """Whether every upstream of the pool is resting after failures (none would be asked now)."""
    moment = time.monotonic() if now is None else now
    return all(upstream.is_cooling_down(moment) for upstream in pool.upstreams)
