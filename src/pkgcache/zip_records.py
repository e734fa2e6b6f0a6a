"""The few records of a ZIP archive that reading one member needs, parsed from bytes (no I/O).

A wheel's METADATA is found through the end-of-central-directory record (and its ZIP64 form), the central
directory, and the member's local header; the member's bytes are then inflated and checked against the sizes and
CRC-32 the central directory gives. Every function takes bytes that the caller fetched (from a file or by HTTP
ranges), or a callable that fetches them (`read_end_record`, `check_whole`: whether a downloaded archive is whole,
for storage/filetypes.py), and raises `ZipRecordError` on anything a well-formed archive would not contain, so a
lying or broken archive never yields bytes.

Only what wheels (and zip sdists) use is supported: one disk, no encryption, members stored, deflated, or
compressed with bzip2 or LZMA (which `zipfile`, and so pip, reads too).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

END_RECORD_SIZE = 22
# The end record may carry a comment of up to 65535 bytes after it.
END_RECORD_SEARCH = END_RECORD_SIZE + 0xFFFF
ZIP64_LOCATOR_SIZE = 20
ZIP64_END_RECORD_SIZE = 56
CENTRAL_HEADER_SIZE = 46
LOCAL_HEADER_SIZE = 30

STORED = 0
DEFLATED = 8
BZIP2 = 12
LZMA = 14
READABLE_METHODS = (STORED, DEFLATED, BZIP2, LZMA)

_END_RECORD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_EXTRA_HEADER = struct.Struct("<2H")
_ENTRY_LENGTHS = struct.Struct("<3H")  # a central-directory entry's name, extra and comment lengths, at offset 28

_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ZIP64_EXTRA_ID = 0x0001
_ZIP64_MARK = 0xFFFFFFFF  # a 32-bit size or offset whose value is in the entry's ZIP64 extra field

_FLAG_ENCRYPTED = 0x0001
_FLAG_LZMA_END_MARKER = 0x0002  # for LZMA, bit 1: the stream ends with an end-of-stream marker
_FLAG_STRONG_ENCRYPTION = 0x0040
_FLAG_UTF8_NAME = 0x0800


class _Entry(NamedTuple):
    """A central-directory entry, checked (`_checked_entry`): the fields reading its member needs (ZIP64 values
    applied), and where its name starts and ends and the entry ends in the directory's bytes."""

    flags: int
    method: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int
    name_start: int
    name_end: int
    end: int


class ZipRecordError(ValueError):
    """The bytes are not the ZIP record they should be, or the archive is one this module refuses."""


@dataclass(frozen=True)
class EndRecord:
    """Where the end-of-central-directory record (or its ZIP64 locator) starts, and what it says."""

    offset: int
    central_directory_offset: int
    central_directory_size: int
    entries: int
    # Where the ZIP64 end record is, when a locator points at one (its fields are then not known yet).
    zip64_end_record_offset: int | None = None


@dataclass(frozen=True)
class CentralDirectory:
    """The central directory's place in the archive and its entry count."""

    offset: int
    size: int
    entries: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Member:
    """One central-directory entry: what reading that member needs."""

    name: str
    raw_name: bytes
    flags: int
    method: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int


def find_end_record(data: bytes, data_offset: int, file_size: int) -> EndRecord | None:
    """The end record in `data` (the bytes at `data_offset`, which must reach the end of the file), or None.

    The record is searched backwards; it must end exactly where its comment ends at the end of the file, which
    rules out a signature that merely appears inside the comment or the central directory. None means the record
    is not in `data`: the caller fetches up to `END_RECORD_SEARCH` bytes from the end and asks again.
    """
    if data_offset + len(data) != file_size:
        raise ZipRecordError("the bytes searched for the end record do not reach the end of the file")
    position = data.rfind(_END_SIGNATURE, 0, max(0, len(data) - END_RECORD_SIZE + 4))
    while position >= 0:
        record = _END_RECORD.unpack_from(data, position)
        comment_length = record[7]
        if position + END_RECORD_SIZE + comment_length == len(data):
            return _end_record_from(record, data, data_offset + position, position)
        position = data.rfind(_END_SIGNATURE, 0, position)
    return None


