"""What the service has done since it started: requests, cache hits and misses, bytes, per side (PyPI, conda).

Plain counters in memory, updated once per request by the HTTP layer (http/metrics.py) and read by `/-/stats`,
`/metrics` and the page. Nothing here blocks or touches the disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pkgcache.cache_state import CacheState

SIDES = ("pypi", "conda")


@dataclass
class SideCounters:
    """The counters of one side."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    stale: int = 0
    errors: int = 0  # answers with a 5xx status
    bytes_served: int = 0  # response bodies sent to clients
    bytes_saved: int = 0  # of those, the bytes that came from the cache (hit or stale), not from an upstream

    def add(self, other: SideCounters) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def hit_ratio(counters: SideCounters) -> float:
    """Share of cache lookups answered from the cache (a stale copy counts: no client waited for an upstream).

    0.0 before any lookup, so that callers can always format it as a percentage.
    """
    served_from_cache = counters.hits + counters.stale
    lookups = served_from_cache + counters.misses
    return round(served_from_cache / lookups, 4) if lookups else 0.0


_SIDE_PREFIXES = tuple((side, f"/{side}/") for side in SIDES)


def side_of(path: str) -> str | None:
    """Which side a request path belongs to, or None for the service's own pages (status, metrics, admin)."""
    for side, prefix in _SIDE_PREFIXES:
        if path.startswith(prefix):
            return side
    return None


@dataclass
class RequestStats:
    """Counters per side, fed one request at a time."""

    sides: dict[str, SideCounters] = field(default_factory=lambda: {side: SideCounters() for side in SIDES})
    # Requests a worker that only reads the cache passed to the one that writes it, which counts them in `sides`.
    handed_over: int = 0

    def record(self, path: str, status: int, cache_state: str | None, body_bytes: int) -> None:
        side = side_of(path)
        if side is None:
            return
        counters = self.sides[side]
        counters.requests += 1
        if status >= 500:
            counters.errors += 1
        counters.bytes_served += body_bytes
        if cache_state == CacheState.HIT:
            counters.hits += 1
            counters.bytes_saved += body_bytes
        elif cache_state == CacheState.STALE or cache_state == CacheState.OFFLINE:
            counters.stale += 1
            counters.bytes_saved += body_bytes
        elif cache_state == CacheState.MISS:
            counters.misses += 1

    def totals(self) -> SideCounters:
        total = SideCounters()
        for counters in self.sides.values():
            total.add(counters)
        return total
