"""Reading part of a file from the upstreams: one byte range, fetched through the pool, never kept.

Used to read a wheel's metadata without downloading the wheel (a few ranges near its end), and to pass a client's
range request on a file that is not cached through to an upstream. Ranges count against each upstream's connection
cap and range pacing like any request. An upstream that answers a range request with the whole file (200), an
unusable range, or a 206 that does not hold the bytes asked for is not read further, and the next upstream is
asked for the range: one mirror without ranges must not make a metadata read wait for a whole wheel from it (at
its pace) while another mirror answers ranges. When every upstream that answered refused, `RangesRefused` is raised:
the caller falls back to a whole download; a 416 that gives the file's size raises `RangeNotSatisfiable` (a range
past the end, asked without knowing the size) at once. Only the bytes asked for are read, whatever the upstream's
Content-Range says it sends: an upstream must not decide how much pkgcache reads into memory; nor may a caller ask
for more than its `limit` (`RangeTooLong`, before any request): a range is held in memory whole, unchecked.

A client's range is passed through only when it is short and is not the whole file (`may_pass_through`); any other
is answered from the verified download, as a GET is (http/responses.py, `send_download`).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from pkgcache.header_numbers import content_range, unsatisfied_range_size
from pkgcache.upstream.pool import (
    TargetFor,
    Upstream,
    UpstreamError,
    UpstreamNotFound,
    UpstreamPool,
    UpstreamsUnavailable,
    watched_chunks,
)

# A 206 may start a little before the bytes asked for (they are read and dropped), not a file's length before:
# reading up to the asked part must cost about what the part itself costs, whatever the mirror claims.
MAX_BYTES_BEFORE = 64 * 1024
# The longest client range passed through to an upstream: its bytes are held in memory, and go out unverified. What
# clients ask of a wheel they read by ranges: uv the last 16 KiB, then the rest of the central directory, then
# METADATA rounded up to 8 KiB; poetry the last 10,000 bytes, then METADATA's local header to the next member; pip
# (fast-deps) 10 KiB chunks. The longest of those is a big wheel's central directory: torch's 1.2 MB, tensorflow's
# 1.7 MB (pypi/wheel_metadata.py). Anything longer (`bytes=N-` on a big file, a download resumed) is a download.
MAX_PASSED_RANGE = 2 * 1024 * 1024


class RangesRefused(Exception):
    """The upstream did not answer the range asked for (a 200 with the whole file, no usable Content-Range, or a
    206 that does not hold the bytes asked for without much else before them)."""


class _RefusedBy(RangesRefused):
    """One upstream refused the range: the next one is asked."""

    def __init__(self, message: str, upstream: str) -> None:
        super().__init__(message)
        self.upstream = upstream


class RangeTooLong(RangesRefused):
    """A range longer than the caller's limit was asked for: refused before the upstream is asked."""


class RangeNotSatisfiable(RangesRefused):
    """The upstream answered 416: the range starts past the end of a file of `size` bytes. A RangesRefused, so
    that a caller that only knows those falls back to a whole download as before."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class RangeBody:
    """Bytes an upstream sent for a range: from `first`, of a file `size` bytes long, and which upstream."""

    first: int
    body: bytes
    size: int
    upstream: str


def may_pass_through(first: int, end: int, size: int) -> bool:
    """Whether a client's bytes [first, end) of a file of `size` bytes may be answered from an upstream's range, not
    checked: a part no longer than MAX_PASSED_RANGE, and not the whole file (which must pass its check first)."""
    return end - first <= MAX_PASSED_RANGE and not (first == 0 and end >= size)


async def fetch_range(
    pool: UpstreamPool, target: TargetFor, start: int | None, length: int, *, limit: int = MAX_PASSED_RANGE
) -> RangeBody:
    """`length` bytes from `start` (or the last `length` bytes when `start` is None) from the first upstream that
    answers the range, clipped to the file's end and never more, whatever the upstream sends; raises RangesRefused
    when every upstream that answered refused the range (RangeTooLong, before asking, when `length` is over
    `limit`), or the pool's errors when none answered."""
    if length > limit:
        raise RangeTooLong(f"a range of {length} bytes is over the {limit}-byte limit of a range read")
    wanted = f"bytes=-{length}" if start is None else f"bytes={start}-{start + length - 1}"

    async def read(upstream: Upstream, response: aiohttp.ClientResponse) -> RangeBody:
        if response.status == 416:
            size = unsatisfied_range_size(response.headers.get("Content-Range"))
            if size is not None:
                raise RangeNotSatisfiable(f"{upstream.name}: {wanted} is past the end of {size} bytes", size)
        if response.status != 206:
            raise _RefusedBy(f"{upstream.name} answered {response.status} to a range request", upstream.name)
        sent = content_range(response.headers.get("Content-Range"))
        if sent is None or sent.size is None:
            raise _RefusedBy(f"{upstream.name} sent an unusable Content-Range", upstream.name)
        first, end = _asked_part(start, length, sent.size)
        if not (sent.first <= first < end <= sent.last + 1 and first - sent.first <= MAX_BYTES_BEFORE):
            raise _RefusedBy(
                f"{upstream.name} sent bytes {sent.first}-{sent.last}/{sent.size} for a request of {wanted}",
                upstream.name,
            )
        body = await read_slice(response, first - sent.first, end - first, pool)
        if len(body) != end - first:
            raise UpstreamError(f"{upstream.name} sent {len(body)} bytes for a range of {end - first}")
        upstream.stats.bytes_received += len(body)
        return RangeBody(first, body, sent.size, upstream.name)

    refused: list[_RefusedBy] = []

    def not_refused_yet(upstream: Upstream) -> str | None:
        return None if any(refusal.upstream == upstream.name for refusal in refused) else target(upstream)

    while True:
        try:
            return await pool.fetch(
                not_refused_yet,
                read,
                headers=lambda upstream: {"Range": wanted, "Accept-Encoding": "identity"},
                # A 416 is the upstream's answer about the range, not a failure of the upstream: it must not rest it.
                ok_statuses=frozenset({200, 206, 416}),
            )
        except _RefusedBy as refusal:
            # Not the upstream's fault (ranges are optional): it is neither counted nor rested, and the next
            # upstream (in the pool's order, after it) is asked.
            refused.append(refusal)
        except (UpstreamsUnavailable, UpstreamNotFound):
            if not refused:
                raise
            # One that refused has the file: a whole download from it can be had.
            raise RangesRefused("; ".join(str(refusal) for refusal in refused)) from None


def _asked_part(start: int | None, length: int, size: int) -> tuple[int, int]:
    """The bytes [first, end) a request for `length` bytes from `start` (None: the last ones) means in a file of
    `size` bytes."""
    if start is None:
        return max(0, size - length), size
    return start, min(start + length, size)


async def read_slice(response: aiohttp.ClientResponse, skip: int, count: int, pool: UpstreamPool) -> bytes:
    """`count` bytes of a body after its first `skip`, reading no further (the rest is never read: the connection
    is closed when the response is released); fewer when the body ends before."""
    kept = bytearray()
    async for chunk in watched_chunks(response, pool.policy):
        dropped = min(skip, len(chunk))
        skip -= dropped
        kept += chunk[dropped : dropped + count - len(kept)]
        if len(kept) == count:
            break
    return bytes(kept)
