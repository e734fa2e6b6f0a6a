"""`pkgcache verify`: every file at rest in the cache checked against what is known of it; what fails is removed.

pkgcache checks a file once, before it is renamed into place, and then trusts it by its sidecar's size and mtime:
a disk fault afterwards (a file cut short, bytes flipped) would be served until the entry is revalidated. The rule
is that a file in the cache is whole and matches its hash, or it is not there; this walk restores it:
- a file with a known digest is hashed (in chunks) and compared: a PyPI distribution with the hash its project's
  page lists, its core metadata with the hash pkgcache serves it under (`metadata.json`, else the page's) and, when
  its wheel is cached as the very file the record was made for, with that wheel's METADATA; a conda
  package with its record's sha256 (md5 when that is all it has) in the subdir's repodata or shard, a shard with
  the sha256 that is its name; a size the index gives is compared first;
- a file without one is checked for its shape, by the checks its download passes: a conda index file (repodata
  in every form, a shard index) by `conda/index_checks.py` (a .zst or .bz2 must decompress), then a repodata's
  every record read as the package lookups and shard builds read them (`conda/repodata_stream.py`, streaming:
  beyond 8 MB the download's check looks at its ends only); a provenance as one JSON object, a page as pkgcache
  reads one, a `metadata.json` as a JSON object; the refusals of a filtered view and a subdir's first sightings as
  the gate reads them (each conda file known by its exact place and name: `conda_role`); a package no index lists
  any more by its kind's first bytes;
- a file with a sidecar (`<file>.meta`) must have the size it records, and the sidecar must be readable.

Index files are checked first, and what a damaged one says is not believed when the packages are checked.
Whatever fails is removed with its sidecar (not with `dry_run`), so the next request fetches it again (a conda
subdir's first sightings are replaced by a record that knows none, never begun again as if new); a shard
made here (it cannot be fetched) takes the index made here with it, which is then made again from the repodata;
any part of a policy's filtered view takes the whole view with it, made again with the rules.

It is safe beside a running instance: files are written under temporary names (`tmp/`, or hidden names ending
in `.tmp`) and renamed into place whole, and those are never looked at, nor are a shard build's packs; a file is
removed only when it is still the very file that was checked (same inode, size and mtime), and a sidecar that
disagrees with its file is looked at again a moment later, since a new file is renamed in just before its sidecar.

This lives on the kit floor, beside the import that checks files the same way (`index_hashes.py`): it needs both
sides' checks, which storage/ may not import.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pkgcache.conda.channels import CHANNEL_INDEX_FILES, SHARD_INDEX, SUBDIR_INDEX_FILES
from pkgcache.conda.filtered_channels import FILTERABLE, FILTERED, FROM_SHARDS, view_files
from pkgcache.conda.generated_shards import MADE_HERE
from pkgcache.conda.index_checks import content_check_for, is_repodata_name
from pkgcache.conda.repodata_filter import REFUSALS_SUFFIX, DamagedRefusals, read_refusals
from pkgcache.conda.repodata_stream import MalformedRepodata, iter_repodata_file
from pkgcache.conda.shard_packs import PACKS_DIR_NAME
from pkgcache.conda_subdirs import KNOWN_SUBDIRS
from pkgcache.gate.first_seen import FILE_NAME as FIRST_SEEN_FILE
from pkgcache.gate.first_seen import KNOWS_NOTHING, parse_first_seen
from pkgcache.pypi.metadata_records import MetadataRecord
from pkgcache.pypi.names import PROVENANCE_SUFFIX
from pkgcache.pypi.pages import CachedPage
from pkgcache.pypi.upstream_index import check_provenance
from pkgcache.pypi.wheel_metadata import (
    MetadataTooLarge,
    MetadataUnavailable,
    WheelMetadataStream,
    metadata_from_wheel_file,
)
from pkgcache.storage.downloads import HASH_PREFERENCE, IntegrityError
from pkgcache.storage.file_records import agrees, recorded_of
from pkgcache.storage.filetypes import magic_for
from pkgcache.storage.sidecars import META_SUFFIX, FileMeta, sidecar_of
from pkgcache.storage.store import CacheStore, file_stamp, stamp_of

from .index_hashes import Expected, IndexHashes, shard_map
from .manifest import kind_of
from .selection import cached_files

# A sidecar that disagrees with its file is read again after this long: a running instance renames a new file into
# place, then writes its sidecar (storage/sidecars.py), and a walk passing in between must not take that for damage.
SIDECAR_SETTLE_SECONDS = 1.0
MADE_HERE_SHARD_INDEX = "made-here/repodata_shards.msgpack.zst"
# How each file was judged, for the summary.
BY_DIGEST, BY_SHAPE, UNCHECKED = "digest", "shape", "unchecked"
# Told how far a run has gone: the report so far, and the files and bytes it will check in all.
Progress = Callable[["VerifyReport", int, int], None]
# How one file was judged, and what is wrong with it (None: nothing).
Verdict = tuple[str, str | None]
ProblemOf = Callable[[str, os.stat_result], Verdict]
# What a conda file other than a package or shard is, known by where it lies and its exact name (never by how its
# name starts: `repodata.json.refused.json` is no repodata): an index file, the refusals of a filtered view, or the
# first sightings of a subdir's files (gate/first_seen.py). Anything else is judged by its sidecar alone.
INDEX, REFUSALS, FIRST_SEEN = "index", "refusals", "first-seen"
FILTERED_INDEX_NAMES = frozenset(base + suffix for base in FILTERABLE for suffix in ("", ".zst", ".bz2"))
REFUSALS_NAMES = frozenset(base + REFUSALS_SUFFIX for base in FILTERABLE)


@dataclass
class Failure:
    path: str  # below the data directory
    reason: str
    size: int
    removed: bool = False


@dataclass
class VerifyReport:
    checked: int = 0
    checked_bytes: int = 0
    how: dict[str, int] = field(default_factory=lambda: {BY_DIGEST: 0, BY_SHAPE: 0, UNCHECKED: 0})
    failures: list[Failure] = field(default_factory=list)
    # Failed files left alone because they were replaced while checked (a new version, not the one that failed).
    changed: list[str] = field(default_factory=list)
    # Files removed with a failed one because they depend on it (the index made here of a damaged shard).
    also_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def removed(self) -> int:
        return sum(1 for failure in self.failures if failure.removed)

    @property
    def removed_bytes(self) -> int:
        return sum(failure.size for failure in self.failures if failure.removed)


def verify_cache(
    data_dir: Path, *, dry_run: bool = False, progress: Progress | None = None, every: float = 10.0
) -> VerifyReport:
    """Check every cached file under `data_dir` (blocking); remove what fails unless `dry_run`. `progress` is
    called every `every` seconds while it runs (a large cache takes minutes: it reads every byte)."""
    started = time.monotonic()
    report = VerifyReport()
    checker = _Checker(CacheStore(data_dir, writable=False), report, dry_run)
    found = [(path, stat.st_size) for path, stat in cached_files(data_dir) if _is_cache_entry(path)]
    files = [path for path, _ in found]
    told = _Teller(report, progress, every, len(files), sum(size for _, size in found))
    # Index files first: a damaged one must not vouch for (or condemn) the packages checked after it.
    indexes = [path for path in files if kind_of(path) == "index"]
    for path in indexes:
        checker.check(path, checker.index_problem)
        told.maybe()
    hashes = IndexHashes(data_dir, ignored=checker.failed_paths())
    checker.expect_conda(hashes, [path for path in files if path.startswith("conda/") and _is_package(path)])
    for path in files:
        if kind_of(path) != "index":
            checker.check(path, lambda p, s: checker.content_problem(p, s, hashes))
            told.maybe()
    report.seconds = time.monotonic() - started
    return report


class _Teller:
    """Calls `progress` at most once every `every` seconds."""

    def __init__(self, report: VerifyReport, progress: Progress | None, every: float, files: int, size: int) -> None:
        self.report = report
        self.progress = progress
        self.every = every
        self.files = files
        self.size = size
        self.next = time.monotonic() + every

    def maybe(self) -> None:
        if self.progress is not None and time.monotonic() >= self.next:
            self.progress(self.report, self.files, self.size)
            self.next = time.monotonic() + self.every


def _is_cache_entry(path: str) -> bool:
    """Sidecars are checked with their files; a shard build's packs are its own work in progress."""
    return not path.endswith(META_SUFFIX) and f"/{PACKS_DIR_NAME}/" not in path


