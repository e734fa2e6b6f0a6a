"""A download's followers read the file while it is written (storage/downloads.py), below the HTTP layer."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import ClientPayloadError, ClientSession, web
from aiohttp.test_utils import TestServer

from pkgcache.http.responses import send_download
from pkgcache.storage.downloads import CHUNK_SIZE, Download, Expected, IntegrityError

T = TypeVar("T")


async def _follow_late(tmp_path: Path, data: bytes) -> tuple[bytes, list[int]]:
    """A follower that arrives once `data` is written (the file is one byte longer, so never complete): what it
    read, and how many turns another task had taken when each chunk arrived."""
    download = Download(tmp_path / "late.whl", tmp_path / "late.whl.part", Expected(size=len(data) + 1))
    download.begin("test upstream", {})
    for start in range(0, len(data), 64 * 1024):
        await download.write(data[start : start + 64 * 1024])
    turns = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    read, seen = bytearray(), []
    follower = download.follow()
    try:
        async for chunk in follower:
            read += chunk
            seen.append(turns)
            if len(read) >= len(data):
                break
    finally:
        await follower.aclose()
        stop.set()
        await ticker
        await download.close_file()
    return bytes(read), seen


def test_a_follower_far_behind_the_download_reads_every_byte_and_lets_other_tasks_run(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(16 * CHUNK_SIZE + 123)
    read, seen = asyncio.run(_follow_late(tmp_path, data))
    assert read == data
    assert len(seen) == 17
    # Between any two chunks of the catch-up, the other task ran: a late follower does not hold the loop.
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def _discard_under_a_follower(tmp_path: Path) -> tuple[bytes, BaseException | None]:
    """A follower catching up on the first upstream's bytes when they are discarded (its read of the file racing
    the file's truncation) and another upstream's arrive: what it read, and what it raised."""
    first, second = random.Random(1).randbytes(4 * CHUNK_SIZE), random.Random(2).randbytes(4 * CHUNK_SIZE)
    download = Download(tmp_path / "lied.whl", tmp_path / "lied.whl.part", Expected(size=len(first) + 1))
    download.begin("lying upstream", {})
    await download.write(first)
    read = bytearray()
    got_one = asyncio.Event()

    async def follow() -> None:
        async for chunk in download.follow():
            read.extend(chunk)
            got_one.set()

    follower = asyncio.create_task(follow())
    await got_one.wait()  # the follower is between two chunks of its catch-up
    await download.discard()
    download.begin("honest upstream", {})
    await download.write(second)
    raised: BaseException | None = None
    try:
        async with asyncio.timeout(30):  # a guard against a hang, not a measure
            await follower
    except IntegrityError as exc:
        raised = exc
    finally:
        await download.close_file()
    return bytes(read), raised


def test_a_follower_whose_bytes_are_discarded_is_told_and_never_given_the_next_upstreams(tmp_path: Path) -> None:
    read, raised = asyncio.run(_discard_under_a_follower(tmp_path))
    assert isinstance(raised, IntegrityError)
    assert "came from an upstream that failed its check" in str(raised)
    first = random.Random(1).randbytes(4 * CHUNK_SIZE)
    assert read == first[: len(read)] and 0 < len(read) < len(first)


async def _pinned_follower_after_a_takeover(tmp_path: Path, pinned: bool) -> tuple[bytes, BaseException | None]:
    """A follower that starts once the first upstream's bytes were discarded and another's arrive, before it read
    any: with the generation it was judged on pinned, or not. What it read, and what it raised."""
    tmp_path.mkdir(exist_ok=True)
    first, second = b'{"info": {}, "first": 1}', b'{"info": {"base_url": "http://elsewhere/"}}'
    download = Download(tmp_path / "repodata.json", tmp_path / "repodata.json.part", Expected(), compressed=True)
    download.begin("first upstream", {})
    await download.write(first)
    judged = download.generation  # the first upstream's bytes were read and found fit to stream
    await download.discard()
    download.begin("second upstream", {})
    await download.write(second)
    read, raised = bytearray(), None
    try:
        async with asyncio.timeout(5):  # a guard against a hang, not a measure
            async for chunk in download.follow(judged if pinned else None):
                read += chunk
                if len(read) >= len(second) - 1:  # its last byte is held until the download is whole
                    break
    except IntegrityError as exc:
        raised = exc
    finally:
        await download.close_file()
    return bytes(read), raised


def test_a_follower_pinned_to_the_bytes_it_was_judged_on_is_never_given_another_upstreams(tmp_path: Path) -> None:
    """conda/cached_channels.py streams a repodata download as it comes only once its start was read and sends
    clients nowhere else; bytes of an upstream that took over since were not read, even from their first byte."""
    read, raised = asyncio.run(_pinned_follower_after_a_takeover(tmp_path / "pinned", pinned=True))
    assert read == b"" and isinstance(raised, IntegrityError)
    assert "another upstream took over" in str(raised)
    # Unpinned (a package, checked against its hash at the end), a follower takes the new upstream's bytes.
    (tmp_path / "free").mkdir()
    read, raised = asyncio.run(_pinned_follower_after_a_takeover(tmp_path / "free", pinned=False))
    assert raised is None and read == b'{"info": {"base_url": "http://elsewhere/"}}'[:-1]


# --- sent to clients: by the kernel when the length is declared (http/responses.py:send_followed) ---


async def _serve_download(
    download: Download, client_reads: Callable[[ClientSession, str], Awaitable[T]]
) -> tuple[T, int]:
    """Serve `download` at / as the service does, run `client_reads` against it: its result, and how many times
    the event loop's sendfile was called."""
    calls = 0
    loop = asyncio.get_running_loop()
    real_sendfile = loop.sendfile

    async def counting_sendfile(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        return await real_sendfile(*args, **kwargs)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_download(request, download, "application/octet-stream")

    app = web.Application()
    app.router.add_get("/", handler)
    loop.sendfile = counting_sendfile  # type: ignore[method-assign]
    try:
        async with TestServer(app) as server, ClientSession() as session:
            result = await client_reads(session, str(server.make_url("/")))
    finally:
        del loop.sendfile  # type: ignore[method-assign]
        await download.close_file()
    return result, calls


async def _sized_download_followed(tmp_path: Path, data: bytes) -> tuple[tuple[int, bytes, str | None], int]:
    download = Download(tmp_path / "sized.whl", tmp_path / "sized.whl.part", Expected(size=len(data)))
    download.begin("test upstream", {})
    await download.write(data[: len(data) // 2])

    async def read(session: ClientSession, url: str) -> tuple[int, bytes, str | None]:
        async with session.get(url) as response:
            first = await response.content.readexactly(len(data) // 2 - 1)  # all but the held-back byte: no more
            await download.write(data[len(data) // 2 :])
            download.verify()
            download.verified = True
            await download.announce()
            rest = await response.content.read()
            return response.status, first + rest, response.headers.get("Content-Length")

    return await _serve_download(download, read)


def test_a_follower_of_a_download_of_declared_length_is_sent_the_file_by_the_kernel(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3 * CHUNK_SIZE + 17)
    (status, body, length), sendfile_calls = asyncio.run(_sized_download_followed(tmp_path, data))
    assert status == 200 and length == str(len(data))
    assert body == data
    assert sendfile_calls >= 2  # what was there when it came, then the rest once checked


async def _sized_download_discarded(tmp_path: Path) -> tuple[tuple[int, int, bool], int]:
    first, second = random.Random(4).randbytes(2 * CHUNK_SIZE), random.Random(5).randbytes(2 * CHUNK_SIZE)
    download = Download(tmp_path / "lied.whl", tmp_path / "lied.whl.part", Expected(size=len(first)))
    download.begin("lying upstream", {})
    await download.write(first[:CHUNK_SIZE])

    async def read(session: ClientSession, url: str) -> tuple[int, int, bool]:
        async with session.get(url) as response:
            got = await response.content.readexactly(CHUNK_SIZE)
            assert got == first[:CHUNK_SIZE]
            await download.discard()
            download.begin("honest upstream", {})
            await download.write(second)
            try:
                rest = await response.content.read()
            except ClientPayloadError:
                return response.status, len(got), True
            return response.status, len(got) + len(rest), False

    return await _serve_download(download, read)


def test_a_follower_sent_by_the_kernel_is_cut_when_its_bytes_are_discarded(tmp_path: Path) -> None:
    (status, received, cut), sendfile_calls = asyncio.run(_sized_download_discarded(tmp_path))
    assert status == 200 and sendfile_calls >= 1
    assert cut, f"the answer ended cleanly after {received} bytes"
    assert received < 2 * CHUNK_SIZE  # never a complete answer of bytes from the upstream that failed


async def _follow_once_rewritten(tmp_path: Path, arrive: str) -> tuple[bytes, BaseException | None]:
    """A download whose `before_commit` rewrites its file shorter (a repodata whose base_url pkgcache takes out),
    and a follower that arrives `arrive`: while the rewrite runs, or once the file is in place."""
    from pkgcache.storage.downloads import Downloader
    from pkgcache.storage.store import CacheStore

    store = CacheStore(tmp_path / "data")
    store.prepare()
    final = tmp_path / "data" / "repodata.json"
    written, rewritten = b'{"info": {"base_url": "http://elsewhere/"}, "packages": {}}', b'{"packages": {}}'
    rewriting, may_rewrite = asyncio.Event(), asyncio.Event()

    async def produce(download: Download) -> None:
        download.begin("fake upstream", {})
        await download.write(written)

    async def rewrite(download: Download) -> None:
        rewriting.set()
        await may_rewrite.wait()
        download.temp_path.write_bytes(rewritten)

    download = Downloader(store).get_or_start(final, Expected(), produce, before_commit=rewrite)
    assert download is not None
    await rewriting.wait()
    if arrive == "in place":
        may_rewrite.set()
        await download.wait_finished()
    read, error = bytearray(), None
    follower = download.follow()
    first = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.05)
    may_rewrite.set()
    try:
        read += await first
        async for chunk in follower:
            read += chunk
    except Exception as exc:
        error = exc
    finally:
        await follower.aclose()
    await download.wait_finished()
    return bytes(read), error


def test_a_follower_that_comes_once_the_bytes_are_written_is_given_the_file_in_place_whole(tmp_path: Path) -> None:
    """It read the rewritten file as if it were the bytes written, so it ran short of them and was cut ("the file
    being downloaded is shorter than its N bytes"): seen on a repodata.json.zst whose base_url is taken out."""
    for arrive in ("while rewritten", "in place"):
        read, error = asyncio.run(_follow_once_rewritten(tmp_path / arrive.replace(" ", "-"), arrive))
        assert error is None, (arrive, error)
        assert read == b'{"packages": {}}', arrive
