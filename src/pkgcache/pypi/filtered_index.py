"""A layer: the PyPI index as a predicate lets clients see it (the supply-chain policy, the offline view).

Wrapping an `IndexSource`, it
- shows each project page without the files the predicate refuses (and PEP 700 `versions` without the versions
  left with no file), so resolvers pick something else and never see a file they cannot download;
- refuses those files when asked for directly, with their `.metadata` and `.provenance`: 403 with the reason in
  the status line and the body (pip and uv show the status line), or 404 for what an offline cache does not hold;
- makes each view once per (inner page object, predicate fingerprint, the predicate's stamp for the project), and
  again once a date in it passes (a file becoming old enough); views are kept within a bound of listed files like
  the pages below them, and big pages are split in the page thread pool;
- shows a page the policy alone would leave empty whole, every file refused with its reason: a resolver then fails
  on the download with pkgcache's message, where an empty page would only say "no matching distribution" (neither
  pip nor uv tells why a page could not be had). A page left empty because the cache holds none of its files
  (offline) is shown empty: a resolver then says "no matching distribution" at once, instead of failing a whole
  install on a 404 for a file it picked.

A page's ETag is a hash of its rendered body, so a predicate change that changes what a page lists changes it,
and clients revalidating get the new list. A predicate that passes everything (no policy, online) costs one
attribute test per request: the layer is then a pass-through.
"""

from __future__ import annotations

import collections
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from pkgcache.cache_state import CacheState
from pkgcache.gate.refusals import offline_miss, refusal_error
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.names import companion_base
from pkgcache.pypi.pages import CachedPage, in_page_thread
from pkgcache.pypi.source import IndexLayer, IndexSource
from pkgcache.storage.downloads import Download
from pkgcache.upstream.pool import UpstreamsUnavailable
from pkgcache.upstream.ranges import RangeBody

# Views are kept while the files they list stay under this (an estimate of their memory: pages.BYTES_PER_FILE);
# a view of a page with more than a quarter of it is made again for each request, in the page thread pool.
MAX_VIEW_FILES = 50_000


class Refusal(NamedTuple):
    """Why a file is not served: 403 (the policy) or 404 (not in an offline cache), and a message naming why."""

    status: int
    message: str


@dataclass(frozen=True)
class PageSplit:
    """A page as a predicate lets it be seen: the page shown, the files refused, and until when this holds
    (epoch seconds; None: until the page or the predicate changes)."""

    page: ProjectPage
    refused: Mapping[str, Refusal]
    valid_until: float | None = None


class PagePredicate(Protocol):
    """What the layer filters by. Immutable: a change of what it allows is a new predicate (with a new fingerprint)."""

    fingerprint: str
    passes_everything: bool  # the layer passes every call through untouched
    offline: bool  # the offline view: pages are answered as such (`X-Pkgcache-Cache: offline`)
    never_fetches: bool  # no upstream is ever asked: what the chain cannot find is a clean 404
    does_io: bool  # `split` reads the disk: it runs in the page thread pool

    def project_stamp(self, project: str) -> object:
        """Changes when the predicate's answers for the project may change although the page did not (cheap).

        None for a predicate whose answers depend on the page alone: only such views are answered by `fresh_page`.
        """

    def split(self, project: str, page: ProjectPage) -> PageSplit:
        """The page as clients may see it (blocking; may run in a thread)."""


class _PassEverything:
    fingerprint = "-"
    passes_everything = True
    offline = False
    never_fetches = False
    does_io = False

    def project_stamp(self, project: str) -> object:
        return None

    def split(self, project: str, page: ProjectPage) -> PageSplit:
        return PageSplit(page, {})


PASS_EVERYTHING: PagePredicate = _PassEverything()


