"""The aiohttp application: builds the shared layers from the settings and mounts each side's routes."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from pkgcache import __version__
from pkgcache.conda.routes import CONDA_CHANNELS_KEY, add_conda_routes
from pkgcache.conda.service import CondaChannels
from pkgcache.config import CondaUpstream, PypiUpstream, Settings, UpstreamPolicy
from pkgcache.http.access_log import AccessLog
from pkgcache.http.auth import require_read_access
from pkgcache.http.metrics import body_bytes_sent, measure_requests, status_extras
from pkgcache.http.operations import install_operations
from pkgcache.http.responses import CACHE_STATE, UPSTREAM_USED, error_for, plain_error
from pkgcache.pypi.index import PypiIndex
from pkgcache.pypi.routes import PYPI_INDEX_KEY, add_pypi_routes
from pkgcache.storage.downloads import Downloader
from pkgcache.storage.refreshing import RefreshingFiles
from pkgcache.storage.store import CacheStore
from pkgcache.upstream.pool import Upstream, UpstreamPolicySettings, UpstreamPool

log = logging.getLogger(__name__)

MAX_PATH_LENGTH = 1024
DOWNLOAD_GRACE_SECONDS = 20.0
# Encoded forms of the characters that could change a path's meaning once decoded: dot, slash, backslash, NUL.
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
# Every refusal below needs one of these: an escape, a backslash, a NUL, a dot segment or a doubled slash.
_WORTH_A_CLOSER_LOOK = re.compile(r"%|\\|\x00|/\.|//")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", CacheStore)
DOWNLOADER_KEY = web.AppKey("downloader", Downloader)
POOLS_KEY = web.AppKey("pools", dict)
STARTED_KEY = web.AppKey("started_at", float)
ACCESS_LOG_KEY = web.AppKey("access_log", AccessLog)


def hostile_path_reason(raw_path: str) -> str | None:
    """Why a request path is refused before routing, or None if it is acceptable."""
    path = raw_path.split("?", 1)[0]
    if len(path) > MAX_PATH_LENGTH:
        return "path too long"
    if not _WORTH_A_CLOSER_LOOK.search(path):
        return None  # the usual case, decided with one scan: nothing below could match
    if _ENCODED_SEPARATOR.search(path):
        return "encoded dots, slashes or NUL bytes are not allowed in paths"
    decoded = unquote(path)
    if "\x00" in decoded or "\\" in decoded:
        return "NUL bytes and backslashes are not allowed in paths"
    if any(segment in (".", "..") for segment in decoded.split("/")):
        return "relative path segments are not allowed"
    if "://" in decoded or decoded.startswith("//"):
        return "absolute URLs are not allowed as paths"
    return None


@web.middleware
async def refuse_hostile_paths(request: web.Request, handler: Handler) -> web.StreamResponse:
    reason = hostile_path_reason(request.raw_path)
    if reason is not None:
        return plain_error(400, f"refused path: {reason}")
    return await handler(request)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: what was asked, the answer, cache hit or miss, size, time, upstream used."""
    started = time.monotonic()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[ACCESS_LOG_KEY].record(
            request.method,
            request.path,
            status,
            request.get(CACHE_STATE, "-"),
            body_bytes_sent(request, response),
            time.monotonic() - started,
            request.get(UPSTREAM_USED, "-"),
        )


@web.middleware
async def shared_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Failures of the shared layers that a handler did not answer itself become clear HTTP errors."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        response = error_for(exc)
        if response is None:
            log.exception("unexpected error on %s", request.path)
            return plain_error(500, f"internal error: {type(exc).__name__}")
        return response


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
        ),
    )


def _pypi_pool(upstreams: list[PypiUpstream], policy: UpstreamPolicy) -> UpstreamPool:
    return make_pool([(u.name, u.url, u.max_connections) for u in upstreams], policy)


def _conda_pool(upstreams: list[CondaUpstream], policy: UpstreamPolicy) -> UpstreamPool:
    return make_pool([(u.name, u.pkgs_url, u.max_connections) for u in upstreams], policy)


def create_app(settings: Settings) -> web.Application:
    # measure_requests sends cached files itself, so that access_log (outside it) sees the bytes really sent.
    app = web.Application(
        middlewares=[refuse_hostile_paths, access_log, measure_requests, require_read_access, shared_errors]
    )
    store = CacheStore(settings.server.data_dir)
    downloader = Downloader(store)
    pools: dict[str, UpstreamPool] = {}
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    app[DOWNLOADER_KEY] = downloader
    app[POOLS_KEY] = pools
    app[STARTED_KEY] = time.time()
    app[ACCESS_LOG_KEY] = AccessLog()

    if settings.pypi.enabled:
        pools["pypi"] = _pypi_pool(settings.pypi.upstreams, settings.upstream)
        add_pypi_routes(app, PypiIndex(settings.pypi, pools["pypi"], store, downloader))
    if settings.conda.enabled:
        pools["conda"] = _conda_pool(settings.conda.upstreams, settings.upstream)
        refreshing = RefreshingFiles(store, downloader)
        add_conda_routes(app, CondaChannels(settings.conda, pools["conda"], store, downloader, refreshing))

    app.router.add_get("/-/health", health)
    app.router.add_get("/-/status", status)
    app.on_startup.append(_prepare_store)
    app.on_startup.append(_start_access_log)
    # The page at /, /-/stats, /metrics, the admin API, and the cache's size keeper.
    install_operations(app, settings, store, downloader, pools)
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
        }
    )
