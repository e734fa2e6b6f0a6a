"""Shard packs (pkgcache.conda.shard_packs): a build's new shards in one file until each has its own.

What is checked: a build into an empty folder creates no shard file, only a pack and its table; a shard asked for
is taken out of the pack whole (its bytes hash to its name); exploding gives every shard its file and removes the
pack; a rebuild packs only the shards that changed; bytes that do not match their hash are never given a file; a
pack without a table (a killed build) is never read and is removed once abandoned.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pkgcache.conda import shard_packs
from pkgcache.conda.shard_builder import SHARDS_INDEX_NAME, build_shards, read_shard_index
from pkgcache.conda.shard_packs import PackWriter, explode_packs, extract_shard
from tests.test_shard_builder import tricky_repodata


def make_shards(tmp_path: Path, document: dict[str, object]) -> tuple[Path, Path, dict[str, str]]:
    """Build the document's shards the way the service does, before the explosion; (shards, packs, index)."""
    subdir = tmp_path / "linux-64"
    repodata = tmp_path / "repodata.json"
    repodata.write_text(json.dumps(document))
    previous = subdir / SHARDS_INDEX_NAME
    result = build_shards(
        repodata, subdir / "shards", base_url="", shards_base_url="./shards/", previous_index=previous
    )
    result.index_temp_path.replace(previous)
    return subdir / "shards", subdir / "shard-packs", read_shard_index(previous).shards


def test_a_first_build_writes_packs_and_no_shard_file(tmp_path: Path) -> None:
    shards, packs, index = make_shards(tmp_path, tricky_repodata())
    assert list(shards.iterdir()) == []
    suffixes = sorted(p.suffix for p in packs.iterdir())
    assert suffixes in ([".pack", ".table"], [".pack", ".pack", ".table", ".table"])  # one per process building

    first = sorted(index.values())[0]
    extracted = extract_shard(packs, shards, first)
    assert extracted == shards / first
    assert hashlib.sha256(extracted.read_bytes()).hexdigest() == first.removesuffix(".msgpack.zst")
    assert [p.name for p in shards.iterdir()] == [first]

    assert explode_packs(packs, shards) == len(index) - 1  # the extracted one has its file already
    assert list(packs.iterdir()) == []
    for name in index.values():
        assert hashlib.sha256((shards / name).read_bytes()).hexdigest() == name.removesuffix(".msgpack.zst")
    assert extract_shard(packs, shards, first) == shards / first  # no pack left: the file is found
    assert extract_shard(packs, shards, "00" * 32 + ".msgpack.zst") is None


def test_a_rebuild_packs_only_the_shards_that_changed(tmp_path: Path) -> None:
    document = tricky_repodata()
    shards, packs, index = make_shards(tmp_path, document)
    explode_packs(packs, shards)
    document["packages.conda"]["zeta-1.2-h0_0.conda"] = {"name": "zeta", "version": "1.2", "build": "h0_0"}
    _, _, new_index = make_shards(tmp_path, document)
    changed = {name for name, file in new_index.items() if index.get(name) != file}
    assert changed == {"zeta"}
    assert [table.stat().st_size for table in packs.glob("*.table")] == [44]  # one entry: sha256, offset, length
    assert explode_packs(packs, shards) == 1
    assert (shards / new_index["zeta"]).is_file() and (shards / index["zeta"]).is_file()


