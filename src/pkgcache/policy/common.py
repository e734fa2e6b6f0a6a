"""What both sides of the policy share: verdicts, rule references, blocks, name patterns, durations and times.

Nothing here knows PyPI or conda formats; `pypi.py` and `conda.py` build on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

Side = Literal["pypi", "conda"]
T = TypeVar("T")

# A conda timestamp above this is in milliseconds: as seconds it would be past the year 5000, while any
# millisecond value since 1974 is larger.
MILLISECONDS_ABOVE = 100_000_000_000


# --- Rule references and verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Which rule decided: its kind, where it is in the configuration, and how the admin wrote it."""

    side: Side
    kind: Literal["deny", "allow", "allow_only", "block", "min_release_age", "unknown_age", "name"]
    text: str  # the rule as written (or its setting's value)
    index: int | None = None  # position in the side's `deny` or `allow` list
    reason: str | None = None
    description: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "description", self._describe())  # built once: every refusal quotes it

    def describe(self) -> str:
        """The rule in words an admin finds in the config file, e.g. `[pypi] deny[2] "requests>=2.32,<3"`."""
        return self.description

    def _describe(self) -> str:
        if self.kind in ("deny", "allow"):
            where = f"[{self.side}] {self.kind}[{self.index}] {_quoted(self.text)}"
        elif self.kind == "allow_only":
            where = f"[{self.side}] allow_only = true, and no allow rule matches it"
        elif self.kind == "block":
            where = f"blocked: {self.text}"
        elif self.kind == "name":
            where = f"[{self.side}] {self.text}"
        else:
            where = f"[{self.side}] {self.kind} = {_quoted(self.text)}"
        return f"{where} (reason: {self.reason})" if self.reason else where


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer for one file: allowed, or refused by `rule` with a message naming it.

    `available_at` is set when only the release age refused it: the UTC time from which it is served.
    """

    allowed: bool
    rule: RuleRef | None = None
    message: str = ""
    available_at: datetime | None = None

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Verdict(True)


def refusal(subject: str, rule: RuleRef, detail: str = "", available_at: datetime | None = None) -> Verdict:
    message = f"{subject} is refused by pkgcache's policy: {rule.description}"
    return Verdict(False, rule, message + (f"; {detail}" if detail else ""), available_at)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- Blocks ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """An instant block of a project (or conda package) at one version, or at every version when `version` is None.

    Added and removed at run time by an admin; `who`, `when` and `why` are kept for the log and the messages.
    """

    name: str
    version: str | None
    who: str = ""
    why: str = ""
    when: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def target(self) -> str:
        return self.name if self.version is None else f"{self.name}=={self.version}"

    def describe(self) -> str:
        by = f" by {self.who}" if self.who else ""
        why = f": {self.why}" if self.why else ""
        return f"{self.target}{by} on {format_time(self.when)}{why}"

    def as_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "version": self.version,
            "who": self.who,
            "why": self.why,
            "when": self.when.astimezone(UTC).isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, str | None]) -> Block:
        when = data.get("when")
        return cls(
            name=str(data["name"]),
            version=data.get("version"),
            who=data.get("who") or "",
            why=data.get("why") or "",
            when=datetime.fromisoformat(when) if when else datetime.now(UTC),
        )


_BLOCK_TARGET = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:(?:==|=|\s)\s*([^\s=<>!~,|*]+))?\s*$")


def parse_block_target(text: str) -> tuple[str, str | None]:
    """`NAME==VERSION` (also `NAME=VERSION` or `NAME VERSION`), or a bare `NAME` for every version."""
    match = _BLOCK_TARGET.match(text)
    if match is None:
        raise ValueError(f"{text!r}: write a block as NAME==VERSION, or NAME alone to block every version")
    return match.group(1), match.group(2)


# --- Name patterns -----------------------------------------------------------------------------------------------

_WILDCARDS = re.compile(r"[*?]")
_GLOB_PIECES = re.compile(r"(\*|\?)")


def is_pattern(name: str) -> bool:
    return _WILDCARDS.search(name) is not None


def glob_to_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """A shell-style pattern (`*` any run, `?` one character; nothing else is special) as a full-match regex."""
    pieces = [
        ".*" if piece == "*" else "." if piece == "?" else re.escape(piece) for piece in _GLOB_PIECES.split(pattern)
    ]
    return re.compile("(?s:" + "".join(pieces) + r")\Z", re.IGNORECASE if ignore_case else 0)


class NameIndex(Generic[T]):
    """Items keyed by name or name pattern, looked up by a (normalised) name.

    Exact names go in a dict. Patterns are filed under their literal prefix (what comes before the first
    wildcard), so a lookup tries only the patterns whose prefix the name starts with, and those that start with a
    wildcard. `lookup` keeps the order the items were given in.
    """

    def __init__(self, entries: Iterable[tuple[str, T]], normalize: Callable[[str], str]) -> None:
        self._exact: dict[str, list[tuple[int, T]]] = {}
        self._by_prefix: dict[str, list[tuple[int, re.Pattern[str], T]]] = {}
        self._anywhere: list[tuple[int, re.Pattern[str], T]] = []
        for position, (name, item) in enumerate(entries):
            self._add(position, normalize(name), item)
        self._prefix_lengths = sorted({len(prefix) for prefix in self._by_prefix})

    def _add(self, position: int, name: str, item: T) -> None:
        if not is_pattern(name):
            self._exact.setdefault(name, []).append((position, item))
            return
        prefix = _WILDCARDS.split(name, maxsplit=1)[0]
        entry = (position, glob_to_regex(name), item)
        if prefix:
            self._by_prefix.setdefault(prefix, []).append(entry)
        else:
            self._anywhere.append(entry)

    def __bool__(self) -> bool:
        return bool(self._exact or self._by_prefix or self._anywhere)

    def lookup(self, name: str) -> list[T]:
        """Every item whose name or pattern matches `name` (already normalised), in the order they were given."""
        found = list(self._exact.get(name, ()))
        candidates = [self._by_prefix.get(name[:length], ()) for length in self._prefix_lengths]
        candidates.append(self._anywhere)
        for group in candidates:
            found.extend((position, item) for position, regex, item in group if regex.match(name))
        if len(found) > 1:
            found.sort(key=lambda pair: pair[0])
        return [item for _, item in found]

    def matches(self, name: str) -> bool:
        return bool(self.lookup(name))


# --- Durations and times -----------------------------------------------------------------------------------------

_DURATION_UNITS = {
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def parse_duration(text: str) -> timedelta:
    """A duration as people write it: "7d", "36h", "90m", "1w", "1d12h", "7 days". "0" is no time at all."""
    cleaned = text.strip().lower()
    if cleaned == "0":
        return timedelta(0)
    seconds = 0.0
    position = 0
    while position < len(cleaned):
        match = _DURATION_PART.match(cleaned, position)
        if match is None or match.group(2) not in _DURATION_UNITS:
            raise ValueError(f'{text!r} is not a duration: write it like "7d", "36h", "90m" or "1d12h"')
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position == 0:
        raise ValueError(f'{text!r} is not a duration: write it like "7d", "36h", "90m" or "1d12h"')
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest form parse_duration reads back, in one unit: 7d, 36h, 90m, 45s."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else "0"


def format_time(moment: datetime) -> str:
    """A UTC time in messages: 2025-06-08 10:00:30 UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def epoch_of(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC (as upload times are)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def now_epoch(now: datetime | None) -> float:
    return epoch_of(now) if now is not None else datetime.now(UTC).timestamp()


def parse_upload_time(text: str | None) -> float | None:
    """A PEP 700 `upload-time` (ISO 8601, e.g. 2024-05-01T10:00:00.123456Z) as epoch seconds, or None."""
    if not text:
        return None
    try:
        return epoch_of(datetime.fromisoformat(text))
    except ValueError:
        return None


def conda_timestamp_seconds(value: object) -> float | None:
    """A conda record's `timestamp` as epoch seconds. conda-build writes milliseconds; older tools wrote seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value <= 0:
        return None
    return value / 1000.0 if value > MILLISECONDS_ABOVE else float(value)
