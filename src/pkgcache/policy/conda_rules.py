"""conda's policy rules: a rule read from its string (through py-rattler's MatchSpec) or its table, compiled, and
what it says of a record's or a pin's facts. conda.py applies them; the settings check them when they are loaded."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rattler import MatchSpec, Version, VersionSpec

from pkgcache.policy.common import NameIndex, RuleRef, glob_to_regex, is_pattern
from pkgcache.policy.rule_tables import CondaRuleTable, rule_table_text

PackageKind = Literal["conda", "tar.bz2"]

_NAME = re.compile(r"^[a-z0-9_*?](?:[a-z0-9._*?-]*)$")
_STRING_RULE = re.compile(r"^\s*([A-Za-z0-9._*?-]+)(.*)$", re.DOTALL)
_PLACEHOLDER = "policy-placeholder"


def normalize_name(name: str) -> str:
    return name.strip().lower()


def package_kind(filename: str) -> PackageKind | None:
    if filename.endswith(".conda"):
        return "conda"
    if filename.endswith(".tar.bz2"):
        return "tar.bz2"
    return None


@functools.lru_cache(maxsize=262144)
def parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except Exception:  # rattler raises its own InvalidVersionError
        return None


class Facts(Protocol):
    """What a rule reads of a record or a pin (conda.RecordFacts, conda.PinFacts)."""

    version_text: str | None
    build: str | None
    kind: str | None
    license: str | None


@dataclass(frozen=True, slots=True)
class CondaRule:
    """A compiled deny or allow rule."""

    ref: RuleRef
    name: str
    version: VersionSpec | None
    build: re.Pattern[str] | None
    kind: PackageKind | None
    licenses: tuple[re.Pattern[str], ...]
    channel: re.Pattern[str] | None
    exempt: NameIndex[bool] | None

    @property
    def whole(self) -> bool:
        return self.version is None and self.build is None and self.kind is None and not self.licenses

    def applies_in(self, channel: str | None) -> bool:
        """Whether the rule concerns `channel` (matched whole, or by its last part: "conda-forge"); None: any."""
        if self.channel is None or channel is None:
            return True
        return bool(self.channel.match(channel) or self.channel.match(channel.rsplit("/", 1)[-1]))

    def exempts(self, name: str) -> bool:
        return self.exempt is not None and self.exempt.matches(name)

    def matches(self, facts: Facts) -> bool | None:
        unknown = False
        for pattern, value in ((self.build, facts.build), (self.kind, facts.kind)):
            if pattern is None:
                continue
            if value is None:
                unknown = True
            elif not (pattern == value if isinstance(pattern, str) else pattern.match(value)):
                return False
        if self.licenses:
            if facts.license is None:
                unknown = True
            elif not any(pattern.match(facts.license) for pattern in self.licenses):
                return False
        if self.version is not None:
            version = parse_version(facts.version_text) if facts.version_text else None
            if version is None:
                if self.ref.kind != "deny":  # unreadable version: deny rules take it, allow rules do not
                    return False
            elif not self.version.matches(version):
                return False
        return None if unknown else True


def split_string_rule(text: str) -> tuple[str, str | None, str | None]:
    """`"numpy >=2"` -> ("numpy", ">=2", None); `"numpy=1.26=py3*"` -> ("numpy", "1.26.*"... as MatchSpec reads it).

    The name may be a pattern; the rest is read by rattler's MatchSpec, so it means what it means to conda users.
    """
    match = _STRING_RULE.match(text)
    if match is None:
        raise ValueError("start with a package name or a pattern like 'cuda-*'")
    name, rest = match.group(1).lower(), match.group(2).strip()
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a package name or a pattern like 'cuda-*'")
    if "[" in text or "::" in text:
        raise ValueError("brackets and channel:: prefixes are not read here: use the table form (build, channel...)")
    if not rest:
        return name, None, None
    stand_in = _PLACEHOLDER if is_pattern(name) else name
    joiner = "" if rest[0] in "=<>!~" else " "
    try:
        spec = MatchSpec(stand_in + joiner + rest)
    except Exception as exc:  # rattler's parse errors have no common Python base
        raise ValueError(f"not a conda match spec: {exc}") from None
    version = spec.version
    return name, None if version is None else str(version), spec.build


def compile_rule(entry: Any, kind: str, index: int) -> CondaRule:
    """A rule from its configuration entry (string or table); ValueError says what is wrong with it."""
    if isinstance(entry, dict):
        entry = CondaRuleTable.model_validate(entry)
    if isinstance(entry, str):
        name, version, build = split_string_rule(entry)
        ref = RuleRef("conda", kind, entry.strip(), index)  # type: ignore[arg-type]
        return CondaRule(ref, name, _version_spec(version), _build_pattern(build), None, (), None, None)
    if entry.spec:
        name, version, build = split_string_rule(entry.spec)
    else:
        name, version, build = (entry.name or "").lower(), entry.version, entry.build
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a package name or a pattern like 'cuda-*'")
    licenses = (entry.license,) if isinstance(entry.license, str) else entry.license or ()
    ref = RuleRef("conda", kind, rule_table_text(entry), index, entry.reason)  # type: ignore[arg-type]
    return CondaRule(
        ref=ref,
        name=name,
        version=_version_spec(version),
        build=_build_pattern(build),
        kind=entry.kind,
        licenses=tuple(glob_to_regex(pattern, ignore_case=True) for pattern in licenses),
        channel=glob_to_regex(entry.channel.strip("/")) if entry.channel else None,
        exempt=NameIndex(((n, True) for n in entry.except_), normalize_name) if entry.except_ else None,
    )


def _version_spec(text: str | None) -> VersionSpec | None:
    if text is None or text.strip() in ("", "*"):
        return None
    try:
        return VersionSpec(text)
    except Exception as exc:
        raise ValueError(
            f"{text!r} is not a conda version spec (like '>=1.2,<2', '1.26.*' or '1.2|1.4'): {exc}"
        ) from None


def _build_pattern(text: str | None) -> re.Pattern[str] | None:
    return None if text is None or text == "*" else glob_to_regex(text)