def test_bytes_that_do_not_match_their_hash_never_get_a_file(tmp_path: Path) -> None:
    shards, packs, index = make_shards(tmp_path, tricky_repodata())
    pack = next(packs.glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a torn write: one shard in the middle is wrong
    pack.write_bytes(bytes(data))
    extracted = {name: extract_shard(packs, shards, name) for name in index.values()}
    assert sum(path is None for path in extracted.values()) == 1
    assert explode_packs(packs, shards) == 0  # the good ones have their files already; the torn one gets none
    for name, path in extracted.items():
        assert (shards / name).is_file() == (path is not None)


def test_a_pack_without_its_table_is_never_read_and_goes_once_abandoned(tmp_path: Path) -> None:
    shards, packs = tmp_path / "shards", tmp_path / "packs"
    shards.mkdir()
    shard = b"\x28\xb5\x2f\xfd not really zstd"
    digest = hashlib.sha256(shard).digest()
    writer = PackWriter(packs)
    writer.add(digest, shard)
    writer._handle.close()  # killed before close() wrote the table
    assert extract_shard(packs, shards, f"{digest.hex()}.msgpack.zst") is None
    assert explode_packs(packs, shards) == 0
    assert writer.pack_path.exists()  # may be a build still running
    old = time.time() - shard_packs.ABANDONED_SECONDS - 1
    os.utime(writer.pack_path, (old, old))
    explode_packs(packs, shards)
    assert not writer.pack_path.exists()
    assert list(shards.iterdir()) == []


def test_a_pack_that_holds_nothing_leaves_no_file(tmp_path: Path) -> None:
    writer = PackWriter(tmp_path)
    assert writer.close() is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("entries", [1, 2, 3, 1000])
def test_every_entry_of_a_table_is_found(tmp_path: Path, entries: int) -> None:
    shards, packs = tmp_path / "shards", tmp_path / "packs"
    shards.mkdir()
    writer = PackWriter(packs)
    blobs = [os.urandom(i % 50 + 1) for i in range(entries)]
    for blob in blobs:
        writer.add(hashlib.sha256(blob).digest(), blob)
    writer.close()
    for blob in blobs:
        name = f"{hashlib.sha256(blob).hexdigest()}.msgpack.zst"
        path = extract_shard(packs, shards, name)
        assert path is not None and path.read_bytes() == blob
    assert extract_shard(packs, shards, "ff" * 32 + ".msgpack.zst") is None
    assert extract_shard(packs, shards, "not-hex.msgpack.zst") is None


def test_an_offline_kit_made_before_the_explosion_still_carries_the_shard(tmp_path: Path) -> None:
    """`pkgcache export` picks the shard holding a package's record; one still in its build's pack is given its
    file then, so that the kit never lists a shard it lacks."""
    from pkgcache.bundle import selection

    data_dir = tmp_path / "data"
    subdir = data_dir / "conda/cloud/forge/linux-64"
    (subdir / "made-here").mkdir(parents=True)
    repodata = tmp_path / "repodata.json"
    repodata.write_text(json.dumps(tricky_repodata()))
    result = build_shards(repodata, subdir / "shards", base_url="", shards_base_url="./shards/")
    result.index_temp_path.replace(subdir / "made-here" / SHARDS_INDEX_NAME)
    assert list((subdir / "shards").iterdir()) == []
    shard = selection._shard_of(data_dir, "conda/cloud/forge/linux-64", "zeta-1.1-h0_0.conda")
    zeta = read_shard_index(subdir / "made-here" / SHARDS_INDEX_NAME).shards["zeta"]
    assert shard == f"conda/cloud/forge/linux-64/shards/{zeta}"
    assert hashlib.sha256((data_dir / shard).read_bytes()).hexdigest() == zeta.removesuffix(".msgpack.zst")


@pytest.mark.parametrize("flushed", ["one by one", "all at once"])
def test_packs_are_on_the_disk_before_their_table_and_go_only_once_their_files_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flushed: str
) -> None:
    """The index is put in place once the packs' tables exist, so a pack and its table must survive a power cut
    from then on; a shard file is served as soon as it is found, so none may appear before its bytes are on the
    disk; and a pack is the shards' other copy, so it goes only once their files and names are on the disk.
    A few new files are flushed one by one (and their folder), many with one os.sync."""
    shards = tmp_path / "shards"
    events: list[str] = []
    real_fsync, real_fdatasync, real_sync, real_unlink = os.fsync, os.fdatasync, os.sync, Path.unlink

    def shard_files() -> int:
        return sum(p.name.endswith(shard_packs.SHARD_SUFFIX) for p in shards.iterdir())

    def flushed_as(call: str, real: Any) -> Any:
        def flush(descriptor: int) -> None:
            target = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
            kind = "folder" if target == shards else target.suffix
            events.append(f"{call} {kind} ({shard_files() if shards.exists() else 0} shard files)")
            real(descriptor)

        return flush

    def sync() -> None:
        events.append(f"sync ({shard_files()} shard files)")
        real_sync()

    def unlink(path: Path, missing_ok: bool = False) -> None:
        events.append("deleted " + path.suffix)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(shard_packs.os, "fsync", flushed_as("fsync", real_fsync))
    monkeypatch.setattr(shard_packs.os, "fdatasync", flushed_as("fdatasync", real_fdatasync))
    monkeypatch.setattr(shard_packs.os, "sync", sync)
    monkeypatch.setattr(Path, "unlink", unlink)
    if flushed == "all at once":
        monkeypatch.setattr(shard_packs, "FLUSH_ONE_BY_ONE", 2)
    writer = PackWriter(tmp_path / "packs")
    for number in range(3):
        data = f"shard {number}".encode()
        writer.add(hashlib.sha256(data).digest(), data)
    table = writer.close()
    assert table is not None and table.is_file()
    assert events == ["fdatasync .pack (0 shard files)", "fdatasync .tmp (0 shard files)"], events  # the table
    events.clear()
    shards.mkdir()
    assert explode_packs(tmp_path / "packs", shards) == 3
    if flushed == "one by one":  # each file flushed before it has its name
        expected = [f"fsync .tmp ({n} shard files)" for n in range(3)] + ["fsync folder (3 shard files)"]
    else:
        expected = ["sync (0 shard files)", "sync (3 shard files)"]
    assert events == [*expected, "deleted .table", "deleted .pack"], events
    assert sorted(p.name for p in shards.iterdir()) == sorted(
        f"{hashlib.sha256(f'shard {n}'.encode()).hexdigest()}.msgpack.zst" for n in range(3)
    )


