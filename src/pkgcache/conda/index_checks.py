"""Is this index file what it claims to be? Checked before it may replace a good copy.

A mirror that answers `repodata.json` with an HTML error page (and a 200) must not replace the good copy: every
package of the subdir would 404 after it. Each kind of index file gets a check of its shape, run in a worker thread
on the downloaded file, streaming, so that a repodata.json of hundreds of MB costs little memory:
- JSON files must be one JSON object (when small, every byte of its syntax checked, by msgspec, which makes no
  objects of what it reads; for a big one, its first and last bytes and, being repodata, the `"packages"` key near
  its start);
- `.zst` and `.bz2` must decompress (their checksums are verified on the way) to such an object;
- the CEP-16 shard index must be msgpack holding `info` and `shards` maps, read within the bounds that its rewrite
  and each package's lookup read it in (a few KB of it may not become GBs of memory).
"""

from __future__ import annotations

import bz2
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec
import zstandard

from pkgcache.conda.base_url import REPODATA_NAMES
from pkgcache.conda.channels import SHARD_INDEX
from pkgcache.conda.upstream_shard_index import InvalidShardIndex, read_shard_index
from pkgcache.storage.downloads import ContentCheck, IntegrityError

CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_FRAME_HEADER_MAX = 18  # bytes: the longest a zstd frame header can be (the format's own bound)
# JSON up to this size (decompressed) is checked whole: its text is held for that, in the writing worker, beside
# whatever else it holds (a shard build's download, say), so this bounds the check's memory. Bigger files get the
# streaming checks (and a .zst its own checksum, when its frames have one). (It was 32 MB, parsed by json.loads:
# a 30 MB repodata.json then cost the worker 135 MB, and the 32 MB of chunks held before a bigger one was known
# to be bigger put the bench's shard build over the memory budget.)
PARSE_WHOLE_BYTES = 8 << 20
# Where a repodata file's "packages" key must appear by (after "info", which is small).
PACKAGES_KEY_WITHIN = 1 << 20
# The most an index file may be, as it arrives (decoded from any gzip on the wire) and, for .zst and .bz2, as its
# JSON: past it, the mirror's answer is refused as a fault of that mirror, and nothing of it is kept. The biggest real
# one, conda-forge's linux-64 repodata.json, is a few hundred MB and grows by tens of MB a year; 2 GiB leaves years of
# margin, while a mirror's ~1 MB of gzip (or a zstd frame of a few KB) can no longer become a cache entry (or a check)
# of any size it likes.
MAX_INDEX_BYTES = 2 << 30


def max_size_of_index() -> int:
    """The cap on an index file's size (read when a download starts, so tests may lower it)."""
    return MAX_INDEX_BYTES


def magic_of_index(filename: str) -> tuple[bytes, ...]:
    """What an index file's bytes (as they arrive, decoded from any gzip on the wire) start with."""
    if filename.endswith(".zst"):
        return (ZSTD_MAGIC,)
    if filename.endswith(".bz2"):
        return (b"BZh",)
    if filename.endswith(".json"):
        return (b"{",)  # conda's JSON indexes are objects, written without leading space
    return ()


def is_repodata_name(filename: str) -> bool:
    """Whether a file of this name is a repodata (in any of its forms): by its exact name, never by how it starts
    (`repodata.json.refused.json`, beside a filtered repodata, is not one)."""
    return filename in REPODATA_NAMES


def content_check_for(filename: str) -> ContentCheck | None:
    """The check for an index file of this name; None for files with no shape to check."""
    if filename == SHARD_INDEX:
        return _check_shard_index
    base = filename.removesuffix(".zst").removesuffix(".bz2")
    if not base.endswith(".json"):
        return None  # repodata.jlap: text with its own checksums, read by clients that check them
    repodata = is_repodata_name(filename)

    def check(path: Path) -> None:
        size = _decompressed_size(path, filename)
        with _open_decompressed(path, filename) as stream:
            _check_json_object(_chunks(stream), repodata, whole=size is None or size <= PARSE_WHOLE_BYTES)

    return check


def _decompressed_size(path: Path, filename: str) -> int | None:
    """The size of the JSON text when it is known before reading it: a plain file's, or what a .zst frame's
    header says (writers that know it put it there); None otherwise."""
    if filename.endswith(".json"):
        return path.stat().st_size
    if filename.endswith(".zst"):
        with path.open("rb") as handle:
            header = handle.read(ZSTD_FRAME_HEADER_MAX)
        try:
            size = zstandard.frame_content_size(header)
        except zstandard.ZstdError:
            return None  # not zstd: the decompression says so
        return size if size >= 0 else None
    return None


def _open_decompressed(path: Path, filename: str) -> IO[bytes]:
    if filename.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)  # type: ignore[return-value]
    if filename.endswith(".bz2"):
        return bz2.open(path, "rb")
    return path.open("rb")


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The decompressed text, refused past the index files' cap: a small .zst or .bz2 may decompress to any size,
    and the check must not read (nor a shard build later) a terabyte of it."""
    limit = max_size_of_index()
    produced = 0
    try:
        while chunk := stream.read(CHUNK):
            produced += len(chunk)
            if produced > limit:
                raise IntegrityError(f"decompresses to more than the {limit} bytes an index file may have")
            yield chunk
    except (zstandard.ZstdError, OSError, EOFError, ValueError) as exc:
        raise IntegrityError(f"does not decompress: {exc}") from None


def _check_json_object(chunks: Iterator[bytes], repodata: bool, whole: bool) -> None:
    """`whole`: keep the text (up to PARSE_WHOLE_BYTES) to check all of it; False when it is known to be bigger."""
    head = b""
    text: bytearray | None = bytearray() if whole else None
    last = b""
    for chunk in chunks:
        if len(head) < PACKAGES_KEY_WITHIN:
            head += chunk[: PACKAGES_KEY_WITHIN - len(head)]
        if text is not None:
            if len(text) + len(chunk) > PARSE_WHOLE_BYTES:
                text = None  # bigger than that: the streaming checks only
            else:
                text += chunk
        if chunk.strip():
            last = chunk.rstrip()[-1:]
    start = head.lstrip()[:1]
    if start != b"{" or last != b"}":
        kind = "an HTML page" if start == b"<" else "not a JSON object"
        raise IntegrityError(f"{kind} (starts with {head.lstrip()[:40]!r})")
    if text is not None:
        _check_whole(text, repodata)
    elif repodata and b'"packages' not in head:
        raise IntegrityError('a big JSON object without the repodata\'s "packages"')


# The top level's members, each value's syntax checked as msgspec skips over it (no objects are made of it).
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _check_whole(text: bytearray, repodata: bool) -> None:
    try:
        members = _TOP_LEVEL.decode(text)
    except msgspec.ValidationError:
        raise IntegrityError("not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"not valid JSON: {exc}") from None
    if repodata and not any(key in members for key in ("packages", "packages.conda")):
        raise IntegrityError("repodata without packages")


def _check_shard_index(path: Path) -> None:
    """Read as the rewrite and the package lookups read it, within the same bounds (conda/upstream_shard_index.py)."""
    try:
        read_shard_index(path)
    except InvalidShardIndex as exc:
        raise IntegrityError(str(exc)) from None
