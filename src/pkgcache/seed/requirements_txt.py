"""pip's requirements files: what they ask for, line by line, as pip reads them.

Lines are read as pip does (facts from pip's `req_file.py`): a line ending in a backslash continues on the next
(unless it is a comment), `#` starts a comment at the line start or after whitespace, `${VAR}` is taken from
the environment, and the options start at the first word beginning with `-`. Requirements are parsed by
`packaging` (PEP 508). `-r`/`-c` files are followed relative to the including file; index options are recorded,
not followed; editables, local paths, VCS and direct URLs are skipped with the reason.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

from packaging.requirements import InvalidRequirement, Requirement

from .documents import DocumentError, read_text
from .model import InputFile, InputFormat, Origin, PypiIndexOption, PypiRequirement, SeedPlan
from .references import split_hash, unseedable_reason

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ENV_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")
_REMOTE_FILE = re.compile(r"^(http|https|file):", re.IGNORECASE)
# pip accepts only these for --hash (its STRONG_HASHES).
_HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
# Index options recorded for the resolver, by argparse dest -> the option's name in reports.
_INDEX_OPTIONS = {
    "index_url": "--index-url",
    "extra_index_url": "--extra-index-url",
    "find_links": "--find-links",
    "trusted_host": "--trusted-host",
}
# An argument that names a file or URL rather than a project (pip reads these as paths or URLs too).
_LOOKS_LIKE_LOCATION = re.compile(r"^(\.|/|~|[A-Za-z]:\\)|://|\.(whl|zip|tar\.gz|tgz|tar\.bz2|tar)$", re.IGNORECASE)


class _OptionError(ValueError):
    pass


class _LineOptions(argparse.ArgumentParser):
    """The options pip accepts in a requirements file; errors raise instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise _OptionError(message)


def _build_option_parser() -> _LineOptions:
    parser = _LineOptions(add_help=False, prog="requirements line")
    for flags, dest in (
        (("-r", "--requirement"), "requirement"),
        (("-c", "--constraint"), "constraint"),
        (("-e", "--editable"), "editable"),
        (("-i", "--index-url"), "index_url"),
        (("--extra-index-url",), "extra_index_url"),
        (("-f", "--find-links"), "find_links"),
        (("--trusted-host",), "trusted_host"),
        (("--hash",), "hash"),
        (("-C", "--config-settings"), "config_settings"),
        (("--no-binary",), "no_binary"),
        (("--only-binary",), "only_binary"),
        (("--use-feature",), "use_feature"),
        (("--all-releases",), "all_releases"),
        (("--only-final",), "only_final"),
    ):
        parser.add_argument(*flags, dest=dest, action="append", default=[])
    for flag in ("--no-index", "--pre", "--prefer-binary", "--require-hashes", "--no-require-hashes"):
        parser.add_argument(flag, action="store_true")
    return parser


_OPTIONS = _build_option_parser()


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first physical line number, logical line) with continuations joined, comments dropped and `${VAR}`
    expanded; blank lines are left out."""
    yield from _expand_env(_drop_comments(_join_continuations(enumerate(text.splitlines(), start=1))))


def clean_lines(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Comments dropped and `${VAR}` expanded, for lines that come one by one (environment.yml's `pip:` list)."""
    yield from _expand_env(_drop_comments(lines))


