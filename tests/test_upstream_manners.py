"""How pkgcache treats upstreams: redirect chains across hosts, and a cap on connections to each."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from tests.cache_service import RunningCache
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import SlowUpstream, TunaLikeUpstream
from tests.fakes.server import FakeServer
from tests.support import BackgroundLoop


class RedirectingMirror(FakeServer):
    """A mirror that serves pages itself but sends every file on through a chain of redirects (like USTC and
    SJTUG sending misses to TUNA), or round in a loop when `loop` is set."""

    def __init__(self, target: TunaLikeUpstream, hops: int = 2) -> None:
        super().__init__()
        self.target = target
        self.hops = hops
        self.loop = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/simple/"):
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.target.url + request.path, headers={"User-Agent": "redirecting-mirror"}) as page,
            ):
                return web.Response(status=page.status, body=await page.read(), content_type="text/html")
        if self.loop:
            raise web.HTTPFound(request.path)
        hop = int(request.query.get("hop", "0"))
        if hop < self.hops:
            raise web.HTTPFound(f"{request.path}?hop={hop + 1}")
        raise web.HTTPFound(self.target.url + request.path)


@pytest.fixture
def redirecting(bg_loop: BackgroundLoop, tuna_upstream: TunaLikeUpstream) -> Iterator[RedirectingMirror]:
    mirror = RedirectingMirror(tuna_upstream)
    bg_loop.run(mirror.start())
    yield mirror
    bg_loop.run(mirror.stop())


def test_redirect_chains_across_hosts_are_followed_and_the_file_is_kept(
    redirecting: RedirectingMirror, tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    # The last hop's host is a public mirror in life; here it is on loopback, so it is named as allowed.
    allowed = [f"127.0.0.1:{tuna_upstream.port}"]
    cache = make_cache([f"{redirecting.url}/simple/"], upstream={"allowed_hosts": allowed})
    answer = cache.get("/pypi/files/alpha/alpha-2.0-py3-none-any.whl")
    assert answer.status == 200
    expected = find_dist(sample_dists(), "alpha-2.0-py3-none-any.whl").sha256
    assert hashlib.sha256(answer.body).hexdigest() == expected
    assert tuna_upstream.count("/alpha-2.0-py3-none-any.whl") == 1
    kept = cache.data_dir / "pypi" / "files" / "alpha" / "alpha-2.0-py3-none-any.whl"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == expected


def test_a_redirect_loop_is_bounded_and_nothing_is_kept(
    redirecting: RedirectingMirror, make_cache: Callable[..., RunningCache]
) -> None:
    redirecting.loop = True
    cache = make_cache([f"{redirecting.url}/simple/"], upstream={"max_redirects": 3})
    answer = cache.get("/pypi/files/alpha/alpha-2.0-py3-none-any.whl")
    assert answer.status == 502 and b"redirects" in answer.body
    assert 1 < len([r for r in redirecting.requests if r.path.startswith("/packages/")]) <= 4
    assert not (cache.data_dir / "pypi" / "files" / "alpha").exists()


class CountingSlowUpstream(SlowUpstream):
    """Counts how many requests it is answering at once."""

    def __init__(self) -> None:
        super().__init__(sample_dists(), bytes_per_second=0)
        self.active = 0
        self.most_at_once = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.most_at_once = max(self.most_at_once, self.active)
        try:
            await asyncio.sleep(0.2)  # long enough for every request pkgcache is allowed to make to overlap
            return await super().handle(request)
        finally:
            self.active -= 1


def test_connections_to_one_upstream_are_capped(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    upstream = CountingSlowUpstream()
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([{"name": "capped", "url": upstream.index_url, "max_connections": 2}])
        projects = ["alpha", "beta", "gamma", "delta-pkg", "bigpkg"]

        async def fetch_all() -> list[int]:
            async with aiohttp.ClientSession() as session:

                async def one(project: str) -> int:
                    async with session.get(f"{cache.url}/pypi/simple/{project}/") as response:
                        return response.status

                return await asyncio.gather(*(one(p) for p in projects))

        assert asyncio.run(fetch_all()) == [200] * len(projects)
        assert upstream.most_at_once == 2
    finally:
        bg_loop.run(upstream.stop())
