"""The aiohttp application: builds the shared layers from the settings and mounts each side's routes."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from pkgcache import __version__
from pkgcache.conda.cached_channels import CachedChannels, ChannelPaths
from pkgcache.conda.generated_zst import GeneratedZst
from pkgcache.conda.index_files import IndexFiles
from pkgcache.conda.replica_channels import ReplicaChannels
from pkgcache.conda.routes import CONDA_CHANNELS_KEY, add_conda_routes
from pkgcache.conda.source import ChannelSource
from pkgcache.conda.upstream_channels import UpstreamChannels
from pkgcache.config import CondaUpstream, PypiUpstream, Settings, UpstreamPolicy
from pkgcache.http.access_log import AccessLog
from pkgcache.http.fast_path import FAST_PATH_KEY, FastPath
from pkgcache.http.request_cycle import REQUEST_CYCLE_KEY, RequestCycle, add_fallback, add_get
from pkgcache.pypi.cached_index import CachedIndex
from pkgcache.pypi.pages import PageMemory, PageStore
from pkgcache.pypi.replica_index import ReplicaIndex
from pkgcache.pypi.routes import PYPI_INDEX_KEY, add_pypi_routes
from pkgcache.pypi.source import IndexSource
from pkgcache.pypi.upstream_index import UpstreamIndex
from pkgcache.service.metrics import status_extras
from pkgcache.service.operations import install_operations
from pkgcache.stats import RequestStats
from pkgcache.storage.downloads import Downloader
from pkgcache.storage.sidecars import Sidecars
from pkgcache.storage.store import CacheStore
from pkgcache.upstream.pool import Upstream, UpstreamPolicySettings, UpstreamPool
from pkgcache.upstream.transfer import Fetcher
from pkgcache.workers.context import WorkerContext
from pkgcache.workers.forwarding import Forwarder
from pkgcache.workers.worker_app import (
    install_replica_upkeep,
    install_worker,
    peer_stats,
    replica_health,
    workers_status,
)

log = logging.getLogger(__name__)

DOWNLOAD_GRACE_SECONDS = 20.0

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", CacheStore)
DOWNLOADER_KEY = web.AppKey("downloader", Downloader)
POOLS_KEY = web.AppKey("pools", dict)
STARTED_KEY = web.AppKey("started_at", float)
ACCESS_LOG_KEY = web.AppKey("access_log", AccessLog)


def make_pool(upstreams: list[tuple[str, str, int | None]], policy: UpstreamPolicy) -> UpstreamPool:
    members = [
        Upstream(name=name, base_url=url, max_connections=cap or policy.max_connections) for name, url, cap in upstreams
    ]
    return UpstreamPool(
        members,
        UpstreamPolicySettings(
            user_agent=policy.user_agent,
            connect_timeout=policy.connect_timeout,
            read_timeout=policy.read_timeout,
            cooldown=policy.cooldown,
            max_redirects=policy.max_redirects,
            proxy=policy.proxy,
            first_byte_timeout=policy.first_byte_timeout,
            min_rate=policy.min_rate,
            rate_window=policy.rate_window,
            slot_wait=policy.slot_wait,
            max_retry_after=policy.max_retry_after,
        ),
    )


def _pypi_pool(upstreams: list[PypiUpstream], policy: UpstreamPolicy) -> UpstreamPool:
    return make_pool([(u.name, u.url, u.max_connections) for u in upstreams], policy)


def _conda_pool(upstreams: list[CondaUpstream], policy: UpstreamPolicy) -> UpstreamPool:
    return make_pool([(u.name, u.pkgs_url, u.max_connections) for u in upstreams], policy)


def _pypi_index(settings: Settings, pool: UpstreamPool, store: CacheStore, downloader: Downloader) -> IndexSource:
    """The PyPI side's chain of index layers: chosen once, here (pypi/source.py says what each does)."""
    pages, memory = PageStore(store), PageMemory()
    if not store.writable:
        return ReplicaIndex(settings.pypi, pages, memory)
    return CachedIndex(settings.pypi, UpstreamIndex(settings.pypi, Fetcher(pool, downloader)), pages, memory)


def _conda_channels(settings: Settings, pool: UpstreamPool, store: CacheStore, downloader: Downloader) -> ChannelSource:
    """The conda side's chain of layers: chosen once, here (conda/source.py says what each does)."""
    paths, sidecars = ChannelPaths(settings.conda, store), Sidecars(store)
    if not store.writable:
        return GeneratedZst(ReplicaChannels(settings.conda, paths, sidecars), paths, sidecars)
    origin = UpstreamChannels(settings.conda, Fetcher(pool, downloader))
    cached = CachedChannels(settings.conda, paths, origin, IndexFiles(origin.fetcher, sidecars))
    return GeneratedZst(cached, paths, sidecars)


