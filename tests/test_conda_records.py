"""Finding a package's record in repodata by streaming, whatever its size or compression."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest
import zstandard

from pkgcache.conda import records
from pkgcache.conda.records import expected_of, find_record


def _repodata(count: int) -> dict:
    packages = {
        f"pkg{i}-1.0-0.tar.bz2": {"name": f"pkg{i}", "sha256": f"{i:064x}", "md5": f"{i:032x}", "size": i}
        for i in range(count)
    }
    conda = {f"other{i}-2.0-0.conda": {"name": f"other{i}", "sha256": f"{i + 7:064x}", "size": i} for i in range(count)}
    return {
        "info": {"subdir": "noarch"},
        "packages": packages,
        "packages.conda": conda,
        "removed": ["pkg1-1.0-0.tar.bz2"],
    }


@pytest.mark.parametrize("form", ["json", "zst", "bz2"])
def test_records_are_found_in_every_form(tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks: every key is split across chunk boundaries somewhere in this file.
    monkeypatch.setattr(records, "CHUNK", 97)
    raw = json.dumps(_repodata(500), indent=1).encode()
    path = tmp_path / f"repodata.json{'' if form == 'json' else '.' + form}"
    if form == "zst":
        raw_out = zstandard.ZstdCompressor().compress(raw)
    elif form == "bz2":
        raw_out = bz2.compress(raw)
    else:
        raw_out = raw
    path.write_bytes(raw_out)

    record = find_record(path, "pkg321-1.0-0.tar.bz2")
    assert record is not None and expected_of(record) == ({"sha256": f"{321:064x}", "md5": f"{321:032x}"}, 321)
    other = find_record(path, "other499-2.0-0.conda")
    assert other is not None and other["sha256"] == f"{499 + 7:064x}"
    # "removed" lists a name without a record: that is no match, and neither is a name that is not there.
    assert find_record(path, "pkg1-1.0-0.tar.bz2") is not None
    assert find_record(path, "pkg1-1.0-0.conda") is None
    assert find_record(path, "absent-1.0-0.conda") is None


def test_a_name_that_is_a_prefix_of_another_is_not_confused(tmp_path: Path) -> None:
    path = tmp_path / "repodata.json"
    path.write_text(
        json.dumps({"packages": {"ab-1.0-0.tar.bz2x": {"sha256": "1"}, "ab-1.0-0.tar.bz2": {"sha256": "2"}}})
    )
    assert find_record(path, "ab-1.0-0.tar.bz2") == {"sha256": "2"}


def _text_with(packages: list[str], conda: list[str], info: str = "{}") -> str:
    """A repodata text from members written out (so that a name may be given twice)."""
    return f'{{"info": {info}, "packages": {{{", ".join(packages)}}}, "packages.conda": {{{", ".join(conda)}}}}}'


def _member(name: str, record: dict) -> str:
    return f"{json.dumps(name)}: {json.dumps(record)}"


REAL = {"name": "libfoo", "sha256": "aa" * 32, "size": 10}
FAKE = {"name": "libfoo", "sha256": "bb" * 32, "size": 1}


@pytest.mark.parametrize(
    "earlier",
    [
        {"extra": {"libfoo-1.1-0.conda": {}}},
        {"extra": {"libfoo-1.1-0.conda": {"size": 1}}},
        {"extra": [{"deeper": {"libfoo-1.1-0.conda": {"size": 1}}}]},
        {"extra": {'x"libfoo-1.1-0.conda': {"size": 1}}},  # written `"x\"libfoo-1.1-0.conda": {`
    ],
    ids=["empty", "other-size", "deeper", "escaped-quote"],
)
def test_an_object_under_the_name_elsewhere_is_not_its_record(tmp_path: Path, earlier: dict) -> None:
    path = tmp_path / "repodata.json"
    path.write_text(
        _text_with([_member("libfoo-1.0-0.tar.bz2", {**FAKE, **earlier})], [_member("libfoo-1.1-0.conda", REAL)])
    )
    assert find_record(path, "libfoo-1.1-0.conda") == REAL


def test_an_object_under_the_name_in_info_or_alone_is_no_record(tmp_path: Path) -> None:
    path = tmp_path / "repodata.json"
    path.write_text(_text_with([], [_member("libfoo-1.1-0.conda", REAL)], info='{"x": {"libfoo-1.2-0.conda": {}}}'))
    assert find_record(path, "libfoo-1.2-0.conda") is None
    assert find_record(path, "libfoo-1.1-0.conda") == REAL


@pytest.mark.parametrize("apart", [0, 3000], ids=["adjacent", "runs-apart"])
def test_a_name_given_different_records_has_none(tmp_path: Path, apart: int) -> None:
    between = [
        _member(f"pkg{i}-1.0-0.conda", {"name": f"pkg{i}", "sha256": "cc" * 32, "depends": ["x"] * 20})
        for i in range(apart)
    ]
    path = tmp_path / "repodata.json.zst"
    text = _text_with([], [_member("libfoo-1.1-0.conda", REAL), *between, _member("libfoo-1.1-0.conda", FAKE)])
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    with pytest.raises(records.AmbiguousRecord, match="2 different records"):
        find_record(path, "libfoo-1.1-0.conda")
    if apart:
        assert find_record(path, "pkg7-1.0-0.conda") is not None  # the others are found as before


def test_a_name_in_both_sections_with_different_records_has_none(tmp_path: Path) -> None:
    path = tmp_path / "repodata.json"
    path.write_text(_text_with([_member("libfoo-1.1-0.conda", FAKE)], [_member("libfoo-1.1-0.conda", REAL)]))
    with pytest.raises(records.AmbiguousRecord):
        find_record(path, "libfoo-1.1-0.conda")


def test_a_record_too_large_even_to_read_whole_is_refused_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pkgcache.conda import repodata_runs, repodata_stream

    monkeypatch.setattr(repodata_runs, "MAX_VALUE_BYTES", 2 << 20)
    monkeypatch.setattr(repodata_stream, "MAX_VALUE_CHARS", 2 << 20)
    big = {**REAL, "constrains": ["zz <0"] * 400_000}  # about 3 MB
    path = tmp_path / "repodata.json"
    path.write_text(_text_with([], [_member("libfoo-1.1-0.conda", big)]))
    with pytest.raises(records.AmbiguousRecord, match="larger than"):
        find_record(path, "libfoo-1.1-0.conda")


def test_a_version_of_the_file_is_read_whole_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[str] = []
    real_pass = records.read_whole
    monkeypatch.setattr(
        records, "read_whole", lambda name, *rest, **kw: passes.append(name) or real_pass(name, *rest, **kw)
    )
    path = tmp_path / "repodata.json"
    path.write_text(_text_with([], [_member("libfoo-1.1-0.conda", REAL)]))
    for _ in range(3):
        assert find_record(path, "libfoo-1.1-0.conda") == REAL
    assert len(passes) == 1
    replacement = tmp_path / "new.json"
    replacement.write_text(_text_with([_member("libfoo-1.1-0.conda", FAKE)], [_member("libfoo-1.1-0.conda", REAL)]))
    replacement.replace(path)  # a new version, as the cache writes one
    with pytest.raises(records.AmbiguousRecord):
        find_record(path, "libfoo-1.1-0.conda")
    assert len(passes) == 2


@pytest.mark.parametrize("form", ["json", "zst"])
def test_a_name_under_removed_is_known_from_the_pass_that_found_the_suspects(
    tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[object] = []  # every read of the whole file, by either of records' readers
    real_runs, real_careful = records.iter_repodata_runs, records.iter_repodata
    monkeypatch.setattr(records, "iter_repodata_runs", lambda *a, **kw: passes.append(a) or real_runs(*a, **kw))
    monkeypatch.setattr(records, "iter_repodata", lambda *a, **kw: passes.append(a) or real_careful(*a, **kw))
    raw = json.dumps(_repodata(50)).encode()
    path = tmp_path / ("repodata.json" if form == "json" else "repodata.json.zst")
    path.write_bytes(raw if form == "json" else zstandard.ZstdCompressor().compress(raw))
    assert find_record(path, "pkg1-1.0-0.tar.bz2") is not None  # listed too, in this file
    assert find_record(path, "gone-1.0-0.conda") is None
    assert records.is_removed(path, "pkg1-1.0-0.tar.bz2")
    assert not records.is_removed(path, "gone-1.0-0.conda")
    assert not records.is_removed(path, "pkg2-1.0-0.tar.bz2")
    assert len(passes) == 1  # the 404's wording costs no pass of its own
    without = {**_repodata(50), "removed": []}
    raw = json.dumps(without).encode()
    replacement = tmp_path / "new"
    replacement.write_bytes(raw if form == "json" else zstandard.ZstdCompressor().compress(raw))
    replacement.replace(path)  # a new version no longer names it
    assert not records.is_removed(path, "pkg1-1.0-0.tar.bz2")
    assert len(passes) == 2


def test_the_name_filter_is_sized_to_the_file() -> None:
    # A small subdir's pass takes kilobytes (it may run beside a big subdir's build); conda-forge's biggest, 8 MiB.
    assert records.filter_bits_for("repodata.json", 40_000) == records.MIN_FILTER_BITS
    assert records.filter_bits_for("repodata.json", 300_000_000) == records.FILTER_BITS
    assert records.filter_bits_for("repodata.json.zst", 30_000_000) == records.FILTER_BITS  # taken as 480 MB of JSON
    assert records.filter_bits_for("repodata.json", 1_000_000) == 1 << 19  # half a bit a byte, to a power of two
    assert records.filter_bits_for("repodata.json", None) == records.FILTER_BITS


def test_a_filter_too_small_for_its_file_still_finds_every_name_given_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4,000 names in 512 bits: most names are suspects (read the careful way), and the repeated one among them.
    monkeypatch.setattr(records, "filter_bits_for", lambda name, size: 512)
    repodata = _repodata(2000)
    text = json.dumps(repodata)[:-1] + f', "packages.conda": {json.dumps({"pkg7-1.0-0.tar.bz2": FAKE})}}}'
    path = tmp_path / "repodata.json"
    path.write_text(text)
    with pytest.raises(records.AmbiguousRecord):
        find_record(path, "pkg7-1.0-0.tar.bz2")
    assert find_record(path, "pkg8-1.0-0.tar.bz2") == repodata["packages"]["pkg8-1.0-0.tar.bz2"]
