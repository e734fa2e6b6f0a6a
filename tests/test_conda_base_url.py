"""CEP-15 `info.base_url`: an upstream's repodata that says its packages are elsewhere never sends clients around
pkgcache (conda/base_url.py). Clients are sent to pkgcache for every package, and pkgcache fetches them from where
the repodata said (checked against its sha256), whatever form of the repodata the client reads.

The upstreams here answer package files 404 under their channels (`index_only`): the packages are only where the
base_url leads, so an install that works shows pkgcache followed it.
"""

from __future__ import annotations

import bz2
import http.client
import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pkgcache.conda import base_url as cep15
from pkgcache.conda.base_url import needs_rewrite, rewrite_repodata
from tests.cache_service import RunningCache
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import APP_TREE, SUBDIR, Channels, assert_app_landed, installed_names
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.faulty import Fault, FaultyCondaMirror, Kind
from tests.support import BackgroundLoop, http_get

NO_PROXY_PYPI = ["http://127.0.0.1:9/simple/"]  # the PyPI side points at a closed port: never needed here


@pytest.fixture
def channels(conda_channels: Channels) -> dict[str, Path]:
    return {"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge}


@pytest.fixture
def files_host(bg_loop: BackgroundLoop, channels: dict[str, Path]) -> Iterator[MirrorLikeUpstream]:
    """The host an upstream's repodata names as its base_url: it holds the packages, and counts who asks."""
    server = MirrorLikeUpstream(channels)
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.fixture
def upstream(bg_loop: BackgroundLoop, channels: dict[str, Path]) -> Iterator[MirrorLikeUpstream]:
    """The configured mirror: index files only, its repodata saying where the packages are."""
    server = MirrorLikeUpstream(channels)
    server.server.index_only = True
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def _cache(
    make_cache: Callable[..., RunningCache], upstream: MirrorLikeUpstream, **upstream_section: Any
) -> RunningCache:
    conda = {"upstreams": [f"{upstream.url}/anaconda/"], "channels": ["pkgs/main", "cloud/conda-forge"]}
    return make_cache(NO_PROXY_PYPI, conda=conda, upstream=upstream_section)


def _install(tmp_path: Path, cache: RunningCache, name: str, *flags: str) -> dict[str, Any]:
    """py-rattler solves and installs the app from pkgs/main through pkgcache, with a fresh client cache."""
    prefix = tmp_path / name
    channel = f"{cache.url}/conda/pkgs/main"
    result = run_rattler_install([channel], prefix, tmp_path / f"{name}-cache", ["app"], extra_args=list(flags))
    assert installed_names(result) == APP_TREE
    assert_app_landed(prefix)
    assert all(package["url"].startswith(f"{channel}/") for package in result["installed"]), result
    return result


def _text(name: str, body: bytes) -> dict[str, Any]:
    if name.endswith(".zst"):
        body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True).read()
    elif name.endswith(".bz2"):
        body = bz2.decompress(body)
    document: dict[str, Any] = json.loads(body)
    return document


def _assert_repodata_points_here(cache: RunningCache, channel_dir: Path) -> None:
    """Every form pkgcache serves (cached, or streamed on a miss) has no base_url, and the upstream's records."""
    upstream_document = json.loads((channel_dir / SUBDIR / "repodata.json").read_bytes())
    for name in ("repodata.json", "repodata.json.zst", "repodata.json.bz2"):
        for _ in range(2):  # the first may be a miss, the second is a hit
            answer = cache.get(f"/conda/pkgs/main/{SUBDIR}/{name}")
            assert answer.status == 200, (name, answer.status)
            document = _text(name, answer.body)
            assert "base_url" not in document["info"], (name, document["info"])
            assert document["info"]["subdir"] == SUBDIR
            for section in ("packages", "packages.conda"):
                assert document[section] == upstream_document[section], (name, section)


def _assert_only_pkgcache_asked(server: MirrorLikeUpstream) -> None:
    assert server.requests
    for request in server.requests:
        assert request.headers.get("User-Agent", "").startswith("pkgcache/"), request


