"""Imports as an air-gap operator makes them: into a running instance with several workers, an older bundle over
newer data, and the offline view of a project whose files the cache does not hold; with real pip and uv."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.cache_service import CacheProcess
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.kit_support import UNREACHABLE_PYPI, pkgcache, write, write_config
from tests.support import http_get, installed_dists, run_pip_install, run_uv_install

NEW_WHEEL = "alpha-2.0-py3-none-any.whl"
JSON_PAGE = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _bundle(tmp_path: Path, upstream: OfficialLikeUpstream, name: str, pins: list[str]) -> Path:
    """A bundle of what these exact wheels (`project==version` of alpha) bring: the page and the wheels."""
    config = write_config(tmp_path, [upstream.index_url])
    dists = sample_dists()
    lines = [f"alpha=={v} --hash=sha256:{find_dist(dists, f'alpha-{v}-py3-none-any.whl').sha256}" for v in pins]
    lock = write(tmp_path, f"{name}.txt", "\n".join(lines) + "\n")
    data = tmp_path / f"outside-{name}"
    seeded = pkgcache("seed", "--config", config, "--data-dir", data, "--no-progress", lock)
    assert seeded.returncode == 0, seeded.stderr
    bundle = tmp_path / f"{name}.tar"
    exported = pkgcache("export", "--data-dir", data, "-o", bundle)
    assert exported.returncode == 0, exported.stderr
    return bundle


@pytest.fixture
def bundles(tmp_path: Path, official_upstream: OfficialLikeUpstream) -> tuple[Path, Path]:
    """(alpha 1.0 alone, alpha 2.0 alone), each with alpha's page."""
    return _bundle(tmp_path, official_upstream, "old", ["1.0"]), _bundle(tmp_path, official_upstream, "new", ["2.0"])


def _drop_from_page(data: Path, prefix: str, fetched_at: float | None = None) -> dict:
    """Alpha's page here without the files named `prefix`...: as a mirror lagging behind wrote it."""
    page_path = data / "pypi/simple/alpha/page.json"
    page = json.loads(page_path.read_text())
    page["page"]["files"] = [f for f in page["page"]["files"] if not f["filename"].startswith(prefix)]
    if fetched_at is not None:
        page["fetched_at"] = fetched_at
    page_path.write_text(json.dumps(page))
    return page


def _offline(data: Path, workers: str) -> CacheProcess:
    return CacheProcess(data, "--workers", workers, "--offline", "--pypi-upstream", UNREACHABLE_PYPI)


def _install(index: str, target: Path, requirement: str) -> None:
    for installer in (run_pip_install, run_uv_install):
        done = installer(index, target / installer.__name__, requirement, extra_args=["--no-deps"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert requirement in installed_dists(target / installer.__name__)


def _listed(url: str) -> set[str]:
    answer = http_get(url + "/pypi/simple/alpha/", JSON_PAGE)
    assert answer.status == 200, answer
    return {f["filename"] for f in json.loads(answer.body)["files"]}


def test_a_bundle_imported_into_a_running_instance_is_served_by_every_worker_at_once(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    old, new = bundles
    inside = tmp_path / "inside"
    assert pkgcache("import", "--data-dir", inside, old).returncode == 0
    _drop_from_page(inside, "alpha-2.0")  # the first bundle's page did not know 2.0 yet
    os.utime(inside / "pypi/simple/alpha/page.json", ns=(0, 0))
    process = _offline(inside, "2")
    try:
        # Every worker holds alpha's page (1.0 alone) and its view in memory.
        for _ in range(20):
            assert NEW_WHEEL not in _listed(process.url)
        imported = pkgcache("import", "--data-dir", inside, new)
        assert imported.returncode == 0, imported.stderr
        # The command returned once each worker said it had acted on this import's mark, not after a guess.
        assert "serves what was imported now" in imported.stderr and "warning" not in imported.stderr
        mark = json.loads((inside / "gate/imported.json").read_text())["id"]
        workers = json.loads(http_get(process.url + "/-/status").body)["workers"]
        assert [row["import_mark"] for row in workers] == [mark, mark]
        # At once, on many new connections (the kernel spreads them over both workers).
        for _ in range(20):
            assert NEW_WHEEL in _listed(process.url)
            metadata = http_get(f"{process.url}/pypi/files/alpha/{NEW_WHEEL}.metadata")
            assert metadata.status == 200, metadata
        _install(f"{process.url}/pypi/simple/", tmp_path / "clients", "alpha==2.0")
    finally:
        process.terminate()


def test_an_older_bundle_imported_over_newer_data_leaves_its_packages_installable(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    old, new = bundles
    inside = tmp_path / "inside"
    assert pkgcache("import", "--data-dir", inside, old).returncode == 0
    # The page here is newer (fetched later, its file written later) and does not list alpha 2.0: a mirror lagging.
    page = _drop_from_page(inside, "alpha-2.0", fetched_at=time.time() + 3600)
    page_path = inside / "pypi/simple/alpha/page.json"

    imported = pkgcache("import", "--data-dir", inside, new)

    assert imported.returncode == 0, imported.stderr
    assert "WARNING" not in imported.stderr
    merged = json.loads(page_path.read_text())
    assert merged["fetched_at"] == page["fetched_at"]  # the newer page is the base
    assert NEW_WHEEL in {f["filename"] for f in merged["page"]["files"]}
    records = json.loads((inside / "pypi/simple/alpha/metadata.json").read_text())
    assert {"alpha-1.0-py3-none-any.whl", NEW_WHEEL} <= set(records)
    process = _offline(inside, "1")
    try:
        _install(f"{process.url}/pypi/simple/", tmp_path / "clients", "alpha==2.0")
    finally:
        process.terminate()


def test_the_offline_page_of_a_project_whose_files_are_not_held_lists_none(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    old, _ = bundles
    inside = tmp_path / "inside"
    assert pkgcache("import", "--data-dir", inside, old).returncode == 0
    (inside / "pypi/files/alpha/alpha-1.0-py3-none-any.whl").unlink()  # its .metadata stays, as export ships it
    process = _offline(inside, "1")
    try:
        assert _listed(process.url) == set()
        index = f"{process.url}/pypi/simple/"
        pip = run_pip_install(index, tmp_path / "pip", "alpha")
        assert pip.returncode != 0 and "No matching distribution found for alpha" in pip.stderr, pip.stderr
        uv = run_uv_install(index, tmp_path / "uv", "alpha")
        assert uv.returncode != 0 and "404" not in uv.stderr, uv.stderr
    finally:
        process.terminate()
