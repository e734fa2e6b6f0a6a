"""An upstream's shard index is read within bounds (conda/upstream_shard_index.py): a few KB of zstd holding a
msgpack bomb is refused by its check before it becomes GBs of memory, and the index kept for a subdir is decoded
once per version of its file, not at every package request."""

from __future__ import annotations

import os
import shutil
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from pkgcache.conda import upstream_shard_index
from pkgcache.conda.index_checks import content_check_for
from pkgcache.conda.repodata_stream import MalformedRepodata
from pkgcache.conda.shard_builder import iter_shard_index
from pkgcache.conda.shards import rewrite_shard_index, shard_for
from pkgcache.conda.upstream_shard_index import (
    MAX_MAP_MEMBERS,
    MAX_SHARD_INDEX_BYTES,
    InvalidShardIndex,
    ShardNames,
    read_shard_index,
)
from pkgcache.storage.downloads import IntegrityError
from tests.cache_service import RunningCache
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import AnacondaLikeUpstream
from tests.support import BackgroundLoop

SHARD_INDEX = "repodata_shards.msgpack.zst"
# Nils past the cap: each one byte of msgpack, an 8-byte list slot once decoded, and a few KB of zstd in all.
BOMB_NILS = MAX_SHARD_INDEX_BYTES + (16 << 20)


def _bomb(path: Path, nils: int = BOMB_NILS) -> None:
    """{"info": {...}, "shards": {}, "pad": [nil] * nils}, as a zstd stream that does not declare its size."""
    head = b"\x83\xa4info\x81\xa6subdir\xa8linux-64\xa6shards\x80\xa3pad\xdd" + struct.pack(">I", nils)
    stream = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [stream.compress(head)]
    chunk = b"\xc0" * (1 << 20)
    for start in range(0, nils, len(chunk)):
        parts.append(stream.compress(chunk[: nils - start]))
    parts.append(stream.flush())
    path.write_bytes(b"".join(parts))


def _index(path: Path, document: Any) -> None:
    path.write_bytes(zstandard.ZstdCompressor().compress(msgpack.packb(document, use_bin_type=True)))


def _unpack(path_or_body: Path | bytes) -> Any:
    body = path_or_body.read_bytes() if isinstance(path_or_body, Path) else path_or_body
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26))


# --- the reader ---


def test_a_small_index_that_decompresses_past_the_cap_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    index = tmp_path / SHARD_INDEX
    _bomb(index)
    assert index.stat().st_size < 64 << 10
    tracemalloc.start()
    try:
        with pytest.raises(InvalidShardIndex, match="more than"):
            read_shard_index(index)
        with pytest.raises(IntegrityError, match="more than"):
            check = content_check_for(SHARD_INDEX)
            assert check is not None
            check(index)
        with pytest.raises(InvalidShardIndex, match="more than"):
            rewrite_shard_index(index, tmp_path / "temp")
        assert shard_for(index, "foo") is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # What was decompressed before the cap was met, and nothing made of it.
    assert peak < MAX_SHARD_INDEX_BYTES + (32 << 20)


def test_a_bomb_under_the_byte_cap_is_skipped_over_not_made_into_objects(tmp_path: Path) -> None:
    """An unknown member of 40M nils (a 320 MB list, decoded) is allowed by CEP-16 and costs its bytes only."""
    index = tmp_path / SHARD_INDEX
    _bomb(index, nils=40 << 20)
    tracemalloc.start()
    try:
        read = read_shard_index(index)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read.shards == {} and set(read.members) == {"info", "shards", "pad"}
    assert peak < (40 << 20) * 3


@pytest.mark.parametrize(
    ("document", "refusal"),
    [
        ([1, 2], "top level is not a map"),
        ({"shards": {}}, "without its 'info'"),
        ({"info": {}}, "without its 'shards'"),
        ({"info": [], "shards": {}}, "'info' is not a map"),
        ({"info": {}, "shards": {"a": "00" * 32}}, "not a map of names to digests"),
        ({"info": {}, "shards": {"a": b"\0" * 31}}, "not a map of names to digests"),
        ({"info": {}, "shards": {"a": {}}}, "not a map of names to digests"),
        ({"info": {}, "shards": {}, **{str(n): None for n in range(MAX_MAP_MEMBERS)}}, "members, more than"),
        ({"info": {str(n): {} for n in range(MAX_MAP_MEMBERS + 1)}, "shards": {}}, "members, more than"),
    ],
)
def test_what_is_not_a_shard_index_of_cep_16s_shape_is_refused(tmp_path: Path, document: Any, refusal: str) -> None:
    index = tmp_path / SHARD_INDEX
    _index(index, document)
    with pytest.raises(InvalidShardIndex, match=refusal):
        read_shard_index(index)


