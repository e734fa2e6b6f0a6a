"""A file server with HTTP Range support that counts what it sends, and a `RangeReader` over it.

`RangeFileServer` serves named byte strings at `/files/<name>` through the fakes' `serve_content` (ETag, 206, 416,
suffix ranges), or ignores ranges when told to, as some mirrors do. `HttpRangeReader` is the simplest reader the
metadata module accepts: one GET with a `Range` header per call, answered through `range_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from pkgcache.pypi.wheel_metadata import RangeAnswer, range_answer
from tests.fakes.server import Content, FakeServer, serve_content

_MTIME = 1704067200.0  # 2024-01-01, fixed so validators are stable


class RangeFileServer(FakeServer):
    """Serves `files` (name -> bytes) at /files/<name>; `honour_ranges` False answers every GET with 200 and all."""

    def __init__(self, files: dict[str, bytes], *, honour_ranges: bool = True) -> None:
        super().__init__()
        self.files = dict(files)
        self.honour_ranges = honour_ranges
        self.bytes_sent = 0

    def url_of(self, name: str) -> str:
        return f"{self.url}/files/{name}"

    def range_headers(self) -> list[str | None]:
        """The Range header of every GET seen, in order (None for a GET without one)."""
        return [request.headers.get("Range") for request in self.requests if request.method == "GET"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.path.removeprefix("/files/")
        if name not in self.files:
            raise web.HTTPNotFound()
        body = self.files[name]
        if not self.honour_ranges:
            response: web.StreamResponse = web.Response(body=body, headers={"Accept-Ranges": "none"})
        else:
            response = await serve_content(request, Content(body, "application/octet-stream", _MTIME))
        if request.method == "GET" and response.content_length:
            self.bytes_sent += response.content_length
        return response


@dataclass
class HttpRangeReader:
    """Reads ranges of `url` with `session`, one GET each."""

    session: aiohttp.ClientSession
    url: str

    async def __call__(self, start: int | None, length: int) -> RangeAnswer:
        wanted = f"bytes=-{length}" if start is None else f"bytes={start}-{start + length - 1}"
        headers = {"Range": wanted, "Accept-Encoding": "identity"}
        async with self.session.get(self.url, headers=headers) as response:
            body = await response.read() if response.status == 206 else b""
            return range_answer(response.status, response.headers.get("Content-Range"), body)
