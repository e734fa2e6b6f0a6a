"""How the workers agree on the blocks in force: a generation number in shared memory, and what each has applied.

A block or unblock is made on the primary (the admin API is its alone): it writes `gate/blocks.json`, puts the new
blocks in force in its own gate, advances the generation and wakes every other worker through its eventfd (made
here, before the fork, one per worker, so a worker started again has the same one). A worker woken (or, as a
safety net, every half second) compares the generation with its own, and when it moved reads the blocks file again,
puts them in force, and writes the generation it read before the file in its own word. Nothing of this is on the
request path: no file, no lock, no look at the word per request. The admin API answers once every live worker's
word has reached the generation it advanced to: from then on, whichever worker a request lands on, its pages and
files are judged with the new blocks.

A worker being started again writes its pid first (and that it has applied nothing), then reads the generation and
the blocks file, before it serves anything: the API waits for it as soon as its pid is there, and a worker that
started before it looked reads a file already written. A worker that has died is not waited for (its successor
reads the blocks before it serves); one alive that does not answer is waited for within the API's bound, and named.

Layout, one word (8 bytes, written whole) each: the generation, then per worker its pid and the generation applied.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import NamedTuple

_WORD = 8
NOT_APPLIED = -1


class Straggler(NamedTuple):
    worker: int  # its number
    pid: int


class GateSync:
    """The shared words; mapped once by the supervisor (inherited across fork), used by every worker."""

    def __init__(self, workers: int, supervisor_pid: int | None = None) -> None:
        self.workers = workers
        # The workers' parent: a pid still alive but no longer the supervisor's child is another process now.
        self.supervisor_pid = os.getpid() if supervisor_pid is None else supervisor_pid
        self._map = mmap.mmap(-1, (1 + 2 * workers) * _WORD)  # anonymous and shared: inherited by fork
        self._words = memoryview(self._map).cast("q")
        # Where eventfd is missing (not Linux: no workers there), the workers look at the word every few ms.
        eventfd = getattr(os, "eventfd", None)
        flags = getattr(os, "EFD_NONBLOCK", 0) | getattr(os, "EFD_CLOEXEC", 0)
        self._wakes: list[int] | None = [eventfd(0, flags) for _ in range(workers)] if eventfd else None

    def generation(self) -> int:
        return int(self._words[0])

    def advance(self) -> int:
        """A new generation (by the primary only, on its event loop: one writer)."""
        self._words[0] += 1
        return int(self._words[0])

    def wake_others(self, index: int) -> None:
        """Wake every worker but `index` (after `advance`): each then looks at the generation."""
        for other, fd in enumerate(self._wakes or ()):
            if other != index:
                with contextlib.suppress(BlockingIOError):  # its counter is full: it has wakes enough pending
                    os.eventfd_write(fd, 1)

    def wake_fd(self, index: int) -> int | None:
        """The file descriptor that becomes readable when worker `index` is woken (None: none, look every few ms)."""
        return None if self._wakes is None else self._wakes[index]

    def woken(self, index: int) -> None:
        """Worker `index` has seen its wake: it reads readable again only at the next one."""
        if self._wakes is not None:
            with contextlib.suppress(BlockingIOError):  # not woken since the last read
                os.eventfd_read(self._wakes[index])

    def joined(self, index: int) -> None:
        """A worker starting: applied nothing yet, then its pid (in that order: see the module)."""
        self._words[2 + 2 * index] = NOT_APPLIED
        self._words[1 + 2 * index] = os.getpid()

    def applied(self, index: int, generation: int) -> None:
        """The worker has the blocks of `generation` (or later) in force."""
        self._words[2 + 2 * index] = generation

    def applied_by(self, index: int) -> int:
        return int(self._words[2 + 2 * index])

    def stragglers(self, generation: int) -> list[Straggler]:
        """The live workers that have not yet applied `generation`."""
        behind = []
        for index in range(self.workers):
            pid = int(self._words[1 + 2 * index])
            if self._words[2 + 2 * index] < generation and pid and self._alive(pid):
                behind.append(Straggler(index, pid))
        return behind

    def _alive(self, pid: int) -> bool:
        """Whether `pid` is a live worker of this service: running (not a zombie) and the supervisor's child."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except FileNotFoundError:
            return False
        except OSError:  # no /proc here: a signal 0 says whether it exists
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return False  # not ours: the pid was taken by another user's process
            return True
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read from its last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        return len(fields) >= 2 and fields[0] not in (b"Z", b"X") and int(fields[1]) == self.supervisor_pid

    def close(self) -> None:
        for fd in self._wakes or ():
            os.close(fd)
        self._wakes = None
        self._words.release()
        self._map.close()
