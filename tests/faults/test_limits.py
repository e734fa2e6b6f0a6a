"""What bounds pkgcache keeps whatever its mirrors and clients do (issue 9, items 8, 9, 12 and 15): a mirror's block
page, invented conda subdirs, project pages too big for memory, crowds of idle connections, the open-file limit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from pkgcache.conda import index_checks
from pkgcache.http.library_internals import ConnectionWatch
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.pages import CachedPage, PageMemory
from tests.cache_service import RunningCache, free_port
from tests.conda_support import Channels
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.faulty import Fault, Kind
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.fakes.server import FakeServer
from tests.faults.harness import FaultRun, outcome_of, start_process
from tests.faults.scenarios import REPODATA, VERIFIED_OR_FAILED, Outcome, Scenario
from tests.support import BackgroundLoop, http_get

# What TUNA answers a blocked network (tuna/issues #2148, #2579): a 403 with an HTML page and a red identifier.
BLOCK_PAGE = (
    "<html><body><p>抱歉，您目前无法访问此页面 Sorry, you've been denied access to this page.</p>"
    '<p style="color:red">00000069 cb492fafd830afcef1222252a6c12e56</p></body></html>'
)


class BlockingMirror(FakeServer):
    """A mirror that has blocked this network: every request gets its block page with 403."""

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text=BLOCK_PAGE, content_type="text/html")


@pytest.fixture
def blocking(bg_loop: BackgroundLoop) -> Iterator[BlockingMirror]:
    server = BlockingMirror()
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def test_a_mirrors_block_page_rests_it_long_and_is_shown_as_blocked(
    blocking: BlockingMirror, official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([blocking.index_url, official_upstream.index_url], upstream={"max_retry_after": 3600})
    assert cache.get("/pypi/simple/alpha/").status == 200  # from the second mirror
    blocked = json.loads(cache.get("/-/status").body)["upstreams"]["pypi"][0]
    assert blocked["blocked"] is True and blocked["healthy"] is False
    assert blocked["cooldown_remaining"] > 3000  # the hour, not the cool-down of 30 s
    assert "00000069 cb492fafd830afcef1222252a6c12e56" in blocked["last_error"]
    assert "blocked by the mirror" in cache.get("/", {"Accept-Language": "en"}).body.decode()
    asked = blocking.count("/simple/alpha/")
    assert cache.get("/pypi/simple/beta/").status == 200
    assert blocking.count("/simple/beta/") == 0 and blocking.count("/simple/alpha/") == asked  # left alone


def test_invented_conda_subdirs_cost_no_request_and_leave_nothing_on_disk(
    conda_mirror: MirrorLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    config = {
        "name": "mirror",
        "pkgs_url": f"{conda_mirror.url}/anaconda/pkgs/",
        "cloud_url": f"{conda_mirror.url}/anaconda/cloud/",
    }
    cache = make_cache(["http://127.0.0.1:9/simple/"], conda={"upstreams": [config], "channels": ["pkgs/main"]})
    for index in range(50):
        answer = cache.get(f"/conda/pkgs/main/made-up-{index}/repodata.json")
        assert answer.status == 404 and b"is not a conda subdir" in answer.body
    assert not [path for path in conda_mirror.paths() if "made-up" in path]
    assert not list(cache.data_dir.rglob("made-up-*"))


def _page(name: str, files: int) -> CachedPage:
    dists = tuple(DistFile(f"{name}-{n}.0-py3-none-any.whl", f"https://example.org/{n}.whl") for n in range(files))
    return CachedPage(ProjectPage(name, dists), "up", time.time())


def test_pages_in_memory_are_bounded_by_bytes_and_a_huge_page_is_not_kept() -> None:
    memory = PageMemory(budget=10 * 1024 * 1024)
    for index in range(100):
        memory.put(f"p{index}", _page(f"p{index}", 500))
        assert memory.total <= memory.budget
    assert 0 < len(memory) < 100  # the least recently used went
    memory.put("huge", _page("huge", 5000))  # more than a quarter of the budget on its own
    assert memory.peek("huge") is None and memory.total <= memory.budget


def test_when_connections_near_the_limit_the_idle_ones_go_first(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, int]:
        app = web.Application()
        app.router.add_get("/", _ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        idle = []
        for _ in range(6):  # each asks once and keeps its connection open
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"ok")
            idle.append((reader, writer))
        watch = ConnectionWatch(header_timeout=60, max_connections=2)
        watch.check(runner, asyncio.get_running_loop().time())
        await asyncio.sleep(0.2)
        closed = 0
        for reader, _ in idle:
            closed += reader.at_eof() or await _closed(reader)
        for _, writer in idle:
            writer.close()
        await runner.cleanup()
        return closed, watch.closed_idle, len(idle)

    closed, counted, opened = bg_loop.run(scenario())
    assert counted == opened - 2 and closed == opened - 2


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.5) == b""
    except TimeoutError:
        return False


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
    official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    process = start_process(tmp_path / "data", {"pypi": {"upstreams": [official_upstream.index_url]}}, "--workers", "1")
    try:
        limits = Path(f"/proc/{process.process.pid}/limits").read_text()
        soft, hard = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
        assert soft == hard
        assert http_get(process.url + "/-/health").status == 200
    finally:
        process.terminate()


def test_an_upstream_that_is_this_very_pkgcache_is_refused_at_once(tmp_path: Path) -> None:
    """A configuration that loops back (an upstream, or a load balancer's address, reaching this instance) must not
    recurse until timeouts: the instance knows its own requests by the mark in their User-Agent."""
    port = free_port()
    sections = {"pypi": {"upstreams": [f"http://127.0.0.1:{port}/pypi/simple/"]}, "conda": {"enabled": False}}
    process = start_process(tmp_path / "data", sections, "--workers", "1", port=port)
    try:
        answer = http_get(process.url + "/pypi/simple/alpha/", timeout=20)
        assert answer.status == 502 and b"HTTP 508" in answer.body
        # Refused at once, not after recursing through every connection slot until the first-byte timeout.
        assert "failed (HTTP 508 from" in process.log_path.read_text()
    finally:
        process.terminate()


# Lowered for the test (the real cap is GBs): the bomb decodes to four times it, from a few KB on the wire.
INDEX_CAP = 1 << 20


def test_an_index_file_past_its_cap_is_the_mirrors_fault_and_nothing_of_it_is_kept(
    fault_run: Callable[..., FaultRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_checks, "MAX_INDEX_BYTES", INDEX_CAP, raising=False)
    bomb = Scenario("conda-repodata.json-gzip-bomb", REPODATA, Fault(Kind.GZIP_BOMB, rate=4 * INDEX_CAP))
    with fault_run(bomb) as run:
        verify = run.verifier(run.resource)
        # Seen once the cap's worth went out, and a compressed transfer cannot be resumed: the first client may
        # see its transfer fail (never a whole body of it); the next one gets the healthy mirror's.
        first = run.get()
        assert outcome_of(first, verify) in VERIFIED_OR_FAILED, first.summary()
        assert run.wait_downloads_settled(), run.tmp_leftovers()
        answer = run.get()
        assert outcome_of(answer, verify) is Outcome.OK, answer.summary()
        assert run.asked(run.faulty) == 1 and run.asked(run.healthy) == 1
        faulty = run.upstreams()["faulty"]
        assert not faulty["healthy"] and faulty["cooldown_remaining"] > 0, faulty
        assert "a file of its kind may have" in faulty["last_error"], faulty
        kept = run.cached_copies(run.resource)
        assert kept and all(verify(path.read_bytes()) for path in kept), [p.stat().st_size for p in kept]
