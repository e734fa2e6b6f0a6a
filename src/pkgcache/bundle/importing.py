"""`pkgcache import`: a bundle into a data directory, every file checked, no good file ever replaced by a bad one.

The tar is read as a stream (a bundle may be piped in). Each file is written under the data directory's `tmp/`,
hashed as it is written, and checked against the manifest (size, sha256); then each package against its index:
a PyPI file against the sha256 its project's page lists, a conda package against its record in the subdir's
repodata or shard (the bundle's own index files, else the data directory's), a shard against the digest that is
its name, a page must read as one. Only files that pass are moved into place, each with one rename, carrying
their original mtime (so pkgcache's sidecars still describe them). A package already present is left as it is.
A project's `page.json` and `metadata.json` are one unit, merged with the data directory's (page_merge.py): the
newer page, plus the other's files the cache holds, so every package imported stays listed. A conda subdir's index
is one unit too, when the bundle brings its repodata (repodata_merge.py): the newer repodata (by its sidecar's
fetched_at) plus the other's records of packages the cache holds, written in every form either side held, with
sidecars describing the new bytes; `current_repodata.json` and an upstream's shard index go with the base; what
pkgcache makes from the repodata (shards made here, filtered views) is removed, to be made again from it. Both
kinds of unit are merged after the packages are in place, so a running instance never lists a file not there yet.
Any other index file (`run_exports.json`, a sidecar of one) replaces the cached one only when the bundle's copy is
newer; a package that no index kept lists after the import is reported (`unlisted`): it is on disk but no client
can find it.

Once anything changed, the import leaves its mark (gate/holdings.py): a running instance's workers then drop
what they hold in memory about the cache, within about half a second.

Whatever fails is reported file by file with the reason; the files that passed are still merged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pkgcache.conda.repodata_stream import MalformedRepodata
from pkgcache.gate.holdings import mark_imported
from pkgcache.storage.file_records import record_digest

from .digests import HashingReader
from .index_hashes import Expected, IndexHashes
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, BadManifest, Entry, Manifest
from .page_merge import merge_project, read_page, read_records
from .repodata_merge import REPODATA_FORMS, Side, in_unit, merge_subdir

CHUNK = 1 << 20
META_SUFFIX = ".meta"

Progress = Callable[[int], None]


@dataclass
class ImportReport:
    manifest: Manifest | None = None
    added: list[Entry] = field(default_factory=list)
    replaced: list[Entry] = field(default_factory=list)  # index files the bundle had newer copies of
    present: list[Entry] = field(default_factory=list)  # already there (packages), or newer here (index files)
    # Files of a subdir's index unit not taken, with no copy of their own here: what pkgcache makes from the repodata
    # (made again here, from the merged one, when asked for), or what goes with the newer side's repodata.
    not_taken: list[Entry] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    unlisted: list[str] = field(default_factory=list)  # packages added that no index kept here lists
    seconds: float = 0.0
    bytes_read: int = 0
    mark: int = 0  # the id of the mark left for a running instance (gate/holdings.py); 0: nothing changed
    repaired: list[tuple[str, str]] = field(default_factory=list)  # (path, why): damaged here, replaced or removed

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def added_bytes(self) -> int:
        return sum(e.size for e in self.added) + sum(e.size for e in self.replaced)

    def as_record(self, bundle: str) -> dict[str, object]:
        return {
            "bundle": bundle,
            "added": len(self.added),
            "replaced": len(self.replaced),
            "present": len(self.present),
            "not_taken": len(self.not_taken),
            "failed": len(self.failed),
            # The first refusal and why (the page at / says why a later import failed), cut to a line.
            "why": f"{self.failed[0][0]}: {self.failed[0][1]}"[:200] if self.failed else None,
            "unlisted": len(self.unlisted),
            "bytes": self.added_bytes,
            "created_at": self.manifest.created_at if self.manifest else None,
        }


class BundleUnreadable(Exception):
    """The bundle cannot be read at all (not a tar, no manifest first, a manifest this version cannot read)."""


def import_bundle(
    source: IO[bytes], data_dir: Path, progress: Progress | None = None, *, sha256: str | None = None
) -> ImportReport:
    """Read the bundle from `source` into `data_dir` (see the module's docstring). With `sha256` (the digest
    export printed, carried apart), a bundle that is not that one is refused whole, before anything is merged."""
    started = time.monotonic()
    report = ImportReport()
    staging = data_dir / "tmp" / f"import-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    stream = HashingReader(source)
    try:
        staged = _receive(stream, staging, report, progress)
        assert report.manifest is not None
        if sha256 is not None:
            _check_digest(stream, sha256)
        good = _check_against_indexes(staged, data_dir, report)
        _merge(good, staged, data_dir, report, staging)
        report.unlisted = _unlisted([e.path for e in report.added if e.kind == "package"], data_dir)
        if report.added or report.replaced or report.repaired:
            report.mark = mark_imported(data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _check_digest(stream: HashingReader, sha256: str) -> None:
    stream.drain()  # the tar reader stops at the end marker; the digest covers the file to its last byte
    if stream.hexdigest() != sha256:
        raise BundleUnreadable(
            f"its sha256 is {stream.hexdigest()}, not the {sha256} given: it is not the bundle that was exported "
            "(changed or swapped on the way); nothing was imported"
        )


# --- reading the stream -----------------------------------------------------------------------------------------


def _receive(source: HashingReader, staging: Path, report: ImportReport, progress: Progress | None) -> dict[str, Path]:
    """Every member written to staging and checked against the manifest; cache path -> staged file."""
    staged: dict[str, Path] = {}
    try:
        tar = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115 (the `with` below closes it)
    except tarfile.TarError as exc:
        raise BundleUnreadable(f"not a bundle (not a tar file): {exc}") from None
    with tar:
        try:
            first = tar.next()
            report.manifest = _read_manifest(tar, first)
            expected = {entry.path: entry for entry in report.manifest.files}
            for member in tar:
                if member is first:
                    continue  # iterating a TarFile yields the members already read, too
                why = _receive_member(tar, member, expected, staged, staging, report, progress)
                if why is not None:
                    report.failed.append((member.name, why))
        except (tarfile.TarError, EOFError, OSError) as exc:
            if report.manifest is None:
                raise BundleUnreadable(f"the bundle cannot be read: {exc}") from None
            report.failed.append(("(bundle)", f"the tar stream ends badly after {len(staged)} files: {exc}"))
    seen = set(staged) | {path for path, _ in report.failed}
    for entry in report.manifest.files:
        if entry.path not in seen:
            report.failed.append((entry.path, "in the manifest but not in the bundle (cut short?)"))
    return staged


def _read_manifest(tar: tarfile.TarFile, first: tarfile.TarInfo | None) -> Manifest:
    if first is None or first.name != MANIFEST_NAME or not first.isreg():
        raise BundleUnreadable(f"not a pkgcache bundle: its first member is not {MANIFEST_NAME}")
    if first.size > MAX_MANIFEST_BYTES:
        raise BundleUnreadable("the manifest is implausibly large")
    handle = tar.extractfile(first)
    assert handle is not None
    try:
        return Manifest.from_json(handle.read())
    except BadManifest as exc:
        raise BundleUnreadable(str(exc)) from None


def _receive_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    expected: dict[str, Entry],
    staged: dict[str, Path],
    staging: Path,
    report: ImportReport,
    progress: Progress | None,
) -> str | None:
    """Stage one member; why it was refused, or None."""
    entry = expected.get(member.name)
    if entry is None:
        return "not in the manifest"
    if member.name in staged:
        return "in the bundle twice"
    if not member.isreg():
        return "not a regular file"
    if member.size != entry.size:
        return f"{member.size} bytes in the tar, {entry.size} in the manifest"
    handle = tar.extractfile(member)
    assert handle is not None
    target = _staging_path(staging, len(staged) + len(report.failed), member.name)
    digest = hashlib.sha256()
    with target.open("wb") as out:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            report.bytes_read += len(chunk)
            if progress is not None:
                progress(len(chunk))
    if digest.hexdigest() != entry.sha256:
        target.unlink()
        return f"sha256 {digest.hexdigest()} is not the manifest's {entry.sha256}"
    staged[member.name] = target
    return None


def _staging_path(staging: Path, number: int, path: str) -> Path:
    """Where the member at cache path `path` is staged: in a folder of its own, under its own file name, as what
    reads it goes by the name (a repodata.json.zst or .bz2 is decompressed because its name says so)."""
    folder = staging / f"{number:08d}"
    folder.mkdir()
    return folder / path.rsplit("/", 1)[-1]


# --- checks against the indexes ----------------------------------------------------------------------------------


def _check_against_indexes(staged: dict[str, Path], data_dir: Path, report: ImportReport) -> list[Entry]:
    """The staged entries that pass their index checks; the others go to `report.failed`."""
    assert report.manifest is not None
    entries = [e for e in report.manifest.files if e.path in staged]
    pages_ok = {e.path for e in entries if e.path.endswith("/page.json") and _is_page(staged[e.path])}
    usable = {path: file for path, file in staged.items() if not path.endswith("/page.json") or path in pages_ok}
    hashes = IndexHashes(data_dir, usable)
    conda = hashes.conda_packages(e.path for e in entries if e.kind == "package" and e.path.startswith("conda/"))
    good = []
    for entry in entries:
        if entry.path.endswith("/page.json") and entry.path not in pages_ok:
            why: str | None = "not a project page pkgcache can read"
        else:
            why = _index_check(entry, hashes, conda)
        if why is None:
            good.append(entry)
        else:
            report.failed.append((entry.path, why))
    return good


def _index_check(entry: Entry, hashes: IndexHashes, conda: dict[str, Expected]) -> str | None:
    if entry.kind == "shard":
        name_digest = entry.path.rsplit("/", 1)[-1].split(".", 1)[0]
        return None if name_digest == entry.sha256 else f"its content's sha256 is {entry.sha256}, not its name"
    if entry.kind == "metadata":
        expected = hashes.pypi_metadata(entry.path)
        return _compare(entry, expected) if expected else None
    if entry.kind != "package":
        return None
    if entry.path.startswith("pypi/"):
        found = hashes.pypi_file(entry.path)
        if found is None:
            return "no project page in the bundle or the cache lists it"
        return _compare(entry, found)
    found_conda = conda.get(entry.path)
    if found_conda is None:
        return "no repodata or shard in the bundle or the cache lists it"
    return _compare(entry, found_conda)


def _compare(entry: Entry, expected: Expected) -> str | None:
    if expected.sha256 is None:
        return f"{expected.source} lists no sha256 for it"
    if expected.sha256 != entry.sha256:
        return f"sha256 {entry.sha256} is not the {expected.sha256} that {expected.source} lists"
    if expected.size is not None and expected.size != entry.size:
        return f"{entry.size} bytes, not the {expected.size} that {expected.source} lists"
    return None


def _is_page(path: Path) -> bool:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    page = document.get("page") if isinstance(document, dict) else None
    return isinstance(page, dict) and isinstance(page.get("files"), list) and "fetched_at" in document


# --- merging ------------------------------------------------------------------------------------------------------


def _merge(good: list[Entry], staged: dict[str, Path], data_dir: Path, report: ImportReport, staging: Path) -> None:
    """Move each good file into place, unless the data directory's copy is to be kept; then each project's and each
    conda subdir's index, as one unit each."""
    units = _project_units(good)
    subdirs = _subdir_units(good)
    in_units = {entry.path for unit in (*units.values(), *subdirs.values()) for entry in unit.values()}
    decided: dict[str, bool] = {}  # an index file's path -> whether the bundle's copy went in
    # Sidecars follow the file they describe: decide those files first.
    for entry in sorted((e for e in good if e.path not in in_units), key=lambda e: e.path.endswith(META_SUFFIX)):
        destination = data_dir / entry.path
        take = _take(entry, destination, decided)
        if entry.kind == "index" and not entry.path.endswith(META_SUFFIX):
            decided[entry.path] = take
        if not take:
            report.present.append(entry)
            continue
        existed = destination.exists()
        source = staged[entry.path]
        os.utime(source, ns=(time.time_ns(), entry.mtime_ns))
        if entry.kind != "index":
            # As a download's: what it was checked against goes with it (a hit compares it with the index's record).
            record_digest(source, ("sha256", entry.sha256))
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
        (report.replaced if existed else report.added).append(entry)
    # After the packages: a page a running instance reads never lists a file not there yet.
    for project, unit in units.items():
        _merge_project(project, unit, staged, data_dir, report)
    for subdir_path, subdir_unit in subdirs.items():
        _merge_subdir(subdir_path, subdir_unit, staged, data_dir, report, staging)


