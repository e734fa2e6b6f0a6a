"""Shards made while a sorted repodata is read: the shape every indexer writes, and a first build's fast way.

conda-index and rattler's indexer write repodata.json with its keys in order (`info`, `packages`,
`packages.conda`, `removed`) and each section's file names sorted; mirrors copy the file as it is. A package's
file names all start with `<name>-`, so its records are one stretch of each section, and once the last record
section has gone past every file name that starts with `<name>-`, the package's shard is complete but for
`removed`, which comes after the sections and names few packages. So the shard is made then, by a forked child,
while the rest of the file is still being read (or downloaded), instead of in a pass over buckets after the last
byte (shard_builder): on a slow link the shards are ready moments after it, and on a fast one the two halves of
the work run on two cores at once. A package that `removed` names after its shard was made has its shard made
again; the first one is left out of the pack's table.

The work is split so that the reader is the lighter share. The reader (the builder's process) has msgspec find the
records of a run without decoding them (repodata_runs' `raw_records`: each record's JSON text as a `msgspec.Raw`, a
fifth of a full decode), takes each package name from its file name (`<name>-<version>-<build>.<ext>`: what comes
before the last two dashes), checks the order and the names by file name only, and spills the JSON text of each
package's stretch of a section. The forked makers (shard_builder decides how many) read a complete package's
stretches back, decode them, check that every record's own "name" is the file name's, turn the digests into bytes
(as shard_buckets does), and pack, compress and hash the shard: the very bytes shard_builder makes from buckets
(tests/test_sorted_shards.py compares the two). The reader used to decode and pack the records itself and was what
the build waited for: on the bench's 110 MB repodata.json, two cores, it took 1.2-2.0 s of CPU and its one maker 0.7
s. Now it takes about 0.5 s, the two makers 1.2-1.5 s between them, and the build 1.0 s instead of 1.45 (the
.json.zst: 1.25 s instead of 1.95). With one maker it is no faster than before: that maker is then what the build
waits for. So it is the machines with more cores that gain: the old reader held the build to its own 1.2-2.0 s
however many makers ran, the new one lets them share all but a fifth of the work. On 2 cores shard_builder keeps one
maker (a second costs 10-13 MB of PSS, more than the memory budget has to spare, and since the reader shares the
tail, below, it is no faster).

The reader never waits for a maker: a maker's job pipe is small and written without blocking, and jobs that do not
fit wait in the reader's queue. Once it has read to the end, the reader makes the queued jobs itself, newest first,
while the makers take the oldest as their pipes empty (`_share_the_rest`). Packages close only in the last record
section, so most jobs are still queued then: on the bench's repodata, three quarters of them at 0.6 s, of a build
that took 1.3-1.5 s this way against 1.55-2.0 s with the reader waiting (side by side, a busy hour). It costs no
memory to speak of: the reader's heap from reading is what its decoding reuses (the builder's tree peaked at 52 MB
either way). A package `removed` names late is made again by whoever made it first, whose output keeps the last
shard of a name.

Anything but that shape (a file name out of order or with fewer than two dashes, a name with capitals, a `v3`
section, a malformed file) raises Declined in the reader; a record whose own name is another, a digest that
is not one, or a record that is not an object is found by its maker, which drops its pack and says so, and the
reader stops at its next job for that child (a broken pipe) or at the end; the other makers' packs go too, and
Declined is raised all the same: shard_builder then builds from buckets, which go by the record's own name. (Found
a third of the way into the bench's repodata, that took 2.2-2.4 s in all, against 2.05 s when the reader found it.)
Memory: the stretches' offsets (a few numbers per package name) in the reader; in a maker, one stretch decoded
(at most STRETCH_BYTES of text and a run) and the packed records of one package.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import msgpack
import msgspec

from pkgcache.conda.repodata_runs import Declined, RecordRun
from pkgcache.conda.repodata_stream import RECORD_SECTIONS, Info, Removed
from pkgcache.conda.shard_buckets import ENCODER, BucketCounts, name_from_file_name, read_runs
from pkgcache.conda.shard_output import OutputCounts, ShardOutput, failure_outcome, raise_failure
from pkgcache.conda.shard_packs import PackWriter, discard_packs

SECTION_NUMBERS = {section: number for number, section in enumerate(RECORD_SECTIONS)}
SPILL_NAME = "sorted.spill"
# A package's consecutive records go on growing one stretch up to this much text: a child decodes a stretch at a
# time, so this bounds its memory (with a run's worth, repodata_runs.RUN_BYTES, more at most).
STRETCH_BYTES = 1 << 20
JSON_ENCODER = msgspec.json.Encoder()
JSON_DECODER = msgspec.json.Decoder()
# A maker's job pipe holds this much (jobs are about 50 bytes: a few hundred of them). Jobs that do not fit wait in
# the reader, which makes them itself once it has read to the end; what sits in a pipe can only wait for its maker,
# so a small pipe leaves the two less to wait for each other at the end (and the kernel's default is 64 KiB).
JOB_PIPE_BYTES = 16 << 10
JOB_DECODER = msgspec.msgpack.Decoder()
# The first bytes of a stream kept so that a build declined early (a repodata that is not sorted shows it within
# its first records) starts over from them instead of waiting for the whole download.
REWIND_BYTES = 8 << 20


@dataclass
class SortedBuild:
    info: dict[str, Any]
    entries: list[bytes]  # `<name>\0<digest>`, in no order
    tables: list[Path]
    counts: OutputCounts


def build_sorted(
    repodata_path: Path,
    source: BinaryIO | None,
    work: Path,
    shards_dir: Path,
    packs_dir: Path,
    read: BucketCounts,
    makers: int,
) -> SortedBuild:
    """Make the shards of a sorted repodata as it is read (from `source`, else the file), with `makers` forked
    children making them; Declined when the repodata does not have that shape (see the module docstring)."""
    spill_path = work / SPILL_NAME
    spill = os.open(spill_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    children: list[_Maker] = []
    here = _MadeHere(spill_path, shards_dir, packs_dir)
    try:
        for _ in range(max(1, makers)):
            children.append(_fork_maker(spill_path, shards_dir, packs_dir, children))
        reader = _SortedReader(spill, children, here, read)
        reader.read(read_runs(repodata_path, source, raw_records=True))
        for child in children:
            child.finish()
        outcomes = [child.outcome() for child in children] + here.outcome()
    except BrokenPipeError:  # a child stopped taking jobs: it declined or failed, and says why
        here.discard()
        answers = [child.abandon() for child in children]
        _discard_finished_packs(answers)  # a child told its end before another's pipe broke has closed its pack
        _raise_declined(answers)
        for answer in answers:  # the first child's failure, with its errno: a full disk stays a 507
            if answer and "error" in answer:
                raise_failure(answer, "making shards")
        raise OSError("making shards: a child making shards died") from None
    except BaseException:
        here.discard()
        _discard_finished_packs([child.abandon() for child in children])
        raise
    finally:
        here.close()
        os.close(spill)
    if any("declined" in outcome or "error" in outcome for outcome in outcomes):
        _discard_finished_packs(outcomes)
        _raise_declined(outcomes)
    total, entries, tables = OutputCounts(), [], []
    for outcome in outcomes:
        raise_failure(outcome, "making shards")
        for key, value in outcome["counts"].items():
            setattr(total, key, getattr(total, key) + value)
        entries += outcome["entries"]
        tables += [Path(table) for table in outcome["tables"]]
    return SortedBuild(reader.info, entries, tables, total)


def _discard_finished_packs(outcomes: Sequence[dict[str, Any] | None]) -> None:
    """The packs of the children that finished, when the build fails or is declined all the same."""
    for outcome in outcomes:
        if outcome:
            discard_packs([Path(table) for table in outcome.get("tables", [])])


def _raise_declined(outcomes: Sequence[dict[str, Any] | None]) -> None:
    """Declined, as the first child that declined its package says, if one did."""
    for outcome in outcomes:
        if outcome and "declined" in outcome:
            raise Declined(f"a child making shards: {outcome['declined']}")


# --- the reader: records into the spill file, complete packages to the children ---


class _SortedReader:
    def __init__(self, spill: int, children: list[_Maker], here: _MadeHere, counts: BucketCounts) -> None:
        self.spill = spill
        self.children = children
        self.here = here
        self.counts = counts
        # Jobs of complete packages no maker's pipe had room for yet, oldest first.
        self.queue: deque[tuple[str, bytes]] = deque()
        self.made_by: dict[str, _Maker | None] = {}  # the maker a package's job went to (None: this process)
        self.info: dict[str, Any] = {}
        self.offset = 0  # of the spill file's end, buffer included
        self.buffer = bytearray()
        # name -> [section number, offset, length] of each stretch, a name being here once it is known;
        # once its shard is made, the same packed (a tenth of the memory: it is kept only for a late `removed`).
        self.stretches: dict[str, list[list[int]] | bytes] = {}
        self.removed: dict[str, list[str]] = {}
        self.pending: list[str] = []  # heap of "<name>-" of the packages whose shard is not made yet
        self.late: set[str] = set()  # closed, then named by `removed`
        self.sections_done: set[int] = set()
        self.section: int | None = None
        self.last_file = ""

    def read(self, items: Iterator[Info | RecordRun | Removed]) -> None:
        for item in items:
            if type(item) is RecordRun:
                self._run(item)
            elif type(item) is Removed:
                self._removed(item.filename)
            elif type(item) is Info:
                self.info = item.info
        self._write_spill()
        while self.pending:
            self._close(heapq.heappop(self.pending)[:-1])
        self._share_the_rest()
        for name in sorted(self.late):
            self._make_again(name)

    def _run(self, run: RecordRun) -> None:
        self._enter_section(run.section)
        self.last_file = self._spill_run(run.records, self.section, self.last_file)  # type: ignore[arg-type]
        self.counts.records += len(run.records)
        self._write_spill()
        if len(self.sections_done) == len(RECORD_SECTIONS) - 1:  # the last record section: packages end here
            self._close_passed(self.last_file)
        self._dispatch()

    def _spill_run(self, records: dict[str, msgspec.Raw], section: int, last: str) -> str:
        """Check a run's order and spill its records' JSON text, a package's stretch at a time; return the run's
        last file name. The builder's inner loop when the repodata is sorted (one turn per record), so written
        flat; the records themselves are decoded by the makers."""
        name, prefix, after = "", "\0", 1
        group: dict[str, msgspec.Raw] = {}
        for filename, text in records.items():
            if filename <= last:
                raise Declined(f"{filename!r} comes after {last!r}")
            last = filename
            # The package's next file if it is `<name>-` and one more dash (what _name_in would say, faster).
            if not (filename.startswith(prefix) and filename.count("-", after) == 1):
                if group:
                    self._add_group(section, name, group)
                name, group = _name_in(filename), {}
                prefix, after = f"{name}-", len(name) + 1
            group[filename] = text
        if group:
            self._add_group(section, name, group)
        return last

    def _enter_section(self, section: str) -> None:
        number = SECTION_NUMBERS.get(section)
        if number is None:
            raise Declined(f"a {section!r} section")
        if number == self.section:
            return
        if number in self.sections_done:
            raise Declined(f"{section!r} twice")
        if self.section is not None:
            self.sections_done.add(self.section)
        self.section, self.last_file = number, ""

    def _add_group(self, section: int, name: str, group: dict[str, msgspec.Raw]) -> None:
        """One package's consecutive records of a section, into the spill as the members of a JSON object
        (`"<file name>":{...},...`): a stretch is decoded by a child as `{` + its text + `}`."""
        body = memoryview(JSON_ENCODER.encode(group))[1:-1]
        stretches = self._known(name)
        if isinstance(stretches, bytes):
            raise Declined(f"records of {name!r} after its shard was made")
        last = stretches[-1] if stretches else None
        if last is not None and last[0] == section and last[1] + last[2] == self.offset and last[2] < STRETCH_BYTES:
            self.buffer += b","
            last[2] += 1 + len(body)
            self.offset += 1
        else:
            stretches.append([section, self.offset, len(body)])
        self.buffer += body
        self.offset += len(body)

    def _known(self, name: str) -> list[list[int]] | bytes:
        stretches = self.stretches.get(name)
        if stretches is None:
            stretches = self.stretches[name] = []
            heapq.heappush(self.pending, f"{name}-")
        return stretches

    def _removed(self, filename: str) -> None:
        name = name_from_file_name(filename)
        if name is None:
            self.counts.removed_skipped += 1
            return
        self.counts.removed += 1
        self.removed.setdefault(name, []).append(filename)
        if type(self._known(name)) is bytes:
            self.late.add(name)

    def _close_passed(self, last_file: str) -> None:
        """Make the shards of the packages whose file names all sort before `last_file` (they are complete)."""
        pending = self.pending
        while pending and pending[0] < last_file and not last_file.startswith(pending[0]):
            self._close(heapq.heappop(pending)[:-1])

    def _close(self, name: str) -> None:
        self.stretches[name] = ENCODER.encode(self.stretches[name])
        self.queue.append((name, self._job(name)))

    def _job(self, name: str) -> bytes:
        stretches = msgspec.Raw(cast(bytes, self.stretches[name]))  # packed: its shard has been made once
        return ENCODER.encode((name, stretches, self.removed.get(name, [])))

    def _dispatch(self) -> None:
        """Hand queued jobs to the makers whose pipes have room; the rest wait (reading never waits for a maker)."""
        queue = self.queue
        for child in self.children:
            while queue and child.take(queue[0][1]):
                self.made_by[queue.popleft()[0]] = child

    def _share_the_rest(self) -> None:
        """Read to the end: make the jobs still queued here, newest first, while the makers take the oldest as their
        pipes empty. The one maker of two cores is what a build waits for (it decodes every record; reading costs
        a third of that), so the reader, idle otherwise, takes its share of the tail."""
        while self.queue:
            self._dispatch()
            if self.queue:
                name, job = self.queue.pop()
                self.here.make(name, job)
                self.made_by[name] = None

    def _make_again(self, name: str) -> None:
        """A package `removed` named after its shard was made: made again by the same maker, whose output keeps
        the last shard of a name (two makers would each report one)."""
        maker = self.made_by[name]
        if maker is None:
            self.here.make(name, self._job(name))
        else:
            maker.give(self._job(name))

    def _write_spill(self) -> None:
        view = memoryview(self.buffer)
        while view:
            view = view[os.write(self.spill, view) :]
        view.release()
        self.buffer.clear()


def _name_in(filename: str) -> str:
    """The package name in `<name>-<version>-<build>.<ext>`: what comes before the last two dashes. Only the
    reader's guess, to group the records by: each maker checks it against the records' own names."""
    parts = filename.rsplit("-", 2)
    name = parts[0]
    if len(parts) != 3 or not name or "\0" in name or name != name.lower():
        raise Declined(f"{filename!r}: no package name, or one with capitals")
    return name


def _map_header_length(count: int) -> int:
    return 1 if count < 16 else 3 if count < 1 << 16 else 5


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x80 | count,))
    if count < 1 << 16:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


# --- the children: stretches into shards ---


class _Maker:
    """A forked child making shards from jobs (`<4-byte length><msgpack [name, stretches, removed]>`); a zero
    length ends them, and its outcome comes back on `results`. Jobs ending without it: the child drops its pack.

    Jobs are written to its pipe without blocking (`take`): one the pipe has no room for stays the reader's.
    """

    def __init__(self, pid: int, jobs: int, results: int) -> None:
        self.pid = pid
        self.jobs = jobs  # the pipe's end, non-blocking; -1 once closed
        self.results = results
        self.unsent = bytearray()  # the rest of a job the pipe took only part of

    def take(self, job: bytes) -> bool:
        """Give the child `job` if its pipe has room; False, and the job not taken, when it has none."""
        if not self._write_unsent():
            return False
        self.unsent += len(job).to_bytes(4, "big")
        self.unsent += job
        self._write_unsent()
        return True

    def give(self, job: bytes) -> None:
        """Give the child `job`, waiting for room if need be."""
        self.unsent += len(job).to_bytes(4, "big")
        self.unsent += job
        self._write_all()

    def _write_unsent(self) -> bool:
        """Write what the pipe takes of the unsent bytes; True once none are left."""
        while self.unsent:
            try:
                written = os.write(self.jobs, self.unsent)
            except BlockingIOError:
                return False
            del self.unsent[:written]
        return True

    def _write_all(self) -> None:
        os.set_blocking(self.jobs, True)
        try:
            self._write_unsent()
        finally:
            os.set_blocking(self.jobs, False)

    def finish(self) -> None:
        self.unsent += b"\0\0\0\0"
        self._write_all()
        self._close_jobs()

    def _close_jobs(self) -> None:
        if self.jobs >= 0:
            with contextlib.suppress(OSError):
                os.close(self.jobs)
            self.jobs = -1

    def outcome(self) -> dict[str, Any]:
        answer = self._answer()
        return msgpack.unpackb(answer) if answer else {"error": "a child making shards died"}  # type: ignore[no-any-return]

    def abandon(self) -> dict[str, Any] | None:
        """Stop the child (its jobs end without their end: it drops its pack); what it said, if anything (an error,
        or that it declined a package)."""
        self._close_jobs()
        answer = self._answer()
        return msgpack.unpackb(answer) if answer else None  # type: ignore[no-any-return]

    def _answer(self) -> bytes:
        """What the child wrote back (once: b"" after that), and its exit waited for."""
        if self.results < 0:
            return b""
        answer = b""
        with contextlib.suppress(OSError), os.fdopen(self.results, "rb") as pipe:
            answer = pipe.read()
        self.results = -1
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        return answer


def _fork_maker(spill_path: Path, shards_dir: Path, packs_dir: Path, earlier: list[_Maker]) -> _Maker:
    jobs_in, jobs_out = os.pipe()
    results_in, results_out = os.pipe()
    with contextlib.suppress(OSError):  # Linux only; elsewhere the default size
        fcntl.fcntl(jobs_out, getattr(fcntl, "F_SETPIPE_SZ", 1031), JOB_PIPE_BYTES)
    os.set_blocking(jobs_out, False)  # the reader's end only: the child's reads still wait
    pid = os.fork()
    if pid:
        os.close(jobs_in)
        os.close(results_out)
        return _Maker(pid, jobs_out, results_in)
    status = 1
    try:
        os.close(jobs_out)
        os.close(results_in)
        for other in earlier:  # their job pipes must end when the reader closes them, not when this child does
            os.close(other.jobs)
            os.close(other.results)
        outcome = _make_shards(jobs_in, spill_path, shards_dir, packs_dir)
        status = 0 if outcome is not None else 1
    except BaseException as exc:
        outcome = failure_outcome(exc)
    if outcome is not None:
        with contextlib.suppress(OSError), os.fdopen(results_out, "wb") as pipe:
            pipe.write(msgpack.packb(outcome))
    os._exit(status)


def _make_shards(jobs_fd: int, spill_path: Path, shards_dir: Path, packs_dir: Path) -> dict[str, Any] | None:
    """The child's work; None when the jobs ended without their end (the build was given up)."""
    spill = os.open(spill_path, os.O_RDONLY)
    try:
        with os.fdopen(jobs_fd, "rb") as jobs, PackWriter(packs_dir) as pack:
            output = ShardOutput(shards_dir, pack)
            while True:
                header = jobs.read(4)
                size = int.from_bytes(header, "big")
                if len(header) == 4 and size == 0:
                    break
                job = jobs.read(size) if len(header) == 4 else b""
                if len(job) != size or not job:
                    pack.discard()
                    return None
                name, stretches, removed = JOB_DECODER.decode(job)
                try:
                    shard = _shard_of(spill, name, stretches, removed)
                except Declined as exc:  # the reader stops at its next job for this child: a broken pipe
                    pack.discard()
                    return {"declined": str(exc)}
                output.add(name, shard)
            table = pack.close()
    finally:
        os.close(spill)
    return {"entries": output.entries(), "tables": [str(table)] if table else [], "counts": output.counts.__dict__}


