"""Upstreams' credentials on the wire: HTTP basic auth for a mirror whose reads need it (a central pkgcache with
`[access] users`, an internal Artifactory or Nexus).

The configuration gives an upstream a user and password (`config._UpstreamCredentials`: its own keys, or
`user:password@` in its URLs, taken out of them). They belong to the origins of that upstream's URLs (scheme, host,
port), not to its URLs as written: a page's file links, a conda index's packages, a parent pkgcache's
`/pypi/files/...` are all built from an upstream's answer, whose URL aiohttp gives without any credentials. So the
one client session every upstream request goes through (`pool.make_client_session`) has a middleware that looks at
each request, each hop of a redirect too, and adds `Authorization` when its origin is one of those, and never
otherwise: a page linking files on another host, or a redirect there, sends that host nothing. A request that
carries credentials of its own (a link's own `user:password@`) keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from yarl import URL

from pkgcache.config import Origin, format_origin, normalise_host


class OriginCredentials:
    """The `Authorization` header each origin's requests carry. Its repr names the origins and users only."""

    def __init__(self, by_origin: Mapping[Origin, tuple[str, str]] | None = None) -> None:
        self._users = {origin: user for origin, (user, _) in (by_origin or {}).items()}
        self._headers = {
            origin: aiohttp.encode_basic_auth(user, password) for origin, (user, password) in (by_origin or {}).items()
        }

    def __bool__(self) -> bool:
        return bool(self._headers)

    def __repr__(self) -> str:
        given = ", ".join(f"{user}:***@{format_origin(origin)}" for origin, user in self._users.items())
        return f"OriginCredentials({given})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OriginCredentials) and self._headers == other._headers

    def __hash__(self) -> int:
        return hash(frozenset(self._headers.items()))

    def header_for(self, url: URL) -> str | None:
        """The `Authorization` value for a request to `url`, or None when its origin has no credentials."""
        if not self._headers or url.scheme not in ("http", "https"):
            return None
        return self._headers.get((url.scheme, normalise_host(url.raw_host or ""), url.port))

    def user_for(self, url: str) -> str | None:
        """The user whose credentials go to `url`'s origin (to show it as `user:***@`), or None."""
        parsed = URL(url)
        if parsed.scheme not in ("http", "https"):
            return None
        return self._users.get((parsed.scheme, normalise_host(parsed.raw_host or ""), parsed.port))


def credentials_middleware(credentials: OriginCredentials) -> aiohttp.ClientMiddlewareType:
    """A client middleware adding an origin's credentials to each request (each hop of a redirect) to it."""

    async def authorize(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        if aiohttp.hdrs.AUTHORIZATION not in request.headers:
            header = credentials.header_for(request.url)
            if header is not None:
                request.headers[aiohttp.hdrs.AUTHORIZATION] = header
        return await handler(request)

    return authorize