@pytest.mark.parametrize("flags", [["--no-sharded"], ["--no-sharded", "--no-zst", "--no-bz2"], []])
def test_packages_a_repodata_places_on_another_host_are_fetched_by_pkgcache_not_by_clients(
    flags: list[str],
    upstream: MirrorLikeUpstream,
    files_host: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    conda_channels: Channels,
    tmp_path: Path,
) -> None:
    """The mirror's repodata (every form) says `base_url: http://<files host>/anaconda/pkgs/main/<subdir>/`, a host
    named in upstream.allowed_hosts. rattler, reading repodata.json.zst, .json or the shards made here, is sent to
    pkgcache for every package; pkgcache fetches them from the files host and keeps them."""
    upstream.server.elsewhere = files_host.url
    cache = _cache(make_cache, upstream, allowed_hosts=[files_host.url.removeprefix("http://")])
    result = _install(tmp_path, cache, "env", *flags)
    _assert_only_pkgcache_asked(files_host)
    assert any(path.endswith((".conda", ".tar.bz2")) for path in files_host.paths())
    assert not any(path.endswith((".conda", ".tar.bz2")) for path in upstream.paths())
    for package in result["installed"]:
        subdir, filename = package["url"].split("/")[-2:]
        assert (cache.data_dir / "conda" / "pkgs" / "main" / subdir / filename).is_file(), package
    _assert_repodata_points_here(cache, conda_channels.main)

    # A second client, everything from the cache: the files host is not asked again.
    files_host.reset_log()
    _install(tmp_path, cache, "again", *flags)
    assert files_host.requests == []


def test_a_relative_base_url_is_resolved_against_the_upstreams_repodata(
    upstream: MirrorLikeUpstream, make_cache: Callable[..., RunningCache], conda_channels: Channels, tmp_path: Path
) -> None:
    """`base_url: ../../../../package-store/main/<subdir>/` is relative to the mirror's repodata URL, which the client
    does not know: read against pkgcache's URL it would lead nowhere. pkgcache resolves it on the mirror."""
    upstream.server.mount_packages("/package-store/main", conda_channels.main)
    upstream.server.base_url = "../../../../package-store/main/{subdir}/"
    cache = _cache(make_cache, upstream)
    _install(tmp_path, cache, "env", "--no-sharded")
    assert any(path.startswith("/package-store/main/") for path in upstream.paths())
    _assert_only_pkgcache_asked(upstream)
    _assert_repodata_points_here(cache, conda_channels.main)


@pytest.mark.parametrize("flags", [["--no-sharded"], []])
def test_a_relative_base_url_is_resolved_against_where_a_redirect_led(
    flags: list[str],
    upstream: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    conda_channels: Channels,
    tmp_path: Path,
) -> None:
    """The mirror moved the channel: its configured URL answers 302 to `/relocated/main/...`, whose repodata says
    `base_url: ../../../store/main/<subdir>/`. Relative to where the repodata came from, that is `/store/main/`; read
    against the configured URL it would be `/anaconda/store/main/`, where nothing is. pkgcache resolves it against
    the URL after the redirect, as a client fetching the mirror itself would."""
    upstream.server.mount_packages("/relocated/main", conda_channels.main)
    upstream.server.package_mounts.discard("/relocated/main")  # index files only there
    upstream.server.mount_packages("/store/main", conda_channels.main)
    upstream.server.moved = {"/anaconda/pkgs/main/": "/relocated/main/"}
    upstream.server.base_url = "../../../store/main/{subdir}/"
    cache = _cache(make_cache, upstream)
    _install(tmp_path, cache, "env", *flags)
    paths = upstream.paths()
    assert any(path.startswith("/relocated/main/") and "repodata" in path for path in paths)
    assert any(path.startswith("/store/main/") for path in paths)
    assert not any(path.startswith("/anaconda/store/") for path in paths)
    _assert_only_pkgcache_asked(upstream)
    _assert_repodata_points_here(cache, conda_channels.main)


# --- the rewrite itself (conda/base_url.py) ---