class _MadeHere:
    """The reader's own output, for the jobs it makes itself once it has read to the end (`_share_the_rest`):
    opened at its first job, reported as one more maker's outcome."""

    def __init__(self, spill_path: Path, shards_dir: Path, packs_dir: Path) -> None:
        self.spill_path = spill_path
        self.shards_dir = shards_dir
        self.packs_dir = packs_dir
        self.spill = -1
        self.pack: PackWriter | None = None
        self.output: ShardOutput | None = None

    def make(self, name: str, job: bytes) -> None:
        """Declined as a maker would decline (the build then drops every pack and goes the bucket way)."""
        if self.output is None:
            self.spill = os.open(self.spill_path, os.O_RDONLY)
            self.pack = PackWriter(self.packs_dir)
            self.output = ShardOutput(self.shards_dir, self.pack)
        named, stretches, removed = JOB_DECODER.decode(job)
        self.output.add(name, _shard_of(self.spill, named, stretches, removed))

    def outcome(self) -> list[dict[str, Any]]:
        """As a maker reports it (none if nothing was made here)."""
        if self.output is None or self.pack is None:
            return []
        table = self.pack.close()
        self.pack = None
        return [
            {
                "entries": self.output.entries(),
                "tables": [str(table)] if table else [],
                "counts": self.output.counts.__dict__,
            }
        ]

    def discard(self) -> None:
        if self.pack is not None:
            self.pack.discard()
            self.pack = None

    def close(self) -> None:
        if self.spill >= 0:
            os.close(self.spill)
            self.spill = -1


