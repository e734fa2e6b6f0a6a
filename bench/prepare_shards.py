"""The conda channel of the "shards" scenario (issue 12): a 100+ MB linux-64 repodata, no shards, and a few
packages a solver can actually solve.

Layout under bench/.work/upstream/conda/cloud/shardbench/ (served by the bench's upstream nginx, like a domestic
mirror: repodata.json with .zst and .gz beside it, no `repodata_shards.msgpack.zst`):
  linux-64/  repodata.json of >= 110 MB: about 230,000 records shaped like conda-forge's over 20,000 names (a few
             names with thousands of records, as python or vim have), plus SOLVABLE: small packages whose
             dependencies stay among themselves, many versions each, so a solve touches a handful of names
  noarch/    a small repodata.json (+ .zst, .gz)
The records come from a seeded generator and are written sorted, as conda-index and rattler's indexer write
(until shardbench-2 they were written unsorted, `packages.conda` first).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from bench.common import WORK, log

CHANNEL = "cloud/shardbench"
CHANNEL_ROOT = WORK / "upstream" / "conda" / CHANNEL
SUBDIR = "linux-64"
REPODATA_TARGET_BYTES = 110 * 1000 * 1000
STAMP_VERSION = "shardbench-2"  # 2: sections and file names sorted, as indexers write them
NAMES = 20_000
HEAVY = ("python", "vim", "libblas", "numpy", "openssl", "cuda-toolkit")
# name -> its dependencies; every name here gets VERSIONS versions of two builds each.
SOLVABLE: dict[str, tuple[str, ...]] = {
    "bench-app": ("bench-core >=2", "bench-util"),
    "bench-cli": ("bench-core", "bench-args >=1.1"),
    "bench-db": ("bench-core", "bench-sql"),
    "bench-core": ("bench-zlib",),
    "bench-util": (),
    "bench-args": (),
    "bench-sql": ("bench-zlib",),
    "bench-zlib": (),
}
SPECS = ("bench-app", "bench-cli", "bench-db")  # what the scenario's solve asks for
VERSIONS = 30


def prepare_shard_channel() -> Path:
    stamp = CHANNEL_ROOT / ".shardbench-ready"
    if stamp.exists() and stamp.read_text() == STAMP_VERSION:
        log("shard channel already prepared")
        return CHANNEL_ROOT
    shutil.rmtree(CHANNEL_ROOT, ignore_errors=True)
    for subdir in (SUBDIR, "noarch"):
        (CHANNEL_ROOT / subdir).mkdir(parents=True)
    log(f"writing the {REPODATA_TARGET_BYTES / 1e6:.0f} MB repodata of {CHANNEL} (streaming)")
    big = CHANNEL_ROOT / SUBDIR / "repodata.json"
    _write_repodata(big, SUBDIR, _big_records(REPODATA_TARGET_BYTES))
    small = CHANNEL_ROOT / "noarch" / "repodata.json"
    _write_repodata(small, "noarch", _noarch_records())
    for path in (big, small):
        _compress_beside(path)
    stamp.write_text(STAMP_VERSION)
    log(f"shard channel ready: linux-64 repodata.json of {big.stat().st_size / 1e6:.0f} MB")
    return CHANNEL_ROOT


def _write_repodata(path: Path, subdir: str, records: Iterator[tuple[str, dict[str, Any]]]) -> None:
    """The shape conda-index and rattler's indexer write, and mirrors copy: `info`, `packages`, `packages.conda`,
    `removed`, each section's file names in order. The records' text is held (a few hundred MB) to be sorted."""
    sections: dict[str, list[tuple[str, str]]] = {"packages": [], "packages.conda": []}
    for filename, record in records:
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        sections[section].append((filename, json.dumps(record)))
    with path.open("w", encoding="utf-8") as out:
        out.write(f'{{"info":{{"subdir":{json.dumps(subdir)}}}')
        for section, entries in sections.items():
            entries.sort()
            out.write(f",{json.dumps(section)}:{{")
            out.write(",".join(f"{json.dumps(filename)}:{text}" for filename, text in entries))
            out.write("}")
        out.write(',"removed":[],"repodata_version":1}\n')


def _big_records(target: int) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = random.Random(12)
    names = list(HEAVY) + [f"synth-{_syllables(rng)}-{n}" for n in range(NAMES - len(HEAVY))]
    yield from _solvable_records()
    written, index = 0, 0
    while written < target:
        name = rng.choice(HEAVY) if rng.random() < 0.08 else rng.choice(names)
        filename, record = _random_record(rng, name, index, names)
        written += len(filename) + len(json.dumps(record)) + 4
        index += 1
        yield filename, record


def _syllables(rng: random.Random) -> str:
    return "".join(rng.choice(("lib", "py", "ar", "zo", "qu", "ex", "tor", "mel", "cu", "gen")) for _ in range(3))


def _random_record(rng: random.Random, name: str, index: int, names: list[str]) -> tuple[str, dict[str, Any]]:
    version = f"{rng.randrange(13)}.{rng.randrange(30)}.{index}"
    build_number = rng.randrange(6)
    build = f"h{rng.getrandbits(32):08x}_{build_number}"
    record: dict[str, Any] = {
        "build": build,
        "build_number": build_number,
        "depends": _random_depends(rng, names),
        "license": rng.choice(("MIT", "BSD-3-Clause", "Apache-2.0", "GPL-3.0-or-later")),
        "md5": f"{rng.getrandbits(128):032x}",
        "name": name,
        "sha256": f"{rng.getrandbits(256):064x}",
        "size": rng.randrange(2_000, 90_000_000),
        "subdir": SUBDIR,
        "timestamp": 1_600_000_000_000 + index * 1000,
        "version": version,
    }
    if rng.random() < 0.3:
        record["constrains"] = [f"{rng.choice(names)} <{rng.randrange(1, 9)}"]
    ext = ".conda" if rng.random() < 0.7 else ".tar.bz2"
    return f"{name}-{version}-{build}{ext}", record


def _random_depends(rng: random.Random, names: list[str]) -> list[str]:
    count = rng.randrange(1, 8)
    return sorted({f"{rng.choice(names)} >={rng.randrange(9)}.{rng.randrange(9)}" for _ in range(count)})


def _solvable_records() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, depends in SOLVABLE.items():
        for minor in range(VERSIONS):
            for build_number in (0, 1):
                version = f"{1 + minor // 10}.{minor % 10}.0"
                build = f"h{hashlib.sha256(f'{name}{version}'.encode()).hexdigest()[:8]}_{build_number}"
                yield f"{name}-{version}-{build}.conda", _fixed_record(name, version, build, build_number, depends)


def _fixed_record(name: str, version: str, build: str, build_number: int, depends: tuple[str, ...]) -> dict:
    digest = hashlib.sha256(f"{name}-{version}-{build}".encode())
    return {
        "build": build, "build_number": build_number, "depends": list(depends), "license": "MIT",
        "md5": hashlib.md5(digest.digest()).hexdigest(), "name": name, "sha256": digest.hexdigest(),
        "size": 100_000 + build_number, "subdir": SUBDIR, "timestamp": 1_700_000_000_000, "version": version,
    }  # fmt: skip


def _noarch_records() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in ("bench-docs", "bench-data"):
        record = _fixed_record(name, "1.0.0", "pyh_0", 0, ())
        yield f"{name}-1.0.0-pyh_0.conda", dict(record, subdir="noarch", noarch="generic")


def _compress_beside(path: Path) -> None:
    """`.zst` (what conda clients ask for first) and `.gz` (nginx's gzip_static for Accept-Encoding: gzip)."""
    started = time.monotonic()
    with path.open("rb") as source, (path.parent / (path.name + ".zst")).open("wb") as target:
        zstandard.ZstdCompressor(level=9, threads=2).copy_stream(source, target)
    with path.open("rb") as source, gzip.open(path.parent / (path.name + ".gz"), "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target, 1 << 20)
    log(f"compressed {path.name} in {time.monotonic() - started:.1f}s")
