"""Offline (issue 13, point 3): pages and repodata list only what the cache holds, no request leaves, and pip, uv and
rattler install what is there and fail cleanly on what is not; the same view when every upstream is down."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.cache_service import CacheProcess, RunningCache, cache_settings, start_cache
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.support import BackgroundLoop, http_get, installed_dists, run_pip_install, run_uv_install

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
CHANNEL = "cloud/conda-forge"


def _files(url: str, project: str) -> tuple[str, list[str]]:
    answer = http_get(f"{url}/pypi/simple/{project}/", JSON)
    assert answer.status == 200, answer.body
    return answer.headers["x-pkgcache-cache"], [item["filename"] for item in json.loads(answer.body)["files"]]


def test_an_offline_pkgcache_lists_and_serves_only_what_it_holds_and_asks_no_upstream(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    online = make_cache([official_upstream.index_url])
    result = run_pip_install(online.index_url, tmp_path / "seeded", "alpha==1.0", "beta==1.1")
    assert result.returncode == 0, result.stderr
    online.stop()
    official_upstream.reset_log()
    official_upstream.files.reset_log()

    process = CacheProcess(online.data_dir, "--offline", "--pypi-upstream", official_upstream.index_url)
    try:
        index_url = process.url + "/pypi/simple/"
        assert _files(process.url, "alpha") == ("offline", ["alpha-1.0-py3-none-any.whl"])
        page = json.loads(http_get(f"{process.url}/pypi/simple/alpha/", JSON).body)
        assert page["versions"] == ["1.0"]
        for kind, install in (("pip", run_pip_install), ("uv", run_uv_install)):
            done = install(index_url, tmp_path / f"{kind}-ok", "alpha", "beta")
            assert done.returncode == 0, done.stderr
            assert installed_dists(tmp_path / f"{kind}-ok") == {"alpha==1.0", "beta==1.1", "gamma==0.5"}
            missing = install(index_url, tmp_path / f"{kind}-missing", "delta-pkg")  # never cached
            assert missing.returncode != 0
            assert "delta-pkg" in missing.stdout + missing.stderr
            newer = install(index_url, tmp_path / f"{kind}-newer", "alpha==2.0")  # on the page, not in the cache
            assert newer.returncode != 0
        not_held = http_get(process.url + "/pypi/files/alpha/alpha-2.0-py3-none-any.whl")
        assert not_held.status == 404 and b"not in this cache, which is offline" in not_held.body
        no_page = http_get(process.url + "/pypi/simple/delta-pkg/")
        assert no_page.status == 404 and b"not in this cache, which is offline" in no_page.body

        landing = http_get(process.url + "/").body.decode()
        assert "This pkgcache is offline" in landing and "The cache holds 3 PyPI projects (3 files" in landing
        assert (
            'pkgcache_offline{cause="configured",side="pypi"} 1.0' in http_get(process.url + "/metrics").body.decode()
        )
    finally:
        process.terminate()
    assert official_upstream.requests == [] and official_upstream.files.requests == []  # nothing left pkgcache


def test_when_every_upstream_is_down_pages_list_only_what_the_cache_holds(
    official_upstream: OfficialLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    cache = make_cache([official_upstream.index_url])
    assert run_pip_install(cache.index_url, tmp_path / "seeded", "alpha==1.0").returncode == 0
    assert _files(cache.url, "alpha") == ("hit", ["alpha-1.0-py3-none-any.whl", "alpha-2.0-py3-none-any.whl",
                                                   "alpha-2.0.tar.gz"])  # fmt: skip
    bg_loop.run(official_upstream.stop())
    assert cache.get("/pypi/simple/beta/").status in (502, 503)  # the upstream fails, and rests

    deadline = time.monotonic() + 5
    while _files(cache.url, "alpha")[0] != "offline" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _files(cache.url, "alpha") == ("offline", ["alpha-1.0-py3-none-any.whl"])
    result = run_uv_install(cache.index_url, tmp_path / "during", "alpha")
    assert result.returncode == 0, result.stderr
    assert installed_dists(tmp_path / "during") == {"alpha==1.0"}
    assert "Every pypi mirror is down" in cache.get("/").body.decode()


def _rattler(url: str, tmp_path: Path, name: str, *specs: str, sharded: bool = True) -> dict[str, Any]:
    extra = [] if sharded else ["--no-sharded"]
    return run_rattler_install(
        [f"{url}/conda/{CHANNEL}"], tmp_path / name, tmp_path / f"{name}-cache", list(specs), extra_args=extra
    )


@pytest.mark.parametrize("sharded", [True, False])
def test_an_offline_pkgcache_serves_conda_repodata_and_shards_of_what_it_holds(
    sharded: bool,
    conda_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    conda = {"upstreams": [f"{conda_mirror.url}/anaconda/"], "channels": [CHANNEL]}
    online = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
    seeded = _rattler(online.url, tmp_path, "seeded", "app")
    assert {item["name"] for item in seeded["installed"]} == {"app", "libfoo", "pydata", "tzinfo"}
    online.stop()
    conda_mirror.reset_log()

    settings = cache_settings(online.data_dir, ["http://127.0.0.1:9/simple/"], conda=conda, server={"offline": True})
    offline = start_cache(bg_loop, settings)
    try:
        answer = offline.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata.json")
        assert answer.status == 200 and answer.headers["x-pkgcache-cache"] == "offline"
        repodata = json.loads(answer.body)
        held = set(repodata["packages"]) | set(repodata["packages.conda"])
        assert held == {"app-1.0-h1_0.conda", "libfoo-1.1-h1_0.conda"}  # libfoo 1.0 was never fetched

        again = _rattler(offline.url, tmp_path, "again", "app", sharded=sharded)
        assert {item["name"]: item["version"] for item in again["installed"]}["libfoo"] == "1.1"
        with pytest.raises(RuntimeError, match="bigpkg"):
            _rattler(offline.url, tmp_path, "missing", "bigpkg", sharded=sharded)
        not_held = offline.get(f"/conda/{CHANNEL}/noarch/bigpkg-1.0-h0_0.conda")
        assert not_held.status == 404 and b"not in this cache, which is offline" in not_held.body
    finally:
        offline.stop()
    assert conda_mirror.requests == []  # nothing left pkgcache


@pytest.fixture
def sharded_mirror(bg_loop: BackgroundLoop, conda_channels: Channels) -> Iterator[MirrorLikeUpstream]:
    """A mirror (or a parent pkgcache) with real shards, .zst and .json: what shard-only clients are served."""
    upstream = MirrorLikeUpstream({"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge})
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


def _cached_forms(cache: RunningCache, subdir: str) -> set[str]:
    folder = cache.data_dir / "conda" / CHANNEL / subdir
    return {path.name for path in folder.glob("repodata*") if not path.name.endswith(".meta")}


def test_a_sharded_channel_solves_from_cache_once_its_upstream_is_down_past_the_ttl(
    sharded_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    """A mirror or a parent pkgcache with real shards: shard-only clients never make the cache hold repodata.json.
    With the upstream gone and the index stale, the shard index is never a 5xx, in either view of the gate."""
    conda = {"upstreams": [f"{sharded_mirror.url}/anaconda/"], "channels": [CHANNEL], "index_ttl": 1}
    cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
    seeded = _rattler(cache.url, tmp_path, "seeded", "app")
    assert {item["name"] for item in seeded["installed"]} == {"app", "libfoo", "pydata", "tzinfo"}
    assert _cached_forms(cache, SUBDIR) == {"repodata_shards.msgpack.zst"}  # shards only, no repodata.json
    bg_loop.run(sharded_mirror.stop())
    time.sleep(1.5)  # past index_ttl

    shard_index = f"/conda/{CHANNEL}/{SUBDIR}/repodata_shards.msgpack.zst"
    down = 'pkgcache_offline{cause="upstreams_down",side="conda"} 1.0'
    views = set()
    deadline = time.monotonic() + 5
    while True not in views and time.monotonic() < deadline:  # until the gate shows the offline view
        answer = cache.get(shard_index)
        assert answer.status == 200, answer.body
        views.add(down in cache.get("/metrics").body.decode())
        time.sleep(0.1)
    assert views == {False, True}  # the stale index passed through, then the one of the offline view
    during = _rattler(cache.url, tmp_path, "during", "app")
    assert {item["name"]: item["version"] for item in during["installed"]}["libfoo"] == "1.1"
    # The offline view lists what is held, made from the cached shards; a package not held is not listed.
    repodata = json.loads(cache.get(f"/conda/{CHANNEL}/noarch/repodata.json").body)
    noarch = cache.data_dir / "conda" / CHANNEL / "noarch"
    held = {path.name for path in noarch.iterdir() if path.name.endswith((".conda", ".tar.bz2"))}
    assert held and set(repodata["packages"]) | set(repodata["packages.conda"]) == held
    with pytest.raises(RuntimeError, match="bigpkg"):
        _rattler(cache.url, tmp_path, "missing", "bigpkg")


def _not_seeded_platform() -> str:
    return "osx-64" if SUBDIR != "osx-64" else "linux-64"


def test_an_offline_pkgcache_answers_404_for_conda_index_files_it_does_not_hold(
    sharded_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    conda = {"upstreams": [f"{sharded_mirror.url}/anaconda/"], "channels": [CHANNEL]}
    online = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
    _rattler(online.url, tmp_path, "seeded", "app", "bigpkg")
    online.stop()
    sharded_mirror.reset_log()

    settings = cache_settings(online.data_dir, ["http://127.0.0.1:9/simple/"], conda=conda, server={"offline": True})
    offline = start_cache(bg_loop, settings)
    platform = _not_seeded_platform()
    try:
        for path in (
            f"{platform}/repodata_shards.msgpack.zst",
            f"{platform}/repodata.json",
            f"{platform}/repodata.json.zst",
            f"{SUBDIR}/current_repodata.json",
            f"{SUBDIR}/run_exports.json",
            "channeldata.json",
        ):
            for method in ("GET", "HEAD"):
                answer = offline.get(f"/conda/{CHANNEL}/{path}", method=method)
                assert answer.status == 404, (method, path, answer.status, answer.body)
        # rattler treats the platform as an empty subdir, and solves the noarch package it holds.
        for sharded in (True, False):
            solved = run_rattler_install(
                [f"{offline.url}/conda/{CHANNEL}"],
                tmp_path / f"other-{sharded}",
                tmp_path / f"other-{sharded}-cache",
                ["bigpkg"],
                platform=platform,
                extra_args=[] if sharded else ["--no-sharded"],
            )
            assert [item["name"] for item in solved["installed"]] == ["bigpkg"]
    finally:
        offline.stop()
    assert sharded_mirror.requests == []  # nothing left pkgcache


def test_a_missing_form_of_repodata_is_made_from_the_cached_one_when_no_upstream_answers(
    sharded_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
) -> None:
    """Before the gate shows the offline view (and after each cool-down), a miss goes to the upstreams: the other
    cached form of the same file answers rather than a 502/503."""
    conda = {"upstreams": [f"{sharded_mirror.url}/anaconda/"], "channels": [CHANNEL]}
    cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
    base = f"/conda/{CHANNEL}"
    zst = cache.get(f"{base}/{SUBDIR}/repodata.json.zst")
    json_only = cache.get(f"{base}/noarch/repodata.json")
    assert zst.status == 200 and json_only.status == 200
    assert _cached_forms(cache, SUBDIR) == {"repodata.json.zst"}
    assert _cached_forms(cache, "noarch") == {"repodata.json"}
    bg_loop.run(sharded_mirror.stop())

    made_json = cache.get(f"{base}/{SUBDIR}/repodata.json")
    assert made_json.status == 200 and made_json.headers["x-pkgcache-cache"] == "stale"
    assert json.loads(made_json.body)["packages.conda"]
    made_zst = cache.get(f"{base}/noarch/repodata.json.zst")
    assert made_zst.status == 200 and made_zst.headers["x-pkgcache-cache"] == "stale"
    assert zstandard.ZstdDecompressor().stream_reader(made_zst.body).read() == json_only.body
    shards = cache.get(f"{base}/{SUBDIR}/repodata_shards.msgpack.zst")  # made here from the cached .zst
    assert shards.status == 200
