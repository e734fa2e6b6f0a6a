"""Whether a cached package is still the file its channel's index, as served now, lists under its name.

A channel may replace a package under the same file name (a rebuild, a fix): its repodata and shards then give
another sha256 and size. A cached package is served as a hit only when what was recorded of it when it was checked
(storage/file_records.py: its size, the digest its bytes were checked against) agrees with the record the cached
index gives now; otherwise it is fetched again (`CachedChannels.package`) or handed to the writing worker (a
replica). A client's `x-expected-sha256` (rattler sends its index's sha256 with every package request) decides
when it is sent: it tells which file the index that client was served lists (a shard index made here may lag the
cached repodata for a moment), and a file recorded with another sha256 is not what that client will accept.

The record is looked up only in what is cached (the shard, else the repodata the package's download is checked
against: `CachedChannels._find_record`), once per version of those index files: the answers are kept per subdir
until one of them changes. A repodata is scanned once per version for every package cached in its subdir
(`records_of`), not once per package; a hit then costs a stat, a getxattr, the sidecars' memory and a dict lookup.
A hit waits for that scan at most HIT_CHECK_WAIT: a big repodata's (seconds for conda-forge's, on the first hit
after each change) goes on while hits are served as they are, as before this check, and decides those after it.

A package its index does not list (a channel took it out of `packages` and named it under `removed`, as
conda-forge marks a package broken, or dropped it) has nothing to be checked against but the client's
`x-expected-sha256`: it is fetched only for a client that sends one, and checked against that
(`CachedChannels.package`). Once cached it is served like any package its index no longer lists: as it is (its
bytes were checked when they came; the channel still serves that file at that URL). A policy in force judges such
a package by what its file name says (`unlisted_gate`: the filter layer gives the judge, the layer that finds no
record calls it, on a hit as on a miss), so a package with no record is never let through unjudged.

In the writing worker the scan of each new repodata version is made ahead (`scan_ahead`, when the version is in
place: conda/passes_ahead.py), in the same pass as the repodata's suspects (records.find_records), so the first
hit finds it done; a package miss leaves the record it found (`note`), so the first hit on the file it fetched
needs no scan either.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import zstandard

from pkgcache.conda.channels import SHARD_INDEX
from pkgcache.conda.index_files import PROVISIONAL
from pkgcache.conda.passes_ahead import PassesAhead, PassStopped
from pkgcache.conda.records import expected_of, find_records
from pkgcache.conda.shards import record_in_shard, shard_for
from pkgcache.storage.file_records import Recorded, agrees
from pkgcache.storage.sidecars import PARENT_NODE, FileMeta

log = logging.getLogger(__name__)

PACKAGE_SUFFIXES = (".conda", ".tar.bz2")
# The index files a package's record is looked up in, in the order CachedChannels._find_record uses them.
RECORD_SOURCES = (SHARD_INDEX, "repodata.json", "repodata.json.zst")
EXPECTED_SHA256_HEADER = "x-expected-sha256"
# How long a hit waits for its subdir's scan (once per version of its repodata): a small repodata's scan ends
# within it; a big one's (seconds for conda-forge's) goes on while hits are served as they are, as before the
# check, and decides the requests after it.
HIT_CHECK_WAIT = 0.5
# Subdirs whose answers are kept (each a dict of the packages asked about or cached there).
SUBDIRS_KEPT = 256
# Answers of cached shards kept for the parent's check (whether a shard holds a package).
SHARD_ANSWERS_KEPT = 100_000

# A package's record as far as a cached file is compared with it: its hashes and size.
Listed = tuple[dict[str, str], int | None]
MetaFor = Callable[[Path], Awaitable[FileMeta | None]]

_client_expects: contextvars.ContextVar[str | None] = contextvars.ContextVar("pkgcache_expected_sha256", default=None)
# What judges a package its index does not list, while a policy is in force: the refusal it would get (the filter
# layer sets it around each package request: conda/filtered_channels.py).
_unlisted_gate: contextvars.ContextVar[Callable[[], Exception | None] | None] = contextvars.ContextVar(
    "pkgcache_unlisted_gate", default=None
)


@contextlib.contextmanager
def client_expects(sha256: str | None) -> Iterator[None]:
    """While in `with`: the sha256 this request's client expects of the package it asks for (its header)."""
    value = sha256.strip().lower() if sha256 else None
    token = _client_expects.set(value if value and len(value) == 64 else None)
    try:
        yield
    finally:
        _client_expects.reset(token)


