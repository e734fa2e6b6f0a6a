"""Large, realistic repodata.json files made up at test time, for the shard builder's size and memory tests.

The records look like conda-forge's (name, version, build, depends, constrains, license, hashes, size, timestamp,
sometimes noarch or track_features), with a long tail of package names that have a few records and a handful of
names that have thousands, as python, vim or libblas do (at most HEAVY_RECORDS each, whatever the size). The file
is written record by record, so making a few hundred MB costs little memory. Everything comes from one seeded
random generator: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# About what conda-forge linux-64 has per record (its JSON, over its record count), with these field sets.
AVERAGE_RECORD_BYTES = 490
LICENSES = ("MIT", "BSD-3-Clause", "Apache-2.0", "GPL-3.0-or-later", "LGPL-2.1-or-later", "MPL-2.0")
HEAVY_NAMES = ("python", "vim", "libblas", "numpy", "openssl")
# Records per heavy name at most: about 2.5 MB of shard, as vim has (conda-forge's largest shard, 2.6 MB).
HEAVY_RECORDS = 5000


@dataclass(frozen=True)
class SyntheticRepodata:
    """What was written: where, how many records and package names, and a few names to look for."""

    path: Path
    records: int
    names: int
    removed: int
    size: int


def _package_names(count: int, rng: random.Random) -> list[str]:
    syllables = ("lib", "py", "ar", "zo", "qu", "ex", "ni", "tor", "mel", "cu", "da", "gen", "fx", "ml", "io")
    names = set(HEAVY_NAMES)
    while len(names) < count:
        parts = rng.randint(2, 4)
        names.add("".join(rng.choice(syllables) for _ in range(parts)) + rng.choice(("", "-core", "-dev", "2")))
    return sorted(names)


def _record(name: str, index: int, subdir: str, names: list[str], rng: random.Random) -> tuple[str, dict[str, Any]]:
    version = f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{index}"
    build_number = rng.randint(0, 5)
    build = f"h{rng.getrandbits(32):08x}_{build_number}"
    ext = ".conda" if rng.random() < 0.7 else ".tar.bz2"
    depends = sorted(
        {f"{rng.choice(names)} >={rng.randint(0, 9)}.{rng.randint(0, 9)}" for _ in range(rng.randint(1, 8))}
    )
    record: dict[str, Any] = {
        "build": build,
        "build_number": build_number,
        "depends": depends,
        "license": rng.choice(LICENSES),
        "license_family": "BSD",
        "md5": hashlib.md5(f"{name}{version}{build}".encode()).hexdigest(),
        "name": name,
        "sha256": hashlib.sha256(f"{name}{version}{build}".encode()).hexdigest(),
        "size": rng.randint(2_000, 90_000_000),
        "subdir": subdir,
        "timestamp": 1_600_000_000_000 + rng.randint(0, 10**11),
        "version": version,
    }
    if rng.random() < 0.3:
        record["constrains"] = [f"{rng.choice(names)} <{rng.randint(1, 9)}"]
    if rng.random() < 0.05:
        record["track_features"] = "blas_mkl"
    if subdir == "noarch":
        record["noarch"] = "python"
    return f"{name}-{version}-{build}{ext}", record


def _records(count: int, subdir: str, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    names = _package_names(max(len(HEAVY_NAMES) + 1, count // 20), rng)
    # Up to a tenth of the records belong to the few heavy names, the rest spread over the long tail.
    heavy_share = min(0.1, HEAVY_RECORDS * len(HEAVY_NAMES) / count)
    for index in range(count):
        name = rng.choice(HEAVY_NAMES) if rng.random() < heavy_share else rng.choice(names)
        yield _record(name, index, subdir, names, rng)


def write_synthetic_repodata(
    path: Path, *, size: int, subdir: str = "linux-64", seed: int = 16, sort_keys: bool = False
) -> SyntheticRepodata:
    """Write a repodata.json of about `size` bytes; both sections, a `removed` list, `info` first.

    Unsorted (the default), `.conda` records go straight to the file and `.tar.bz2` ones to a side file appended
    afterwards, so nothing but one record is held in memory whatever the size. `sort_keys` writes the shape
    conda-index and rattler's indexer write (`packages` before `packages.conda`, file names in order): the
    records' text is held and sorted then.
    """
    count = max(10, size // AVERAGE_RECORD_BYTES)
    if sort_keys:
        return _write_sorted(path, count, subdir, seed)
    names: set[str] = set()
    side_path = path.with_name(path.name + ".packages-part")
    with path.open("wb") as out, side_path.open("w+b") as side:
        out.write(f'{{\n "info": {{"subdir": {json.dumps(subdir)}}},\n "packages.conda": {{'.encode())
        written = {"conda": 0, "tarbz2": 0}
        for filename, record in _records(count, subdir, seed):
            names.add(record["name"])
            kind = "conda" if filename.endswith(".conda") else "tarbz2"
            target = out if kind == "conda" else side
            separator = "," if written[kind] else ""
            target.write(f"{separator}\n  {json.dumps(filename)}: {json.dumps(record, sort_keys=True)}".encode())
            written[kind] += 1
        out.write(b'\n },\n "packages": {')
        side.seek(0)
        while chunk := side.read(1 << 20):
            out.write(chunk)
        removed = _removed(names)
        out.write(f'\n }},\n "removed": {json.dumps(removed)},\n "repodata_version": 1\n}}\n'.encode())
    side_path.unlink()
    return SyntheticRepodata(path, count, len(names), len(removed), path.stat().st_size)


def _write_sorted(path: Path, count: int, subdir: str, seed: int) -> SyntheticRepodata:
    sections: dict[str, list[tuple[str, str]]] = {"packages": [], "packages.conda": []}
    names: set[str] = set()
    for filename, record in _records(count, subdir, seed):
        names.add(record["name"])
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        sections[section].append((filename, json.dumps(record, sort_keys=True)))
    removed = _removed(names)
    with path.open("w", encoding="utf-8") as out:
        out.write(f'{{\n "info": {{"subdir": {json.dumps(subdir)}}},')
        for section, entries in sections.items():
            entries.sort()
            body = ",".join(f"\n  {json.dumps(filename)}: {text}" for filename, text in entries)
            out.write(f"\n {json.dumps(section)}: {{{body}\n }},")
        out.write(f'\n "removed": {json.dumps(sorted(removed))},\n "repodata_version": 1\n}}\n')
    return SyntheticRepodata(path, count, len(names), len(removed), path.stat().st_size)


def _removed(names: set[str]) -> list[str]:
    """About 500 file names in `removed`, one per package name picked."""
    return [f"{name}-0.0.1-h0_0.tar.bz2" for name in sorted(names)[:: max(1, len(names) // 500)]]
