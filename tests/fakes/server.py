"""A small in-process HTTP server base for fake upstreams, plus static-file serving with real HTTP caching rules.

Every fake listens on 127.0.0.1 with an ephemeral port, logs each request it sees, and can be told at run time to
misbehave (fail, reset, hang, stall, trickle or cut answers short) so the proxy's error paths can be tested against
real sockets. The PyPI and conda fakes both build on this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import functools
import gzip
import hashlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, overload

from aiohttp import web
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Besides these, any 3-digit status such as "503" or "429" is a fault mode: that status is answered.
FAIL_MODES = ("reset", "hang", "truncate")
CHUNK = 64 * 1024

T = TypeVar("T")


def is_status_mode(mode: str) -> bool:
    return len(mode) == 3 and mode.isdigit()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it.

    `headers` is case-insensitive for lookups (`.get("user-agent")`) and keeps the client's spelling when iterated.
    """

    method: str
    path: str
    headers: CIMultiDict[str]
    query: str = ""
    # The status answered; None while in flight, or when the connection was dropped instead.
    status: int | None = None


RequestFilter = str | Callable[[RecordedRequest], bool]


def request_matches(request: RecordedRequest, what: RequestFilter, method: str | None = None) -> bool:
    """`what` is a path suffix or a predicate; `method`, when given, must match too."""
    if method is not None and request.method != method:
        return False
    return what(request) if callable(what) else request.path.endswith(what)


# Where a request keeps its log entry, so the status can be filled in when the response starts.
_RECORD_KEY: web.RequestKey[tuple[int, RecordedRequest]] = web.RequestKey("fake_server_record", tuple)


@dataclass
class Faults:
    """Run-time misbehaviour, shared by every server of one fake upstream.

    fail_mode: a 3-digit status such as "503" answers that status; "reset" drops the connection with a TCP reset
    before answering; "hang" answers nothing for `hang_seconds`; "truncate" sends the headers and half the body,
    then closes the connection. fail_paths limits failures to paths ending with one of its entries.
    delay: seconds to wait before answering. bytes_per_second: throttle for response bodies (None or 0: none).
    fast_bytes: each body's first this many bytes are sent unthrottled (nginx's limit_rate_after), the rest at
    bytes_per_second.
    corrupt_files: file names (or path suffixes) whose bytes are altered, keeping their size.
    retry_after: seconds sent as Retry-After with 429 and 503 fault answers (None: no header).
    """

    fail_mode: str | None = None
    fail_paths: set[str] | None = None
    delay: float = 0.0
    bytes_per_second: int | None = None
    fast_bytes: int = 0
    corrupt_files: set[str] = field(default_factory=set)
    hang_seconds: float = 30.0
    retry_after: int | None = None

    def fails(self, path: str) -> str | None:
        if self.fail_mode is None:
            return None
        if self.fail_mode not in FAIL_MODES and not is_status_mode(self.fail_mode):
            raise ValueError(f"unknown fail_mode {self.fail_mode!r}")
        if self.fail_paths is not None and not any(path.endswith(p) for p in self.fail_paths):
            return None
        return self.fail_mode

    def corrupts(self, path: str) -> bool:
        return any(path.endswith(name) for name in self.corrupt_files)


class FaultKnob(Generic[T]):
    """An attribute of a fake that reads and writes a field of its `faults`: the one named `name`, else its own name."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> FaultKnob[T]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.faults, self.name)  # type: ignore[attr-defined]

    def __set__(self, obj: object, value: T) -> None:
        setattr(obj.faults, self.name, value)  # type: ignore[attr-defined]


class FakeServer:
    """An aiohttp app on 127.0.0.1:<ephemeral>, logging requests.

    Subclasses answer in `handle` (every method and path goes there) or add their own routes in `setup_routes`.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._record_and_fault])
        self.app.on_response_prepare.append(self._on_prepare)
        self.setup_routes(self.app)

    def setup_routes(self, app: web.Application) -> None:
        """Override to route differently; by default everything goes to `handle`."""
        app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:40123."""
        if not self.port:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # No access log: tests read `requests` instead, and the log would flood pytest output. handler_cancellation
        # stops work when the client goes away, as nginx does; a short shutdown_timeout keeps stop() fast even with
        # hanging handlers.
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
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

    def count(self, what: RequestFilter, method: str | None = None) -> int:
        """How many logged requests have a path ending with `what` (or match the predicate `what`), of `method`."""
        return sum(1 for r in self.requests if request_matches(r, what, method))

    def count_whole(self, what: RequestFilter) -> int:
        """How many GETs for `what` asked for the whole file (no Range): the downloads, not metadata range reads."""
        return sum(1 for r in self.requests if request_matches(r, what, "GET") and "Range" not in r.headers)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def reset_log(self) -> None:
        self.requests.clear()

    @web.middleware
    async def _record_and_fault(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        index = len(self.requests)
        # From the raw headers: aiohttp's parsed ones respell well-known names, and tests may look at the spelling.
        headers = CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers)
        record = RecordedRequest(request.method, request.path, headers, request.query_string)
        self.requests.append(record)
        request[_RECORD_KEY] = (index, record)
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        mode = self.faults.fails(request.path)
        if mode is not None and mode != "truncate":  # truncation needs the real body: serve_content does it
            return await fault_response(request, mode, self.faults)
        return await handler(request)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # Noted when the headers go out, so the status is logged before the client can have read the body.
        index, record = request.get(_RECORD_KEY, (-1, None))
        if record is not None and index < len(self.requests) and self.requests[index] is record:
            self.requests[index] = dataclasses.replace(record, status=response.status)


# ---- answers that are no answers -------------------------------------------------------------------------------


async def fault_response(request: web.Request, mode: str, faults: Faults) -> web.StreamResponse:
    """A bare status ("503", "429", ...), a TCP reset ("reset") or silence for `faults.hang_seconds` ("hang")."""
    if mode == "reset":
        reset_connection(request)
        raise asyncio.CancelledError  # nothing may be written after the socket is gone
    if mode == "hang":
        await asyncio.sleep(faults.hang_seconds)
        return web.Response(status=504, text="gave up hanging\n")
    if is_status_mode(mode):
        status = int(mode)
        headers = {}
        if faults.retry_after is not None and status in (429, 503):
            headers["Retry-After"] = str(faults.retry_after)
        return web.Response(status=status, text=f"{status} fault injected by test\n", headers=headers)
    raise ValueError(f"unknown fault mode {mode!r}")


def reset_connection(request: web.Request) -> None:
    """Drop the TCP connection with an RST, without any HTTP answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns close() into a reset instead of an orderly FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


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
    # Further response headers (Vary, Server, ...); they win over the ones serve_content sets.
    headers: Mapping[str, str] = field(default_factory=dict)

    @functools.cached_property
    def etag(self) -> str:
        # The type is part of the representation: the same bytes under another Content-Type get another tag.
        digest = hashlib.md5(self.content_type.encode() + b"\0" + self.body)
        return '"' + digest.hexdigest() + '"'

    @property
    def last_modified(self) -> str:
        return email.utils.format_datetime(datetime.fromtimestamp(int(self.mtime), UTC), usegmt=True)


