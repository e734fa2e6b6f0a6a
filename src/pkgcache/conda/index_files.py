"""A channel's index files (repodata and friends), kept fresh like a good CDN would: the writing worker's way.

Each file has a sidecar (`<file>.meta`, storage/sidecars.py) saying which upstream gave it, its validators and
when it was last checked. A fresh file is served as it is; a stale one is served at once while one background
request revalidates it (`If-None-Match` / `If-Modified-Since` to the upstream that gave it; only the date to the
others, asked when it fails: a lagging mirror's older version, 304 or 200 dated no later than the copy, never
replaces a newer copy, which counts as fresh again), or, for a file whose old version names files its upstream
deletes (a shard index), before it is answered; a missing one is
fetched and streamed to the clients that wait for it. "Every upstream says 404" is remembered for the
time-to-live too, so the probes clients make for optional files (`.zst`, shards) cost the upstreams nothing most
of the time. A new version replaces the old one only once it is whole and passes its shape check
(conda/index_checks.py): a mirror's error page never replaces a good copy. An optional file (anything but
repodata.json) that no upstream can give whole and right, and of which there is no copy, is remembered as not
there for the time-to-live as well: a `.zst` cut short on every mirror (one caught mid-sync) then sends clients,
and the layers that make shards and `.zst` files here, to the `.json` instead of answering 5xx.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from pkgcache.cache_state import CLOCK_SLIP_SECONDS, CacheState, revalidation_due
from pkgcache.conda.index_checks import content_check_for, magic_of_index, max_size_of_index
from pkgcache.conda.source import Lookup
from pkgcache.node_identity import CopyState, NodeIdentity, copy_state
from pkgcache.storage.downloads import Download, Expected
from pkgcache.storage.sidecars import FETCHED_URL, PARENT_NODE, FileMeta, Sidecars
from pkgcache.upstream.pool import BadBytesEverywhere, TargetFor, Upstream, UpstreamNotFound
from pkgcache.upstream.transfer import Fetcher

log = logging.getLogger(__name__)

AfterFetch = Callable[[Path, FileMeta], Awaitable[None]]
# Told of each new version of a file once it is in place and recorded (its sidecar saved).
NewVersion = Callable[[Path, FileMeta], Awaitable[None]]
# Run on each new version, whole and checked, before it is renamed into place: may rewrite its bytes (and leave
# `download.notes`, which go into the file's sidecar).
Transform = Callable[[Download], Awaitable[None]]
# In the sidecar of a file kept through a transform: copies kept before it was (an older pkgcache's) are fetched
# again whole at their next revalidation instead of being kept on a 304.
TRANSFORMED = "transformed"
# In the sidecar of a copy taken from a parent pkgcache's offline view (`_mark_provisional`).
PROVISIONAL = "provisional"
# In the sidecar of a remembered 404 whose pkgcache upstreams do not serve the channel: what, and their reasons.
NOT_SERVED = "not_served"


class IndexFiles:
    """Changing files with a time-to-live, revalidation, stale serving and remembered 404s."""

    def __init__(self, fetcher: Fetcher, sidecars: Sidecars) -> None:
        self.fetcher = fetcher
        self.sidecars = sidecars
        self._revalidating: set[Path] = set()
        self._listeners: list[NewVersion] = []

    def when_new_version(self, listener: NewVersion) -> None:
        """Tell `listener` of each new version of a file fetched here, once it is in place and recorded (not of a
        304, a 404, or a file made here)."""
        self._listeners.append(listener)

    async def meta_for(self, path: Path) -> FileMeta | None:
        return await self.sidecars.meta_for(path)

    async def get(
        self,
        path: Path,
        target: TargetFor,
        ttl: float,
        after_fetch: AfterFetch | None = None,
        transform: Transform | None = None,
        revalidate_first: bool = False,
    ) -> Lookup:
        """The file at `path`, fetched or revalidated as its age requires.

        Raises UpstreamNotFound when every upstream says it does not exist (remembered for `ttl`), and the pool's
        other errors when there is no copy and no upstream can give one. `after_fetch` runs on each new version
        (e.g. to rewrite it) before its metadata is recorded; `transform` on each new version before it is put in
        place (see Transform). `revalidate_first`: a copy past its time-to-live is revalidated before it is
        answered, and served stale only when no upstream answers (a file naming others that its upstream deletes
        once it changes: a shard index).
        """
        how = _How(after_fetch, transform)
        meta = await self.meta_for(path)
        past_ttl = meta is not None and not meta.missing and meta.age() >= ttl
        first = revalidate_first or (meta is not None and bool(meta.extra.get(PROVISIONAL)))
        if meta is not None and (revalidation_due(meta.age()) or (first and past_ttl)):
            meta = await self._revalidated(path, target, meta, how)
            if meta is not None and meta.age() >= ttl:  # no upstream answered: the copy (or the 404) kept
                if meta.missing:
                    raise missing_error(path, meta)
                return Lookup(CacheState.STALE, path, meta)
        if meta is not None and meta.age() < ttl:
            if meta.missing:
                raise missing_error(path, meta)
            return Lookup(CacheState.HIT, path, meta)
        if meta is not None and meta.missing:
            # A stale "not there" stays the answer while one background request asks again: clients treat a
            # 404 on optional files as "use another form", but a 5xx as fatal.
            self._fetch(path, target, how)
            raise missing_error(path, meta)
        if meta is not None:
            self._revalidate_in_background(path, target, meta, how)
            return Lookup(CacheState.STALE, path, meta)
        return Lookup(CacheState.MISS, path, None, self._fetch(path, target, how))

    async def _revalidated(self, path: Path, target: TargetFor, meta: FileMeta, how: _How) -> FileMeta | None:
        """Revalidate now, a remembered 404 too (the request asked for it), and wait: the metadata then."""
        if meta.missing:
            download: Download | None = self._fetch(path, target, how)
        else:
            download = self._revalidate_in_background(path, target, meta, how)
        if download is not None:
            # Recorded by the after-download hook by the time waiters are woken; a failure keeps the old copy.
            with contextlib.suppress(Exception):
                await download.wait_finished()
        return await self.meta_for(path)

    def _fetch(self, path: Path, target: TargetFor, how: _How) -> Download:
        download = self.fetcher.download(
            path,
            target,
            _expected(path),
            replace=True,
            on_done=lambda finished: self._record(finished, how),
            compressed=True,
            before_commit=how.transform,
        )
        assert download is not None  # replace=True always gives a download
        return download

    async def fetch_now(
        self,
        path: Path,
        target: TargetFor,
        ttl: float,
        after_fetch: AfterFetch | None = None,
        transform: Transform | None = None,
        revalidate_first: bool = False,
    ) -> tuple[Path, FileMeta, CacheState]:
        """Like `get`, but wait until the file is whole and recorded (for callers that read it themselves)."""
        found = await self.get(path, target, ttl, after_fetch, transform, revalidate_first)
        if found.download is not None:
            await found.download.wait_finished()
            found.meta = await self.meta_for(path)
            if found.meta is None:
                raise UpstreamNotFound(path.name)
        assert found.meta is not None
        return path, found.meta, found.state

    async def record_generated(self, path: Path, extra: dict[str, object]) -> FileMeta:
        """Record metadata for a file pkgcache made itself (e.g. a .zst made from the .json)."""
        meta = FileMeta(fetched_at=time.time(), upstream=None, extra=dict(extra))
        await self.sidecars.save(path, meta)
        return meta

    async def refresh_now(
        self,
        path: Path,
        target: TargetFor,
        after_fetch: AfterFetch | None = None,
        transform: Transform | None = None,
    ) -> FileMeta | None:
        """Revalidate a cached file now and wait for the outcome (e.g. a package missing from old repodata)."""
        meta = await self.meta_for(path)
        if meta is None or meta.missing:
            return None
        download = self._revalidate_in_background(path, target, meta, _How(after_fetch, transform))
        if download is not None:
            # The after-download hook has recorded the outcome by the time waiters are woken.
            with contextlib.suppress(Exception):
                await download.wait_finished()
        return await self.meta_for(path)

    def _revalidate_in_background(self, path: Path, target: TargetFor, meta: FileMeta, how: _How) -> Download | None:
        if path in self._revalidating or self.fetcher.is_being_written(path):
            return self.fetcher.running(path)

        # A copy kept without the transform it now needs is fetched whole, to be transformed.
        refetch = how.transform is not None and not meta.extra.get(TRANSFORMED)
        copy_date = None if refetch else _copy_date(meta)

        def validators(upstream: Upstream) -> dict[str, str]:
            # The ETag only means something to the upstream that issued it. The date is the version's: another
            # mirror (the issuer failing) is asked whether it has anything newer, so that a lagging one answers
            # 304 instead of sending an older version to replace this one.
            if refetch:
                return {}
            headers = {}
            if upstream.name == meta.upstream and meta.etag:
                headers["If-None-Match"] = meta.etag
            if meta.last_modified and (upstream.name == meta.upstream or copy_date is not None):
                headers["If-Modified-Since"] = meta.last_modified
            return headers

        def older_than_copy(upstream: Upstream, headers: Mapping[str, str]) -> bool:
            # A mirror that ignores If-Modified-Since: its 200 dated no later than the copy is not taken either.
            if copy_date is None or upstream.name == meta.upstream:
                return False
            answer_date = _http_date(headers.get("Last-Modified"))
            return answer_date is not None and answer_date <= copy_date

        async def done(download: Download) -> None:
            self._revalidating.discard(path)
            if isinstance(download.error, UpstreamNotFound):
                await self._record(download, how)
            elif download.error is not None:
                log.warning("revalidating %s failed; serving the cached copy: %s", path.name, download.error)
            elif download.not_modified:
                meta.fetched_at = _fetched_at(download)
                _mark_provisional(meta, download)
                await self.sidecars.save(path, meta)
            else:
                await self._record(download, how)

        download = self.fetcher.download(
            path,
            target,
            _expected(path),
            headers=validators,
            replace=True,
            on_done=done,
            compressed=True,
            before_commit=how.transform,
            older_than_copy=older_than_copy,
        )
        # Only once it started: a revalidation that could not start is tried again by the next request.
        self._revalidating.add(path)
        return download

    async def _record(self, download: Download, how: _How) -> None:
        path = download.final_path
        if isinstance(download.error, UpstreamNotFound):
            missing = FileMeta(fetched_at=time.time(), missing=True)
            if download.error.not_served and download.error.what:
                # Why, when a pkgcache upstream does not serve its channel: told to every client until asked again.
                missing.extra[NOT_SERVED] = {"what": download.error.what, "by": download.error.not_served}
            await self.sidecars.save(path, missing)
            return
        if isinstance(download.error, BadBytesEverywhere) and download.expected.optional:
            log.warning("no upstream has a sound %s; answered as not there for now: %s", path.name, download.error)
            await self.sidecars.save(path, FileMeta(fetched_at=time.time(), missing=True))
            return
        if download.error is not None or download.not_modified:
            return
        headers = download.headers
        meta = FileMeta(
            fetched_at=_fetched_at(download),
            upstream=download.source,
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
        )
        _mark_provisional(meta, download)
        if download.url is not None:
            # What relative URLs in the file (a repodata's base_url, a shard index's) mean, on its upstream.
            meta.extra[FETCHED_URL] = download.url
        if how.transform is not None:
            meta.extra.update(download.notes)
            meta.extra[TRANSFORMED] = True
        if how.after_fetch is not None:
            await how.after_fetch(path, meta)
        await self.sidecars.save(path, meta)
        for listener in self._listeners:
            try:
                await listener(path, meta)
            except Exception:  # the version is in place whatever a listener makes of it
                log.exception("a listener to new versions of %s failed", path.name)


@dataclass(frozen=True)
class _How:
    """What is done to each new version of a file: `transform` before it is put in place, `after_fetch` after."""

    after_fetch: AfterFetch | None = None
    transform: Transform | None = None


def missing_error(path: Path, meta: FileMeta) -> UpstreamNotFound:
    """The error for a file every upstream said was not there (`meta.missing`), with the reason of those that do not
    serve its channel at all, as first answered."""
    said = meta.extra.get(NOT_SERVED)
    if not isinstance(said, dict) or not isinstance(said.get("by"), dict) or not isinstance(said.get("what"), str):
        return UpstreamNotFound(path.name)
    by = {str(name): str(reason) for name, reason in said["by"].items()}
    return UpstreamNotFound(path.name, not_served=by, what=said["what"])


def _mark_provisional(meta: FileMeta, download: Download) -> None:
    """A parent pkgcache's offline view (or a copy it could not revalidate), taken for want of a better answer, is
    revalidated before it is answered again (`get`), as a shard index always is. A parent pkgcache's copy is marked
    with its node name (PARENT_NODE): its policy made it (conda/package_records.py)."""
    if copy_state(download.headers) is CopyState.NOT_AUTHORITATIVE:
        meta.extra[PROVISIONAL] = True
    else:
        meta.extra.pop(PROVISIONAL, None)
    if download.source != meta.upstream:
        return  # another upstream's 304 (the copy is no newer than what it has): the copy is still the one it was
    node = NodeIdentity.from_headers(download.headers)
    if node is not None:
        meta.extra[PARENT_NODE] = node.name
    else:
        meta.extra.pop(PARENT_NODE, None)


def _fetched_at(download: Download) -> float:
    """When the answer's copy counts as fetched: now, but for a parent pkgcache's copy past its own time-to-live or
    its offline view (node_identity.py), kept as already expired so that the next request revalidates it."""
    return time.time() if copy_state(download.headers) is CopyState.FRESH else 0.0


def _copy_date(meta: FileMeta) -> float | None:
    """The Last-Modified of a cached copy, as a time other upstreams' versions are compared to; None when it has
    none that can be (unreadable, or later than now: a mirror's clock ahead would keep every other one's out)."""
    date = _http_date(meta.last_modified)
    if date is None or date > time.time() + CLOCK_SLIP_SECONDS:
        return None
    return date


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _expected(path: Path) -> Expected:
    # The first bytes already tell an error page or garbage from an index file: refused before any reaches a
    # client, so that the next upstream can still answer the clients waiting for this one.
    # And no mirror may make one any size it likes (gzip on the wire: ~1 KB becomes 1 MB).
    # Every index file but the repodata itself is one clients probe for (shards, .zst, .bz2, channel files): a 404
    # there is the channel's answer, logged without a warning.
    # A subdir's files are kept in the subdir's folder: a repodata or shard index naming another subdir is a
    # mirror's wrong answer (the check ignores the folder's name for a channel's own files).
    return Expected(
        magic=magic_of_index(path.name),
        content_check=content_check_for(path.name, subdir=path.parent.name),
        max_size=max_size_of_index(),
        optional=path.name != "repodata.json",
    )
