"""Typed access to the fields of a parsed lock-file entry: a wrong or missing field is one `EntryError` for that
entry (reported with its line), never a crash that loses the rest of the file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from packaging.markers import InvalidMarker, Marker

T = TypeVar("T")


class EntryError(ValueError):
    """One entry of a lock file is malformed; the message says which field and how."""


def table(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EntryError(f"{what} is not a table/mapping")
    return value


def items(value: Any, what: str) -> list[Any]:
    """A list field (missing means empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise EntryError(f"{what} is not a list")
    return value


def text(entry: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string field; numbers are accepted as their text (YAML reads `version: 2024.1` as a float)."""
    value = entry.get(key)
    if value is None:
        if required:
            raise EntryError(f"{key!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EntryError(f"{key!r} is not a string")
    return str(value)


def required_text(entry: Mapping[str, Any], key: str) -> str:
    value = text(entry, key, required=True)
    assert value is not None
    return value


def size(entry: Mapping[str, Any], key: str = "size") -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EntryError(f"{key!r} is not a size in bytes")
    return value


def strings(value: Any, what: str) -> tuple[str, ...]:
    """A list of strings (missing means empty)."""
    found = items(value, what)
    if not all(isinstance(item, str) for item in found):
        raise EntryError(f"{what} is not a list of strings")
    return tuple(found)


def markers(values: Iterable[str]) -> tuple[str, ...]:
    """Environment markers in packaging's normal spelling (`sys_platform == "win32"`), so that markers from
    every lock format compare equal and `Marker(m).evaluate(...)` works on them; EntryError for a bad one."""
    normal = []
    for value in values:
        try:
            normal.append(str(Marker(value)))
        except InvalidMarker as exc:
            raise EntryError(f"{value!r} is not an environment marker: {str(exc).splitlines()[0]}") from None
    return tuple(normal)
