"""What happens around every request: the path check, basic auth, clear errors, the request counters and the
access line.

It wraps each handler when its route is added (`add_get`, `add_post`, and `add_fallback` for paths no route
matches) rather than being an aiohttp middleware: aiohttp builds a middleware chain for every request, and on a
cached page that chain cost more than pkgcache's own work (BENCHMARKS.md). Inside, a hostile path is refused
before the handler sees it, auth is checked only when users are configured, and every answer (refusals included)
is counted and logged.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from pkgcache.http.access_log import AccessLog
from pkgcache.http.auth import READ_REALM, needs_credentials
from pkgcache.http.responses import (
    CACHE_STATE,
    CLIENT_GONE,
    STARTED_RESPONSE,
    UPSTREAM_USED,
    SentFile,
    error_for,
    note_client_gone,
    plain_error,
)
from pkgcache.node_identity import (
    LOOP_HEADER,
    MAX_CHAIN,
    REQUEST_CHAIN,
    UPSTREAM_FAILED_HEADER,
    chain_of,
)
from pkgcache.stats import RequestStats
from pkgcache.storage.store import CacheIsReadOnly

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_PATH_LENGTH = 1024
LOOP_MESSAGE = (
    "this request comes from this very pkgcache: its configuration loops back to itself (an upstream, or the address "
    "of a load balancer in front of it, that reaches this instance)"
)
CHAIN_LOOP_MESSAGE = (
    "this request already came through this pkgcache, which asked another pkgcache for it: their upstreams make a "
    "loop (two that list each other, say), so it is not answered here again; ask your next upstream"
)
LONG_CHAIN_MESSAGE = (
    f"this request already came through {MAX_CHAIN} pkgcaches: their upstreams most likely make a loop, so it is not "
    "asked again from here; ask your next upstream"
)
# On a loop across pkgcaches: the caller asks its next upstream and rests none (node_identity.py).
_LOOP_HEADERS = {LOOP_HEADER: "1", UPSTREAM_FAILED_HEADER: "1", "Cache-Control": "no-store"}
# Encoded forms of the characters that could change a path's meaning once decoded: dot, slash, backslash, NUL.
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
# Every refusal below needs one of these: an escape, a backslash, a NUL, a dot segment or a doubled slash.
_WORTH_A_CLOSER_LOOK = re.compile(r"%|\\|\x00|/\.|//")


def hostile_path_reason(raw_path: str) -> str | None:
    """Why a request path is refused before routing, or None if it is acceptable."""
    path = raw_path.split("?", 1)[0]
    if len(path) > MAX_PATH_LENGTH:
        return "path too long"
    if not _WORTH_A_CLOSER_LOOK.search(path):
        return None  # the usual case, decided with one scan: nothing below could match
    if _ENCODED_SEPARATOR.search(path):
        return "encoded dots, slashes or NUL bytes are not allowed in paths"
    decoded = unquote(path)
    if "\x00" in decoded or "\\" in decoded:
        return "NUL bytes and backslashes are not allowed in paths"
    if any(segment in (".", "..") for segment in decoded.split("/")):
        return "relative path segments are not allowed"
    if "://" in decoded or decoded.startswith("//"):
        return "absolute URLs are not allowed as paths"
    return None


def body_bytes_sent(request: web.BaseRequest, response: web.StreamResponse | None) -> int:
    """How many body bytes a response sent (or will send, for a plain body not yet written)."""
    if response is None:
        return 0
    if type(response) is web.Response and response.status == 200 and request.method == "GET":
        return response.content_length or 0  # the common case, decided first
    if isinstance(response, SentFile):
        return response.body_bytes
    if response.prepared:
        # Streamed by its handler (a download being followed). Once finished, aiohttp's count is what went on the
        # wire, headers included; with a declared length, that length is the body.
        finished = response.body_length > 0
        if finished and response.content_length is not None:
            return response.content_length
        return response.body_length
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    return response.content_length or 0


class RequestCycle:
    """Wraps every handler of the application; the wrapping is done once, when a route is added."""

    def __init__(
        self,
        access_log: AccessLog,
        stats: RequestStats,
        users: dict[str, str],
        hand_over: Handler | None = None,
        loop_mark: str = "",
    ) -> None:
        self.access_log = access_log
        self.stats = stats
        self.users = users
        # In a worker that only reads the cache: how a request it cannot answer goes to the worker that writes.
        self.hand_over = hand_over
        # What this instance's own upstream requests carry in their User-Agent (config.ServerConfig.loop_mark).
        self.loop_mark = loop_mark

    def wrap(self, handler: Handler) -> Handler:
        stats, users, hand_over, account, loop_mark = (
            self.stats,
            self.users,
            self.hand_over,
            self.account,
            self.loop_mark,
        )

        @functools.wraps(handler)
        async def around(request: web.Request) -> web.StreamResponse:
            # Wall-clock time, read once here and once at the end: reading a clock is dear on some hypervisors
            # (bench/analysis.md, "The page figure across machines"), so one reading serves the whole request.
            started = time.time()
            status = 500
            response: web.StreamResponse | None = None
            handed_over = False
            chain = chain_of(request.headers.get("User-Agent", ""))
            # Upstream requests made for this one carry its chain on (node_identity.py).
            token = REQUEST_CHAIN.set(chain) if chain else None
            try:
                reason = hostile_path_reason(request.raw_path)
                if reason is not None:
                    response = plain_error(400, f"refused path: {reason}")
                elif loop_mark and chain and chain[0] == loop_mark:
                    response = plain_error(508, LOOP_MESSAGE)
                elif loop_mark and loop_mark in chain:
                    response = plain_error(508, CHAIN_LOOP_MESSAGE, **_LOOP_HEADERS)
                elif len(chain) >= MAX_CHAIN:
                    response = plain_error(508, LONG_CHAIN_MESSAGE, **_LOOP_HEADERS)
                elif users and needs_credentials(users, request):
                    response = plain_error(
                        401, "this pkgcache asks for a user name and password", **{"WWW-Authenticate": READ_REALM}
                    )
                else:
                    try:
                        response = await _answer(request, handler)
                    except CacheIsReadOnly:
                        if hand_over is None:
                            raise
                        # Answered, logged and counted by the worker that writes: not here too.
                        handed_over = True
                        stats.handed_over += 1
                        response = await hand_over(request)
                status = 499 if request.get(CLIENT_GONE) else response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if token is not None:
                    REQUEST_CHAIN.reset(token)
                if not handed_over:
                    account(request, response, status, started)

        return around

    def account(self, request: web.Request, response: web.StreamResponse | None, status: int, started: float) -> None:
        """Count a request in its side's stats and write its access line."""
        size = body_bytes_sent(request, response)
        cache_state = request.get(CACHE_STATE)
        self.stats.record(request.path, status, cache_state, size)
        now = time.time()
        self.access_log.record(
            request.method,
            request.path,
            status,
            cache_state or "-",
            size,
            max(0.0, now - started),
            request.get(UPSTREAM_USED, "-"),
            now,
        )