def _shard_of(spill: int, name: str, stretches: list[list[int]], removed: list[str]) -> bytes:
    """The shard's msgpack, as shard_builder's `_shard_bytes` writes it: both sections, file names in order."""
    bodies: list[list[bytes | memoryview]] = [[] for _ in RECORD_SECTIONS]
    counts = [0] * len(RECORD_SECTIONS)
    for section, offset, length in stretches:
        text = os.pread(spill, length, offset)
        if len(text) != length:
            raise OSError(f"the spill file ends at {offset + len(text)}, before {offset + length}")
        records = _checked_records(name, b"{%b}" % text)
        try:
            packed = ENCODER.encode(records)
        except (OverflowError, ValueError, TypeError) as exc:  # a number msgpack has no room for, say
            raise Declined(str(exc)) from None
        bodies[section].append(memoryview(packed)[_map_header_length(len(records)) :])
        counts[section] += len(records)
    shard: dict[str, Any] = {
        section: msgspec.Raw(_map_header(counts[number]) + b"".join(bodies[number]))
        for number, section in enumerate(RECORD_SECTIONS)
    }
    shard["removed"] = sorted(set(removed))
    return ENCODER.encode(shard)


def _checked_records(name: str, text: bytes) -> dict[str, Any]:
    """A stretch's records decoded, each checked to be `name`'s, digests as bytes (as shard_buckets does);
    Declined on anything else (shard_builder then builds from buckets, which go by the record's own name)."""
    try:
        records: dict[str, Any] = JSON_DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise Declined(str(exc)) from None
    fromhex = bytes.fromhex
    for filename, record in records.items():
        if type(record) is not dict or record.get("name") != name:
            raise Declined(f"{filename!r} is not a record named {name!r}")
        sha256, md5 = record.get("sha256"), record.get("md5")
        try:
            if sha256:  # absent, null or empty: kept as it is (shard_buckets does the same)
                if len(digest := fromhex(sha256)) != 32:
                    raise ValueError("sha256 is not a hex digest")
                record["sha256"] = digest
            if md5:
                if len(digest := fromhex(md5)) != 16:
                    raise ValueError("md5 is not a hex digest")
                record["md5"] = digest
        except (TypeError, ValueError) as exc:
            raise Declined(f"{filename}: {exc}") from None
    return records


