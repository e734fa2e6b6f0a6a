"""Offline: the pool that never sends a request, and when a side's upstreams are all down.

With `[server] offline = true` each side's pool is an `OfflinePool`: every fetch fails at once, before any
connection, so no request can leave whatever layer asks. The side's filter layer shows the offline view (only
what the cache holds) and answers what is missing with a clear 404.

Without it, a side is shown the same offline view from the moment every upstream of it rests after failures
(`all_resting`) until an answer proves one of them up (`offline_view_goes_on`): the end of a cool-down proves
nothing, so no client request is sent to a resting upstream meanwhile (its pool is held), and the primary probes
each upstream whose rest is over instead (upstream/pool.py, `hold` and `probe_due`). A probe that fails rests its
upstream again, so a mirror that stays down costs one small request per cool-down and never a client's wait.
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
    """Whether every upstream of the pool is resting after a failure that no answer has followed."""
    moment = time.monotonic() if now is None else now
    return all(upstream.is_down(moment) for upstream in pool.upstreams)


def offline_view_goes_on(pool: UpstreamPool, shown: bool) -> bool:
    """Whether a side shows the offline view from now on, `shown` saying whether it did (the primary asks twice a
    second). It begins when every upstream rests (the pool is then held) and lasts until the pool lets go, which
    an answer makes it do; meanwhile each upstream whose rest is over is probed."""
    if not shown:
        if not all_resting(pool):
            return False
        pool.hold()
        return True
    if not pool.held:
        return False
    pool.probe_due()
    return True
