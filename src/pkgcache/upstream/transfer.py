"""Receiving a file from the upstreams into a download: which upstream, which range, and what to believe.

`Fetcher.download` starts (or joins) the download of one file through the storage layer's Downloader, and fills it
from the pool's upstreams in order. Each answer is received by a `_Receiver`, which
- resumes where a cut answer stopped (`Range` on the next upstream, identity transfers only),
- refuses an answer that cannot be the file (an HTML page for a package, a declared length that is not the index's
  size or is past the most a file of its kind may be, a body encoded although identity was asked for) before
  writing any of it,
- gives up on an upstream that drips or falls silent mid-body while another one could take over,
- and, when the bytes turn out wrong (size, hash, content), throws them away and moves on to the next upstream:
  the file is still fetched for the next clients, from a mirror that has it right. The one that sent them is
  rested once another has given the right bytes. When none does, the index's hash may be the wrong one (an index
  cached before the file changed upstream): no mirror is rested for one file's sake, and the failure says so
  (`BadBytesEverywhere`), so that a layer keeping that index can refresh it.

Which upstream is blamed is decided only from what is known to be right: the index's size and hash, and each
answer's own headers. An upstream is never blamed for another one's bytes: a whole made of two upstreams' bytes
(resumed) that fails its check is asked again, whole, of the one that sent its end (`AskAgain`), and a parent
pkgcache that cuts a file it was relaying from its own upstream is not rested for it (`RelayCut`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp

from pkgcache.header_numbers import content_range, unsatisfied_range_size
from pkgcache.node_identity import CopyState, copy_state, relays_its_upstream
from pkgcache.storage.downloads import (
    Abandoned,
    AfterDownload,
    Download,
    Downloader,
    Expected,
    IntegrityError,
    NoRoomForDeclaredLength,
)
from pkgcache.upstream.compare import Progress, compare_with, comparison_due
from pkgcache.upstream.pool import (
    AskAgain,
    BadBytesEverywhere,
    HeadersFor,
    NotAuthoritative,
    RelayCut,
    TargetFor,
    Upstream,
    UpstreamError,
    UpstreamPool,
    UpstreamsUnavailable,
    is_cut,
    watched_chunks,
)

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Whether an upstream's 200, by its headers, is an older version than the copy being revalidated (a lagging
# mirror's): such an answer is taken as a 304 ("keep yours"), its body never read.
OlderThanCopy = Callable[[Upstream, Mapping[str, str]], bool]
# Given the names of the upstreams tried already, where the others have the file: asked once none of those the
# target names could give it (a PyPI page's links, asked of the other upstreams: pypi/upstream_index.py); None
# when none has it.
Elsewhere = Callable[[frozenset[str]], Awaitable[TargetFor | None]]


class Fetcher:
    """Downloads files from one side's upstream pool into the cache, one download per file."""

    def __init__(self, pool: UpstreamPool, downloader: Downloader) -> None:
        self.pool = pool
        self.downloader = downloader

    def download(
        self,
        path: Path,
        target: TargetFor,
        expected: Expected,
        *,
        headers: HeadersFor | None = None,
        replace: bool = False,
        on_done: AfterDownload | None = None,
        compressed: bool = False,
        before_commit: AfterDownload | None = None,
        older_than_copy: OlderThanCopy | None = None,
        elsewhere: Elsewhere | None = None,
    ) -> Download | None:
        """The download bringing `path` (running or started now), or None when the file is already cached.

        `compressed` lets the upstream gzip the body on the wire (worth it for JSON indexes; a cut transfer then
        starts again from zero on the next upstream). See Downloader.get_or_start for `replace`, `on_done` and
        `before_commit`; OlderThanCopy for `older_than_copy` (revalidations); Elsewhere for `elsewhere`.
        """

        async def produce(download: Download) -> None:
            await receive_from_upstreams(self.pool, download, target, headers, older_than_copy, elsewhere)

        return self.downloader.get_or_start(
            path,
            expected,
            produce,
            replace=replace,
            on_done=on_done,
            compressed=compressed,
            before_commit=before_commit,
        )

    def running(self, path: Path) -> Download | None:
        return self.downloader.running(path)

    def is_being_written(self, path: Path) -> bool:
        return self.downloader.is_being_written(path)


