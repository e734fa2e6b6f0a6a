"""PyPI's side of the policy: rules over project names (PEP 503), PEP 440 versions, file kinds and wheel tags.

The page layer calls `PypiPolicy.filter_page_files` once per page and policy (never per request) and
`check_file` for a file asked for directly; `check_project` says whether a whole project is refused, so a client
can be told why instead of seeing an empty page. A file's version is read from its name only when a rule needs it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pkgcache.policy.common import (
    ALLOWED,
    Block,
    NameIndex,
    RuleRef,
    Verdict,
    epoch_of,
    from_epoch,
    glob_to_regex,
    now_epoch,
    parse_upload_time,
    refusal,
)
from pkgcache.policy.config import PypiPolicySettings, PypiRuleTable, rule_table_text
from pkgcache.policy.engine import Pin, PinVerdict, Plan, SidePolicy, earliest

FileKind = Literal["sdist", "wheel", "other"]
SDIST_EXTENSIONS = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")

# A project name or a pattern over names: PEP 508's characters plus the wildcards * and ?.
_NAME = re.compile(r"^[A-Za-z0-9*?](?:[A-Za-z0-9._*?-]*[A-Za-z0-9*?])?$")
_STRING_RULE = re.compile(r"^\s*([A-Za-z0-9._*?-]+)\s*(.*?)\s*$")
_SEPARATORS = re.compile(r"[-_.]+")


class PageFile(Protocol):
    """What the policy reads of a file in a project page (`pypi.model.DistFile` is one)."""

    @property
    def filename(self) -> str: ...

    @property
    def upload_time(self) -> str | None: ...


F = TypeVar("F", bound=PageFile)


class Page(Protocol):
    """What `filter_page` reads of a project page (`pypi.model.ProjectPage` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def files(self) -> Sequence[PageFile]: ...

    @property
    def versions(self) -> Sequence[str] | None: ...


P = TypeVar("P", bound=Page)


@dataclass(frozen=True, slots=True)
class PageFilter(Generic[F]):
    """A page's files split by the policy, in their order.

    `valid_until` is when the split may change with no change of policy or page: the earliest time a file kept out
    by the release age becomes old enough (None: never). Filter again then.
    """

    kept: tuple[F, ...]
    refused: tuple[tuple[F, Verdict], ...]
    valid_until: datetime | None

    @property
    def changed(self) -> bool:
        return bool(self.refused)


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
def _parse_version(text: str) -> Version | None:
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


def _version_key(project: str, filename: str) -> Version | str | None:
    """A file's version as compared with `versions` entries: parsed when it can be, else its text."""
    text = _version_text(project, filename, file_kind(filename))
    return None if text is None else (_parse_version(text) or text)


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
        return None if text is None else _parse_version(text)

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


@dataclass(frozen=True, slots=True)
class PypiBlock:
    block: Block
    ref: RuleRef
    specifier: Specifier | None

    def matches(self, facts: FileFacts) -> bool:
        if self.block.version is None:
            return True
        version = facts.version
        if version is None or self.specifier is None:
            return facts.version_text == self.block.version
        return self.specifier.contains(version, prereleases=True)


class PypiPolicy(SidePolicy):
    """The PyPI side's rules, compiled. Immutable: `with_blocks`/`add_block`/`remove_block` make new ones."""

    side: ClassVar = "pypi"
    settings_type: ClassVar = PypiPolicySettings
    normalize = staticmethod(normalize_name)

    @classmethod
    def compile_rule(cls, entry: Any, kind: str, index: int) -> PypiRule:
        return compile_rule(entry, kind, index)

    def compile_block(self, block: Block) -> PypiBlock:
        specifier = None
        if block.version is not None and _parse_version(block.version) is not None:
            specifier = Specifier(f"=={block.version}")
        return PypiBlock(block, RuleRef("pypi", "block", block.describe()), specifier)

    def check_project(self, project: str) -> Verdict:
        """Refused when no file of the project can be served whatever its version (blocked, denied, not allowed)."""
        whole = self.plan(normalize_name(project)).whole
        return ALLOWED if whole is None else refusal(f"project {project}", whole)

    def filter_page_files(
        self,
        project: str,
        files: Iterable[F],
        *,
        now: datetime | None = None,
        first_seen: Callable[[str], datetime | None] | None = None,
    ) -> PageFilter[F]:
        """Split a page's files into those served and those refused (with why).

        A file's age is its PEP 700 upload time, else `first_seen(filename)` (when pkgcache first saw it; a dict's
        `.get` will do), else unknown.
        """
        name = normalize_name(project)
        plan = self.plan(name)
        ages_matter = bool(self._age_seconds) and not plan.age_exempt
        if plan.rules_only_age and not ages_matter:
            return PageFilter(tuple(files), (), None)
        moment = now_epoch(now)
        kept: list[F] = []
        refused: list[tuple[F, Verdict]] = []
        until: float | None = None
        for dist in files:
            released = _released(dist, first_seen) if ages_matter else None
            verdict = self._decide_file(name, plan, dist.filename, released, moment)
            if verdict.allowed:
                kept.append(dist)
            else:
                refused.append((dist, verdict))
                until = earliest(until, verdict.available_at)
        return PageFilter(tuple(kept), tuple(refused), None if until is None else from_epoch(until))

    def filter_page(
        self,
        page: P,
        *,
        now: datetime | None = None,
        first_seen: Callable[[str], datetime | None] | None = None,
    ) -> tuple[P, PageFilter[Any]]:
        """A project page (a dataclass with `name`, `files` and PEP 700 `versions`, like `pypi.model.ProjectPage`)
        with only the files served, and the split itself.

        A version all of whose files are refused leaves `versions` too, so nothing names a release that cannot
        be had; versions listed without files stay. The same page object comes back when nothing is refused.
        """
        result = self.filter_page_files(page.name, page.files, now=now, first_seen=first_seen)
        if not result.changed:
            return page, result
        versions = page.versions
        if versions is not None:
            project = normalize_name(page.name)
            gone = {_version_key(project, dist.filename) for dist, _ in result.refused}
            gone -= {_version_key(project, dist.filename) for dist in result.kept}
            gone.discard(None)  # files whose version cannot be read say nothing of `versions`
            versions = tuple(v for v in versions if _parse_version(v) not in gone and v not in gone)
        return dataclasses.replace(page, files=result.kept, versions=versions), result

    def check_file(
        self,
        project: str,
        filename: str,
        *,
        upload_time: str | datetime | None = None,
        first_seen: datetime | None = None,
        now: datetime | None = None,
    ) -> Verdict:
        """The verdict for one file asked for directly (a 403 with `verdict.message` when refused)."""
        name = normalize_name(project)
        if isinstance(upload_time, datetime):
            released: float | None = epoch_of(upload_time)
        else:
            released = parse_upload_time(upload_time)
        if released is None and first_seen is not None:
            released = epoch_of(first_seen)
        return self._decide_file(name, self.plan(name), filename, released, now_epoch(now))

    def _decide_file(self, name: str, plan: Plan, filename: str, released: float | None, now: float) -> Verdict:
        if plan.rules_only_age:
            return self.check_age(filename, plan, released, now)
        return self.decide(filename, plan, FileFacts.of_file(name, filename), released, now)

    def check_requirements(self, pins: Sequence[Pin], *, now: datetime | None = None) -> list[PinVerdict]:
        """For `pkgcache policy check`: the verdict for each pin, in order, with notes on what could not be checked."""
        moment = now_epoch(now)
        results = []
        for pin in pins:
            name = normalize_name(pin.name)
            kind = file_kind(pin.filename) if pin.filename else None
            facts = FileFacts(name, pin.filename, kind, pin.version)
            results.append(self.decide_pin(pin, self.plan(name), facts, moment))
        return results


def _released(dist: PageFile, first_seen: Callable[[str], datetime | None] | None) -> float | None:
    released = parse_upload_time(dist.upload_time)
    if released is None and first_seen is not None:
        seen = first_seen(dist.filename)
        released = None if seen is None else epoch_of(seen)
    return released


def allow_rules_for(pins: Iterable[Pin]) -> list[str]:
    """Allow rules admitting exactly these pins (`name==version`), e.g. every package of a lock file, sorted."""
    return sorted({f"{normalize_name(pin.name)}=={pin.version}" for pin in pins})
