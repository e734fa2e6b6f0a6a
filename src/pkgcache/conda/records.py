"""Finding one package's record (sha256, size) in a channel's repodata: the very record clients read there.

conda-forge's repodata.json is hundreds of MB: parsing it to check one package would cost seconds and gigabytes.
Records are keyed by file name, so the file is scanned as a stream (decompressed on the fly when it is .zst or
.bz2) for `"<filename>": {`, and only that object is parsed. Memory stays at a few MB whatever the file's size.

That scan finds the first such text anywhere, which is the record only when nothing else in the file looks like
it: an object under that name inside an earlier record's unknown field, or in `info`, would be taken for it, and
a name given twice (in one section, or in both `packages` and `packages.conda`) has two records to choose from.
So each version of a repodata file (by its stamp) is read once, whole, in bounded memory (repodata_runs, records
left undecoded), for its *suspects*: the names such a scan could get wrong. Each text that scan can find is a key
whose value is an object (a JSON string holds no unescaped quote, so `"<filename>"` followed by `:` ends a key):
the key is the file name, or ends with `"` and the file name (an escaped quote in a longer key). The suspects are
the keys of objects anywhere but at a record's place (and such a key's tail after its last quote), and the file
names given more than once (a bit filter over the names: a name whose bits are all set already is a suspect, so
a rare false one only costs it the slow path). Only the suspects are kept (a few names in real repodata).
The writing worker makes that pass as soon as a new version is in place, in the background (conda/passes_ahead.py,
through `find_records` for the packages cached in the subdir: package_records.ListedRecords.scan_ahead), so the
first lookup finds the suspects known; a lookup that comes while it runs waits for it (one pass per file at a time).
`find_records` takes the records of the names it is asked for from that same pass when it makes it.

A name not among the suspects is looked up by the scan, which then finds its one record or nothing. A suspect is
looked up by reading the records themselves: every record given for that name, in every section; none is no
record, the same one given several times is that record, different ones are `AmbiguousRecord`: pkgcache cannot
know which one a client reads (rattler keeps the first of two adjacent ones, both of two apart, and refuses a
name in both sections; json.load keeps the last), so it checks the package against none and refuses it. A record
too large for the scan's window (RECORD_WINDOW) is read the same way, up to repodata_runs' bound for a value.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import logging
import os
import re
import threading
from array import array
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO

import msgspec

from pkgcache.conda.passes_ahead import PassStopped
from pkgcache.conda.repodata_runs import MAX_VALUE_BYTES, Declined, RecordRun, iter_repodata_runs
from pkgcache.conda.repodata_stream import (
    Info,
    MalformedRepodata,
    Other,
    Record,
    Removed,
    decompressed,
    iter_repodata,
)
from pkgcache.storage.store import Stamp, stamp_of

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
# A record is a few KB; this much after its key holds it whole, or the record is read the slow way.
RECORD_WINDOW = 1024 * 1024
# The bit filter that finds names given twice: at most 2**26 bits (8 MiB, for the pass only), three bits a name. With
# 700,000 names (conda-forge's largest subdir) about 5 are taken for repeated when they are not.
FILTER_BITS = 1 << 26
# It is sized to the file: half a bit for each byte of JSON the file may hold (a record takes 200 bytes at the
# least: 100 bits a name, as 2**26 bits give conda-forge's largest subdir), a compressed file taken to be at most
# COMPRESSION_RATIO times its size. A small subdir's pass (a channel's noarch, run beside a big subdir's build)
# then takes kilobytes, not 8 MiB; a filter too small for the file only makes more names suspects (read the slow,
# careful way), never fewer.
MIN_FILTER_BITS = 1 << 16
COMPRESSION_RATIO = 16
# Repodata files whose suspects are remembered (one entry per cached repodata file; a few names each).
SUSPECTS_KEPT = 64
# Spreads a name's hash over the bits of its third place in the filter.
_MIX = 0x9E3779B97F4A7C15
# A file name holding any of these is looked up the slow way: the scan's reasoning needs plain names.
_NOT_PLAIN = re.compile(r'["\\{}:\x00-\x1f]')
# Each place where a key whose value is an object starts, overlapping ones too (for the rare nested objects).
_OBJECT_KEY = re.compile(rb'(?="([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*\{)')


class AmbiguousRecord(Exception):
    """The repodata gives the package no single record to check it against (several different ones, or one that
    cannot be read); the message says which."""


@dataclass(frozen=True)
class _Suspects:
    stamp: Stamp
    names: frozenset[str]
    # The names under `removed`, as the sorted 8-byte digests of `_removed_key` (only a 404's wording hangs on
    # them, so a clash costs nothing; conda-forge names thousands there, kept for up to SUSPECTS_KEPT files).
    removed: array[int] = field(default_factory=lambda: array("q"))


_suspects: dict[str, _Suspects] = {}
_locks: dict[str, threading.Lock] = {}
_memo_lock = threading.Lock()


def find_record(repodata: Path, filename: str) -> dict[str, Any] | None:
    """The record of `filename` in a repodata file (.json, .json.zst or .json.bz2), or None; `AmbiguousRecord` when
    it has no single one (blocking: the first lookup in a version of the file reads it whole, once)."""
    with repodata.open("rb") as raw:
        suspects, _ = _suspects_of(repodata, raw)
        raw.seek(0)
        if filename in suspects or _NOT_PLAIN.search(filename):
            return _record_by_reading(repodata.name, raw, filename)
        with decompressed(repodata.name, raw) as stream:
            found = _scan_for(stream, filename)
        if found is None or found is _TOO_LARGE:
            if found is None:
                return None
            raw.seek(0)
            return _record_by_reading(repodata.name, raw, filename)
        return found  # type: ignore[return-value]


_TOO_LARGE: Any = object()


def find_records(
    repodata: Path, filenames: Collection[str], stop: threading.Event | None = None
) -> dict[str, dict[str, Any]]:
    """The records of several files, each as `find_record` finds it, in one pass (blocking); a name with no record,
    or none single (AmbiguousRecord), is left out. When this version's suspects are not known yet, the pass that
    finds them gives the records too; else the plain names are scanned for. `stop`: set, the pass ends early with
    PassStopped (its work is lost)."""
    found: dict[str, dict[str, Any]] = {}
    with repodata.open("rb") as raw:
        suspects, given = _suspects_of(repodata, raw, filenames, stop)
        if given is not None:
            careful = _from_records_given(given, found)
        else:
            careful = {name for name in filenames if name in suspects or not _ANY_PACKAGE_NAME.fullmatch(name)}
            raw.seek(0)
            with decompressed(repodata.name, raw) as stream:
                scanned = _scan_for_many(stream, set(filenames) - careful, stop)
            for name, record in scanned.items():
                if record is _TOO_LARGE:
                    careful.add(name)
                else:
                    found[name] = record
    for name in careful:
        try:
            record = find_record(repodata, name)
        except AmbiguousRecord:
            continue
        if record is not None:
            found[name] = record
    return found


def _from_records_given(given: dict[str, list[Any]], found: dict[str, dict[str, Any]]) -> set[str]:
    """Into `found`, each name's one record among every record the file gives it (at a record's place, in any
    section: as `_record_by_reading` decides); the names whose record text does not decode, to be read carefully."""
    careful = set()
    for name, texts in given.items():
        try:
            values = [json.loads(bytes(text)) if isinstance(text, msgspec.Raw) else text for text in texts]
        except ValueError:
            careful.add(name)
            continue
        if values and all(isinstance(value, dict) and value == values[0] for value in values):
            found[name] = values[0]
    return careful


_ANY_PACKAGE_KEY = re.compile(rb'"([^"\\\s]{1,400}?(?:\.conda|\.tar\.bz2))"\s*:\s*\{')
# The names that scan can meet (the others are looked up one by one, as find_record does).
_ANY_PACKAGE_NAME = re.compile(r'[^"\\\s{}:\x00-\x1f]{1,400}?(?:\.conda|\.tar\.bz2)')
# Most records are parsed from this much text after their key, the rest from RECORD_WINDOW.
SHORT_WINDOW = 64 * 1024


def _scan_for_many(stream: IO[bytes], wanted: set[str], stop: threading.Event | None = None) -> dict[str, Any]:
    """The object after the first `"<name>": {` of each wanted name (_TOO_LARGE when it cannot be read in the
    window), in one pass; a name never met is left out."""
    found: dict[str, Any] = {}
    buffer, position, ended = b"", 0, False
    while wanted and not ended and len(found) < len(wanted):
        if stop is not None and stop.is_set():
            raise PassStopped(f"the scan of {len(wanted)} names was told to stop")
        chunk = stream.read(CHUNK)
        ended = not chunk
        buffer += chunk
        # A key starting before `limit` has its whole window in the buffer (or the file ends there).
        limit = len(buffer) if ended else max(0, len(buffer) - RECORD_WINDOW)
        for match in _ANY_PACKAGE_KEY.finditer(buffer, position):
            if match.start() >= limit:
                break
            position = match.end()
            name = match.group(1).decode("utf-8", "replace")
            if name in wanted and name not in found:
                start = match.end() - 1
                record = _parse_object(buffer[start : start + SHORT_WINDOW])
                if record is None:
                    record = _parse_object(buffer[start : start + RECORD_WINDOW])
                found[name] = _TOO_LARGE if record is None else record
        cut = max(position, limit)
        buffer, position = buffer[cut:], max(0, position - cut)
    return found


def _scan_for(stream: IO[bytes], filename: str) -> dict[str, Any] | None:
    """The object after the first `"<filename>": {` of the text; _TOO_LARGE when it cannot be read in the window."""
    pattern = re.compile(b'"' + re.escape(filename.encode()) + rb'"\s*:\s*\{')
    keep = len(filename) + 64  # enough overlap for a key split across two chunks
    buffer = b""
    chunks = _chunks(stream)
    for chunk in chunks:
        buffer += chunk
        match = pattern.search(buffer)
        if match is None:
            buffer = buffer[-keep:]
            continue
        start = match.end() - 1  # the opening brace
        while len(buffer) - start < RECORD_WINDOW:
            more = next(chunks, b"")
            if not more:
                break
            buffer += more
        record = _parse_object(buffer[start : start + RECORD_WINDOW])
        return _TOO_LARGE if record is None else record
    return None


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _parse_object(window: bytes) -> dict[str, Any] | None:
    try:
        record, _ = json.JSONDecoder().raw_decode(window.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# --- the suspects of a repodata file ---


def _suspects_of(
    repodata: Path, raw: BinaryIO, wanted: Collection[str] = (), stop: threading.Event | None = None
) -> tuple[frozenset[str], dict[str, list[Any]] | None]:
    """The suspects of the file open as `raw` (this very version of it: by its stamp), found once; and, when this
    call read it for them, every record it gives each `wanted` name (None when they were known already, or the
    file was not read by the run reader)."""
    stamp = stamp_of(os.fstat(raw.fileno()))
    key = str(repodata)
    with _memo_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one pass per file at a time: lookups arriving meanwhile wait for its answer
        known = _suspects.get(key)
        if known is not None and known.stamp == stamp:
            return known.names, None
        raw.seek(0)
        finder = _SuspectFinder(wanted, filter_bits_for(repodata.name, stamp[1]))
        names, given = read_whole(repodata.name, raw, wanted, stop, finder=finder)
        with _memo_lock:
            if len(_suspects) >= SUSPECTS_KEPT and key not in _suspects:
                _suspects.pop(next(iter(_suspects)))
            _suspects[key] = _Suspects(stamp, names, array("q", sorted(finder.removed)))
        return names, given


def is_removed(repodata: Path, filename: str) -> bool:
    """Whether a repodata file names `filename` under `removed` (how a channel marks a package it took out, as
    conda-forge marks one broken): known from the pass that finds the file's suspects (blocking: made now if this
    version has had none); False when the file cannot be read. Only a 404's wording hangs on it."""
    key = str(repodata)
    try:
        with repodata.open("rb") as raw:
            _suspects_of(repodata, raw)
            stamp = stamp_of(os.fstat(raw.fileno()))
    except OSError as exc:
        log.info("could not tell whether %s names %s under removed: %s", repodata.name, filename, exc)
        return False
    with _memo_lock:
        known = _suspects.get(key)
    if known is None or known.stamp != stamp:
        return False
    wanted = _removed_key(filename)
    at = bisect.bisect_left(known.removed, wanted)
    return at < len(known.removed) and known.removed[at] == wanted


