"""The conda channels as pkgcache keeps them: index files fresh, packages and shards checked and kept for good.

Layout under the data directory: `conda/<pkgs|cloud>/<channel>/<subdir>/<file>`, shards in `.../<subdir>/shards/`,
each index file with its `.meta` sidecar (see storage/refreshing.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import zstandard

from pkgcache.cache_state import CacheState
from pkgcache.conda.channels import SHARD_INDEX, Channel, UnknownPath
from pkgcache.conda.records import expected_of, find_record
from pkgcache.conda.shards import InvalidShardIndex, record_in_shard, rewrite_shard_index, shard_for
from pkgcache.config import CondaConfig, CondaUpstream
from pkgcache.storage.downloads import Download, Expected
from pkgcache.storage.filetypes import magic_for
from pkgcache.storage.refreshing import FileMeta, Lookup, RefreshingFiles
from pkgcache.storage.store import CacheStore
from pkgcache.upstream.pool import TargetFor, Upstream, UpstreamError, UpstreamNotFound
from pkgcache.upstream.transfer import Fetcher

log = logging.getLogger(__name__)

# Index files pkgcache can make itself when an upstream lacks them: the .zst of a .json it has.
COMPRESSIBLE = frozenset({"repodata.json", "current_repodata.json"})
ZSTD_LEVEL = 3  # about as fast as the disk; conda-forge's repodata shrinks about eight times
# A package missing from cached repodata may be newer than it: look again, but not more often than this.
MISSING_PACKAGE_RECHECK_SECONDS = 10.0


class UnknownChannel(LookupError):
    """A channel this pkgcache is not configured to serve."""


class PackageNotInRepodata(LookupError):
    """The channel's repodata has no such package, so there is nothing to check it against."""


