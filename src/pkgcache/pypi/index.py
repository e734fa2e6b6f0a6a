"""The PyPI index as pkgcache keeps it: project pages with a time-to-live, and the files they list.

Project pages are fetched from the upstream pool, kept on disk (`pypi/simple/<project>/page.json`) and in memory,
rendered once per format, revalidated with the upstream's validators once their time-to-live has passed, and
served stale while that happens or when no upstream answers. Files are immutable: fetched once through the
Downloader, checked against the page's hashes, kept under `pypi/files/<project>/<filename>`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from pkgcache.cache_state import CacheState
from pkgcache.config import PypiConfig, PypiUpstream
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.names import METADATA_SUFFIX
from pkgcache.pypi.parse import InvalidPage, parse_project_page
from pkgcache.pypi.render import JSON_CONTENT_TYPE, render_html, render_json, with_charset
from pkgcache.storage.downloads import Download, Expected
from pkgcache.storage.filetypes import magic_for
from pkgcache.storage.store import READER_RECHECK_SECONDS, CacheStore, Stamp, file_stamp
from pkgcache.upstream.pool import (
    TargetFor,
    Upstream,
    UpstreamError,
    UpstreamNotFound,
    UpstreamPool,
    read_limited,
)
from pkgcache.upstream.transfer import Fetcher

log = logging.getLogger(__name__)

# What pkgcache asks upstreams for: JSON when they have it, HTML otherwise. The answer's format is read from
# its body either way.
UPSTREAM_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
MAX_PAGE_BYTES = 64 * 1024 * 1024
MEMORY_PAGES = 4096
# A file missing from a cached page may be newer than the page: look again, but not more often than this.
MISSING_FILE_RECHECK_SECONDS = 10.0


class FileNotListed(LookupError):
    """The project page has no such file."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page in one format, with the headers that go with these bytes whatever the request."""

    body: bytes
    content_type: str
    etag: str
    headers: dict[str, str]


