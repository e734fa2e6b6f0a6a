"""Writing a repodata document without the records a predicate refuses: streaming, bounded memory, one pass.

The source (`repodata.json`, or its `.zst` or `.bz2`) is read record by record (repodata_stream.py); records are
judged in batches (the policy engine's `filter_records` is fastest over many at once) and the kept ones written at
once to the `.json` and its `.zst`, so a client that asks for either gets the same records. Everything that is not
a record (`info`, `removed`, `repodata_version`...) is kept as it is, but `info.base_url` (conda/base_url.py).
Memory holds one batch and the refusals.

`FilterJob` says what to refuse and is plain data, so the work runs as well in a thread as in a process of its own
(service: conda/filtered_channels.py, which uses a process for conda-forge-sized input: pure Python that holds the
GIL for seconds would stall the event loop).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from pkgcache.conda.repodata_stream import RECORD_SECTIONS, Info, Other, Record, Removed, iter_repodata_file
from pkgcache.gate.misses import not_held
from pkgcache.policy.common import Block, from_epoch

if TYPE_CHECKING:
    from pkgcache.storage.store import CacheStore

BATCH_RECORDS = 4096
ZSTD_LEVEL = 3  # as generated_zst.py: about as fast as the disk
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class FilterJob:
    """What to refuse in one subdir's repodata (picklable: it may cross to another process).

    `policy_settings` and `blocks` are the conda policy as JSON (None: no policy); `held`, when given, is the set
    of package files the cache holds (the offline view: the rest is refused, for good when `never_fetches`, else
    for as long as every upstream is down); `first_seen` maps file names to when
    pkgcache first saw them, for records without a timestamp (`first_seen_since`: when that record began).
    `info_without`: keys left out of `info` (by default `base_url`: packages are fetched beside the repodata, from
    pkgcache, whatever the source said: conda/base_url.py).
    """

    channel: str
    subdir: str
    now: float
    policy_settings: dict[str, Any] | None = None
    blocks: tuple[dict[str, Any], ...] = ()
    policy_fingerprint: str = ""
    held: frozenset[str] | None = None
    never_fetches: bool = True
    first_seen: dict[str, float] = field(default_factory=dict)
    first_seen_since: float | None = None
    info_without: tuple[str, ...] = ("base_url",)


NOT_A_RECORD = "its record in the channel's repodata is not an object: no client can use it"


@dataclass
class FilterOutcome:
    """What a filter run did: counts, the refusals (file name -> (status, message)), until when it holds."""

    kept: int = 0
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    valid_until: float | None = None
    new_first_seen: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def filter_repodata(source: Path, json_out: Path, zst_out: Path | None, job: FilterJob) -> FilterOutcome:
    """Write the repodata of `source` without what `job` refuses to `json_out` (and `zst_out`); blocking."""
    started = time.monotonic()
    judge = _Judge(job)
    with json_out.open("wb") as raw_json, _zst_writer(zst_out) as raw_zst:
        writer = DocumentWriter([raw_json, *([raw_zst] if raw_zst is not None else [])])
        batch: dict[str, dict[str, Any]] = {}
        batch_section = ""

        def flush() -> None:
            if batch:
                writer.records(batch_section, judge.kept(batch))
                batch.clear()

        for item in iter_repodata_file(source, others=True, any_records=True):
            if isinstance(item, Record):
                if not isinstance(item.record, dict):
                    # No client can use it (rattler refuses the whole repodata for it), nor a rule judge it: left
                    # out and refused, the rest of the subdir served.
                    judge.outcome.refused[item.filename] = (403, NOT_A_RECORD)
                    continue
                if item.section != batch_section or len(batch) >= BATCH_RECORDS:
                    flush()
                    batch_section = item.section
                batch[item.filename] = item.record
                continue
            flush()
            if isinstance(item, Removed):
                writer.removed(item.filename)
            elif isinstance(item, Info):
                writer.member("info", {key: value for key, value in item.info.items() if key not in job.info_without})
            elif isinstance(item, Other):
                writer.member(item.key, item.value)
        flush()
        writer.finish()
    outcome = judge.outcome
    outcome.seconds = time.monotonic() - started
    return outcome


class _Judge:
    """Splits batches of records by the job's policy, then by what the cache holds."""

    def __init__(self, job: FilterJob) -> None:
        self.job = job
        self.policy = _compiled_policy(job)
        self.outcome = FilterOutcome()
        self._first_seen = _first_seen_lookup(job, self.outcome.new_first_seen)

    def kept(self, records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        job, outcome = self.job, self.outcome
        kept = records
        if self.policy is not None:
            now = from_epoch(job.now)
            result = self.policy.filter_records(job.channel, job.subdir, records, now=now, first_seen=self._first_seen)
            kept = result.kept
            for filename, verdict in result.refused.items():
                outcome.refused[filename] = (403, verdict.message)
            if result.valid_until is not None:
                until = result.valid_until.timestamp()
                outcome.valid_until = until if outcome.valid_until is None else min(outcome.valid_until, until)
        if job.held is not None:
            held = job.held
            missing = [filename for filename in kept if filename not in held]
            if missing:
                kept = {filename: record for filename, record in kept.items() if filename in held}
                where = f"{job.channel}/{job.subdir}"
                for filename in missing:
                    refusal = not_held(f"{where}/{filename}", configured_offline=job.never_fetches)
                    outcome.refused[filename] = refusal
        outcome.kept += len(kept)
        return kept


def _first_seen_lookup(job: FilterJob, new: dict[str, float]) -> Callable[[str], datetime | None]:
    """First sightings for records without a timestamp; names never seen are noted as seen now (in `new`)."""
    known = job.first_seen
    since = job.first_seen_since if job.first_seen_since is not None else job.now
    count_first_sight = (job.policy_settings or {}).get("unknown_age", "refuse") == "refuse"

    def first_seen(filename: str) -> datetime | None:
        seen = known.get(filename)
        if seen is None:
            seen = new[filename] = job.now
        if seen <= since and not count_first_sight:
            return None
        return from_epoch(seen)

    return first_seen


@functools.lru_cache(maxsize=4)
def _policy_for(fingerprint: str, settings: str, blocks: str) -> Any:
    from pkgcache.policy.conda import CondaPolicy
    from pkgcache.policy.config import CondaPolicySettings

    compiled = CondaPolicySettings.model_validate(json.loads(settings))
    return CondaPolicy(compiled, [Block.from_json(item) for item in json.loads(blocks)])


def _compiled_policy(job: FilterJob) -> Any:
    """The job's policy, compiled once per process and fingerprint (None: no policy)."""
    if job.policy_settings is None:
        return None
    return _policy_for(job.policy_fingerprint, json.dumps(job.policy_settings), json.dumps(list(job.blocks)))


@contextlib.contextmanager
def _zst_writer(path: Path | None) -> Iterator[Any]:
    """A zstd stream onto `path` (one frame, ended on leaving), or None when `path` is None."""
    if path is None:
        yield None
        return
    with path.open("wb") as raw:
        stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False)
        try:
            yield stream
        finally:
            stream.close()


