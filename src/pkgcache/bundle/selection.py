"""Which cached files a bundle carries: all of them, those added since a time, or those lock files name; each
package with the index files that serve it.

A PyPI file brings its project's folder under `pypi/simple/` (page.json and the metadata records) and its core
metadata (`<file>.metadata`) when cached. A conda package brings the index files of its subdir and of its
channel's noarch (repodata in every cached form, sidecars, shard indexes), and the shard that holds its record.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pkgcache.conda.shard_packs import PACKS_DIR_NAME, extract_shard

from .index_hashes import SHARD_INDEXES, package_name, shard_map
from .manifest import ROOTS, kind_of


@dataclass
class Selection:
    paths: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)  # named by an input, not in the cache
    unsupported: list[str] = field(default_factory=list)  # inputs that name no exact files


def cached_files(data_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every cached file below pypi/ and conda/ with its stat (temporary and hidden files left out)."""
    for root in ROOTS:
        top = data_dir / root
        for folder, _, names in os.walk(top):
            for name in names:
                if name.startswith(".") or name.endswith(".tmp"):
                    continue
                full = Path(folder) / name
                try:
                    stat = full.stat()
                except FileNotFoundError:
                    continue  # evicted or replaced meanwhile
                yield full.relative_to(data_dir).as_posix(), stat


def select_all(data_dir: Path) -> Selection:
    return Selection({path for path, _ in cached_files(data_dir)})


def select_since(data_dir: Path, since: float, known: set[str] | None = None) -> Selection:
    """What arrived at or after `since`, with what serves it.

    Packages keep their upstream's modification time, so arrival is read from the inode's change time (which
    pkgcache also moves when it records that a file was served: a date may bring some older files along). Given
    `known` (the files present at the last export), a package, shard or metadata file is new exactly when it is
    not among them. Index files (pages, repodata) are rewritten when refreshed: those written since go in.
    """
    since_ns = int(since * 1e9)
    selection = Selection()
    for path, stat in cached_files(data_dir):
        kind = kind_of(path)
        if kind == "index" or known is None:
            new = max(stat.st_ctime_ns, stat.st_mtime_ns) >= since_ns
        else:
            new = path not in known
        if new:
            selection.paths.add(path)
    packages = [path for path in selection.paths if kind_of(path) == "package"]
    selection.paths |= support_files(data_dir, packages)
    return selection


def known_files(data_dir: Path) -> list[str]:
    """Every cached package, shard and metadata file: what `--since last` will not carry again."""
    return [path for path, _ in cached_files(data_dir) if kind_of(path) != "index"]


def write_known_files(lines: list[str], destination: Path) -> None:
    """`known_files`, one path a line (gzip), for the next `--since last`."""
    temp = destination.with_name(f".{destination.name}.tmp")
    with gzip.open(temp, "wt", encoding="utf-8") as out:
        out.write("\n".join(sorted(lines)) + "\n")
    os.replace(temp, destination)


def read_known_files(source: Path) -> set[str] | None:
    try:
        with gzip.open(source, "rt", encoding="utf-8") as lines:
            return {line.rstrip("\n") for line in lines if line.strip()}
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def select_named(data_dir: Path, inputs: Iterable[Path]) -> Selection:
    """The exact files lock files (and pins with hashes) name, with what serves them."""
    from pkgcache.seed import read_inputs

    plan = read_inputs(inputs)
    selection = Selection()
    wanted = list(plan.distinct_files())
    for requirement in plan.pypi_requirements:
        if requirement.constraint:
            continue
        hashes = {h.partition(":")[2].lower() for h in requirement.hashes if h.lower().startswith("sha256:")}
        if requirement.pinned_version and hashes:
            wanted += _pinned_files(data_dir, str(requirement.project), hashes)
        else:
            selection.unsupported.append(f"{requirement.origin}: {requirement.requirement} (not an exact file)")
    selection.unsupported += [f"{spec.origin}: {spec.spec} (not an exact file)" for spec in plan.conda_specs]
    selection.unsupported += [str(error) for error in plan.errors]
    for path in dict.fromkeys(wanted):
        if (data_dir / path).is_file():
            selection.paths.add(path)
        else:
            selection.missing.append(path)
    selection.paths |= support_files(data_dir, sorted(selection.paths))
    return selection


def _pinned_files(data_dir: Path, project: str, hashes: set[str]) -> list[str]:
    page = _read_page(data_dir, project)
    return [f"pypi/files/{project}/{name}" for name, sha256 in page.items() if sha256 in hashes]


def _read_page(data_dir: Path, project: str) -> dict[str, str | None]:
    """File name -> sha256 from a cached page.json ({} when there is none)."""
    try:
        document = json.loads((data_dir / "pypi" / "simple" / project / "page.json").read_bytes())
        files = document["page"]["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {f["filename"]: (f.get("hashes") or {}).get("sha256") for f in files if isinstance(f, dict)}


def support_files(data_dir: Path, packages: Iterable[str]) -> set[str]:
    """The index files (and shards) that serve these packages, as cached."""
    _shard_maps.cache_clear()  # shard indexes change as pkgcache refreshes them
    found: set[str] = set()
    folders: set[str] = set()
    for path in packages:
        segments = path.split("/")
        if segments[0] == "pypi":
            folders.add(f"pypi/simple/{segments[2]}")
            if (data_dir / f"{path}.metadata").is_file():
                found.add(f"{path}.metadata")
        elif segments[0] == "conda":
            subdir_path = "/".join(segments[:-1])
            channel_path = "/".join(segments[:-2])
            folders.update({subdir_path, f"{channel_path}/noarch"})
            shard = _shard_of(data_dir, subdir_path, segments[-1])
            if shard:
                found.add(shard)
    for folder in folders:
        found |= _index_files_in(data_dir, folder)
    return found


def _index_files_in(data_dir: Path, folder: str) -> set[str]:
    """Index files directly in a pypi/simple/<project> or conda subdir folder, and in its made-here/."""
    found: set[str] = set()
    for sub in ("", "/made-here"):
        try:
            entries = list(os.scandir(data_dir / (folder + sub)))
        except OSError:
            continue
        for entry in entries:
            path = f"{folder}{sub}/{entry.name}"
            if entry.is_file() and not entry.name.startswith(".") and kind_of(path) == "index":
                found.add(path)
    return found


def _shard_of(data_dir: Path, subdir_path: str, filename: str) -> str | None:
    """The cached shard holding a conda package's record, when its subdir is sharded."""
    for index in SHARD_INDEXES:
        index_path = data_dir / subdir_path / index
        if not index_path.is_file():
            continue
        digest = _shard_maps(index_path).get(package_name(filename))
        if not digest:
            continue
        shard = f"{subdir_path}/shards/{digest}.msgpack.zst"
        if (data_dir / shard).is_file() or _out_of_its_pack(data_dir / subdir_path, f"{digest}.msgpack.zst"):
            return shard
    return None


def _out_of_its_pack(subdir: Path, shard_name: str) -> bool:
    """Give a shard made moments ago, still in its build's pack (conda/shard_packs.py), its own file."""
    packs = subdir / PACKS_DIR_NAME
    return packs.is_dir() and extract_shard(packs, subdir / "shards", shard_name) is not None


@functools.lru_cache(maxsize=64)
def _shard_maps(index_path: Path) -> dict[str, str]:
    return shard_map(index_path)
