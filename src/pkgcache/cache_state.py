"""How a request was answered from the cache: the one vocabulary of handlers, headers, logs and stats."""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Iterator


class CacheState(enum.StrEnum):
    HIT = "hit"  # served from the cache, fresh
    MISS = "miss"  # fetched from an upstream for this request
    STALE = "stale"  # served from the cache past its time-to-live (revalidating, or no upstream answered)
    OFFLINE = "offline"  # the offline view: only what the cache holds, no upstream asked (gate/offline.py)


# --- revalidation asked for by a request -------------------------------------------------------------------------
#
# `pkgcache seed` must resolve against current pages and repodata, not the stale copies every other client is
# served while they are revalidated in the background. It asks with this header, once per page or index file per
# run. Not Cache-Control: pip sends `max-age=0` on every page request, and honouring that would revalidate a page
# on every install. The handler marks its request's context (`revalidation`); the index layers look
# (`revalidation_due`), and the marking ends with the request.

REVALIDATE_HEADER = "X-Pkgcache-Revalidate"
# A page or index file validated this recently is served as it is, however often revalidation is asked for.
REVALIDATE_FLOOR_SECONDS = 1.0

_revalidate_asked: contextvars.ContextVar[bool] = contextvars.ContextVar("pkgcache_revalidate", default=False)


@contextlib.contextmanager
def revalidation(asked: bool) -> Iterator[None]:
    """While in `with`: whether this request asked for what it reads to be revalidated first."""
    token = _revalidate_asked.set(asked)
    try:
        yield
    finally:
        _revalidate_asked.reset(token)


def revalidation_asked() -> bool:
    """Whether this request asked for current index files (a file made from another one is then made anew)."""
    return _revalidate_asked.get()


def revalidation_due(age: float) -> bool:
    """Whether a copy validated `age` seconds ago must be revalidated before this request's answer."""
    return _revalidate_asked.get() and age >= REVALIDATE_FLOOR_SECONDS


# --- the age of a copy ------------------------------------------------------------------------------------------
#
# A copy stamped later than now by more than a clock's slip was fetched while the clock was ahead (and has since
# been stepped back): how old it is cannot be known. Taken as "now - fetched_at", it would pass for fresh until the
# clock caught up, days or weeks later, and never be revalidated; it is taken as older than any time-to-live
# instead, so the next request revalidates it (and the copy then gets a fetch time of the clock's).
CLOCK_SLIP_SECONDS = 60.0
UNKNOWN_AGE_SECONDS = 10 * 365 * 86400.0  # finite: it goes into Age headers and arithmetic


def age_since(fetched_at: float, now: float) -> float:
    """Seconds since `fetched_at` (a time.time()), at `now`; UNKNOWN_AGE_SECONDS when it lies in the future."""
    elapsed = now - fetched_at
    if elapsed < -CLOCK_SLIP_SECONDS:
        return UNKNOWN_AGE_SECONDS
    return max(0.0, elapsed)