class DocumentWriter:
    """Writes one JSON object member by member to several outputs at once (the .json and its .zst)."""

    def __init__(self, outputs: list[Any]) -> None:
        self.outputs = outputs
        self._members = 0
        self._open: str | None = None  # the top-level member being written piece by piece
        self._group: str | None = None  # inside "v3": the group being written
        self._entries = 0  # entries written in the innermost open container
        self._groups = 0
        self._written: set[str] = set()
        self._write("{")

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        for output in self.outputs:
            output.write(data)

    def _start_member(self, key: str) -> None:
        self._write(("," if self._members else "") + _ENCODE(key) + ":")
        self._members += 1
        self._written.add(key)

    def _close(self) -> None:
        if self._open is None:
            return
        if self._open == "removed":
            self._write("]")
        elif self._open == "v3":
            self._write("}}" if self._group is not None else "}")
        else:
            self._write("}")
        self._open = self._group = None

    def member(self, key: str, value: Any) -> None:
        self._close()
        self._start_member(key)
        self._write(_ENCODE(value))

    def records(self, section: str, records: dict[str, dict[str, Any]]) -> None:
        top, _, group = section.partition("/")
        if self._open != top:
            self._close()
            self._start_member(top)
            self._write("{")
            self._open, self._entries, self._groups = top, 0, 0
        if group and self._group != group:
            if self._group is not None:
                self._write("}")
            self._write(("," if self._groups else "") + _ENCODE(group) + ":{")
            self._group, self._entries = group, 0
            self._groups += 1
        if not records:
            return
        pieces = (_ENCODE(filename) + ":" + _ENCODE(record) for filename, record in records.items())
        self._write(("," if self._entries else "") + ",".join(pieces))
        self._entries += len(records)

    def removed(self, filename: str) -> None:
        if self._open != "removed":
            self._close()
            self._start_member("removed")
            self._write("[")
            self._open, self._entries = "removed", 0
        self._write(("," if self._entries else "") + _ENCODE(filename))
        self._entries += 1

    def finish(self) -> None:
        self._close()
        for section in RECORD_SECTIONS:  # clients expect both, even when every record was left out
            if section not in self._written:
                self.member(section, {})
        self._write("}")


# The refusals of a filtering are kept beside the filtered repodata, as `<base>` + this (conda/filtered_channels.py):
# one JSON object, file name -> [status, reason].
REFUSALS_SUFFIX = ".refused.json"


class DamagedRefusals(ValueError):
    """A refusals file that is not what a filter run writes."""


def refusals_path(json_path: Path) -> Path:
    """Where the refusals of the filtered repodata at `json_path` are kept."""
    return json_path.with_name(json_path.name + REFUSALS_SUFFIX)


def read_refusals(path: Path) -> dict[str, tuple[int, str]]:
    """The refusals a filter run recorded beside its output (blocking); raises OSError when the file cannot be
    read and DamagedRefusals when it is not what a filter run writes: a JSON object, file name -> [status, reason]."""
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise DamagedRefusals(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DamagedRefusals("not a JSON object")
    refused: dict[str, tuple[int, str]] = {}
    for name, value in data.items():
        if not (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], int)
            and not isinstance(value[0], bool)
            and isinstance(value[1], str)
        ):
            raise DamagedRefusals(f"{name!r} is not refused with [status, reason]: {value!r}"[:200])
        refused[name] = (value[0], value[1])
    return refused


def refusals_of(path: Path) -> dict[str, tuple[int, str]] | None:
    """The refusals a filter run recorded beside its output (blocking); None when they cannot be had (missing or
    damaged): that says nothing of what is refused, and must never be taken for "nothing"."""
    try:
        return read_refusals(path)
    except (OSError, DamagedRefusals):
        return None


def write_refusals(store: CacheStore, path: Path, refused: dict[str, tuple[int, str]]) -> None:
    """Record the refusals whole or not at all (blocking): a reader never sees them cut short."""
    store.write_bytes_atomic(path, json.dumps(refused, ensure_ascii=False, separators=(",", ":")).encode())


def iter_kept_names(path: Path) -> Iterator[str]:
    """The file names of the records in a (filtered) repodata file, for tests and checks."""
    for item in iter_repodata_file(path):
        if isinstance(item, Record):
            yield item.filename
