"""PyPI's policy rules: a rule read from its string (a name and a PEP 440 specifier) or its table, compiled, and
what it says of a file's facts (its kind, version and wheel tags, read from its name). pypi.py applies them; the
settings check them when they are loaded."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pkgcache.policy.common import NameIndex, RuleRef, glob_to_regex
from pkgcache.policy.rule_tables import PypiRuleTable, rule_table_text

FileKind = Literal["sdist", "wheel", "other"]
# The endings of the sdists pip and uv read: pip's archive kinds (zip, tar, gzip, bzip2 and xz/lzma tars), and
# uv's, which adds zstd tars (uv-distribution-filename's SourceDistExtension). New uploads are .tar.gz (PEP 625);
# older releases have the rest.
SDIST_EXTENSIONS = (
    ".tar.gz",
    ".zip",
    ".tar.bz2",
    ".tgz",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tlz",
    ".tar.lz",
    ".tar.lzma",
    ".tar.zst",
    ".tar",
)

# A project name or a pattern over names: PEP 508's characters plus the wildcards * and ?.
_NAME = re.compile(r"^[A-Za-z0-9*?](?:[A-Za-z0-9._*?-]*[A-Za-z0-9*?])?$")
_STRING_RULE = re.compile(r"^\s*([A-Za-z0-9._*?-]+)\s*(.*?)\s*$")
_SEPARATORS = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, applied to patterns too (their * and ? are kept)."""
    return _SEPARATORS.sub("-", name).lower()


def file_kind(filename: str) -> FileKind:
    lowered = filename.lower()
    if lowered.endswith(".whl"):
        return "wheel"
    if lowered.endswith(SDIST_EXTENSIONS):
        return "sdist"
    return "other"


@functools.lru_cache(maxsize=65536)
def parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _version_text(project: str, filename: str, kind: FileKind) -> str | None:
    """The version part of a file name, knowing the (normalised) project name it starts with."""
    if kind == "wheel":
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 5 else None
    lowered = filename.lower()
    ending = next((ext for ext in SDIST_EXTENSIONS if lowered.endswith(ext)), "." + lowered.rsplit(".", 1)[-1])
    stem = filename[: -len(ending)]
    for position, char in enumerate(stem):
        if char == "-" and normalize_name(stem[:position]) == project:
            rest = stem[position + 1 :]
            return rest.split("-")[0] if kind == "other" else rest  # eggs: NAME-VERSION-pyX.Y.egg
    return None


def version_key(project: str, filename: str) -> Version | str | None:
    """A file's version as compared with `versions` entries: parsed when it can be, else its text."""
    text = _version_text(project, filename, file_kind(filename))
    return None if text is None else (parse_version(text) or text)


def _wheel_tags(filename: str) -> frozenset[str]:
    """A wheel's tags as `python-abi-platform` strings, compressed tag sets expanded."""
    parts = filename[:-4].lower().split("-")
    if len(parts) < 5:
        return frozenset()
    pythons, abis, platforms = (part.split(".") for part in parts[-3:])
    return frozenset(f"{p}-{a}-{pl}" for p in pythons for a in abis for pl in platforms)


class FileFacts:
    """What rules read of one file, each fact worked out when a rule first asks for it.

    For a pin without a file name, `kind` is None (not known) and the version is the pin's.
    """

    __slots__ = ("_tags", "_version_text", "filename", "kind", "project")

    def __init__(self, project: str, filename: str | None, kind: FileKind | None, version_text: str | None) -> None:
        self.project = project
        self.filename = filename
        self.kind = kind
        self._version_text = version_text
        self._tags: frozenset[str] | None = None

    @classmethod
    def of_file(cls, project: str, filename: str) -> FileFacts:
        return cls(project, filename, file_kind(filename), None)

    @property
    def version_text(self) -> str | None:
        if self._version_text is None and self.filename is not None and self.kind is not None:
            self._version_text = _version_text(self.project, self.filename, self.kind)
        return self._version_text

    @property
    def version(self) -> Version | None:
        text = self.version_text
        return None if text is None else parse_version(text)

    @property
    def tags(self) -> frozenset[str]:
        if self._tags is None:
            self._tags = _wheel_tags(self.filename) if self.filename and self.kind == "wheel" else frozenset()
        return self._tags


@dataclass(frozen=True, slots=True)
class PypiRule:
    """A compiled deny or allow rule."""

    ref: RuleRef
    name: str
    specifier: SpecifierSet | None
    kind: FileKind | None
    tag: re.Pattern[str] | None
    exempt: NameIndex[bool] | None

    @property
    def whole(self) -> bool:
        return self.specifier is None and self.kind is None and self.tag is None

    def applies_in(self, channel: str | None) -> bool:
        return True

    def exempts(self, name: str) -> bool:
        return self.exempt is not None and self.exempt.matches(name)

    def _kind_and_tag_match(self, facts: FileFacts) -> bool:
        if self.kind is not None and facts.kind != self.kind:
            return False
        return self.tag is None or (facts.kind == "wheel" and any(map(self.tag.match, facts.tags)))

    def matches(self, facts: FileFacts) -> bool | None:
        unknown = False
        if self.kind is not None or self.tag is not None:
            if facts.kind is None:
                unknown = True
            elif not self._kind_and_tag_match(facts):
                return False
        if self.specifier is not None:
            version = facts.version
            if version is None:
                # A version no rule can read: deny rules take it, allow rules do not (both fail closed).
                if self.ref.kind != "deny":
                    return False
            elif not self.specifier.contains(version, prereleases=True):
                return False
        return None if unknown else True


def split_string_rule(text: str) -> tuple[str, str | None]:
    """`"requests>=2.32,<3"` -> ("requests", ">=2.32,<3"); `"evil-*"` -> ("evil-*", None)."""
    match = _STRING_RULE.match(text)
    if match is None or not _NAME.match(match.group(1)):
        raise ValueError("start with a project name or a pattern like 'evil-*'")
    rest = match.group(2)
    if rest.startswith("[") or ";" in rest or "@" in rest:
        raise ValueError("extras, markers and URLs have no meaning here: give a name and a version specifier")
    return match.group(1), rest or None


def compile_rule(entry: Any, kind: str, index: int) -> PypiRule:
    """A rule from its configuration entry (string or table); ValueError says what is wrong with it."""
    if isinstance(entry, dict):
        entry = PypiRuleTable.model_validate(entry)
    if isinstance(entry, str):
        name, version = split_string_rule(entry)
        text, reason, file_kind_, tag, exempt = entry.strip(), None, None, None, ()
    else:
        name, version = split_string_rule(entry.spec) if entry.spec else (entry.name or "", entry.version)
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a project name or a pattern like 'evil-*'")
        text, reason, file_kind_, exempt = rule_table_text(entry), entry.reason, entry.kind, entry.except_
        tag = glob_to_regex(entry.tag.lower()) if entry.tag else None
    specifier = _specifier(version) if version else None
    exempt_index = NameIndex(((n, True) for n in exempt), normalize_name) if exempt else None
    ref = RuleRef("pypi", kind, text, index, reason)  # type: ignore[arg-type]
    return PypiRule(ref, normalize_name(name), specifier, file_kind_, tag, exempt_index)


def _specifier(text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"{text!r} is not a PEP 440 version specifier (like '>=2.32,<3' or '==1.0')") from None
