"""What the operator-facing parts (stats, metrics, admin API, the page) share, kept on the application."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pkgcache.config import Settings
from pkgcache.stats import RequestStats, SideCounters, hit_ratio
from pkgcache.storage.downloads import Downloader
from pkgcache.storage.eviction import CacheKeeper
from pkgcache.storage.store import CacheStore
from pkgcache.upstream.pool import UpstreamPool


@dataclass
class Operations:
    """The shared layers as the operator sees them, plus the request counters and the cache's size keeper."""

    settings: Settings
    store: CacheStore
    downloader: Downloader
    # side -> pool; the same dict create_app fills, so sides added after this object is made are seen.
    pools: dict[str, UpstreamPool]
    keeper: CacheKeeper
    stats: RequestStats
    started_at: float = field(default_factory=time.time)  # the service's start (with workers, the supervisor's)
    # With several worker processes: the other workers' counters, added to this one's for the service's totals.
    peer_stats: Callable[[], list[RequestStats]] = field(default=list)
    # What each side's index says of itself (`status()`), e.g. the PyPI side's core metadata counters.
    side_status: Callable[[], dict[str, dict[str, Any]]] = field(default=dict)
    # With several worker processes: put this worker's counters in shared memory before reporting any of them, so
    # that a number once reported is never taken back by a restart (workers/worker_app.py, publish_now).
    publish: Callable[[], None] = field(default=lambda: None)

    def core_metadata(self) -> dict[str, Any] | None:
        """What the PyPI side's core metadata layer made and saved, if that side is served."""
        found = self.side_status().get("pypi", {}).get("core_metadata")
        return found if isinstance(found, dict) else None

    def request_stats(self) -> RequestStats:
        """The whole service's request counters: this process's and its peers'."""
        combined = RequestStats()
        for stats in (self.stats, *self.peer_stats()):
            for side, counters in stats.sides.items():
                combined.sides[side].add(counters)
        return combined

    def bytes_fetched(self, side: str) -> int:
        """Bytes received from the side's upstreams for files (index pages are small and not counted)."""
        pool = self.pools.get(side)
        return 0 if pool is None else sum(upstream.stats.bytes_received for upstream in pool.upstreams)

    def summary(self) -> dict[str, Any]:  # JSON: numbers and texts, as /-/stats shows them
        """The numbers `/-/stats`, `/-/status` and the page show."""
        self.publish()
        stats = self.request_stats()
        totals = stats.totals()
        return {
            **_counters_json(totals),
            "bytes_fetched": sum(self.bytes_fetched(side) for side in self.pools),
            "cache_bytes": self.keeper.total_bytes,
            "cache_max_bytes": self.keeper.max_size,
            "cache_measured": self.keeper.measured,
            "evicted_files": self.keeper.evicted.files,
            "evicted_bytes": self.keeper.evicted.bytes,
            "sides": {
                side: {**_counters_json(counters), "bytes_fetched": self.bytes_fetched(side)}
                for side, counters in stats.sides.items()
                if side in self.pools
            },
            "upstreams": {side: pool.status() for side, pool in self.pools.items()},
        }


def _counters_json(counters: SideCounters) -> dict[str, object]:
    return {
        "requests": counters.requests,
        "hits": counters.hits,
        "misses": counters.misses,
        "stale": counters.stale,
        "errors": counters.errors,
        "hit_ratio": hit_ratio(counters),
        "bytes_served": counters.bytes_served,
        "bytes_saved": counters.bytes_saved,
    }


OPERATIONS_KEY = web.AppKey("operations", Operations)


def operations(request: web.Request) -> Operations:
    return request.app[OPERATIONS_KEY]
