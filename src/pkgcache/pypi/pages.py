"""Project pages as pkgcache keeps them: in memory (bounded by bytes) and on disk (`page.json`).

A `CachedPage` is a parsed page plus where and when it came from, and its renderings (one per format, made once).
`PageMemory` is the least-recently-used set of pages in memory, bounded by an estimate of their bytes, so one huge
project page cannot take the process's memory. `PageStore` reads and writes pages on disk and knows where a
project's files live. Neither fetches anything: the index layers (cached_index.py, replica_index.py) do.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import gzip
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgcache.cache_state import age_since
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.render import JSON_CONTENT_TYPE, render_html, render_json, with_charset
from pkgcache.storage.store import CacheStore, Stamp, file_stamp, stamp_of

log = logging.getLogger(__name__)

# Bytes of memory a worker spends on project pages (parsed and rendered). A page estimated at more than a quarter
# of it is not kept in memory: it is read from disk for each request (in a thread), which is slow but bounded.
MEMORY_BUDGET_BYTES = 96 * 1024 * 1024
# An estimate of what one listed file costs in memory: parsed (about 600 bytes), and rendered in the format
# installers ask for (JSON, about 320 bytes) plain and gzipped (about 75: digests do not compress), with room for
# some of the other format. A page rendered both ways and gzipped both ways comes to about 1300.
BYTES_PER_FILE = 1100
# Pages with more files than this are parsed, loaded and rendered in the page thread pool, off the event loop.
BIG_PAGE_FILES = 2000
# A page.json up to this size is read on the event loop (see PageStore.load): about 250 files.
INLINE_LOAD_BYTES = 96 * 1024

# Renderings smaller than this are always sent as they are: gzip would save less than a packet.
GZIP_MIN_BYTES = 1024
# zlib's default level: a page is compressed once and sent many times; the fastest levels gave 15-25% more bytes.
GZIP_LEVEL = 6
# Renderings up to this size are gzipped on the event loop (about a millisecond); larger ones in the page threads.
INLINE_GZIP_BYTES = 64 * 1024
# Renderings larger than this are gzipped at the fastest level: a page too big for the page memory is rendered and
# compressed for every request (a 12 MB rendering of 20k files: 0.07 s at level 1 against 0.15 s, 9% more bytes).
GZIP_LARGE_BYTES = 4 * 1024 * 1024
GZIP_LARGE_LEVEL = 1

# Parsing and rendering pages is CPU work that can take seconds for a project with 100k files: it gets threads of
# its own, so it never holds up the file reads and writes that share asyncio's default pool.
_PAGE_WORK = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="pkgcache-pages")


async def in_page_thread(function: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_PAGE_WORK, function, *args)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page in one format, with the representation's own headers (type, ETag, Vary), whatever the request."""

    body: bytes
    content_type: str
    etag: str
    headers: dict[str, str]


def render(page: ProjectPage, content_type: str) -> Rendered:
    body = render_json(page) if content_type == JSON_CONTENT_TYPE else render_html(page)
    return _representation(body, content_type, gzipped=False)


def gzip_of(rendered: Rendered) -> Rendered:
    """A rendering gzipped, with an ETag of its own (RFC 9110: one per representation), or itself when it is small
    or would not shrink."""
    return _representation(rendered.body, rendered.content_type, gzipped=True)


def _representation(body: bytes, content_type: str, gzipped: bool) -> Rendered:
    tag = hashlib.sha256(body).hexdigest()[:32]
    # Every page's answer varies with both: a cache between pkgcache and its clients must not mix them up.
    headers = {"Content-Type": with_charset(content_type), "Vary": "Accept, Accept-Encoding"}
    if gzipped and len(body) >= GZIP_MIN_BYTES:
        level = GZIP_LEVEL if len(body) <= GZIP_LARGE_BYTES else GZIP_LARGE_LEVEL
        packed = gzip.compress(body, compresslevel=level, mtime=0)
        if len(packed) < len(body):
            etag = f'"{tag}{GZIP_ETAG_SUFFIX}"'
            return Rendered(packed, content_type, etag, {**headers, "ETag": etag, "Content-Encoding": "gzip"})
    etag = f'"{tag}"'
    return Rendered(body, content_type, etag, {**headers, "ETag": etag})


# What tells the ETag of a gzipped rendering from that of the same bytes as they are.
GZIP_ETAG_SUFFIX = "-gz"


def same_page_etag(etag: str) -> str:
    """An ETag with the gzip mark taken off: a client holding either representation of a page holds the page."""
    marked = f'{GZIP_ETAG_SUFFIX}"'
    return etag[: -len(marked)] + '"' if etag.endswith(marked) else etag


