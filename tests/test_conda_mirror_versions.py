"""Mirrors that answer with a sound index file that is not the one asked for, or not the newest one there is.

- a mirror answering `<subdir>/repodata.json` (and its .zst) with another subdir's repodata (`info.subdir`
  "noarch"): refused as that mirror's bad answer (the next mirror's served, the mirror rested), never kept;
- a lagging mirror, asked while the one that gave the cached repodata (or PyPI page) fails, must not replace it
  with an older version (packages disappear);
- an upstream with its own shards re-indexes and deletes the shards its old index named: a shard index past its
  time-to-live is revalidated before it is answered, so that a client never gets one naming deleted shards.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from tests.cache_service import RunningCache
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import SUBDIR, install, installed_names
from tests.fakes import server as fake_server
from tests.fakes.conda_channel import _build_package, _index, _PkgSpec, build_channel
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.dists import build_wheel, sample_dists
from tests.fakes.pypi_upstreams import TunaLikeUpstream
from tests.support import BackgroundLoop

CHANNEL = "cloud/conda-forge"
BASE = f"/conda/{CHANNEL}/{SUBDIR}/"


@pytest.fixture(scope="module")
def plain_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plain") / "forge"
    build_channel(root)  # repodata.json and .zst
    return root


@pytest.fixture(scope="module")
def sharded_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sharded") / "forge"
    build_channel(root, sharded=True)
    return root


def _mirrors(
    bg_loop: BackgroundLoop, source: Path, tmp_path: Path
) -> Iterator[tuple[list[MirrorLikeUpstream], list[Path]]]:
    """Two mirrors, each of its own copy of the channel (copied with their mtimes: Last-Modified as the source's)."""
    copies = []
    for n in range(2):
        copy = tmp_path / f"mirror{n}"
        shutil.copytree(source, copy)
        copies.append(copy)
    started = [MirrorLikeUpstream({"conda-forge": copy}, repodata_max_age=0) for copy in copies]
    for mirror in started:
        bg_loop.run(mirror.start())
    try:
        yield started, copies
    finally:
        for mirror in started:
            bg_loop.run(mirror.stop())


@pytest.fixture
def plain(
    bg_loop: BackgroundLoop, plain_channel: Path, tmp_path: Path
) -> Iterator[tuple[list[MirrorLikeUpstream], list[Path]]]:
    yield from _mirrors(bg_loop, plain_channel, tmp_path)


@pytest.fixture
def sharded(
    bg_loop: BackgroundLoop, sharded_channel: Path, tmp_path: Path
) -> Iterator[tuple[list[MirrorLikeUpstream], list[Path]]]:
    yield from _mirrors(bg_loop, sharded_channel, tmp_path)


def _cache(make_cache: Callable[..., RunningCache], mirrors: list[MirrorLikeUpstream], ttl: float) -> RunningCache:
    upstreams = [
        {"name": f"mirror{n}", "pkgs_url": f"{m.url}/anaconda/pkgs/", "cloud_url": f"{m.url}/anaconda/cloud/"}
        for n, m in enumerate(mirrors)
    ]
    conda = {"upstreams": upstreams, "channels": [CHANNEL], "index_ttl": ttl}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda)


def _resting(cache: RunningCache, side: str = "conda") -> list[str]:
    status = json.loads(cache.get("/-/status").body)
    return [up["name"] for up in status["upstreams"][side] if up.get("cooldown_remaining", 0) > 0]


def _json_of(cache: RunningCache, name: str) -> dict[str, Any]:
    answer = cache.get(BASE + name)
    assert answer.status == 200, answer.body[:200]
    body = answer.body
    if name.endswith(".zst"):
        body = zstandard.ZstdDecompressor().stream_reader(body).read()
    return json.loads(body)


def _serve_noarch_as_subdir(copy: Path) -> None:
    for name in ("repodata.json", "repodata.json.zst"):
        (copy / SUBDIR / name).write_bytes((copy / "noarch" / name).read_bytes())


# ---- another subdir's repodata ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["repodata.json", "repodata.json.zst"])
def test_another_subdirs_repodata_is_the_mirrors_bad_answer(
    plain: tuple[list[MirrorLikeUpstream], list[Path]], make_cache: Callable[..., RunningCache], name: str
) -> None:
    mirrors, copies = plain
    _serve_noarch_as_subdir(copies[0])
    cache = _cache(make_cache, mirrors, ttl=600)
    try:
        doc = _json_of(cache, name)
    except http.client.IncompleteRead:  # never: a repodata naming another subdir is not streamed
        pytest.fail("the client was streamed the first mirror's repodata and cut")
    assert doc["info"]["subdir"] == SUBDIR
    assert "libfoo-1.1-h1_0.conda" in doc["packages.conda"]
    assert mirrors[1].count(f"/{SUBDIR}/{name}") == 1  # the healthy mirror was asked
    assert _resting(cache) == ["mirror0"]
    # What was kept is the healthy mirror's; asked again, it is served from the cache.
    assert _json_of(cache, name)["info"]["subdir"] == SUBDIR
    assert mirrors[1].count(f"/{SUBDIR}/{name}") == 1


