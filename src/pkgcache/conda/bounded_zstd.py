"""Decompressing zstd bytes that came from a mirror, with a cap on what they may become that holds.

python-zstandard's one-shot `decompress` allocates whatever size a frame's header declares, up front, and ignores
`max_output_size` when the header declares one: 16 bytes from a mirror claiming a terabyte were a MemoryError, and
a few hundred KB claiming a GB filled one. So the frames are read as a stream, and what they produce is counted.
"""

from __future__ import annotations

from typing import BinaryIO

import zstandard

CHUNK = 1 << 20
FRAME_HEADER_MAX = 18  # bytes: the longest a zstd frame header can be (the format's own bound)


class DecompressedTooLarge(ValueError):
    """The bytes decompress (or say they decompress) to more than allowed."""


def decompress_within(data: bytes, limit: int) -> bytes:
    """Every frame of `data` decompressed; DecompressedTooLarge past `limit` bytes, before they are made, and
    zstandard.ZstdError when `data` is not zstd."""
    _refuse_declared_over(data, limit)
    return _read_within(data, limit)


def decompress_file_within(handle: BinaryIO, limit: int) -> bytes:
    """`decompress_within` for an open file (read from its start), which is never held whole: only what it
    decompresses to, up to `limit`."""
    handle.seek(0)
    _refuse_declared_over(handle.read(FRAME_HEADER_MAX), limit)
    handle.seek(0)
    return _read_within(handle, limit)


def _read_within(source: bytes | BinaryIO, limit: int) -> bytes:
    chunks: list[bytes] = []
    produced = 0
    with zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False) as reader:
        while chunk := reader.read(CHUNK):
            produced += len(chunk)
            if produced > limit:
                raise DecompressedTooLarge(f"decompresses to more than the {limit} bytes allowed")
            chunks.append(chunk)
    return b"".join(chunks)


def _refuse_declared_over(data: bytes, limit: int) -> None:
    """Refuse at once a first frame whose header declares more than `limit` (the count would, later)."""
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        return  # not a frame header: the decompression says what is wrong
    if declared > limit:
        raise DecompressedTooLarge(f"its header declares {declared} bytes, more than the {limit} allowed")