def _removed_key(filename: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(filename.encode("utf-8", "replace"), digest_size=8).digest(), "big", signed=True
    )


def suspects_in(name: str, raw: BinaryIO) -> frozenset[str]:
    """The names a scan for `"<name>": {` may get wrong in the repodata file called `name` open as `raw` (see the
    module docstring); a file that cannot be read as repodata makes every name a suspect (an empty name stands for
    that: `_record_by_reading` then says what is wrong)."""
    return read_whole(name, raw)[0]


def read_whole(
    name: str,
    raw: BinaryIO,
    wanted: Collection[str] = (),
    stop: threading.Event | None = None,
    *,
    finder: _SuspectFinder | None = None,
) -> tuple[frozenset[str], dict[str, list[Any]] | None]:
    """`suspects_in`, and every record the file gives each `wanted` name at a record's place, as the run reader
    found it (its JSON text; None when the run reader declined the file: then read them again). `stop`: set, the
    pass ends within a run of records with PassStopped. `finder` (made for `wanted`) is left holding what else the
    pass found (the names under `removed`)."""
    finder = finder if finder is not None else _SuspectFinder(wanted, filter_bits_for(name, _size_of(raw)))
    try:
        with decompressed(name, raw) as binary:
            for item in iter_repodata_runs(binary, raw_records=True, others=True, repeats=True):
                if stop is not None and stop.is_set():
                    raise PassStopped(f"the pass over {name} was told to stop")
                finder.take(item)
    except Declined as exc:  # the careful reader, which reads anything a client can
        log.info("reading %s again with the standard library for its suspects: %s", name, exc)
        finder.start_again()
        raw.seek(0)
        try:
            with decompressed(name, raw) as binary, _text(binary) as text:
                for each in iter_repodata(text, others=True):
                    if stop is not None and stop.is_set():
                        raise PassStopped(f"the pass over {name} was told to stop")
                    finder.take(each)
        except (MalformedRepodata, ValueError, OSError, EOFError) as exc:
            log.warning("%s cannot be read as repodata (%s): its packages are not served", name, exc)
            return _UNREADABLE, None
        return frozenset(finder.suspects), None
    except (ValueError, OSError, EOFError) as exc:
        log.warning("%s cannot be read as repodata (%s): its packages are not served", name, exc)
        return _UNREADABLE, None
    return frozenset(finder.suspects), finder.given if wanted else None


