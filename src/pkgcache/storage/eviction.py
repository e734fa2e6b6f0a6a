"""Keeping the cache within its size limit, and removing entries on request.

What may be evicted: package files only, the big immutable things that can always be fetched again —
`pypi/files/...` (not the core metadata beside them) and, under `conda/`, `*.conda` and `*.tar.bz2`. Index pages and
repodata are small and follow their own time-to-live; files being downloaded live in `tmp/` until committed and are
never looked at; a file that is being sent to a client right now is skipped.

Size: a running total of the bytes under `pypi/` and `conda/`, measured by one walk at startup (in a worker
thread), then moved by every commit, eviction and purge. A periodic walk, also in a worker thread, corrects what
the running total cannot see (index pages rewritten in place, files removed by hand).

Offline (`[server] offline = true`), nothing is evicted for size: a file evicted could not be fetched again, and in
an air-gapped site that imported a bundle it is the only copy. The size is still measured and shown; `max_size` is
said not to be enforced, once, at start; `pkgcache gc` by hand still evicts, with a warning.

Recency: the kernel's atime is unreliable (noatime, relatime), so each serve is noted in memory (`FileUse`,
no system call on the event loop) and written back, in batches from a worker thread, as the file's atime with
`os.utime`. An explicit utime is honoured whatever the mount options, so the record survives restarts; mtime,
which aiohttp turns into ETag and Last-Modified, is left alone. Recency is max(atime, mtime): a file committed
and never served counts from its download. Other readers of the files (a backup) can only make a file look more
recently used, the safe direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pkgcache.storage.file_use import FileUse
from pkgcache.storage.store import CacheStore

log = logging.getLogger(__name__)

# Once the limit is passed, evict down to this share of it, so that eviction does not run after every download.
LOW_WATER_RATIO = 0.9
# How often the running total is corrected by a walk and served-times are written back.
MAINTENANCE_INTERVAL = 600.0
# After an eviction that could not free what it set out to although nothing evictable was in use (index files
# alone fill the cache), commits wait this long before starting another walk. One that freed all it meant to, and
# is over the limit again only because files came in meanwhile, is followed by another at once.
EVICTION_BACKOFF = 60.0
# After one that had to leave files being sent (to clients, or followed as they download), it is tried again this
# soon, so that they go once sent. The limit stays soft under load: files being sent stay until sent, and files still
# downloading in tmp/ are not counted at all until committed, so the cache may be over its limit by what is in
# flight (QA: 27 MB with a 6 MB limit under 60 clients of 6 MB files).
BUSY_RETRY_SECONDS = 1.0
CACHE_AREAS = ("pypi", "conda")
CONDA_PACKAGE_SUFFIXES = (".conda", ".tar.bz2")


def holds_cache(root: Path) -> bool:
    """Whether a directory is a pkgcache data directory that has cached something (a typo'd one has not)."""
    return any((root / area).is_dir() for area in CACHE_AREAS)


def is_package_file(relative: Path) -> bool:
    """Whether a file (path relative to the data directory) is a package file that eviction may remove."""
    parts = relative.parts
    if len(parts) >= 4 and parts[0] == "pypi" and parts[1] == "files":
        # Core metadata is kept: a few KB that spare resolvers whole downloads, and made again only at a cost.
        return not relative.name.endswith(".metadata")
    if len(parts) >= 2 and parts[0] == "conda":
        # Shards are index data, small, and those made here cannot be fetched again: kept.
        return relative.name.endswith(CONDA_PACKAGE_SUFFIXES)
    return False


@dataclass
class Freed:
    """What an eviction or purge removed (and how many files it had to leave because they were in use)."""

    files: int = 0
    bytes: int = 0
    skipped_busy: int = 0

    def add(self, other: Freed) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.skipped_busy += other.skipped_busy

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


# --- blocking filesystem work: run these in a worker thread ---


def _walk_files(directory: Path) -> Iterator[os.DirEntry[str]]:
    """Regular files under `directory`, symlinks neither followed nor reported."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_files(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry
        except OSError:
            continue


def measure_cache(root: Path) -> int:
    """Bytes of every cached entry (pages, repodata, package files); temporary files and logs are not counted."""
    total = 0
    for area in CACHE_AREAS:
        for entry in _walk_files(root / area):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def write_served_times(served: dict[Path, float]) -> None:
    """Record serve times as atimes, keeping each file's mtime (blocking)."""
    for path, when in served.items():
        try:
            stat = path.stat()
            atime_ns = max(int(when * 1_000_000_000), stat.st_atime_ns)
            os.utime(path, ns=(atime_ns, stat.st_mtime_ns))
        except OSError:
            continue  # evicted or purged meanwhile


async def write_back_served_times(root: Path, use: FileUse) -> None:
    """Write the serve times noted in memory for files under `root` back as their atimes, in a worker thread."""
    served = use.take_served_under(root)
    if served:
        await asyncio.to_thread(write_served_times, served)


def _package_files_by_recency(root: Path) -> list[tuple[float, int, Path]]:
    found: list[tuple[float, int, Path]] = []
    for area in CACHE_AREAS:
        for entry in _walk_files(root / area):
            path = Path(entry.path)
            if not is_package_file(path.relative_to(root)):
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    found.sort(key=lambda item: item[0])
    return found


def evict_least_recent(root: Path, bytes_to_free: int, use: FileUse) -> Freed:
    """Remove package files, least recently used first, until `bytes_to_free` bytes are gone (blocking).

    Served times still in memory are written back first so that the walk sees them.
    """
    write_served_times(use.take_served_under(root))
    started = time.time()
    freed = Freed()
    for _recency, size, path in _package_files_by_recency(root):
        if freed.bytes >= bytes_to_free:
            break
        if use.remove_if_idle(path, idle_since=started):
            freed.files += 1
            freed.bytes += size
        else:
            freed.skipped_busy += 1
    return freed


def remove_entries(paths: list[Path]) -> Freed:
    """Remove files and whole folders (a project's entries), counting what was freed (blocking).

    On POSIX a file being sent keeps its bytes until the send ends, so a purge may remove it.
    """
    freed = Freed()
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for entry in _walk_files(path):
                freed.add(_unlink_counting(Path(entry.path)))
            _remove_empty_dirs(path)
        elif path.exists() or path.is_symlink():
            freed.add(_unlink_counting(path))
    return freed


def _unlink_counting(path: Path) -> Freed:
    try:
        size = path.lstat().st_size
        path.unlink()
    except FileNotFoundError:
        return Freed()
    return Freed(files=1, bytes=size)


def _remove_empty_dirs(directory: Path) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(directory), key=lambda item: -len(item[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


# --- the keeper, on the event loop ---


class CacheKeeper:
    """Knows the cache's size and keeps it under `max_size`: evicts after commits, periodically and on demand.

    `offline`: the instance never asks an upstream, so what it evicts is gone for good: it only measures, and evicts
    on demand (`gc`) alone."""

    def __init__(
        self,
        store: CacheStore,
        max_size: int | None,
        *,
        interval: float = MAINTENANCE_INTERVAL,
        offline: bool = False,
    ) -> None:
        self.store = store
        self.max_size = max_size
        self.offline = offline
        self.use = store.file_use
        self.interval = interval
        self.total_bytes = 0
        self.measured = False
        self.evicted = Freed()  # since start
        self.last_eviction: float | None = None
        self._lock = asyncio.Lock()  # one walk, eviction or purge at a time
        self._eviction: asyncio.Task[Freed] | None = None
        self._no_auto_eviction_until = 0.0
        self._again = False
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def root(self) -> Path:
        return self.store.root

    def low_water(self) -> int | None:
        return None if self.max_size is None else int(self.max_size * LOW_WATER_RATIO)

    def over_limit(self) -> bool:
        return self.max_size is not None and self.total_bytes > self.max_size

    # --- lifecycle ---

    async def start(self) -> None:
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def stop(self) -> None:
        for task in (self._maintenance, self._eviction):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.write_served_times()

    async def _maintain(self) -> None:
        if self.offline and self.max_size is not None:
            log.warning(
                "offline: [cache] max_size (%d bytes) is not enforced: a package file evicted could not be fetched "
                "again, and may be the only copy (an imported bundle); `pkgcache gc` still evicts if asked",
                self.max_size,
            )
        while True:
            try:
                await self.write_served_times()
                await self.measure()
                if self.over_limit() and not self.offline:
                    await self.evict_to(self.low_water() or 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cache maintenance failed; trying again in %.0f s", self.interval)
            await asyncio.sleep(self.interval)

    # --- events ---

    def file_committed(self, path: Path, added_bytes: int) -> None:
        """The Downloader's commit hook: a file entered the cache (or replaced one), changing it by `added_bytes`."""
        self.total_bytes += added_bytes
        self._evict_if_over()

    def _evict_if_over(self) -> None:
        if self.offline or not self.over_limit() or time.monotonic() < self._no_auto_eviction_until:
            return
        if self._eviction is None or self._eviction.done():
            self._eviction = asyncio.get_running_loop().create_task(self.evict_to(self.low_water() or 0))
        else:
            self._again = True  # the running eviction may have walked past what was just added

    # --- operations ---

    async def measure(self) -> int:
        """Walk the cache (in a worker thread) and set the running total from it."""
        async with self._lock:
            at_start = self.total_bytes
            measured = await asyncio.to_thread(measure_cache, self.root)
            # Commits during the walk moved the total; the walk may have missed them, so keep their change.
            self.total_bytes = measured + (self.total_bytes - at_start)
            self.measured = True
            return self.total_bytes

    async def evict_to(self, target: int) -> Freed:
        """Evict least recently used package files until the cache holds at most `target` bytes."""
        async with self._lock:
            excess = self.total_bytes - target
            if excess <= 0:
                return Freed()
            freed = await asyncio.to_thread(evict_least_recent, self.root, excess, self.use)
            self.total_bytes -= freed.bytes
            self.evicted.add(freed)
            self.last_eviction = time.time()
        if freed.files:
            log.info(
                "evicted %d package files (%d bytes); cache now %d bytes", freed.files, freed.bytes, self.total_bytes
            )
        if self.over_limit():
            if freed.skipped_busy:
                asyncio.get_running_loop().call_later(BUSY_RETRY_SECONDS, self._evict_if_over)
            elif freed.bytes < excess:  # nothing more to evict: index files fill the rest
                self._no_auto_eviction_until = time.monotonic() + EVICTION_BACKOFF
            else:  # files were committed during the walk: they are evicted now, not after the back-off
                self._again = True
        if self._again:
            self._again = False
            asyncio.get_running_loop().call_soon(self._evict_if_over)
        if self.total_bytes > target:
            log.warning(
                "the cache is still %d bytes, over its %d-byte target: the rest is index pages, files "
                "being sent, or files served during the eviction",
                self.total_bytes,
                target,
            )
        return freed

    async def gc(self, target: int | None = None) -> Freed:
        """A collection by hand: measure, then evict to `target` (default: the low-water mark of the limit)."""
        await self.measure()
        goal = target if target is not None else self.low_water()
        if goal is None:
            return Freed()
        if self.offline and self.total_bytes > goal:
            log.warning("offline: evicting by hand (gc); what goes cannot be fetched again until an upstream is asked")
        return await self.evict_to(goal)

    async def purge(self, paths: list[Path]) -> Freed:
        """Remove cache entries (files or folders) now; they are fetched again on the next request."""
        async with self._lock:
            freed = await asyncio.to_thread(remove_entries, paths)
            self.total_bytes = max(0, self.total_bytes - freed.bytes)
        return freed

    async def write_served_times(self) -> None:
        await write_back_served_times(self.root, self.use)

    def status(self) -> dict[str, object]:
        return {
            "cache_bytes": self.total_bytes,
            "cache_measured": self.measured,
            "max_size": self.max_size,
            "evicted_files": self.evicted.files,
            "evicted_bytes": self.evicted.bytes,
        }


def collect_offline(store: CacheStore, max_size: int | None, target: int | None = None) -> tuple[Freed, int]:
    """`pkgcache gc` with nothing running: the same eviction, directly on the data directory (blocking).

    Returns what was freed and the cache's size afterwards.
    """
    total = measure_cache(store.root)
    goal = target if target is not None else (None if max_size is None else int(max_size * LOW_WATER_RATIO))
    if goal is None or total <= goal:
        return Freed(), total
    freed = evict_least_recent(store.root, total - goal, FileUse())
    return freed, total - freed.bytes