async def receive_from_upstreams(
    pool: UpstreamPool,
    download: Download,
    target: TargetFor,
    headers: HeadersFor | None = None,
    older_than_copy: OlderThanCopy | None = None,
    elsewhere: Elsewhere | None = None,
) -> None:
    """Fill `download` from the first upstream (in the pool's order) that gives the whole, checked file; when none
    of those `target` names does, from those `elsewhere` finds it on (resuming what arrived, as between any two)."""
    receiver = _Receiver(download, pool, target, older_than_copy)

    async def fetch() -> None:
        await pool.fetch(
            receiver.target,
            receiver.receive,
            headers=lambda upstream: receiver.request_headers(headers, upstream),
            ok_statuses=frozenset({200, 206, 304, 416}),
            # Asked for identity, a body is taken as sent: one encoded anyway is refused from its headers, unless
            # the encoding names the file's own compression (_unasked_encoding).
            decode=download.compressed,
        )

    try:
        try:
            await fetch()
        except UpstreamsUnavailable as failed:
            tried = frozenset(receiver.tried)
            found = await elsewhere(tried) if elsewhere is not None else None
            if found is None:
                raise
            receiver.target = _untried(found, tried)
            log.info("%s: asking the upstreams that have it elsewhere (%s)", download.final_path.name, failed)
            try:
                await fetch()
            except UpstreamsUnavailable as exc:
                raise UpstreamsUnavailable({**failed.errors, **exc.errors}, exc.retry_after) from None
    except UpstreamsUnavailable as exc:
        # An upstream declared a length the disk has no room for, and none could give the file instead: the
        # disk's fault (507), not the upstreams'.
        if receiver.no_room is not None:
            raise receiver.no_room from None
        if receiver.bytes_failed:
            raise BadBytesEverywhere(exc.errors) from None
        raise
    # Another upstream had the file right: those that sent it wrong lied, and rest.
    for name, reason in receiver.sent_bad.items():
        liar = pool.by_name(name)
        if liar is not None:
            pool.rest(liar, reason)


def _untried(target: TargetFor, tried: frozenset[str]) -> TargetFor:
    """`target`, for the upstreams not in `tried` only."""
    return lambda upstream: None if upstream.name in tried else target(upstream)