@dataclass
class _View:
    source: CachedPage  # the inner page object the view was made from
    key: tuple[str, object]  # (predicate fingerprint, its stamp for the project)
    valid_until: float | None
    entry: CachedPage  # what clients are shown
    refused: Mapping[str, Refusal]

    def holds(self, source: CachedPage, key: tuple[str, object], now: float | None = None) -> bool:
        return self.source is source and self.key == key and not self.expired(now)

    def expired(self, now: float | None = None) -> bool:
        if self.valid_until is None:
            return False
        return (time.time() if now is None else now) >= self.valid_until


def _policy_alone(refused: Mapping[str, Refusal]) -> bool:
    """Whether every file was refused by the policy (403), none for not being held offline (404)."""
    return all(refusal.status != 404 for refusal in refused.values())


class FilteredIndex(IndexLayer):
    """Wraps an IndexSource so that clients see and fetch only what `predicate` allows."""

    def __init__(self, inner: IndexSource, predicate: PagePredicate = PASS_EVERYTHING) -> None:
        super().__init__(inner)
        self.predicate = predicate
        self.counters: Counter[str] = Counter()
        self._views: collections.OrderedDict[str, _View] = collections.OrderedDict()
        self._view_files = 0
        self.use(predicate)

    def use(self, predicate: PagePredicate) -> None:
        """Filter by `predicate` from now on (views made under the previous one are made again when asked for)."""
        self.predicate = predicate
        if predicate.passes_everything:
            self._views.clear()
            self._view_files = 0
            # The hot path (a fresh page in memory, before routing) then calls the layer below directly.
            self.fresh_page = self.inner.fresh_page  # type: ignore[method-assign]
        else:
            self.__dict__.pop("fresh_page", None)

    # --- pages ---

    def fresh_page(self, project: str, now: float | None = None) -> CachedPage | None:
        predicate = self.predicate
        if predicate.passes_everything:
            return self.inner.fresh_page(project, now)
        if predicate.offline:
            return None  # answered by get_page, which says the page is the offline view
        entry = self.inner.fresh_page(project, now)
        if entry is None:
            return None
        view = self._views.get(project)
        if view is None or not view.holds(entry, (predicate.fingerprint, None), now):
            return None  # made on the slow path (off the event loop when the page is big)
        self._views.move_to_end(project)
        return view.entry

    async def get_page(self, project: str) -> tuple[CachedPage, CacheState]:
        predicate = self.predicate
        if predicate.passes_everything:
            return await self.inner.get_page(project)
        entry, state = await self._inner_page(project, predicate)
        view = await self._view(project, entry, predicate)
        return view.entry, CacheState.OFFLINE if predicate.offline else state

    async def refresh(self, project: str) -> CachedPage:
        predicate = self.predicate
        if predicate.passes_everything:
            return await self.inner.refresh(project)
        try:
            entry = await self.inner.refresh(project)
        except UpstreamsUnavailable:
            if predicate.never_fetches:
                raise offline_miss(f"a fresh page of {project}") from None
            raise
        return (await self._view(project, entry, predicate)).entry

    async def _inner_page(self, project: str, predicate: PagePredicate) -> tuple[CachedPage, CacheState]:
        try:
            return await self.inner.get_page(project)
        except UpstreamsUnavailable:
            if predicate.never_fetches:
                raise offline_miss(f"project {project}") from None
            raise

    async def _view(self, project: str, entry: CachedPage, predicate: PagePredicate) -> _View:
        key = (predicate.fingerprint, predicate.project_stamp(project))
        view = self._views.get(project)
        if view is not None and view.holds(entry, key):
            self._views.move_to_end(project)
            return view
        if predicate.does_io or entry.is_big:
            split = await in_page_thread(predicate.split, project, entry.page)
        else:
            split = predicate.split(project, entry.page)
        view = self._make_view(entry, key, split)
        self.counters["views_made"] += 1
        if len(view.entry.page.files) <= MAX_VIEW_FILES // 4:
            self._keep_view(project, view)
        return view

    def _make_view(self, entry: CachedPage, key: tuple[str, object], split: PageSplit) -> _View:
        if split.page is entry.page:
            shown = entry
        elif not split.page.files and entry.page.files and _policy_alone(split.refused):
            # The policy left nothing: shown whole, every file refused with its reason (see above), and the answer
            # says so (FILES_REFUSED_HEADER): a child pkgcache holding one of them asks before serving it.
            shown = entry.derived(entry.page)
            shown.refused_here = True
            self.counters["pages_shown_whole"] += 1
        else:
            shown = entry.derived(split.page)
        return _View(entry, key, split.valid_until, shown, split.refused)

    def _keep_view(self, project: str, view: _View) -> None:
        self._drop_view(project)
        self._views[project] = view
        self._view_files += len(view.entry.page.files)
        while self._view_files > MAX_VIEW_FILES and self._views:
            self._drop_view(next(iter(self._views)))

    def _drop_view(self, project: str) -> None:
        view = self._views.pop(project, None)
        if view is not None:
            self._view_files -= len(view.entry.page.files)

    async def _current_view(self, project: str, predicate: PagePredicate) -> _View:
        entry, _ = await self._inner_page(project, predicate)
        return await self._view(project, entry, predicate)

    def _kept_view(self, project: str, predicate: PagePredicate) -> _View | None:
        """The view kept for the project under this predicate, even of a page since gone stale: what it refuses
        does not depend on the page's freshness, so a cached file is judged without revalidating its page (which a
        worker that only reads would hand over)."""
        view = self._views.get(project)
        if view is None or view.expired() or view.key != (predicate.fingerprint, predicate.project_stamp(project)):
            return None
        return view

    def _refuse(self, view: _View, filename: str) -> None:
        refusal = view.refused.get(filename)
        if refusal is not None:
            self.counters[f"refused_{refusal.status}"] += 1
            raise refusal_error(refusal.status, refusal.message)

    # --- files ---

    async def open_file(self, project: str, filename: str) -> Path | Download:
        predicate = self.predicate
        if predicate.passes_everything:
            return await self.inner.open_file(project, filename)
        base = companion_base(filename) or filename
        view = self._kept_view(project, predicate)
        if view is None or (base not in view.source.files and base not in view.refused):
            view = await self._current_view(project, predicate)
        self._refuse(view, base)
        try:
            return await self.inner.open_file(project, filename)
        except UpstreamsUnavailable:
            if predicate.never_fetches:
                raise offline_miss(filename) from None
            raise

    async def find_file(self, project: str, filename: str) -> tuple[CachedPage, DistFile]:
        predicate = self.predicate
        if predicate.passes_everything:
            return await self.inner.find_file(project, filename)
        view = await self._current_view(project, predicate)
        self._refuse(view, filename)
        try:
            entry, dist = await self.inner.find_file(project, filename)
        except UpstreamsUnavailable:
            if predicate.never_fetches:
                raise offline_miss(filename) from None
            raise
        if entry is not view.source:  # refreshed to find the file: judged on the new page
            view = await self._view(project, entry, predicate)
            self._refuse(view, filename)
        return view.entry, dist

    async def read_range(self, project: str, filename: str, start: int | None, length: int) -> RangeBody:
        predicate = self.predicate
        if not predicate.passes_everything:
            if predicate.never_fetches:
                raise offline_miss(f"part of {filename}")
            self._refuse(await self._current_view(project, predicate), filename)
        return await self.inner.read_range(project, filename, start, length)

    def forget(self, project: str) -> None:
        self._drop_view(project)
        self.inner.forget(project)

    def forget_all(self) -> None:
        self._views.clear()
        self._view_files = 0
        self.inner.forget_all()

    def status(self) -> dict[str, object]:
        predicate = self.predicate
        return {
            **self.inner.status(),
            "filter": {
                "fingerprint": predicate.fingerprint,
                "passes_everything": predicate.passes_everything,
                "offline_view": predicate.offline,
                "views_in_memory": len(self._views),
                **self.counters,
            },
        }
