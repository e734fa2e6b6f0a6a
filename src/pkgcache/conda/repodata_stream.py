"""Reading a conda repodata.json one record at a time, in memory bounded whatever the file's size.

conda-forge's linux-64 repodata.json is hundreds of MB; `json.load` would hold all of it, several times over as
Python objects. `iter_repodata` walks the top-level object through a small text buffer and hands over each package
record as soon as it is decoded. Each record is decoded by `json.JSONDecoder.raw_decode` (the standard library's C
scanner), so values come out exactly as `json.load` would make them. On a 304 MB synthetic repodata this was faster
than ijson's C backend (yajl2_c) even when ijson reads only the two package sections (1.2 to 1.8 times), and 3 to
4 times faster than the four passes ijson needs for everything, with no extra dependency: figures in
docs/conda-clients.md, "Sharded repodata made here".

What comes out, in file order:
- `Info(info)` for the top-level "info" object;
- `Record(section, filename, record)` for every entry of "packages" and "packages.conda", and of each map inside
  "v3" (section "v3/<key>", e.g. "v3/whl");
- `Removed(filename)` for every entry of "removed";
- other top-level keys ("repodata_version", ...) are read and dropped, or given as `Other(key, value)` when asked
  for (`others=True`: what rewrites a repodata keeps them).
Anything that is not a repodata document raises `MalformedRepodata`.
"""

from __future__ import annotations

import bz2
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import zstandard

