"""When pkgcache first saw a file whose index gives no release time (no PEP 700 upload-time, no conda timestamp), and
the release times an index gave before.

Kept per project beside its page (`pypi/simple/<project>/first-seen.json`) and per conda subdir, written only when
something new is learnt: a file not seen before, or an earlier release time than the one kept.

The files listed the first time pkgcache sees a project (or subdir) were there before it looked, so their age is
not known: the policy's `unknown_age` decides. With "allow" they are served; with "refuse" (the default) their
first sighting counts, and they are served once `min_release_age` has passed since. A file that appears later was
released at most that long before pkgcache saw it, so its first sighting bounds its age from above and pkgcache
never takes it for older than it can be.

A release time once given is not forgotten: on the PyPI side, where one mirror's pages give upload times (JSON) and
another's do not (HTML), a page without them would otherwise make every file new again when its source changes,
and hold back releases known to be old. So a project's record keeps the upload times its pages gave (`released`,
each the earliest given, and never later than when it was given), and a file's age is that time when its page
gives none. The conda side keeps sightings only: a subdir's records carry their timestamps in every copy of its
repodata, and keeping the timestamps of hundreds of thousands of records would rewrite a big file at each change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pkgcache.policy.common import from_epoch
from pkgcache.storage.store import CacheStore

log = logging.getLogger(__name__)

FILE_NAME = "first-seen.json"


@dataclass
class FirstSeen:
    """First sightings of files: `since` is when the record began (files seen then were already there); `released`,
    the release times pages gave for files (the earliest one, no later than when it was given)."""

    since: float
    files: dict[str, float] = field(default_factory=dict)
    released: dict[str, float] = field(default_factory=dict)

    def lookup(self, *, count_first_sight: bool) -> Callable[[str], datetime | None]:
        """A function giving the earliest moment a file is known to have existed: its release time once given,
        or its first sighting; None when its age is not known (or it was never seen)."""
        files, since, released = self.files, self.since, self.released

        def first_seen(name: str) -> datetime | None:
            seen = files.get(name)
            if seen is not None and seen <= since and not count_first_sight:
                seen = None
            given = released.get(name)
            known = [moment for moment in (seen, given) if moment is not None]
            return from_epoch(min(known)) if known else None

        return first_seen

    def missing(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if name not in self.files]

    def learn_released(self, times: Mapping[str, float], now: float) -> bool:
        """Keeps release times given for files (none later than `now`); whether anything was learnt."""
        learnt = False
        released = self.released
        for name, moment in times.items():
            moment = min(moment, now)
            if moment < released.get(name, float("inf")):
                released[name] = moment
                learnt = True
        return learnt

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"since": self.since, "files": self.files}
        if self.released:
            data["released"] = self.released
        return data


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
    released = data.get("released", {})
    if not isinstance(released, dict):
        return None
    try:
        files = {str(k): float(v) for k, v in data["files"].items()}
        return FirstSeen(float(data["since"]), files, {str(k): float(v) for k, v in released.items()})
    except (KeyError, TypeError, ValueError):
        return None


def note_first_seen(
    store: CacheStore,
    path: Path,
    names: Iterable[str],
    now: float | None = None,
    released: Mapping[str, float] | None = None,
) -> tuple[FirstSeen, bool]:
    """The record with every name in `names` in it (new names get `now`) and the release times in `released` kept
    (file name to epoch seconds), written when either taught it something; and whether it is the one on disk as
    far as the sightings go (blocking).

    A worker that only reads the cache gives new names `now` in memory only, and says so (False): the writer
    records them, and the reader should look again soon. (Release times it learns are kept in memory only, and
    not waited for: the page gives them, and the writer keeps them when it reads the page.)
    """
    moment = time.time() if now is None else now
    record = read_first_seen(store, path) or FirstSeen(since=moment)
    new = record.missing(names)
    for name in new:
        record.files[name] = moment
    learnt = record.learn_released(released or {}, moment)
    if not new and not learnt:
        return record, True
    if not store.writable:
        return record, not new
    store.write_json_atomic(path, record.to_json())
    return record, True
