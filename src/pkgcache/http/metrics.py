"""Counting requests, and telling machines how the service does: `/-/stats` (JSON) and `/metrics` (Prometheus).

The `measure_requests` middleware counts every request of the PyPI and conda sides from what its handler noted
(`CACHE_STATE`) and from the bytes really sent. `/metrics` reads live values through a custom collector on a
registry of this application's own, so two applications in one process (as in the tests) never share counters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pkgcache import __version__
from pkgcache.http.responses import CACHE_STATE, CachedFileResponse
from pkgcache.http.state import OPERATIONS_KEY, Operations, operations
from pkgcache.storage.cache_state import CacheState

METRICS_REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body_bytes_sent(request: web.BaseRequest, response: web.StreamResponse | None) -> int:
    """How many body bytes a response sent (or will send, for a plain body not yet written)."""
    if response is None:
        return 0
    if isinstance(response, CachedFileResponse):
        return response.body_bytes
    if response.prepared:
        # Streamed by its handler (a download being followed). Once finished, aiohttp's count is what went on the
        # wire, headers included; with a declared length, that length is the body.
        finished = response.body_length > 0
        if finished and response.content_length is not None:
            return response.content_length
        return response.body_length
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    return response.content_length or 0


@web.middleware
async def measure_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request in the per-side stats once its answer is known.

    A cached file is sent here rather than after the middlewares return (sending it again later is a no-op), so
    that this count and the access log see the bytes that really went out; sendfile leaves aiohttp's own count
    at zero.
    """
    stats = request.app[OPERATIONS_KEY].stats
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        stats.record(request.path, exc.status, request.get(CACHE_STATE), 0)
        raise
    if isinstance(response, CachedFileResponse) and not response.prepared:
        # A client gone mid-file: aiohttp's own finishing of the response notices it again and lets it go.
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write_eof()
    stats.record(request.path, response.status, request.get(CACHE_STATE), body_bytes_sent(request, response))
    return response


# --- /-/stats ---


async def stats_page(request: web.Request) -> web.StreamResponse:
    ops = operations(request)
    return web.json_response(
        {"version": __version__, "uptime_seconds": round(time.time() - ops.started_at, 1), **ops.summary()}
    )


def status_extras(app: web.Application) -> dict[str, object]:
    """What `/-/status` adds for `pkgcache status`: the cache's size and hit ratio."""
    summary = app[OPERATIONS_KEY].summary()
    return {key: summary[key] for key in ("cache_bytes", "cache_max_bytes", "hit_ratio", "bytes_saved")}


# --- /metrics ---


class LiveCollector(Collector):
    """Reads the application's counters at each scrape; nothing is duplicated into prometheus objects."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def collect(self) -> Iterable[Metric]:
        yield from self._service()
        yield from self._sides()
        yield from self._cache()
        yield from self._upstreams()

    def _service(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("pkgcache_info", "pkgcache version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
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
        for side, counters in self.ops.stats.sides.items():
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
        healthy = GaugeMetricFamily(
            "pkgcache_upstream_healthy", "1 when the upstream is used, 0 while it cools down", labels=labels
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
                healthy.add_metric(key, 0 if upstream.is_cooling_down(now) else 1)
        yield from (requests, failures, received, latency, healthy)


async def metrics_page(request: web.Request) -> web.StreamResponse:
    body = generate_latest(request.app[METRICS_REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_routes(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(app[OPERATIONS_KEY]))
    app[METRICS_REGISTRY_KEY] = registry
    app.router.add_get("/-/stats", stats_page)
    app.router.add_get("/metrics", metrics_page)
