"""The PyPI index as the writing worker keeps it: pages with a time-to-live over the upstreams, files fetched once.

Pages are kept on disk (`page.json`) and in memory, revalidated with the upstream's validators once their
time-to-live has passed, and served stale while that happens or when no upstream answers. Concurrent requests for
one project share one upstream request. "No upstream has this project" is remembered for a short while, so a
client asking again and again for a name that does not exist costs the mirrors nothing. Files are immutable:
fetched once through the upstream layer, checked against the page's hashes, kept under
`pypi/files/<project>/<filename>`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

from pkgcache.cache_state import CacheState, revalidation_due
from pkgcache.config import PypiConfig
from pkgcache.pypi.model import DistFile
from pkgcache.pypi.names import PROVENANCE_SUFFIX, companion_base
from pkgcache.pypi.pages import CachedPage, PageMemory, PageStore
from pkgcache.pypi.source import FileNotListed
from pkgcache.pypi.upstream_index import UpstreamIndex, parent_file_url
from pkgcache.storage.downloads import Download
from pkgcache.storage.file_records import Recorded, agrees, recorded_of
from pkgcache.storage.store import StorageError
from pkgcache.upstream.parent_verdicts import ParentVerdicts
from pkgcache.upstream.pool import BadBytesEverywhere, UpstreamNotFound, UpstreamsUnavailable
from pkgcache.upstream.ranges import RangeBody, fetch_range

log = logging.getLogger(__name__)

# A file missing from a cached page may be newer than the page: look again, but not more often than this.
MISSING_FILE_RECHECK_SECONDS = 10.0
# How long "no upstream has this project" is believed (at most the page time-to-live).
NOT_FOUND_SECONDS = 60.0
MAX_REMEMBERED_MISSING = 100_000
# How long a request for a file waits for a check of its page against the other upstreams' under way (after every
# upstream's bytes failed the page): the check's outcome is the page to use, but a client is not held past this.
PAGE_CHECK_WAIT = 10.0
# A dispute settled (one upstream's page lists a cached file as other bytes; another's, asked then, lists it as the
# bytes checked and kept here) is believed for this long while that upstream's entry and the cached file stay as
# they are: the page's revalidations ask no other upstream's page. Bounded all the same, since a file replaced on
# every mirror (none vouching for the cached bytes any more) is told by asking: at most this late.
SETTLED_DISPUTE_SECONDS = 3600.0
MAX_SETTLED_PROJECTS = 10_000


class CachedIndex:
    """Project pages and files of the PyPI side, cached over the upstreams (the writing worker's index)."""

    def __init__(self, config: PypiConfig, origin: UpstreamIndex, pages: PageStore, memory: PageMemory) -> None:
        self.index_ttl = config.index_ttl
        self.origin = origin
        self.parent_verdicts = ParentVerdicts(origin.pool, config.index_ttl)
        self.pages = pages
        self.memory = memory
        self._refreshes: dict[str, asyncio.Task[CachedPage]] = {}
        # Checks of a page against the other upstreams' after every upstream's bytes failed it, by (project, file).
        self._page_checks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._watched: weakref.WeakSet[Download] = weakref.WeakSet()
        self._missing: collections.OrderedDict[str, float] = collections.OrderedDict()
        # Projects whose cached page was kept although some upstreams said "not found" (others could not answer).
        self._kept_despite_not_found: collections.OrderedDict[str, float] = collections.OrderedDict()
        # Disputes settled, by project: (file, upstream, its entry, the cached file) -> the entry vouching for it.
        self._settled: collections.OrderedDict[str, dict[DisputeKey, tuple[DistFile, float]]] = (
            collections.OrderedDict()
        )
        # Files a page lists undecided whose bytes were none of its entries, by (project, file): those entries,
        # until when this is believed, and why (answered as a 502 meanwhile, rather than fetched again to be cut).
        self._no_entry: collections.OrderedDict[tuple[str, str], tuple[tuple[DistFile, ...], float, dict[str, str]]] = (
            collections.OrderedDict()
        )

    # --- pages ---

    def fresh_page(self, project: str, now: float | None = None) -> CachedPage | None:
        entry = self.memory.peek(project)
        if entry is None or entry.age(now) >= self.index_ttl:
            return None
        self.memory.touch(project)
        return entry

    async def get_page(self, project: str) -> tuple[CachedPage, CacheState]:
        entry = self.memory.get(project) or await self._load(project)
        if entry is None:
            self._raise_if_known_missing(project)
            return self._as_fetched(await self.refresh(project, cached=False))
        if revalidation_due(entry.age()) or entry.origin.provisional:
            return await self._revalidated(project, entry)
        if entry.age() < self.index_ttl:
            return entry, CacheState.HIT
        self._refresh_in_background(project)
        return entry, CacheState.STALE

    async def _revalidated(self, project: str, entry: CachedPage) -> tuple[CachedPage, CacheState]:
        """The page revalidated now (the request asked for it); the cached copy, stale, when no upstream answers:
        the page then says why (`refresh_error`), and the caller learns it used a cached page."""
        try:
            return self._as_fetched(await self.refresh(project))
        except UpstreamNotFound:
            raise
        except Exception as exc:  # the asker is told by the page's headers (it is stale, and why)
            log.info("revalidating %s failed, serving the cached page: %s", project, exc)
            return entry, CacheState.STALE

    def _as_fetched(self, entry: CachedPage) -> tuple[CachedPage, CacheState]:
        """A page fetched for this request: a miss, unless it came expired already (a parent pkgcache's stale copy
        or offline view, upstream_index.py): stale then, as the parent said, and revalidated by the next request."""
        return entry, CacheState.MISS if entry.age() < self.index_ttl else CacheState.STALE

    async def refresh(self, project: str, *, cached: bool = True) -> CachedPage:
        """Fetch or revalidate a page now; concurrent callers share one upstream request. `cached=False`: the
        caller looked just now and there is no copy to revalidate (so it is not looked for again)."""
        task = self._refreshes.get(project)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(project, cached))
            self._refreshes[project] = task
            task.add_done_callback(lambda _: self._refreshes.pop(project, None))
        return await asyncio.shield(task)

    def _refresh_in_background(self, project: str) -> None:
        if project in self._refreshes or self._remembered(self._kept_despite_not_found, project):
            return

        async def refresh_quietly() -> None:
            try:
                await self.refresh(project)
            except UpstreamNotFound:
                pass  # _refresh already dropped the page
            except Exception as exc:  # the stale copy keeps being served; say why in the log
                log.warning("revalidating %s failed, serving the cached page: %s", project, exc)

        asyncio.get_running_loop().create_task(refresh_quietly())

    async def _refresh(self, project: str, cached: bool = True) -> CachedPage:
        previous = (self.memory.get(project) or await self._load(project)) if cached else None
        try:
            fetched = await self.origin.fetch_page(project, previous)
        except UpstreamNotFound as exc:
            if previous is not None and exc.unanswered:
                # Some upstreams said "not found" while others could not answer: not proof that the project is
                # gone (a mirror lags, or leaves projects out). The cached page is kept and served stale, as when
                # none answers, until every upstream that could have it says so.
                unavailable = UpstreamsUnavailable(exc.unanswered)
                previous.refresh_error = f"{exc}; no answer from {unavailable}"
                log.info("%s: %s; the cached page is kept", project, previous.refresh_error)
                # Not asked again in the background before NOT_FOUND_SECONDS (each request for the stale page would).
                self._remember(self._kept_despite_not_found, project)
                raise unavailable from None
            await self._forget_page(project)
            self._remember_missing(project)
            raise
        except Exception as exc:
            if previous is not None:
                previous.refresh_error = str(exc)
            raise
        self._missing.pop(project, None)
        self._kept_despite_not_found.pop(project, None)
        if fetched is not previous:
            fetched = await self._with_verified_entries(project, fetched)
        try:
            await self.pages.save(project, fetched)
        except StorageError as exc:
            # The page is good; only keeping it failed (a full disk): serve it, and keep it in memory only.
            log.warning("could not keep the page of %s on disk: %s", project, exc)
        self.memory.put(project, fetched)
        return fetched

    async def _with_verified_entries(self, project: str, fetched: CachedPage) -> CachedPage:
        """`fetched`, except for the cached files it lists as other bytes than those checked and kept here, when
        another upstream's page, asked now, still lists them as those: their entries (hashes, size, metadata) are
        taken from that page. Mirrors disagreeing on a file name's bytes (which the official index never changes)
        means one of them is wrong; the bytes here were checked against a page, so the page served keeps saying
        what is served, and a lock file holding that hash keeps installing. When no other upstream lists them so
        (they all list the new bytes now, or none answers), `fetched` is taken as it is: the file was replaced
        upstream, and is fetched again on its next request. A file `fetched` lists undecided (its page lists it
        more than once, differently) is listed as the entry its cached bytes were found to be, if they are one."""
        folder = self.pages.file_path(project, "-").parent
        if not folder.is_dir():  # no file of the project cached (a stat, as on a hit)
            return fetched
        decided = await asyncio.to_thread(_decided_by_cached_files, folder, fetched)
        if decided:
            # A file the page lists undecided (twice, differently) was decided by its bytes when it was fetched.
            fetched = _with_files(fetched, decided)
        contradicted = await asyncio.to_thread(_contradicted_files, folder, fetched)
        if not contradicted:
            return fetched
        keys = {name: _dispute_key(name, fetched, recorded) for name, recorded in contradicted.items()}
        # Disputes settled lately, as they stand now, are not asked about again.
        vouched = {name: dist for name in contradicted if (dist := self._settled_for(project, keys[name])) is not None}
        remembered = set(vouched)
        if len(vouched) < len(contradicted):
            async with contextlib.aclosing(self.origin.pages_of_others(project, but=fetched.upstream)) as others:
                async for other in others:
                    for filename, recorded in contradicted.items():
                        dist = other.files.get(filename)
                        if filename not in vouched and dist is not None and _vouches_for(dist, recorded):
                            vouched[filename] = dist
                            self._settle(project, keys[filename], dist)
                    if len(vouched) == len(contradicted):
                        break
        if not vouched:
            return fetched
        if vouched.keys() - remembered:
            log.warning(
                "%s's page of %s lists %s as other bytes than those cached here, which another upstream's page "
                "lists: the cached files are kept, listed as that page lists them",
                fetched.upstream,
                project,
                ", ".join(sorted(vouched.keys() - remembered)),
            )
        if remembered:
            log.info(
                "%s's page of %s still lists %s as other bytes than those cached here: listed as another upstream's "
                "page did when asked less than %.0f s ago",
                fetched.upstream,
                project,
                ", ".join(sorted(remembered)),
                SETTLED_DISPUTE_SECONDS,
            )
        return with_entries(fetched, vouched)

    def _settled_for(self, project: str, key: DisputeKey) -> DistFile | None:
        """The entry of another upstream's page that vouched for a cached file in this dispute, if lately."""
        disputes = self._settled.get(project, {})
        vouching, until = disputes.get(key, (None, 0.0))
        if vouching is not None and time.monotonic() < until:
            return vouching
        disputes.pop(key, None)
        return None

    def _settle(self, project: str, key: DisputeKey, vouching: DistFile) -> None:
        disputes = self._settled.setdefault(project, {})
        disputes[key] = (vouching, time.monotonic() + SETTLED_DISPUTE_SECONDS)
        self._settled.move_to_end(project)
        while len(self._settled) > MAX_SETTLED_PROJECTS:
            self._settled.popitem(last=False)

    async def _load(self, project: str) -> CachedPage | None:
        entry = await self.pages.load(project)
        if entry is not None:
            self.memory.put(project, entry)
        return entry

    async def _forget_page(self, project: str) -> None:
        self.memory.drop(project)
        await self.pages.remove(project)

    def _remember_missing(self, project: str) -> None:
        self._remember(self._missing, project)

    def _remember(self, memory: collections.OrderedDict[str, float], project: str) -> None:
        memory[project] = time.monotonic() + min(NOT_FOUND_SECONDS, self.index_ttl)
        memory.move_to_end(project)
        while len(memory) > MAX_REMEMBERED_MISSING:
            memory.popitem(last=False)

    @staticmethod
    def _remembered(memory: collections.OrderedDict[str, float], project: str) -> bool:
        until = memory.get(project)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del memory[project]
        return False

    def _raise_if_known_missing(self, project: str) -> None:
        if self._remembered(self._missing, project):
            raise UpstreamNotFound(f"no upstream has {project} (asked less than {NOT_FOUND_SECONDS:.0f} s ago)")

    def forget(self, project: str) -> None:
        self.memory.drop(project)
        self._missing.pop(project, None)
        self._kept_despite_not_found.pop(project, None)
        self._settled.pop(project, None)
        for key in [key for key in self._no_entry if key[0] == project]:
            del self._no_entry[key]

    def forget_all(self) -> None:
        # The writer's memory is never checked against the disk (it wrote it): another writer's change is told.
        self.memory.clear()
        self._missing.clear()
        self._kept_despite_not_found.clear()
        self._settled.clear()
        self._no_entry.clear()

    async def cached_projects(self) -> list[str]:
        return await self.pages.projects()

    # --- files ---

    async def open_file(self, project: str, filename: str) -> Path | Download:
        await self._page_checked(project, filename)
        path = self.pages.file_path(project, filename)
        recorded = recorded_of(path)
        if recorded is not None:
            entry = self.memory.get(project) or await self._load(project)
            if is_as_listed(entry, filename, recorded):
                if entry is not None and parent_word_needed(entry, filename, self.index_ttl):
                    await self._heed_parent(project, filename, entry)
                return path
        # A file there that the page no longer lists as it is was replaced upstream under its name: fetched again
        # and checked against the page, it replaces the old one by a rename (readers of the old one finish).
        replace = recorded is not None
        entry, download = await self._start_download(project, filename, path, replace=replace)
        if download is not None:
            self._watch(project, filename, entry, download)
        if download is None or not self.origin.is_pkgcache(entry.upstream):
            return path if download is None else download
        try:
            await download.wait_started()
        except UpstreamsUnavailable:
            # The parent pkgcache that gave the page failed just now, and only it serves the files it lists:
            # once more, with the page from the next upstream (it rests now), so the client never sees it.
            if not self.origin.is_resting(entry.upstream):
                raise
            entry, download = await self._start_download(project, filename, path, replace=replace)
            if download is not None:
                self._watch(project, filename, entry, download)
        return path if download is None else download

    # --- a page whose hash every upstream's bytes fail ---

    def _watch(self, project: str, filename: str, entry: CachedPage, download: Download) -> None:
        """Once `download` (of a file `entry` lists) has failed because every upstream's bytes contradict the page,
        the page is the suspect: it is checked against the other upstreams' pages (`_check_page`). Once it has
        passed as one of the entries of a file the page lists undecided, the page lists it as that one
        (`_decide`), before its clients are told it is whole."""
        if download in self._watched or filename.endswith(PROVENANCE_SUFFIX):
            return

        async def after(done: Download) -> None:
            key = (project, filename)
            if isinstance(done.error, BadBytesEverywhere) and key not in self._page_checks:
                task = asyncio.get_running_loop().create_task(self._check_page(project, filename, entry))
                self._page_checks[key] = task
                task.add_done_callback(lambda _: self._page_checks.pop(key, None))
            listed = entry.files.get(filename)
            if listed is None or not listed.candidates:
                return
            if done.verified and done.checked_digest is not None:
                await self._decide(project, filename, listed, done.checked_digest, done.written)
            elif isinstance(done.error, BadBytesEverywhere):
                until = time.monotonic() + min(NOT_FOUND_SECONDS, self.index_ttl)
                self._no_entry[key] = (listed.candidates, until, dict(done.error.errors))
                self._no_entry.move_to_end(key)
                while len(self._no_entry) > MAX_REMEMBERED_MISSING:
                    self._no_entry.popitem(last=False)

        if download.before_done(after):
            self._watched.add(download)

    async def _page_checked(self, project: str, filename: str) -> None:
        """Wait (a while at most) for a check of the page under way for this file: its outcome is the page to use."""
        task = self._page_checks.get((project, filename))
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), PAGE_CHECK_WAIT)

    async def _check_page(self, project: str, filename: str, entry: CachedPage) -> None:
        """Every upstream sent bytes failing the hash (or size) `entry` lists for a file: the page that gave it is
        the likely culprit, not every mirror. The other upstreams' pages are asked (not the one that gave it); the
        first that lists the file otherwise has it fetched against its entry, and once bytes pass that, the cached
        page lists the file as that page does (hashes, size, metadata: the rest of the page stays as it is). No
        client is ever sent bytes that passed no page's check; one that read the wrong page fails its own check
        once, the next ones install."""
        listed = entry.files.get(filename)
        if listed is None:
            return
        try:
            async with contextlib.aclosing(self.origin.pages_of_others(project, but=entry.upstream)) as others:
                async for other in others:
                    if await self._file_as_listed_by(project, filename, entry, listed, other):
                        return
        except Exception:
            log.exception("checking the page of %s against the other upstreams' failed", project)
            return
        log.warning(
            "%s: every upstream's bytes failed %s's page; no other page lists it otherwise", filename, entry.upstream
        )

    async def _file_as_listed_by(
        self, project: str, filename: str, entry: CachedPage, listed: DistFile, other: CachedPage
    ) -> bool:
        """Whether the file could be had as `other` (another upstream's page) lists it, where that differs from
        `listed` (`entry`'s): then the cached page lists it so."""
        dist = other.files.get(filename)
        if dist is None or not dist.hashes or (dist.hashes, dist.size) == (listed.hashes, listed.size):
            return False
        trial = with_entries(entry, {filename: dist})
        download = self.origin.download(self.pages.file_path(project, filename), trial, trial.files[filename])
        if download is not None:
            try:
                await download.wait_finished()
            except Exception as exc:
                log.warning("%s as %s's page lists it cannot be had either: %s", filename, other.upstream, exc)
                return False
        await self._adopt_entry(project, filename, listed, dist)
        recorded = recorded_of(self.pages.file_path(project, filename))
        if recorded is not None and recorded.digest is not None and _vouches_for(dist, recorded):
            # The page's revalidations, finding the same entry there, need not ask `other` again.
            self._settle(project, _dispute_key(filename, entry, recorded), dist)
        log.warning(
            "%s: every upstream's bytes failed %s's page, and passed %s's: the page now lists it as %s's",
            filename,
            entry.upstream,
            other.upstream,
            other.upstream,
        )
        return True

    async def _decide(
        self, project: str, filename: str, undecided: DistFile, digest: tuple[str, str], size: int
    ) -> None:
        """The bytes fetched for a file the page lists undecided passed as one of its entries (by `digest`): the
        cached page lists it as that entry from now on, its hash among what it says."""
        candidate = _candidate_of(undecided, digest, size)
        if candidate is None:
            return
        await self._adopt_entry(project, filename, undecided, _decided(undecided, candidate), whole=True)
        log.info(
            "%s, listed more than once with other hashes on the page of %s, is the entry with %s %s: listed so",
            filename,
            project,
            *digest,
        )

    async def _adopt_entry(
        self, project: str, filename: str, wrong: DistFile, right: DistFile, *, whole: bool = False
    ) -> None:
        """The cached page (as it is now) lists `filename` as `right` where it still lists it as `wrong` (its hashes,
        size and core metadata; `whole`: `right` as it is)."""
        current = self.memory.get(project) or await self._load(project)
        if current is None:
            return
        now = current.files.get(filename)
        if now is None or (now.hashes, now.size, now.candidates) != (wrong.hashes, wrong.size, wrong.candidates):
            return  # the page changed meanwhile: the next request judges it
        fixed = _with_files(current, {filename: right}) if whole else with_entries(current, {filename: right})
        try:
            await self.pages.save(project, fixed)
        except StorageError as exc:
            log.warning("could not keep the page of %s on disk: %s", project, exc)
        self.memory.put(project, fixed)

    async def _heed_parent(self, project: str, filename: str, entry: CachedPage) -> None:
        """Ask the parent pkgcache that gave the page about a cached file it does not vouch for now (see
        `parent_word_needed`): UpstreamRefused when its policy refuses the file (upstream/parent_verdicts.py). A
        page past its time-to-live is revalidated meanwhile, in the background, so that the next requests (and
        the workers that only read, which hand such a request over) find it fresh."""
        upstream = self.parent_verdicts.parent(entry.upstream)
        if upstream is None:
            return
        if entry.age() >= self.index_ttl:
            self._refresh_in_background(project)
        base = companion_base(filename) or filename
        url = parent_file_url(upstream, project, base)
        await self.parent_verdicts.heed(f"{project}/{base}", upstream, url)

    async def _start_download(
        self, project: str, filename: str, path: Path, *, replace: bool = False
    ) -> tuple[CachedPage, Download | None]:
        """The page listing the file, and the download bringing it (None when the file is there already)."""
        entry, _ = await self.get_page(project)
        if self.origin.is_resting(entry.upstream):
            entry = await self._page_from_another_upstream(project, entry)
        found = _lookup(entry, filename)
        if found is None and entry.age() > MISSING_FILE_RECHECK_SECONDS:
            entry = await self.refresh(project)
            found = _lookup(entry, filename)
        if found is None:
            raise FileNotListed(f"{project} has no file {filename}")
        if filename.endswith(PROVENANCE_SUFFIX):
            return entry, self.origin.download_provenance(path, entry, found)
        if found.candidates:
            self._raise_if_no_entry(project, filename, found)
        return entry, self.origin.download(path, entry, found, replace=replace)

    def _raise_if_no_entry(self, project: str, filename: str, undecided: DistFile) -> None:
        """Raises the failure of the last download of a file listed undecided (its bytes were none of its entries)
        while it is believed: the entries are the same, and it is less than NOT_FOUND_SECONDS old."""
        known = self._no_entry.get((project, filename))
        if known is None:
            return
        candidates, until, errors = known
        if candidates == undecided.candidates and time.monotonic() < until:
            raise BadBytesEverywhere({name: f"{reason} (fetched lately)" for name, reason in errors.items()})
        del self._no_entry[(project, filename)]

    async def _page_from_another_upstream(self, project: str, entry: CachedPage) -> CachedPage:
        """The page again, from the upstreams not resting, when the one that gave it rests after failing.

        Its links may lead to it alone: a parent pkgcache's do (`files/<project>/<file>`, a layout no mirror shares),
        so a file it lists could not fail over. The page as it was when no other upstream can give one.
        """
        try:
            return await self.refresh(project)
        except (UpstreamNotFound, UpstreamsUnavailable):
            return entry

    def cached_file(self, project: str, filename: str) -> Path | None:
        path = self.pages.file_path(project, filename)
        recorded = recorded_of(path)
        if recorded is None or not is_as_listed(self.memory.peek(project), filename, recorded):
            return None
        return path

    async def read_range(self, project: str, filename: str, start: int | None, length: int) -> RangeBody:
        entry, dist = await self.find_file(project, filename)
        return await fetch_range(self.origin.pool, self.origin.file_target(entry, dist), start, length)

    async def find_file(self, project: str, filename: str) -> tuple[CachedPage, DistFile]:
        """The page listing a distribution, and its entry there; FileNotListed if it has none."""
        entry, _ = await self.get_page(project)
        if self.origin.is_resting(entry.upstream):
            entry = await self._page_from_another_upstream(project, entry)
        dist = entry.files.get(filename)
        if dist is None and entry.age() > MISSING_FILE_RECHECK_SECONDS:
            entry = await self.refresh(project)
            dist = entry.files.get(filename)
        if dist is None:
            raise FileNotListed(f"{project} has no file {filename}")
        if entry.origin.parent is not None and entry.origin.parent_refuses_all:
            # Its parent refuses every file of the page: a `.metadata` made here, or a part of the file, is not
            # served before the parent is asked about the file either.
            await self._heed_parent(project, filename, entry)
        return entry, dist

    def status(self) -> dict[str, object]:
        return {
            "index_ttl": self.index_ttl,
            "pages_in_memory": len(self.memory),
            "page_memory_bytes": self.memory.total,
            "projects_known_missing": len(self._missing),
            **self.parent_verdicts.status(),
        }