def _is_package(path: str) -> bool:
    return kind_of(path) == "package"


class _Checker:
    """Judges one file at a time into the report, and removes what fails (unless a dry run)."""

    def __init__(self, store: CacheStore, report: VerifyReport, dry_run: bool) -> None:
        self.root = store.root
        self.store = store
        self.report = report
        self.dry_run = dry_run
        self._conda: dict[str, Expected] = {}
        self._made_here_shards: dict[str, set[str]] = {}  # subdir path -> digests its index made here lists
        self._records: dict[str, dict[str, MetadataRecord]] = {}  # metadata.json path -> its records

    def failed_paths(self) -> set[str]:
        return {failure.path for failure in self.report.failures}

    def expect_conda(self, hashes: IndexHashes, packages: list[str]) -> None:
        """Every cached conda package's record, one pass over each subdir's repodata (or shards)."""
        self._conda = hashes.conda_packages(packages)

    def check(self, path: str, problem_of: ProblemOf) -> None:
        """Its sidecar first (when it has one), then `problem_of`; a file gone meanwhile is not counted."""
        full = self.root / path
        try:
            stat = full.stat()  # now, not at the walk: the file may have been replaced or evicted since
        except FileNotFoundError:
            return
        how, problem = self._sidecar_problem(full, stat)
        if problem is None:
            try:
                how, problem = problem_of(path, stat)
            except OSError as exc:
                if not full.exists():
                    return  # evicted or replaced meanwhile: nothing left to judge
                how, problem = BY_SHAPE, f"cannot be read: {exc.strerror or exc}"
        self.report.checked += 1
        self.report.checked_bytes += stat.st_size
        self.report.how[how] += 1
        if problem is not None:
            self._fail(path, stat, problem)

    # --- what fails ---

    def _fail(self, path: str, stat: os.stat_result, reason: str) -> None:
        full = self.root / path
        if file_stamp(full) != stamp_of(stat):
            self.report.changed.append(path)  # a new version came meanwhile: not the file that failed
            return
        first_seen = conda_role(path) == FIRST_SEEN
        if first_seen:
            reason += " (a record that knows no sighting takes its place: its files count from their next one)"
        failure = Failure(path, reason, stat.st_size)
        self.report.failures.append(failure)
        if self.dry_run:
            return
        if first_seen:
            # Removed, it would be begun again with every file taken for already there (unknown_age "allow"
            # then serves files it knew were young).
            writer = CacheStore(self.root)  # written aside and renamed in, as the service writes it
            writer.tmp_dir.mkdir(parents=True, exist_ok=True)
            writer.write_json_atomic(full, {"since": KNOWS_NOTHING, "files": {}})
            failure.removed = True
            return
        for each in (full, sidecar_of(full)):
            each.unlink(missing_ok=True)
        failure.removed = True
        if kind_of(path) == "shard":
            self._remove_made_here_index(path)
        view = filtered_view_of(path)
        if view is not None:
            self._remove_view(view, path)

    def _remove_view(self, json_path: str, failed: str) -> None:
        """A filtered view is made whole, in one pass: any part of it failing, all of it goes, to be made again
        (with the rules) at the next request, never served nor believed in part (its refusals gone would otherwise
        read as nothing refused)."""
        for each in view_files(self.root / json_path):
            path = each.relative_to(self.root).as_posix()
            if path == failed or not each.exists():
                continue
            for file in (each, sidecar_of(each)):
                file.unlink(missing_ok=True)
            self.report.also_removed.append(path)

    def _remove_made_here_index(self, shard_path: str) -> None:
        """A shard made here cannot be fetched again: its index made here goes too, to be made again (and the
        shard with it) at the next request for the subdir's shards."""
        subdir_path = shard_path.rsplit("/", 2)[0]
        digest = shard_path.rsplit("/", 1)[-1].split(".", 1)[0]
        if digest not in self._made_here(subdir_path):
            return
        index = self.root / subdir_path / MADE_HERE_SHARD_INDEX
        for each in (index, sidecar_of(index)):
            each.unlink(missing_ok=True)
        self.report.also_removed.append(f"{subdir_path}/{MADE_HERE_SHARD_INDEX}")

    def _made_here(self, subdir_path: str) -> set[str]:
        if subdir_path not in self._made_here_shards:
            index = self.root / subdir_path / MADE_HERE_SHARD_INDEX
            self._made_here_shards[subdir_path] = set(shard_map(index).values()) if index.is_file() else set()
        return self._made_here_shards[subdir_path]

    # --- sidecars ---

    def _sidecar_problem(self, full: Path, stat: os.stat_result) -> Verdict:
        problem = _sidecar_disagrees(self.store, full, stat)
        if problem is not None:
            time.sleep(SIDECAR_SETTLE_SECONDS)  # a new file renamed in, its sidecar about to follow?
            again = file_stamp(full)
            if again is None or again != stamp_of(stat):
                return BY_SHAPE, None  # replaced or gone meanwhile: judged by what follows, or not at all
            problem = _sidecar_disagrees(self.store, full, stat)
        return BY_SHAPE, problem

    # --- index files ---

    def index_problem(self, path: str, stat: os.stat_result) -> Verdict:
        full = self.root / path
        name = full.name
        if path.startswith("pypi/"):
            if name == "page.json":
                return BY_SHAPE, _page_problem(full)
            if name == "metadata.json":
                return BY_SHAPE, _json_object_problem(full)
            if name.endswith(PROVENANCE_SUFFIX):
                return BY_SHAPE, _integrity_problem(check_provenance, full)
            return UNCHECKED, None
        role = conda_role(path)
        if role == REFUSALS:
            return BY_SHAPE, _refusals_problem(full)
        if role == FIRST_SEEN:
            return BY_SHAPE, _first_seen_problem(self.store, full)
        # A subdir's index files (`conda/<root>/<channel>/<subdir>/...`) must not name another subdir.
        subdir = path.split("/")[3] if path.count("/") > 3 else None
        check = content_check_for(name, subdir) if role == INDEX else None
        if check is None:
            return (BY_SHAPE if sidecar_of(full).exists() else UNCHECKED), None
        problem = _integrity_problem(check, full)
        if problem is None and is_repodata_name(name):
            problem = _repodata_problem(full)
        return BY_SHAPE, problem

    # --- packages, core metadata, shards ---

    def content_problem(self, path: str, stat: os.stat_result, hashes: IndexHashes) -> Verdict:
        full = self.root / path
        kind = kind_of(path)
        if kind == "shard":
            digest = full.name.split(".", 1)[0]
            return BY_DIGEST, _digest_problem(full, "sha256", digest, "its name")
        if kind == "metadata":
            return self._metadata_problem(path, full, hashes)
        expected = hashes.pypi_file(path) if path.startswith("pypi/") else self._conda.get(path)
        if expected is None or (expected.sha256 is None and expected.md5 is None):
            return BY_SHAPE, _magic_problem(full)  # no index here lists it (any more): its kind's first bytes
        if expected.size is not None and expected.size != stat.st_size:
            return BY_DIGEST, f"{stat.st_size} bytes, not the {expected.size} that {expected.source} lists"
        algorithm, digest = _strongest({"sha256": expected.sha256, "md5": expected.md5})
        return BY_DIGEST, _digest_problem(full, algorithm, digest, expected.source)

    def _metadata_problem(self, path: str, full: Path, hashes: IndexHashes) -> Verdict:
        """Core metadata: the hash pkgcache serves it under (its record), else the one its page advertises."""
        _, _, project, filename = path.split("/")
        records_path = f"pypi/simple/{project}/metadata.json"
        if records_path not in self._records:
            self._records = {records_path: _metadata_records(self.store, self.root / records_path)}  # one project
        dist_name = filename.removesuffix(".metadata")
        record = self._records[records_path].get(dist_name)
        if record is not None:
            problem = _digest_problem(full, "sha256", record.sha256, records_path)
            if problem is None and f"pypi/files/{project}/{dist_name}" not in self.failed_paths():
                problem = _not_its_wheels(full.with_name(dist_name), record)
            return BY_DIGEST, problem
        advertised = hashes.pypi_metadata(path)
        if advertised is not None and advertised.sha256 is not None:
            return BY_DIGEST, _digest_problem(full, "sha256", advertised.sha256, advertised.source)
        return UNCHECKED, None


