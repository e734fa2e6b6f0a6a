"""An sdist's PKG-INFO, read from a .tar.gz or .zip on disk, and whether a resolver may trust it as the metadata.

PEP 643 (core metadata 2.2) makes an sdist's PKG-INFO binding: a field not listed in `Dynamic` has the same value
in every wheel built from it. So PKG-INFO may be served as an sdist's `.metadata` only when its Metadata-Version is
2.2 or later and `Dynamic` names none of the fields resolvers use. pip and poetry take an sdist's `.metadata` as
the final metadata (pip resolves with it and builds only to install); uv never asks for it and reads PKG-INFO
itself by the same rule (Requires-Dist, Requires-Python, Provides-Extra not dynamic).
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import os
import struct
import zlib
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidSdistFilename, NormalizedName, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from pkgcache import zip_records
from pkgcache.pypi.wheel_metadata import (
    MAX_CENTRAL_DIRECTORY,
    MAX_METADATA_SIZE,
    MetadataUnavailable,
    names_project_version,
)
from pkgcache.zip_records import ZipRecordError

KiB = 1024
# What reading an sdist for its PKG-INFO may cost at most; past any of these it is given up on, as an sdist without
# PKG-INFO is (its metadata is not advertised). Set far above what sdists hold: a pax header or GNU long name holds
# a path and a few attributes (a path is at most 4 KiB on Linux); big sdists hold thousands to tens of thousands of
# members and some hundreds of MB once inflated. Hatchling and flit write PKG-INFO last, so a tarball may have to be
# read to its end: these bound that read (about a second of a thread for 200,000 headers, a few for 1 GiB).
MAX_EXTENDED_HEADER = 16 * KiB
MAX_MEMBERS = 200_000
MAX_INFLATED = 1024 * 1024 * KiB

# What a resolver reads from core metadata: a field here listed as Dynamic makes PKG-INFO unusable for it. Name,
# Version and Metadata-Version may not be dynamic at all (the core metadata spec; `packaging` rejects them).
FIELDS_RESOLVERS_NEED = frozenset(
    {"requires-dist", "requires-python", "provides-extra", "name", "version", "metadata-version"}
)


def sdist_metadata_is_reliable(pkg_info: bytes, filename: str | None = None) -> bool:
    """Whether `pkg_info` can stand for the metadata of wheels built from its sdist.

    True only for Metadata-Version 2.x with x >= 2, a Name and a Version, and no `Dynamic` field among
    `FIELDS_RESOLVERS_NEED`. With `filename` (the sdist's), Name and Version must also be the file's, compared
    normalised, as pip checks the name against what it asked for.
    """
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(pkg_info)
        text_fields = {name: headers.get(name) for name in ("Metadata-Version", "Name", "Version")}
    except (UnicodeError, ValueError):
        return False
    if not all(isinstance(value, str) and value.strip() for value in text_fields.values()):
        return False
    if not _is_binding_metadata_version(str(text_fields["Metadata-Version"])):
        return False
    dynamic = {str(value).strip().lower() for value in headers.get_all("Dynamic", [])}
    if dynamic & FIELDS_RESOLVERS_NEED:
        return False
    return filename is None or _matches_filename(str(text_fields["Name"]), str(text_fields["Version"]), filename)


def _is_binding_metadata_version(value: str) -> bool:
    major, _, minor = value.strip().partition(".")
    try:
        # A later major version may change what fields mean: not ours to trust.
        return int(major) == 2 and int(minor.partition(".")[0]) >= 2
    except ValueError:
        return False


def _matches_filename(name: str, version: str, filename: str) -> bool:
    try:
        file_project, file_version = parse_sdist_filename(filename)
        return canonicalize_name(name) == file_project and Version(version.strip()) == file_version
    except (InvalidSdistFilename, InvalidVersion):
        return False


def pkg_info_from_sdist_file(path: Path | str, filename: str | None = None) -> bytes:
    """The PKG-INFO at the top of the sdist at `path` (.tar.gz or .zip), named `filename` (default: the path's).

    Reads `<name>-<version>/PKG-INFO`, the directory being the file's project and version compared normalised, so
    the PKG-INFO files of bundled projects deeper down are never taken. A tarball is read header by header up to
    that member only, keeping none of the others; a zip through its central directory. Either is read within
    bounds (see MAX_EXTENDED_HEADER, MAX_MEMBERS, MAX_INFLATED and wheel_metadata's MAX_CENTRAL_DIRECTORY), as an
    archive is anyone's upload: what passes them is given up on. Blocking: run it in a thread. Raises
    MetadataUnavailable when there is none, it is over `MAX_METADATA_SIZE`, a bound is reached, or the archive
    cannot be read.
    """
    path = Path(path)
    filename = filename or path.name
    try:
        project, version = parse_sdist_filename(filename)
    except (InvalidSdistFilename, InvalidVersion) as error:
        raise MetadataUnavailable(f"{filename!r} is not an sdist's file name: {error}") from error
    try:
        if filename.endswith(".zip"):
            return _pkg_info_from_zip(path, project, version)
        return _pkg_info_from_tar(path, project, version)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as error:
        raise MetadataUnavailable(f"{filename}: cannot read it: {error}") from error


def _is_top_pkg_info(member_name: str, project: NormalizedName, version: Version) -> bool:
    parts = PurePosixPath(member_name).parts
    return len(parts) == 2 and parts[1] == "PKG-INFO" and names_project_version(parts[0], project, version)


# ---- tarballs: a reader of headers, bounded ----------------------------------------------------------------------
#
# Not tarfile: it reads a pax header or a GNU long name whole into memory, whatever size the header claims (a
# 1.5 MB gzip held one of 1.5 GB), and keeps every member it has seen (two million empty members took 0.9 GB and
# over a minute of CPU). This reads the 512-byte headers one at a time, keeps only the name that matters, and
# skips every member's contents unread.

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_SIGNED_CHECKSUM = struct.Struct("148b8x356b")
_POSIX_MAGIC = b"ustar\x00"  # POSIX ustar (and pax): the name may continue in the prefix field
_REGULAR_TYPES = frozenset({b"0", b"\x00", b"7"})
_NO_DATA_TYPES = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})  # links, devices, directories, fifos
_LONG_NAME, _LONG_LINK, _SPARSE = b"L", b"K", b"S"
_PAX_TYPES = frozenset({b"x", b"X"})
_PAX_GLOBAL = b"g"
_SKIP_CHUNK = 1 << 20


class _TarStream:
    """The inflated bytes of a .tar.gz, read forward only, counted against MAX_INFLATED."""

    def __init__(self, file: gzip.GzipFile) -> None:
        self._file = file
        self.inflated = 0

    def read(self, size: int) -> bytes:
        self._count(size)
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError(f"the archive ends {size - len(data)} bytes short of a member")
        return data

    def skip(self, size: int) -> None:
        self._count(size)
        while size > 0:
            data = self._file.read(min(size, _SKIP_CHUNK))
            if not data:
                raise EOFError("the archive ends inside a member")
            size -= len(data)

    def _count(self, size: int) -> None:
        self.inflated += size
        if self.inflated > MAX_INFLATED:
            raise MetadataUnavailable(f"no PKG-INFO in its first {MAX_INFLATED} bytes once inflated")


def _padded(size: int) -> int:
    return size + (-size % BLOCK)


def _pkg_info_from_tar(path: Path, project: NormalizedName, version: Version) -> bytes:
    with gzip.open(path, "rb") as file:
        stream = _TarStream(file)
        long_name: str | None = None  # from a GNU long-name member or a pax header, for the next member
        pax_size: int | None = None
        for _ in range(MAX_MEMBERS):
            block = stream.read(BLOCK)
            if block == _ZERO_BLOCK:
                break  # the end of the archive
            kind, name, size = _parse_header(block)
            if kind in (_LONG_NAME, _LONG_LINK, *_PAX_TYPES, _PAX_GLOBAL):
                if size > MAX_EXTENDED_HEADER:
                    raise MetadataUnavailable(f"an extended header of {size} bytes, over {MAX_EXTENDED_HEADER}")
                data = stream.read(_padded(size))[:size]
                if kind == _LONG_NAME:
                    long_name = _text(data.split(b"\x00", 1)[0])
                elif kind in _PAX_TYPES:
                    records = _pax_records(data)
                    long_name = records.get("path", long_name)
                    pax_size = int(records["size"]) if "size" in records else pax_size
                continue
            if kind == _SPARSE:
                raise MetadataUnavailable(f"{name}: a GNU sparse member, which sdists do not hold")
            name, long_name = (long_name if long_name is not None else name), None
            size, pax_size = (pax_size if pax_size is not None else size), None
            is_regular = kind in _REGULAR_TYPES
            if name.endswith("PKG-INFO") and _is_top_pkg_info(name, project, version):
                if not is_regular or size > MAX_METADATA_SIZE:
                    raise MetadataUnavailable(f"{name} is not a regular file under {MAX_METADATA_SIZE} bytes")
                return stream.read(size)
            if kind not in _NO_DATA_TYPES:  # what tarfile skips too: a link's size field says nothing
                stream.skip(_padded(size))
        else:
            raise MetadataUnavailable(f"{path.name}: no PKG-INFO in its first {MAX_MEMBERS} members")
    raise MetadataUnavailable(f"{path.name}: no {project}-{version}/PKG-INFO at its top")


def _parse_header(block: bytes) -> tuple[bytes, str, int]:
    """A tar header's type flag, name and size; ValueError when it is not one (its checksum is wrong)."""
    checksum = _number(block[148:156])
    unsigned = 256 + sum(block) - sum(block[148:156])  # the checksum field counts as eight spaces
    if checksum != unsigned and checksum != 256 + sum(_SIGNED_CHECKSUM.unpack(block)):
        raise ValueError("a tar header with a wrong checksum")
    kind = block[156:157]
    name = _text(block[:100].split(b"\x00", 1)[0])
    if block[257:263] == _POSIX_MAGIC:
        prefix = _text(block[345:500].split(b"\x00", 1)[0])
        if prefix:
            name = f"{prefix}/{name}"
    size = _number(block[124:136])
    if size < 0:
        raise ValueError(f"a tar header with a negative size ({size})")
    return kind, name, size


def _number(field: bytes) -> int:
    """A header's numeric field: octal digits, or GNU's base-256 (its first byte 0x80, or 0xff when negative)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else value
    digits = field.split(b"\x00", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """The `length key=value\\n` records of a pax header (at most MAX_EXTENDED_HEADER bytes)."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        space = data.index(b" ", position)
        length = int(data[position:space])
        record = data[space + 1 : position + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ValueError("a pax header record that is not `length key=value`")
        key, _, value = record[:-1].partition(b"=")
        records[_text(key)] = _text(value)
        position += length
    return records


# ---- zip sdists: through the central directory, as wheels are read ----------------------------------------------


def _pkg_info_from_zip(path: Path, project: NormalizedName, version: Version) -> bytes:
    with path.open("rb") as file:
        fd = file.fileno()
        size = os.fstat(fd).st_size
        end = zip_records.read_end_record(lambda offset, length: _pread(fd, length, offset), size)
        directory = zip_records.central_directory_of(end, MAX_CENTRAL_DIRECTORY)
        if directory.entries > MAX_MEMBERS:
            raise MetadataUnavailable(f"{path.name}: {directory.entries} members, over {MAX_MEMBERS}")
        data = _pread(fd, directory.size, directory.offset)
        entries = zip_records.iter_central_directory(data, directory, lambda name: name.endswith(b"PKG-INFO"))
        found = [member for member in entries if _is_top_pkg_info(member.name, project, version)]
        if len(found) != 1:
            raise MetadataUnavailable(f"{path.name}: {len(found)} {project}-{version}/PKG-INFO at its top")
        member = found[0]
        if member.size > MAX_METADATA_SIZE:
            raise MetadataUnavailable(f"{member.name} is over {MAX_METADATA_SIZE} bytes")
        zip_records.check_readable(member, MAX_METADATA_SIZE)
        header = _pread(fd, zip_records.LOCAL_HEADER_SIZE + len(member.raw_name), member.header_offset)
        data_start = zip_records.member_data_offset(header, member)
        if data_start + member.compressed_size > directory.offset:
            raise ZipRecordError(f"{member.name!r} would reach into the central directory")
        return zip_records.extract(member, _pread(fd, member.compressed_size, data_start))


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ZipRecordError(f"{size} bytes at {offset} run past the end of the file")
    return data
