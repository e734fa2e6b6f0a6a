"""Clients that misbehave or leave: hang-ups mid-download, slow headers, idle keep-alive, odd ranges, and request
paths carrying line breaks. pkgcache runs as a real process where its log or its connection handling is the point."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cache_service import CacheProcess, start_cache
from tests.fakes.faulty import Fault, FaultyPypiUpstream, Kind
from tests.faults.harness import CLIENT_TIMEOUT, SETTLE_SECONDS, Checks, fault_dists, settings_for, start_process
from tests.support import BackgroundLoop, http_get

BIG = "bigpkg-1.0-py3-none-any.whl"
ALPHA = "alpha-2.0-py3-none-any.whl"
SERVER_TIMEOUTS = {"header_timeout": 1.0, "keepalive_timeout": 1.0}


@pytest.fixture
def mirror(bg_loop: BackgroundLoop) -> Iterator[FaultyPypiUpstream]:
    upstream = FaultyPypiUpstream(fault_dists())
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


def _sections(mirror: FaultyPypiUpstream, **server: float) -> dict[str, dict[str, object]]:
    sections: dict[str, dict[str, object]] = {"pypi": {"upstreams": [mirror.index_url]}, "conda": {"enabled": False}}
    if server:
        sections["server"] = dict(server)
    return sections


def _access_lines(process: CacheProcess, needle: str) -> list[str]:
    text = process.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "pkgcache.access: " in line and needle in line]


def _wait_for_lines(process: CacheProcess, needle: str, count: int) -> list[str]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while len(lines := _access_lines(process, needle)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return lines


# ---- a client hanging up ---------------------------------------------------------------------------------------


def test_a_client_hanging_up_is_logged_499_and_not_counted_as_an_error(
    mirror: FaultyPypiUpstream, tmp_path: Path
) -> None:
    mirror.plan.set(f"/{BIG}", Fault(Kind.DRIP, rate=256 * 1024))  # 4 MiB in about sixteen seconds
    process = start_process(tmp_path / "data", _sections(mirror), "--workers", "2")
    checks = Checks()
    try:
        clients = 8
        got = asyncio.run(_hang_up_after(f"{process.url}/pypi/files/bigpkg/{BIG}", clients, 64 * 1024))
        checks.expect(all(n >= 64 * 1024 for n in got), "each client got bytes before hanging up", got)
        lines = _wait_for_lines(process, f"GET /pypi/files/bigpkg/{BIG} ", clients)
        statuses = [line.split(f"{BIG} ", 1)[1].split(" ", 1)[0] for line in lines]
        checks.expect(
            len(lines) == clients and set(statuses) == {"499"},
            f"one access line per client, each with status 499 ({clients} clients)",
            statuses,
        )
        stats = json.loads(http_get(f"{process.url}/-/stats").body)["sides"]["pypi"]
        checks.expect(stats["errors"] == 0, "a client leaving is not counted as an error", stats)
        log = process.log_path.read_text(errors="replace")
        noise = [w for w in ("Traceback", "Cannot write to closing transport", "ERROR") if w in log]
        checks.expect(not noise, "and logs no error or traceback", noise)
    finally:
        process.terminate()
    checks.verdict()


async def _hang_up_after(url: str, clients: int, enough: int) -> list[int]:
    async def one() -> int:
        got = 0
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as response:
            async for chunk in response.content.iter_any():
                got += len(chunk)
                if got >= enough:
                    break
            response.close()
        return got

    return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(clients))), CLIENT_TIMEOUT)


# ---- slow and idle connections ---------------------------------------------------------------------------------


def test_connections_sending_headers_slowly_are_closed(mirror: FaultyPypiUpstream, tmp_path: Path) -> None:
    process = start_process(tmp_path / "data", _sections(mirror, **SERVER_TIMEOUTS), "--workers", "2")
    try:
        closed, normal = asyncio.run(_slowloris(process.port, connections=20))
    finally:
        process.terminate()
    checks = Checks()
    checks.expect(all(closed), "every connection sending its headers slowly was closed by pkgcache", closed)
    checks.expect(normal == 200, "a normal client is served meanwhile", normal)
    checks.verdict()


async def _slowloris(port: int, connections: int) -> tuple[list[bool], int | None]:
    """Each connection sends a request line and then one header byte every half second, for up to CLIENT_TIMEOUT
    seconds; True for each the server closed (or answered and closed) before that."""

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            deadline = time.monotonic() + CLIENT_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    writer.write(b"a")
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(4096), 0.5)
                except TimeoutError:
                    continue
                except ConnectionError:
                    return True
                if not data or b"HTTP/1.1 408" in data:
                    return True
            return False
        finally:
            writer.close()

    slow = asyncio.gather(*(one() for _ in range(connections)))
    await asyncio.sleep(1.0)
    normal = await asyncio.to_thread(lambda: http_get(f"http://127.0.0.1:{port}/-/health", timeout=5).status)
    return list(await slow), normal


def test_idle_keep_alive_connections_are_closed(mirror: FaultyPypiUpstream, tmp_path: Path) -> None:
    process = start_process(tmp_path / "data", _sections(mirror, **SERVER_TIMEOUTS), "--workers", "1")
    try:
        closed = asyncio.run(_closed_after_one_request(process.port))
    finally:
        process.terminate()
    checks = Checks()
    checks.expect(closed, f"an idle keep-alive connection is closed by pkgcache (waited {CLIENT_TIMEOUT:.0f} s)")
    checks.verdict()


async def _closed_after_one_request(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        try:
            return await asyncio.wait_for(reader.read(1), CLIENT_TIMEOUT) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    finally:
        writer.close()


# ---- odd requests ----------------------------------------------------------------------------------------------


def test_an_empty_suffix_range_is_416(bg_loop: BackgroundLoop, mirror: FaultyPypiUpstream, tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data", [mirror.index_url], conda={"enabled": False})
    cache = start_cache(bg_loop, settings)
    try:
        path = f"/pypi/files/alpha/{ALPHA}"
        whole = cache.get(path)
        assert whole.status == 200, whole
        assert mirror.count(f"/{ALPHA}") == 1
        empty = cache.get(path, {"Range": "bytes=-0"})
    finally:
        cache.stop()
    checks = Checks()
    checks.expect(
        empty.status == 416, "`Range: bytes=-0` on a cached file: 416 (RFC 9110)", (empty.status, empty.headers)
    )
    checks.expect(
        empty.headers.get("content-range") == f"bytes */{len(whole.body)}", "with Content-Range: bytes */size", ""
    )
    checks.verdict()


# A whole access line, as a client would like it to appear in the log (no slash: it must fit in one path segment).
FORGED = "1999-01-01 00:00:00,000 INFO pkgcache.access: GET forged 200 cache=hit bytes=1 ms=0.1 upstream=-"


def test_a_crlf_in_the_path_cannot_forge_an_access_log_line(mirror: FaultyPypiUpstream, tmp_path: Path) -> None:
    """Encoded CR/LF in a path: in a file name, in a project name, and where no route matches at all."""
    encoded = "%0D%0A" + FORGED.replace(" ", "%20")
    targets = {
        "crlf-file": f"/pypi/files/crlf-file{encoded}/y.whl",
        "crlf-page": f"/pypi/simple/crlf-page{encoded}/",
        "crlf-nowhere": f"/crlf-nowhere{encoded}",
    }
    process = start_process(tmp_path / "data", _sections(mirror), "--workers", "1")
    try:
        statuses = {token: asyncio.run(_raw_request(process.port, target)) for token, target in targets.items()}
        lines = {token: _wait_for_lines(process, token, 1) for token in targets}
        log = process.log_path.read_text(errors="replace")
    finally:
        process.terminate()
    checks = Checks()
    checks.expect(all(s is not None and s >= 400 for s in statuses.values()), "each request is refused", statuses)
    checks.expect(all(len(found) == 1 for found in lines.values()), "each gets one access line", lines)
    forged = [line for line in log.splitlines() if line.lstrip("\r").startswith("1999-01-01")]
    checks.expect(not forged, "no line of the log was written by a client", forged)
    checks.verdict()


async def _raw_request(port: int, target: str) -> int | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
    finally:
        writer.close()
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
