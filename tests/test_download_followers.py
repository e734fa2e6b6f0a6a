"""A download's followers read the file while it is written (storage/downloads.py), below the HTTP layer."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

from pkgcache.storage.downloads import CHUNK_SIZE, Download, Expected, IntegrityError


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
