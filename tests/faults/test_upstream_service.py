"""Upstream faults that need more than one request to show: busy connection slots, abandoned downloads, and every
mirror resting at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pkgcache.http.responses import CLIENT_RETRY_AFTER_SECONDS
from tests.cache_service import RunningCache, start_cache
from tests.fakes.faulty import Fault, FaultyPypiUpstream, Kind
from tests.faults.harness import (
    SETTLE_SECONDS,
    Checks,
    fault_dists,
    fetch,
    fetch_all,
    outcome_of,
    settings_for,
    tally,
)
from tests.faults.scenarios import DEADLINES, Outcome
from tests.support import BackgroundLoop, run_pip_install

BIG = "bigpkg-1.0-py3-none-any.whl"
BULKY = "bulky-1.0-py3-none-any.whl"


@pytest.fixture
def mirrors(bg_loop: BackgroundLoop) -> Iterator[tuple[FaultyPypiUpstream, FaultyPypiUpstream]]:
    first, second = FaultyPypiUpstream(fault_dists()), FaultyPypiUpstream(fault_dists())
    bg_loop.run(first.start())
    bg_loop.run(second.start())
    yield first, second
    bg_loop.run(first.stop())
    bg_loop.run(second.stop())


def _start(bg_loop: BackgroundLoop, tmp_path: Path, upstreams: list[dict[str, Any]], **upstream: Any) -> RunningCache:
    settings = settings_for(tmp_path / "data", upstreams, conda={"enabled": False}, upstream=upstream)
    return start_cache(bg_loop, settings)


def _sha(name: str) -> str:
    return next(d.sha256 for d in fault_dists() if d.filename == name)


def _project(filename: str) -> str:
    return filename.split("-", 1)[0].replace("_", "-")


def test_misses_do_not_queue_behind_a_slow_mirrors_busy_slots(
    bg_loop: BackgroundLoop, tmp_path: Path, mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream]
) -> None:
    """The first mirror has one connection slot, held by a slow download that is still above min_rate; every other
    miss waits at most slot_wait for it, then goes to the second mirror."""
    slow, healthy = mirrors
    slow.plan.set(f"/{BULKY}", Fault(Kind.DRIP, rate=20_000))  # 512 KiB: about half a minute, yet above min_rate
    cache = _start(
        bg_loop,
        tmp_path,
        [{"name": "slow", "url": slow.index_url, "max_connections": 1}, {"name": "healthy", "url": healthy.index_url}],
        **{**DEADLINES, "min_rate": 1024},
    )
    others = ["alpha-2.0-py3-none-any.whl", "beta-1.1-py3-none-any.whl", "gamma-0.5-py3-none-any.whl"]
    try:
        received = asyncio.run(_while_a_slot_is_held(cache.url, slow, others))
    finally:
        cache.stop()
    checks = Checks()
    outcomes = [outcome_of(r, _checks_against(_sha(name))) for name, r in zip(others, received, strict=True)]
    checks.expect(
        outcomes == [Outcome.OK] * len(others),
        "every other miss got its verified file while the slow mirror's slot was busy",
        f"{tally(outcomes)}: {[r.summary() for r in received]}",
    )
    checks.expect(all(healthy.count(f"/{name}") for name in others), "the second mirror served them", healthy.paths())
    checks.verdict()


async def _while_a_slot_is_held(url: str, slow: FaultyPypiUpstream, others: list[str]) -> list[Any]:
    async with aiohttp.ClientSession() as session:
        occupant = asyncio.create_task(_read_slowly(session, f"{url}/pypi/files/bulky/{BULKY}"))
        try:
            deadline = time.monotonic() + SETTLE_SECONDS
            while not slow.count(f"/{BULKY}"):
                assert time.monotonic() < deadline, "the slow download never started"
                await asyncio.sleep(0.05)
            answers = await asyncio.gather(
                *(fetch_all(f"{url}/pypi/files/{_project(name)}/{name}", 1) for name in others)
            )
            return [first for first, *_ in answers]
        finally:
            occupant.cancel()
            await asyncio.gather(occupant, return_exceptions=True)


async def _read_slowly(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as response:
        async for _ in response.content.iter_any():
            pass


def _checks_against(sha: str) -> Any:
    return lambda body: hashlib.sha256(body).hexdigest() == sha


def test_a_download_nobody_waits_for_is_stopped(
    bg_loop: BackgroundLoop, tmp_path: Path, mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream]
) -> None:
    """A slow (not too slow) mirror; the only client hangs up early: the download is stopped, nothing is kept."""
    slow, healthy = mirrors
    slow.plan.set(f"/{BIG}", Fault(Kind.DRIP, rate=20_000))  # 4 MiB: over three minutes
    cache = _start(
        bg_loop,
        tmp_path,
        [{"name": "slow", "url": slow.index_url}, {"name": "healthy", "url": healthy.index_url}],
        **{**DEADLINES, "min_rate": 1024},
    )
    checks = Checks()
    try:
        got = asyncio.run(_read_then_hang_up(f"{cache.url}/pypi/files/bigpkg/{BIG}", 16 * 1024))
        checks.expect(got >= 16 * 1024, "the client got the first bytes", got)
        stopped = _eventually(lambda: any(t.path.endswith(BIG) and t.ending == "aborted" for t in slow.transfers))
        checks.expect(stopped, "pkgcache stopped the upstream transfer nobody waited for", slow.transfers)
        status = json.loads(fetch(f"{cache.url}/-/status").body)
        checks.expect(status["downloads_in_flight"] == 0, "no download in flight", status["downloads_in_flight"])
        leftovers = [p.name for p in (tmp_path / "data" / "tmp").iterdir()]
        checks.expect(not leftovers, "tmp/ is empty", leftovers)
        checks.expect(not list((tmp_path / "data").rglob(BIG)), "nothing of the file is kept", "")
    finally:
        cache.stop()
    checks.verdict()


async def _read_then_hang_up(url: str, enough: int) -> int:
    got = 0
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        async for chunk in response.content.iter_any():
            got += len(chunk)
            if got >= enough:
                break
        response.close()  # drops the connection: the client is gone
    return got


def _eventually(check: Any, timeout: float = SETTLE_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_every_mirror_resting_is_named_with_retry_after(
    bg_loop: BackgroundLoop, tmp_path: Path, mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream]
) -> None:
    first, second = mirrors
    for mirror in mirrors:
        mirror.plan.set("/simple/alpha/", Fault(Kind.STATUS, status=503))
    cache = _start(
        bg_loop,
        tmp_path,
        [{"name": "tuna-like", "url": first.index_url}, {"name": "aliyun-like", "url": second.index_url}],
    )
    checks = Checks()
    try:
        url = f"{cache.url}/pypi/simple/alpha/"
        failed = fetch(url)
        checks.expect(failed.status in (502, 503), "the first request fails (both mirrors 503)", failed.summary())
        checks.expect(first.count("/simple/alpha/") == 1 and second.count("/simple/alpha/") == 1, "both were asked")
        resting = fetch(url)
        text = resting.body.decode(errors="replace")
        checks.expect(resting.status in (502, 503), "while both rest: an error at once", resting.summary())
        checks.expect("tuna-like" in text and "aliyun-like" in text, "the answer names each resting mirror", text)
        checks.expect(bool(re.search(r"\d+ ?s", text)), "and says when each comes back", text)
        retry_after = resting.headers.get("retry-after", "")
        checks.expect(
            retry_after.isdigit() and 0 < int(retry_after) <= CLIENT_RETRY_AFTER_SECONDS,
            "with a short Retry-After (a client that sleeps for it must not sit out the mirrors' rest)",
            retry_after,
        )
        rests = [int(seconds) for seconds in re.findall(r"(\d+) ?s", text)]
        checks.expect(any(rest > CLIENT_RETRY_AFTER_SECONDS for rest in rests), "while the body says the rest", text)
        checks.expect(first.count("/simple/alpha/") == 1, "a resting mirror is not asked again", first.paths())
    finally:
        cache.stop()
    checks.verdict()


def test_pip_fails_soon_and_asks_again_when_every_mirror_is_resting(
    bg_loop: BackgroundLoop, tmp_path: Path, mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream]
) -> None:
    """pip sleeps for the Retry-After of each 503 before its retries: with the mirrors' own rest (a minute here,
    an hour after a block page) it sat silent for minutes; now it retries within seconds and fails."""
    for mirror in mirrors:
        mirror.plan.set("/simple/alpha/", Fault(Kind.STATUS, status=503))
    cache = _start(
        bg_loop, tmp_path, [{"name": f"mirror-{n}", "url": m.index_url} for n, m in enumerate(mirrors)], cooldown=60
    )
    try:
        assert fetch(f"{cache.url}/pypi/simple/alpha/").status in (502, 503)  # both mirrors rest from now on
        resting = fetch(f"{cache.url}/pypi/simple/alpha/")
        assert resting.status == 503 and re.search(r"\b(59|60) ?s", resting.body.decode()), resting.summary()
        done = run_pip_install(cache.index_url, tmp_path / "target", "alpha", timeout=60)
        assert done.returncode != 0 and "alpha" in done.stderr, done.stderr[-2000:]
        answered = json.loads(cache.get("/-/stats").body)["sides"]["pypi"]
        assert answered["errors"] - 2 >= 3, answered  # pip asked, and asked again after its short waits
    finally:
        cache.stop()


def test_a_mirror_far_slower_than_another_has_lately_been_is_taken_over_by_it(
    bg_loop: BackgroundLoop, tmp_path: Path, mirrors: tuple[FaultyPypiUpstream, FaultyPypiUpstream]
) -> None:
    """Above min_rate, yet under a tenth of what the second mirror delivered a moment ago: after one rate window
    the second mirror resumes the download with a range, instead of the client waiting out the crawl."""
    slow, healthy = mirrors
    cache = _start(
        bg_loop,
        tmp_path,
        [{"name": "slow", "url": slow.index_url}, {"name": "healthy", "url": healthy.index_url}],
        **{**DEADLINES, "min_rate": 1024, "cooldown": 0},
    )
    checks = Checks()
    try:
        # The second mirror shows its rate on a big file the first one refuses.
        slow.plan.set(f"/{BIG}", Fault(Kind.STATUS, status=503))
        big = fetch(f"{cache.url}/pypi/files/bigpkg/{BIG}")
        checks.expect(outcome_of(big, _checks_against(_sha(BIG))) == Outcome.OK, "the big file came whole", big)
        rates = {
            u["name"]: u["rate_bytes_per_second"]
            for u in json.loads(fetch(f"{cache.url}/-/status").body)["upstreams"]["pypi"]
        }
        checks.expect(
            rates["healthy"] is not None and rates["slow"] is None, "the second mirror's rate is known", rates
        )
        # 512 KiB at 20 KB/s: about 25 s from the first mirror alone, beyond the client's patience here.
        slow.plan.set(f"/{BULKY}", Fault(Kind.DRIP, rate=20_000))
        bulky = fetch(f"{cache.url}/pypi/files/bulky/{BULKY}", timeout=12)
        checks.expect(outcome_of(bulky, _checks_against(_sha(BULKY))) == Outcome.OK, "the file came whole", bulky)
        resumed = [r for r in healthy.requests if r.path.endswith(f"/{BULKY}") and r.headers.get("Range")]
        checks.expect(bool(resumed), "the second mirror was asked for the rest", healthy.paths())
        status = json.loads(fetch(f"{cache.url}/-/status").body)["upstreams"]["pypi"]
        why = next(u["last_error"] for u in status if u["name"] == "slow") or ""
        checks.expect("another upstream lately delivered" in why, "the first mirror was left for its rate", why)
    finally:
        cache.stop()
    checks.verdict()
