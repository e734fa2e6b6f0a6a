"""A full disk: pkgcache's data directory on a small tmpfs (root only), filled to the last byte.

What must hold: a miss answers 507 with a message saying so, before any body (pages, files, conda repodata); what
is cached keeps being served; once space is freed, misses work again without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgcache.conda import generated_shards
from tests.cache_service import RunningCache, start_cache
from tests.fakes.dists import build_wheel
from tests.fakes.faulty import Fault, FaultyCondaMirror, FaultyPypiUpstream, Kind, closed_port_url
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.faults.harness import (
    CONDA_CHANNELS,
    JSON_ACCEPT,
    Checks,
    FaultChannels,
    Received,
    conda_checks_out,
    conda_document,
    expected_page,
    fault_dists,
    fetch,
    page_checks_out,
    settings_for,
)
from tests.support import BackgroundLoop, run_pip_install

TMPFS_SIZE = "4m"
ALPHA_OLD = "alpha-1.0-py3-none-any.whl"
ALPHA = "alpha-2.0-py3-none-any.whl"


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("disk-full test skipped: mounting a small tmpfs as the data directory needs root")
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"disk-full test skipped: mounting a tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)  # still busy: detach it


def fill(path: Path) -> None:
    """Write until the disk refuses another byte."""
    with path.open("wb", buffering=0) as handle:
        for size in (1 << 20, 64 << 10, 4 << 10, 1):
            block = b"\0" * size
            while True:
                try:
                    handle.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break


def _sha(name: str) -> str:
    return next(d.sha256 for d in fault_dists() if d.filename == name)


def test_a_full_disk_answers_507_and_recovers(
    bg_loop: BackgroundLoop, tmp_path: Path, fault_channels: FaultChannels
) -> None:
    pypi = FaultyPypiUpstream(fault_dists())
    conda = FaultyCondaMirror({"pkgs/main": fault_channels.main, "conda-forge": fault_channels.forge})
    bg_loop.run(pypi.start())
    bg_loop.run(conda.start())
    try:
        with small_tmpfs(tmp_path / "data") as data:
            conda_section = {"upstreams": [conda.upstream_config("mirror")], "channels": CONDA_CHANNELS}
            cache = start_cache(bg_loop, settings_for(data, [pypi.index_url], conda=conda_section))
            try:
                _check_full_then_freed(cache, data, fault_channels)
            finally:
                _stop_or_say_why(cache)
    finally:
        bg_loop.run(pypi.stop())
        bg_loop.run(conda.stop())


def _check_full_then_freed(cache: RunningCache, data: Path, channels: FaultChannels) -> None:
    checks = Checks()
    dists = fault_dists()
    repodata = f"/conda/pkgs/main/{channels.subdir}/repodata.json"
    truth = conda_document("repodata.json", (channels.main / channels.subdir / "repodata.json").read_bytes())

    alpha_page = fetch(f"{cache.url}/pypi/simple/alpha/", JSON_ACCEPT)
    assert page_checks_out(alpha_page.body, expected_page(dists, "alpha")), alpha_page.summary()
    assert hashlib.sha256(fetch(f"{cache.url}/pypi/files/alpha/{ALPHA}").body).hexdigest() == _sha(ALPHA)

    filler = data / "filler"
    fill(filler)

    page = fetch(f"{cache.url}/pypi/simple/beta/", JSON_ACCEPT)
    # A page fetched whole may be answered without being kept: the right page or a 507, never a 500.
    if not (page.status == 200 and page_checks_out(page.body, expected_page(dists, "beta"))):
        _expect_507(checks, "a page miss (or the right page, not kept)", page)
    file = fetch(f"{cache.url}/pypi/files/alpha/{ALPHA_OLD}")
    _expect_507(checks, "a file miss", file)
    index = fetch(cache.url + repodata)
    checks.expect(
        index.status != 200 or conda_checks_out("repodata.json", index.body, truth),
        "a repodata.json miss is never a 200 of anything but the repodata",
        index.summary(),
    )
    _expect_507(checks, "a repodata.json miss", index)

    cached = fetch(f"{cache.url}/pypi/files/alpha/{ALPHA}")
    checks.expect(
        cached.status == 200 and hashlib.sha256(cached.body).hexdigest() == _sha(ALPHA),
        "a cached file is still served",
        cached.summary(),
    )
    cached_page = fetch(f"{cache.url}/pypi/simple/alpha/", JSON_ACCEPT)
    checks.expect(
        page_checks_out(cached_page.body, expected_page(dists, "alpha")),
        "a cached page is still served",
        cached_page.summary(),
    )

    filler.unlink()
    page = fetch(f"{cache.url}/pypi/simple/beta/", JSON_ACCEPT)
    checks.expect(page_checks_out(page.body, expected_page(dists, "beta")), "space freed: pages again", page.summary())
    file = fetch(f"{cache.url}/pypi/files/alpha/{ALPHA_OLD}")
    checks.expect(hashlib.sha256(file.body).hexdigest() == _sha(ALPHA_OLD), "space freed: files again", file.summary())
    index = fetch(cache.url + repodata)
    checks.expect(conda_checks_out("repodata.json", index.body, truth), "space freed: repodata again", index.summary())
    leftovers = [p.name for p in (data / "tmp").iterdir()] if (data / "tmp").exists() else []
    checks.expect(not leftovers, "nothing left in tmp/", leftovers)
    status = json.loads(fetch(f"{cache.url}/-/status").body)
    checks.expect(status["downloads_in_flight"] == 0, "no download left in flight", status["downloads_in_flight"])
    checks.verdict()


def _stop_or_say_why(cache: RunningCache) -> None:
    try:
        cache.stop()
    except TimeoutError:
        pytest.fail("pkgcache did not stop within a minute after the disk was full (a download stuck?)", pytrace=False)


def _expect_507(checks: Checks, what: str, answer: Received) -> None:
    text = answer.body.decode(errors="replace").lower()
    checks.expect(
        answer.status == 507 and ("disk" in text or "space" in text),
        f"{what}: 507 with a message about the full disk, before any body",
        answer.summary(),
    )


def test_metadata_made_while_the_disk_is_full_is_served_and_not_kept(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    """A wheel is cached but its .metadata is not (the disk filled while the wheel came, so neither the file nor its
    record was kept). The disk still full, the metadata is made from the wheel and served from memory, not a 507 that
    stops pip; nothing of it is kept, and once space is freed the next request keeps it."""
    pypi = FaultyPypiUpstream(fault_dists())
    bg_loop.run(pypi.start())
    try:
        with small_tmpfs(tmp_path / "data") as data:
            cache = start_cache(bg_loop, settings_for(data, [pypi.index_url], conda={"enabled": False}))
            try:
                _check_metadata_not_kept(cache, data, tmp_path)
            finally:
                _stop_or_say_why(cache)
    finally:
        bg_loop.run(pypi.stop())


def _check_metadata_not_kept(cache: RunningCache, data: Path, tmp_path: Path) -> None:
    checks = Checks()
    url = f"{cache.url}/pypi/files/alpha/{ALPHA_OLD}.metadata"
    wheel = fetch(f"{cache.url}/pypi/files/alpha/{ALPHA_OLD}")
    assert hashlib.sha256(wheel.body).hexdigest() == _sha(ALPHA_OLD), wheel.summary()
    truth = zipfile.ZipFile(io.BytesIO(wheel.body)).read("alpha-1.0.dist-info/METADATA")
    kept = data / "pypi" / "files" / "alpha" / f"{ALPHA_OLD}.metadata"
    records = data / "pypi" / "simple" / "alpha" / "metadata.json"
    kept.unlink()  # as when the disk filled while the wheel came: "could not keep the metadata of ..."
    records.unlink()
    fill(data / "filler")

    made = fetch(url)
    checks.expect(made.status == 200 and made.body == truth, "200 with the wheel's METADATA", made.summary())
    head = _head(url)
    checks.expect(head == (200, str(len(truth))), "a HEAD gives its length", head)
    checks.expect(not kept.exists() and not records.exists(), "neither the metadata nor a record of it is kept")
    leftovers = [p.name for p in (data / "tmp").iterdir()] if (data / "tmp").exists() else []
    checks.expect(not leftovers, "nothing left in tmp/", leftovers)
    installed = run_pip_install(cache.index_url, tmp_path / "target", "alpha==1.0")
    checks.expect(installed.returncode == 0, "pip installs the cached wheel", installed.stderr[-2000:])

    (data / "filler").unlink()
    again = fetch(url)
    checks.expect(again.status == 200 and again.body == truth, "space freed: served again", again.summary())
    checks.expect(
        kept.is_file() and kept.read_bytes() == truth and ALPHA_OLD in json.loads(records.read_text()),
        "space freed: the next request keeps it, and records it",
        kept.exists(),
    )
    checks.verdict()


@pytest.mark.parametrize("source", ["ranges", "upstream"])
def test_metadata_read_from_the_upstream_while_the_disk_is_full_is_served_and_not_kept(
    bg_loop: BackgroundLoop, tmp_path: Path, source: str
) -> None:
    """Metadata read by ranges of a wheel that is not cached, or the upstream's own .metadata, is served with the
    disk full (it is whole in memory), and neither kept nor recorded; the wheel is not fetched for it."""
    heavy = build_wheel("heavy", "2.0", payload_size=1 << 20)  # big enough to be read by ranges, not whole
    server = TunaLikeUpstream([heavy], strict_ua=False) if source == "ranges" else OfficialLikeUpstream([heavy])
    bg_loop.run(server.start())
    try:
        with small_tmpfs(tmp_path / "data") as data:
            cache = start_cache(bg_loop, settings_for(data, [server.index_url], conda={"enabled": False}))
            try:
                assert fetch(f"{cache.url}/pypi/simple/heavy/").status == 200
                fill(data / "filler")
                checks = Checks()
                made = fetch(f"{cache.url}/pypi/files/heavy/{heavy.filename}.metadata")
                checks.expect(
                    made.status == 200 and made.body == heavy.metadata, "200 with the METADATA", made.summary()
                )
                kept = [p.name for p in (data / "pypi" / "files").rglob("*")]
                checks.expect(not kept, "nothing kept of the distribution or its metadata", kept)
                records = data / "pypi" / "simple" / "heavy" / "metadata.json"
                checks.expect(not records.exists(), "no record of metadata not kept")
                leftovers = [p.name for p in (data / "tmp").iterdir()] if (data / "tmp").exists() else []
                checks.expect(not leftovers, "nothing left in tmp/", leftovers)
                files = getattr(server, "files", server)
                checks.expect(files.count_whole(heavy.filename) == 0, "the wheel not fetched whole for it")
                checks.verdict()
            finally:
                _stop_or_say_why(cache)
    finally:
        bg_loop.run(server.stop())


def _head(url: str) -> tuple[int, str | None]:
    """The status and Content-Length of a HEAD."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as answer:
            return answer.status, answer.headers["Content-Length"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Length"]


MADE_HERE = ("repodata.json.zst", "repodata_shards.msgpack.zst")


@pytest.mark.parametrize("builder", ["in the service", "in its own process"])
def test_a_full_disk_while_making_index_files_here_answers_507(
    bg_loop: BackgroundLoop,
    tmp_path: Path,
    fault_channels: FaultChannels,
    monkeypatch: pytest.MonkeyPatch,
    builder: str,
) -> None:
    if builder == "in its own process":  # as a big subdir's shards are made
        monkeypatch.setattr(generated_shards, "IN_PROCESS_MAX_BYTES", -1)
    conda = FaultyCondaMirror({"pkgs/main": fault_channels.main, "conda-forge": fault_channels.forge})
    subdir = f"/pkgs/main/{fault_channels.subdir}"
    for name in MADE_HERE:  # the mirror has none: pkgcache makes them from the repodata.json
        conda.plan.set(f"{subdir}/{name}", Fault(Kind.STATUS, status=404))
    bg_loop.run(conda.start())
    try:
        with small_tmpfs(tmp_path / "data") as data:
            conda_section = {"upstreams": [conda.upstream_config("mirror")], "channels": CONDA_CHANNELS}
            cache = start_cache(bg_loop, settings_for(data, [closed_port_url("/simple/")], conda=conda_section))
            try:
                repodata = fetch(f"{cache.url}/conda{subdir}/repodata.json")
                assert repodata.status == 200, repodata.summary()
                fill(data / "filler")
                checks = Checks()
                for name in MADE_HERE:
                    _expect_507(checks, f"{name} made here", fetch(f"{cache.url}/conda{subdir}/{name}"))
                for retry in range(3):  # a client retrying: each retry's build fails again
                    _expect_507(
                        checks, f"shard index retry {retry}", fetch(f"{cache.url}/conda{subdir}/{MADE_HERE[1]}")
                    )
                leftovers = [p.name for p in (data / "tmp").iterdir()] if (data / "tmp").exists() else []
                checks.expect(not leftovers, "nothing left in tmp/", leftovers)
                packs = [p.name for p in data.rglob("shard-packs/*")]
                checks.expect(not packs, "no shard pack left by the failed builds", packs)
                checks.verdict()
            finally:
                _stop_or_say_why(cache)
    finally:
        bg_loop.run(conda.stop())


BIG = "bigpkg-1.0-py3-none-any.whl"  # 4.0 MiB: more than the whole tmpfs holds


def test_a_file_the_disk_cannot_hold_is_507_before_its_headers(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    """The index gives the file's size, so its space is taken before its first byte: a disk too small for it
    answers 507, where the client used to get a 200 and then a body cut where the disk filled."""
    pypi = FaultyPypiUpstream(fault_dists())
    bg_loop.run(pypi.start())
    try:
        with small_tmpfs(tmp_path / "data") as data:
            cache = start_cache(bg_loop, settings_for(data, [pypi.index_url], conda={"enabled": False}))
            try:
                checks = Checks()
                _expect_507(checks, "a file bigger than the free space", fetch(f"{cache.url}/pypi/files/bigpkg/{BIG}"))
                leftovers = [p.name for p in (data / "tmp").iterdir()] if (data / "tmp").exists() else []
                checks.expect(not leftovers, "nothing left in tmp/", leftovers)
                small = fetch(f"{cache.url}/pypi/files/alpha/{ALPHA}")
                checks.expect(
                    small.status == 200 and hashlib.sha256(small.body).hexdigest() == _sha(ALPHA),
                    "a file that fits is still fetched, whole",
                    small.summary(),
                )
                checks.verdict()
            finally:
                _stop_or_say_why(cache)
    finally:
        bg_loop.run(pypi.stop())


def test_a_file_the_index_gives_no_size_of_takes_its_space_by_the_answers_length(
    bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    """HTML-only mirrors give no file sizes: the space is then taken by the upstream's Content-Length before the
    first byte, so a file the disk cannot hold is a 507 before any header, not a 200 cut where the disk filled. A
    mirror declaring more than the disk holds does not stop another from giving the file; and a file that fits is
    committed at its own size (the space taken must not become the file's length)."""
    liar = FaultyPypiUpstream(fault_dists(), json_pages=False)
    liar.plan.set(f"/{ALPHA_OLD}", Fault(Kind.HUGE_LENGTH))
    honest = FaultyPypiUpstream(fault_dists(), json_pages=False)
    bg_loop.run(liar.start())
    bg_loop.run(honest.start())
    try:
        with small_tmpfs(tmp_path / "data") as data:
            pypi = [{"name": "liar", "url": liar.index_url}, {"name": "honest", "url": honest.index_url}]
            cache = start_cache(bg_loop, settings_for(data, pypi, conda={"enabled": False}))
            try:
                _check_sizeless_files(cache, data, tmp_path)
            finally:
                _stop_or_say_why(cache)
    finally:
        bg_loop.run(liar.stop())
        bg_loop.run(honest.stop())


def _check_sizeless_files(cache: RunningCache, data: Path, tmp_path: Path) -> None:
    checks = Checks()
    files = data / "pypi" / "files"
    big = fetch(f"{cache.url}/pypi/files/bigpkg/{BIG}")
    _expect_507(checks, "a file bigger than the free space, its size in no index", big)
    checks.expect(not (files / "bigpkg" / BIG).exists(), "the file that did not fit is not in the cache", big.summary())
    leftovers = [p.name for p in (data / "tmp").iterdir()] if (data / "tmp").exists() else []
    checks.expect(not leftovers, "nothing left in tmp/", leftovers)

    installed = run_pip_install(cache.index_url, tmp_path / "target", "alpha==1.0")
    checks.expect(installed.returncode == 0, "pip installs a file that fits", installed.stderr[-2000:])
    cached = files / "alpha" / ALPHA_OLD
    dist = next(d for d in fault_dists() if d.filename == ALPHA_OLD)
    checks.expect(
        cached.is_file()
        and cached.stat().st_size == dist.size
        and hashlib.sha256(cached.read_bytes()).hexdigest() == dist.sha256,
        "the file is committed whole, at its own size (not the 1 TiB one mirror declared)",
        cached.stat().st_size if cached.is_file() else "absent",
    )
    checks.verdict()


# A folder of the data directory that cannot be written while tmp/ can (so /-/health says all is well): a file in
# its place, which stops root as it stops anyone (a read-only or foreign folder does not stop root, who runs these).
UNWRITABLE = {
    "a project's files folder": ("pypi/files/alpha", f"/pypi/files/alpha/{ALPHA}"),
    "a conda subdir's folder": ("conda/pkgs/main/{subdir}", "/conda/pkgs/main/{subdir}/app-1.0-h1_0.conda"),
    "a conda subdir's shards folder": (
        "conda/pkgs/main/{subdir}/shards",
        "/conda/pkgs/main/{subdir}/repodata_shards.msgpack.zst",
    ),
    "a conda subdir's shards folder, shards made in their own process": (
        "conda/pkgs/main/{subdir}/shards",
        "/conda/pkgs/main/{subdir}/repodata_shards.msgpack.zst",
    ),
}


@pytest.mark.parametrize("where", list(UNWRITABLE))
def test_a_folder_that_cannot_be_written_answers_a_clear_error(
    bg_loop: BackgroundLoop,
    tmp_path: Path,
    fault_channels: FaultChannels,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """A write refused by one folder of the data directory is answered 500 with a short reason before any body
    (never a 200 cut at its last byte when the file could not be renamed into place), keeps nothing, and is logged
    with the folder and the errno for the operator; once the folder is fixed, the same request is served."""
    folder, url = (part.format(subdir=fault_channels.subdir) for part in UNWRITABLE[where])
    if "own process" in where:  # as a big subdir's shards are made
        monkeypatch.setattr(generated_shards, "IN_PROCESS_MAX_BYTES", -1)
    pypi = FaultyPypiUpstream(fault_dists())
    conda = FaultyCondaMirror({"pkgs/main": fault_channels.main, "conda-forge": fault_channels.forge})
    bg_loop.run(pypi.start())
    bg_loop.run(conda.start())
    data = tmp_path / "data"
    conda_section = {"upstreams": [conda.upstream_config("mirror")], "channels": CONDA_CHANNELS}
    cache = start_cache(bg_loop, settings_for(data, [pypi.index_url], conda=conda_section))
    try:
        blocked = data / folder
        blocked.parent.mkdir(parents=True, exist_ok=True)
        blocked.write_text("a file where a folder should be")
        caplog.clear()
        answer = fetch(cache.url + url)
        checks = Checks()
        text = answer.body.decode(errors="replace")
        checks.expect(
            answer.status == 500 and answer.complete and "could not store" in text and str(data) not in text,
            "500 with a short reason (no server path), before any body",
            answer.summary(),
        )
        # ENOTDIR from the check before a download's first byte, EEXIST from a builder's mkdir.
        said = re.compile(rf"\((ENOTDIR|EEXIST)\) at {re.escape(str(blocked))}$")
        named = [r.getMessage() for r in caplog.records if said.search(r.getMessage())]
        checks.expect(len(named) == 1, "logged once, with the folder and the errno", named)
        leftovers = [p.name for p in (data / "tmp").iterdir()]
        checks.expect(not leftovers, "nothing left in tmp/", leftovers)
        blocked.unlink()
        again = fetch(cache.url + url)
        checks.expect(again.status == 200 and again.complete, "served once the folder is fixed", again.summary())
        checks.verdict()
    finally:
        _stop_or_say_why(cache)
        bg_loop.run(pypi.stop())
        bg_loop.run(conda.stop())
