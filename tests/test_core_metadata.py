"""Core metadata for every wheel, whatever the mirror (issue 11): real resolvers through pkgcache against a mirror
that has no metadata, and the ways metadata is obtained when a mirror fails or lies."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pkgcache.pypi import core_metadata, sdist_metadata, wheel_metadata
from tests.cache_service import RunningCache
from tests.fakes import zips
from tests.fakes.dists import Dist, build_wheel
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, PageExtras, TunaLikeUpstream
from tests.support import UV, BackgroundLoop, installed_dists, isolated_env, run_pip_install, run_uv_install

POETRY = Path(sys.executable).parent / "poetry"
PDM = Path(sys.executable).parent / "pdm"

MiB = 1024 * 1024
HEAVY2 = "heavy-2.0-py3-none-any.whl"
TIMEOUT = 120


def resolution_dists() -> list[Dist]:
    """app -> heavy>=1 (2.0 wins) -> lib>=2; the heavy and lib wheels are big enough that fetching them whole shows."""
    return [
        build_wheel("app", "1.0", requires=["heavy>=1", "lib"]),
        build_wheel("heavy", "1.0", requires=["lib<2"], payload_size=2 * MiB),
        build_wheel("heavy", "2.0", requires=["lib>=2"], payload_size=2 * MiB),
        build_wheel("lib", "1.0", payload_size=1 * MiB),
        build_wheel("lib", "2.0", payload_size=1 * MiB),
    ]


BIG_WHEELS = [dist.filename for dist in resolution_dists() if dist.size > MiB]


@pytest.fixture
def mirror(bg_loop: BackgroundLoop) -> Iterator[TunaLikeUpstream]:
    """A TUNA-like mirror: HTML pages, no sizes, no metadata, Range supported; clients may talk to it directly."""
    server = TunaLikeUpstream(resolution_dists(), strict_ua=False)
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.fixture
def official(bg_loop: BackgroundLoop) -> Iterator[OfficialLikeUpstream]:
    server = OfficialLikeUpstream(resolution_dists())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def _whole_downloads(server: TunaLikeUpstream | OfficialLikeUpstream, filename: str) -> int:
    return getattr(server, "files", server).count_whole(filename)


def _range_requests(server: TunaLikeUpstream | OfficialLikeUpstream) -> int:
    files = getattr(server, "files", server)
    return sum(1 for r in files.requests if r.method == "GET" and "Range" in r.headers)


def _run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    environment = isolated_env(**(env or {}))
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _uv_compile(index_url: str, tmp_path: Path, name: str) -> list[str]:
    requirements = tmp_path / f"{name}.in"
    requirements.write_text("app\n")
    output = _run(
        [str(UV), "pip", "compile", str(requirements), "--index-url", index_url, "--no-cache",
         "--python", sys.executable, "--no-header", "--no-annotate"]
    )  # fmt: skip
    return sorted(line.strip() for line in output.splitlines() if "==" in line)


def _pip_report(index_url: str, tmp_path: Path, name: str) -> list[str]:
    report = tmp_path / f"{name}.json"
    _run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report", str(report),
         "--index-url", index_url, "--no-cache-dir", "--progress-bar", "off", "--quiet", "app"]
    )  # fmt: skip
    installs = json.loads(report.read_text())["install"]
    return sorted(f"{item['metadata']['name']}=={item['metadata']['version']}" for item in installs)


def _uv_lock(index_url: str, tmp_path: Path, name: str) -> list[str]:
    project = tmp_path / name
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = ["app"]\n'
    )
    _run([str(UV), "lock", "--default-index", index_url, "--no-cache", "--python", sys.executable], cwd=project)
    return _locked(tomllib.loads((project / "uv.lock").read_text()))


def _demo_project(tmp_path: Path, name: str, tool_table: str) -> Path:
    project = tmp_path / name
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = ["app"]\n' + tool_table
    )
    return project


def _locked(lock: dict[str, Any]) -> list[str]:
    return sorted(f"{p['name']}=={p['version']}" for p in lock["package"] if p["name"] != "demo")


def _poetry_lock(index_url: str, tmp_path: Path, name: str) -> list[str]:
    source = f'\n[[tool.poetry.source]]\nname = "mirror"\nurl = "{index_url}"\npriority = "primary"\n'
    project = _demo_project(tmp_path, name, source)
    env = {"POETRY_CACHE_DIR": str(tmp_path / f"{name}-cache"), "POETRY_CONFIG_DIR": str(tmp_path / f"{name}-cfg")}
    _run([str(POETRY), "lock", "--no-interaction"], cwd=project, env=env)
    return _locked(tomllib.loads((project / "poetry.lock").read_text()))


def _pdm_lock(index_url: str, tmp_path: Path, name: str) -> list[str]:
    source = f'\n[[tool.pdm.source]]\nname = "pypi"\nurl = "{index_url}"\nverify_ssl = false\n'
    project = _demo_project(tmp_path, name, source)
    env = {"PDM_CACHE_DIR": str(tmp_path / f"{name}-cache"), "PDM_CONFIG_FILE": str(tmp_path / f"{name}.toml"),
           "PDM_PYTHON": sys.executable, "PDM_NO_SELF": "1", "PDM_IGNORE_ACTIVE_VENV": "1"}  # fmt: skip
    _run([str(PDM), "lock", "--no-isolation"], cwd=project, env=env)
    return _locked(tomllib.loads((project / "pdm.lock").read_text()))


RESOLVERS = {
    "uv pip compile": _uv_compile,
    "pip install --dry-run --report": _pip_report,
    "uv lock": _uv_lock,
    "poetry lock": _poetry_lock,
    "pdm lock": _pdm_lock,
}


@pytest.mark.parametrize("resolver", sorted(RESOLVERS))
def test_a_resolution_through_pkgcache_reads_metadata_instead_of_whole_wheels(
    resolver: str, mirror: TunaLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    resolve = RESOLVERS[resolver]
    direct = resolve(mirror.index_url, tmp_path, "direct")
    assert direct == ["app==1.0", "heavy==2.0", "lib==2.0"]
    mirror.reset_log()

    cache = make_cache([mirror.index_url])
    assert resolve(cache.index_url, tmp_path, "through") == direct
    # The mirror sent pages and a few ranges of the big wheels' ends, never one of them whole.
    assert mirror.count("/simple/heavy/") >= 1
    assert all(_whole_downloads(mirror, name) == 0 for name in BIG_WHEELS), mirror.paths("GET")
    assert _range_requests(mirror) >= 2
    status = json.loads(cache.get("/-/status").body)
    counters = status["pypi"]["core_metadata"]
    assert counters["made"].get("ranges", 0) >= 2 and counters["bytes_saved"] > 2 * MiB
    metrics = cache.get("/metrics").body.decode()
    assert 'pkgcache_core_metadata_made_total{source="ranges"}' in metrics
    assert "Wheel metadata made here" in cache.get("/", {"Accept-Language": "en"}).body.decode()

    # Warm: the same resolution needs nothing from the mirror.
    mirror.reset_log()
    assert resolve(cache.index_url, tmp_path, "warm") == direct
    assert not [path for path in mirror.paths("GET") if "/packages/" in path]


def test_pages_advertise_metadata_for_every_wheel_with_its_hash_once_known(
    mirror: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([mirror.index_url])
    json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    files = {f["filename"]: f for f in json.loads(cache.get("/pypi/simple/heavy/", json_accept).body)["files"]}
    assert files[HEAVY2]["core-metadata"] is True
    metadata = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert metadata.status == 200 and metadata.body == _dist(HEAVY2).metadata
    files = {f["filename"]: f for f in json.loads(cache.get("/pypi/simple/heavy/", json_accept).body)["files"]}
    assert files[HEAVY2]["core-metadata"] == {"sha256": hashlib.sha256(metadata.body).hexdigest()}
    html = cache.get("/pypi/simple/heavy/").body.decode()
    assert f'data-core-metadata="sha256={hashlib.sha256(metadata.body).hexdigest()}"' in html
    assert 'data-dist-info-metadata="sha256=' in html  # the legacy spelling too (PEP 714)
    # Recorded in the fields every version reads ("available" is written only when false).
    records = json.loads((cache.data_dir / "pypi" / "simple" / "heavy" / "metadata.json").read_text())
    assert set(records[HEAVY2]) == {"sha256", "dist_sha256", "source", "verified"}


def test_an_upstream_that_advertises_metadata_and_404s_it_is_read_around(
    official: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    official.garbage[HEAVY2 + ".metadata"] = "404"
    cache = make_cache([official.index_url])
    answer = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert answer.status == 200 and answer.body == _dist(HEAVY2).metadata
    assert official.files.count(HEAVY2 + ".metadata") == 1  # asked, answered 404, not trusted again
    assert _whole_downloads(official, HEAVY2) == 0 and _range_requests(official) >= 1


@pytest.mark.parametrize("answer", ["html-error", "random"])
def test_an_upstreams_metadata_that_is_not_the_wheels_is_read_around_and_not_kept(
    answer: str, official: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    # The page says only that metadata exists (no hash to check it by); the mirror answers 200 with a block page.
    official.metadata_hash_given = False
    official.garbage[HEAVY2 + ".metadata"] = answer
    cache = make_cache([official.index_url])
    expected = _dist(HEAVY2).metadata or b""
    got = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert got.status == 200 and got.body == expected
    assert official.files.count(HEAVY2 + ".metadata") == 1 and _range_requests(official) >= 1
    assert (cache.data_dir / "pypi" / "files" / "heavy" / f"{HEAVY2}.metadata").read_bytes() == expected
    page = json.loads(cache.get("/pypi/simple/heavy/", {"Accept": "application/vnd.pypi.simple.v1+json"}).body)
    advertised = {f["filename"]: f["core-metadata"] for f in page["files"]}[HEAVY2]
    assert advertised == {"sha256": hashlib.sha256(expected).hexdigest()}


def test_an_upstream_that_refuses_ranges_gets_the_wheel_fetched_whole_once(
    mirror: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    mirror.honour_ranges = False
    cache = make_cache([mirror.index_url])
    answer = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert answer.status == 200 and answer.body == _dist(HEAVY2).metadata
    assert _whole_downloads(mirror, HEAVY2) == 1
    wheel = cache.get(f"/pypi/files/heavy/{HEAVY2}")  # likely installed next: it is cached already
    assert wheel.status == 200 and wheel.headers["x-pkgcache-cache"] == "hit"
    assert hashlib.sha256(wheel.body).hexdigest() == _dist(HEAVY2).sha256
    assert _whole_downloads(mirror, HEAVY2) == 1


def test_metadata_from_lying_ranges_gives_way_to_the_verified_wheels(
    mirror: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    liar = build_wheel("heavy", "2.0", requires=["lib>=3"], payload_size=2 * MiB)
    assert liar.size == _dist(HEAVY2).size and liar.metadata != _dist(HEAVY2).metadata
    mirror.range_bodies[HEAVY2] = liar.data
    cache = make_cache([mirror.index_url])
    first = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert first.status == 200 and first.body == liar.metadata  # ranges cannot be checked until the wheel is here

    wheel = cache.get(f"/pypi/files/heavy/{HEAVY2}")
    assert hashlib.sha256(wheel.body).hexdigest() == _dist(HEAVY2).sha256
    second = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert second.status == 200 and second.body == _dist(HEAVY2).metadata
    assert json.loads(cache.get("/-/status").body)["pypi"]["core_metadata"]["mismatches"] == 1
    page = json.loads(cache.get("/pypi/simple/heavy/", {"Accept": "application/vnd.pypi.simple.v1+json"}).body)
    advertised = {f["filename"]: f["core-metadata"] for f in page["files"]}[HEAVY2]
    assert advertised == {"sha256": hashlib.sha256(_dist(HEAVY2).metadata or b"").hexdigest()}


@pytest.mark.parametrize("ranges", [True, False], ids=["read by ranges", "fetched whole"])
@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "LZMA"])
def test_metadata_compressed_with_bzip2_or_lzma_is_served_as_the_wheel_holds_it(
    method: int, ranges: bool, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    wheel = build_wheel("packed", "1.0", requires=["lib"], payload_size=MiB, metadata_method=method)
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:  # as pip reads it
        assert archive.getinfo("packed-1.0.dist-info/METADATA").compress_type == method
        assert archive.read("packed-1.0.dist-info/METADATA") == wheel.metadata
    server = TunaLikeUpstream([wheel], strict_ua=False)
    server.honour_ranges = ranges
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        answer = cache.get(f"/pypi/files/packed/{wheel.filename}.metadata")
        assert answer.status == 200 and answer.body == wheel.metadata
        assert server.count_whole(wheel.filename) == (0 if ranges else 1)
        advertised = _json_files(cache, "packed")[wheel.filename]["core-metadata"]
        assert advertised == {"sha256": wheel.metadata_sha256}
    finally:
        bg_loop.run(server.stop())


def _json_files(cache: RunningCache, project: str) -> dict[str, dict[str, Any]]:
    answer = cache.get(f"/pypi/simple/{project}/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    return {f["filename"]: f for f in json.loads(answer.body)["files"]}


def _big_metadata_wheel(name: str = "murky", requires: tuple[str, ...] = ()) -> Dist:
    """A wheel whose METADATA is over what pkgcache reads into memory: a 9 MiB long description, deflated to a few
    KiB, in a wheel of 1 MiB (too big to be fetched whole before ranges are tried)."""
    return build_wheel(name, "1.0", requires=requires, payload_size=MiB, metadata_padding=9 * MiB)


def _unreadable_wheel(kind: str) -> Dist:
    """A wheel whose METADATA pkgcache does not read. Pip and uv refuse the one with an unknown method too; the one
    over the streamed size cap (monkeypatched down to 4 MiB by the tests that use it) they install."""
    if kind == "METADATA over the streamed size cap":
        return _big_metadata_wheel()
    wheel = build_wheel("murky", "1.0", payload_size=MiB)
    name = "murky-1.0.dist-info/METADATA"
    data = zips.patched(wheel.data, zips.central_header_offset(wheel.data, name) + zips.CENTRAL_METHOD, "H", 99)
    data = zips.patched(data, zips.local_header_offset(data, name) + 8, "H", 99)  # the local header's method
    return dataclasses.replace(wheel, data=data)


@pytest.mark.parametrize("kind", ["METADATA over the streamed size cap", "METADATA compressed by an unknown method"])
def test_a_wheel_whose_metadata_cannot_be_read_is_no_longer_advertised_after_the_first_attempt(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel_metadata, "MAX_STREAMED_METADATA_SIZE", 4 * MiB)
    wheel = _unreadable_wheel(kind)
    server = TunaLikeUpstream([wheel], strict_ua=False)
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        before = cache.get("/pypi/simple/murky/")
        assert 'data-core-metadata="true"' in before.body.decode()
        assert _json_files(cache, "murky")[wheel.filename]["core-metadata"] is True
        # The first client to ask was told `true`: it gets the 404. Ranges gave up, the wheel was fetched whole.
        assert cache.get(f"/pypi/files/murky/{wheel.filename}.metadata").status == 404
        assert server.count_whole(wheel.filename) == 1
        after = cache.get("/pypi/simple/murky/")
        assert "data-core-metadata" not in after.body.decode()
        assert "data-dist-info-metadata" not in after.body.decode()
        assert after.headers["etag"] != before.headers["etag"]
        assert cache.get("/pypi/simple/murky/", {"If-None-Match": before.headers["etag"]}).status == 200
        assert "core-metadata" not in _json_files(cache, "murky")[wheel.filename]
        # Asked again anyway: a 404 at once, the wheel neither fetched nor read again.
        assert cache.get(f"/pypi/files/murky/{wheel.filename}.metadata").status == 404
        assert server.count_whole(wheel.filename) == 1
        records = json.loads((cache.data_dir / "pypi" / "simple" / "murky" / "metadata.json").read_text())
        assert records[wheel.filename]["available"] is False
    finally:
        bg_loop.run(server.stop())


def test_pip_and_uv_install_through_pkgcache_a_wheel_whose_metadata_it_gave_up_on(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel_metadata, "MAX_STREAMED_METADATA_SIZE", 4 * MiB)
    wheel = _unreadable_wheel("METADATA over the streamed size cap")
    server = TunaLikeUpstream([wheel], strict_ua=False)
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        assert cache.get(f"/pypi/files/murky/{wheel.filename}.metadata").status == 404  # the first attempt
        for install, name in ((run_pip_install, "pip"), (run_uv_install, "uv")):
            done = install(cache.index_url, tmp_path / name, "murky")
            assert done.returncode == 0, done.stdout + done.stderr
            assert installed_dists(tmp_path / name) == {"murky==1.0"}
            assert (tmp_path / name / "murky-1.0.dist-info" / "METADATA").read_bytes() == wheel.metadata
        # The mirror sent the wheel once, to pkgcache, which served it to both.
        assert server.count_whole(wheel.filename) == 1
        assert server.count("/simple/murky/") >= 1
    finally:
        bg_loop.run(server.stop())


@pytest.mark.parametrize("kind", ["a mirror without metadata", "an index that serves it too"])
def test_metadata_over_what_is_read_into_memory_is_served_at_the_first_request(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    # Advertised `true` before anything is known of it: the first .metadata must not be a 404 (pip and uv fail on
    # it). Neither ranges nor the index's own (larger than read into memory) give it: the wheel, streamed.
    wheel = _big_metadata_wheel()
    assert wheel.metadata is not None and len(wheel.metadata) > wheel_metadata.MAX_METADATA_SIZE
    server: TunaLikeUpstream | OfficialLikeUpstream
    server = (
        TunaLikeUpstream([wheel], strict_ua=False)
        if kind == "a mirror without metadata"
        else OfficialLikeUpstream([wheel])
    )
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        assert _json_files(cache, "murky")[wheel.filename]["core-metadata"] is True
        answer = cache.get(f"/pypi/files/murky/{wheel.filename}.metadata")
        assert answer.status == 200 and answer.body == wheel.metadata
        assert answer.headers["x-pkgcache-cache"] == "miss"
        files = getattr(server, "files", server)
        assert files.count_whole(wheel.filename) == 1
        if isinstance(server, OfficialLikeUpstream):
            # Its .metadata was asked for and left for being over what is read into memory: not the index's fault,
            # which was not rested for it (the wheel then came from it).
            assert files.count(server.file_path(wheel) + ".metadata") == 1
        advertised = _json_files(cache, "murky")[wheel.filename]["core-metadata"]
        assert advertised == {"sha256": wheel.metadata_sha256}
        records = json.loads((cache.data_dir / "pypi" / "simple" / "murky" / "metadata.json").read_text())
        assert records[wheel.filename]["source"] == "wheel" and records[wheel.filename].get("available", True)
        again = cache.get(f"/pypi/files/murky/{wheel.filename}.metadata")
        assert again.body == wheel.metadata and again.headers["x-pkgcache-cache"] == "hit"
    finally:
        bg_loop.run(server.stop())


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_pip_and_uv_install_a_wheel_with_metadata_over_8_mib_through_a_new_pkgcache_at_the_first_attempt(
    client: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # The dependency is only in the big METADATA: the client resolves it from the .metadata pkgcache serves.
    wheel = _big_metadata_wheel(requires=("plain",))
    server = TunaLikeUpstream([wheel, build_wheel("plain", "1.0")], strict_ua=False)
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        install = run_pip_install if client == "pip" else run_uv_install
        done = install(cache.index_url, tmp_path / client, "murky")
        assert done.returncode == 0, done.stdout + done.stderr
        assert installed_dists(tmp_path / client) == {"murky==1.0", "plain==1.0"}
        assert (tmp_path / client / "murky-1.0.dist-info" / "METADATA").read_bytes() == wheel.metadata
        # The client asked for the .metadata (made only then: a wheel's own arrival leaves one this large alone),
        # and the mirror sent the pages and the wheel, once.
        records = json.loads((cache.data_dir / "pypi" / "simple" / "murky" / "metadata.json").read_text())
        assert records[wheel.filename]["sha256"] == wheel.metadata_sha256
        assert server.count("/simple/murky/") >= 1 and server.count("/simple/plain/") >= 1
        assert server.count_whole(wheel.filename) == 1
    finally:
        bg_loop.run(server.stop())


def test_a_wheel_that_cannot_be_fetched_for_now_keeps_its_metadata_advertised(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    wheel = build_wheel("flaky", "1.0", payload_size=MiB)
    server = TunaLikeUpstream([wheel], strict_ua=False)
    server.garbage[wheel.filename] = "503"  # ranges and the whole wheel alike
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url], upstream={"cooldown": 0})
        assert cache.get(f"/pypi/files/flaky/{wheel.filename}.metadata").status >= 500
        assert _json_files(cache, "flaky")[wheel.filename]["core-metadata"] is True
        del server.garbage[wheel.filename]
        answer = cache.get(f"/pypi/files/flaky/{wheel.filename}.metadata")
        assert answer.status == 200 and answer.body == wheel.metadata
        assert _json_files(cache, "flaky")[wheel.filename]["core-metadata"] == {"sha256": wheel.metadata_sha256}
    finally:
        bg_loop.run(server.stop())


def test_a_wheel_with_a_stray_dist_info_first_is_no_longer_advertised_once_cached_whole(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    # The stray .dist-info's entry opens a central directory longer than the first range: ranges, which read the
    # directory's last entries, cannot see it. pkgcache (and pip) refuse the wheel whole.
    stray = ("stray-2.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: stray\nVersion: 2.0\n\n")
    modules = [(f"twice/module_{i:04d}.py", b"x = 1\n") for i in range(400)]
    wheel = build_wheel("twice", "1.0", payload_size=MiB, leading_members=[stray, *modules])
    server = TunaLikeUpstream([wheel], strict_ua=False)
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        metadata_url = f"/pypi/files/twice/{wheel.filename}.metadata"
        by_ranges = cache.get(metadata_url)
        assert by_ranges.status == 200 and by_ranges.body == wheel.metadata
        assert server.count_whole(wheel.filename) == 0
        assert _json_files(cache, "twice")[wheel.filename]["core-metadata"] == {"sha256": wheel.metadata_sha256}

        assert cache.get(f"/pypi/files/twice/{wheel.filename}").body == wheel.data
        _wait_for(lambda: "core-metadata" not in _json_files(cache, "twice")[wheel.filename])
        assert "data-core-metadata" not in cache.get("/pypi/simple/twice/").body.decode()
        assert cache.get(metadata_url).status == 404
        assert not (cache.data_dir / "pypi" / "files" / "twice" / f"{wheel.filename}.metadata").exists()
    finally:
        bg_loop.run(server.stop())


def test_a_head_or_a_range_on_an_uncached_wheel_does_not_download_it(
    official: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official.index_url])
    dist = _dist(HEAVY2)
    head = cache.get(f"/pypi/files/heavy/{HEAVY2}", method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) == dist.size
    assert head.headers["accept-ranges"] == "bytes"
    tail = cache.get(f"/pypi/files/heavy/{HEAVY2}", {"Range": "bytes=-1000"})
    assert tail.status == 206 and tail.body == dist.data[-1000:]
    assert tail.headers["content-range"] == f"bytes {dist.size - 1000}-{dist.size - 1}/{dist.size}"
    middle = cache.get(f"/pypi/files/heavy/{HEAVY2}", {"Range": "bytes=100-199"})
    assert middle.status == 206 and middle.body == dist.data[100:200]
    time.sleep(0.2)
    assert _whole_downloads(official, HEAVY2) == 0
    assert not (cache.data_dir / "pypi" / "files" / "heavy" / HEAVY2).exists()
    # Several ranges get the whole file, as RFC 9110 allows: fetched once and kept.
    several = cache.get(f"/pypi/files/heavy/{HEAVY2}", {"Range": "bytes=0-9,20-29"})
    assert several.status == 200 and several.body == dist.data


def test_a_head_or_a_range_on_an_uncached_wheel_of_a_mirror_without_sizes_does_not_download_it(
    mirror: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """The HTML mirrors' pages give hashes, no sizes: the size comes from the mirror's own Content-Range."""
    cache = make_cache([mirror.index_url])
    dist = _dist(HEAVY2)
    url, size = f"/pypi/files/heavy/{HEAVY2}", dist.size
    head = cache.get(url, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == size and head.headers["accept-ranges"] == "bytes"
    asked = {
        "bytes=-1000": (size - 1000, size),  # passed upstream as a suffix: the size is in its answer
        "bytes=100-199": (100, 200),
        f"bytes={size - 10}-{size + 100}": (size - 10, size),
        f"bytes={size - 10}-": (size - 10, size),  # an open end: the size is learnt first
    }
    for spec, (first, end) in asked.items():
        part = cache.get(url, {"Range": spec})
        assert part.status == 206 and part.body == dist.data[first:end], spec
        assert part.headers["content-range"] == f"bytes {first}-{end - 1}/{size}", spec
        assert part.headers["accept-ranges"] == "bytes"
    for spec in (f"bytes={size}-{size + 10}", f"bytes={size}-", "bytes=-0"):
        beyond = cache.get(url, {"Range": spec})
        assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{size}", spec
    # The mirror's 416s were answers, not failures: it is still asked.
    assert cache.get(url, {"Range": "bytes=0-9"}).body == dist.data[:10]
    time.sleep(0.2)
    asked_of_mirror = [r for r in mirror.requests if r.path.endswith(f"/{HEAVY2}")]
    assert asked_of_mirror and all(r.method == "GET" and "Range" in r.headers for r in asked_of_mirror)
    assert not [path for path in (cache.data_dir / "pypi" / "files").rglob("*") if path.is_file()]
    # A suffix longer than the file is the whole file: not passed through, but answered from the checked download.
    whole = cache.get(url, {"Range": f"bytes=-{size + 10}"})
    assert whole.status == 206 and whole.body == dist.data
    assert whole.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert _whole_downloads(mirror, HEAVY2) == 1


def test_a_416_from_an_upstream_whose_file_is_not_the_size_its_page_gives_is_a_502(
    official: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official.index_url])
    dist = _dist(HEAVY2)
    assert cache.get("/pypi/simple/heavy/").status == 200  # the page, with the size, is cached
    shorter = build_wheel("heavy", "2.0", requires=["lib>=2"], payload_size=MiB)
    official._by_path[official.file_path(dist)] = shorter  # the same link now leads to a shorter file
    answer = cache.get(f"/pypi/files/heavy/{HEAVY2}", {"Range": f"bytes={dist.size - 10}-"})
    assert answer.status == 502 and b"not the size its page gives" in answer.body


def test_a_head_on_uncached_metadata_gives_its_length_and_the_log_says_it_was_made_here(
    mirror: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="pkgcache")  # before the cache starts: its access log looks once
    cache = make_cache([mirror.index_url])
    metadata = _dist(HEAVY2).metadata or b""
    head = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) == len(metadata)
    assert head.headers["x-pkgcache-cache"] == "miss"
    assert _whole_downloads(mirror, HEAVY2) == 0 and _range_requests(mirror) >= 1  # made by ranges, for the HEAD
    cached = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"cached {HEAVY2}.metadata")]
    assert cached == [f"cached {HEAVY2}.metadata ({len(metadata)} bytes) from made-here:ranges"]
    deadline, written = time.monotonic() + 5, ""
    while "upstream=made-here:ranges" not in written and time.monotonic() < deadline:
        time.sleep(0.05)
        written += capsys.readouterr().err
    assert f"HEAD /pypi/files/heavy/{HEAVY2}.metadata 200 cache=miss" in written
    assert "upstream=made-here:ranges" in written
    again = cache.get(f"/pypi/files/heavy/{HEAVY2}.metadata")
    assert again.body == metadata and again.headers["x-pkgcache-cache"] == "hit"


# A wheel far larger than any range pkgcache asks for, for mirrors that answer a range with all of it as a 206.
HUGE = build_wheel("huge", "1.0", payload_size=32 * MiB)


def _start(bg_loop: BackgroundLoop, server: TunaLikeUpstream | OfficialLikeUpstream) -> None:
    bg_loop.run(server.start())


def test_metadata_reads_only_what_it_asked_of_a_206_claiming_the_whole_wheel(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    server = TunaLikeUpstream([HUGE], strict_ua=False)  # pages without sizes: the first read is a 16 KiB suffix
    server.ranges_as_whole_206 = True
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        answer = cache.get(f"/pypi/files/huge/{HUGE.filename}.metadata")
        assert answer.status == 200 and answer.body == HUGE.metadata
        # Refused from its Content-Range before its body was read: what left is what socket buffers hold.
        assert server.range_bytes_sent < HUGE.size // 2, server.range_bytes_sent
        assert server.count_whole(HUGE.filename) == 1  # the wheel path, from the same mirror: it was not rested
    finally:
        bg_loop.run(server.stop())


def test_a_range_passed_through_gets_what_the_client_asked_whatever_the_206_covers(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    server = OfficialLikeUpstream([HUGE])  # sizes on the page: a client's range is passed through
    server.ranges_as_whole_206 = True
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        url = f"/pypi/files/huge/{HUGE.filename}"
        for first, last in ((0, 9), (100, 199)):
            part = cache.get(url, {"Range": f"bytes={first}-{last}"})
            assert part.status == 206 and part.body == HUGE.data[first : last + 1]
            assert part.headers["content-range"] == f"bytes {first}-{last}/{HUGE.size}"
        assert server.range_bytes_sent < HUGE.size, server.range_bytes_sent
        assert server.files.count_whole(HUGE.filename) == 0
        assert not (cache.data_dir / "pypi" / "files" / "huge" / HUGE.filename).exists()
        for spec in ("²-³", "١-٢"):  # not a range: the whole file, fetched as usual
            whole = cache.get(url, {"Range": f"bytes={spec}".encode()})
            assert whole.status == 200 and whole.body == HUGE.data
    finally:
        bg_loop.run(server.stop())


def _sdist(name: str, metadata_version: str, dynamic: str | None = None) -> Dist:
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", "Version: 1.0", "Requires-Dist: lib"]
    if dynamic:
        lines.append(f"Dynamic: {dynamic}")
    return _sdist_of(name, {"PKG-INFO": ("\n".join(lines) + "\n\n").encode()})


def _sdist_of(name: str, members: dict[str, bytes]) -> Dist:
    base = f"{name}-1.0"
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Dist(project=name, version="1.0", filename=f"{base}.tar.gz", data=raw.getvalue())


@pytest.mark.parametrize(
    ("metadata_version", "dynamic", "advertised"),
    [("2.2", None, True), ("2.1", None, False), ("2.2", "Requires-Dist", False)],
)
def test_an_sdists_metadata_is_advertised_only_when_its_pkg_info_is_reliable(
    metadata_version: str,
    dynamic: str | None,
    advertised: bool,
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
) -> None:
    sdist = _sdist("plain", metadata_version, dynamic)
    upstream = OfficialLikeUpstream([sdist])
    upstream.serves_metadata = False
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url])
        json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
        page = json.loads(cache.get("/pypi/simple/plain/", json_accept).body)
        assert "core-metadata" not in page["files"][0]  # nothing is promised before the sdist is read
        assert cache.get(f"/pypi/files/plain/{sdist.filename}").status == 200
        page = json.loads(cache.get("/pypi/simple/plain/", json_accept).body)
        assert ("core-metadata" in page["files"][0]) is advertised
        metadata = cache.get(f"/pypi/files/plain/{sdist.filename}.metadata")
        assert metadata.status == (200 if advertised else 404)
        if advertised:
            assert metadata.body.startswith(b"Metadata-Version: 2.2")
    finally:
        bg_loop.run(upstream.stop())


def test_an_sdist_without_pkg_info_is_served_and_logs_no_error(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], caplog: pytest.LogCaptureFixture
) -> None:
    # A repository's archive: a setup.py, no PKG-INFO. Nothing to advertise, and nothing went wrong.
    sdist = _sdist_of("plain", {"setup.py": b"from setuptools import setup\nsetup(name='plain', version='1.0')\n"})
    upstream = OfficialLikeUpstream([sdist])
    upstream.serves_metadata = False
    bg_loop.run(upstream.start())
    try:
        caplog.set_level(logging.DEBUG, logger="pkgcache")
        cache = make_cache([upstream.index_url])
        answer = cache.get(f"/pypi/files/plain/{sdist.filename}")
        assert answer.status == 200 and answer.body == sdist.data
        cache.wait_for_downloads_to_end()

        def problems() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

        assert problems() == []
        _wait_for(lambda: any("no metadata recorded for plain-1.0.tar.gz" in r.getMessage() for r in caplog.records))
        assert problems() == []
        assert cache.get(f"/pypi/files/plain/{sdist.filename}.metadata").status == 404
    finally:
        bg_loop.run(upstream.stop())


def _advertises_metadata(cache: RunningCache, project: str) -> bool:
    page = json.loads(cache.get(f"/pypi/simple/{project}/", {"Accept": "application/vnd.pypi.simple.v1+json"}).body)
    return "core-metadata" in page["files"][0]


def test_an_sdists_client_gets_its_last_byte_while_its_pkg_info_is_still_being_read(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ordering, not timing: the read is blocked until the test lets it go, and the client must be done before.
    sdist = _sdist("plain", "2.2")
    reading, release = threading.Event(), threading.Event()
    read_pkg_info = core_metadata.pkg_info_from_sdist_file

    def blocked(path: Path | str, filename: str | None = None) -> bytes:
        reading.set()
        release.wait(30)
        return read_pkg_info(path, filename)

    monkeypatch.setattr(core_metadata, "pkg_info_from_sdist_file", blocked)
    monkeypatch.setattr(core_metadata, "METADATA_READ_WAIT", 0.05, raising=False)
    upstream = OfficialLikeUpstream([sdist])
    upstream.serves_metadata = False
    bg_loop.run(upstream.start())
    unblock_anyway = threading.Timer(10, release.set)  # a client held behind the read is let go, late
    unblock_anyway.start()
    try:
        cache = make_cache([upstream.index_url])
        answer = cache.get(f"/pypi/files/plain/{sdist.filename}")
        held_until_released = release.is_set()
        assert answer.status == 200 and answer.body == sdist.data
        assert reading.is_set() and not held_until_released
        assert not _advertises_metadata(cache, "plain")  # nothing promised before it is read...
        release.set()
        _wait_for(lambda: _advertises_metadata(cache, "plain"))  # ...and its hash once it is
        metadata = cache.get(f"/pypi/files/plain/{sdist.filename}.metadata")
        assert metadata.status == 200 and metadata.body.startswith(b"Metadata-Version: 2.2")
    finally:
        release.set()
        unblock_anyway.cancel()
        bg_loop.run(upstream.stop())


def _metadata_reads_pending(bg_loop: BackgroundLoop) -> int:
    async def pending() -> int:
        checks = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__.endswith("._check_logged")]
        return sum(not task.done() for task in checks)

    return bg_loop.run(pending())


@pytest.fixture
def blocked_pkg_info_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reading, release): an sdist's PKG-INFO read is held until `release`, its clients not waiting for it."""
    reading, release = threading.Event(), threading.Event()
    read_pkg_info = core_metadata.pkg_info_from_sdist_file

    def blocked(path: Path | str, filename: str | None = None) -> bytes:
        reading.set()
        release.wait(30)
        return read_pkg_info(path, filename)

    monkeypatch.setattr(core_metadata, "pkg_info_from_sdist_file", blocked)
    monkeypatch.setattr(core_metadata, "METADATA_READ_WAIT", 0.05, raising=False)
    yield reading, release
    release.set()