def client_expectation() -> str | None:
    """The sha256 this request's client expects of the package it asks for (a well-formed header), or None."""
    return _client_expects.get()


@contextlib.contextmanager
def unlisted_gate(judge: Callable[[], Exception | None] | None) -> Iterator[None]:
    """While in `with`: what judges this request's package should its index not list it (None: nothing, no policy
    is in force). The judge gives the refusal to raise, or None; it reads the file name only, so it is cheap."""
    token = _unlisted_gate.set(judge)
    try:
        yield
    finally:
        _unlisted_gate.reset(token)


def unlisted_refusal() -> Exception | None:
    """The refusal this request's package gets if its index does not list it; None when a policy in force would
    let it through, or none is in force. A caller asks the index only when this is not None (a hit then costs
    nothing more for a package the policy lets through either way)."""
    judge = _unlisted_gate.get()
    return None if judge is None else judge()


def client_disagrees(recorded: Recorded) -> bool:
    """Whether this request's client expects another sha256 than the one the cached file was checked against."""
    expected, digest = _client_expects.get(), recorded.digest
    return expected is not None and digest is not None and digest[0] == "sha256" and digest[1] != expected


class _NotYetKnown(Exception):
    """The subdir's scan for this version of its repodata has not ended within HIT_CHECK_WAIT."""


class ListingUnknown(Exception):
    """The cached index cannot tell now whether it lists the package (none cached, its scan not ended, a read
    error, or the file cached after the scan began)."""


