"""CEP-16 sharded repodata made from a cached repodata.json, in bounded memory, content-addressed on disk.

No domestic mirror serves shards, so pkgcache makes them: one shard per package name,
`<shards_dir>/<sha256 of the file's bytes>.msgpack.zst`, holding `{"packages": {...}, "packages.conda": {...},
["v3": {...},] "removed": [...]}` (zstd-compressed msgpack), and an index `repodata_shards.msgpack.zst` holding
`{"version": 1, "info": {subdir, base_url, shards_base_url, created_at}, "shards": {name: 32-byte sha256}}`.
Records are repodata.json's own, key for key and in the same order; only `sha256` and `md5` become raw bytes, as
CEP-16 says and as conda, mamba and rattler read them. Everything else (`legacy_bz2_md5` included) stays as it is
in the JSON, which is what conda-index does and what all three clients accept.

`build_shards` is blocking code for a process of its own (the service runs `python -m` this module). It sorts the
repodata's records into bucket files by package name (`shard_buckets`: msgspec, half a megabyte of records per call),
then makes the shards of one bucket at a time, half of the buckets in a forked child when there is a second
core; a bucket too large to hold is split again by the next bits of the hash. So memory stays bounded by the
bucket size, the largest single package's shard and the index (about 100 bytes per package name), whatever the
repodata's size: see `tests/test_shard_builder.py` for the measured bound. A sorted repodata (the shape indexers
write) has its shards made while it is read instead (`sorted_shards`: this process finds each package's records
and spills their JSON text; forked makers, one per core but the reader's, decode, pack, compress and hash them);
whatever that
way declines is built from buckets.

On disk: a shard whose bytes did not change keeps its file (not rewritten, its mtime untouched); new shards are
appended to a pack (`shard_packs`: one file instead of thousands, then given their own files after the build has
reported). The index is written last, to a temporary path that the caller renames into place once it is ready to
serve it. The builder deletes no shard: shards dropped from the index keep their files for clients still holding
the previous index. It marks them instead, by setting their mtime to the build time, so that
`unreferenced_shards` can tell how long a shard has been unreferenced.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import msgpack
import msgspec
import zstandard

from pkgcache.conda.repodata_runs import Declined
from pkgcache.conda.repodata_stream import (
    RECORD_SECTIONS,
    V3_KEY,
    MalformedRepodata,
)
from pkgcache.conda.shard_buckets import (
    ENCODER,
    MAX_BUCKET_BYTES,
    MAX_SPLIT_DEPTH,
    BucketCounts,
    ShardParts,
    bucket_repodata,
    bucket_size,
    gather_bucket,
    split_bucket,
)
from pkgcache.conda.shard_output import (
    INDEX_COMPRESSION_LEVEL,
    SHARD_SUFFIX,
    OutputCounts,
    ShardOutput,
    failure_outcome,
    raise_failure,
    shard_file_name,
)
from pkgcache.conda.shard_packs import PACKS_DIR_NAME, PackWriter, build_packs, new_build_id
from pkgcache.conda.sorted_shards import Rewindable, build_sorted

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
# Processes making shards at once (this one and forked children), one per core up to this: the shards are most
# of a first build's time after the download, and each process holds a bucket or so (a few MB).
MAX_PROCESSES = 4
TEMP_SUFFIX = ".tmp"
INDEX_WRITE_BATCH = 256 << 10

log = logging.getLogger(__name__)
# The largest single msgpack object accepted when an index is read back (conda-forge's whole index is < 1 MB).
MAX_INDEX_BYTES = 256 << 20
# What one msgpack object of an index may be when it is read back: ours hold names, 32-byte digests and a small info
# map. msgpack makes a list or a map of the length its header says at once, so a damaged length (or another's index)
# would otherwise cost up to MAX_INDEX_BYTES slots of 8 bytes; and the info map may hold no more than
# MAX_INFO_CONTAINERS maps and lists in all (each a Python object of ~60 bytes from 1 byte of msgpack). The shards
# map's own length is read as a header, iterated, never allocated.
INDEX_OBJECT_LIMITS = {
    "max_str_len": 1 << 16,
    "max_bin_len": 1 << 16,
    "max_array_len": 1 << 16,
    "max_map_len": 1 << 16,
    "max_ext_len": 0,
}
MAX_INFO_CONTAINERS = 1024


@dataclass(frozen=True)
class ShardBuildResult:
    """What one build made. The caller renames `index_temp_path` into place (or deletes it)."""

    index_temp_path: Path
    pack_tables: list[Path]  # the packs holding the new shards (shard_packs), none when there were none
    index_sha256: str  # hex digest of the index file's bytes: a strong ETag for it
    index_size: int
    subdir: str
    created_at: str  # as written in the index's info
    shards: int  # package names in the index, one shard each
    records: int  # package records put into shards
    records_skipped: int  # records without a package name or not objects, left out (rattler cannot read them)
    removed: int  # entries of "removed" put into shards
    removed_skipped: int  # entries of "removed" whose file name names no package
    shards_written: int
    shards_reused: int  # already on disk with the same bytes, left untouched
    shards_dropped: int  # referenced by `previous_index`, not by this one: mtime set to now
    bytes_written: int  # new shard files plus the index
    shard_bytes: int  # total size of the shards the index references
    seconds: float
    made_while_reading: bool  # the repodata was sorted (sorted_shards), not sorted into buckets first


@dataclass(frozen=True)
class ShardIndex:
    """A shard index read back: its info map and package name -> shard file name."""

    info: dict[str, Any]
    shards: dict[str, str]


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
    source: BinaryIO | None = None,
    processes: int | None = None,
    build_id: str | None = None,
) -> ShardBuildResult:
    """Build the shards of one subdir from `repodata_path` (.json, .json.zst or .json.bz2), blocking.

    `base_url` and `shards_base_url` go into the index exactly as given (relative to the index, or absolute).
    `subdir` defaults to the repodata's `info.subdir`. `previous_index` is the index now served, if any: shards it
    references and the new one does not are marked as dropped now (their mtime). The index is written to a
    temporary file in `index_dir` (default: the folder above `shards_dir`, where the index lives beside it).
    Shards not on disk yet are written to one pack in `packs_dir` (default: `shard-packs` beside `shards_dir`):
    `shard_packs.explode_packs` gives them their own files afterwards, `extract_shard` one of them meanwhile.
    `source`: the repodata's bytes as they are downloaded, read instead of the file (see `bucket_repodata`).
    `processes`: how many processes make shards, this one included; None: one per core up to MAX_PROCESSES. (A
    sorted repodata has that many forked makers, beside this process reading it: the lighter share.) With 1
    nothing is forked (what a caller with threads of its own needs: a small repodata built in the service).
    `build_id`: what the build's packs are named after (`shard_packs.new_build_id`; a new one when None): a build
    that fails removes them all, and so can its caller if the builder was killed (`shard_packs.discard_build`).

    Raises `MalformedRepodata` when the repodata cannot be read or is not repodata: the whole file is read before
    any shard is written, so nothing is written then. OSError when writing fails (no pack is left then; complete
    shard files may be: they are content-addressed and harmless). A build killed midway leaves a `.shard-build-*`
    folder in `index_dir` and temporary files: `stale_build_files` lists them.
    """
    started = time.monotonic()
    shards_dir.mkdir(parents=True, exist_ok=True)
    index_dir = index_dir if index_dir is not None else shards_dir.parent
    stamp = (created_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    counts, read = OutputCounts(), BucketCounts()
    packs_dir = packs_dir or default_packs_dir(shards_dir)
    rewindable = Rewindable(source) if source is not None else None
    stream = cast("BinaryIO | None", rewindable)  # read as the stream it wraps is
    with build_packs(packs_dir, build_id or new_build_id()):  # a build that fails leaves no pack
        with tempfile.TemporaryDirectory(prefix=".shard-build-", dir=index_dir) as work:
            made = None
            if hasattr(os, "fork") and processes != 1:
                made = _build_sorted(repodata_path, stream, Path(work), shards_dir, packs_dir, read, counts, processes)
            if made is None:
                read, counts = BucketCounts(), OutputCounts()
                if stream is not None and rewindable is not None and not rewindable.rewind():
                    _drain(stream)  # the file is whole once its download has ended
                    stream = None
                bucketed = bucket_repodata(repodata_path, Path(work), read, stream)
                if subdir is None:
                    _text_field(bucketed.info, "subdir")
                entries, pack_tables = _build_in_parallel(
                    bucketed.buckets, bucketed.section_names, shards_dir, packs_dir, counts, processes
                )
                info = bucketed.info
            else:
                info, entries, pack_tables = made
        subdir = subdir or _text_field(info, "subdir")
        # One bytes object per package name, `<name>\0<digest>`: sorted, they are in name order (names hold no NUL).
        entries.sort()
        index_info = {"subdir": subdir, "base_url": base_url, "shards_base_url": shards_base_url, "created_at": stamp}
        index_temp_path, index_sha256, index_size = _write_index(index_dir, index_info, entries)
        dropped = _mark_dropped(previous_index, shards_dir, entries)
    return ShardBuildResult(
        index_temp_path=index_temp_path,
        pack_tables=pack_tables,
        index_sha256=index_sha256,
        index_size=index_size,
        subdir=subdir,
        created_at=stamp,
        shards=len(entries),
        records=read.records,
        records_skipped=read.records_skipped,
        removed=read.removed,
        removed_skipped=read.removed_skipped,
        shards_written=counts.written,
        shards_reused=counts.reused,
        shards_dropped=dropped,
        bytes_written=counts.bytes_written + index_size,
        shard_bytes=counts.shard_bytes,
        seconds=time.monotonic() - started,
        made_while_reading=made is not None,
    )


def _build_sorted(
    repodata_path: Path,
    source: BinaryIO | None,
    work: Path,
    shards_dir: Path,
    packs_dir: Path,
    read: BucketCounts,
    counts: OutputCounts,
    processes: int | None,
) -> tuple[dict[str, Any], list[bytes], list[Path]] | None:
    """The shards made as the repodata is read, when it is sorted (sorted_shards), by forked children; None when
    it is not, and then nothing is left of the attempt."""
    # One maker per core but the reader's: the reader reads, then makes what its makers have no room for
    # (sorted_shards), so every core makes shards by the end. A maker on the reader's core too is no faster once
    # the reader shares the work (on 2 cores, the bench's 110 MB repodata.json: 1.24 s with two makers, 1.19 with
    # one, by hand), and each maker costs 10-13 MB of PSS: the service's tree with a second one peaked at the
    # issue's 150 MB budget (table 9 of BENCHMARKS.md, 2026-12-02), with one it stays near 143.
    makers = max(1, min(processes or MAX_PROCESSES, os.cpu_count() or 1) - 1)
    try:
        made = build_sorted(repodata_path, source, work, shards_dir, packs_dir, read, makers)
    except Declined as exc:
        log.info("%s: shards made from buckets (%s)", repodata_path.name, exc)
        return None
    _add_counts(counts, made.counts)
    return made.info, made.entries, made.tables


def _drain(source: BinaryIO) -> None:
    while source.read(1 << 20):
        pass


def _text_field(info: dict[str, Any], key: str) -> str:
    value = info.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedRepodata(f"no info.{key} in the repodata, and none given")
    return value


# --- buckets into shards ---


def _build_in_parallel(
    buckets: list[list[Path]],
    section_names: list[str],
    shards_dir: Path,
    packs_dir: Path,
    counts: OutputCounts,
    processes: int | None,
) -> tuple[list[bytes], list[Path]]:
    """Make the shards of every bucket, shared among this process and forked children, one per further core up
    to MAX_PROCESSES unless `processes` says how many (the buckets are independent: each process packs its own
    new shards); return the `<name>\\0<digest>` entries, in no order, and the pack tables written."""
    processes = min(processes or MAX_PROCESSES, os.cpu_count() or 1, len(buckets)) if hasattr(os, "fork") else 1
    children = [_fork_builder(buckets[number::processes], section_names, shards_dir, packs_dir)
                for number in range(1, processes)]  # fmt: skip
    try:
        entries, tables = _build_buckets(buckets[0::processes], section_names, shards_dir, packs_dir, counts)
    finally:
        outcomes = [_outcome_of(*child) for child in children]
    for outcome in outcomes:
        raise_failure(outcome, "building shards")
        _add_counts(counts, outcome["counts"])
        entries += outcome["entries"]
        tables += [Path(table) for table in outcome["tables"]]
    return entries, tables


def _fork_builder(
    buckets: list[list[Path]], section_names: list[str], shards_dir: Path, packs_dir: Path
) -> tuple[int, int]:
    """A child process making the shards of `buckets`; (its pid, the pipe its outcome comes back through)."""
    reader, writer = os.pipe()
    child = os.fork()
    if child:
        os.close(writer)
        return child, reader
    os.close(reader)
    status = 1
    try:
        mine = OutputCounts()
        entries, tables = _build_buckets(buckets, section_names, shards_dir, packs_dir, mine)
        outcome = {"entries": entries, "tables": [str(t) for t in tables], "counts": mine.__dict__}
        status = 0
    except BaseException as exc:
        outcome = failure_outcome(exc)
    with os.fdopen(writer, "wb") as pipe:
        pipe.write(msgpack.packb(outcome))
    os._exit(status)


def _outcome_of(child: int, reader: int) -> dict[str, Any]:
    with os.fdopen(reader, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(child, 0)
    return msgpack.unpackb(answer) if answer else {"error": "a child making shards died"}  # type: ignore[no-any-return]


def _build_buckets(
    buckets: list[list[Path]], section_names: list[str], shards_dir: Path, packs_dir: Path, counts: OutputCounts
) -> tuple[list[bytes], list[Path]]:
    with PackWriter(packs_dir) as pack:
        output = ShardOutput(shards_dir, pack)
        _build_all_buckets(buckets, section_names, output)
        table = pack.close()
    _add_counts(counts, output.counts)
    return output.entries(), [table] if table is not None else []


def _build_all_buckets(buckets: list[list[Path]], section_names: list[str], output: ShardOutput) -> None:
    """Make the buckets' shards (a bucket too large to hold is split again first)."""
    pending = [(paths, 0) for paths in buckets]
    while pending:
        paths, depth = pending.pop()
        if bucket_size(paths) > MAX_BUCKET_BYTES and depth < MAX_SPLIT_DEPTH:
            sub_buckets = split_bucket(paths, paths[0].parent / f"{paths[0].name}.split", depth + 1)
            if sub_buckets is not None:
                pending.extend((sub_paths, depth + 1) for sub_paths in sub_buckets)
                continue
        parts = gather_bucket(paths, section_names)
        for path in paths:
            path.unlink()
        for name, shard_parts in parts.items():
            output.add(name, _shard_bytes(shard_parts))