RECORDS = {f"pkg{i}-1.0-h0_0.conda": {"name": f"pkg{i}", "version": "1.0", "sha256": "ab" * 32} for i in range(3)}


def _compress(name: str, text: bytes) -> bytes:
    if name.endswith(".zst"):
        return zstandard.ZstdCompressor().compress(text)
    if name.endswith(".bz2"):
        return bz2.compress(text)
    return text


@pytest.mark.parametrize("name", ["repodata.json", "repodata.json.zst", "repodata.json.bz2"])
def test_only_the_info_objects_bytes_change(name: str, tmp_path: Path) -> None:
    info = '{"subdir": "linux-64", "base_url": "https://files.example/x/linux-64/"}'
    rest = ',\n "packages": {},\n "packages.conda": ' + json.dumps(RECORDS, indent=3) + ',\n "repodata_version": 2}'
    path = tmp_path / "download.part"  # named as a download's temporary file: the name says the compression
    path.write_bytes(_compress(name, ('{\n "info": ' + info + rest).encode()))
    assert rewrite_repodata(path, tmp_path / "temp", name) == "https://files.example/x/linux-64/"
    text = json.dumps(_text(name, path.read_bytes()))  # decompresses and checks it is JSON
    assert json.loads(text)["info"] == {"subdir": "linux-64"}
    raw = _text_bytes(name, path.read_bytes())
    assert raw == ('{\n "info": {"subdir":"linux-64"}' + rest).encode()
    assert rewrite_repodata(path, tmp_path / "temp", name) is None  # nothing left to do: left as it is


def _text_bytes(name: str, body: bytes) -> bytes:
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True).read()
    return bz2.decompress(body) if name.endswith(".bz2") else body


@pytest.mark.parametrize(
    ("base_url", "rewritten"),
    [("", False), ("./", False), ("https://files.example/x/", True), ("/x/", True), ("../other/", True)],
)
def test_a_base_url_that_stays_beside_the_repodata_is_left_alone(base_url: str, rewritten: bool) -> None:
    head = json.dumps({"info": {"subdir": "noarch", "base_url": base_url}, "packages": {}}).encode()
    assert needs_rewrite(head, whole=True) is rewritten
    assert needs_rewrite(head[:-5], whole=False) is rewritten  # told before the rest arrives
    assert needs_rewrite(b'{"info": {"subdir": "noa', whole=False) is None  # not yet


def test_info_after_a_big_section_is_found_by_reading_it_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cep15, "HEAD_BYTES", 64)
    document = {"packages": RECORDS, "info": {"subdir": "noarch", "base_url": "https://files.example/"}}
    path = tmp_path / "download.part"
    path.write_bytes(_compress("repodata.json.zst", json.dumps(document).encode()))
    head = cep15.head_of_bytes("repodata.json.zst", path.read_bytes())
    assert len(head) == 64 and needs_rewrite(head, whole=False) is True  # may have to be: never streamed
    assert rewrite_repodata(path, tmp_path / "temp", "repodata.json.zst") == "https://files.example/"
    written = _text("repodata.json.zst", path.read_bytes())
    assert written["info"] == {"subdir": "noarch"} and written["packages"] == RECORDS


def test_where_pkgcache_fetches_packages_from() -> None:
    repodata = "http://mirror.example/anaconda/pkgs/main/linux-64/repodata.json"
    assert cep15.package_base(repodata, "https://files.example/main/linux-64", from_giver=True) == (
        "https://files.example/main/linux-64/"
    )
    assert cep15.package_base(repodata, "https://files.example/main/linux-64/", from_giver=False) is None
    assert cep15.package_base(repodata, "../../../../store/main/linux-64/", from_giver=False) == (
        "http://mirror.example/store/main/linux-64/"
    )
    assert cep15.package_base(repodata, "/store/", from_giver=True) == "http://mirror.example/store/"
    assert cep15.package_base(repodata, "./", from_giver=True) is None


