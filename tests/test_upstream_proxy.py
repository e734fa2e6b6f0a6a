"""Upstreams reached through an HTTP proxy, when one is configured."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from pkgcache.cli.check import plan_probes, run_checks
from tests.cache_service import RunningCache, cache_settings, free_port
from tests.fakes.pypi_upstreams import TunaLikeUpstream
from tests.support import BackgroundLoop


class ForwardProxy:
    """A minimal forward proxy on loopback: takes absolute-form requests and passes them on."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(str(request.url))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "proxy-connection")}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(request.method, str(request.url), headers=headers) as upstream,
        ):
            body = await upstream.read()
            passed = {k: v for k, v in upstream.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
            return web.Response(status=upstream.status, body=body, headers=passed)


def test_upstreams_are_reached_through_the_configured_proxy(
    bg_loop: BackgroundLoop, tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    proxy = ForwardProxy()
    bg_loop.run(proxy.start())
    try:
        cache = make_cache([tuna_upstream.index_url], upstream={"proxy": proxy.url})
        assert cache.get("/pypi/simple/alpha/").status == 200
        assert cache.get("/pypi/files/alpha/alpha-2.0-py3-none-any.whl").status == 200
        assert any(url.endswith("/simple/alpha/") for url in proxy.seen)
        assert any(url.endswith("/alpha-2.0-py3-none-any.whl") for url in proxy.seen)
        assert tuna_upstream.count("/simple/alpha/") == 1
    finally:
        bg_loop.run(proxy.stop())


def test_pkgcache_check_goes_through_the_configured_proxy_too(
    bg_loop: BackgroundLoop, tuna_upstream: TunaLikeUpstream, tmp_path: Path
) -> None:
    """`pkgcache check`, the command for choosing mirrors, times them the way the service reaches them: behind a
    proxy it once connected directly and reported every mirror as broken."""
    proxy = ForwardProxy()
    bg_loop.run(proxy.start())
    try:
        settings = cache_settings(
            tmp_path / "data", [tuna_upstream.index_url], upstream={"proxy": proxy.url}, conda={"enabled": False}
        )
        results = run_checks(settings, plan_probes(settings, "alpha"), timeout=5)
        assert [result.ok for result in results] == [True], results
        assert any(url.endswith("/simple/alpha/") for url in proxy.seen), proxy.seen
    finally:
        bg_loop.run(proxy.stop())


class AskingProxy(ForwardProxy):
    """A proxy that wants credentials it is never given: 407 to everything."""

    async def forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(str(request.url))
        return web.Response(
            status=407, text="Proxy Authentication Required", headers={"Proxy-Authenticate": 'Basic realm="corp"'}
        )


def _last_errors(cache: RunningCache) -> list[str]:
    status = json.loads(cache.get("/-/status").body)
    return [u["last_error"] or "" for u in status["upstreams"]["pypi"]]


def test_a_proxy_asking_for_credentials_is_named_as_the_fault_not_the_mirror(
    bg_loop: BackgroundLoop, tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    proxy = AskingProxy()
    bg_loop.run(proxy.start())
    try:
        with_credentials = proxy.url.replace("http://", "http://corp-user:s3cr3t@")
        cache = make_cache([tuna_upstream.index_url], upstream={"proxy": with_credentials}, conda={"enabled": False})
        answer = cache.get("/pypi/simple/alpha/")
        assert answer.status == 502 and proxy.seen
        said = answer.body.decode()
        for words in (f"HTTP 407 from the proxy {proxy.url}", "credentials", "[upstream] proxy"):
            assert words in said, said
            assert all(words in error for error in _last_errors(cache)), _last_errors(cache)
        assert "s3cr3t" not in said and "corp-user" not in said
        assert not any("s3cr3t" in error for error in _last_errors(cache))
        assert tuna_upstream.requests == []
    finally:
        bg_loop.run(proxy.stop())


def test_a_proxy_that_is_down_is_named_as_the_fault(
    tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    proxy = f"http://127.0.0.1:{free_port()}"
    cache = make_cache([tuna_upstream.index_url], upstream={"proxy": proxy}, conda={"enabled": False})
    answer = cache.get("/pypi/simple/alpha/")
    assert answer.status == 502
    assert f"the proxy {proxy} cannot be reached" in answer.body.decode(), answer.body
    assert all(f"the proxy {proxy} cannot be reached" in error for error in _last_errors(cache))
