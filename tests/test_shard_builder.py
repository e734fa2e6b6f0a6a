"""CEP-16 shards made from a repodata.json (pkgcache.conda.shard_builder and repodata_stream).

What is checked: the shards hold exactly repodata.json's records (hashes as bytes), as py-rattler's own indexer
lays them out; a real client (py-rattler) solves and installs from them over HTTP without ever asking for
repodata.json, before and after the repodata changed; a rebuild leaves unchanged shard files alone and marks the
dropped ones; the build of a large repodata stays within its memory bound; broken input raises one error type.
"""

from __future__ import annotations

import bz2
import errno
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from rattler import Channel as RattlerChannel
from rattler import RepoData

from pkgcache.conda import repodata_stream, shard_buckets, shard_builder, shard_output
from pkgcache.conda.repodata_runs import Declined
from pkgcache.conda.repodata_stream import Info, MalformedRepodata, Record, Removed, iter_repodata
from pkgcache.conda.shard_builder import (
    SHARDS_INDEX_NAME,
    ShardBuildResult,
    build_shards,
    read_shard_index,
    unreferenced_shards,
)
from pkgcache.conda.shard_packs import explode_packs
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import APP_TREE, SUBDIR

# The channel builder's own package maker, to add one package to a channel it built.
from tests.fakes.conda_channel import BUILD_TIMESTAMP_MS, _build_package, _PkgSpec, build_channel
from tests.fakes.conda_upstreams import ChannelServer
from tests.fakes.server import Faults
from tests.fakes.synthetic_repodata import write_synthetic_repodata
from tests.support import BackgroundLoop

CREATED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HASH_KEYS = ("sha256", "md5")
# Peak RSS of a process that does nothing but build shards, whatever the repodata's size: docs/conda-clients.md,
# "Sharded repodata made here", says what it is made of.
MEMORY_BOUND_MB = 64
MEMORY_TEST_MB = int(os.environ.get("PKGCACHE_SHARD_MEMORY_TEST_MB", "256"))


# --- helpers ---


def raw_msgpack(path: Path) -> bytes:
    # Streamed: shards are written without a content size in the frame header, as rattler's are.
    return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())


def decode_zst_msgpack(path: Path) -> Any:
    return msgpack.unpackb(raw_msgpack(path))


def build(repodata: Path, subdir_dir: Path, **kwargs: Any) -> ShardBuildResult:
    """Build into `<subdir_dir>/shards/` and put the index in place, then give the new shards their files, as the
    service does."""
    kwargs.setdefault("created_at", CREATED_AT)
    result = build_shards(
        repodata,
        subdir_dir / "shards",
        base_url="",
        shards_base_url="./shards/",
        previous_index=subdir_dir / SHARDS_INDEX_NAME,
        **kwargs,
    )
    result.index_temp_path.replace(subdir_dir / SHARDS_INDEX_NAME)
    assert explode_packs(subdir_dir / "shard-packs", subdir_dir / "shards") == result.shards_written
    assert list((subdir_dir / "shard-packs").iterdir()) == []
    return result


def shards_of(subdir_dir: Path) -> dict[str, Any]:
    """Package name -> decoded shard, for every shard the index at `subdir_dir` references."""
    index = read_shard_index(subdir_dir / SHARDS_INDEX_NAME)
    return {name: decode_zst_msgpack(subdir_dir / "shards" / file) for name, file in index.shards.items()}