RECORD_SECTIONS = ("packages", "packages.conda")
V3_KEY = "v3"
CHUNK_CHARS = 1 << 20
# No single value (a record, "info", an unknown key) may be larger; only a broken file has one that is.
MAX_VALUE_CHARS = 16 << 20

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# The fast path: a key without escapes, its colon and the whitespace up to its value; then what follows a value.
_PLAIN_KEY = re.compile(r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')
_SEPARATOR = re.compile(r"[ \t\n\r]*([,}\]])[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class MalformedRepodata(ValueError):
    """The file is not a readable repodata.json (bad JSON, wrong shape, truncated, bad compression)."""


@dataclass(frozen=True, slots=True)
class Info:
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Record:
    section: str
    filename: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Removed:
    filename: str


@dataclass(frozen=True, slots=True)
class Other:
    key: str
    value: Any


RepodataItem = Info | Record | Removed | Other


@contextmanager
def open_repodata_binary(path: Path) -> Iterator[BinaryIO]:
    """The repodata file's bytes, decompressed on the fly when it ends in .zst or .bz2."""
    with path.open("rb") as raw, decompressed(path.name, raw) as binary:
        yield binary


def json_within(path: Path, limit: int) -> bool:
    """Whether the repodata file's JSON (decompressed, across all its frames) is at most `limit` bytes: read up to
    there to know it, as a compressed file's headers may not say it, or may lie. False when it cannot be read."""
    seen = 0
    try:
        with open_repodata_binary(path) as binary:
            while chunk := binary.read(limit + 1 - seen):
                seen += len(chunk)
                if seen > limit:
                    return False
    except (zstandard.ZstdError, EOFError, OSError):
        return False
    return True


@contextmanager
def decompressed(name: str, raw: BinaryIO) -> Iterator[BinaryIO]:
    """`raw`, the bytes of the file called `name`, decompressed on the fly when that ends in .zst or .bz2."""
    if name.endswith(".zst"):
        yield zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    elif name.endswith(".bz2"):
        with bz2.BZ2File(raw) as binary:
            yield cast(BinaryIO, binary)  # a binary stream; typeshed does not say BZ2File is one
    else:
        yield raw


@contextmanager
def open_repodata_text(path: Path) -> Iterator[TextIO]:
    """The repodata file as text, decompressed on the fly when it ends in .zst or .bz2."""
    with open_repodata_binary(path) as binary, io.TextIOWrapper(binary, encoding="utf-8") as text:
        yield text


def iter_repodata_file(path: Path, *, others: bool = False, any_records: bool = False) -> Iterator[RepodataItem]:
    """`iter_repodata` over a file on disk; decompression and decoding errors become `MalformedRepodata`."""
    try:
        with open_repodata_text(path) as text:
            yield from iter_repodata(text, others=others, any_records=any_records)
    except (zstandard.ZstdError, UnicodeDecodeError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise MalformedRepodata(f"{path.name}: {exc}") from exc


def iter_repodata(text: TextIO, *, others: bool = False, any_records: bool = False) -> Iterator[RepodataItem]:
    """The items of one repodata document read from `text` (see the module docstring). A record that is not an
    object is an error, or with `any_records` given as it is in its `Record` (the caller checks)."""
    scanner = _Scanner(text)
    scanner.expect("{", "a repodata document is a JSON object")
    for key in scanner.members():
        if key in RECORD_SECTIONS:
            yield from _section_records(scanner, key, any_records)
        elif key == V3_KEY:
            scanner.expect("{", "'v3' must be an object")
            for group in scanner.members():
                yield from _section_records(scanner, f"{V3_KEY}/{group}", any_records)
        elif key == "removed":
            yield from _removed(scanner)
        elif key == "info":
            info = scanner.value()
            if not isinstance(info, dict):
                raise scanner.error("'info' must be an object")
            yield Info(info)
        elif others:
            yield Other(key, scanner.value())
        else:
            scanner.value()
    scanner.expect_end()


def _section_records(scanner: _Scanner, section: str, any_records: bool = False) -> Iterator[Record]:
    scanner.expect("{", f"{section!r} must be an object")
    for filename in scanner.members():
        record = scanner.value()
        if not isinstance(record, dict) and not any_records:
            raise scanner.error(f"the record of {filename!r} in {section!r} is not an object")
        yield Record(section, filename, record)


def _removed(scanner: _Scanner) -> Iterator[Removed]:
    scanner.expect("[", "'removed' must be a list")
    for _ in scanner.elements():
        filename = scanner.value()
        if not isinstance(filename, str):
            raise scanner.error("'removed' holds something other than file names")
        yield Removed(filename)


class _Scanner:
    """A window on the text: `_buffer[_pos:]` is what is not read yet; it grows a chunk at a time."""

    def __init__(self, text: TextIO) -> None:
        self._text = text
        self._buffer = ""
        self._pos = 0
        self._consumed = 0  # characters dropped from the front of the buffer, for error positions
        self._eof = False

    def error(self, message: str) -> MalformedRepodata:
        return MalformedRepodata(f"{message} (at character {self._consumed + self._pos})")

    def _read_more(self) -> bool:
        """Append a chunk to the buffer, dropping what was read; False at the end of the text."""
        if self._eof:
            return False
        chunk = self._text.read(CHUNK_CHARS)
        if not chunk:
            self._eof = True
            return False
        self._consumed += self._pos
        self._buffer = self._buffer[self._pos :] + chunk
        self._pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace, without taking it; "" at the end of the text."""
        while True:
            self._pos = _WHITESPACE.match(self._buffer, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buffer):
                return self._buffer[self._pos]
            if not self._read_more():
                return ""

    def expect(self, char: str, message: str) -> None:
        found = self.peek()
        if found != char:
            raise self.error(f"{message}: expected {char!r}, found {found or 'the end of the file'!r}")
        self._pos += 1

    def expect_end(self) -> None:
        if self.peek():
            raise self.error("data after the end of the repodata document")

    def value(self) -> Any:
        """Decode the next JSON value, reading more text while it is cut off by the end of the buffer."""
        buffer = self._buffer
        try:
            value, end = _DECODER.raw_decode(buffer, self._pos)
        except json.JSONDecodeError:
            pass  # whitespace first, or cut off: the careful way below
        else:
            if end < len(buffer):
                self._pos = end
                return value
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buffer, self._pos)
            except json.JSONDecodeError as exc:
                if self._read_more_for_value():
                    continue
                raise self.error(f"invalid JSON: {exc.msg}") from None
            # A number that ends the buffer may go on in the next chunk.
            if end == len(self._buffer) and self._read_more_for_value():
                continue
            self._pos = end
            return value

    def _read_more_for_value(self) -> bool:
        if len(self._buffer) - self._pos > MAX_VALUE_CHARS:
            raise self.error(f"a single value is larger than {MAX_VALUE_CHARS} characters")
        return self._read_more()

    def members(self) -> Iterator[str]:
        """The keys of the object whose "{" was just taken; the caller reads each key's value in between."""
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            yield self._key()
            if self._end_of_container("}"):
                return

    def _key(self) -> str:
        """A key and its colon; plain keys (most of them) take one regular expression match."""
        plain = _PLAIN_KEY.match(self._buffer, self._pos)
        if plain is not None and plain.end() < len(self._buffer):
            self._pos = plain.end()
            return plain.group(1)
        if self.peek() != '"':
            raise self.error("expected a key")
        key = self.value()
        self.expect(":", f"after the key {key!r}")
        return key

    def _end_of_container(self, closing: str) -> bool:
        """Take the "," between two entries (False) or the closing bracket (True)."""
        separator = _SEPARATOR.match(self._buffer, self._pos)
        if separator is not None:
            found = separator.group(1)
            self._pos = separator.end()
        else:
            found = self.peek()
            self._pos += 1
        if found == closing:
            return True
        if found != ",":
            raise self.error(f"expected ',' or {closing!r}")
        return False

    def elements(self) -> Iterator[None]:
        """One step per element of the list whose "[" was just taken; the caller reads each element."""
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            yield None
            if self._end_of_container("]"):
                return