class ListedRecords:
    """The record each cached package has in its subdir's cached index, kept per version of that index."""

    def __init__(self, meta_for: MetaFor, passes: PassesAhead | None = None) -> None:
        self.meta_for = meta_for
        self.passes = passes  # where scans made ahead run (the writing worker's), if any
        # subdir folder -> (version of its index files, {package file name: its record, or None if not listed})
        self._known: dict[Path, tuple[tuple[object, ...], dict[str, Listed | None]]] = {}
        self._scans: dict[tuple[Path, tuple[object, ...]], asyncio.Future[dict[str, Listed | None]]] = {}
        self._shard_answers: dict[tuple[str, str], bool] = {}  # (shard file, package file) -> whether it holds it

    async def is_as_listed(self, path: Path, recorded: Recorded) -> bool:
        """Whether the cached package at `path` is the file its subdir's cached index lists under its name, and
        the one this request's client expects (its header, when it sent one, decides). True when the index cannot
        tell: it does not list the package, or is not cached (the package is then served as it is, as before)."""
        expected, digest = _client_expects.get(), recorded.digest
        if expected is not None and digest is not None and digest[0] == "sha256":
            # The index this client was served (a shard index made here may lag the repodata) says which file it
            # takes: that one is the hit, another one is not.
            if digest[1] == expected:
                return True
            log.info("%s: the client expects another sha256 than the cached file's: fetched again", path.name)
            return False
        listed = await self.listed(path)
        if listed is None or agrees(recorded, *listed):
            return True
        log.info("%s is not the file its cached index lists now (replaced upstream): fetched again", path.name)
        return False

    async def listed(self, path: Path) -> Listed | None:
        """The record the subdir's cached index gives the package at `path`; None when it lists none or cannot
        tell within HIT_CHECK_WAIT (the package is then served as it is)."""
        try:
            return await self.listing(path)
        except ListingUnknown:
            return None

    async def lists(self, path: Path) -> bool:
        """Whether the subdir's cached index lists the package at `path` at all, waited for (the subdir's scan, or
        a lookup of its own when the scan cannot tell). No cached index lists nothing: a policy then judges the
        package as one with no record (it never lets through a package it could not judge)."""
        try:
            return await self.listing(path, wait=None) is not None
        except ListingUnknown:
            pass
        repodata = await self._repodata(path.parent)
        if repodata is None:
            return False
        try:
            return bool(await asyncio.to_thread(records_of, repodata, [path.name]))
        except (OSError, ValueError, zstandard.ZstdError, EOFError) as exc:
            log.info("could not look %s up in its cached index (%s): judged as not listed", path.name, exc)
            return False

    async def listing(self, path: Path, *, wait: float | None = HIT_CHECK_WAIT) -> Listed | None:
        """The record the subdir's cached index gives the package at `path`, None when it lists none; waits for
        the subdir's scan at most `wait` seconds (None: until it ends). ListingUnknown when it cannot tell."""
        folder, filename = path.parent, path.name
        version = await self._version(folder)
        known = self._known.get(folder)
        if known is not None and known[0] == version and filename in known[1]:
            return known[1][filename]
        answers = self._answers_for(folder, version)
        try:
            found = await self._look_up(folder, filename, version, wait)
        except _NotYetKnown:
            raise ListingUnknown(f"the scan of {folder} has not ended") from None
        except (OSError, ValueError, zstandard.ZstdError, EOFError) as exc:
            log.info("could not look %s up in its cached index (%s): served as it is", filename, exc)
            raise ListingUnknown(str(exc)) from None
        answers.update(found)
        if filename not in answers:
            # A file cached after the scan began is not in it: it was checked against a version at least as new
            # when it came, and is served as it is until the next version's scan.
            raise ListingUnknown(f"{filename} was cached after the scan of {folder} began")
        return answers[filename]

    def _answers_for(self, folder: Path, version: tuple[object, ...]) -> dict[str, Listed | None]:
        """The answers kept for this version of the subdir's index files (none yet for a new one)."""
        known = self._known.get(folder)
        if known is None or known[0] != version:
            known = (version, {})
            self._known.pop(folder, None)
            self._known[folder] = known
            while len(self._known) > SUBDIRS_KEPT:
                self._known.pop(next(iter(self._known)))
        return known[1]

    async def version_of(self, folder: Path) -> tuple[object, ...]:
        """The version of the subdir's index files now (for `note`)."""
        return await self._version(folder)

    async def note(self, path: Path, version: tuple[object, ...], record: dict[str, Any]) -> None:
        """The record a package miss found for the file at `path` in its subdir's index files of `version` (as
        this check looks it up: the cached shard, else the repodata): kept, unless they changed meanwhile, so that
        the first hit on the file, fetched after its subdir's scan began, needs no scan of its own."""
        if await self._version(path.parent) == version:
            self._answers_for(path.parent, version)[path.name] = expected_of(record)

    async def scan_ahead(self, folder: Path) -> None:
        """A new version of the subdir's repodata is in place: its scan (the records of the packages cached there,
        and the repodata's suspects with them: conda/records.py) is made ahead, in the background, when nothing
        heavier runs (conda/passes_ahead.py), so that the first hit and the first miss find it done."""
        if self.passes is None:
            return
        repodata = await self._repodata(folder)
        if repodata is None:
            return
        version = await self._version(folder)
        key = (folder, version)
        if key in self._scans:
            return
        self._answers_for(folder, version)
        scan = self.passes.submit(folder, functools.partial(_scan, repodata, folder, None))
        self._scans[key] = scan
        scan.add_done_callback(lambda done: self._scanned(key, done))

    async def parent_vouching(self, path: Path, ttl: float) -> tuple[str | None, bool]:
        """Whether the subdir's cached index came from a parent pkgcache, and vouches for the cached package at
        `path`: the upstream name of that parent (None: no parent gave it; it then vouches), and whether the index
        in force lists the package in a copy younger than `ttl` (and not provisional). The index is the package's
        cached shard when the cached shard index names one (not the repodata then: the shard is the parent's word
        on the package now), else the repodata packages are checked against. A package it does not vouch for is
        served only once the parent has been asked (upstream/parent_verdicts.py): its policy may have taken it out
        since the package was cached. Costs no request; a shard read at most, once per shard and package."""
        folder, filename = path.parent, path.name
        present: dict[str, FileMeta] = {}
        for name in RECORD_SOURCES:
            meta = await self.meta_for(folder / name)
            if meta is not None and not meta.missing and not meta.extra.get("generated"):
                present[name] = meta
        parent = next((meta.upstream for meta in present.values() if meta.extra.get(PARENT_NODE)), None)
        if parent is None:
            return None, True
        index = present.get(SHARD_INDEX)
        if index is not None:
            shard = await asyncio.to_thread(_cached_shard_of, folder, filename)
            if shard is not None:
                return parent, _fresh(index, ttl) and await self._in_shard(shard, filename)
        repodata = next((present[name] for name in ("repodata.json", "repodata.json.zst") if name in present), None)
        if repodata is None or not _fresh(repodata, ttl):
            return parent, False
        try:
            return parent, await self.listing(path) is not None
        except ListingUnknown:
            return parent, False

    async def _in_shard(self, shard: Path, filename: str) -> bool:
        """Whether a cached shard holds the package (kept: a shard is named by its bytes' hash)."""
        key = (shard.name, filename)
        known = self._shard_answers.get(key)
        if known is None:
            known = await asyncio.to_thread(record_in_shard, shard, filename) is not None
            self._shard_answers[key] = known
            while len(self._shard_answers) > SHARD_ANSWERS_KEPT:
                self._shard_answers.pop(next(iter(self._shard_answers)))
        return known

    async def _version(self, folder: Path) -> tuple[object, ...]:
        metas = [await self.meta_for(folder / name) for name in RECORD_SOURCES]
        return tuple(
            None if meta is None or meta.missing else (meta.size, meta.mtime_ns, meta.fetched_at) for meta in metas
        )

    async def _look_up(
        self, folder: Path, filename: str, version: tuple[object, ...], wait: float | None
    ) -> dict[str, Listed | None]:
        if version[0] is not None:  # the upstream's shards: the package's shard, if it is cached
            record = await asyncio.to_thread(_record_from_cached_shard, folder, filename)
            if record is not None:
                return {filename: expected_of(record)}
        repodata = await self._repodata(folder)
        if repodata is None:
            raise _NotYetKnown  # no index cached to tell
        key = (folder, version)
        scan = self._scans.get(key)
        if scan is None:
            scan = asyncio.get_running_loop().create_task(asyncio.to_thread(_scan, repodata, folder, filename))
            self._scans[key] = scan
            scan.add_done_callback(lambda done: self._scanned(key, done))
        try:
            # A hit waits a moment for the scan (a small repodata's), never the seconds a big one takes: it is
            # served as it is meanwhile, as before this check, and the scan's answers serve the requests after it.
            # One made ahead may wait for a shard build: likewise.
            found = await asyncio.wait_for(asyncio.shield(scan), wait)
        except (TimeoutError, PassStopped):  # not yet, or a scan made ahead that a newer version took over
            raise _NotYetKnown from None
        return dict(found)

    def _scanned(self, key: tuple[Path, tuple[object, ...]], done: asyncio.Future[dict[str, Listed | None]]) -> None:
        """Keep a finished scan's answers for the version it read, unless a newer one is known by now."""
        if self._scans.get(key) is done:
            del self._scans[key]
        if done.cancelled() or done.exception() is not None:
            return
        folder, version = key
        known = self._known.get(folder)
        if known is not None and known[0] == version:
            known[1].update(done.result())

    async def _repodata(self, folder: Path) -> Path | None:
        """The subdir's cached repodata that packages are checked against (as `_repodata_to_search` picks it)."""
        for name in ("repodata.json", "repodata.json.zst"):
            path = folder / name
            meta = await self.meta_for(path)
            if meta is not None and not meta.missing and not meta.extra.get("generated") and path.is_file():
                return path
        return None