def records_in_shards(shards: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """section -> file name -> record, with the hashes turned back into hex as repodata.json has them."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for shard in shards.values():
        groups = [(s, shard[s]) for s in ("packages", "packages.conda")]
        groups += [(f"v3/{g}", records) for g, records in shard.get("v3", {}).items()]
        for section, records in groups:
            for filename, record in records.items():
                assert filename not in found.setdefault(section, {}), f"{filename} is in two shards"
                found[section][filename] = {k: v.hex() if k in HASH_KEYS and v else v for k, v in record.items()}
    return found


def records_in_json(document: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    found = {s: document[s] for s in ("packages", "packages.conda") if s in document}
    found |= {f"v3/{g}": records for g, records in document.get("v3", {}).items()}
    return found


def shard_files(shards_dir: Path) -> dict[str, os.stat_result]:
    return {p.name: p.stat() for p in shards_dir.iterdir()}


def leftovers(folder: Path) -> list[str]:
    """Temporary files or build folders left next to the index or among the shards."""
    names = [p.name for p in folder.rglob("*")]
    return [n for n in names if n.endswith(".tmp") or n.startswith(".shard-build-")]


# A small repodata with the shapes that are easy to get wrong: a name in two sections, upper-case name, legacy
# md5, null and missing hashes, floats, unicode, nested values, v3 groups, removed files for a name with records
# and for a name with none, a removed entry that names no package, and keys that are not sorted.
def tricky_repodata() -> dict[str, Any]:
    def rec(name: str, version: str, **extra: Any) -> dict[str, Any]:
        digest = f"{name}{version}".encode().hex()
        return {
            "version": version,
            "name": name,
            "build": "h0_0",
            "build_number": 0,
            "depends": ["python >=3.9", "libzz 1.*"],
            "md5": (digest * 8)[:32],
            "sha256": (digest * 16)[:64],
            "size": 1234,
            "subdir": "linux-64",
            "timestamp": 1_700_000_000_123,
            **extra,
        }

    return {
        "info": {"subdir": "linux-64", "note": "info keys other than subdir are not copied"},
        "packages": {
            "zeta-1.0-h0_0.tar.bz2": rec("zeta", "1.0", legacy_bz2_md5="0123456789abcdef0123456789abcdef"),
            "alpha-2.0-h0_0.tar.bz2": rec("alpha", "2.0", constrains=["zeta <2"], track_features="feat"),
            "Mixed-1.0-h0_0.tar.bz2": rec("Mixed", "1.0", sha256=None),
            "nohash-1.0-h0_0.tar.bz2": {"name": "nohash", "version": "1.0", "build": "h0_0", "build_number": 0},
        },
        "packages.conda": {
            "zeta-1.1-h0_0.conda": rec("zeta", "1.1", license="Licence \u00e9\u4e2d\u6587", ratio=0.25),
            "alpha-2.1-h0_0.conda": rec("alpha", "2.1", run_exports={"weak": ["alpha >=2.1"]}, noarch="python"),
        },
        "v3": {
            "whl": {"wheelie-1.0-py3-none-any.whl": {**rec("wheelie", "1.0"), "url": "../wheelie-1.0.whl"}},
            "conda": {"zeta-2.0-h0_0.conda": rec("zeta", "2.0", extra_depends={"x": ["y"]})},
        },
        "removed": ["zeta-0.9-h0_0.tar.bz2", "gone-1.0-h0_0.conda", "not-a-package-file.txt"],
        "repodata_version": 1,
    }


# --- against py-rattler's own indexer ---


def test_shards_are_the_ones_py_rattlers_indexer_writes_for_the_same_channel(tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    build_channel(channel, sharded=True)
    for subdir in ("noarch", SUBDIR):
        reference = read_shard_index(channel / subdir / SHARDS_INDEX_NAME)
        ours_dir = tmp_path / "ours" / subdir
        result = build(channel / subdir / "repodata.json", ours_dir)
        ours = read_shard_index(ours_dir / SHARDS_INDEX_NAME)

        assert ours.info == {
            "subdir": subdir,
            "base_url": "",
            "shards_base_url": "./shards/",
            "created_at": "2026-01-02T03:04:05.000000Z",
        }
        assert set(reference.info) <= set(ours.info)
        assert {k: ours.info[k] for k in ("subdir", "base_url", "shards_base_url")} == {
            k: reference.info[k] for k in ("subdir", "base_url", "shards_base_url")
        }
        assert sorted(ours.shards) == sorted(reference.shards) and result.shards == len(reference.shards)
        for name, file in ours.shards.items():
            # Same msgpack bytes once decompressed: same keys, same order, hashes as bytes, same removed list.
            assert raw_msgpack(ours_dir / "shards" / file) == raw_msgpack(
                channel / subdir / "shards" / reference.shards[name]
            )
        assert decode_zst_msgpack(ours_dir / SHARDS_INDEX_NAME)["version"] == 1


# --- records ---


def test_every_record_in_the_shards_is_the_record_in_repodata_json(tmp_path: Path) -> None:
    document = tricky_repodata()
    source = tmp_path / "repodata.json"
    source.write_text(json.dumps(document))
    result = build(source, tmp_path / "linux-64")
    shards = shards_of(tmp_path / "linux-64")

    original = json.loads(source.read_text())
    found = records_in_shards(shards)
    assert found == records_in_json(original)
    for section, records in records_in_json(original).items():
        for filename, record in records.items():
            assert list(found[section][filename]) == list(record), "key order changed"
    # Hashes are raw bytes of the right length; every other value keeps its JSON type (legacy_bz2_md5 stays text).
    zeta = shards["zeta"]
    assert isinstance(zeta["packages"]["zeta-1.0-h0_0.tar.bz2"]["sha256"], bytes)
    assert len(zeta["packages.conda"]["zeta-1.1-h0_0.conda"]["md5"]) == 16
    assert zeta["packages"]["zeta-1.0-h0_0.tar.bz2"]["legacy_bz2_md5"] == "0123456789abcdef0123456789abcdef"
    assert shards["mixed"]["packages"]["Mixed-1.0-h0_0.tar.bz2"]["sha256"] is None
    # Every shard has the three keys; v3 only where there are v3 records; removed goes to its package's shard.
    assert all({"packages", "packages.conda", "removed"} <= set(shard) for shard in shards.values())
    assert set(zeta["v3"]) == {"conda"} and "v3" not in shards["alpha"]
    assert zeta["removed"] == ["zeta-0.9-h0_0.tar.bz2"]
    assert shards["gone"] == {"packages": {}, "packages.conda": {}, "removed": ["gone-1.0-h0_0.conda"]}
    assert sorted(shards) == ["alpha", "gone", "mixed", "nohash", "wheelie", "zeta"]
    assert (result.records, result.removed, result.removed_skipped) == (8, 2, 1)


# Records without a package name rattler can read: missing, null, empty, not a string.
NAMELESS: dict[str, dict[str, Any]] = {
    "packages": {"nameless-1.0-h0_0.tar.bz2": {"version": "1.0", "build": "h0_0", "build_number": 0}},
    "packages.conda": {
        "zeta-9.0-h0_0.conda": {"name": 123, "version": "9.0"},
        "zeta-9.1-h0_0.conda": {"name": None, "version": "9.1"},
        "zeta-9.2-h0_0.conda": {"name": "", "version": "9.2"},
        "zeta-9.3-h0_0.conda": {"name": ["zeta"], "version": "9.3"},
    },
}


def test_records_without_a_name_are_left_out_and_every_other_shard_is_made_as_without_them(tmp_path: Path) -> None:
    """One record without a name made the whole build fail, so the shard index answered 404 (which rattler
    remembers). rattler cannot read such a record, in a shard or in repodata.json: it is left out, and counted."""
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(tricky_repodata()))
    build(clean, tmp_path / "clean")
    odd = tricky_repodata()
    for section, records in NAMELESS.items():
        odd[section] = {**records, **odd[section]}  # first in their sections: the build goes on past them
    source = tmp_path / "repodata.json"
    source.write_text(json.dumps(odd))

    result = build(source, tmp_path / "linux-64")

    assert (result.records, result.records_skipped) == (8, 5)
    made, expected = tmp_path / "linux-64", tmp_path / "clean"
    files = {p.relative_to(made): p.read_bytes() for p in made.rglob("*") if p.is_file()}
    assert files == {p.relative_to(expected): p.read_bytes() for p in expected.rglob("*") if p.is_file()}
    assert len(files) == 1 + len(shards_of(made))  # the index and its shards
    # What rattler makes of such a record: the whole repodata is unreadable, not the record skipped (an empty name
    # it reads, and no one can ask for).
    for name in (None, 123, ["zeta"], "missing"):
        record = {"build": "h0_0", "build_number": 0, "depends": [], "version": "9.0"}
        record.update({} if name == "missing" else {"name": name})
        lone = tmp_path / "lone.json"
        lone.write_text(json.dumps({"info": {"subdir": SUBDIR}, "packages.conda": {"zeta-9.0-h0_0.conda": record}}))
        with pytest.raises(Exception, match=r"missing field `name`|invalid type: (null|integer|sequence)"):
            RepoData.from_path(str(lone)).into_repo_data(RattlerChannel("https://example.org/x"))


# Records that are not objects: a number, a list, a string, null, a boolean (in both sections, and in a v3 group).
NOT_OBJECTS: dict[str, Any] = {
    "packages": {"aa-1-h0_0.tar.bz2": 5, "zeta-1-h0_0.tar.bz2": ["zeta"]},
    "packages.conda": {
        "x-1-h_0.conda": 5,
        "zeta-9.0-h0_0.conda": "zeta",
        "zeta-9.1-h0_0.conda": None,
        "zeta-9.2-h0_0.conda": True,
        "zeta-9.3-h0_0.conda": {"name": "zeta", "version": "9.3"},  # a record, with the odd ones around it
    },
    "v3": {"whl": {"zeta-1-py3-none-any.whl": 1.5}},
}


@pytest.mark.parametrize("reader", ["runs", "record by record"])
def test_records_that_are_not_objects_are_left_out_and_every_other_shard_is_made_as_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reader: str
) -> None:
    """A record that is not an object (`"x-1-h_0.conda": 5`) made the whole build fail, so the shard index
    answered 404 (which rattler remembers). rattler cannot read such a record: it is left out and counted, as a
    record without a name is, by either reader of the bucket way."""
    clean = tricky_repodata()
    clean["packages.conda"]["zeta-9.3-h0_0.conda"] = NOT_OBJECTS["packages.conda"]["zeta-9.3-h0_0.conda"]
    (tmp_path / "clean.json").write_text(json.dumps(clean))
    build(tmp_path / "clean.json", tmp_path / "clean")
    odd = tricky_repodata()
    odd["packages"] = {**NOT_OBJECTS["packages"], **odd["packages"]}
    odd["packages.conda"] = {**NOT_OBJECTS["packages.conda"], **odd["packages.conda"]}
    odd["v3"]["whl"] = {**NOT_OBJECTS["v3"]["whl"], **odd["v3"]["whl"]}
    source = tmp_path / "repodata.json"
    source.write_text(json.dumps(odd))
    if reader == "record by record":
        monkeypatch.setattr(shard_buckets, "read_runs", _declining_runs)

    with caplog.at_level("WARNING", logger=shard_buckets.__name__):
        result = build(source, tmp_path / "linux-64")

    assert (result.records, result.records_skipped) == (9, 7)
    made, expected = tmp_path / "linux-64", tmp_path / "clean"
    files = {p.relative_to(made): p.read_bytes() for p in made.rglob("*") if p.is_file()}
    assert files == {p.relative_to(expected): p.read_bytes() for p in expected.rglob("*") if p.is_file()}
    warned = [r.getMessage() for r in caplog.records if "left out of the shards" in r.getMessage()]
    assert warned == ["packages/aa-1-h0_0.tar.bz2: the record is not an object, left out of the shards"]
    # What rattler makes of such a record: the whole repodata is unreadable, not the record skipped.
    for value in (5, ["zeta"], "zeta", None, True):
        lone = tmp_path / "lone.json"
        lone.write_text(json.dumps({"info": {"subdir": SUBDIR}, "packages.conda": {"x-1-h_0.conda": value}}))
        with pytest.raises(Exception, match=r"invalid (type|length)"):
            RepoData.from_path(str(lone)).into_repo_data(RattlerChannel("https://example.org/x"))


def _declining_runs(*_: Any, **__: Any) -> Iterator[Any]:
    raise Declined("read record by record here")
    yield


def test_every_record_of_a_large_repodata_is_in_its_shard(tmp_path: Path) -> None:
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=6_000_000, seed=3)
    result = build(synthetic.path, tmp_path / "linux-64")
    original = json.loads(synthetic.path.read_text())
    shards = shards_of(tmp_path / "linux-64")
    assert records_in_shards(shards) == records_in_json(original)
    for name, shard in shards.items():
        assert all(r["name"] == name for s in ("packages", "packages.conda") for r in shard[s].values())
    assert sorted(f for shard in shards.values() for f in shard["removed"]) == sorted(original["removed"])
    assert result.records == synthetic.records and result.shards == synthetic.names
    assert result.shards_written == result.shards and result.shards_reused == 0


def test_msgspec_reads_regular_repodata_and_a_file_it_declines_gives_the_same_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "repodata.json"
    write_synthetic_repodata(source, size=3_000_000, seed=4)  # a few runs of records (about 1 MB each)

    def read_record_by_record(*_: Any) -> Any:
        raise AssertionError("a regular repodata was read record by record")

    with monkeypatch.context() as patched:
        patched.setattr(shard_buckets, "iter_repodata_file", read_record_by_record)
        fast = build(source, tmp_path / "fast")

    real_runs = shard_buckets.iter_repodata_runs
    declined_after: list[int] = []

    def decline_midway(binary: Any, **options: Any) -> Iterator[Any]:
        for number, item in enumerate(real_runs(binary, **options)):
            if number == 3:
                declined_after.append(number)
                raise Declined("as if something unexpected came")
            yield item

    monkeypatch.setattr(shard_buckets, "iter_repodata_runs", decline_midway)
    careful = build(source, tmp_path / "careful")
    assert declined_after == [3]
    assert (fast.records, fast.removed, fast.shards) == (careful.records, careful.removed, careful.shards)
    assert (tmp_path / "fast" / SHARDS_INDEX_NAME).read_bytes() == (
        tmp_path / "careful" / SHARDS_INDEX_NAME
    ).read_bytes()
    assert shard_files(tmp_path / "fast/shards").keys() == shard_files(tmp_path / "careful/shards").keys()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("cores", [1, 4])
def test_the_same_shards_whatever_the_number_of_processes_making_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int
) -> None:
    source = tmp_path / "repodata.json"
    write_synthetic_repodata(source, size=1_000_000, seed=6)
    two = build(source, tmp_path / "two")  # this machine's cores, capped: the tests run where there are two
    monkeypatch.setattr(shard_builder.os, "cpu_count", lambda: cores)
    other = build(source, tmp_path / "other")
    assert (tmp_path / "two" / SHARDS_INDEX_NAME).read_bytes() == (tmp_path / "other" / SHARDS_INDEX_NAME).read_bytes()
    assert shard_files(tmp_path / "two/shards").keys() == shard_files(tmp_path / "other/shards").keys()
    assert (two.shards_written, two.shard_bytes) == (other.shards_written, other.shard_bytes)
    assert len(other.pack_tables) == cores


def test_one_process_forks_nothing_and_gives_the_same_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`processes=1` is how the service builds a small repodata in a thread of its own: forking a process with
    threads is not safe, so nothing may fork, and the shards are the very ones a builder process makes."""
    source = tmp_path / "repodata.json"
    write_synthetic_repodata(source, size=300_000, seed=8, sort_keys=True)
    forked = build(source, tmp_path / "forked")
    assert forked.made_while_reading  # sorted: a builder process makes these with forked children

    def no_fork() -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    alone = build(source, tmp_path / "alone", processes=1)
    assert not alone.made_while_reading and len(alone.pack_tables) == 1
    assert (tmp_path / "alone" / SHARDS_INDEX_NAME).read_bytes() == (
        tmp_path / "forked" / SHARDS_INDEX_NAME
    ).read_bytes()
    assert shard_files(tmp_path / "alone/shards").keys() == shard_files(tmp_path / "forked/shards").keys()


def test_json_within_reads_every_frame_of_a_zst(tmp_path: Path) -> None:
    """How much JSON a compressed repodata holds is learnt by reading it: a first frame that says it is small
    says nothing of the frames after it."""
    text = json.dumps({"info": {"subdir": SUBDIR}, "packages": {}, "pad": "a" * 5000}).encode()
    one = tmp_path / "one" / "repodata.json.zst"
    one.parent.mkdir()
    one.write_bytes(zstandard.ZstdCompressor().compress(text))
    several = tmp_path / "several" / "repodata.json.zst"
    several.parent.mkdir()
    compress = zstandard.ZstdCompressor(write_content_size=True).compress
    several.write_bytes(b"".join(compress(text[at : at + 1000]) for at in range(0, len(text), 1000)))
    plain = tmp_path / "repodata.json"
    plain.write_bytes(text)
    assert zstandard.frame_content_size(several.read_bytes()) == 1000
    for path in (one, several, plain):
        assert repodata_stream.json_within(path, len(text))
        assert not repodata_stream.json_within(path, len(text) - 1)
    (tmp_path / "broken.json.zst").write_bytes(b"not zstd at all")
    assert not repodata_stream.json_within(tmp_path / "broken.json.zst", 1 << 20)


def test_compressed_repodata_gives_the_same_shards(tmp_path: Path) -> None:
    source = tmp_path / "repodata.json"
    write_synthetic_repodata(source, size=500_000, seed=5)
    (tmp_path / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(source.read_bytes()))
    (tmp_path / "repodata.json.bz2").write_bytes(bz2.compress(source.read_bytes()))
    results = {
        name: build(tmp_path / name, tmp_path / f"out-{name}")
        for name in ("repodata.json", "repodata.json.zst", "repodata.json.bz2")
    }
    indexes = {name: (tmp_path / f"out-{name}" / SHARDS_INDEX_NAME).read_bytes() for name in results}
    assert len(set(indexes.values())) == 1
    assert len({r.index_sha256 for r in results.values()}) == 1


def test_the_same_repodata_gives_the_same_bytes_whatever_the_bucket_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "repodata.json"
    write_synthetic_repodata(source, size=2_000_000, seed=9)
    first = build(source, tmp_path / "a")
    # Small buckets force every bucket to be split again, and the heavy names' buckets to be kept whole.
    splits: list[bool] = []
    split_bucket = shard_builder.split_bucket

    def counted_split(*args: Any) -> Any:
        result = split_bucket(*args)
        splits.append(result is not None)
        return result

    monkeypatch.setattr(shard_builder, "MAX_BUCKET_BYTES", 16384)
    monkeypatch.setattr(shard_builder, "split_bucket", counted_split)
    second = build(source, tmp_path / "b")
    assert True in splits and False in splits
    assert (tmp_path / "a" / SHARDS_INDEX_NAME).read_bytes() == (tmp_path / "b" / SHARDS_INDEX_NAME).read_bytes()
    assert first.index_sha256 == second.index_sha256
    assert {p.name: p.read_bytes() for p in (tmp_path / "a/shards").iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "b/shards").iterdir()
    }
    assert leftovers(tmp_path) == []


