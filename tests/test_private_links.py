"""A mirror's links and redirects never lead pkgcache to a private address that the configuration does not name
(upstream/address_guard.py): not a page's absolute file link, not a redirect, not a conda index's base URLs.

Everything here runs on loopback, which is as private as a LAN host: the "internal" servers are fakes on ports that
no setting names, counting what they are asked. The unit tests of the guard are in tests/test_address_guard.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.cache_service import RunningCache
from tests.conda_support import SUBDIR, Channels, install, installed_names
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import PageExtras, TunaLikeUpstream
from tests.support import BackgroundLoop, installed_dists, run_pip_install
from tests.test_upstream_proxy import ForwardProxy

ALPHA = "alpha-2.0-py3-none-any.whl"
EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
REFUSAL = "is not a public address; add it to upstream.allowed_hosts if it is yours"


@pytest.fixture
def internal(bg_loop: BackgroundLoop) -> Iterator[TunaLikeUpstream]:
    """A host inside the network that no setting names: it has the right bytes, and counts who asks."""
    server = TunaLikeUpstream(sample_dists())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.fixture
def hostile(bg_loop: BackgroundLoop, internal: TunaLikeUpstream) -> Iterator[TunaLikeUpstream]:
    """A mirror whose page of alpha links its 2.0 wheel on the internal host (absolute, with the right hash)."""
    alpha = find_dist(sample_dists(), ALPHA)
    server = TunaLikeUpstream([dist for dist in sample_dists() if dist.filename != ALPHA])
    link = f'    <a href="{internal.file_url(alpha)}#sha256={alpha.sha256}">{ALPHA}</a><br />'
    server.page_extras["alpha"] = PageExtras(html_links=[link])
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


class RedirectingMirror(TunaLikeUpstream):
    """A mirror whose files answer with a redirect to another host (`target`)."""

    target = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/packages/"):
            return web.Response(status=302, headers={"Location": self.target + request.path})
        return await super().handle(request)


def _install(cache: RunningCache, target: Path) -> set[str]:
    result = run_pip_install(cache.index_url, target, "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    return installed_dists(target)


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "refused:" in record.getMessage()]


def test_a_link_to_an_unnamed_private_host_is_not_followed_and_the_next_mirror_serves_the_file(
    hostile: TunaLikeUpstream,
    internal: TunaLikeUpstream,
    tuna_upstream: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger="pkgcache.upstream")
    cache = make_cache([hostile.index_url, tuna_upstream.index_url])
    assert _install(cache, tmp_path / "env") == EXPECTED_TREE
    assert internal.requests == []
    assert tuna_upstream.count_whole(ALPHA) == 1  # the same packages/ path on the next mirror
    kept = cache.data_dir / "pypi" / "files" / "alpha" / ALPHA
    assert kept.read_bytes() == find_dist(sample_dists(), ALPHA).data
    assert any(f"refused: 127.0.0.1:{internal.port} {REFUSAL}" in message for message in _refusals(caplog))
    # A link to a private host says nothing about the mirror's other files: it keeps serving.
    upstreams = json.loads(cache.get("/-/status").body)["upstreams"]["pypi"]
    status = {upstream["name"]: upstream for upstream in upstreams}
    assert status[f"127.0.0.1:{hostile.port}"]["healthy"]


def test_with_no_other_mirror_the_client_is_told_why(
    hostile: TunaLikeUpstream, internal: TunaLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = make_cache([hostile.index_url])
    answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
    assert answer.status == 502
    assert f"refused: 127.0.0.1:{internal.port} {REFUSAL}".encode() in answer.body
    result = run_pip_install(cache.index_url, tmp_path / "env", "alpha==2.0")
    assert result.returncode != 0 and "502" in result.stdout + result.stderr
    assert internal.requests == []


def test_a_host_named_in_allowed_hosts_is_followed(
    hostile: TunaLikeUpstream, internal: TunaLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = make_cache([hostile.index_url], upstream={"allowed_hosts": [f"127.0.0.1:{internal.port}"]})
    assert _install(cache, tmp_path / "env") == EXPECTED_TREE
    assert internal.count_whole(ALPHA) == 1


@pytest.mark.parametrize(
    ("host", "why"),
    [("127.0.0.1", "is not a public address"), ("localhost", "resolves to a private address")],
)  # an address is judged before connecting, a name once resolved
def test_a_redirect_from_a_configured_mirror_to_an_unnamed_private_host_is_refused(
    host: str,
    why: str,
    bg_loop: BackgroundLoop,
    internal: TunaLikeUpstream,
    tuna_upstream: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
) -> None:
    redirecting = RedirectingMirror(sample_dists())
    redirecting.target = f"http://{host}:{internal.port}"
    bg_loop.run(redirecting.start())
    try:
        cache = make_cache([redirecting.index_url, tuna_upstream.index_url])
        answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
        assert answer.status == 200 and answer.body == find_dist(sample_dists(), ALPHA).data
        assert redirecting.count(ALPHA) == 1 and tuna_upstream.count(ALPHA) == 1
        assert internal.requests == []
        upstreams = json.loads(cache.get("/-/status").body)["upstreams"]["pypi"]
        assert f"refused: {host}:{internal.port} {why}" in upstreams[0]["last_error"]
        # Named in the setting, the same redirect is followed.
        allowed = make_cache([redirecting.index_url], upstream={"allowed_hosts": [f"{host}:{internal.port}"]})
        assert allowed.get(f"/pypi/files/alpha/{ALPHA}").status == 200
        assert internal.count_whole(ALPHA) == 1
    finally:
        bg_loop.run(redirecting.stop())


def test_behind_a_proxy_a_link_to_a_private_address_is_not_passed_to_the_proxy(
    bg_loop: BackgroundLoop,
    hostile: TunaLikeUpstream,
    internal: TunaLikeUpstream,
    tuna_upstream: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
) -> None:
    proxy = ForwardProxy()
    bg_loop.run(proxy.start())
    try:
        cache = make_cache([hostile.index_url, tuna_upstream.index_url], upstream={"proxy": proxy.url})
        answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
        assert answer.status == 200 and answer.body == find_dist(sample_dists(), ALPHA).data
        assert any(url.endswith("/simple/alpha/") for url in proxy.seen)
        assert not any(url.startswith(internal.url) for url in proxy.seen), proxy.seen
        assert internal.requests == []
    finally:
        bg_loop.run(proxy.stop())


def test_conda_indexes_naming_an_unnamed_private_host_are_not_followed(
    bg_loop: BackgroundLoop, conda_channels: Channels, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    """The first mirror's shard index says its shards live on the internal host (shards_base_url), and its
    repodata.json says its packages do (CEP-15 info.base_url): rattler installs through pkgcache all the same, the
    shards and packages coming from the next mirror (pkgcache follows a base_url only to a host it may ask), and
    the internal host is never asked."""
    channels = {"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge}
    internal = MirrorLikeUpstream(channels)
    hostile = MirrorLikeUpstream(channels, absolute_shard_urls=True)
    good = MirrorLikeUpstream(channels)
    for server in (internal, hostile, good):
        bg_loop.run(server.start())
    try:
        hostile.server.elsewhere = internal.url
        cache = make_cache(
            ["http://127.0.0.1:9/simple/"],
            conda={
                "upstreams": [f"{hostile.url}/anaconda/", f"{good.url}/anaconda/"],
                "channels": ["pkgs/main", "cloud/conda-forge"],
            },
        )
        _, result = install(tmp_path, [f"{cache.url}/conda/cloud/conda-forge"], ["app"])
        assert installed_names(result) == {"app", "libfoo", "pydata", "tzinfo"}
        assert hostile.count("/repodata_shards.msgpack.zst") >= 1
        assert any("/shards/" in path for path in good.paths())
        # A package of pkgs/main, whose repodata.json (the first mirror's) names the internal host as base_url.
        answer = cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json")
        assert answer.status == 200
        document = json.loads(answer.body)
        assert "base_url" not in document["info"]  # clients are sent to pkgcache, never to where it said
        package = next(iter({**document["packages"], **document["packages.conda"]}))
        assert cache.get(f"/conda/pkgs/main/{SUBDIR}/{package}").status == 200
        assert good.count(f"/{SUBDIR}/{package}") == 1
        assert internal.requests == []
    finally:
        for server in (internal, hostile, good):
            bg_loop.run(server.stop())
