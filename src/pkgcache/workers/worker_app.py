"""What a worker process adds to the aiohttp application: its counters in shared memory, the others' counters
(the primary, for the stats), the primary's own counters carried over its restarts, the hand-over to the primary
and the served-time upkeep (the replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

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
_PUBLISH_KEY: web.AppKey[Callable[[], None]] = web.AppKey("worker_publish")


class Carried(Protocol):
    """The counters only the primary keeps, in a shape of their own (service/carried.py)."""

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, saved: dict[str, Any]) -> None: ...


def install_worker(
    app: web.Application,
    worker: WorkerContext,
    stats: RequestStats,
    import_mark: Callable[[], int],
    carried: Carried | None = None,
) -> None:
    """Every worker: carry on from its slot's counters, and publish them (with the import mark it has acted on,
    `import_mark()`) about once a second. The primary does the same with its own counters, `carried`."""
    app[WORKER_KEY] = worker
    slot = worker.counters.slot(worker.index)
    slot.restore_into(stats)
    if carried is not None and worker.is_primary:
        carried.restore(worker.counters.carried.load())
    else:
        carried = None

    def publish() -> None:
        slot.publish(stats, import_mark())
        if carried is not None:
            worker.counters.carried.save(carried.snapshot())

    app[_PUBLISH_KEY] = publish

    async def publishing(app: web.Application) -> AsyncIterator[None]:
        publish()
        async with _running(_every(PUBLISH_SECONDS, publish)):
            yield
        publish()

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


def publish_now(app: web.Application) -> None:
    """Publish this worker's counters now (with one worker: nothing to do). Called before numbers are reported, so
    that every number ever reported is in shared memory: a restarted worker starts from at least that, and a
    counter a scraper has seen never goes back."""
    publish = app.get(_PUBLISH_KEY)
    if publish is not None:
        publish()


def peer_stats(app: web.Application) -> list[RequestStats]:
    """The other workers' published counters (the primary adds them to its own for the service's totals)."""
    worker = app.get(WORKER_KEY)
    if worker is None:
        return []
    return [worker.counters.slot(index).read().stats for index in range(worker.count) if index != worker.index]


def workers_status(app: web.Application) -> list[dict[str, object]]:
    """Each worker as `/-/status` shows it: its pid, role, requests answered, the last import mark it has acted on,
    the generation of the blocks it has in force and when it last reported."""
    worker = app.get(WORKER_KEY)
    if worker is None:
        return []
    publish_now(app)  # this worker's own row up to the moment
    rows: list[dict[str, object]] = []
    for index in range(worker.count):
        reading = worker.counters.slot(index).read()
        rows.append(
            {
                "index": index,
                "role": "primary" if index == PRIMARY else "replica",
                "pid": reading.pid or None,
                "requests": reading.stats.totals().requests,  # answered by this worker
                "handed_over": reading.stats.handed_over,  # passed to the primary (which answered and counted them)
                "import_mark": reading.import_mark,
                # The generation of the blocks it has in force (workers/gate_sync.py), as it said the moment it did.
                "blocks_generation": worker.counters.gate.applied_by(index),
                "reported_seconds_ago": round(time.time() - reading.published_at, 1) if reading.pid else None,
            }
        )
    return rows
