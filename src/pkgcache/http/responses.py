"""Ways of answering shared by the PyPI and conda sides: cached files, downloads in flight, clear errors.

A cached file is answered here whole (200), in part (206), not at all (304, 412) or refused (416), as RFC 9110
says (sections 13 and 14): validators first (If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since),
then one byte range when If-Range (if any) still matches. A request for several ranges gets the whole file with
200, which the RFC allows and every client takes. Small files are read at once; the rest go out with the event
loop's sendfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from pkgcache.cache_state import CacheState
from pkgcache.header_numbers import ascii_number
from pkgcache.node_identity import (
    CACHE_STATE_HEADER,
    NOT_SERVED_HEADER,
    UPSTREAM_FAILED_HEADER,
    refusal_headers,
)
from pkgcache.storage.downloads import Abandoned, Download, FileGone, IntegrityError
from pkgcache.storage.file_use import FileUse
from pkgcache.storage.store import StorageError, UnsafePath
from pkgcache.upstream.pool import UpstreamNotFound, UpstreamRefused, UpstreamsUnavailable

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
# What the access log reports about a request, set by the handlers.
CACHE_STATE = web.RequestKey("cache_state", CacheState)
UPSTREAM_USED = web.RequestKey("upstream_used", str)
# The response whose headers already went out, if a handler streams one: after that, a failure can only cut it.
STARTED_RESPONSE = web.RequestKey("started_response", web.StreamResponse)
# Set when the client hung up before its answer was whole (logged as 499, never counted as an error).
CLIENT_GONE = web.RequestKey("client_gone", bool)
# The longest Retry-After a client is sent when every upstream is resting. The rest itself may last an hour (a
# mirror's block page), but pip sleeps for whatever Retry-After says before each of its five retries, silently:
# 59 s made it sit two minutes before failing, where uv failed in 9 s. The body says when each upstream is back.
CLIENT_RETRY_AFTER_SECONDS = 2
# A file this small is read whole, at once, and sent as an ordinary body (package metadata, shards, small wheels).
READ_WHOLE_BYTES = 64 * 1024
# A cached file may be evicted or purged between its lookup and its open (or a download's file between its commit
# and its follower's open): it is then looked up again, which fetches it (`answer_found`). This many lookups in all,
# then the client is asked to come back (503, which pip, uv and conda clients retry).
LOOKUPS_OF_A_VANISHING_FILE = 3


def plain_error(status: int, message: str, **headers: str) -> web.Response:
    """An error a person can read: plain text, one line saying what went wrong."""
    return web.Response(status=status, text=message.rstrip() + "\n", headers=headers)


def not_found_error(message: str, exc: UpstreamNotFound) -> web.Response:
    """A 404 saying `message`, and which pkgcache upstreams do not serve the thing at all and why (a channel this
    configuration lists and the parent's does not), marked for a child below this one (node_identity.py)."""
    if not exc.not_served or not exc.what:
        return plain_error(404, message)
    return plain_error(404, f"{message} ({exc.not_served_words()})", **{NOT_SERVED_HEADER: exc.what})


# On a 5xx that says this node's upstreams failed for the request (not the node itself): a child fails that request
# over without resting this node (node_identity.py).
UPSTREAMS_FAILED = {UPSTREAM_FAILED_HEADER: "1"}


def error_for(exc: BaseException) -> web.Response | None:
    """The HTTP answer for a failure of the shared layers, or None if it is not one of theirs."""
    if isinstance(exc, UnsafePath):
        return plain_error(400, f"refused path: {exc}")
    if isinstance(exc, UpstreamNotFound):
        return not_found_error("not found on any upstream", exc)
    if isinstance(exc, UpstreamRefused):
        # The parent's verdict as it gave it (pip and uv show the reason phrase), marked for a child below this one.
        return web.Response(status=403, reason=exc.reason, text=f"{exc}\n", headers=refusal_headers(exc.reason))
    if isinstance(exc, UpstreamsUnavailable):
        if exc.retry_after is not None:
            retry_after = min(CLIENT_RETRY_AFTER_SECONDS, max(1, int(exc.retry_after)))
            return plain_error(
                503,
                f"every upstream is resting after failures: {exc}",
                **{"Retry-After": str(retry_after)},
                **UPSTREAMS_FAILED,
            )
        return plain_error(502, f"no upstream could answer: {exc}", **UPSTREAMS_FAILED)
    if isinstance(exc, IntegrityError):
        return plain_error(
            502, f"the upstream sent a file that fails its check, so it was not kept: {exc}", **UPSTREAMS_FAILED
        )
    if isinstance(exc, StorageError):
        if exc.disk_full:
            return plain_error(507, "the cache's disk is full; nothing was stored")
        # The reason only: the paths are the operator's, in the log.
        return plain_error(500, f"the cache could not store the file, so nothing was kept ({exc.reason})")
    if isinstance(exc, Abandoned):
        return plain_error(503, "the download was stopped; ask again", **{"Retry-After": "1"})
    return None


# --- cached files ---


@dataclass(frozen=True)
class Validators:
    etag: str
    last_modified: float  # seconds since the epoch, as the file's mtime

    @classmethod
    def of(cls, stat: os.stat_result) -> Validators:
        return cls(cls.etag_of(stat.st_size, stat.st_mtime_ns), stat.st_mtime)

    @staticmethod
    def etag_of(size: int, mtime_ns: int) -> str:
        # Files are replaced by rename, never rewritten in place, so mtime and size tell one version from the next.
        return f'"{size:x}.{mtime_ns:x}"'

    @property
    def http_date(self) -> str:
        return email.utils.formatdate(self.last_modified, usegmt=True)


@dataclass(frozen=True)
class Part:
    """What to send of a file: a status, and the bytes from `start` (inclusive) to `end` (exclusive)."""

    status: int
    start: int = 0
    end: int = 0


# A lookup's finding: the file in the cache, or the download bringing it.
Found = Path | Download
T = TypeVar("T")


async def answer_found(
    request: web.BaseRequest,
    lookup: Callable[[], Awaitable[T]],
    answer: Callable[[T], Awaitable[web.StreamResponse | None]],
) -> web.StreamResponse:
    """`answer` what `lookup` finds. None from `answer` means the file went between the lookup and its open
    (evicted, purged: `send_cached_file`, `send_download`) and nothing was sent: the file is looked up again, a miss
    now that fetches it, not a 404, which conda clients remember and no client retries."""
    for _ in range(LOOKUPS_OF_A_VANISHING_FILE):
        response = await answer(await lookup())
        if response is not None:
            return response
        log.info("%s was removed from the cache between its lookup and its open: looking it up again", request.path)
    return plain_error(
        503, "the file kept being removed from the cache as it was answered; ask again", **{"Retry-After": "1"}
    )


def send_cached_file(
    request: web.BaseRequest, path: Path, content_type: str, use: FileUse, cache_control: str = IMMUTABLE
) -> web.StreamResponse | None:
    """A cached file, answered as RFC 9110 says for the request's validators and range; None, with nothing sent, if
    it is not there any more (removed since it was looked up: the caller looks it up again, see `answer_found`)."""
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("could not open the cached %s: %s", path.name, exc)
        return plain_error(500, f"the cache could not read the file ({exc.strerror})")
    stat = os.fstat(handle.fileno())
    validators = Validators.of(stat)
    headers = {
        "Content-Type": content_type,
        "Cache-Control": cache_control,
        CACHE_STATE_HEADER: CacheState.HIT,
        "ETag": validators.etag,
        "Last-Modified": validators.http_date,
        "Accept-Ranges": "bytes",
    }
    part = choose_part(request.method, request.headers, validators, stat.st_size)
    if part.status in (304, 412, 416):
        handle.close()
        if part.status == 416:
            headers["Content-Range"] = f"bytes */{stat.st_size}"
        if part.status == 304:
            return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
        return web.Response(status=part.status, headers=headers)
    if part.status == 206:
        headers["Content-Range"] = f"bytes {part.start}-{part.end - 1}/{stat.st_size}"
    count = part.end - part.start
    if request.method == "HEAD":
        handle.close()
        head = web.StreamResponse(status=part.status, headers=headers)
        head.content_length = count
        return head
    if count <= READ_WHOLE_BYTES:
        with handle:
            body = os.pread(handle.fileno(), count, part.start)
        use.note_served(path)
        return web.Response(status=part.status, body=body, headers=headers)
    return SentFile(path, handle, part, headers, use)


def choose_part(method: str, headers: Mapping[str, str], validators: Validators, size: int) -> Part:
    """What a request gets of a file of `size` bytes with these validators (RFC 9110, 13.2.2)."""
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _etag_listed(if_match, validators.etag, weak=False):
            return Part(412)
    elif _modified_after(headers.get("If-Unmodified-Since"), validators.last_modified):
        return Part(412)
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _etag_listed(if_none_match, validators.etag, weak=True):
            return Part(304) if method in ("GET", "HEAD") else Part(412)
    elif method in ("GET", "HEAD") and _not_modified_since(headers.get("If-Modified-Since"), validators.last_modified):
        return Part(304)
    whole = Part(200, 0, size)
    range_header = headers.get("Range")
    if method != "GET" or range_header is None or not _if_range_holds(headers.get("If-Range"), validators):
        return whole
    return part_for_range(range_header, size) or whole


def part_for_range(header: str, size: int) -> Part | None:
    """One byte range (206), or an unsatisfiable one (416); None to answer the whole file (several ranges, or a
    header that is not a byte range at all, which the RFC says to ignore)."""
    asked = parse_byte_range(header)
    return None if asked is None else asked.part(size)


@dataclass(frozen=True)
class ByteRange:
    """One byte range as a client wrote it, before the file's size is known: bytes `first` to `last` inclusive;
    `first` None for the last `last` bytes (a suffix), `last` None for every byte from `first` on."""

    first: int | None
    last: int | None

    def part(self, size: int) -> Part:
        """What it means in a file of `size` bytes: a 206 of the bytes there are, or a 416."""
        if self.first is None:
            length = self.last or 0
            if length == 0 or size == 0:
                return Part(416)
            return Part(206, max(0, size - length), size)
        if self.first >= size:
            return Part(416)
        return Part(206, self.first, size if self.last is None else min(size, self.last + 1))

    def upstream_ask(self) -> tuple[int | None, int] | None:
        """(start, length) to ask an upstream for without knowing the size (start None: the last `length` bytes),
        as `fetch_range` takes them; None when the size is needed first (an open end, an empty suffix)."""
        if self.last is None or (self.first is None and self.last == 0):
            return None
        if self.first is None:
            return None, self.last
        return self.first, self.last - self.first + 1


def parse_byte_range(header: str) -> ByteRange | None:
    """The one byte range a `Range` header asks for; None for several ranges, or a header that is not a byte range
    (RFC 9110 says to ignore it)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:  # a suffix: the last N bytes
        length = ascii_number(last)
        return None if length is None else ByteRange(None, length)
    start, end_byte = ascii_number(first), ascii_number(last) if last else None
    if start is None or (last and (end_byte is None or end_byte < start)):
        return None  # not ASCII digits ("²", "١"...), or inverted: not a byte range, ignored as RFC 9110 says
    return ByteRange(start, end_byte)


def _etag_listed(header: str, etag: str, *, weak: bool) -> bool:
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _modified_after(header: str | None, last_modified: float) -> bool:
    since = _http_date(header)
    return since is not None and int(last_modified) > since


def _not_modified_since(header: str | None, last_modified: float) -> bool:
    since = _http_date(header)
    return since is not None and int(last_modified) <= since


def _if_range_holds(header: str | None, validators: Validators) -> bool:
    """No If-Range, or one naming this very version (a strong ETag, or the exact Last-Modified date)."""
    if header is None:
        return True
    header = header.strip()
    if header.startswith(('"', "W/")):
        return header == validators.etag
    since = _http_date(header)
    return since is not None and since == int(validators.last_modified)


class SentFile(web.StreamResponse):
    """A cached file (or part), already open, sent with the event loop's sendfile once the headers are out.

    Open from the start, so eviction or a purge unlinking it meanwhile cannot take its bytes away; marked in use
    until sent. `body_bytes` says how much went out (sendfile bypasses aiohttp's own byte count).
    """

    def __init__(self, path: Path, handle: IO[bytes], part: Part, headers: dict[str, str], use: FileUse) -> None:
        super().__init__(status=part.status, headers=headers)
        self.content_length = part.end - part.start
        self.body_bytes = 0
        self._file_path = path
        self._handle: IO[bytes] | None = handle
        self._part = part
        self._use = use
        self._writer: AbstractStreamWriter | None = None
        use.begin(path)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._writer is not None:  # sent already (by the request cycle, before aiohttp would)
            return self._writer
        try:
            self._writer = await super().prepare(request)
            assert self._handle is not None
            if request.transport is None:
                raise ConnectionResetError("the client went away")
            count = self._part.end - self._part.start
            await asyncio.get_running_loop().sendfile(request.transport, self._handle, self._part.start, count)
            self.body_bytes = count
            await self.write_eof()
            return self._writer
        finally:
            self._release()

    def _release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._use.end(self._file_path)


# --- downloads in flight ---


async def send_download(
    request: web.Request,
    download: Download,
    content_type: str,
    cache_control: str = IMMUTABLE,
    generation: int | None = None,
    size: int | None = None,
) -> web.StreamResponse | None:
    """Stream a file to the client while it downloads; cut the connection if the download turns out bad, or, with
    `generation`, if its bytes are not that generation's (Download.follow_spans). None, with nothing sent, if the
    download had committed its file and it was removed before this client could open it (`FileGone`): the caller
    looks it up again (`answer_found`). The file is opened before the headers go out, and held open to the end.

    One range (a GET's, without If-Range) is answered 206 when the file's size is known: the index's, else `size`
    (what an upstream's Content-Range said); its bytes go out as they arrive and its last byte only once the whole
    file is checked (`send_followed_part`). Without a size, or with If-Range (no validator can match a file not
    cached yet), the whole file, as RFC 9110 allows.
    """
    try:
        await download.wait_started()
    except Exception as exc:
        refusal = error_for(exc)
        if refusal is None:
            raise
        return refusal
    reader = None
    if request.method != "HEAD" and not download.not_modified:
        try:
            reader = await download.open_reader()
        except FileGone:
            # Looked up again once the download is over and unregistered, or the lookup would find it again.
            with contextlib.suppress(Exception):
                await download.wait_finished()
            return None
        except Exception as exc:  # the download failed before this client could open its file
            refusal = error_for(exc)
            if refusal is None:
                raise
            return refusal
    try:
        return await _send_download(request, download, content_type, cache_control, generation, size, reader)
    finally:
        if reader is not None:
            await asyncio.to_thread(reader.close)


async def _send_download(
    request: web.BaseRequest,
    download: Download,
    content_type: str,
    cache_control: str,
    generation: int | None,
    size: int | None,
    reader: IO[bytes] | None,
) -> web.StreamResponse:
    total = download.length if download.length is not None else size
    part = _part_of_download(request, total)
    if part is not None and part.status == 416:
        return plain_error(416, "range not satisfiable", **{"Content-Range": f"bytes */{total}"})
    response = web.StreamResponse(
        status=200 if part is None else 206,
        headers={"Content-Type": content_type, "Cache-Control": cache_control, CACHE_STATE_HEADER: CacheState.MISS},
    )
    # The validators the cached file will have (its mtime is set to what is said here), so that the client can
    # revalidate next time: the upstream's Last-Modified when it gave one, else now.
    mtime_ns = download.fix_mtime(_http_date(download.headers.get("Last-Modified")) or time.time())
    response.headers["Last-Modified"] = email.utils.formatdate(mtime_ns / 1e9, usegmt=True)
    if download.length is not None:
        response.content_length = download.length
        response.headers["ETag"] = Validators.etag_of(download.length, mtime_ns)
    if part is not None:
        response.content_length = part.end - part.start
        response.headers["Content-Range"] = f"bytes {part.start}-{part.end - 1}/{total}"
        response.headers["Accept-Ranges"] = "bytes"
    await start_response(request, response)
    if request.method == "HEAD":
        return response
    if part is not None:
        assert total is not None
        return await send_followed_part(request, response, download, part, total, generation, reader)
    if download.length is not None:
        return await send_followed(request, response, download, generation, reader)
    return await stream_body(request, response, download.follow(generation, reader), cut_on=(Exception,))


def _part_of_download(request: web.BaseRequest, total: int | None) -> Part | None:
    """The one range a GET asks of a download whose file is `total` bytes (a 206, or a 416); None for the whole."""
    range_header = request.headers.get("Range")
    if total is None or request.method != "GET" or range_header is None or "If-Range" in request.headers:
        return None
    return part_for_range(range_header, total)


async def send_followed_part(
    request: web.BaseRequest,
    response: web.StreamResponse,
    download: Download,
    part: Part,
    total: int,
    generation: int | None = None,
    reader: IO[bytes] | None = None,
) -> web.StreamResponse:
    """Bytes `part.start` to `part.end` of a download of a `total`-byte file, sent by the kernel as they arrive (as
    `send_followed` sends a whole one: nothing is held in memory, however long the part). The part's last byte
    waits until the whole file is checked and is `total` bytes long: a client never gets all of a part (its whole
    Content-Length) of a file that fails its check, or of one that is not the size its Content-Range says. Cut
    like `send_followed` when the download fails meanwhile."""
    loop = asyncio.get_running_loop()
    last = part.end - 1
    held = b""  # the part's last byte, read once written, sent once the file is checked
    file_end = 0  # how far the file was readable: all of it once follow_spans ends
    try:
        async for span in download.follow_spans(generation, reader):
            if request.transport is None:
                raise ConnectionResetError("the client went away")
            file_end = span.end
            span.position = max(span.position, min(span.end, part.start))  # the bytes before the part: not sent
            count = min(span.end, last) - span.position
            if count > 0:
                sent = await loop.sendfile(request.transport, span.handle, span.position, count)
                span.position += sent
                if sent < count:
                    download.check_span_ended(span)
                    continue
            if span.position == last < span.end:
                held = os.pread(span.handle.fileno(), 1, last)  # on the loop, as Download.follow reads
                span.position += len(held)
                if not held:
                    download.check_span_ended(span)
                    continue
            if span.position > last:
                span.position = span.end  # the rest of the file is not this client's: followed until it is checked
        # follow_spans ended: the file is checked, and these are its bytes (other bytes would have raised).
        if not held or file_end != total:
            raise IntegrityError(f"the file is {file_end} bytes, not the {total} its Content-Range says")
        await response.write(held)
    except ConnectionError:
        note_client_gone(request)
        return response
    except Exception as exc:
        log.warning("cutting %s short: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def send_followed(
    request: web.BaseRequest,
    response: web.StreamResponse,
    download: Download,
    generation: int | None = None,
    reader: IO[bytes] | None = None,
) -> web.StreamResponse:
    """The body of a download whose length is declared, sent by the kernel from the file as it grows (sendfile), as
    cached files are: a follower holds no copy of the bytes and the event loop copies none (64 clients of one 50 MB
    download: 84-98 MB of PSS at the peak against 105-106 copied through). Cut like `stream_body` when the download
    fails midway. A length-less answer is chunked, which sendfile cannot frame: it is copied (`stream_body`)."""
    loop = asyncio.get_running_loop()
    try:
        async for span in download.follow_spans(generation, reader):
            if request.transport is None:
                raise ConnectionResetError("the client went away")
            count = span.end - span.position
            sent = await loop.sendfile(request.transport, span.handle, span.position, count)
            span.position += sent
            if sent < count:
                download.check_span_ended(span)
    except ConnectionError:
        note_client_gone(request)
        return response
    except Exception as exc:
        log.warning("cutting %s short: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def start_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Send a streamed response's headers, remembering that it started (see STARTED_RESPONSE)."""
    await response.prepare(request)
    request[STARTED_RESPONSE] = response


def note_client_gone(request: web.BaseRequest) -> None:
    request[CLIENT_GONE] = True
    if request.transport is not None:
        request.transport.abort()


async def stream_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    chunks: AsyncIterator[bytes],
    cut_on: tuple[type[BaseException], ...],
) -> web.StreamResponse:
    """Write `chunks` as the body of a prepared response. If their source fails with one of `cut_on` mid-way, the
    headers are gone already: the only honest signal left is an unfinished body, so the connection is cut.
    A client that hangs up meanwhile is noted (CLIENT_GONE), not raised."""
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionResetError:
        note_client_gone(request)  # a client leaving is normal: nothing to tell it, nothing to log as an error
        return response
    except cut_on as exc:
        log.warning("cutting %s short: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
