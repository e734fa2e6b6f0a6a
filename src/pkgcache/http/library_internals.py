"""The one door to behaviour of aiohttp and uvloop that is not their documented contract, and why pkgcache uses it.

Everything pkgcache relies on beyond those libraries' public API lives here, so an upgrade breaks one module, and
`tests/test_library_internals.py` fails loudly when it does (the project pins both to the tested minor versions;
`scripts/test-newest` runs the suite against their newest releases before a bump). Elsewhere, only public API.

1. **A zero-copy sendfile on uvloop.** uvloop serves more cached pages per second than asyncio's loop
   (BENCHMARKS.md) but has no `loop.sendfile`, and a cached file would then be copied through Python in chunks, at
   half the speed. `SendfileLoop.sendfile` does what asyncio's own loop does: wait until the transport has sent
   what it holds (the response headers; `get_write_buffer_size` is public), then let the kernel copy the file to
   the socket with os.sendfile. Writability is awaited on a duplicate of the socket's descriptor, because uvloop
   already watches the original for the transport. It is installed only while uvloop's `Loop.sendfile` is still
   the abstract one that raises NotImplementedError; once uvloop has its own, the plain uvloop loop is used.
   Relies on: `StreamResponse.prepare` writing the headers to the transport before it returns (aiohttp buffers
   them only for plain `Response`s), so that the file's bytes follow the headers.
2. **The fast path in front of the router.** `ServiceRunner` hangs `FastPath.in_front_of` on the server that
   `AppRunner.setup` made (`runner.server`, public) by replacing its `request_handler`: each connection takes
   the server's handler when it opens, so this must happen before the sites start.
3. **One line for a request that cannot be parsed.** aiohttp's server answers a request it cannot parse (a
   request line over 8,190 bytes, a broken header) with a 400 and logs it with `logger.exception` on
   `aiohttp.server`: a full traceback per request, so any client could fill the log with them.
   `quiet_unparsable_requests` puts a filter on that logger that turns such a record into one INFO line (the
   client's address, the status and aiohttp's reason, escaped and cut short), without the traceback. Relies on:
   aiohttp logging them on `aiohttp.server` with the parse error (an `HttpProcessingError` with a 4xx code) as
   the record's exc_info and the client's address as its one argument (`RequestHandler.handle_error`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import IO, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

try:
    import uvloop
except ImportError:  # not on every platform; asyncio's loop has a zero-copy sendfile of its own
    uvloop = None  # type: ignore[assignment]

# os.sendfile sends at most about 2 GiB per call on Linux.
MAX_SENDFILE_CHUNK = 1 << 30
# How often to look whether the transport has sent the headers it holds (almost always it already has).
FLUSH_POLL_SECONDS = 0.001
# How much of aiohttp's reason for refusing a request goes in the log line (it may quote the client's bytes).
MAX_REASON_CHARS = 200

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def uvloop_lacks_sendfile() -> bool:
    return uvloop is not None and uvloop.Loop.sendfile is asyncio.AbstractEventLoop.sendfile


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop a pkgcache worker runs on (a factory for asyncio.Runner)."""
    if uvloop is None:
        return asyncio.new_event_loop()
    if uvloop_lacks_sendfile():
        return SendfileLoop()
    return uvloop.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return f"{type(loop).__module__}.{type(loop).__name__}"


def put_in_front_of_server(runner: web.AppRunner, front: Callable[[Handler], Handler]) -> None:
    """Make every request of `runner`'s server go through `front(handler)` first (after setup, before sites)."""
    server = runner.server
    if server is None:
        raise RuntimeError("the runner is not set up: call setup() first")
    server.request_handler = front(server.request_handler)


class UnparsableRequestLines(logging.Filter):
    """Turns aiohttp's traceback for a request it could not parse into one INFO line (see 3. above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= exc.code < 500:
            return True
        reason = " ".join(str(exc.message).split())  # aiohttp's reasons run over lines
        if not reason.isprintable():
            reason = ascii(reason)  # a CR/LF from the client must not forge a log line of its own
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "a request from %s could not be parsed, answered %d: %s"
        record.args = (remote, exc.code, reason[:MAX_REASON_CHARS])
        record.exc_info, record.exc_text = None, None
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        # The logger let it through as an error: at its new level it goes out only if the logger logs those.
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


def quiet_unparsable_requests() -> None:
    """Put `UnparsableRequestLines` on aiohttp's server logger, once per process."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(known, UnparsableRequestLines) for known in logger.filters):
        logger.addFilter(UnparsableRequestLines())


