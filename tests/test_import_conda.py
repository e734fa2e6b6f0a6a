"""A conda subdir's index imported as one unit: an older bundle over newer data (and the reverse), every form of
the merged repodata agreeing, served offline (`[server] offline = true`) to real rattler, and by a running
2-worker instance at once; the merge's own rules (the base, `removed`, sidecars, what goes with the base)."""

from __future__ import annotations

import bz2
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from pkgcache.bundle.repodata_merge import Side, merge_subdir
from pkgcache.conda.channels import SHARD_INDEX
from pkgcache.conda.repodata_filter import iter_kept_names
from pkgcache.conda.repodata_stream import MalformedRepodata
from pkgcache.kit_record import read_kit_record
from tests.cache_service import CacheProcess, cache_settings, start_cache
from tests.conda_support import SUBDIR, Channels, install, installed_names
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.kit_support import (
    CHANNELS,
    UNREACHABLE_CONDA,
    UNREACHABLE_PYPI,
    pkgcache,
    rewrite_bundle,
    write,
    write_config,
)
from tests.support import BackgroundLoop, http_get

OLD = "libfoo-1.0-h1_0.tar.bz2"  # only the bundle's (older) repodata lists it
NEW = "libfoo-1.1-h1_0.conda"  # only the data directory's (newer) repodata lists it
FORMS = ("repodata.json", "repodata.json.zst")


def _seed(tmp_path: Path, mirror: MirrorLikeUpstream, channels: Channels, name: str, package: str) -> Path:
    """A data directory holding one pkgs/main package (by an @EXPLICIT list), and its subdir's repodata."""
    config = write_config(tmp_path, [UNREACHABLE_PYPI], [f"{mirror.url}/anaconda/"])
    pkg = next(p for p in channels.main_pkgs if p.filename == package)
    url = f"{mirror.channel_url('pkgs/main')}/{SUBDIR}/{pkg.filename}#{pkg.sha256}"
    lock = write(tmp_path, f"{name}.lock", f"# platform: {SUBDIR}\n@EXPLICIT\n{url}\n")
    data = tmp_path / name
    seeded = pkgcache("seed", "--config", config, "--data-dir", data, "--platform", SUBDIR, "--no-progress", lock)
    assert seeded.returncode == 0, seeded.stderr
    return data


def _relist(data: Path, drop: str, fetched_at: float, *, with_zst: bool = False) -> Path:
    """The subdir's repodata here without `drop`, fetched at `fetched_at` (its file given that mtime), as a mirror
    lagging behind (or ahead) left it; with `with_zst`, also its .zst, as an upstream that has one."""
    folder = data / "conda/pkgs/main" / SUBDIR
    path = folder / "repodata.json"
    document = json.loads(path.read_bytes())
    for section in ("packages", "packages.conda"):
        document[section].pop(drop, None)
    path.write_text(json.dumps(document))
    _recorded(path, fetched_at)
    if with_zst:
        zst = folder / "repodata.json.zst"
        zst.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
        _recorded(zst, fetched_at)
    return folder


def _recorded(path: Path, fetched_at: float) -> None:
    os.utime(path, (fetched_at, fetched_at))
    stat = path.stat()
    meta = {"fetched_at": fetched_at, "upstream": "mirror", "etag": '"upstream-etag"', "last_modified": None}
    meta |= {"missing": False, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "extra": {}}
    path.with_name(path.name + ".meta").write_text(json.dumps(meta))


def _export(data: Path, bundle: Path) -> Path:
    exported = pkgcache("export", "--data-dir", data, "-o", bundle)
    assert exported.returncode == 0, exported.stderr
    return bundle


def _listed_on_disk(folder: Path) -> dict[str, set[str]]:
    return {form: set(iter_kept_names(folder / form)) for form in FORMS if (folder / form).is_file()}