def _join_continuations(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    first: int | None = None
    parts: list[str] = []
    for number, line in lines:
        if line.endswith("\\") and not _COMMENT.match(line):
            first = number if first is None else first
            parts.append(line[:-1])
            continue
        if first is None:
            yield number, line
            continue
        # A comment line ends the continuation and is itself dropped (the leading space keeps it a comment).
        parts.append(" " + line if _COMMENT.match(line) else line)
        yield first, "".join(parts)
        first, parts = None, []
    if first is not None:
        yield first, "".join(parts)


def _drop_comments(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    for number, line in lines:
        line = _COMMENT.sub("", line).strip()
        if line:
            yield number, line


def _expand_env(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    for number, line in lines:
        yield number, _ENV_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), line)


def _split_arguments(line: str) -> tuple[str, str]:
    """(requirement part, options part): options start at the first space-separated word beginning with `-`;
    the requirement part is not shell-split, so markers keep their quotes."""
    words = line.split(" ")
    for index, word in enumerate(words):
        if word.startswith("-"):
            return " ".join(words[:index]).strip(), " ".join(words[index:])
    return line.strip(), ""


def read_requirements_file(
    path: Path,
    plan: SeedPlan,
    *,
    constraint: bool = False,
    included_by: Origin | None = None,
    reading: tuple[Path, ...] = (),
    text: str | None = None,
) -> None:
    """Read one requirements (or constraints) file into `plan`, following its `-r`/`-c` includes.

    `reading` is the chain of files being read, to refuse an include loop; `text` is the content when the
    caller has already read it.
    """
    if text is None:
        try:
            text = read_text(path)
        except DocumentError as exc:
            plan.error(included_by or Origin(path), str(exc))
            return
    plan.inputs.append(InputFile(path, InputFormat.REQUIREMENTS, included_by=included_by))
    read_requirement_lines(
        logical_lines(text), path, path.parent, plan, constraint=constraint, reading=(*reading, path.resolve())
    )


def read_requirement_lines(
    lines: Iterable[tuple[int, str]],
    path: Path,
    base_dir: Path,
    plan: SeedPlan,
    *,
    constraint: bool = False,
    reading: tuple[Path, ...] = (),
) -> None:
    """Read logical requirement lines (numbered) of `path`; includes are relative to `base_dir`.

    environment.yml's `pip:` list comes through here too, its items as lines of the YAML file.
    """
    for number, line in lines:
        origin = Origin(path, number)
        try:
            _read_line(line, origin, base_dir, plan, constraint, reading)
        except _OptionError as exc:
            plan.error(origin, f"bad option: {exc}")


def _read_line(
    line: str, origin: Origin, base_dir: Path, plan: SeedPlan, constraint: bool, reading: tuple[Path, ...]
) -> None:
    argument, options_text = _split_arguments(line)
    try:
        words = shlex.split(options_text)
    except ValueError as exc:
        raise _OptionError(f"cannot split {options_text!r}: {exc}") from None
    options, leftovers = _OPTIONS.parse_known_args(words)
    if leftovers:
        raise _OptionError(f"{' '.join(leftovers)} is not an option pip accepts in a requirements file")
    _record_index_options(options, origin, plan)
    for editable in options.editable:
        plan.skip(editable, "an editable install: built from a local or VCS source, not from an index", origin)
    for include in options.requirement:
        _include(include, origin, base_dir, plan, False, reading)
    for include in options.constraint:
        _include(include, origin, base_dir, plan, True, reading)
    if argument:
        _read_requirement(argument, options.hash, origin, plan, constraint)
    elif options.hash:
        plan.error(origin, "--hash with no requirement on its line (does the line before lack its trailing '\\'?)")


def _record_index_options(options: argparse.Namespace, origin: Origin, plan: SeedPlan) -> None:
    for dest, name in _INDEX_OPTIONS.items():
        for value in getattr(options, dest):
            plan.pypi_options.append(PypiIndexOption(name, value, origin))
    if options.no_index:
        plan.pypi_options.append(PypiIndexOption("--no-index", "", origin))


def _include(
    target: str, origin: Origin, base_dir: Path, plan: SeedPlan, constraint: bool, reading: tuple[Path, ...]
) -> None:
    if _REMOTE_FILE.match(target):
        plan.skip(target, "a requirements file at a URL: not fetched", origin, url=target)
        return
    path = base_dir / Path(target).expanduser()
    if path.resolve() in reading:
        plan.error(origin, f"{target} includes itself (through {' -> '.join(p.name for p in reading)})")
        return
    read_requirements_file(path, plan, constraint=constraint, included_by=origin, reading=reading)


def _read_requirement(argument: str, hash_options: list[str], origin: Origin, plan: SeedPlan, constraint: bool) -> None:
    try:
        requirement = Requirement(argument)
    except InvalidRequirement as exc:
        if _LOOKS_LIKE_LOCATION.search(argument):
            plan.skip(argument, unseedable_reason(argument), origin, url=argument if "://" in argument else None)
        else:
            plan.error(origin, f"not a requirement: {_first_line(str(exc))}")
        return
    if requirement.url:
        plan.skip(argument, unseedable_reason(requirement.url), origin, url=requirement.url)
        return
    hashes = []
    for value in hash_options:
        try:
            algorithm, digest = split_hash(value)
        except ValueError as exc:
            plan.error(origin, f"bad --hash: {exc}")
            return
        if algorithm not in _HASH_ALGORITHMS:
            plan.error(origin, f"bad --hash: pip accepts {', '.join(_HASH_ALGORITHMS)}, not {algorithm}")
            return
        hashes.append(f"{algorithm}:{digest}")
    plan.pypi_requirements.append(PypiRequirement(requirement, origin, tuple(hashes), constraint))


def _first_line(message: str) -> str:
    return message.splitlines()[0] if message else message