class _Receiver:
    """Receives one download's bytes from whichever upstream answers, resuming where a failed one stopped."""

    def __init__(
        self, download: Download, pool: UpstreamPool, target: TargetFor, older_than_copy: OlderThanCopy | None = None
    ) -> None:
        self.download = download
        self.pool = pool
        self.target = target
        self.older_than_copy = older_than_copy
        self.tried: set[str] = set()
        self.asked_if_changed: set[str] = set()  # upstreams sent validators: only they may answer 304
        self.no_room: NoRoomForDeclaredLength | None = None
        self.sent_bad: dict[str, str] = {}  # upstream -> why its bytes failed their check
        self.bytes_failed = False  # some bytes failed their check (whoever sent them)
        # The upstreams whose slow transfers of it were compared with another upstream (compare.py): one
        # comparison per upstream transfer, so an upstream that took over and turned slow is compared again.
        self.compared: set[str] = set()

    def request_headers(self, extra: HeadersFor | None, upstream: Upstream) -> dict[str, str]:
        # Bodies are decoded as they arrive, so a hash is always of the file's own bytes; but Range counts encoded
        # bytes, so only an identity transfer can be resumed where it was cut.
        compressed = self.download.compressed
        headers = {"Accept-Encoding": "gzip" if compressed else "identity"}
        if extra is not None:
            headers.update(extra(upstream))
        if self.download.written and not compressed:
            headers["Range"] = f"bytes={self.download.written}-"
        if "If-None-Match" in headers or "If-Modified-Since" in headers:
            self.asked_if_changed.add(upstream.name)
        else:
            self.asked_if_changed.discard(upstream.name)
        return headers

    async def receive(self, upstream: Upstream, response: aiohttp.ClientResponse) -> None:
        self.tried.add(upstream.name)
        download = self.download
        if copy_state(response.headers) is CopyState.NOT_AUTHORITATIVE and self._alternatives(upstream):
            # A parent pkgcache's offline view (or a copy it could not revalidate): another upstream that could
            # answer is asked instead. With none, it is taken, and kept as already expired (conda/index_files.py).
            raise NotAuthoritative(
                f"{upstream.name}, a pkgcache, answered with its offline view or a copy it could not revalidate",
                None,
            )
        if response.status == 304:
            self._refuse_a_304_without_a_copy(upstream)
            download.mark_not_modified(upstream.name, response.headers)
            return
        if response.status == 416:
            await self._take_range_refusal(upstream, response)
            return
        self._refuse_what_cannot_be_the_file(upstream, response)
        if self._is_older_than_copy(upstream, response):
            log.info(
                "%s answered %s with an older version than the copy here: the copy is kept",
                upstream.name,
                download.final_path.name,
            )
            download.mark_not_modified(upstream.name, response.headers)
            return
        skip = self._bytes_to_skip(response)
        # Whose bytes this answer goes on from, when it resumes (or skips) what another upstream gave.
        resumed_from = download.source if download.written and download.source != upstream.name else None
        download.begin(upstream.name, response.headers, self._length_to_reserve(response), str(response.url))
        declared = self._declared_total(response)
        try:
            await self._copy_body(upstream, response, skip)
            self._refuse_a_short_body(upstream, response, declared)
            download.verify(declared)
            await download.check_content()
        except NoRoomForDeclaredLength as exc:
            # The length may be a lie (its body would then end short of it): another upstream may still give the
            # file. Not this upstream's fault if it is true, so it is not rested.
            self.no_room = exc
            raise UpstreamError(str(exc), rest_upstream=False) from None
        except IntegrityError as exc:
            # The bytes are wrong, not just cut: none of them can be kept.
            await download.discard()
            if resumed_from is not None:
                # Another upstream's first bytes and this one's last: either may be the wrong ones. Neither is
                # blamed; this one is asked for the whole file (once: it is then judged on its own bytes).
                self.bytes_failed = True
                raise AskAgain(
                    f"{download.final_path.name} from {resumed_from}, resumed from {upstream.name}, fails its check"
                    f" ({exc}): {upstream.name} is asked for the whole file"
                ) from None
            reason = f"{upstream.name} sent a bad {download.final_path.name}: {exc}"
            raise self._contradicts_index(upstream, reason) from None
        except BaseException as exc:
            if download.compressed:
                await download.discard()  # a cut compressed transfer cannot be resumed: the next one starts at 0
            if is_cut(exc) and relays_its_upstream(response.headers):
                raise self._relay_cut(upstream, exc) from None
            raise

    def _relay_cut(self, upstream: Upstream, exc: BaseException) -> RelayCut:
        """A parent pkgcache cut the file it was relaying from its own upstream (RelayCut: it is not rested). What
        arrived is kept, and the next upstream resumes it. Where the cut came does not tell whether the parent's
        upstream cut the file or sent bytes that failed the parent's check (the parent holds back the file's last
        byte until then, but the child's reader drops what it had not read yet when the connection ends): a whole
        that then fails its check is asked of the next upstream again in full, never blamed on it (`receive`)."""
        download = self.download
        size = download.expected.size
        whole = f" of {size}" if size is not None else ""
        cause = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return RelayCut(
            f"{upstream.name}, a pkgcache, cut {download.final_path.name} after {download.written}{whole} bytes"
            f" relayed from its own upstream ({cause})"
        )

    async def _take_range_refusal(self, upstream: Upstream, response: aiohttp.ClientResponse) -> None:
        """416 to a resumed request: the upstream has no byte past those here. When the size it gives the file
        (`Content-Range: bytes */size`) is what is here, the upstream before it sent the whole file and declared more
        (its answer looked cut): what is here is checked as the whole file. Otherwise what is here cannot be resumed
        from this upstream: it is thrown away, so that the next upstream (or request) starts from the first byte,
        and this upstream, which did nothing wrong, is not rested."""
        download = self.download
        if "Range" not in response.request_info.headers:
            raise UpstreamError(f"{upstream.name} answered 416 Range Not Satisfiable to a request without a range")
        size = unsatisfied_range_size(response.headers.get("Content-Range"))
        if size is None or size != download.written:
            written = download.written
            await download.discard()
            raise UpstreamError(
                f"{upstream.name} has no bytes past {written} of {download.final_path.name} (its size: {size})",
                rest_upstream=False,
            )
        try:
            download.verify(size)
            await download.check_content()
        except IntegrityError as exc:
            await download.discard()  # the bytes of the upstream before it, which overstated nothing: they are wrong
            self.bytes_failed = True
            raise UpstreamError(
                f"the {size} bytes of {download.final_path.name} here fail their check: {exc}", rest_upstream=False
            ) from None

    def _is_older_than_copy(self, upstream: Upstream, response: aiohttp.ClientResponse) -> bool:
        """A whole answer (nothing of another one's kept) that the caller finds older than the copy here."""
        if self.older_than_copy is None or response.status != 200 or self.download.written:
            return False
        return self.download.final_path.is_file() and self.older_than_copy(upstream, response.headers)

    def _refuse_a_304_without_a_copy(self, upstream: Upstream) -> None:
        """ "Not modified" means "keep the copy you have": from an upstream that was not asked whether its copy
        changed, or when there is none here, it is a broken answer (one mirror sent it to plain requests, and the
        file could then be had from no mirror): that upstream fails, and the next one is asked."""
        if upstream.name not in self.asked_if_changed:
            raise UpstreamError(f"{upstream.name} answered 304 Not Modified to a request that was not conditional")
        if not self.download.final_path.is_file():
            raise UpstreamError(f"{upstream.name} answered 304 Not Modified, and there is no copy here to keep")

    async def _copy_body(self, upstream: Upstream, response: aiohttp.ClientResponse, skip: int) -> None:
        download = self.download
        # Only an upstream that another one could replace is given up on for being slow, or for being far slower
        # than the fastest such one has lately been (or, once per upstream transfer, than the next one is: compare.py).
        alternatives = self._alternatives(upstream)
        rates = [other.stats.rate for other in alternatives if other.stats.rate is not None]
        chunks = watched_chunks(
            response, self.pool.policy, enforce_rate=bool(alternatives), rate_to_beat=max(rates, default=None)
        )
        total = self._whole_size(response)
        received, first_byte_at, started = 0, None, time.monotonic()
        comparing: asyncio.Task[str | None] | None = None

        def progress() -> Progress:
            return Progress(received, time.monotonic() - started)

        try:
            while (chunk := await _next_chunk(chunks, comparing)) is not None:
                if first_byte_at is None:
                    first_byte_at = time.monotonic()
                received += len(chunk)
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                await download.write(chunk)
                upstream.stats.bytes_received += len(chunk)
                if not download.wanted():
                    raise Abandoned(f"nobody waits for {download.final_path.name} any more")
                if comparing is None and alternatives and total is not None:
                    comparing = self._compare_if_due(upstream, total, progress)
        finally:
            if comparing is not None and not comparing.done():
                comparing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await comparing
        if first_byte_at is not None:
            upstream.stats.observe_body(received, time.monotonic() - first_byte_at)

    def _compare_if_due(
        self, upstream: Upstream, total: int, progress: Callable[[], Progress]
    ) -> asyncio.Task[str | None] | None:
        """The comparison of this slow transfer with the next upstream that could take it over (compare.py), started
        when it is due: once per upstream transfer (at most one per upstream the download used), for an identity
        transfer (one that can be resumed) that someone waits
        for (one nobody waits for is stopped soon: it is not worth another upstream's bytes)."""
        if upstream.name in self.compared or self.download.compressed or not self.download.awaited:
            return None
        if not comparison_due(self.pool.policy, progress(), total - self.download.written):
            return None
        alternatives = self._alternatives(upstream)
        if not alternatives:
            return None
        self.compared.add(upstream.name)
        other = alternatives[0]
        log.info(
            "%s comes slowly from %s (%.0f B/s): timing %s on a range of it",
            self.download.final_path.name,
            upstream.name,
            progress().rate,
            other.name,
        )
        return asyncio.create_task(
            _quietly(compare_with(self.pool, self.download, self.target, upstream, other, total, progress))
        )

    def _whole_size(self, response: aiohttp.ClientResponse) -> int | None:
        """The whole file's size: the index's, else the one this answer declares (None: unknown)."""
        size = self.download.expected.size
        return size if size is not None else self._declared_total(response)

    def _refuse_a_short_body(self, upstream: Upstream, response: aiohttp.ClientResponse, declared: int | None) -> None:
        """A body that ended early was cut, not wrong: what arrived is kept, and the next upstream resumes it. A
        parent pkgcache relaying its own upstream's answer is not rested for it (RelayCut)."""
        written = self.download.written
        whole = self.download.expected.size if self.download.expected.size is not None else declared
        if whole is not None and written < whole:
            reason = f"{upstream.name}'s answer ended after {written} of {whole} bytes"
            if relays_its_upstream(response.headers):
                raise RelayCut(f"{reason} (a pkgcache's answer relayed from its own upstream)")
            raise UpstreamError(reason)

    def _alternatives(self, upstream: Upstream) -> list[Upstream]:
        """The upstreams that could take this download over: not tried yet, not resting, able to have it."""
        return [
            other
            for other in self.pool.candidates()
            if other.name not in self.tried and other is not upstream and self.target(other) is not None
        ]

    def _refuse_what_cannot_be_the_file(self, upstream: Upstream, response: aiohttp.ClientResponse) -> None:
        download = self.download
        name = download.final_path.name
        if download.expected.magic and response.content_type in HTML_TYPES:
            raise UpstreamError(f"{upstream.name} sent an HTML page where {name} was expected")
        encoding = _unasked_encoding(response, download.compressed, name)
        if encoding is not None:
            # Asked for identity, the upstream encoded the body anyway: a few MB of gzip on the wire can decode to
            # any size (the hash fails only at its end), and a Range could not resume it. Not one byte is taken;
            # the upstream rests once another one gives the file.
            raise self._sent_bad(
                upstream, f"{upstream.name} sent {name} with Content-Encoding: {encoding}, asked for identity"
            )
        size = download.expected.size
        total = self._full_length(response)
        if size is not None and total is not None and total != size:
            raise self._contradicts_index(upstream, f"{upstream.name} offers {total} bytes where the index says {size}")
        limit = download.expected.max_size
        if limit is not None and size is not None and size > limit:
            # No upstream can give it: not this one's fault.
            raise UpstreamError(
                f"the index gives {name} {size} bytes, more than the {limit} a file of its kind may have",
                rest_upstream=False,
            )
        if limit is not None and total is not None and total > limit:
            raise self._sent_bad(
                upstream,
                f"{upstream.name} offers {total} bytes of {name}, more than the {limit} a file of its kind may have",
            )

    def _sent_bad(self, upstream: Upstream, reason: str) -> UpstreamError:
        """The upstream's answer cannot be the file: counted now, and rested once another upstream gives the file
        (receive_from_upstreams), so a mirror that is the only way to the file is not rested for it."""
        self.sent_bad[upstream.name] = reason
        return UpstreamError(reason, rest_upstream=False)

    def _contradicts_index(self, upstream: Upstream, reason: str) -> UpstreamError:
        """The upstream's file is not the one the index describes. It lied, or the index is out of date: it is
        rested only if another upstream has the file right (receive_from_upstreams)."""
        self.bytes_failed = True
        return self._sent_bad(upstream, reason)

    def _bytes_to_skip(self, response: aiohttp.ClientResponse) -> int:
        written = self.download.written
        if response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != written:
                raise UpstreamError(f"asked for bytes from {written}, got a range from {start}")
            return 0
        return written  # a full body: drop what we already have

    def _declared_total(self, response: aiohttp.ClientResponse) -> int | None:
        """The file's whole length as this answer declares it, to check the body against (None: unknown)."""
        total = self._full_length(response)
        return None if total is None or self.download.compressed else total

    def _full_length(self, response: aiohttp.ClientResponse) -> int | None:
        """The whole file's length according to an answer whose body is the file's bytes as sent: Content-Length,
        or a 206's Content-Range."""
        if not _sent_as_is(response, self.download.compressed, self.download.final_path.name):
            return None
        if response.status == 206:
            return _content_range_total(response.headers.get("Content-Range"))
        return response.content_length

    def _length_to_reserve(self, response: aiohttp.ClientResponse) -> int | None:
        """How many bytes the file will take according to the answer: its whole length, or for a compressed body
        the length on the wire (the decoded file is at least about that long)."""
        total = self._full_length(response)
        return total if total is not None else response.content_length


