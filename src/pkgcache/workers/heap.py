"""Giving the system back the memory a worker has freed, once a burst of work is over.

glibc's malloc keeps what a process frees for its own later use: it returns only the top of the main heap, past
a threshold, and nothing of the arenas that threads allocate from. After a herd of downloads or a load of page
requests, a worker's freed buffers stay resident. The bench's scenarios one after the other (`--quick`, memory
table) left the process tree idling at 126-128 MB of PSS against 75 MB at its start; with a trim once each
burst had passed, 89 MB, and the scenarios after the herd peaked lower by as much.

`malloc_trim(0)` hands the free pages of every arena back (it madvises them away, keeping the heap's layout). It
is called once the process has worked and then been quiet for a moment, not during load, where the pages would
only be faulted in again a moment later. It runs in a thread: ctypes lets the GIL go during the call.

glibc only: where the C library has no malloc_trim (musl, macOS), there is nothing to call and nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable

from pkgcache.malloc_tuning import c_library_function

log = logging.getLogger(__name__)

# How often the process's CPU time is looked at.
CHECK_SECONDS = 1.0
# CPU seconds used within the last check under which the process counts as quiet (5% of a core).
QUIET_CPU_SECONDS = 0.05
# CPU seconds used since the last trim over which there is something worth trimming: a few requests free next to
# nothing, and a trim walks every arena.
BUSY_CPU_SECONDS = 0.25

Trim = Callable[[], object]


def find_malloc_trim() -> Trim | None:
    """A call of glibc's `malloc_trim(0)`, or None where the C library has none."""
    function = c_library_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    return None if function is None else lambda: function(0)


class QuietTrims:
    """Decides, one check at a time, when a trim is due: after work, once quiet.

    `clock` is the process's CPU time (all its threads): the one measure that covers requests, downloads and
    builds alike without each having to report.
    """

    def __init__(self, clock: Callable[[], float] = time.process_time) -> None:
        self._clock = clock
        self._last = clock()
        self._busy = 0.0  # CPU seconds since the last trim

    def due(self) -> bool:
        now = self._clock()
        used, self._last = now - self._last, now
        self._busy += used
        return used <= QUIET_CPU_SECONDS and self._busy >= BUSY_CPU_SECONDS

    def trimmed(self) -> None:
        """A trim has been made: its own CPU time is not work to trim after."""
        self._last = self._clock()
        self._busy = 0.0


async def trim_when_quiet(trim: Trim | None = None, trims: QuietTrims | None = None) -> None:
    """Run for the life of the worker: give freed memory back after each burst of work (see the module)."""
    trim = trim or find_malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the process")
        return
    trims = trims or QuietTrims()
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        if trims.due():
            await asyncio.to_thread(trim)
            trims.trimmed()
