"""The event loop pkgcache serves on: uvloop, given the zero-copy `sendfile` it lacks; asyncio's own loop without it.

uvloop runs the loop and its transports in C, which serves more cached pages per second than asyncio's loop
(BENCHMARKS.md). But uvloop has no `loop.sendfile`, and aiohttp then sends each cached file by reading chunks in a
thread and copying them through the transport, at half the speed. `SendfileLoop.sendfile` does what asyncio's own
loop does instead: wait until the transport has sent what it holds (the response headers), then let the kernel
copy the file to the socket with os.sendfile. Writability is awaited on a duplicate of the socket's descriptor,
because uvloop already watches the original for the transport.
"""

from __future__ import annotations

import asyncio
import os
from typing import IO, Any

try:
    import uvloop
except ImportError:  # not on every platform; asyncio's loop has a zero-copy sendfile of its own
    uvloop = None  # type: ignore[assignment]

# os.sendfile sends at most about 2 GiB per call on Linux.
MAX_SENDFILE_CHUNK = 1 << 30
# How often to look whether the transport has sent the headers it holds (almost always it already has).
FLUSH_POLL_SECONDS = 0.001


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop a pkgcache worker runs on."""
    if uvloop is None:
        return asyncio.new_event_loop()
    return SendfileLoop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return f"{type(loop).__module__}.{type(loop).__name__}"


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

        async def sendfile(
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