def test_a_metadata_read_still_going_on_when_the_service_stops_is_let_end_and_kept_whole(
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
    blocked_pkg_info_read: tuple[threading.Event, threading.Event],
) -> None:
    reading, release = blocked_pkg_info_read
    sdist = _sdist("plain", "2.2")
    upstream = OfficialLikeUpstream([sdist])
    upstream.serves_metadata = False
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url])
        assert cache.get(f"/pypi/files/plain/{sdist.filename}").status == 200
        assert reading.is_set() and _metadata_reads_pending(bg_loop) == 1
        let_go = threading.Timer(0.3, release.set)  # within the stop's grace
        let_go.start()
        cache.stop()
        let_go.cancel()
        assert _metadata_reads_pending(bg_loop) == 0  # not left running on after the service
        (kept,) = cache.data_dir.rglob("*.metadata")
        assert kept.read_bytes().startswith(b"Metadata-Version: 2.2") and kept.name == f"{sdist.filename}.metadata"
        (records,) = cache.data_dir.rglob("metadata.json")
        assert sdist.filename in json.loads(records.read_text())
        assert list((cache.data_dir / "tmp").iterdir()) == []
    finally:
        bg_loop.run(upstream.stop())


def test_a_metadata_read_past_the_stops_grace_is_cancelled_and_writes_nothing(
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
    blocked_pkg_info_read: tuple[threading.Event, threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reading, release = blocked_pkg_info_read
    monkeypatch.setattr(core_metadata, "METADATA_STOP_GRACE", 0.1, raising=False)
    sdist = _sdist("plain", "2.2")
    upstream = OfficialLikeUpstream([sdist])
    upstream.serves_metadata = False
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url])
        assert cache.get(f"/pypi/files/plain/{sdist.filename}").status == 200
        assert reading.is_set()
        cache.stop()
        assert _metadata_reads_pending(bg_loop) == 0  # cancelled, and waited for
        release.set()  # the read's thread goes on to its end: nothing is made of what it read
        time.sleep(0.3)
        assert list(cache.data_dir.rglob("*.metadata")) == []
        assert list((cache.data_dir / "tmp").iterdir()) == []
    finally:
        bg_loop.run(upstream.stop())


