"""Decompressing zstd bytes that came from a mirror, with a cap on what they may become that holds.

python-zstandard's one-shot `decompress` allocates whatever size a frame's header declares, up front, and ignores
`max_output_size` when the header declares one: 16 bytes from a mirror claiming a terabyte were a MemoryError, and
a few hundred KB claiming a GB filled one. So the frames are read as a stream, and what they produce is counted.
"""

from __future__ import annotations

import zstandard

CHUNK = 1 << 20


class DecompressedTooLarge(ValueError):
    """The bytes decompress (or say they decompress) to more than allowed."""


def decompress_within(data: bytes, limit: int) -> bytes:
    """Every frame of `data` decompressed; DecompressedTooLarge past `limit` bytes, before they are made, and
    zstandard.ZstdError when `data` is not zstd."""
    _refuse_declared_over(data, limit)
    chunks: list[bytes] = []
    produced = 0
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
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
