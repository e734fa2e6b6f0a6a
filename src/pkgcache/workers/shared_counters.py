"""Request counters every worker process publishes, so that the primary can report the whole service's numbers.

A block of shared memory, mapped by the supervisor before it starts the workers (an anonymous shared mapping is
inherited across fork), with one slot per worker. Each worker copies its counters into its own slot about once a
second; the primary sums the slots when `/-/stats`, `/metrics` or the page asks. A worker started again (after a
crash) carries on from its slot's last numbers, so the totals never go down.

Each slot is a seqlock: the writer makes the sequence odd, writes, makes it even; a reader retries while it is odd
or moved, so it does not sum half a slot, unless the writer was killed mid-write: then, after a bounded number of
tries, it takes what is there, and the restarted worker's next write makes the slot whole again.

A slot also carries the id of the last import mark its worker has acted on (gate/state.py), which `pkgcache
import` waits for on every worker. The blocks in force are agreed on through a block of their own (`gate_sync.py`).

The counters only the primary keeps (what it fetched from each upstream, evicted, made) have no fixed shape: the
primary publishes them as one JSON document in `carried`, a second block, alongside its slot, and a restarted
primary starts from them. The block holds two copies written in turn, and a word saying which one is whole: a
primary killed in the middle of a write leaves the previous copy in force.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import time
from dataclasses import fields
from typing import Any, NamedTuple

from pkgcache.stats import SIDES, RequestStats, SideCounters
from pkgcache.workers.gate_sync import GateSync

_COUNTER_NAMES = tuple(f.name for f in fields(SideCounters))
# Per slot: sequence, pid, published at (ms), import mark acted on, requests handed over, then every counter of
# every side.
_HEADER = 5
_SLOT_WORDS = _HEADER + len(SIDES) * len(_COUNTER_NAMES)
_WORD = 8
_READ_ATTEMPTS = 100
# Room for one copy of the primary's carried counters: a few hundred bytes per upstream and per conda subdir whose
# shards are made here. Pages of an anonymous mapping that are never written cost no memory.
CARRIED_BYTES = 512 * 1024
# The carried block: which copy is whole (0 or 1, and -1 before the first write), each copy's length, then the
# copies.
_CARRIED_HEADER = 3 * 8

log = logging.getLogger(__name__)


class SharedCounters:
    """The shared block; made once by the supervisor, then used by every worker through `slot(n)`."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, workers * _SLOT_WORDS * _WORD)  # anonymous and shared: inherited by fork
        self._words = memoryview(self._map).cast("q")
        self.carried = CarriedCounters()
        self.gate = GateSync(workers)

    def slot(self, index: int) -> CounterSlot:
        return CounterSlot(self._words, index)

    def close(self) -> None:
        self._words.release()
        self._map.close()
        self.carried.close()
        self.gate.close()


class CarriedCounters:
    """The primary's own counters, as a JSON document its successor starts from (see the module)."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _CARRIED_HEADER + 2 * CARRIED_BYTES)
        self._words = memoryview(self._map)[:_CARRIED_HEADER].cast("q")
        self._words[0] = -1
        self._too_big_said = False

    def save(self, document: dict[str, Any]) -> None:
        """Write `document` into the copy not in force, then put it in force (by the primary only)."""
        data = json.dumps(document, separators=(",", ":")).encode()
        if len(data) > CARRIED_BYTES:
            if not self._too_big_said:
                log.warning(
                    "the primary's counters (%d bytes) no longer fit in shared memory: a restart resets them", len(data)
                )
                self._too_big_said = True
            return
        target = 1 if self._words[0] == 0 else 0
        start = _CARRIED_HEADER + target * CARRIED_BYTES
        self._map[start : start + len(data)] = data
        self._words[1 + target] = len(data)
        self._words[0] = target  # one aligned word: the new copy is in force at once

    def load(self) -> dict[str, Any]:
        """The last copy put in force, or {} when none was ever written."""
        current = self._words[0]
        if current not in (0, 1):
            return {}
        start = _CARRIED_HEADER + current * CARRIED_BYTES
        data = self._map[start : start + self._words[1 + current]]
        try:
            found = json.loads(data)
        except ValueError:
            log.warning("the previous primary's counters could not be read: they start from 0")
            return {}
        return found if isinstance(found, dict) else {}

    def close(self) -> None:
        self._words.release()
        self._map.close()


class SlotReading(NamedTuple):
    pid: int  # 0: the slot was never published
    published_at: float
    stats: RequestStats
    import_mark: int


class CounterSlot:
    """One worker's place in the block."""

    def __init__(self, words: memoryview, index: int) -> None:
        self._words = words
        self.index = index
        self._base = index * _SLOT_WORDS

    def publish(self, stats: RequestStats, import_mark: int = 0) -> None:
        """Copy a worker's counters, and the import mark it has acted on, into its slot (by that worker only)."""
        words, base = self._words, self._base
        # Odd while being written. `| 1` rather than `+ 1`: a predecessor killed in the middle of a write left the
        # sequence odd, and this write must still end even.
        words[base] |= 1
        words[base + 1] = os.getpid()
        words[base + 2] = int(time.time() * 1000)
        words[base + 3] = import_mark
        words[base + 4] = stats.handed_over
        position = base + _HEADER
        for side in SIDES:
            counters = stats.sides[side]
            for name in _COUNTER_NAMES:
                words[position] = getattr(counters, name)
                position += 1
        words[base] += 1  # even: whole again

    def read(self) -> SlotReading:
        """The slot's last whole publication."""
        words, base = self._words, self._base
        values: list[int] = []
        for _ in range(_READ_ATTEMPTS):
            before = words[base]
            values = words[base + 1 : base + _SLOT_WORDS].tolist()
            if before % 2 == 0 and words[base] == before:
                break
        # Still odd after every attempt: its writer was killed in the middle of a write, and nobody will finish it.
        # What is there is its last word (each counter whole, some maybe from the write before): take it.
        stats = _stats_from(values[_HEADER - 1 :])
        stats.handed_over = values[3]
        return SlotReading(values[0], values[1] / 1000, stats, values[2])

    def restore_into(self, stats: RequestStats) -> None:
        """Start a worker's counters from its slot, so a restarted worker carries on where its predecessor stopped."""
        previous = self.read().stats
        for side in SIDES:
            stats.sides[side].add(previous.sides[side])
        stats.handed_over += previous.handed_over


def _stats_from(values: list[int]) -> RequestStats:
    stats = RequestStats()
    position = 0
    for side in SIDES:
        counters = stats.sides[side]
        for name in _COUNTER_NAMES:
            setattr(counters, name, values[position])
            position += 1
    return stats