class _AllNames(frozenset[str]):
    def __contains__(self, _name: object) -> bool:
        return True


_UNREADABLE = _AllNames()


def filter_bits_for(name: str, size: int | None) -> int:
    """The bits of the name filter for a repodata file called `name` of `size` bytes on disk (None: unknown)."""
    if size is None:
        return FILTER_BITS
    json_bytes = size if name.endswith(".json") else size * COMPRESSION_RATIO
    wanted = max(MIN_FILTER_BITS, json_bytes // 2)
    return min(FILTER_BITS, 1 << (wanted - 1).bit_length())


def _size_of(raw: BinaryIO) -> int | None:
    try:
        return os.fstat(raw.fileno()).st_size
    except (OSError, ValueError, io.UnsupportedOperation):
        return None  # not a file (bytes in memory, say)


class _SuspectFinder:
    def __init__(self, wanted: Collection[str] = (), filter_bits: int = FILTER_BITS) -> None:
        self.wanted = frozenset(wanted)
        self.filter_bits = filter_bits
        self._reset(self.wanted)

    def start_again(self) -> None:
        """Forget what was found: the file is read again by the careful reader, which gives no records to gather."""
        self._reset(frozenset())

    def _reset(self, gathered: frozenset[str]) -> None:
        self.suspects: set[str] = set()
        self._bits = bytearray(self.filter_bits // 8)
        self._wanted = gathered
        # Every record given to each wanted name in the runs, in file order: its text (decoded when it was repeated
        # within a run, as the run reader gives those).
        self.given: dict[str, list[Any]] = {}
        self.removed: set[int] = set()  # the `_removed_key` of each name under `removed`

    def take(self, item: object) -> None:
        if type(item) is RecordRun:
            if self._wanted:
                self._gather(item)
            self.suspects.update(item.repeated)
            if item.flat:
                self._names(item.records)
            else:
                for filename, raw in item.records.items():
                    self._record(filename, bytes(raw))
        elif type(item) is Record:
            self._record(item.filename, item.record)
        elif type(item) is Removed:
            self.removed.add(_removed_key(item.filename))
        elif type(item) is Info:
            self._misplaced("info", item.info)
        elif type(item) is Other:
            self._misplaced(item.key, item.value)

    def _gather(self, run: RecordRun) -> None:
        records, wanted = run.records, self._wanted
        found = [name for name in wanted if name in records] if len(wanted) < len(records) else wanted & records.keys()
        for name in found:
            given = self.given.setdefault(name, [])
            if name in run.repeated:
                given.extend(run.repeated[name])
            else:
                given.append(records[name])

    def _record(self, filename: str, record: bytes | Any) -> None:
        self._names({filename: None})
        if isinstance(record, bytes):
            if b"{" in record[1:]:  # an object inside the record (or a brace in a string): its keys
                for found in _OBJECT_KEY.finditer(record, 1):
                    self.suspects.add(found.group(1).decode("utf-8", "replace"))
        else:
            self._inside(record)

    def _misplaced(self, key: str, value: Any) -> None:
        if isinstance(value, dict):
            self._add_key(key)
        self._inside(value)

    def _inside(self, value: Any) -> None:
        """Every key of an object inside `value` whose value is an object too."""
        stack = [value]
        while stack:
            current = stack.pop()
            if isinstance(current, dict):
                for key, inner in current.items():
                    if isinstance(inner, dict):
                        self._add_key(key)
                    if isinstance(inner, dict | list):
                        stack.append(inner)
            elif isinstance(current, list):
                stack.extend(item for item in current if isinstance(item, dict | list))

    def _add_key(self, key: str) -> None:
        self.suspects.add(key)
        if '"' in key:
            self.suspects.add(key.rsplit('"', 1)[1])

    def _names(self, records: dict[str, Any]) -> None:
        """Each name whose three bits in the filter were all set already (it was, or may have been, given before)
        is a suspect; its bits are set. A name with a quote makes its tail after that a suspect too."""
        bits, suspects, last = self._bits, self.suspects, self.filter_bits - 1
        for filename in records:
            first = hash(filename)
            a, b, c = first & last, (first >> 26) & last, ((first * _MIX) >> 24) & last
            if bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7)) and bits[c >> 3] & (1 << (c & 7)):
                suspects.add(filename)
            else:
                bits[a >> 3] |= 1 << (a & 7)
                bits[b >> 3] |= 1 << (b & 7)
                bits[c >> 3] |= 1 << (c & 7)
            if '"' in filename:
                suspects.add(filename.rsplit('"', 1)[1])