def test_a_shard_taken_out_of_its_pack_is_on_the_disk_before_it_has_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for before the explosion, a shard gets its file at once, flushed first: the explosion after it may
    delete the pack, and that file is served as found from then on."""
    events: list[str] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(
        shard_packs.os, "fdatasync", lambda fd: (events.append(os.readlink(f"/proc/self/fd/{fd}")), real_fdatasync(fd))
    )
    data = b"one shard"
    digest = hashlib.sha256(data).digest()
    writer = PackWriter(tmp_path / "packs")
    writer.add(digest, data)
    writer.close()
    events.clear()
    (tmp_path / "shards").mkdir()
    path = extract_shard(tmp_path / "packs", tmp_path / "shards", f"{digest.hex()}.msgpack.zst")
    assert path is not None and path.read_bytes() == data
    assert len(events) == 1 and events[0].endswith(".tmp") and digest.hex() in events[0]


def test_a_builds_packs_are_named_after_it_and_go_together_when_it_fails(tmp_path: Path) -> None:
    """Whatever process made them (a killed builder's children included), a failed build's packs, tables and
    temporary tables go; another build's stay."""
    packs = tmp_path / "packs"
    other = PackWriter(packs)
    other.add(b"\0" * 32, b"another build's")
    with pytest.raises(OSError), shard_packs.build_packs(packs, "20261203T000000-1-abcdef01"):
        finished = PackWriter(packs)
        finished.add(b"\1" * 32, b"made")
        table = finished.close()
        assert table is not None and table.name.startswith("20261203T000000-1-abcdef01-")
        PackWriter(packs).add(b"\2" * 32, b"being made")
        (packs / f".{finished.pack_path.stem}.table.0a1b2c3d.tmp").write_bytes(b"cut short")
        raise OSError(28, "No space left on device")
    assert sorted(path.name for path in packs.iterdir()) == [other.pack_path.name]


def test_orphan_packs_go_and_those_being_written_or_with_a_table_stay(tmp_path: Path) -> None:
    packs = tmp_path / "conda" / "cloud" / "conda-forge" / "linux-64" / shard_packs.PACKS_DIR_NAME
    killed = PackWriter(packs)
    killed.add(b"\1" * 32, b"no table will list it")
    killed._handle.close()  # killed: the lock went with its process
    cut_short = packs / f".{killed.pack_path.stem}.table.0a1b2c3d.tmp"
    cut_short.write_bytes(b"a table cut short")
    writing = PackWriter(packs)
    writing.add(b"\2" * 32, b"on its way")
    finished = PackWriter(packs)
    finished.add(b"\3" * 32, b"listed")
    table = finished.close()
    assert shard_packs.remove_orphan_packs(tmp_path / "conda") == 2
    assert not killed.pack_path.exists() and not cut_short.exists()
    assert writing.pack_path.exists() and table is not None and table.exists() and finished.pack_path.exists()
    assert writing.close() is not None
    assert shard_packs.remove_orphan_packs(tmp_path / "conda") == 0