def test_rattler_installs_through_a_mirror_serving_another_subdirs_repodata(
    plain: tuple[list[MirrorLikeUpstream], list[Path]], make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    mirrors, copies = plain
    _serve_noarch_as_subdir(copies[0])
    cache = _cache(make_cache, mirrors, ttl=600)
    _, result = install(tmp_path, [f"{cache.url}/conda/{CHANNEL}"], ["app"])
    assert {"app", "libfoo"} <= installed_names(result)
    assert "mirror0" in _resting(cache)


# ---- a lagging mirror's older version ---------------------------------------------------------------------------


def _add_libfoo_12(copy: Path, sharded: bool = False) -> str:
    spec = _PkgSpec("libfoo", "1.2", "h1_0", 0, SUBDIR, ".conda", (), {"share/libfoo/libfoo.txt": b"libfoo 1.2\n"})
    package = _build_package(spec, copy)
    if sharded:
        shutil.rmtree(copy / SUBDIR / "shards")  # the old shards go: the new index names new ones
    _index(copy, sharded=sharded, write_zst=True)
    return package.filename


@pytest.mark.parametrize("mirror1_honours_dates", [True, False])
def test_a_lagging_mirror_does_not_take_the_cache_back_to_older_repodata(
    plain: tuple[list[MirrorLikeUpstream], list[Path]],
    make_cache: Callable[..., RunningCache],
    mirror1_honours_dates: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirrors, copies = plain
    newest = _add_libfoo_12(copies[0])  # mirror0 is up to date (a newer Last-Modified); mirror1 lags
    cache = _cache(make_cache, mirrors, ttl=1)
    assert newest in _json_of(cache, "repodata.json")["packages.conda"]
    if not mirror1_honours_dates:
        # Mirrors that answer 200 whatever If-Modified-Since says (mirror0 answers 503 before it is read): the
        # answer's own date is read all the same.
        monkeypatch.setattr(fake_server, "_not_modified", lambda request, content: False)
    mirrors[0].faults.fail_mode = "503"
    time.sleep(1.2)
    for _ in range(3):
        assert cache.get(BASE + "repodata.json").status == 200
        time.sleep(0.3)
    later = _json_of(cache, "repodata.json")
    assert newest in later["packages.conda"], "the cached repodata went back to an older one"
    assert mirrors[1].count(f"/{SUBDIR}/repodata.json") >= 1  # mirror1 was asked, and its older copy not taken
    meta = json.loads((cache.data_dir / "conda" / CHANNEL / SUBDIR / "repodata.json.meta").read_text())
    assert meta["upstream"] == "mirror0"  # mirror0's validators are kept for when it is back
    # mirror1's answer counted the copy fresh: it is not asked again on every request within the TTL.
    asked = mirrors[1].count(f"/{SUBDIR}/repodata.json")
    cache.get(BASE + "repodata.json")
    assert mirrors[1].count(f"/{SUBDIR}/repodata.json") == asked
    # Once the lagging mirror catches up (a newer date), its copy is taken.
    mirrors[0].faults.fail_mode = None
    newer = _add_libfoo_12(copies[1])
    time.sleep(1.2)
    assert newer in _json_of(cache, "repodata.json")["packages.conda"]


def test_a_lagging_pypi_mirror_does_not_take_a_page_back_to_an_older_serial(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    mirrors = [TunaLikeUpstream(sample_dists()) for _ in range(2)]
    for mirror in mirrors:
        bg_loop.run(mirror.start())
    try:
        mirrors[0].add_dist(build_wheel("gamma", "0.6"))  # mirror0 is ahead: a higher serial
        cache = make_cache([m.index_url for m in mirrors], pypi={"index_ttl": 0})
        assert b"gamma-0.6" in cache.get("/pypi/simple/gamma/").body
        mirrors[0].faults.fail_mode = "503"
        for _ in range(3):
            assert cache.get("/pypi/simple/gamma/").status == 200
            time.sleep(0.3)
        assert mirrors[1].count("/simple/gamma/") >= 1
        assert b"gamma-0.6" in cache.get("/pypi/simple/gamma/").body, "the page went back to an older serial"
    finally:
        for mirror in mirrors:
            bg_loop.run(mirror.stop())


# ---- an upstream's shards deleted as it re-indexes ---------------------------------------------------------------


def _shard_index(cache: RunningCache) -> tuple[http.client.HTTPResponse | Any, dict[str, Any]]:
    answer = cache.get(BASE + "repodata_shards.msgpack.zst")
    assert answer.status == 200
    return answer, msgpack.unpackb(zstandard.ZstdDecompressor().decompress(answer.body, max_output_size=1 << 26))


def test_a_shard_index_past_its_ttl_never_names_shards_the_upstream_deleted(
    sharded: tuple[list[MirrorLikeUpstream], list[Path]], make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    mirrors, copies = sharded
    cache = _cache(make_cache, mirrors, ttl=1)
    _, before = _shard_index(cache)
    for copy in copies:  # the channel re-indexes: new shards, the old ones deleted (both mirrors)
        newest = _add_libfoo_12(copy, sharded=True)
    time.sleep(1.2)
    # The first request after the TTL is the client's: it gets the new index, and the shards it names.
    env = tmp_path / "env"
    result = run_rattler_install([f"{cache.url}/conda/{CHANNEL}"], env, tmp_path / "env-cache", ["libfoo"])
    assert [(p["name"], p["version"]) for p in result["installed"]] == [("libfoo", "1.2")]
    _, after = _shard_index(cache)
    assert after["shards"]["libfoo"] != before["shards"]["libfoo"]
    shard = cache.get(BASE + "shards/" + after["shards"]["libfoo"].hex() + ".msgpack.zst")
    assert shard.status == 200
    records = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(shard.body, max_output_size=1 << 26))
    assert newest in records["packages.conda"]


def test_a_shard_index_past_its_ttl_is_served_stale_when_no_upstream_answers(
    sharded: tuple[list[MirrorLikeUpstream], list[Path]], make_cache: Callable[..., RunningCache]
) -> None:
    mirrors, _ = sharded
    cache = _cache(make_cache, mirrors, ttl=1)
    _, before = _shard_index(cache)
    for mirror in mirrors:
        mirror.faults.fail_mode = "503"
    time.sleep(1.2)
    answer, after = _shard_index(cache)
    assert answer.headers["x-pkgcache-cache"] == "stale"
    assert after == before
