"""The gate's answers: a refusal by the policy (403), a miss of the offline cache (404), or a miss of the offline
view shown while every upstream is down (503: it may come back), as exceptions.

They are aiohttp's HTTP exceptions, so a layer deep in a side's chain raises one and the route's client gets it
as it is. pip and uv show the reason phrase of a file they could not download (not the body), so the message is
in both, on one line the status line can carry.
"""

from __future__ import annotations

import re

from aiohttp import web

from pkgcache.gate.misses import not_held
from pkgcache.http.responses import CLIENT_RETRY_AFTER_SECONDS, UPSTREAMS_FAILED
from pkgcache.node_identity import refusal_headers

# Long enough for a rule, its reason and a date; status lines of this size pass every client and proxy tried.
MAX_REASON_CHARS = 480
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def reason_phrase(message: str) -> str:
    """The message as an HTTP reason phrase: one line, Latin-1 only (what HTTP/1.1 carries), bounded."""
    line = _CONTROL.sub(" ", message).strip()
    line = line.encode("latin-1", "replace").decode("latin-1")
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 3] + "..."


class Refused(web.HTTPForbidden):
    """A project or file the policy does not let through (marked so, for a pkgcache below this one: a child)."""

    def __init__(self, message: str) -> None:
        super().__init__(reason=reason_phrase(message), text=message + "\n", headers=refusal_headers(message))
        self.message = message


class NotInOfflineCache(web.HTTPNotFound):
    """Something an offline pkgcache does not hold (and will not fetch)."""

    def __init__(self, message: str) -> None:
        super().__init__(reason=reason_phrase(message), text=message + "\n", headers={"Cache-Control": "no-store"})
        self.message = message


class NotHeldWhileDown(web.HTTPServiceUnavailable):
    """Something the cache does not hold while every upstream of its side is down: asked for again soon, it may be
    fetched (the same Retry-After as the pool's own "every upstream is resting" answer)."""

    def __init__(self, message: str) -> None:
        headers = {"Cache-Control": "no-store", "Retry-After": str(CLIENT_RETRY_AFTER_SECONDS), **UPSTREAMS_FAILED}
        super().__init__(reason=reason_phrase(message), text=message + "\n", headers=headers)
        self.message = message


def offline_miss(what: str) -> NotInOfflineCache:
    return NotInOfflineCache(not_held(what, configured_offline=True)[1])


def refusal_error(status: int, message: str) -> web.HTTPException:
    """The exception answering a refusal: 404 for what an offline cache does not hold, 503 for what it does not
    hold while every upstream is down, else 403."""
    if status == 404:
        return NotInOfflineCache(message)
    if status == 503:
        return NotHeldWhileDown(message)
    return Refused(message)
