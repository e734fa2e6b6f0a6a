"""conda's side of the policy: rules over package names, MatchSpec versions and builds, formats, licenses, channels.

Versions follow conda's ordering and MatchSpec's version syntax through py-rattler (`Version`, `VersionSpec`, and
`MatchSpec` to read a rule's string), the library rattler and pixi solve with: `1.2.*`, `>=1.2,<2`, `1.2|1.4`,
`numpy=1.26` (meaning 1.26.*), `numpy 1.26` (exactly 1.26, equal to 1.26.0), `numpy >=1.2 py3*` (with a build).

The repodata layer calls `CondaPolicy.filter_records` on a repodata's `packages` and `packages.conda` (or a
shard's) once per repodata and policy, and `check_record` for a package asked for directly. Records whose names no
rule concerns cost a dict look-up and, with a release age, one comparison.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rattler import VersionSpec

from pkgcache.policy.common import (
    ALLOWED,
    Block,
    RuleRef,
    Verdict,
    conda_timestamp_seconds,
    epoch_of,
    from_epoch,
    now_epoch,
    refusal,
)
from pkgcache.policy.conda_names import judged_name, why_no_name
from pkgcache.policy.conda_rules import CondaRule, compile_rule, normalize_name, package_kind, parse_version
from pkgcache.policy.config import CondaPolicySettings
from pkgcache.policy.engine import Pin, PinVerdict, Plan, SidePolicy, earliest


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Records split by the policy: `kept` (filename -> record, in their order), `refused` (filename -> verdict).

    `valid_until` is when the split may change with no change of policy or repodata: the earliest time a package
    kept out by the release age becomes old enough (None: never).
    """

    kept: dict[str, Any]
    refused: dict[str, Verdict]
    valid_until: datetime | None

    @property
    def changed(self) -> bool:
        return bool(self.refused)


class RecordFacts:
    """What rules read of a repodata record. A field the record lacks reads as empty (it never matches a pattern)."""

    __slots__ = ("build", "kind", "license", "version_text")

    def __init__(self, filename: str, record: Mapping[str, Any]) -> None:
        self.version_text: str | None = record.get("version")
        self.build: str | None = record.get("build") or ""
        self.kind: str | None = package_kind(filename) or ""
        self.license: str | None = record.get("license") or ""


class PinFacts:
    """What rules read of a pin; a None field is one the pin does not say (rules needing it cannot tell)."""

    __slots__ = ("build", "kind", "license", "version_text")

    def __init__(self, pin: Pin) -> None:
        self.version_text: str | None = pin.version
        self.build: str | None = pin.build
        self.kind: str | None = package_kind(pin.filename) if pin.filename else None
        self.license: str | None = pin.license


@dataclass(frozen=True, slots=True)
class CondaBlock:
    block: Block
    ref: RuleRef
    version: VersionSpec | None

    def matches(self, facts: RecordFacts | PinFacts) -> bool:
        if self.version is None:
            return True
        version = parse_version(facts.version_text) if facts.version_text else None
        if version is None:
            return facts.version_text == self.block.version
        return self.version.matches(version)


