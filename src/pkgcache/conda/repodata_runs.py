"""Reading a conda repodata.json a run of records at a time, decoded by msgspec's C decoder, in bounded memory.

`repodata_stream` reads one record per step with the standard library's scanner, driven from Python: about 4 us
a record, most of it Python around the decode. On a 110 MB repodata (218,834 records) that is most of a shard
build. This reader hands msgspec about half a megabyte of records at a time instead: it cuts the text of a section
(`"packages": {...}`) just after a record's closing brace and decodes the cut as one object, so a run of a
thousand records costs one call.

Where to cut is found without reading the text: after the last `}` that is followed by `,` and then `"` (spaces
allowed). Inside a JSON string such a `"` would be escaped, so the brace cannot be in a string unless that `"` ends
it; and it may close a nested object inside a record. Both are caught by the decode itself: a cut in the wrong
place does not decode (an open string or bracket), and since the text before it was decoded from a place known
to be between two records, a cut that decodes is between two records as well. The end of a section is found the
same way: decoding runs into it and msgspec reports "trailing characters" at its offset.

That offset is read from msgspec's error message, which is not a documented interface: `msgspec` is pinned to
the tested minor version for it, and `tests/test_repodata_runs.py` fails if the message changes. Anything this
reader does not expect (that message changed, a value msgspec will not decode but json would, a record that is
not an object, any malformed input) raises `Declined`, and the caller reads the file again with
`repodata_stream`, which gives the same records or the precise error: this reader never decides that a file is
malformed, it only declines to read it.

With `raw_records`, a run's records are left undecoded: each is the `msgspec.Raw` of its JSON text (msgspec still
checks that the whole run is well-formed JSON, so the cuts are as safe), for about a fifth of a full decode's
time. sorted_shards reads that way and has its forked children decode the records, on the other core.

A run is decoded into a dict, so a file name given twice within one run keeps only its last record there. With
`repeats` (raw records only), a run that lost entries that way is noticed (its text holds more `{` than its records
and keys do) and decoded again by the standard library, which keeps every entry: `RecordRun.repeated` then has
each file name given more than once in the run, with all its records (decoded), in file order.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, overload

import msgspec

from pkgcache.conda.repodata_stream import RECORD_SECTIONS, V3_KEY, Info, Other, Removed

# Input bytes per run of records: big enough that a call to msgspec carries a thousand records, small enough that
# the decoded run (several times its text as Python objects) stays a few MB. (Half a megabyte took 5 MB less of
# the builder's memory than a whole one, and no more time.)
RUN_BYTES = 1 << 19
READ_BYTES = 1 << 20
# Chunks a read_ahead thread keeps ready, and how long its end is waited for.
READ_AHEAD = 2
READ_AHEAD_JOIN = 5.0
# No single value may be larger: a broken file is handed to repodata_stream, which says what is wrong.
MAX_VALUE_BYTES = 16 << 20
# Cut points tried per run before declining (each failed try decodes up to a run's worth again).
MAX_CUT_TRIES = 16

_DECODER = msgspec.json.Decoder()
_RAW_RUN_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_WHITESPACE = b" \t\n\r"
# What follows a record's closing brace when another record comes after it: a comma and a plain key whose value
# is an object (group 1 is the key's opening quote). Stricter than needed, so that a nested object's brace is
# rarely taken for a cut point.
_NEXT_MEMBER = re.compile(rb'[ \t\n\r]*,[ \t\n\r]*(")[^"\\\x00-\x1f]*"[ \t\n\r]*:[ \t\n\r]*\{')
_TRUNCATED = "Input data was truncated"


class Declined(Exception):
    """This reader does not read this file (see the module docstring); read it with repodata_stream."""


@dataclass(frozen=True, slots=True)
class RecordRun:
    """Consecutive records of one section, file name -> record (or its `msgspec.Raw` text), in file order."""

    section: str
    records: dict[str, Any]
    # With `repeats`: the file names given more than once in this run, each with all its records, in file order;
    # and whether the run's text was seen to hold no `{` but one for each record (no object inside one, no name
    # given twice: nothing to look for inside them).
    repeated: dict[str, list[Any]] = field(default_factory=dict)
    flat: bool = False


RunItem = Info | RecordRun | Removed


@overload
def iter_repodata_runs(
    binary: BinaryIO,
    *,
    raw_records: bool = False,
    others: Literal[False] = False,
    repeats: bool = False,
    any_records: bool = False,
) -> Iterator[RunItem]: ...
@overload
def iter_repodata_runs(
    binary: BinaryIO,
    *,
    raw_records: bool = False,
    others: bool,
    repeats: bool = False,
    any_records: bool = False,
) -> Iterator[RunItem | Other]: ...
def iter_repodata_runs(
    binary: BinaryIO,
    *,
    raw_records: bool = False,
    others: bool = False,
    repeats: bool = False,
    any_records: bool = False,
) -> Iterator[RunItem | Other]:
    """`Info`, `RecordRun` and `Removed` items of the repodata in `binary`, in file order; `Declined` on anything
    unexpected. Other top-level keys are read and dropped, as `repodata_stream.iter_repodata` does, or given as
    `Other(key, value)` with `others`. With `raw_records`, each record is its `msgspec.Raw` JSON text, not checked
    to be an object (the caller does); with `repeats` too, runs tell the file names they hold more than once.
    With `any_records`, a decoded record that is not an object is given as it is too, not declined."""
    reader = _Reader(binary, _RAW_RUN_DECODER if raw_records else _DECODER)
    find_repeats = repeats and raw_records
    check_objects = not raw_records and not any_records
    reader.expect(b"{")
    for key in reader.members():
        if key in RECORD_SECTIONS:
            reader.expect(b"{")
            yield from _runs(reader, key, find_repeats, check_objects)
        elif key == V3_KEY:
            reader.expect(b"{")
            for group in reader.members():
                reader.expect(b"{")
                yield from _runs(reader, f"{V3_KEY}/{group}", find_repeats, check_objects)
        elif key == "removed":
            removed = reader.value()
            if not isinstance(removed, list) or not all(isinstance(name, str) for name in removed):
                raise Declined("'removed' is not a list of file names")
            for filename in removed:
                yield Removed(filename)
        elif key == "info":
            info = reader.value()
            if not isinstance(info, dict):
                raise Declined("'info' is not an object")
            yield Info(info)
        elif others:
            yield Other(key, reader.value())
        else:
            reader.value()
    reader.expect_end()


def _runs(reader: _Reader, section: str, find_repeats: bool = False, check_objects: bool = True) -> Iterator[RecordRun]:
    """The records of the section whose "{" was just taken, a run at a time, up to and with its "}"."""
    if reader.peek() == b"}":
        reader.pos += 1
        return
    while True:
        records, section_ended = reader.record_run()
        if check_objects and not all(type(record) is dict for record in records.values()):
            raise Declined(f"a record in {section!r} is not an object")
        if records:
            if not find_repeats:
                yield RecordRun(section, records)
            elif bytes(reader.last_run).count(b"{") == 1 + len(records):
                yield RecordRun(section, records, flat=True)
            else:
                yield RecordRun(section, records, _repeated_in(reader.last_run, records))
        if section_ended:
            return


def _repeated_in(document: bytes | memoryview, records: dict[str, msgspec.Raw]) -> dict[str, list[Any]]:
    """The file names given more than once in a run's text (`{` + its records + `}`), decoded as `records` (raw);
    each with all its records. Every `{` of the text is the run's own, one of a record's or one in a key: when the
    records and keys hold fewer, entries were lost to a repeated name, and the text is decoded again, keeping all."""
    held = 1 + sum(bytes(raw).count(b"{") for raw in records.values()) + sum(key.count("{") for key in records)
    if held == bytes(document).count(b"{"):
        return {}
    outer: list[list[tuple[str, Any]]] = []

    def pairs_of(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        outer[:] = [pairs]  # the outermost object is the last one made
        return dict(pairs)

    try:
        json.loads(bytes(document), object_pairs_hook=pairs_of)
    except ValueError as exc:
        raise Declined(f"a run of records that msgspec read: {exc}") from None
    seen: dict[str, list[Any]] = {}
    for name, record in outer[0] if outer else ():
        seen.setdefault(name, []).append(record)
    return {name: found for name, found in seen.items() if len(found) > 1}


class _Reader:
    """A window on the bytes: `buffer[pos:]` is what is not read yet; it grows a read at a time."""

    def __init__(self, binary: BinaryIO, run_decoder: msgspec.json.Decoder[Any] = _DECODER) -> None:
        self._binary = binary
        self.run_decoder = run_decoder  # for runs of records; other values are decoded in full
        self.buffer = b""
        self.pos = 0
        self.eof = False
        self.last_run: bytes | memoryview = b"{}"  # the text of the last run of records decoded

    def fill(self, wanted: int) -> bool:
        """Make at least `wanted` unread bytes available, or all that is left; False if none could be added."""
        if len(self.buffer) - self.pos >= wanted or self.eof:
            return False
        parts = [self.buffer[self.pos :]]
        have = len(parts[0])
        while have < wanted:
            chunk = self._binary.read(max(READ_BYTES, wanted - have))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.buffer, self.pos = b"".join(parts), 0
        return len(parts) > 1

    def peek(self) -> bytes:
        """The next byte that is not whitespace, without taking it; b"" at the end."""
        while True:
            buffer, pos = self.buffer, self.pos
            while pos < len(buffer) and buffer[pos] in _WHITESPACE:
                pos += 1
            self.pos = pos
            if pos < len(buffer):
                return buffer[pos : pos + 1]
            if not self.fill(READ_BYTES):
                return b""

    def expect(self, byte: bytes) -> None:
        if self.peek() != byte:
            raise Declined(f"expected {byte!r}")
        self.pos += 1

    def expect_end(self) -> None:
        if self.peek():
            raise Declined("data after the end of the document")

    def members(self) -> Iterator[str]:
        """The keys of the object whose "{" was just taken; the caller reads each value in between."""
        if self.peek() == b"}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise Declined("expected a key")
            self.expect(b":")
            yield key
            separator = self.peek()
            self.pos += 1
            if separator == b"}":
                return
            if separator != b",":
                raise Declined("expected ',' or '}'")

    def value(self) -> Any:
        """Decode the next JSON value, reading more while it runs past the window."""
        self.peek()
        wanted = READ_BYTES
        while True:
            self.fill(wanted)
            rest = memoryview(self.buffer)[self.pos :]
            try:
                value = _DECODER.decode(rest)
            except msgspec.DecodeError as exc:
                end = _trailing_offset(exc)
                if end is not None:
                    value = _decode(rest[:end])
                    self.pos += end
                    return value
                if self.eof or str(exc) != _TRUNCATED:
                    raise Declined(str(exc)) from None
            else:
                if self.eof:  # the value runs to the very end (a number might go on otherwise)
                    self.pos = len(self.buffer)
                    return value
            wanted = _grow(len(rest))

    def record_run(self) -> tuple[dict[str, Any], bool]:
        """Decode records from here (the start of a member) up to about RUN_BYTES on; True when the section's
        "}" was reached (and taken) too."""
        self.fill(RUN_BYTES + 64)
        limit = min(len(self.buffer), self.pos + RUN_BYTES)
        cut = self.buffer.rfind(b"}", self.pos, limit)
        for _ in range(MAX_CUT_TRIES):
            if cut < 0:
                break
            next_member = _NEXT_MEMBER.match(self.buffer, cut + 1)
            if next_member is not None:
                document = b"{" + self.buffer[self.pos : cut + 1] + b"}"
                try:
                    records = self.run_decoder.decode(document)
                except msgspec.DecodeError as exc:
                    end = _trailing_offset(exc)
                    if end is not None:  # the section ends before the cut: its "}" is in the document
                        return self._last_run(document, end)
                else:
                    self.pos = next_member.start(1)
                    self.last_run = document
                    return records, False
            cut = self.buffer.rfind(b"}", self.pos, cut)
        return self._run_to_section_end()

    def _last_run(self, document: bytes, end: int) -> tuple[dict[str, Any], bool]:
        """`document[:end]` (a "{" and the text from `pos`) is the rest of the section, its "}" included."""
        self.last_run = memoryview(document)[:end]
        records = _decode(self.last_run, self.run_decoder)
        self.pos += end - 1
        return records, True

    def _run_to_section_end(self) -> tuple[dict[str, Any], bool]:
        """No cut point in this run: the section must end within a value's length from here."""
        wanted = RUN_BYTES
        while True:
            self.fill(wanted)
            document = b"{" + self.buffer[self.pos :]
            try:
                records = self.run_decoder.decode(document)
            except msgspec.DecodeError as exc:
                end = _trailing_offset(exc)
                if end is not None:
                    return self._last_run(document, end)
                if self.eof or str(exc) != _TRUNCATED:
                    raise Declined(str(exc)) from None
            else:
                if self.eof:
                    self.pos = len(self.buffer)
                    self.last_run = document
                    return records, True
            wanted = _grow(len(document))