PROJECT_INDEX = ("page.json", "metadata.json")


def _project_units(good: list[Entry]) -> dict[str, dict[str, Entry]]:
    """project -> its index files in the bundle, by name (`pypi/simple/<project>/page.json`, `metadata.json`)."""
    units: dict[str, dict[str, Entry]] = {}
    for entry in good:
        parts = entry.path.split("/")
        if len(parts) == 4 and parts[:2] == ["pypi", "simple"] and parts[3] in PROJECT_INDEX:
            units.setdefault(parts[2], {})[parts[3]] = entry
    return units


def _merge_project(
    project: str, unit: dict[str, Entry], staged: dict[str, Path], data_dir: Path, report: ImportReport
) -> None:
    """A project's page and records, merged with the data directory's as one unit (page_merge.py)."""
    folder = data_dir / "pypi" / "simple" / project
    page_entry, records_entry = unit.get("page.json"), unit.get("metadata.json")
    bundle_page = read_page(staged[page_entry.path]) if page_entry else None
    here_page = read_page(folder / "page.json")
    bundle_records = read_records(staged[records_entry.path] if records_entry else None)
    here_records = read_records(folder / "metadata.json")
    if bundle_page is None:  # records alone: the page here stays the base
        page_bytes, records = None, {**bundle_records, **here_records}
        records_bytes = None if records == here_records else json.dumps(records).encode()
    elif here_page is None:  # nothing to merge the page with; the records here (if any) yield to the bundle's
        page_bytes = staged[page_entry.path].read_bytes() if page_entry else None
        records = {**here_records, **bundle_records}
        records_bytes = None if records == here_records else json.dumps(records).encode()
    else:
        merged = merge_project(bundle_page, here_page, bundle_records, here_records, _held(data_dir, project))
        page_bytes, records_bytes = merged.page, merged.records
    for entry, content in ((page_entry, page_bytes), (records_entry, records_bytes)):
        if entry is not None:
            _write_index(data_dir / entry.path, content, entry, report)


