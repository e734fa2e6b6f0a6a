"""A layer: conda channels as a predicate lets clients see them (the supply-chain policy, the offline view).

Wrapping a `ChannelSource` (below `GeneratedShards`, above `GeneratedZst`), while its predicate filters anything:
- `repodata.json` and `current_repodata.json` (and their `.zst`, and `.bz2` when asked for) are made here without
  the refused records, from the cached repodata, streaming (repodata_filter.py), once per (repodata version,
  predicate fingerprint, the predicate's stamp for the subdir), under `<subdir>/filtered/<key>/`, the `.json`
  and the `.zst` in one pass; a conda-forge-sized input is filtered in a process of its own. They are made again
  when a date in them passes (a package becoming old enough), not sooner than the index time-to-live, the previous
  ones served meanwhile. In the offline view, a subdir with no cached repodata but the upstream's shard index (its
  clients use shards) is filtered from `<subdir>/from-shards/repodata.json`, the records of the shards held;
- the upstream's shard index (and JLAP patches, and repodata_from_packages.json) is not passed through: it lists
  what the filter refuses. `GeneratedShards` above then makes shards from the filtered repodata, which this layer
  gives it as the subdir's repodata. Shards of an upstream's index are refused (404) for the same reason;
- offline (`never_fetches`), an index file the cache does not hold is a 404 (its download fails at once);
- a package asked for directly is checked against the blocks by its name (at once, before any repodata is read),
  then against what the filtering refused: 403 with the reason, or 404 for what an offline cache does not hold.
  One its index does not list (no record, so no filtering judged it: a package a channel took out, fetched for a
  client that sends its sha256) is judged by its file name where the layer below finds no record, on a hit as on
  a miss (`unlisted_gate`, conda/package_records.py).
With a predicate that passes everything (no policy, online) every call goes through untouched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import filecmp
import functools
import hashlib
import logging
import multiprocessing
import shutil
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Protocol

from pkgcache.cache_state import CacheState
from pkgcache.conda.cached_channels import ChannelPaths
from pkgcache.conda.channels import SHARD_INDEX, Channel
from pkgcache.conda.package_records import unlisted_gate
from pkgcache.conda.repodata_filter import (
    FilterJob,
    FilterOutcome,
    filter_repodata,
    refusals_of,
    refusals_path,
    write_refusals,
)
from pkgcache.conda.shards import repodata_from_shards
from pkgcache.conda.source import ChannelLayer, ChannelSource, Lookup
from pkgcache.gate.first_seen import FILE_NAME as FIRST_SEEN_FILE
from pkgcache.gate.first_seen import FirstSeen, read_first_seen
from pkgcache.gate.refusals import Refused, offline_miss, refusal_error
from pkgcache.storage.downloads import Download
from pkgcache.storage.sidecars import FileMeta, Sidecars
from pkgcache.storage.store import CacheStore, in_storage_thread
from pkgcache.upstream.pool import UpstreamNotFound, UpstreamsUnavailable

log = logging.getLogger(__name__)

FILTERED = "filtered"
# The repodata the offline view is made from when only the upstream's shards are cached (see _from_shards).
FROM_SHARDS = "from-shards"
FILTERABLE = frozenset({"repodata.json", "current_repodata.json"})
# Index files that list what a filter refuses and cannot be filtered here: not served while a filter is in force.
HIDDEN = frozenset({SHARD_INDEX, "repodata.jlap", "repodata_from_packages.json"})
COMPRESSIONS = (".zst", ".bz2")
# A source this large (on disk) is filtered in a process of its own rather than a thread.
PROCESS_ABOVE_BYTES = 8 * 1024 * 1024
# Filtered repodata of a predicate no longer in force is removed after this long (clients may be mid-solve).
GRACE_SECONDS = 3600.0
MAX_REFUSAL_MAPS = 8


class RecordPredicate(Protocol):
    """What the layer filters by (conda/record_gate.GateRecords is one). Immutable."""

    fingerprint: str
    passes_everything: bool
    offline: bool  # the offline view: index files answered as such
    never_fetches: bool  # no upstream is ever asked: what the chain cannot find is a clean 404
    ages_matter: bool  # first sightings of records without a timestamp are needed
    judges_unlisted: bool  # a package its index does not list is to be judged (unlisted_refusal)

    def subdir_stamp(self, channel: Channel, subdir: str) -> str: ...

    def job(self, channel: Channel, subdir: str, first_seen: FirstSeen | None) -> FilterJob: ...

    def quick_refusal(self, channel: Channel, subdir: str, filename: str) -> tuple[int, str] | None: ...

    def unlisted_refusal(self, channel: Channel, subdir: str, filename: str) -> tuple[int, str] | None: ...

    def forget_held(self) -> None: ...


class _PassEverything:
    fingerprint = "-"
    passes_everything = True
    offline = False
    never_fetches = False
    ages_matter = False
    judges_unlisted = False

    def subdir_stamp(self, channel: Channel, subdir: str) -> str:
        return ""

    def job(self, channel: Channel, subdir: str, first_seen: FirstSeen | None) -> FilterJob:
        return FilterJob(channel.path, subdir, time.time())

    def quick_refusal(self, channel: Channel, subdir: str, filename: str) -> tuple[int, str] | None:
        return None

    def unlisted_refusal(self, channel: Channel, subdir: str, filename: str) -> tuple[int, str] | None:
        return None

    def forget_held(self) -> None:
        return None


PASS_EVERYTHING: RecordPredicate = _PassEverything()


class FilteredChannels(ChannelLayer):
    """Wraps a ChannelSource so that clients see and fetch only what `predicate` allows."""

    def __init__(
        self,
        inner: ChannelSource,
        paths: ChannelPaths,
        sidecars: Sidecars,
        predicate: RecordPredicate = PASS_EVERYTHING,
    ) -> None:
        super().__init__(inner)
        self.paths = paths
        self.sidecars = sidecars
        self.predicate = predicate
        self.counters: Counter[str] = Counter()
        self._making: dict[Path, asyncio.Task[FileMeta]] = {}
        self._from_shards_tasks: dict[Path, asyncio.Task[FileMeta]] = {}
        self._refusals: OrderedDict[Path, tuple[object, dict[str, tuple[int, str]]]] = OrderedDict()
        self._last: dict[str, dict[str, object]] = {}  # "<channel>/<subdir>/<file>" -> what the last filter did

    def use(self, predicate: RecordPredicate) -> None:
        self.predicate = predicate

    def forget_all(self) -> None:
        """Drop what is known in memory of the cache (an import replaced repodata and added packages): the refusals
        of past filterings and the packages held per subdir are read again when next needed."""
        self._refusals.clear()
        self.predicate.forget_held()

    # --- index files ---

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        predicate = self.predicate
        if predicate.passes_everything or subdir is None:
            return await self._inner_index(channel, subdir, filename, predicate)
        base, suffix = _split_compression(filename)
        if base in FILTERABLE:
            return await self._filtered(channel, subdir, base, suffix, predicate)
        if filename in HIDDEN or base in HIDDEN:
            raise UpstreamNotFound(f"{filename} is not passed through while a filter is in force")
        return await self._inner_index(channel, subdir, filename, predicate)

    async def _inner_index(
        self, channel: Channel, subdir: str | None, filename: str, predicate: RecordPredicate
    ) -> Lookup:
        try:
            found = await self.inner.index_file(channel, subdir, filename)
            if found.download is not None and predicate.never_fetches:
                # Offline, a miss comes back as a download the pool fails at once: its failure is the miss.
                await found.download.wait_started()
            return found
        except UpstreamsUnavailable:
            if predicate.never_fetches:
                raise offline_miss(f"{channel.path}/{subdir}/{filename}" if subdir else filename) from None
            raise

    async def _filtered(
        self, channel: Channel, subdir: str, base: str, suffix: str, predicate: RecordPredicate
    ) -> Lookup:
        source, source_meta, state = await self._source(channel, subdir, base, predicate)
        made = await self._made(channel, subdir, base, predicate, source, source_meta)
        json_path = made[0]
        path = json_path if not suffix else await self._compressed(json_path, suffix)
        meta = await self.sidecars.meta_for(path)
        return Lookup(CacheState.OFFLINE if predicate.offline else state, path, meta)

    async def _source(
        self, channel: Channel, subdir: str, base: str, predicate: RecordPredicate
    ) -> tuple[Path, FileMeta, CacheState]:
        """The unfiltered repodata, whole on disk, in a form that is cached (fetched if none is)."""
        names = (base, base + ".zst")
        for name in names:
            meta = await self.sidecars.meta_for(self.paths.path(channel, subdir, name))
            if meta is not None and not meta.missing:
                return await self._whole(channel, subdir, name, predicate)
        if base == "repodata.json" and predicate.offline:
            # Clients that use shards never made the cache fetch repodata; the view needs only what is held.
            from_shards = await self._from_shards(channel, subdir)
            if from_shards is not None:
                return from_shards
        return await self._whole(channel, subdir, base, predicate)

    async def _from_shards(self, channel: Channel, subdir: str) -> tuple[Path, FileMeta, CacheState] | None:
        """The subdir's repodata as the cached shards of its upstream's shard index tell it (made again when the
        index or the shards held change); None when no such index is cached."""
        index = self.paths.path(channel, subdir, SHARD_INDEX)
        index_meta = await self.sidecars.meta_for(index)
        if index_meta is None or index_meta.missing:
            return None
        shards_dir = self.paths.path(channel, subdir, "shards")
        wanted: list[object] = [index_meta.size, index_meta.mtime_ns, await asyncio.to_thread(_mtime_ns, shards_dir)]
        path = self.paths.path(channel, subdir, FROM_SHARDS, "repodata.json")
        meta = await self.sidecars.meta_for(path)
        if meta is None or meta.extra.get("source") != wanted:
            task = self._from_shards_tasks.get(path)
            if task is None:
                self.paths.store.require_writable()  # a reader hands the request to the writer instead
                work = self._write_from_shards(index, shards_dir, path, subdir, index_meta, wanted)
                task = asyncio.get_running_loop().create_task(work)
                self._from_shards_tasks[path] = task
                task.add_done_callback(lambda _: self._from_shards_tasks.pop(path, None))
            meta = await asyncio.shield(task)
        return path, meta, CacheState.STALE

    async def _write_from_shards(
        self, index: Path, shards_dir: Path, path: Path, subdir: str, index_meta: FileMeta, wanted: list[object]
    ) -> FileMeta:
        store = self.paths.store
        temp = store.new_temp_path(path.name)
        try:
            records = await in_storage_thread(repodata_from_shards, index, shards_dir, temp, subdir)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            # The same records keep the same file (and mtime): what is filtered from it is not made again. (Shards
            # made here land in the same folder and change its mtime without changing what this holds.)
            if not await asyncio.to_thread(_same_bytes, temp, path):
                await asyncio.to_thread(store.commit_file, temp, path)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        log.info("made %s from the %d records of the cached shards of %s", path, records, index)
        meta = FileMeta(fetched_at=index_meta.fetched_at, upstream=None, extra={"generated": True, "source": wanted})
        await self.sidecars.save(path, meta)
        return meta

    async def _whole(
        self, channel: Channel, subdir: str, name: str, predicate: RecordPredicate
    ) -> tuple[Path, FileMeta, CacheState]:
        found = await self._inner_index(channel, subdir, name, predicate)  # revalidated as its age requires
        meta = found.meta
        if found.download is not None:
            await found.download.wait_finished()
            meta = await self.sidecars.meta_for(found.path)
        if meta is None:
            raise UpstreamNotFound(name)
        return found.path, meta, found.state

    async def _made(
        self,
        channel: Channel,
        subdir: str,
        base: str,
        predicate: RecordPredicate,
        source: Path,
        source_meta: FileMeta,
    ) -> tuple[Path, FileMeta]:
        """The filtered file for the current predicate and source: kept, made now, or (when only its source or a
        date changed) the previous one while the next is made."""
        json_path = self.paths.path(channel, subdir, FILTERED, await self._key(channel, subdir, predicate), base)
        wanted = _source_key(source, source_meta)
        made = await self._made_meta(json_path)
        if made is not None and made.extra.get("source") == wanted and not _expired(made):
            return json_path, made
        if made is not None:
            self._start(channel, subdir, base, predicate, source, source_meta, json_path)
            return json_path, made
        made = await asyncio.shield(self._start(channel, subdir, base, predicate, source, source_meta, json_path))
        if made.extra.get("source") != wanted:  # an earlier run of another source finished first
            made = await asyncio.shield(self._start(channel, subdir, base, predicate, source, source_meta, json_path))
        return json_path, made

    def _start(
        self,
        channel: Channel,
        subdir: str,
        base: str,
        predicate: RecordPredicate,
        source: Path,
        source_meta: FileMeta,
        json_path: Path,
    ) -> asyncio.Task[FileMeta]:
        task = self._making.get(json_path)
        if task is None:
            self.paths.store.require_writable()  # a reader hands the request to the writer instead
            work = self._filter(channel, subdir, base, predicate, source, source_meta, json_path)
            task = asyncio.get_running_loop().create_task(work)
            self._making[json_path] = task
            task.add_done_callback(lambda _: self._making.pop(json_path, None))
            task.add_done_callback(_log_failure)
        return task

    async def _filter(
        self,
        channel: Channel,
        subdir: str,
        base: str,
        predicate: RecordPredicate,
        source: Path,
        source_meta: FileMeta,
        json_path: Path,
    ) -> FileMeta:
        store = self.paths.store
        first_seen_path = self.paths.path(channel, subdir, FIRST_SEEN_FILE)
        first_seen = await asyncio.to_thread(read_first_seen, store, first_seen_path) if predicate.ages_matter else None
        job = await asyncio.to_thread(predicate.job, channel, subdir, first_seen)
        json_temp, zst_temp = store.new_temp_path(base), store.new_temp_path(base + ".zst")
        try:
            outcome = await _run_filter(source, json_temp, zst_temp, job)
            folder = json_path.parent
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(write_refusals, store, refusals_path(json_path), outcome.refused)
            await asyncio.to_thread(store.commit_file, zst_temp, folder / f"{base}.zst")
            await asyncio.to_thread(store.commit_file, json_temp, json_path)
        finally:
            for temp in (json_temp, zst_temp):
                await asyncio.to_thread(temp.unlink, True)
        if outcome.new_first_seen:
            await asyncio.to_thread(_record_first_seen, store, first_seen_path, first_seen, outcome.new_first_seen)
        meta = self._meta_of(source, source_meta, outcome)
        await self.sidecars.save(json_path, meta)
        await self.sidecars.save(json_path.with_name(base + ".zst"), dataclasses.replace(meta, extra=dict(meta.extra)))
        self._refusals.pop(refusals_path(json_path), None)
        self.counters["filtered"] += 1
        self._last[f"{channel.path}/{subdir}/{base}"] = {
            "kept": outcome.kept,
            "refused": len(outcome.refused),
            "seconds": round(outcome.seconds, 2),
            "at": time.time(),
        }
        log.info(
            "filtered %s/%s/%s in %.1f s: %d records kept, %d refused",
            channel.path,
            subdir,
            base,
            outcome.seconds,
            outcome.kept,
            len(outcome.refused),
        )
        await asyncio.to_thread(_prune, json_path.parent.parent, json_path.parent)
        return meta

    def _meta_of(self, source: Path, source_meta: FileMeta, outcome: FilterOutcome) -> FileMeta:
        # Fresh as long as its source: clients revalidate both together.
        remake_at = time.time() + self.index_ttl
        if outcome.valid_until is not None:
            remake_at = max(remake_at, outcome.valid_until)
        return FileMeta(
            fetched_at=source_meta.fetched_at,
            upstream=source_meta.upstream,
            extra={
                "generated": True,
                "source": _source_key(source, source_meta),
                "remake_at": remake_at if outcome.valid_until is not None else None,
                "kept": outcome.kept,
                "refused": len(outcome.refused),
            },
        )

    async def _compressed(self, json_path: Path, suffix: str) -> Path:
        """The .zst (made with the .json) or the .bz2 (made from it on first demand, in a thread)."""
        path = json_path.with_name(json_path.name + suffix)
        if suffix == ".zst":
            return path
        json_meta = await self.sidecars.meta_for(json_path)
        meta = await self.sidecars.meta_for(path)
        wanted = None if json_meta is None else [json_meta.size, json_meta.mtime_ns]
        if meta is not None and meta.extra.get("from") == wanted:
            return path
        task = self._making.get(path)
        if task is None:
            self.paths.store.require_writable()
            task = asyncio.get_running_loop().create_task(self._bz2(json_path, path, json_meta, wanted))
            self._making[path] = task
            task.add_done_callback(lambda _: self._making.pop(path, None))
        await asyncio.shield(task)
        return path

    async def _bz2(self, json_path: Path, path: Path, json_meta: FileMeta | None, wanted: object) -> FileMeta:
        store = self.paths.store
        temp = store.new_temp_path(path.name)
        try:
            await in_storage_thread(_bz2_file, json_path, temp)
            await asyncio.to_thread(store.commit_file, temp, path)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        meta = FileMeta(
            fetched_at=json_meta.fetched_at if json_meta else time.time(),
            upstream=json_meta.upstream if json_meta else None,
            extra={"generated": True, "from": wanted},
        )
        await self.sidecars.save(path, meta)
        return meta

    # --- packages and shards ---

    async def package(self, channel: Channel, subdir: str, filename: str) -> Path | Download:
        predicate = self.predicate
        if predicate.passes_everything:
            return await self.inner.package(channel, subdir, filename)
        refusal = predicate.quick_refusal(channel, subdir, filename)  # a look at the name, and a stat offline
        if refusal is None:
            refused = None
            if self.paths.path(channel, subdir, filename).is_file():  # cached: judged as the last filtering did
                refused = await self._kept_refusals(channel, subdir, predicate)
            if refused is None:
                refused = await self._refusals_of(channel, subdir, predicate)
            refusal = refused.get(filename)
        if refusal is not None:
            self.counters[f"refused_{refusal[0]}"] += 1
            raise refusal_error(*refusal)
        # The filtering judged only the records its repodata lists: one with no record is judged where the layer
        # below finds none (on a hit as on a miss), before it is served or fetched.
        judge = functools.partial(_unlisted_refusal, predicate, channel, subdir, filename)
        try:
            with unlisted_gate(judge if predicate.judges_unlisted else None):
                return await self.inner.package(channel, subdir, filename)
        except Refused:
            self.counters["refused_403"] += 1
            raise
        except UpstreamsUnavailable:
            if predicate.never_fetches:
                raise offline_miss(f"{channel.path}/{subdir}/{filename}") from None
            raise

    async def _key(self, channel: Channel, subdir: str, predicate: RecordPredicate) -> str:
        if not predicate.offline:
            return _view_key(predicate.fingerprint, "")
        return _view_key(predicate.fingerprint, await asyncio.to_thread(predicate.subdir_stamp, channel, subdir))

    async def _made_meta(self, json_path: Path) -> FileMeta | None:
        """The sidecar of a filtered repodata whose view is whole: the .json, its .zst and its refusals, made in
        one pass. None otherwise: a view in part (a file lost, or removed by `pkgcache verify`) counts as not made,
        and is made again whole, with the rules; its refusals missing must never read as "nothing refused"."""
        made = await self.sidecars.meta_for(json_path)
        if made is None or not await asyncio.to_thread(_all_there, made_together(json_path)):
            return None
        return made

    async def _kept_refusals(
        self, channel: Channel, subdir: str, predicate: RecordPredicate
    ) -> dict[str, tuple[int, str]] | None:
        """The refusals of the last filtering under this predicate, whatever the repodata's freshness, for a cached
        package (what the predicate says of it does not depend on that): a worker that only reads then does not
        hand the package over to revalidate the repodata. None when there are none yet, or they cannot be read."""
        json_path = self.paths.path(
            channel, subdir, FILTERED, await self._key(channel, subdir, predicate), "repodata.json"
        )
        made = await self._made_meta(json_path)
        if made is None:
            return None
        return await self._load_refusals(refusals_path(json_path), made)

    async def _load_refusals(self, path: Path, made: FileMeta) -> dict[str, tuple[int, str]] | None:
        """The refusals at `path`, of the filtering `made` says; None when they cannot be read (not remembered)."""
        known = self._refusals.get(path)
        stamp = (made.size, made.mtime_ns)
        if known is not None and known[0] == stamp:
            self._refusals.move_to_end(path)
            return known[1]
        refused = await asyncio.to_thread(refusals_of, path)
        if refused is None:
            return None
        self._refusals[path] = (stamp, refused)
        while len(self._refusals) > MAX_REFUSAL_MAPS:
            self._refusals.popitem(last=False)
        return refused

    async def _refusals_of(
        self, channel: Channel, subdir: str, predicate: RecordPredicate
    ) -> dict[str, tuple[int, str]]:
        """What the filtering of the subdir's repodata refused (the filtered repodata is made if need be, and made
        again when its refusals cannot be read: they are never taken for "nothing refused")."""
        base = "repodata.json"
        source, source_meta, _ = await self._source(channel, subdir, base, predicate)
        json_path, made = await self._made(channel, subdir, base, predicate, source, source_meta)
        refused = await self._load_refusals(refusals_path(json_path), made)
        if refused is None:
            log.warning("the refusals beside %s cannot be read: filtering the repodata again", json_path)
            task = self._start(channel, subdir, base, predicate, source, source_meta, json_path)
            made = await asyncio.shield(task)
            refused = await self._load_refusals(refusals_path(json_path), made)
        if refused is None:
            raise RuntimeError(f"the refusals beside {json_path} cannot be read, even just made again")
        return refused

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        if not self.predicate.passes_everything:
            # Shards made here from the filtered repodata are on disk (GeneratedShards serves them); any other
            # would come from an upstream's index, which lists what the filter refuses.
            raise UpstreamNotFound(f"shard {shard_name} is not made from the filtered repodata")
        return await self.inner.shard(channel, subdir, shard_name)

    def status(self) -> dict[str, object]:
        predicate = self.predicate
        return {
            **self.inner.status(),
            "filter": {
                "fingerprint": predicate.fingerprint,
                "passes_everything": predicate.passes_everything,
                "offline_view": predicate.offline,
                "last_made": dict(self._last),
                **self.counters,
            },
        }


def _unlisted_refusal(predicate: RecordPredicate, channel: Channel, subdir: str, filename: str) -> Exception | None:
    """The refusal of a package its index does not list, by its file name (the judge of `unlisted_gate`)."""
    refusal = predicate.unlisted_refusal(channel, subdir, filename)
    return None if refusal is None else refusal_error(*refusal)


def made_together(json_path: Path) -> tuple[Path, ...]:
    """The files of a filtered view that one filtering makes: the .json, its .zst and its refusals."""
    return json_path, json_path.with_name(json_path.name + ".zst"), refusals_path(json_path)


def view_files(json_path: Path) -> tuple[Path, ...]:
    """Every file of a filtered view (its sidecars aside): what one filtering makes, and the .bz2 made from the
    .json when first asked for. A view is whole or not there: `pkgcache verify` removes all of them together."""
    return (*made_together(json_path), json_path.with_name(json_path.name + ".bz2"))


def _all_there(paths: tuple[Path, ...]) -> bool:
    return all(path.is_file() for path in paths)


def _split_compression(filename: str) -> tuple[str, str]:
    for suffix in COMPRESSIONS:
        if filename.endswith(suffix):
            return filename.removesuffix(suffix), suffix
    return filename, ""


def _view_key(fingerprint: str, stamp: str) -> str:
    return hashlib.sha256(f"{fingerprint}/{stamp}".encode()).hexdigest()[:16]


def _source_key(path: Path, meta: FileMeta) -> list[object]:
    """What a filtered file is made from: the repodata file's name and the version of it (size and mtime)."""
    return [path.name, meta.size, meta.mtime_ns]