def _end_record_from(record: tuple[int | bytes, ...], data: bytes, offset: int, position: int) -> EndRecord:
    _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, _ = record
    if disk != 0 or cd_disk != 0 or disk_entries != entries:
        raise ZipRecordError("archive spans several disks")
    locator_position = position - ZIP64_LOCATOR_SIZE
    if locator_position >= 0 and data[locator_position : locator_position + 4] == _ZIP64_LOCATOR_SIGNATURE:
        _, locator_disk, zip64_offset, disks = _ZIP64_LOCATOR.unpack_from(data, locator_position)
        if locator_disk != 0 or disks != 1:
            raise ZipRecordError("ZIP64 archive spans several disks")
        if zip64_offset + ZIP64_END_RECORD_SIZE > offset - ZIP64_LOCATOR_SIZE:
            raise ZipRecordError("ZIP64 end record would overlap its locator")
        return EndRecord(offset - ZIP64_LOCATOR_SIZE, 0, 0, 0, zip64_end_record_offset=zip64_offset)
    if 0xFFFF in (disk_entries, entries) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise ZipRecordError("end record asks for ZIP64 but no ZIP64 locator precedes it")
    return EndRecord(offset, int(cd_offset), int(cd_size), int(entries))


def parse_zip64_end_record(data: bytes, offset: int, locator_offset: int) -> EndRecord:
    """The ZIP64 end record at `offset` (`data` holds at least its fixed part), which must end at the locator.

    An extensible data sector between the record and the locator is allowed, as the format allows it.
    """
    if len(data) < ZIP64_END_RECORD_SIZE:
        raise ZipRecordError("ZIP64 end record is cut short")
    signature, record_size, _, _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset = (
        _ZIP64_END_RECORD.unpack_from(data)
    )
    if signature != _ZIP64_END_SIGNATURE:
        raise ZipRecordError("no ZIP64 end record where the locator points")
    if offset + 12 + record_size != locator_offset:
        raise ZipRecordError("ZIP64 end record does not end at its locator")
    if disk != 0 or cd_disk != 0 or disk_entries != entries:
        raise ZipRecordError("archive spans several disks")
    return EndRecord(offset, cd_offset, cd_size, entries)


def read_end_record(read: Callable[[int, int], bytes], file_size: int) -> EndRecord:
    """The end record of an archive of `file_size` bytes (its ZIP64 form's fields when it has one), through
    `read(offset, size)`, which gives those bytes of the file or raises (an archive's own I/O, not this module's)."""
    tail_start = max(0, file_size - END_RECORD_SEARCH)
    end = find_end_record(read(tail_start, file_size - tail_start), tail_start, file_size)
    if end is None:
        raise ZipRecordError("no end-of-central-directory record: not a ZIP archive, or a truncated one")
    if end.zip64_end_record_offset is not None:
        offset = end.zip64_end_record_offset
        end = parse_zip64_end_record(read(offset, ZIP64_END_RECORD_SIZE), offset, end.offset)
    return end


def check_whole(read: Callable[[int, int], bytes], file_size: int) -> None:
    """Raises ZipRecordError unless the archive of `file_size` bytes is whole as far as its records tell, read
    through `read` (see `read_end_record`): its end record ends the file, and its central directory is where that
    record says, within the file, before the record. A download cut short (a chunked body that ended early looks
    whole) ends in the middle of a member or of the directory, where no end record ends the file. Members are not
    inflated: that is the reader's work, as for a file checked by its hash."""
    end = read_end_record(read, file_size)
    directory = CentralDirectory(end.central_directory_offset, end.central_directory_size, end.entries)
    if directory.end > end.offset:
        raise ZipRecordError(
            f"central directory at {directory.offset}+{directory.size} reaches past the end record ({end.offset})"
        )
    if directory.entries * CENTRAL_HEADER_SIZE > directory.size:
        raise ZipRecordError(f"{directory.entries} entries cannot fit in {directory.size} bytes")
    if directory.entries and read(directory.offset, 4) != _CENTRAL_SIGNATURE:
        raise ZipRecordError(f"no central directory at {directory.offset}, where the end record says it is")