def _add_counts(total: OutputCounts, more: OutputCounts | dict[str, int]) -> None:
    for key, value in (more if isinstance(more, dict) else more.__dict__).items():
        setattr(total, key, getattr(total, key) + value)


def _shard_bytes(parts: ShardParts) -> bytes:
    """The shard's msgpack, in rattler's key order, entries sorted by file name: same records, same bytes."""
    shard: dict[str, Any] = {section: _raw_map(parts.sections.get(section, {})) for section in RECORD_SECTIONS}
    v3_groups = sorted(
        section.removeprefix(f"{V3_KEY}/") for section in parts.sections if section.startswith(f"{V3_KEY}/")
    )
    if v3_groups:
        shard[V3_KEY] = {group: _raw_map(parts.sections[f"{V3_KEY}/{group}"]) for group in v3_groups}
    shard["removed"] = sorted(parts.removed)
    return ENCODER.encode(shard)


def _raw_map(entries: dict[str, bytes]) -> dict[str, msgspec.Raw]:
    return {filename: msgspec.Raw(entries[filename]) for filename in sorted(entries)}


def default_packs_dir(shards_dir: Path) -> Path:
    return shards_dir.parent / PACKS_DIR_NAME


def _new_temp_path(folder: Path, prefix: str) -> Path:
    return folder / f"{prefix}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