def _listed_served(url: str) -> dict[str, set[str]]:
    """The file names each form of the subdir's repodata lists as served: .json, .zst, and the shards."""
    subdir = f"{url}/conda/pkgs/main/{SUBDIR}"
    found: dict[str, set[str]] = {}
    for form in FORMS:
        answer = http_get(f"{subdir}/{form}")
        assert answer.status == 200, (form, answer)
        body = (
            zstandard.ZstdDecompressor().decompressobj().decompress(answer.body)
            if form.endswith(".zst")
            else answer.body
        )
        document = json.loads(body)
        found[form] = set(document.get("packages", {})) | set(document.get("packages.conda", {}))
    index = http_get(f"{subdir}/repodata_shards.msgpack.zst")
    assert index.status == 200, index
    shards: set[str] = set()
    for digest in _unpack(index.body)["shards"].values():
        shard = _unpack(http_get(f"{subdir}/shards/{digest.hex()}.msgpack.zst").body)
        shards |= set(shard.get("packages", {})) | set(shard.get("packages.conda", {}))
    found["shards"] = shards
    return found


def _unpack(body: bytes) -> Any:
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(body), strict_map_key=False)


@pytest.fixture
def older_bundle_over_newer_data(
    request: pytest.FixtureRequest, tmp_path: Path, conda_mirror: MirrorLikeUpstream, conda_channels: Channels
) -> tuple[Path, Path]:
    """(a bundle of OLD whose repodata does not list NEW yet, a data directory holding NEW whose newer repodata no
    longer lists OLD, with a .zst beside it). The bundle carries the .zst made outside (a client asked for it), its
    file newer than the one here, unless the parameter says "no zst"."""
    outside = _seed(tmp_path, conda_mirror, conda_channels, "outside", OLD)
    folder = _relist(outside, NEW, time.time() - 7200)
    if getattr(request, "param", "zst") == "no zst":
        for name in ("repodata.json.zst", "repodata.json.zst.meta"):
            (folder / name).unlink()
    bundle = _export(outside, tmp_path / "old.tar")
    inside = _seed(tmp_path, conda_mirror, conda_channels, "inside", NEW)
    _relist(inside, OLD, time.time() - 60, with_zst=True)
    return bundle, inside