def test_records_in_another_order_give_the_same_shards(tmp_path: Path) -> None:
    write_synthetic_repodata(tmp_path / "a.json", size=300_000, seed=11)
    document = json.loads((tmp_path / "a.json").read_text())
    for section in ("packages", "packages.conda"):
        document[section] = dict(reversed(document[section].items()))
    document["removed"].reverse()
    document = dict(reversed(document.items()))
    (tmp_path / "b.json").write_text(json.dumps(document))
    build(tmp_path / "a.json", tmp_path / "a")
    build(tmp_path / "b.json", tmp_path / "b")
    assert (tmp_path / "a" / SHARDS_INDEX_NAME).read_bytes() == (tmp_path / "b" / SHARDS_INDEX_NAME).read_bytes()


# --- rebuilds and old shards ---


def change_repodata(path: Path, *, add: dict[str, dict[str, Any]], remove: list[str]) -> None:
    """Add records to packages.conda and move file names from either section to `removed`."""
    document = json.loads(path.read_text())
    document["packages.conda"].update(add)
    for filename in remove:
        for section in ("packages", "packages.conda"):
            document[section].pop(filename, None)
        document.setdefault("removed", []).append(filename)
    path.write_text(json.dumps(document))


def test_a_rebuild_after_a_change_keeps_unchanged_shard_files_and_marks_dropped_ones(tmp_path: Path) -> None:
    source = tmp_path / "repodata.json"
    source.write_text(json.dumps(tricky_repodata()))
    out = tmp_path / "linux-64"
    first = build(source, out)
    before = read_shard_index(out / SHARDS_INDEX_NAME)
    # Make every file look an hour old, so that a rewrite or a touch shows.
    hour_ago = time.time() - 3600
    for path in (out / "shards").iterdir():
        os.utime(path, (hour_ago, hour_ago))
    files_before = shard_files(out / "shards")

    new_record = dict(tricky_repodata()["packages.conda"]["alpha-2.1-h0_0.conda"], name="newpkg", version="0.1")
    change_repodata(source, add={"newpkg-0.1-h0_0.conda": new_record}, remove=["alpha-2.1-h0_0.conda"])
    second = build(source, out)
    after = read_shard_index(out / SHARDS_INDEX_NAME)
    files_after = shard_files(out / "shards")

    changed = {name for name in after.shards if before.shards.get(name) != after.shards[name]}
    assert changed == {"alpha", "newpkg"}
    unchanged = set(after.shards) - changed
    for name in unchanged:
        file = after.shards[name]
        assert (files_after[file].st_ino, files_after[file].st_mtime_ns) == (
            files_before[file].st_ino,
            files_before[file].st_mtime_ns,
        ), f"{name}'s shard was rewritten or touched"
    assert (second.shards_reused, second.shards_written, second.shards_dropped) == (len(unchanged), 2, 1)
    assert second.records == first.records and second.removed == first.removed + 1
    # The shard alpha had is kept (clients holding the old index may still ask for it), marked as dropped now.
    old_alpha = out / "shards" / before.shards["alpha"]
    assert old_alpha.exists() and old_alpha.stat().st_mtime > hour_ago + 1800
    alpha = shards_of(out)["alpha"]
    assert list(alpha["packages.conda"]) == [] and alpha["removed"] == ["alpha-2.1-h0_0.conda"]
    assert "newpkg-0.1-h0_0.conda" in shards_of(out)["newpkg"]["packages.conda"]
    assert leftovers(tmp_path) == []


