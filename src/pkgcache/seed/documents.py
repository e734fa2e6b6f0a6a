"""Reading input documents as text, TOML and YAML, keeping the line numbers errors should point at.

tomllib and PyYAML's usual loaders drop positions. For YAML, `load_yaml` builds the same plain data, but every
mapping knows its line (`LineDict.line`) and every sequence the line of each item (`LineList.lines`). For TOML,
`array_table_lines` finds the `[[name]]` headers, which is where lock files start each package.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

import yaml

# The C parser when PyYAML was built with libyaml (pixi locks run to megabytes); construction stays in Python.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineDict(dict[Any, Any]):
    """A YAML mapping and the 1-based line it starts on."""

    line: int = 0


class LineList(list[Any]):
    """A YAML sequence and the 1-based line of each item."""

    lines: list[int]

    def line_of(self, index: int) -> int | None:
        lines = getattr(self, "lines", [])
        return lines[index] if index < len(lines) else None


class _LineLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader whose mappings and sequences remember their lines."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
    mapping = LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineList:
    items = LineList(loader.construct_object(child, deep=True) for child in node.value)
    items.lines = [child.start_mark.line + 1 for child in node.value]
    return items


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


class DocumentError(ValueError):
    """A document that does not parse; `line` is 1-based when the parser knows it."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def load_yaml(text: str) -> Any:
    """Parse one YAML document into plain data with `LineDict`/`LineList` for mappings and sequences."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        raise DocumentError(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise DocumentError(f"not valid YAML: {exc}") from None


_TOML_ERROR_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def toml_error(exc: Exception) -> DocumentError:
    """tomllib's error as a DocumentError, its line taken from the message (tomllib has no attribute for it)."""
    message = str(exc)
    found = _TOML_ERROR_LINE.search(message)
    return DocumentError(f"not valid TOML: {message}", int(found.group(1)) if found else None)


def array_table_lines(text: str, name: str) -> list[int]:
    """1-based lines of each `[[name]]` header, in order: the Nth entry of the array starts on the Nth line."""
    header = re.compile(rf"^\s*\[\[\s*{re.escape(name)}\s*\]\]\s*(#.*)?$")
    return [number for number, line in enumerate(text.splitlines(), start=1) if header.match(line)]


_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def decode_text(data: bytes) -> str:
    """Bytes of an input file as text: UTF-8, or UTF-16 with a BOM (Windows editors write requirements files so).

    Raises UnicodeDecodeError for anything else, which is not a text input.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding)
    if b"\0" in data[:1024]:
        raise UnicodeDecodeError("utf-8", data, 0, 1, "binary data (NUL bytes)")
    return data.decode("utf-8")


def read_text(path: Path) -> str:
    """The file's text; DocumentError saying why when it cannot be read or is not text."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"cannot read {path}: it is a directory") from None
    except OSError as exc:
        raise DocumentError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return decode_text(data)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path} is not a text file ({exc.reason})") from None