def test_a_copy_kept_before_the_rewrite_existed_is_fetched_whole_and_rewritten_at_its_next_revalidation(
    upstream: MirrorLikeUpstream,
    files_host: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    """An older pkgcache kept the upstream's repodata.json as it came (base_url and all), with the upstream's
    validators. A 304 would keep it so for good: the revalidation asks for it whole instead, and rewrites it."""
    upstream.server.elsewhere = files_host.url
    path = f"/anaconda/pkgs/main/{SUBDIR}/repodata.json"
    as_it_came = http_get(upstream.url + path)
    assert "base_url" in json.loads(as_it_came.body)["info"]
    data_dir = tmp_path / "data-0"  # where make_cache puts the first cache's data (tests/conftest.py)
    kept = data_dir / "conda" / "pkgs" / "main" / SUBDIR / "repodata.json"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(as_it_came.body)
    stat = kept.stat()
    sidecar = {
        "fetched_at": time.time() - 3600,  # stale: revalidated at the next request
        "upstream": upstream.url.removeprefix("http://"),
        "etag": as_it_came.headers["etag"],
        "last_modified": as_it_came.headers["last-modified"],
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    kept.with_name("repodata.json.meta").write_text(json.dumps(sidecar))
    upstream.reset_log()
    cache = _cache(make_cache, upstream, allowed_hosts=[files_host.url.removeprefix("http://")])
    assert cache.data_dir == data_dir
    assert cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json").status == 200  # stale: served while revalidated
    deadline = time.monotonic() + 10
    while "base_url" in json.loads(kept.read_bytes())["info"] and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = [request for request in upstream.requests if request.path == path]
    assert asked and all("If-None-Match" not in request.headers for request in asked), asked
    assert all(request.status == 200 for request in asked)
    answer = cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata.json")
    assert "base_url" not in json.loads(answer.body)["info"]


def test_a_mirror_taking_over_a_repodata_download_is_judged_on_its_own_bytes(
    bg_loop: BackgroundLoop,
    channels: dict[str, Path],
    files_host: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    """The first mirror's repodata has no base_url, so its download is streamed to clients as it comes; it sends
    too slowly and is given up midway. The second mirror's copy, which takes over from the first byte, says an
    absolute base_url: a client that asks while it comes must not be streamed those bytes as they come, but get the
    rewritten file, which sends it to pkgcache for packages."""
    slow, dripping = FaultyCondaMirror(channels), FaultyCondaMirror(channels)
    slow.plan.set(f"/{SUBDIR}/repodata.json", Fault(Kind.DRIP, rate=200))  # below min_rate: given up
    dripping.server.elsewhere = files_host.url
    dripping.plan.set(f"/{SUBDIR}/repodata.json", Fault(Kind.DRIP, rate=1500))  # about a second for the file
    for mirror in (slow, dripping):
        bg_loop.run(mirror.start())
    try:
        conda = {
            "upstreams": [slow.upstream_config("slow"), dripping.upstream_config("dripping")],
            "channels": ["pkgs/main"],
        }
        upstream = {"min_rate": 1000, "rate_window": 1.0, "allowed_hosts": [files_host.url.removeprefix("http://")]}
        cache = make_cache(NO_PROXY_PYPI, conda=conda, upstream=upstream)
        url = f"{cache.url}/conda/pkgs/main/{SUBDIR}/repodata.json"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(http_get, url)  # streamed the first mirror's bytes, then cut
            deadline = time.monotonic() + 20
            while not any(p.endswith(f"/{SUBDIR}/repodata.json") for p in dripping.paths()):
                assert time.monotonic() < deadline, "the second mirror was never asked"
                time.sleep(0.02)
            second = http_get(url)  # while the dripping mirror's bytes come
            # The first client was cut short: never a complete answer of the given-up mirror's bytes.
            assert isinstance(first.exception(), http.client.IncompleteRead), first.exception()
        assert second.status == 200, second
        document = json.loads(second.body)
        assert "base_url" not in document["info"], document["info"]
        assert document["packages"] or document["packages.conda"]
    finally:
        for mirror in (slow, dripping):
            bg_loop.run(mirror.stop())
