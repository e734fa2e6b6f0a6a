"""This node's identity on every answer: the `X-Pkgcache-Node` and `X-Pkgcache-Tier` headers (node_identity.py).

Routed answers get them when their headers are about to go out (aiohttp's `on_response_prepare`, which also covers
answers streamed by their handlers); the fast path's answers (pages from memory, which skip routing) get them from
the fast path itself. A child pkgcache reads them to recognise its parent; an operator, to see which node of a
cluster answered.
"""

from __future__ import annotations

from aiohttp import web

from pkgcache.http.fast_path import FAST_PATH_KEY
from pkgcache.node_identity import NodeIdentity

NODE_IDENTITY_KEY = web.AppKey("node_identity", NodeIdentity)


def install_identity_headers(app: web.Application, identity: NodeIdentity) -> None:
    """Put this node's identity headers on every answer of `app` (call it after the fast path is made)."""
    app[NODE_IDENTITY_KEY] = identity
    headers = identity.headers()

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        # Replaces rather than adds: an answer relayed from this node's primary worker already has them.
        response.headers.update(headers)

    app.on_response_prepare.append(stamp)
    fast_path = app.get(FAST_PATH_KEY)
    if fast_path is not None:
        fast_path.headers.update(headers)
