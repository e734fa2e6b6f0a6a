"""Running the service: in this process, or as a supervisor with worker processes sharing the port (workers/).

`pkgcache serve` (and the process `pkgcache start` launches) comes here once it holds the data directory's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from pkgcache import __version__
from pkgcache.config import CondaConfig, PypiConfig, Settings
from pkgcache.http.fast_path import ServiceRunner
from pkgcache.http.library_internals import ConnectionWatch, loop_name, new_event_loop
from pkgcache.malloc_tuning import SERVICE_MMAP_THRESHOLD, release_freed_memory_promptly
from pkgcache.presets import shared_operators
from pkgcache.service.app import create_app
from pkgcache.workers.context import WorkerContext
from pkgcache.workers.supervisor import BACKLOG, Supervisor

log = logging.getLogger("pkgcache")

SHUTDOWN_TIMEOUT = 30.0
# File descriptors a worker keeps for cached files, temporary files, logs and upstream connections.
FILES_RESERVED = 256
# How long the supervisor waits for its workers' own graceful shutdowns before it kills them.
WORKER_STOP_TIMEOUT = SHUTDOWN_TIMEOUT + 15.0


def run(settings: Settings) -> int:
    """Serve until stopped (SIGTERM, SIGINT); the exit status. OSError if the address cannot be listened on."""
    raise_open_file_limit()
    release_freed_memory_promptly(SERVICE_MMAP_THRESHOLD)  # before the workers are forked: they keep the setting
    count = settings.server.worker_count()
    # Said once the port is held: "serving on" followed by "Address already in use" would be a contradiction.
    banner = functools.partial(_log_banner, settings, count)
    if count == 1:
        serve_worker(settings, None, None, on_listening=banner)
        return 0
    supervisor = Supervisor(
        settings.server.host,
        settings.server.port,
        count,
        functools.partial(serve_worker, settings),
        str(settings.server.data_dir),
        shutdown_timeout=WORKER_STOP_TIMEOUT,
        on_bound=banner,
    )
    return supervisor.run()


def serve_worker(
    settings: Settings,
    worker: WorkerContext | None,
    sockets: list[socket.socket] | None,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """One serving process: the whole service (`worker` None, listening itself), or one worker on given sockets.
    `on_listening` is called once every socket listens.

    Like aiohttp's run_app, but with pkgcache's runner (the fast path in front of the router): SIGINT and SIGTERM
    start a graceful shutdown (stop listening, run the shutdown hooks, which settle downloads in flight, wait up
    to SHUTDOWN_TIMEOUT for requests being answered), then it returns.
    """
    app = create_app(settings, worker)
    app.on_shutdown.insert(0, _log_shutdown)
    app.on_startup.append(_log_event_loop)
    runner = ServiceRunner(
        app,
        handle_signals=True,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=settings.server.keepalive_timeout,
    )
    watch = ConnectionWatch(settings.server.header_timeout, connection_budget())

    async def serve() -> None:
        await runner.setup()
        try:
            sites: list[web.BaseSite]
            if sockets is None:
                sites = [web.TCPSite(runner, settings.server.host, settings.server.port, backlog=BACKLOG)]
            else:
                # The supervisor's listen(BACKLOG) would be cut back to aiohttp's default of 128 without this.
                sites = [web.SockSite(runner, sock, backlog=BACKLOG) for sock in sockets]
            for site in sites:
                await site.start()
            if on_listening is not None:
                on_listening()
            await watch.run(runner)  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    _run_until_stopped(serve())


def _run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on pkgcache's event loop until a signal ends it, then cancel it alone, so its `finally` (the
    graceful part: downloads in flight settle, requests being answered finish) runs while the tasks it waits for
    still live. asyncio.Runner's exit would cancel every task at once, cutting them all."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)
        try:
            loop.run_until_complete(task)
        except (web.GracefulExit, KeyboardInterrupt):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)


def raise_open_file_limit() -> None:
    """Every connection is a file: raise the soft limit (often 1,024) to the hard one the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connection_budget() -> int:
    """How many client connections a worker keeps before closing idle ones: its file limit, less room for the
    cache's own files and upstream connections."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, int((soft - FILES_RESERVED) * 0.9))


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
        log.info("pypi upstream %s: %s", upstream.name, upstream.shown(upstream.url))
    for conda in settings.conda.upstreams if settings.conda.enabled else []:
        log.info("conda upstream %s: %s and %s", conda.name, conda.shown(conda.pkgs_url), conda.shown(conda.cloud_url))
    sides: dict[str, PypiConfig | CondaConfig] = {"pypi": settings.pypi, "conda": settings.conda}
    for side, config in sides.items():
        if not config.enabled:
            continue
        for operator, names in shared_operators([upstream.name for upstream in config.upstreams]).items():
            log.warning(
                "%s upstreams %s are all run by (or end up on) %s: they fail together; see docs/upstreams.md",
                side,
                ", ".join(names),
                operator,
            )


async def _log_shutdown(app: web.Application) -> None:
    log.info("shutting down: no new connections; settling downloads in flight")


async def _log_event_loop(app: web.Application) -> None:
    # uvloop where it is installed, with the zero-copy sendfile it lacks (http/library_internals.py, BENCHMARKS.md).
    log.info("event loop: %s", loop_name(asyncio.get_running_loop()))
