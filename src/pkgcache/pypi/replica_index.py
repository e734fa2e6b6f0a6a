"""The PyPI index as a worker that only reads the cache sees it: fresh pages and files on disk, nothing else.

Everything that would fetch or write (a missing or stale page, a missing file, a refresh) raises
CacheIsReadOnly before any response starts, and the request cycle hands the request to the writing worker.
A page kept in memory is checked against its `page.json` about once a second (a `stat`), so what the writer
revalidated or purged reaches this worker within about that long.
"""

from __future__ import annotations

import time
from pathlib import Path

from pkgcache.cache_state import CacheState, revalidation_due
from pkgcache.config import PypiConfig
from pkgcache.pypi.cached_index import is_as_listed, parent_word_needed
from pkgcache.pypi.model import DistFile
from pkgcache.pypi.pages import CachedPage, PageMemory, PageStore
from pkgcache.storage.downloads import Download
from pkgcache.storage.file_records import recorded_of
from pkgcache.storage.store import READER_RECHECK_SECONDS, CacheIsReadOnly, file_stamp
from pkgcache.upstream.ranges import RangeBody


class ReplicaIndex:
    """Project pages and files, read-only (the replicas' index)."""

    def __init__(self, config: PypiConfig, pages: PageStore, memory: PageMemory) -> None:
        self.index_ttl = config.index_ttl
        self.pages = pages
        self.memory = memory

    def fresh_page(self, project: str, now: float | None = None) -> CachedPage | None:
        now = time.time() if now is None else now
        entry = self.memory.peek(project)
        if entry is None or entry.age(now) >= self.index_ttl or self._due_for_disk_check(entry, now):
            return None
        self.memory.touch(project)
        return entry

    async def get_page(self, project: str) -> tuple[CachedPage, CacheState]:
        entry = self.memory.get(project)
        if entry is not None and self._due_for_disk_check(entry):
            entry = await self._recheck_disk(project, entry)
        if entry is None:
            entry = await self.pages.load(project)
            if entry is not None:
                self.memory.put(project, entry)
        if entry is None or entry.age() >= self.index_ttl or revalidation_due(entry.age()):
            raise CacheIsReadOnly("a missing, stale or to be revalidated page is fetched by the worker that writes")
        return entry, CacheState.HIT

    async def refresh(self, project: str) -> CachedPage:
        raise CacheIsReadOnly("refreshed by the worker that writes")

    async def open_file(self, project: str, filename: str) -> Path | Download:
        path = self.pages.file_path(project, filename)
        recorded = recorded_of(path)
        if recorded is None:
            raise CacheIsReadOnly("a missing file is fetched by the worker that writes")
        entry = self.memory.get(project)
        if entry is not None and self._due_for_disk_check(entry):
            entry = await self._recheck_disk(project, entry)
        if entry is None:
            entry = await self.pages.load(project)
            if entry is not None:
                self.memory.put(project, entry)
        if not is_as_listed(entry, filename, recorded):
            raise CacheIsReadOnly("a file replaced upstream is fetched again by the worker that writes")
        if entry is not None and parent_word_needed(entry, filename, self.index_ttl):
            raise CacheIsReadOnly("the parent pkgcache is asked about a file its page does not vouch for by the writer")
        return path

    def cached_file(self, project: str, filename: str) -> Path | None:
        path = self.pages.file_path(project, filename)
        recorded = recorded_of(path)
        if recorded is None or not is_as_listed(self.memory.peek(project), filename, recorded):
            return None
        return path

    async def read_range(self, project: str, filename: str, start: int | None, length: int) -> RangeBody:
        raise CacheIsReadOnly("upstreams are asked by the worker that writes")

    async def find_file(self, project: str, filename: str) -> tuple[CachedPage, DistFile]:
        entry, _ = await self.get_page(project)
        dist = entry.files.get(filename)
        if dist is None:
            raise CacheIsReadOnly("a page without the file is refreshed by the worker that writes")
        if entry.parent is not None and entry.parent_refuses_all:
            raise CacheIsReadOnly("the parent pkgcache refusing the page's files is asked by the worker that writes")
        return entry, dist

    def _due_for_disk_check(self, entry: CachedPage, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - entry.checked_at > READER_RECHECK_SECONDS

    async def _recheck_disk(self, project: str, entry: CachedPage) -> CachedPage | None:
        """The memory copy if page.json is still the file it came from; else None (to be read again)."""
        stamp = file_stamp(self.pages.page_path(project))  # one stat, on the loop as the hit path's are
        if stamp is not None and stamp == entry.disk_stamp:
            entry.checked_at = time.time()
            return entry
        self.memory.drop(project)
        return None

    def forget(self, project: str) -> None:
        self.memory.drop(project)

    def forget_all(self) -> None:
        self.memory.clear()

    async def cached_projects(self) -> list[str]:
        return await self.pages.projects()

    def status(self) -> dict[str, object]:
        return {"index_ttl": self.index_ttl, "pages_in_memory": len(self.memory)}
