"""The one small interface the PyPI routes talk to: a source of project pages and files.

The service builds a chain of layers that each offer it (service/app.py, at assembly):
- `CachedIndex` (cached_index.py): pages in memory and on disk with a time-to-live, stale-while-revalidate, one
  upstream request per project however many clients ask, files fetched once; over `UpstreamIndex`
  (upstream_index.py), which talks to the mirrors. The worker that writes the cache uses it.
- `ReplicaIndex` (replica_index.py): what is on disk and fresh; everything else raises CacheIsReadOnly, and the
  request cycle hands the request to the worker that writes. The other workers use it.
A new capability (generated metadata, a policy filter) is one more layer wrapping an `IndexSource`.

Errors are part of the interface: `UpstreamNotFound` (no upstream has the project), `UpstreamsUnavailable`
(none could answer and nothing is cached), `FileNotListed` (the page has no such file), `CacheIsReadOnly` (this
worker may not fetch), `StorageError` (the disk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pkgcache.cache_state import CacheState
from pkgcache.pypi.model import DistFile
from pkgcache.pypi.pages import CachedPage
from pkgcache.storage.downloads import Download
from pkgcache.upstream.ranges import RangeBody


class FileNotListed(LookupError):
    """The project page has no such file."""


class IndexSource(Protocol):
    index_ttl: float

    def fresh_page(self, project: str, now: float | None = None) -> CachedPage | None:
        """The page if it is fresh in memory (at `now`, a time.time() the caller read), without waiting for anything
        (the hit path); else None."""

    async def get_page(self, project: str) -> tuple[CachedPage, CacheState]:
        """The page of a (normalised) project, and whether it was a hit, a miss, or served stale."""

    async def refresh(self, project: str) -> CachedPage:
        """The page fetched or revalidated from upstream now."""

    async def open_file(self, project: str, filename: str) -> Path | Download:
        """A cached file's path, or the download bringing it."""

    def cached_file(self, project: str, filename: str) -> Path | None:
        """The path of a cached file, if it is cached (a stat, no waiting)."""

    async def read_range(self, project: str, filename: str, start: int | None, length: int) -> RangeBody:
        """`length` bytes from `start` (None: the last `length` bytes) of a distribution that is not cached, from an
        upstream, not kept (RangesRefused if it will not; RangeNotSatisfiable, with the size, past the end)."""

    async def find_file(self, project: str, filename: str) -> tuple[CachedPage, DistFile]:
        """The page listing a distribution and its entry there (the page refreshed once if it lacks it)."""

    async def cached_projects(self) -> list[str]:
        """The projects this cache holds pages of."""

    def forget(self, project: str) -> None:
        """Drop what is held in memory about a project (its entries on disk were removed)."""

    def forget_all(self) -> None:
        """Drop what is held in memory about every project (another process changed the cache: an import)."""

    def status(self) -> dict[str, object]:
        """What `/-/status` shows about this side."""


class IndexLayer:
    """A layer around an IndexSource that passes everything through to it: a layer overrides what it changes."""

    def __init__(self, inner: IndexSource) -> None:
        self.inner = inner
        self.index_ttl = inner.index_ttl

    def fresh_page(self, project: str, now: float | None = None) -> CachedPage | None:
        return self.inner.fresh_page(project, now)

    async def get_page(self, project: str) -> tuple[CachedPage, CacheState]:
        return await self.inner.get_page(project)

    async def refresh(self, project: str) -> CachedPage:
        return await self.inner.refresh(project)

    async def open_file(self, project: str, filename: str) -> Path | Download:
        return await self.inner.open_file(project, filename)

    def cached_file(self, project: str, filename: str) -> Path | None:
        return self.inner.cached_file(project, filename)

    async def read_range(self, project: str, filename: str, start: int | None, length: int) -> RangeBody:
        return await self.inner.read_range(project, filename, start, length)

    async def find_file(self, project: str, filename: str) -> tuple[CachedPage, DistFile]:
        return await self.inner.find_file(project, filename)

    async def cached_projects(self) -> list[str]:
        return await self.inner.cached_projects()

    def forget(self, project: str) -> None:
        self.inner.forget(project)

    def forget_all(self) -> None:
        self.inner.forget_all()

    def status(self) -> dict[str, object]:
        return self.inner.status()
