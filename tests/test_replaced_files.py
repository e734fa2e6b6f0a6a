"""A package file replaced upstream under the same name (its index lists another sha256 and size) is fetched again
and replaces the cached one; it is never answered from the cache as the file the index now describes.

Real clients (pip, uv, py-rattler) check what they get against the index pkgcache serves them: before the fix they
failed with a hash mismatch until `pkgcache verify` or a purge, because a cached file was a hit whatever the index
said of it now. Also: what a cached file is recorded as (storage/file_records.py), and the one-pass record scan.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import zstandard

from pkgcache.bundle.verifying import verify_cache
from pkgcache.conda import cached_channels
from pkgcache.conda.package_records import records_of
from pkgcache.conda.shards import shard_for
from pkgcache.pypi.core_metadata import _same_distribution
from pkgcache.pypi.metadata_records import MetadataRecord
from pkgcache.pypi.model import DistFile
from pkgcache.storage.file_records import Recorded, agrees, record_digest, recorded_of
from tests.cache_service import RunningCache
from tests.conda_support import Channels, install
from tests.fakes.conda_channel import CondaPkg, find_pkg, rebuild_package
from tests.fakes.conda_upstreams import AnacondaLikeUpstream
from tests.fakes.dists import Dist, build_wheel, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, http_get, installed_dists, run_pip_install, run_uv_install

WHEEL = "qareplaced-1.0-py3-none-any.whl"
JSON_PAGE = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wait_until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


# --- PyPI ---


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_a_wheel_replaced_upstream_is_fetched_again(
    client: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    old, new = build_wheel("qareplaced", "1.0", payload_size=1000), build_wheel("qareplaced", "1.0", payload_size=2000)
    upstream = TunaLikeUpstream([old], strict_ua=False)
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url], pypi={"index_ttl": 1})
        first = http_get(f"{cache.url}/pypi/files/qareplaced/{WHEEL}")
        assert first.status == 200 and _sha256(first.body) == old.sha256
        cached = cache.data_dir / "pypi/files/qareplaced" / WHEEL
        assert recorded_of(cached) == Recorded(len(old.data), ("sha256", old.sha256))

        upstream.set_dists([new])
        # The page goes stale, is revalidated in the background, and then lists the new file's hash.
        _wait_until(lambda: new.sha256 in http_get(f"{cache.url}/pypi/simple/qareplaced/").body.decode())

        run = run_pip_install if client == "pip" else run_uv_install
        result = run(cache.index_url, tmp_path / "target", "qareplaced", extra_args=["--no-deps"])
        assert result.returncode == 0, result.stderr
        installed = (tmp_path / "target/qareplaced/payload.bin").read_bytes()
        assert installed == zipfile.ZipFile(_wheel_file(tmp_path, new)).read("qareplaced/payload.bin")
        assert cached.read_bytes() == new.data
        assert recorded_of(cached) == Recorded(len(new.data), ("sha256", new.sha256))
        again = http_get(f"{cache.url}/pypi/files/qareplaced/{WHEEL}")
        assert (again.status, again.headers.get("x-pkgcache-cache")) == (200, "hit")
        assert again.body == new.data
        assert any(WHEEL in r.path for r in upstream.requests[-10:])  # fetched again from the upstream
    finally:
        bg_loop.run(upstream.stop())


def _wheel_file(tmp_path: Path, dist: Dist) -> Path:
    path = tmp_path / f"wheel-{dist.sha256}.whl"
    path.write_bytes(dist.data)
    return path


def test_a_wheel_replaced_upstream_with_every_upstream_down_is_an_error_not_the_old_bytes(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    old, new = build_wheel("qareplaced", "1.0", payload_size=1000), build_wheel("qareplaced", "1.0", payload_size=2000)
    upstream = TunaLikeUpstream([old], strict_ua=False)
    bg_loop.run(upstream.start())
    cache = make_cache([upstream.index_url], pypi={"index_ttl": 1})
    assert http_get(f"{cache.url}/pypi/files/qareplaced/{WHEEL}").body == old.data
    upstream.set_dists([new])
    _wait_until(lambda: new.sha256 in http_get(f"{cache.url}/pypi/simple/qareplaced/").body.decode())
    bg_loop.run(upstream.stop())
    answer = http_get(f"{cache.url}/pypi/files/qareplaced/{WHEEL}")
    assert answer.status >= 500 and answer.body != old.data
    # The old file is left as it was (nothing better to hold), never served as the page's.
    assert (cache.data_dir / "pypi/files/qareplaced" / WHEEL).read_bytes() == old.data


@pytest.mark.parametrize("client", ["pip", "uv"])
@pytest.mark.parametrize("made_by", ["upstream", "wheel", "ranges"])
def test_a_wheel_replaced_upstream_gets_its_own_core_metadata(
    client: str, made_by: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    """The new wheel declares a new dependency. Its `.metadata` was made from the old wheel still cached and
    recorded as the new one's, for good: the page advertised that metadata's own hash, so pip failed ("inconsistent
    Requires-Dist") and uv installed without the dependency. Now it is made from the upstream's current file, each
    way pkgcache has: the upstream's own `.metadata`, the new wheel fetched whole (a small one, its size on the
    page), ranges of the new wheel (an HTML page gives no size)."""
    old = build_wheel("qareplaced", "1.0", payload_size=1000)
    new = build_wheel("qareplaced", "1.0", payload_size=2000, requires=["gamma"])
    gamma = [dist for dist in sample_dists() if dist.project == "gamma"]
    upstream: OfficialLikeUpstream | TunaLikeUpstream
    if made_by == "ranges":
        upstream = TunaLikeUpstream([old, *gamma], strict_ua=False)
    else:
        upstream = OfficialLikeUpstream([old, *gamma])
        upstream.serves_metadata = made_by == "upstream"
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url], pypi={"index_ttl": 1})
        first = run_uv_install(cache.index_url, tmp_path / "before", "qareplaced")
        assert first.returncode == 0, first.stderr
        assert installed_dists(tmp_path / "before") == {"qareplaced==1.0"}
        cached = cache.data_dir / "pypi/files/qareplaced" / WHEEL
        assert cached.read_bytes() == old.data
        assert (cache.data_dir / "pypi/files/qareplaced" / f"{WHEEL}.metadata").read_bytes() == old.metadata

        upstream.set_dists([new, *gamma])
        _wait_until(lambda: new.sha256 in http_get(f"{cache.url}/pypi/simple/qareplaced/").body.decode())
        log = upstream.files.requests if isinstance(upstream, OfficialLikeUpstream) else upstream.requests
        seen = len(log)

        run = run_pip_install if client == "pip" else run_uv_install
        result = run(cache.index_url, tmp_path / "after", "qareplaced")
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed_dists(tmp_path / "after") == {"qareplaced==1.0", "gamma==0.5"}
        assert any(r.path.endswith(WHEEL) for r in log[seen:])  # the new wheel, from the upstream

        metadata = http_get(f"{cache.url}/pypi/files/qareplaced/{WHEEL}.metadata")
        assert (metadata.status, metadata.body) == (200, new.metadata)
        page = json.loads(http_get(f"{cache.url}/pypi/simple/qareplaced/", headers=JSON_PAGE).body)
        entry = next(file for file in page["files"] if file["filename"] == WHEEL)
        assert entry["hashes"]["sha256"] == new.sha256
        assert entry["core-metadata"] == {"sha256": _sha256(new.metadata)}
        records = json.loads((cache.data_dir / "pypi/simple/qareplaced/metadata.json").read_bytes())
        assert records[WHEEL]["dist_sha256"] == new.sha256
        assert records[WHEEL]["sha256"] == _sha256(new.metadata)
        assert verify_cache(cache.data_dir, dry_run=True).ok
    finally:
        bg_loop.run(upstream.stop())


def test_a_record_made_for_no_known_sha256_belongs_to_no_listed_one() -> None:
    made = MetadataRecord("ab" * 32, None, "wheel", True)
    assert not _same_distribution(made, DistFile(WHEEL, "", hashes={"sha256": "cd" * 32}))
    assert _same_distribution(made, DistFile(WHEEL, ""))  # a page listing no sha256 cannot tell
    listed = MetadataRecord("ab" * 32, "cd" * 32, "wheel", True)
    assert _same_distribution(listed, DistFile(WHEEL, "", hashes={"sha256": "CD" * 32}))
    assert not _same_distribution(listed, DistFile(WHEEL, "", hashes={"sha256": "ef" * 32}))


@pytest.mark.parametrize("padding", [0, 9 * 1024 * 1024], ids=["", "METADATA over 8 MiB"])
@pytest.mark.parametrize("made_from", ["the old wheel", "its wheel"])
def test_verify_finds_core_metadata_made_from_another_file_than_its_wheel(
    made_from: str, padding: int, tmp_path: Path
) -> None:
    """What an older pkgcache left of a wheel replaced upstream: the new wheel cached (and recorded as checked
    against the new sha256), its `.metadata` the old wheel's, recorded under the new sha256 and its own hash. A
    METADATA too large to read into memory is compared too (streamed)."""
    old = build_wheel("qareplaced", "1.0", payload_size=1000, metadata_padding=padding)
    new = build_wheel("qareplaced", "1.0", payload_size=2000, requires=["gamma"], metadata_padding=padding)
    folder = tmp_path / "pypi/files/qareplaced"
    folder.mkdir(parents=True)
    wheel = folder / WHEEL
    wheel.write_bytes(new.data)
    record_digest(wheel, ("sha256", new.sha256))
    served = old.metadata if made_from == "the old wheel" else new.metadata
    (folder / f"{WHEEL}.metadata").write_bytes(served)
    records = tmp_path / "pypi/simple/qareplaced/metadata.json"
    records.parent.mkdir(parents=True)
    record = {"sha256": _sha256(served), "dist_sha256": new.sha256, "source": "wheel", "verified": True}
    records.write_text(json.dumps({WHEEL: record}))

    report = verify_cache(tmp_path)
    if made_from == "its wheel":
        assert report.ok, report.failures
        return
    [failure] = report.failures
    assert failure.path == f"pypi/files/qareplaced/{WHEEL}.metadata" and failure.removed
    assert "is not the METADATA of" in failure.reason
    assert wheel.read_bytes() == new.data  # the wheel is the file it is recorded as: it stays
    assert not (folder / f"{WHEEL}.metadata").exists()  # made again from the wheel at the next request


# --- conda ---


def _lists(url: str, filename: str, sha256: str) -> bool:
    answer = http_get(url)
    if answer.status != 200:
        return False
    body = answer.body
    if url.endswith(".zst"):
        body = zstandard.ZstdDecompressor().stream_reader(body).read()
    data = json.loads(body)
    records = {**data.get("packages", {}), **data.get("packages.conda", {})}
    return records.get(filename, {}).get("sha256") == sha256


def _shard_lists(subdir_url: str, pkg: CondaPkg, sha256: str) -> bool:
    index = http_get(f"{subdir_url}/repodata_shards.msgpack.zst")
    if index.status != 200:
        return False
    shards = msgspec.msgpack.decode(zstandard.ZstdDecompressor().stream_reader(index.body).read())["shards"]
    shard = http_get(f"{subdir_url}/shards/{shards[pkg.name].hex()}.msgpack.zst")
    records = msgspec.msgpack.decode(zstandard.ZstdDecompressor().stream_reader(shard.body).read())
    record = {**records.get("packages", {}), **records.get("packages.conda", {})}.get(pkg.filename, {})
    return bool(record) and bytes(record["sha256"]).hex() == sha256


def test_a_conda_package_replaced_upstream_is_fetched_again(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], conda_channels: Channels, tmp_path: Path
) -> None:
    main = tmp_path / "main"
    shutil.copytree(conda_channels.main, main)
    upstream = AnacondaLikeUpstream({"pkgs/main": main})
    bg_loop.run(upstream.start())
    try:
        urls = {"pkgs_url": f"{upstream.repo.url}/pkgs/", "cloud_url": f"{upstream.conda.url}/"}
        conda = {"upstreams": [{"name": "anaconda-fake", **urls}]}
        cache = make_cache(["http://127.0.0.1:9/simple/"], conda={**conda, "channels": ["pkgs/main"], "index_ttl": 1})
        channel = f"{cache.url}/conda/pkgs/main"
        pkg = find_pkg(conda_channels.main_pkgs, "tzinfo")
        prefix, _ = install(tmp_path, [channel], ["tzinfo"], name="before")
        assert (prefix / "share/tzinfo/tzinfo.txt").read_text() == "tzinfo 2024.1\n"
        cached = cache.data_dir / "conda/pkgs/main/noarch" / pkg.filename
        assert recorded_of(cached) == Recorded(pkg.size, ("sha256", pkg.sha256))

        rebuilt = rebuild_package(main, pkg, {"share/tzinfo/tzinfo.txt": b"tzinfo 2024.1, rebuilt\n"})
        assert rebuilt.sha256 != pkg.sha256
        for form in ("repodata.json", "repodata.json.zst"):
            url = f"{channel}/noarch/{form}"
            _wait_until(lambda url=url: _lists(url, pkg.filename, rebuilt.sha256))  # type: ignore[misc]
        # The shards made here from it follow (rattler reads those), rebuilt from the new repodata.
        _wait_until(lambda: _shard_lists(f"{channel}/noarch", pkg, rebuilt.sha256))
        # A client that was served an index listing the old file and says so gets the file it expects.
        old_asked = http_get(f"{channel}/noarch/{pkg.filename}", headers={"x-expected-sha256": pkg.sha256})
        assert (old_asked.status, _sha256(old_asked.body)) == (200, pkg.sha256)

        prefix, _ = install(tmp_path, [channel], ["tzinfo"], name="after")
        assert (prefix / "share/tzinfo/tzinfo.txt").read_text() == "tzinfo 2024.1, rebuilt\n"
        assert _sha256(cached.read_bytes()) == rebuilt.sha256
        assert recorded_of(cached) == Recorded(rebuilt.size, ("sha256", rebuilt.sha256))
        answer = http_get(f"{channel}/noarch/{pkg.filename}")
        assert (answer.status, answer.headers.get("x-pkgcache-cache")) == (200, "hit")
        assert _sha256(answer.body) == rebuilt.sha256
    finally:
        bg_loop.run(upstream.stop())


def test_a_conda_package_replaced_since_its_shard_index_was_cached_is_fetched_as_the_new_index_lists_it(
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
    conda_channels: Channels,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A locked install asks for no index: the package request itself revalidates a shard index past its ttl before
    # taking its record, else the old shard's record fails the new bytes on every upstream (a 502).
    monkeypatch.setattr(cached_channels, "MISSING_PACKAGE_RECHECK_SECONDS", 0.0)
    forge = tmp_path / "forge"
    shutil.copytree(conda_channels.forge, forge)
    upstream = AnacondaLikeUpstream({"conda-forge": forge})
    bg_loop.run(upstream.start())
    try:
        urls = {"pkgs_url": f"{upstream.repo.url}/pkgs/", "cloud_url": f"{upstream.conda.url}/"}
        conda = {"upstreams": [{"name": "anaconda-fake", **urls}], "channels": ["cloud/conda-forge"], "index_ttl": 1}
        cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
        pkg = find_pkg(conda_channels.forge_pkgs, "libfoo", "1.1")
        subdir = f"/conda/cloud/conda-forge/{pkg.subdir}"
        assert cache.get(f"{subdir}/repodata_shards.msgpack.zst").status == 200
        index = cache.data_dir / "conda/cloud/conda-forge" / pkg.subdir / "repodata_shards.msgpack.zst"
        old_shard = shard_for(index, "libfoo")
        assert old_shard is not None and cache.get(f"{subdir}/shards/{old_shard}").status == 200

        rebuilt = rebuild_package(forge, pkg, {"share/libfoo/libfoo.txt": b"libfoo 1.1, rebuilt\n"}, sharded=True)
        assert rebuilt.sha256 != pkg.sha256
        time.sleep(1.1)  # the cached shard index is past its ttl
        answer = cache.get(f"{subdir}/{pkg.filename}")
        assert answer.status == 200, answer.body
        assert _sha256(answer.body) == rebuilt.sha256
        assert shard_for(index, "libfoo") != old_shard  # the index it was taken from is the new one
    finally:
        bg_loop.run(upstream.stop())


# --- the parts ---


def test_what_a_cached_file_is_recorded_as(tmp_path: Path) -> None:
    path = tmp_path / "f.whl"
    assert recorded_of(path) is None
    path.write_bytes(b"abc")
    assert recorded_of(path) == Recorded(3)  # put there by other means: its size alone
    record_digest(path, ("sha256", "AB" * 32))
    recorded = recorded_of(path)
    assert recorded == Recorded(3, ("sha256", "ab" * 32))
    assert agrees(recorded, {"sha256": "ab" * 32}, 3)
    assert agrees(recorded, {}, None)  # a page listing neither: nothing to compare
    assert agrees(recorded, {"md5": "00" * 16}, 3)  # no digest of the same kind: the size alone
    assert not agrees(recorded, {"sha256": "cd" * 32}, 3)
    assert not agrees(recorded, {"sha256": "ab" * 32}, 4)
    assert not agrees(Recorded(3), {}, 4)
    assert recorded_of(tmp_path) is None  # a folder is no cached file


def test_records_of_finds_every_name_in_one_pass(tmp_path: Path) -> None:
    records = {f"p{i}-1.0-h_0.conda": {"name": f"p{i}", "sha256": f"{i:064x}", "size": i} for i in range(3000)}
    text = json.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": records}).encode()
    (tmp_path / "repodata.json").write_bytes(text)
    (tmp_path / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    wanted = {"p0-1.0-h_0.conda", "p1234-1.0-h_0.conda", "p2999-1.0-h_0.conda", "absent-1.0-h_0.conda"}
    for name in ("repodata.json", "repodata.json.zst"):
        found = records_of(tmp_path / name, wanted)
        assert set(found) == wanted - {"absent-1.0-h_0.conda"}
        assert found["p1234-1.0-h_0.conda"]["sha256"] == f"{1234:064x}"


def test_a_hit_waits_only_a_moment_for_its_subdirs_scan_and_the_scan_decides_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conda-forge repodata takes seconds to scan, once per version: the hits meanwhile are served as they are
    (as before the check existed), not held for it; once it has ended, its answers decide."""
    import asyncio

    from pkgcache.conda import package_records
    from pkgcache.storage.sidecars import FileMeta

    folder = tmp_path / "linux-64"
    folder.mkdir()
    old, new = b"old bytes", b"new bytes!"
    record = {"name": "p", "sha256": hashlib.sha256(new).hexdigest(), "size": len(new)}
    (folder / "repodata.json").write_text(json.dumps({"packages": {}, "packages.conda": {"p-1-h_0.conda": record}}))
    cached = folder / "p-1-h_0.conda"
    cached.write_bytes(old)
    record_digest(cached, ("sha256", hashlib.sha256(old).hexdigest()))
    meta = FileMeta(fetched_at=time.time())
    scan = package_records._scan
    scan_may_end = threading.Event()

    def slow_scan(*args: object) -> object:
        scan_may_end.wait(30)  # a big repodata's scan: it ends only once the first hit has been answered
        return scan(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(package_records, "_scan", slow_scan)
    monkeypatch.setattr(package_records, "HIT_CHECK_WAIT", 0.2)

    async def meta_for(path: Path) -> FileMeta | None:
        return meta if path.name == "repodata.json" else None

    async def run() -> tuple[bool, bool]:
        records = package_records.ListedRecords(meta_for)
        try:
            # Held for the whole scan, this would wait the 30 s and fail here.
            first = await asyncio.wait_for(records.is_as_listed(cached, recorded_of(cached)), 10)  # type: ignore[arg-type]
        finally:
            scan_may_end.set()
        while records._scans:  # the scan ends
            await asyncio.sleep(0.05)
        return first, await records.is_as_listed(cached, recorded_of(cached))  # type: ignore[arg-type]

    first, after = asyncio.run(run())
    assert first  # served as it is meanwhile
    assert not after  # then the scan's answer: not the file listed now, fetched again
