"""A small in-process HTTP server base for fake upstreams, plus static-file serving with real HTTP caching rules.

Every fake listens on 127.0.0.1 with an ephemeral port, logs each request it sees, and can be told at run time to
misbehave (fail, reset, stall or trickle) so the proxy's error paths can be tested against real sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import functools
import gzip
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FAIL_MODES = ("503", "reset", "truncate")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it; `headers` is case-insensitive."""

    method: str
    path: str
    headers: Mapping[str, str]
    # The status answered; None while in flight, or when the connection was dropped instead.
    status: int | None = None


# Where a request keeps its log entry, so the status can be filled in when the response starts.
_RECORD_KEY: web.RequestKey[tuple[int, RecordedRequest]] = web.RequestKey("fake_server_record", tuple)


@dataclass
class Faults:
    """Run-time misbehaviour, shared by every server of one fake upstream.

    fail_mode: "503" answers 503; "reset" drops the connection before answering; "truncate" sends the headers and
    half the body, then drops the connection. fail_paths limits failures to paths ending with one of its entries.
    delay: seconds to wait before answering. bytes_per_second: throttle for response bodies.
    corrupt_files: file names (or path suffixes) whose bytes are altered, keeping their size.
    """

    fail_mode: str | None = None
    fail_paths: set[str] | None = None
    delay: float = 0.0
    bytes_per_second: int | None = None
    corrupt_files: set[str] = field(default_factory=set)

    def fails(self, path: str) -> str | None:
        if self.fail_mode is None:
            return None
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"unknown fail_mode {self.fail_mode!r}")
        if self.fail_paths is not None and not any(path.endswith(p) for p in self.fail_paths):
            return None
        return self.fail_mode

    def corrupts(self, path: str) -> bool:
        return any(path.endswith(name) for name in self.corrupt_files)


class FakeServer:
    """An aiohttp app on 127.0.0.1:<ephemeral>, logging requests; subclasses add routes in `setup_routes`."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._record_and_fault])
        self.app.on_response_prepare.append(self._on_prepare)
        self.setup_routes(self.app)

    def setup_routes(self, app: web.Application) -> None:
        """Override to add routes."""

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:40123."""
        if not self.port:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # No access log: tests read `requests` instead, and the log would flood pytest output.
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def count(self, path_suffix: str, method: str | None = None) -> int:
        """How many logged requests have a path ending with `path_suffix` (and this method, if given)."""
        return sum(1 for r in self.requests if r.path.endswith(path_suffix) and (method is None or r.method == method))

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def reset_log(self) -> None:
        self.requests.clear()

    @web.middleware
    async def _record_and_fault(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        index = len(self.requests)
        record = RecordedRequest(request.method, request.path, CIMultiDict(request.headers))
        self.requests.append(record)
        request[_RECORD_KEY] = (index, record)
        return await self._answer(request, handler)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # Noted when the headers go out, so the status is logged before the client can have read the body.
        index, record = request.get(_RECORD_KEY, (-1, None))
        if record is not None and index < len(self.requests) and self.requests[index] is record:
            self.requests[index] = dataclasses.replace(record, status=response.status)

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        mode = self.faults.fails(request.path)
        if mode == "503":
            return web.Response(status=503, text="upstream unavailable (fake)\n", headers={"Retry-After": "1"})
        if mode == "reset":
            _abort(request)
            raise asyncio.CancelledError  # nothing may be written after the socket is gone
        return await handler(request)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


# ---- static content with validators, ranges and throttling ----------------------------------------------------


@dataclass(frozen=True)
class Content:
    """A body to serve with its validators."""

    body: bytes
    content_type: str
    mtime: float
    cache_control: str | None = None
    # Offer gzip Content-Encoding to clients that accept it, as CDNs do for JSON.
    gzip: bool = False

    @functools.cached_property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.body).hexdigest() + '"'

    @property
    def last_modified(self) -> str:
        return email.utils.format_datetime(datetime.fromtimestamp(int(self.mtime), UTC), usegmt=True)


def corrupt(body: bytes) -> bytes:
    """Same length, different bytes, so a size check passes; the archive structure may break too."""
    if not body:
        return b"\0"
    data = bytearray(body)
    rng = random.Random(len(body))
    for _ in range(min(16, len(data))):
        i = rng.randrange(len(data))
        data[i] ^= 0xFF
    return bytes(data)


def _etag_matches(header: str, etag: str) -> bool:
    # Weak comparison, as RFC 9110 asks for If-None-Match.
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def _not_modified(request: web.Request, content: Content) -> bool:
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        return _etag_matches(inm, content.etag)
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        return int(content.mtime) <= since.timestamp()
    return False


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as an inclusive (start, end), or None if unsatisfiable; multi-ranges are not offered."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:  # suffix range: the last N bytes
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def _wanted_range(request: web.Request, content: Content) -> str | None:
    header = request.headers.get("Range")
    if not header:
        return None
    if_range = request.headers.get("If-Range")
    # If-Range with a stale validator means "send it all", not a range of a changed file.
    if if_range and if_range != content.etag and if_range != content.last_modified:
        return None
    return header


async def serve_content(request: web.Request, content: Content, faults: Faults) -> web.StreamResponse:
    """Answer GET/HEAD for `content` with ETag, Last-Modified, 304, 206/416, and the faults' throttle/truncation."""
    headers = {
        "ETag": content.etag,
        "Last-Modified": content.last_modified,
        "Accept-Ranges": "bytes",
        "Content-Type": content.content_type,
    }
    if content.cache_control:
        headers["Cache-Control"] = content.cache_control
    if content.gzip:
        headers["Vary"] = "Accept-Encoding"
    if _not_modified(request, content):
        return web.Response(status=304, headers=headers)
    status, body = 200, content.body
    range_header = _wanted_range(request, content)
    if range_header is None and content.gzip and _accepts_gzip(request):
        # A CDN weakens the ETag of a re-encoded body: the bytes on the wire are not the stored ones.
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
        headers["ETag"] = "W/" + content.etag
    elif range_header is not None:
        span = parse_range(range_header, len(content.body))
        if span is None:
            headers["Content-Range"] = f"bytes */{len(content.body)}"
            return web.Response(status=416, headers=headers)
        start, end = span
        status, body = 206, content.body[start : end + 1]
        headers["Content-Range"] = f"bytes {start}-{end}/{len(content.body)}"
    headers["Content-Length"] = str(len(body))
    response = web.StreamResponse(status=status, headers=headers)
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            await _write_body(request, response, body, faults)
    except ConnectionError:
        pass  # the client went away (or a fault cut it off); aiohttp closes quietly on a returned response
    return response


async def _write_body(request: web.Request, response: web.StreamResponse, body: bytes, faults: Faults) -> None:
    truncate = faults.fails(request.path) == "truncate"
    limit = len(body) // 2 if truncate else len(body)
    rate = faults.bytes_per_second
    chunk = CHUNK if rate is None else max(1, min(CHUNK, rate // 10))
    for offset in range(0, limit, chunk):
        await response.write(body[offset : min(offset + chunk, limit)])
        if rate:
            await asyncio.sleep(chunk / rate)
    if truncate:
        _abort(request)
        raise ConnectionResetError("truncated by fault")
    await response.write_eof()
