"""The record a package is checked against is the one its clients read in the repodata, or none.

pkgcache finds a package's record by scanning the repodata for `"<file>": {` (conda/records.py). Repodata that
holds that text elsewhere too (an object under that name inside an earlier record's unknown field, or the name
given twice) must not make it check the package against the wrong object: bytes that fail the real record were
served whole and cached when the wrong object was `{}`, and right bytes were refused when it said another size.
A name with different records is refused with a reason (pkgcache cannot know which one a client checks), and a
record larger than the scan's window is read all the same. Two mirrors; the first sends bytes of the right
length that fail the real record, where the test says so.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.cache_service import RunningCache
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import SUBDIR
from tests.fakes.conda_channel import build_channel
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.support import BackgroundLoop

CHANNEL = "cloud/conda-forge"
BASE = f"/conda/{CHANNEL}/{SUBDIR}/"
PKG = "libfoo-1.1-h1_0.conda"
EARLIER = "libfoo-1.0-h1_0.tar.bz2"  # in "packages", before "packages.conda" in the file


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    root = tmp_path / "forge"
    build_channel(root)
    return root


@pytest.fixture
def mirrors(bg_loop: BackgroundLoop, channel: Path) -> Iterator[list[MirrorLikeUpstream]]:
    started = [MirrorLikeUpstream({"conda-forge": channel}, repodata_max_age=0) for _ in range(2)]
    for mirror in started:
        bg_loop.run(mirror.start())
    yield started
    for mirror in started:
        bg_loop.run(mirror.stop())


def _cache(make_cache: Callable[..., RunningCache], mirrors: list[MirrorLikeUpstream]) -> RunningCache:
    upstreams = [
        {"name": f"mirror{n}", "pkgs_url": f"{m.url}/anaconda/pkgs/", "cloud_url": f"{m.url}/anaconda/cloud/"}
        for n, m in enumerate(mirrors)
    ]
    conda = {"upstreams": upstreams, "channels": [CHANNEL], "index_ttl": 600}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda)


def _write_repodata(channel: Path, text: str) -> None:
    (channel / SUBDIR / "repodata.json").write_text(text)
    (channel / SUBDIR / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))


def _doc(channel: Path) -> dict[str, Any]:
    return json.loads((channel / SUBDIR / "repodata.json").read_text())


def _get(cache: RunningCache, path: str) -> tuple[int, bytes | None]:
    """Status and body, None for a body cut before its end (streaming had begun when the check failed)."""
    try:
        answer = cache.get(path)
    except http.client.IncompleteRead:
        return 200, None
    return answer.status, answer.body


def _held(cache: RunningCache) -> Path:
    return cache.data_dir / "conda" / "cloud" / "conda-forge" / SUBDIR / PKG


def _same_length_wrong(mirror: MirrorLikeUpstream) -> None:
    mirror.faults.corrupt_files = {PKG}


@pytest.mark.parametrize("nested", [{}, {"size": 1}], ids=["empty", "other-size"])
def test_an_object_under_the_name_inside_an_earlier_record_is_not_taken_for_its_record(
    channel: Path,
    mirrors: list[MirrorLikeUpstream],
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
    nested: dict[str, Any],
) -> None:
    doc = _doc(channel)
    doc["packages"][EARLIER]["extra"] = {PKG: nested}  # an unknown field, which clients ignore
    _write_repodata(channel, json.dumps(doc))
    good = (channel / SUBDIR / PKG).read_bytes()
    _same_length_wrong(mirrors[0])
    cache = _cache(make_cache, mirrors)

    status, body = _get(cache, BASE + PKG)
    # mirror0's bytes fail the real record: cut at worst once streaming began, never served whole; mirror1's pass.
    assert status == 200 and (body is None or body == good), (status, body and body[:200])
    answer = cache.get(BASE + PKG)
    assert answer.status == 200 and answer.body == good
    assert _held(cache).read_bytes() == good
    # A real client reading the plain repodata installs the package with the sha256 it read.
    result = run_rattler_install(
        [f"{cache.url}/conda/{CHANNEL}"],
        tmp_path / "env",
        tmp_path / "env-cache",
        ["libfoo >=1.1"],
        extra_args=["--no-sharded"],
    )
    installed = {p["name"]: p for p in result["installed"]}
    assert installed["libfoo"]["sha256"] == hashlib.sha256(good).hexdigest()


def test_an_object_under_the_name_of_a_package_not_listed_is_no_record(
    channel: Path, mirrors: list[MirrorLikeUpstream], make_cache: Callable[..., RunningCache]
) -> None:
    doc = _doc(channel)
    doc["packages"][EARLIER]["extra"] = {"libfoo-9.9-h1_0.conda": {}}
    _write_repodata(channel, json.dumps(doc))
    (channel / SUBDIR / "libfoo-9.9-h1_0.conda").write_bytes(b"not a package any repodata lists")
    cache = _cache(make_cache, mirrors)
    answer = cache.get(BASE + "libfoo-9.9-h1_0.conda")
    assert answer.status == 404 and b"has no package" in answer.body
    assert not any(p.endswith("libfoo-9.9-h1_0.conda") for m in mirrors for p in m.paths("GET"))


def _with_second_record(channel: Path, how: str) -> dict[str, Any]:
    """The channel's repodata with PKG given twice: a bogus record before or after the real one, or in the other
    section."""
    doc = _doc(channel)
    real = doc["packages.conda"][PKG]
    bogus = {**real, "sha256": "ab" * 32, "md5": "cd" * 16}
    if how == "cross":
        doc["packages"][PKG] = bogus
        _write_repodata(channel, json.dumps(doc))
        return doc
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc["packages.conda"].items()]
    extra = f"{json.dumps(PKG)}: {json.dumps(bogus if how != 'same' else real)}"
    members = [extra, *members] if how == "first" else [*members, extra]
    head = json.dumps({"info": doc["info"], "packages": doc["packages"]})[:-1]
    _write_repodata(channel, head + ', "packages.conda": {' + ", ".join(members) + '}, "repodata_version": 1}')
    return doc


@pytest.mark.parametrize("how", ["first", "last", "cross"])
def test_a_name_given_different_records_is_refused_with_its_reason(
    channel: Path, mirrors: list[MirrorLikeUpstream], make_cache: Callable[..., RunningCache], how: str
) -> None:
    _with_second_record(channel, how)
    cache = _cache(make_cache, mirrors)
    answer = cache.get(BASE + PKG)
    assert answer.status == 502, answer.status
    assert b"2 different records" in answer.body and PKG.encode() in answer.body
    assert not _held(cache).exists()
    assert not any(p.endswith(PKG) for m in mirrors for p in m.paths("GET"))  # nothing fetched to check
    assert cache.get(BASE + EARLIER).status == 200  # the rest of the channel is served


def test_a_name_given_the_same_record_twice_is_served(
    channel: Path, mirrors: list[MirrorLikeUpstream], make_cache: Callable[..., RunningCache]
) -> None:
    _with_second_record(channel, "same")
    good = (channel / SUBDIR / PKG).read_bytes()
    _same_length_wrong(mirrors[0])
    cache = _cache(make_cache, mirrors)
    _get(cache, BASE + PKG)
    answer = cache.get(BASE + PKG)
    assert answer.status == 200 and answer.body == good


def test_a_record_larger_than_the_scan_window_is_read_all_the_same(
    channel: Path, mirrors: list[MirrorLikeUpstream], make_cache: Callable[..., RunningCache]
) -> None:
    doc = _doc(channel)
    doc["packages.conda"][PKG]["constrains"] = [f"zzconstraint{i} <0" for i in range(80_000)]  # about 1.4 MB
    _write_repodata(channel, json.dumps(doc))
    good = (channel / SUBDIR / PKG).read_bytes()
    _same_length_wrong(mirrors[0])
    cache = _cache(make_cache, mirrors)
    _get(cache, BASE + PKG)
    answer = cache.get(BASE + PKG)
    assert answer.status == 200 and answer.body == good
    assert _held(cache).read_bytes() == good