def _not_its_wheels(wheel: Path, record: MetadataRecord) -> str | None:
    """Core metadata whose wheel is cached as the very file it is recorded for (the digest the wheel was checked
    against, kept on it, is the record's) must be that wheel's METADATA: metadata made from another file under the
    same name (a wheel replaced upstream, by an older pkgcache) would otherwise be served, and advertised, for good. The
    wheel's METADATA is one entry read through its central directory: cheap beside hashing the wheel."""
    if not wheel.name.endswith(".whl") or not record.available or record.dist_sha256 is None:
        return None
    recorded = recorded_of(wheel)
    if recorded is None or recorded.digest is None or not agrees(recorded, {"sha256": record.dist_sha256}, None):
        return None  # not cached, or not known to be the file it was made for: nothing to compare with
    try:
        digest = _metadata_sha256(wheel)
    except MetadataUnavailable:  # the wheel's own check judges it; it yields nothing to compare with
        return None
    if digest != record.sha256.lower():
        return f"is not the METADATA of {wheel.name}, the wheel it is recorded for (made from another file)"
    return None


def _metadata_sha256(wheel: Path) -> str:
    """The sha256 of the wheel's METADATA: read into memory, or streamed when it is too large for that."""
    try:
        return hashlib.sha256(metadata_from_wheel_file(wheel)).hexdigest()
    except MetadataTooLarge:
        digest = hashlib.sha256()
        with WheelMetadataStream(wheel) as stream:
            for chunk in iter(stream.read, b""):
                digest.update(chunk)
        return digest.hexdigest()


