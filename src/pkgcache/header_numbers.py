"""Numbers in HTTP headers (from clients and from mirrors), read as RFC 9110 writes them: ASCII digits only.

`str.isdigit()`, `\\d` and `int()` accept any Unicode digit ("²", Arabic-Indic "١"), and `int()` also signs, spaces
and underscores; a header's bytes come in as such characters, so each of those is a 500 or a number nobody wrote.
This module imports nothing from the rest of pkgcache: every layer may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ASCII_DIGITS = re.compile(r"[0-9]+")
# int() refuses strings of more than 4300 digits (CPython's guard); no header number is anywhere near this.
MAX_DIGITS = 4000
_CONTENT_RANGE = re.compile(r"bytes[ \t]+([0-9]+)-([0-9]+)/([0-9]+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes[ \t]+\*/([0-9]+)")


def ascii_number(text: str) -> int | None:
    """The non-negative integer `text` spells in ASCII digits (no sign, no spaces), or None for anything else."""
    if len(text) > MAX_DIGITS or _ASCII_DIGITS.fullmatch(text) is None:
        return None
    return int(text)


@dataclass(frozen=True)
class ContentRange:
    """A 206's `Content-Range: bytes first-last/size`: bytes `first` to `last` inclusive; `size` None for `*`."""

    first: int
    last: int
    size: int | None


def content_range(value: str | None) -> ContentRange | None:
    """The byte range a `Content-Range` header says was sent, or None when it is not a consistent one."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    first, last = ascii_number(match[1]), ascii_number(match[2])
    size = None if match[3] == "*" else ascii_number(match[3])
    if first is None or last is None or last < first or (match[3] != "*" and (size is None or last >= size)):
        return None
    return ContentRange(first, last, size)


def unsatisfied_range_size(value: str | None) -> int | None:
    """The file's size a 416's `Content-Range: bytes */size` gives, or None."""
    match = _UNSATISFIED_RANGE.fullmatch((value or "").strip())
    return None if match is None else ascii_number(match[1])