def central_directory_of(end: EndRecord, max_size: int) -> CentralDirectory:
    """The central directory an end record describes, checked to end exactly where that record starts.

    Wheels carry no data before the first member nor between the central directory and the end record, so any
    other place means a damaged or doctored archive (and is how a directory "pointing outside the file" shows).
    """
    directory = CentralDirectory(end.central_directory_offset, end.central_directory_size, end.entries)
    if directory.end != end.offset:
        raise ZipRecordError(
            f"central directory at {directory.offset}+{directory.size} does not end at the end record ({end.offset})"
        )
    if directory.size > max_size:
        raise ZipRecordError(f"central directory of {directory.size} bytes is over the {max_size}-byte cap")
    if directory.entries * CENTRAL_HEADER_SIZE > directory.size:
        raise ZipRecordError(f"{directory.entries} entries cannot fit in {directory.size} bytes")
    return directory


def iter_central_directory(
    data: bytes | memoryview,
    directory: CentralDirectory,
    wanted: Callable[[bytes], bool] | None = None,
    *,
    check_skipped: bool = False,
) -> Iterator[Member]:
    """The entries of the central directory (`data` is exactly its bytes) one by one, each checked (its records,
    its ZIP64 fields, its member ending before the directory), for a caller that keeps only those it looks for: a
    directory of many small entries makes many more objects than bytes, so none returns them all in a list. With
    `wanted`, only the entries whose raw name it accepts, the others being stepped over: their signature and
    lengths checked, nothing more, or with `check_skipped` every check, without a `Member` made (a third of the
    time). The check that the entries fill the directory exactly comes after the last one.
    `data` may be a view of bytes fetched with others, which no entry keeps."""
    if len(data) != directory.size:
        raise ZipRecordError("central directory bytes are cut short")
    position = 0
    for _ in range(directory.entries):
        if wanted is not None and not check_skipped:
            name_start, name_end, end = _central_header_extent(data, position)
            if not wanted(bytes(data[name_start:name_end])):
                position = end
                continue
        entry = _checked_entry(data, position)
        position = entry.end
        raw_name = bytes(data[entry.name_start : entry.name_end])
        if entry.header_offset + LOCAL_HEADER_SIZE + len(raw_name) + entry.compressed_size > directory.offset:
            name = _member(entry, raw_name).name
            raise ZipRecordError(f"member {name!r} would reach into the central directory")
        if wanted is None or wanted(raw_name):
            yield _member(entry, raw_name)
    if position != len(data):
        raise ZipRecordError("central directory holds more bytes than its entries")


def parse_directory_tail(data: bytes, data_offset: int, directory: CentralDirectory) -> list[Member]:
    """The last entries of a central directory that starts before `data` (bytes of the archive from `data_offset`
    to at least the directory's end): the longest run of whole entries that ends exactly where the directory ends.

    The bytes before the run are cut, and entries have no fixed size, so the run is found from the entry
    signatures: each is parsed, and kept when the entry it starts ends at the directory's end or at the start of
    an entry already kept. Empty when no entry fits, or when any kept entry points into the directory.
    """
    start, end = directory.offset - data_offset, directory.end - data_offset
    if start >= 0 or end > len(data):
        raise ZipRecordError("the bytes given do not hold the end of a central directory that starts before them")
    fragment = data[:end]
    chained: dict[int, tuple[Member, int]] = {}
    position = fragment.rfind(_CENTRAL_SIGNATURE)
    while position >= 0:
        try:
            member, entry_end = _parse_central_header(fragment, position)
        except ZipRecordError:
            pass
        else:
            if entry_end == end or entry_end in chained:
                chained[position] = (member, entry_end)
        position = fragment.rfind(_CENTRAL_SIGNATURE, 0, position)
    members: list[Member] = []
    position = min(chained, default=end)
    while position != end:
        member, position = chained[position]
        if member.header_offset + LOCAL_HEADER_SIZE + len(member.raw_name) + member.compressed_size > directory.offset:
            return []
        members.append(member)
    return members


