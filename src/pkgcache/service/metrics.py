"""Counting requests, and telling machines how the service does: `/-/stats` (JSON) and `/metrics` (Prometheus).

The request counters are fed by the request cycle (http/request_cycle.py), from what each handler noted
(`CACHE_STATE`) and from the bytes really sent. `/metrics` reads live values through a custom collector on a
registry of this application's own, so two applications in one process (as in the tests) never share counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pkgcache import __version__
from pkgcache.cache_state import CacheState
from pkgcache.http.request_cycle import add_get
from pkgcache.service.state import OPERATIONS_KEY, Operations, operations

METRICS_REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)


# --- /-/stats ---


async def stats_page(request: web.Request) -> web.StreamResponse:
    ops = operations(request)
    return web.json_response(
        {
            "version": __version__,
            **ops.settings.server.identity().to_json(),
            "uptime_seconds": round(time.time() - ops.started_at, 1),
            **ops.summary(),
        }
    )


def status_extras(app: web.Application) -> dict[str, object]:
    """What `/-/status` adds for `pkgcache status`: which node this is, the cache's size and hit ratio."""
    ops = app[OPERATIONS_KEY]
    summary = ops.summary()
    return {
        **ops.settings.server.identity().to_json(),
        **{key: summary[key] for key in ("cache_bytes", "cache_max_bytes", "hit_ratio", "bytes_saved")},
    }


# --- /metrics ---


