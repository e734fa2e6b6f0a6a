"""The serving loop: uvloop with the zero-copy sendfile pkgcache adds to it, under a slow and a vanishing reader."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pkgcache.http import library_internals
from pkgcache.http.library_internals import new_event_loop
from tests.fakes.pypi_upstreams import OfficialLikeUpstream

pytestmark = pytest.mark.skipif(library_internals.uvloop is None, reason="uvloop is not installed here")

SIZE = 8 * 1024 * 1024 + 123


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def _read_slowly(sock: socket.socket, into: bytearray, stop_after: int | None = None) -> None:
    """A reader slower than the sender, so the socket's buffer fills and the sender must wait for room."""
    while True:
        if stop_after is not None and len(into) >= stop_after:
            sock.close()
            return
        chunk = sock.recv(256 * 1024)
        if not chunk:
            return
        into.extend(chunk)
        time.sleep(0.001)


def _serve_file_once(path: Path, offset: int, count: int | None, stop_after: int | None = None) -> tuple[object, bytes]:
    """Send `path` with SendfileLoop.sendfile to one TCP client; what sendfile returned (or raised), and the bytes."""
    received = bytearray()
    outcome: list[object] = []

    async def main() -> None:
        done = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HEAD")  # something the transport holds before the file, like response headers
            try:
                with path.open("rb") as handle:
                    sent = await asyncio.get_running_loop().sendfile(writer.transport, handle, offset, count)
                    outcome.append((sent, handle.tell()))
            except Exception as exc:
                outcome.append(exc)
            writer.close()
            done.set_result(None)

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        reader = threading.Thread(target=_read_slowly, args=(client, received, stop_after))
        reader.start()
        await asyncio.wait_for(done, 60)
        await asyncio.to_thread(reader.join, 30)
        client.close()
        server.close()

    loop = new_event_loop()
    try:
        assert type(loop).__name__ == "SendfileLoop"
        loop.run_until_complete(main())
    finally:
        loop.close()
    return outcome[0], bytes(received)


def test_sendfile_sends_the_whole_file_after_what_the_transport_held(big_file: Path) -> None:
    outcome, received = _serve_file_once(big_file, 0, None)
    assert outcome == (SIZE, SIZE)
    assert received[:4] == b"HEAD"
    assert hashlib.sha256(received[4:]).digest() == hashlib.sha256(big_file.read_bytes()).digest()


def test_sendfile_sends_a_range(big_file: Path) -> None:
    offset, count = 1_000_001, 3 * 1024 * 1024
    outcome, received = _serve_file_once(big_file, offset, count)
    assert outcome == (count, offset + count)
    assert received[4:] == big_file.read_bytes()[offset : offset + count]


def test_a_client_that_goes_away_mid_file_is_an_error_not_a_hang(big_file: Path) -> None:
    outcome, received = _serve_file_once(big_file, 0, None, stop_after=1024 * 1024)
    assert isinstance(outcome, ConnectionError), outcome
    assert len(received) < SIZE


def test_a_served_process_sends_cached_files_whole_and_in_ranges(
    tmp_path: Path, official_upstream: OfficialLikeUpstream
) -> None:
    from tests.cache_service import CacheProcess
    from tests.fakes.dists import find_dist, sample_dists
    from tests.support import http_get

    name = "alpha-2.0-py3-none-any.whl"
    expected = find_dist(sample_dists(), name)
    process = CacheProcess(tmp_path / "data", "--pypi-upstream", official_upstream.index_url)
    try:
        url = f"{process.url}/pypi/files/alpha/{name}"
        miss, hit = http_get(url), http_get(url)
        assert (miss.headers["x-pkgcache-cache"], hit.headers["x-pkgcache-cache"]) == ("miss", "hit")
        assert hashlib.sha256(hit.body).hexdigest() == expected.sha256
        part = http_get(url, {"Range": "bytes=10-99"})
        assert part.status == 206 and part.body == hit.body[10:100]
    finally:
        process.terminate()
    assert "event loop: pkgcache.http.library_internals.SendfileLoop" in process.log_path.read_text()
