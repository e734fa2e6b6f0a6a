"""Shards made while a sorted repodata is read (conda/sorted_shards.py): the very bytes the bucket way makes, for
every shape it takes; the shapes it declines go the bucket way; a stream declined early starts over; a failing
or stopped build leaves no pack behind."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from pkgcache.conda import shard_builder, shard_output, sorted_shards
from pkgcache.conda.shard_builder import SHARDS_INDEX_NAME, ShardBuildResult
from pkgcache.conda.sorted_shards import Rewindable
from pkgcache.storage.store import storage_error
from tests.fakes.synthetic_repodata import write_synthetic_repodata
from tests.test_shard_builder import build


def both_ways(repodata: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ShardBuildResult, ShardBuildResult]:
    """Build while reading, then from buckets (the sorted way turned off), and check the two made the same files."""
    read = build(repodata, root / "sorted")
    with monkeypatch.context() as patched:
        patched.setattr(shard_builder, "_build_sorted", lambda *_: None)
        bucketed = build(repodata, root / "buckets")
    assert not bucketed.made_while_reading
    assert files_of(root / "sorted") == files_of(root / "buckets")
    keys = ("shards", "records", "records_skipped", "removed", "removed_skipped", "shards_written", "shard_bytes")
    for key in (*keys, "index_size"):
        assert getattr(read, key) == getattr(bucketed, key), key
    return read, bucketed


def files_of(subdir: Path) -> dict[str, bytes]:
    found = {path.name: path.read_bytes() for path in (subdir / "shards").iterdir()}
    found[SHARDS_INDEX_NAME] = (subdir / SHARDS_INDEX_NAME).read_bytes()
    return found


def record(name: str, version: str, **extra: Any) -> dict[str, Any]:
    digest = f"{name}{version}".encode().hex()
    return {
        "build": "h0_0",
        "build_number": 0,
        "depends": [],
        "md5": (digest * 16)[:32],
        "name": name,
        "sha256": (digest * 32)[:64],
        "version": version,
        **extra,
    }


def section(*packages: tuple[str, str], ext: str, **extra: Any) -> dict[str, Any]:
    return {f"{name}-{version}-h0_0{ext}": record(name, version, **extra) for name, version in sorted(packages)}


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path


PREFIXED = [("fo", "1"), ("foo", "1.0"), ("foo", "2.0"), ("foo-bar", "1"), ("foo-bar-baz", "3"), ("foo2", "1")]
SORTED_SHAPES: dict[str, dict[str, Any]] = {
    "names that start with other names": {
        "info": {"subdir": "linux-64"},
        "packages": section(*PREFIXED, ("zlib", "1"), ext=".tar.bz2"),
        "packages.conda": section(*PREFIXED, ("only-conda", "1"), ext=".conda"),
    },
    "removed names packages made already, packages with no records, and no package": {
        "info": {"subdir": "linux-64"},
        "packages": section(("alpha", "1"), ("beta", "1"), ext=".tar.bz2"),
        "packages.conda": section(("alpha", "2"), ("gamma", "1"), ext=".conda"),
        "removed": ["alpha-0.1-h0_0.tar.bz2", "alpha-0.1-h0_0.tar.bz2", "ghost-1-h0_0.conda", "README.txt"],
    },
    "removed first, packages.conda before packages": {
        "removed": ["beta-0.1-h0_0.conda", "zed-1-h0_0.conda"],
        "packages.conda": section(("alpha", "2"), ("beta", "1"), ext=".conda"),
        "packages": section(("alpha", "1"), ext=".tar.bz2"),
        "info": {"subdir": "linux-64"},
    },
    "one section only": {"info": {"subdir": "noarch"}, "packages": section(("a", "1"), ("b", "2"), ext=".tar.bz2")},
    "empty sections": {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}, "removed": []},
    "digests absent, null or empty": {
        "info": {"subdir": "linux-64"},
        "packages.conda": {
            "a-1-h0_0.conda": {"name": "a", "version": "1", "sha256": None},
            "a-2-h0_0.conda": {"name": "a", "version": "2", "md5": ""},
            "b-1-h0_0.conda": {"name": "b", "version": "1"},
        },
    },
    "a package with more records than a small map holds": {
        "info": {"subdir": "linux-64"},
        "packages.conda": section(*[("many", f"1.{n:03d}") for n in range(40)], ext=".conda"),
    },
}


@pytest.mark.parametrize("shape", SORTED_SHAPES)
def test_a_sorted_repodata_gives_the_bytes_the_bucket_way_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    repodata = write(tmp_path / "repodata.json", SORTED_SHAPES[shape])
    read, _ = both_ways(repodata, tmp_path, monkeypatch)
    assert read.made_while_reading


def test_a_large_sorted_repodata_gives_the_same_bytes_read_plain_or_compressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=4_000_000, seed=21, sort_keys=True)
    zst = tmp_path / "repodata.json.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(synthetic.path.read_bytes()))
    for number, source in enumerate((synthetic.path, zst)):
        read, _ = both_ways(source, tmp_path / str(number), monkeypatch)
        assert read.made_while_reading and read.records == synthetic.records and read.shards == synthetic.names
        # `removed` names ~500 packages after their shards were made: made again, the first ones left out.
        assert read.shards_written == read.shards


DECLINED_SHAPES: dict[str, dict[str, Any]] = {
    "file names out of order": {
        "info": {"subdir": "linux-64"},
        "packages": dict(reversed(section(("a", "1"), ("b", "1"), ext=".tar.bz2").items())),
    },
    "a file name that is not its record's": {
        "info": {"subdir": "linux-64"},
        "packages": {"a-1-h0_0.tar.bz2": record("b", "1"), "c-1-h0_0.tar.bz2": record("c", "1")},
    },
    "a name with capitals": {"info": {"subdir": "linux-64"}, "packages": section(("Abc", "1"), ext=".tar.bz2")},
    "a record without a name": {
        "info": {"subdir": "linux-64"},
        "packages": {"a-1-h0_0.tar.bz2": {"version": "1"}, **section(("b", "1"), ext=".tar.bz2")},
    },
    "a v3 section": {
        "info": {"subdir": "linux-64"},
        "packages": section(("a", "1"), ext=".tar.bz2"),
        "v3": {"whl": {"a-1-py3-none-any.whl": record("a", "1")}},
    },
    "a digest that is not hex": {
        "info": {"subdir": "linux-64"},
        "packages": {"a-1-h0_0.tar.bz2": {"name": "a", "sha256": 5}},
    },
    "a digest of the wrong length": {
        "info": {"subdir": "linux-64"},
        "packages": {"a-1-h0_0.tar.bz2": {"name": "a", "md5": "abcd"}},
    },
    "a record that is not an object": {"info": {"subdir": "linux-64"}, "packages": {"a-1-h0_0.tar.bz2": [1]}},
    "a file name with capitals": {
        "info": {"subdir": "linux-64"},
        "packages": {"Abc-1-h0_0.tar.bz2": record("abc", "1")},
    },
    "a file name that names no package": {
        "info": {"subdir": "linux-64"},
        "packages": {"a-1.tar.bz2": record("a", "1"), "b-1-h0_0.zip": record("b", "1")},
    },
}


MALFORMED = {
    "a digest that is not hex": "sha256",
    "a digest of the wrong length": "md5",
}


@pytest.mark.parametrize("shape", DECLINED_SHAPES)
def test_what_the_sorted_way_declines_goes_the_bucket_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    repodata = write(tmp_path / "repodata.json", DECLINED_SHAPES[shape])
    if shape in MALFORMED:  # the bucket way says what is wrong
        with pytest.raises(shard_builder.MalformedRepodata, match=MALFORMED[shape]):
            build(repodata, tmp_path / "out")
        assert list((tmp_path / "out" / "shard-packs").iterdir()) == []
        return
    read, _ = both_ways(repodata, tmp_path, monkeypatch)
    assert not read.made_while_reading


def test_a_record_not_named_as_its_file_is_declined_by_a_child_and_built_from_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader goes by file names only; the child making the package's shard finds the record's own name is
    another and declines: the bucket way, which goes by the record's name, makes the same shards it always did."""
    packages = section(("a", "1"), ("b", "1"), ("c", "1"), ext=".tar.bz2")
    packages["b-1-h0_0.tar.bz2"]["name"] = "bb"
    repodata = write(tmp_path / "repodata.json", {"info": {"subdir": "linux-64"}, "packages": packages})
    with caplog.at_level("INFO", logger=shard_builder.__name__):
        read, _ = both_ways(repodata, tmp_path, monkeypatch)
    assert not read.made_while_reading and read.shards == 3
    assert "a child making shards: 'b-1-h0_0.tar.bz2' is not a record named 'b'" in caplog.text


