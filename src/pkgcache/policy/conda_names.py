"""The name the conda policy judges a package by: one function, `judged_name`, for every path that judges a conda
record or file (the filtered repodata and the shards made from it, a package asked for directly, its quick look by
file name, `pkgcache policy check`, the files a block purges). Two paths reading names two ways is how a rule is
got round (a record named "libfoo " was compared as "libfoo " by one and "libfoo" by the other).

What a client does with a record's name, read in rattler's `PackageName` (what pixi and py-rattler install with):
a name of a record is taken as it is written, unchecked, and the package is installed under it, fetched by its file
name; names typed by users may hold only ASCII letters, digits, `.`, `_` and `-` and are lower-cased (ASCII only)
to compare. A record without a name, or whose name is not a string, cannot be read at all ("missing field `name`").
So a record's name is judged only when it is such a name, compared lower-cased (ASCII), and only when its file name
(`NAME-VERSION-BUILD.conda` or `.tar.bz2`) names the same package: anything else (padding, other characters, a
Unicode look-alike such as the Kelvin sign that Python's `lower()` turns into `k`, a name another than its file's)
has no name the policy can read, and the policy refuses it (`CondaPolicy`), whatever its rules.

No py-rattler here: the shard builder reads the same file names without a policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CONDA_FILE_SUFFIXES = (".conda", ".tar.bz2")
# rattler's PackageName accepts these characters, ASCII only; matched before lower-casing, so nothing but ASCII
# letters is ever folded.
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def judged_name(filename: str, record: Mapping[str, Any] | None = None) -> str | None:
    """The name (lower case) the policy judges the package file `filename` by, its repodata `record` given or not;
    None when it has none the policy can read.

    With a record: the record's `name` (what clients install it under), which must be a conda name and, for a
    `.conda` or `.tar.bz2` file, the name its file name starts with. Without one (a file asked for by its name,
    a pin, a cached file): the name its file name starts with.

    Called once per record when a repodata is filtered (hundreds of thousands), so the common case, a name seen
    before that begins its file name as written, is a dict look-up and three string calls.
    """
    if record is None:
        part = file_name_part(filename)
        return None if part is None else _checked(part)
    name = record.get("name")
    if type(name) is not str:
        return None
    lowered = _seen.get(name) or _checked(name)
    if lowered is None or not filename.endswith(CONDA_FILE_SUFFIXES):
        return lowered
    # `NAME-VERSION-BUILD.conda`: the name, a dash, then one dash more (neither suffix holds one).
    end = len(name)
    if filename.count("-", end + 1) != 1 or filename[end : end + 1] != "-":
        return None
    if filename.startswith(name):
        return lowered
    start = filename[:end]
    return lowered if start.isascii() and start.lower() == lowered else None


def _checked(name: str) -> str | None:
    """`name` lower-cased when it is a conda package name (remembered), else None."""
    if not _NAME.fullmatch(name):
        return None
    if len(_seen) >= MAX_SEEN_NAMES:
        _seen.clear()
    lowered = _seen[name] = name.lower()
    return lowered


# Names found to be conda names, and their lower case: a repodata names each package dozens of times.
MAX_SEEN_NAMES = 100_000
_seen: dict[str, str] = {}


def file_name_part(filename: str) -> str | None:
    """What comes before the last two dashes of `NAME-VERSION-BUILD.conda` (or `.tar.bz2`); None without two."""
    stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    name, dash, _ = stem.rpartition("-")
    name, dash, _ = name.rpartition("-")
    return name if dash and name else None


def why_no_name(filename: str, record: Mapping[str, Any] | None = None) -> str:
    """Why `judged_name` found no name, for the refusal's message (only called when it did not)."""
    part = file_name_part(filename)
    if record is None:
        if part is None:
            return "its file name is not NAME-VERSION-BUILD"
        return f"its file name's package name {part[:100]!r} is not a conda package name"
    name = record.get("name")
    if name is None:
        return "its record has no name"
    if type(name) is not str:
        return f"its record's name is not a string but {type(name).__name__}"
    if not _NAME.fullmatch(name):
        return f"its record's name {name[:100]!r} is not a conda package name"
    return f"its record names {name!r}, its file name {part!r}"