def _lookup(entry: CachedPage, filename: str) -> DistFile | None:
    """The page's entry for a distribution, or for the distribution whose provenance is asked for (when the
    upstream gave one). Core metadata is a layer's (core_metadata.py)."""
    if filename.endswith(PROVENANCE_SUFFIX):
        dist = entry.files.get(filename.removesuffix(PROVENANCE_SUFFIX))
        return dist if dist is not None and dist.provenance_url else None
    return entry.files.get(filename)


def _contradicted_files(folder: Path, entry: CachedPage) -> dict[str, Recorded]:
    """The cached files in `folder` (checked against a digest) that `entry` lists as other bytes (blocking)."""
    try:
        names = [name for name in os.listdir(folder) if name in entry.files]
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found: dict[str, Recorded] = {}
    for name in names:
        recorded = recorded_of(folder / name)
        if recorded is not None and recorded.digest is not None and not listed_as(entry.files[name], recorded):
            found[name] = recorded
    return found


def listed_as(dist: DistFile, recorded: Recorded) -> bool:
    """Whether a cached file, as recorded, is the file a page's entry lists: for an undecided entry, one of its
    candidates."""
    if dist.candidates:
        return any(agrees(recorded, candidate.hashes, candidate.size) for candidate in dist.candidates)
    return agrees(recorded, dist.hashes, dist.size)


