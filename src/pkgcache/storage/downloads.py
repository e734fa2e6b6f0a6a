"""Files on their way into the cache: one temporary file per missing file, followed by every client that waits.

The first request for a missing file starts a `Download`; every later request for the same file, until it is in
place, joins it. Whoever produces the bytes (the upstream layer, `upstream/transfer.py`) writes them with
`Download.write`; each client follows the temporary file as it grows, at its own pace. Nothing here knows where
the bytes come from: this module deals in bytes, paths, temporary files, checks, commits and single flight.

What a client can never get is a complete-looking body of bad bytes:
- the file's disk space is taken before its first byte (by the index's size, else the answer's declared length), so
  a disk too full for it fails the download before any client is answered;
- a write that would pass the index's size is refused before a byte of it is written;
- the first bytes are checked against what a file of its kind starts with, however they arrive;
- a file its index gives no hash for must end as a whole file of its kind does (a zip's end record, a gzip stream's
  end): a body cut short can look whole (chunked, no length), and only its kind can tell;
- clients are held back from the byte that completes the expected size (or, size unknown, from the last byte
  written) until the whole file is checked (size, hash, and the caller's own check of its content); a file its
  index lists as one of several (`Expected.one_of`) must be one of them, by its hash and size;
- bytes found wrong are thrown away (`discard`): clients that had read some of them are cut, clients that had
  read nothing go on with the bytes that replace them (from another mirror).
Only a checked file is renamed into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from multidict import CIMultiDict

from pkgcache.storage.file_records import record_digest
from pkgcache.storage.file_use import FileUse
from pkgcache.storage.filetypes import WholeCheck, whole_check_for
from pkgcache.storage.store import CacheStore, StorageError, check_folder, in_storage_thread, storage_error

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
# Followers read the file being written (or just revalidated) on the event loop, not through the thread pool: the
# bytes were written moments ago and are in the page cache, so a read is a copy of tens of microseconds, as the
# kernel's sendfile of cached files is (http/responses.py). Through the pool, each of a herd's followers allocated
# its chunks in a thread's own malloc arena, which kept them: the bench's herd of 64 peaked at 157 MB of PSS with
# reads in threads and 128-136 MB on the loop; the cold 20 MB miss took 50.6 ms, and 46-52 ms on the loop.
# Hashes we check, strongest first; an index may give several.
HASH_PREFERENCE = ("sha256", "sha512", "sha384", "blake2b", "sha224", "sha1", "md5")
# A download no client follows any more is stopped after this long, unless it is nearly done (then it is worth
# finishing: the next request gets it at once).
ABANDON_AFTER_SECONDS = 5.0
# A file being downloaded is flushed to the disk every this many bytes, by the thread that writes it: the flush
# before its rename into place (CacheStore.commit_file) then covers only the tail, instead of keeping the client
# waiting for a whole file's worth of writes at its end (seconds for a 2 GB wheel on a slow disk).
FLUSH_EVERY = 16 << 20
NEARLY_DONE_SHARE = 0.75


@dataclass(slots=True)
class Span:
    """Bytes `position` to `end` of an open file, for one follower of a download: `position` is moved on by
    whoever sends them. `generation` says which upstream's bytes they are (see Download.generation)."""

    handle: IO[bytes]
    position: int
    end: int
    generation: int


class IntegrityError(Exception):
    """The bytes are not the file the index described (size, hash, first bytes or content)."""


class Abandoned(Exception):
    """Nobody waits for the download any more, and it was far from done: stopped to spare the upstream."""