def test_unreferenced_shards_are_listed_only_after_their_grace_since_they_were_dropped(tmp_path: Path) -> None:
    source = tmp_path / "repodata.json"
    source.write_text(json.dumps(tricky_repodata()))
    out = tmp_path / "linux-64"
    build(source, out)
    old_zeta = read_shard_index(out / SHARDS_INDEX_NAME).shards["zeta"]
    # The zeta shard was written long ago; it is dropped by the next build, and that is when its grace starts.
    long_ago = time.time() - 30 * 86400
    os.utime(out / "shards" / old_zeta, (long_ago, long_ago))
    change_repodata(source, add={}, remove=["zeta-1.1-h0_0.conda"])
    build(source, out)
    stale_temp = out / "shards" / ".deadbeef.1234-abcd.tmp"
    stale_temp.write_bytes(b"half a shard")
    os.utime(stale_temp, (long_ago, long_ago))
    (out / "shards" / "README").write_text("not ours")
    os.utime(out / "shards" / "README", (long_ago, long_ago))

    index = out / SHARDS_INDEX_NAME
    assert unreferenced_shards(out / "shards", index, older_than=3600) == [stale_temp]
    later = time.time() + 7200
    assert unreferenced_shards(out / "shards", index, older_than=3600, now=later) == sorted(
        [out / "shards" / old_zeta, stale_temp]
    )
    referenced = set(read_shard_index(index).shards.values())
    assert not referenced & {p.name for p in unreferenced_shards(out / "shards", index, older_than=0, now=later)}


