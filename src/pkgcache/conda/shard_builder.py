"""CEP-16 sharded repodata made from a cached repodata.json, in bounded memory, content-addressed on disk.

No domestic mirror serves shards, so pkgcache makes them: one shard per package name,
`<shards_dir>/<sha256 of the file's bytes>.msgpack.zst`, holding `{"packages": {...}, "packages.conda": {...},
["v3": {...},] "removed": [...]}` (zstd-compressed msgpack), and an index `repodata_shards.msgpack.zst` holding
`{"version": 1, "info": {subdir, base_url, shards_base_url, created_at}, "shards": {name: 32-byte sha256}}`.
Records are repodata.json's own, key for key and in the same order; only `sha256` and `md5` become raw bytes, as
CEP-16 says and as conda, mamba and rattler read them. Everything else (`legacy_bz2_md5` included) stays as it is
in the JSON, which is what conda-index does and what all three clients accept.

`build_shards` is blocking code for a worker thread. It streams the repodata (`repodata_stream`), writes each
record, already packed, to one of a few dozen bucket files chosen by a hash of its package name, then builds the
shards of one bucket at a time; a bucket too large to hold is split again by the next bits of the hash. So memory
stays bounded by the bucket size, the largest single package's shard and the index (about 100 bytes per package
name), whatever the repodata's size: see `tests/test_shard_builder.py` for the measured bound. The work is pure
Python and holds the GIL for seconds on a large repodata: a separate process keeps an event loop responsive.

On disk: a shard whose bytes did not change keeps its file (not rewritten, its mtime untouched); a new shard is
written under a temporary name and renamed in. The index is written last, to a temporary path that the caller
renames into place once it is ready to serve it. The builder deletes no shard: shards dropped from the index keep
their files for clients still holding the previous index. It marks them instead, by setting their mtime to the
build time, so that `unreferenced_shards` can tell how long a shard has been unreferenced.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import secrets
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import msgspec
import zstandard

from pkgcache.conda.repodata_runs import Declined, RecordRun, iter_repodata_runs
from pkgcache.conda.repodata_stream import (
    RECORD_SECTIONS,
    V3_KEY,
    Info,
    MalformedRepodata,
    Record,
    Removed,
    iter_repodata_file,
    open_repodata_binary,
)
from pkgcache.conda.shard_packs import PackWriter, explode_packs

__all__ = [
    "SHARDS_INDEX_NAME",
    "MalformedRepodata",
    "ShardBuildResult",
    "ShardIndex",
    "build_shards",
    "iter_shard_index",
    "read_shard_index",
    "shard_file_name",
    "stale_build_files",
    "unreferenced_shards",
]

SHARDS_INDEX_NAME = "repodata_shards.msgpack.zst"
PACKS_DIR_NAME = "shard-packs"
SHARD_SUFFIX = ".msgpack.zst"
TEMP_SUFFIX = ".tmp"
# zstd's default level, streamed (no content size in the frame header), as rattler's indexer writes: the same
# records then make the very same shard files, names included. Higher levels gain little on small shards.
COMPRESSION_LEVEL = 3
# 2**FANOUT_BITS bucket files are open at once; a bucket larger than MAX_BUCKET_BYTES is split again by the next
# FANOUT_BITS of its names' CRC-32, as long as bits remain.
FANOUT_BITS = 6
MAX_BUCKET_BYTES = 4 << 20
BUCKET_WRITE_BUFFER = 64 << 10
BUCKET_READ_SIZE = 256 << 10
MAX_SPLIT_DEPTH = 32 // FANOUT_BITS - 1
INDEX_WRITE_BATCH = 256 << 10
# The largest single msgpack object accepted when an index is read back (conda-forge's whole index is < 1 MB).
MAX_INDEX_BYTES = 256 << 20
HASH_LENGTHS = {"sha256": 32, "md5": 16}
PACKAGE_EXTENSIONS = (".tar.bz2", ".conda", ".whl")

_REMOVED_SECTION = 0
# msgspec's encoder writes the msgpack that msgpack-python's Packer(use_bin_type=True) writes, byte for byte (the
# shards test against py-rattler's indexer checks it), in one C call for a record or a whole shard.
_ENCODER = msgspec.msgpack.Encoder()

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardBuildResult:
    """What one build made. The caller renames `index_temp_path` into place (or deletes it)."""

    index_temp_path: Path
    pack_table: Path | None  # the pack holding the new shards (shard_packs), None when there were none
    index_sha256: str  # hex digest of the index file's bytes: a strong ETag for it
    index_size: int
    subdir: str
    created_at: str  # as written in the index's info
    shards: int  # package names in the index, one shard each
    records: int  # package records put into shards
    removed: int  # entries of "removed" put into shards
    removed_skipped: int  # entries of "removed" whose file name names no package
    shards_written: int
    shards_reused: int  # already on disk with the same bytes, left untouched
    shards_dropped: int  # referenced by `previous_index`, not by this one: mtime set to now
    bytes_written: int  # new shard files plus the index
    shard_bytes: int  # total size of the shards the index references
    seconds: float


@dataclass(frozen=True)
class ShardIndex:
    """A shard index read back: its info map and package name -> shard file name."""

    info: dict[str, Any]
    shards: dict[str, str]


@dataclass
class _Counts:
    records: int = 0
    removed: int = 0
    removed_skipped: int = 0
    written: int = 0
    reused: int = 0
    bytes_written: int = 0
    shard_bytes: int = 0


@dataclass
class _ShardParts:
    """One package name's entries from a bucket: section -> file name -> packed record, and removed names."""

    sections: dict[str, dict[str, bytes]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


def shard_file_name(digest: bytes) -> str:
    return f"{digest.hex()}{SHARD_SUFFIX}"


def build_shards(
    repodata_path: Path,
    shards_dir: Path,
    *,
    base_url: str,
    shards_base_url: str,
    subdir: str | None = None,
    previous_index: Path | None = None,
    index_dir: Path | None = None,
    packs_dir: Path | None = None,
    created_at: datetime | None = None,
) -> ShardBuildResult:
    """Build the shards of one subdir from `repodata_path` (.json, .json.zst or .json.bz2), blocking.

    `base_url` and `shards_base_url` go into the index exactly as given (relative to the index, or absolute).
    `subdir` defaults to the repodata's `info.subdir`. `previous_index` is the index now served, if any: shards it
    references and the new one does not are marked as dropped now (their mtime). The index is written to a
    temporary file in `index_dir` (default: the folder above `shards_dir`, where the index lives beside it).
    Shards not on disk yet are written to one pack in `packs_dir` (default: `shard-packs` beside `shards_dir`):
    `shard_packs.explode_packs` gives them their own files afterwards, `extract_shard` one of them meanwhile.

    Raises `MalformedRepodata` when the repodata cannot be read or is not repodata: the whole file is read before
    any shard is written, so nothing is written then. OSError when writing fails (complete shards may be left:
    they are content-addressed and harmless). A build killed midway leaves a `.shard-build-*` folder in
    `index_dir` and temporary files: `stale_build_files` lists them.
    """
    started = time.monotonic()
    shards_dir.mkdir(parents=True, exist_ok=True)
    index_dir = index_dir if index_dir is not None else shards_dir.parent
    stamp = (created_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    counts = _Counts()
    with tempfile.TemporaryDirectory(prefix=".shard-build-", dir=index_dir) as work:
        info, section_names = _bucket_repodata(repodata_path, Path(work), counts)
        subdir = subdir or _text_field(info, "subdir")
        with PackWriter(packs_dir or default_packs_dir(shards_dir)) as pack:
            entries = _build_all_buckets(Path(work), section_names, shards_dir, pack, counts)
            pack_table = pack.close()
    # One bytes object per package name, `<name>\0<digest>`: sorted, they are in name order (names hold no NUL).
    entries.sort()
    index_info = {"subdir": subdir, "base_url": base_url, "shards_base_url": shards_base_url, "created_at": stamp}
    index_temp_path, index_sha256, index_size = _write_index(index_dir, index_info, entries)
    dropped = _mark_dropped(previous_index, shards_dir, entries)
    return ShardBuildResult(
        index_temp_path=index_temp_path,
        pack_table=pack_table,
        index_sha256=index_sha256,
        index_size=index_size,
        subdir=subdir,
        created_at=stamp,
        shards=len(entries),
        records=counts.records,
        removed=counts.removed,
        removed_skipped=counts.removed_skipped,
        shards_written=counts.written,
        shards_reused=counts.reused,
        shards_dropped=dropped,
        bytes_written=counts.bytes_written + index_size,
        shard_bytes=counts.shard_bytes,
        seconds=time.monotonic() - started,
    )


def _text_field(info: dict[str, Any], key: str) -> str:
    value = info.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedRepodata(f"no info.{key} in the repodata, and none given")
    return value


# --- reading the repodata into buckets ---


class _Buckets:
    """2**FANOUT_BITS append-only bucket files, one level of the split; frames go by bits of the name's hash."""

    def __init__(self, folder: Path, depth: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{depth}-{number:02x}" for number in range(1 << FANOUT_BITS)]
        self._shift = depth * FANOUT_BITS
        self._files: list[BinaryIO] = []
        try:
            for path in self.paths:
                self._files.append(path.open("wb", buffering=BUCKET_WRITE_BUFFER))
        except BaseException:
            self.close()
            raise

    def add(self, name_hash: int, frame: bytes) -> None:
        self._files[(name_hash >> self._shift) & ((1 << FANOUT_BITS) - 1)].write(frame)

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def __enter__(self) -> _Buckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Sections:
    """Section names <-> the numbers frames carry ("packages", "packages.conda", "v3/whl", ...)."""

    def __init__(self) -> None:
        self.names = ["removed"]
        self._numbers: dict[str, int] = {}

    def number(self, section: str) -> int:
        number = self._numbers.get(section)
        if number is None:
            if len(self.names) > 255:
                raise MalformedRepodata("more than 255 record sections")
            number = self._numbers[section] = len(self.names)
            self.names.append(section)
        return number


def _bucket_repodata(repodata_path: Path, work: Path, counts: _Counts) -> tuple[dict[str, Any], list[str]]:
    """Read every record and removed name into the first-level buckets; return the info and section names.

    msgspec reads the file a run of records at a time (`repodata_runs`); a file it declines is read again, from
    the start and into fresh buckets, by `repodata_stream`, which also names what is wrong with a broken one.
    """
    try:
        return _bucket_items(work, counts, _runs_of(repodata_path))
    except (Declined, MalformedRepodata) as exc:
        log.info("%s: read record by record (%s)", repodata_path.name, exc)
    for field_name in ("records", "removed", "removed_skipped"):
        setattr(counts, field_name, 0)
    return _bucket_items(work, counts, _records_of(repodata_path))


def _runs_of(repodata_path: Path) -> Iterator[tuple[str, dict[str, Any]] | Info | Removed]:
    """(section, records) runs read by msgspec; Declined when the file is not read that way."""
    try:
        with open_repodata_binary(repodata_path) as binary:
            for item in iter_repodata_runs(binary):
                yield (item.section, item.records) if type(item) is RecordRun else item  # type: ignore[misc]
    except (zstandard.ZstdError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise Declined(str(exc)) from None


def _records_of(repodata_path: Path) -> Iterator[tuple[str, dict[str, Any]] | Info | Removed]:
    """Each record as a run of one, read by repodata_stream (which raises MalformedRepodata)."""
    for item in iter_repodata_file(repodata_path):
        yield (item.section, {item.filename: item.record}) if type(item) is Record else item  # type: ignore[misc]


def _bucket_items(
    work: Path, counts: _Counts, items: Iterator[tuple[str, dict[str, Any]] | Info | Removed]
) -> tuple[dict[str, Any], list[str]]:
    info: dict[str, Any] = {}
    sections = _Sections()
    with _Buckets(work, 0) as buckets:
        for item in items:
            if type(item) is tuple:
                section, records = item
                number = sections.number(section)
                for filename, record in records.items():
                    name = _package_name(section, filename, record)
                    packed = _pack_record(section, filename, record)
                    buckets.add(_name_hash(name), _frame(name, number, filename, packed))
                counts.records += len(records)
            elif type(item) is Removed:
                name = _name_from_file_name(item.filename)
                if name is None:
                    counts.removed_skipped += 1
                    continue
                buckets.add(_name_hash(name), _frame(name, _REMOVED_SECTION, item.filename, b""))
                counts.removed += 1
            elif type(item) is Info:
                info = item.info
    return info, sections.names


def _package_name(section: str, filename: str, record: dict[str, Any]) -> str:
    name = record.get("name")
    if not isinstance(name, str) or not name or "\0" in name:
        raise MalformedRepodata(f"{section}/{filename}: the record has no package name")
    # Shards are looked up by normalized name, as rattler's PackageName does (conda's names are lower case).
    return name.lower()


def _name_from_file_name(filename: str) -> str | None:
    """The package name in `<name>-<version>-<build>.<ext>`, or None."""
    stem = next((filename[: -len(ext)] for ext in PACKAGE_EXTENSIONS if filename.endswith(ext)), None)
    parts = stem.rsplit("-", 2) if stem else []
    return parts[0].lower() if len(parts) == 3 and all(parts) else None


def _pack_record(section: str, filename: str, record: dict[str, Any]) -> bytes:
    """The record as msgpack, key order kept, with its sha256 and md5 as raw bytes (CEP-16)."""
    for key, length in HASH_LENGTHS.items():
        value = record.get(key)
        if not value:
            continue  # absent, null or empty: kept as it is, as conda-index does
        try:
            digest = bytes.fromhex(value)
        except (TypeError, ValueError):
            digest = b""
        if len(digest) != length:
            raise MalformedRepodata(f"{section}/{filename}: {key} is not a hex digest: {value!r}")
        record[key] = digest
    try:
        return _ENCODER.encode(record)
    except (OverflowError, ValueError, TypeError) as exc:
        raise MalformedRepodata(f"{section}/{filename}: {exc}") from None


def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode())


def _frame(name: str, section: int, filename: str, packed: bytes) -> bytes:
    """One bucket entry: a msgpack array (name, section number, file name, packed record or b"")."""
    return _ENCODER.encode((name, section, filename, packed))


def _read_frames(path: Path) -> Iterator[tuple[str, int, str, bytes]]:
    with path.open("rb") as handle:
        yield from msgpack.Unpacker(handle, use_list=False, read_size=BUCKET_READ_SIZE)


# --- buckets into shards ---


def _build_all_buckets(
    work: Path, section_names: list[str], shards_dir: Path, pack: PackWriter, counts: _Counts
) -> list[bytes]:
    """Make every bucket's shards, packing those not on disk yet; return one `<name>\\0<digest>` entry per
    package name, in no order."""
    entries: list[bytes] = []
    compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
    pending = [(path, 0) for path in sorted(work.glob("0-*"))]
    while pending:
        path, depth = pending.pop()
        if path.stat().st_size > MAX_BUCKET_BYTES and depth < MAX_SPLIT_DEPTH:
            sub_buckets = _split_bucket(path, path.parent / f"{path.name}.split", depth + 1)
            if sub_buckets is not None:
                pending.extend((sub_path, depth + 1) for sub_path in sub_buckets)
                continue
        parts = _gather_bucket(path, section_names)
        path.unlink()
        for name, shard_parts in parts.items():
            shard = _compress(compressor, _shard_bytes(shard_parts))
            digest = hashlib.sha256(shard).digest()
            entries.append(b"%b\0%b" % (name.encode(), digest))
            counts.shard_bytes += len(shard)
            if _on_disk(shards_dir, digest, len(shard)):
                counts.reused += 1
            else:
                pack.add(digest, shard)
                counts.written += 1
                counts.bytes_written += len(shard)
    return entries


def _split_bucket(path: Path, folder: Path, depth: int) -> list[Path] | None:
    """Spread a large bucket over the next level's buckets; None when it holds one package name only."""
    names: set[str] = set()
    for name, *_ in _read_frames(path):
        names.add(name)
        if len(names) > 1:
            break
    if len(names) < 2:
        return None
    with _Buckets(folder, depth) as buckets:
        for name, section, filename, packed in _read_frames(path):
            buckets.add(_name_hash(name), _frame(name, section, filename, packed))
    path.unlink()
    return buckets.paths


def _gather_bucket(path: Path, section_names: list[str]) -> dict[str, _ShardParts]:
    parts: dict[str, _ShardParts] = {}
    for name, section, filename, packed in _read_frames(path):
        shard_parts = parts.get(name)
        if shard_parts is None:
            shard_parts = parts[name] = _ShardParts()
        if section == _REMOVED_SECTION:
            shard_parts.removed.add(filename)
        else:
            # A file name given twice keeps its last record, as json.load would.
            shard_parts.sections.setdefault(section_names[section], {})[filename] = packed
    return parts


def _shard_bytes(parts: _ShardParts) -> bytes:
    """The shard's msgpack, in rattler's key order, entries sorted by file name: same records, same bytes."""
    shard: dict[str, Any] = {section: _raw_map(parts.sections.get(section, {})) for section in RECORD_SECTIONS}
    v3_groups = sorted(
        section.removeprefix(f"{V3_KEY}/") for section in parts.sections if section.startswith(f"{V3_KEY}/")
    )
    if v3_groups:
        shard[V3_KEY] = {group: _raw_map(parts.sections[f"{V3_KEY}/{group}"]) for group in v3_groups}
    shard["removed"] = sorted(parts.removed)
    return _ENCODER.encode(shard)


def _raw_map(entries: dict[str, bytes]) -> dict[str, msgspec.Raw]:
    return {filename: msgspec.Raw(entries[filename]) for filename in sorted(entries)}


def _on_disk(shards_dir: Path, digest: bytes, size: int) -> bool:
    """Whether the shard has its file already (a file cut short by a crash after its rename is made again)."""
    try:
        return (shards_dir / shard_file_name(digest)).stat().st_size == size
    except FileNotFoundError:
        return False


def default_packs_dir(shards_dir: Path) -> Path:
    return shards_dir.parent / PACKS_DIR_NAME


def _new_temp_path(folder: Path, prefix: str) -> Path:
    return folder / f"{prefix}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


# --- the index ---


def _write_index(index_dir: Path, info: dict[str, Any], entries: list[bytes]) -> tuple[Path, str, int]:
    """Write the index from sorted entries, streamed through zstd; return its temporary path, sha256 and size."""
    packer = msgpack.Packer(use_bin_type=True)
    stream = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compressobj()
    digest, size = hashlib.sha256(), 0
    path = _new_temp_path(index_dir, f".{SHARDS_INDEX_NAME}")
    try:
        with path.open("xb") as handle:

            def emit(data: bytes) -> None:
                nonlocal size
                digest.update(data)
                size += len(data)
                handle.write(data)

            batch = bytearray(packer.pack_map_header(3))
            batch += packer.pack("version") + packer.pack(1) + packer.pack("info") + packer.pack(info)
            batch += packer.pack("shards") + packer.pack_map_header(len(entries))
            for entry in entries:
                name, _, shard_digest = entry.partition(b"\0")
                batch += packer.pack(name.decode()) + packer.pack(shard_digest)
                if len(batch) >= INDEX_WRITE_BATCH:
                    emit(stream.compress(bytes(batch)))
                    batch.clear()
            emit(stream.compress(bytes(batch)) + stream.flush())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def _compress(compressor: zstandard.ZstdCompressor, data: bytes) -> bytes:
    """zstd of `data`, streamed: no content size in the frame header, as rattler's indexer writes it."""
    stream = compressor.compressobj()
    return stream.compress(data) + stream.flush()


def read_shard_index(path: Path) -> ShardIndex:
    """Read a whole shard index (ours or anyone's); MalformedRepodata when it is not one."""
    info: dict[str, Any] = {}

    def keep_info(value: dict[str, Any]) -> None:
        info.update(value)

    names = {name: shard_file_name(digest) for name, digest in iter_shard_index(path, on_info=keep_info)}
    return ShardIndex(info, names)


def iter_shard_index(
    path: Path, on_info: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[tuple[str, bytes]]:
    """(package name, 32-byte shard digest) for each entry of a shard index, read as a stream.

    `on_info` is called with the index's info map when it is met. Raises MalformedRepodata on anything else than
    a shard index.
    """
    try:
        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            unpacker = msgpack.Unpacker(reader, strict_map_key=False, max_buffer_size=MAX_INDEX_BYTES)
            found_shards = found_info = False
            for _ in range(unpacker.read_map_header()):
                key = unpacker.unpack()
                if key == "shards":
                    found_shards = True
                    for _ in range(unpacker.read_map_header()):
                        name, digest = unpacker.unpack(), unpacker.unpack()
                        if not isinstance(name, str) or not isinstance(digest, bytes) or len(digest) != 32:
                            raise MalformedRepodata(f"{path.name}: bad shard entry for {name!r}")
                        yield name, digest
                elif key == "info":
                    value = unpacker.unpack()
                    found_info = isinstance(value, dict)
                    if found_info and on_info is not None:
                        on_info(value)
                else:
                    unpacker.skip()
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException, msgpack.OutOfData) as exc:
        raise MalformedRepodata(f"{path.name}: not a shard index ({exc})") from None
    if not (found_shards and found_info):
        raise MalformedRepodata(f"{path.name}: not a shard index (no 'info' or 'shards' map)")


# --- old shards ---


def _mark_dropped(previous_index: Path | None, shards_dir: Path, entries: list[bytes]) -> int:
    """Set the mtime of shards the previous index referenced and the sorted `entries` do not; return how many."""
    if previous_index is None or not previous_index.exists():
        return 0
    dropped = 0
    try:
        for name, old_digest in iter_shard_index(previous_index):
            key = name.encode() + b"\0"
            at = bisect.bisect_left(entries, key)
            if at < len(entries) and entries[at] == key + old_digest:
                continue  # still referenced: left untouched
            try:
                os.utime(shards_dir / shard_file_name(old_digest))
                dropped += 1
            except FileNotFoundError:
                pass
    except MalformedRepodata:
        pass  # nothing more can be learnt from it; those shards age from their own mtime
    return dropped


def unreferenced_shards(
    shards_dir: Path, index_path: Path, *, older_than: float, now: float | None = None
) -> list[Path]:
    """Files of `shards_dir` that the index at `index_path` does not reference, untouched for `older_than` s.

    A shard's mtime is when it was written or, if later, when a build dropped it from the index (see
    `build_shards`), so this lists shards that nobody could have been sent to for `older_than` seconds, plus
    temporary files left by an interrupted build. Raises MalformedRepodata if the index cannot be read: never
    prune from an index you cannot read.
    """
    referenced = {digest for _, digest in iter_shard_index(index_path)}
    limit = (time.time() if now is None else now) - older_than
    found = []
    for entry in os.scandir(shards_dir):
        if not entry.is_file(follow_symlinks=False):
            continue
        if entry.name.endswith(SHARD_SUFFIX):
            try:
                if bytes.fromhex(entry.name.removesuffix(SHARD_SUFFIX)) in referenced:
                    continue
            except ValueError:
                continue  # not a shard name: not ours to delete
        elif not entry.name.endswith(TEMP_SUFFIX):
            continue
        if entry.stat(follow_symlinks=False).st_mtime < limit:
            found.append(Path(entry.path))
    return sorted(found)


def stale_build_files(index_dir: Path, *, older_than: float, now: float | None = None) -> list[Path]:
    """Work folders (`.shard-build-*`) and temporary index files in `index_dir` left by builds that were killed.

    Only those untouched for `older_than` seconds, so that a build still running keeps its own. Folders are to be
    removed with their content (shutil.rmtree).
    """
    limit = (time.time() if now is None else now) - older_than
    found = []
    for entry in os.scandir(index_dir):
        is_work = entry.name.startswith(".shard-build-") and entry.is_dir(follow_symlinks=False)
        is_temp_index = entry.name.startswith(f".{SHARDS_INDEX_NAME}.") and entry.name.endswith(TEMP_SUFFIX)
        if (is_work or is_temp_index) and entry.stat(follow_symlinks=False).st_mtime < limit:
            found.append(Path(entry.path))
    return sorted(found)


# --- run as a program: `python -m pkgcache.conda.shard_builder '<json arguments>'` ---


def _run_from_command_line(arguments: str) -> int:
    """Build from JSON arguments (build_shards' names, paths as text) and print the result as one JSON line.

    The service runs builds this way, in a fresh interpreter that imports only this module and its few libraries
    (a spawned multiprocessing child would import the whole service again: about 50 MB more while building).
    """
    import json
    import sys

    given = json.loads(arguments)
    paths = {key: Path(value) for key, value in given.items() if key in _PATH_ARGUMENTS and value is not None}
    others = {key: value for key, value in given.items() if key not in _PATH_ARGUMENTS}
    try:
        result = build_shards(paths.pop("repodata_path"), paths.pop("shards_dir"), **paths, **others)
    except MalformedRepodata as exc:
        print(json.dumps({"malformed": str(exc)}))
        return 0
    summary = {key: str(value) if isinstance(value, Path) else value for key, value in result.__dict__.items()}
    print(json.dumps({"result": summary}))
    sys.stdout.flush()
    # The caller serves the index from here on (taking any shard asked for out of the pack itself); the rest of
    # the shards get their files now, and the pack goes.
    shards_dir = Path(given["shards_dir"])
    explode_packs(paths.get("packs_dir") or default_packs_dir(shards_dir), shards_dir)
    return 0


_PATH_ARGUMENTS = ("repodata_path", "shards_dir", "previous_index", "index_dir", "packs_dir")


if __name__ == "__main__":
    import sys

    raise SystemExit(_run_from_command_line(sys.argv[1]))
