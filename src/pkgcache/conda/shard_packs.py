"""Shard packs: the new shards of one build in one file, until each has a file of its own.

Creating a small file costs 20 us to 500 us on the disks pkgcache runs on, depending on what the file system's
journal is doing: 20,000 new shards (a 110 MB repodata's first build) took 0.4 to 9 s to create, more than the
rest of the build. So a build appends its new shards to one pack file instead (`<id>.pack`, the shard files' bytes
one after another) and writes a table of them (`<id>.table`: sorted entries of sha256, offset and length), and the
index is put in place as soon as the table is. Then the shards get their own files, `shards/<sha256>.msgpack.zst`
as everywhere else, in the background (`explode_packs`, run by the builder's process after it has reported), and
the pack is deleted. A shard asked for in between is taken out of its pack then and there (`extract_shard`), so
a client never waits for the rest.

A table is written after its pack, under a temporary name renamed in: a pack without a table is a build that did
not finish and is never read. Bytes taken from a pack are checked against their sha256 before they become a file.

Every pack of one build starts with the build's id (`new_build_id`; `build_packs` names them and removes them all
when the build fails, whichever process wrote them), and its writer holds a lock on it until its table is in
place: a pack without a table that nobody holds is an orphan, removed when the primary starts
(`remove_orphan_packs`).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import fcntl
import hashlib
import mmap
import os
import secrets
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

# Beside a subdir's `shards/` folder.
PACKS_DIR_NAME = "shard-packs"
PACK_SUFFIX = ".pack"
TABLE_SUFFIX = ".table"
SHARD_SUFFIX = ".msgpack.zst"
TEMP_SUFFIX = ".tmp"
# sha256, offset in the pack, length.
_ENTRY = struct.Struct(">32sQI")
# A pack without a table this old was left by a build that was killed.
ABANDONED_SECONDS = 3600.0
# New shard files up to this many are flushed one by one when a pack is exploded; more, with one os.sync.
FLUSH_ONE_BY_ONE = 256
# The id of the build this process (or thread) is making packs for: set by `build_packs`, inherited by the children
# a build forks, so that every pack of the build is named after it without each maker being told.
_BUILD_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("shard_build_id", default=None)


def new_build_id() -> str:
    """A build's id, the start of its packs' names: the time first, so that names sort oldest first."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def build_packs(packs_dir: Path, build_id: str) -> Iterator[None]:
    """Name the packs made inside (in this thread and the children it forks) after `build_id`; if the build fails,
    remove them all, tables included: a failed build's packs are referenced by no index (and a full disk must not
    fill up with one more at each client's retry)."""
    token = _BUILD_ID.set(build_id)
    try:
        yield
    except BaseException:
        discard_build(packs_dir, build_id)
        raise
    finally:
        _BUILD_ID.reset(token)


def discard_build(packs_dir: Path, build_id: str) -> None:
    """Remove every file of the build `build_id` in `packs_dir`: packs, tables and temporary tables."""
    try:
        names = os.listdir(packs_dir)
    except OSError:
        return
    for name in names:
        if name.startswith((f"{build_id}-", f".{build_id}-")):
            with contextlib.suppress(FileNotFoundError):
                (packs_dir / name).unlink()