class _ReadAhead:
    """`read` from a thread that keeps up to READ_AHEAD chunks ready: decompression (which releases the GIL) runs
    on another core while this one decodes. Chunks are whatever size the source gives, up to READ_BYTES."""

    def __init__(self, binary: BinaryIO) -> None:
        self._binary = binary
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="repodata-read-ahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._binary.read(READ_BYTES)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, _size: int = -1) -> bytes:
        item = self._chunks.get()
        if isinstance(item, BaseException):
            self._chunks.put(item)  # and again for any later call
            raise item
        if not item:
            self._chunks.put(item)
        return item

    def close(self) -> None:
        self._stop.set()
        # A read blocked on a pipe that never ends would hold it: the thread is a daemon, and not waited for long.
        self._thread.join(timeout=READ_AHEAD_JOIN)


@contextmanager
def read_ahead(binary: BinaryIO) -> Iterator[BinaryIO]:
    """`binary`, read ahead in a thread of its own; the thread has ended when this block has (or is stuck in a read
    that never returns: then it is left, as a daemon)."""
    reader = _ReadAhead(binary)
    try:
        yield reader  # type: ignore[misc]
    finally:
        reader.close()


def _grow(have: int) -> int:
    if have >= MAX_VALUE_BYTES:
        raise Declined(f"a value larger than {MAX_VALUE_BYTES} bytes")
    return min(MAX_VALUE_BYTES + 1, have * 2 + READ_BYTES)


def _trailing_offset(exc: msgspec.DecodeError) -> int | None:
    """Where the first complete value of the input ends, when msgspec refused it for what follows: the bytes
    before the offending one (msgspec counts from 1; whitespace before it belongs to the value)."""
    found = _TRAILING.fullmatch(str(exc).removeprefix("JSON is malformed: "))
    return int(found.group(1)) - 1 if found else None


def _decode(data: bytes | memoryview, decoder: msgspec.json.Decoder[Any] = _DECODER) -> Any:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Declined(str(exc)) from None