def _record_from_cached_shard(folder: Path, filename: str) -> dict[str, Any] | None:
    shard = _cached_shard_of(folder, filename)
    return None if shard is None else record_in_shard(shard, filename)


def _cached_shard_of(folder: Path, filename: str) -> Path | None:
    """The cached shard the subdir's cached shard index names for the package's name, if it is cached (blocking)."""
    shard_name = shard_for(folder / SHARD_INDEX, filename.rsplit("-", 2)[0])
    if shard_name is None:
        return None
    shard = folder / "shards" / shard_name
    return shard if shard.is_file() else None


def _fresh(meta: FileMeta, ttl: float) -> bool:
    """Whether a cached index file is within its time-to-live and no parent's provisional copy."""
    return meta.age() < ttl and not meta.extra.get(PROVISIONAL)


def _scan(
    repodata: Path, folder: Path, filename: str | None, stop: threading.Event | None = None
) -> dict[str, Listed | None]:
    """The records of `filename` (if any) and of every package cached in `folder`, from one pass over `repodata`
    (the pass that finds its suspects, when they are not known yet). `stop`: see records.find_records."""
    with os.scandir(folder) as entries:
        names = {e.name for e in entries if e.name.endswith(PACKAGE_SUFFIXES) and e.is_file()}
    if filename is not None:
        names.add(filename)
    found = records_of(repodata, names, stop)
    return {name: (expected_of(found[name]) if name in found else None) for name in names}


def records_of(
    repodata: Path, names: Collection[str], stop: threading.Event | None = None
) -> dict[str, dict[str, Any]]:
    """The records of `names` in a repodata file, as the package check finds them (records.find_records: one pass;
    a name the repodata gives no single record is left out)."""
    return find_records(repodata, names, stop)
