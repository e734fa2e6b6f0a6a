"""Comparing a slow file transfer with another upstream that has the file: one range request per upstream transfer.

`[upstream] relative_min_rate` gives a transfer over to an upstream far faster than the one sending it, but only
once that one's rate is known (`UpstreamStats.rate`, from big bodies it sent before). On a cold start none is, and a
mirror sending a wheel just above `min_rate` held its clients for as long as it took: pip waited 123 s for 1.5 MB
at 12 KB/s while the next mirror had the file (under a second from it).

So a file transfer that has run `[upstream] compare_after` seconds, and whose end at its rate so far is further off
than that, has the next upstream that could take it over timed on the file's first bytes: one range of up to
`COMPARE_BYTES`, through `ranges.fetch_range` (that upstream's connection cap and range pacing; a 200 to it, a
refusal of ranges, is no verdict). The rate the range came at counts its request's latency against it. When the
transfer is slower than `relative_min_rate` of it, the transfer is left as the rate floor leaves it (its upstream
fails, and rests) and the pool asks that upstream next, which resumes the file where it stopped (`Range`,
transfer.py): the bytes kept and the ones it sends are checked together against the index's size and hash before
any client gets the file's last byte.

Bounds: one comparison per upstream transfer (at most one per upstream the download used: an upstream that took
over and turned slow itself, say fast for its first MiB and throttled after, as nginx's `limit_rate_after` does, is
compared again, with the next upstream not tried yet); only while another upstream could take over; only for an
identity transfer (one that can be resumed) with at least `COMPARE_MIN_REMAINING` bytes to go; the range is given
up on as soon as it can no longer show that upstream fast enough (and after `rate_window` at most). Its bytes are
not kept, but compared with those already written: an upstream that has other bytes (or another size) for the file
does not take it over (one of the two is wrong; the hash decides at the end of the transfer going on).

Limits: the range is of the file's first bytes, so an upstream with a burst allowance of a MiB or more always looks
fast on it; what bounds the harm is that its own transfer is compared again, but only with an upstream not tried
yet: the one it took over from rests and is not asked again for this download (with two upstreams, the second
one's crawl after its burst is waited for). A transfer of unknown size (no size on the index page, no
Content-Length) is never compared. That is a child over [parent pkgcache, own mirror] whose parent relays a miss
from an HTML-only mirror (no sizes on its pages; relayed chunked): and there the own mirror could not take over in
any case, since the child knows that mirror's URL for the file only once the parent failed (the parent's page
links its own files/ path; `Fetcher.download(elsewhere=...)`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pkgcache.storage.downloads import Download
from pkgcache.upstream.pool import (
    RATE_SAMPLE_BYTES,
    TargetFor,
    Upstream,
    UpstreamNotFound,
    UpstreamPolicySettings,
    UpstreamPool,
    UpstreamRefused,
    UpstreamsUnavailable,
)
from pkgcache.upstream.ranges import RangesRefused, fetch_range

log = logging.getLogger(__name__)

# The most one comparison reads: as much as a body must have for its rate to count (pool.RATE_SAMPLE_BYTES).
COMPARE_BYTES = RATE_SAMPLE_BYTES
# A transfer with less than this to go is never compared: a range would cost about what is left.
COMPARE_MIN_REMAINING = 64 * 1024


@dataclass(frozen=True)
class Progress:
    """How far one upstream's answer has come: `received` bytes of its body in `seconds` since its headers."""

    received: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


def comparison_due(policy: UpstreamPolicySettings, progress: Progress, remaining: int) -> bool:
    """Whether a transfer this far along, with `remaining` bytes to go, is slow enough to be compared: it has run
    `compare_after` seconds, and at its rate so far would need longer than that again."""
    if policy.compare_after <= 0 or policy.relative_min_rate <= 0:
        return False
    if progress.seconds < policy.compare_after or remaining < COMPARE_MIN_REMAINING:
        return False
    rate = progress.rate
    return rate <= 0 or remaining / rate > policy.compare_after


async def compare_with(
    pool: UpstreamPool,
    download: Download,
    target: TargetFor,
    sending: Upstream,
    other: Upstream,
    size: int,
    progress: Callable[[], Progress],
) -> str | None:
    """Why the transfer from `sending` (of a file of `size` bytes) should go on from `other` (the words of the
    failure it is left with), or None when it should not: `other` was not faster by far, could not say, or has
    other bytes. Never raises for `other`'s failures (a failed request rests it as any other would)."""
    policy = pool.policy
    length = min(COMPARE_BYTES, size)
    # The range must come at least this fast for `other` to take over: past that time it cannot any more.
    needed = progress().rate / policy.relative_min_rate
    within = min(policy.rate_window, length / needed) if needed > 0 else policy.rate_window
    name = download.final_path.name
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            sample = await fetch_range(pool, lambda upstream: target(other) if upstream is other else None, 0, length)
    except TimeoutError:
        log.info("%s is slow; %s could not send %d bytes of it fast enough to take over", name, other.name, length)
        return None
    except (RangesRefused, UpstreamsUnavailable, UpstreamNotFound, UpstreamRefused) as exc:
        log.info("%s is slow; comparing it with %s told nothing: %s", name, other.name, exc)
        return None
    seconds = max(time.monotonic() - started, 1e-6)
    other_rate = len(sample.body) / seconds
    if sample.size != size:
        log.warning("%s: %s gives it %d bytes, %s %d: no take-over", name, other.name, sample.size, sending.name, size)
        return None
    here = await download.read_written(len(sample.body))
    if sample.body[: len(here)] != here:
        log.warning("%s: %s sends other first bytes than %s: no take-over", name, other.name, sending.name)
        return None
    now = progress()
    floor = policy.relative_min_rate * other_rate
    if now.rate >= floor:
        log.info(
            "%s: %s sends %.0f B/s, %s sent a range at %.0f B/s: %s goes on",
            name,
            sending.name,
            now.rate,
            other.name,
            other_rate,
            sending.name,
        )
        return None
    share = f"{policy.relative_min_rate:.0%}"
    return (
        f"sending {now.rate:.0f} B/s, under {share} of the {other_rate:.0f} B/s at which {other.name} sent"
        f" {len(sample.body)} bytes of {name}"
    )