def test_records_that_are_not_objects_are_declined_by_a_child_and_left_out_by_the_bucket_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`"x-1-h_0.conda": 5` in a sorted repodata made the whole build fail (the index answered 404): the child
    declines it, and the bucket way leaves such records out and counts them, every other shard as without them."""
    packages = section(("a", "1"), ("b", "1"), ("c", "1"), ext=".tar.bz2")
    odd = {**packages, "b-2-h0_0.tar.bz2": [1], "b-3-h0_0.tar.bz2": "b", "x-1-h0_0.tar.bz2": 5}
    repodata = write(
        tmp_path / "repodata.json", {"info": {"subdir": "linux-64"}, "packages": dict(sorted(odd.items()))}
    )
    with caplog.at_level("INFO"):
        read, _ = both_ways(repodata, tmp_path, monkeypatch)
    assert not read.made_while_reading and (read.shards, read.records, read.records_skipped) == (3, 3, 3)
    assert "'b-2-h0_0.tar.bz2' is not a record named 'b'" in caplog.text
    assert caplog.text.count("is not an object, left out of the shards") == 2  # once a build, of the two
    clean = write(tmp_path / "clean.json", {"info": {"subdir": "linux-64"}, "packages": packages})
    build(clean, tmp_path / "clean")
    assert files_of(tmp_path / "sorted") == files_of(tmp_path / "clean")


@pytest.mark.parametrize("makers", [1, 2])
def test_a_child_declining_midway_through_a_stream_leaves_no_pack_and_the_bucket_way_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, makers: int
) -> None:
    """Declined by a child while the reader is far into a stream (past what it keeps to start over): the reader
    stops at its next job (a broken pipe) or at the end, every child's pack goes, and the file is built again
    from buckets, to the same bytes."""
    monkeypatch.setattr(sorted_shards, "REWIND_BYTES", 1000)
    monkeypatch.setattr(shard_builder, "MAX_PROCESSES", makers)
    monkeypatch.setattr(os, "cpu_count", lambda: makers)
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=2_500_000, seed=8, sort_keys=True)
    document = json.loads(synthetic.path.read_text())
    filename, renamed = list(document["packages.conda"].items())[len(document["packages.conda"]) // 3]
    renamed["name"] += "x"
    write(synthetic.path, document)
    with caplog.at_level("INFO", logger=shard_builder.__name__):
        streamed = build(synthetic.path, tmp_path / "streamed", source=io.BytesIO(synthetic.path.read_bytes()))
    assert not streamed.made_while_reading and streamed.records == synthetic.records
    assert f"{filename!r} is not a record named" in caplog.text
    with monkeypatch.context() as patched:
        patched.setattr(shard_builder, "_build_sorted", lambda *_: None)
        build(synthetic.path, tmp_path / "buckets")
    assert files_of(tmp_path / "streamed") == files_of(tmp_path / "buckets")


def _makers_taking(monkeypatch: pytest.MonkeyPatch, every: int) -> dict[str, int]:
    """Makers' pipes that take one job in `every` (0: none), so that the reader makes the rest once it has read to
    the end; counts the jobs made in the reader."""
    counts = {"offered": 0, "here": 0}
    real_take, real_make = sorted_shards._Maker.take, sorted_shards._MadeHere.make

    def take(self: Any, job: bytes) -> bool:
        counts["offered"] += 1
        return bool(every) and counts["offered"] % every == 0 and real_take(self, job)

    def make(self: Any, name: str, job: bytes) -> None:
        counts["here"] += 1
        real_make(self, name, job)

    monkeypatch.setattr(sorted_shards._Maker, "take", take)
    monkeypatch.setattr(sorted_shards._MadeHere, "make", make)
    return counts


@pytest.mark.parametrize("every", [0, 2])
def test_jobs_no_maker_had_room_for_are_made_by_the_reader_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: int
) -> None:
    """The reader makes what is still queued once it has read to the end; a package `removed` names late is made
    again where it was made first (each maker's output keeps the last shard of a name: two would both be
    indexed), whether that was a child or the reader."""
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=1_500_000, seed=31, sort_keys=True)
    counts = _makers_taking(monkeypatch, every)
    read, _ = both_ways(synthetic.path, tmp_path, monkeypatch)
    assert read.made_while_reading and read.shards == synthetic.names
    if every:
        assert 0 < counts["here"] < read.shards  # the child made the rest
    else:  # every shard, and again those of the packages `removed` names (one file name each, most made before)
        assert read.shards < counts["here"] <= read.shards + synthetic.removed
    assert list((tmp_path / "sorted" / "shard-packs").iterdir()) == []  # exploded: no pack left behind


def test_a_record_not_named_as_its_file_found_by_the_reader_is_built_from_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader, making a queued job itself, declines as a child would: its own pack goes, and the children's."""
    _makers_taking(monkeypatch, 0)
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=1_000_000, seed=32, sort_keys=True)
    document = json.loads(synthetic.path.read_text())
    filename, renamed = list(document["packages.conda"].items())[-1]
    renamed["name"] += "x"
    write(synthetic.path, document)
    with caplog.at_level("INFO", logger=shard_builder.__name__):
        read, _ = both_ways(synthetic.path, tmp_path, monkeypatch)
    assert not read.made_while_reading
    assert f"{filename!r} is not a record named" in caplog.text


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 255, 65535, 65536, 1 << 20])
def test_map_headers_are_msgpacks(count: int) -> None:
    header = msgpack.Packer().pack_map_header(count)
    assert sorted_shards._map_header(count) == header
    assert sorted_shards._map_header_length(count) == len(header)