def _subdir_units(good: list[Entry]) -> dict[str, dict[str, Entry]]:
    """`conda/<root>/<channel>/<subdir>` -> the bundle's files of its index unit (repodata_merge.py), by their path
    below the subdir; only for subdirs whose repodata the bundle brings (other files are taken one by one)."""
    units: dict[str, dict[str, Entry]] = {}
    for entry in good:
        parts = entry.path.split("/")
        if len(parts) >= 5 and parts[0] == "conda" and entry.kind == "index":
            name = "/".join(parts[4:])
            if in_unit(name):
                units.setdefault("/".join(parts[:4]), {})[name] = entry
    return {path: unit for path, unit in units.items() if any(form in unit for form in REPODATA_FORMS)}


def _merge_subdir(
    subdir_path: str,
    unit: dict[str, Entry],
    staged: dict[str, Path],
    data_dir: Path,
    report: ImportReport,
    staging: Path,
) -> None:
    """A conda subdir's index, merged with the data directory's as one unit (repodata_merge.py)."""
    folder = data_dir / subdir_path
    bundle = Side(
        files={name: staged[entry.path] for name, entry in unit.items()},
        stats={name: (entry.size, entry.mtime_ns) for name, entry in unit.items()},
    )
    here = Side.in_folder(folder)
    try:
        outcome = merge_subdir(folder, bundle, here, staging)
    except MalformedRepodata as exc:
        _refuse_unit(unit, report, f"the subdir's repodata could not be merged: {exc}")
        return
    except OSError as exc:  # said for this subdir alone: the other units are still merged
        _refuse_unit(unit, report, f"the subdir's index could not be written here: {exc}")
        return
    report.repaired += [(f"{subdir_path}/{form}", why) for form, why in outcome.damaged]
    written = set(outcome.written) | {form + META_SUFFIX for form in outcome.written}
    for name, entry in sorted(unit.items()):
        if name in written or name in outcome.taken:
            (report.replaced if name in here.files else report.added).append(entry)
        elif name in here.files and name not in outcome.removed:
            report.present.append(entry)  # the data directory's copy goes with its newer repodata
        else:
            report.not_taken.append(entry)


