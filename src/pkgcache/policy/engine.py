"""The evaluation both sides share: per-name plans, the order rules are applied in, release age, blocks, fingerprint.

A side (`PypiPolicy`, `CondaPolicy`) supplies how names are normalised, how its rules and blocks are compiled and
how a file's facts are read; this module decides. The order, first refusal wins:

1. a rule refusing the whole name (a block without version, a deny rule with no condition but the name, or
   allow_only with no allow rule for the name);
2. blocks of a version; 3. deny rules, in the order written; 4. allow_only: some allow rule must match;
5. the minimum release age (unless the name is exempt), then what to do when the age is unknown.

A policy is immutable: a change (a block added, a reload) makes a new one, so a page filtered under one policy is
never half-filtered under another. Plans (which rules concern a name) are worked out once per name and kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self

from pkgcache.policy.common import (
    ALLOWED,
    Block,
    NameIndex,
    RuleRef,
    Side,
    Verdict,
    format_duration,
    format_time,
    from_epoch,
    now_epoch,
    refusal,
)
from pkgcache.policy.config import PolicySettingsBase

# Plans kept per policy before the cache is emptied and refilled (a plan is a few hundred bytes).
MAX_PLANS = 200_000


class CompiledRule(Protocol):
    @property
    def ref(self) -> RuleRef: ...

    @property
    def name(self) -> str:
        """The normalised name or pattern."""
        ...

    @property
    def whole(self) -> bool:
        """No condition but the name (and channel): refuses or allows every file of the name."""
        ...

    def applies_in(self, channel: str | None) -> bool: ...

    def exempts(self, name: str) -> bool: ...

    def matches(self, facts: Any) -> bool | None:
        """Whether the file is one the rule speaks of; None when the facts given cannot tell (pins)."""
        ...


class CompiledBlock(Protocol):
    @property
    def block(self) -> Block: ...

    @property
    def ref(self) -> RuleRef: ...

    def matches(self, facts: Any) -> bool: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules that concern one name (in one channel), worked out once."""

    whole: RuleRef | None
    blocks: tuple[CompiledBlock, ...]
    deny: tuple[CompiledRule, ...]
    allow: tuple[CompiledRule, ...] | None  # None: allow_only is off
    age_exempt: bool
    rules_only_age: bool = field(init=False)  # nothing but the release age to check

    def __post_init__(self) -> None:
        only_age = self.whole is None and not self.blocks and not self.deny and self.allow is None
        object.__setattr__(self, "rules_only_age", only_age)


@dataclass(frozen=True, slots=True)
class PinFile:
    """One of the files a lock lists for a pin, with its upload time when known."""

    filename: str
    released_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Pin:
    """One pinned item to check (from a requirements or lock file): what is known of it, the rest left None.

    `filename` gives the file kind (and a wheel's tags); `released_at` the upload time or conda timestamp; `build`,
    `license` and `channel` are read by conda rules. `files` are the files a lock lists for the pin when an
    installer picks one of them (a wheel or the sdist of a uv, poetry or pdm lock): each is judged with its own
    name and upload time, and `filename` and `released_at` are not read.
    """

    name: str
    version: str
    filename: str | None = None
    released_at: datetime | None = None
    build: str | None = None
    license: str | None = None
    channel: str | None = None
    files: tuple[PinFile, ...] = ()

    @property
    def label(self) -> str:
        return self.filename or f"{self.name}=={self.version}"


@dataclass(frozen=True, slots=True)
class PinVerdict:
    """The verdict for one pin, and notes on the rules that could not be checked with what the pin says."""

    pin: Pin
    verdict: Verdict
    notes: tuple[str, ...] = ()


