"""What a project page says, apart from how it is written (HTML or JSON) or where it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version


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

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "url": self.url,
            "hashes": dict(self.hashes),
            "requires_python": self.requires_python,
            "yanked": self.yanked,
            "core_metadata": self.core_metadata if isinstance(self.core_metadata, bool) else dict(self.core_metadata),
            "gpg_sig": self.gpg_sig,
            "size": self.size,
            "upload_time": self.upload_time,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DistFile:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """A project's files as one upstream listed them."""

    name: str
    files: tuple[DistFile, ...]
    versions: tuple[str, ...] | None = None  # PEP 700, when the upstream gave it
    last_serial: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "files": [dist.to_json() for dist in self.files],
            "versions": None if self.versions is None else list(self.versions),
            "last_serial": self.last_serial,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProjectPage:
        versions = data.get("versions")
        return cls(
            name=data["name"],
            files=tuple(DistFile.from_json(item) for item in data["files"]),
            versions=None if versions is None else tuple(versions),
            last_serial=data.get("last_serial"),
        )

    def all_versions(self) -> list[str]:
        """PEP 700 `versions`: the upstream's list, or else the versions read from the file names, sorted."""
        if self.versions is not None:
            return list(self.versions)
        found = {version for dist in self.files if (version := version_of(dist.filename)) is not None}
        return sorted(found, key=_version_sort_key)


def version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def _version_sort_key(version: str) -> Version:
    return Version(version)
