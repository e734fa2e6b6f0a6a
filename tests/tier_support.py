"""What the tier tests share: a child pkgcache over a parent pkgcache, and `Wire`, which records what goes between.

`TierBuilder` (the `tier_builder` fixture) starts the parent, the child and the Wires between them with the tier
tests' names and User-Agent, and stops the Wires when the test ends (`make_cache` stops the pkgcaches after them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.cache_service import RunningCache
from tests.fakes.server import FakeServer
from tests.support import BackgroundLoop

CHILD_AGENT = "pkgcache-child/test"
PARENT = {"node_name": "central-1", "tier": "central"}
CHILD = {"node_name": "office-1", "tier": "office"}
JSON_PAGE = {"Accept": "application/vnd.pypi.simple.v1+json"}
# The PyPI upstreams of a pkgcache that serves conda alone: a closed port, never asked.
CLOSED_PYPI = ["http://127.0.0.1:9/simple/"]
# Headers a pass-through must not copy: they describe one connection, or are set again by aiohttp.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Exchange:
    """One request the child sent its parent, and the parent's answer."""

    path: str
    request_headers: CIMultiDict[str]
    status: int
    headers: CIMultiDict[str]
    method: str = "GET"


class Wire(FakeServer):
    """Passes every request to `target` unchanged and records each exchange (see Exchange).

    Its `faults` make the parent look down: `fail_mode = "reset"` drops every connection.
    """

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.exchanges: list[Exchange] = []
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        async with self._session.request(
            request.method, self.target + request.path_qs, headers=headers, allow_redirects=False
        ) as answer:
            body = await answer.read()
            kept = CIMultiDict((k, v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP)
            self.exchanges.append(
                Exchange(request.path, CIMultiDict(request.headers), answer.status, kept, request.method)
            )
            # The status line's reason is not passed on (a proxy between tiers may drop it; HTTP/2 has none).
            return web.Response(status=answer.status, body=body if request.method != "HEAD" else None, headers=kept)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        await super().stop()

    def to(self, suffix: str) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.path.endswith(suffix)]


def pypi_parent(url: str) -> dict[str, str]:
    """A child's `[pypi] upstreams` entry for the pkgcache (or Wire) at `url`, named "parent"."""
    return {"name": "parent", "url": f"{url}/pypi/simple/"}


def conda_parent(url: str) -> str:
    """A child's `[conda] upstreams` entry for the pkgcache (or Wire) at `url`: the short form, its /conda/ base."""
    return f"{url}/conda/"


class TierBuilder:
    """Starts a tier test's pkgcaches through `make_cache`, and its Wires, which `stop_wires` stops."""

    def __init__(self, make_cache: Callable[..., RunningCache], bg_loop: BackgroundLoop) -> None:
        self._make_cache = make_cache
        self._bg_loop = bg_loop
        self._wires: list[Wire] = []

    def parent(self, pypi_upstreams: list[Any], **sections: Any) -> RunningCache:
        """A pkgcache named central-1, of the tier central."""
        return self._make_cache(pypi_upstreams, server=PARENT, **sections)

    def wire(self, target: str) -> Wire:
        """A started Wire passing requests on to `target` (a pkgcache's URL)."""
        wire = Wire(target)
        self._bg_loop.run(wire.start())
        self._wires.append(wire)
        return wire

    def child(self, pypi_upstreams: list[Any], **sections: Any) -> RunningCache:
        """A pkgcache named office-1, of the tier office, whose upstream requests carry CHILD_AGENT (the fakes'
        logs tell its requests from the parent's by it); an `upstream` section given is added to it."""
        upstream = {"user_agent": CHILD_AGENT, **sections.pop("upstream", {})}
        return self._make_cache(pypi_upstreams, server=CHILD, upstream=upstream, **sections)

    def stop_wires(self) -> None:
        for wire in self._wires:
            self._bg_loop.run(wire.stop())
        self._wires.clear()