def test_the_rewrite_keeps_every_member_it_does_not_change(tmp_path: Path) -> None:
    index = tmp_path / SHARD_INDEX
    digest = os.urandom(32)
    info = {"base_url": "https://elsewhere.example/c/", "shards_base_url": "s/", "created_at": "now", "x": [1, {}]}
    _index(index, {"version": 1, "info": info, "shards": {"foo": digest}, "future": {"k": [b"v", None]}})
    original = rewrite_shard_index(index, tmp_path / "temp")
    assert original == {"base_url": "https://elsewhere.example/c/", "shards_base_url": "s/"}
    assert _unpack(index) == {
        "version": 1,
        "info": {**info, "base_url": "", "shards_base_url": "./shards/"},
        "shards": {"foo": digest},
        "future": {"k": [b"v", None]},
    }
    assert shard_for(index, "foo") == f"{digest.hex()}.msgpack.zst"


# --- the names remembered ---


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every decoding of a shard index, counted."""
    counted: list[int] = []
    real = upstream_shard_index._read

    def read(handle: Any) -> upstream_shard_index.UpstreamShardIndex:
        counted.append(1)
        return real(handle)

    monkeypatch.setattr(upstream_shard_index, "_read", read)
    yield counted


def test_an_index_is_decoded_once_per_version_of_its_file(tmp_path: Path, reads: list[int]) -> None:
    names = ShardNames()
    index = tmp_path / SHARD_INDEX
    first, second = os.urandom(32), os.urandom(32)
    _index(index, {"info": {}, "shards": {"foo": first}})
    assert [names.names(index).get("foo") for _ in range(5)] == [first] * 5
    assert len(reads) == 1
    temp = tmp_path / "temp"
    _index(temp, {"info": {}, "shards": {"foo": second, "bar": first}})
    temp.replace(index)  # as a new version is put in place
    assert names.names(index) == {"foo": second, "bar": first}
    assert names.names(index)["foo"] == second and len(reads) == 2
    index.write_bytes(b"damaged")  # a file that is no index is not read again per lookup either
    for _ in range(3):
        with pytest.raises(InvalidShardIndex):
            names.names(index)
    assert len(reads) == 3


def test_the_names_of_a_few_indexes_are_remembered_and_no_more(tmp_path: Path, reads: list[int]) -> None:
    names = ShardNames(indexes=2, total=5)
    paths = [tmp_path / f"{n}.msgpack.zst" for n in range(4)]
    for n, path in enumerate(paths):
        _index(path, {"info": {}, "shards": {f"p{k}": os.urandom(32) for k in range(n + 1)}})
    names.names(paths[0])
    names.names(paths[1])
    names.names(paths[0])  # the most recent now
    names.names(paths[2])  # 3 indexes: the least recent (1) goes
    assert len(reads) == 3
    names.names(paths[0])
    assert len(reads) == 3
    names.names(paths[1])
    assert len(reads) == 4
    names.names(paths[3])  # 4 names alone, past the total with any other: kept alone
    names.names(paths[3])
    assert len(reads) == 5
    names.names(paths[1])
    assert len(reads) == 6


# --- through the service ---


def _conda_cache(make_cache: Callable[..., RunningCache], upstream: AnacondaLikeUpstream) -> RunningCache:
    config = {"name": "anaconda-fake", "pkgs_url": f"{upstream.repo.url}/pkgs/", "cloud_url": f"{upstream.conda.url}/"}
    conda = {"upstreams": [config], "channels": ["pkgs/main", "cloud/conda-forge"]}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda)


@pytest.fixture
def bomb_upstream(bg_loop: BackgroundLoop, conda_channels: Channels, tmp_path: Path) -> Iterator[AnacondaLikeUpstream]:
    """The sharded conda-forge, its shard index of SUBDIR replaced by a msgpack bomb (its repodata sound)."""
    forge = tmp_path / "forge"
    shutil.copytree(conda_channels.forge, forge)
    _bomb(forge / SUBDIR / SHARD_INDEX)
    upstream = AnacondaLikeUpstream({"pkgs/main": conda_channels.main, "conda-forge": forge})
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


def test_a_shard_index_bomb_is_refused_and_shards_are_made_here_instead(
    bomb_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _conda_cache(make_cache, bomb_upstream)
    url = f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}"
    tracemalloc.start()
    try:
        answer = cache.get(url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_SHARD_INDEX_BYTES + (64 << 20)
    assert answer.status == 200, answer
    made = _unpack(answer.body)
    assert made["info"]["shards_base_url"] == "./shards/" and made["shards"]
    assert cache.get(url).body == answer.body
    index = cache.data_dir / "conda" / "cloud" / "conda-forge" / SUBDIR / SHARD_INDEX
    assert not index.exists()  # the bomb was not kept
    pkg = find_pkg(conda_channels.forge_pkgs, "tzinfo")
    assert cache.get(f"/conda/cloud/conda-forge/{pkg.subdir}/{pkg.filename}").status == 200


def test_package_requests_do_not_decode_the_kept_index_again(
    anaconda_upstream: AnacondaLikeUpstream,
    conda_channels: Channels,
    make_cache: Callable[..., RunningCache],
    reads: list[int],
) -> None:
    cache = _conda_cache(make_cache, anaconda_upstream)
    assert cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}").status == 200
    before = len(reads)  # its check and its rewrite
    pkgs = [pkg for pkg in conda_channels.forge_pkgs if pkg.subdir == SUBDIR]
    assert len(pkgs) >= 2
    with ThreadPoolExecutor(len(pkgs)) as pool:  # at once, as a client's downloads come
        answers = list(pool.map(cache.get, [f"/conda/cloud/conda-forge/{SUBDIR}/{pkg.filename}" for pkg in pkgs]))
    assert all(answer.status == 200 for answer in answers), answers
    assert len(reads) - before == 1


# --- an index made here, read back ---


@pytest.mark.parametrize(
    "info",
    [
        b"\xdd" + struct.pack(">I", 20 << 20) + b"\xc0" * (20 << 20),  # 20M nils: a list of 160 MB
        b"\xdc\x00\x20" + (b"\xdc\xff\xff" + b"\x80" * 0xFFFF) * 0x20,  # 2M empty maps: ~130 MB of dicts
    ],
    ids=["a long list", "many maps"],
)
def test_a_damaged_index_made_here_is_refused_without_taking_memory(tmp_path: Path, info: bytes) -> None:
    index = tmp_path / SHARD_INDEX
    document = b"\x83\xa7version\x01\xa4info" + info + b"\xa6shards\x80"
    index.write_bytes(zstandard.ZstdCompressor().compress(document))
    tracemalloc.start()
    try:
        with pytest.raises(MalformedRepodata):
            list(iter_shard_index(index))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


# --- an upstream's shards, read within bounds as its index is (conda/shards.py) ---


def _shard(path: Path, records: dict[str, Any]) -> None:
    _index(path, {"packages": {}, "packages.conda": records, "removed": []})


def _empty_maps_record_shard(path: Path, maps: int) -> None:
    """A shard whose one record is a list of `maps` empty maps: one byte each, a 64-byte dict each once decoded."""
    head = b"\x83\xa8packages\x80\xaepackages.conda\x81\xabapp-1.conda\xdd" + struct.pack(">I", maps)
    stream = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [stream.compress(head)]
    chunk = b"\x80" * (1 << 20)
    for start in range(0, maps, len(chunk)):
        parts.append(stream.compress(chunk[: maps - start]))
    parts.append(stream.compress(b"\xa7removed\x90"))
    parts.append(stream.flush())
    path.write_bytes(b"".join(parts))


def test_a_shards_record_is_read_with_its_hashes_as_hex_and_a_bomb_is_no_record(tmp_path: Path) -> None:
    """A record is found in its shard as repodata.json has it; a shard an upstream made a bomb (a record of 4M
    empty maps: 4 MB of msgpack, 256 MB of dicts) or a section of more records than any package has is read
    as holding nothing, within a few MB of memory."""
    from pkgcache.conda import shards

    good = tmp_path / "good.msgpack.zst"
    _shard(good, {"app-1.conda": {"name": "app", "version": "1", "sha256": bytes(range(32)), "depends": ["x"]}})
    record = shards.record_in_shard(good, "app-1.conda")
    assert record == {"name": "app", "version": "1", "sha256": bytes(range(32)).hex(), "depends": ["x"]}
    assert shards.record_in_shard(good, "other-1.conda") is None
    assert [name for name, _ in shards._section(good, "packages.conda")] == ["app-1.conda"]

    bomb = tmp_path / "bomb.msgpack.zst"
    _empty_maps_record_shard(bomb, 4 << 20)
    crowded = tmp_path / "crowded.msgpack.zst"
    _shard(crowded, {f"p-{number}.conda": None for number in range(200_001)})
    tracemalloc.start()
    try:
        assert shards.record_in_shard(bomb, "app-1.conda") is None
        assert shards._section(bomb, "packages.conda") == []
        assert shards.record_in_shard(crowded, "p-1.conda") is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, peak  # the decompressed bytes (4 MB and ~3 MB), never their objects
    assert shards.MAX_SECTION_RECORDS < 200_001