def _central_header_extent(data: bytes | memoryview, position: int) -> tuple[int, int, int]:
    """Where the name of the central-directory entry at `position` starts and ends, and where the entry ends."""
    if position + CENTRAL_HEADER_SIZE > len(data) or data[position : position + 4] != _CENTRAL_SIGNATURE:
        raise ZipRecordError("central directory entry has no signature, or is cut short")
    name_length, extra_length, comment_length = _ENTRY_LENGTHS.unpack_from(data, position + 28)
    end = position + CENTRAL_HEADER_SIZE + name_length + extra_length + comment_length
    if end > len(data):
        raise ZipRecordError("central directory entry runs past the directory")
    name_start = position + CENTRAL_HEADER_SIZE
    return name_start, name_start + name_length, end


def _parse_central_header(data: bytes | memoryview, position: int) -> tuple[Member, int]:
    entry = _checked_entry(data, position)
    return _member(entry, bytes(data[entry.name_start : entry.name_end])), entry.end


def _checked_entry(data: bytes | memoryview, position: int) -> _Entry:
    """The central-directory entry at `position`, its signature, lengths, ZIP64 fields and disk checked. It makes
    one object, no `Member`: a hostile directory holds 357,000 entries, which all go through here."""
    if position + CENTRAL_HEADER_SIZE > len(data):
        raise ZipRecordError("central directory ends inside an entry")
    (signature, _, _, flags, method, _, _, crc32, compressed, size, name_length, extra_length, comment_length,
     start_disk, _, _, header_offset) = _CENTRAL_HEADER.unpack_from(data, position)  # fmt: skip
    if signature != _CENTRAL_SIGNATURE:
        raise ZipRecordError("central directory entry has no signature")
    name_start = position + CENTRAL_HEADER_SIZE
    extra_start = name_start + name_length
    end = extra_start + extra_length + comment_length
    if end > len(data):
        raise ZipRecordError("central directory entry runs past the directory")
    if size == _ZIP64_MARK or compressed == _ZIP64_MARK or header_offset == _ZIP64_MARK or start_disk == 0xFFFF:
        size, compressed, header_offset, start_disk = _apply_zip64_extra(
            data[extra_start : extra_start + extra_length], size, compressed, header_offset, start_disk
        )
    if start_disk != 0:
        raise ZipRecordError("member lives on another disk")
    return _Entry(flags, method, crc32, compressed, size, header_offset, name_start, extra_start, end)


def _member(entry: _Entry, raw_name: bytes) -> Member:
    return Member(
        name=raw_name.decode("utf-8" if entry.flags & _FLAG_UTF8_NAME else "cp437", errors="replace"),
        raw_name=raw_name,
        flags=entry.flags,
        method=entry.method,
        crc32=entry.crc32,
        compressed_size=entry.compressed_size,
        size=entry.size,
        header_offset=entry.header_offset,
    )


