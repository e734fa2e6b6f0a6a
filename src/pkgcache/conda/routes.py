"""The conda side's HTTP routes: `/conda/<pkgs|cloud>/<channel>/[<subdir>/]<file>` and shards.

Handlers are thin: they check the path, ask the chain of channel layers (conda/source.py), and answer from disk or
from a download in flight.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from pkgcache.cache_state import REVALIDATE_HEADER, CacheState, revalidation
from pkgcache.conda.channels import (
    CHANNEL_INDEX_FILES,
    Channel,
    FileKind,
    UnknownPath,
    check_shard_name,
    check_subdir,
    kind_of,
    media_type,
)
from pkgcache.conda.package_records import EXPECTED_SHA256_HEADER, client_expects
from pkgcache.conda.source import (
    ChannelSource,
    Lookup,
    PackageNotInRepodata,
    PackageRecordUnclear,
    UnknownChannel,
    UnlistedPackageMismatch,
)
from pkgcache.http.request_cycle import add_get
from pkgcache.http.responses import (
    CACHE_STATE,
    CACHE_STATE_HEADER,
    IMMUTABLE,
    UPSTREAM_USED,
    UPSTREAMS_FAILED,
    answer_found,
    error_for,
    plain_error,
    send_cached_file,
    send_download,
)
from pkgcache.node_identity import NOT_SERVED_HEADER
from pkgcache.storage.downloads import Download
from pkgcache.storage.file_use import FileUse

CONDA_CHANNELS_KEY = web.AppKey("conda_channels", ChannelSource)
ROOTS = ("pkgs", "cloud")


def add_conda_routes(app: web.Application, channels: ChannelSource, file_use: FileUse) -> None:
    app[CONDA_CHANNELS_KEY] = channels
    routes = CondaRoutes(channels, file_use)
    add_get(app, "/conda/{root}/{name}/{subdir}/shards/{shard}", routes.shard_file)
    add_get(app, "/conda/{root}/{name}/{subdir}/{filename}", routes.subdir_file)
    add_get(app, "/conda/{root}/{name}/{filename}", routes.channel_file)


class CondaRoutes:
    """The handlers, bound to the channels they serve and to what tracks files being sent."""

    def __init__(self, channels: ChannelSource, file_use: FileUse) -> None:
        self.channels = channels
        self.file_use = file_use

    async def subdir_file(self, request: web.Request) -> web.StreamResponse:
        filename = request.match_info["filename"]
        try:
            channel = self._channel(request)
            subdir = check_subdir(request.match_info["subdir"])
            kind = kind_of(filename)
            if kind is FileKind.INDEX:

                async def index_file() -> Lookup:
                    with revalidation(REVALIDATE_HEADER in request.headers):
                        return await self.channels.index_file(channel, subdir, filename)

                return await answer_found(request, index_file, self._index_sender(request, filename))

            async def package() -> Path | Download:
                with client_expects(request.headers.get(EXPECTED_SHA256_HEADER)):
                    return await self.channels.package(channel, subdir, filename)

            return await answer_found(request, package, self._immutable_sender(request, filename))
        except Exception as exc:
            return _error(exc)

    async def channel_file(self, request: web.Request) -> web.StreamResponse:
        filename = request.match_info["filename"]
        try:
            channel = self._channel(request)
            if filename not in CHANNEL_INDEX_FILES:
                raise UnknownPath(
                    f"{filename!r} is not a channel-level file ({', '.join(sorted(CHANNEL_INDEX_FILES))})"
                )

            async def index_file() -> Lookup:
                with revalidation(REVALIDATE_HEADER in request.headers):
                    return await self.channels.index_file(channel, None, filename)

            return await answer_found(request, index_file, self._index_sender(request, filename))
        except Exception as exc:
            return _error(exc)

    async def shard_file(self, request: web.Request) -> web.StreamResponse:
        try:
            channel = self._channel(request)
            subdir = check_subdir(request.match_info["subdir"])
            name = check_shard_name(request.match_info["shard"])
            # Shards are content-addressed: served from cache whatever Cache-Control the client sends.
            return await answer_found(
                request, lambda: self.channels.shard(channel, subdir, name), self._immutable_sender(request, name)
            )
        except Exception as exc:
            return _error(exc)

    def _channel(self, request: web.Request) -> Channel:
        root, name = request.match_info["root"], request.match_info["name"]
        if root not in ROOTS:
            raise UnknownChannel(f"conda channels live under /conda/pkgs/ and /conda/cloud/, not /conda/{root}/")
        return self.channels.channel(root, name)

    def _index_sender(
        self, request: web.Request, filename: str
    ) -> Callable[[Lookup], Awaitable[web.StreamResponse | None]]:
        return functools.partial(self._send_index, request, filename=filename)

    def _immutable_sender(
        self, request: web.Request, filename: str
    ) -> Callable[[Path | Download], Awaitable[web.StreamResponse | None]]:
        return functools.partial(self._send_immutable, request, filename=filename)

    async def _send_index(self, request: web.Request, found: Lookup, filename: str) -> web.StreamResponse | None:
        """None: the file went before it could be opened (see `answer_found`)."""
        if found.download is not None and found.instead_of_streaming is not None:
            found = await found.instead_of_streaming() or found
        request[CACHE_STATE] = found.state
        ttl = self.channels.index_ttl
        if found.download is not None:
            _note_upstream(request, found.download)
            cache_control = f"public, max-age={int(ttl)}"
            return await send_download(request, found.download, media_type(filename), cache_control, found.generation)
        meta = found.meta
        expired = found.state in (CacheState.STALE, CacheState.OFFLINE)
        remaining = 0 if meta is None or expired else ttl - meta.age()
        cache_control = f"public, max-age={max(0, int(remaining))}"
        response = send_cached_file(request, found.path, media_type(filename), self.file_use, cache_control)
        if response is None:
            return None
        response.headers[CACHE_STATE_HEADER] = found.state
        if meta is not None and meta.upstream:
            request[UPSTREAM_USED] = meta.upstream
        return response

    async def _send_immutable(
        self, request: web.Request, found: Path | Download, filename: str
    ) -> web.StreamResponse | None:
        """None: the file went before it could be opened (see `answer_found`)."""
        if isinstance(found, Path):
            request[CACHE_STATE] = CacheState.HIT
            return send_cached_file(request, found, media_type(filename), self.file_use, IMMUTABLE)
        request[CACHE_STATE] = CacheState.MISS
        response = await send_download(request, found, media_type(filename), IMMUTABLE)
        _note_upstream(request, found)
        return response


def _note_upstream(request: web.Request, download: Download) -> None:
    if download.source is not None:
        request[UPSTREAM_USED] = download.source


def _error(exc: Exception) -> web.StreamResponse:
    if isinstance(exc, UnknownChannel) and exc.channel:
        # Marked, so that a child pkgcache listing the channel tells its clients and its operator why (pool.py).
        return plain_error(404, str(exc), **{NOT_SERVED_HEADER: exc.channel})
    if isinstance(exc, (UnknownChannel, UnknownPath, PackageNotInRepodata)):
        return plain_error(404, str(exc))
    if isinstance(exc, (PackageRecordUnclear, UnlistedPackageMismatch)):
        return plain_error(502, str(exc), **UPSTREAMS_FAILED)
    response = error_for(exc)
    if response is None:
        raise exc
    return response
