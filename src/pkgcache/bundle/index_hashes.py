"""What the index says a package must hash to: a PyPI file's page, a conda package's repodata or shard.

`IndexHashes` looks in a set of staged files first (the bundle being imported) and then in the data directory.
A subdir's repodata is read once, as a stream, for all the packages asked of it (conda-forge's is hundreds of MB).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from pkgcache.conda.bounded_zstd import decompress_within

REPODATA_FORMS = ("repodata.json", "repodata.json.zst", "repodata.json.bz2")
SHARD_INDEXES = ("repodata_shards.msgpack.zst", "made-here/repodata_shards.msgpack.zst")
MAX_SHARD_BYTES = 1 << 30


@dataclass(frozen=True)
class Expected:
    """A package's sha256 (and size when known) as its index lists them; `source` names the index file."""

    sha256: str | None
    size: int | None
    source: str
    md5: str | None = None  # old conda records may give only this; `pkgcache verify` falls back on it


def shard_map(index_path: Path) -> dict[str, str]:
    """Package name -> shard sha256 (hex) from a CEP-16 shard index; {} when unreadable."""
    document = _msgpack_zst(index_path)
    shards = document.get("shards") if isinstance(document, dict) else None
    if not isinstance(shards, dict):
        return {}
    found = {}
    for name, digest in shards.items():
        if isinstance(digest, bytes):
            found[str(name)] = digest.hex()
        elif isinstance(digest, str):
            found[str(name)] = digest.lower()
    return found


def _msgpack_zst(path: Path) -> Any:
    try:
        raw = decompress_within(path.read_bytes(), MAX_SHARD_BYTES)
        return msgpack.unpackb(raw, strict_map_key=False)
    except (OSError, zstandard.ZstdError, ValueError, msgpack.UnpackException):
        return None


def package_name(filename: str) -> str:
    """A conda package's name from its file name (`<name>-<version>-<build>.conda`)."""
    stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    return stem.rsplit("-", 2)[0]


class IndexHashes:
    """Expected hashes of packages, from staged index files (by cache path) or the data directory's."""

    def __init__(self, data_dir: Path, staged: Mapping[str, Path] | None = None, ignored: Iterable[str] = ()) -> None:
        self.data_dir = data_dir
        self.staged = dict(staged or {})
        # Index files found damaged (by `pkgcache verify`): what they say is not believed, even before they go.
        self.ignored = set(ignored)
        self._pages: dict[str, dict[str, Any] | None] = {}

    def locate(self, path: str) -> Path | None:
        """Where an index file is: staged, else in the data directory, else None."""
        if path in self.staged:
            return self.staged[path]
        if path in self.ignored:
            return None
        found = self.data_dir / path
        return found if found.is_file() else None

    # --- PyPI ---

    def pypi_file(self, path: str) -> Expected | None:
        """`pypi/files/<project>/<file>`: the sha256 and size its project's page lists, or None."""
        _, _, project, filename = path.split("/")
        entry = self._page_files(project).get(filename)
        if entry is None:
            return None
        hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else {}
        size = entry.get("size")
        sha256, md5 = hashes.get("sha256"), hashes.get("md5")
        return Expected(
            sha256.lower() if isinstance(sha256, str) else None,
            size if isinstance(size, int) else None,
            self._page_path(project),
            md5.lower() if isinstance(md5, str) else None,
        )

    def pypi_metadata(self, path: str) -> Expected | None:
        """`<wheel>.metadata`: the hash the page advertises for it (PEP 658), or None when it advertises none."""
        _, _, project, filename = path.split("/")
        entry = self._page_files(project).get(filename.removesuffix(".metadata"))
        advertised = entry.get("core_metadata") if entry else None
        if isinstance(advertised, dict) and isinstance(advertised.get("sha256"), str):
            return Expected(advertised["sha256"], None, self._page_path(project))
        return None

    @staticmethod
    def _page_path(project: str) -> str:
        return f"pypi/simple/{project}/page.json"

    def _page_files(self, project: str) -> dict[str, Any]:
        if project not in self._pages:
            self._pages[project] = self._load_page(project)
        return self._pages[project] or {}

    def _load_page(self, project: str) -> dict[str, Any] | None:
        location = self.locate(self._page_path(project))
        if location is None:
            return None
        try:
            files = json.loads(location.read_bytes())["page"]["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {f["filename"]: f for f in files if isinstance(f, dict) and isinstance(f.get("filename"), str)}

    # --- conda ---

    def conda_packages(self, paths: Iterable[str]) -> dict[str, Expected]:
        """Expected hashes of conda packages by path, for those some index lists (one pass per subdir)."""
        by_subdir: dict[str, set[str]] = {}
        for path in paths:
            subdir_path, filename = path.rsplit("/", 1)
            by_subdir.setdefault(subdir_path, set()).add(filename)
        found: dict[str, Expected] = {}
        for subdir_path, filenames in by_subdir.items():
            records = self._from_repodata(subdir_path, filenames)
            records.update(self._from_shards(subdir_path, filenames - set(records)))
            found.update({f"{subdir_path}/{name}": expected for name, expected in records.items()})
        return found

    def _from_repodata(self, subdir_path: str, filenames: set[str]) -> dict[str, Expected]:
        from pkgcache.conda.repodata_stream import MalformedRepodata, Record, iter_repodata_file

        for form in REPODATA_FORMS:
            location = self.locate(f"{subdir_path}/{form}")
            if location is None:
                continue
            found: dict[str, Expected] = {}
            try:
                for item in iter_repodata_file(location):
                    if isinstance(item, Record) and item.filename in filenames:
                        found[item.filename] = _expected(item.record, f"{subdir_path}/{form}")
            except (MalformedRepodata, OSError):
                continue
            return found
        return {}

    def _from_shards(self, subdir_path: str, filenames: set[str]) -> dict[str, Expected]:
        if not filenames:
            return {}
        found: dict[str, Expected] = {}
        for index in SHARD_INDEXES:
            location = self.locate(f"{subdir_path}/{index}")
            if location is None:
                continue
            shards = shard_map(location)
            for filename in sorted(filenames - set(found)):
                digest = shards.get(package_name(filename))
                shard_path = f"{subdir_path}/shards/{digest}.msgpack.zst"
                shard = self.locate(shard_path) if digest else None
                record = _shard_record(shard, filename) if shard else None
                if record is not None:
                    found[filename] = _expected(record, shard_path)
        return found


def _shard_record(shard: Path, filename: str) -> dict[str, Any] | None:
    return shard_records(shard).get(filename)


def shard_records(shard: Path) -> dict[str, dict[str, Any]]:
    """File name -> record of every package in a CEP-16 shard, hashes as hex as repodata has them; {} when
    unreadable."""
    document = _msgpack_zst(shard)
    if not isinstance(document, dict):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for section in ("packages", "packages.conda"):
        records = document.get(section)
        if not isinstance(records, dict):
            continue
        for filename, record in records.items():
            if isinstance(filename, str) and isinstance(record, dict):
                found[filename] = {k: v.hex() if isinstance(v, bytes) else v for k, v in record.items()}
    return found


def _expected(record: Mapping[str, Any], source: str) -> Expected:
    sha256 = record.get("sha256")
    size = record.get("size")
    md5 = record.get("md5")
    return Expected(
        sha256.lower() if isinstance(sha256, str) else None,
        size if isinstance(size, int) else None,
        source,
        md5.lower() if isinstance(md5, str) else None,
    )
