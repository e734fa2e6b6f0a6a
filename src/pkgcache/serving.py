"""Running the service: in this process, or as a supervisor with worker processes sharing the port (workers/).

`pkgcache serve` (and the process `pkgcache start` launches) comes here once it holds the data directory's lock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket

from aiohttp import web

from pkgcache import __version__
from pkgcache.config import Settings
from pkgcache.http.app import create_app
from pkgcache.http.event_loop import loop_name, new_event_loop
from pkgcache.workers.context import WorkerContext
from pkgcache.workers.supervisor import Supervisor

log = logging.getLogger("pkgcache")

SHUTDOWN_TIMEOUT = 30.0
# How long the supervisor waits for its workers' own graceful shutdowns before it kills them.
WORKER_STOP_TIMEOUT = SHUTDOWN_TIMEOUT + 15.0


def run(settings: Settings) -> int:
    """Serve until stopped (SIGTERM, SIGINT); the exit status. OSError if the address cannot be listened on."""
    count = settings.server.worker_count()
    _log_banner(settings, count)
    if count == 1:
        serve_worker(settings, None, None)
        return 0
    supervisor = Supervisor(
        settings.server.host,
        settings.server.port,
        count,
        functools.partial(serve_worker, settings),
        shutdown_timeout=WORKER_STOP_TIMEOUT,
    )
    return supervisor.run()


def serve_worker(settings: Settings, worker: WorkerContext | None, sockets: list[socket.socket] | None) -> None:
    """One serving process: the whole service (`worker` None, listening itself), or one worker on given sockets."""
    app = create_app(settings, worker)
    app.on_shutdown.insert(0, _log_shutdown)
    app.on_startup.append(_log_event_loop)
    where = {"sock": sockets} if sockets is not None else {"host": settings.server.host, "port": settings.server.port}
    # run_app turns SIGINT and SIGTERM into a graceful shutdown: stop listening, run the shutdown hooks (which
    # settle downloads in flight), wait up to shutdown_timeout for requests being answered, then return.
    web.run_app(
        app,
        **where,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=True,
        loop=new_event_loop(),
    )


def _log_banner(settings: Settings, workers: int) -> None:
    server = settings.server
    processes = "one process" if workers == 1 else f"{workers} worker processes"
    log.info(
        "pkgcache %s serving on http://%s:%d/ with data in %s (%s)",
        __version__,
        server.host,
        server.port,
        server.data_dir,
        processes,
    )
    for upstream in settings.pypi.upstreams if settings.pypi.enabled else []:
        log.info("pypi upstream %s: %s", upstream.name, upstream.url)
    for conda in settings.conda.upstreams if settings.conda.enabled else []:
        log.info("conda upstream %s: %s and %s", conda.name, conda.pkgs_url, conda.cloud_url)


async def _log_shutdown(app: web.Application) -> None:
    log.info("shutting down: no new connections; settling downloads in flight")


async def _log_event_loop(app: web.Application) -> None:
    # uvloop where it is installed, with the zero-copy sendfile it lacks (http/event_loop.py, BENCHMARKS.md).
    log.info("event loop: %s", loop_name(asyncio.get_running_loop()))
