"""The aiohttp application: builds the shared layers from the settings and mounts each side's routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from pkgcache import __version__
from pkgcache.conda.cached_channels import CachedChannels, ChannelPaths
from pkgcache.conda.filtered_channels import FilteredChannels
from pkgcache.conda.generated_shards import GeneratedShards, spares_ended
from pkgcache.conda.generated_zst import GeneratedZst
from pkgcache.conda.index_files import IndexFiles
from pkgcache.conda.passes_ahead import PassesAhead
from pkgcache.conda.record_gate import GateRecords
from pkgcache.conda.replica_channels import ReplicaChannels
from pkgcache.conda.routes import CONDA_CHANNELS_KEY, add_conda_routes
from pkgcache.conda.shard_packs import remove_orphan_packs
from pkgcache.conda.shards_ahead import shards_made_ahead
from pkgcache.conda.source import ChannelSource
from pkgcache.conda.upstream_channels import UpstreamChannels
from pkgcache.conda.upstream_channels import probe_target as conda_probe_target
from pkgcache.config import CondaUpstream, PypiUpstream, Settings
from pkgcache.gate.offline import OfflinePool
from pkgcache.gate.state import GATE_KEY, Gate
from pkgcache.http.access_log import AccessLog
from pkgcache.http.fast_path import FAST_PATH_KEY, FastPath
from pkgcache.http.request_cycle import REQUEST_CYCLE_KEY, RequestCycle, add_fallback, add_get
from pkgcache.pypi.cached_index import CachedIndex
from pkgcache.pypi.core_metadata import MetadataIndex
from pkgcache.pypi.filtered_index import FilteredIndex
from pkgcache.pypi.metadata_records import MetadataRecords
from pkgcache.pypi.page_gate import GatePages
from pkgcache.pypi.pages import PageMemory, PageStore
from pkgcache.pypi.replica_index import ReplicaIndex
from pkgcache.pypi.routes import PYPI_INDEX_KEY, add_pypi_routes
from pkgcache.pypi.source import IndexSource
from pkgcache.pypi.upstream_index import UpstreamIndex
from pkgcache.pypi.upstream_index import probe_target as pypi_probe_target
from pkgcache.service.carried import PrimaryCounters, find_layer, metadata_counters
from pkgcache.service.health import PROBE_TIMEOUT, DataDirCheck
from pkgcache.service.identity import NODE_IDENTITY_KEY, install_identity_headers
from pkgcache.service.metrics import status_extras
from pkgcache.service.operations import install_operations
from pkgcache.stats import RequestStats
from pkgcache.storage.downloads import Downloader
from pkgcache.storage.eviction import CacheKeeper
from pkgcache.storage.sidecars import Sidecars
from pkgcache.storage.store import CacheStore
from pkgcache.upstream.credentials import OriginCredentials
from pkgcache.upstream.pool import TargetFor, Upstream, UpstreamPolicySettings, UpstreamPool
from pkgcache.upstream.transfer import Fetcher
from pkgcache.workers.context import WorkerContext
from pkgcache.workers.forwarding import Forwarder, HandOverLimit, primary_not_answering
from pkgcache.workers.heap import trim_when_quiet
from pkgcache.workers.worker_app import (
    install_replica_upkeep,
    install_worker,
    peer_stats,
    publish_now,
    workers_status,
)

log = logging.getLogger(__name__)

DOWNLOAD_GRACE_SECONDS = 20.0
# How long a replica waits for the primary's answer to a check or status page a machine polls (forwarding.py).
# `/-/health`: the primary's own check gives up after PROBE_TIMEOUT and answers 503 saying why; a little more than
# that lets its answer through, and keeps the whole check under HAProxy's `timeout check` (5 s, deploy/).
HEALTH_HAND_OVER_SECONDS = PROBE_TIMEOUT + 0.5
# `/-/status` (`pkgcache status` waits 5 s), `/-/stats`, `/metrics` (Prometheus's scrape timeout is 10 s): memory
# only. The page at `/` may count what the cache holds (the offline view), which takes longer on a big cache.
STATUS_HAND_OVER_SECONDS = 10.0
PAGE_HAND_OVER_SECONDS = 30.0

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", CacheStore)
DOWNLOADER_KEY = web.AppKey("downloader", Downloader)
POOLS_KEY = web.AppKey("pools", dict)
STARTED_KEY = web.AppKey("started_at", float)  # the service's start: with workers, the supervisor's
WORKER_STARTED_KEY = web.AppKey("worker_started_at", float)  # this process's
ACCESS_LOG_KEY = web.AppKey("access_log", AccessLog)
DATA_DIR_CHECK_KEY = web.AppKey("data_dir_check", DataDirCheck)


def make_pool(
    upstreams: list[tuple[str, str, int | None, float]], settings: Settings, probe_target: TargetFor | None = None
) -> UpstreamPool:
    policy, loop_mark = settings.upstream, settings.server.loop_mark()
    credentials = OriginCredentials(settings.upstream_credentials())
    members = [
        Upstream(
            name=name,
            base_url=url,
            max_connections=cap or policy.max_connections,
            range_interval=interval,
            user=credentials.user_for(url),
        )
        for name, url, cap, interval in upstreams
    ]
    return UpstreamPool(
        members,
        UpstreamPolicySettings.of(
            policy,
            settings.trusted_upstream_hosts(),
            credentials,
            user_agent=f"{policy.user_agent} ({loop_mark})" if loop_mark else policy.user_agent,
        ),
        probe_target,
    )


def _pypi_pool(upstreams: list[PypiUpstream], settings: Settings) -> UpstreamPool:
    upstream_list = [(u.name, u.url, u.max_connections, u.range_interval) for u in upstreams]
    return make_pool(upstream_list, settings, pypi_probe_target)


def _conda_pool(upstreams: list[CondaUpstream], settings: Settings) -> UpstreamPool:
    upstream_list = [(u.name, u.pkgs_url, u.max_connections, 0.0) for u in upstreams]
    return make_pool(upstream_list, settings, conda_probe_target(settings.conda))


def _pypi_index(
    settings: Settings, pool: UpstreamPool, store: CacheStore, downloader: Downloader, gate: Gate
) -> IndexSource:
    """The PyPI side's chain of index layers: chosen once, here (pypi/source.py says what each does)."""
    pages, memory, records = PageStore(store), PageMemory(), MetadataRecords(store)
    if not store.writable:
        below = MetadataIndex(ReplicaIndex(settings.pypi, pages, memory), pages, records, downloader, origin=None)
    else:
        origin = UpstreamIndex(settings.pypi, Fetcher(pool, downloader))
        cached = CachedIndex(settings.pypi, origin, pages, memory)
        below = MetadataIndex(cached, pages, records, downloader, origin)
    filtered = FilteredIndex(below)  # the policy and the offline view, as the gate says
    gate.subscribe("pypi", lambda side: filtered.use(GatePages(side, pages)))
    gate.on_import(filtered.forget_all)  # pages, views and metadata records another process replaced
    return filtered