REQUEST_CYCLE_KEY = web.AppKey("request_cycle", RequestCycle)


def add_get(app: web.Application, path: str, handler: Handler) -> None:
    """Mount a GET (and HEAD) handler inside the request cycle. Every route of pkgcache is added this way."""
    app.router.add_get(path, app[REQUEST_CYCLE_KEY].wrap(handler))


def add_post(app: web.Application, path: str, handler: Handler) -> None:
    app.router.add_post(path, app[REQUEST_CYCLE_KEY].wrap(handler))


def add_fallback(app: web.Application) -> None:
    """The last route: whatever no other route matched, answered inside the cycle, so it is logged.

    A 404 or 405 here; in a worker that hands requests over, the other worker's answer (the operator's pages, the
    admin API and the stats live there).
    """
    cycle = app[REQUEST_CYCLE_KEY]
    handler = _no_such_route if cycle.hand_over is None else _hand_over
    # [\s\S]: a path with an (encoded) line break in it is answered and logged here too.
    app.router.add_route("*", r"/{tail:[\s\S]*}", cycle.wrap(handler))


async def _hand_over(request: web.Request) -> web.StreamResponse:
    raise CacheIsReadOnly("answered by the worker that writes the cache")


async def _no_such_route(request: web.Request) -> web.StreamResponse:
    # Only requests no route took get here, so this walk over the routes costs the common path nothing.
    this = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not this:
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
    if allowed:
        return plain_error(405, f"{request.method} is not allowed here", Allow=", ".join(sorted(allowed)))
    return plain_error(404, "no such page")


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer; failures of the shared layers it did not answer itself become clear HTTP errors."""
    try:
        response = await handler(request)
    except (web.HTTPException, CacheIsReadOnly):
        raise
    except ConnectionResetError:
        note_client_gone(request)
        return request.get(STARTED_RESPONSE) or plain_error(499, "client closed the connection")
    except Exception as exc:
        started = request.get(STARTED_RESPONSE)
        if started is not None:
            # Its headers are out: a second answer would land inside the first one's body. Cut it instead.
            log.warning("cutting %s short after its answer started: %r", request.path, exc)
            if request.transport is not None:
                request.transport.abort()
            return started
        mapped = error_for(exc)
        if mapped is None:
            log.exception("unexpected error on %s", request.path)
            return plain_error(500, f"internal error: {type(exc).__name__}")
        return mapped
    if isinstance(response, SentFile) and not response.prepared:
        # Sent here rather than after the cycle returns (sending it again later is a no-op), so that the counters
        # and the access line see the bytes that really went out: sendfile leaves aiohttp's count at zero.
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            note_client_gone(request)
    return response
