"""A replica's way to the primary: a request it may not answer itself, passed on whole over the primary's private
socket, and the primary's answer relayed back as it arrives (a download streams through while it downloads).

The primary logs and counts these requests; the replica does neither, so each request appears once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from pkgcache.http.responses import plain_error, stream_body

log = logging.getLogger(__name__)

# Headers that describe one connection, not the message: never passed on (RFC 9110, 7.6.1), nor Host.
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
        "host",
        "content-length",
    }
)
# Passed on as they are: a download may be silent while the upstream is slow, so only connecting is bounded here.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
MAX_FORWARDED_BODY = 1024 * 1024
_ORIGIN = "http://pkgcache-primary"


class Forwarder:
    """Relays requests to the primary; one connection pool for the replica's life."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.UnixConnector(path=self.address, limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
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
        try:
            answer = await self._session.request(
                request.method,
                URL(_ORIGIN + request.raw_path, encoded=True),
                headers=_passed_on(request.headers),
                data=body,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("the primary worker did not answer %s %s: %s", request.method, request.path, exc)
            return plain_error(
                503, "pkgcache's primary worker is not answering; try again shortly", **{"Retry-After": "2"}
            )
        async with answer:
            return await _relay(request, answer)


async def _relay(request: web.Request, answer: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=_passed_on(answer.headers))
    if answer.content_length is not None:
        response.content_length = answer.content_length
    await response.prepare(request)
    if request.method == "HEAD" or answer.status in (204, 304):
        await response.write_eof()
        return response
    # The primary cuts its answer short when a download fails its check: ours is cut too, never left looking whole.
    return await stream_body(request, response, answer.content.iter_any(), cut_on=(TimeoutError, aiohttp.ClientError))


def _passed_on(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in _HOP_BY_HOP)
