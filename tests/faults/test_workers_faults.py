"""Faults of pkgcache's own plumbing between worker processes (two workers: a primary and a replica)."""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cache_service import CacheProcess
from tests.fakes.dists import find_dist
from tests.fakes.faulty import Fault, FaultyPypiUpstream, Kind
from tests.faults.harness import SETTLE_SECONDS, Checks, fault_dists, fetch_all, start_process
from tests.support import BackgroundLoop, http_get

CLIENT_HOST = "pkgcache.example.org:3150"


@pytest.fixture
def mirrors(bg_loop: BackgroundLoop) -> Iterator[tuple[FaultyPypiUpstream, FaultyPypiUpstream]]:
    """Two mirrors, both healthy until a test says otherwise."""
    first, second = FaultyPypiUpstream(fault_dists()), FaultyPypiUpstream(fault_dists())
    bg_loop.run(first.start())
    bg_loop.run(second.start())
    yield first, second
    bg_loop.run(first.stop())
    bg_loop.run(second.stop())


def _two_workers(tmp_path: Path, mirrors: tuple[FaultyPypiUpstream, ...], **upstream: object) -> CacheProcess:
    pypi = {"upstreams": [{"name": f"mirror-{i}", "url": m.index_url} for i, m in enumerate(mirrors)]}
    sections = {"pypi": pypi, "conda": {"enabled": False}, "upstream": upstream}
    return start_process(tmp_path / "data", sections, "--workers", "2")


@pytest.fixture
def two_workers(mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream], tmp_path: Path) -> Iterator[CacheProcess]:
    process = _two_workers(tmp_path, mirrors)
    yield process
    process.terminate()


def _handed_over(process: CacheProcess) -> int:
    """Requests the replica handed to the primary, once its counters are published (about once a second)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        workers = json.loads(http_get(f"{process.url}/-/status").body)["workers"]
        handed = sum(worker["handed_over"] for worker in workers[1:])
        if handed or time.monotonic() > deadline:
            return handed
        time.sleep(0.2)


def test_a_burst_of_misses_through_a_replica_never_gets_503(
    two_workers: CacheProcess, mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream]
) -> None:
    """1,000 distinct missing projects at once: each is a 404 from the upstreams; none may fail in pkgcache."""
    _allow_open_files(2500)  # the clients' own sockets must not be what runs out
    statuses = asyncio.run(_burst_of_misses(two_workers.url, 1000))
    counts = collections.Counter(statuses)
    checks = Checks()
    checks.expect(counts.get(503, 0) == 0, "no 503 from pkgcache's own plumbing", dict(counts))
    checks.expect(counts == {404: 1000}, "every client got the upstreams' answer: 404", dict(counts))
    asked = mirrors[0].count(lambda r: r.path.startswith("/simple/missing-"))
    checks.expect(asked >= 1, "the upstream was asked", asked)
    checks.expect(_handed_over(two_workers) > 0, "the replica handed requests to the primary", "")
    checks.verdict()


def _allow_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this test opens {wanted} sockets; the hard limit on open files is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _burst_of_misses(url: str, count: int) -> list[int | str]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> int | str:
            try:
                async with session.get(f"{url}/pypi/simple/missing-{i}/") as response:
                    await response.read()
                    return response.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return type(exc).__name__

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_the_page_through_a_replica_shows_the_clients_host(two_workers: CacheProcess) -> None:
    answers = [http_get(f"{two_workers.url}/", {"Host": CLIENT_HOST}) for _ in range(16)]
    checks = Checks()
    checks.expect(all(a.status == 200 for a in answers), "every request for / is answered", [a.status for a in answers])
    wrong = [a.body.decode(errors="replace").count("pkgcache-primary") for a in answers]
    checks.expect(not any(wrong), "no page shows the primary's private name", wrong)
    shown = [a.body.count(CLIENT_HOST.encode()) for a in answers]
    checks.expect(all(shown), f"every page shows {CLIENT_HOST}", shown)
    checks.expect(_handed_over(two_workers) > 0, "some went through the replica", "")
    checks.verdict()


def test_a_replica_does_not_reuse_a_connection_the_primary_closed(
    mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream], tmp_path: Path
) -> None:
    """After the primary cuts a download whose bytes failed their check, the replica's next hand-overs get through.

    The first mirror sends wrong bytes for three files and never rests (cooldown 0), so each round cuts the clients
    that were following; the second has everything, so every later miss is an honest 404.
    """
    liar, _ = mirrors
    files = ["bigpkg-1.0-py3-none-any.whl", "bulky-1.0-py3-none-any.whl", "bulky-1.1-py3-none-any.whl"]
    for name in files:
        liar.plan.set(f"/{name}", Fault(Kind.WRONG_BYTES))
    process = _two_workers(tmp_path, mirrors, cooldown=0)
    after: list[int | None] = []
    wrong: list[str] = []
    try:
        for round_, name in enumerate(files):
            sha = find_dist(fault_dists(), name).sha256
            project = name.split("-", 1)[0]
            answers = asyncio.run(fetch_all(f"{process.url}/pypi/files/{project}/{name}", 10))
            wrong += [r.summary() for r in answers if r.complete and r.status == 200 and r.sha256 != sha]
            after += [http_get(f"{process.url}/pypi/simple/none-{round_}-{i}/").status for i in range(20)]
        handed_over = _handed_over(process)
    finally:
        process.terminate()
    checks = Checks()
    checks.expect(not wrong, "no client got a whole body of wrong bytes", wrong)
    counts = collections.Counter(after)
    checks.expect(counts.get(503, 0) == 0, "no 503 after a cut download", dict(counts))
    checks.expect(counts == {404: len(after)}, "every later miss got its 404", dict(counts))
    checks.expect(handed_over > 0, "the replica handed requests to the primary", "")
    checks.verdict()