def test_unreferenced_shards_refuses_an_unreadable_index(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / SHARDS_INDEX_NAME).write_bytes(b"not zstd")
    with pytest.raises(MalformedRepodata):
        unreferenced_shards(tmp_path / "shards", tmp_path / SHARDS_INDEX_NAME, older_than=0)


def test_stale_build_files_lists_what_killed_builds_left_and_spares_running_ones(tmp_path: Path) -> None:
    source = tmp_path / "repodata.json"
    source.write_text(json.dumps(tricky_repodata()))
    out = tmp_path / "linux-64"
    build(source, out)
    long_ago = time.time() - 86400
    killed_work = out / ".shard-build-abc123"
    (killed_work / "0-00").parent.mkdir()
    (killed_work / "0-00").write_bytes(b"frames")
    killed_index = out / f".{SHARDS_INDEX_NAME}.4242-deadbeef.tmp"
    killed_index.write_bytes(b"half an index")
    for path in (killed_work, killed_index):
        os.utime(path, (long_ago, long_ago))
    running_work = out / ".shard-build-running"
    running_work.mkdir()
    assert shard_builder.stale_build_files(out, older_than=3600) == sorted([killed_work, killed_index])
    assert (out / SHARDS_INDEX_NAME) not in shard_builder.stale_build_files(out, older_than=0, now=time.time() + 10)


