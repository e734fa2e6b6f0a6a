"""A conda subdir's index from a bundle and from the data directory, merged as one unit.

Every form of a subdir's repodata (`repodata.json`, `.zst`, `.bz2`) says the same thing, so they go together:
- the base is the newer repodata, by when its copy was fetched as its sidecar (`<form>.meta`, storage/sidecars.py)
  says; a copy whose sidecar is missing or describes another version of the file is dated by its mtime instead
  (pkgcache gives a fetched index file the upstream's Last-Modified as its mtime: the best left);
- the other side's records (`packages` and `packages.conda`) whose package files the cache holds after the import
  are added to it (from the upstream's shards that side holds, when it holds shards and no repodata: its clients
  read shards only), the base's winning for a file name both list, so every package imported stays listed whichever
  side is newer. A record added is taken out of the base's `removed` (the import brought or kept that very file:
  it is meant to be installable; the policy's `deny` is the way to refuse a package). `v3` records are the base's;
- the merged repodata is written, in one streaming pass, in every form either side holds, each renamed into place
  whole with a new mtime (clients' validators are the file's size and mtime: one holding the old copy's ETag or
  date gets the new bytes, never a 304), and each form's sidecar describes its new size and mtime. A sidecar keeps
  the upstream and validators of the copy it came from (the base's, where the base has that form): the upstream
  answering 304 to them keeps the merged copy, a changed upstream copy replaces it, as for any index file;
- what only the upstream's indexer makes (`current_repodata.json` in its forms, the upstream's shard index) goes
  with the base: the base side's copy, or none (online it is fetched again; offline it is a 404, and neither
  conda's default solver nor rattler asks for current_repodata);
- what pkgcache makes from the repodata is removed, and made again from the merged one when next asked for, at once
  rather than the previous one served meanwhile: the shard index made here (`made-here/`), the filtered and offline
  views (`filtered/`), and JLAP patches (against bytes no longer served).
Nothing changes when the data directory's repodata is the base and the bundle's adds no record to it. A form of the
data directory's repodata that cannot be read (damaged on this disk) is left out of the merge and replaced, or
removed when the bundle has no such form: an import is how a damaged offline cache is mended, not blocked.

Memory: the file names the base lists (about 20 MB for conda-forge's 220,000), the records added and one batch of
records; never a whole repodata: each is read a run of records at a time, in three passes: the base's (its file
names) and the other side's (the records to add) by msgspec (conda/repodata_runs.py), the base's again, record by
record with everything around them (conda/repodata_stream.py), writing every form at once. The `.bz2` form, when
either side holds one, is the slow part to write.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from pkgcache.bundle.index_hashes import package_name, shard_map, shard_records
from pkgcache.conda.base_url import pointing_here, sends_elsewhere
from pkgcache.conda.channels import SHARD_INDEX
from pkgcache.conda.filtered_channels import FILTERED
from pkgcache.conda.generated_shards import MADE_HERE
from pkgcache.conda.repodata_filter import BATCH_RECORDS, ZSTD_LEVEL, DocumentWriter
from pkgcache.conda.repodata_runs import Declined, RecordRun, iter_repodata_runs
from pkgcache.conda.repodata_stream import (
    RECORD_SECTIONS,
    Info,
    MalformedRepodata,
    Other,
    Record,
    Removed,
    iter_repodata_file,
    open_repodata_binary,
)
from pkgcache.storage.sidecars import META_SUFFIX, FileMeta

REPODATA_FORMS = ("repodata.json", "repodata.json.zst", "repodata.json.bz2")
# The upstream indexer's own views of the subdir, which pkgcache cannot make: they go with the base.
FOLLOW_BASE = ("current_repodata.json", "current_repodata.json.zst", "current_repodata.json.bz2", SHARD_INDEX)
# Made by pkgcache (or the upstream's JLAP, patches against one repodata's bytes): removed, made again on demand.
MADE_FROM_REPODATA = ("repodata.jlap", f"{MADE_HERE}/{SHARD_INDEX}")
MADE_FROM_REPODATA_DIRS = (FILTERED,)
UNIT_NAMES = frozenset(REPODATA_FORMS + FOLLOW_BASE + MADE_FROM_REPODATA)
PACKAGE_SUFFIXES = (".conda", ".tar.bz2")

Records = dict[str, dict[str, dict[str, Any]]]  # section -> file name -> record


def in_unit(name: str) -> bool:
    """Whether a file of a subdir (its path below the subdir's folder) belongs to the subdir's index unit."""
    return name.removesuffix(META_SUFFIX) in UNIT_NAMES


@dataclass
class Side:
    """One side's copy of a subdir's index unit: where each file is (name below the subdir -> path, whose file name
    is that name's last part: a repodata is read as compressed or not by it), and the size and mtime (ns) each has
    as that side knows it (the bundle's: as exported)."""

    files: dict[str, Path] = field(default_factory=dict)
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def in_folder(cls, folder: Path) -> Side:
        side = cls()
        for name in sorted(UNIT_NAMES):
            for each in (name, name + META_SUFFIX):
                path = folder / each
                try:
                    stat = path.stat()
                except OSError:
                    continue
                side.files[each], side.stats[each] = path, (stat.st_size, stat.st_mtime_ns)
        return side

    def without(self, form: str) -> Side:
        """This side as if it did not hold `form` (nor its sidecar)."""
        left = [name for name in self.files if name not in (form, form + META_SUFFIX)]
        return Side({name: self.files[name] for name in left}, {n: self.stats[n] for n in left if n in self.stats})

    def source(self) -> str | None:
        """The form its repodata is read from: the first it holds of REPODATA_FORMS."""
        return next((form for form in REPODATA_FORMS if form in self.files), None)

    def meta(self, name: str) -> FileMeta | None:
        """The sidecar of `name`, when it describes this very copy of it."""
        path = self.files.get(name + META_SUFFIX)
        if path is None or name not in self.stats:
            return None
        try:
            meta = FileMeta(**json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError):
            return None
        if meta.missing or (meta.size, meta.mtime_ns) != self.stats[name]:
            return None
        return meta

    def fetched_at(self) -> float:
        """When its repodata was fetched (last found current upstream), as its sidecar says; else its mtime."""
        source = self.source()
        assert source is not None
        meta = self.meta(source)
        return meta.fetched_at if meta is not None else self.stats[source][1] / 1e9


@dataclass
class SubdirMerge:
    """What merging a subdir's unit did (names below the subdir's folder)."""

    base: str  # "bundle" or "here"
    changed: bool = False
    records_added: int = 0
    written: list[str] = field(default_factory=list)  # repodata forms written from the merged records
    taken: list[str] = field(default_factory=list)  # the bundle's files moved into place as they are
    removed: list[str] = field(default_factory=list)
    # Forms of the data directory's repodata that could not be read, and why: replaced by the merged one, or removed.
    damaged: list[tuple[str, str]] = field(default_factory=list)


def merge_subdir(folder: Path, bundle: Side, here: Side, work_dir: Path) -> SubdirMerge:
    """Merge the unit of the subdir at `folder` (see the module docstring); the packages must be in place.

    Raises MalformedRepodata when the bundle's repodata cannot be read, and OSError when the subdir's folder cannot
    be made (a file in its place); nothing is written then."""
    damaged: list[tuple[str, str]] = []
    while True:
        try:
            outcome = _merge_readable(folder, bundle, here, work_dir)
            break
        except MalformedRepodata as exc:
            source = here.source()
            if source is None:  # the bundle's own repodata (else the merge without this side's would have read)
                raise
            # Maybe this side's copy: tried again without it. Nothing is written before every read has passed.
            damaged.append((source, str(exc)))
            here = here.without(source)
    for form, _why in damaged:
        if form not in outcome.written:
            outcome.removed += _unlink(folder / form, form) + _unlink(folder / (form + META_SUFFIX), form + META_SUFFIX)
    outcome.damaged = damaged
    outcome.changed = outcome.changed or bool(damaged)
    return outcome


def _merge_readable(folder: Path, bundle: Side, here: Side, work_dir: Path) -> SubdirMerge:
    if here.source() is None or bundle.fetched_at() > here.fetched_at():
        base_name, base, other = "bundle", bundle, here
    else:
        base_name, base, other = "here", here, bundle
    outcome = SubdirMerge(base_name)
    base_source = base.source()
    assert base_source is not None  # the caller merges only a unit whose bundle brings repodata
    other_source = other.source()
    other_index = other.files.get(SHARD_INDEX)
    wanted = _held(folder) - _listed(base.files[base_source]) if other_source or other_index else set()
    if not wanted:
        extras = _no_records()
    elif other_source is not None:
        extras = _records_of(other.files[other_source], wanted)
    else:  # the other side's clients read shards only: its records are in the upstream's shards it holds
        assert other_index is not None
        extras = _records_in_shards(other_index, folder / "shards", wanted)
    outcome.records_added = sum(len(records) for records in extras.values())
    if base is here and not outcome.records_added:
        return outcome  # the data directory's index stays as it is
    outcome.changed = True
    # A subdir may have no folder here yet: conda fetches the platform's repodata with noarch's even when it
    # installs noarch packages only, so a bundle brings repodata for subdirs it brings no package of.
    folder.mkdir(parents=True, exist_ok=True)
    forms = [form for form in REPODATA_FORMS if form in bundle.files or form in here.files]
    temps = {form: work_dir / f"merged-{uuid.uuid4().hex[:8]}-{form}" for form in forms}
    said = _write_merged(base.files[base_source], extras, temps)
    json_stat = temps["repodata.json"].stat() if "repodata.json" in temps else None
    # The compressed forms first: repodata.json (what most readers look at first) once they agree with it.
    for form in sorted(forms, key=lambda name: name == "repodata.json"):
        template = _sidecar_template(form, base, other, base_source)
        if said is not None:  # where the packages are, for pkgcache's own fetches (conda/cached_channels.py)
            template = dataclasses.replace(template, extra={**template.extra, "base_url": said})
        _put_form(folder / form, temps[form], template, json_stat)
        outcome.written.append(form)
    outcome.taken, outcome.removed = _follow_base(folder, base is bundle, bundle)
    outcome.removed += _remove_made_from_repodata(folder)
    return outcome


# --- reading ------------------------------------------------------------------------------------------------------


def _no_records() -> Records:
    return {section: {} for section in RECORD_SECTIONS}


def _held(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.name.endswith(PACKAGE_SUFFIXES) and e.is_file()}
    except OSError:
        return set()


def _listed(source: Path) -> set[str]:
    """The file names a repodata lists (in any section: a file name is one package whatever its section)."""
    return {name for _, records in _record_runs(source) for name in records}


def _records_of(source: Path, wanted: set[str]) -> Records:
    """The records of `source` (`packages` and `packages.conda`) of the file names in `wanted`."""
    found = _no_records()
    for section, records in _record_runs(source):
        if section in found:
            found[section].update((name, records[name]) for name in wanted.intersection(records))
    return found


def _records_in_shards(index: Path, shards_dir: Path, wanted: set[str]) -> Records:
    """The records of the file names in `wanted` in the shards of an upstream's shard index the cache holds (the
    bundle's shards are in place by now), each shard read once."""
    found = _no_records()
    digests = shard_map(index)
    by_shard: dict[str, set[str]] = {}
    for filename in wanted:
        digest = digests.get(package_name(filename))
        if digest is not None:
            by_shard.setdefault(digest, set()).add(filename)
    for digest, filenames in sorted(by_shard.items()):
        records = shard_records(shards_dir / f"{digest}.msgpack.zst")
        for filename in filenames & set(records):
            found["packages.conda" if filename.endswith(".conda") else "packages"][filename] = records[filename]
    return found


def _record_runs(source: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(section, records) runs of a repodata, read by msgspec (conda/repodata_runs.py, several times faster); when
    that reader declines, every record again from the start by repodata_stream's (which raises MalformedRepodata
    for a broken file): what the callers gather comes out the same when read twice."""
    try:
        with open_repodata_binary(source) as binary:
            for item in iter_repodata_runs(binary):
                if isinstance(item, RecordRun):
                    yield item.section, item.records
        return
    except (Declined, zstandard.ZstdError, EOFError, OSError):
        pass
    for each in iter_repodata_file(source):
        if isinstance(each, Record):
            yield each.section, {each.filename: each.record}


# --- writing ------------------------------------------------------------------------------------------------------


def _write_merged(source: Path, extras: Records, temps: dict[str, Path]) -> str | None:
    """The base's repodata with `extras` at the end of their sections, to every form in `temps` in one pass; the
    `info.base_url` it dropped, if any (a copy kept by a pkgcache from before repodata was stored without one must
    not send clients around pkgcache once imported: conda/base_url.py)."""
    said: str | None = None
    added = {name for records in extras.values() for name in records}
    with _outputs(temps) as outputs:
        writer = DocumentWriter(outputs)
        batch: dict[str, dict[str, Any]] = {}
        section = ""
        written: set[str] = set()

        def end_section() -> None:
            if batch:
                writer.records(section, dict(batch))
                batch.clear()
            if section in extras and section not in written:
                writer.records(section, extras[section])
                written.add(section)

        for item in iter_repodata_file(source, others=True):
            if isinstance(item, Record):
                if item.section != section:
                    end_section()
                    section = item.section
                elif len(batch) >= BATCH_RECORDS:
                    writer.records(section, dict(batch))
                    batch.clear()
                batch[item.filename] = item.record
                continue
            end_section()
            section = ""
            if isinstance(item, Removed):
                if item.filename not in added:  # listed again: not removed
                    writer.removed(item.filename)
            elif isinstance(item, Info):
                if sends_elsewhere(item.info):
                    said = item.info.get("base_url") if isinstance(item.info.get("base_url"), str) else ""
                writer.member("info", pointing_here(item.info) if said is not None else item.info)
            elif isinstance(item, Other):
                writer.member(item.key, item.value)
        end_section()
        for name in RECORD_SECTIONS:  # a section the base has none of
            if name not in written and extras.get(name):
                writer.records(name, extras[name])
        writer.finish()
    return said


@contextlib.contextmanager
def _outputs(temps: dict[str, Path]) -> Iterator[list[IO[bytes]]]:
    """A writable stream per form, compressing as its name says; all closed (and compressed frames ended) after."""
    with contextlib.ExitStack() as stack:
        outputs: list[IO[bytes]] = []
        for form, path in temps.items():
            raw = stack.enter_context(path.open("wb"))
            if form.endswith(".zst"):
                compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
                outputs.append(stack.enter_context(compressor.stream_writer(raw, closefd=False)))
            elif form.endswith(".bz2"):
                outputs.append(stack.enter_context(bz2.BZ2File(raw, "wb", compresslevel=9)))
            else:
                outputs.append(raw)
        yield outputs


def _sidecar_template(form: str, base: Side, other: Side, base_source: str) -> FileMeta:
    """What a written form's sidecar says besides its size and mtime: its own sidecar on the base side, else on the
    other side, else the base repodata's (a form only one side held keeps what that side knew of it)."""
    for side, name in ((base, form), (other, form), (base, base_source)):
        meta = side.meta(name)
        if meta is not None:
            return meta
    return FileMeta(fetched_at=base.fetched_at())


def _put_form(path: Path, temp: Path, template: FileMeta, json_stat: os.stat_result | None) -> None:
    """A form renamed into place, and its sidecar describing it."""
    stat = temp.stat()
    meta = dataclasses.replace(template, extra=dict(template.extra), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if meta.extra.get("generated") and json_stat is not None and "source_size" in meta.extra:
        # A .zst pkgcache made (conda/generated_zst.py) is recorded as made from this very .json.
        meta.extra["source_size"], meta.extra["source_mtime_ns"] = json_stat.st_size, json_stat.st_mtime_ns
    os.replace(temp, path)
    _write_json(path.with_name(path.name + META_SUFFIX), dataclasses.asdict(meta))


def _write_json(path: Path, value: Any) -> None:
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    staged.write_text(json.dumps(value, separators=(",", ":")))
    os.replace(staged, path)


# --- the rest of the unit -----------------------------------------------------------------------------------------


def _follow_base(folder: Path, base_is_bundle: bool, bundle: Side) -> tuple[list[str], list[str]]:
    """The upstream indexer's other files as the base has them: (taken from the bundle, removed here)."""
    taken: list[str] = []
    removed: list[str] = []
    if not base_is_bundle:
        return taken, removed  # the data directory's stay; the bundle's are older
    for name in FOLLOW_BASE:
        for each in (name, name + META_SUFFIX):
            path = folder / each
            if name in bundle.files:
                if each in bundle.files:
                    staged = bundle.files[each]
                    os.utime(staged, ns=(bundle.stats[each][1], bundle.stats[each][1]))
                    os.replace(staged, path)
                    taken.append(each)
                else:
                    removed += _unlink(path, each)
            else:
                removed += _unlink(path, each)
    return taken, removed


def _remove_made_from_repodata(folder: Path) -> list[str]:
    removed: list[str] = []
    for name in MADE_FROM_REPODATA:
        for each in (name, name + META_SUFFIX):
            removed += _unlink(folder / each, each)
    for name in MADE_FROM_REPODATA_DIRS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name, ignore_errors=True)
            removed.append(name + "/")
    return removed


def _unlink(path: Path, name: str) -> list[str]:
    try:
        path.unlink()
    except FileNotFoundError:
        return []
    return [name]
