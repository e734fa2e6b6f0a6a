"""Build a real conda channel on disk at test time.

Packages are made with conda-package-handling (both `.conda` and `.tar.bz2`), and the channel is indexed with
py-rattler's indexer, so the repodata is what a real channel would hold. The tree is small but has the shapes the
proxy must handle: a platform package with dependencies, two versions of one package in different formats, noarch
packages, and one large incompressible package for concurrency and range tests.
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import json
import random
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conda_package_handling import api as cph_api

# A fixed build time keeps index.json stable across builds (milliseconds since the epoch, as conda writes it).
BUILD_TIMESTAMP_MS = 1_700_000_000_000
BIGPKG_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class CondaPkg:
    """One built package file, with the hashes a client will check it against."""

    name: str
    version: str
    build: str
    subdir: str
    filename: str
    path: Path
    sha256: str
    md5: str
    size: int
    depends: tuple[str, ...]


@dataclass(frozen=True)
class _PkgSpec:
    """What to build: identity, format and the payload files (relative path -> bytes)."""

    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    ext: str
    depends: tuple[str, ...]
    payload: dict[str, bytes]


def machine_subdir() -> str:
    """The conda subdir of this machine, e.g. "linux-64", as rattler sees it."""
    from rattler import Subdir

    return str(Subdir.current())


def _text_payload(name: str, version: str) -> dict[str, bytes]:
    return {f"share/{name}/{name}.txt": f"{name} {version}\n".encode()}


def _big_payload() -> dict[str, bytes]:
    # Seeded random bytes: incompressible, yet the same content on every build.
    data = random.Random(1234).randbytes(BIGPKG_SIZE)
    return {"share/bigpkg/blob.bin": data}


def _specs_for(subdirs: tuple[str, ...]) -> list[_PkgSpec]:
    """The dependency tree: app -> libfoo >=1.0, pydata -> tzinfo; plus bigpkg."""
    specs = [
        _PkgSpec("pydata", "2.0", "py_0", 0, "noarch", ".conda", ("tzinfo",), _text_payload("pydata", "2.0")),
        _PkgSpec("tzinfo", "2024.1", "h0_0", 0, "noarch", ".tar.bz2", (), _text_payload("tzinfo", "2024.1")),
        _PkgSpec("bigpkg", "1.0", "h0_0", 0, "noarch", ".conda", (), _big_payload()),
    ]
    for subdir in subdirs:
        if subdir == "noarch":
            continue
        app_payload = _text_payload("app", "1.0") | {"bin/app": b"#!/bin/sh\necho app 1.0\n"}
        specs += [
            _PkgSpec("app", "1.0", "h1_0", 0, subdir, ".conda", ("libfoo >=1.0", "pydata"), app_payload),
            _PkgSpec("libfoo", "1.0", "h1_0", 0, subdir, ".tar.bz2", (), _text_payload("libfoo", "1.0")),
            _PkgSpec("libfoo", "1.1", "h1_0", 0, subdir, ".conda", (), _text_payload("libfoo", "1.1")),
        ]
    return specs


def _index_json(spec: _PkgSpec) -> dict[str, Any]:
    index: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version,
        "build": spec.build,
        "build_number": spec.build_number,
        "depends": list(spec.depends),
        "license": "MIT",
        "subdir": spec.subdir,
        "timestamp": BUILD_TIMESTAMP_MS,
    }
    if spec.subdir == "noarch":
        index["noarch"] = "generic"
    else:
        platform, _, arch = spec.subdir.partition("-")
        index["platform"] = platform
        index["arch"] = {"64": "x86_64", "aarch64": "aarch64", "arm64": "arm64"}.get(arch, arch)
    return index


def _paths_json(payload: dict[str, bytes]) -> dict[str, Any]:
    entries = [
        {
            "_path": rel,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        for rel, data in sorted(payload.items())
    ]
    return {"paths": entries, "paths_version": 1}


def _stage(spec: _PkgSpec, staging: Path) -> list[str]:
    """Write the package's files into `staging` and return the file list for the archive."""
    files: dict[str, bytes] = dict(spec.payload)
    files["info/index.json"] = json.dumps(_index_json(spec), indent=2, sort_keys=True).encode()
    files["info/paths.json"] = json.dumps(_paths_json(spec.payload), indent=2).encode()
    files["info/files"] = "".join(f"{rel}\n" for rel in sorted(spec.payload)).encode()
    for rel, data in files.items():
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if rel.startswith("bin/"):
            target.chmod(0o755)
    return sorted(files)