def _expired(meta: FileMeta) -> bool:
    remake_at = meta.extra.get("remake_at")
    return isinstance(remake_at, int | float) and time.time() >= remake_at


def _same_bytes(one: Path, other: Path) -> bool:
    try:
        return filecmp.cmp(one, other, shallow=False)
    except OSError:
        return False


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _log_failure(task: asyncio.Task[FileMeta]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("filtering repodata failed: %s", task.exception())


def _record_first_seen(store: CacheStore, path: Path, known: FirstSeen | None, new: dict[str, float]) -> None:
    record = known or FirstSeen(since=min(new.values()))
    record.files.update(new)
    store.write_json_atomic(path, record.to_json())


def _prune(filtered_root: Path, current: Path) -> None:
    """Remove the filtered repodata of predicates not in force for the grace period (blocking)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for folder in filtered_root.iterdir():
            if folder != current and folder.is_dir() and now - folder.stat().st_mtime > GRACE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


def _bz2_file(source: Path, destination: Path) -> None:
    import bz2

    with source.open("rb") as reader, bz2.open(destination, "wb", compresslevel=9) as writer:
        shutil.copyfileobj(reader, writer, 1024 * 1024)


async def _run_filter(source: Path, json_out: Path, zst_out: Path, job: FilterJob) -> FilterOutcome:
    """Filter in a thread, or for a large source in a process of its own (spawned: this one has threads)."""
    if source.stat().st_size * (8 if source.name.endswith(".zst") else 1) < PROCESS_ABOVE_BYTES:
        return await in_storage_thread(filter_repodata, source, json_out, zst_out, job)
    context = multiprocessing.get_context("spawn")
    worker = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
    try:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(worker, filter_repodata, source, json_out, zst_out, job)
    finally:
        worker.shutdown(wait=False)  # the process ends on its own once idle; never block the event loop on it