def _conda_channels(
    settings: Settings,
    pool: UpstreamPool,
    store: CacheStore,
    downloader: Downloader,
    gate: Gate,
    passes: PassesAhead | None,
) -> ChannelSource:
    """The conda side's chain of layers: chosen once, here (conda/source.py says what each does). `passes`: where
    the writing worker reads each new repodata ahead of its first package request (None in a replica, which
    fetches nothing: its misses are the writer's)."""
    paths, sidecars = ChannelPaths(settings.conda, store), Sidecars(store)
    if not store.writable:
        below: ChannelSource = ReplicaChannels(settings.conda, paths, sidecars)
    else:
        origin = UpstreamChannels(settings.conda, Fetcher(pool, downloader))
        below = CachedChannels(settings.conda, paths, origin, IndexFiles(origin.fetcher, sidecars), passes)
    # The policy and the offline view, as the gate says; below the shards, which are made from what it shows.
    filtered = FilteredChannels(GeneratedZst(below, paths, sidecars), paths, sidecars)
    gate.subscribe("conda", lambda side: filtered.use(GateRecords(side, paths)))
    # What is made from the repodata a filter shows (the shard index made here) says in its sidecar which file it
    # was made from: once the filter changes, a sidecar remembered from before (a reader keeps one for a second)
    # would take the index made under the previous filter for one made from the file now shown.
    gate.subscribe("conda", lambda side: sidecars.forget_all())
    # Repodata, sidecars and packages another process replaced: the views made from them are made again (the
    # import removes them on disk), and what this worker remembers of them is read again.
    gate.on_import(sidecars.forget_all)
    gate.on_import(filtered.forget_all)
    return GeneratedShards(filtered, paths, sidecars, passes)


