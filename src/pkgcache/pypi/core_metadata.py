"""A layer: core metadata (PEP 658) for every wheel, whatever the mirror serves.

The domestic mirrors serve no `.metadata` files, so without this a resolver downloads whole wheels (pip) or reads
them by ranges (uv, poetry) to learn their dependencies. Wrapping an `IndexSource`, this layer
- advertises metadata for every wheel on every page (`data-core-metadata` / `core-metadata`), with the sha256 of
  the bytes it serves once it has made them, `true` until then: never an upstream's own hash, which the bytes
  pkgcache serves may not match (a mirror's wrong hash, its `.metadata` then refused and read from the wheel);
- serves `<wheel>.metadata`, obtained the cheapest way that works: read from the wheel when it is cached; the
  upstream's own `.metadata` when it advertises one (and, if it 404s although advertised, the next way); a few
  HTTP ranges of the upstream's wheel (its end-of-central-directory record, central directory and METADATA
  entry: `wheel_metadata.py`); or, for a small wheel or an upstream that refuses ranges, the whole wheel, which is
  likely to be installed next anyway;
- checks metadata read by ranges against the wheel once the wheel itself is downloaded and verified, and keeps
  the verified one if they differ (logged and counted);
- serves a METADATA of any size a wheel may hold (up to wheel_metadata.MAX_STREAMED_METADATA_SIZE): one over
  MAX_METADATA_SIZE is not read into memory, by ranges or from the wheel, but streamed from the cached wheel into
  its file (`_stream_into`), so that `true` on a page does not end in a 404 for its size (pip and uv both fail an
  install on any error status for an advertised `.metadata`; neither falls back to the wheel);
- stops advertising metadata for a wheel whose verified file yields none it can serve (a broken or lying
  archive, METADATA compressed a way it does not read, no single `.dist-info` named after the wheel:
  `MetadataRefused`), by a record marked unavailable: its clients then read the wheel itself, as from a mirror
  without metadata. Such a wheel's first `.metadata` request, made on `true`, still gets a 404: a wheel pip
  refuses too, but for the `.dist-info` check, stricter than pip's and uv's (and uv reads zstd METADATA, which
  this does not: docs/pypi-clients.md). A failure to get the wheel is no such judgement and is not recorded;
- advertises an sdist's metadata only when its PKG-INFO is reliable (Metadata-Version 2.2 or later, with no
  dynamic dependencies: `sdist_metadata.py`), read from the sdist once cached.

Every `.metadata` is made once (single flight through the Downloader) and kept beside its distribution; what the
pages advertise comes from `metadata.json` records (metadata_records.py), so every worker renders the same page.
Metadata made but not kept (a full disk) is answered from memory (`made_not_kept`), and neither kept nor recorded:
the next request makes it again and tries to keep it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.metadata import parse_email
from packaging.utils import NormalizedName, canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pkgcache.cache_state import CacheState
from pkgcache.pypi.metadata_records import MetadataRecord, MetadataRecords
from pkgcache.pypi.model import DistFile
from pkgcache.pypi.names import METADATA_SUFFIX
from pkgcache.pypi.pages import CachedPage, PageStore, in_page_thread
from pkgcache.pypi.sdist_metadata import pkg_info_from_sdist_file, sdist_metadata_is_reliable
from pkgcache.pypi.source import FileNotListed, IndexLayer, IndexSource
from pkgcache.pypi.upstream_index import UpstreamIndex
from pkgcache.pypi.wheel_metadata import (
    MAX_METADATA_SIZE,
    MAX_RANGE_LENGTH,
    FileNotReadable,
    MetadataTooLarge,
    MetadataUnavailable,
    RangeAnswer,
    RangeCounter,
    RangesNotSupported,
    WheelMetadataStream,
    metadata_by_ranges,
    metadata_from_wheel_file,
)
from pkgcache.storage.downloads import Download, Downloader, Expected
from pkgcache.storage.file_records import agrees, recorded_of
from pkgcache.storage.store import CacheIsReadOnly, StorageError
from pkgcache.upstream.pool import UpstreamError, UpstreamNotFound, UpstreamsUnavailable
from pkgcache.upstream.ranges import RangesRefused, fetch_range

log = logging.getLogger(__name__)

# A wheel this small is fetched whole for its metadata: a ranged read would bring most of it anyway.
SMALL_WHEEL_BYTES = 256 * 1024
# The first range read of a wheel's end: what uv itself reads first (its CENTRAL_DIRECTORY_SIZE). Measured on a
# realistic tree (bench "resolution"), 64 KiB pulled 1.8 times uv's bytes; this many stays under uv's count of
# requests (uv sends a HEAD and three ranges a wheel) while pulling no more bytes than it.
FIRST_RANGE_BYTES = 16 * 1024
# The pages as this layer shows them are kept like the pages below them: bounded by what they list (an estimate of
# their memory: see pages.BYTES_PER_FILE), a big page (made off the event loop) not at all.
MAX_VIEW_FILES = 50_000
SDIST_SUFFIXES = (".tar.gz", ".zip")
# The longest a distribution's clients wait for its metadata to be read from it and recorded, after its last byte
# is checked. An ordinary one takes milliseconds; an archive built to be slow (sdist_metadata's bounds: 200,000
# members, 1 GiB inflated) takes seconds, which its clients are not held for.
METADATA_READ_WAIT = 1.0
# When the service stops, how long the reads its clients were not held for (above) may still take before they are
# cancelled (`MetadataIndex.close`): an ordinary one ends in milliseconds, and a distribution's download, and so
# the start of its read, comes well before the stop's end (the downloads' grace, then the requests').
METADATA_STOP_GRACE = 2.0
# The source of metadata made here, as logs name it: "made-here:ranges", "made-here:wheel", "made-here:upstream"
# (the upstream's own .metadata, checked here), one word for the access line's upstream= field.
MADE_HERE = "made-here:"


@dataclass
class MetadataCounters:
    """What `/metrics` and the page say about metadata: how it was obtained and what that saved."""

    made: Counter[str] = field(default_factory=Counter)  # metadata files made, by how they were obtained
    range_requests: int = 0
    range_bytes: int = 0
    bytes_saved: int = 0  # wheel bytes not fetched because metadata was read by ranges
    mismatches: int = 0  # metadata read by ranges that the verified wheel contradicted

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "made": dict(self.made)}


@dataclass(frozen=True)
class _Made:
    """Metadata made for a download, held in its notes: the bytes (None when streamed: too large to hold), and the
    record to write once they are kept."""

    data: bytes | None
    record: MetadataRecord


@dataclass(frozen=True)
class _InWheel:
    """METADATA too large to hold in memory (`MetadataTooLarge`), to be streamed from the cached wheel at `path`."""

    path: Path
    filename: str


# The key of `_Made` in a metadata download's notes.
MADE_NOTE = "core_metadata"


class MetadataRefused(FileNotListed):
    """The verified wheel itself yields no metadata pkgcache can serve: a lasting judgement on those bytes, which
    is recorded (the pages then stop advertising metadata for the wheel)."""


def made_not_kept(download: Download) -> bytes | None:
    """The metadata a download made whole but could not keep for a full disk: small (at most MAX_METADATA_SIZE),
    so it is answered from memory instead of a 507. None when the download failed otherwise, or made nothing, or
    streamed what it made (too large to hold: the 507 stands)."""
    error = download.error
    made = download.notes.get(MADE_NOTE)
    if isinstance(error, StorageError) and error.disk_full and isinstance(made, _Made):
        return made.data
    return None


@dataclass
class _View:
    source_page: object  # the inner page object the view was made from
    records_version: int
    page: CachedPage


class MetadataIndex(IndexLayer):
    """Wraps an IndexSource so that every wheel has core metadata."""

    def __init__(
        self,
        inner: IndexSource,
        pages: PageStore,
        records: MetadataRecords,
        downloader: Downloader,
        origin: UpstreamIndex | None,
    ) -> None:
        super().__init__(inner)
        self.pages = pages
        self.records = records
        self.downloader = downloader
        self.origin = origin  # None in a worker that only reads: making metadata is the writer's
        self.counters = MetadataCounters()
        self._views: collections.OrderedDict[str, _View] = collections.OrderedDict()
        self._checks: set[asyncio.Task[None]] = set()  # metadata read from arrived distributions, maybe past the wait
        self._view_files = 0

    # --- pages: metadata advertised ---

    def fresh_page(self, project: str, now: float | None = None) -> CachedPage | None:
        entry = self.inner.fresh_page(project, now)
        if entry is None:
            return None
        known = self.records.peek(project, now)
        view = self._views.get(project)
        if known is None or view is None or view.source_page is not entry or view.records_version != known[1]:
            return None  # made on the slow path, off the event loop when the page is big
        self._views.move_to_end(project)
        return view.page

    async def get_page(self, project: str) -> tuple[CachedPage, CacheState]:
        entry, state = await self.inner.get_page(project)
        return await self._advertised(project, entry), state

    async def refresh(self, project: str) -> CachedPage:
        return await self._advertised(project, await self.inner.refresh(project))

    def forget(self, project: str) -> None:
        self._drop_view(project)
        self.records.forget(project)
        self.inner.forget(project)

    def forget_all(self) -> None:
        self._views.clear()
        self._view_files = 0
        self.records.forget_all()
        self.inner.forget_all()

    async def _advertised(self, project: str, entry: CachedPage) -> CachedPage:
        records, version = await self.records.get(project)
        view = self._views.get(project)
        if view is not None and view.source_page is entry and view.records_version == version:
            return view.page
        if entry.is_big:
            return await in_page_thread(_advertise, entry, records)
        page = _advertise(entry, records)
        self._keep_view(project, _View(entry, version, page))
        return page

    def _keep_view(self, project: str, view: _View) -> None:
        self._drop_view(project)
        self._views[project] = view
        self._view_files += len(view.page.files)
        while self._view_files > MAX_VIEW_FILES and self._views:
            self._drop_view(next(iter(self._views)))

    def _drop_view(self, project: str) -> None:
        view = self._views.pop(project, None)
        if view is not None:
            self._view_files -= len(view.page.files)

    # --- files ---

    async def open_file(self, project: str, filename: str) -> Path | Download:
        if not filename.endswith(METADATA_SUFFIX):
            found = await self.inner.open_file(project, filename)
            if isinstance(found, Download):
                found.before_done(lambda download: self._distribution_arrived(project, download))
            return found
        dist_name = filename.removesuffix(METADATA_SUFFIX)
        entry, dist = await self.inner.find_file(project, dist_name)
        path = self.pages.file_path(project, filename)
        records, _ = await self.records.get(project)
        record = records.get(dist_name)
        if record is not None and _same_distribution(record, dist):
            if not record.available:
                raise FileNotListed(f"{dist_name} yields no core metadata pkgcache can serve")
            if path.is_file():
                return path
        if not dist_name.endswith(".whl") and not dist.core_metadata and record is None:
            raise FileNotListed(f"{dist_name} has no core metadata pkgcache can vouch for")
        download = self.downloader.get_or_start(
            path,
            Expected(),
            lambda into: self._make(into, project, entry, dist),
            replace=path.is_file(),  # a record that no longer matches the page: made again
            on_done=lambda made: self._record_if_kept(made, project, dist_name),
        )
        return path if download is None else download

    async def _make(self, download: Download, project: str, entry: CachedPage, dist: DistFile) -> None:
        """Fill `download` with the distribution's metadata; the bytes and their record go in its notes, for
        `_record_if_kept` and, should the disk be too full to keep them, `made_not_kept`."""
        if self.origin is None:
            raise CacheIsReadOnly("metadata is made by the worker that writes")
        try:
            found, source, verified = await self._obtain(project, entry, dist)
            # Where it came from, for the log's "cached" line and the access line's upstream= (no upstream sent it
            # as is).
            made_here = f"{MADE_HERE}{source}"
            if isinstance(found, _InWheel):
                digest = await self._stream_into(download, found, made_here)
                download.notes[MADE_NOTE] = _Made(None, MetadataRecord(digest, _sha256_of(dist), source, verified))
            else:
                digest = hashlib.sha256(found).hexdigest()
                # Noted before it is written: a full disk then answers it from memory (made_not_kept).
                download.notes[MADE_NOTE] = _Made(found, MetadataRecord(digest, _sha256_of(dist), source, verified))
                download.begin(made_here, {})
                await download.write(found)
        except MetadataRefused as exc:
            await self._record_refused(project, dist.filename, _sha256_of(dist), str(exc))
            raise
        self.counters.made[source] += 1

    async def _stream_into(self, download: Download, found: _InWheel, source: str) -> str:
        """Write the METADATA of the cached wheel `found` into `download` a chunk at a time, each read in a thread
        (never more than two chunks in memory), and return its sha256. A wheel that turns out broken on the way
        raises MetadataRefused, and the download, failed, keeps none of it."""
        with _judged(found.filename):
            stream = await asyncio.to_thread(WheelMetadataStream, found.path, found.filename)
        try:
            download.begin(source, {}, declared_length=stream.size)
            digest = hashlib.sha256()
            while True:
                with _judged(found.filename):
                    chunk = await asyncio.to_thread(stream.read)
                if not chunk:
                    return digest.hexdigest()
                digest.update(chunk)
                await download.write(chunk)
        finally:
            stream.close()

    async def _record_if_kept(self, download: Download, project: str, dist_name: str) -> None:
        """Record metadata once its file is in place (the pages then advertise its hash): metadata not kept is
        not recorded, so a record never names a file that is not there."""
        made = download.notes.get(MADE_NOTE)
        if not download.verified or not isinstance(made, _Made):
            return
        try:
            await self.records.add(project, dist_name, made.record)
        except StorageError as exc:
            # The file stays unrecorded: the pages advertise `true` for it, and the next request makes it again.
            log.warning("kept the metadata of %s but could not record it: %s", dist_name, exc)

    async def _obtain(self, project: str, entry: CachedPage, dist: DistFile) -> tuple[bytes | _InWheel, str, bool]:
        dist_path = self.pages.file_path(project, dist.filename)
        recorded = recorded_of(dist_path)
        # Only the file the page lists now (the hit path's check): one replaced upstream under its name is the
        # old bytes, whose metadata would be recorded, and served, as the new file's.
        if recorded is not None and agrees(recorded, dist.hashes, dist.size):
            return await self._from_cached(dist_path, dist), "wheel", True
        if dist.core_metadata:
            found = await self._from_upstream_metadata(entry, dist)
            if found is not None:
                return found, "upstream", False
        if not dist.filename.endswith(".whl"):
            raise FileNotListed(f"{dist.filename}: the upstream's advertised metadata cannot be had")
        if dist.size is None or dist.size > SMALL_WHEEL_BYTES:
            found = await self._from_ranges(entry, dist)
            if found is not None:
                return found, "ranges", False
        return await self._from_whole_wheel(project, dist), "wheel", True

    async def _from_cached(self, path: Path, dist: DistFile) -> bytes | _InWheel:
        """The distribution's metadata read from its cached file, or, for a wheel whose METADATA is too large to
        hold in memory, where to stream it from."""
        if dist.filename.endswith(".whl"):
            with _judged(dist.filename):
                try:
                    return await asyncio.to_thread(metadata_from_wheel_file, path, dist.filename)
                except MetadataTooLarge:
                    return _InWheel(path, dist.filename)
        try:
            pkg_info = await asyncio.to_thread(pkg_info_from_sdist_file, path, dist.filename)
        except MetadataUnavailable as exc:  # no PKG-INFO at its top (a repository's archive), or past a bound
            raise FileNotListed(f"no PKG-INFO can be read from {dist.filename}: {exc}") from None
        if not sdist_metadata_is_reliable(pkg_info, dist.filename):
            raise FileNotListed(f"{dist.filename}'s PKG-INFO does not settle its dependencies")
        return pkg_info

    async def _from_upstream_metadata(self, entry: CachedPage, dist: DistFile) -> bytes | None:
        """The upstream's own `.metadata`, if one upstream serves it as core metadata of this distribution with
        the hash the page gives (if any); else None, and the metadata is obtained another way."""
        assert self.origin is not None
        target = self.origin.file_target(entry, dist, METADATA_SUFFIX)
        try:
            return await self.origin.fetch_small(target, MAX_METADATA_SIZE, lambda data: _check_metadata(data, dist))
        except (UpstreamNotFound, UpstreamsUnavailable) as exc:
            log.info("no upstream serves usable metadata for %s although advertised (%s)", dist.filename, exc)
            return None

    async def _from_ranges(self, entry: CachedPage, dist: DistFile) -> bytes | None:
        """The metadata read from a few ranges of the upstream's wheel; None when ranges do not work there."""
        assert self.origin is not None
        pool, target = self.origin.pool, self.origin.file_target(entry, dist)

        sizes: list[int] = []

        async def read(start: int | None, length: int) -> RangeAnswer:
            try:
                got = await fetch_range(pool, target, start, length, limit=MAX_RANGE_LENGTH)
            except RangesRefused as exc:
                raise RangesNotSupported(str(exc)) from None
            sizes.append(got.size)  # the wheel's size, which an HTML page does not give
            return RangeAnswer(got.first, got.body, got.size)

        counted = RangeCounter(read)
        try:
            data = await metadata_by_ranges(counted, dist.size, dist.filename, tail_length=FIRST_RANGE_BYTES)
        except (MetadataUnavailable, UpstreamError, UpstreamsUnavailable, UpstreamNotFound) as exc:
            log.info("reading %s's metadata by ranges failed (%s); fetching the wheel", dist.filename, exc)
            return None
        finally:
            self.counters.range_requests += counted.requests
            self.counters.range_bytes += counted.bytes_read
        self.counters.bytes_saved += max(0, (dist.size or sizes[-1]) - counted.bytes_read)
        return data

    async def _from_whole_wheel(self, project: str, dist: DistFile) -> bytes | _InWheel:
        found = await self.inner.open_file(project, dist.filename)
        if isinstance(found, Download):
            await found.wait_finished()
        return await self._from_cached(self.pages.file_path(project, dist.filename), dist)

    # --- checking metadata read by ranges once the wheel is here ---

    async def _distribution_arrived(self, project: str, download: Download) -> None:
        """Before its clients are told it is whole (a `before_done` hook), so that by then the pages advertise its
        metadata's hash: read and recorded in milliseconds for any ordinary distribution. Clients are held for it
        at most METADATA_READ_WAIT, however long a hostile archive makes it take within its bounds
        (sdist_metadata's): the read then goes on without them, and the pages advertise the hash once it ends.
        Until then an sdist's metadata is not advertised, and a wheel's is `true` or the hash read by ranges."""
        if not download.verified or download.not_modified:
            return
        # What the bytes were checked against: for a file its page lists undecided (more than once, differently),
        # the hash of the entry they turned out to be.
        checked = download.checked_digest
        dist_sha256 = checked[1] if checked and checked[0] == "sha256" else download.expected.hashes.get("sha256")
        check = asyncio.get_running_loop().create_task(
            self._check_logged(project, download.final_path, dist_sha256.lower() if dist_sha256 else None)
        )
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        done, _ = await asyncio.wait({check}, timeout=METADATA_READ_WAIT)
        if not done:
            log.info(
                "the metadata of %s is still being read after %.1f s: its clients are not held for it",
                download.final_path.name,
                METADATA_READ_WAIT,
            )

    async def _check_logged(self, project: str, dist_path: Path, dist_sha256: str | None) -> None:
        try:
            await self._check_against(project, dist_path, dist_sha256)
        except Exception:  # nobody may be waiting for it any more: said here, not lost
            log.exception("reading the metadata of %s failed", dist_path.name)

    async def _check_against(self, project: str, dist_path: Path, dist_sha256: str | None) -> None:
        """A distribution is verified and cached: record its metadata (the pages then advertise its hash), and
        let it win over metadata read another way."""
        filename = dist_path.name
        if not filename.endswith((".whl", *SDIST_SUFFIXES)):
            return
        try:
            records, _ = await self.records.get(project)
            record = records.get(filename)
            if record is not None and record.verified and record.dist_sha256 in (None, dist_sha256):
                return
            found = await self._from_cached(dist_path, DistFile(filename=filename, url=""))
        except MetadataRefused as exc:
            # Whatever was read by ranges before (from a directory's last entries, which cannot tell a second
            # .dist-info earlier on) gives way: pkgcache refuses the wheel whole, as installers do.
            await self._record_refused(project, filename, dist_sha256, str(exc))
            return
        except (FileNotListed, OSError) as exc:
            log.debug("no metadata recorded for %s: %s", filename, exc)
            return
        if isinstance(found, _InWheel):
            # Too large to hold: made (streamed) at its first request, and recorded then. Nothing was read by ranges
            # (they read no METADATA this large), so no record made another way needs replacing.
            log.debug("the metadata of %s is left for its first request: over %d bytes", filename, MAX_METADATA_SIZE)
            return
        data = found
        digest = hashlib.sha256(data).hexdigest()
        if record is not None and record.sha256 != digest:
            self.counters.mismatches += 1
            log.warning(
                "metadata of %s read by %s differs from the verified file's: keeping the file's",
                filename,
                record.source,
            )
        source = "wheel" if filename.endswith(".whl") else "sdist"
        if record is not None and record.sha256 == digest:
            source = record.source
        path = dist_path.with_name(filename + METADATA_SUFFIX)
        try:
            if record is None or record.sha256 != digest or not path.is_file():
                await asyncio.to_thread(self.pages.store.write_bytes_atomic, path, data)
            await self.records.add(project, filename, MetadataRecord(digest, dist_sha256, source, True))
        except (StorageError, CacheIsReadOnly) as exc:
            log.warning("could not keep the metadata of %s: %s", filename, exc)

    async def _record_refused(self, project: str, filename: str, dist_sha256: str | None, reason: str) -> None:
        """Record that the verified wheel `filename` yields no metadata pkgcache can serve: the pages stop
        advertising it, and `.metadata` is a 404 without the wheel being read again. Metadata kept before for it
        (read by ranges) is removed."""
        refused = MetadataRecord("", dist_sha256, "wheel", True, available=False)
        try:
            records, _ = await self.records.get(project)
            if records.get(filename) == refused:
                return
            log.info("%s; its metadata is no longer advertised", reason)
            await self.records.add(project, filename, refused)
            path = self.pages.file_path(project, filename + METADATA_SUFFIX)
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except (StorageError, CacheIsReadOnly, OSError) as exc:
            log.warning("could not record that %s has no metadata to serve: %s", filename, exc)

    def status(self) -> dict[str, object]:
        return {**self.inner.status(), "core_metadata": self.counters.to_json()}

    async def close(self, grace: float | None = None) -> None:
        """As the service stops: let the metadata reads still going on (those clients were not held for) end for up
        to `grace` seconds (METADATA_STOP_GRACE), then cancel the rest and wait for them, so none is left pending
        when the loop closes.

        A read cancelled mid-way writes nothing after; one cancelled while its file is written leaves it whole
        (`write_bytes_atomic` renames a finished file, in a thread that ends its work), without a record: the
        pages then advertise `true` for it, and the next request makes it again."""
        grace = METADATA_STOP_GRACE if grace is None else grace
        if self._checks and grace > 0:
            await asyncio.wait(list(self._checks), timeout=grace)
        left = list(self._checks)
        for check in left:
            check.cancel()
        if left:
            log.info("%d metadata reads still going on were cancelled as the service stops", len(left))
            await asyncio.gather(*left, return_exceptions=True)


