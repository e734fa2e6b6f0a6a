"""A layer: `repodata.json.zst` (and `current_repodata.json.zst`) made here when the upstream has only the .json.

LAN clients then fetch about an eighth of the bytes. The .zst is made from the cached .json in a worker thread,
streaming, recorded as made from that exact .json (its size and mtime), and made again when the .json changes.
An upstream's own .zst, when it has one, is passed through by the layer below.

When a form is not cached and no upstream answers, the other cached form of the same file is made into it (the
.json decompressed from the .zst, or the .zst from the .json): served stale, as a copy with no validators, which
the next revalidation replaces with the upstream's own. Clients get the records they would have got rather than a
5xx while the gate has not (or no longer) switched to the offline view.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import zstandard

from pkgcache.cache_state import CacheState
from pkgcache.conda.cached_channels import ChannelPaths
from pkgcache.conda.channels import Channel
from pkgcache.conda.source import ChannelLayer, ChannelSource, Lookup
from pkgcache.storage.sidecars import FileMeta, Sidecars
from pkgcache.storage.store import in_storage_thread
from pkgcache.upstream.pool import BadBytesEverywhere, UpstreamNotFound, UpstreamsUnavailable

log = logging.getLogger(__name__)

# Index files pkgcache can make itself when an upstream lacks them: the .zst of a .json it has.
COMPRESSIBLE = frozenset({"repodata.json", "current_repodata.json"})
ZSTD_LEVEL = 3  # about as fast as the disk; conda-forge's repodata shrinks about eight times


class GeneratedZst(ChannelLayer):
    """Wraps a ChannelSource; answers `<json>.zst` from the layer below, or makes it."""

    def __init__(self, inner: ChannelSource, paths: ChannelPaths, sidecars: Sidecars) -> None:
        super().__init__(inner)
        self.paths = paths
        self.sidecars = sidecars
        self._making: dict[Path, asyncio.Task[Lookup]] = {}
        self._converting: dict[Path, asyncio.Task[FileMeta]] = {}

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        source_name = filename.removesuffix(".zst")
        if subdir is None or source_name not in COMPRESSIBLE:
            return await self.inner.index_file(channel, subdir, filename)
        try:
            if filename.endswith(".zst"):
                return await self._zst(channel, subdir, source_name, filename)
            return await self._started(channel, subdir, filename)
        except UpstreamsUnavailable:
            # Not cached and no upstream answers: the other form of the same file, when it is cached, is made
            # into this one at once (rather than a 5xx until the gate shows the offline view).
            other = await self._cached_other_form(channel, subdir, filename)
            if other is None:
                raise
            return await self._convert(channel, subdir, filename, other)

    async def _zst(self, channel: Channel, subdir: str, source_name: str, filename: str) -> Lookup:
        path = self.paths.path(channel, subdir, filename)
        meta = await self.sidecars.meta_for(path)
        if meta is not None and meta.extra.get("generated"):
            return await self._made_here(channel, subdir, source_name, path, meta)
        try:
            return await self._started(channel, subdir, filename)
        except (UpstreamNotFound, BadBytesEverywhere):  # none upstream, or none sound from its first bytes
            return await self._make(channel, subdir, source_name, path)

    async def _started(self, channel: Channel, subdir: str, filename: str) -> Lookup:
        found = await self.inner.index_file(channel, subdir, filename)
        if found.download is not None:
            await found.download.wait_started()  # raises the upstream's 404 or failure, if that is its answer
        return found

    async def _cached_other_form(self, channel: Channel, subdir: str, filename: str) -> tuple[Path, FileMeta] | None:
        name = filename.removesuffix(".zst") if filename.endswith(".zst") else filename + ".zst"
        path = self.paths.path(channel, subdir, name)
        meta = await self.sidecars.meta_for(path)
        if meta is None or meta.missing or not path.is_file():
            return None
        return path, meta

    async def _convert(self, channel: Channel, subdir: str, filename: str, other: tuple[Path, FileMeta]) -> Lookup:
        """`filename` made from its other cached form, recorded as a copy as old as that one with no upstream's
        validators: served stale, and replaced by the upstream's own once one answers (or made here, for a .zst
        the upstream turns out not to have)."""
        path = self.paths.path(channel, subdir, filename)
        task = self._converting.get(path)
        if task is None:
            self.paths.store.require_writable()  # a reader hands the request to the writer instead
            task = asyncio.get_running_loop().create_task(self._write_converted(path, *other))
            self._converting[path] = task
            task.add_done_callback(lambda _: self._converting.pop(path, None))
        meta = await asyncio.shield(task)
        return Lookup(CacheState.STALE, path, meta)

    async def _write_converted(self, path: Path, source: Path, source_meta: FileMeta) -> FileMeta:
        store = self.paths.store
        temp = store.new_temp_path(path.name)
        try:
            convert = _compress_file if path.name.endswith(".zst") else _decompress_file
            await in_storage_thread(convert, source, temp)
            await asyncio.to_thread(store.commit_file, temp, path)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        log.info("no upstream answers: made %s from the cached %s", path, source.name)
        meta = FileMeta(fetched_at=source_meta.fetched_at, extra={"made_from": source.name})
        await self.sidecars.save(path, meta)
        return meta

    async def _made_here(self, channel: Channel, subdir: str, source_name: str, path: Path, meta: FileMeta) -> Lookup:
        source = await self._whole_source(channel, subdir, source_name)
        if (source.size, source.mtime_ns) == (meta.extra.get("source_size"), meta.extra.get("source_mtime_ns")):
            return Lookup(CacheState.HIT, path, meta)
        return await self._make(channel, subdir, source_name, path)

    async def _make(self, channel: Channel, subdir: str, source_name: str, path: Path) -> Lookup:
        task = self._making.get(path)
        if task is None:
            self.paths.store.require_writable()  # a reader hands the request to the writer instead
            task = asyncio.get_running_loop().create_task(self._compress(channel, subdir, source_name, path))
            self._making[path] = task
            task.add_done_callback(lambda _: self._making.pop(path, None))
        return await asyncio.shield(task)

    async def _compress(self, channel: Channel, subdir: str, source_name: str, path: Path) -> Lookup:
        source = await self._whole_source(channel, subdir, source_name)
        source_path = self.paths.path(channel, subdir, source_name)
        store = self.paths.store
        temp = store.new_temp_path(path.name)
        started = time.monotonic()
        try:
            # In a worker thread, streaming: the event loop keeps serving, and memory stays small.
            await in_storage_thread(_compress_file, source_path, temp)
            await asyncio.to_thread(store.commit_file, temp, path)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        log.info("made %s/%s/%s.zst in %.1f s", channel.path, subdir, source_name, time.monotonic() - started)
        meta = FileMeta(
            fetched_at=time.time(),
            extra={"generated": True, "source_size": source.size, "source_mtime_ns": source.mtime_ns},
        )
        await self.sidecars.save(path, meta)
        return Lookup(CacheState.MISS, path, meta)

    async def _whole_source(self, channel: Channel, subdir: str, source_name: str) -> FileMeta:
        """The .json the .zst is made from, waited for until it is whole on disk; its metadata."""
        found = await self.inner.index_file(channel, subdir, source_name)
        if found.download is not None:
            await found.download.wait_finished()
            meta = await self.sidecars.meta_for(found.path)
            if meta is None:
                raise UpstreamNotFound(source_name)
            return meta
        assert found.meta is not None
        return found.meta


def _compress_file(source: Path, destination: Path) -> None:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with source.open("rb") as reader, destination.open("wb") as writer:
        compressor.copy_stream(reader, writer)


def _decompress_file(source: Path, destination: Path) -> None:
    with (
        source.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader,
        destination.open("wb") as writer,
    ):
        shutil.copyfileobj(reader, writer, 1024 * 1024)
