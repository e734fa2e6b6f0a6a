"""An upstream's CEP-16 shard index, read within bounds: by its check, its rewrite and each package's lookup.

The index is a mirror's bytes: a few KB of zstd may decompress to a GB, and msgpack decoded into Python objects
costs many times its size (a nil becomes an 8-byte list slot, an empty map a 64-byte dict). So the index is
decompressed up to MAX_SHARD_INDEX_BYTES, and decoded against the shape CEP-16 gives it, never as any objects it
likes: the top level and `info` as maps of at most MAX_MAP_MEMBERS members, whose values are kept undecoded (bytes
that are only skipped over, checked for syntax), and `shards` as a map of package names to 32-byte digests. Unknown
top-level keys are allowed (CEP-16: implementers SHOULD ignore unknown keys) and kept as they were by the rewrite.

The name -> digest map of each index kept is remembered (`ShardNames`): a package request looks its name up in it
instead of decoding the index again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
import zstandard

from pkgcache.conda.bounded_zstd import decompress_file_within

# The most an upstream's shard index may decompress to. A real one is a few MB at most: each package name of the
# subdir with its 32-byte digest, and conda-forge's linux-64, the biggest, has ~30k names (~1.5 MB). 64 MB is ~40
# times that (a channel of a million names would fit), while what a mirror can make us hold stays bounded: decoded,
# a map of names at this size is ~250 MB (1.8M short names), for the time of a check.
MAX_SHARD_INDEX_BYTES = 64 << 20
# The most members the top level and `info` may have. CEP-16 names three of each (`version`, `info`, `shards`;
# `base_url`, `shards_base_url`, `created_at`) and allows more; a mirror's millions of tiny members would each be
# a Python object.
MAX_MAP_MEMBERS = 1024
DIGEST_BYTES = 32  # sha256

Digest = Annotated[bytes, msgspec.Meta(min_length=DIGEST_BYTES, max_length=DIGEST_BYTES)]
_MEMBERS = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_SHARDS = msgspec.msgpack.Decoder(dict[str, Digest])
_TEXT = msgspec.msgpack.Decoder(str)


class InvalidShardIndex(ValueError):
    """The bytes are not a shard index (or one bigger than any real one)."""


@dataclass(frozen=True)
class UpstreamShardIndex:
    """A shard index as read: the top level and `info` with their values undecoded, and the shards map."""

    members: dict[str, msgspec.Raw]
    info: dict[str, msgspec.Raw]
    shards: dict[str, bytes]

    def info_text(self, key: str) -> str:
        """A text member of `info`; "" when absent or not text."""
        raw = self.info.get(key)
        if raw is None:
            return ""
        try:
            return _TEXT.decode(raw)
        except msgspec.DecodeError:  # ValidationError included
            return ""


def read_shard_index(path: Path) -> UpstreamShardIndex:
    """Read a shard index file (blocking); InvalidShardIndex when it is not one, OSError when it cannot be read."""
    with path.open("rb") as handle:
        return _read(handle)


def _read(handle: BinaryIO) -> UpstreamShardIndex:
    try:
        raw = decompress_file_within(handle, MAX_SHARD_INDEX_BYTES)
    except (zstandard.ZstdError, ValueError) as exc:  # DecompressedTooLarge is a ValueError
        raise InvalidShardIndex(f"not a shard index: {exc}") from None
    members = _small_map(raw, "the top level")
    if "info" not in members:
        raise InvalidShardIndex("a shard index without its 'info' map")
    if "shards" not in members:
        raise InvalidShardIndex("a shard index without its 'shards' map")
    info = _small_map(members["info"], "its 'info'")
    try:
        shards = _SHARDS.decode(members["shards"])
    except msgspec.DecodeError as exc:
        raise InvalidShardIndex(f"a shard index whose 'shards' is not a map of names to digests: {exc}") from None
    return UpstreamShardIndex(members, info, shards)


def _small_map(raw: bytes | msgspec.Raw, what: str) -> dict[str, msgspec.Raw]:
    """A msgpack map of at most MAX_MAP_MEMBERS members, its values undecoded (their syntax checked)."""
    try:
        return bounded_map(raw, MAX_MAP_MEMBERS)
    except InvalidShardIndex as exc:
        raise InvalidShardIndex(f"a shard index whose {what} {exc}") from None


def bounded_map(raw: bytes | msgspec.Raw, most: int) -> dict[str, msgspec.Raw]:
    """A msgpack map of text keys and at most `most` members, its values undecoded (their syntax checked): its
    size is read from its header before anything is decoded. InvalidShardIndex otherwise. Also used for shards
    (conda/shards.py), whose sections are maps of file names to records."""
    with memoryview(raw) as view:
        size = _map_size(view[:5])
    if size is None:
        raise InvalidShardIndex("is not a map")
    if size > most:
        raise InvalidShardIndex(f"has {size} members, more than {most}")
    try:
        return _MEMBERS.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidShardIndex(f"is not a map of names: {exc}") from None


def _map_size(head: memoryview) -> int | None:
    """The member count a msgpack map header at the start of `head` says; None when it is no map header."""
    if not head:
        return None
    first = head[0]
    if 0x80 <= first <= 0x8F:  # fixmap
        return first & 0x0F
    if first == 0xDE and len(head) >= 3:  # map 16
        return int.from_bytes(head[1:3], "big")
    if first == 0xDF and len(head) >= 5:  # map 32
        return int.from_bytes(head[1:5], "big")
    return None


def encode_index(members: dict[str, msgspec.Raw], info: dict[str, msgspec.Raw]) -> bytes:
    """The msgpack of a shard index with this `info`, every other member as it was."""
    encoded_info = msgspec.Raw(msgspec.msgpack.encode(info))
    return msgspec.msgpack.encode({key: encoded_info if key == "info" else value for key, value in members.items()})


def text(value: str) -> msgspec.Raw:
    return msgspec.Raw(msgspec.msgpack.encode(value))


# How many indexes' names are remembered, and how many names in all (an index past it is still remembered alone):
# a few subdirs of real channels (~30k names each) are remembered; the maps of a mirror's indexes at the size cap
# (~1.8M names, ~250 MB) are not heaped up.
NAMES_KEPT_INDEXES = 8
NAMES_KEPT_TOTAL = 1_000_000

_FileKey = tuple[int, int, int]  # inode, mtime_ns, size: a file replaced (by a rename) has another


class ShardNames:
    """The name -> digest map of each shard index file read, remembered while the file is the same one.

    Looked up at each package request (in worker threads): the index is decoded once per version of its file.
    A file that is not a shard index is remembered as such too (a damaged copy is not read again per request).
    """

    def __init__(self, indexes: int = NAMES_KEPT_INDEXES, total: int = NAMES_KEPT_TOTAL) -> None:
        self._indexes = indexes
        self._total = total
        self._lock = threading.Lock()
        self._kept: OrderedDict[Path, tuple[_FileKey, dict[str, bytes] | InvalidShardIndex]] = OrderedDict()
        self._reading: dict[Path, threading.Lock] = {}  # one reader per file at a time; the others wait for it

    def names(self, path: Path) -> dict[str, bytes]:
        """The index's map (not to be changed); InvalidShardIndex or OSError when it cannot be read (blocking)."""
        with path.open("rb") as handle:
            status = os.fstat(handle.fileno())
            key = (status.st_ino, status.st_mtime_ns, status.st_size)
            with self._lock:
                reading = self._reading.setdefault(path, threading.Lock())
            with reading:
                kept = self._kept_for(path, key)
                if kept is None:
                    try:
                        kept = _read(handle).shards
                    except InvalidShardIndex as exc:
                        kept = exc
                    self._keep(path, key, kept)
        if isinstance(kept, InvalidShardIndex):
            raise InvalidShardIndex(str(kept))
        return kept

    def forget(self) -> None:
        with self._lock:
            self._kept.clear()

    def _kept_for(self, path: Path, key: _FileKey) -> dict[str, bytes] | InvalidShardIndex | None:
        with self._lock:
            found = self._kept.get(path)
            if found is None or found[0] != key:
                return None
            self._kept.move_to_end(path)
            return found[1]

    def _keep(self, path: Path, key: _FileKey, kept: dict[str, bytes] | InvalidShardIndex) -> None:
        with self._lock:
            self._kept[path] = (key, kept)
            self._kept.move_to_end(path)
            while len(self._kept) > 1 and (len(self._kept) > self._indexes or self._names() > self._total):
                self._kept.popitem(last=False)

    def _names(self) -> int:
        return sum(len(kept) for _, kept in self._kept.values() if isinstance(kept, dict))