def test_a_pipe_declined_early_is_read_again_from_its_start_not_from_the_file(tmp_path: Path) -> None:
    """An unsorted repodata arriving on a stream (its download): the stream is read again from the bytes kept,
    at once, instead of waiting for the download to end and reading the file."""
    document = DECLINED_SHAPES["file names out of order"]
    data = json.dumps(document).encode()
    missing = tmp_path / "not-downloaded-yet" / "repodata.json"
    result = shard_builder.build_shards(
        missing, tmp_path / "shards", base_url="", shards_base_url="./shards/", source=io.BytesIO(data)
    )
    assert not result.made_while_reading and result.records == 2 and result.shards == 2


def test_a_stream_declined_late_is_drained_and_the_file_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sorted_shards, "REWIND_BYTES", 1000)
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=2_500_000, seed=5, sort_keys=True)
    document = json.loads(synthetic.path.read_text())
    conda = list(document["packages.conda"].items())
    conda[-2], conda[-1] = conda[-1], conda[-2]  # out of order at the very end
    document["packages.conda"] = dict(conda)
    write(synthetic.path, document)
    source = io.BytesIO(synthetic.path.read_bytes())
    result = shard_builder.build_shards(
        synthetic.path, tmp_path / "shards", base_url="", shards_base_url="./shards/", source=source
    )
    assert not result.made_while_reading and result.records == synthetic.records
    assert source.tell() == len(source.getvalue())  # drained before the file was read