def _sidecar_disagrees(store: CacheStore, full: Path, stat: os.stat_result) -> str | None:
    side = sidecar_of(full)
    if not side.exists():
        return None
    data = store.read_json(side)
    try:
        meta = FileMeta(**data) if isinstance(data, dict) else None
    except TypeError:
        meta = None
    if meta is None:
        return f"its sidecar {side.name} cannot be read"
    if not meta.missing and meta.size is not None and meta.size != stat.st_size:
        return f"{stat.st_size} bytes, its sidecar says {meta.size}"
    return None


def _strongest(hashes: dict[str, str | None]) -> tuple[str, str]:
    """The strongest of the hashes given, as the downloads choose (storage/downloads.py)."""
    for name in HASH_PREFERENCE:
        value = hashes.get(name)
        if value:
            return name, value
    raise ValueError("no hash given")


def _digest_problem(full: Path, algorithm: str, expected: str, source: str) -> str | None:
    with full.open("rb") as handle:
        got = hashlib.file_digest(handle, algorithm).hexdigest()  # in chunks: a 2 GB file costs no memory
    if got != expected.lower():
        return f"{algorithm} {got} is not the {expected} that {source} gives"
    return None


def _integrity_problem(check: Callable[[Path], None], full: Path) -> str | None:
    try:
        check(full)
    except IntegrityError as exc:
        return str(exc)
    return None