class SidePolicy:
    """The rules of one side, compiled; a subclass is one side's vocabulary."""

    side: ClassVar[Side]
    settings_type: ClassVar[type[PolicySettingsBase]]

    def __init__(self, settings: PolicySettingsBase | None = None, blocks: Iterable[Block] = ()) -> None:
        self.settings = settings if settings is not None else self.settings_type()
        self._deny_rules = [self.compile_rule(entry, "deny", i) for i, entry in enumerate(self.settings.deny)]
        self._allow_rules = [self.compile_rule(entry, "allow", i) for i, entry in enumerate(self.settings.allow)]
        self._deny = NameIndex(((rule.name, rule) for rule in self._deny_rules), str)
        self._allow = NameIndex(((rule.name, rule) for rule in self._allow_rules), str)
        self._age_exempt = NameIndex(((name, True) for name in self.settings.min_release_age_exempt), self.normalize)
        age = self.settings.min_release_age
        self._age_seconds = age.total_seconds() if age else 0.0
        self._age_ref = RuleRef(self.side, "min_release_age", format_duration(age)) if age else None
        self._unknown_ref = RuleRef(self.side, "unknown_age", self.settings.unknown_age)
        self._allow_only_ref = RuleRef(self.side, "allow_only", "true")
        self._set_blocks(blocks)

    # --- hooks for a side -----------------------------------------------------------------------------------------

    @staticmethod
    def normalize(name: str) -> str:
        raise NotImplementedError

    @classmethod
    def compile_rule(cls, entry: Any, kind: str, index: int) -> CompiledRule:
        raise NotImplementedError

    def compile_block(self, block: Block) -> CompiledBlock:
        raise NotImplementedError

    # --- blocks and identity --------------------------------------------------------------------------------------

    def _set_blocks(self, blocks: Iterable[Block]) -> None:
        by_target: dict[tuple[str, str | None], Block] = {}
        for block in blocks:
            by_target[(self.normalize(block.name), block.version)] = block
        self.blocks: tuple[Block, ...] = tuple(sorted(by_target.values(), key=lambda b: (b.name, b.version or "")))
        self._blocks: dict[str, list[CompiledBlock]] = {}
        for block in self.blocks:
            self._blocks.setdefault(self.normalize(block.name), []).append(self.compile_block(block))
        self._plans: dict[tuple[str | None, str], Plan] = {}
        self.fingerprint = self._fingerprint()

    def with_blocks(self, blocks: Iterable[Block]) -> Self:
        """The same rules with these blocks instead (rules are not compiled again)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._set_blocks(blocks)
        return new

    def add_block(self, block: Block) -> Self:
        """A policy with this block too (replacing one of the same name and version)."""
        return self.with_blocks([*self.blocks, block])

    def remove_block(self, name: str, version: str | None) -> Self:
        """A policy without the block of `name` at `version` (None: the block of every version)."""
        target = (self.normalize(name), version)
        return self.with_blocks(b for b in self.blocks if (self.normalize(b.name), b.version) != target)

    def _fingerprint(self) -> str:
        content = {
            "side": self.side,
            # Only the policy's own keys: the section it is mounted in holds others (upstreams, ttl...).
            "settings": self.settings.model_dump(
                mode="json", by_alias=True, include=set(self.settings_type.model_fields)
            ),
            "blocks": [block.as_json() for block in self.blocks],
        }
        encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def describe(self) -> list[str]:
        """Every rule and block in the words refusals use, for the status page and logs."""
        lines = [rule.ref.describe() for rule in (*self._deny_rules, *self._allow_rules)]
        if self.settings.allow_only:
            lines.append(self._allow_only_ref.describe().split(",")[0])
        if self._age_ref is not None:
            exempt = self.settings.min_release_age_exempt
            lines.append(self._age_ref.describe() + (f" (exempt: {', '.join(exempt)})" if exempt else ""))
            lines.append(self._unknown_ref.describe())
        lines += [f"blocked: {block.describe()}" for block in self.blocks]
        return lines

    @property
    def is_empty(self) -> bool:
        """No rule, no block, no age: callers may skip filtering altogether."""
        return not (self._age_seconds or self._deny_rules or self.settings.allow_only or self.blocks)

    # --- plans ------------------------------------------------------------------------------------------------------

    def plan(self, name: str, channel: str | None = None) -> Plan:
        """The rules concerning `name` (normalised) in `channel`, worked out once and kept."""
        key = (channel, name)
        found = self._plans.get(key)
        if found is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            found = self._plans[key] = self._make_plan(name, channel)
        return found

    def _make_plan(self, name: str, channel: str | None) -> Plan:
        deny = tuple(r for r in self._deny.lookup(name) if r.applies_in(channel) and not r.exempts(name))
        allow = None
        if self.settings.allow_only:
            allow = tuple(r for r in self._allow.lookup(name) if r.applies_in(channel) and not r.exempts(name))
        blocks = tuple(self._blocks.get(name, ()))
        whole = next((b.ref for b in blocks if b.block.version is None), None)
        whole = whole or next((r.ref for r in deny if r.whole), None)
        if whole is None and allow is not None and not allow:
            whole = self._allow_only_ref
        age_exempt = bool(self._age_exempt) and self._age_exempt.matches(name)
        return Plan(whole, blocks, deny, allow, age_exempt)

    # --- deciding ---------------------------------------------------------------------------------------------------

    def decide(self, subject: str, plan: Plan, facts: Any, released: float | None, now: float) -> Verdict:
        """The verdict for one file whose facts are all known (a file in a page or repodata)."""
        if plan.whole is not None:
            return refusal(subject, plan.whole)
        for block in plan.blocks:
            if block.matches(facts):
                return refusal(subject, block.ref)
        for rule in plan.deny:
            if rule.matches(facts):
                return refusal(subject, rule.ref)
        if plan.allow is not None and not any(rule.matches(facts) for rule in plan.allow):
            return refusal(subject, self._allow_only_ref)
        return self.check_age(subject, plan, released, now)

    def check_age(self, subject: str, plan: Plan, released: float | None, now: float) -> Verdict:
        if not self._age_seconds or plan.age_exempt:
            return ALLOWED
        if released is None:
            if self.settings.unknown_age == "allow":
                return ALLOWED
            return refusal(subject, self._unknown_ref, "its release time is not known")
        available = released + self._age_seconds
        if available <= now:
            return ALLOWED
        assert self._age_ref is not None
        moment = from_epoch(available)
        detail = f"released {format_time(from_epoch(released))}, served from {format_time(moment)}"
        return refusal(subject, self._age_ref, detail, available_at=moment)

    def check_requirements(self, pins: Sequence[Pin], *, now: datetime | None = None) -> list[PinVerdict]:
        """For `pkgcache policy check`: the verdict for each pin, in order, with notes on what could not be checked.

        A pin with `files` is judged as an installer meets them: refused when the rules refuse its version whatever
        the file (a rule on the name or the version, a block), or when they refuse every one of its files; else
        allowed, with a note naming the files refused and the rules that refuse them.
        """
        moment = now_epoch(now)
        return [self._check_pin_files(pin, moment) if pin.files else self.check_pin(pin, moment) for pin in pins]

    def check_pin(self, pin: Pin, now: float) -> PinVerdict:
        """The verdict for one pin, read as one file (or none): a side builds its facts and calls `decide_pin`."""
        raise NotImplementedError

    def _check_pin_files(self, pin: Pin, now: float) -> PinVerdict:
        bare = dataclasses.replace(pin, filename=None, released_at=None, files=())
        whatever_the_file = self.check_pin(bare, now).verdict
        if not whatever_the_file.allowed:
            return PinVerdict(pin, whatever_the_file)
        by_file = [
            self.check_pin(dataclasses.replace(bare, filename=file.filename, released_at=file.released_at), now)
            for file in pin.files
        ]
        allowed = [result for result in by_file if result.verdict.allowed]
        refused = [result for result in by_file if not result.verdict.allowed]
        if not allowed:
            notes = _unique(note for result in by_file for note in result.notes)
            if len(refused) == 1:
                return PinVerdict(pin, refused[0].verdict, notes)
            times = [result.verdict.available_at for result in refused if result.verdict.available_at is not None]
            message = f"no file of {pin.label} is allowed by pkgcache's policy: {_refused_files(refused)}"
            verdict = Verdict(False, refused[0].verdict.rule, message, min(times) if times else None)
            return PinVerdict(pin, verdict, notes)
        notes = _unique(note for result in allowed for note in result.notes)
        if refused:
            count = f"{len(refused)} of its {len(by_file)} files {'is' if len(refused) == 1 else 'are'} refused"
            notes += (f"{count} (an installer that can use no other file fails): {_refused_files(refused)}",)
        return PinVerdict(pin, ALLOWED, notes)

    def decide_pin(self, pin: Pin, plan: Plan, facts: Any, now: float) -> PinVerdict:
        """Like `decide`, for a pin that may lack facts: a rule that cannot tell is noted, not applied."""
        notes: list[str] = []
        subject = pin.label
        if plan.whole is not None:
            return PinVerdict(pin, refusal(subject, plan.whole))
        for block in plan.blocks:
            if block.matches(facts):
                return PinVerdict(pin, refusal(subject, block.ref))
        for rule in plan.deny:
            matched = rule.matches(facts)
            if matched:
                return PinVerdict(pin, refusal(subject, rule.ref), tuple(notes))
            if matched is None:
                notes.append(f"not checked, the pin does not say enough: {rule.ref.describe()}")
        if plan.allow is not None:
            answers = [rule.matches(facts) for rule in plan.allow]
            if not any(answer is not False for answer in answers):
                return PinVerdict(pin, refusal(subject, self._allow_only_ref), tuple(notes))
            if not any(answers):
                notes.append("allow_only: only allow rules the pin does not say enough for could match it")
        if self._age_seconds and not plan.age_exempt and pin.released_at is None:
            assert self._age_ref is not None
            notes.append(f"release time not given: {self._age_ref.describe()} not checked")
            return PinVerdict(pin, ALLOWED, tuple(notes))
        released = None if pin.released_at is None else pin.released_at.timestamp()
        return PinVerdict(pin, self.check_age(subject, plan, released, now), tuple(notes))


def _unique(notes: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(notes))


def _refused_files(refused: Sequence[PinVerdict]) -> str:
    """Refused files grouped by the rule refusing them: `a.tar.gz, b.zip by [pypi] deny[2] "..."; ...`."""
    groups: dict[tuple[str, datetime | None], list[str]] = {}
    for result in refused:
        verdict = result.verdict
        why = verdict.rule.description if verdict.rule is not None else verdict.message
        groups.setdefault((why, verdict.available_at), []).append(result.pin.label)
    parts = []
    for (why, available_at), files in groups.items():
        served = f" (served from {format_time(available_at)})" if available_at is not None else ""
        parts.append(f"{', '.join(files)} by {why}{served}")
    return "; ".join(parts)


def earliest(current: float | None, candidate: datetime | None) -> float | None:
    """The earlier of a running minimum (epoch seconds) and a verdict's available_at."""
    if candidate is None:
        return current
    value = candidate.timestamp()
    return value if current is None or value < current else current
