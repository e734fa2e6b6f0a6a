"""Files that change upstream (conda's repodata and friends), kept fresh like a good CDN would.

Each file has a small metadata sidecar (`<file>.meta`) saying which upstream gave it, its validators and when it was
last checked. A fresh file is served as it is; a stale one is served at once while one background request
revalidates it (`If-None-Match` / `If-Modified-Since` to the upstream that gave it); a missing one is fetched and
streamed to the clients that wait for it. "Every upstream says 404" is remembered for the time-to-live too, so the
probes clients make for optional files (`.zst`, shards) cost the upstreams nothing most of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pkgcache.cache_state import CacheState
from pkgcache.storage.downloads import Download, Expected
from pkgcache.storage.store import READER_RECHECK_SECONDS, CacheStore
from pkgcache.upstream.pool import TargetFor, Upstream, UpstreamNotFound
from pkgcache.upstream.transfer import Fetcher

log = logging.getLogger(__name__)

META_SUFFIX = ".meta"


@dataclass
class FileMeta:
    """What pkgcache knows about one refreshing file."""

    fetched_at: float
    upstream: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    missing: bool = False  # every upstream said 404
    size: int | None = None  # of the file this describes, to notice a sidecar that no longer matches it
    mtime_ns: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def age(self) -> float:
        return max(0.0, time.time() - self.fetched_at)


@dataclass
class Lookup:
    """The answer to "give me this file": a path to serve, or a download to follow, and how it was found."""

    state: str
    path: Path
    meta: FileMeta | None = None
    download: Download | None = None


AfterFetch = Callable[[Path, FileMeta], Awaitable[None]]


class RefreshingFiles:
    """Mutable cached files with a time-to-live, revalidation, stale serving and remembered 404s."""

    def __init__(self, store: CacheStore, fetcher: Fetcher) -> None:
        self.store = store
        self.fetcher = fetcher
        self._meta: dict[Path, FileMeta] = {}
        self._revalidating: set[Path] = set()
        # A reader (a worker that does not write the cache) reads sidecars again now and then: the writer changes them.
        self._reader = not store.writable
        self._read_at: dict[Path, float] = {}

    async def get(
        self,
        path: Path,
        target: TargetFor,
        ttl: float,
        after_fetch: AfterFetch | None = None,
    ) -> Lookup:
        """The file at `path`, fetched or revalidated through `pool` as its age requires.

        Raises UpstreamNotFound when every upstream says it does not exist (remembered for `ttl`), and the pool's
        other errors when there is no copy and no upstream can give one. `after_fetch` runs on each new version
        (e.g. to rewrite it) before its metadata is recorded.
        """
        meta = await self.meta_for(path)
        if meta is not None and meta.age() < ttl:
            if meta.missing:
                raise UpstreamNotFound(path.name)
            return Lookup(CacheState.HIT, path, meta)
        if meta is not None and meta.missing:
            # A stale "not there" stays the answer while one background request asks again: clients treat a
            # 404 on optional files as "use another form", but a 5xx as fatal.
            self._fetch(path, target, after_fetch)
            raise UpstreamNotFound(path.name)
        if meta is not None:
            self._revalidate_in_background(path, target, meta, after_fetch)
            return Lookup(CacheState.STALE, path, meta)
        return Lookup(CacheState.MISS, path, None, self._fetch(path, target, after_fetch))

    def _fetch(self, path: Path, target: TargetFor, after_fetch: AfterFetch | None) -> Download:
        download = self.fetcher.download(
            path,
            target,
            Expected(),
            replace=True,
            on_done=lambda finished: self._record(finished, after_fetch),
            compressed=True,
        )
        assert download is not None  # replace=True always gives a download
        return download

    async def fetch_now(
        self, path: Path, target: TargetFor, ttl: float, after_fetch: AfterFetch | None = None
    ) -> tuple[Path, FileMeta, str]:
        """Like `get`, but wait until the file is whole and recorded (for callers that read it themselves)."""
        found = await self.get(path, target, ttl, after_fetch)
        if found.download is not None:
            await found.download.wait_finished()
            found.meta = await self.meta_for(path)
            if found.meta is None:
                raise UpstreamNotFound(path.name)
        assert found.meta is not None
        return path, found.meta, found.state

    async def meta_for(self, path: Path) -> FileMeta | None:
        """The file's metadata if the file and its sidecar agree; None when there is no usable copy."""
        meta = self._meta.get(path)
        if meta is not None and not (self._reader and time.monotonic() - self._read_at[path] > READER_RECHECK_SECONDS):
            return meta
        meta = await asyncio.to_thread(self._load_meta, path)
        if meta is None:
            self._meta.pop(path, None)
            return None
        self._meta[path] = meta
        self._read_at[path] = time.monotonic()
        return meta

    async def record_generated(self, path: Path, extra: dict[str, Any]) -> FileMeta:
        """Record metadata for a file pkgcache made itself (e.g. a .zst made from the .json)."""
        meta = FileMeta(fetched_at=time.time(), upstream=None, extra=extra)
        await asyncio.to_thread(self._save_meta, path, meta)
        self._meta[path] = meta
        return meta

    async def refresh_now(
        self, path: Path, target: TargetFor, after_fetch: AfterFetch | None = None
    ) -> FileMeta | None:
        """Revalidate a cached file now and wait for the outcome (e.g. a package missing from old repodata)."""
        meta = await self.meta_for(path)
        if meta is None or meta.missing:
            return None
        download = self._revalidate_in_background(path, target, meta, after_fetch)
        if download is not None:
            # The after-download hook has recorded the outcome by the time waiters are woken.
            with contextlib.suppress(Exception):
                await download.wait_finished()
        return await self.meta_for(path)

    def _revalidate_in_background(
        self, path: Path, target: TargetFor, meta: FileMeta, after_fetch: AfterFetch | None
    ) -> Download | None:
        if path in self._revalidating or self.fetcher.is_being_written(path):
            return self.fetcher.running(path)
        self._revalidating.add(path)

        def validators(upstream: Upstream) -> dict[str, str]:
            # Validators only mean something to the upstream that issued them.
            if upstream.name != meta.upstream:
                return {}
            headers = {}
            if meta.etag:
                headers["If-None-Match"] = meta.etag
            if meta.last_modified:
                headers["If-Modified-Since"] = meta.last_modified
            return headers

        async def done(download: Download) -> None:
            self._revalidating.discard(path)
            if isinstance(download.error, UpstreamNotFound):
                await self._record(download, after_fetch)
            elif download.error is not None:
                log.warning("revalidating %s failed; serving the cached copy: %s", path.name, download.error)
            elif download.not_modified:
                meta.fetched_at = time.time()
                await asyncio.to_thread(self._save_meta, path, meta)
            else:
                await self._record(download, after_fetch)

        return self.fetcher.download(
            path, target, Expected(), headers=validators, replace=True, on_done=done, compressed=True
        )

    async def _record(self, download: Download, after_fetch: AfterFetch | None) -> None:
        path = download.final_path
        if isinstance(download.error, UpstreamNotFound):
            meta = FileMeta(fetched_at=time.time(), missing=True)
            await asyncio.to_thread(self._save_meta, path, meta)
            self._meta[path] = meta
            return
        if download.error is not None or download.not_modified:
            return
        headers = download.headers
        meta = FileMeta(
            fetched_at=time.time(),
            upstream=download.source,
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
        )
        if after_fetch is not None:
            await after_fetch(path, meta)
        await asyncio.to_thread(self._save_meta, path, meta)
        self._meta[path] = meta

    # --- sidecars (blocking: called in worker threads) ---

    def _save_meta(self, path: Path, meta: FileMeta) -> None:
        if not meta.missing:
            try:
                stat = path.stat()
            except FileNotFoundError:
                return
            meta.size, meta.mtime_ns = stat.st_size, stat.st_mtime_ns
        self.store.write_json_atomic(_sidecar(path), asdict(meta))

    def _load_meta(self, path: Path) -> FileMeta | None:
        data = self.store.read_json(_sidecar(path))
        if not isinstance(data, dict):
            return None
        try:
            meta = FileMeta(**data)
        except TypeError:
            return None
        if meta.missing:
            return meta
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (meta.size, meta.mtime_ns):
            # The file was replaced after this sidecar was written (a crash between the two renames): the copy
            # is still whole, but its validators are not its own, so it must be revalidated from scratch.
            return FileMeta(fetched_at=0.0, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return meta


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + META_SUFFIX)