async def sendfile_to_socket(
    loop: asyncio.AbstractEventLoop, sock_fd: int, file: IO[bytes], offset: int, count: int | None
) -> int:
    """Send `count` bytes of `file` from `offset` to a non-blocking socket with os.sendfile; the bytes sent.

    Stops early only if the file is shorter than asked. The file's position ends after the last byte sent, as
    `loop.sendfile` promises.
    """
    if count is None:
        count = os.fstat(file.fileno()).st_size - offset
    watched = os.dup(sock_fd)
    sent_total = 0
    try:
        while sent_total < count:
            try:
                sent = os.sendfile(
                    watched, file.fileno(), offset + sent_total, min(count - sent_total, MAX_SENDFILE_CHUNK)
                )
            except (BlockingIOError, InterruptedError):
                await _writable(loop, watched)
                continue
            if sent == 0:
                break  # end of the file
            sent_total += sent
    finally:
        os.close(watched)
        file.seek(offset + sent_total)
    return sent_total


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()
    loop.add_writer(fd, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _sent_what_it_holds(transport: asyncio.WriteTransport) -> None:
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("the connection closed before the file was sent")
        await asyncio.sleep(FLUSH_POLL_SECONDS)


if uvloop is not None:

    class SendfileLoop(uvloop.Loop):  # type: ignore[misc,name-defined]
        """uvloop with `sendfile` for plain TCP transports."""

        async def sendfile(  # type: ignore[override]  # takes what its base does; annotated for our transports
            self,
            transport: asyncio.WriteTransport,
            file: IO[bytes],
            offset: int = 0,
            count: int | None = None,
            *,
            fallback: bool = True,
        ) -> int:
            sock: Any = transport.get_extra_info("socket")
            if sock is None or transport.is_closing():
                raise ConnectionResetError("the connection closed before the file was sent")
            await _sent_what_it_holds(transport)
            return await sendfile_to_socket(self, sock.fileno(), file, offset, count)


class ConnectionWatch:
    """Closes client connections that hold a slot without using it, so they cannot crowd out real clients.

    - A connection that has not sent a complete first request within `header_timeout` (slowloris: headers sent a
      byte at a time) is closed. Later requests on a kept-alive connection are covered by aiohttp's own
      keep-alive timer (`keepalive_timeout` on the runner), which closes a connection whose next request head
      is not complete in time.
    - When the open connections near `max_connections` (derived from the process's file limit), the ones idle
      the longest are closed first, so new clients still get in.
    Relies on: `Server.connections` (the server's open handlers) and each handler's request count and in-progress
    flag, which aiohttp keeps for its own keep-alive logic.
    """

    def __init__(self, header_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self._first_seen: dict[Any, float] = {}
        self.closed_slow = 0
        self.closed_idle = 0

    def check(self, runner: web.BaseRunner, now: float) -> None:
        server = runner.server
        if server is None:
            return
        handlers = server.connections  # type: ignore[attr-defined]
        alive = set(handlers)
        for handler in [known for known in self._first_seen if known not in alive]:
            del self._first_seen[handler]
        for handler in handlers:
            opened = self._first_seen.setdefault(handler, now)
            if handler._request_count == 0 and not handler._request_in_progress and now - opened > self.header_timeout:
                handler.force_close()
                self.closed_slow += 1
        excess = len(handlers) - self.max_connections
        if excess > 0:
            idle = [h for h in handlers if not h._request_in_progress]
            for handler in sorted(idle, key=lambda h: self._first_seen.get(h, now))[:excess]:
                handler.force_close()
                self.closed_idle += 1

    async def run(self, runner: web.BaseRunner, every: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            self.check(runner, loop.time())
