"""Fetching missing files: one upstream download per file, streamed to every client that waits for it.

The first request for a missing file starts a `Download`; every later request for the same file, until it is in
place, joins it. The download writes to a temporary file and each client follows that file as it grows, at its own
pace. The last byte is held back from the clients until the whole file is checked (size, expected hash, a sane
first few bytes), so a client can never receive a complete-looking body that was bad: if the check fails the
clients' connections are cut, the temporary file is deleted and nothing enters the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import aiohttp

from pkgcache.storage.store import CacheStore
from pkgcache.upstream.pool import (
    HeadersFor,
    TargetFor,
    Upstream,
    UpstreamError,
    UpstreamPool,
)

log = logging.getLogger(__name__)

_R = TypeVar("_R")

CHUNK_SIZE = 256 * 1024
# Hashes we check, strongest first; an index may give several.
HASH_PREFERENCE = ("sha256", "sha512", "sha384", "blake2b", "sha224", "sha1", "md5")


class IntegrityError(Exception):
    """The downloaded bytes are not the file the index described."""


class StorageError(Exception):
    """The cache could not write the file (`disk_full` when there was no room)."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


@dataclass(frozen=True)
class Expected:
    """What a file must be: its hashes from the index, its size if known, the bytes it must start with."""

    hashes: Mapping[str, str] = field(default_factory=dict)
    size: int | None = None
    magic: tuple[bytes, ...] = ()

    def digest_to_check(self) -> tuple[str, str] | None:
        for name in HASH_PREFERENCE:
            if name in self.hashes:
                return name, self.hashes[name].lower()
        return None


