"""Mounting what the operator and the LAN's developers see: the page, stats, metrics, the admin API, the size keeper.

`create_app` calls `install_operations` once the sides are set up, with the request counters that the request
cycle (http/request_cycle.py) feeds.
"""

from __future__ import annotations

from aiohttp import web

from pkgcache.config import Settings
from pkgcache.service.admin import add_admin_routes
from pkgcache.service.metrics import add_metrics_routes
from pkgcache.service.state import OPERATIONS_KEY, Operations
from pkgcache.service.ui import add_ui_routes
from pkgcache.stats import RequestStats
from pkgcache.storage.downloads import Downloader
from pkgcache.storage.eviction import CacheKeeper
from pkgcache.storage.store import CacheStore
from pkgcache.upstream.pool import UpstreamPool


def install_operations(
    app: web.Application,
    settings: Settings,
    store: CacheStore,
    downloader: Downloader,
    pools: dict[str, UpstreamPool],
    stats: RequestStats,
) -> Operations:
    keeper = CacheKeeper(store, settings.cache.max_size)
    downloader.on_commit = keeper.file_committed
    ops = Operations(settings=settings, store=store, downloader=downloader, pools=pools, keeper=keeper, stats=stats)
    app[OPERATIONS_KEY] = ops
    add_ui_routes(app)
    add_metrics_routes(app)
    add_admin_routes(app, settings.access.admin_token, pypi=settings.pypi.enabled, conda=settings.conda.enabled)
    # Appended after create_app's own startup step, which prepares the data directory the keeper measures.
    app.on_startup.append(_start_keeper)
    app.on_cleanup.append(_stop_keeper)
    return ops


async def _start_keeper(app: web.Application) -> None:
    await app[OPERATIONS_KEY].keeper.start()


async def _stop_keeper(app: web.Application) -> None:
    await app[OPERATIONS_KEY].keeper.stop()