class LiveCollector(Collector):
    """Reads the application's counters at each scrape; nothing is duplicated into prometheus objects."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def collect(self) -> Iterable[Metric]:
        self.ops.publish()  # what this scrape sees is what a restarted primary starts from, at least
        yield from self._service()
        yield from self._sides()
        yield from self._cache()
        yield from self._upstreams()
        yield from self._core_metadata()
        yield from self._shards()
        yield from self._gate()

    def _service(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("pkgcache_info", "pkgcache version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        # Which node of which tier this is: join on it to see a cluster's nodes, or a chain of caches by tier.
        identity = self.ops.settings.server.identity()
        node = GaugeMetricFamily("pkgcache_node_info", "This node's name and tier", labels=["node", "tier"])
        node.add_metric([identity.name, identity.tier or ""], 1)
        yield node
        yield GaugeMetricFamily(
            "pkgcache_start_time_seconds", "When the service started (Unix time)", value=self.ops.started_at
        )
        yield GaugeMetricFamily(
            "pkgcache_downloads_in_flight", "Files being fetched from upstreams", value=self.ops.downloader.in_flight()
        )

    def _sides(self) -> Iterable[Metric]:
        requests = CounterMetricFamily("pkgcache_requests", "Requests to a side's routes", labels=["side"])
        lookups = CounterMetricFamily(
            "pkgcache_cache_lookups", "Answers by origin: hit, miss (upstream), stale", labels=["side", "result"]
        )
        errors = CounterMetricFamily("pkgcache_error_responses", "Answers with a 5xx status", labels=["side"])
        served = CounterMetricFamily("pkgcache_served_bytes", "Body bytes sent to clients", labels=["side"])
        saved = CounterMetricFamily("pkgcache_saved_bytes", "Body bytes sent from the cache", labels=["side"])
        fetched = CounterMetricFamily("pkgcache_fetched_bytes", "File bytes received from upstreams", labels=["side"])
        for side, counters in self.ops.request_stats().sides.items():
            if side not in self.ops.pools:
                continue
            requests.add_metric([side], counters.requests)
            for result, count in (
                (CacheState.HIT, counters.hits),
                (CacheState.MISS, counters.misses),
                (CacheState.STALE, counters.stale),
            ):
                lookups.add_metric([side, result], count)
            errors.add_metric([side], counters.errors)
            served.add_metric([side], counters.bytes_served)
            saved.add_metric([side], counters.bytes_saved)
            fetched.add_metric([side], self.ops.bytes_fetched(side))
        yield from (requests, lookups, errors, served, saved, fetched)

    def _cache(self) -> Iterable[Metric]:
        keeper = self.ops.keeper
        yield GaugeMetricFamily("pkgcache_cache_size_bytes", "Bytes in the cache", value=keeper.total_bytes)
        if keeper.max_size is not None:
            yield GaugeMetricFamily("pkgcache_cache_max_size_bytes", "The cache's size limit", value=keeper.max_size)
        yield CounterMetricFamily(
            "pkgcache_evicted_files", "Package files evicted to stay under the limit", value=keeper.evicted.files
        )
        yield CounterMetricFamily("pkgcache_evicted_bytes", "Bytes evicted", value=keeper.evicted.bytes)

    def _upstreams(self) -> Iterable[Metric]:
        labels = ["side", "upstream"]
        requests = CounterMetricFamily("pkgcache_upstream_requests", "Requests sent to an upstream", labels=labels)
        failures = CounterMetricFamily(
            "pkgcache_upstream_failures", "Failed requests or bad answers from an upstream", labels=labels
        )
        received = CounterMetricFamily(
            "pkgcache_upstream_received_bytes", "File bytes received from an upstream", labels=labels
        )
        latency = GaugeMetricFamily(
            "pkgcache_upstream_latency_seconds", "Smoothed time to response headers", labels=labels
        )
        probes = CounterMetricFamily(
            "pkgcache_upstream_probes",
            "Requests of pkgcache's own asking a resting upstream whether it is back (in the offline view)",
            labels=labels,
        )
        healthy = GaugeMetricFamily(
            "pkgcache_upstream_healthy",
            "1 when the upstream is used, 0 while it cools down (or, in the offline view, until it answers a probe)",
            labels=labels,
        )
        parents = GaugeMetricFamily(
            "pkgcache_upstream_parent_info",
            "1 for an upstream whose answers say it is a pkgcache (a parent tier), with that parent's tier",
            labels=[*labels, "parent_tier"],
        )
        now = time.monotonic()
        for side, pool in self.ops.pools.items():
            for upstream in pool.upstreams:
                key = [side, upstream.name]
                requests.add_metric(key, upstream.stats.requests)
                failures.add_metric(key, upstream.stats.failures)
                received.add_metric(key, upstream.stats.bytes_received)
                if upstream.stats.latency_seconds is not None:
                    latency.add_metric(key, upstream.stats.latency_seconds)
                probes.add_metric(key, upstream.stats.probes)
                healthy.add_metric(key, 0 if pool.is_resting(upstream, now) else 1)
                if upstream.pkgcache is not None:
                    parents.add_metric([*key, upstream.pkgcache.tier or ""], 1)
        yield from (requests, failures, received, latency, probes, healthy, parents)

    def _core_metadata(self) -> Iterable[Metric]:
        counters = self.ops.core_metadata()
        if counters is None:
            return
        made = CounterMetricFamily(
            "pkgcache_core_metadata_made", "Core metadata files made, by how they were obtained", labels=["source"]
        )
        for source, count in dict(counters["made"]).items():  # type: ignore[call-overload]
            made.add_metric([source], count)
        yield made
        for name, key, about in (
            ("pkgcache_core_metadata_range_requests", "range_requests", "Range requests sent to read wheel metadata"),
            ("pkgcache_core_metadata_range_bytes", "range_bytes", "Bytes those range requests brought"),
            ("pkgcache_core_metadata_saved_bytes", "bytes_saved", "Wheel bytes not fetched thanks to them"),
            ("pkgcache_core_metadata_mismatches", "mismatches", "Metadata read by ranges that the wheel contradicted"),
        ):
            yield CounterMetricFamily(name, about, value=counters[key])

    def _shards(self) -> Iterable[Metric]:
        found = self.ops.side_status().get("conda", {}).get("shards")
        if not isinstance(found, dict):
            return
        labels = ["subdir"]
        made = GaugeMetricFamily(
            "pkgcache_shards_made", "Shards in the index made here for a conda subdir", labels=labels
        )
        size = GaugeMetricFamily("pkgcache_shards_made_bytes", "Bytes of the shards made here", labels=labels)
        took = GaugeMetricFamily("pkgcache_shards_build_seconds", "How long the last build took", labels=labels)
        built = GaugeMetricFamily("pkgcache_shards_built_timestamp_seconds", "When it ended (Unix time)", labels=labels)
        passed = GaugeMetricFamily(
            "pkgcache_shards_passed_through", "1 for a subdir whose upstream's own shards are served", labels=labels
        )
        for where, build in dict(found.get("made_here", {})).items():
            made.add_metric([where], build["shards"])
            size.add_metric([where], build["shard_bytes"] + build["index_size"])
            took.add_metric([where], build["seconds"])
            built.add_metric([where], build["built_at"])
        for where in found.get("passed_through", []):
            passed.add_metric([where], 1)
        yield from (made, size, took, built, passed)

    def _gate(self) -> Iterable[Metric]:
        """Each side's policy and blocks, and whether it shows only what the cache holds (gate/state.py)."""
        rules = GaugeMetricFamily("pkgcache_policy_rules", "Rules of the side's policy", labels=["side"])
        blocks = GaugeMetricFamily("pkgcache_policy_blocks", "Blocks in force", labels=["side"])
        block = GaugeMetricFamily(
            "pkgcache_policy_block_time_seconds",
            "When each block in force was made (Unix time)",
            labels=["side", "target", "who", "why"],
        )
        offline = GaugeMetricFamily(
            "pkgcache_offline", "1 while the side shows only what the cache holds", labels=["side", "cause"]
        )
        for side, status in self.ops.side_status().items():
            gate = status.get("gate")
            if not isinstance(gate, dict):
                continue
            rules.add_metric([side], len(gate.get("rules") or ()))
            in_force = gate.get("blocks") or []
            blocks.add_metric([side], len(in_force))
            for item in in_force:
                target = item["name"] + (f"=={item['version']}" if item.get("version") else "")
                block.add_metric([side, target, item.get("who") or "", item.get("why") or ""], _epoch(item["when"]))
            offline.add_metric([side, "configured"], 1 if gate.get("offline") else 0)
            offline.add_metric([side, "upstreams_down"], 1 if gate.get("degraded") else 0)
        yield from (rules, blocks, block, offline)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def metrics_page(request: web.Request) -> web.StreamResponse:
    body = generate_latest(request.app[METRICS_REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_routes(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(app[OPERATIONS_KEY]))
    app[METRICS_REGISTRY_KEY] = registry
    add_get(app, "/-/stats", stats_page)
    add_get(app, "/metrics", metrics_page)