def _digest(path: Path) -> tuple[str, str, int]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest(), path.stat().st_size


def _build_package(spec: _PkgSpec, root: Path) -> CondaPkg:
    out_dir = root / spec.subdir
    filename = f"{spec.name}-{spec.version}-{spec.build}{spec.ext}"
    with tempfile.TemporaryDirectory(prefix="condapkg-") as tmp:
        staging = Path(tmp)
        file_list = _stage(spec, staging)
        # Level 3 instead of the default 19: the big random payload would otherwise take seconds.
        extra = {"compression_level": 3} if spec.ext == ".conda" else {}
        cph_api.create(str(staging), file_list, filename, out_folder=str(out_dir), **extra)
    path = out_dir / filename
    sha256, md5, size = _digest(path)
    return CondaPkg(spec.name, spec.version, spec.build, spec.subdir, filename, path, sha256, md5, size, spec.depends)


def _run_coro(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion even when the caller is itself inside an event loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="conda-index")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _index(root: Path, *, sharded: bool, write_zst: bool) -> None:
    from rattler.index import index_fs

    _run_coro(index_fs(root, write_zst=write_zst, write_shards=sharded, force=True))


def _write_bz2(root: Path) -> None:
    # The indexer writes no .bz2; old channels still carry one, so write it from the JSON as conda-index did.
    for repodata in root.glob("*/repodata.json"):
        repodata.with_name("repodata.json.bz2").write_bytes(bz2.compress(repodata.read_bytes()))


def build_channel(
    root: Path,
    *,
    subdirs: tuple[str, ...] | None = None,
    sharded: bool = False,
    write_zst: bool = True,
    write_bz2: bool = False,
) -> list[CondaPkg]:
    """Build packages under `root/<subdir>/` and index them; return what was built.

    `subdirs` defaults to ("noarch", machine_subdir()). `noarch/` is always created, as every channel needs one.
    """
    if subdirs is None:
        subdirs = ("noarch", machine_subdir())
    if "noarch" not in subdirs:
        subdirs = ("noarch", *subdirs)
    root = Path(root)
    for subdir in subdirs:
        (root / subdir).mkdir(parents=True, exist_ok=True)
    pkgs = [_build_package(spec, root) for spec in _specs_for(subdirs)]
    _index(root, sharded=sharded, write_zst=write_zst)
    if write_bz2:
        _write_bz2(root)
    return pkgs


def find_pkg(pkgs: list[CondaPkg], name: str, version: str | None = None) -> CondaPkg:
    """The first built package with this name (and version, if given)."""
    for pkg in pkgs:
        if pkg.name == name and (version is None or pkg.version == version):
            return pkg
    raise KeyError(f"{name} {version or ''}".strip())


def rebuild_package(
    root: Path, pkg: CondaPkg, payload: dict[str, bytes], *, sharded: bool = False, write_zst: bool = True
) -> CondaPkg:
    """Replace a package of the channel at `root` with another build under the same file name (another payload,
    so another sha256 and size), and index the channel again: what a channel that fixes a package in place does."""
    ext = ".conda" if pkg.filename.endswith(".conda") else ".tar.bz2"
    spec = _PkgSpec(pkg.name, pkg.version, pkg.build, 0, pkg.subdir, ext, pkg.depends, payload)
    (root / pkg.subdir / pkg.filename).unlink()
    rebuilt = _build_package(spec, root)
    _index(root, sharded=sharded, write_zst=write_zst)
    return rebuilt