class CondaPolicy(SidePolicy):
    """The conda side's rules, compiled. Immutable: `with_blocks`/`add_block`/`remove_block` make new ones."""

    side: ClassVar = "conda"
    settings_type: ClassVar = CondaPolicySettings
    normalize = staticmethod(normalize_name)

    @classmethod
    def compile_rule(cls, entry: Any, kind: str, index: int) -> CondaRule:
        return compile_rule(entry, kind, index)

    def compile_block(self, block: Block) -> CondaBlock:
        """Raises ValueError for a version conda cannot read."""
        spec = None
        if block.version is not None:
            if parse_version(block.version) is None:
                raise ValueError(f"{block.version!r} is not a conda version")
            spec = VersionSpec(f"=={block.version}")
        return CondaBlock(block, RuleRef("conda", "block", block.describe()), spec)

    def check_record(
        self,
        channel: str,
        subdir: str,
        filename: str,
        record: Mapping[str, Any],
        *,
        now: datetime | None = None,
        first_seen: datetime | None = None,
    ) -> Verdict:
        """The verdict for one package (a 403 with `verdict.message` when refused)."""
        subject = f"{channel}/{subdir}/{filename}"
        name = judged_name(filename, record)
        if name is None:
            return refusal(subject, NAME_REF, why_no_name(filename, record))
        released = conda_timestamp_seconds(record.get("timestamp"))
        if released is None and first_seen is not None:
            released = epoch_of(first_seen)
        return self._decide_record(subject, self.plan(name, channel), filename, record, released, now_epoch(now))

    def check_file(self, channel: str, subdir: str, filename: str) -> Verdict:
        """The verdict for a package file by its name alone (`NAME-VERSION-BUILD.conda`): what its name, version
        and build say, no more (no release time: only the rules, blocks among them, are applied)."""
        subject = f"{channel}/{subdir}/{filename}"
        name = judged_name(filename)
        if name is None:
            return refusal(subject, NAME_REF, why_no_name(filename))
        record = _record_of_file(filename, name)
        plan = self.plan(name, channel)
        if plan.rules_only_age:
            return ALLOWED
        verdict = self.decide(subject, plan, RecordFacts(filename, record), None, now_epoch(None))
        return ALLOWED if verdict.rule is not None and verdict.rule.kind in AGE_KINDS else verdict

    def check_unlisted(self, channel: str, subdir: str, filename: str, *, now: datetime | None = None) -> Verdict:
        """The verdict for a package its channel's index does not list (taken out under `removed`, or dropped),
        served only to a client that says the sha256 it expects: judged as a record holding what its file name
        says (name, version, build) and no release time. Every rule applies to it as to a listed package (a
        license rule never matches it); with a release age, the policy's `unknown_age` decides."""
        subject = f"{channel}/{subdir}/{filename}"
        name = judged_name(filename)
        if name is None:
            return refusal(subject, NAME_REF, why_no_name(filename))
        verdict = self.check_record(channel, subdir, filename, _record_of_file(filename, name), now=now)
        if verdict.allowed:
            return verdict
        return dataclasses.replace(verdict, message=f"{verdict.message} (its channel's index does not list it)")

    def filter_records(
        self,
        channel: str,
        subdir: str,
        records: Mapping[str, Mapping[str, Any]],
        *,
        now: datetime | None = None,
        first_seen: Callable[[str], datetime | None] | None = None,
    ) -> RecordFilter:
        """Split records (filename -> record, as in repodata's `packages` or `packages.conda`) by the policy.

        A record's age is its `timestamp` (milliseconds or seconds), else `first_seen(filename)`, else unknown.
        """
        moment = now_epoch(now)
        age = self._age_seconds
        cutoff = moment - age
        plans, plan_of = self._plans, self.plan
        kept: dict[str, Any] = {}
        refused: dict[str, Verdict] = {}
        until: float | None = None
        for filename, record in records.items():
            name = judged_name(filename, record)
            if name is None:  # no name the rules can be looked up by: refused whatever they are
                refused[filename] = refusal(f"{channel}/{subdir}/{filename}", NAME_REF, why_no_name(filename, record))
                continue
            plan = plans.get((channel, name)) or plan_of(name, channel)
            released = None
            if age and not plan.age_exempt:
                released = conda_timestamp_seconds(record.get("timestamp"))
                if released is None and first_seen is not None:
                    seen = first_seen(filename)
                    released = None if seen is None else epoch_of(seen)
            if plan.rules_only_age and (not age or plan.age_exempt or (released is not None and released <= cutoff)):
                kept[filename] = record  # the common case, decided without building anything
                continue
            verdict = self._decide_record(f"{channel}/{subdir}/{filename}", plan, filename, record, released, moment)
            if verdict.allowed:
                kept[filename] = record
            else:
                refused[filename] = verdict
                until = earliest(until, verdict.available_at)
        return RecordFilter(kept, refused, None if until is None else from_epoch(until))

    def _decide_record(
        self, subject: str, plan: Plan, filename: str, record: Mapping[str, Any], released: float | None, now: float
    ) -> Verdict:
        if plan.rules_only_age:
            return self.check_age(subject, plan, released, now)
        return self.decide(subject, plan, RecordFacts(filename, record), released, now)

    def check_pin(self, pin: Pin, now: float) -> PinVerdict:
        """A pin without a channel is judged by every rule, whatever channel the rule names. A pin with a file
        name is judged by the name its file name holds, as the cache judges that file asked for."""
        if pin.filename:
            name = judged_name(pin.filename)
            if name is None:
                return PinVerdict(pin, refusal(pin.label, NAME_REF, why_no_name(pin.filename)))
        else:
            name = normalize_name(pin.name)
        return self.decide_pin(pin, self.plan(name, pin.channel), PinFacts(pin), now)


# What refuses a package whose name the policy cannot read (conda_names.py): no rule can be looked up for it.
NAME_REF = RuleRef(
    "conda",
    "name",
    "its package name cannot be read (a conda name, the same in its record and its file name, is needed to judge it)",
)

AGE_KINDS = frozenset({"min_release_age", "unknown_age"})


def _record_of_file(filename: str, name: str) -> dict[str, Any]:
    """What a package file's name says of it (`NAME-VERSION-BUILD.conda`), as a record: its name, version, build."""
    name_version, _, build = filename.removesuffix(".conda").removesuffix(".tar.bz2").rpartition("-")
    return {"name": name, "version": name_version.rpartition("-")[2], "build": build}


def allow_rules_for(pins: Iterable[Pin]) -> list[str]:
    """Allow rules admitting exactly these pins (`name ==version build`, the build when the pin has one), sorted."""
    rules = set()
    for pin in pins:
        build = f" {pin.build}" if pin.build else ""
        rules.add(f"{normalize_name(pin.name)} =={pin.version}{build}")
    return sorted(rules)