# --- a suspect's record, read from the records themselves ---


def _record_by_reading(name: str, raw: BinaryIO, filename: str) -> dict[str, Any] | None:
    """Every record the repodata gives `filename`, in any section: its one record, or None, or AmbiguousRecord."""
    try:
        found = _records_given(name, raw, filename)
    except Declined as exc:
        if "larger than" in str(exc):
            raise AmbiguousRecord(f"a value in {name} is larger than {MAX_VALUE_BYTES >> 20} MiB") from None
        raw.seek(0)
        try:
            found = _records_given_carefully(name, raw, filename)
        except (MalformedRepodata, ValueError, OSError, EOFError) as exc:
            raise AmbiguousRecord(f"{name} cannot be read as repodata: {exc}") from None
    except (ValueError, OSError, EOFError) as exc:
        raise AmbiguousRecord(f"{name} cannot be read as repodata: {exc}") from None
    if not found:
        return None
    if any(not isinstance(record, dict) for record in found):
        raise AmbiguousRecord(f"{name} gives {filename} a record that is not an object")
    if any(record != found[0] for record in found[1:]):
        raise AmbiguousRecord(f"{name} gives {filename} {len(found)} different records")
    return found[0]


def _records_given(name: str, raw: BinaryIO, filename: str) -> list[Any]:
    found: list[Any] = []
    with decompressed(name, raw) as binary:
        for item in iter_repodata_runs(binary, raw_records=True, repeats=True):
            if type(item) is not RecordRun:
                continue
            if filename in item.repeated:
                found.extend(item.repeated[filename])
            elif filename in item.records:
                try:
                    found.append(json.loads(bytes(item.records[filename])))
                except ValueError as exc:
                    raise Declined(str(exc)) from None
    return found


def _records_given_carefully(name: str, raw: BinaryIO, filename: str) -> list[Any]:
    with decompressed(name, raw) as binary, _text(binary) as text:
        return [item.record for item in iter_repodata(text) if type(item) is Record and item.filename == filename]


@contextmanager
def _text(binary: BinaryIO) -> Iterator[TextIO]:
    """`binary` as UTF-8 text, left open (it may be the caller's file)."""
    text = io.TextIOWrapper(binary, encoding="utf-8")
    try:
        yield text
    finally:
        text.detach()


def expected_of(record: dict[str, Any]) -> tuple[dict[str, str], int | None]:
    """The hashes and size a package must have according to its record."""
    hashes = {name: str(record[name]).lower() for name in ("sha256", "md5") if isinstance(record.get(name), str)}
    size = record.get("size")
    return hashes, size if isinstance(size, int) else None
