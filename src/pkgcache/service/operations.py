"""Mounting what the operator and the LAN's developers see: the page, stats, metrics, the admin API, the size keeper.

`create_app` calls `install_operations` once the sides are set up, with the request counters that the request
cycle (http/request_cycle.py) feeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

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
    keeper: CacheKeeper,
    pools: dict[str, UpstreamPool],
    stats: RequestStats,
    peer_stats: Callable[[], list[RequestStats]],
    side_status: Callable[[], dict[str, dict[str, object]]],
    *,
    started_at: float,
    publish: Callable[[], None],
) -> Operations:
    ops = Operations(
        settings=settings,
        store=store,
        downloader=downloader,
        pools=pools,
        keeper=keeper,
        stats=stats,
        peer_stats=peer_stats,
        side_status=side_status,
        started_at=started_at,
        publish=publish,
    )
    app[OPERATIONS_KEY] = ops
    add_ui_routes(app)
    add_metrics_routes(app)
    add_admin_routes(app, settings.access.admin_token, pypi=settings.pypi.enabled, conda=settings.conda.enabled)
    app.cleanup_ctx.append(_keeper_running)
    return ops


async def _keeper_running(app: web.Application) -> AsyncIterator[None]:
    keeper = app[OPERATIONS_KEY].keeper
    await keeper.start()
    yield
    await keeper.stop()
