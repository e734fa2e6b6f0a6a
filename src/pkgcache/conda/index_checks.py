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

A repodata or shard index that names its subdir (`info.subdir`) must name the one it was asked for: a mirror that
answers linux-64/repodata.json with noarch's (a sync script's slip, a misrouted rewrite) gives a sound file that
would make every linux-64 package unknown. `info` is read where it is cheap: all of a small file is decoded
anyway; in a big one it is looked for in its first and its last megabyte of text (indexers write it first, some
last). An `info` in the middle of a big file, behind more than a megabyte of other members, is not read: that
file's subdir goes unchecked. The records' own `subdir` fields are not read (that is a pass over every record).
Another channel's repodata of the same subdir cannot be told from the bytes at all: repodata does not name its
channel.
"""

from __future__ import annotations

import bz2
import json
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec
import zstandard

from pkgcache.conda.base_url import REPODATA_NAMES, Undecided, find_info
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
# How much of a big repodata's end is kept to find an `info` written last.
INFO_TAIL_BYTES = 1 << 20
# How many `,"info":{` in it are tried, last first (each try may read to the end of the tail).
INFO_CANDIDATES = 8
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


def content_check_for(filename: str, subdir: str | None = None) -> ContentCheck | None:
    """The check for an index file of this name; None for files with no shape to check. `subdir`: the subdir it
    was asked for (None for a channel's own files), which a repodata or shard index naming its subdir must name."""
    if filename == SHARD_INDEX:
        return lambda path: _check_shard_index(path, subdir)
    base = filename.removesuffix(".zst").removesuffix(".bz2")
    if not base.endswith(".json"):
        return None  # repodata.jlap: text with its own checksums, read by clients that check them
    repodata = is_repodata_name(filename)
    of_subdir = subdir if repodata else None

    def check(path: Path) -> None:
        size = _decompressed_size(path, filename)
        with _open_decompressed(path, filename) as stream:
            _check_json_object(_chunks(stream), repodata, size is None or size <= PARSE_WHOLE_BYTES, of_subdir)

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


def _check_json_object(chunks: Iterator[bytes], repodata: bool, whole: bool, subdir: str | None = None) -> None:
    """`whole`: keep the text (up to PARSE_WHOLE_BYTES) to check all of it; False when it is known to be bigger.
    `subdir`: the subdir a repodata naming its own must name."""
    head = b""
    text: bytearray | None = bytearray() if whole else None
    # The last chunks, by reference (no copy of each chunk: a big repodata is hundreds of them), enough of them to
    # hold INFO_TAIL_BYTES.
    tail: deque[bytes] = deque()
    in_tail = 0
    total = 0
    last = b""
    for chunk in chunks:
        total += len(chunk)
        if len(head) < PACKAGES_KEY_WITHIN:
            head += chunk[: PACKAGES_KEY_WITHIN - len(head)]
        if text is not None:
            if len(text) + len(chunk) > PARSE_WHOLE_BYTES:
                text = None  # bigger than that: the streaming checks only
            else:
                text += chunk
        if subdir is not None:
            tail.append(chunk)
            in_tail += len(chunk)
            while in_tail - len(tail[0]) >= INFO_TAIL_BYTES:
                in_tail -= len(tail.popleft())
        last = _last_non_space(chunk) or last
    start = head.lstrip()[:1]
    if start != b"{" or last != b"}":
        kind = "an HTML page" if start == b"<" else "not a JSON object"
        raise IntegrityError(f"{kind} (starts with {head.lstrip()[:40]!r})")
    if text is not None:
        _check_whole(text, repodata, subdir)
        return
    if repodata and b'"packages' not in head:
        raise IntegrityError('a big JSON object without the repodata\'s "packages"')
    if subdir is not None:
        _check_subdir(_info_at_either_end(head, b"".join(tail)[-INFO_TAIL_BYTES:], total), subdir)


def _last_non_space(chunk: bytes) -> bytes:
    """The chunk's last byte that is not JSON whitespace (b"" if none), found from the end without a copy."""
    at = len(chunk) - 1
    while at >= 0 and chunk[at] in _JSON_SPACE:
        at -= 1
    return chunk[at : at + 1]


_JSON_SPACE = frozenset(b" \t\n\r")


# The top level's members, each value's syntax checked as msgspec skips over it (no objects are made of it).
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _check_whole(text: bytearray, repodata: bool, subdir: str | None = None) -> None:
    try:
        members = _TOP_LEVEL.decode(text)
    except msgspec.ValidationError:
        raise IntegrityError("not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"not valid JSON: {exc}") from None
    if repodata and not any(key in members for key in ("packages", "packages.conda")):
        raise IntegrityError("repodata without packages")
    if subdir is not None and "info" in members:
        try:
            info = msgspec.json.decode(members["info"])
        except msgspec.DecodeError:
            return  # its syntax was checked: a value too deep for the decoder; the subdir goes unchecked
        _check_subdir(info, subdir)


def _check_subdir(info: object, subdir: str) -> None:
    """A repodata's (or shard index's) `info` that names a subdir names `subdir`; anything else is not judged."""
    said = info.get("subdir") if isinstance(info, dict) else None
    if isinstance(said, str) and said != subdir:
        raise IntegrityError(f"the index of subdir {said!r}, asked for {subdir!r}")


# A top-level member "info" written after others: `,"info":{` (its value must then end the document or be
# followed only by top-level members, which _members_to_end checks).
_INFO_KEY = re.compile(r',[ \t\n\r]*"info"[ \t\n\r]*:[ \t\n\r]*(?=\{)')
_SPACE = re.compile(r"[ \t\n\r]*")


def _info_at_either_end(head: bytes, tail: bytes, total: int) -> object:
    """The top-level `info` of a big repodata when its first or last megabyte shows it; None otherwise."""
    try:
        place = find_info(head, whole=False)
    except Undecided:
        pass
    else:
        return place.info if place is not None else None
    if total > len(tail):
        tail = _from_character_start(tail)
    try:
        text = tail.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    for match in list(_INFO_KEY.finditer(text))[-INFO_CANDIDATES:][::-1]:
        try:
            value, end = decoder.raw_decode(text, match.end())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and _members_to_end(decoder, text, end):
            return value
    return None


def _from_character_start(tail: bytes) -> bytes:
    """A tail cut from a longer text, without the bytes of a character cut at its start."""
    skip = 0
    while skip < 4 and skip < len(tail) and 0x80 <= tail[skip] < 0xC0:
        skip += 1
    return tail[skip:]


def _members_to_end(decoder: json.JSONDecoder, text: str, pos: int) -> bool:
    """Whether `text` from `pos` is `(, "key": value)* }` and then only whitespace: what follows a value of the
    top-level object (one closing brace only: the value was not inside another)."""
    while True:
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "}":
            return not text[pos + 1 :].strip(" \t\n\r")
        if text[pos : pos + 1] != ",":
            return False
        try:
            key, pos = decoder.raw_decode(text, _skip(text, pos + 1))
            pos = _skip(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                return False
            _, pos = decoder.raw_decode(text, _skip(text, pos + 1))
        except json.JSONDecodeError:
            return False


def _skip(text: str, pos: int) -> int:
    found = _SPACE.match(text, pos)
    return found.end() if found is not None else pos


def _check_shard_index(path: Path, subdir: str | None = None) -> None:
    """Read as the rewrite and the package lookups read it, within the same bounds (conda/upstream_shard_index.py)."""
    try:
        index = read_shard_index(path)
    except InvalidShardIndex as exc:
        raise IntegrityError(str(exc)) from None
    said = index.info_text("subdir")
    if subdir is not None and said and said != subdir:
        raise IntegrityError(f"the shard index of subdir {said!r}, asked for {subdir!r}")