class CondaChannels:
    """Index files, packages and shards of the configured channels, over the shared layers."""

    def __init__(
        self,
        config: CondaConfig,
        fetcher: Fetcher,
        store: CacheStore,
        refreshing: RefreshingFiles,
    ) -> None:
        self.config = config
        self.fetcher = fetcher
        self.store = store
        self.refreshing = refreshing
        self._channels = {path: Channel(*path.split("/", 1)) for path in config.channels}
        self._upstreams: dict[str, CondaUpstream] = {upstream.name: upstream for upstream in config.upstreams}
        self._generating: dict[Path, asyncio.Task[Lookup]] = {}

    def channel(self, root: str, name: str) -> Channel:
        channel = self._channels.get(f"{root}/{name}")
        if channel is None:
            raise UnknownChannel(f"channel {root}/{name} is not served here; served: {', '.join(self._channels)}")
        return channel

    def channel_paths(self) -> list[str]:
        return list(self._channels)

    # --- where things are ---

    def _path(self, channel: Channel, *parts: str) -> Path:
        return self.store.path_for("conda", channel.root, channel.name, *parts)

    def _target(self, channel: Channel, relative: str) -> TargetFor:
        def target(upstream: Upstream) -> str | None:
            config = self._upstreams.get(upstream.name)
            return None if config is None else channel.upstream_url(config) + relative

        return target

    # --- index files ---

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        """An index file of a subdir (or of the channel when `subdir` is None), fresh or stale, or its download."""
        parts = [subdir, filename] if subdir else [filename]
        path = self._path(channel, *parts)
        target = self._target(channel, "/".join(parts))
        ttl = self.config.index_ttl
        if filename == SHARD_INDEX:
            # Served only once rewritten to point at pkgcache, so never streamed while it downloads.
            _, meta, state = await self.refreshing.fetch_now(path, target, ttl, self._rewrite_shard_index)
            return Lookup(state, path, meta)
        if filename.endswith(".zst") and filename.removesuffix(".zst") in COMPRESSIBLE and subdir:
            return await self._zst_index(channel, subdir, filename, path, target)
        return await self.refreshing.get(path, target, ttl)

    async def _rewrite_shard_index(self, path: Path, meta: FileMeta) -> None:
        temp = self.store.new_temp_path(path.name)
        try:
            meta.extra["upstream_urls"] = await asyncio.to_thread(rewrite_shard_index, path, temp)
        except InvalidShardIndex as exc:
            await asyncio.to_thread(path.unlink, True)
            raise UpstreamError(f"unreadable shard index from {meta.upstream}: {exc}") from None

    async def _zst_index(self, channel: Channel, subdir: str, filename: str, path: Path, target: TargetFor) -> Lookup:
        meta = await self.refreshing.meta_for(path)
        if meta is not None and meta.extra.get("generated"):
            return await self._generated_zst(channel, subdir, filename, path, meta)
        try:
            found = await self.refreshing.get(path, target, self.config.index_ttl)
            if found.download is not None:
                await found.download.wait_started()  # raises the upstream's 404, if that is its answer
            return found
        except UpstreamNotFound:
            # The upstream has only the .json: make the .zst here, so LAN clients fetch a fraction of the bytes.
            return await self._generate_zst(channel, subdir, filename, path)

    async def _generated_zst(self, channel: Channel, subdir: str, filename: str, path: Path, meta: FileMeta) -> Lookup:
        source = await self._whole_index_file(channel, subdir, filename.removesuffix(".zst"))
        if (source.size, source.mtime_ns) == (meta.extra.get("source_size"), meta.extra.get("source_mtime_ns")):
            return Lookup(CacheState.HIT, path, meta)
        return await self._generate_zst(channel, subdir, filename, path)

    async def _generate_zst(self, channel: Channel, subdir: str, filename: str, path: Path) -> Lookup:
        self.store.require_writable()
        task = self._generating.get(path)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._make_zst(channel, subdir, filename, path))
            self._generating[path] = task
            task.add_done_callback(lambda _: self._generating.pop(path, None))
        return await asyncio.shield(task)

    async def _make_zst(self, channel: Channel, subdir: str, filename: str, path: Path) -> Lookup:
        source_name = filename.removesuffix(".zst")
        source = await self._whole_index_file(channel, subdir, source_name)
        source_path = self._path(channel, subdir, source_name)
        temp = self.store.new_temp_path(path.name)
        started = time.monotonic()
        try:
            # In a worker thread, streaming: the event loop keeps serving, and memory stays small.
            await asyncio.to_thread(_compress_file, source_path, temp)
            await asyncio.to_thread(self.store.commit_file, temp, path)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        log.info("made %s/%s/%s in %.1f s", channel.path, subdir, filename, time.monotonic() - started)
        meta = await self.refreshing.record_generated(
            path, {"generated": True, "source_size": source.size, "source_mtime_ns": source.mtime_ns}
        )
        return Lookup(CacheState.MISS, path, meta)

    async def _whole_index_file(self, channel: Channel, subdir: str, filename: str) -> FileMeta:
        """An index file, waited for until it is whole on disk; its metadata."""
        path = self._path(channel, subdir, filename)
        target = self._target(channel, f"{subdir}/{filename}")
        _, meta, _ = await self.refreshing.fetch_now(path, target, self.config.index_ttl)
        return meta

    # --- packages ---

    async def package(self, channel: Channel, subdir: str, filename: str) -> Path | Download:
        """A cached package's path, or the download bringing it, checked against the channel's repodata."""
        path = self._path(channel, subdir, filename)
        if path.is_file():
            return path
        self.store.require_writable()  # a reader hands a missing package to the writer before scanning repodata
        record = await self._find_record(channel, subdir, filename)
        if record is None:
            raise PackageNotInRepodata(f"{channel.path}/{subdir} has no package {filename}")
        hashes, size = expected_of(record)
        download = self.fetcher.download(
            path,
            self._target(channel, f"{subdir}/{filename}"),
            Expected(hashes=hashes, size=size, magic=magic_for(filename)),
        )
        return path if download is None else download

    async def _find_record(self, channel: Channel, subdir: str, filename: str) -> dict[str, Any] | None:
        record = await self._record_from_shards(channel, subdir, filename)
        if record is not None:
            return record
        repodata = await self._repodata_to_search(channel, subdir)
        record = await asyncio.to_thread(find_record, repodata, filename)
        if record is None:
            meta = await self.refreshing.meta_for(repodata)
            if meta is not None and meta.age() > MISSING_PACKAGE_RECHECK_SECONDS:
                target = self._target(channel, f"{subdir}/{repodata.name}")
                await self.refreshing.refresh_now(repodata, target)
                record = await asyncio.to_thread(find_record, repodata, filename)
        return record

    async def _repodata_to_search(self, channel: Channel, subdir: str) -> Path:
        """A whole local copy of the subdir's repodata, in whichever form is cached; fetched if none is."""
        for name in ("repodata.json", "repodata.json.zst"):
            path = self._path(channel, subdir, name)
            meta = await self.refreshing.meta_for(path)
            if meta is not None and not meta.missing and not self.fetcher.is_being_written(path):
                return path
        found = await self.index_file(channel, subdir, "repodata.json.zst")
        if found.download is not None:
            await found.download.wait_finished()
        return found.path

    async def _record_from_shards(self, channel: Channel, subdir: str, filename: str) -> dict[str, Any] | None:
        index = self._path(channel, subdir, SHARD_INDEX)
        meta = await self.refreshing.meta_for(index)
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
        return await asyncio.to_thread(record_in_shard, self._path(channel, subdir, "shards", shard_name), filename)

    # --- shards ---

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        """A content-addressed shard: its name is its sha256, so it is checked and kept for good."""
        path = self._path(channel, subdir, "shards", shard_name)
        if path.is_file():
            return path
        self.store.require_writable()
        shard_base = await self._upstream_shards_base(channel, subdir)
        download = self.fetcher.download(
            path,
            lambda upstream: shard_base(upstream) + shard_name if shard_base(upstream) else None,
            Expected(hashes={"sha256": shard_name.removesuffix(".msgpack.zst")}, magic=magic_for(shard_name)),
        )
        return path if download is None else download

    async def _upstream_shards_base(self, channel: Channel, subdir: str) -> Callable[[Upstream], str | None]:
        """Where each upstream keeps this subdir's shards: as its shard index said, else beside it."""
        index_meta = await self.refreshing.meta_for(self._path(channel, subdir, SHARD_INDEX))
        said = (index_meta.extra.get("upstream_urls", {}) if index_meta else {}).get("shards_base_url") or "./shards/"
        index_upstream = index_meta.upstream if index_meta else None

        def base(upstream: Upstream) -> str | None:
            config = self._upstreams.get(upstream.name)
            if config is None:
                return None
            subdir_url = channel.upstream_url(config) + f"{subdir}/"
            # An absolute URL belongs to the upstream whose index gave it; other upstreams use their own layout.
            if "://" in said and upstream.name != index_upstream:
                return urljoin(subdir_url, "shards/")
            return urljoin(subdir_url, said if said.endswith("/") else said + "/")

        return base

    def status(self) -> dict[str, object]:
        return {"channels": self.channel_paths(), "index_ttl": self.config.index_ttl}


def _compress_file(source: Path, destination: Path) -> None:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with source.open("rb") as reader, destination.open("wb") as writer:
        compressor.copy_stream(reader, writer)


__all__ = ["CondaChannels", "PackageNotInRepodata", "UnknownChannel", "UnknownPath"]
