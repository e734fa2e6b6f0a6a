"""Start pkgcache with one experimental change applied from outside src/, to measure a proposal before making it.

    python -m bench.pkgcache_variant VARIANT serve --config FILE

VARIANT is `asis` or changes joined by `+`:
  zero-copy     aiohttp's file sending replaced by os.sendfile straight onto the socket, whatever the loop
                (asyncio's loop.sendfile is zero-copy already; uvloop has none, and aiohttp then copies)
  lean          no per-request middleware but the error mapping: an upper bound of what a leaner hit path gains
The event loop is asyncio's own unless the variant includes `uvloop`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from aiohttp import web_fileresponse
from frozenlist import FrozenList

MAX_SENDFILE = 1 << 30


async def _wait_writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _sendfile_on_socket(transport: Any, fobj: Any, offset: int, count: int) -> None:
    """os.sendfile from the page cache to the socket: no copy through Python, no thread hop per chunk.

    The transport owns the socket's fd, and uvloop refuses a second watcher on it, so a duplicate fd (same
    socket) is watched for writability instead. The headers aiohttp wrote are flushed first.
    """
    loop = asyncio.get_running_loop()
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.0005)
    sock = transport.get_extra_info("socket")
    fd = os.dup(sock.fileno())
    try:
        while count > 0:
            try:
                sent = os.sendfile(fd, fobj.fileno(), offset, min(count, MAX_SENDFILE))
            except BlockingIOError:
                await _wait_writable(loop, fd)
                continue
            if sent == 0:
                raise ConnectionResetError("client went away")
            offset += sent
            count -= sent
    finally:
        os.close(fd)


async def _zero_copy_sendfile(self: Any, request: Any, fobj: Any, offset: int, count: int) -> Any:
    writer = await super(web_fileresponse.FileResponse, self).prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("Connection lost")
    await _sendfile_on_socket(transport, fobj, offset, count)
    await super(web_fileresponse.FileResponse, self).write_eof()
    return writer


def _lean_middlewares() -> None:
    from pkgcache.http import app as app_module

    create = app_module.create_app

    def create_lean(settings: Any) -> Any:
        app = create(settings)
        app._middlewares = FrozenList([m for m in app.middlewares if m.__name__ == "shared_errors"])
        return app

    app_module.create_app = create_lean


def apply(variant: str) -> None:
    for change in variant.split("+"):
        if change == "zero-copy":
            web_fileresponse.FileResponse._sendfile = _zero_copy_sendfile  # type: ignore[method-assign]
        elif change == "lean":
            _lean_middlewares()
        elif change == "uvloop":
            # pkgcache runs on asyncio's loop (zero-copy sendfile); this measures what uvloop would change.
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        elif change != "asis":
            raise SystemExit(f"unknown variant {change!r}")


def main() -> None:
    variant, *rest = sys.argv[1:]
    apply(variant)
    from pkgcache.cli import main as pkgcache_main

    sys.argv = ["pkgcache", *rest]
    pkgcache_main()


if __name__ == "__main__":
    main()