class NoRoomForDeclaredLength(StorageError):
    """The disk has no room for the length an upstream's answer declares (its Content-Length), the index giving
    none. The cache's fault if the length is right; but a declared length is only believed for reserving space, so
    the caller may ask another upstream before answering 507 (one that lies cannot give the file anyway: its body
    ends before the length it declared)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, disk_full=True)


# A check of a whole file's content (e.g. "this is JSON, not an HTML error page"), run in a worker thread on the
# temporary file before it may replace anything; raises IntegrityError.
ContentCheck = Callable[[Path], None]


class Absent(Exception):
    """Base of the errors saying the file does not exist where it was asked for (every upstream's 404)."""


class FileGone(Exception):
    """The download's file was renamed into place, then removed (evicted, purged), before this client opened it:
    it is not in the cache any more, and a new lookup fetches it again (`Download.open_reader`)."""


@dataclass(frozen=True)
class Expected:
    """What a file must be: its hashes from the index, its size if known, the bytes it must start with, and a
    check of its content and a maximum size when the index gives no hash (index files)."""

    hashes: Mapping[str, str] = field(default_factory=dict)
    size: int | None = None
    magic: tuple[bytes, ...] = ()
    content_check: ContentCheck | None = None
    # The most a file of its kind may be, whatever the index says (a mirror must not set our disk use): the disk
    # space taken first is never more, and a write past it is refused before a byte of it is written.
    max_size: int | None = None
    # An optional file (a conda channel's shard index, its .zst): its absence is an answer, not worth a warning.
    optional: bool = False
    # Several files an index lists under one name (a PyPI page listing it twice, differently): the bytes must be
    # one of them, (hashes, size) each, by a hash every one of them gives; `hashes` and `size` are then not given.
    one_of: tuple[tuple[Mapping[str, str], int | None], ...] = ()

    def digest_to_check(self) -> tuple[str, str] | None:
        """The (algorithm, hex digest) the bytes must give; for `one_of`, the algorithm with no digest ("")."""
        if self.one_of:
            name = common_hash(hashes for hashes, _ in self.one_of)
            return None if name is None else (name, "")
        for name in HASH_PREFERENCE:
            if name in self.hashes:
                return name, self.hashes[name].lower()
        return None


def common_hash(all_hashes: Iterable[Mapping[str, str]]) -> str | None:
    """The strongest hash algorithm every one of these gives a digest for, if any."""
    given = [set(hashes) for hashes in all_hashes]
    return next((name for name in HASH_PREFERENCE if given and all(name in names for names in given)), None)


class Download:
    """One file on its way into the cache."""

    def __init__(
        self,
        final_path: Path,
        temp_path: Path,
        expected: Expected,
        *,
        compressed: bool = False,
        use: FileUse | None = None,
    ) -> None:
        self.final_path = final_path
        self.temp_path = temp_path
        self.expected = expected
        # The upstream may gzip the body on the wire (JSON indexes): bytes are decoded as they arrive, but a cut
        # transfer can then not be resumed where it stopped.
        self.compressed = compressed
        self.written = 0
        # Where the bytes being written come from (an upstream's name), and that answer's headers (validators).
        self.source: str | None = None
        self.url: str | None = None  # where the source's answer came from, after its redirects
        self.headers: Mapping[str, str] = {}
        self.error: BaseException | None = None
        self.verified = False
        # The (algorithm, hex digest) the bytes were checked against, once they passed (what is recorded with them).
        self.checked_digest: tuple[str, str] | None = None
        # A conditional request answered 304: nothing was written and the cached file stays as it is.
        self.not_modified = False
        # Moves on each time written bytes are thrown away, so a client that had read some of them is cut.
        self.generation = 0
        # Set by whoever needs the whole file even if no client waits for it (a prefetch, a seed).
        self.keep_unfollowed = False
        # The modification time the file gets when committed, once clients were told it (their Last-Modified and
        # ETag on a miss must be the same validators as the cached file's afterwards).
        self.mtime_ns: int | None = None
        # What a `before_commit` hook learnt of the bytes or did to them, or what their producer made in memory, for
        # whoever records the file (or answers it when it cannot be kept).
        self.notes: dict[str, object] = {}
        self._announced = False
        # Every byte is written: from here the temporary file may be rewritten (a `before_commit` hook) or renamed,
        # so a follower that opens it now reads the file in place once done instead (see open_reader).
        self.writing_ended = False
        self._handle: IO[bytes] | None = None
        self._unflushed = 0  # bytes written since the file was last flushed to the disk
        # Disk space to take before the next byte is written (see _reserve), how much that is from the upstream's
        # declared length rather than the index's size, and how much is taken.
        self._to_reserve = 0
        self._reserve_from_answer = False
        self._reserved = 0
        self._hasher = self._new_hasher()
        self._whole = self._new_whole_check()
        self._start_bytes = b""  # the first bytes, until there are enough to check them against the magic
        self._interested = 0  # clients following the bytes or waiting for the outcome
        self._unwanted_since: float | None = None
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Condition()
        self._before_done: list[AfterDownload] = []
        # Where followers say they read the file, as senders of cached files do: eviction leaves it while one does.
        self._use = use

    # --- what clients are told ---

    @property
    def length(self) -> int | None:
        """The body's length as clients may be told it: only the index's size is known to be right."""
        return self.expected.size

    @property
    def finished(self) -> bool:
        return self._announced

    # --- the producer's side ---

    def begin(
        self, source: str, headers: Mapping[str, str], declared_length: int | None = None, url: str | None = None
    ) -> None:
        """An upstream's answer starts (or takes over after another one failed). `declared_length`: the whole
        file's length as that answer declares it, if it does; used only to take the disk space first when the
        index gives no size, never to tell clients a length or to judge the bytes. `url`: where the answer came
        from, after redirects (what a reference in the file is relative to)."""
        self.source = source
        self.url = url
        # Case-insensitive, as HTTP header names are: aiohttp spells an upstream's "ETag" as "Etag".
        self.headers = CIMultiDict(headers)
        self._plan_reservation(declared_length)

    def mark_not_modified(self, source: str, headers: Mapping[str, str]) -> None:
        self.begin(source, headers)
        self.not_modified = True
        self._set_started()

    async def write(self, chunk: bytes) -> None:
        """Append bytes. Refuses, before writing any of them, bytes past the index's size or a wrong start."""
        if not chunk:
            return
        size = self.expected.size
        if size is not None and self.written + len(chunk) > size:
            raise IntegrityError(f"more than the {size} bytes the index gives")
        limit = self.expected.max_size
        if limit is not None and self.written + len(chunk) > limit:
            raise IntegrityError(f"more than the {limit} bytes a file of its kind may have")
        self._check_start(chunk)
        await in_storage_thread(self._append, chunk)
        self._hasher_update(chunk)
        self.written += len(chunk)
        if self._start_checked():
            # Only now may clients be answered: the first bytes are on disk (so a full disk is a clean 507) and
            # look like a file of this kind.
            self._set_started()
        await self.notify()

    def verify(self, declared_total: int | None = None) -> None:
        """Raises IntegrityError unless what was written is the whole file the index describes."""
        expected = self.expected
        if expected.size is not None and self.written != expected.size:
            raise IntegrityError(f"{self.written} bytes where the index says {expected.size}")
        if declared_total is not None and self.written != declared_total:
            raise IntegrityError(f"{self.written} bytes where the answer said {declared_total}")
        if not self._start_checked():
            raise IntegrityError("too short to be a file of its kind")
        digest = expected.digest_to_check()
        if expected.one_of and digest is None:
            raise IntegrityError("the files the index lists under its name share no hash to tell which one it is")
        if digest is not None and self._hasher is not None:
            got = self._hasher.hexdigest()
            if expected.one_of:
                name = digest[0]
                if not any(
                    hashes[name].lower() == got and size in (None, self.written) for hashes, size in expected.one_of
                ):
                    raise IntegrityError(
                        f"none of the {len(expected.one_of)} files the index lists under its name: "
                        f"{self.written} bytes of {name} {got}"
                    )
            elif got != digest[1]:
                raise IntegrityError(f"{digest[0]} mismatch: the index says {digest[1]}, the bytes give {got}")
            self.checked_digest = (digest[0], got)
        if self._whole is not None:
            self._check_whole(self._whole)

    async def read_written(self, size: int) -> bytes:
        """The first `size` bytes written (fewer when fewer are), read back from the temporary file in a thread:
        for a producer comparing them with what another upstream sends for the same part of the file."""
        size = min(size, self.written)
        if size <= 0:
            return b""

        def read() -> bytes:
            fd = os.open(self.temp_path, os.O_RDONLY)
            try:
                return os.pread(fd, size, 0)
            finally:
                os.close(fd)

        return await in_storage_thread(read)

    async def check_content(self) -> None:
        """The caller's check of the whole content (in a thread); raises IntegrityError."""
        if self.expected.content_check is not None:
            await self._flushed()
            await asyncio.to_thread(_run_content_check, self.expected.content_check, self.temp_path)

    async def discard(self) -> None:
        """Throw away what was written (it came from an upstream that failed or lied) and start again at zero."""
        if self.written == 0 and not self._start_bytes:
            return
        # The new generation is announced before the file shrinks: a follower reading meanwhile sees it, instead of
        # a file shorter than `written` says.
        self.written = 0
        self._unflushed = 0
        self.checked_digest = None
        self._hasher = self._new_hasher()
        self._whole = self._new_whole_check()
        self._start_bytes = b""
        self.generation += 1
        if self._handle is not None:
            await in_storage_thread(_truncate, self._handle)
            # The truncation gave the space back: the bytes that replace these take it again first.
            self._to_reserve, self._reserved = max(self._to_reserve, self._reserved), 0
        await self.notify()

    def fix_mtime(self, seconds: float) -> int:
        """The file's modification time (ns), fixed on first call to whole `seconds`: what clients are told."""
        if self.mtime_ns is None:
            self.mtime_ns = int(seconds) * 1_000_000_000
        return self.mtime_ns

    @property
    def awaited(self) -> bool:
        """Whether a client follows the download or waits for it now (or it is needed whatever: `keep_unfollowed`)."""
        return self._interested > 0 or self.keep_unfollowed

    def wanted(self) -> bool:
        """False once nobody has followed or awaited the download for a while and it is far from done."""
        if self._interested or self.keep_unfollowed:
            self._unwanted_since = None
            return True
        now = time.monotonic()
        if self._unwanted_since is None:
            self._unwanted_since = now
        if now - self._unwanted_since < ABANDON_AFTER_SECONDS:
            return True
        size = self.expected.size
        return size is not None and self.written >= NEARLY_DONE_SHARE * size

    # --- the outcome (called by the Downloader) ---

    def settle(self, error: BaseException | None) -> None:
        """Record the outcome, without waking anyone yet (after-download hooks run in between)."""
        if error is None:
            self.verified = True
        else:
            self.error = error

    def before_done(self, hook: AfterDownload) -> bool:
        """Run `hook(download)` once the outcome is known and before anyone is told (as the Downloader's on_done
        does), without waiting for it: unlike waiting, this does not count as wanting the download. False when it
        is too late for that (the outcome was already announced)."""
        if self._announced:
            return False
        self._before_done.append(hook)
        return True

    async def run_before_done_hooks(self) -> None:
        hooks, self._before_done = self._before_done, []
        for hook in hooks:
            await _run_hook(hook, self)

    async def announce(self) -> None:
        """Wake every waiter and follower: the outcome is final."""
        self._announced = True
        if not self._started.done():
            if self.error is None:
                self._started.set_result(None)
            else:
                self._started.set_exception(self.error)
                self._started.exception()  # mark retrieved: nobody may be waiting
        await self.notify()

    async def close_file(self) -> None:
        """Close the temporary file. Raises StorageError when its last bytes cannot be written (a full disk)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            # Space taken for more bytes than came (a declared length that was not the body's) is given back.
            trim_to = self.written if self._reserved > self.written else None
            await in_storage_thread(_close, handle, trim_to)

    # --- the clients' side ---

    async def wait_started(self) -> None:
        """Wait until the first checked bytes are on disk (or a 304 came); raises what went wrong if none did."""
        self._interested += 1
        try:
            await asyncio.shield(self._started)
        finally:
            self._interested -= 1

    async def wait_finished(self) -> None:
        self._interested += 1
        try:
            async with self._progress:
                await self._progress.wait_for(lambda: self.finished)
        finally:
            self._interested -= 1
        if self.error is not None:
            raise self.error

    async def notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def open_reader(self) -> IO[bytes]:
        """The file open for one follower, once it has started (`wait_started`): the file being written, or the
        file in place if it was committed before this. Open, its bytes stay this follower's whatever removes the
        file afterwards (eviction, a purge). Raises the download's error if it failed and its file is gone, and
        `FileGone` if it was committed and then removed before this open: to be answered as a miss again, before
        anything was sent. The caller closes it (after passing it to `follow` or `follow_spans`)."""
        if not self.writing_ended:
            handle = await asyncio.to_thread(self._open_for_reading)
            if not self.writing_ended or _is_in_place(handle, self.final_path):
                return handle  # the bytes as written (the flag is set on the loop before any rewrite begins)
            await asyncio.to_thread(handle.close)  # opened while a rewrite may have begun: not those bytes
        # Marked in use while it waits, so that eviction does not take the file between its rename and this open.
        if self._use is not None:
            self._use.begin(self.final_path)
        try:
            await self.wait_finished()
            return await asyncio.to_thread(self._open_in_place)
        finally:
            if self._use is not None:
                self._use.end(self.final_path)

    async def follow(self, generation: int | None = None, reader: IO[bytes] | None = None) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive, for one client. Raises the download's error if it fails, and
        IntegrityError if bytes it already gave turn out wrong (or, with `generation`, if they are not that
        generation's: see `follow_spans`). `reader`: the file opened by `open_reader`, else it is opened here."""
        async for span in self.follow_spans(generation, reader):
            while span.position < span.end and self.generation == span.generation:
                size = min(CHUNK_SIZE, span.end - span.position)
                chunk = os.pread(span.handle.fileno(), size, span.position)  # on the loop: see CHUNK_SIZE
                if not chunk:
                    self.check_span_ended(span)
                    break
                span.position += len(chunk)
                yield chunk
                if span.position < span.end:
                    await asyncio.sleep(0)  # far behind the download: let the others run between chunks

    async def follow_spans(self, generation: int | None = None, reader: IO[bytes] | None = None) -> AsyncIterator[Span]:
        """What one client may be sent of the file, as it arrives: a `Span` of an open file at a time, which the
        client reads or has the kernel send (sendfile: no copy through this process), moving its `position` on as
        it goes, before it asks for the next. Raises the download's error if it fails, and IntegrityError if bytes
        it was given turn out wrong (they came from an upstream that failed its check: the client must be cut).

        `generation`: the generation of the bytes this client was judged fit to be sent as they come (a repodata
        whose start was read: conda/cached_channels.py); another upstream's bytes, even from the first, are then
        refused too (IntegrityError) instead of followed: they were not judged.

        `reader`: the file as `open_reader` opened it (its caller closes it); without one, it is opened here, and a
        file committed and then removed before that raises `FileGone` (after a response has started: a cut)."""
        self._interested += 1
        try:
            await self.wait_started()
            if self.not_modified:
                await self.wait_finished()
                with await asyncio.to_thread(open, self.final_path, "rb") as handle:
                    span = Span(handle, 0, os.fstat(handle.fileno()).st_size, self.generation)
                    yield span
                    self.check_span_ended(span)
                return
            async for span in self._temp_file_spans(generation, reader):
                yield span
        finally:
            self._interested -= 1

    def check_span_ended(self, span: Span) -> None:
        """After a span's file ran out before its end: the bytes were replaced (the generator that gave the span
        sees to that), or the file is shorter than what was written, which must never reach a client whole."""
        if span.position < span.end and self.generation == span.generation:
            raise IntegrityError(f"the file being downloaded is shorter than its {self.written} bytes")

    async def _temp_file_spans(self, pinned: int | None, reader: IO[bytes] | None) -> AsyncIterator[Span]:
        handle = reader if reader is not None else await self.open_reader()
        if self._use is not None:
            self._use.begin(self.final_path)
        try:
            if _is_in_place(handle, self.final_path):
                # Opened once committed: the file in place, whole, at its own size, which a `before_commit` hook
                # may have made other than the bytes written (a repodata whose base_url was taken out).
                await self.wait_finished()
                if pinned is not None and pinned != self.generation:
                    raise IntegrityError("another upstream took over before its bytes could be judged")
                span = Span(handle, 0, os.fstat(handle.fileno()).st_size, self.generation)
                yield span
                self.check_span_ended(span)
                return
            position, generation = 0, self.generation if pinned is None else pinned
            while True:
                async with self._progress:
                    await self._progress.wait_for(functools.partial(self._has_news_for, position, generation))
                if self.error is not None:
                    raise self.error
                if self.generation != generation:
                    if position:
                        raise IntegrityError("the bytes sent so far came from an upstream that failed its check")
                    if pinned is not None:
                        raise IntegrityError("another upstream took over before its bytes could be judged")
                    generation = self.generation
                limit = self._readable_limit()
                if position >= limit and self._complete:
                    return
                if position < limit:
                    span = Span(handle, position, limit, generation)
                    yield span
                    position = span.position
        finally:
            if self._use is not None:
                self._use.end(self.final_path)
            if reader is None:
                await asyncio.to_thread(handle.close)

    # --- inside ---

    @property
    def _complete(self) -> bool:
        # Verified and announced: the file is checked and whatever records it (hooks) has done so.
        return self.verified and self._announced

    def _readable_limit(self) -> int:
        if self._complete:
            return self.written
        size = self.expected.size
        # Hold back relative to the expected size: the byte that would complete it waits for the checks.
        if size is not None:
            return max(0, min(self.written, size - 1))
        return max(0, self.written - 1)

    def _has_news_for(self, position: int, generation: int) -> bool:
        return (
            self.error is not None
            or self._complete
            or self.generation != generation
            or self._readable_limit() > position
        )

    def _open_for_reading(self) -> IO[bytes]:
        try:
            return open(self.temp_path, "rb")
        except FileNotFoundError:
            if self.error is not None:
                raise self.error from None
        # Renamed into place before this client got here (only checked files are ever renamed).
        return self._open_in_place()

    def _open_in_place(self) -> IO[bytes]:
        """The committed file, which may have been removed since: eviction may take a committed file no client was
        registered on yet."""
        try:
            return open(self.final_path, "rb")
        except FileNotFoundError:
            raise FileGone(f"{self.final_path.name} was removed from the cache before it could be read") from None

    def _new_hasher(self) -> Any:  # a hashlib object, or None when the index gives no hash
        digest = self.expected.digest_to_check()
        return hashlib.new(digest[0]) if digest else None

    def _new_whole_check(self) -> WholeCheck | None:
        """Only for a file without a hash: a hash says more, and is computed in the same pass already."""
        if self.expected.digest_to_check() is not None:
            return None
        return whole_check_for(self.expected.magic)

    def _check_whole(self, check: WholeCheck) -> None:
        """Raises IntegrityError unless the bytes written make a whole file of their kind (a few reads at the
        file's end at most: on the loop, as a follower's reads are)."""
        written = self.written

        def read(offset: int, size: int) -> bytes:
            data = os.pread(fd, size, offset) if offset + size <= written else b""
            if len(data) != size:
                raise ValueError(f"{size} bytes at {offset} run past the end of the {written} bytes")
            return data

        fd = os.open(self.temp_path, os.O_RDONLY)  # an OSError is the disk's, not the bytes'
        try:
            check.check(read, written)
        except ValueError as exc:  # a ZipRecordError too
            raise IntegrityError(f"not a whole file of its kind: {exc}") from None
        finally:
            os.close(fd)

    def _hasher_update(self, chunk: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(chunk)

    def _check_start(self, chunk: bytes) -> None:
        magic = self.expected.magic
        if not magic or self._start_checked():
            return
        start = (self._start_bytes + chunk)[: max(len(m) for m in magic)]
        if not any(m.startswith(start[: len(m)]) for m in magic):
            raise IntegrityError("the body does not start like a file of this kind")
        self._start_bytes = start

    def _start_checked(self) -> bool:
        magic = self.expected.magic
        if not magic:
            return True
        return any(self._start_bytes.startswith(m) for m in magic)

    def _set_started(self) -> None:
        if not self._started.done():
            self._started.set_result(None)

    def _plan_reservation(self, declared_length: int | None) -> None:
        """How much disk space to take before the next byte: the index's size, else the answer's declared length,
        capped by the most a file of its kind may be (a mirror must not set our disk use, even for a moment)."""
        size, from_answer = self.expected.size, False
        if size is None and declared_length is not None:
            size, from_answer = declared_length, True
        limit = self.expected.max_size
        if size is not None and limit is not None:
            size = min(size, limit)
        self._to_reserve = size if size is not None and size > self._reserved else 0
        self._reserve_from_answer = from_answer

    def _append(self, chunk: bytes) -> None:
        if self._handle is None:
            check_folder(self.final_path.parent)  # its folder can take it: checked now, not at the rename
            self._handle = open(self.temp_path, "wb")  # noqa: SIM115  # kept open across writes, closed by close_file
        if self._to_reserve:  # once per answer, not per chunk
            self._take_space()
        self._handle.write(chunk)
        self._handle.flush()
        if self._whole is not None:
            self._whole.feed(chunk)
        self._unflushed += len(chunk)
        if self._unflushed >= FLUSH_EVERY:
            os.fdatasync(self._handle.fileno())  # meanwhile the upstream's bytes wait in the socket's buffers
            self._unflushed = 0

    def _take_space(self) -> None:
        assert self._handle is not None
        size, self._to_reserve = self._to_reserve, 0
        try:
            _reserve(self._handle, size)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a refusal may have taken part of the space: give it back
                self._handle.truncate(self.written)
            if self._reserve_from_answer:
                raise NoRoomForDeclaredLength(
                    f"no room on the cache's disk for the {size} bytes {self.source} declares: {exc.strerror}"
                ) from exc
            raise
        self._reserved = max(self._reserved, size)

    async def _flushed(self) -> None:
        if self._handle is not None:
            await in_storage_thread(self._handle.flush)


def _run_content_check(check: ContentCheck, path: Path) -> None:
    """Any failure of a check but the disk's is a verdict on the bytes: what a mirror's bytes make a parser do
    (a MemoryError for a size they declare, an error the check did not foresee) must fail that mirror over and rest
    it, not escape as a 500 that leaves the mirror first in line."""
    try:
        check(path)
    except (IntegrityError, OSError):
        raise
    except Exception as exc:
        raise IntegrityError(f"its content fails its check ({type(exc).__name__}: {exc})") from exc


# fallocate(2)'s FALLOC_FL_KEEP_SIZE: the space is taken but the file's size stays what was written, so a file
# that gets fewer bytes than were reserved (a declared length that was wrong) never ends in zeros; its content
# check and its readers see only written bytes.
FALLOC_FL_KEEP_SIZE = 1


def _reserve(handle: IO[bytes], size: int) -> None:
    """Take the disk space of a file whose size is known before its first byte is written: a disk too full for it
    then refuses it now, while its clients can still be answered 507, instead of cutting their 200 midway. A file
    system that cannot reserve space is written to as the bytes come, as before."""
    if size <= 0 or _FALLOCATE is None:
        return
    if _FALLOCATE(handle.fileno(), FALLOC_FL_KEEP_SIZE, 0, size) != 0:
        error = ctypes.get_errno()
        if error in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(error, os.strerror(error))


def _find_fallocate() -> Any:
    """The C library's fallocate(2), or None. Not os.posix_fallocate: where a file system cannot reserve (NFS, some
    FUSE), glibc's posix_fallocate writes a byte into every block instead, seconds for a big wheel before its first
    byte; fallocate(2) says EOPNOTSUPP and nothing is reserved."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate64
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _find_fallocate()


def _close(handle: IO[bytes], trim_to: int | None = None) -> None:
    try:
        if trim_to is not None:
            handle.truncate(trim_to)  # frees the blocks reserved past the end (same size: nothing else changes)
        handle.close()
    except OSError:
        # Closing flushes; if that fails the file is given up, but it is closed all the same (or the descriptor
        # would leak): a second close does nothing more than release it.
        with contextlib.suppress(OSError):
            handle.close()
        raise


def _truncate(handle: IO[bytes]) -> None:
    handle.seek(0)
    handle.truncate()


# Called on the event loop after a file is committed: its path, and how many bytes the cache grew by (its size
# less that of the file it replaced). The cache's size keeper (storage/eviction.py) keeps its total with it.
CommitHook = Callable[[Path, int], None]
# Fills a download: writes its bytes (or marks it not modified), checks them; raises if it could not.
Produce = Callable[[Download], Awaitable[None]]
AfterDownload = Callable[[Download], Awaitable[None]]


class Downloader:
    """Runs downloads into a CacheStore, at most one per destination path at a time."""

    def __init__(self, store: CacheStore, on_commit: CommitHook | None = None) -> None:
        self.store = store
        self.on_commit = on_commit
        self._in_flight: dict[Path, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def in_flight(self) -> int:
        return len(self._in_flight)

    def is_being_written(self, path: Path) -> bool:
        return path in self._in_flight

    def running(self, path: Path) -> Download | None:
        return self._in_flight.get(path)

    def running_under(self, paths: list[Path]) -> list[Download]:
        """The downloads in flight into any of `paths` (files, or folders they are under)."""
        return [
            download
            for final, download in self._in_flight.items()
            if any(final == path or final.is_relative_to(path) for path in paths)
        ]

    def get_or_start(
        self,
        final_path: Path,
        expected: Expected,
        produce: Produce,
        *,
        replace: bool = False,
        on_done: AfterDownload | None = None,
        compressed: bool = False,
        before_commit: AfterDownload | None = None,
    ) -> Download | None:
        """The download of `final_path`: a running one to join, or a new one. None if the file is already there.

        No await happens between the existence check and registering the download, so two requests can never
        both start one. With `replace`, an existing file is fetched again and replaced when the new one is whole
        (for index files that change); until then readers of the old file keep it. `on_done` runs once the
        download has ended, well or not, whoever is still waiting for it. `before_commit` runs on a whole, checked
        file before it is renamed into place, and may replace its temporary file's bytes (an index file rewritten
        to point at pkgcache): the cached file is never seen unchanged. Clients following the download read the
        bytes as they came, so a caller that changes them must not have let clients follow it.
        """
        running = self._in_flight.get(final_path)
        if running is not None:
            return running
        if not replace and final_path.is_file():
            return None
        self.store.require_writable()
        download = Download(
            final_path,
            self.store.new_temp_path(final_path.name),
            expected,
            compressed=compressed,
            use=self.store.file_use,
        )
        self._in_flight[final_path] = download
        task = asyncio.get_running_loop().create_task(self._run(download, produce, on_done, before_commit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download

    async def _run(
        self, download: Download, produce: Produce, on_done: AfterDownload | None, before_commit: AfterDownload | None
    ) -> None:
        error: BaseException | None = None
        try:
            await produce(download)
            download.writing_ended = True
            await download.close_file()
            if download.not_modified:
                await asyncio.to_thread(download.temp_path.unlink, True)
            else:
                download.verify()  # the producer checked already; a file is never committed unchecked
                if before_commit is not None:
                    await before_commit(download)
                added = await in_storage_thread(self._commit, download)
                self._report_commit(download.final_path, added)
                log.info("cached %s (%d bytes) from %s", download.final_path.name, download.written, download.source)
        except OSError as exc:
            error = storage_error(exc)
        except BaseException as exc:  # every failure, cancellation included, must reach the waiting clients
            error = exc
        finally:
            download.settle(error)  # before the temp file goes, so a follower that misses it knows why
            if error is not None:
                # Never raising from here: waiters are woken below whatever else fails.
                with contextlib.suppress(Exception):
                    await download.close_file()
                await asyncio.to_thread(_unlink_quietly, download.temp_path)
                level = logging.INFO if _expected_absence(download, error) else logging.WARNING
                log.log(level, "download of %s failed: %s", download.final_path.name, error)
            if on_done is not None:
                await _run_hook(on_done, download)
            await download.run_before_done_hooks()
            # Unregistered only now: until the hook has recorded the outcome, a new request must join this
            # download rather than start a second one.
            self._in_flight.pop(download.final_path, None)
            await download.announce()
        if isinstance(error, asyncio.CancelledError):
            raise error

    def _commit(self, download: Download) -> int:
        """Move the verified file into place (blocking); returns how many bytes the cache grew by (its size less
        that of the file it replaced, if any; its size on disk: a `before_commit` hook may have changed it)."""
        try:
            replaced = download.final_path.stat().st_size
        except OSError:
            replaced = 0
        size = download.temp_path.stat().st_size
        if download.mtime_ns is not None:
            # atime now: eviction counts recency from the later of the two.
            os.utime(download.temp_path, ns=(time.time_ns(), download.mtime_ns))
        digest = download.checked_digest
        if digest is not None:  # verify() has just checked the bytes against it
            # What it was checked against goes with the file, so a hit can be compared with the index's record
            # of the moment without hashing the file (storage/file_records.py).
            record_digest(download.temp_path, digest)
        self.store.commit_file(download.temp_path, download.final_path)
        return size - replaced

    def _report_commit(self, path: Path, added_bytes: int) -> None:
        if self.on_commit is None:
            return
        try:
            self.on_commit(path, added_bytes)
        except Exception:  # bookkeeping must never fail a good download
            log.exception("commit hook failed for %s", path.name)

    async def close(self, grace: float = 0.0) -> None:
        """Let downloads in flight finish for up to `grace` seconds, then cut the rest (their files are dropped)."""
        if self._tasks and grace > 0:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _run_hook(hook: AfterDownload, download: Download) -> None:
    try:
        await hook(download)
    except (StorageError, OSError) as exc:
        # The disk's failure (full, read-only), not a bug: one line, as every request may meet it until it is fixed.
        error = storage_error(exc) if isinstance(exc, OSError) else exc
        log.warning("could not record the download of %s: %s", download.final_path.name, error)
    except Exception:
        log.exception("after-download hook failed for %s", download.final_path.name)


def _expected_absence(download: Download, error: BaseException) -> bool:
    return download.expected.optional and isinstance(error, Absent)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _is_in_place(handle: IO[bytes], final_path: Path) -> bool:
    """Whether a follower's file is the committed one (not the temporary file being written)."""
    return os.fspath(handle.name) == os.fspath(final_path)