# Files compressed with gzip themselves, which web servers label with the coding of their bytes: Apache's stock
# `AddEncoding x-gzip .gz .tgz` sends an sdist with `Content-Encoding: x-gzip`. pip asks for identity and reads any
# body as sent (network/utils.py: decode_content=False), so such a label only names the file's own compression.
OWN_GZIP_SUFFIXES = (".gz", ".tgz")
GZIP_CODINGS = ("gzip", "x-gzip")


def _sent_as_is(response: aiohttp.ClientResponse, compressed: bool, filename: str) -> bool:
    """Whether the body is the file's own bytes: an identity answer, or, asked for identity, a file compressed with
    gzip itself labelled gzip (its body, taken as sent, is the file: its hash or its gzip stream's end decides)."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return True
    return not compressed and encoding in GZIP_CODINGS and filename.lower().endswith(OWN_GZIP_SUFFIXES)


def _unasked_encoding(response: aiohttp.ClientResponse, compressed: bool, filename: str) -> str | None:
    """The answer's Content-Encoding when pkgcache asked for identity only (every download but the compressed ones,
    index files, whose decoded size their own cap bounds) and the body is not the file's bytes as sent; None for
    an identity answer or a `.tar.gz` labelled gzip (`_sent_as_is`). A wheel labelled gzip stays refused: its
    bytes as sent are a gzip stream, not a zip, and decoding them is what a mirror's small gzip bomb asks for."""
    if compressed or _sent_as_is(response, compressed, filename):
        return None
    encoding = response.headers.get("Content-Encoding", "").strip()
    return "".join(c if c.isprintable() else "?" for c in encoding[:40])