# --- the index ---


def _write_index(index_dir: Path, info: dict[str, Any], entries: list[bytes]) -> tuple[Path, str, int]:
    """Write the index from sorted entries, streamed through zstd; return its temporary path, sha256 and size."""
    packer = msgpack.Packer(use_bin_type=True)
    stream = zstandard.ZstdCompressor(level=INDEX_COMPRESSION_LEVEL).compressobj()
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
        containers = 0

        def counted(container: Any) -> Any:
            nonlocal containers
            containers += 1
            if containers > MAX_INFO_CONTAINERS:
                raise MalformedRepodata(f"{path.name}: more than {MAX_INFO_CONTAINERS} maps and lists in its info")
            return container

        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            unpacker = msgpack.Unpacker(
                reader,
                strict_map_key=False,
                max_buffer_size=MAX_INDEX_BYTES,
                object_hook=counted,
                list_hook=counted,
                **INDEX_OBJECT_LIMITS,
            )
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


# --- run as a program: `python -m pkgcache.conda.shard_builder '<json arguments>'`, or `-` to read them ---


def _run_from_command_line(arguments: str) -> int:
    """Build from JSON arguments (build_shards' names, paths as text) and print the result as one JSON line.

    The service runs builds this way, in a fresh interpreter that imports only this module and its few libraries
    (a spawned multiprocessing child would import the whole service again: about 50 MB more while building).
    `-` for the arguments: they are the first line of standard input, so that the service can start the
    interpreter before it knows them (generated_shards' spare builder); no line at all, and it ends at once.
    With `"from_stdin": true` the repodata's bytes come on standard input (after that line) as they are
    downloaded. SIGTERM ends the build cleanly (its work folder and unfinished pack removed).
    """
    import gc
    import json
    import signal
    import sys

    from pkgcache.malloc_tuning import release_freed_memory_promptly

    release_freed_memory_promptly()  # before its reader child is forked: both move the repodata through buffers

    # A build makes millions of containers that hold no cycles (decoded records) and drops them a run at a time:
    # the collector's passes over them find nothing and cost a tenth of the build. The process ends after it.
    gc.disable()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if arguments == "-":
        arguments = sys.stdin.buffer.readline().decode()
        if not arguments.strip():
            return 0  # not needed after all
    given = json.loads(arguments)
    from_stdin = bool(given.pop("from_stdin", False))
    paths: dict[str, Any] = {key: Path(value) for key, value in given.items() if key in _PATH_ARGUMENTS and value}
    others: dict[str, Any] = {key: value for key, value in given.items() if key not in _PATH_ARGUMENTS}
    source = sys.stdin.buffer if from_stdin else None
    try:
        result = build_shards(paths.pop("repodata_path"), paths.pop("shards_dir"), **paths, **others, source=source)
    except MalformedRepodata as exc:
        print(json.dumps({"malformed": str(exc)}))
        return 0
    except OSError as exc:  # the cache's disk (full, read-only): the service answers it as its own storage error
        where = None if exc.filename is None else str(exc.filename)  # the operator's to fix
        failure = {"errno": exc.errno, "message": exc.strerror or str(exc), "filename": where}
        print(json.dumps({"storage": failure}))
        return 0
    summary = {key: _as_json(value) for key, value in result.__dict__.items()}
    print(json.dumps({"result": summary}))
    sys.stdout.flush()
    # The caller serves the index from here on (taking any shard asked for out of the pack itself) and may start
    # its next build. The rest of the shards get their files now, and the pack goes: seconds on a busy disk, so in
    # a fresh interpreter that loads only shard_packs (the same process, exec'd: the caller waits for it as
    # before), which gives back the build's memory first instead of holding it beside the next build.
    shards_dir = Path(given["shards_dir"])
    packs_dir = paths.get("packs_dir") or default_packs_dir(shards_dir)
    os.execv(sys.executable, [sys.executable, "-m", "pkgcache.conda.shard_packs", str(packs_dir), str(shards_dir)])


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(143)


def _as_json(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    return [_as_json(item) for item in value] if isinstance(value, list) else value


_PATH_ARGUMENTS = ("repodata_path", "shards_dir", "previous_index", "index_dir", "packs_dir")


if __name__ == "__main__":
    import sys

    raise SystemExit(_run_from_command_line(sys.argv[1]))