class PackWriter:
    """Appends shards to a new pack in `packs_dir`; `close` writes its table (or removes it if it holds none)."""

    def __init__(self, packs_dir: Path) -> None:
        packs_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{_BUILD_ID.get() or new_build_id()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.pack_path = packs_dir / f"{stem}{PACK_SUFFIX}"
        self.table_path = packs_dir / f"{stem}{TABLE_SUFFIX}"
        self._handle = self.pack_path.open("xb")
        # Held until the table is in place (or the process ends): tells `remove_orphan_packs` it is being written.
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        self._entries: dict[bytes, bytes] = {}  # digest -> its table entry
        self._offset = 0

    def add(self, digest: bytes, shard: bytes) -> None:
        self._handle.write(shard)
        self._entries[digest] = _ENTRY.pack(digest, self._offset, len(shard))
        self._offset += len(shard)

    def forget(self, digest: bytes) -> None:
        """Leave a shard added before out of the table (its bytes stay in the pack, which goes as a whole)."""
        self._entries.pop(digest, None)

    @property
    def count(self) -> int:
        return len(self._entries)

    def close(self) -> Path | None:
        """Finish the pack: its table path, or None (and no files) when nothing was added. Both are on the disk
        when this returns: an index put in place after it must never name shards a power cut could take back."""
        if not self._entries:
            self.discard()
            return None
        self._handle.flush()
        os.fdatasync(self._handle.fileno())
        temporary = self.table_path.with_name(f".{self.table_path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            with temporary.open("xb") as table:
                table.write(b"".join(sorted(self._entries.values())))
                table.flush()
                os.fdatasync(table.fileno())
            temporary.replace(self.table_path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._handle.close()  # the lock goes with it: the pack has its table
        return self.table_path

    def discard(self) -> None:
        """Remove the pack, even when closing it fails (a full disk refuses the buffered bytes' flush)."""
        try:
            with contextlib.suppress(OSError):
                self._handle.close()
        finally:
            self.pack_path.unlink(missing_ok=True)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None:
            self.discard()


class _Digests:
    """The sha256 column of a mapped table, as a sequence for bisect."""

    def __init__(self, table: mmap.mmap) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table) // _ENTRY.size

    def __getitem__(self, at: int) -> bytes:
        start = at * _ENTRY.size
        return self._table[start : start + 32]


def _find(table_path: Path, digest: bytes) -> tuple[int, int] | None:
    """(offset, length) of the shard in the pack of `table_path`, or None."""
    with table_path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size < _ENTRY.size:
            return None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as table:
            digests = _Digests(table)
            at = bisect.bisect_left(digests, digest)
            if at == len(digests) or digests[at] != digest:
                return None
            _, offset, length = _ENTRY.unpack_from(table, at * _ENTRY.size)
            return offset, length


def discard_packs(tables: list[Path]) -> None:
    """Delete whole packs (their tables first: a pack without a table is never read) that will not be used."""
    for table in tables:
        table.unlink(missing_ok=True)
        table.with_suffix(PACK_SUFFIX).unlink(missing_ok=True)


def _tables(packs_dir: Path) -> list[Path]:
    try:
        return sorted(packs_dir.glob(f"*{TABLE_SUFFIX}"), reverse=True)  # newest first
    except OSError:
        return []


def extract_shard(packs_dir: Path, shards_dir: Path, shard_name: str) -> Path | None:
    """Give the shard `shard_name` its file from whichever pack holds it (blocking); None when none does.

    Safe against `explode_packs` running at the same time: both write the same bytes under the same name.
    """
    try:
        digest = bytes.fromhex(shard_name.removesuffix(SHARD_SUFFIX))
    except ValueError:
        return None
    for table_path in _tables(packs_dir):
        try:
            found = _find(table_path, digest)
            if found is None:
                continue
            with table_path.with_suffix(PACK_SUFFIX).open("rb") as pack:
                data = os.pread(pack.fileno(), found[1], found[0])
        except FileNotFoundError:
            continue  # exploded and removed meanwhile: the file is there now
        if hashlib.sha256(data).digest() != digest:
            continue  # a torn pack (power cut): never served; the shard is made again by the next build
        return _write_shard(shards_dir, digest, data)
    path = shards_dir / shard_name
    return path if path.is_file() else None


def explode_packs(packs_dir: Path, shards_dir: Path) -> int:
    """Give every shard in `packs_dir`'s packs its own file, then delete the packs; return how many files were
    written. Packs without a table are deleted once abandoned (see ABANDONED_SECONDS).

    A shard file is served as it is found (by any worker), so none may appear before its bytes are on the disk:
    the files are written under temporary names, flushed, renamed into place, and only once the renames are on
    the disk too do the packs, their only other copy, go. A few files (a rebuild's changed shards, a small
    channel's) are flushed one by one, and their folder; many (a first build's) all at once with `os.sync`
    (0.1 s for 5,000 files here, against 0.9 s one by one), which flushes the rest of the machine's too."""
    tables = sorted(_tables(packs_dir))
    staged = sum(_stage(table_path, shards_dir) for table_path in tables)
    if staged:
        one_by_one = staged <= FLUSH_ONE_BY_ONE
        if not one_by_one:
            os.sync()
        for table_path in tables:  # read again rather than remember 20,000 names (4 MB more for this process)
            for digest in _digests(table_path):
                with contextlib.suppress(FileNotFoundError):  # had its file, or was in an earlier pack too
                    temporary = _staged_path(shards_dir, digest)
                    if one_by_one:
                        _flush(temporary)
                    temporary.replace(shards_dir / f"{digest.hex()}{SHARD_SUFFIX}")
        if one_by_one:
            _flush(shards_dir)
        else:
            os.sync()
    for table_path in tables:
        table_path.unlink(missing_ok=True)
        table_path.with_suffix(PACK_SUFFIX).unlink(missing_ok=True)
    _remove_abandoned(packs_dir)
    return staged


def _stage(table_path: Path, shards_dir: Path) -> int:
    """Write the pack's shards that have no file of their size yet under temporary names; how many."""
    try:
        table = table_path.read_bytes()
        pack = table_path.with_suffix(PACK_SUFFIX).open("rb")
    except FileNotFoundError:
        return 0
    staged = 0
    with pack:
        for digest, offset, length in _ENTRY.iter_unpack(table[: len(table) - len(table) % _ENTRY.size]):
            try:
                if (shards_dir / f"{digest.hex()}{SHARD_SUFFIX}").stat().st_size == length:
                    continue
            except FileNotFoundError:
                pass
            data = os.pread(pack.fileno(), length, offset)
            if hashlib.sha256(data).digest() == digest:
                _staged_path(shards_dir, digest).write_bytes(data)
                staged += 1
    return staged


def _digests(table_path: Path) -> Iterator[bytes]:
    try:
        table = table_path.read_bytes()
    except FileNotFoundError:
        return
    for digest, _, _ in _ENTRY.iter_unpack(table[: len(table) - len(table) % _ENTRY.size]):
        yield digest


def _flush(path: Path) -> None:
    """A file's bytes, or a folder's names, to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _staged_path(shards_dir: Path, digest: bytes) -> Path:
    return shards_dir / f".{digest.hex()}.{os.getpid()}-staged{TEMP_SUFFIX}"


def _write_shard(shards_dir: Path, digest: bytes, data: bytes) -> Path:
    """One shard's file, flushed before it is renamed into place (its pack may go with the next explosion)."""
    path = shards_dir / f"{digest.hex()}{SHARD_SUFFIX}"
    temporary = shards_dir / f".{digest.hex()}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        with temporary.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fdatasync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _remove_abandoned(packs_dir: Path) -> None:
    limit = time.time() - ABANDONED_SECONDS
    try:
        entries = list(os.scandir(packs_dir))
    except OSError:
        return
    for entry in entries:
        is_orphan_pack = entry.name.endswith(PACK_SUFFIX) and not os.path.exists(
            entry.path.removesuffix(PACK_SUFFIX) + TABLE_SUFFIX
        )
        if (is_orphan_pack or entry.name.endswith(TEMP_SUFFIX)) and entry.stat().st_mtime < limit:
            Path(entry.path).unlink(missing_ok=True)


def remove_orphan_packs(conda_dir: Path) -> int:
    """Remove, in every subdir's packs folder under `conda_dir`, the packs without a table that no process is
    writing (nothing reads them: a build that failed or was killed left them) and their temporary tables; return
    how many files went (blocking). What the primary does as it starts; packs with a table are left to
    `explode_packs` (the index made here may list their shards)."""
    removed = 0
    for packs_dir in conda_dir.glob(f"*/*/*/{PACKS_DIR_NAME}"):
        try:
            names = os.listdir(packs_dir)
        except OSError:
            continue
        for name in names:
            stem = _orphan_stem(name, names)
            if stem is not None and not _being_written(packs_dir / f"{stem}{PACK_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    (packs_dir / name).unlink()
                    removed += 1
    return removed


def _orphan_stem(name: str, names: list[str]) -> str | None:
    """The pack stem of `name` when it is a pack without its table or a temporary table (`.<stem>.table.<hex>.tmp`);
    None for anything else."""
    if name.endswith(PACK_SUFFIX):
        stem = name.removesuffix(PACK_SUFFIX)
        return None if f"{stem}{TABLE_SUFFIX}" in names else stem
    if name.startswith(".") and name.endswith(TEMP_SUFFIX) and TABLE_SUFFIX in name:
        return name[1:].partition(TABLE_SUFFIX)[0]
    return None


def _being_written(pack: Path) -> bool:
    """Whether a process holds the pack's lock (its writer, until the table is in place)."""
    try:
        handle = pack.open("rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


if __name__ == "__main__":  # `python -m pkgcache.conda.shard_packs PACKS_DIR SHARDS_DIR`: what a builder ends with
    import sys

    from pkgcache.malloc_tuning import release_freed_memory_promptly

    release_freed_memory_promptly()

    explode_packs(Path(sys.argv[1]), Path(sys.argv[2]))