def _content_range_start(value: str | None) -> int | None:
    sent = content_range(value)
    return None if sent is None else sent.first


def _content_range_total(value: str | None) -> int | None:
    sent = content_range(value)
    return None if sent is None else sent.size


async def _next_chunk(chunks: AsyncIterator[bytes], comparing: asyncio.Task[str | None] | None) -> bytes | None:
    """The body's next chunk (None at its end). A comparison that says the transfer should go on from another
    upstream ends it with an UpstreamError as soon as it says so, even while the body is silent."""
    if comparing is None or comparing.done():
        _take_verdict(comparing)
        return await anext(chunks, None)
    step = asyncio.ensure_future(anext(chunks, None))
    try:
        await asyncio.wait((step, comparing), return_when=asyncio.FIRST_COMPLETED)
        if not step.done():
            _take_verdict(comparing)
        return await step
    finally:
        if not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await step


def _take_verdict(comparing: asyncio.Task[str | None] | None) -> None:
    """Raise the failure a finished comparison found for the transfer (the upstream rests, as below min_rate)."""
    if comparing is not None and comparing.done() and not comparing.cancelled():
        reason = comparing.result()
        if reason is not None:
            raise UpstreamError(reason)


async def _quietly(comparison: Awaitable[str | None]) -> str | None:
    """A comparison's verdict; one that fails unexpectedly says nothing (the transfer goes on) and is logged."""
    try:
        return await comparison
    except Exception:
        log.exception("comparing a slow transfer with another upstream failed")
        return None


# For callers that want to run something with the download's bytes in hand.
OnDownload = Callable[[Download], Awaitable[None]]