def test_rewindable_gives_the_kept_bytes_again_once() -> None:
    stream = Rewindable(io.BytesIO(b"0123456789"), keep=6)
    assert stream.read(4) == b"0123"
    assert stream.rewind()
    assert stream.read(3) + stream.read(3) + stream.read(10) == b"0123456789"
    assert not stream.rewind()  # once only
    too_far = Rewindable(io.BytesIO(b"0123456789"), keep=6)
    assert too_far.read(4) + too_far.read(4) == b"01234567"
    assert not too_far.rewind()


def test_a_child_that_fails_fails_the_build_and_leaves_no_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=1_500_000, seed=6, sort_keys=True)
    made = {"count": 0}
    real_add = shard_output.ShardOutput.add

    def fail_after_a_few(self: shard_output.ShardOutput, name: str, shard: bytes) -> None:
        made["count"] += 1  # in the forked child: its own copy
        if made["count"] > 20:
            raise OSError(28, "No space left on device")
        real_add(self, name, shard)

    monkeypatch.setattr(shard_output.ShardOutput, "add", fail_after_a_few)
    with pytest.raises(OSError, match="No space left on device"):
        shard_builder.build_shards(synthetic.path, tmp_path / "shards", base_url="", shards_base_url="./shards/")
    assert list((tmp_path / "shard-packs").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_full_disk_in_a_child_stays_a_full_disk_when_the_reader_finds_its_pipe_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A maker refused by a full disk dies, and the reader learns it from a broken pipe: the build's error keeps the
    child's errno, so that the service answers 507 (storage_error sees a full disk), not 500."""
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=1_500_000, seed=8, sort_keys=True)
    reader = os.getpid()
    real_add = shard_output.ShardOutput.add

    def refused_in_a_child(self: shard_output.ShardOutput, name: str, shard: bytes) -> None:
        if os.getpid() != reader:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, name, shard)

    finish = sorted_shards._Maker.finish

    def once_the_child_has_died(self: sorted_shards._Maker) -> None:
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)  # left to be reaped: its pipe is broken now
        finish(self)

    monkeypatch.setattr(shard_output.ShardOutput, "add", refused_in_a_child)
    monkeypatch.setattr(sorted_shards._Maker, "finish", once_the_child_has_died)
    with pytest.raises(OSError, match="No space left on device") as raised:
        shard_builder.build_shards(synthetic.path, tmp_path / "shards", base_url="", shards_base_url="./shards/")
    assert raised.value.errno == errno.ENOSPC
    assert storage_error(raised.value).disk_full
    assert list((tmp_path / "shard-packs").iterdir()) == []


