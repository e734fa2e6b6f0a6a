"""A real conda client (py-rattler) installs through pkgcache; repodata in all forms, packages checked."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.cache_service import RunningCache
from tests.conda_support import APP_TREE, SUBDIR, Channels, assert_app_landed, install, installed_names
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.support import BackgroundLoop, fetch_concurrently

CHANNELS = ["pkgs/main", "cloud/conda-forge"]


def anaconda_config(upstream: AnacondaLikeUpstream) -> dict[str, Any]:
    return {"name": "anaconda-fake", "pkgs_url": f"{upstream.repo.url}/pkgs/", "cloud_url": f"{upstream.conda.url}/"}


def mirror_config(upstream: MirrorLikeUpstream) -> str:
    return f"{upstream.url}/anaconda/"


def conda_cache(make_cache: Callable[..., RunningCache], *upstreams: Any, **conda: Any) -> RunningCache:
    # The PyPI side points at a closed port: these tests must never need it.
    conda_section = {"upstreams": list(upstreams), "channels": CHANNELS, **conda}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda_section)


def channel_urls(cache: RunningCache) -> list[str]:
    return [f"{cache.url}/conda/{channel}" for channel in CHANNELS]


def assert_only_pkgcache_asked(upstream: AnacondaLikeUpstream | MirrorLikeUpstream) -> None:
    """Nothing went around pkgcache: every request the upstream saw came from pkgcache, with plain headers."""
    assert upstream.requests
    for request in upstream.requests:
        assert request.headers.get("User-Agent", "").startswith("pkgcache/"), request
        assert not any(name.lower().startswith("x-") for name in request.headers), request


@pytest.mark.parametrize("kind", ["anaconda", "mirror"])
def test_rattler_installs_through_pkgcache_then_from_cache_alone(
    kind: str,
    anaconda_upstream: AnacondaLikeUpstream,
    conda_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    upstream = anaconda_upstream if kind == "anaconda" else conda_mirror
    config = anaconda_config(anaconda_upstream) if kind == "anaconda" else mirror_config(conda_mirror)
    cache = conda_cache(make_cache, config, index_ttl=0)
    for spec_channel in (channel_urls(cache)[:1], channel_urls(cache)[1:]):
        prefix, result = install(tmp_path, spec_channel, ["app"], name=f"env-{len(list(tmp_path.iterdir()))}")
        assert installed_names(result) == APP_TREE
        assert_app_landed(prefix)
        assert all(p["url"].startswith(cache.url) for p in result["installed"])
    assert_only_pkgcache_asked(upstream)
    if kind == "anaconda":
        # conda-forge here is sharded: rattler used the shards, through pkgcache.
        assert upstream.count("/repodata_shards.msgpack.zst") >= 1
        assert any("/shards/" in path for path in upstream.paths())

    bg_loop.run(upstream.stop())
    prefix, result = install(tmp_path, channel_urls(cache), ["app"], name="offline")
    assert installed_names(result) == APP_TREE
    assert_app_landed(prefix)


def test_absolute_shard_urls_are_rewritten_so_clients_never_go_around(
    bg_loop: BackgroundLoop, conda_channels: Channels, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    upstream = AnacondaLikeUpstream(
        {"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge}, absolute_shard_urls=True
    )
    bg_loop.run(upstream.start())
    try:
        cache = conda_cache(make_cache, anaconda_config(upstream))
        _, result = install(tmp_path, channel_urls(cache)[1:], ["app"])
        assert installed_names(result) == APP_TREE
        assert_only_pkgcache_asked(upstream)
        assert any("/shards/" in path for path in upstream.paths())
    finally:
        bg_loop.run(upstream.stop())


def test_zst_is_made_when_the_upstream_has_only_json(
    conda_mirror: MirrorLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    cache = conda_cache(make_cache, mirror_config(conda_mirror))
    head = cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json.zst", method="HEAD")
    assert head.status == 200
    answer = cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json.zst")
    assert answer.status == 200 and answer.headers["content-type"] == "application/zstd"
    original = (conda_channels.main / SUBDIR / "repodata.json").read_bytes()
    assert zstandard.ZstdDecompressor().decompress(answer.body, max_output_size=1 << 30) == original
    assert conda_mirror.count("/repodata.json.zst") >= 1  # asked, answered 404
    assert conda_mirror.count(f"/{SUBDIR}/repodata.json") == 1
    # A second request is served as it is: no new upstream request, no new compression.
    again = cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json.zst")
    assert again.body == answer.body and conda_mirror.count(f"/{SUBDIR}/repodata.json") == 1


def test_index_files_answer_head_404_and_304(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    path = f"/conda/pkgs/main/{SUBDIR}/repodata.json"
    first = cache.get(path)
    assert first.status == 200
    assert first.body == (conda_channels.main / SUBDIR / "repodata.json").read_bytes()
    second = cache.get(path)
    assert second.headers["x-pkgcache-cache"] == "hit"
    assert "max-age=" in second.headers["cache-control"] and second.headers["etag"]
    revalidated = cache.get(path, {"If-None-Match": second.headers["etag"]})
    assert revalidated.status == 304
    head = cache.get(path, method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) == len(first.body)
    bz2 = cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json.bz2")
    assert bz2.status == 200 and bz2.body == (conda_channels.main / SUBDIR / "repodata.json.bz2").read_bytes()
    # Not there upstream: a 404, remembered so the next probe costs the upstream nothing.
    missing = f"/conda/pkgs/main/{SUBDIR}/current_repodata.json"
    assert cache.get(missing, method="HEAD").status == 404
    assert cache.get(missing).status == 404
    assert anaconda_upstream.count("/current_repodata.json") == 1


def test_stale_repodata_is_revalidated_and_served_when_upstreams_are_down(
    anaconda_upstream: AnacondaLikeUpstream, make_cache: Callable[..., RunningCache], bg_loop: BackgroundLoop
) -> None:
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream), index_ttl=0)
    path = "/conda/pkgs/main/noarch/repodata.json"
    assert cache.get(path).status == 200
    assert cache.get(path).headers["x-pkgcache-cache"] == "stale"
    _wait_for(lambda: anaconda_upstream.count("/noarch/repodata.json") == 2)
    revalidation = [r for r in anaconda_upstream.requests if r.path.endswith("/noarch/repodata.json")][-1]
    assert revalidation.headers.get("If-None-Match") or revalidation.headers.get("If-Modified-Since")
    bg_loop.run(anaconda_upstream.stop())
    answer = cache.get(path)
    assert answer.status == 200 and answer.headers["x-pkgcache-cache"] == "stale"


def test_concurrent_requests_for_one_package_cause_one_upstream_download(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    big = find_pkg(conda_channels.main_pkgs, "bigpkg")
    anaconda_upstream.bytes_per_second = 8 * 1024 * 1024
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    answers = asyncio.run(fetch_concurrently(f"{cache.url}/conda/pkgs/main/noarch/{big.filename}", 30))
    assert all(status == 200 for status, _ in answers)
    assert all(hashlib.sha256(body).hexdigest() == big.sha256 for _, body in answers)
    assert anaconda_upstream.count(f"/{big.filename}") == 1
    ranged = cache.get(f"/conda/pkgs/main/noarch/{big.filename}", {"Range": "bytes=100-199"})
    assert ranged.status == 206 and len(ranged.body) == 100


def test_a_package_that_does_not_match_repodata_is_refused_and_not_kept(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    pkg = find_pkg(conda_channels.main_pkgs, "tzinfo")
    anaconda_upstream.corrupt_files = {pkg.filename}
    # The lying upstream is rested (the fault suite checks that); with no rest, the mended one is asked again.
    cache = make_cache(
        ["http://127.0.0.1:9/simple/"],
        conda={"upstreams": [anaconda_config(anaconda_upstream)], "channels": CHANNELS},
        upstream={"cooldown": 0},
    )
    url = f"/conda/pkgs/main/{pkg.subdir}/{pkg.filename}"
    try:
        answer = cache.get(url)
        assert answer.status == 502
    except http.client.IncompleteRead:
        pass  # cut before the last byte once streaming had begun
    assert not (cache.data_dir / "conda" / "pkgs" / "main" / pkg.subdir / pkg.filename).exists()
    anaconda_upstream.corrupt_files = set()
    good = cache.get(url)
    assert good.status == 200 and hashlib.sha256(good.body).hexdigest() == pkg.sha256


def test_failover_to_the_second_conda_upstream(
    anaconda_upstream: AnacondaLikeUpstream,
    conda_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    conda_mirror.fail_mode = "503"
    cache = conda_cache(make_cache, mirror_config(conda_mirror), anaconda_config(anaconda_upstream))
    _, result = install(tmp_path, channel_urls(cache), ["app"])
    assert installed_names(result) == APP_TREE
    status = json.loads(cache.get("/-/status").body)
    first, second = status["upstreams"]["conda"]
    assert first["healthy"] is False and second["healthy"] is True
    assert status["conda"]["channels"] == CHANNELS


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/conda/pkgs/nope/noarch/repodata.json", 404),
        ("/conda/elsewhere/main/noarch/repodata.json", 404),
        ("/conda/pkgs/main/not_a_subdir/repodata.json", 404),
        ("/conda/pkgs/main/noarch/passwd", 404),
        ("/conda/pkgs/main/noarch/shards/abc.msgpack.zst", 404),
        ("/conda/pkgs/main/noarch/..%2f..%2frepodata.json", 400),
        ("/conda/pkgs/main/noarch/missing-1.0-0.conda", 404),
    ],
)
def test_bad_conda_paths_get_clear_errors(
    path: str, status: int, anaconda_upstream: AnacondaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    answer = cache.get(path)
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("text/plain") and answer.body.strip()


def test_shards_are_served_from_cache_even_when_the_client_says_no_store(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    index = cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/repodata_shards.msgpack.zst")
    assert index.status == 200
    import msgpack

    document = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(index.body, max_output_size=1 << 30))
    assert document["info"]["shards_base_url"] == "./shards/"
    shard = next(iter(document["shards"].values())).hex() + ".msgpack.zst"
    url = f"/conda/cloud/conda-forge/{SUBDIR}/shards/{shard}"
    for _ in range(3):
        answer = cache.get(url, {"Cache-Control": "no-store"})
        assert answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == shard.split(".")[0]
    assert anaconda_upstream.count(f"/shards/{shard}") == 1


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def test_a_package_is_found_when_the_cached_repodata_was_removed_under_the_service(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    pkg = find_pkg(conda_channels.main_pkgs, "tzinfo")
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    assert cache.get(f"/conda/pkgs/main/{pkg.subdir}/repodata.json").status == 200
    subdir = cache.data_dir / "conda" / "pkgs" / "main" / pkg.subdir
    removed = [path for path in subdir.glob("repodata.json*") if path.is_file()]
    assert removed
    for path in removed:  # an operator's clean-up, or a purge: the sidecars stay
        path.unlink()
    answer = cache.get(f"/conda/pkgs/main/{pkg.subdir}/{pkg.filename}")
    assert answer.status == 200, answer.body[:300]
    assert hashlib.sha256(answer.body).hexdigest() == pkg.sha256
