"""Freed memory given back to the system after a burst of work (pkgcache/workers/heap.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from pkgcache.workers import heap
from pkgcache.workers.heap import QuietTrims, find_malloc_trim, trim_when_quiet
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.support import BackgroundLoop

glibc_only = pytest.mark.skipif(find_malloc_trim() is None, reason="no malloc_trim in this C library")


class FakeClock:
    """CPU seconds that a test hands out: `work(s)` is what the process used since the last reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


def _checks(trims: QuietTrims, clock: FakeClock, used_per_check: list[float]) -> list[bool]:
    """Whether a trim was due at each check, the process having used that much CPU before it (trims are made)."""
    due = []
    for used in used_per_check:
        clock.work(used)
        due.append(trims.due())
        if due[-1]:
            trims.trimmed()
    return due


def test_a_trim_is_due_once_a_burst_of_work_is_over_and_only_once() -> None:
    clock = FakeClock()
    trims = QuietTrims(clock)
    busy, quiet = 0.6, 0.001
    assert _checks(trims, clock, [busy, busy, quiet, quiet, quiet]) == [False, False, True, False, False]


def test_no_trim_while_the_process_keeps_working_nor_when_it_never_did() -> None:
    clock = FakeClock()
    trims = QuietTrims(clock)
    assert not any(_checks(trims, clock, [0.0] * 20)), "an idle process has nothing to give back"
    steady = heap.QUIET_CPU_SECONDS * 2
    assert not any(_checks(trims, clock, [steady] * 50)), "under load the pages would be faulted in again"
    assert _checks(trims, clock, [0.0]) == [True], "and once the load stops, the trim comes"


def test_a_little_work_is_not_worth_a_trim() -> None:
    clock = FakeClock()
    trims = QuietTrims(clock)
    a_few_requests = heap.BUSY_CPU_SECONDS / 4
    assert _checks(trims, clock, [a_few_requests, 0.0, 0.0]) == [False, False, False]
    assert _checks(trims, clock, [a_few_requests * 3, 0.0]) == [False, True], "work adds up until it is"


def test_the_cpu_of_the_trim_itself_is_not_counted_as_work() -> None:
    clock = FakeClock()
    trims = QuietTrims(clock)
    clock.work(1.0)
    assert not trims.due()
    assert trims.due()
    clock.work(heap.BUSY_CPU_SECONDS)  # the trim's own walk over the heap
    trims.trimmed()
    assert not trims.due()


def test_the_trimming_task_trims_after_work_in_a_thread_and_stops_when_cancelled(
    bg_loop: BackgroundLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heap, "CHECK_SECONDS", 0.01)
    clock = FakeClock()
    clock.work(1.0)  # a burst before the first check; then nothing
    calls: list[int] = []  # the thread of each trim
    loop_thread: list[int] = []

    def trim() -> None:
        calls.append(threading.get_ident())

    async def run() -> None:
        loop_thread.append(threading.get_ident())
        task = asyncio.get_running_loop().create_task(trim_when_quiet(trim, QuietTrims(clock)))
        await asyncio.sleep(0)
        clock.work(1.0)
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # more checks: nothing more to trim
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    bg_loop.run(run())
    assert len(calls) == 1, "one burst, one trim"
    assert calls[0] != loop_thread[0], "the trim holds no event loop"


def test_without_malloc_trim_the_task_ends_at_once(bg_loop: BackgroundLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "find_malloc_trim", lambda: None)
    bg_loop.run(asyncio.wait_for(trim_when_quiet(), timeout=5))


def test_every_worker_of_the_service_runs_the_trimming_task(
    make_cache: Callable[..., object], official_upstream: OfficialLikeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    monkeypatch.setattr(heap, "find_malloc_trim", lambda: lambda: calls.append(time.monotonic()))
    monkeypatch.setattr(heap, "CHECK_SECONDS", 0.01)
    monkeypatch.setattr(heap, "BUSY_CPU_SECONDS", 0.0)  # any work is enough
    monkeypatch.setattr(heap, "QUIET_CPU_SECONDS", 1e9)  # and the process always counts as quiet
    make_cache([official_upstream.index_url])
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls, "the service never trimmed"


# Run in a fresh interpreter: allocations of 32 KiB (under glibc's mmap threshold: from the heap) with a small
# block kept after each, so that the freed ones are in the middle of the heap, where glibc keeps them.
_FREED_AND_TRIMMED = """
import json, os
from pkgcache.workers.heap import find_malloc_trim

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

baseline = rss()
big, pins = [], []
for _ in range(2048):
    big.append(bytearray(b"x" * 32768))
    pins.append(bytearray(1024))
allocated = rss()
del big
freed = rss()
find_malloc_trim()()
print(json.dumps({"baseline": baseline, "allocated": allocated, "freed": freed, "trimmed": rss()}))
"""


@glibc_only
def test_malloc_trim_gives_freed_heap_memory_back() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FREED_AND_TRIMMED], capture_output=True, text=True, timeout=60, check=True
    )
    sizes = json.loads(result.stdout)
    mb = 1 << 20
    assert sizes["allocated"] - sizes["baseline"] > 48 * mb, sizes  # 64 MB of blocks were made
    # Why the module exists: freed, they stay with the process...
    assert sizes["freed"] - sizes["baseline"] > 48 * mb, sizes
    # ...until the trim hands them back.
    assert sizes["freed"] - sizes["trimmed"] > 48 * mb, sizes