# --- a real client ---


@pytest.fixture
def plain_channel(tmp_path: Path) -> Path:
    """The test channel as a mirror has it: repodata.json(.zst) and packages, no shards."""
    root = tmp_path / "channel"
    build_channel(root, sharded=False)
    return root


@pytest.fixture
def channel_server(bg_loop: BackgroundLoop, plain_channel: Path) -> Iterator[ChannelServer]:
    server = ChannelServer({"/chan": plain_channel}, Faults())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def shard_all_subdirs(channel: Path) -> dict[str, ShardBuildResult]:
    return {subdir: build(channel / subdir / "repodata.json", channel / subdir) for subdir in ("noarch", SUBDIR)}


def installed(result: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["version"] for p in result["installed"]}


def assert_sharded_solve(server: ChannelServer, channel: Path) -> None:
    """The client read both shard indexes and only shards they reference, and never any repodata.json."""
    assert server.count(SHARDS_INDEX_NAME, "GET") == 2
    shard_paths = [p for p in server.paths("GET") if "/shards/" in p]
    assert shard_paths, "no shard was fetched"
    for path in shard_paths:
        subdir, file = path.split("/")[-3], path.split("/")[-1]
        assert file in read_shard_index(channel / subdir / SHARDS_INDEX_NAME).shards.values()
    assert not [p for p in server.paths() if "repodata.json" in p]