def _decided_by_cached_files(folder: Path, entry: CachedPage) -> dict[str, DistFile]:
    """The files `entry` lists undecided whose cached bytes (checked against a digest) are one of their entries,
    as that entry (blocking)."""
    found: dict[str, DistFile] = {}
    for dist in entry.page.files:
        if not dist.candidates:
            continue
        recorded = recorded_of(folder / dist.filename)
        if recorded is None or recorded.digest is None:
            continue
        candidate = _candidate_of(dist, recorded.digest, recorded.size)
        if candidate is not None:
            found[dist.filename] = _decided(dist, candidate)
    return found


def _candidate_of(undecided: DistFile, digest: tuple[str, str], size: int) -> DistFile | None:
    """The entry (of an undecided one's candidates) that bytes of this digest and size are."""
    name, value = digest
    for candidate in undecided.candidates:
        listed = candidate.hashes.get(name)
        if listed is not None and listed.lower() == value and candidate.size in (None, size):
            return candidate
    return None


def _decided(undecided: DistFile, candidate: DistFile) -> DistFile:
    """An undecided entry as the candidate its bytes are: all that candidate says, at the link they came from."""
    return dataclasses.replace(candidate, url=undecided.url)


# A dispute over a cached file: its name, the upstream whose page lists it as other bytes, that entry's hashes and
# size, and the cached file as recorded (size, digest).
DisputeKey = tuple[str, str, tuple[tuple[str, str], ...], int | None, int, tuple[str, str] | None]


