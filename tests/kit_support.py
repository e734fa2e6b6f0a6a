"""Helpers for the offline kit's tests: running `pkgcache seed/export/import` as a user would, writing configs,
serving a data directory with no upstream reachable, and reading or rewriting bundles."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cache_service import RunningCache, cache_settings, start_cache
from tests.fakes.pypi_upstreams import public_stand_ins
from tests.support import BackgroundLoop, isolated_env

CHANNELS = ["pkgs/main", "cloud/conda-forge"]
# Nothing listens on port 9 (discard) on loopback: every upstream request fails at once.
UNREACHABLE_PYPI = "http://127.0.0.1:9/simple/"
UNREACHABLE_CONDA = "http://127.0.0.1:9/anaconda/"
CLI_TIMEOUT = 600


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_config(directory: Path, pypi: list[str], conda: list[str] | None = None) -> Path:
    """A pkgcache.toml naming the fake upstreams (conda: base URLs holding pkgs/ and cloud/), and allowing the
    stand-ins for public files hosts (tests/cache_service.py)."""
    lines = ["[pypi]", f"upstreams = {json.dumps(pypi)}", "[conda]"]
    lines += [f"upstreams = {json.dumps(conda or [UNREACHABLE_CONDA])}", f"channels = {json.dumps(CHANNELS)}"]
    lines += ["[upstream]", "connect_timeout = 2", "read_timeout = 10", "cooldown = 1"]
    lines += [f"allowed_hosts = {json.dumps(public_stand_ins())}"]
    return write(directory, "pkgcache.toml", "\n".join(lines) + "\n")


def pkgcache(*args: str | Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`pkgcache ARGS` in a process of its own, with no pip/uv settings from this machine."""
    command = [sys.executable, "-m", "pkgcache", *map(str, args)]
    env = isolated_env(COLUMNS="200")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def cached_names(data_dir: Path, root: str) -> set[str]:
    """File names of the packages cached below `root` (pypi/files or conda)."""
    found = set()
    for path in (data_dir / root).rglob("*"):
        if path.is_file() and path.name.endswith((".whl", ".tar.gz", ".conda", ".tar.bz2")):
            found.add(path.name)
    return found


def serve_offline(loop: BackgroundLoop, data_dir: Path, **sections: dict[str, Any]) -> RunningCache:
    """pkgcache serving `data_dir` with every upstream unreachable."""
    conda = {"upstreams": [UNREACHABLE_CONDA], "channels": CHANNELS}
    settings = cache_settings(data_dir, [UNREACHABLE_PYPI], conda=conda, **sections)
    return start_cache(loop, settings)


def bundle_members(bundle: Path) -> tuple[dict[str, Any], list[tuple[tarfile.TarInfo, bytes]]]:
    """The manifest and every other member (with its bytes), in order."""
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    manifest = json.loads(members[0][1])
    return manifest, members[1:]


def rewrite_bundle(
    bundle: Path,
    target: Path,
    change: Callable[[str, bytes], bytes | None],
    manifest_change: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """A copy of `bundle` whose members are passed through `change(name, data)` (None drops the member)."""
    manifest, members = bundle_members(bundle)
    if manifest_change is not None:
        manifest_change(manifest)
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        raw = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        for member, data in members:
            changed = change(member.name, data)
            if changed is None:
                continue
            info = tarfile.TarInfo(member.name)
            info.size = len(changed)
            tar.addfile(info, io.BytesIO(changed))


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])
