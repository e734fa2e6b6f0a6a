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
