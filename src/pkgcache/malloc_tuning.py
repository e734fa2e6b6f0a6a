"""Making glibc's malloc give freed memory back as it goes, in every pkgcache process.

glibc serves a request of 128 KiB or more with its own mmap, unmapped when freed; but the first such block freed
raises that threshold to its size (and the heap's trim threshold to twice it), so that from then on blocks of up to
that size come from the heap and the threads' arenas, whose free space is kept. A cold shard build moves a
repodata of 100+ MB through buffers of about 1 MiB (the download written and checked in storage threads, the
builder's runs of records): each process then held a few to 20 MB it had freed, and the tree peaked at 146-156 MB of
PSS against its 150 MB budget (bench/analysis.md). With the thresholds fixed (no raise), 125-135 MB.

The threshold for a block's own mapping differs: a builder keeps glibc's 128 KiB; the service takes 1 MiB, above
the 256 KiB chunks a download is read, written and sent in (at 128 KiB each chunk was a mapping of its own, faulted
in afresh: a 200 MB miss went at 102-140 MB/s against 270-280, 2,961 mmap calls for one file), while its 1 MiB
buffers (a repodata's check) stay mapped. Measured by hand: the cold build's tree at 131-134 MB either way.

`workers/heap.py` trims once a burst of work is over; this stops the burst itself from piling up freed memory.
glibc only (its `mallopt` parameters): elsewhere nothing is done.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

# glibc's mallopt parameter numbers (malloc.h): stable since they were given, part of its ABI.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks this big or bigger get their own mapping, unmapped when freed. In a shard builder: glibc's own default,
# kept fixed. In the service: above the 256 KiB chunks a download is written and sent in, each of which would
# otherwise be a mapping of its own, faulted in afresh (a 200 MB miss went at half its rate: 2,961 mmap calls).
BUILDER_MMAP_THRESHOLD = 128 * 1024
SERVICE_MMAP_THRESHOLD = 1024 * 1024
# The heap's free top is given back once it is this big: more than the 128 KiB default, so that a buffer freed
# and allocated again a moment later (a download's chunks) does not cost a system call each time.
TRIM_THRESHOLD = 1024 * 1024


def c_library_function(name: str, argtypes: list[type], restype: type) -> Any | None:
    """The C library's function `name` typed as given (ctypes), or None off Linux or where it has none (musl has
    no mallopt, for one). Also how workers/heap.py finds `malloc_trim`."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)  # the process's own symbols: its C library's among them
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function


def release_freed_memory_promptly(mmap_threshold: int = BUILDER_MMAP_THRESHOLD) -> bool:
    """Fix malloc's thresholds for this process and the processes it forks (see the module); False where the C
    library is not glibc (nothing done)."""
    mallopt = c_library_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    if mallopt is None:
        return False
    # Setting either one turns off the raising of both (glibc's rule); each call answers 1 when taken.
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
