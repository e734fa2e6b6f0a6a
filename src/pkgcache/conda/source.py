"""The one small interface the conda routes talk to: a source of a channel's index files, packages and shards.

The service builds a chain of layers that each offer it (service/app.py, at assembly):
- `CachedChannels` (cached_channels.py): index files kept fresh (index_files.py), packages and shards fetched
  once and checked, over `UpstreamChannels` (upstream_channels.py), which knows where each mirror keeps what.
  The worker that writes the cache uses it.
- `ReplicaChannels` (replica_channels.py): what is on disk and fresh; everything else raises CacheIsReadOnly, and
  the request cycle hands the request to the worker that writes. The other workers use it.
- `GeneratedZst` (generated_zst.py), over either: `repodata.json.zst` made here when the upstream lacks it.
A new capability (shards made here, a policy filter) is one more layer wrapping a `ChannelSource`.

Errors are part of the interface: `UnknownChannel`, `UnknownPath`, `PackageNotInRepodata` (404s),
`PackageRecordUnclear`, `UnlistedPackageMismatch` (502s),
`UpstreamNotFound`, `UpstreamsUnavailable`, `CacheIsReadOnly`, `StorageError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pkgcache.cache_state import CacheState
from pkgcache.conda.channels import Channel
from pkgcache.storage.downloads import Download
from pkgcache.storage.sidecars import FileMeta


class UnknownChannel(LookupError):
    """A channel this pkgcache is not configured to serve: `channel` is its path ("cloud/conda-forge"), None when
    the path names no channel at all."""

    def __init__(self, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel


class PackageNotInRepodata(LookupError):
    """The channel's repodata has no such package, so there is nothing to check it against."""


class PackageRecordUnclear(LookupError):
    """The channel's repodata gives the package no single record to check it against (different records under
    its name, or one that cannot be read): it is not served, as no check would be the one its clients make."""


class UnlistedPackageMismatch(LookupError):
    """A package its channel does not list, fetched for a client's sha256: no upstream has it with that sha256
    (the client's lock may be older than the channel's file). Nothing was served or kept."""


@dataclass
class Lookup:
    """The answer to "give me this index file": a path to serve, or a download to follow, and how it was found.

    `instead_of_streaming`, for a download whose bytes may have to change before clients see them (repodata whose
    `info.base_url` is dropped: conda/base_url.py): what to send clients instead of the bytes as they come, once
    it is known (the file once rewritten; or the same lookup pinned to the `generation` judged streamable).
    Layers that read the bytes themselves (a shard build) need not ask.
    """

    state: CacheState
    path: Path
    meta: FileMeta | None = None
    download: Download | None = None
    instead_of_streaming: Callable[[], Awaitable[Lookup | None]] | None = None
    # The generation of the download's bytes that were judged fit to stream (Download.follow_spans): another
    # upstream's, taking over after that, are not streamed to this client.
    generation: int | None = None


class ChannelSource(Protocol):
    index_ttl: float

    def channel(self, root: str, name: str) -> Channel:
        """A served channel; raises UnknownChannel."""

    def channel_paths(self) -> list[str]: ...

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        """An index file of a subdir (or of the channel when `subdir` is None): fresh, stale, or its download."""

    async def package(self, channel: Channel, subdir: str, filename: str) -> Path | Download:
        """A cached package's path, or the download bringing it, checked against the channel's repodata."""

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        """A content-addressed shard's path, or the download bringing it."""

    def status(self) -> dict[str, object]: ...


class ChannelLayer:
    """A layer around a ChannelSource that passes everything through to it: a layer overrides what it changes."""

    def __init__(self, inner: ChannelSource) -> None:
        self.inner = inner
        self.index_ttl = inner.index_ttl

    def channel(self, root: str, name: str) -> Channel:
        return self.inner.channel(root, name)

    def channel_paths(self) -> list[str]:
        return self.inner.channel_paths()

    async def index_file(self, channel: Channel, subdir: str | None, filename: str) -> Lookup:
        return await self.inner.index_file(channel, subdir, filename)

    async def package(self, channel: Channel, subdir: str, filename: str) -> Path | Download:
        return await self.inner.package(channel, subdir, filename)

    async def shard(self, channel: Channel, subdir: str, shard_name: str) -> Path | Download:
        return await self.inner.shard(channel, subdir, shard_name)

    def status(self) -> dict[str, object]:
        return self.inner.status()
