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
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidSdistFilename, NormalizedName, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from pkgcache.pypi.wheel_metadata import MAX_METADATA_SIZE, MetadataUnavailable, names_project_version

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
    the PKG-INFO files of bundled projects deeper down are never taken. A tarball is read up to that member only.
    Blocking: run it in a thread. Raises MetadataUnavailable when there is none, it is over `MAX_METADATA_SIZE`,
    or the archive cannot be read.
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
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile, RuntimeError, ValueError) as error:
        raise MetadataUnavailable(f"{filename}: cannot read it: {error}") from error


def _is_top_pkg_info(member_name: str, project: NormalizedName, version: Version) -> bool:
    parts = PurePosixPath(member_name).parts
    return len(parts) == 2 and parts[1] == "PKG-INFO" and names_project_version(parts[0], project, version)


def _pkg_info_from_tar(path: Path, project: NormalizedName, version: Version) -> bytes:
    with tarfile.open(path, mode="r:gz") as archive:
        for member in archive:
            if not _is_top_pkg_info(member.name, project, version):
                continue
            if not member.isfile() or member.size > MAX_METADATA_SIZE:
                raise MetadataUnavailable(f"{member.name} is not a regular file under {MAX_METADATA_SIZE} bytes")
            extracted = archive.extractfile(member)
            assert extracted is not None  # a regular file always has contents
            return extracted.read()
    raise MetadataUnavailable(f"{path.name}: no {project}-{version}/PKG-INFO at its top")


def _pkg_info_from_zip(path: Path, project: NormalizedName, version: Version) -> bytes:
    with zipfile.ZipFile(path) as archive:
        found = [info for info in archive.infolist() if _is_top_pkg_info(info.filename, project, version)]
        if len(found) != 1:
            raise MetadataUnavailable(f"{path.name}: {len(found)} {project}-{version}/PKG-INFO at its top")
        if found[0].file_size > MAX_METADATA_SIZE:
            raise MetadataUnavailable(f"{found[0].filename} is over {MAX_METADATA_SIZE} bytes")
        return archive.read(found[0])
