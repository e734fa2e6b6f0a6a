"""The local PyPI upstream: real wheels downloaded once with pip, plus synthetic projects for the scenarios.

Layout under bench/.work/upstream/ (served as-is by nginx):
  simple/index.html, simple/<project>/index.html   PEP 503 pages, links relative to the page
  packages/<file>, packages/<file>.metadata         real wheels (and their PEP 658 metadata), cold-miss files
  slow/<file>                                       herd files; the upstream sends these at a limited rate
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from bench.common import BENCH_DIR, MAIN_PYTHON, WORK, clean_env, log
from bench.registry import registry_index_url
from bench.wheels import (
    IndexedFile,
    extract_metadata,
    project_page_html,
    root_page_html,
    sha256_of,
    write_synthetic_wheel,
)

UPSTREAM_ROOT = WORK / "upstream"
DOWNLOADS = WORK / "downloads"
REQUIREMENTS = BENCH_DIR / "requirements.txt"
PAGE_PROJECT = "bench-page"
HERD_PROJECT = "bench-herd"
COLD_SIZE = 20 * 1000 * 1000
HERD_SIZE = 50 * 1000 * 1000
MAX_RUNS = 5  # cold and herd files exist for at most this many repetitions
PAGE_VERSIONS = 55  # ~33 KB of HTML, the size the nginx figure was measured on
STAMP_VERSION = "pypi-4"


@dataclass(frozen=True)
class PypiLayout:
    root: Path = UPSTREAM_ROOT

    @property
    def simple(self) -> Path:
        return self.root / "simple"

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def slow(self) -> Path:
        return self.root / "slow"


def cold_project(run: int) -> str:
    """A project of its own per repetition, so that its page is cold too."""
    return f"bench-cold{run}"


def cold_file(run: int) -> str:
    return f"bench_cold{run}-1.0.0-py3-none-any.whl"


def herd_files(run: int) -> tuple[str, str]:
    """The file one client fetches alone, and the file 64 clients fetch at once, in repetition `run`."""
    return f"bench_herd-1.0.{run}-py3-none-any.whl", f"bench_herd-2.0.{run}-py3-none-any.whl"


def prepare_pypi() -> PypiLayout:
    layout = PypiLayout()
    stamp = layout.root / ".pypi-ready"
    want = STAMP_VERSION + ":" + hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        log("pypi upstream already prepared")
        return layout
    for folder in (layout.simple, layout.packages, layout.slow):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    pages: dict[str, list[IndexedFile]] = {}
    _download_real_wheels()
    _add_real_wheels(layout, pages)
    _add_synthetic(layout, pages)
    _write_pages(layout, pages)
    stamp.write_text(want)
    return layout


def _download_real_wheels() -> None:
    """`pip download` the pinned set once; files already there are kept (pip skips them)."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    log(f"downloading the {len(pinned())} pinned wheels with pip (once)")
    command = [
        str(MAIN_PYTHON), "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--index-url", registry_index_url(), "--dest", str(DOWNLOADS), "-r", str(REQUIREMENTS),
    ]  # fmt: skip
    # The command line holds the registry's address: keep it out of logs and error messages.
    result = subprocess.run(command, env=clean_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("pip download of bench/requirements.txt failed; run it by hand to see why")


def pinned() -> list[str]:
    lines = (line.strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _add_real_wheels(layout: PypiLayout, pages: dict[str, list[IndexedFile]]) -> None:
    for wheel in sorted(DOWNLOADS.glob("*.whl")):
        project = str(parse_wheel_filename(wheel.name)[0])
        target = layout.packages / wheel.name
        shutil.copyfile(wheel, target)
        meta_sha, requires_python = extract_metadata(target, layout.packages / (wheel.name + ".metadata"))
        entry = IndexedFile(wheel.name, f"../../packages/{wheel.name}", sha256_of(target), requires_python, meta_sha)
        pages.setdefault(project, []).append(entry)


def _add_synthetic(layout: PypiLayout, pages: dict[str, list[IndexedFile]]) -> None:
    log("writing synthetic wheels for the cold-miss and herd scenarios")
    for run in range(MAX_RUNS):
        name = cold_file(run)
        write_synthetic_wheel(layout.packages / name, cold_project(run), "1.0.0", COLD_SIZE)
        pages[cold_project(run)] = [_synthetic_entry(layout.packages / name, "packages")]
        for name in herd_files(run):
            version = name.split("-")[1]
            write_synthetic_wheel(layout.slow / name, HERD_PROJECT, version, HERD_SIZE)
            pages.setdefault(HERD_PROJECT, []).append(_synthetic_entry(layout.slow / name, "slow"))
    pages[PAGE_PROJECT] = _page_project_entries()


def _synthetic_entry(path: Path, folder: str) -> IndexedFile:
    return IndexedFile(path.name, f"../../{folder}/{path.name}", sha256_of(path), ">=3.8")


def _page_project_entries() -> list[IndexedFile]:
    """A long release history of files that are never downloaded: only the page is benchmarked."""
    rng = random.Random(5)
    entries: list[IndexedFile] = []
    for minor in range(PAGE_VERSIONS):
        version = f"1.{minor}.0"
        for filename in (f"bench_page-{version}-py3-none-any.whl", f"bench_page-{version}.tar.gz"):
            digest = f"{rng.getrandbits(256):064x}"
            meta = f"{rng.getrandbits(256):064x}" if filename.endswith(".whl") else None
            entries.append(IndexedFile(filename, f"../../packages/{filename}", digest, ">=3.8", meta))
    return entries


def _write_pages(layout: PypiLayout, pages: dict[str, list[IndexedFile]]) -> None:
    names = sorted(str(canonicalize_name(p)) for p in pages)
    (layout.simple / "index.html").write_text(root_page_html(names))
    for project, files in pages.items():
        folder = layout.simple / str(canonicalize_name(project))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(project_page_html(str(canonicalize_name(project)), files))
    log(f"pypi upstream ready: {len(pages)} projects")


def big_wheel() -> tuple[str, str]:
    """The ~25 MB real wheel of the warm-file scenario: (project, filename)."""
    found = sorted(UPSTREAM_ROOT.joinpath("packages").glob("duckdb-*.whl"))
    if not found:
        raise RuntimeError("the duckdb wheel is missing from the prepared upstream")
    return "duckdb", found[0].name