def test_py_rattler_solves_and_installs_from_generated_shards_and_again_after_the_repodata_changed(
    tmp_path: Path, plain_channel: Path, channel_server: ChannelServer
) -> None:
    shard_all_subdirs(plain_channel)
    url = f"{channel_server.url}/chan"
    first = run_rattler_install([url], tmp_path / "env1", tmp_path / "cache1", ["app"])
    assert set(installed(first)) == APP_TREE and installed(first)["libfoo"] == "1.1"
    assert_sharded_solve(channel_server, plain_channel)

    # The mirror's repodata changes: libfoo 1.1 is removed, a new noarch package appears. Rebuild both subdirs.
    extra = _build_package(
        _PkgSpec("extra", "1.0", "py_0", 0, "noarch", ".conda", ("tzinfo",), {"share/extra/extra.txt": b"x\n"}),
        plain_channel,
    )
    extra_record = {
        "build": extra.build, "build_number": 0, "depends": ["tzinfo"], "license": "MIT", "md5": extra.md5,
        "name": "extra", "noarch": "generic", "sha256": extra.sha256, "size": extra.size, "subdir": "noarch",
        "timestamp": BUILD_TIMESTAMP_MS, "version": "1.0",
    }  # fmt: skip
    change_repodata(plain_channel / "noarch/repodata.json", add={extra.filename: extra_record}, remove=[])
    change_repodata(plain_channel / SUBDIR / "repodata.json", add={}, remove=["libfoo-1.1-h1_0.conda"])
    results = shard_all_subdirs(plain_channel)
    assert results[SUBDIR].shards_written == 1 and results["noarch"].shards_written == 1

    channel_server.reset_log()
    second = run_rattler_install([url], tmp_path / "env2", tmp_path / "cache2", ["app", "extra"])
    assert installed(second)["libfoo"] == "1.0" and "extra" in installed(second)
    assert (tmp_path / "env2/share/extra/extra.txt").read_bytes() == b"x\n"
    assert_sharded_solve(channel_server, plain_channel)


# --- memory ---

