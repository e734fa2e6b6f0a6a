"""Passes over a new repodata version made ahead of the requests that need them, off the request path.

The first package miss after each version of a subdir's repodata needs its *suspects* (conda/records.py), and the
first hit its records of the cached packages (conda/package_records.py): a whole read of the file, 0.7 s for the
bench's 110 MB .json, 1.4 s from its .zst, seconds for conda-forge's. The writing worker starts that read as soon as
a new version is in place (`CachedChannels`, told by `IndexFiles` once the version is recorded), while the client
that fetched it parses it for its own solve (seconds for a big one), so that its first package request finds the
answers ready.

One pass at a time in the process, in a thread, and never while heavier work runs: a shard build's process of
35-50 MB beside the service (conda/generated_shards.py) is what the service's memory budget is sized for, and a
pass adds 15-25 MB. The layer that builds `hold`s the passes while its builder runs: a pass waiting starts once
no hold is left; a pass running is told to stop (it ends within a run of records, a few milliseconds) and starts
again from the beginning once no hold is left, so a build is never delayed. A newer pass for the same key (a newer
version of the subdir's repodata) takes the place of one still waiting or running. A request that needs an
answer before its pass has ended does not wait for the queue: it looks as it did before (conda/records.py's lock
on each file makes it wait for a pass running on that file instead of reading it again).

As the service stops, waiting passes are dropped, and a running one is told to stop and waited for at most
STOP_GRACE: the event loop's thread pool, which the stop waits for, is then free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long the service's stop waits for a running pass told to stop (it ends within milliseconds).
STOP_GRACE = 2.0


class PassStopped(Exception):
    """A pass was told to stop before its end (heavier work started, a newer pass came, the service stops)."""


class Superseded(PassStopped):
    """A newer pass under the same key took this one's place: its answer would be of an older version."""


class _Pass:
    def __init__(self, key: Hashable, work: Callable[[threading.Event], Any], future: asyncio.Future[Any]) -> None:
        self.key = key
        self.work = work
        self.future = future
        self.stop = threading.Event()


class PassesAhead:
    """Passes run in a thread one at a time, in the order they came, whenever nothing holds them."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, _Pass] = {}
        self._running: _Pass | None = None
        self._holds = 0
        self._free = asyncio.Event()
        self._free.set()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.passes_run = 0  # passes that ran to their end (for tests and the curious)

    def submit(self, key: Hashable, work: Callable[[threading.Event], _T]) -> asyncio.Future[_T]:
        """Run `work(stop)` in a thread when its turn comes and nothing holds the passes; its answer. `work` checks
        `stop` as it goes and raises PassStopped once it is set. A pass under the same key still waiting or running
        is superseded (its future gets `Superseded`)."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        if self._closed:
            future.set_exception(PassStopped("the service is stopping"))
            return future
        older = self._waiting.pop(key, None)
        if older is not None:
            _fail(older, Superseded(f"a newer pass for {key} came"))
        running = self._running
        if running is not None and running.key == key:
            running.stop.set()
            _fail(running, Superseded(f"a newer pass for {key} came"))
        self._waiting[key] = _Pass(key, work, future)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return future

    def hold(self) -> Callable[[], None]:
        """Heavier work begins: no pass runs until the function returned is called (once) as it ends. A pass
        running now is stopped, and runs again from its beginning after."""
        self._holds += 1
        self._free.clear()
        if self._running is not None:
            self._running.stop.set()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._holds -= 1
            if self._holds == 0:
                self._free.set()

        return release

    @property
    def held(self) -> bool:
        return self._holds > 0

    def waiting(self) -> list[Hashable]:
        return list(self._waiting)

    async def _run(self) -> None:
        while self._waiting and not self._closed:
            await self._free.wait()
            if not self._waiting or self._closed:
                return
            key = next(iter(self._waiting))
            job = self._waiting.pop(key)
            if job.future.done():
                continue
            job.stop.clear()
            self._running = job
            try:
                result = await asyncio.to_thread(job.work, job.stop)
            except PassStopped:
                if not job.future.done() and not self._closed and key not in self._waiting:
                    # Stopped for heavier work: first again once it ends.
                    self._waiting = {key: job, **self._waiting}
                    log.debug("pass for %s stopped for heavier work; run again after it", key)
                continue
            except Exception as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            finally:
                self._running = None
            self.passes_run += 1
            if not job.future.done():
                job.future.set_result(result)

    async def close(self, grace: float = STOP_GRACE) -> None:
        """As the service stops: waiting passes are dropped, a running one is stopped and waited for (at most
        `grace` seconds), so that no thread of ours holds up the event loop's end."""
        self._closed = True
        for job in self._waiting.values():
            _fail(job, PassStopped("the service is stopping"))
        self._waiting.clear()
        self._free.set()  # the worker, if waiting for a hold to end, wakes and ends
        running = self._running
        if running is not None:
            running.stop.set()
        worker = self._worker
        if worker is not None and not worker.done():
            done, _ = await asyncio.wait({worker}, timeout=grace)
            if not done:
                log.warning("a repodata pass did not stop within %.1f s as the service stops", grace)
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        if running is not None:
            _fail(running, PassStopped("the service is stopping"))


def _fail(job: _Pass, error: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(error)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Whoever asked may have stopped caring: an error nobody read is not logged as lost."""
    if not future.cancelled():
        future.exception()
