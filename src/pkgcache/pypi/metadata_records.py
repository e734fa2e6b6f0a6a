"""What pkgcache knows of the core metadata it serves, per project: `pypi/simple/<project>/metadata.json`.

For each distribution whose `.metadata` pkgcache has made or fetched: the sha256 of the bytes it serves (what the
pages advertise), the sha256 of the distribution those bytes belong to (a page listing other bytes under the same
name makes the record stale), how they were obtained, and whether they were checked against the distribution
itself. For a wheel whose verified file yields no metadata pkgcache can serve (an archive it refuses): a record
marked unavailable, so that the pages stop advertising metadata for it and clients read the wheel themselves.
Read through a small memory that looks at the file again about once a second, so every worker renders the same
pages.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pkgcache.storage.store import READER_RECHECK_SECONDS, CacheStore, Stamp, file_stamp

MAX_PROJECTS_REMEMBERED = 20_000
# A metadata.json up to this size (some 300 records) is read on the event loop.
INLINE_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class MetadataRecord:
    sha256: str  # of the .metadata bytes served
    dist_sha256: str | None  # of the distribution they were read from (as its page gives it)
    source: str  # "wheel" (read from the cached wheel), "upstream" (its .metadata), "ranges", "sdist"
    verified: bool  # read from the verified distribution itself, or checked against it since
    # False: the verified distribution yields no metadata pkgcache can serve (sha256 is then ""), which the pages
    # no longer advertise. Written only when False, so versions before it still read every other record.
    available: bool = True


def _to_json(record: MetadataRecord) -> dict[str, object]:
    fields = asdict(record)
    if record.available:
        del fields["available"]
    return fields


@dataclass
class _Known:
    records: dict[str, MetadataRecord]
    stamp: Stamp | None
    checked_at: float
    version: int


class MetadataRecords:
    """The records of every project, by distribution file name."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._known: collections.OrderedDict[str, _Known] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._versions = 0

    def path(self, project: str) -> Path:
        return self.store.path_for("pypi", "simple", project, "metadata.json")

    def peek(self, project: str, now: float | None = None) -> tuple[dict[str, MetadataRecord], int] | None:
        """The records in memory and their version, if looked at on disk within about a second; else None."""
        known = self._known.get(project)
        if known is None or (time.time() if now is None else now) - known.checked_at > READER_RECHECK_SECONDS:
            return None
        return known.records, known.version

    async def get(self, project: str) -> tuple[dict[str, MetadataRecord], int]:
        """The records of a project (read again from disk when they may have changed) and their version."""
        peeked = self.peek(project)
        if peeked is not None:
            return peeked
        # A stat, on the event loop as the hit path's are; the file is read only when it changed, and on the loop
        # too when it is small (as PageStore.load reads a small page.json: cheaper than a hop to a thread).
        stamp = file_stamp(self.path(project))
        known = self._known.get(project)
        if known is not None and known.stamp == stamp:
            known.checked_at = time.time()
            return known.records, known.version
        if stamp is None or stamp[1] <= INLINE_READ_BYTES:
            records = self._read(project)
        else:
            records = await asyncio.to_thread(self._read, project)
        return self._remember(project, records, stamp).records, self._known[project].version

    async def add(self, project: str, filename: str, record: MetadataRecord) -> None:
        """Record (or replace) what is known of one distribution's metadata."""
        async with self._lock(project):
            records, _ = await self.get(project)
            updated = {**records, filename: record}
            path = self.path(project)
            content = {k: _to_json(v) for k, v in updated.items()}
            # Not durable: records lost to a power cut are made again (see CacheStore.write_bytes_atomic).
            await asyncio.to_thread(self.store.write_json_atomic, path, content, durable=False)
            self._remember(project, updated, file_stamp(path))

    def forget(self, project: str) -> None:
        self._known.pop(project, None)

    def forget_all(self) -> None:
        self._known.clear()

    def _read(self, project: str) -> dict[str, MetadataRecord]:
        data = self.store.read_json(self.path(project))
        if not isinstance(data, dict):
            return {}
        records: dict[str, MetadataRecord] = {}
        for filename, fields in data.items():
            try:
                records[filename] = MetadataRecord(**fields)
            except TypeError:
                continue  # written by another version: made again when asked for
        return records

    def _remember(self, project: str, records: dict[str, MetadataRecord], stamp: Stamp | None) -> _Known:
        self._versions += 1
        known = self._known[project] = _Known(records, stamp, time.time(), self._versions)
        self._known.move_to_end(project)
        while len(self._known) > MAX_PROJECTS_REMEMBERED:
            self._known.popitem(last=False)
        return known

    def _lock(self, project: str) -> asyncio.Lock:
        lock = self._locks.get(project)
        if lock is None:
            lock = self._locks[project] = asyncio.Lock()
        return lock
