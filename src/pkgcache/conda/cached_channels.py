"""The conda channels as the writing worker keeps them: index files fresh, packages and shards checked and kept.

Layout under the data directory: `conda/<pkgs|cloud>/<channel>/<subdir>/<file>`, shards in `.../<subdir>/shards/`,
each index file with its `.meta` sidecar (storage/sidecars.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from pkgcache.cache_state import CacheState
from pkgcache.conda.base_url import (
    HEAD_BYTES,
    REPODATA_NAMES,
    head_of_bytes,
    needs_rewrite,
    rewrite_repodata,
    sends_elsewhere,
)
from pkgcache.conda.channels import SHARD_INDEX, Channel
from pkgcache.conda.index_checks import max_size_of_index
from pkgcache.conda.index_files import IndexFiles, Transform
from pkgcache.conda.package_records import (
    EXPECTED_SHA256_HEADER,
    ListedRecords,
    client_disagrees,
    client_expectation,
    unlisted_refusal,
)
from pkgcache.conda.passes_ahead import PassesAhead
from pkgcache.conda.records import AmbiguousRecord, expected_of, find_record, is_removed
from pkgcache.conda.repodata_stream import MalformedRepodata
from pkgcache.conda.shards import InvalidShardIndex, record_in_shard, rewrite_shard_index, shard_for
from pkgcache.conda.source import (
    Lookup,
    PackageNotInRepodata,
    PackageRecordUnclear,
    UnknownChannel,
    UnlistedPackageMismatch,
)
from pkgcache.conda.upstream_channels import UpstreamChannels
from pkgcache.config import CondaConfig
from pkgcache.storage.downloads import Download, Expected, IntegrityError
from pkgcache.storage.file_records import Recorded, agrees, recorded_of
from pkgcache.storage.filetypes import magic_for, max_package_size
from pkgcache.storage.sidecars import FETCHED_URL, FileMeta
from pkgcache.storage.store import CacheStore, in_storage_thread
from pkgcache.upstream.parent_verdicts import ParentVerdicts
from pkgcache.upstream.pool import (
    BadBytesEverywhere,
    TargetFor,
    UpstreamError,
    UpstreamNotFound,
    UpstreamsUnavailable,
)

log = logging.getLogger(__name__)

# A package missing from cached repodata may be newer than it: look again, but not more often than this.
MISSING_PACKAGE_RECHECK_SECONDS = 10.0
# Packages whose bytes failed their record's hash on every upstream, remembered (at most this many) so that the
# next request for one looks its record up again first: the channel may have replaced the file since the repodata
# here was fetched.
CONTRADICTED_PACKAGES_KEPT = 1024
# How long a package its channel does not list (checked against its client's sha256 alone) is waited for before
# its first byte is sent: most packages are whole by then, and a mismatch is a clear 502; a bigger one is streamed
# (conda's read timeout is 60 s; a client's own may be shorter).
UNLISTED_WHOLE_WAIT = 5.0
# A package not listed whose upstreams' bytes matched no client's sha256 is not fetched again for that sha256 for
# this long (at most UNMATCHED_KEPT remembered): every request with a sha256 no upstream has (a stale lock, or a
# client sending made-up ones) was a whole download from the upstreams, a way for any client to busy them.
UNMATCHED_SECONDS = 300.0
UNMATCHED_KEPT = 1024


class ChannelPaths:
    """The served channels, and where their files live in the cache (shared by every conda layer)."""

    def __init__(self, config: CondaConfig, store: CacheStore) -> None:
        self.store = store
        self._channels = {path: Channel(*path.split("/", 1)) for path in config.channels}

    def channel(self, root: str, name: str) -> Channel:
        channel = self._channels.get(f"{root}/{name}")
        if channel is None:
            raise UnknownChannel(
                f"channel {root}/{name} is not served here; served: {', '.join(self._channels)}", f"{root}/{name}"
            )
        return channel

    def channel_paths(self) -> list[str]:
        return list(self._channels)

    def path(self, channel: Channel, *parts: str) -> Path:
        return self.store.path_for("conda", channel.root, channel.name, *parts)


class CachedChannels:
    """Index files, packages and shards of the configured channels, over the upstreams."""

    def __init__(
        self,
        config: CondaConfig,
        paths: ChannelPaths,
        origin: UpstreamChannels,
        files: IndexFiles,
        passes: PassesAhead | None = None,
    ) -> None:
        self.index_ttl = config.index_ttl
        self.paths = paths
        self.origin = origin
        self.files = files
        self.fetcher = origin.fetcher
        self.parent_verdicts = ParentVerdicts(origin.fetcher.pool, config.index_ttl)
        # Whether each repodata download in flight may be streamed: told once per generation of its bytes (an
        # upstream taking over starts a new one), for all its clients (a herd).
        self._streamable: weakref.WeakKeyDictionary[Download, tuple[int, asyncio.Task[bool]]] = (
            weakref.WeakKeyDictionary()
        )
        self._contradicted: dict[Path, float] = {}  # package -> when every upstream's bytes failed its record
        # (package not listed, a client's sha256) -> when no upstream's bytes matched it
        self._unmatched: dict[tuple[Path, str], float] = {}
        # What the cached index lists for each cached package, to tell a package replaced upstream (a hit is one
        # only when it agrees).
        self.listed = ListedRecords(files.meta_for, passes)
        if passes is not None:  # each new repodata's pass made ahead of the first package request
            files.when_new_version(self._repodata_committed)

    def channel(self, root: str, name: str) -> Channel:
        return self.paths.channel(root, name)

    def channel_paths(self) -> list[str]:
        return self.paths.channel_paths()

    # --- index files ---

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        parts = [subdir, filename] if subdir else [filename]
        path = self.paths.path(channel, *parts)
        target = self.origin.target(channel, "/".join(parts))
        if filename == SHARD_INDEX:
            # Served only once rewritten to point at pkgcache, so never streamed while it downloads. Never served
            # stale while an upstream answers: an upstream that re-indexes deletes the shards its old index names
            # (docs/conda-clients.md, "Shards passed through").
            _, meta, state = await self.files.fetch_now(
                path, target, self.index_ttl, self._rewrite_shard_index, revalidate_first=True
            )
            return Lookup(state, path, meta)
        found = await self.files.get(path, target, self.index_ttl, transform=_transform_for(self.paths, filename))
        download = found.download
        if download is not None and filename in REPODATA_NAMES:
            found.instead_of_streaming = functools.partial(self._rewritten_instead, found, download, path)
        return found

    async def _rewritten_instead(self, found: Lookup, download: Download, path: Path) -> Lookup:
        """`found` pinned to the generation of the download's bytes when they may be streamed as they come (its
        info sends clients nowhere else); else, once it is whole and rewritten, the file. Told from the bytes of the
        upstream answering now: when another one takes over (the download starts again at its first byte, a new
        generation), from the new one's; a client streamed one generation is cut if another takes over."""
        while True:
            generation = download.generation
            try:
                streamable = await asyncio.shield(self._verdict_for(download, path, generation))
            except IntegrityError:
                if download.generation == generation:
                    raise
                continue  # the bytes it was told from were thrown away: the next upstream's tell again
            if download.generation == generation:
                break
        if streamable:
            return dataclasses.replace(found, instead_of_streaming=None, generation=generation)
        await download.wait_finished()
        rewritten = await self.files.meta_for(path)
        if rewritten is None:
            raise UpstreamNotFound(path.name)
        return Lookup(CacheState.MISS, path, rewritten)

    def _verdict_for(self, download: Download, path: Path, generation: int) -> asyncio.Task[bool]:
        """The task telling whether `download` may be streamed, from its bytes of `generation`: one for all its
        clients (a herd)."""
        known = self._streamable.get(download)
        if known is not None and known[0] == generation:
            return known[1]
        verdict = asyncio.get_running_loop().create_task(_streamable(download, path.name, path.parent.name))
        verdict.add_done_callback(lambda task: task.cancelled() or task.exception())  # the download's to tell
        self._streamable[download] = (generation, verdict)
        return verdict

    async def _rewrite_shard_index(self, path: Path, meta: FileMeta) -> None:
        temp = self.paths.store.new_temp_path(path.name)
        try:
            meta.extra["upstream_urls"] = await asyncio.to_thread(rewrite_shard_index, path, temp)
        except InvalidShardIndex as exc:
            await asyncio.to_thread(path.unlink, True)
            raise UpstreamError(f"unreadable shard index from {meta.upstream}: {exc}") from None

    async def whole_index_file(self, channel: Channel, subdir: str, filename: str) -> FileMeta:
        """An index file, waited for until it is whole on disk; its metadata."""
        path = self.paths.path(channel, subdir, filename)
        target = self.origin.target(channel, f"{subdir}/{filename}")
        transform = _transform_for(self.paths, filename)
        _, meta, _ = await self.files.fetch_now(path, target, self.index_ttl, transform=transform)
        return meta

    async def _repodata_committed(self, path: Path, meta: FileMeta) -> None:
        """A new version of an index file is in place: when it is a form packages are checked against (the
        upstream's repodata.json or .zst; not current_repodata, a .bz2, a .zst made here or a filtered view), the
        pass the first package request after it would wait for starts in the background (conda/passes_ahead.py)."""
        if path.name in SEARCHED_REPODATA and not meta.missing and not meta.extra.get("generated"):
            await self.listed.scan_ahead(path.parent)

    # --- packages ---

    async def package(self, channel: Channel, subdir: str, filename: str) -> Path | Download:
        path = self.paths.path(channel, subdir, filename)
        recorded = recorded_of(path)
        if recorded is not None and await self.listed.is_as_listed(path, recorded):
            # A policy judges a package its index does not list by its file name: the index is asked (its scan
            # waited for) only when that judgement would refuse it.
            refusal = unlisted_refusal()
            if refusal is not None and not await self.listed.lists(path):
                raise refusal
            await self._heed_parent(channel, subdir, filename, path)
            return path
        # A package there that its index no longer lists as it is (or not as its client expects it) was replaced
        # upstream under its name: fetched again and checked against its record, it replaces the old file by a
        # rename (readers of the old one finish). Its record is looked up again as after contradicted bytes.
        replace = recorded is not None
        recheck = self._contradicted.pop(path, None) is not None or client_disagrees_with(recorded)
        version = await self.listed.version_of(path.parent)
        record = await self._find_record(channel, subdir, filename, recheck=recheck)
        if not recheck and _contradicts(record, client_expectation()):
            # The client was served another index than the one cached here (newer, or older: a lock file): this
            # one is looked at again first (at most every MISSING_PACKAGE_RECHECK_SECONDS), as after contradicted
            # bytes. Should it still give another sha256, its record decides: the bytes are checked against it,
            # as the parent checks them against its own (a client's header decides only which cached file is a
            # hit), and a client with an older lock gets the file its channel lists now.
            record = await self._find_record(channel, subdir, filename, recheck=True)
        if record is not None:  # what its index lists: the first hit on the file then needs no scan
            await self.listed.note(path, version, record)
        if record is None:
            # Not listed: a package the channel took out of its index (under `removed`, as conda-forge marks one
            # broken) or dropped, still on its server. Nothing to check it against but the sha256 its client
            # expects (a lock file's: rattler sends it), so fetched only for a client that sends one.
            expected = client_expectation()
            refusal = unlisted_refusal()
            if replace and not client_disagrees_with(recorded):
                if refusal is not None:
                    raise refusal
                await self._heed_parent(channel, subdir, filename, path)
                return path  # no longer listed: served as it was checked when it came
            if expected is None:
                raise PackageNotInRepodata(await self._not_listed(channel, subdir, filename))
            if refusal is not None:
                raise refusal
            self._refuse_if_unmatched(path, expected, f"{channel.path}/{subdir}/{filename}")
            log.info(
                "%s/%s/%s is not listed: fetched, checked against its client's sha256", channel.path, subdir, filename
            )
            hashes: dict[str, str] = {"sha256": expected}
            size: int | None = None
        else:
            hashes, size = expected_of(record)
            if recorded is not None and agrees(recorded, hashes, size):
                await self._heed_parent(channel, subdir, filename, path)
                return path  # the record, looked up again, is the cached file's: a client's repodata is not ours
        # A parent pkgcache is asked as the client asked this one, whether or not an index here lists the package:
        # the parent's index may no longer list it (an index cached here is older), and it fetches it then only for
        # a client's sha256. Not when the record here gives another one: only bytes matching it are taken. (The
        # pool sends the header to a pkgcache only: mirrors refuse unusual headers, docs/upstreams.md.)
        expected = client_expectation()
        extra = {} if expected is None or _contradicts(record, expected) else {EXPECTED_SHA256_HEADER: expected}
        download = self.fetcher.download(
            path,
            await self._package_target(channel, subdir, filename),
            Expected(hashes=hashes, size=size, magic=magic_for(filename), max_size=max_package_size()),
            headers=(lambda upstream: extra) if extra else None,
            replace=replace,
            on_done=self._note_if_contradicted if record is not None else self._note_if_unmatched(hashes["sha256"]),
        )
        if download is None:
            return path
        if record is None:
            await self._checked_whole(download, f"{channel.path}/{subdir}/{filename}", hashes["sha256"])
        return download

    async def _heed_parent(self, channel: Channel, subdir: str, filename: str, path: Path) -> None:
        """A cached package served while the subdir's index came from a parent pkgcache that does not vouch for it
        now (it does not list it, or is past its time-to-live: `ListedRecords.parent_vouching`) is served only once
        that parent has been asked: UpstreamRefused when its policy refuses it (upstream/parent_verdicts.py)."""
        parent, vouched = await self.listed.parent_vouching(path, self.index_ttl)
        upstream = None if vouched else self.parent_verdicts.parent(parent)
        if upstream is None:
            return
        url = (await self._package_target(channel, subdir, filename))(upstream)
        if url is not None:
            await self.parent_verdicts.heed(f"{channel.path}/{subdir}/{filename}", upstream, url)

    @staticmethod
    async def _checked_whole(download: Download, what: str, expected: str) -> None:
        """Wait, at most UNLISTED_WHOLE_WAIT, until a package checked against its client's sha256 alone is whole
        and checked: its client then gets a clear error, not a 200 cut short, when no upstream has the file it
        expects (a lock older than the channel's file is a likely case). A package still coming then (a big one, a
        slow mirror) is streamed as any package is, and cut short should its bytes fail: its client must not wait
        for the last byte before the first one beyond its own read timeout."""
        try:
            await asyncio.wait_for(download.wait_finished(), UNLISTED_WHOLE_WAIT)
        except TimeoutError:
            return
        except BadBytesEverywhere as exc:
            raise UnlistedPackageMismatch(
                f"{what} is not listed by its channel, and no upstream has it with the sha256 the client expects"
                f" ({expected}): not served, nothing kept ({exc})"
            ) from None

    async def _not_listed(self, channel: Channel, subdir: str, filename: str) -> str:
        """Why a package not listed is not served, in words a user understands."""
        where = f"{channel.path}/{subdir}"
        repodata = await self._repodata_to_search(channel, subdir)
        # Known from the pass that finds the repodata's suspects (made ahead, or by the lookup that found no record).
        removed = await asyncio.to_thread(is_removed, repodata, filename)
        why = (
            "it was removed from the channel (its repodata names it under 'removed', as a channel marks a broken"
            " package)"
            if removed
            else "its repodata does not list it"
        )
        return (
            f"{where} has no package {filename}: {why}. pkgcache serves a package its channel does not list only to"
            f" a client that sends the sha256 it expects (an X-Expected-Sha256 header, as rattler and pixi do when"
            " installing from a lock file)"
        )

    async def _note_if_contradicted(self, download: Download) -> None:
        """Every upstream sent bytes failing the package's record: its record is looked up again next time."""
        if isinstance(download.error, BadBytesEverywhere):
            if len(self._contradicted) >= CONTRADICTED_PACKAGES_KEPT:
                self._contradicted.pop(next(iter(self._contradicted)))
            self._contradicted[download.final_path] = time.monotonic()

    def _note_if_unmatched(self, expected: str) -> Callable[[Download], Awaitable[None]]:
        """A package not listed, fetched for a client's sha256: remembered when no upstream had those bytes."""

        async def noted(download: Download) -> None:
            if isinstance(download.error, BadBytesEverywhere):
                if len(self._unmatched) >= UNMATCHED_KEPT:
                    self._unmatched.pop(next(iter(self._unmatched)))
                self._unmatched[(download.final_path, expected)] = time.monotonic()

        return noted

    def _refuse_if_unmatched(self, path: Path, expected: str, what: str) -> None:
        """UnlistedPackageMismatch, without asking any upstream, when the upstreams' bytes for the package not
        listed at `path` matched no `expected` sha256 within UNMATCHED_SECONDS."""
        when = self._unmatched.get((path, expected))
        if when is None:
            return
        age = time.monotonic() - when
        if age >= UNMATCHED_SECONDS:
            del self._unmatched[(path, expected)]
            return
        raise UnlistedPackageMismatch(
            f"{what} is not listed by its channel, and no upstream had it with the sha256 the client expects"
            f" ({expected}) {age:.0f} s ago: not asked again for {UNMATCHED_SECONDS - age:.0f} s"
        )

    async def _package_target(self, channel: Channel, subdir: str, filename: str) -> TargetFor:
        """Each upstream's URL for a package: beside its repodata, or where the subdir's cached repodata or shard
        index said its packages are (their `base_url`, which clients are not shown: conda/base_url.py)."""
        for name in (SHARD_INDEX, *PACKAGE_LISTS):
            meta = await self.files.meta_for(self.paths.path(channel, subdir, name))
            if meta is None or meta.missing:
                continue
            said = (
                meta.extra.get("base_url")
                if name != SHARD_INDEX
                else meta.extra.get("upstream_urls", {}).get("base_url")
            )
            if isinstance(said, str) and sends_elsewhere({"base_url": said}):
                fetched_url = meta.extra.get(FETCHED_URL)
                said_at = fetched_url if isinstance(fetched_url, str) else None
                return self.origin.package_target(channel, subdir, filename, said, meta.upstream, name, said_at)
        return self.origin.target(channel, f"{subdir}/{filename}")

    async def _find_record(
        self, channel: Channel, subdir: str, filename: str, *, recheck: bool = False
    ) -> dict[str, Any] | None:
        """The package's record: from the upstream's shards when they are cached (their index revalidated first when
        past its ttl), else from the repodata, which is refreshed (at most every MISSING_PACKAGE_RECHECK_SECONDS)
        when it lists no such package or, with `recheck`, when its record was contradicted by every upstream's bytes
        or by the client's sha256."""
        record = None if recheck else await self._record_from_shards(channel, subdir, filename)
        if record is not None:
            return record
        repodata = await self._repodata_to_search(channel, subdir)
        record = await _record_in(channel, subdir, repodata, filename)
        if record is None or recheck:
            meta = await self.files.meta_for(repodata)
            if meta is not None and meta.age() > MISSING_PACKAGE_RECHECK_SECONDS:
                target = self.origin.target(channel, f"{subdir}/{repodata.name}")
                await self.files.refresh_now(repodata, target, transform=_transform_for(self.paths, repodata.name))
                record = await _record_in(channel, subdir, repodata, filename)
        return record

    async def _repodata_to_search(self, channel: Channel, subdir: str) -> Path:
        """A whole local copy of the subdir's repodata, in whichever form is cached; fetched if none is."""
        for name in SEARCHED_REPODATA:
            path = self.paths.path(channel, subdir, name)
            meta = await self.files.meta_for(path)
            # A copy being revalidated is still whole (its next version replaces it by a rename) and is as new as
            # any here. A .zst made here (generated_zst) is not searched: it is remade only when a client asks for
            # it, so it may be older than the .json it was made from, and not list a package that one lists.
            usable = meta is not None and not meta.missing and not meta.extra.get("generated")
            # A sidecar alone is not a copy: the file may have been removed under the service (a purge, a person).
            if usable and path.is_file():
                return path
        # The upstream's .zst is the cheapest to fetch; an upstream without one has the .json.
        for name in ("repodata.json.zst", "repodata.json"):
            try:
                await self.whole_index_file(channel, subdir, name)
            except (UpstreamNotFound, BadBytesEverywhere):  # none, or none sound: the .json instead
                if name == "repodata.json":
                    raise
                continue
            return self.paths.path(channel, subdir, name)
        raise AssertionError("unreachable")

    async def _record_from_shards(self, channel: Channel, subdir: str, filename: str) -> dict[str, Any] | None:
        index = self.paths.path(channel, subdir, SHARD_INDEX)
        meta = await self.files.meta_for(index)
        if meta is None or meta.missing:
            return None
        ttl = max(self.index_ttl, MISSING_PACKAGE_RECHECK_SECONDS)
        if meta.age() >= ttl:
            # A shard index past its time-to-live may list a package its channel has dropped or replaced since (a
            # locked install asks for no index first): revalidated before its record is taken, as a client asking
            # for it would (one conditional request per subdir at most every `ttl`; kept when none answers).
            try:
                await self.files.fetch_now(
                    index,
                    self.origin.target(channel, f"{subdir}/{SHARD_INDEX}"),
                    ttl,
                    self._rewrite_shard_index,
                    revalidate_first=True,
                )
            except (UpstreamNotFound, UpstreamError, UpstreamsUnavailable) as exc:
                log.info("shard index of %s/%s not revalidated (%s)", channel.path, subdir, exc)
            meta = await self.files.meta_for(index)
            if meta is None or meta.missing:
                return None
        package_name = filename.rsplit("-", 2)[0]
        shard_name = await asyncio.to_thread(shard_for, index, package_name)
        if shard_name is None:
            return None
        try:
            found = await self.shard(channel, subdir, shard_name)
            if isinstance(found, Download):
                await found.wait_finished()
        except (UpstreamNotFound, UpstreamError, OSError) as exc:
            log.info("no shard for %s (%s); looking in repodata instead", filename, exc)
            return None
        shard_path = self.paths.path(channel, subdir, "shards", shard_name)
        return await asyncio.to_thread(record_in_shard, shard_path, filename)

    # --- shards ---

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        path = self.paths.path(channel, subdir, "shards", shard_name)
        if path.is_file():
            return path
        index_meta = await self.files.meta_for(self.paths.path(channel, subdir, SHARD_INDEX))
        shard_base = self.origin.shards_base(channel, subdir, index_meta)
        download = self.fetcher.download(
            path,
            lambda upstream: base + shard_name if (base := shard_base(upstream)) else None,
            Expected(
                hashes={"sha256": shard_name.removesuffix(".msgpack.zst")},
                magic=magic_for(shard_name),
                max_size=max_size_of_index(),  # named by its hash, but its size is the mirror's to say
            ),
        )
        return path if download is None else download

    def status(self) -> dict[str, object]:
        return {"channels": self.channel_paths(), "index_ttl": self.index_ttl, **self.parent_verdicts.status()}