def test_a_builder_stopped_midway_leaves_no_pack_and_no_child(tmp_path: Path) -> None:
    """The service stops a builder whose download broke off (SIGTERM): the children making shards end with it and
    drop their packs, and its work folder goes."""
    synthetic = write_synthetic_repodata(tmp_path / "repodata.json", size=3_000_000, seed=7, sort_keys=True)
    data = synthetic.path.read_bytes()
    arguments = {
        "repodata_path": str(synthetic.path),
        "shards_dir": str(tmp_path / "out" / "shards"),
        "base_url": "",
        "shards_base_url": "./shards/",
        "from_stdin": True,
    }
    builder = subprocess.Popen(
        [sys.executable, "-m", "pkgcache.conda.shard_builder", json.dumps(arguments)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert builder.stdin is not None
    builder.stdin.write(data[: len(data) * 3 // 4])  # shards of the first packages are being made by now
    builder.stdin.flush()
    packs = tmp_path / "out" / "shard-packs"
    deadline = time.monotonic() + 30
    while not any(packs.glob("*.pack")) and time.monotonic() < deadline:
        time.sleep(0.01)
    children = _children_of(builder.pid)
    assert children, "no child making shards"
    builder.send_signal(signal.SIGTERM)
    assert builder.wait(timeout=30) == 143
    builder.stdin.close()
    deadline = time.monotonic() + 10
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(child) for child in children)
    assert list(packs.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-packs", "shards"]


def _children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_pack_writer_forgets_a_shard_made_again(tmp_path: Path) -> None:
    from pkgcache.conda.shard_packs import PackWriter, explode_packs

    first, second = hashlib.sha256(b"first").digest(), hashlib.sha256(b"second").digest()
    pack = PackWriter(tmp_path / "packs")
    pack.add(first, b"first")
    pack.add(second, b"second")
    pack.forget(first)
    assert pack.close() is not None
    (tmp_path / "shards").mkdir()
    assert explode_packs(tmp_path / "packs", tmp_path / "shards") == 1
    assert os.listdir(tmp_path / "shards") == [shard_output.shard_file_name(second)]
