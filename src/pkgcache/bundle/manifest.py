"""A bundle's manifest: every file's path below the data directory, size, sha256, mtime and kind.

A bundle is a tar file (PAX format, uncompressed: packages are compressed already) whose first member is
`manifest.json`, followed by the files at their paths below the data directory, index files first (project pages,
repodata and their sidecars), then shards, then core metadata, then packages: an importer reading the tar as a
stream has the index a package is checked against before the package arrives.

Paths are checked on both sides: relative, below `pypi/` or `conda/`, no empty, `.` or `..` segment, no
backslash or NUL, so a bundle can never write outside the data directory's cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pkgcache.policy.pypi_rules import SDIST_EXTENSIONS

FORMAT = "pkgcache-bundle"
VERSION = 1
MANIFEST_NAME = "manifest.json"
# A manifest lists paths and digests: even a million files stay well below this.
MAX_MANIFEST_BYTES = 512 * 1024 * 1024
ROOTS = ("pypi", "conda")
MAX_SEGMENTS = 12

PACKAGE_SUFFIXES = (".whl", *SDIST_EXTENSIONS, ".conda", ".egg")
_SHARD = re.compile(r"^[0-9a-f]{64}\.msgpack\.zst$")

# Kinds, in the order their files go into a bundle.
KIND_ORDER = ("index", "shard", "metadata", "package")


class BadManifest(ValueError):
    """The manifest is missing, unreadable, or not one this version reads."""


def check_path(path: str) -> str:
    """`path` when it is a safe cache path below the data directory; ValueError saying why not."""
    if not isinstance(path, str) or not path:
        raise ValueError("an empty path")
    segments = path.split("/")
    if segments[0] not in ROOTS:
        raise ValueError(f"{path!r} is not below {' or '.join(r + '/' for r in ROOTS)}")
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"{path!r} is too deep")
    for segment in segments:
        if segment in ("", ".", "..") or "\\" in segment or "\0" in segment or len(segment) > 255:
            raise ValueError(f"{path!r} has an unsafe segment {segment!r}")
    return path


def kind_of(path: str) -> str:
    """ "package", "metadata" (a wheel's core metadata), "shard" (a conda shard) or "index" (everything else:
    pages, repodata, sidecars, shard indexes)."""
    name = path.rsplit("/", 1)[-1]
    segments = path.split("/")
    if segments[0] == "pypi" and len(segments) == 4 and segments[1] == "files":
        if name.endswith(".metadata"):
            return "metadata"
        return "package" if name.endswith(PACKAGE_SUFFIXES) else "index"
    if segments[0] == "conda":
        if len(segments) >= 2 and segments[-2] == "shards" and _SHARD.match(name):
            return "shard"
        if name.endswith((".conda", ".tar.bz2")):
            return "package"
    return "index"


def bundle_order(path: str) -> tuple[int, str]:
    """Sort key: index files first, packages last, paths in order within a kind."""
    return KIND_ORDER.index(kind_of(path)), path


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str
    mtime_ns: int
    kind: str


@dataclass
class Manifest:
    files: list[Entry] = field(default_factory=list)
    created_at: float = 0.0
    pkgcache_version: str = ""
    since: float | None = None
    inputs: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "pkgcache_version": self.pkgcache_version,
            "since": self.since,
            "inputs": self.inputs,
            "total_bytes": self.total_bytes,
            "files": [asdict(entry) for entry in self.files],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise BadManifest(f"the manifest is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise BadManifest("not a pkgcache bundle (its manifest does not say so)")
        if document.get("version") != VERSION:
            raise BadManifest(f"a bundle of version {document.get('version')!r}; this pkgcache reads {VERSION}")
        files = document.get("files")
        if not isinstance(files, list):
            raise BadManifest("the manifest lists no files")
        manifest = cls(
            created_at=float(document.get("created_at") or 0.0),
            pkgcache_version=str(document.get("pkgcache_version") or ""),
            since=document.get("since"),
            inputs=[str(i) for i in document.get("inputs") or []],
        )
        for number, item in enumerate(files):
            manifest.files.append(_entry(item, number))
        return manifest


def _entry(item: Any, number: int) -> Entry:
    try:
        path = check_path(item["path"])
        size, mtime_ns, sha256 = item["size"], item["mtime_ns"], item["sha256"]
        if not isinstance(size, int) or size < 0 or not isinstance(mtime_ns, int):
            raise ValueError("size and mtime_ns must be whole numbers")
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadManifest(f"the manifest's file #{number} is malformed: {exc}") from None
    return Entry(path, size, sha256, mtime_ns, kind_of(path))