# The repodata forms packages are checked against, in the order they are looked for (as ListedRecords does).
SEARCHED_REPODATA = ("repodata.json", "repodata.json.zst")
# The repodata forms that say where a subdir's packages are, looked at in this order (the forms clients fetch).
PACKAGE_LISTS = (
    "repodata.json.zst",
    "repodata.json",
    "repodata.json.bz2",
    "current_repodata.json",
    "current_repodata.json.zst",
    "current_repodata.json.bz2",
)


def _transform_for(paths: ChannelPaths, filename: str) -> Transform | None:
    """What each new version of an index file goes through before it is kept: repodata is made to send clients to
    pkgcache for packages (its `info.base_url` dropped, and noted in its sidecar)."""
    if filename not in REPODATA_NAMES:
        return None

    async def point_here(download: Download) -> None:
        temp = paths.store.new_temp_path(download.final_path.name)
        try:
            said = await in_storage_thread(rewrite_repodata, download.temp_path, temp, filename)
        except MalformedRepodata as exc:
            raise IntegrityError(f"its info cannot be read: {exc}") from None
        finally:
            await asyncio.to_thread(temp.unlink, True)
        if said is not None:
            download.notes["base_url"] = said
            log.info(
                "%s from %s said its packages are at %r: clients are sent to pkgcache", filename, download.source, said
            )

    return point_here