# --- a stream that can start over ---


class Rewindable:
    """A stream whose first REWIND_BYTES are kept, so that it can be read from the start once more.

    Reads may come from two threads (a read-ahead thread of the first reading may still be in one): a lock keeps
    the kept bytes in the order they were read.
    """

    def __init__(self, stream: BinaryIO, keep: int = REWIND_BYTES) -> None:
        # One read of the pipe at a time, not as many as a whole `size` takes: a signal (SIGTERM, the service
        # stopping the build) that comes during a read that then succeeds is only acted on between two reads.
        self._read = getattr(stream, "read1", stream.read)
        self._keep = keep
        self._kept: bytearray | None = bytearray()
        self._replay: memoryview | None = None
        self._lock = threading.Lock()

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            if self._replay:
                chunk = bytes(self._replay[: size if size >= 0 else len(self._replay)])
                self._replay = self._replay[len(chunk) :]
                return chunk
            chunk = self._read(size)
            if self._kept is not None and self._replay is None:
                if len(self._kept) + len(chunk) <= self._keep:
                    self._kept += chunk
                else:
                    self._kept = None
            return chunk

    def rewind(self) -> bool:
        """Read from the start again; False when more than the kept bytes were read already (or it was done)."""
        with self._lock:
            if self._kept is None or self._replay is not None:
                return False
            self._replay = memoryview(bytes(self._kept))
            self._kept = None
            return True