def create_app(settings: Settings, worker: WorkerContext | None = None) -> web.Application:
    """The whole service in one process (`worker` None), or one worker of several (see workers/)."""
    app = web.Application()
    reads_only = worker is not None and not worker.is_primary
    forwarder = Forwarder(worker.primary_address) if reads_only and worker is not None else None
    access_log = app[ACCESS_LOG_KEY] = AccessLog()
    # Made before any route: every handler is wrapped in it as its route is added.
    cycle = app[REQUEST_CYCLE_KEY] = RequestCycle(
        access_log, RequestStats(), settings.access.users, hand_over=forwarder.forward if forwarder else None
    )
    store = CacheStore(settings.server.data_dir, writable=not reads_only)
    downloader = Downloader(store)
    pools: dict[str, UpstreamPool] = {}
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    app[DOWNLOADER_KEY] = downloader
    app[POOLS_KEY] = pools
    app[STARTED_KEY] = time.time()

    if not settings.access.users:
        # Answers from memory before routing (http/fast_path.py); with users, every read checks them.
        app[FAST_PATH_KEY] = FastPath(cycle)
    if settings.pypi.enabled:
        pools["pypi"] = _pypi_pool(settings.pypi.upstreams, settings.upstream)
        add_pypi_routes(
            app, _pypi_index(settings, pools["pypi"], store, downloader), store.file_use, app.get(FAST_PATH_KEY)
        )
    if settings.conda.enabled:
        pools["conda"] = _conda_pool(settings.conda.upstreams, settings.upstream)
        add_conda_routes(app, _conda_channels(settings, pools["conda"], store, downloader), store.file_use)

    app.on_startup.append(_start_access_log)
    if worker is not None:
        install_worker(app, worker, cycle.stats)
    if forwarder is not None:
        # A replica: cached content here; the operator's pages, stats and admin API are the primary's.
        add_get(app, "/-/health", replica_health)
        install_replica_upkeep(app, store, forwarder)
    else:
        add_get(app, "/-/health", health)
        add_get(app, "/-/status", status)
        app.on_startup.insert(0, _prepare_store)
        # The page at /, /-/stats, /metrics, the admin API, and the cache's size keeper.
        ops = install_operations(app, settings, store, downloader, pools, cycle.stats)
        ops.peer_stats = lambda: peer_stats(app)
    add_fallback(app)
    app.on_shutdown.append(_stop_downloads)
    app.on_cleanup.append(_close_pools)
    app.on_cleanup.append(_stop_access_log)
    return app


async def _start_access_log(app: web.Application) -> None:
    app[ACCESS_LOG_KEY].start()


async def _stop_access_log(app: web.Application) -> None:
    await app[ACCESS_LOG_KEY].stop()


async def _prepare_store(app: web.Application) -> None:
    app[STORE_KEY].prepare()


async def _stop_downloads(app: web.Application) -> None:
    # A graceful stop lets downloads in flight finish (their clients get whole files), within a bound.
    await app[DOWNLOADER_KEY].close(grace=DOWNLOAD_GRACE_SECONDS)


async def _close_pools(app: web.Application) -> None:
    for pool in app[POOLS_KEY].values():
        await pool.close()


async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok", "version": __version__})


def _side_status(app: web.Application) -> dict[str, object]:
    """What each side serves: the PyPI index's settings, the conda channels."""
    sides: dict[str, object] = {}
    if PYPI_INDEX_KEY in app:
        sides["pypi"] = app[PYPI_INDEX_KEY].status()
    if CONDA_CHANNELS_KEY in app:
        sides["conda"] = app[CONDA_CHANNELS_KEY].status()
    return sides


async def status(request: web.Request) -> web.StreamResponse:
    app = request.app
    return web.json_response(
        {
            "version": __version__,
            "uptime_seconds": round(time.time() - app[STARTED_KEY], 1),
            "downloads_in_flight": app[DOWNLOADER_KEY].in_flight(),
            "upstreams": {side: pool.status() for side, pool in app[POOLS_KEY].items()},
            **_side_status(app),
            **status_extras(app),
            "workers": workers_status(app) or None,
        }
    )
