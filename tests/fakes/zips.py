"""ZIP archives written byte by byte, for wheels with layouts that build tools rarely make.

`zipfile` cannot be told to write ZIP64 records for a small archive, a data descriptor on a seekable file, or a
long local extra field; this writer can. Tests check every archive it makes with `zipfile` too, so a bug here
cannot hide one in the reader under test. Also: helpers to doctor an archive's records, for lying-archive tests.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

STORED = 0
DEFLATED = 8
BZIP2 = 12
LZMA = 14
_DOS_TIME, _DOS_DATE = 0, (2024 - 1980) << 9 | 1 << 5 | 1  # 2024-01-01 00:00, fixed for reproducible bytes
_FLAG_LZMA_END_MARKER = 0x0002
_FLAG_DATA_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
_ZIP64_MARK = 0xFFFFFFFF


@dataclass(frozen=True)
class ZipMember:
    name: str
    data: bytes
    method: int = DEFLATED
    local_extra: bytes = b""  # extra bytes in the local header only (the central directory does not repeat them)


@dataclass(frozen=True)
class _Written:
    member: ZipMember
    offset: int
    crc: int
    compressed_size: int
    flags: int


def build_zip(
    members: Sequence[ZipMember], *, zip64: bool = False, data_descriptor: bool = False, comment: bytes = b""
) -> bytes:
    """An archive of `members` in this order; `zip64` writes every size and offset in ZIP64 form. Over 65,535
    members, the end record's counts are in a ZIP64 end record whatever `zip64` says."""
    out = bytearray()
    written = [_write_member(out, member, zip64=zip64, data_descriptor=data_descriptor) for member in members]
    directory_offset = len(out)
    for entry in written:
        out += _central_header(entry, zip64=zip64)
    directory_size = len(out) - directory_offset
    if zip64 or len(written) > 0xFFFF:
        zip64_offset = len(out)
        out += struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, len(written), len(written), directory_size, directory_offset
        )
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_offset, 1)
        out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, _ZIP64_MARK, _ZIP64_MARK, len(comment))
    else:
        out += struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, len(written), len(written), directory_size, directory_offset, len(comment)
        )
    return bytes(out + comment)


# LZMA1 with preset 6's settings, spelled out: lc=3, lp=0, pb=2 and an 8 MiB dictionary.
_LZMA_OPTIONS = {"id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 8 * 1024 * 1024}


def _compress(member: ZipMember) -> bytes:
    if member.method == STORED:
        return member.data
    if member.method == BZIP2:
        return bz2.compress(member.data)
    if member.method == LZMA:
        # The LZMA SDK's version (9.4, as zipfile writes it), the properties' length, the properties (lc, lp, pb
        # packed in one byte; the dictionary size), then the raw stream, which ends with an end marker.
        properties = struct.pack("<BL", (2 * 5 + 0) * 9 + 3, _LZMA_OPTIONS["dict_size"])
        stream = lzma.compress(member.data, format=lzma.FORMAT_RAW, filters=[_LZMA_OPTIONS])
        return struct.pack("<BBH", 9, 4, len(properties)) + properties + stream
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(member.data) + compressor.flush()


def _write_member(out: bytearray, member: ZipMember, *, zip64: bool, data_descriptor: bool) -> _Written:
    offset = len(out)
    compressed = _compress(member)
    crc = zlib.crc32(member.data)
    name = member.name.encode()
    flags = (_FLAG_DATA_DESCRIPTOR if data_descriptor else 0) | (_FLAG_UTF8 if not member.name.isascii() else 0)
    flags |= _FLAG_LZMA_END_MARKER if member.method == LZMA else 0
    local_crc, local_compressed, local_size = (0, 0, 0) if data_descriptor else (crc, len(compressed), len(member.data))
    extra = member.local_extra
    if zip64:
        extra = struct.pack("<2H2Q", 1, 16, local_size, local_compressed) + extra
        local_compressed = local_size = _ZIP64_MARK
    out += struct.pack(
        "<4s5H3L2H",
        b"PK\x03\x04",
        45 if zip64 else 20,
        flags,
        member.method,
        _DOS_TIME,
        _DOS_DATE,
        local_crc,
        local_compressed,
        local_size,
        len(name),
        len(extra),
    )
    out += name + extra + compressed
    if data_descriptor:
        sizes = struct.pack("<2Q" if zip64 else "<2L", len(compressed), len(member.data))
        out += b"PK\x07\x08" + struct.pack("<L", crc) + sizes
    return _Written(member, offset, crc, len(compressed), flags)


def _central_header(entry: _Written, *, zip64: bool) -> bytes:
    name = entry.member.name.encode()
    size, compressed, offset = len(entry.member.data), entry.compressed_size, entry.offset
    extra = b""
    if zip64:
        extra = struct.pack("<2H3Q", 1, 24, size, compressed, offset)
        size = compressed = offset = _ZIP64_MARK
    header = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        45 if zip64 else 20,
        45 if zip64 else 20,
        entry.flags,
        entry.member.method,
        _DOS_TIME,
        _DOS_DATE,
        entry.crc,
        compressed,
        size,
        len(name),
        len(extra),
        0,
        0,
        0,
        0o644 << 16,
        offset,
    )
    return header + name + extra


# ---- doctoring an archive ---------------------------------------------------------------------------------------


def end_record_offset(archive: bytes) -> int:
    """Where the (last) end-of-central-directory record starts."""
    return archive.rindex(b"PK\x05\x06")


def central_header_offset(archive: bytes, name: str) -> int:
    """Where the central-directory entry of `name` starts (the last copy of the name is the directory's)."""
    return archive.rindex(name.encode()) - 46


def local_header_offset(archive: bytes, name: str) -> int:
    """Where the local header of `name` starts (its first copy of the name)."""
    return archive.index(name.encode()) - 30


def patched(archive: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """`archive` with `values` packed little-endian as `fmt` (a struct code) written at `offset`."""
    data = bytearray(archive)
    struct.pack_into("<" + fmt, data, offset, *values)
    return bytes(data)


# Field offsets inside the records, for `patched`.
CENTRAL_FLAGS, CENTRAL_METHOD, CENTRAL_CRC, CENTRAL_COMPRESSED_SIZE, CENTRAL_SIZE = 8, 10, 16, 20, 24
CENTRAL_HEADER_OFFSET = 42
END_DIRECTORY_SIZE, END_DIRECTORY_OFFSET = 12, 16
