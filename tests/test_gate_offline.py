"""Offline (issue 13, point 3): pages and repodata list only what the cache holds, no request leaves, and pip, uv and
rattler install what is there and fail cleanly on what is not; the same view when every upstream is down."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pkgcache.pypi.upstream_index import probe_target
from pkgcache.service.app import make_pool
from pkgcache.upstream.pool import Upstream, UpstreamsUnavailable
from tests.cache_service import CacheProcess, RunningCache, cache_settings, start_cache
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.pypi_upstreams import FailingUpstream, OfficialLikeUpstream
from tests.fakes.server import RecordedRequest
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
    """Before the gate shows the offline view, a miss goes to the upstreams: the other cached form of the same file
    answers rather than a 502/503."""
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


# --- the offline view lasts until a probe finds an upstream back ---

# Short rests, and a short wait for a silent (blackholing) mirror: each cool-down end is then a second away.
PROBED = {"cooldown": 1, "connect_timeout": 1, "first_byte_timeout": 1}
PROBE_PATH = "/simple/pip/"  # what a probe asks a PyPI upstream for (pypi/upstream_index.probe_target)
ALPHA_HELD = ["alpha-1.0-py3-none-any.whl"]
ALPHA_ALL = ["alpha-1.0-py3-none-any.whl", "alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz"]


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not {what}"
        time.sleep(0.05)


def _is_probe(request: RecordedRequest) -> bool:
    return request.method == "GET" and request.path == PROBE_PATH and request.headers.get("Range") == "bytes=0-0"


def _probes_seen(mirror: OfficialLikeUpstream) -> int:
    return sum(1 for request in mirror.requests if _is_probe(request))


def _pypi_gate(cache: RunningCache) -> tuple[dict[str, Any], dict[str, Any]]:
    status = json.loads(cache.get("/-/status").body)
    return status["pypi"]["gate"], status["upstreams"]["pypi"][0]


def _blackholed_after_seeding(
    mirror: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> RunningCache:
    """A pkgcache holding alpha 1.0 whose only mirror has just gone silent, showing the offline view."""
    cache = make_cache([mirror.index_url], upstream=PROBED)
    assert run_pip_install(cache.index_url, tmp_path / "seeded", "alpha==1.0").returncode == 0
    mirror.faults.fail_mode = "hang"  # connections accepted, nothing answered
    assert cache.get("/pypi/simple/beta/").status in (502, 503)  # a client's request finds it silent: it rests
    _wait_for(lambda: _files(cache.url, "alpha")[0] == "offline", "in the offline view")
    return cache


def test_the_offline_view_lasts_across_cool_downs_while_the_mirror_stays_down_and_only_probes_reach_it(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = _blackholed_after_seeding(official_upstream, make_cache, tmp_path)
    seen_before = len(official_upstream.requests)
    asked = 0
    # Two probes answered by silence: two cool-downs ended, and the mirror was still down each time.
    while sum(1 for r in official_upstream.requests[seen_before:] if _is_probe(r) and r.status is None) < 2:
        assert _files(cache.url, "alpha") == ("offline", ALPHA_HELD)  # the view goes on
        missing = cache.get("/pypi/simple/beta/")  # not cached: a clear error at once, nothing sent
        assert missing.status == 503 and b"resting" in missing.body, missing.body
        asked += 1
        time.sleep(0.05)
    sent = official_upstream.requests[seen_before:]
    assert sent and all(_is_probe(request) for request in sent), [(r.method, r.path) for r in sent]
    assert len(sent) < asked  # one per cool-down, however many clients asked
    assert official_upstream.files.requests[-1].path.endswith("alpha-1.0-py3-none-any.whl")  # the seeding's only
    gate, upstream = _pypi_gate(cache)
    assert gate["degraded"] and gate["probing"] and not upstream["healthy"] and upstream["probing"], (gate, upstream)
    assert upstream["probes"] >= 2 and "probe: no answer" in upstream["last_error"], upstream
    metrics = cache.get("/metrics").body.decode()
    assert 'pkgcache_offline{cause="upstreams_down",side="pypi"} 1.0' in metrics
    assert 'pkgcache_upstream_probes_total{side="pypi",upstream=' in metrics


def test_the_offline_view_ends_when_a_probe_finds_the_mirror_back(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = _blackholed_after_seeding(official_upstream, make_cache, tmp_path)
    seen_before = len(official_upstream.requests)
    official_upstream.faults.fail_mode = None  # back
    _wait_for(lambda: _files(cache.url, "alpha")[0] != "offline", "out of the offline view")
    assert _files(cache.url, "alpha") == ("hit", ALPHA_ALL)  # the full index again
    sent = official_upstream.requests[seen_before:]
    answered = [request for request in sent if request.status is not None]
    assert _is_probe(answered[0]) and answered[0].status == 404, answered  # a probe's answer ended it
    assert all(_is_probe(request) for request in sent[: sent.index(answered[0]) + 1])
    gate, upstream = _pypi_gate(cache)
    assert not gate["degraded"] and not gate["probing"] and upstream["healthy"], (gate, upstream)
    assert cache.get("/pypi/simple/beta/").status == 200  # asked again
    done = run_pip_install(cache.index_url, tmp_path / "after", "alpha==2.0")
    assert done.returncode == 0, done.stderr
    assert "alpha==2.0" in installed_dists(tmp_path / "after")


def test_pip_and_uv_install_what_the_cache_holds_across_the_end_of_a_cool_down(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = _blackholed_after_seeding(official_upstream, make_cache, tmp_path)
    seen_before = len(official_upstream.requests)
    for kind, install in (("pip", run_pip_install), ("uv", run_uv_install)):
        probes_before = _probes_seen(official_upstream)
        done = install(cache.index_url, tmp_path / kind, "alpha")
        assert done.returncode == 0, done.stderr
        assert installed_dists(tmp_path / kind) == {"alpha==1.0"}
        # A cool-down ended during the install (a probe went out), or its end is waited for before the next one.
        _wait_for(lambda before=probes_before: _probes_seen(official_upstream) > before, "probed")
    assert _files(cache.url, "alpha") == ("offline", ALPHA_HELD)
    sent = official_upstream.requests[seen_before:]
    assert all(_is_probe(request) for request in sent), [(r.method, r.path) for r in sent]


CONDA_PROBE_PATH = f"/anaconda/{CHANNEL}/noarch/repodata.json"  # conda/upstream_channels.probe_target


def _conda_probes(mirror: MirrorLikeUpstream, since: int = 0) -> list[RecordedRequest]:
    return [
        request
        for request in mirror.requests[since:]
        if request.path == CONDA_PROBE_PATH and request.headers.get("Range") == "bytes=0-0"
    ]


def _conda_down(cache: RunningCache) -> tuple[dict[str, Any], dict[str, Any]]:
    status = json.loads(cache.get("/-/status").body)
    return status["conda"]["gate"], status["upstreams"]["conda"][0]


def _conda_cache_gone_down(mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]) -> RunningCache:
    """A pkgcache holding the channel's noarch repodata whose only mirror answers 503 (asking for a second's wait)
    and shows the offline view."""
    conda = {"upstreams": [f"{mirror.url}/anaconda/"], "channels": [CHANNEL]}
    cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda, upstream=PROBED)
    assert cache.get(f"/conda/{CHANNEL}/noarch/repodata.json").status == 200
    mirror.faults.fail_mode = "503"
    assert cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata.json").status in (502, 503)  # not cached: it rests
    _wait_for(lambda: _conda_down(cache)[0]["degraded"], "in the offline view")
    return cache


def test_a_conda_side_in_the_offline_view_probes_its_channel_and_ends_the_view_when_the_mirror_is_back(
    conda_mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _conda_cache_gone_down(conda_mirror, make_cache)
    seen_before = len(conda_mirror.requests)
    while not [probe for probe in _conda_probes(conda_mirror, seen_before) if probe.status == 503]:
        answer = cache.get(f"/conda/{CHANNEL}/noarch/repodata.json")
        assert answer.status == 200 and answer.headers["x-pkgcache-cache"] == "offline"
        time.sleep(0.05)
    sent = conda_mirror.requests[seen_before:]
    assert all(request in _conda_probes(conda_mirror, seen_before) for request in sent), sent  # nothing but probes
    conda_mirror.faults.fail_mode = None
    _wait_for(lambda: not _conda_down(cache)[0]["degraded"], "out of the offline view")
    assert _conda_probes(conda_mirror, seen_before)[-1].status in (200, 206)  # the probe that found it back
    answer = cache.get(f"/conda/{CHANNEL}/noarch/repodata.json")
    assert answer.status == 200 and answer.headers["x-pkgcache-cache"] != "offline"
    assert cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata.json").status == 200  # asked again


def test_a_probe_answered_with_retry_after_rests_its_upstream_as_long_as_asked(
    conda_mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _conda_cache_gone_down(conda_mirror, make_cache)
    conda_mirror.faults.retry_after = 600  # from the next answer on: come back in ten minutes
    seen_before = len(conda_mirror.requests)
    _wait_for(lambda: any(probe.status == 503 for probe in _conda_probes(conda_mirror, seen_before)), "probed")
    _wait_for(lambda: _conda_down(cache)[1]["cooldown_remaining"] > 60, "resting as long as asked")
    gate, upstream = _conda_down(cache)
    assert gate["degraded"] and gate["probing"] and upstream["probes"] >= 1, (gate, upstream)
    assert "probe: HTTP 503" in upstream["last_error"]


def test_a_held_pool_sends_no_callers_request_and_one_probe_at_a_time_per_upstream(
    bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    silent = FailingUpstream("hang")
    bg_loop.run(silent.start())
    settings = cache_settings(tmp_path, [silent.index_url], upstream={**PROBED, "cooldown": 0.1})

    async def scenario() -> tuple[int, int, str]:
        pool = make_pool([("silent", silent.index_url, None, 0.0)], settings, probe_target)
        try:
            upstream = pool.upstreams[0]
            pool.report_failure(upstream, "silent")
            pool.hold()
            with pytest.raises(UpstreamsUnavailable, match="resting"):  # its rest is not over: not asked
                await pool.fetch(lambda _: silent.index_url + "alpha/", _never)
            await asyncio.sleep(0.2)  # its rest is over, but the pool is held: still not asked
            with pytest.raises(UpstreamsUnavailable, match="until it answers a probe"):
                await pool.fetch(lambda _: silent.index_url + "alpha/", _never)
            for _ in range(5):  # the gate asks twice a second; a probe still waiting for its answer is not doubled
                pool.probe_due()
                await asyncio.sleep(0.05)
            in_flight = len(silent.requests)
            while pool.probing(upstream):
                await asyncio.sleep(0.05)
            return in_flight, upstream.stats.probes, upstream.last_error or ""
        finally:
            await pool.close()

    try:
        in_flight, probes, error = bg_loop.run(scenario())
    finally:
        bg_loop.run(silent.stop())
    assert (in_flight, probes) == (1, 1)
    assert [request.path for request in silent.requests] == ["/simple/pip/"]
    assert error.startswith("probe: no answer")


async def _never(upstream: Upstream, response: object) -> None:
    raise AssertionError("no answer was expected")


def test_what_the_offline_view_leaves_out_while_the_mirror_is_down_is_a_503_to_ask_again_not_a_404(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    """Offline by configuration, a file not held is gone for good (404); while every mirror is down it may come
    back, so clients are told to ask again (503 with Retry-After), in words that do not say the cache is offline."""
    cache = _blackholed_after_seeding(official_upstream, make_cache, tmp_path)
    for path in (
        "/pypi/files/alpha/alpha-2.0-py3-none-any.whl",
        "/pypi/files/alpha/alpha-2.0-py3-none-any.whl.metadata",
    ):
        answer = cache.get(path)
        assert answer.status == 503 and answer.headers["retry-after"] == "2", (path, answer.status, answer.body)
        assert b"every upstream is down" in answer.body and b"offline" not in answer.body, answer.body


def test_a_conda_package_the_offline_view_leaves_out_while_the_mirror_is_down_is_a_503(
    conda_mirror: MirrorLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _conda_cache_gone_down(conda_mirror, make_cache)
    _wait_for(lambda: _conda_down(cache)[0]["degraded"], "in the offline view")
    pkg = next(p for p in conda_channels.forge_pkgs if p.subdir == "noarch")
    answer = cache.get(f"/conda/{CHANNEL}/noarch/{pkg.filename}")
    assert answer.status == 503 and answer.headers["retry-after"] == "2", (answer.status, answer.body)
    assert b"every upstream is down" in answer.body and b"offline" not in answer.body, answer.body