class Download:
    """One file on its way from upstream into the cache."""

    def __init__(self, final_path: Path, temp_path: Path, expected: Expected) -> None:
        self.final_path = final_path
        self.temp_path = temp_path
        self.expected = expected
        self.written = 0
        self.total: int | None = expected.size
        self.upstream: Upstream | None = None
        # The answering upstream's headers (ETag, Last-Modified...), for callers that keep validators.
        self.response_headers: Mapping[str, str] = {}
        self.error: BaseException | None = None
        self.verified = False
        # A conditional request answered 304: nothing was written and the cached file stays as it is.
        self.not_modified = False
        self._announced = False
        self.compressed_transfer = False
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Condition()

    @property
    def finished(self) -> bool:
        return self._announced

    async def wait_started(self) -> None:
        """Wait until an upstream has begun sending the file; raises what went wrong if none did."""
        await asyncio.shield(self._started)

    async def wait_finished(self) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self.finished)
        if self.error is not None:
            raise self.error

    def mark_started(self, upstream: Upstream, total: int | None, headers: Mapping[str, str]) -> None:
        self.upstream = upstream
        self.response_headers = dict(headers)
        if self.total is None:
            self.total = total
        if not self._started.done():
            self._started.set_result(None)

    async def notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    def settle(self, error: BaseException | None) -> None:
        """Record the outcome, without waking anyone yet (after-download hooks run in between)."""
        if error is None:
            self.verified = True
        else:
            self.error = error

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

    @property
    def _complete(self) -> bool:
        # Verified and announced: the file is checked and whatever records it (hooks) has done so.
        return self.verified and self._announced

    def _readable_limit(self) -> int:
        # Until complete, hold back the last byte written so a client never holds a whole unchecked file.
        return self.written if self._complete else max(0, self.written - 1)

    def _has_news_for(self, position: int) -> bool:
        return self.error is not None or self._complete or self._readable_limit() > position

    def _open_for_reading(self) -> IO[bytes]:
        try:
            return open(self.temp_path, "rb")
        except FileNotFoundError:
            if self.error is not None:
                raise self.error from None
            # Renamed into place before this client got here. Only checked files are ever renamed, and after a
            # 304 the file in place is the answer too.
            return open(self.final_path, "rb")

    async def follow(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive, for one client. Raises the download's error if it fails."""
        if self.not_modified or (self.compressed_transfer and not self.written):
            # A revalidation may end in 304, leaving the cached copy as the answer: wait for the outcome first.
            async with self._progress:
                await self._progress.wait_for(lambda: self.error is not None or self._complete or self.written > 0)
        if self.not_modified and self._complete:
            async for chunk in _read_whole(self.final_path):
                yield chunk
            return
        handle = await asyncio.to_thread(self._open_for_reading)
        try:
            position = 0
            while True:
                async with self._progress:
                    await self._progress.wait_for(functools.partial(self._has_news_for, position))
                if self.error is not None:
                    raise self.error
                limit = self._readable_limit()
                if position >= limit and self._complete:
                    return
                while position < limit:
                    size = min(CHUNK_SIZE, limit - position)
                    chunk = await asyncio.to_thread(os.pread, handle.fileno(), size, position)
                    if not chunk:
                        break
                    position += len(chunk)
                    yield chunk
        finally:
            await asyncio.to_thread(handle.close)


async def _read_whole(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


# Called on the event loop after a file is committed: its path, and how many bytes the cache grew by (its size
# less that of the file it replaced). The cache's size keeper (storage/eviction.py) keeps its total with it.
CommitHook = Callable[[Path, int], None]


class Downloader:
    """Runs downloads into a CacheStore, at most one per destination path at a time."""

    def __init__(self, store: CacheStore, on_commit: CommitHook | None = None) -> None:
        self.store = store
        self.on_commit = on_commit
        self._in_flight: dict[Path, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_bytes = 0

    def in_flight(self) -> int:
        return len(self._in_flight)

    def is_being_written(self, path: Path) -> bool:
        return path in self._in_flight

    def running(self, path: Path) -> Download | None:
        return self._in_flight.get(path)

    def get_or_start(
        self,
        pool: UpstreamPool,
        final_path: Path,
        target: TargetFor,
        expected: Expected,
        headers: HeadersFor | None = None,
        *,
        replace: bool = False,
        on_done: Callable[[Download], Awaitable[None]] | None = None,
        compressed_transfer: bool = False,
    ) -> Download | None:
        """The download of `final_path`: a running one to join, or a new one. None if the file is already there.

        No await happens between the existence check and registering the download, so two requests can never
        both start one. With `replace`, an existing file is fetched again and replaced when the new one is whole
        (for index files that change); until then readers of the old file keep it. `on_done` runs once the
        download has ended, well or not, whoever is still waiting for it. `compressed_transfer` lets the
        upstream gzip the body on the wire (worth it for JSON indexes; a cut transfer then restarts from zero).
        """
        running = self._in_flight.get(final_path)
        if running is not None:
            return running
        if not replace and final_path.is_file():
            return None
        self.store.require_writable()
        download = Download(final_path, self.store.new_temp_path(final_path.name), expected)
        download.compressed_transfer = compressed_transfer
        # Create the temp file now so that followers can open it before the first byte arrives.
        download.temp_path.touch()
        self._in_flight[final_path] = download
        task = asyncio.get_running_loop().create_task(self._run(pool, download, target, headers, on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download

    async def _run(
        self,
        pool: UpstreamPool,
        download: Download,
        target: TargetFor,
        headers: HeadersFor | None,
        on_done: Callable[[Download], Awaitable[None]] | None,
    ) -> None:
        error: BaseException | None = None
        try:
            receiver = _Receiver(download, self, pool)
            await pool.fetch(
                target,
                receiver.receive,
                headers=lambda upstream: receiver.request_headers(headers, upstream),
                ok_statuses=frozenset({200, 206, 304}),
            )
            if download.not_modified:
                await asyncio.to_thread(download.temp_path.unlink, True)
            else:
                replaced = await asyncio.to_thread(self._commit, download)
                self._report_commit(download.final_path, download.written - replaced)
                log.info(
                    "cached %s (%d bytes) from %s",
                    download.final_path.name,
                    download.written,
                    download.upstream.name if download.upstream else "?",
                )
        except OSError as exc:
            error = _storage_error(exc)
        except BaseException as exc:  # every failure, cancellation included, must reach the waiting clients
            error = exc
        finally:
            download.settle(error)  # before the temp file goes, so a follower that misses it knows why
            if error is not None:
                with contextlib.suppress(FileNotFoundError):
                    download.temp_path.unlink()
                log.warning("download of %s failed: %s", download.final_path.name, error)
            if on_done is not None:
                await _run_hook(on_done, download)
            # Unregistered only now: until the hook has recorded the outcome, a new request must join this
            # download rather than start a second one.
            self._in_flight.pop(download.final_path, None)
            await download.announce()
        if isinstance(error, asyncio.CancelledError):
            raise error

    def _commit(self, download: Download) -> int:
        """Move the verified file into place (blocking); returns the size of the file it replaced, if any."""
        try:
            replaced = download.final_path.stat().st_size
        except OSError:
            replaced = 0
        self.store.commit_file(download.temp_path, download.final_path)
        return replaced

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


class _Receiver:
    """Receives one download's bytes from whichever upstream answers, resuming where a failed one stopped."""

    def __init__(self, download: Download, downloader: Downloader, pool: UpstreamPool) -> None:
        self.download = download
        self.downloader = downloader
        self.pool = pool
        digest = download.expected.digest_to_check()
        self.hasher = hashlib.new(digest[0]) if digest else None

    def request_headers(self, extra: HeadersFor | None, upstream: Upstream) -> dict[str, str]:
        # Bodies are decoded as they arrive, so a hash is always of the file's own bytes; but Range counts encoded
        # bytes, so only an identity transfer can be resumed where it was cut.
        compressed = self.download.compressed_transfer
        headers = {"Accept-Encoding": "gzip" if compressed else "identity"}
        if extra is not None:
            headers.update(extra(upstream))
        if self.download.written and not compressed:
            headers["Range"] = f"bytes={self.download.written}-"
        return headers

    async def receive(self, upstream: Upstream, response: aiohttp.ClientResponse) -> None:
        download = self.download
        if response.status == 304:
            download.not_modified = True
            download.mark_started(upstream, None, response.headers)
            return
        skip = self._bytes_to_skip(response)
        _refuse_html_for_binary(response, download)
        download.mark_started(upstream, _declared_length(response) if not download.written else None, response.headers)
        # Writes happen in a worker thread; the file is opened in append mode for the resume case.
        handle = await _storage_call(open, download.temp_path, "ab")
        try:
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                self._check_start(chunk)
                await _storage_call(_write_all, handle, chunk)
                if self.hasher is not None:
                    self.hasher.update(chunk)
                download.written += len(chunk)
                upstream.stats.bytes_received += len(chunk)
                self.downloader.upstream_bytes += len(chunk)
                if download.total is not None and download.written > download.total:
                    raise UpstreamError(f"{upstream.name} sent more than the {download.total} bytes expected")
                await download.notify()
        finally:
            await asyncio.to_thread(handle.close)
        self._verify(upstream)

    def _bytes_to_skip(self, response: aiohttp.ClientResponse) -> int:
        written = self.download.written
        if self.download.compressed_transfer and written:
            raise UpstreamError("a compressed transfer was cut and cannot be resumed")
        if response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != written:
                raise UpstreamError(f"asked for bytes from {written}, got a range from {start}")
            return 0
        return written  # a full body: drop what we already have

    def _check_start(self, chunk: bytes) -> None:
        magic = self.download.expected.magic
        if self.download.written == 0 and magic and not any(chunk.startswith(m) for m in magic):
            raise UpstreamError("the body does not start like a file of this kind", rest_upstream=False)

    def _verify(self, upstream: Upstream) -> None:
        download = self.download
        expected = download.expected
        if expected.size is not None and download.written != expected.size:
            self._reject(upstream, f"size {download.written} where the index says {expected.size}")
        if download.total is not None and download.written != download.total:
            raise UpstreamError(f"body ended after {download.written} of {download.total} bytes")
        digest = expected.digest_to_check()
        if digest is not None and self.hasher is not None and self.hasher.hexdigest() != digest[1]:
            self._reject(
                upstream, f"{digest[0]} mismatch: the index says {digest[1]}, the bytes give {self.hasher.hexdigest()}"
            )

    def _reject(self, upstream: Upstream, reason: str) -> None:
        # The client may already hold all but the last byte, so there is no resuming from another mirror:
        # the download fails as a whole; the next request starts afresh.
        self.pool.record_bad_answer(upstream, f"bad file {self.download.final_path.name}: {reason}")
        raise IntegrityError(f"{self.download.final_path.name}: {reason}")


async def _run_hook(hook: Callable[[Download], Awaitable[None]], download: Download) -> None:
    try:
        await hook(download)
    except Exception:
        log.exception("after-download hook failed for %s", download.final_path.name)


def _write_all(handle: object, chunk: bytes) -> None:
    handle.write(chunk)  # type: ignore[attr-defined]
    handle.flush()  # type: ignore[attr-defined]


def _declared_length(response: aiohttp.ClientResponse) -> int | None:
    if response.headers.get("Content-Encoding", "identity") != "identity":
        return None
    return response.content_length


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def _refuse_html_for_binary(response: aiohttp.ClientResponse, download: Download) -> None:
    if download.expected.magic and response.content_type in ("text/html", "application/xhtml+xml"):
        raise UpstreamError(f"got an HTML page where {download.final_path.name} was expected")


async def _storage_call(function: Callable[..., _R], *args: object) -> _R:
    """Run a blocking file operation in a worker thread; a failure is the cache's, never the upstream's."""
    try:
        return await asyncio.to_thread(function, *args)
    except OSError as exc:
        raise _storage_error(exc) from exc


def _storage_error(exc: OSError) -> StorageError:
    disk_full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return StorageError(f"cannot write to the cache: {exc.strerror or exc}", disk_full=disk_full)