def _hostile_sdist(name: str, *parts: tuple[bytes, int]) -> Dist:
    """An sdist of `parts` (bytes, times repeated) before a reliable PKG-INFO, compressed as it is made."""
    pkg_info = f"Metadata-Version: 2.2\nName: {name}\nVersion: 1.0\n\n".encode()
    header = _tar_header(f"{name}-1.0/PKG-INFO", len(pkg_info), tarfile.REGTYPE)
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    packed = [packer.compress(data) for data, times in parts for _ in range(times)]
    packed += [packer.compress(header + pkg_info + bytes(-len(pkg_info) % 512) + bytes(1024)), packer.flush()]
    return Dist(project=name, version="1.0", filename=f"{name}-1.0.tar.gz", data=b"".join(packed))


def _tar_header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


@pytest.mark.parametrize("kind", ["long name of 200 MB", "members past the bound"])
def test_a_hostile_sdist_is_served_whole_and_its_metadata_given_up_on_quietly(
    kind: str,
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if kind == "members past the bound":
        monkeypatch.setattr(sdist_metadata, "MAX_MEMBERS", 1000, raising=False)
        sdist = _hostile_sdist("bomb", (_tar_header("bomb-1.0/x", 0, tarfile.REGTYPE) * 1000, 3))
    else:  # a GNU long name claiming 200 MB of zeros, which tarfile read whole
        sdist = _hostile_sdist("bomb", (_tar_header("././@LongLink", 200 * MiB, b"L"), 1), (bytes(MiB), 200))
    assert len(sdist.data) < 1 * MiB
    upstream = OfficialLikeUpstream([sdist])
    upstream.serves_metadata = False
    bg_loop.run(upstream.start())
    try:
        caplog.set_level(logging.DEBUG, logger="pkgcache")
        cache = make_cache([upstream.index_url])
        answer = cache.get(f"/pypi/files/bomb/{sdist.filename}")
        assert answer.status == 200 and answer.body == sdist.data
        _wait_for(lambda: any("no metadata recorded for bomb-1.0.tar.gz" in r.getMessage() for r in caplog.records))
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert not _advertises_metadata(cache, "bomb")
        assert cache.get(f"/pypi/files/bomb/{sdist.filename}.metadata").status == 404
    finally:
        bg_loop.run(upstream.stop())


def _wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_provenance_is_served_through_pkgcache(
    official: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    official.page_extras["heavy"] = PageExtras(provenance=True)
    cache = make_cache([official.index_url])
    assert cache.get("/pypi/simple/heavy/").status == 200
    answer = cache.get(f"/pypi/files/heavy/{HEAVY2}.provenance")
    assert answer.status == 200 and json.loads(answer.body)
    assert official.count("/provenance") == 1


def _dist(filename: str) -> Dist:
    return next(dist for dist in resolution_dists() if dist.filename == filename)


def test_provenance_that_is_not_json_is_refused_and_not_kept(
    official: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    official.page_extras["heavy"] = PageExtras(provenance=True)
    official.garbage[HEAVY2 + ".provenance"] = "html-error"  # 200, text/html: a block page
    # The mirror is rested for it (no rest here, so that the mended mirror is asked again at once).
    cache = make_cache([official.index_url], upstream={"cooldown": 0})
    assert cache.get("/pypi/simple/heavy/").status == 200
    refused = cache.get(f"/pypi/files/heavy/{HEAVY2}.provenance")
    assert refused.status == 502 and b"<html" not in refused.body.lower()
    assert not (cache.data_dir / "pypi" / "files" / "heavy" / f"{HEAVY2}.provenance").exists()
    del official.garbage[HEAVY2 + ".provenance"]  # the mirror mended: asked again, and its answer kept
    answer = cache.get(f"/pypi/files/heavy/{HEAVY2}.provenance")
    assert answer.status == 200 and json.loads(answer.body)["_file"] == HEAVY2
    assert official.count("/provenance") == 2


# ---- a hostile central directory does not hold the event loop --------------------------------------------------


async def _loop_lateness(stop: asyncio.Event, lateness: list[float]) -> None:
    """How late, each time, a task that sleeps 10 ms wakes, until `stop`."""
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(0.01)
        lateness.append(time.monotonic() - started - 0.01)


def test_a_hostile_central_directory_is_looked_through_off_the_event_loop(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    # 350,000 empty entries after METADATA's: a 16 MiB central directory, read by ranges and looked through whole.
    # It takes 0.7 s of CPU (1.7 s before entries outside a .dist-info were made no Member); on the event loop, it
    # held every client of the service that long. The service and the mirror share the loop a probe measures.
    metadata = b"Metadata-Version: 2.1\nName: many\nVersion: 1.0\n\n"
    members = [zips.ZipMember("many-1.0.dist-info/METADATA", metadata, zips.STORED)]
    members += [zips.ZipMember(chr(ord("a") + index % 26), b"", zips.STORED) for index in range(350_000)]
    wheel = Dist("many", "1.0", "many-1.0-py3-none-any.whl", zips.build_zip(members), metadata=metadata)
    server = TunaLikeUpstream([wheel], strict_ua=False)
    _start(bg_loop, server)
    try:
        cache = make_cache([server.index_url])
        assert cache.get("/pypi/simple/many/").status == 200
        stop, lateness = asyncio.Event(), list[float]()
        probe = asyncio.run_coroutine_threadsafe(_loop_lateness(stop, lateness), bg_loop.loop)
        health: list[float] = []
        reading = threading.Event()

        def poll_health() -> None:
            while reading.is_set():
                started = time.monotonic()
                assert cache.get("/-/health").status == 200
                health.append(time.monotonic() - started)
                time.sleep(0.01)

        reading.set()
        poller = threading.Thread(target=poll_health)
        poller.start()
        started = time.monotonic()
        answer = cache.get(f"/pypi/files/many/{wheel.filename}.metadata")
        took = time.monotonic() - started
        reading.clear()
        poller.join(10)
        bg_loop.loop.call_soon_threadsafe(stop.set)
        probe.result(10)
        assert answer.status == 200 and answer.body == metadata
        assert server.count_whole(wheel.filename) == 0 and _range_requests(server) == 3  # tail, directory, METADATA
        # The loop went on while the directory was looked through: never late by more than a fraction of the read.
        assert max(lateness) < took / 3, (max(lateness), took)
        assert max(health) < took / 3, (max(health), took)
    finally:
        bg_loop.run(server.stop())
