"""A TCP relay that delays every byte by a fixed time each way: a mirror "far away" on loopback.

    python -m bench.latency_proxy --listen PORT --to HOST:PORT --delay-ms 15 [--rate-mbps 100]

Each chunk read from one side is written to the other `delay` seconds after it arrived, in order, so a request
and its answer cost a round trip of twice the delay, and a connection's setup one more, as on a real link. With
`--rate-mbps`, each direction of each connection also carries at most that many megabits a second (a chunk
leaves once the link has sent the ones before it). It copies bytes only: nothing is parsed or changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

CHUNK = 256 * 1024


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, rate: float | None = None
) -> None:
    """Copy reader to writer, each chunk `delay` after it was read (and after the chunks before it have crossed
    a link of `rate` bytes a second), without holding up the reads."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    link_free = 0.0

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        with contextlib.suppress(OSError):
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            sent = time.monotonic()
            if rate:
                link_free = max(sent, link_free) + len(data) / rate
                sent = link_free
            queue.put_nowait((sent + delay, data))
    except OSError:
        pass
    queue.put_nowait((time.monotonic() + delay, b""))
    with contextlib.suppress(OSError):
        await delivering


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
    rate: float | None,
) -> None:
    await asyncio.sleep(delay)  # the client's SYN crossing the link
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    await asyncio.sleep(delay)  # the answer to it coming back
    try:
        await asyncio.gather(
            _pump(client_reader, server_writer, delay, rate), _pump(server_reader, client_writer, delay, rate)
        )
    finally:
        for writer in (server_writer, client_writer):
            writer.close()


async def serve(listen: int, target: tuple[str, int], delay: float, rate: float | None = None) -> None:
    server = await asyncio.start_server(
        lambda r, w: _relay(r, w, target, delay, rate), "127.0.0.1", listen, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--to", required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True, help="one way")
    parser.add_argument("--rate-mbps", type=float, help="megabits a second, each way of each connection")
    args = parser.parse_args()
    host, _, port = args.to.rpartition(":")
    rate = args.rate_mbps * 1e6 / 8 if args.rate_mbps else None
    asyncio.run(serve(args.listen, (host, int(port)), args.delay_ms / 1000, rate))


if __name__ == "__main__":
    main()