def _advertise(entry: CachedPage, records: dict[str, MetadataRecord]) -> CachedPage:
    """The page with core metadata advertised for every wheel (and for sdists pkgcache can vouch for)."""
    files = []
    changed = False
    for dist in entry.page.files:
        advertised = _advertised_metadata(dist, records.get(dist.filename))
        if advertised != dist.core_metadata:
            dist = dataclasses.replace(dist, core_metadata=advertised)
            changed = True
        files.append(dist)
    if not changed:
        return entry
    return entry.derived(dataclasses.replace(entry.page, files=tuple(files)))


def _advertised_metadata(dist: DistFile, record: MetadataRecord | None) -> bool | Mapping[str, str]:
    if record is not None and _same_distribution(record, dist):
        if not record.available:
            return False  # the verified file yields none pkgcache can serve: clients read the wheel themselves
        return {"sha256": record.sha256}  # the hash of exactly the bytes pkgcache serves
    # Not made here yet: `true`, whatever hash the upstream gives. Its `.metadata` is checked against that hash
    # when fetched, and on a mismatch made another way (from the wheel), whose hash is another: advertised, the
    # upstream's hash would fail every client that checks it (pip, uv) until the page changed.
    if dist.filename.endswith(".whl"):
        return True
    return bool(dist.core_metadata)  # an sdist: only if the upstream itself vouches for it