def create_app(settings: Settings, worker: WorkerContext | None = None) -> web.Application:
    """The whole service in one process (`worker` None), or one worker of several (see workers/)."""
    app = web.Application()
    reads_only = worker is not None and not worker.is_primary
    forwarder = Forwarder(worker.primary_address, _hand_over_limits(app)) if reads_only and worker else None
    access_log = app[ACCESS_LOG_KEY] = AccessLog()
    # Made before any route: every handler is wrapped in it as its route is added.
    cycle = app[REQUEST_CYCLE_KEY] = RequestCycle(
        access_log,
        RequestStats(),
        settings.access.users,
        hand_over=forwarder.forward if forwarder else None,
        loop_mark=settings.server.loop_mark(),
    )
    store = app[STORE_KEY] = CacheStore(settings.server.data_dir, writable=not reads_only)
    # The cache's size keeper lives where the cache is written, and hears of every file committed.
    # Offline, it evicts nothing for size: nothing evicted could be fetched again (storage/eviction.py).
    keeper = None if reads_only else CacheKeeper(store, settings.cache.max_size, offline=settings.server.offline)
    downloader = app[DOWNLOADER_KEY] = Downloader(store, on_commit=keeper.file_committed if keeper else None)
    pools = app[POOLS_KEY] = _pools(settings)
    app[SETTINGS_KEY] = settings
    app[WORKER_STARTED_KEY] = time.time()
    app[STARTED_KEY] = app[WORKER_STARTED_KEY] if worker is None else worker.service_started_at
    if keeper is not None:
        app.cleanup_ctx.append(_store_prepared)  # first: everything after it may use the data directory
    app.cleanup_ctx.append(_access_log_running)
    app.cleanup_ctx.append(_pools_open)
    app.cleanup_ctx.append(_heap_trimming)

    if not settings.access.users:
        # Answers from memory before routing (http/fast_path.py); with users, every read checks them.
        app[FAST_PATH_KEY] = FastPath(cycle)
    install_identity_headers(app, settings.server.identity())
    app[DATA_DIR_CHECK_KEY] = DataDirCheck(store.tmp_dir, settings.server.min_free_space)
    sync = worker.counters.gate if worker is not None else None
    gate = app[GATE_KEY] = Gate(settings, store, pools, sync, worker.index if worker is not None else 0)
    app.cleanup_ctx.append(_gate_watching)
    carried = None if keeper is None else PrimaryCounters(pools, keeper)
    if "pypi" in pools:
        index = _pypi_index(settings, pools["pypi"], store, downloader, gate)
        add_pypi_routes(app, index, store.file_use, app.get(FAST_PATH_KEY))
        metadata = find_layer(index, MetadataIndex)
        if metadata is not None:  # after the requests answered last: none starts a read then
            app.cleanup_ctx.append(_metadata_reads_ended(metadata))
        if carried is not None:
            carried.metadata = metadata_counters(index)
    if "conda" in pools:
        passes = None if reads_only else PassesAhead()
        channels = _conda_channels(settings, pools["conda"], store, downloader, gate, passes)
        if passes is not None:  # a pass in its thread stops before the event loop's end waits for it
            app.cleanup_ctx.append(_passes_ended(passes))
        if carried is not None:
            carried.shards = find_layer(channels, GeneratedShards)
        add_conda_routes(app, channels, store.file_use)
        if not reads_only:  # before any build starts: what no build is writing then is an orphan
            app.cleanup_ctx.append(_orphan_packs_removed)
        keeping_shards = None if reads_only else shards_made_ahead(channels, settings.conda)
        if keeping_shards is not None:  # the writer's work: a replica would hand each request over anyway
            app.cleanup_ctx.append(keeping_shards)
        app.on_shutdown.append(_spare_builders_ended)

    if worker is not None:
        # The primary's own counters (upstreams, eviction, metadata, shards) carry over its restarts, as every
        # worker's request counters do.
        install_worker(app, worker, cycle.stats, lambda: gate.import_mark, carried)
    if forwarder is not None:
        # A replica: cached content here; the operator's pages, stats and admin API are the primary's, and so is
        # /-/health (a replica can serve only what its primary can: one check, answered there).
        install_replica_upkeep(app, store, forwarder)
    else:
        assert keeper is not None
        add_get(app, "/-/health", health)
        add_get(app, "/-/status", status)
        # The page at /, /-/stats, /metrics, the admin API, and the cache's size keeper.
        install_operations(
            app,
            settings,
            store,
            downloader,
            keeper,
            pools,
            cycle.stats,
            lambda: peer_stats(app),
            lambda: _side_status(app),
            started_at=app[STARTED_KEY],
            publish=lambda: publish_now(app),
        )
    add_fallback(app)
    app.on_shutdown.append(_stop_downloads)
    return app


