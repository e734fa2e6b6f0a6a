"""What a project page says, apart from how it is written (HTML or JSON) or where it came from.

Everything an index can say about a project is kept, so that pkgcache passes it on whatever format the client
asks for: file hashes, Requires-Python, yanks (PEP 592), core metadata (PEP 658/714), sizes, upload times and
versions (PEP 700), tracks and alternate locations (PEP 708), provenance (PEP 740), project status (PEP 792) and
the upstream's serial. `to_json`/`from_json` are the cached page.json form: fields added later have defaults, so
a page.json written before them still loads, and keys this code does not know are ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

# PEP 792: a project with no status marker is active.
ACTIVE = "active"
# File names (and versions) whose parse is remembered: about 200 bytes each, so at most a few MB.
VERSION_CACHE_SIZE = 16384


@dataclass(frozen=True, slots=True)
class DistFile:
    """One file of a project, as an index lists it. `url` is where the upstream has it (absolute)."""

    filename: str
    url: str
    hashes: Mapping[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False  # PEP 592: False, True, or the reason
    core_metadata: bool | Mapping[str, str] = False  # PEP 658/714: False, True, or the metadata file's hashes
    gpg_sig: bool | None = None
    size: int | None = None  # PEP 700
    upload_time: str | None = None  # PEP 700
    # PEP 740: where the upstream has the file's provenance (absolute). Clients are sent pkgcache's own link.
    provenance_url: str | None = None
    # The entries of a page that lists this name more than once with other hashes (parse.py): this entry is then
    # what they agree on, with no hash, and the bytes fetched under it decide which of them it is (they must be
    # one of them: storage.downloads.Expected.one_of). Empty for an ordinary entry. Never rendered.
    candidates: tuple[DistFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "filename": self.filename,
            "url": self.url,
            "hashes": dict(self.hashes),
            "requires_python": self.requires_python,
            "yanked": self.yanked,
            "core_metadata": self.core_metadata if isinstance(self.core_metadata, bool) else dict(self.core_metadata),
            "gpg_sig": self.gpg_sig,
            "size": self.size,
            "upload_time": self.upload_time,
            "provenance_url": self.provenance_url,
        }
        if self.candidates:
            data["candidates"] = [candidate.to_json() for candidate in self.candidates]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DistFile:
        # Only the fields this code knows: a page.json written by a newer pkgcache still loads after a downgrade.
        values = {name: data[name] for name in _DIST_FIELDS if name in data}
        if "candidates" in values:
            values["candidates"] = tuple(cls.from_json(candidate) for candidate in values["candidates"])
        return cls(**values)


_DIST_FIELDS = tuple(item.name for item in fields(DistFile))


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    """PEP 792: the project's status marker (`active`, `archived`, `quarantined`, `deprecated`...) and why."""

    status: str = ACTIVE
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProjectStatus:
        return cls(status=data.get("status") or ACTIVE, reason=data.get("reason"))


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """A project's files as one upstream listed them, and what it said about the project itself."""

    name: str
    files: tuple[DistFile, ...]
    versions: tuple[str, ...] | None = None  # PEP 700, when the upstream gave it
    last_serial: int | None = None  # the upstream's `_last-serial` / `<!--SERIAL n-->`
    status: ProjectStatus | None = None  # PEP 792, when the upstream gave it
    tracks: tuple[str, ...] = ()  # PEP 708: the same project on the repositories this one extends (URLs)
    alternate_locations: tuple[str, ...] = ()  # PEP 708: other repositories sharing this project's namespace

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "files": [dist.to_json() for dist in self.files],
            "versions": None if self.versions is None else list(self.versions),
            "last_serial": self.last_serial,
            "status": None if self.status is None else self.status.to_json(),
            "tracks": list(self.tracks),
            "alternate_locations": list(self.alternate_locations),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProjectPage:
        versions = data.get("versions")
        status = data.get("status")
        return cls(
            name=data["name"],
            files=tuple(DistFile.from_json(item) for item in data["files"]),
            versions=None if versions is None else tuple(versions),
            last_serial=data.get("last_serial"),
            status=None if status is None else ProjectStatus.from_json(status),
            tracks=tuple(data.get("tracks") or ()),
            alternate_locations=tuple(data.get("alternate_locations") or ()),
        )

    def all_versions(self) -> list[str]:
        """PEP 700 `versions`: the upstream's list, or else the versions read from the file names, sorted."""
        if self.versions is not None:
            return list(self.versions)
        found = {version for dist in self.files if (version := version_of(dist.filename)) is not None}
        return sorted(found, key=_version_sort_key)


# Every rendering of a page lists its versions, read from its file names: parsing a wheel's name (its tags
# included) was two thirds of rendering a page in JSON. A file name always gives the same version.
@functools.lru_cache(maxsize=VERSION_CACHE_SIZE)
def version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


@functools.lru_cache(maxsize=VERSION_CACHE_SIZE)
def _version_sort_key(version: str) -> Version:
    return Version(version)
