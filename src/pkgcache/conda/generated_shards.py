"""A layer: CEP-16 sharded repodata made here for every channel whose upstream has none.

pixi and rattler (and conda with sharded repodata on) ask for `repodata_shards.msgpack.zst` and then only the
shards of the packages a solve touches, instead of the whole repodata.json (tens of MB compressed for
conda-forge). No domestic mirror serves shards, nor does anaconda.com, so this layer makes them from the cached
repodata (conda/shard_builder.py: streaming, bounded memory, content-addressed shards):
- an upstream that has real shards is passed through by the layer below, as before; when its index is not cached
  and no upstream answers, shards are made here from the cached repodata rather than answered 5xx;
- otherwise the first request builds them synchronously (single flight) from the repodata, fetching it first if
  it is not cached: clients remember a 404 on the shard index for days or for good (docs/conda-clients.md), so a
  subdir that exists never answers one;
- each later request looks whether the repodata changed (its own revalidation, with the index time-to-live) and,
  if so, serves the current shards while new ones are built in the background;
- builds run in a process of their own (a fresh interpreter loading only the builder): pure Python that holds the
  GIL for seconds would stall the event loop; but a small repodata (private channels, a noarch of a few
  packages) is made into shards here, in a thread, in milliseconds, rather than in a second or more
  of starting an interpreter and waiting for a big subdir's build to end;
- the index is replaced atomically once its shards exist; shards it no longer references are kept for a grace
  period (clients in the middle of a solve hold the previous index), then removed.
The made index lives at `<subdir>/made-here/repodata_shards.msgpack.zst` (beside the upstream's, which the
layer below keeps), its shards among the others in `<subdir>/shards/` (content-addressed: no clash).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from pkgcache.cache_state import CacheState, revalidation_asked
from pkgcache.conda.cached_channels import ChannelPaths
from pkgcache.conda.channels import SHARD_INDEX, Channel
from pkgcache.conda.passes_ahead import PassesAhead
from pkgcache.conda.repodata_stream import json_within
from pkgcache.conda.shard_builder import (
    MalformedRepodata,
    ShardBuildResult,
    build_shards,
    iter_shard_index,
    unreferenced_shards,
)
from pkgcache.conda.shard_packs import (
    PACKS_DIR_NAME,
    SHARD_SUFFIX,
    TABLE_SUFFIX,
    discard_build,
    explode_packs,
    extract_shard,
    new_build_id,
)
from pkgcache.conda.shards import LOCAL_BASE_URL, LOCAL_SHARDS_BASE_URL
from pkgcache.conda.source import ChannelLayer, ChannelSource, Lookup
from pkgcache.header_numbers import ascii_number
from pkgcache.storage.downloads import Download
from pkgcache.storage.sidecars import FileMeta, Sidecars
from pkgcache.storage.store import in_storage_thread, storage_error
from pkgcache.upstream.pool import BadBytesEverywhere, UpstreamNotFound, UpstreamsUnavailable

log = logging.getLogger(__name__)

MADE_HERE = "made-here"
# The forms of repodata shards are made from: an upstream's .zst first (about a quarter of the bytes to fetch, and
# what most conda clients fetch anyway), else the .json. A .zst made here (generated_zst) is never used: the .json
# it was made from is read instead.
SOURCES = ("repodata.json.zst", "repodata.json")
# Shards dropped from the index stay this long: clients fetch shards within a solve, and indexes live at most the
# index time-to-live in their caches.
GRACE_SECONDS = 3600.0
# How long a builder told to stop may take to clean up before it is killed.
STOP_GRACE = 5.0
# Builder processes at work at once. A build takes about 50 MB whatever the repodata's size (the builder and its
# child), beside a service of about 90: one fits the 150 MB budget, two do not (a first solve asks for a
# platform subdir and noarch together; two 110 MB subdirs at once peaked at 190 MB, in turns at 147-152, the
# first's shard files still being written beside the second build). The
# price: that first solve waits longer (both indexes in 3.2-3.6 s in turns, 2.3-2.6 s at once, on two cores);
# a build waiting for its turn goes on downloading meanwhile.
BUILDERS_AT_ONCE = 1
# A repodata of at most this much JSON is made into shards in this process, in a thread: about 30 ms for 2 MB
# (4,000 records), against 0.1 s for a builder's interpreter to start, and its turn after a big subdir's build.
# The GIL is the event loop's again every few milliseconds meanwhile.
IN_PROCESS_MAX_BYTES = 2 << 20
# A builder's interpreter is started as soon as a subdir's first shard index request comes, while the upstream is
# asked for its own index and the repodata's download begins, rather than once the build may start: starting it
# and importing the builder took about 0.2 s of the first solve's 1.8 on a busy machine (table 9's server log).
# It waits for its arguments on its standard input. One at most waits at a time (one builds at a time, and a
# waiting interpreter holds about 15 MB); one that no build took by the end of its request (the upstream had
# shards, the subdir was small, a build from another request took the turn) is told to end.
SPARE_STOP_SECONDS = 5.0


class GeneratedShards(ChannelLayer):
    """Wraps a ChannelSource; answers the shard index (and shards) of subdirs whose upstream has none."""

    def __init__(
        self, inner: ChannelSource, paths: ChannelPaths, sidecars: Sidecars, passes: PassesAhead | None = None
    ) -> None:
        super().__init__(inner)
        self.paths = paths
        self.sidecars = sidecars
        # The repodata passes made ahead (conda/passes_ahead.py) wait while a builder's interpreter is alive: the
        # memory budget has room for one or the other beside the service, not both.
        self.passes = passes
        self._building: dict[Path, asyncio.Task[FileMeta]] = {}
        self._made: dict[str, dict[str, object]] = {}  # "<channel>/<subdir>" -> what the last build made
        self._passed_through: set[str] = set()
        self._builders = asyncio.Semaphore(BUILDERS_AT_ONCE)  # held until a builder reports, not while it waits
        self._spare = SpareBuilder()

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        path = self.paths.path(channel, subdir, "shards", shard_name)
        if path.is_file():  # made here, or fetched from an upstream's shards before
            return path
        packs = self.paths.path(channel, subdir, PACKS_DIR_NAME)
        if packs.is_dir():  # made by a build whose shards do not all have their files yet
            self.paths.store.require_writable()  # a reader hands the request to the writer instead
            extracted = await asyncio.to_thread(extract_shard, packs, path.parent, shard_name)
            if extracted is not None:
                if packs not in _exploding:  # left by a builder that was stopped (the service was): finish its work
                    _keep_exploding(packs, asyncio.get_running_loop().create_task(_explode(packs, path.parent)))
                return extracted
        made_again = await self._made_again(channel, subdir, shard_name)
        if made_again is not None:
            return made_again
        return await self.inner.shard(channel, subdir, shard_name)

    async def _made_again(self, channel: Channel, subdir: str, shard_name: str) -> Path | None:
        """A shard the index made here lists, with no file and in no pack (lost to a disk fault, removed by
        `pkgcache verify`, or in a pack a power cut tore): made again, with the subdir's other shards, from the
        cached repodata. Shards are named by their bytes, so the same repodata gives the same shard, and the client
        holding that index gets it instead of a 404 (no upstream has it). None when the index made here does not
        list it (asked for by name only: nothing is built for that), or when the repodata changed meanwhile and
        the shard is no longer made: the new index then no longer lists it either, so this is tried once."""
        index = self.paths.path(channel, subdir, MADE_HERE, SHARD_INDEX)
        if not await asyncio.to_thread(_index_lists, index, shard_name):
            return None
        self.paths.store.require_writable()  # a reader hands the request to the writer instead
        source, source_meta = await self._whole(await self._repodata(channel, subdir))
        log.warning("%s/%s: shard %s is missing; making the shards again", channel.path, subdir, shard_name)
        await self._start_build(channel, subdir, index, Lookup(CacheState.HIT, source, source_meta))
        path = self.paths.path(channel, subdir, "shards", shard_name)
        if path.is_file():
            return path
        return await asyncio.to_thread(
            extract_shard, self.paths.path(channel, subdir, PACKS_DIR_NAME), path.parent, shard_name
        )

    def builds_made(self) -> dict[str, dict[str, object]]:
        """What the last build of each subdir made here: "<channel>/<subdir>" -> its summary."""
        return dict(self._made)

    def carry_on(self, made: dict[str, dict[str, object]]) -> None:
        """Know the builds a previous process made (a restarted primary), where this one has made none yet."""
        for where, build in made.items():
            self._made.setdefault(where, build)

    def status(self) -> dict[str, object]:
        return {
            **self.inner.status(),
            "shards": {
                "made_here": dict(self._made),
                "passed_through": sorted(self._passed_through),
            },
        }

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        if filename != SHARD_INDEX or subdir is None:
            return await self.inner.index_file(channel, subdir, filename)
        spare = self._spare.start() if self._first_of(channel, subdir) else None
        release = self.passes.hold() if spare is not None and self.passes is not None else None
        try:
            return await self._shard_index(channel, subdir, filename)
        finally:
            if spare is not None:
                self._spare.retire(spare)
            if release is not None:
                release()

    def _first_of(self, channel: Channel, subdir: str) -> bool:
        """Whether this request may be the subdir's first build here (no index made here yet, none being made, no
        upstream index passed through), in the process that builds."""
        index = self.paths.path(channel, subdir, MADE_HERE, SHARD_INDEX)
        return (
            self.paths.store.writable
            and index not in self._building
            and f"{channel.path}/{subdir}" not in self._passed_through
            and not index.is_file()
        )

    async def _shard_index(self, channel: Channel, subdir: str, filename: str) -> Lookup:
        try:
            found = await self.inner.index_file(channel, subdir, filename)
        except UpstreamNotFound:
            return await self._made_here(channel, subdir)
        except BadBytesEverywhere:
            # No upstream's index is sound (an error page, or one past the bounds an index is read in:
            # conda/upstream_shard_index.py). It is now remembered as not there (conda/index_files.py), as after a
            # 404, and made here as after a 404: the next request would be, and this one need not be a 5xx.
            return await self._made_here(channel, subdir)
        except UpstreamsUnavailable:
            # Never a 5xx for the shard index when shards can be made from a cached repodata: rattler has no
            # fallback of its own (docs/conda-clients.md). The upstream's index is asked for again next time.
            if not await self._repodata_cached(channel, subdir):
                raise
            return await self._made_here(channel, subdir)
        self._passed_through.add(f"{channel.path}/{subdir}")
        return found

    async def _made_here(self, channel: Channel, subdir: str) -> Lookup:
        try:
            return await self._made_here_once(channel, subdir)
        except BadBytesEverywhere:
            # No upstream's .zst is sound, found as it came: it is now remembered as not there
            # (conda/index_files.py), so the second try takes the .json.
            return await self._made_here_once(channel, subdir)

    async def _made_here_once(self, channel: Channel, subdir: str) -> Lookup:
        found = await self._repodata(channel, subdir)
        made = await self._made_from(channel, subdir, found)
        if found.state in (CacheState.OFFLINE, CacheState.STALE):
            # Made from the offline view, or from a stale repodata: the index says so, as the repodata would (a
            # child pkgcache below keeps it only as expired: node_identity.py).
            return dataclasses.replace(made, state=found.state)
        return made

    async def _made_from(self, channel: Channel, subdir: str, found: Lookup) -> Lookup:
        index = self.paths.path(channel, subdir, MADE_HERE, SHARD_INDEX)
        made = await self.sidecars.meta_for(index)
        if made is None and found.download is not None:
            # The subdir's first shards, and its repodata on its way: made from its bytes as they come.
            return Lookup(CacheState.MISS, index, await self._start_build(channel, subdir, index, found))
        source, source_meta = await self._whole(found)
        wanted = _source_key(source, source_meta)
        if made is not None and made.extra.get("source") == wanted:
            return Lookup(CacheState.HIT, index, made)
        found = Lookup(CacheState.HIT, source, source_meta)
        previous = made is not None and made.extra.get("generated") and _same_file(made.extra.get("source"), wanted)
        if previous and not revalidation_asked():
            # The repodata changed: the shards of the previous one are served while the new ones are built.
            self._start_build(channel, subdir, index, found)
            return Lookup(CacheState.STALE, index, made)
        # None yet, made from another file (a filter came into force or changed: conda/filtered_channels.py), whose
        # listing must not be served, or current ones asked for (a seed): these are built now.
        made = await self._start_build(channel, subdir, index, found)
        if made.extra.get("source") != wanted:  # an earlier build of another file finished first
            made = await self._start_build(channel, subdir, index, found)
        return Lookup(CacheState.MISS, index, made)

    async def _repodata(self, channel: Channel, subdir: str) -> Lookup:
        """The subdir's repodata in the form that is cached (fetched if none is): whole on disk, or on its way."""
        for name in SOURCES:
            meta = await self.sidecars.meta_for(self.paths.path(channel, subdir, name))
            if meta is not None and not meta.missing and not meta.extra.get("generated"):
                return await self._lookup(channel, subdir, name)
        found = await self._lookup(channel, subdir, SOURCES[0])
        if found.download is None and found.meta is not None and found.meta.extra.get("generated"):
            return await self._lookup(channel, subdir, SOURCES[1])  # the upstream has no .zst: made from this
        return found

    async def _repodata_cached(self, channel: Channel, subdir: str) -> bool:
        for name in SOURCES:
            meta = await self.sidecars.meta_for(self.paths.path(channel, subdir, name))
            if meta is not None and not meta.missing:
                return True
        return False

    async def _whole(self, found: Lookup) -> tuple[Path, FileMeta]:
        """The file of a lookup once it is whole on disk, and its metadata (raises the download's error)."""
        meta = found.meta
        if found.download is not None:
            await found.download.wait_finished()
            meta = await self.sidecars.meta_for(found.path)
        if meta is None:
            raise UpstreamNotFound(found.path.name)
        return found.path, meta

    async def _lookup(self, channel: Channel, subdir: str, name: str) -> Lookup:
        found = await self.inner.index_file(channel, subdir, name)  # revalidated as its age requires
        if found.download is None and found.meta is None:
            raise UpstreamNotFound(name)
        return found

    def _start_build(self, channel: Channel, subdir: str, index: Path, found: Lookup) -> asyncio.Task[FileMeta]:
        task = self._building.get(index)
        if task is None:
            self.paths.store.require_writable()  # a reader hands the request to the writer instead
            task = asyncio.get_running_loop().create_task(self._build(channel, subdir, index, found))
            self._building[index] = task
            task.add_done_callback(lambda _: self._building.pop(index, None))
            task.add_done_callback(_log_failure)
            if self.passes is not None:
                task.add_done_callback(_released_with_builder(self.passes.hold(), self.paths.path(channel, subdir)))
        return task

    async def _build(self, channel: Channel, subdir: str, index: Path, found: Lookup) -> FileMeta:
        store = self.paths.store
        shards_dir = self.paths.path(channel, subdir, "shards")
        previous = index if index.is_file() else None
        arguments: dict[str, object] = {
            "repodata_path": found.path,
            "shards_dir": shards_dir,
            "packs_dir": self.paths.path(channel, subdir, PACKS_DIR_NAME),
            "base_url": LOCAL_BASE_URL,
            "shards_base_url": LOCAL_SHARDS_BASE_URL,
            "subdir": subdir,
            "previous_index": previous,
            "index_dir": store.tmp_dir,
            "build_id": new_build_id(),
        }
        try:
            result = await self._build_here_if_small(found, arguments)
            built_here, streamed = result is not None, False
            if result is None:
                async with self._builders:
                    result = await _build_while_downloading(found, arguments, self._spare)
                streamed = result is not None
            source, source_meta = await self._whole(found)
            if result is None:  # not streamed, or the download changed course midway: from the file, whole
                async with self._builders:
                    result = await _build_in_own_process(arguments, spare=self._spare)
            await asyncio.to_thread(store.commit_file, result.index_temp_path, index)
        except BaseException as exc:
            # The builder removes its packs when it fails, but not when it is killed (or its index cannot be put
            # in place): no index lists them then, and each retry on a full disk would leave more.
            await asyncio.to_thread(discard_build, Path(str(arguments["packs_dir"])), str(arguments["build_id"]))
            if isinstance(exc, MalformedRepodata):
                log.warning("no shards for %s/%s: its repodata cannot be read (%s)", channel.path, subdir, exc)
                raise UpstreamNotFound(f"{channel.path}/{subdir} has no readable repodata to make shards of") from None
            raise
        meta = FileMeta(fetched_at=time.time(), extra={"generated": True, "source": _source_key(source, source_meta)})
        meta.extra["build"] = _build_summary(result)
        await self.sidecars.save(index, meta)
        self._made[f"{channel.path}/{subdir}"] = meta.extra["build"]
        log.info(
            "made %d shards for %s/%s in %.1f s (%d new%s%s%s%s)",
            result.shards,
            channel.path,
            subdir,
            result.seconds,
            result.shards_written,
            ", from the download" if streamed else "",
            ", while reading" if result.made_while_reading else ", from buckets",
            ", in the service's own process" if built_here else "",
            f"; {result.records_skipped} records without a name or not objects left out"
            if result.records_skipped
            else "",
        )
        if built_here and result.pack_tables:  # no builder process to give its new shards their files
            packs = Path(str(arguments["packs_dir"]))
            _keep_exploding(packs, asyncio.get_running_loop().create_task(_explode_all(packs, shards_dir)))
        await asyncio.to_thread(_prune, shards_dir, index)
        return meta

    async def _build_here_if_small(self, found: Lookup, arguments: dict[str, object]) -> ShardBuildResult | None:
        """The build of a repodata said to be small, made here once it is whole; None when it is not small (it
        turned out bigger than its upstream said: the builder process then reads the file)."""
        if not _said_to_be_small(found):
            return None
        await self._whole(found)  # small: moments
        return await in_storage_thread(_build_small_here, arguments)


