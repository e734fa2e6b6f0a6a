"""The offline kit's small parts: target platforms, channel names, bundle paths and kinds, the kit record."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from pkgcache.bundle.importing import ImportReport
from pkgcache.bundle.manifest import bundle_order, check_path, kind_of
from pkgcache.cli.kit_commands import seed
from pkgcache.kit_record import KEPT_PER_KIND, add_kit_entry, last_baseline, last_entry, read_kit_record
from pkgcache.seeding.fetch import FetchItem
from pkgcache.seeding.resolve import channel_path, conda_index_items
from pkgcache.seeding.targets import UnknownPlatform, parse_platform, virtual_packages
from pkgcache.service.ui import _kit_card


@pytest.mark.parametrize(
    ("given", "subdir", "uv"),
    [
        ("linux-64", "linux-64", "x86_64-unknown-linux-gnu"),
        ("osx-arm64", "osx-arm64", "aarch64-apple-darwin"),
        ("win-64", "win-64", "x86_64-pc-windows-msvc"),
        ("x86_64-manylinux_2_28", "linux-64", "x86_64-manylinux_2_28"),
        ("aarch64-unknown-linux-gnu", "linux-aarch64", "aarch64-unknown-linux-gnu"),
        ("linux-ppc64le", "linux-ppc64le", None),
    ],
)
def test_a_platform_is_named_in_conda_or_uv_spelling_and_mapped_to_the_other(given: str, subdir: str, uv: str | None):
    platform = parse_platform(given)
    assert (platform.conda_subdir, platform.uv_platform) == (subdir, uv)


@pytest.mark.parametrize("given", ["amiga", "linux-65", "osx-65", "win-x64"])
def test_an_unknown_platform_says_what_is_accepted(given: str) -> None:
    with pytest.raises(UnknownPlatform, match=r"linux-64.*linux-ppc64le"):
        parse_platform(given)


def test_seed_refuses_a_mistyped_platform_before_it_starts(tmp_path: Path) -> None:
    """Not a note and exit status 0 having seeded nothing: the typo is said, and nothing is done."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("alpha\n")
    missing = tmp_path / "nodir"
    refused = CliRunner().invoke(seed, ["--platform", "linux-65", "--data-dir", str(missing), str(requirements)])
    assert refused.exit_code == 2 and "unknown platform 'linux-65'" in refused.output
    assert not missing.exists()


def test_virtual_packages_are_the_targets_not_this_machines() -> None:
    assert dict(virtual_packages("linux-64"))["__glibc"] == "2.28"
    assert "__osx" in dict(virtual_packages("osx-arm64"))
    assert set(dict(virtual_packages("win-64"))) == {"__win", "__archspec"}


@pytest.mark.parametrize(
    ("channel", "paths"),
    [
        ("conda-forge", ["cloud/conda-forge"]),
        ("pkgs/main", ["pkgs/main"]),
        ("defaults", ["pkgs/main", "pkgs/r"]),
        ("https://mirrors.tuna.tsinghua.edu.cn/anaconda/cloud/pytorch", ["cloud/pytorch"]),
        ("https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main/", ["pkgs/main"]),
        ("https://conda.anaconda.org/conda-forge", ["cloud/conda-forge"]),
        ("http://10.0.0.5:3150/conda/cloud/conda-forge", ["cloud/conda-forge"]),
    ],
)
def test_a_channel_as_inputs_name_it_is_a_pkgcache_path(channel: str, paths: list[str]) -> None:
    assert channel_path(channel, ["pkgs/main", "pkgs/r", "cloud/conda-forge"]) == paths


def test_each_subdir_packages_come_from_has_its_index_files_and_its_channels_noarch_asked_once() -> None:
    items = [
        FetchItem("conda/cloud/conda-forge/linux-64/a-1-0.conda", "x"),
        FetchItem("conda/cloud/conda-forge/linux-64/b-1-0.conda", "x"),
        FetchItem("pypi/files/alpha/alpha-1.0-py3-none-any.whl", "x"),
    ]
    paths = [i.path for i in conda_index_items(items)]
    assert paths == [
        "conda/cloud/conda-forge/linux-64/repodata_shards.msgpack.zst",
        "conda/cloud/conda-forge/linux-64/repodata.json.zst",
        "conda/cloud/conda-forge/noarch/repodata_shards.msgpack.zst",
        "conda/cloud/conda-forge/noarch/repodata.json.zst",
    ]
    assert all(i.kind == "index" for i in conda_index_items(items))