def _metadata_reads_ended(layer: MetadataIndex) -> Callable[[web.Application], AsyncIterator[None]]:
    """Metadata reads that went on after their distribution's clients were answered end (or are cancelled) before
    the store and the loop they use are gone."""

    async def ended(_: web.Application) -> AsyncIterator[None]:
        yield
        await layer.close()

    return ended


def _passes_ended(passes: PassesAhead) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ended(_: web.Application) -> AsyncIterator[None]:
        yield
        await passes.close()

    return ended


async def _spare_builders_ended(_: web.Application) -> None:
    await spares_ended()


def _pools(settings: Settings) -> dict[str, UpstreamPool]:
    pools: dict[str, UpstreamPool] = {}
    if settings.pypi.enabled:
        pools["pypi"] = _pypi_pool(settings.pypi.upstreams, settings)
    if settings.conda.enabled:
        pools["conda"] = _conda_pool(settings.conda.upstreams, settings)
    if settings.server.offline:  # no request may leave: pools that never send (gate/offline.py)
        pools = {side: OfflinePool(pool.upstreams, pool.policy) for side, pool in pools.items()}
    return pools


async def _store_prepared(app: web.Application) -> AsyncIterator[None]:
    app[STORE_KEY].prepare()
    yield


async def _orphan_packs_removed(app: web.Application) -> AsyncIterator[None]:
    """Packs without a table left by shard builds that failed or were killed (shard_packs): nothing reads them."""
    removed = await asyncio.to_thread(remove_orphan_packs, app[STORE_KEY].root / "conda")
    if removed:
        log.info("removed %d files of shard builds that did not finish", removed)
    yield


