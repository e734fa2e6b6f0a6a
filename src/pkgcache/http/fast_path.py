"""The fast path: answers a side can give from memory, tried before aiohttp routes the request.

Installers ask for project pages far more often than for anything else, and a cached page is pre-rendered, so
what a hit costs is mostly aiohttp's routing and handler plumbing (BENCHMARKS.md: about a fifth of the page rate).
A side registers a `FastAnswer` for a path prefix (the PyPI side: fresh pages under `/pypi/simple/`); the
`ServiceRunner` puts `FastPath.answer` in front of the server's request handler, so a GET under that prefix is
offered to it first. Whatever it declines (None) goes the usual way, unchanged, through the router and the
request cycle.

A fast answer does no path check of its own: it must only answer for keys it holds in memory (normalised names,
for pages), which are safe by construction. It is only installed when reads need no credentials.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from pkgcache.http.library_internals import put_in_front_of_server, quiet_unparsable_requests
from pkgcache.http.request_cycle import RequestCycle

# The request, its raw path after the registered prefix, and the time (time.time()) it was taken; None declines.
FastAnswer = Callable[[web.Request, str, float], web.Response | None]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class FastPath:
    def __init__(self, cycle: RequestCycle) -> None:
        self.cycle = cycle
        self._answers: list[tuple[str, FastAnswer]] = []
        self.answered = 0  # how many requests it took (tests look at it)
        # Put on every fast answer, as aiohttp's on_response_prepare does on routed ones (the node's identity).
        self.headers: dict[str, str] = {}

    def register(self, prefix: str, answer: FastAnswer) -> None:
        self._answers.append((prefix, answer))

    def answer(self, request: web.Request) -> web.Response | None:
        if request.method != "GET":
            return None
        path = request.raw_path
        for prefix, answer in self._answers:
            if path.startswith(prefix):
                started = time.time()  # the one clock reading the answer uses (see the request cycle)
                response = answer(request, path[len(prefix) :], started)
                if response is not None:
                    response.headers.update(self.headers)
                    self.answered += 1
                    self.cycle.account(request, response, response.status, started)
                return response
        return None

    def in_front_of(self, handler: Handler) -> Handler:
        answer = self.answer

        async def front(request: web.BaseRequest) -> web.StreamResponse:
            response = answer(request)  # type: ignore[arg-type]  # the application's requests are web.Request
            if response is not None:
                return response
            return await handler(request)

        return front


FAST_PATH_KEY = web.AppKey("fast_path", FastPath)


class ServiceRunner(web.AppRunner):
    """aiohttp's AppRunner, with the application's fast path (if it has one) in front of its server's handler, and
    requests it cannot parse logged in one line each rather than a traceback."""

    async def setup(self) -> None:
        await super().setup()
        quiet_unparsable_requests()
        fast_path = self.app.get(FAST_PATH_KEY)
        if fast_path is not None:
            put_in_front_of_server(self, fast_path.in_front_of)