def _apply_zip64_extra(
    extra: bytes | memoryview, size: int, compressed: int, offset: int, disk: int
) -> tuple[int, int, int, int]:
    """Replace the 32-bit fields marked 0xFFFFFFFF (0xFFFF for the disk) by their 64-bit values, in the order the
    format stores them: size, compressed size, header offset, disk."""
    wanted = [size == _ZIP64_MARK, compressed == _ZIP64_MARK, offset == _ZIP64_MARK, disk == 0xFFFF]
    body = _extra_field(extra, _ZIP64_EXTRA_ID)
    if body is None:
        raise ZipRecordError("entry marks ZIP64 sizes but has no ZIP64 extra field")
    values = [size, compressed, offset, disk]
    position = 0
    for index, needed in enumerate(wanted):
        if not needed:
            continue
        width = 4 if index == 3 else 8
        if position + width > len(body):
            raise ZipRecordError("ZIP64 extra field is too short")
        values[index] = int.from_bytes(body[position : position + width], "little")
        position += width
    return values[0], values[1], values[2], values[3]


def _extra_field(extra: bytes | memoryview, wanted_id: int) -> bytes | memoryview | None:
    position = 0
    while position + _EXTRA_HEADER.size <= len(extra):
        field_id, length = _EXTRA_HEADER.unpack_from(extra, position)
        body_start = position + _EXTRA_HEADER.size
        if body_start + length > len(extra):
            raise ZipRecordError("extra field runs past its entry")
        if field_id == wanted_id:
            return extra[body_start : body_start + length]
        position = body_start + length
    return None


def check_readable(member: Member, max_size: int) -> None:
    """Refuse a member this module will not read: encrypted, compressed otherwise, or bigger than `max_size`."""
    if member.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
        raise ZipRecordError(f"{member.name!r} is encrypted")
    if member.method not in READABLE_METHODS:
        raise ZipRecordError(f"{member.name!r} uses compression method {member.method}")
    if member.size > max_size or member.compressed_size > max_size:
        raise ZipRecordError(f"{member.name!r} is {member.size} bytes, over the {max_size}-byte cap")


def member_data_offset(header: bytes, member: Member) -> int:
    """Where `member`'s data starts, from its local header (`header` holds its fixed part and the member's name).

    The name must repeat the central directory's and the method must agree; the local sizes are not compared, as
    a data descriptor (flag bit 3) leaves them zero: the CRC and sizes are checked on the data instead.
    """
    if len(header) < LOCAL_HEADER_SIZE + len(member.raw_name):
        raise ZipRecordError("local header is cut short")
    signature, _, flags, method, _, _, _, _, _, name_length, extra_length = _LOCAL_HEADER.unpack_from(header)
    if signature != _LOCAL_SIGNATURE:
        raise ZipRecordError(f"no local header where {member.name!r} should start")
    if flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION) or method != member.method:
        raise ZipRecordError(f"local header of {member.name!r} disagrees with the central directory")
    name_end = LOCAL_HEADER_SIZE + name_length
    if name_length != len(member.raw_name) or header[LOCAL_HEADER_SIZE:name_end] != member.raw_name:
        raise ZipRecordError(f"local header names another member than {member.name!r}")
    return member.header_offset + name_end + extra_length


def extract(member: Member, compressed: bytes) -> bytes:
    """The member's bytes from its stored or compressed data, checked against its sizes and CRC-32.

    Compressed data is inflated to one byte more than the member's size at most (`check_readable` bounds that
    size), so a stream that would inflate further is refused without being inflated.
    """
    if len(compressed) != member.compressed_size:
        raise ZipRecordError(f"{member.name!r}: got {len(compressed)} bytes of data, expected {member.compressed_size}")
    whole = memoryview(compressed)

    def read(wanted: int) -> bytes:
        nonlocal whole
        part, whole = whole[:wanted], whole[wanted:]
        return bytes(part)

    # One read of the whole data, and at most the member's size and a byte made from it: the checks are
    # iter_extract's, without the stream's chunks.
    return b"".join(iter_extract(member, read, chunk_size=member.size + 1, read_size=max(1, len(compressed))))


# The bytes iter_extract makes at a time, and reads at a time, by default: what one chunk of a stream holds.
EXTRACT_CHUNK = 1024 * 1024


