"""Where a build's shards go: compressed, named by their sha256, and packed unless their file exists already.

Both ways of making shards end here (shard_builder's buckets, sorted_shards' stretches of a sorted repodata), each
process with its own `ShardOutput` and its own pack: the same msgpack gives the same file, whichever way made it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pkgcache.conda.shard_packs import PackWriter

SHARD_SUFFIX = ".msgpack.zst"
# Shards: zstd's fastest regular level but one (-1), streamed (no content size in the frame header). Every build
# compresses every shard to learn its name, so this is a third of a build's CPU at the default level (3); on a
# shard of a few records the two make files of the same size (the pytorch channel in rattler's test data: 163 kB
# in 49 shards either way; 11% more on the bench's random records), and -1 takes 0.13 s off a 110 MB build.
SHARD_COMPRESSION_LEVEL = -1
# The index: one file, mostly digests; zstd's default level.
INDEX_COMPRESSION_LEVEL = 3


@dataclass
class OutputCounts:
    written: int = 0  # shards packed by this build
    reused: int = 0  # shards whose file was there already, with the same bytes: left untouched
    bytes_written: int = 0  # bytes packed, shards made again included
    shard_bytes: int = 0  # total size of the shards the index will reference


def shard_file_name(digest: bytes) -> str:
    return f"{digest.hex()}{SHARD_SUFFIX}"


class ShardOutput:
    """Takes each package's shard (its msgpack), keeps `<name>\\0<digest>` for the index, packs new ones.

    A name given twice keeps its last shard (sorted_shards makes a shard again when `removed` names it late); the
    first one is left out of the pack's table if it was packed.
    """

    def __init__(self, shards_dir: Path, pack: PackWriter) -> None:
        self.shards_dir = shards_dir
        self.pack = pack
        self.counts = OutputCounts()
        self._compressor = zstandard.ZstdCompressor(level=SHARD_COMPRESSION_LEVEL)
        self._on_disk = _names_in(shards_dir)
        self._made: dict[str, tuple[bytes, int, bool]] = {}  # name -> digest, size, packed here

    def add(self, name: str, shard: bytes) -> None:
        stream = self._compressor.compressobj()
        data = stream.compress(shard) + stream.flush()
        digest = hashlib.sha256(data).digest()
        earlier = self._made.get(name)
        if earlier is not None:
            self._take_back(*earlier)
        packed = not self._has_file(digest, len(data))
        if packed:
            self.pack.add(digest, data)
            self.counts.written += 1
            self.counts.bytes_written += len(data)
        else:
            self.counts.reused += 1
        self.counts.shard_bytes += len(data)
        self._made[name] = (digest, len(data), packed)

    def entries(self) -> list[bytes]:
        """One `<name>\\0<digest>` per package name, in no order (names hold no NUL)."""
        return [b"%b\0%b" % (name.encode(), digest) for name, (digest, _, _) in self._made.items()]

    def _take_back(self, digest: bytes, size: int, packed: bool) -> None:
        self.counts.shard_bytes -= size
        if packed:
            self.pack.forget(digest)
            self.counts.written -= 1
        else:
            self.counts.reused -= 1

    def _has_file(self, digest: bytes, size: int) -> bool:
        """Whether the shard has its file already (a file cut short by a crash after its rename is made again)."""
        name = shard_file_name(digest)
        if name not in self._on_disk:
            return False
        try:
            return (self.shards_dir / name).stat().st_size == size
        except FileNotFoundError:
            return False


def _names_in(shards_dir: Path) -> frozenset[str]:
    """The file names in the shards folder: one listing instead of a stat per shard (most are new on a first
    build)."""
    try:
        return frozenset(os.listdir(shards_dir))
    except FileNotFoundError:
        return frozenset()


# --- a forked child's failure, told to its parent ---


def failure_outcome(exc: BaseException) -> dict[str, object]:
    """What a child making shards sends back when it fails: its error in words, and the errno of a disk's refusal,
    so that a full disk stays a full disk (a 507) once it reaches the service."""
    outcome: dict[str, object] = {"error": f"{type(exc).__name__}: {exc}", "errno": None, "filename": None}
    if isinstance(exc, OSError):
        outcome["errno"] = exc.errno
        # Where the disk refused: the operator's to fix.
        outcome["filename"] = None if exc.filename is None else str(exc.filename)
    return outcome


def raise_failure(outcome: dict[str, object], what: str) -> None:
    """Raise a child's failure as an OSError (with its errno when it had one); nothing when the child succeeded."""
    if "error" not in outcome:
        return
    code = outcome.get("errno")
    message = f"{what}: {outcome['error']}"
    raise OSError(code, message, outcome.get("filename")) if isinstance(code, int) else OSError(message)
