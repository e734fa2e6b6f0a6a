"""What the cache holds, in a few numbers, for the page at / when it serves only that (the offline view); and the
mark an import leaves, so that a running instance's workers drop what they hold in memory about the cache."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# A walk of a large cache takes a while: its numbers are kept this long.
KEEP_SECONDS = 30.0
CONDA_PACKAGE_SUFFIXES = (".conda", ".tar.bz2")


@dataclass(frozen=True)
class Holdings:
    pypi_projects: int = 0
    pypi_files: int = 0
    pypi_bytes: int = 0
    conda_packages: int = 0
    conda_bytes: int = 0


_known: dict[Path, tuple[float, Holdings]] = {}

# Rewritten by every import that changed the cache; each worker's gate watches its stamp (gate/state.py).
IMPORTED_MARK = ("gate", "imported.json")


def mark_imported(root: Path) -> int:
    """Say that an import changed the cache below `root`: a running instance's workers drop their memory of it.

    Returns the mark's id: each worker reports the id of the last mark it acted on (`/-/status`), so the import
    command can wait until every one of them has, instead of for a guessed while."""
    path = root.joinpath(*IMPORTED_MARK)
    path.parent.mkdir(parents=True, exist_ok=True)
    mark = secrets.randbits(52) + 1  # never 0 (no mark seen), and exact as a JSON number in any reader
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    staged.write_text(json.dumps({"at": time.time(), "pid": os.getpid(), "id": mark}))
    os.replace(staged, path)  # a new inode each time: its stamp always changes
    return mark


def read_import_mark(root: Path) -> int:
    """The id of the last import's mark below `root` (blocking); 0 when there is none or it has no id."""
    try:
        content = json.loads(root.joinpath(*IMPORTED_MARK).read_text())
    except (OSError, ValueError):
        return 0
    mark = content.get("id") if isinstance(content, dict) else None
    return mark if isinstance(mark, int) and not isinstance(mark, bool) and mark > 0 else 0


def forget_holdings() -> None:
    """The numbers are counted again when next asked (an import changed them)."""
    _known.clear()


def cache_holdings(root: Path) -> Holdings:
    """Projects with a page, their distribution files, and conda packages under the data directory (blocking)."""
    known = _known.get(root)
    if known is not None and time.monotonic() - known[0] < KEEP_SECONDS:
        return known[1]
    projects = len(_dirs(root / "pypi" / "simple"))
    pypi_files = pypi_bytes = conda_packages = conda_bytes = 0
    for project in _dirs(root / "pypi" / "files"):
        for entry in _files(project):
            if not entry.name.endswith((".metadata", ".provenance")):
                pypi_files += 1
                pypi_bytes += entry.stat().st_size
    for channel_root in _dirs(root / "conda"):
        for channel in _dirs(channel_root):
            for subdir in _dirs(channel):
                for entry in _files(subdir):
                    if entry.name.endswith(CONDA_PACKAGE_SUFFIXES):
                        conda_packages += 1
                        conda_bytes += entry.stat().st_size
    found = Holdings(projects, pypi_files, pypi_bytes, conda_packages, conda_bytes)
    _known[root] = (time.monotonic(), found)
    return found


def _dirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(entry.path) for entry in entries if entry.is_dir()]
    except OSError:
        return []


def _files(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [entry for entry in entries if entry.is_file()]
    except OSError:
        return []
