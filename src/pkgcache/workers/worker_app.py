"""What a worker process adds to the aiohttp application: its counters in shared memory, the others' counters
(the primary, for the stats), the hand-over to the primary and the served-time upkeep (the replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from pkgcache.stats import RequestStats
from pkgcache.storage.eviction import write_back_served_times
from pkgcache.storage.store import CacheStore
from pkgcache.workers.context import PRIMARY, WorkerContext
from pkgcache.workers.forwarding import Forwarder

log = logging.getLogger(__name__)

PUBLISH_SECONDS = 1.0
# A replica writes back when it served each file, for the primary's least-recently-used eviction to see.
SERVED_TIMES_SECONDS = 30.0

WORKER_KEY = web.AppKey("worker", WorkerContext)
_STATS_KEY = web.AppKey("worker_stats", RequestStats)


def install_worker(app: web.Application, worker: WorkerContext, stats: RequestStats) -> None:
    """Every worker: carry on from its slot's counters, and publish them about once a second."""
    app[WORKER_KEY] = worker
    app[_STATS_KEY] = stats
    slot = worker.counters.slot(worker.index)
    slot.restore_into(stats)

    async def publishing(app: web.Application) -> AsyncIterator[None]:
        slot.publish(stats)
        async with _running(_every(PUBLISH_SECONDS, slot.publish, stats)):
            yield
        slot.publish(stats)

    app.cleanup_ctx.append(publishing)


def install_replica_upkeep(app: web.Application, store: CacheStore, forwarder: Forwarder) -> None:
    """A replica: its connection pool to the primary, and served times written back for eviction."""

    async def upkeep(app: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        served_times = _every(SERVED_TIMES_SECONDS, write_back_served_times, store.root, store.file_use)
        async with _running(served_times):
            yield
        await forwarder.close()
        await write_back_served_times(store.root, store.file_use)

    app.cleanup_ctx.append(upkeep)


@contextlib.asynccontextmanager
async def _running(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`work` as a task for the duration of the block, cancelled at its end."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _every(seconds: float, action: Any, *args: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            result = action(*args)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("worker upkeep failed; trying again in %.0f s", seconds)


def peer_stats(app: web.Application) -> list[RequestStats]:
    """The other workers' published counters (the primary adds them to its own for the service's totals)."""
    worker = app.get(WORKER_KEY)
    if worker is None:
        return []
    return [worker.counters.slot(index).read()[2] for index in range(worker.count) if index != worker.index]


def workers_status(app: web.Application) -> list[dict[str, object]]:
    """Each worker as `/-/status` shows it: its pid, role, requests answered and when it last reported."""
    worker = app.get(WORKER_KEY)
    if worker is None:
        return []
    worker.counters.slot(worker.index).publish(app[_STATS_KEY])  # this worker's own row up to the moment
    rows: list[dict[str, object]] = []
    for index in range(worker.count):
        pid, published_at, stats = worker.counters.slot(index).read()
        rows.append(
            {
                "index": index,
                "role": "primary" if index == PRIMARY else "replica",
                "pid": pid or None,
                "requests": stats.totals().requests,  # answered by this worker
                "handed_over": stats.handed_over,  # passed to the primary (which answered and counted them)
                "reported_seconds_ago": round(time.time() - published_at, 1) if pid else None,
            }
        )
    return rows
