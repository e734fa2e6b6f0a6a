"""A repodata's records sorted into bucket files by package name: the first half of making shards.

Each record is packed to msgpack (its sha256 and md5 as raw bytes, CEP-16) and written to one of 2**FANOUT_BITS
bucket files chosen by the CRC-32 of its package name; the second half (shard_builder) then makes the shards of
one bucket at a time, so memory is bounded by a bucket, whatever the repodata's size. A bucket entry is
`(package name, section number, file name, packed record or b"" for a removed file)`; entries are written a
group at a time, one msgpack array per group.

Reading: `repodata_runs` (msgspec, half a megabyte of records per call), a compressed file decompressed in a thread
of its own. A file that `repodata_runs` declines is read again from the start by `repodata_stream` (the standard
library's scanner, one record at a time), which also says what is wrong with a broken one. (Handing every other
run to a forked helper was tried: 0.69 -> 0.55 s on a 110 MB repodata.json, nothing on its .zst, whose
decompression already takes the second core, and more memory; not kept.)
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import msgspec
import zstandard

from pkgcache.conda.repodata_runs import Declined, RecordRun, iter_repodata_runs, read_ahead
from pkgcache.conda.repodata_stream import (
    Info,
    MalformedRepodata,
    Record,
    Removed,
    decompressed,
    iter_repodata_file,
)

FANOUT_BITS = 6
FANOUT_MASK = (1 << FANOUT_BITS) - 1
# A bucket larger than this is split again by the next FANOUT_BITS of its names' CRC-32, as long as bits remain.
MAX_BUCKET_BYTES = 4 << 20
MAX_SPLIT_DEPTH = 32 // FANOUT_BITS - 1
BUCKET_WRITE_BUFFER = 16 << 10  # entries come a group (tens of KB) at a time
BUCKET_READ_SIZE = 256 << 10
# Entries held in memory before the buckets are written: about a run of records (repodata_runs.RUN_BYTES).
FLUSH_ENTRIES = 4096
# The largest group of entries read back at once (a group holds up to FLUSH_ENTRIES records).
MAX_GROUP = 1 << 30
HASH_LENGTHS = {"sha256": 32, "md5": 16}
PACKAGE_EXTENSIONS = (".tar.bz2", ".conda", ".whl")
REMOVED_SECTION = 0

# msgspec's encoder writes the msgpack that msgpack-python's Packer(use_bin_type=True) writes, byte for byte (the
# shards test against py-rattler's indexer checks it), in one C call for a record or a group of entries.
ENCODER = msgspec.msgpack.Encoder()

log = logging.getLogger(__name__)

Entry = tuple[str, int, str, bytes]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass
class BucketCounts:
    records: int = 0
    records_skipped: int = 0  # records without a package name or not objects (rattler cannot read them): in no shard
    removed: int = 0
    removed_skipped: int = 0


@dataclass
class Bucketed:
    """The repodata in buckets: its info, the section names entries number, and each bucket's files."""

    info: dict[str, Any]
    section_names: list[str]
    buckets: list[list[Path]]