MEMORY_CHILD = textwrap.dedent(
    """
    import gc, json, resource, sys
    from pathlib import Path
    from pkgcache.conda.shard_builder import build_shards
    gc.disable()  # as the service's builder runs (shard_builder's command line)
    result = build_shards(Path(sys.argv[1]), Path(sys.argv[2]), base_url="", shards_base_url="./shards/")
    # VmHWM is the peak RSS of this process's own memory. ru_maxrss is not: Linux carries the peak of the process
    # that forked it across exec (with vfork, the parent's: pytest's, with its generated repodata).
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    peak_mb = int(status["VmHWM"].split()[0]) / 1024
    ru_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The forked children making shards: the largest one's peak (pages shared with this process at the fork count).
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {"records": result.records, "shards": result.shards, "peak_mb": peak_mb, "ru_maxrss_mb": ru_maxrss_mb,
              "children_mb": children_mb, "made_while_reading": result.made_while_reading}
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("shape", ["sorted", "unsorted"])
def test_building_a_large_repodata_stays_within_the_memory_bound(tmp_path: Path, shape: str) -> None:
    synthetic = write_synthetic_repodata(
        tmp_path / "repodata.json", size=MEMORY_TEST_MB * 1_000_000, sort_keys=shape == "sorted"
    )
    child = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(synthetic.path), str(tmp_path / "out/shards")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["records"] == synthetic.records and report["shards"] == synthetic.names
    # json.load alone would need several times the file's size; the builder needs a fixed amount.
    assert report["made_while_reading"] == (shape == "sorted")
    assert report["peak_mb"] < MEMORY_BOUND_MB, f"{report} for {synthetic.size} bytes"
    assert report["children_mb"] < MEMORY_BOUND_MB, f"{report} for {synthetic.size} bytes"


# --- malformed input ---

GOOD = json.dumps(tricky_repodata())
MALFORMED = {
    "empty": b"",
    "a list": b"[]",
    "an error page": b"<html><body>502 Bad Gateway</body></html>",
    "cut in a record": GOOD[: len(GOOD) // 2].encode(),
    "cut after the object": GOOD[:-1].encode(),
    "packages is a list": b'{"info": {"subdir": "linux-64"}, "packages": []}',
    "a sha256 is not hex": b'{"info": {"subdir": "x"}, "packages": {"a-1-0.conda": {"name": "a", "sha256": "zz"}}}',
    "an md5 is too short": b'{"info": {"subdir": "x"}, "packages": {"a-1-0.conda": {"name": "a", "md5": "abcd"}}}',
    "removed holds a number": b'{"info": {"subdir": "x"}, "removed": [1]}',
    "data after the end": (GOOD + " {}").encode(),
    "not utf-8": b'{"info": {"subdir": "x"}, "packages": {"a-1-0.conda": {"name": "\xff"}}}',
    "no subdir anywhere": b'{"packages": {}}',
    "a number beyond 64 bits": b'{"info": {"subdir": "x"}, "packages": {"a-1-0.conda": {"name": "a", "size": %d}}}'
    % 2**70,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_repodata_raises_malformed_and_leaves_the_served_shards_alone(tmp_path: Path, case: str) -> None:
    out = tmp_path / "linux-64"
    good = tmp_path / "good.json"
    good.write_text(GOOD)
    build(good, out)
    served = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    bad = tmp_path / "repodata.json"
    bad.write_bytes(MALFORMED[case])
    with pytest.raises(MalformedRepodata):
        build(bad, out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == served
    assert leftovers(tmp_path) == []


def test_a_corrupt_zst_repodata_raises_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "repodata.json.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(GOOD.encode())[:-20] + os.urandom(20))
    with pytest.raises(MalformedRepodata):
        build(bad, tmp_path / "linux-64")
    assert leftovers(tmp_path) == []


# --- the streaming reader ---

STREAM_DOC = (
    ' \n{ "info" : {"subdir":"linux-64","n":[1,2.5e3,null,true]},\t"repodata_version":1,\r\n'
    '"packages":{},"packages.conda" : { "we\\"ird-1-0.conda" : {"name":"we\\"ird","size":123456789012},\n'
    '  "b-1-0.conda":{"name":"b","depends":[],"x":{"y":[{"z":"\\u00e9\\ud83d\\ude00"}]}} } ,'
    '"v3":{"whl":{"c-1-py3-none-any.whl":{"name":"c"}},"conda":{}},"unknown":[1,{"a":2}],'
    '"removed":[ "b-0-0.conda" ,"q-1-0.tar.bz2"],"trailing_number":12345678}\n  '
)


def expected_items(document: dict[str, Any]) -> list[Any]:
    items: list[Any] = [Info(document["info"])]
    items += [Record(s, f, r) for s in ("packages", "packages.conda") for f, r in document[s].items()]
    items += [Record(f"v3/{g}", f, r) for g, recs in document["v3"].items() for f, r in recs.items()]
    return items + [Removed(f) for f in document["removed"]]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64, 1 << 20])
def test_the_reader_gives_what_json_load_gives_at_any_chunk_size(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(repodata_stream, "CHUNK_CHARS", chunk)
    items = list(iter_repodata(io.StringIO(STREAM_DOC)))
    expected = expected_items(json.loads(STREAM_DOC))
    assert items == expected
    assert [list(i.record) for i in items if isinstance(i, Record)] == [
        list(i.record) for i in expected if isinstance(i, Record)
    ]


def test_the_reader_refuses_a_single_value_larger_than_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repodata_stream, "MAX_VALUE_CHARS", 1000)
    monkeypatch.setattr(repodata_stream, "CHUNK_CHARS", 100)
    document = '{"packages": {"a-1-0.conda": {"name": "a", "x": "' + "y" * 5000 + '"}}}'
    with pytest.raises(MalformedRepodata, match="larger than"):
        list(iter_repodata(io.StringIO(document)))
    # An unterminated string is not read to the end of a huge file either.
    with pytest.raises(MalformedRepodata):
        list(iter_repodata(io.StringIO('{"packages": {"a-1-0.conda": {"name": "' + "y" * 50_000)))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a second core for a forked child")
def test_a_build_that_fails_removes_the_packs_of_every_process_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child finished its buckets (its pack has its table) when the disk refused this process's shards: the build
    fails, and neither pack is left, nor a table no index will ever list. A retry then makes every shard."""
    source = tmp_path / "repodata.json"
    write_synthetic_repodata(source, size=300_000, seed=9)  # not sorted: buckets, shared with a forked child
    builder, real_add = os.getpid(), shard_output.ShardOutput.add

    def refused_here(self: shard_output.ShardOutput, name: str, shard: bytes) -> None:
        if os.getpid() == builder:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, name, shard)

    monkeypatch.setattr(shard_output.ShardOutput, "add", refused_here)
    with pytest.raises(OSError, match="No space left on device"):
        build(source, tmp_path / "subdir", processes=2)
    assert list((tmp_path / "subdir" / "shard-packs").iterdir()) == []
    monkeypatch.setattr(shard_output.ShardOutput, "add", real_add)
    result = build(source, tmp_path / "subdir", processes=2)
    assert not result.made_while_reading and result.shards_written == result.shards
    assert list((tmp_path / "subdir" / "shard-packs").iterdir()) == []