def _dispute_key(filename: str, entry: CachedPage, recorded: Recorded) -> DisputeKey:
    listed = entry.files[filename]
    hashes = tuple(sorted((name, value.lower()) for name, value in listed.hashes.items()))
    return (filename, entry.upstream, hashes, listed.size, recorded.size, recorded.digest)


def _vouches_for(dist: DistFile, recorded: Recorded) -> bool:
    """Whether a page's entry lists a cached file as the bytes it was checked against (a digest, not a size alone)."""
    assert recorded.digest is not None
    name, value = recorded.digest
    listed = dist.hashes.get(name)
    return listed is not None and listed.lower() == value and agrees(recorded, dist.hashes, dist.size)


def with_entries(entry: CachedPage, replaced: Mapping[str, DistFile]) -> CachedPage:
    """`entry` with the files named in `replaced` listed as those entries (of another upstream's page) say: their
    hashes, size and core metadata; the link stays the page's own, so each upstream is asked at its own place."""
    return _with_files(
        entry,
        {
            dist.filename: dataclasses.replace(
                dist, hashes=other.hashes, size=other.size, core_metadata=other.core_metadata, candidates=()
            )
            for dist in entry.page.files
            if (other := replaced.get(dist.filename)) is not None
        },
    )


def _with_files(entry: CachedPage, replaced: Mapping[str, DistFile]) -> CachedPage:
    """`entry` with the files named in `replaced` listed as those entries."""
    files = tuple(replaced.get(dist.filename, dist) for dist in entry.page.files)
    page = dataclasses.replace(entry.page, files=files)
    return entry.listing(page)


