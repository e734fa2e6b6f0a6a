"""CEP-16 sharded repodata: the shard index must send clients back to pkgcache, never around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from pkgcache.conda.bounded_zstd import decompress_within
from pkgcache.conda.upstream_shard_index import InvalidShardIndex, ShardNames, encode_index, read_shard_index, text

__all__ = ["InvalidShardIndex", "record_in_shard", "repodata_from_shards", "rewrite_shard_index", "shard_for"]

# What a shard may decompress to (CEP-16's are a few KB; the shard index has its own bound, upstream_shard_index).
MAX_DECOMPRESSED_BYTES = 1 << 30
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
    """A package's record from a shard, with its hashes as hex text like repodata.json has them (blocking)."""
    document = _read_msgpack_zst(shard_path)
    if not isinstance(document, dict):
        return None
    for section in ("packages.conda", "packages"):
        records = document.get(section)
        if isinstance(records, dict) and isinstance(records.get(filename), dict):
            return {key: value.hex() if isinstance(value, bytes) else value for key, value in records[filename].items()}
    return None


def _read_msgpack_zst(path: Path) -> Any:
    try:
        raw = decompress_within(path.read_bytes(), MAX_DECOMPRESSED_BYTES)
        return msgpack.unpackb(raw, strict_map_key=False)
    except (OSError, zstandard.ZstdError, ValueError, msgpack.UnpackException):
        return None


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
    document = _read_msgpack_zst(shard_path)
    records = document.get(section) if isinstance(document, dict) else None
    if not isinstance(records, dict):
        return []
    return [
        (filename, {key: value.hex() if isinstance(value, bytes) else value for key, value in record.items()})
        for filename, record in records.items()
        if isinstance(filename, str) and isinstance(record, dict)
    ]
