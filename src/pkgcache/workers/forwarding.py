"""A replica's way to the primary: a request it may not answer itself, passed on whole over the primary's private
socket, and the primary's answer relayed back as it arrives (a download streams through while it downloads).

The primary logs and counts these requests; the replica does neither, so each request appears once.

A change (any request but GET and HEAD) whose client has hung up is not passed on: it may have waited long in
this replica (stopped, or stuck), and its sender, having given up, may have asked for something else since, which
this one, done late, would undo. (A client that shuts down its sending side while waiting for the answer counts as
gone: HTTP clients do not.)

A download may be silent for minutes while its upstream is slow, so a hand-over has no deadline of its own, with
one exception: the checks and status pages a machine polls (`/-/health`, `/metrics`...) are given `limits` by the
application. Past its limit such a request is answered at once (a primary stopped, or stuck, answers nothing), and
its connection to the primary is closed rather than held for the next ten minutes by each poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from pkgcache.http.responses import plain_error, start_response, stream_body

log = logging.getLogger(__name__)

# Headers that describe one connection, not the message: never passed on (RFC 9110, 7.6.1). Host is passed on:
# what the primary renders from it (the page's copy-paste settings, redirects) must name the address the client used.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# A hand-over that failed before the primary could have taken it (its socket's queue full, a pooled connection it
# had closed) is tried again after these pauses, rather than answered 503 because of pkgcache's own plumbing.
RETRY_PAUSES = (0.02, 0.1, 0.3, 1.0)
MAX_CONNECTIONS_TO_PRIMARY = 512
# Passed on as they are: a download may be silent while the upstream is slow, so only connecting is bounded here.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
MAX_FORWARDED_BODY = 1024 * 1024
_ORIGIN = "http://pkgcache-primary"


@dataclass(frozen=True)
class HandOverLimit:
    """How long a read of one path may wait for the primary's whole answer, and what to answer instead."""

    seconds: float
    no_answer: Callable[[], web.StreamResponse]


def primary_not_answering() -> web.Response:
    return plain_error(503, "pkgcache's primary worker is not answering; try again shortly", **{"Retry-After": "2"})


class Forwarder:
    """Relays requests to the primary; one connection pool for the replica's life."""

    def __init__(self, address: str, limits: Mapping[str, HandOverLimit] | None = None) -> None:
        self.address = address
        self.limits = dict(limits or {})  # path -> its limit, for GET and HEAD
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # A burst of misses queues for these rather than opening a connection (two descriptors) each; only
        # connecting is bounded in time, so waiting for one of them is never answered 503.
        connector = aiohttp.UnixConnector(path=self.address, limit=MAX_CONNECTIONS_TO_PRIMARY)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None, "Forwarder.start() was not awaited"
        body = await request.read() if request.body_exists else None
        if body is not None and len(body) > MAX_FORWARDED_BODY:
            return plain_error(413, "request body too large")
        if request.method not in ("GET", "HEAD") and _client_gone(request):
            log.warning("not passing %s %s on to the primary: its client has gone", request.method, request.path)
            return plain_error(499, "the client closed the connection before the request was passed on")
        limit = self.limits.get(request.path) if request.method in ("GET", "HEAD") else None
        if limit is not None:
            return await self._forward_within(request, limit)
        answer = await self._send(request, body)
        if answer is None:
            return primary_not_answering()
        async with answer:
            return await _relay(request, answer)

    async def _forward_within(self, request: web.Request, limit: HandOverLimit) -> web.StreamResponse:
        """The primary's whole answer (a small one: a check, a status page) within the limit, or `no_answer`."""
        try:
            async with asyncio.timeout(limit.seconds):
                answer = await self._send(request, None)
                if answer is None:
                    return limit.no_answer()
                async with answer:
                    body = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Leaving the block closed the connection: the primary, if it wakes, answers nobody.
            log.warning(
                "the primary worker did not answer %s %s within %g s: %s",
                request.method,
                request.path,
                limit.seconds,
                exc or type(exc).__name__,
            )
            return limit.no_answer()
        headers = _passed_on(answer.headers)
        if request.method == "HEAD" and answer.content_length is not None:
            headers["Content-Length"] = str(answer.content_length)  # the GET's, as the primary said
        return web.Response(status=answer.status, reason=answer.reason, headers=headers, body=body or None)

    async def _send(self, request: web.Request, body: bytes | None) -> aiohttp.ClientResponse | None:
        """The primary's answer, tried again while the failure says the primary never took the request."""
        assert self._session is not None
        for pause in (*RETRY_PAUSES, None):
            try:
                return await self._session.request(
                    request.method,
                    URL(_ORIGIN + request.raw_path, encoded=True),
                    headers=_passed_on(request.headers),
                    data=body,
                    allow_redirects=False,
                )
            except (TimeoutError, aiohttp.ClientError) as exc:
                if pause is None or not _not_taken(exc, request.method):
                    log.warning("the primary worker did not answer %s %s: %s", request.method, request.path, exc)
                    return None
                await asyncio.sleep(pause)
        return None


def _client_gone(request: web.Request) -> bool:
    """Whether the client has closed its connection (what is left to read of it is the end)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        # A duplicate descriptor, peeked at: nothing is taken from what the connection has yet to read.
        with socket.socket(fileno=os.dup(sock.fileno())) as probe:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # connected, nothing more sent
    except OSError:
        return True  # reset


def _not_taken(exc: BaseException, method: str) -> bool:
    """Whether a failed hand-over can be sent again: never connected, or (for a read) a connection that had closed."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    idempotent = method in ("GET", "HEAD")
    return idempotent and isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))


async def _relay(request: web.Request, answer: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=_passed_on(answer.headers))
    if answer.content_length is not None:
        response.content_length = answer.content_length
    await start_response(request, response)
    if request.method == "HEAD" or answer.status in (204, 304):
        await response.write_eof()
        return response
    # The primary cuts its answer short when a download fails its check: ours is cut too, never left looking whole.
    return await stream_body(request, response, answer.content.iter_any(), cut_on=(TimeoutError, aiohttp.ClientError))


def _passed_on(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in _HOP_BY_HOP)