def _refuse_unit(unit: dict[str, Entry], report: ImportReport, why: str) -> None:
    for entry in unit.values():
        report.failed.append((entry.path, why))


def _held(data_dir: Path, project: str) -> set[str]:
    try:
        return set(os.listdir(data_dir / "pypi" / "files" / project))
    except OSError:
        return set()


def _write_index(destination: Path, content: bytes | None, entry: Entry, report: ImportReport) -> None:
    """One index file of a project written whole (one rename), or left as it is (`content` None)."""
    if content is None:
        report.present.append(entry)
        return
    existed = destination.exists()
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}")
    staged.write_bytes(content)
    os.replace(staged, destination)
    (report.replaced if existed else report.added).append(entry)


def _unlisted(packages: list[str], data_dir: Path) -> list[str]:
    """The packages (cache paths) no index now in the data directory lists: on disk, but no client finds them."""
    hashes = IndexHashes(data_dir)
    conda = hashes.conda_packages(p for p in packages if p.startswith("conda/"))
    return [
        path for path in packages if (hashes.pypi_file(path) is None if path.startswith("pypi/") else path not in conda)
    ]


def _take(entry: Entry, destination: Path, decided: dict[str, bool]) -> bool:
    try:
        here = destination.stat()
    except FileNotFoundError:
        if entry.path.endswith(META_SUFFIX):
            described = entry.path.removesuffix(META_SUFFIX)
            return decided.get(described, True)
        return True
    if entry.kind != "index":
        return False  # packages, metadata and shards do not change: the copy here is the same file
    if entry.path.endswith(META_SUFFIX):
        described = entry.path.removesuffix(META_SUFFIX)
        if described in decided:
            return decided[described]
    return entry.mtime_ns > here.st_mtime_ns
