"""When pkgcache first saw a file whose index gives no release time (no PEP 700 upload-time, no conda timestamp).

Kept per project beside its page (`pypi/simple/<project>/first-seen.json`) and per conda subdir, only for files that
need it, and written only when a new one appears: a mirror that gives upload times costs nothing here.

The files listed the first time pkgcache sees a project (or subdir) were there before it looked, so their age is
not known: the policy's `unknown_age` decides. With "allow" they are served; with "refuse" (the default) their
first sighting counts, and they are served once `min_release_age` has passed since. A file that appears later was
released at most that long before pkgcache saw it, so its first sighting bounds its age from above and pkgcache
never takes it for older than it can be.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pkgcache.policy.common import from_epoch
from pkgcache.storage.store import CacheStore

log = logging.getLogger(__name__)

FILE_NAME = "first-seen.json"


@dataclass
class FirstSeen:
    """First sightings of files: `since` is when the record began (files seen then were already there)."""

    since: float
    files: dict[str, float] = field(default_factory=dict)

    def lookup(self, *, count_first_sight: bool) -> Callable[[str], datetime | None]:
        """A function giving a file's first sighting, or None when its age is not known (or it was never seen)."""
        files, since = self.files, self.since

        def first_seen(name: str) -> datetime | None:
            seen = files.get(name)
            if seen is None or (seen <= since and not count_first_sight):
                return None
            return from_epoch(seen)

        return first_seen

    def missing(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if name not in self.files]


# The beginning of a record that knows no sighting from before: what replaces a damaged one. Every file then
# counts from its next sighting, as a young one: with `unknown_age = "allow"`, taking them all for "already there"
# would serve files known to be young (the default, "refuse", counts first sights either way).
KNOWS_NOTHING = 0.0


def read_first_seen(store: CacheStore, path: Path) -> FirstSeen | None:
    """The record in `path`; None when there is none; one that knows nothing (KNOWS_NOTHING) when it is damaged."""
    if not path.exists():
        return None
    record = parse_first_seen(store.read_json(path))
    if record is None:
        log.error("%s cannot be read: its files count as first seen from now", path)
        return FirstSeen(since=KNOWS_NOTHING)
    return record


def parse_first_seen(data: object) -> FirstSeen | None:
    """A record from its JSON; None when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    try:
        return FirstSeen(float(data["since"]), {str(k): float(v) for k, v in data["files"].items()})
    except (KeyError, TypeError, ValueError):
        return None


def note_first_seen(
    store: CacheStore, path: Path, names: Iterable[str], now: float | None = None
) -> tuple[FirstSeen, bool]:
    """The record with every name in `names` in it (new names get `now`, written when there are any), and whether
    it is the one on disk (blocking).

    A worker that only reads the cache gives new names `now` in memory only, and says so (False): the writer
    records them, and the reader should look again soon.
    """
    moment = time.time() if now is None else now
    record = read_first_seen(store, path) or FirstSeen(since=moment)
    new = record.missing(names)
    if not new:
        return record, True
    for name in new:
        record.files[name] = moment
    if not store.writable:
        return record, False
    store.write_json_atomic(path, {"since": record.since, "files": record.files})
    return record, True
