"""CEP-16 sharded repodata: the shard index must send clients back to pkgcache, never around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from pkgcache.conda.bounded_zstd import decompress_file_within
from pkgcache.conda.upstream_shard_index import (
    MAX_MAP_MEMBERS,
    InvalidShardIndex,
    ShardNames,
    bounded_map,
    encode_index,
    read_shard_index,
    text,
)

__all__ = ["InvalidShardIndex", "record_in_shard", "repodata_from_shards", "rewrite_shard_index", "shard_for"]

# An upstream's shard is read within bounds, as its shard index is (upstream_shard_index.py): the upstream names it
# by its hash, so a few KB of zstd may be made to decompress to a GB, and msgpack decoded whole into Python objects
# costs many times its size. Real shards are KB (a package's every build in a subdir; the biggest conda-forge
# names, a few MB), so: the shard decompressed up to MAX_SHARD_BYTES; its top level and each section read as maps
# of undecoded values (a section of at most MAX_SECTION_RECORDS records); and only the records used decoded, each
# of at most MAX_RECORD_BYTES (a record is about a KB), so that what one record can cost stays tens of MB.
MAX_SHARD_BYTES = 64 << 20
MAX_SECTION_RECORDS = 200_000
MAX_RECORD_BYTES = 1 << 20
# Relative to the shard index: packages beside it, shards in shards/ (pkgcache's own layout).
LOCAL_BASE_URL = ""
LOCAL_SHARDS_BASE_URL = "./shards/"

# The name -> digest maps of the shard indexes kept, for the package requests: each index decoded once per version.
SHARD_NAMES = ShardNames()


def rewrite_shard_index(path: Path, temp: Path) -> dict[str, str]:
    """Point a shard index at pkgcache, replacing `path` through `temp` (blocking).

    Returns the upstream's own base URLs, which the caller keeps: they say where to fetch shards from. Every other
    member of the index is kept as it was.
    """
    index = read_shard_index(path)
    original = {"base_url": index.info_text("base_url"), "shards_base_url": index.info_text("shards_base_url")}
    info = {**index.info, "base_url": text(LOCAL_BASE_URL), "shards_base_url": text(LOCAL_SHARDS_BASE_URL)}
    temp.write_bytes(zstandard.ZstdCompressor(level=10).compress(encode_index(index.members, info)))
    temp.replace(path)
    return original


def shard_for(index_path: Path, package_name: str) -> str | None:
    """The shard file name (`<sha256>.msgpack.zst`) holding a package name's records, or None, also when the index
    cannot be read (blocking). The index is decoded once per version of its file (SHARD_NAMES)."""
    try:
        digest = SHARD_NAMES.names(index_path).get(package_name)
    except (InvalidShardIndex, OSError):
        return None
    return None if digest is None else f"{digest.hex()}.msgpack.zst"


def record_in_shard(shard_path: Path, filename: str) -> dict[str, Any] | None:
    """A package's record from a shard, with its hashes as hex text like repodata.json has them (blocking); None
    when the shard does not hold it or cannot be read within bounds."""
    sections = _shard_sections(shard_path)
    for section in ("packages.conda", "packages"):
        raw = _records(sections, section).get(filename)
        if raw is not None:
            return _record(raw)
    return None


def _shard_sections(path: Path) -> dict[str, msgspec.Raw]:
    """The shard's top-level members, undecoded; {} when it cannot be read within bounds."""
    try:
        with path.open("rb") as handle:
            return bounded_map(decompress_file_within(handle, MAX_SHARD_BYTES), MAX_MAP_MEMBERS)
    except (OSError, zstandard.ZstdError, ValueError):  # InvalidShardIndex and DecompressedTooLarge included
        return {}


def _records(sections: dict[str, msgspec.Raw], section: str) -> dict[str, msgspec.Raw]:
    """A section's records by file name, undecoded; {} when it is absent or not a bounded map of them."""
    raw = sections.get(section)
    if raw is None:
        return {}
    try:
        return bounded_map(raw, MAX_SECTION_RECORDS)
    except InvalidShardIndex:
        return {}


def _record(raw: msgspec.Raw) -> dict[str, Any] | None:
    """One record decoded, its hashes as hex text; None when it is too big to be one or not a map."""
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        record = msgspec.msgpack.decode(raw)
    except msgspec.DecodeError:
        return None
    if not isinstance(record, dict):
        return None
    return {key: value.hex() if isinstance(value, bytes) else value for key, value in record.items()}


def repodata_from_shards(index_path: Path, shards_dir: Path, destination: Path, subdir: str) -> int:
    """Write, as repodata.json, the records of the shards of a shard index that are on disk (blocking).

    What a cache that only ever passed shards through knows of a subdir: enough for the offline view, which lists
    only packages it holds (a package fetched through shards had its shard fetched first). Hashes become hex text
    again. Returns the number of records written. Streaming per section: one shard in memory at a time.
    """
    try:
        shards = SHARD_NAMES.names(index_path)
    except InvalidShardIndex as exc:
        raise InvalidShardIndex(f"{index_path.name}: {exc}") from None
    present = [path for digest in shards.values() if (path := shards_dir / f"{digest.hex()}.msgpack.zst").is_file()]
    written = 0
    with destination.open("w", encoding="utf-8") as out:
        out.write('{"info": ' + json.dumps({"subdir": subdir}))
        for section in ("packages", "packages.conda"):
            out.write(f", {json.dumps(section)}: {{")
            first = True
            for path in present:
                for filename, record in _section(path, section):
                    out.write(("" if first else ", ") + f"{json.dumps(filename)}: {json.dumps(record)}")
                    first = False
                    written += 1
            out.write("}")
        out.write(', "repodata_version": 1}\n')
    return written


def _section(shard_path: Path, section: str) -> list[tuple[str, dict[str, Any]]]:
    """A section's records, each decoded within its bound (one left out when it is not a record)."""
    records = _records(_shard_sections(shard_path), section)
    return [(filename, record) for filename, raw in records.items() if (record := _record(raw)) is not None]
