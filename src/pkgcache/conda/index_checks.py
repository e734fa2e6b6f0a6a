"""Is this index file what it claims to be? Checked before it may replace a good copy.

A mirror that answers `repodata.json` with an HTML error page (and a 200) must not replace the good copy: every
package of the subdir would 404 after it. Each kind of index file gets a check of its shape, run in a worker thread
on the downloaded file, streaming, so that a repodata.json of hundreds of MB costs little memory:
- JSON files must be one JSON object (parsed whole when small; for a big one, its first and last bytes and, being
  repodata, the `"packages"` key near its start);
- `.zst` and `.bz2` must decompress (their checksums are verified on the way) to such an object;
- the CEP-16 shard index must be msgpack holding `info` and `shards` maps.
"""

from __future__ import annotations

import bz2
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgpack
import zstandard

from pkgcache.storage.downloads import ContentCheck, IntegrityError

CHUNK = 1 << 20
# JSON smaller than this is parsed whole (a few times its size in memory); bigger files get the streaming checks.
PARSE_WHOLE_BYTES = 32 << 20
# Where a repodata file's "packages" key must appear by (after "info", which is small).
PACKAGES_KEY_WITHIN = 1 << 20
MAX_SHARD_INDEX_BYTES = 1 << 30


def content_check_for(filename: str) -> ContentCheck | None:
    """The check for an index file of this name; None for files with no shape to check."""
    if filename.endswith(".msgpack.zst"):
        return _check_shard_index
    base = filename.removesuffix(".zst").removesuffix(".bz2")
    if not base.endswith(".json"):
        return None  # repodata.jlap: text with its own checksums, read by clients that check them
    repodata = base.startswith(("repodata", "current_repodata"))

    def check(path: Path) -> None:
        with _open_decompressed(path, filename) as stream:
            _check_json_object(_chunks(stream), repodata)

    return check


def _open_decompressed(path: Path, filename: str) -> IO[bytes]:
    if filename.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)  # type: ignore[return-value]
    if filename.endswith(".bz2"):
        return bz2.open(path, "rb")
    return path.open("rb")


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := stream.read(CHUNK):
            yield chunk
    except (zstandard.ZstdError, OSError, EOFError, ValueError) as exc:
        raise IntegrityError(f"does not decompress: {exc}") from None


def _check_json_object(chunks: Iterator[bytes], repodata: bool) -> None:
    head = b""
    whole: list[bytes] | None = []
    size = 0
    last = b""
    for chunk in chunks:
        size += len(chunk)
        if len(head) < PACKAGES_KEY_WITHIN:
            head += chunk[: PACKAGES_KEY_WITHIN - len(head)]
        if whole is not None:
            whole.append(chunk)
            if size > PARSE_WHOLE_BYTES:
                whole = None
        if chunk.strip():
            last = chunk.rstrip()[-1:]
    start = head.lstrip()[:1]
    if start != b"{" or last != b"}":
        kind = "an HTML page" if start == b"<" else "not a JSON object"
        raise IntegrityError(f"{kind} (starts with {head.lstrip()[:40]!r})")
    if whole is not None:
        _parse_whole(b"".join(whole), repodata)
    elif repodata and b'"packages' not in head:
        raise IntegrityError('a big JSON object without the repodata\'s "packages"')


def _parse_whole(body: bytes, repodata: bool) -> None:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise IntegrityError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise IntegrityError("not a JSON object")
    if repodata and not any(key in document for key in ("packages", "packages.conda")):
        raise IntegrityError("repodata without packages")


def _check_shard_index(path: Path) -> None:
    try:
        raw = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=MAX_SHARD_INDEX_BYTES)
        document = msgpack.unpackb(raw, strict_map_key=False)
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise IntegrityError(f"not a shard index: {exc}") from None
    if not (isinstance(document, dict) and isinstance(document.get("info"), dict)):
        raise IntegrityError("a shard index without its 'info' map")
    if not isinstance(document.get("shards"), dict):
        raise IntegrityError("a shard index without its 'shards' map")