async def _record_in(channel: Channel, subdir: str, repodata: Path, filename: str) -> dict[str, Any] | None:
    """The package's one record in the cached repodata (records.py), or None; PackageRecordUnclear when the
    repodata gives it no single one."""
    try:
        return await asyncio.to_thread(find_record, repodata, filename)
    except AmbiguousRecord as exc:
        raise PackageRecordUnclear(
            f"{channel.path}/{subdir}/{filename} is not served: {exc}, so pkgcache cannot tell which one its clients"
            " check it against"
        ) from None


async def _streamable(download: Download, filename: str, subdir: str) -> bool:
    """Whether a repodata download may be streamed to clients as it comes: the start of its text shows an `info`
    that sends them nowhere else (else it is served once rewritten). Waits for as much of it as tells: `info` (the
    first member, as indexers write it), at most its first megabyte of text, or all of it. One whose `info` names
    another subdir is not streamed: its check refuses it, and its clients get the next upstream's."""
    data = bytearray()
    # Left as soon as it tells: closed then, so the download does not count this as a client still following.
    async with contextlib.aclosing(cast(AsyncGenerator[bytes, None], download.follow())) as chunks:
        async for chunk in chunks:
            data += chunk
            verdict = needs_rewrite(await _head(filename, bytes(data)), whole=False, subdir=subdir)
            if verdict is not None:
                return not verdict
    head = await _head(filename, bytes(data))
    return not needs_rewrite(head, whole=len(head) < HEAD_BYTES, subdir=subdir)


async def _head(filename: str, data: bytes) -> bytes:
    """`head_of_bytes`, decompressing off the event loop (bzip2 takes a fifth of a second for a megabyte)."""
    if filename.endswith(".json"):
        return head_of_bytes(filename, data)
    return await asyncio.to_thread(head_of_bytes, filename, data)


def _contradicts(record: dict[str, Any] | None, expected: str | None) -> bool:
    """Whether a package's record gives another sha256 than the one its client expects (either may be unknown)."""
    listed = None if record is None else record.get("sha256")
    return expected is not None and isinstance(listed, str) and listed.lower() != expected


def client_disagrees_with(recorded: Recorded | None) -> bool:
    return recorded is not None and client_disagrees(recorded)
