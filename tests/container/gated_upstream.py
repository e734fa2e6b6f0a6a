"""A TUNA-like fake mirror that can hold chosen files half-sent until the test lets them go on.

The container tests stop pkgcache while it is downloading: a held file is certainly in flight when the stop
begins, whatever the machine's speed, and the test decides whether it then finishes or is never finished.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from aiohttp import web

from tests.fakes.dists import Dist
from tests.fakes.pypi_upstreams import FILE_CT, TunaLikeUpstream


class Gate:
    """One held file: `reached` is set once its first half is sent; `open()` sends the rest."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._opened = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Let the held file go on (from any thread)."""
        if self._loop is None:
            raise RuntimeError("no download has reached this gate")
        self._loop.call_soon_threadsafe(self._opened.set)

    async def wait_open(self) -> None:
        # The loop is known before `reached` is set, so a test that saw `reached` can always open the gate.
        self._loop = asyncio.get_running_loop()
        self.reached.set()
        await self._opened.wait()


class GatedUpstream(TunaLikeUpstream):
    """TunaLikeUpstream whose files named in `hold()` stop halfway until their gate opens."""

    def __init__(self, dists: Iterable[Dist] = ()) -> None:
        super().__init__(dists)
        self._gates: dict[str, Gate] = {}

    def hold(self, filename: str) -> Gate:
        """From now on, a GET of `filename` sends half of it and waits at the returned gate."""
        gate = Gate()
        self._gates[filename] = gate
        return gate

    async def serve_file(self, request: web.Request) -> web.StreamResponse:
        gate = self._gates.get(request.path.rpartition("/")[2])
        if gate is None or request.method != "GET" or "Range" in request.headers:
            return await super().serve_file(request)
        data = next(d.data for d in self.dists if self.file_path(d) == request.path)
        response = web.StreamResponse(headers={"Content-Type": FILE_CT, "Content-Length": str(len(data))})
        await response.prepare(request)
        half = len(data) // 2
        await response.write(data[:half])
        await gate.wait_open()
        await response.write(data[half:])
        await response.write_eof()
        return response