@dataclass
class CachedPage:
    """A project page with what is needed to serve it and to revalidate it."""

    page: ProjectPage
    upstream: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    refresh_error: str | None = None
    # Taken from a parent pkgcache's offline view (or a copy it could not revalidate) for want of a better answer:
    # revalidated before it is answered again (cached_index.py), however young. Not kept on disk: a page read back
    # is past its time-to-live already, and revalidated as any stale page.
    provisional: bool = False
    # The node name of the pkgcache that gave the page (a parent tier), None for a mirror's: the parent's policy
    # made the page, so a cached file it no longer lists (or lists only as refused) is served only once the parent
    # has been asked about it (cached_index.parent_word_needed). Kept on disk with the page.
    parent: str | None = None
    # That parent said every file the page lists is refused by its policy (it showed the page whole, as a page its
    # policy alone would leave empty is shown: FILES_REFUSED_HEADER). Kept on disk with the page.
    parent_refuses_all: bool = False
    # A view of this node's policy that shows such a page whole (filtered_index.py): its answer says so too.
    refused_here: bool = False
    files: dict[str, DistFile] = field(init=False, repr=False)
    _rendered: dict[tuple[str, bool], Rendered] = field(default_factory=dict, init=False, repr=False)
    # The page.json this copy was read from or written to, and when a reader last checked it is still that file.
    disk_stamp: Stamp | None = field(default=None, init=False, repr=False)
    checked_at: float = field(default=0.0, init=False, repr=False)

    # For a page a layer derived from another (metadata advertised, a policy applied): the page it came from,
    # whose freshness (fetched_at, refresh_error) it shares as that one is revalidated.
    base: CachedPage | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The first entry of a name wins, as with pip and uv (pages parsed now list each name once; one kept on
        # disk before may not): the bytes served under the name are the ones clients expect.
        self.files = {dist.filename: dist for dist in reversed(self.page.files)}

    def derived(self, page: ProjectPage) -> CachedPage:
        """The same page as far as freshness goes, listing `page` instead (a layer's view of it)."""
        origin = self.base or self
        return CachedPage(page, self.upstream, self.fetched_at, self.etag, self.last_modified, base=origin)

    def listing(self, page: ProjectPage) -> CachedPage:
        """A copy listing `page` instead, kept in this one's place (not a view): where and when it came from, its
        validators and what its parent said of it stay."""
        copy = CachedPage(page, self.upstream, self.fetched_at, self.etag, self.last_modified, self.refresh_error)
        copy.parent, copy.parent_refuses_all = self.parent, self.parent_refuses_all
        return copy

    @property
    def origin(self) -> CachedPage:
        return self.base or self

    @property
    def files_refused(self) -> bool:
        """Whether every file the page lists is refused, by this node's policy (a view showing it whole) or by the
        parent pkgcache that gave it: its answer says so (FILES_REFUSED_HEADER), for a child below this node."""
        return self.refused_here or self.origin.parent_refuses_all

    @property
    def is_big(self) -> bool:
        return len(self.page.files) > BIG_PAGE_FILES

    def age(self, now: float | None = None) -> float:
        """Seconds since the page was fetched or revalidated (at `now`, a time.time() the caller read already)."""
        return age_since(self.origin.fetched_at, time.time() if now is None else now)

    @property
    def stale_reason(self) -> str | None:
        """Why the last revalidation failed, if it did (every upstream down)."""
        return self.origin.refresh_error

    def rendered_now(self, content_type: str, gzipped: bool = False) -> Rendered | None:
        """The page in a format (gzipped if asked) if it can be had without real work (a small page, or one
        rendered before)."""
        cached = self._rendered.get((content_type, gzipped))
        if cached is None and not self.is_big:
            plain = self._rendered.get((content_type, False)) or render(self.page, content_type)
            self._rendered[(content_type, False)] = plain
            if not gzipped:
                return plain
            if len(plain.body) <= INLINE_GZIP_BYTES:
                cached = self._rendered[(content_type, True)] = gzip_of(plain)
        return cached

    async def rendered(self, content_type: str, gzipped: bool = False) -> Rendered:
        """The page in a format (gzipped if asked), rendered on first use (a big page in the page thread pool)
        and kept."""
        cached = self.rendered_now(content_type, gzipped)
        if cached is None:
            plain = self._rendered.get((content_type, False))
            if plain is None:
                plain = self._rendered[(content_type, False)] = await in_page_thread(render, self.page, content_type)
            cached = await in_page_thread(gzip_of, plain) if gzipped else plain
            self._rendered[(content_type, gzipped)] = cached
        return cached

    def weight(self) -> int:
        """An estimate of the bytes this page holds in memory once rendered in both formats."""
        return BYTES_PER_FILE * (len(self.page.files) + 1)

    def to_json(self) -> dict[str, Any]:
        data = {
            "page": self.page.to_json(),
            "upstream": self.upstream,
            "fetched_at": self.fetched_at,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }
        if self.parent is not None:
            data["parent"] = self.parent
            data["parent_refuses_all"] = self.parent_refuses_all
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CachedPage:
        return cls(
            page=ProjectPage.from_json(data["page"]),
            upstream=data["upstream"],
            fetched_at=float(data["fetched_at"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
            parent=parent if isinstance(parent := data.get("parent"), str) and parent else None,
            parent_refuses_all=data.get("parent_refuses_all") is True,
        )


class PageMemory:
    """Pages in memory, least recently used first out, within a budget of (estimated) bytes."""

    def __init__(self, budget: int = MEMORY_BUDGET_BYTES) -> None:
        self.budget = budget
        self._pages: collections.OrderedDict[str, CachedPage] = collections.OrderedDict()
        self._weights: dict[str, int] = {}
        self.total = 0

    def __len__(self) -> int:
        return len(self._pages)

    def peek(self, project: str) -> CachedPage | None:
        """The page without counting it as used (the hit path does its own move-to-end)."""
        return self._pages.get(project)

    def get(self, project: str) -> CachedPage | None:
        entry = self._pages.get(project)
        if entry is not None:
            self._pages.move_to_end(project)
        return entry

    def touch(self, project: str) -> None:
        self._pages.move_to_end(project)

    def put(self, project: str, entry: CachedPage) -> None:
        """Keep a page, unless it alone is too big to (it is then read from disk when asked for)."""
        self.drop(project)
        weight = entry.weight()
        if weight > self.budget // 4:
            return
        self._pages[project] = entry
        self._weights[project] = weight
        self.total += weight
        self._shrink()

    def drop(self, project: str) -> None:
        if self._pages.pop(project, None) is not None:
            self.total -= self._weights.pop(project)

    def clear(self) -> None:
        self._pages.clear()
        self._weights.clear()
        self.total = 0

    def _shrink(self) -> None:
        while self.total > self.budget and self._pages:
            project, _ = self._pages.popitem(last=False)
            self.total -= self._weights.pop(project)


class PageStore:
    """Project pages and files on disk, under `pypi/simple/<project>/page.json` and `pypi/files/<project>/`."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store

    def page_path(self, project: str) -> Path:
        return self.store.path_for("pypi", "simple", project, "page.json")

    def file_path(self, project: str, filename: str) -> Path:
        return self.store.path_for("pypi", "files", project, filename)

    def project_entries(self, project: str) -> list[Path]:
        return project_entries(self.store, project)

    async def load(self, project: str) -> CachedPage | None:
        """The page on disk, parsed, or None if there is none or it is damaged.

        A small page.json (most projects) is read on the event loop: it was written lately and is in the page
        cache, and reading it there (well under a millisecond) costs less than the hop to a thread and the wait
        for its turn behind other pages. A bigger one is read in the page thread pool."""
        stamp = file_stamp(self.page_path(project))
        if stamp is None:
            return None
        if stamp[1] <= INLINE_LOAD_BYTES:
            return self._load(project)
        return await in_page_thread(self._load, project)

    def _load(self, project: str) -> CachedPage | None:
        found = self.store.read_json_stamped(self.page_path(project))
        if found is None:
            return None
        data, stamp = found
        try:
            entry = CachedPage.from_json(data)
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a damaged cached page for %s", project)
            return None
        entry.disk_stamp, entry.checked_at = stamp, time.time()
        return entry

    async def save(self, project: str, entry: CachedPage) -> None:
        await in_page_thread(self._save, project, entry)

    def _save(self, project: str, entry: CachedPage) -> None:
        path = self.page_path(project)
        self.store.write_json_atomic(path, entry.to_json(), durable=False)  # the upstream's page: fetched again
        with contextlib.suppress(OSError):
            stat = path.stat()
            entry.disk_stamp = stamp_of(stat)

    async def remove(self, project: str) -> None:
        await asyncio.to_thread(_unlink_quietly, self.page_path(project))

    async def projects(self) -> list[str]:
        root = self.store.root / "pypi" / "simple"

        def scan() -> list[str]:
            try:
                return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
            except FileNotFoundError:
                return []

        return await asyncio.to_thread(scan)


def project_entries(store: CacheStore, project: str) -> list[Path]:
    """Where a (normalised) project's cached entries live: its page's folder and its files' folder."""
    return [store.path_for("pypi", "simple", project), store.path_for("pypi", "files", project)]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