@dataclass
class ShardParts:
    """One package name's entries from a bucket: section -> file name -> packed record, and removed file names."""

    sections: dict[str, dict[str, bytes]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


def bucket_repodata(repodata_path: Path, work: Path, counts: BucketCounts, source: BinaryIO | None = None) -> Bucketed:
    """Read every record and removed name of `repodata_path` into bucket files under `work`.

    `source`, when given, is that file's bytes as they arrive (while it is being downloaded): they are read
    instead of the file, which is read only if the careful reader is needed, once `source` has ended (the file is
    whole on disk by then). Raises MalformedRepodata when the file is not a readable repodata.
    """
    try:
        return _bucket_items(work, counts, read_runs(repodata_path, source))
    except (Declined, MalformedRepodata) as exc:
        log.info("%s: read record by record (%s)", repodata_path.name, exc)
    if source is not None:
        while source.read(BUCKET_READ_SIZE):
            pass
    counts.records = counts.records_skipped = counts.removed = counts.removed_skipped = 0
    return _bucket_items(work, counts, _records_of(repodata_path))


def read_runs(
    repodata_path: Path, source: BinaryIO | None, *, raw_records: bool = False
) -> Iterator[RecordRun | Info | Removed]:
    """Runs of records read by msgspec (each record its `msgspec.Raw` text with `raw_records`); Declined when the
    file is not read that way."""
    try:
        with contextlib.ExitStack() as stack:
            raw = source if source is not None else stack.enter_context(repodata_path.open("rb"))
            binary = stack.enter_context(decompressed(repodata_path.name, raw))
            ahead = stack.enter_context(_decompressed_ahead(repodata_path, binary))
            yield from iter_repodata_runs(ahead, raw_records=raw_records, any_records=True)
    except (zstandard.ZstdError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise Declined(str(exc)) from None


@contextlib.contextmanager
def _decompressed_ahead(path: Path, binary: BinaryIO) -> Iterator[BinaryIO]:
    """A compressed repodata is decompressed in a thread of its own, on the second core (a third of the reading
    time for a .zst on this one); a plain file is read where it is used (a thread would only cost)."""
    if path.name.endswith((".zst", ".bz2")):
        with read_ahead(binary) as ahead:
            yield ahead
    else:
        yield binary


def _records_of(repodata_path: Path) -> Iterator[RecordRun | Info | Removed]:
    """Each record as a run of one, read by repodata_stream (which raises MalformedRepodata)."""
    for item in iter_repodata_file(repodata_path, any_records=True):
        yield RecordRun(item.section, {item.filename: item.record}) if type(item) is Record else item  # type: ignore[misc]


def _bucket_items(work: Path, counts: BucketCounts, items: Iterator[RecordRun | Info | Removed]) -> Bucketed:
    """Write the items into the first-level buckets (files `work/0-*`, emptied first)."""
    info: dict[str, Any] = {}
    sections = _Sections()
    with _Buckets(work, 0) as buckets:
        for item in items:
            if type(item) is RecordRun:
                _bucket_run(buckets, sections.number(item.section), item, counts)
            elif type(item) is Removed:
                _bucket_removed(buckets, item.filename, counts)
            elif type(item) is Info:
                info = item.info
    return Bucketed(info, sections.names, [[path] for path in buckets.paths])


# --- entries ---


class _Sections:
    """Section names <-> the numbers entries carry ("packages", "packages.conda", "v3/whl", ...)."""

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


def _bucket_names(depth: int) -> list[str]:
    return [f"{depth}-{number:02x}" for number in range(1 << FANOUT_BITS)]


class _Buckets:
    """2**FANOUT_BITS append-only bucket files, one level of the split; entries go by bits of the name's hash.

    Entries wait in memory per bucket and are written a group at a time: one call to msgspec for a thousand
    records instead of one per record.
    """

    def __init__(self, folder: Path, depth: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / name for name in _bucket_names(depth)]
        self.shift = depth * FANOUT_BITS
        self.pending: list[list[Entry]] = [[] for _ in self.paths]
        self.waiting = 0  # entries in `pending`; written past FLUSH_ENTRIES
        self._files: list[BinaryIO] = []
        try:
            for path in self.paths:
                self._files.append(path.open("wb", buffering=BUCKET_WRITE_BUFFER))
        except BaseException:
            self.close()
            raise

    def add(self, name: str, entry: Entry) -> None:
        self.pending[(zlib.crc32(name.encode()) >> self.shift) & FANOUT_MASK].append(entry)
        self.waiting += 1
        if self.waiting >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        for handle, entries in zip(self._files, self.pending, strict=True):
            if entries:
                handle.write(ENCODER.encode(entries))
                entries.clear()
        self.waiting = 0

    def close(self) -> None:
        try:
            if len(self._files) == len(self.paths):
                self.flush()
        finally:
            for handle in self._files:
                handle.close()

    def __enter__(self) -> _Buckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bucket_run(buckets: _Buckets, number: int, run: RecordRun, counts: BucketCounts) -> None:
    """Pack each record of the run and put it in its name's bucket, counted in `counts`. The builder's inner loop
    (218,834 turns for a 110 MB repodata), so written flat.

    A record without a name (not an object; its name missing, not a string, empty) is left out, counted, and the
    rest made into shards: rattler cannot read such a record ("missing field `name`", "invalid type"), and in a
    shard it would make the whole shard unreadable; the client of the JSON repodata skips it unless it looks for
    that very package."""
    pending, shift, encode, crc32, section = buckets.pending, buckets.shift, ENCODER.encode, zlib.crc32, run.section
    skipped = 0
    for filename, record in run.records.items():
        try:
            name = record.get("name")
        except AttributeError:  # not an object (a number, a list, a string...): no `get` (free unless raised)
            name = None
        if type(name) is not str or not name or "\0" in name:
            if skipped == 0 and counts.records_skipped == 0:
                what = "has no package name" if type(record) is dict else "is not an object"
                log.warning("%s/%s: the record %s, left out of the shards", section, filename, what)
            skipped += 1
            continue
        # Shards are looked up by normalized name, as rattler's PackageName does: ASCII letters lower-cased, and
        # nothing else (Python's lower() would fold the Kelvin sign into "k").
        name = name.lower() if name.isascii() else name.translate(_ASCII_LOWER)
        sha256, md5 = record.get("sha256"), record.get("md5")
        if sha256:  # absent, null or empty: kept as it is, as conda-index does
            record["sha256"] = _digest_bytes(section, filename, "sha256", sha256)
        if md5:
            record["md5"] = _digest_bytes(section, filename, "md5", md5)
        try:
            packed = encode(record)
        except (OverflowError, ValueError, TypeError) as exc:
            raise MalformedRepodata(f"{section}/{filename}: {exc}") from None
        pending[(crc32(name.encode()) >> shift) & FANOUT_MASK].append((name, number, filename, packed))
    buckets.waiting += len(run.records) - skipped
    counts.records += len(run.records) - skipped
    counts.records_skipped += skipped
    if buckets.waiting >= FLUSH_ENTRIES:
        buckets.flush()


def _bucket_removed(buckets: _Buckets, filename: str, counts: BucketCounts) -> None:
    name = name_from_file_name(filename)
    if name is None:
        counts.removed_skipped += 1
        return
    buckets.add(name, (name, REMOVED_SECTION, filename, b""))
    counts.removed += 1


def _digest_bytes(section: str, filename: str, key: str, value: Any) -> bytes:
    """A record's hex sha256 or md5 as raw bytes (CEP-16)."""
    try:
        digest = bytes.fromhex(value)
    except (TypeError, ValueError):
        digest = b""
    if len(digest) != HASH_LENGTHS[key]:
        raise MalformedRepodata(f"{section}/{filename}: {key} is not a hex digest: {value!r}")
    return digest


def name_from_file_name(filename: str) -> str | None:
    """The package name in `<name>-<version>-<build>.<ext>`, or None."""
    stem = next((filename[: -len(ext)] for ext in PACKAGE_EXTENSIONS if filename.endswith(ext)), None)
    parts = stem.rsplit("-", 2) if stem else []
    return parts[0].lower() if len(parts) == 3 and all(parts) else None


# --- reading buckets back ---


def read_entries(paths: list[Path]) -> Iterator[Entry]:
    for path in paths:
        with path.open("rb") as handle:
            unpacker = msgpack.Unpacker(handle, use_list=False, read_size=BUCKET_READ_SIZE, max_buffer_size=MAX_GROUP)
            for group in unpacker:
                yield from group


def bucket_size(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths)


def split_bucket(paths: list[Path], folder: Path, depth: int) -> list[list[Path]] | None:
    """Spread a large bucket over the next level's buckets; None when it holds one package name only."""
    names: set[str] = set()
    for name, *_ in read_entries(paths):
        names.add(name)
        if len(names) > 1:
            break
    if len(names) < 2:
        return None
    with _Buckets(folder, depth) as buckets:
        for entry in read_entries(paths):
            buckets.add(entry[0], entry)
    for path in paths:
        path.unlink()
    return [[path] for path in buckets.paths]


def gather_bucket(paths: list[Path], section_names: list[str]) -> dict[str, ShardParts]:
    """Package name -> its entries, for every name in the bucket."""
    parts: dict[str, ShardParts] = {}
    for name, section, filename, packed in read_entries(paths):
        shard_parts = parts.get(name)
        if shard_parts is None:
            shard_parts = parts[name] = ShardParts()
        if section == REMOVED_SECTION:
            shard_parts.removed.add(filename)
        else:
            # A file name given twice keeps its last record, as json.load would (entries are in file order).
            shard_parts.sections.setdefault(section_names[section], {})[filename] = packed
    return parts
