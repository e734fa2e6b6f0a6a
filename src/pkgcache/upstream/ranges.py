"""Reading part of a file from the upstreams: one byte range, fetched through the pool, never kept.

Used to read a wheel's metadata without downloading the wheel (a few ranges near its end), and to pass a client's
range request on a file that is not cached through to an upstream. Ranges count against each upstream's connection
cap and range pacing like any request. An upstream that answers a range request with the whole file (200) or an
unusable range raises `RangesRefused` at once, before its body is read: the caller falls back to a whole download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiohttp

from pkgcache.upstream.pool import TargetFor, Upstream, UpstreamError, UpstreamPool, read_limited

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+)")


class RangesRefused(Exception):
    """The upstream did not answer the range asked for (a 200 with the whole file, or no usable Content-Range)."""


@dataclass(frozen=True)
class RangeBody:
    """Bytes an upstream sent for a range: from `first`, of a file `size` bytes long, and which upstream."""

    first: int
    body: bytes
    size: int
    upstream: str


async def fetch_range(pool: UpstreamPool, target: TargetFor, start: int | None, length: int) -> RangeBody:
    """`length` bytes from `start` (or the last `length` bytes when `start` is None) from the first upstream that
    answers; raises RangesRefused, or the pool's errors."""
    wanted = f"bytes=-{length}" if start is None else f"bytes={start}-{start + length - 1}"

    async def read(upstream: Upstream, response: aiohttp.ClientResponse) -> RangeBody:
        if response.status != 206:
            raise RangesRefused(f"{upstream.name} answered {response.status} to a range request")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match is None:
            raise RangesRefused(f"{upstream.name} sent an unusable Content-Range")
        first, last, size = (int(group) for group in match.groups())
        body = await read_limited(response, last - first + 1, pool.policy)
        if len(body) != last - first + 1:
            raise UpstreamError(f"{upstream.name} sent {len(body)} bytes for a range of {last - first + 1}")
        upstream.stats.bytes_received += len(body)
        return RangeBody(first, body, size, upstream.name)

    return await pool.fetch(
        target,
        read,
        headers=lambda upstream: {"Range": wanted, "Accept-Encoding": "identity"},
        ok_statuses=frozenset({200, 206}),
    )
