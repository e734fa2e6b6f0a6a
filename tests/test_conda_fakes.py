"""The conda fakes are realistic: a real client (py-rattler) installs from them, and they speak proper HTTP."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import zstandard

from tests.conda_support import APP_TREE, SUBDIR, Channels, assert_app_landed, install, installed_names
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.support import BackgroundLoop

# ---- helpers ---------------------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never via a proxy


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=30) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def read_repodata(channel: Path, subdir: str) -> dict:
    return json.loads((channel / subdir / "repodata.json").read_text())


# ---- the builder -----------------------------------------------------------------------------------------------


def test_channel_has_both_formats_and_matching_repodata(conda_channels: Channels) -> None:
    pkgs = conda_channels.main_pkgs
    assert {p.filename.rsplit(".", 1)[-1] for p in pkgs} == {"conda", "bz2"}
    for pkg in pkgs:
        repodata = read_repodata(conda_channels.main, pkg.subdir)
        key = "packages.conda" if pkg.filename.endswith(".conda") else "packages"
        record = repodata[key][pkg.filename]
        assert (record["sha256"], record["md5"], record["size"]) == (pkg.sha256, pkg.md5, pkg.size)
        assert hashlib.sha256(pkg.path.read_bytes()).hexdigest() == pkg.sha256
        assert tuple(record["depends"]) == pkg.depends
    noarch_records = read_repodata(conda_channels.main, "noarch")["packages.conda"]
    assert noarch_records["pydata-2.0-py_0.conda"]["noarch"] == "generic"
    assert find_pkg(pkgs, "bigpkg").size > 4_000_000
    for subdir in ("noarch", SUBDIR):
        assert (conda_channels.main / subdir / "repodata.json.zst").is_file()
        assert (conda_channels.main / subdir / "repodata.json.bz2").is_file()
        assert not (conda_channels.main / subdir / "repodata_shards.msgpack.zst").exists()
        assert (conda_channels.forge / subdir / "repodata_shards.msgpack.zst").is_file()
        assert not (conda_channels.forge / subdir / "repodata.json.bz2").exists()


def test_shard_index_names_every_package_with_relative_urls(conda_channels: Channels) -> None:
    raw = (conda_channels.forge / SUBDIR / "repodata_shards.msgpack.zst").read_bytes()
    index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 24))
    assert index["info"]["base_url"] == "" and index["info"]["shards_base_url"] == "./shards/"
    assert set(index["shards"]) == {"app", "libfoo"}
    for digest in index["shards"].values():
        assert (conda_channels.forge / SUBDIR / "shards" / f"{digest.hex()}.msgpack.zst").is_file()


# ---- a real client against the fakes --------------------------------------------------------------------------


def test_rattler_installs_from_anaconda_like_pkgs_main(anaconda_upstream: AnacondaLikeUpstream, tmp_path: Path) -> None:
    prefix, result = install(tmp_path, [anaconda_upstream.channel_url("pkgs/main")], ["app"])
    assert installed_names(result) == APP_TREE
    assert all(p["url"].startswith(anaconda_upstream.repo.url + "/pkgs/main/") for p in result["installed"])
    assert_app_landed(prefix)
    repo = anaconda_upstream.repo
    assert repo.count(f"/pkgs/main/{SUBDIR}/repodata.json.zst", "GET") == 1
    assert repo.count("/pkgs/main/noarch/repodata.json.zst", "GET") == 1
    assert repo.count("/pkgs/main/noarch/repodata.json.zst", "HEAD") == 1
    assert repo.count("/repodata_shards.msgpack.zst") == 2  # tried, 404, then the plain index
    assert repo.count(f"/pkgs/main/{SUBDIR}/app-1.0-h1_0.conda", "GET") == 1
    assert repo.count("/pkgs/main/noarch/tzinfo-2024.1-h0_0.tar.bz2", "GET") == 1
    assert anaconda_upstream.conda.requests == []


def test_rattler_installs_sharded_from_anaconda_like_conda_forge(
    anaconda_upstream: AnacondaLikeUpstream, tmp_path: Path
) -> None:
    prefix, result = install(tmp_path, [anaconda_upstream.channel_url("conda-forge")], ["app"])
    assert installed_names(result) == APP_TREE
    assert_app_landed(prefix)
    conda = anaconda_upstream.conda
    assert conda.count("/conda-forge/noarch/repodata_shards.msgpack.zst", "GET") == 1
    shard_requests = [r for r in conda.requests if "/shards/" in r.path]
    assert len(shard_requests) == 4  # app, libfoo, pydata, tzinfo
    assert all(r.status == 200 and r.headers.get("Cache-Control") == "no-store" for r in shard_requests)
    assert conda.count("repodata.json.zst") == 0 and conda.count("repodata.json") == 0
    assert anaconda_upstream.repo.requests == []


def test_rattler_installs_from_json_only_mirror(conda_mirror: MirrorLikeUpstream, tmp_path: Path) -> None:
    urls = [conda_mirror.channel_url("pkgs/main"), conda_mirror.channel_url("conda-forge")]
    assert urls[0].endswith("/anaconda/pkgs/main") and urls[1].endswith("/anaconda/cloud/conda-forge")
    prefix, result = install(tmp_path, urls, ["app", "bigpkg"])
    assert installed_names(result) == APP_TREE | {"bigpkg"}
    assert_app_landed(prefix)
    assert (prefix / "share/bigpkg/blob.bin").stat().st_size == 4 * 1024 * 1024
    gets = {r.path: r.status for r in conda_mirror.requests if r.method == "GET"}
    assert gets[f"/anaconda/pkgs/main/{SUBDIR}/repodata.json"] == 200
    assert gets["/anaconda/cloud/conda-forge/noarch/repodata.json"] == 200
    assert all(status == 404 for path, status in gets.items() if path.endswith(".msgpack.zst"))
    assert all(r.status == 404 for r in conda_mirror.requests if r.method == "HEAD")  # .zst and .bz2 probes


def test_rattler_rejects_a_corrupt_package(anaconda_upstream: AnacondaLikeUpstream, tmp_path: Path) -> None:
    anaconda_upstream.corrupt_files = {"app-1.0-h1_0.conda"}
    # rattler hashes while it extracts, so the error is a checksum or a broken archive, whichever shows first.
    with pytest.raises(RuntimeError, match=r"failed to fetch app-1\.0-h1_0\.conda"):
        install(tmp_path, [anaconda_upstream.channel_url("pkgs/main")], ["app"])
    assert anaconda_upstream.count("app-1.0-h1_0.conda", "GET") >= 1


# ---- HTTP behaviour of the fakes -------------------------------------------------------------------------------


def test_validators_ranges_head_and_404(anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels) -> None:
    base = anaconda_upstream.channel_url("pkgs/main")
    big = find_pkg(conda_channels.main_pkgs, "bigpkg")
    url = f"{base}/noarch/{big.filename}"

    first = fetch(url)
    assert first.status == 200 and hashlib.sha256(first.body).hexdigest() == big.sha256
    assert first.headers["accept-ranges"] == "bytes" and first.headers["content-type"] == "application/octet-stream"
    assert fetch(url, headers={"If-None-Match": first.headers["etag"]}).status == 304
    assert fetch(url, headers={"If-Modified-Since": first.headers["last-modified"]}).status == 304

    head = fetch(url, "HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) == big.size

    part = fetch(url, headers={"Range": "bytes=100-"})
    assert part.status == 206 and part.body == first.body[100:]
    assert part.headers["content-range"] == f"bytes 100-{big.size - 1}/{big.size}"
    assert fetch(url, headers={"Range": f"bytes={big.size}-"}).status == 416

    assert fetch(f"{base}/noarch/current_repodata.json").status == 404
    assert fetch(f"{base}/noarch/").status == 404
    forge = anaconda_upstream.channel_url("conda-forge")
    assert fetch(f"{forge}/noarch/repodata.json.bz2").status == 404  # not built for this channel
    assert fetch(f"{base}/noarch/repodata.json.bz2").status == 200


def test_index_json_gzip_and_cache_headers(anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels) -> None:
    url = f"{anaconda_upstream.channel_url('pkgs/main')}/noarch/repodata.json"
    plain = fetch(url)
    assert plain.headers["content-type"] == "application/json"
    assert plain.headers["cache-control"] == "public, max-age=60"
    assert plain.body == (conda_channels.main / "noarch/repodata.json").read_bytes()
    zipped = fetch(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["etag"].startswith("W/")
    assert gzip.decompress(zipped.body) == plain.body
    # A client revalidating with the weak tag of the gzip variant still gets a 304.
    assert fetch(url, headers={"If-None-Match": zipped.headers["etag"]}).status == 304
    pkg_url = f"{anaconda_upstream.channel_url('pkgs/main')}/noarch/pydata-2.0-py_0.conda"
    assert "immutable" in fetch(pkg_url, "HEAD").headers["cache-control"]


def test_only_json_mirror_hides_compressed_indexes(conda_mirror: MirrorLikeUpstream) -> None:
    base = conda_mirror.channel_url("pkgs/main")
    assert fetch(f"{base}/noarch/repodata.json").status == 200
    for name in ("repodata.json.zst", "repodata.json.bz2", "repodata_shards.msgpack.zst"):
        assert fetch(f"{base}/noarch/{name}", "HEAD").status == 404


def test_fault_knobs(anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels) -> None:
    pkg = find_pkg(conda_channels.main_pkgs, "pydata")
    url = f"{anaconda_upstream.channel_url('pkgs/main')}/noarch/{pkg.filename}"

    anaconda_upstream.corrupt_files = {pkg.filename}
    bad = fetch(url)
    assert len(bad.body) == pkg.size and hashlib.sha256(bad.body).hexdigest() != pkg.sha256
    anaconda_upstream.corrupt_files = set()

    anaconda_upstream.fail_mode = "503"
    assert fetch(url).status == 503
    anaconda_upstream.fail_mode = "reset"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(url)
    anaconda_upstream.fail_mode = "truncate"
    with pytest.raises(http.client.IncompleteRead):
        fetch(url)
    anaconda_upstream.fail_mode = None
    anaconda_upstream.fail_paths = None

    anaconda_upstream.bytes_per_second = 4000
    started = time.monotonic()
    assert fetch(url).status == 200
    assert time.monotonic() - started >= 0.2
    anaconda_upstream.bytes_per_second = None

    assert [r.status for r in anaconda_upstream.repo.requests] == [200, 503, None, 200, 200]
    assert anaconda_upstream.count(pkg.filename) == 5
    anaconda_upstream.reset_log()
    assert anaconda_upstream.requests == []


def test_absolute_shard_urls_point_back_at_the_fake(bg_loop: BackgroundLoop, conda_channels: Channels) -> None:
    upstream = AnacondaLikeUpstream({"conda-forge": conda_channels.forge}, absolute_shard_urls=True)
    bg_loop.run(upstream.start())
    try:
        reply = fetch(f"{upstream.channel_url('conda-forge')}/{SUBDIR}/repodata_shards.msgpack.zst")
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(reply.body, max_output_size=1 << 24))
        subdir_url = f"{upstream.conda.url}/conda-forge/{SUBDIR}/"
        assert index["info"]["base_url"] == subdir_url
        assert index["info"]["shards_base_url"] == subdir_url + "shards/"
    finally:
        bg_loop.run(upstream.stop())
