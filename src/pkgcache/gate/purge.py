"""The cached files of a blocked release, to purge when the block is made (they must not be served again)."""

from __future__ import annotations

import os
from pathlib import Path

from pkgcache.policy.common import Block
from pkgcache.policy.pypi import PypiPolicy, normalize_name
from pkgcache.storage.store import CacheStore, UnsafePath

CONDA_PACKAGE_SUFFIXES = (".conda", ".tar.bz2")
COMPANION_SUFFIXES = (".metadata", ".provenance")


def blocked_files(store: CacheStore, side: str, block: Block) -> list[Path]:
    """Every cached file the block refuses (PyPI: distributions with their metadata; conda: packages); blocking."""
    return _pypi_files(store, block) if side == "pypi" else _conda_files(store, block)


def _pypi_files(store: CacheStore, block: Block) -> list[Path]:
    project = normalize_name(block.name)
    try:
        folder = store.path_for("pypi", "files", project)
        names = os.listdir(folder)
    except (OSError, UnsafePath):
        return []
    policy = PypiPolicy(blocks=[block])
    found = []
    for name in names:
        base = next((name.removesuffix(s) for s in COMPANION_SUFFIXES if name.endswith(s)), name)
        if not policy.check_file(project, base).allowed:
            found.append(folder / name)
    return found


def _conda_files(store: CacheStore, block: Block) -> list[Path]:
    from pkgcache.policy.conda import CondaPolicy  # py-rattler: only when a conda block is made

    policy = CondaPolicy(blocks=[block])
    prefix = block.name.lower() + "-"
    found = []
    for subdir in _conda_subdirs(store.root / "conda"):
        try:
            names = os.listdir(subdir)
        except OSError:
            continue
        for name in names:
            if not name.lower().startswith(prefix) or not name.endswith(CONDA_PACKAGE_SUFFIXES):
                continue
            if not policy.check_file(subdir.parent.name, subdir.name, name).allowed:
                found.append(subdir / name)
    return found


def _conda_subdirs(root: Path) -> list[Path]:
    """`conda/<pkgs|cloud>/<channel>/<subdir>` folders."""
    found = []
    for channel_root in ("pkgs", "cloud"):
        try:
            channels = [entry for entry in os.scandir(root / channel_root) if entry.is_dir()]
        except OSError:
            continue
        for channel in channels:
            try:
                found += [Path(entry.path) for entry in os.scandir(channel.path) if entry.is_dir()]
            except OSError:
                continue
    return found
