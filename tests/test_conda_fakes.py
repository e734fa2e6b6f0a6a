"""The conda fakes are realistic: a real client (py-rattler) installs from them, and they speak proper HTTP."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import zstandard

from tests.clients.rattler_client import run_rattler_install
from tests.fakes.conda_channel import CondaPkg, build_channel, find_pkg, machine_subdir
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.support import BackgroundLoop

SUBDIR = machine_subdir()
APP_TREE = {"app", "libfoo", "pydata", "tzinfo"}


@dataclass(frozen=True)
class Channels:
    main: Path  # plain channel with .zst and .bz2, like pkgs/main
    forge: Path  # sharded channel, like conda-forge
    main_pkgs: list[CondaPkg]
    forge_pkgs: list[CondaPkg]


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Channels:
    root = tmp_path_factory.mktemp("conda-channels")
    main_pkgs = build_channel(root / "main", write_bz2=True)
    forge_pkgs = build_channel(root / "forge", sharded=True)
    return Channels(root / "main", root / "forge", main_pkgs, forge_pkgs)


@pytest.fixture
def anaconda(bg_loop: BackgroundLoop, channels: Channels) -> Iterator[AnacondaLikeUpstream]:
    upstream = AnacondaLikeUpstream({"pkgs/main": channels.main, "conda-forge": channels.forge})
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


@pytest.fixture
def mirror(bg_loop: BackgroundLoop, channels: Channels) -> Iterator[MirrorLikeUpstream]:
    upstream = MirrorLikeUpstream({"pkgs/main": channels.main, "conda-forge": channels.forge}, only_json=True)
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


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


def install(tmp_path: Path, channel_urls: list[str], specs: list[str], name: str = "env") -> tuple[Path, dict]:
    prefix = tmp_path / name
    result = run_rattler_install(channel_urls, prefix, tmp_path / f"{name}-cache", specs)
    return prefix, result


def installed_names(result: dict) -> set[str]:
    return {p["name"] for p in result["installed"]}


def assert_app_landed(prefix: Path) -> None:
    assert (prefix / "share/app/app.txt").read_text() == "app 1.0\n"
    assert (prefix / "share/libfoo/libfoo.txt").read_text() == "libfoo 1.1\n"
    assert (prefix / "share/tzinfo/tzinfo.txt").is_file()
    assert (prefix / "bin/app").stat().st_mode & 0o111
    metas = {p.name for p in (prefix / "conda-meta").glob("*.json")}
    assert "app-1.0-h1_0.json" in metas and "libfoo-1.1-h1_0.json" in metas


def read_repodata(channel: Path, subdir: str) -> dict:
    return json.loads((channel / subdir / "repodata.json").read_text())


# ---- the builder -----------------------------------------------------------------------------------------------


def test_channel_has_both_formats_and_matching_repodata(channels: Channels) -> None:
    pkgs = channels.main_pkgs
    assert {p.filename.rsplit(".", 1)[-1] for p in pkgs} == {"conda", "bz2"}
    for pkg in pkgs:
        repodata = read_repodata(channels.main, pkg.subdir)
        key = "packages.conda" if pkg.filename.endswith(".conda") else "packages"
        record = repodata[key][pkg.filename]
        assert (record["sha256"], record["md5"], record["size"]) == (pkg.sha256, pkg.md5, pkg.size)
        assert hashlib.sha256(pkg.path.read_bytes()).hexdigest() == pkg.sha256
        assert tuple(record["depends"]) == pkg.depends
    assert read_repodata(channels.main, "noarch")["packages.conda"]["pydata-2.0-py_0.conda"]["noarch"] == "generic"
    assert find_pkg(pkgs, "bigpkg").size > 4_000_000
    for subdir in ("noarch", SUBDIR):
        assert (channels.main / subdir / "repodata.json.zst").is_file()
        assert (channels.main / subdir / "repodata.json.bz2").is_file()
        assert not (channels.main / subdir / "repodata_shards.msgpack.zst").exists()
        assert (channels.forge / subdir / "repodata_shards.msgpack.zst").is_file()
        assert not (channels.forge / subdir / "repodata.json.bz2").exists()


def test_shard_index_names_every_package_with_relative_urls(channels: Channels) -> None:
    raw = (channels.forge / SUBDIR / "repodata_shards.msgpack.zst").read_bytes()
    index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 24))
    assert index["info"]["base_url"] == "" and index["info"]["shards_base_url"] == "./shards/"
    assert set(index["shards"]) == {"app", "libfoo"}
    for digest in index["shards"].values():
        assert (channels.forge / SUBDIR / "shards" / f"{digest.hex()}.msgpack.zst").is_file()


# ---- a real client against the fakes --------------------------------------------------------------------------


def test_rattler_installs_from_anaconda_like_pkgs_main(anaconda: AnacondaLikeUpstream, tmp_path: Path) -> None:
    prefix, result = install(tmp_path, [anaconda.channel_url("pkgs/main")], ["app"])
    assert installed_names(result) == APP_TREE
    assert all(p["url"].startswith(anaconda.repo.url + "/pkgs/main/") for p in result["installed"])
    assert_app_landed(prefix)
    repo = anaconda.repo
    assert repo.count(f"/pkgs/main/{SUBDIR}/repodata.json.zst", "GET") == 1
    assert repo.count("/pkgs/main/noarch/repodata.json.zst", "GET") == 1
    assert repo.count("/pkgs/main/noarch/repodata.json.zst", "HEAD") == 1
    assert repo.count("/repodata_shards.msgpack.zst") == 2  # tried, 404, then the plain index
    assert repo.count(f"/pkgs/main/{SUBDIR}/app-1.0-h1_0.conda", "GET") == 1
    assert repo.count("/pkgs/main/noarch/tzinfo-2024.1-h0_0.tar.bz2", "GET") == 1
    assert anaconda.conda.requests == []


def test_rattler_installs_sharded_from_anaconda_like_conda_forge(
    anaconda: AnacondaLikeUpstream, tmp_path: Path
) -> None:
    prefix, result = install(tmp_path, [anaconda.channel_url("conda-forge")], ["app"])
    assert installed_names(result) == APP_TREE
    assert_app_landed(prefix)
    conda = anaconda.conda
    assert conda.count("/conda-forge/noarch/repodata_shards.msgpack.zst", "GET") == 1
    shard_requests = [r for r in conda.requests if "/shards/" in r.path]
    assert len(shard_requests) == 4  # app, libfoo, pydata, tzinfo
    assert all(r.status == 200 and r.headers.get("Cache-Control") == "no-store" for r in shard_requests)
    assert conda.count("repodata.json.zst") == 0 and conda.count("repodata.json") == 0
    assert anaconda.repo.requests == []


def test_rattler_installs_from_json_only_mirror(mirror: MirrorLikeUpstream, tmp_path: Path) -> None:
    urls = [mirror.channel_url("pkgs/main"), mirror.channel_url("conda-forge")]
    assert urls[0].endswith("/anaconda/pkgs/main") and urls[1].endswith("/anaconda/cloud/conda-forge")
    prefix, result = install(tmp_path, urls, ["app", "bigpkg"])
    assert installed_names(result) == APP_TREE | {"bigpkg"}
    assert_app_landed(prefix)
    assert (prefix / "share/bigpkg/blob.bin").stat().st_size == 4 * 1024 * 1024
    gets = {r.path: r.status for r in mirror.requests if r.method == "GET"}
    assert gets[f"/anaconda/pkgs/main/{SUBDIR}/repodata.json"] == 200
    assert gets["/anaconda/cloud/conda-forge/noarch/repodata.json"] == 200
    assert all(status == 404 for path, status in gets.items() if path.endswith(".msgpack.zst"))
    assert all(r.status == 404 for r in mirror.requests if r.method == "HEAD")  # .zst and .bz2 probes


def test_rattler_rejects_a_corrupt_package(anaconda: AnacondaLikeUpstream, tmp_path: Path) -> None:
    anaconda.corrupt_files = {"app-1.0-h1_0.conda"}
    # rattler hashes while it extracts, so the error is a checksum or a broken archive, whichever shows first.
    with pytest.raises(RuntimeError, match=r"failed to fetch app-1\.0-h1_0\.conda"):
        install(tmp_path, [anaconda.channel_url("pkgs/main")], ["app"])
    assert anaconda.count("app-1.0-h1_0.conda", "GET") >= 1


# ---- HTTP behaviour of the fakes -------------------------------------------------------------------------------


def test_validators_ranges_head_and_404(anaconda: AnacondaLikeUpstream, channels: Channels) -> None:
    base = anaconda.channel_url("pkgs/main")
    big = find_pkg(channels.main_pkgs, "bigpkg")
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
    forge = anaconda.channel_url("conda-forge")
    assert fetch(f"{forge}/noarch/repodata.json.bz2").status == 404  # not built for this channel
    assert fetch(f"{base}/noarch/repodata.json.bz2").status == 200


def test_index_json_gzip_and_cache_headers(anaconda: AnacondaLikeUpstream, channels: Channels) -> None:
    url = f"{anaconda.channel_url('pkgs/main')}/noarch/repodata.json"
    plain = fetch(url)
    assert plain.headers["content-type"] == "application/json"
    assert plain.headers["cache-control"] == "public, max-age=60"
    assert plain.body == (channels.main / "noarch/repodata.json").read_bytes()
    zipped = fetch(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["etag"].startswith("W/")
    assert gzip.decompress(zipped.body) == plain.body
    # A client revalidating with the weak tag of the gzip variant still gets a 304.
    assert fetch(url, headers={"If-None-Match": zipped.headers["etag"]}).status == 304
    pkg_url = f"{anaconda.channel_url('pkgs/main')}/noarch/pydata-2.0-py_0.conda"
    assert "immutable" in fetch(pkg_url, "HEAD").headers["cache-control"]


def test_only_json_mirror_hides_compressed_indexes(mirror: MirrorLikeUpstream) -> None:
    base = mirror.channel_url("pkgs/main")
    assert fetch(f"{base}/noarch/repodata.json").status == 200
    for name in ("repodata.json.zst", "repodata.json.bz2", "repodata_shards.msgpack.zst"):
        assert fetch(f"{base}/noarch/{name}", "HEAD").status == 404


def test_fault_knobs(anaconda: AnacondaLikeUpstream, channels: Channels) -> None:
    pkg = find_pkg(channels.main_pkgs, "pydata")
    url = f"{anaconda.channel_url('pkgs/main')}/noarch/{pkg.filename}"

    anaconda.corrupt_files = {pkg.filename}
    bad = fetch(url)
    assert len(bad.body) == pkg.size and hashlib.sha256(bad.body).hexdigest() != pkg.sha256
    anaconda.corrupt_files = set()

    anaconda.fail_mode = "503"
    assert fetch(url).status == 503
    anaconda.fail_mode = "reset"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(url)
    anaconda.fail_mode = "truncate"
    with pytest.raises(http.client.IncompleteRead):
        fetch(url)
    anaconda.fail_mode = None
    anaconda.fail_paths = None

    anaconda.bytes_per_second = 4000
    started = time.monotonic()
    assert fetch(url).status == 200
    assert time.monotonic() - started >= 0.2
    anaconda.bytes_per_second = None

    assert [r.status for r in anaconda.repo.requests] == [200, 503, None, 200, 200]
    assert anaconda.count(pkg.filename) == 5
    anaconda.reset_log()
    assert anaconda.requests == []


def test_absolute_shard_urls_point_back_at_the_fake(bg_loop: BackgroundLoop, channels: Channels) -> None:
    upstream = AnacondaLikeUpstream({"conda-forge": channels.forge}, absolute_shard_urls=True)
    bg_loop.run(upstream.start())
    try:
        reply = fetch(f"{upstream.channel_url('conda-forge')}/{SUBDIR}/repodata_shards.msgpack.zst")
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(reply.body, max_output_size=1 << 24))
        subdir_url = f"{upstream.conda.url}/conda-forge/{SUBDIR}/"
        assert index["info"]["base_url"] == subdir_url
        assert index["info"]["shards_base_url"] == subdir_url + "shards/"
    finally:
        bg_loop.run(upstream.stop())
