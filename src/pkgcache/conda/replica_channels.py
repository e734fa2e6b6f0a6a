"""The conda channels as a worker that only reads the cache sees them: fresh index files, cached packages, shards.

Anything that would fetch or write (a stale or missing index file, a missing package or shard) raises
CacheIsReadOnly before any response starts, and the request cycle hands the request to the writing worker.
Sidecars are read again about once a second, so what the writer revalidated reaches this worker within that long.
"""

from __future__ import annotations

from pathlib import Path

from pkgcache.cache_state import CacheState, revalidation_due
from pkgcache.conda.cached_channels import ChannelPaths
from pkgcache.conda.channels import Channel
from pkgcache.conda.index_files import missing_error
from pkgcache.conda.package_records import ListedRecords, unlisted_refusal
from pkgcache.conda.source import Lookup
from pkgcache.config import CondaConfig
from pkgcache.storage.downloads import Download
from pkgcache.storage.file_records import recorded_of
from pkgcache.storage.sidecars import Sidecars
from pkgcache.storage.store import CacheIsReadOnly


class ReplicaChannels:
    def __init__(self, config: CondaConfig, paths: ChannelPaths, sidecars: Sidecars) -> None:
        self.index_ttl = config.index_ttl
        self.paths = paths
        self.sidecars = sidecars
        self.listed = ListedRecords(sidecars.meta_for)  # a package replaced upstream is the primary's to fetch

    def channel(self, root: str, name: str) -> Channel:
        return self.paths.channel(root, name)

    def channel_paths(self) -> list[str]:
        return self.paths.channel_paths()

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        path = self.paths.path(channel, *([subdir, filename] if subdir else [filename]))
        meta = await self.sidecars.meta_for(path)
        if meta is None or meta.age() >= self.index_ttl or revalidation_due(meta.age()):
            raise CacheIsReadOnly(
                "a missing, stale or to be revalidated index file is fetched by the worker that writes"
            )
        if meta.missing:
            raise missing_error(path, meta)
        return Lookup(CacheState.HIT, path, meta)

    async def package(self, channel: Channel, subdir: str, filename: str) -> Path | Download:
        path = self.paths.path(channel, subdir, filename)
        recorded = recorded_of(path)
        if recorded is None:
            raise CacheIsReadOnly("a missing file is fetched by the worker that writes")
        if not await self.listed.is_as_listed(path, recorded):
            raise CacheIsReadOnly("a package replaced upstream is fetched again by the worker that writes")
        refusal = unlisted_refusal()  # a policy judges a package its index does not list by its file name
        if refusal is not None and not await self.listed.lists(path):
            raise refusal
        _, vouched = await self.listed.parent_vouching(path, self.index_ttl)
        if not vouched:
            raise CacheIsReadOnly(
                "the parent pkgcache is asked about a package its index does not vouch for by the writer"
            )
        return path

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        return self._cached(self.paths.path(channel, subdir, "shards", shard_name))

    def _cached(self, path: Path) -> Path:
        if path.is_file():
            return path
        raise CacheIsReadOnly("a missing file is fetched by the worker that writes")

    def status(self) -> dict[str, object]:
        return {"channels": self.channel_paths(), "index_ttl": self.index_ttl}