@dataclass
class CachedPage:
    """A project page with what is needed to serve it and to revalidate it."""

    page: ProjectPage
    upstream: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    refresh_error: str | None = None
    files: dict[str, DistFile] = field(init=False, repr=False)
    _rendered: dict[str, Rendered] = field(default_factory=dict, init=False, repr=False)
    # In a worker that only reads the cache: the page.json this copy was read from, and when that was checked.
    disk_stamp: Stamp | None = field(default=None, init=False, repr=False)
    checked_at: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.files = {dist.filename: dist for dist in self.page.files}

    def age(self) -> float:
        return max(0.0, time.time() - self.fetched_at)

    def rendered(self, content_type: str) -> Rendered:
        """The page in one format, rendered on first use and kept: no per-request rendering."""
        cached = self._rendered.get(content_type)
        if cached is None:
            body = render_json(self.page) if content_type == JSON_CONTENT_TYPE else render_html(self.page)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            headers = {"Content-Type": with_charset(content_type), "ETag": etag, "Vary": "Accept"}
            cached = self._rendered[content_type] = Rendered(body, content_type, etag, headers)
        return cached

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page.to_json(),
            "upstream": self.upstream,
            "fetched_at": self.fetched_at,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CachedPage:
        return cls(
            page=ProjectPage.from_json(data["page"]),
            upstream=data["upstream"],
            fetched_at=float(data["fetched_at"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
        )


class PypiIndex:
    """Project pages and files of the PyPI side, over a shared pool, store and downloader."""

    def __init__(self, config: PypiConfig, fetcher: Fetcher, store: CacheStore) -> None:
        self.config = config
        self.fetcher = fetcher
        self.pool: UpstreamPool = fetcher.pool
        self.store = store
        self._upstream_config = {upstream.name: upstream for upstream in config.upstreams}
        self._memory: collections.OrderedDict[str, CachedPage] = collections.OrderedDict()
        self._refreshes: dict[str, asyncio.Task[CachedPage]] = {}
        # A reader (a worker that does not write the cache) checks its memory against the disk now and then.
        self._reader = not store.writable

    # --- project pages ---

    async def get_page(self, project: str) -> tuple[CachedPage, str]:
        """The page of a (normalised) project and whether it was a hit, a miss, or served stale.

        Raises UpstreamNotFound / UpstreamsUnavailable when there is no copy and no upstream gives one.
        """
        entry = self._memory_get(project)
        if entry is not None and self._due_for_disk_check(entry):
            entry = await self._recheck_disk(project, entry)
        if entry is None:
            entry = await self._load(project)
        if entry is None:
            return await self.refresh(project), CacheState.MISS
        if entry.age() < self.config.index_ttl:
            return entry, CacheState.HIT
        self._refresh_in_background(project)
        return entry, CacheState.STALE

    def fresh_page(self, project: str) -> CachedPage | None:
        """The page if it is in memory and fresh, without waiting for anything: the hit path of every request."""
        entry = self._memory.get(project)
        if entry is None or entry.age() >= self.config.index_ttl or self._due_for_disk_check(entry):
            return None
        self._memory.move_to_end(project)
        return entry

    def _due_for_disk_check(self, entry: CachedPage) -> bool:
        return self._reader and time.monotonic() - entry.checked_at > READER_RECHECK_SECONDS

    async def _recheck_disk(self, project: str, entry: CachedPage) -> CachedPage | None:
        """A reader's memory copy if page.json is still the file it came from; else None (to be read again)."""
        stamp = await asyncio.to_thread(file_stamp, self._page_path(project))
        if stamp is not None and stamp == entry.disk_stamp:
            entry.checked_at = time.monotonic()
            return entry
        self._memory.pop(project, None)
        return None

    async def refresh(self, project: str) -> CachedPage:
        """Fetch or revalidate a page now; concurrent callers share one upstream request."""
        self.store.require_writable()
        task = self._refreshes.get(project)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(project))
            self._refreshes[project] = task
            task.add_done_callback(lambda _: self._refreshes.pop(project, None))
        return await asyncio.shield(task)

    def _refresh_in_background(self, project: str) -> None:
        self.store.require_writable()  # before serving stale: a reader hands the request to the writer instead
        if project in self._refreshes:
            return

        async def refresh_quietly() -> None:
            try:
                await self.refresh(project)
            except UpstreamNotFound:
                pass  # _refresh already dropped the page
            except Exception as exc:  # the stale copy keeps being served; say why in the log
                log.warning("revalidating %s failed, serving the cached page: %s", project, exc)

        asyncio.get_running_loop().create_task(refresh_quietly())

    async def _refresh(self, project: str) -> CachedPage:
        previous = self._memory_get(project) or await self._load(project)
        try:
            fetched = await self.pool.fetch(
                lambda upstream: urljoin(upstream.base_url, f"{project}/"),
                lambda upstream, response: self._read_page(project, previous, upstream, response),
                headers=lambda upstream: self._page_request_headers(previous, upstream),
                ok_statuses=frozenset({200, 304}),
            )
        except UpstreamNotFound:
            await self._forget(project)
            raise
        except Exception as exc:
            if previous is not None:
                previous.refresh_error = str(exc)
            raise
        await asyncio.to_thread(self.store.write_json_atomic, self._page_path(project), fetched.to_json())
        self._remember(project, fetched)
        return fetched

    def _page_request_headers(self, previous: CachedPage | None, upstream: Upstream) -> dict[str, str]:
        headers = {"Accept": UPSTREAM_ACCEPT}
        # Validators are only meaningful to the upstream that issued them.
        if previous is not None and previous.upstream == upstream.name:
            if previous.etag:
                headers["If-None-Match"] = previous.etag
            if previous.last_modified:
                headers["If-Modified-Since"] = previous.last_modified
        return headers

    async def _read_page(
        self, project: str, previous: CachedPage | None, upstream: Upstream, response: aiohttp.ClientResponse
    ) -> CachedPage:
        if response.status == 304 and previous is not None:
            previous.fetched_at = time.time()
            previous.refresh_error = None
            return previous
        body = await read_limited(response, MAX_PAGE_BYTES, self.pool.policy)
        try:
            page = await asyncio.to_thread(parse_project_page, body, str(response.url), project)
        except InvalidPage as exc:
            raise UpstreamError(f"{upstream.name}: not a project page for {project}: {exc}") from None
        return CachedPage(
            page=page,
            upstream=upstream.name,
            fetched_at=time.time(),
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
        )

    def _page_path(self, project: str) -> Path:
        return self.store.path_for("pypi", "simple", project, "page.json")

    def _memory_get(self, project: str) -> CachedPage | None:
        entry = self._memory.get(project)
        if entry is not None:
            self._memory.move_to_end(project)
        return entry

    def _remember(self, project: str, entry: CachedPage) -> None:
        self._memory[project] = entry
        self._memory.move_to_end(project)
        while len(self._memory) > MEMORY_PAGES:
            self._memory.popitem(last=False)

    async def _load(self, project: str) -> CachedPage | None:
        found = await asyncio.to_thread(self.store.read_json_stamped, self._page_path(project))
        if found is None:
            return None
        data, stamp = found
        try:
            entry = CachedPage.from_json(data)
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a damaged cached page for %s", project)
            return None
        entry.disk_stamp, entry.checked_at = stamp, time.monotonic()
        self._remember(project, entry)
        return entry

    async def _forget(self, project: str) -> None:
        self._memory.pop(project, None)
        path = self._page_path(project)
        await asyncio.to_thread(_unlink_quietly, path)

    def purge(self, project: str) -> None:
        """Forget a project's page held in memory (after its entries were removed from disk, see the admin API)."""
        self._memory.pop(project, None)

    async def cached_projects(self) -> list[str]:
        root = self.store.root / "pypi" / "simple"

        def scan() -> list[str]:
            try:
                return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
            except FileNotFoundError:
                return []

        return await asyncio.to_thread(scan)

    # --- files ---

    def file_path(self, project: str, filename: str) -> Path:
        return self.store.path_for("pypi", "files", project, filename)

    async def open_file(self, project: str, filename: str) -> Path | Download:
        """A cached file's path, or the download that is bringing it (started here if need be).

        Raises FileNotListed when the project's page has no such file, and the pool's errors when the page
        itself cannot be had.
        """
        path = self.file_path(project, filename)
        if path.is_file():
            return path
        self.store.require_writable()  # a reader hands a missing file to the writer before any lookup
        entry, _ = await self.get_page(project)
        found = _lookup(entry, filename)
        if found is None and entry.age() > MISSING_FILE_RECHECK_SECONDS:
            entry = await self.refresh(project)
            found = _lookup(entry, filename)
        if found is None:
            raise FileNotListed(f"{project} has no file {filename}")
        dist, is_metadata = found
        download = self.fetcher.download(
            path, self._file_target(entry.upstream, dist.url, is_metadata), _expected(dist, is_metadata)
        )
        return path if download is None else download

    def _file_target(self, page_upstream: str, url: str, is_metadata: bool) -> TargetFor:
        """Which URL each upstream has for a file: the page's own link, or the same `packages/...` path."""
        suffix = url.partition("/packages/")[2]
        extension = METADATA_SUFFIX if is_metadata else ""

        def target(upstream: Upstream) -> str | None:
            if upstream.name == page_upstream:
                return url + extension
            files_base = self._files_base(upstream.name)
            if suffix and files_base:
                return files_base + suffix + extension
            return None

        return target

    def _files_base(self, upstream_name: str) -> str | None:
        upstream: PypiUpstream | None = self._upstream_config.get(upstream_name)
        if upstream is None:
            return None
        # Mirrors keep files beside the index: <root>/simple/ and <root>/packages/.
        return upstream.files_url or urljoin(upstream.url, "../packages/")

    def status(self) -> dict[str, object]:
        return {"index_ttl": self.config.index_ttl, "pages_in_memory": len(self._memory)}


def project_entries(store: CacheStore, project: str) -> list[Path]:
    """Where a (normalised) project's cached entries live: its page's folder and its files' folder."""
    return [store.path_for("pypi", "simple", project), store.path_for("pypi", "files", project)]


def _lookup(entry: CachedPage, filename: str) -> tuple[DistFile, bool] | None:
    dist = entry.files.get(filename)
    if dist is not None:
        return dist, False
    if filename.endswith(METADATA_SUFFIX):
        dist = entry.files.get(filename.removesuffix(METADATA_SUFFIX))
        # Only metadata the upstream said it has: never promise a file that will 404.
        if dist is not None and dist.core_metadata:
            return dist, True
    return None


def _expected(dist: DistFile, is_metadata: bool) -> Expected:
    if is_metadata:
        hashes = {} if isinstance(dist.core_metadata, bool) else dict(dist.core_metadata)
        return Expected(hashes=hashes)
    return Expected(hashes=dict(dist.hashes), size=dist.size, magic=magic_for(dist.filename))


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
