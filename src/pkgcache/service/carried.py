"""The counters only the primary worker keeps, carried over its restarts (workers/shared_counters.py).

The request counters live in each worker's slot of shared memory; these have no fixed shape (one set per upstream,
per way metadata was made, per conda subdir whose shards are made here), so the primary publishes them as one
document and a restarted primary adds them to its own, which start from 0. `/metrics` counters then never go back
when the primary is killed and started again, and `/-/stats`, `/-/status` and the page keep the service's totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from pkgcache.conda.generated_shards import GeneratedShards
from pkgcache.pypi.core_metadata import MetadataCounters, MetadataIndex
from pkgcache.storage.eviction import CacheKeeper, Freed
from pkgcache.upstream.pool import UpstreamPool, UpstreamStats

_Layer = TypeVar("_Layer")

# Counters start at 0 and are added to; the smoothed measures (latency, rate) start at None and are taken as they were.
_UPSTREAM_COUNTERS = tuple(f.name for f in fields(UpstreamStats) if isinstance(getattr(UpstreamStats(), f.name), int))
_UPSTREAM_GAUGES = tuple(f.name for f in fields(UpstreamStats) if f.name not in _UPSTREAM_COUNTERS)
_FREED_COUNTERS = tuple(f.name for f in fields(Freed))


@dataclass
class PrimaryCounters:
    """Where the primary's own counters are: its upstream pools, its size keeper, its metadata and shard layers."""

    pools: dict[str, UpstreamPool]
    keeper: CacheKeeper
    metadata: MetadataCounters | None = None
    shards: GeneratedShards | None = None

    def snapshot(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "upstreams": {
                f"{side}/{upstream.name}": asdict(upstream.stats)
                for side, pool in self.pools.items()
                for upstream in pool.upstreams
            },
            "evicted": asdict(self.keeper.evicted),
        }
        if self.metadata is not None:
            document["core_metadata"] = self.metadata.to_json()
        if self.shards is not None:
            document["shards_made"] = self.shards.builds_made()
        return document

    def restore(self, saved: dict[str, Any]) -> None:
        """Add a predecessor's counters (`snapshot()`) to these, made moments ago and still (nearly) at 0."""
        upstreams = _dict(saved.get("upstreams"))
        for side, pool in self.pools.items():
            for upstream in pool.upstreams:
                before = _dict(upstreams.get(f"{side}/{upstream.name}"))
                for name in _UPSTREAM_COUNTERS:
                    setattr(upstream.stats, name, getattr(upstream.stats, name) + _int(before.get(name)))
                for name in _UPSTREAM_GAUGES:
                    value = before.get(name)
                    if getattr(upstream.stats, name) is None and isinstance(value, int | float):
                        setattr(upstream.stats, name, float(value))
        evicted = _dict(saved.get("evicted"))
        self.keeper.evicted.add(Freed(**{name: _int(evicted.get(name)) for name in _FREED_COUNTERS}))
        if self.metadata is not None:
            metadata = _dict(saved.get("core_metadata"))
            for source, count in _dict(metadata.get("made")).items():
                self.metadata.made[source] += _int(count)
            for name in ("range_requests", "range_bytes", "bytes_saved", "mismatches"):
                setattr(self.metadata, name, getattr(self.metadata, name) + _int(metadata.get(name)))
        if self.shards is not None:
            self.shards.carry_on({k: v for k, v in _dict(saved.get("shards_made")).items() if isinstance(v, dict)})


def find_layer(source: object, kind: type[_Layer]) -> _Layer | None:
    """The layer of type `kind` in a side's chain of layers (each wrapping the next as `inner`), if there is one."""
    while source is not None:
        if isinstance(source, kind):
            return source
        source = getattr(source, "inner", None)
    return None


def metadata_counters(index: object) -> MetadataCounters | None:
    layer = find_layer(index, MetadataIndex)
    return None if layer is None else layer.counters


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