def parent_word_needed(entry: CachedPage, filename: str, index_ttl: float, now: float | None = None) -> bool:
    """Whether a cached file (a distribution, or its provenance) is served only once the parent pkgcache that gave
    the page in force has been asked about it (upstream/parent_verdicts.py): the page does not list it, the parent
    said it refuses every file the page lists, or the page is past its time-to-live (or provisional), so that what
    it lists may be what the parent's policy let through then, not now. A page listing the file, fresh and without
    that mark, vouches for it: no request. A mirror's page never asks (a file it no longer lists is served as it was
    checked, which lock files need)."""
    page = entry.origin
    if page.parent is None:
        return False
    base = companion_base(filename) or filename
    return page.parent_refuses_all or base not in entry.files or page.provisional or entry.age(now) >= index_ttl


def is_as_listed(entry: CachedPage | None, filename: str, recorded: Recorded) -> bool:
    """Whether a cached file, as recorded, is the file `entry` (the page served now) lists under its name; True
    when the page cannot tell (none, the file not on it, no size or hash given, a provenance: it has neither)."""
    if entry is None or filename.endswith(PROVENANCE_SUFFIX):
        return True
    dist = entry.files.get(filename)
    if dist is None or listed_as(dist, recorded):
        return True
    log.info("%s is not the file the page of %s lists now (replaced upstream): fetched again", filename, entry.upstream)
    return False