def iter_extract(
    member: Member,
    read: Callable[[int], bytes],
    *,
    chunk_size: int = EXTRACT_CHUNK,
    read_size: int = EXTRACT_CHUNK,
    max_dictionary: int | None = None,
) -> Iterator[bytes]:
    """The member's bytes in chunks of at most `chunk_size`, made from its data as `read(n)` gives it (the next
    bytes of the member's data, at most n of them, `read_size` at a time), checked as `extract` checks them.

    Stored data comes in its reads. The bytes given never go past the member's size: a stream that makes more is
    refused as soon as it does. Each chunk is held until the next is made, and the last until the stream's end,
    its size and CRC-32 are checked: a consumer that keeps what it was given must still throw it away when this
    raises. Memory stays within two chunks, one read, and the decompressor's state (deflate's 32 KiB window,
    bzip2's 4 MiB at most, LZMA's dictionary: bounded by the member's size, refused over `max_dictionary`).
    """
    if member.method not in READABLE_METHODS:
        raise ZipRecordError(f"{member.name!r} uses compression method {member.method}")
    left = member.compressed_size

    def more() -> bytes:
        nonlocal left
        if left == 0:
            return b""
        data = read(min(read_size, left))
        if not data:
            raise ZipRecordError(f"{member.name!r}: its data is cut short, {left} bytes missing")
        left -= len(data)
        return data

    made = 0
    crc = 0
    held: bytes | None = None  # each chunk waits for the next: the last one, for the checks of the stream's end
    for chunk in _decoded(member, more, chunk_size, max_dictionary):
        made += len(chunk)
        if made > member.size:
            raise ZipRecordError(f"{member.name!r}: its stream inflates to more than its {member.size} bytes")
        crc = zlib.crc32(chunk, crc)
        if held is not None:
            yield held
        held = chunk
    _check_end(member, made, crc, left)
    if held is not None:
        yield held


def _check_end(member: Member, made: int, crc: int, left: int) -> None:
    if left:
        raise ZipRecordError(f"{member.name!r}: its {_METHOD_NAMES[member.method]} stream ends before its data does")
    if made != member.size:
        raise ZipRecordError(f"{member.name!r} inflates to {made} bytes, expected {member.size}")
    if crc != member.crc32:
        raise ZipRecordError(f"{member.name!r} fails its CRC-32 check")


_METHOD_NAMES = {STORED: "stored", DEFLATED: "deflate", BZIP2: "bzip2", LZMA: "LZMA"}


def _decoded(member: Member, more: Callable[[], bytes], chunk_size: int, max_dictionary: int | None) -> Iterator[bytes]:
    """The bytes the member's data makes, at most `chunk_size` at a time; raises when the stream does not end
    exactly where the data does (`more()` gives b"" once the data is all read)."""
    if member.method == STORED:
        if member.compressed_size != member.size:
            raise ZipRecordError(f"stored member {member.name!r} has two different sizes")
        while data := more():
            yield data
    elif member.method == DEFLATED:
        yield from _inflated(member, more, chunk_size)
    elif member.method == BZIP2:
        yield from _unbzip2ed(member, more, chunk_size)
    else:
        yield from _unlzmaed(member, more, chunk_size, max_dictionary)


def _inflated(member: Member, more: Callable[[], bytes], chunk_size: int) -> Iterator[bytes]:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = b""
    read_all = False
    while not inflater.eof:
        if not pending and not read_all:
            pending = more()
            read_all = not pending
        try:
            # At most a chunk: input that would make more stays in unconsumed_tail (and output zlib holds back,
            # once the input is all read, comes with the next call, given no input).
            chunk = inflater.decompress(pending, chunk_size)
        except zlib.error as error:
            raise ZipRecordError(f"{member.name!r} is not valid deflate data: {error}") from error
        pending = inflater.unconsumed_tail
        if chunk:
            yield chunk
        elif read_all and not pending:
            break
    if not inflater.eof or inflater.unused_data or pending or more():
        raise ZipRecordError(f"{member.name!r}: its deflate stream does not end with its compressed size")