def conda_role(path: str) -> str | None:
    """What a file below conda/ is (INDEX, REFUSALS, FIRST_SEEN), by its exact place and name; None for packages,
    shards and anything pkgcache does not write there. The layout: `conda/<root>/<channel>/` holds the channel's
    index files and one folder per subdir; a subdir holds its index files, first sightings, `made-here/` (the shard
    index made here), `from-shards/` (the repodata of the shards held) and `filtered/<key>/` (the filtered views)."""
    parts = path.split("/")
    if parts[0] != "conda" or len(parts) < 4:
        return None
    below, name = parts[3:-1], parts[-1]  # the folders below the channel's, and the file's name
    if not below:
        return INDEX if name in CHANNEL_INDEX_FILES else None
    if below[0] not in KNOWN_SUBDIRS:
        return None
    places = {
        (): {**dict.fromkeys(SUBDIR_INDEX_FILES, INDEX), FIRST_SEEN_FILE: FIRST_SEEN},
        (MADE_HERE,): {SHARD_INDEX: INDEX},
        (FROM_SHARDS,): {"repodata.json": INDEX},
    }
    if len(below) == 3 and below[1] == FILTERED:
        return {**dict.fromkeys(FILTERED_INDEX_NAMES, INDEX), **dict.fromkeys(REFUSALS_NAMES, REFUSALS)}.get(name)
    return places.get(tuple(below[1:]), {}).get(name)