def _check_metadata(data: bytes, dist: DistFile) -> None:
    """Raises ValueError unless `data` is core metadata of `dist` with the hash its page gives: a mirror's answer
    (an HTML block page served with 200, say) would otherwise be kept, and advertised, as the metadata."""
    expected = dist.core_metadata if isinstance(dist.core_metadata, dict) else {}
    if "sha256" in expected and hashlib.sha256(data).hexdigest() != expected["sha256"].lower():
        raise ValueError(f"the metadata of {dist.filename} does not match the hash the page gives")
    raw, _ = parse_email(data)
    if "metadata_version" not in raw:
        raise ValueError(f"the metadata of {dist.filename} is not core metadata (no Metadata-Version)")
    name, version = _name_and_version(dist.filename)
    try:
        same = canonicalize_name(raw.get("name", "")) == name and Version(raw.get("version", "")) == version
    except InvalidVersion:
        same = False
    if not same:
        raise ValueError(f"the metadata of {dist.filename} names another distribution")


@contextlib.contextmanager
def _judged(filename: str) -> Iterator[None]:
    """A wheel's MetadataUnavailable as the judgement it is: MetadataRefused, recorded (the pages stop advertising
    it); the file that cannot be read (FileNotReadable) as FileNotListed, which judges nothing."""
    try:
        yield
    except FileNotReadable as exc:  # the file, not the archive: nothing to judge it by
        raise FileNotListed(f"the cached {filename} cannot be read: {exc}") from None
    except MetadataUnavailable as exc:
        raise MetadataRefused(f"no core metadata can be read from {filename}: {exc}") from None


def _name_and_version(filename: str) -> tuple[NormalizedName, Version]:
    if filename.endswith(".whl"):
        name, version, _, _ = parse_wheel_filename(filename)
        return name, version
    return parse_sdist_filename(filename)


def _same_distribution(record: MetadataRecord, dist: DistFile) -> bool:
    """Whether a record still belongs to the distribution a page lists under its name: made for the sha256 the page
    lists (a record made for no known sha256 belongs to no listed one), or the page lists none and cannot tell."""
    page_sha256 = _sha256_of(dist)
    return page_sha256 is None or record.dist_sha256 == page_sha256


def _sha256_of(dist: DistFile) -> str | None:
    value = dist.hashes.get("sha256")
    return value.lower() if value else None