def _released_with_builder(release: Callable[[], None], folder: Path) -> Callable[[asyncio.Task[FileMeta]], None]:
    """Once a build's task has ended, `release` when its builder has too: a builder goes on giving the new shards
    their files after it reports (a task in `_exploding`), and holds its memory until it ends."""

    def ended(_: asyncio.Task[FileMeta]) -> None:
        finishing = _exploding.get(folder / PACKS_DIR_NAME)
        if finishing is None or finishing.done():
            release()
        else:
            finishing.add_done_callback(lambda _: release())

    return ended


def _said_to_be_small(found: Lookup) -> bool:
    """Whether the repodata's file (or the upstream's answer on its way) is small enough to be built here, going by
    its size on disk or its Content-Length (checked against the JSON itself before building)."""
    if found.download is None:
        size = found.meta.size if found.meta is not None else None
        return size is not None and size <= IN_PROCESS_MAX_BYTES
    declared = ascii_number(found.download.headers.get("Content-Length", ""))
    return declared is not None and declared <= IN_PROCESS_MAX_BYTES


def _build_small_here(arguments: dict[str, object]) -> ShardBuildResult | None:
    """Build in this thread, forking nothing (blocking); None when the repodata decompresses to more than
    IN_PROCESS_MAX_BYTES. Its new shards are in a pack, given their files after the index is in place."""
    repodata_path = Path(str(arguments["repodata_path"]))
    if not json_within(repodata_path, IN_PROCESS_MAX_BYTES):
        return None
    return build_shards(**arguments, processes=1)  # type: ignore[arg-type]