async def _gate_watching(app: web.Application) -> AsyncIterator[None]:
    gate = app[GATE_KEY]
    await asyncio.to_thread(gate.load_blocks_at_start)  # a blocks file that cannot be read stops the start
    await asyncio.to_thread(gate.import_seen)  # what was imported before this start is read as it comes
    tasks = [asyncio.get_running_loop().create_task(work) for work in (gate.watch(), gate.follow())]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _heap_trimming(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(trim_when_quiet())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _access_log_running(app: web.Application) -> AsyncIterator[None]:
    app[ACCESS_LOG_KEY].start()
    yield
    await app[ACCESS_LOG_KEY].stop()


async def _pools_open(app: web.Application) -> AsyncIterator[None]:
    yield
    for pool in app[POOLS_KEY].values():
        await pool.close()


async def _stop_downloads(app: web.Application) -> None:
    # A graceful stop lets downloads in flight finish (their clients get whole files), within a bound.
    await app[DOWNLOADER_KEY].close(grace=DOWNLOAD_GRACE_SECONDS)


def _hand_over_limits(app: web.Application) -> dict[str, HandOverLimit]:
    """What a replica bounds of what it hands to the primary: the checks and pages machines poll, never a file."""

    def health_no_answer() -> web.StreamResponse:
        body = {
            "status": "unhealthy",
            "version": __version__,
            **app[NODE_IDENTITY_KEY].to_json(),
            "reason": f"pkgcache's primary worker is not answering (within {HEALTH_HAND_OVER_SECONDS:g} s)",
        }
        return web.json_response(body, status=503, headers={"Cache-Control": "no-store", "Retry-After": "2"})

    status = HandOverLimit(STATUS_HAND_OVER_SECONDS, primary_not_answering)
    return {
        "/-/health": HandOverLimit(HEALTH_HAND_OVER_SECONDS, health_no_answer),
        "/-/status": status,
        "/-/stats": status,
        "/metrics": status,
        "/": HandOverLimit(PAGE_HAND_OVER_SECONDS, primary_not_answering),
    }


async def health(request: web.Request) -> web.StreamResponse:
    """Can this node serve (service/health.py says what that means)? 200 if so, else 503 saying why. Healthy
    while every upstream fails: the cache is still served."""
    app = request.app
    readiness = await app[DATA_DIR_CHECK_KEY].readiness()
    body: dict[str, object] = {
        "status": "ok" if readiness.ok else "unhealthy",
        "version": __version__,
        **app[NODE_IDENTITY_KEY].to_json(),
        "free_bytes": readiness.free_bytes,
    }
    if not readiness.ok:
        body["reason"] = readiness.problem
    return web.json_response(body, status=200 if readiness.ok else 503, headers={"Cache-Control": "no-store"})


def _side_status(app: web.Application) -> dict[str, dict[str, object]]:
    """What each side serves: the PyPI index's settings, the conda channels, and each side's gate."""
    sides: dict[str, dict[str, object]] = {}
    gate = app[GATE_KEY].status()
    if PYPI_INDEX_KEY in app:
        sides["pypi"] = {**app[PYPI_INDEX_KEY].status(), "gate": gate.get("pypi", {})}
    if CONDA_CHANNELS_KEY in app:
        sides["conda"] = {**app[CONDA_CHANNELS_KEY].status(), "gate": gate.get("conda", {})}
    return sides


async def status(request: web.Request) -> web.StreamResponse:
    app = request.app
    return web.json_response(
        {
            "version": __version__,
            "uptime_seconds": round(time.time() - app[STARTED_KEY], 1),  # the service's, however its workers fared
            "downloads_in_flight": app[DOWNLOADER_KEY].in_flight(),
            "upstreams": {side: pool.status() for side, pool in app[POOLS_KEY].items()},
            **_side_status(app),
            **status_extras(app),
            "import_mark": app[GATE_KEY].import_mark,  # this process's; each worker's is in its row
            "workers": workers_status(app) or None,
            # The process answering (with workers, the primary): started with the service, or again since.
            "worker_uptime_seconds": round(time.time() - app[WORKER_STARTED_KEY], 1),
        }
    )
