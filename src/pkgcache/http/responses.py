"""Ways of answering shared by the PyPI and conda sides: cached files, downloads in flight, clear errors."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from pkgcache.cache_state import CacheState
from pkgcache.storage.downloads import Download, IntegrityError, StorageError
from pkgcache.storage.eviction import FILE_USE
from pkgcache.storage.store import UnsafePath
from pkgcache.upstream.pool import UpstreamNotFound, UpstreamsUnavailable

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
# What the access log reports about a request, set by the handlers.
CACHE_STATE = web.RequestKey("cache_state", CacheState)
UPSTREAM_USED = web.RequestKey("upstream_used", str)
CACHE_STATE_HEADER = "X-Pkgcache-Cache"


def plain_error(status: int, message: str, **headers: str) -> web.Response:
    """An error a person can read: plain text, one line saying what went wrong."""
    return web.Response(status=status, text=message.rstrip() + "\n", headers=headers)


def error_for(exc: BaseException) -> web.Response | None:
    """The HTTP answer for a failure of the shared layers, or None if it is not one of theirs."""
    if isinstance(exc, UnsafePath):
        return plain_error(400, f"refused path: {exc}")
    if isinstance(exc, UpstreamNotFound):
        return plain_error(404, "not found on any upstream")
    if isinstance(exc, UpstreamsUnavailable):
        return plain_error(502, f"no upstream could answer: {exc}")
    if isinstance(exc, IntegrityError):
        return plain_error(502, f"the upstream sent a file that fails its check, so it was not kept: {exc}")
    if isinstance(exc, StorageError):
        if exc.disk_full:
            return plain_error(507, "the cache's disk is full; nothing was stored")
        return plain_error(500, f"the cache could not store the file: {exc}")
    return None


class CachedFileResponse(web.FileResponse):
    """A cached file, sent with sendfile, with Range and conditional requests handled by aiohttp.

    aiohttp would serve `X.gz` with Content-Encoding in place of `X` when both exist; in a package cache those
    are two different files (`pkg.tar` and `pkg.tar.gz`), so that substitution is turned off.

    While the response exists and until it is sent, the file is marked in use so that eviction leaves it alone;
    `body_bytes` says how much of it went out (sendfile bypasses aiohttp's own byte count).
    """

    def __init__(self, path: Path, chunk_size: int = 256 * 1024) -> None:
        super().__init__(path, chunk_size=chunk_size)
        self.body_bytes = 0
        self._held = True
        FILE_USE.begin(Path(self._path))

    def _get_file_path_stat_encoding(self, accept_encoding: str) -> tuple[Path, Any, str | None]:
        path = Path(self._path)
        return path, path.stat(), None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        # Once sent (the metrics middleware may send it before aiohttp does), preparing again is a no-op.
        if self.prepared:
            return self._payload_writer
        try:
            writer = await super().prepare(request)
            if self.status in (200, 206) and request.method != "HEAD":
                self.body_bytes = self.content_length or 0
            return writer
        finally:
            self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            FILE_USE.end(Path(self._path))


# Headers that make a file request more than "all of it": ranges and conditional requests. aiohttp's FileResponse
# answers those (206, 304, 412, 416); the plain case, nearly every request, has a quicker way below.
_NOT_PLAIN = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
# A file this small is read whole, at once, and sent as an ordinary body (package metadata, shards, small wheels).
READ_WHOLE_BYTES = 64 * 1024


def send_cached_file(
    request: web.BaseRequest, path: Path, content_type: str, cache_control: str = IMMUTABLE
) -> web.StreamResponse:
    """A cached file, with the validators and headers aiohttp's FileResponse would give it.

    aiohttp's FileResponse opens every file in a worker thread, which costs a cached 3 KB metadata file four times
    what nginx takes (BENCHMARKS.md). A plain GET or HEAD is answered here instead: the file is opened at once (a
    cached file is on local disk, and was just looked at), read whole when small, or sent with sendfile. Ranges
    and conditional requests go to the FileResponse subclass below, which handles every case of them.
    """
    headers = {"Content-Type": content_type, "Cache-Control": cache_control, CACHE_STATE_HEADER: CacheState.HIT}
    if any(name in request.headers for name in _NOT_PLAIN):
        return _file_response(path, headers)
    try:
        handle = path.open("rb")
    except OSError:
        return _file_response(path, headers)  # gone meanwhile: aiohttp's 404 (or 403)
    stat = os.fstat(handle.fileno())
    if stat.st_size <= READ_WHOLE_BYTES:
        with handle:
            body = handle.read()
        FILE_USE.note_served(path)
        response: web.StreamResponse = web.Response(body=body, headers=headers)
    else:
        response = SentFile(path, handle, stat.st_size, headers)
    # The same validators as aiohttp's FileResponse, so either way of answering agrees with the other.
    response.etag = f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
    response.last_modified = stat.st_mtime
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _file_response(path: Path, headers: dict[str, str]) -> CachedFileResponse:
    response = CachedFileResponse(path, chunk_size=256 * 1024)
    response.headers.update(headers)
    return response


class SentFile(web.StreamResponse):
    """A whole cached file, already open, sent with the event loop's sendfile once the headers are out.

    Open from the start, so eviction or a purge unlinking it meanwhile cannot take its bytes away; marked in use
    until sent. `body_bytes` says how much went out (sendfile bypasses aiohttp's own byte count).
    """

    def __init__(self, path: Path, handle: IO[bytes], size: int, headers: dict[str, str]) -> None:
        super().__init__(headers=headers)
        self.content_length = size
        self.body_bytes = 0
        self._path = path
        self._handle: IO[bytes] | None = handle
        FILE_USE.begin(path)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:  # sent already (by the request cycle, before aiohttp would)
            return self._payload_writer
        try:
            writer = await super().prepare(request)
            assert self._handle is not None and self.content_length is not None
            if request.method != "HEAD":
                if request.transport is None:
                    raise ConnectionResetError("the client went away")
                await asyncio.get_running_loop().sendfile(request.transport, self._handle, 0, self.content_length)
                self.body_bytes = self.content_length
            await self.write_eof()
            return writer
        finally:
            self._release()

    def _release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            FILE_USE.end(self._path)


# Responses that send a file themselves and count what they sent (`body_bytes`).
FILE_RESPONSES = (CachedFileResponse, SentFile)


async def send_download(
    request: web.Request, download: Download, content_type: str, cache_control: str = IMMUTABLE
) -> web.StreamResponse:
    """Stream a file to the client while it downloads; cut the connection if the download turns out bad."""
    try:
        await download.wait_started()
    except Exception as exc:
        response = error_for(exc)
        if response is None:
            raise
        return response
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": cache_control, CACHE_STATE_HEADER: CacheState.MISS}
    )
    if download.length is not None:
        response.content_length = download.length
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    return await stream_body(request, response, download.follow(), cut_on=(Exception,))


async def stream_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    chunks: AsyncIterator[bytes],
    cut_on: tuple[type[BaseException], ...],
) -> web.StreamResponse:
    """Write `chunks` as the body of a prepared response. If their source fails with one of `cut_on` mid-way, the
    headers are gone already: the only honest signal left is an unfinished body, so the connection is cut."""
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionResetError:
        raise  # the client went away: nothing to tell it
    except cut_on as exc:
        log.warning("cutting %s short: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
