"""The hit path: a fresh project page in memory, answered before aiohttp routes the request.

Installers ask for project pages far more often than for anything else, and a cached page is pre-rendered, so
what a hit costs is mostly aiohttp's routing and handler plumbing (BENCHMARKS.md: about a fifth of the page rate).
`ServiceRunner` serves the application like aiohttp's AppRunner, but its server first offers each request to
`HitPath.answer`, which recognises `GET /pypi/simple/<name>/` by its raw path and asks `PypiRoutes.page_hit`, the
same code the page route starts with. Anything it does not answer (another path, a query string, a page not
fresh in memory, an unacceptable Accept header) goes the usual way, unchanged.

It is only installed when reads need no credentials. It needs no path check of its own: the name it looks up
must be a key of the index's memory, and those are all normalised project names.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from pkgcache.http.request_cycle import RequestCycle
from pkgcache.pypi.routes import PypiRoutes

PAGES_PREFIX = "/pypi/simple/"

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class HitPath:
    def __init__(self, routes: PypiRoutes, cycle: RequestCycle) -> None:
        self.routes = routes
        self.cycle = cycle
        self.answered = 0  # how many requests it took (tests look at it)

    def answer(self, request: web.Request) -> web.Response | None:
        path = request.raw_path
        if not (path.startswith(PAGES_PREFIX) and path.endswith("/") and request.method == "GET"):
            return None  # a query string, too, ends the raw path with something else than "/"
        started = time.monotonic()
        response = self.routes.page_hit(request, path[len(PAGES_PREFIX) : -1])
        if response is not None:
            self.answered += 1
            self.cycle.account(request, response, response.status, started)
        return response

    def in_front_of(self, handler: Handler) -> Handler:
        answer = self.answer

        async def front(request: web.BaseRequest) -> web.StreamResponse:
            response = answer(request)  # type: ignore[arg-type]  # the application's requests are web.Request
            if response is not None:
                return response
            return await handler(request)

        return front


HIT_PATH_KEY = web.AppKey("hit_path", HitPath)


class ServiceRunner(web.AppRunner):
    """aiohttp's AppRunner, with the application's hit path (if it has one) in front of its router."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        hit_path = self.app.get(HIT_PATH_KEY)
        if hit_path is not None:
            server.request_handler = hit_path.in_front_of(server.request_handler)
        return server
