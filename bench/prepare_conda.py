"""The local conda upstream: a channel `cloud/bench` of a few generated packages and one big synthetic repodata.

Layout under bench/.work/upstream/conda/cloud/bench/:
  noarch/      three real (tiny) .tar.bz2 packages and their repodata
  linux-64/    repodata.json of >= 100 MB (synthetic records, written streaming), with .zst and .gz beside it
  osx-64/ ...  symbolic links to linux-64: the same bytes under other names, so each repetition of the cold
               scenario asks every proxy for a file it has never seen
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import tarfile
import time
from pathlib import Path

import zstandard

from bench.common import WORK, log

CHANNEL = "cloud/bench"
CHANNEL_ROOT = WORK / "upstream" / "conda" / CHANNEL
BIG_SUBDIR = "linux-64"
# Subdirs that carry the same big repodata; repetition i of the cold scenario uses COLD_SUBDIRS[i].
COLD_SUBDIRS = ("linux-64", "osx-64", "win-64", "linux-aarch64", "osx-arm64")
REPODATA_TARGET_BYTES = 110 * 1000 * 1000
STAMP_VERSION = "conda-2"
PACKAGES = (("bench-hello", "1.0"), ("bench-world", "2.1"), ("bench-tools", "0.3"))


def prepare_conda() -> Path:
    stamp = CHANNEL_ROOT / ".conda-ready"
    if stamp.exists() and stamp.read_text() == STAMP_VERSION:
        log("conda upstream already prepared")
        return CHANNEL_ROOT
    shutil.rmtree(CHANNEL_ROOT, ignore_errors=True)
    (CHANNEL_ROOT / "noarch").mkdir(parents=True)
    (CHANNEL_ROOT / BIG_SUBDIR).mkdir()
    records = {filename: record for filename, record in (_write_package(n, v) for n, v in PACKAGES)}
    _write_small_repodata(CHANNEL_ROOT / "noarch", records)
    log("writing the big synthetic repodata.json (streaming)")
    big = CHANNEL_ROOT / BIG_SUBDIR / "repodata.json"
    _write_big_repodata(big, REPODATA_TARGET_BYTES)
    _compress_beside(big)
    for subdir in COLD_SUBDIRS[1:]:
        (CHANNEL_ROOT / subdir).symlink_to(BIG_SUBDIR, target_is_directory=True)
    stamp.write_text(STAMP_VERSION)
    log(f"conda upstream ready: repodata.json of {big.stat().st_size / 1e6:.0f} MB")
    return CHANNEL_ROOT


def _write_package(name: str, version: str) -> tuple[str, dict]:
    """A real noarch .tar.bz2 with info/index.json and one file, and its repodata record."""
    filename = f"{name}-{version}-py_0.tar.bz2"
    index = {
        "name": name, "version": version, "build": "py_0", "build_number": 0, "depends": [],
        "license": "MIT", "noarch": "generic", "subdir": "noarch", "timestamp": 1700000000000,
    }  # fmt: skip
    path = CHANNEL_ROOT / "noarch" / filename
    with tarfile.open(path, "w:bz2") as archive:
        _add_member(archive, "info/index.json", json.dumps(index).encode())
        _add_member(archive, "info/paths.json", b'{"paths": [], "paths_version": 1}')
        _add_member(archive, f"share/{name}/README", f"{name} {version}\n".encode())
    data = path.read_bytes()
    record = dict(index, md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return filename, record


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1700000000
    archive.addfile(info, io.BytesIO(data))


def _write_small_repodata(folder: Path, records: dict[str, dict]) -> None:
    document = {"info": {"subdir": folder.name}, "packages": records, "packages.conda": {}, "repodata_version": 1}
    path = folder / "repodata.json"
    path.write_text(json.dumps(document, indent=1, sort_keys=True))
    _compress_beside(path)


def _write_big_repodata(path: Path, target: int) -> None:
    """Synthetic records shaped like conda-forge's, one at a time, until the file passes `target` bytes."""
    rng = random.Random(100)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        written += out.write('{"info":{"subdir":"linux-64"},"packages":{')
        written = _write_records(out, rng, ".tar.bz2", target // 2, written)
        written += out.write('},"packages.conda":{')
        _write_records(out, rng, ".conda", target, written)
        out.write('},"removed":[],"repodata_version":1}\n')


def _write_records(out: io.TextIOBase, rng: random.Random, ext: str, until: int, written: int) -> int:
    first = True
    index = 0
    while written < until:
        name = f"synth-lib{index % 7919}"
        version = f"{index % 13}.{index % 7}.{index // 7919}"
        build = f"h{rng.getrandbits(32):08x}_{index % 3}"
        record = {
            "build": build,
            "build_number": index % 3,
            "depends": [f"synth-lib{rng.randrange(7919)} >={rng.randrange(9)}.0" for _ in range(rng.randrange(2, 7))]
            + ["libgcc-ng >=12", "python >=3.9,<3.13.0a0"],
            "license": "BSD-3-Clause",
            "md5": f"{rng.getrandbits(128):032x}",
            "name": name,
            "sha256": f"{rng.getrandbits(256):064x}",
            "size": rng.randrange(10_000, 50_000_000),
            "subdir": "linux-64",
            "timestamp": 1600000000000 + index * 1000,
            "version": version,
        }
        entry = ("" if first else ",") + json.dumps(f"{name}-{version}-{build}{ext}") + ":" + json.dumps(record)
        written += out.write(entry)
        first = False
        index += 1
    return written


def _compress_beside(path: Path) -> None:
    """`.zst` (what conda clients ask for first) and `.gz` (nginx's gzip_static for Accept-Encoding: gzip)."""
    started = time.monotonic()
    with path.open("rb") as source, (path.parent / (path.name + ".zst")).open("wb") as target:
        zstandard.ZstdCompressor(level=9, threads=2).copy_stream(source, target)
    with path.open("rb") as source, gzip.open(path.parent / (path.name + ".gz"), "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target, 1 << 20)
    log(f"compressed {path.name} in {time.monotonic() - started:.1f}s")