def filtered_view_of(path: str) -> str | None:
    """The filtered repodata (`.../filtered/<key>/<base>`) whose view a file is part of; None for any other file."""
    if conda_role(path) not in (INDEX, REFUSALS) or path.split("/")[-3] != FILTERED:
        return None
    folder, name = path.rsplit("/", 1)
    base = name.removesuffix(REFUSALS_SUFFIX).removesuffix(".zst").removesuffix(".bz2")
    return f"{folder}/{base}"


def _refusals_problem(full: Path) -> str | None:
    """The refusals of a filtered view, as the gate reads them (conda/repodata_filter.py)."""
    try:
        read_refusals(full)
    except DamagedRefusals as exc:
        return f"not a record of refusals: {exc}"
    return None


def _first_seen_problem(store: CacheStore, full: Path) -> str | None:
    if parse_first_seen(store.read_json(full)) is None:
        return "not a record of first sightings"
    return None


def _repodata_problem(full: Path) -> str | None:
    """Every record of a repodata read, as the package lookups and the shard builds read them (streaming, in
    bounded memory): beyond 8 MB the download's check looked at the ends and the "packages" key only."""
    try:
        for _ in iter_repodata_file(full):
            pass
    except MalformedRepodata as exc:
        return f"not a readable repodata: {exc}"
    return None


def _magic_problem(full: Path) -> str | None:
    magic = magic_for(full.name)
    if not magic:
        return None
    with full.open("rb") as handle:
        start = handle.read(max(len(m) for m in magic))
    if not start.startswith(magic):
        return f"does not start as a {full.name.rsplit('.', 1)[-1]} file does (no index here lists it)"
    return None


def _page_problem(full: Path) -> str | None:
    """A page as pkgcache reads one (pypi/pages.py); one it could not read would be fetched again anyway."""
    try:
        CachedPage.from_json(json.loads(full.read_bytes()))
    except (ValueError, KeyError, TypeError) as exc:
        return f"not a project page pkgcache can read ({type(exc).__name__}: {exc})"
    return None


def _json_object_problem(full: Path) -> str | None:
    try:
        document = json.loads(full.read_bytes())
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    return None if isinstance(document, dict) else "not a JSON object"


def _metadata_records(store: CacheStore, path: Path) -> dict[str, MetadataRecord]:
    """A project's core metadata records (pypi/metadata_records.py); {} when unreadable (it is judged apart)."""
    data = store.read_json(path)
    records: dict[str, MetadataRecord] = {}
    for filename, fields in (data if isinstance(data, dict) else {}).items():
        try:
            records[filename] = MetadataRecord(**fields)
        except TypeError:
            continue
    return records


def failure_lines(report: VerifyReport) -> Iterator[str]:
    """One line per failure: the path, why, and what was done with it."""
    for failure in report.failures:
        done = "removed" if failure.removed else "left in place (dry run)"
        yield f"{failure.path}: {failure.reason}; {done}"