@pytest.mark.parametrize("older_bundle_over_newer_data", ["zst", "no zst"], indirect=True)
def test_an_older_bundle_over_newer_conda_data_leaves_both_sides_packages_installable_offline(
    tmp_path: Path, older_bundle_over_newer_data: tuple[Path, Path], bg_loop: BackgroundLoop
) -> None:
    bundle, inside = older_bundle_over_newer_data
    folder = inside / "conda/pkgs/main" / SUBDIR
    before = json.loads((folder / "repodata.json.meta").read_text())

    imported = pkgcache("import", "--data-dir", inside, bundle)

    assert imported.returncode == 0, imported.stderr
    assert "no page or repodata kept here lists them" not in imported.stderr, imported.stderr
    on_disk = _listed_on_disk(folder)
    assert set(on_disk) == set(FORMS)
    assert on_disk["repodata.json"] == on_disk["repodata.json.zst"]
    assert {OLD, NEW} <= on_disk["repodata.json"]
    meta = json.loads((folder / "repodata.json.meta").read_text())
    assert meta["fetched_at"] == before["fetched_at"]  # the newer repodata, the data directory's, is the base
    stat = (folder / "repodata.json").stat()
    assert (meta["size"], meta["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    assert stat.st_mtime_ns != before["mtime_ns"]  # a client holding the old ETag or date gets the new bytes

    conda = {"upstreams": [UNREACHABLE_CONDA], "channels": CHANNELS}
    settings = cache_settings(inside, [UNREACHABLE_PYPI], conda=conda, server={"offline": True})
    cache = start_cache(bg_loop, settings)
    try:
        served = _listed_served(cache.url)
        assert served["repodata.json"] == served["repodata.json.zst"] == served["shards"] == {OLD, NEW}
        channel = f"{cache.url}/conda/pkgs/main"
        for spec, name in (("libfoo ==1.0", "old-env"), ("libfoo ==1.1", "new-env")):
            _, result = install(tmp_path, [channel], [spec], name=name)
            assert installed_names(result) == {"libfoo"}
            assert all(p["url"].startswith(cache.url) for p in result["installed"])
    finally:
        cache.stop()


def test_a_conda_import_into_a_running_two_worker_instance_is_served_by_every_worker_at_once(
    tmp_path: Path, older_bundle_over_newer_data: tuple[Path, Path]
) -> None:
    bundle, inside = older_bundle_over_newer_data
    process = CacheProcess(inside, "--workers", "2", "--offline", "--conda-upstream", UNREACHABLE_CONDA)
    try:
        for _ in range(10):  # every worker has read the subdir's index, and the views and shards are made
            assert all(OLD not in names for names in _listed_served(process.url).values())
        imported = pkgcache("import", "--data-dir", inside, bundle)
        assert imported.returncode == 0, imported.stderr
        for _ in range(20):  # at once, on many new connections (the kernel spreads them over both workers)
            served = _listed_served(process.url)
            assert served["repodata.json"] == served["repodata.json.zst"] == served["shards"] == {OLD, NEW}
        _, result = install(tmp_path, [f"{process.url}/conda/pkgs/main"], ["libfoo ==1.0"])
        assert installed_names(result) == {"libfoo"}
    finally:
        process.terminate()


def test_an_import_mends_a_repodata_damaged_here_and_says_so(
    tmp_path: Path, older_bundle_over_newer_data: tuple[Path, Path], bg_loop: BackgroundLoop
) -> None:
    bundle, inside = older_bundle_over_newer_data
    folder = inside / "conda/pkgs/main" / SUBDIR
    cut = (folder / "repodata.json").read_bytes()[:100]
    (folder / "repodata.json").write_bytes(cut)
    _recorded(folder / "repodata.json", time.time() - 60)  # as a disk fault leaves it: its sidecar still agrees

    imported = pkgcache("import", "--data-dir", inside, bundle)

    assert imported.returncode == 0, imported.stderr
    assert "damaged here" in imported.stderr and f"{SUBDIR}/repodata.json:" in imported.stderr, imported.stderr
    on_disk = _listed_on_disk(folder)
    assert on_disk["repodata.json"] == on_disk["repodata.json.zst"] and {OLD, NEW} <= on_disk["repodata.json"]
    conda = {"upstreams": [UNREACHABLE_CONDA], "channels": CHANNELS}
    cache = start_cache(bg_loop, cache_settings(inside, [UNREACHABLE_PYPI], conda=conda, server={"offline": True}))
    try:
        _, result = install(tmp_path, [f"{cache.url}/conda/pkgs/main"], ["libfoo ==1.0"])
        assert installed_names(result) == {"libfoo"}
    finally:
        cache.stop()


# --- the merge's rules, on small repodata -------------------------------------------------------------------------


def _record(filename: str) -> dict[str, Any]:
    name, version, build = filename.removesuffix(".conda").removesuffix(".tar.bz2").rsplit("-", 2)
    return {"name": name, "version": version, "build": build, "build_number": 0, "depends": [], "sha256": "0" * 64}


def _repodata(folder: Path, names: list[str], fetched_at: float, removed: tuple[str, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "info": {"subdir": "linux-64"},
        "packages": {n: _record(n) for n in names if n.endswith(".tar.bz2")},
        "packages.conda": {n: _record(n) for n in names if n.endswith(".conda")},
        "removed": list(removed),
        "repodata_version": 1,
    }
    (folder / "repodata.json").write_text(json.dumps(document))
    _recorded(folder / "repodata.json", fetched_at)


def _side(folder: Path) -> Side:
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    return Side(files, {name: (p.stat().st_size, p.stat().st_mtime_ns) for name, p in files.items()})


def test_a_newer_bundle_is_the_base_and_keeps_what_only_the_older_data_lists_of_the_packages_held(
    tmp_path: Path,
) -> None:
    here, bundle = tmp_path / "data/conda/pkgs/main/linux-64", tmp_path / "bundle"
    _repodata(here, ["a-1-0.conda", "held-1-0.tar.bz2", "gone-1-0.conda"], time.time() - 3600)
    (here / "current_repodata.json").write_text("{}")  # the older side's: does not go with the merged one
    (here / "made-here").mkdir()
    (here / "made-here/repodata_shards.msgpack.zst").write_bytes(b"made from the old repodata")
    for name in ("a-1-0.conda", "held-1-0.tar.bz2", "b-1-0.conda"):
        (here / name).write_bytes(b"a package")
    _repodata(bundle, ["a-1-0.conda", "b-1-0.conda"], time.time(), removed=("held-1-0.tar.bz2", "other-1-0.conda"))

    outcome = merge_subdir(here, _side(bundle), Side.in_folder(here), tmp_path)

    assert outcome.base == "bundle" and outcome.records_added == 1
    merged = json.loads((here / "repodata.json").read_text())
    assert set(merged["packages.conda"]) == {"a-1-0.conda", "b-1-0.conda"}  # not held: gone-1-0 left out
    assert set(merged["packages"]) == {"held-1-0.tar.bz2"}
    assert merged["removed"] == ["other-1-0.conda"]  # listed again, so no longer removed
    assert merged["info"] == {"subdir": "linux-64"} and merged["repodata_version"] == 1
    assert not (here / "current_repodata.json").exists()
    assert not (here / "made-here/repodata_shards.msgpack.zst").exists()
    meta = json.loads((here / "repodata.json.meta").read_text())
    stat = (here / "repodata.json").stat()
    assert (meta["size"], meta["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    # Nothing more to add the second time, and the data directory's is now the base: left as it is.
    assert not merge_subdir(here, _side(bundle), Side.in_folder(here), tmp_path).changed
    assert (here / "repodata.json").stat().st_mtime_ns == stat.st_mtime_ns


def test_a_merged_repodata_never_sends_clients_around_pkgcache_whatever_the_bundle_kept(tmp_path: Path) -> None:
    # A bundle from a pkgcache that stored repodata as the upstream gave it: its info.base_url names the upstream.
    here, bundle = tmp_path / "data/conda/pkgs/main/linux-64", tmp_path / "bundle"
    _repodata(here, ["a-1-0.conda"], time.time() - 3600)
    (here / "a-1-0.conda").write_bytes(b"a package")
    _repodata(bundle, ["b-1-0.conda"], time.time())
    document = json.loads((bundle / "repodata.json").read_text())
    document["info"]["base_url"] = "https://packages.example.org/main/linux-64/"
    (bundle / "repodata.json").write_text(json.dumps(document))

    outcome = merge_subdir(here, _side(bundle), Side.in_folder(here), tmp_path)

    assert outcome.base == "bundle" and outcome.changed
    merged = json.loads((here / "repodata.json").read_text())
    assert merged["info"] == {"subdir": "linux-64"}
    assert set(merged["packages.conda"]) == {"a-1-0.conda", "b-1-0.conda"}
    # pkgcache itself still knows where the upstream said the packages are.
    meta = json.loads((here / "repodata.json.meta").read_text())
    assert meta["extra"]["base_url"] == "https://packages.example.org/main/linux-64/"


def test_a_worker_reads_the_subdir_again_once_an_import_changed_it(
    tmp_path: Path,
    older_bundle_over_newer_data: tuple[Path, Path],
    bg_loop: BackgroundLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose memory of index files (their sidecars) would last an hour serves the merged index once the
    import is done: the shard index made from the replaced repodata, which the import removed, is never answered
    from that memory (404 "removed meanwhile", which rattler would remember), and the memory is dropped on the
    import's mark (the gate's import listeners)."""
    bundle, inside = older_bundle_over_newer_data
    monkeypatch.setattr("pkgcache.storage.sidecars.READER_RECHECK_SECONDS", 3600.0)
    # Online (nothing to ask an upstream: every index file is fresh for an hour), so shards are made from the raw
    # repodata and the sidecars remembered are the repodata's own.
    conda = {"upstreams": [UNREACHABLE_CONDA], "channels": CHANNELS, "index_ttl": 3600}
    cache = start_cache(bg_loop, cache_settings(inside, [UNREACHABLE_PYPI], conda=conda))
    index = f"{cache.url}/conda/pkgs/main/{SUBDIR}/repodata_shards.msgpack.zst"
    try:
        assert "libfoo" in _unpack(http_get(index).body)["shards"]
        before = http_get(index).body
        imported = pkgcache("import", "--data-dir", inside, bundle)
        assert imported.returncode == 0, imported.stderr
        deadline = time.monotonic() + 30  # the gate looks at the mark about twice a second
        answer = http_get(index)
        while (answer.status != 200 or answer.body == before) and time.monotonic() < deadline:
            time.sleep(0.1)
            answer = http_get(index)
        assert answer.status == 200 and answer.body != before, answer
        digest = _unpack(answer.body)["shards"]["libfoo"].hex()
        shard = _unpack(http_get(f"{cache.url}/conda/pkgs/main/{SUBDIR}/shards/{digest}.msgpack.zst").body)
        assert {OLD, NEW} <= set(shard.get("packages", {})) | set(shard.get("packages.conda", {}))
    finally:
        cache.stop()


def test_records_of_a_data_directory_that_holds_only_an_upstreams_shards_are_added_from_them(tmp_path: Path) -> None:
    """Clients of a sharded upstream never made the cache fetch repodata: a bundle's repodata (the base, as the only
    one) gets the records of the packages held here from the upstream's shards held here."""
    here, bundle = tmp_path / "data/conda/cloud/conda-forge/linux-64", tmp_path / "bundle"
    record = _record("viashards-1-0.conda") | {"sha256": bytes.fromhex("ab" * 32)}
    shard = zstandard.ZstdCompressor().compress(
        msgpack.packb({"packages": {}, "packages.conda": {"viashards-1-0.conda": record}})
    )
    digest = "cd" * 32
    (here / "shards").mkdir(parents=True)
    (here / "shards" / f"{digest}.msgpack.zst").write_bytes(shard)
    index = {"info": {"base_url": "", "shards_base_url": "./shards/"}, "shards": {"viashards": bytes.fromhex(digest)}}
    (here / "repodata_shards.msgpack.zst").write_bytes(zstandard.ZstdCompressor().compress(msgpack.packb(index)))
    for name in ("viashards-1-0.conda", "a-1-0.conda"):
        (here / name).write_bytes(b"a package")
    _repodata(bundle, ["a-1-0.conda"], time.time() - 3600)

    outcome = merge_subdir(here, _side(bundle), Side.in_folder(here), tmp_path)

    assert outcome.base == "bundle" and outcome.records_added == 1
    merged = json.loads((here / "repodata.json").read_text())
    assert merged["packages.conda"]["viashards-1-0.conda"]["sha256"] == "ab" * 32
    assert set(merged["packages.conda"]) == {"a-1-0.conda", "viashards-1-0.conda"}


@pytest.mark.parametrize("damage", ["cut json", "cut zst alone"])
def test_a_damaged_repodata_here_is_mended_by_the_import_not_a_reason_to_refuse_it(tmp_path: Path, damage: str) -> None:
    """A disk that damaged the data directory's (newer) repodata: the merge reads the next form here, else takes the
    bundle's as the base; the damaged form is written again from the merged records, or removed when the bundle has
    no such form (never left to be served)."""
    here, bundle = tmp_path / "data/conda/pkgs/main/linux-64", tmp_path / "bundle"
    _repodata(here, ["a-1-0.conda", "kept-1-0.conda"], time.time())
    zst = here / "repodata.json.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress((here / "repodata.json").read_bytes()))
    _recorded(zst, time.time())
    if damage == "cut zst alone":
        for name in ("repodata.json", "repodata.json.meta"):
            (here / name).unlink()
    for name in ("a-1-0.conda", "kept-1-0.conda", "b-1-0.conda"):
        (here / name).write_bytes(b"a package")
    damaged = here / ("repodata.json" if damage == "cut json" else "repodata.json.zst")
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    _recorded(damaged, time.time())  # its sidecar agrees with it: only reading it shows the damage
    _repodata(bundle, ["a-1-0.conda", "b-1-0.conda"], time.time() - 3600)

    outcome = merge_subdir(here, _side(bundle), Side.in_folder(here), tmp_path)

    assert [form for form, _ in outcome.damaged] == [damaged.name] and outcome.changed
    merged = json.loads((here / "repodata.json").read_text())
    if damage == "cut json":  # the .zst here, still readable and newer, is the base; both forms written from it
        assert outcome.base == "here"
        assert set(merged["packages.conda"]) == {"a-1-0.conda", "b-1-0.conda", "kept-1-0.conda"}
        from_zst = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(zst.read_bytes()))
        assert from_zst == merged
    else:  # nothing readable here: the bundle's is the base, and the damaged .zst (the bundle has none) is removed
        assert outcome.base == "bundle" and set(merged["packages.conda"]) == {"a-1-0.conda", "b-1-0.conda"}
        assert not zst.exists() and not (here / "repodata.json.zst.meta").exists()
        assert "repodata.json.zst" in outcome.removed


def test_a_damaged_bundle_repodata_is_refused_and_leaves_the_data_directory_as_it_was(tmp_path: Path) -> None:
    here, bundle = tmp_path / "data/conda/pkgs/main/linux-64", tmp_path / "bundle"
    _repodata(here, ["a-1-0.conda"], time.time() - 3600)
    (here / "b-1-0.conda").write_bytes(b"a package")
    before = (here / "repodata.json").read_bytes()
    _repodata(bundle, ["a-1-0.conda", "b-1-0.conda"], time.time())
    (bundle / "repodata.json").write_bytes((bundle / "repodata.json").read_bytes()[:40])

    with pytest.raises(MalformedRepodata):
        merge_subdir(here, _side(bundle), Side.in_folder(here), tmp_path)

    assert (here / "repodata.json").read_bytes() == before


# --- subdirs as clients and seed leave them: repodata in any form, with or without packages -------------------------

NOARCH_PKG = "pydata-2.0-py_0.conda"


@pytest.fixture
def full_mirror(bg_loop: BackgroundLoop, conda_channels: Channels) -> Iterator[MirrorLikeUpstream]:
    """A mirror serving every form of the repodata (.json, .zst, .bz2): a client or seed may ask for any."""
    upstream = MirrorLikeUpstream({"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge})
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


def _filled_by_clients(bg_loop: BackgroundLoop, mirror: MirrorLikeUpstream, data: Path, paths: list[str]) -> None:
    """`data` as clients leave it: each of `paths` (below pkgs/main) asked for through a pkgcache on `mirror`."""
    conda = {"upstreams": [f"{mirror.url}/anaconda/"], "channels": CHANNELS}
    cache = start_cache(bg_loop, cache_settings(data, [UNREACHABLE_PYPI], conda=conda))
    try:
        for path in paths:
            answer = cache.get(f"/conda/pkgs/main/{path}")
            assert answer.status == 200, (path, answer)
        cache.wait_for_downloads_to_end()
    finally:
        cache.stop()


def _records(body: bytes, form: str) -> dict[str, Any]:
    """Every package record (both sections, by file name) of a repodata's bytes in `form`."""
    if form.endswith(".zst"):
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    elif form.endswith(".bz2"):
        body = bz2.decompress(body)
    document = json.loads(body)
    return {**document.get("packages", {}), **document.get("packages.conda", {})}


def _assert_imported_as_upstream(bg_loop: BackgroundLoop, data: Path, channel: Path, form: str, held: set[str]) -> None:
    """`data` holds `form` of noarch's and the platform's repodata with the channel's very records, and the packages
    `held` (`<subdir>/<file>`) as the channel's bytes; an offline pkgcache on it serves them, each subdir's
    repodata listing the packages held (the offline view: conda/filtered_channels.py)."""
    conda = {"upstreams": [UNREACHABLE_CONDA], "channels": CHANNELS}
    cache = start_cache(bg_loop, cache_settings(data, [UNREACHABLE_PYPI], conda=conda, server={"offline": True}))
    try:
        for subdir in ("noarch", SUBDIR):
            upstream = _records((channel / subdir / "repodata.json").read_bytes(), "repodata.json")
            assert _records((data / "conda/pkgs/main" / subdir / form).read_bytes(), form) == upstream, subdir
            answer = cache.get(f"/conda/pkgs/main/{subdir}/{form}")
            assert answer.status == 200, (subdir, answer)
            listed = {name: upstream[name] for name in upstream if f"{subdir}/{name}" in held}
            assert _records(answer.body, form) == listed, subdir
        for package in held:
            answer = cache.get(f"/conda/pkgs/main/{package}")
            assert answer.status == 200 and answer.body == (channel / package).read_bytes(), package
    finally:
        cache.stop()


def test_a_subdir_whose_repodata_came_without_any_of_its_packages_is_imported_and_served(
    tmp_path: Path, full_mirror: MirrorLikeUpstream, conda_channels: Channels, bg_loop: BackgroundLoop
) -> None:
    """conda fetches the platform's repodata with noarch's even when it installs noarch packages only: the bundle
    brings repodata for a subdir of which the data directory holds no file yet."""
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    asked = ["noarch/repodata.json", f"{SUBDIR}/repodata.json", f"noarch/{NOARCH_PKG}"]
    _filled_by_clients(bg_loop, full_mirror, outside, asked)

    imported = pkgcache("import", "--data-dir", inside, _export(outside, tmp_path / "kit.tar"))

    assert imported.returncode == 0 and "Traceback" not in imported.stderr, imported.stderr
    assert "no page or repodata kept here lists them" not in imported.stderr, imported.stderr
    assert not list((inside / "tmp").iterdir())
    _assert_imported_as_upstream(bg_loop, inside, conda_channels.main, "repodata.json", {f"noarch/{NOARCH_PKG}"})


def test_an_import_into_an_empty_directory_says_what_it_did_not_take_and_calls_nothing_already_here(
    tmp_path: Path, full_mirror: MirrorLikeUpstream, bg_loop: BackgroundLoop
) -> None:
    """The shard index made here from the bundle's repodata, and the upstream's answer that it has none (a sidecar
    alone), are not taken: they are made (or asked for) again here. Into an empty directory nothing is "already
    here", and every file said to be added is there."""
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    asked = [f"{subdir}/{name}" for subdir in ("noarch", SUBDIR) for name in ("repodata.json", SHARD_INDEX)]
    _filled_by_clients(bg_loop, full_mirror, outside, asked)
    kit = _export(outside, tmp_path / "kit.tar")
    not_taken = {
        f"conda/pkgs/main/{subdir}/{name}"
        for subdir in ("noarch", SUBDIR)
        for name in (f"made-here/{SHARD_INDEX}", f"made-here/{SHARD_INDEX}.meta", f"{SHARD_INDEX}.meta")
    }
    assert all((outside / path).is_file() for path in not_taken)

    imported = pkgcache("import", "--data-dir", inside, kit)

    assert imported.returncode == 0, imported.stderr
    line = imported.stderr.splitlines()[0]
    assert " 0 already here, 6 not taken (made or fetched again here when asked for), 0 refused" in line, line
    assert not any((inside / path).exists() for path in not_taken)
    (record,) = read_kit_record(inside)["import"]
    assert record["present"] == 0 and record["not_taken"] == 6, record
    added = [path.relative_to(outside).as_posix() for path in (outside / "conda").rglob("*") if path.is_file()]
    assert {path for path in added if not (inside / path).is_file()} == not_taken
    assert line.startswith(f"import: {len(added) - len(not_taken)} files added"), line


def test_a_subdir_whose_folder_cannot_be_made_is_refused_in_one_line_and_the_rest_is_imported(
    tmp_path: Path, full_mirror: MirrorLikeUpstream, conda_channels: Channels, bg_loop: BackgroundLoop
) -> None:
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    asked = ["noarch/repodata.json", f"{SUBDIR}/repodata.json", f"noarch/{NOARCH_PKG}"]
    _filled_by_clients(bg_loop, full_mirror, outside, asked)
    write(inside, f"conda/pkgs/main/{SUBDIR}", "a file where the subdir's folder goes")

    imported = pkgcache("import", "--data-dir", inside, _export(outside, tmp_path / "kit.tar"))

    assert imported.returncode == 1 and "Traceback" not in imported.stderr, imported.stderr
    assert f"{SUBDIR}/repodata.json: the subdir's index could not be written here: " in imported.stderr
    noarch = inside / "conda/pkgs/main/noarch"
    upstream = _records((conda_channels.main / "noarch/repodata.json").read_bytes(), "repodata.json")
    assert _records((noarch / "repodata.json").read_bytes(), "repodata.json") == upstream
    assert (noarch / NOARCH_PKG).read_bytes() == (conda_channels.main / "noarch" / NOARCH_PKG).read_bytes()


@pytest.mark.parametrize("form", ["repodata.json.zst", "repodata.json.bz2"])
def test_a_subdir_whose_repodata_is_cached_only_compressed_is_imported_and_served(
    tmp_path: Path, full_mirror: MirrorLikeUpstream, conda_channels: Channels, bg_loop: BackgroundLoop, form: str
) -> None:
    """Clients ask for the .zst (or the .bz2) alone: the cache holds the subdir's repodata compressed only."""
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    held = {f"noarch/{NOARCH_PKG}", f"{SUBDIR}/{NEW}"}
    _filled_by_clients(bg_loop, full_mirror, outside, [f"noarch/{form}", f"{SUBDIR}/{form}", *sorted(held)])
    assert not list(outside.glob("conda/pkgs/main/*/repodata.json"))

    imported = pkgcache("import", "--data-dir", inside, _export(outside, tmp_path / "kit.tar"))

    assert imported.returncode == 0, imported.stderr
    assert "no page or repodata kept here lists them" not in imported.stderr, imported.stderr
    _assert_imported_as_upstream(bg_loop, inside, conda_channels.main, form, held)


def test_seed_export_import_keeps_the_conda_indexes_seed_caches_as_zst(
    tmp_path: Path, full_mirror: MirrorLikeUpstream, conda_channels: Channels, bg_loop: BackgroundLoop
) -> None:
    """The documented flow, from an upstream that has .zst: seed caches each subdir's repodata.json.zst (noarch's
    too, with none of its packages)."""
    outside, inside = _seed(tmp_path, full_mirror, conda_channels, "outside", NEW), tmp_path / "inside"
    assert not list(outside.glob("conda/pkgs/main/*/repodata.json"))

    imported = pkgcache("import", "--data-dir", inside, _export(outside, tmp_path / "kit.tar"))

    assert imported.returncode == 0, imported.stderr
    assert "no page or repodata kept here lists them" not in imported.stderr, imported.stderr
    _assert_imported_as_upstream(bg_loop, inside, conda_channels.main, "repodata.json.zst", {f"{SUBDIR}/{NEW}"})


def test_a_bundle_holding_a_subdirs_repodata_as_bz2_alone_is_imported(
    tmp_path: Path, full_mirror: MirrorLikeUpstream, conda_channels: Channels, bg_loop: BackgroundLoop
) -> None:
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    _filled_by_clients(bg_loop, full_mirror, outside, [f"{SUBDIR}/repodata.json.bz2", f"{SUBDIR}/{NEW}"])
    bz2_only = tmp_path / "bz2-only.tar"
    rewrite_bundle(
        _export(outside, tmp_path / "kit.tar"),
        bz2_only,
        lambda name, data: None if ".zst" in name else data,
        lambda manifest: manifest.update(files=[e for e in manifest["files"] if ".zst" not in e["path"]]),
    )

    imported = pkgcache("import", "--data-dir", inside, bz2_only)

    assert imported.returncode == 0, imported.stderr
    assert "no page or repodata kept here lists them" not in imported.stderr, imported.stderr
    folder = inside / "conda/pkgs/main" / SUBDIR
    assert sorted(p.name for p in folder.iterdir()) == [NEW, "repodata.json.bz2", "repodata.json.bz2.meta"]
    upstream = _records((conda_channels.main / SUBDIR / "repodata.json").read_bytes(), "repodata.json")
    assert _records((folder / "repodata.json.bz2").read_bytes(), "repodata.json.bz2") == upstream