@pytest.mark.parametrize(
    "path", ["../x", "pypi/../../x", "/etc/passwd", "pypi//x", "pypi/files/a/.", "tmp/x", "pypi\\x", "conda/a\0b"]
)
def test_a_bundle_path_outside_the_cache_or_with_an_unsafe_segment_is_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_path(path)


def test_files_are_ordered_index_first_then_shards_metadata_and_packages() -> None:
    paths = [
        "pypi/files/a/a-1-py3-none-any.whl",
        "pypi/files/a/a-1-py3-none-any.whl.metadata",
        "conda/cloud/f/linux-64/shards/" + "a" * 64 + ".msgpack.zst",
        "conda/cloud/f/linux-64/repodata.json.meta",
        "pypi/simple/a/page.json",
        "conda/pkgs/main/noarch/x-1-0.tar.bz2",
    ]
    kinds = [kind_of(p) for p in sorted(paths, key=bundle_order)]
    assert kinds == ["index", "index", "shard", "metadata", "package", "package"]


def test_the_kit_record_keeps_the_newest_entries_of_each_kind(tmp_path: Path) -> None:
    assert last_entry(tmp_path, "export") is None
    for number in range(KEPT_PER_KIND + 3):
        add_kit_entry(tmp_path, "export", {"files": number}, at=float(number))
    add_kit_entry(tmp_path, "seed", {"fetched": 1})
    record = read_kit_record(tmp_path)
    assert len(record["export"]) == KEPT_PER_KIND and record["export"][0]["files"] == 3
    assert last_entry(tmp_path, "export") == {"at": float(KEPT_PER_KIND + 2), "files": KEPT_PER_KIND + 2}
    assert record["seed"][0]["fetched"] == 1 and record["import"] == []


def test_the_kit_record_keeps_the_last_baseline_export_however_many_selections_follow_it(tmp_path: Path) -> None:
    add_kit_entry(tmp_path, "export", {"inputs": [], "baseline": True}, at=1.0)
    for number in range(KEPT_PER_KIND + 3):
        add_kit_entry(tmp_path, "export", {"inputs": ["uv.lock"], "baseline": False}, at=2.0 + number)
    entries = read_kit_record(tmp_path)["export"]
    assert len(entries) == KEPT_PER_KIND and entries[0]["at"] == 1.0
    assert last_baseline(tmp_path) == {"at": 1.0, "inputs": [], "baseline": True}
    # An entry written before exports said whether they moved it counts when it names no lock file.
    add_kit_entry(tmp_path, "export", {"inputs": []}, at=99.0)
    assert last_baseline(tmp_path) == {"at": 99.0, "inputs": []}


def test_the_page_shows_the_last_good_import_and_that_a_later_one_refused_files_and_why(tmp_path: Path) -> None:
    ops = SimpleNamespace(settings=SimpleNamespace(server=SimpleNamespace(data_dir=tmp_path)))
    add_kit_entry(tmp_path, "import", {"bundle": "week-47.tar", "added": 18, "failed": 0}, at=time.time() - 7200)
    assert _kit_card("en", ops)[0].value.endswith("ago: 18 files")
    why = "pypi/files/six/six-1.17.0-py2.py3-none-any.whl: sha256 abc is not the def in the manifest"
    add_kit_entry(tmp_path, "import", {"bundle": "week-48.tar", "added": 0, "failed": 1, "why": why})

    card = _kit_card("en", ops)[0]

    assert card.value.startswith("imported 2 h") and card.value.endswith("ago: 18 files")
    assert "refused 1 files" in card.detail and why in card.detail
    assert ImportReport(failed=[("a.whl", "cut short")]).as_record("b.tar")["why"] == "a.whl: cut short"
    # An entry an older pkgcache wrote (no reason kept) names its bundle.
    add_kit_entry(tmp_path, "import", {"bundle": "week-49.tar", "added": 0, "failed": 2})
    assert "refused 2 files (week-49.tar)" in _kit_card("en", ops)[0].detail
