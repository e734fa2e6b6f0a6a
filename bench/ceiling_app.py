"""The most a single aiohttp process can do here: one page held in memory, one file, no middleware, no logging.

python -m bench.ceiling_app PORT PAGE_FILE WHEEL_FILE asyncio|uvloop
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop
from aiohttp import web


def make_app(page: bytes, wheel: Path) -> web.Application:
    headers = {"Content-Type": "application/vnd.pypi.simple.v1+json"}

    async def page_handler(request: web.Request) -> web.Response:
        return web.Response(body=page, headers=headers)

    async def file_handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(wheel, chunk_size=256 * 1024)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/page/", page_handler)
    app.router.add_get("/file", file_handler)
    app.router.add_get("/-/health", health)
    return app


def main() -> None:
    port, page_file, wheel, loop = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    if loop == "uvloop":
        uvloop.install()
    # reuse_port: several copies may share the port, the kernel spreading connections between them.
    web.run_app(make_app(page_file.read_bytes(), wheel), host="127.0.0.1", port=port, access_log=None, print=None,
                reuse_port=True)  # fmt: skip


if __name__ == "__main__":
    main()