def corrupt(body: bytes) -> bytes:
    """Same length, different bytes, so a size check passes; the archive structure may break too."""
    if not body:
        return b"\0"
    data = bytearray(body)
    rng = random.Random(len(body))
    for i in rng.sample(range(len(data)), min(16, len(data))):
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


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """One `bytes=` range as an inclusive (start, end); False if no byte of it exists (416); None to ignore the
    header and send everything (another unit, several ranges, or bad syntax), as RFC 9110 allows."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:  # suffix range: the last N bytes
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size > 0 else False
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return False
    return start, min(end, size - 1)


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def _wanted_range(request: web.Request, content: Content) -> tuple[int, int] | bool | None:
    header = request.headers.get("Range")
    if not header:
        return None
    if_range = request.headers.get("If-Range")
    # If-Range with a stale validator means "send it all", not a range of a changed file.
    if if_range and if_range != content.etag and if_range != content.last_modified:
        return None
    return parse_range(header, len(content.body))


async def serve_content(
    request: web.Request, content: Content, faults: Faults | None = None, *, truncate: bool = False
) -> web.StreamResponse:
    """Answer GET/HEAD for `content` with ETag, Last-Modified, 304, 206/416, and the faults' throttle/truncation.

    `truncate` (or a "truncate" fault for this path) cuts the answer whatever the request: full headers and
    Content-Length, half the body, then the connection is closed.
    """
    faults = faults or Faults()
    cut = truncate or faults.fails(request.path) == "truncate"
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
    headers.update(content.headers)
    if cut:
        return await _send(request, 200, headers, content.body, faults, cut=True)
    if _not_modified(request, content):
        return web.Response(status=304, headers=headers)
    status, body = 200, content.body
    span = _wanted_range(request, content)
    if span is None and content.gzip and _accepts_gzip(request):
        # A CDN weakens the ETag of a re-encoded body: the bytes on the wire are not the stored ones.
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
        headers["ETag"] = "W/" + content.etag
    elif span is False:
        headers["Content-Range"] = f"bytes */{len(content.body)}"
        return web.Response(status=416, headers=headers)
    elif isinstance(span, tuple):
        start, end = span
        status, body = 206, content.body[start : end + 1]
        headers["Content-Range"] = f"bytes {start}-{end}/{len(content.body)}"
    return await _send(request, status, headers, body, faults)


async def _send(
    request: web.Request, status: int, headers: dict[str, str], body: bytes, faults: Faults, *, cut: bool = False
) -> web.StreamResponse:
    headers["Content-Length"] = str(len(body))
    response = web.StreamResponse(status=status, headers=headers)
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            sent = body[: len(body) // 2] if cut else body
            await _write_body(response, sent[: faults.fast_bytes], None)
            await _write_body(response, sent[faults.fast_bytes :], faults.bytes_per_second)
        if cut:
            if request.transport is not None:
                request.transport.close()  # close() flushes what was written, then sends FIN
            raise ConnectionResetError("truncated by fault")
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (or a fault cut it off); aiohttp closes quietly on a returned response
    return response


async def _write_body(response: web.StreamResponse, body: bytes, rate: int | None) -> None:
    chunk = max(1, min(CHUNK, rate // 10)) if rate else CHUNK
    loop = asyncio.get_running_loop()
    started = loop.time()
    for offset in range(0, len(body), chunk):
        await response.write(body[offset : offset + chunk])
        if rate:
            # Sleep against the schedule, not per chunk, so the rate does not drift.
            ahead = started + (offset + chunk) / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
