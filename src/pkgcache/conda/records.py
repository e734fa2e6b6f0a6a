"""Finding one package's record (sha256, size) in a channel's repodata, without loading the whole file.

conda-forge's repodata.json is hundreds of MB: parsing it to check one package would cost seconds and gigabytes.
Records are keyed by file name, so the file is scanned as a stream (decompressed on the fly when it is .zst or
.bz2) for `"<filename>": {`, and only that object is parsed. Memory stays at a few MB whatever the file's size.
"""

from __future__ import annotations

import bz2
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import zstandard

CHUNK = 4 * 1024 * 1024
# A record is a few KB; this much after its key is always enough to hold it whole.
RECORD_WINDOW = 1024 * 1024


def find_record(repodata: Path, filename: str) -> dict[str, Any] | None:
    """The record of `filename` in a repodata file (.json, .json.zst or .json.bz2), or None (blocking)."""
    pattern = re.compile(b'"' + re.escape(filename.encode()) + rb'"\s*:\s*\{')
    keep = len(filename) + 64  # enough overlap for a key split across two chunks
    buffer = b""
    with _open_decompressed(repodata) as stream:
        chunks = _chunks(stream)
        for chunk in chunks:
            buffer += chunk
            match = pattern.search(buffer)
            if match is None:
                buffer = buffer[-keep:]
                continue
            start = match.end() - 1  # the opening brace
            while len(buffer) - start < RECORD_WINDOW:
                more = next(chunks, b"")
                if not more:
                    break
                buffer += more
            return _parse_object(buffer[start : start + RECORD_WINDOW])
    return None


def _open_decompressed(path: Path) -> IO[bytes]:
    if path.name.endswith(".zst"):
        raw = path.open("rb")
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[return-value]
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return path.open("rb")


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _parse_object(window: bytes) -> dict[str, Any] | None:
    try:
        record, _ = json.JSONDecoder().raw_decode(window.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def expected_of(record: dict[str, Any]) -> tuple[dict[str, str], int | None]:
    """The hashes and size a package must have according to its record."""
    hashes = {name: str(record[name]).lower() for name in ("sha256", "md5") if isinstance(record.get(name), str)}
    size = record.get("size")
    return hashes, size if isinstance(size, int) else None