def _unbzip2ed(member: Member, more: Callable[[], bytes], chunk_size: int) -> Iterator[bytes]:
    decompressor = bz2.BZ2Decompressor()
    while not decompressor.eof:
        data = b""
        if decompressor.needs_input:
            data = more()
            if not data:
                break
        try:
            chunk = decompressor.decompress(data, chunk_size)
        except (OSError, ValueError, EOFError) as error:
            raise ZipRecordError(f"{member.name!r} is not valid bzip2 data: {error}") from error
        if chunk:
            yield chunk
    # A bzip2 stream always ends with its end-of-stream marker.
    if not decompressor.eof or decompressor.unused_data or more():
        raise ZipRecordError(f"{member.name!r}: its bzip2 stream does not end with its compressed size")


# A ZIP member's LZMA data starts with the LZMA SDK's version (2 bytes), the length of the properties (2 bytes,
# always 5 for LZMA1), then the properties: lc/lp/pb packed in a byte, and the dictionary size.
_LZMA_HEADER = struct.Struct("<2xH")
_LZMA_PROPERTIES = struct.Struct("<BL")
_LZMA_MIN_DICTIONARY = 4096


def _unlzmaed(
    member: Member, more: Callable[[], bytes], chunk_size: int, max_dictionary: int | None
) -> Iterator[bytes]:
    header_size = _LZMA_HEADER.size + _LZMA_PROPERTIES.size
    head = b""
    while len(head) < header_size and (data := more()):
        head += data
    if len(head) < header_size:
        raise ZipRecordError(f"{member.name!r}: its LZMA header is cut short")
    (properties_size,) = _LZMA_HEADER.unpack_from(head)
    if properties_size != _LZMA_PROPERTIES.size:
        raise ZipRecordError(f"{member.name!r}: LZMA properties of {properties_size} bytes, not LZMA1's 5")
    packed, dictionary = _LZMA_PROPERTIES.unpack_from(head, _LZMA_HEADER.size)
    if packed >= 9 * 5 * 5:
        raise ZipRecordError(f"{member.name!r}: invalid LZMA properties")
    lc, rest = packed % 9, packed // 9
    lp, pb = rest % 5, rest // 5
    # A dictionary larger than the output is never looked back into: bounding it by the member's size (which
    # check_readable bounds) keeps a claimed 4 GiB dictionary from being allocated.
    dictionary = min(dictionary, max(member.size, _LZMA_MIN_DICTIONARY))
    if max_dictionary is not None and dictionary > max_dictionary:
        raise ZipRecordError(f"{member.name!r}: an LZMA dictionary of {dictionary} bytes, over {max_dictionary}")
    lzma_filter = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dictionary}
    try:
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])
    except (lzma.LZMAError, ValueError) as error:
        raise ZipRecordError(f"{member.name!r} is not valid LZMA data: {error}") from error
    made = 0
    pending = head[header_size:]
    while not decompressor.eof:
        if decompressor.needs_input and not pending:
            pending = more()
            if not pending:
                break
        try:
            chunk = decompressor.decompress(pending, chunk_size)
        except (lzma.LZMAError, ValueError, EOFError) as error:
            raise ZipRecordError(f"{member.name!r} is not valid LZMA data: {error}") from error
        pending = b""
        made += len(chunk)
        if chunk:
            yield chunk
    if decompressor.unused_data or more():
        raise ZipRecordError(f"{member.name!r}: its LZMA stream ends before its compressed size")
    # Without the end-marker flag the stream may stop at the member's size with no marker (zipfile reads it so);
    # with it, the marker must be there.
    if not decompressor.eof and (member.flags & _FLAG_LZMA_END_MARKER or made != member.size):
        raise ZipRecordError(f"{member.name!r}: its LZMA stream does not end with its compressed size")
