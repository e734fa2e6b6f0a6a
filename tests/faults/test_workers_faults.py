"""Faults of pkgcache's own plumbing between worker processes (two workers: a primary and a replica)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import resource
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


# --- the primary killed ---


def _status(process: CacheProcess) -> dict:
    return json.loads(http_get(f"{process.url}/-/status").body)


def _counters(process: CacheProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every counter `/metrics` shows, by name and labels."""
    text = http_get(f"{process.url}/metrics").body.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _primary_restarted(process: CacheProcess, killed: int) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        primary = _status(process)["workers"][0]
        if primary["pid"] not in (None, killed) and primary["reported_seconds_ago"] is not None:
            return
        time.sleep(0.2)
    raise AssertionError("the primary was not started again")


def test_a_restarted_primary_carries_on_the_services_counters_and_uptime(two_workers: CacheProcess) -> None:
    """The counters only the primary keeps (bytes and requests to the upstreams...) never go back when it is killed
    and started again, and the uptime everywhere is the service's, not the new primary's."""
    name = "bulky-1.0-py3-none-any.whl"
    answer = http_get(f"{two_workers.url}/pypi/files/bulky/{name}")
    assert answer.status == 200 and len(answer.body) == find_dist(fault_dists(), name).size
    time.sleep(2.5)  # the service has been up a while longer than the new primary will have been, when asked
    before, stats_before, status_before = _counters(two_workers), _stats(two_workers), _status(two_workers)
    killed = status_before["workers"][0]["pid"]
    os.kill(killed, signal.SIGKILL)
    _primary_restarted(two_workers, killed)
    after, stats_after, status_after = _counters(two_workers), _stats(two_workers), _status(two_workers)
    checks = Checks()
    fetched = ("pkgcache_fetched_bytes_total", (("side", "pypi"),))
    checks.expect(before.get(fetched, 0) > 0, "the file's bytes were counted", before.get(fetched))
    upstream_requests = {k: v for k, v in before.items() if k[0] == "pkgcache_upstream_requests_total"}
    checks.expect(sum(upstream_requests.values()) > 0, "the upstream requests were counted", upstream_requests)
    went_back = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1) < v}
    checks.expect(not went_back, "no counter of /metrics went back", went_back)
    for key in ("bytes_fetched", "requests", "misses", "bytes_served"):
        checks.expect(
            stats_after[key] >= stats_before[key],
            f"/-/stats {key} did not go back",
            (stats_before[key], stats_after[key]),
        )
    checks.expect(stats_after["bytes_fetched"] > 0, "/-/stats bytes_fetched is kept", stats_after["bytes_fetched"])
    for where, earlier, later in (
        ("/-/status", status_before, status_after),
        ("/-/stats", stats_before, stats_after),
    ):
        checks.expect(
            later["uptime_seconds"] >= earlier["uptime_seconds"],
            f"{where} uptime is the service's: it did not drop",
            (earlier["uptime_seconds"], later["uptime_seconds"]),
        )
    primary_age = status_after.get("worker_uptime_seconds")
    checks.expect(
        primary_age is not None and primary_age < status_after["uptime_seconds"],
        "/-/status tells the new primary's age apart",
        (primary_age, status_after["uptime_seconds"]),
    )
    checks.verdict()


def _stats(process: CacheProcess) -> dict:
    return json.loads(http_get(f"{process.url}/-/stats").body)


# --- the primary stopped ---


async def _timed_gets(url: str, paths: list[str], timeout: float) -> list[tuple[str, int | str, float, str | None]]:
    """Each path asked at once over a connection of its own: (path, status or what failed, seconds, Retry-After)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def one(path: str) -> tuple[str, int | str, float, str | None]:
            started = time.monotonic()
            try:
                async with session.get(url + path) as response:
                    await response.read()
                    return path, response.status, time.monotonic() - started, response.headers.get("Retry-After")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return path, type(exc).__name__, time.monotonic() - started, None

        return await asyncio.gather(*(one(path) for path in paths))


def test_a_stopped_primary_makes_health_a_prompt_503_through_a_replica(two_workers: CacheProcess) -> None:
    """A primary that answers nothing (SIGSTOP): the replica answers /-/health 503 within the check's few seconds
    and the status pages within their own bound, rather than holding each poll for ten minutes; resumed, 200.

    Connections the kernel gives the stopped primary's own socket wait until it resumes (no process of pkgcache
    reads them): those are the clients' timeouts here, as HAProxy's `timeout check` makes them a failed check."""
    primary = _status(two_workers)["workers"][0]["pid"]
    os.kill(primary, signal.SIGSTOP)
    answers: list[tuple[str, int | str, float, str | None]] = []
    try:
        # The kernel picks the worker of each new connection: rounds until the replica had both kinds.
        for _ in range(4):
            paths = ["/-/health"] * 8 + ["/-/status", "/metrics"] * 2
            answers += asyncio.run(_timed_gets(two_workers.url, paths, 14))
            answered_paths = {path for path, status, *_ in answers if isinstance(status, int)}
            if "/-/health" in answered_paths and answered_paths & {"/-/status", "/metrics"}:
                break
    finally:
        os.kill(primary, signal.SIGCONT)
    checks = Checks()
    answered = [a for a in answers if isinstance(a[1], int)]
    kinds = {path for path, *_ in answered}
    checks.expect("/-/health" in kinds, "the replica answered /-/health", [a[:3] for a in answers])
    checks.expect(bool(kinds & {"/-/status", "/metrics"}), "the replica answered a status page", answered)
    checks.expect(
        all(status == 503 and retry == "2" for _, status, _, retry in answered),
        "every answer is a 503 with Retry-After",
        answered,
    )
    slow = [a for a in answered if a[2] > (5.0 if a[0] == "/-/health" else 12.0)]
    checks.expect(not slow, "/-/health within 5 s, the status pages within 12 s", slow)
    after = asyncio.run(_timed_gets(two_workers.url, ["/-/health"] * 8, 15))
    checks.expect(all(status == 200 for _, status, *_ in after), "resumed, every /-/health is 200", after)
    checks.verdict()