def _index_lists(index: Path, shard_name: str) -> bool:
    """Whether the shard index at `index` (if any, and readable) references `shard_name` (blocking)."""
    try:
        digest = bytes.fromhex(shard_name.removesuffix(SHARD_SUFFIX))
        return any(listed == digest for _, listed in iter_shard_index(index))
    except (ValueError, FileNotFoundError, MalformedRepodata):
        return False


def _log_failure(task: asyncio.Task[FileMeta]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("making shards failed; the previous ones stay served: %s", task.exception())


def _source_key(path: Path, meta: FileMeta) -> list[object]:
    """What shards are made from: the repodata file (its folder and name) and the version of it (size and mtime)."""
    return [f"{path.parent.name}/{path.name}", meta.size, meta.mtime_ns]


def _same_file(made_from: object, wanted: list[object]) -> bool:
    """Whether shards were made from the same file as `wanted` (maybe another version of it)."""
    return isinstance(made_from, list) and bool(made_from) and made_from[0] == wanted[0]


def _build_summary(result: ShardBuildResult) -> dict[str, object]:
    summary = asdict(result)
    summary.pop("index_temp_path")
    summary.pop("pack_tables")
    summary["built_at"] = time.time()
    return summary


def _prune(shards_dir: Path, index: Path) -> None:
    """Remove shards neither index (this one, and the upstream's passed through) has referenced for the grace
    period (blocking). The upstream's shards stay: they are what the offline view is made from when no repodata
    is cached (conda/filtered_channels.py), and what clients of the upstream's index fetch."""
    upstreams = index.parent.parent / SHARD_INDEX
    try:
        stale = unreferenced_shards(shards_dir, index, older_than=GRACE_SECONDS)
        if stale and upstreams.is_file():
            kept = set(unreferenced_shards(shards_dir, upstreams, older_than=GRACE_SECONDS))
            stale = [path for path in stale if path in kept]
    except (MalformedRepodata, OSError):
        return
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _build_while_downloading(
    found: Lookup, arguments: dict[str, object], spare: SpareBuilder | None = None
) -> ShardBuildResult | None:
    """Build from the repodata's bytes as its download brings them (the build keeps pace with the download and
    ends soon after it); None when there is no download to follow, or when it changed course midway (an upstream
    failed and another took over: the bytes already read are not the file's)."""
    download = found.download
    if download is None or download.finished:
        return None
    try:
        return await _build_in_own_process({**arguments, "from_stdin": True}, feed=download, spare=spare)
    except _FeedBroken:
        return None


class _FeedBroken(Exception):
    """The download being fed to a builder failed or started over: that build is void."""


async def _build_in_own_process(
    arguments: dict[str, object], feed: Download | None = None, spare: SpareBuilder | None = None
) -> ShardBuildResult:
    """Run a build in a fresh interpreter of its own (`python -m pkgcache.conda.shard_builder -`): pure Python that
    holds the GIL for seconds stays off the event loop, and only the builder's few modules are loaded. The
    interpreter is `spare`'s if one is waiting. Its arguments go on its standard input, one line of JSON; `feed`: a
    download whose bytes follow them there as they arrive.

    Returns as soon as the builder reports: it then goes on giving the new shards their own files (shard_packs),
    which this process does not wait for."""
    given = json.dumps({key: str(value) if isinstance(value, Path) else value for key, value in arguments.items()})
    process = await _builder_with_arguments(given.encode(), spare, more=feed is not None)
    pump = None
    try:
        if feed is not None:
            pump = asyncio.get_running_loop().create_task(_pump(feed, process))
        report = await process.stdout.readline()  # type: ignore[union-attr]
        if pump is not None:
            await pump  # done: the builder reads everything before it reports
    except BaseException:
        _stop(process)
        if pump is not None:
            pump.cancel()
        raise
    if not report:  # it ended without reporting
        _, err = await process.communicate()
        raise RuntimeError(f"the shard builder failed ({process.returncode}): {err.decode(errors='replace')[-500:]}")
    _finish_in_background(process, Path(str(arguments["packs_dir"])))
    answer = json.loads(report.decode())
    if "malformed" in answer:
        raise MalformedRepodata(answer["malformed"])
    if "storage" in answer:  # the disk failed the builder (full: 507, as a build made here)
        failure = answer["storage"]
        raise storage_error(OSError(failure["errno"], failure["message"], failure.get("filename")))
    summary = answer["result"]
    summary["index_temp_path"] = Path(summary["index_temp_path"])
    summary["pack_tables"] = [Path(table) for table in summary["pack_tables"]]
    return ShardBuildResult(**summary)


async def _builder_with_arguments(
    given: bytes, spare: SpareBuilder | None, *, more: bool
) -> asyncio.subprocess.Process:
    """The spare interpreter if one waits (else a new one), given the build's arguments; a new one if the spare
    died meanwhile."""
    process = await spare.take() if spare is not None else None
    if process is not None:
        try:
            await _give_arguments(process, given, more=more)
            return process
        except (BrokenPipeError, ConnectionResetError):
            _stop(process)
    process = await _spawn_builder()
    try:
        await _give_arguments(process, given, more=more)
    except BaseException:
        _stop(process)
        raise
    return process


async def _spawn_builder() -> asyncio.subprocess.Process:
    """A builder's interpreter, waiting for its arguments on its standard input."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pkgcache.conda.shard_builder",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _give_arguments(process: asyncio.subprocess.Process, given: bytes, *, more: bool) -> None:
    """The build's arguments, one line on the builder's standard input; closed after them unless `more` (the
    repodata's bytes) follows."""
    stdin = process.stdin
    assert stdin is not None
    stdin.write(given + b"\n")
    await stdin.drain()
    if not more:
        stdin.close()


class SpareBuilder:
    """At most one builder's interpreter started ahead of its build (see SPARE_STOP_SECONDS above)."""

    def __init__(self) -> None:
        self._waiting: asyncio.Task[asyncio.subprocess.Process] | None = None

    def start(self) -> asyncio.Task[asyncio.subprocess.Process] | None:
        """Start one unless one is waiting already; what to `retire` when the request that wanted it ends."""
        if self._waiting is not None:
            return None
        self._waiting = asyncio.get_running_loop().create_task(_spawn_builder())
        return self._waiting

    async def take(self) -> asyncio.subprocess.Process | None:
        """The waiting interpreter for a build, if there is one and it is alive."""
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return None
        try:
            process = await waiting
        except OSError:
            return None
        return process if process.returncode is None else None

    def retire(self, started: asyncio.Task[asyncio.subprocess.Process]) -> None:
        """End the interpreter `start` gave, unless a build took it."""
        if self._waiting is not started:
            return
        self._waiting = None
        ending = asyncio.get_running_loop().create_task(_end_spare(started))
        _ending_spares.add(ending)
        ending.add_done_callback(_ending_spares.discard)


# Spares told to end and not yet reaped: the service waits for them when it stops (a process left to a closed
# event loop is never reaped).
_ending_spares: set[asyncio.Task[None]] = set()


async def spares_ended() -> None:
    """Wait (a few seconds at most) for the spare interpreters told to end: called as the service stops."""
    loop = asyncio.get_running_loop()
    ending = {task for task in _ending_spares if task.get_loop() is loop}
    if ending:
        await asyncio.wait(ending, timeout=SPARE_STOP_SECONDS + 1)


async def _end_spare(started: asyncio.Task[asyncio.subprocess.Process]) -> None:
    """A spare that no build took: its input ends without arguments, and it exits (killed if it does not)."""
    try:
        process = await started
    except OSError:
        return
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.communicate(), SPARE_STOP_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _pump(download: Download, process: asyncio.subprocess.Process) -> None:
    """Write the download's bytes to the builder's standard input; on a failed or restarted download, stop the
    builder and raise _FeedBroken."""
    stdin = process.stdin
    assert stdin is not None
    try:
        async for chunk in download.follow():
            stdin.write(chunk)
            await stdin.drain()
    except (ConnectionError, BrokenPipeError):
        return  # the builder ended early: its report (or its absence) says why
    except Exception as exc:
        _stop(process)
        raise _FeedBroken(str(exc)) from exc
    finally:
        stdin.close()  # the end of its input, or what unblocks its reading to let it stop


def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the builder cleans up and ends), then SIGKILL if it has not ended within STOP_GRACE seconds."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()

    def kill() -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    asyncio.get_running_loop().call_later(STOP_GRACE, kill)


# Packs folders whose shards are being given their files: by a builder that has reported, or by a thread here.
_exploding: dict[Path, asyncio.Task[None]] = {}


def _finish_in_background(process: asyncio.subprocess.Process, packs_dir: Path) -> None:
    """Wait for a builder that has reported to end (it is giving shards their files), and log if it fails."""

    async def finish() -> None:
        _, err = await process.communicate()
        if process.returncode != 0:
            log.warning("giving new shards their files failed (%s): %s", process.returncode, err.decode()[-500:])
        if await asyncio.to_thread(_has_tables, packs_dir):  # a pack that came meanwhile, or one it left
            await _explode(packs_dir, packs_dir.parent / "shards")

    _keep_exploding(packs_dir, asyncio.get_running_loop().create_task(finish()))


def _has_tables(packs_dir: Path) -> bool:
    return any(packs_dir.glob(f"*{TABLE_SUFFIX}"))


async def _explode_all(packs_dir: Path, shards_dir: Path) -> None:
    """Give the shards of a build made here their files; and those of any pack that came meanwhile."""
    await _explode(packs_dir, shards_dir, logging.DEBUG)
    if await asyncio.to_thread(_has_tables, packs_dir):
        await _explode(packs_dir, shards_dir)


async def _explode(packs_dir: Path, shards_dir: Path, level: int = logging.INFO) -> None:
    try:
        written = await asyncio.to_thread(explode_packs, packs_dir, shards_dir)
    except OSError as exc:
        log.warning("giving the shards in %s their files failed: %s", packs_dir, exc)
    else:
        log.log(level, "gave %d shards in %s their files", written, packs_dir)


def _keep_exploding(packs_dir: Path, task: asyncio.Task[None]) -> None:
    _exploding[packs_dir] = task

    def forget(done: asyncio.Task[None]) -> None:
        if _exploding.get(packs_dir) is done:
            del _exploding[packs_dir]

    task.add_done_callback(forget)
