"""Who may use the service: optional HTTP basic auth for reads, a bearer token for the admin API.

Reads are open unless `access.users` lists users; then every route but the health check (which load balancers
and `pkgcache start` call without credentials) and the admin API (which has its own token) asks for them.
Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from pkgcache.http.responses import plain_error

OPEN_PATHS = frozenset({"/-/health"})
ADMIN_PREFIX = "/-/admin/"
READ_REALM = 'Basic realm="pkgcache", charset="UTF-8"'
ADMIN_REALM = 'Bearer realm="pkgcache-admin"'
# Compared against when the user is unknown, so that a wrong name takes as long as a wrong password.
_NO_SUCH_USER = "\x00" * 32


def _same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None if there is no usable one."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # Base64 is ASCII: anything else (a header's non-UTF-8 bytes, "ÿ"...) makes the header unusable, not a 500.
        raw = encoded.strip().encode("ascii")
        decoded = base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        return None
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else None


def check_user(users: dict[str, str], header: str | None) -> bool:
    credentials = basic_credentials(header)
    if credentials is None:
        return False
    user, password = credentials
    expected = users.get(user)
    matches = _same_secret(password, expected if expected is not None else _NO_SUCH_USER)
    return matches and expected is not None


def needs_credentials(users: dict[str, str], request: web.BaseRequest) -> bool:
    """Whether a read must be refused for want of a valid user (reads are open when no users are configured)."""
    if not users or request.path in OPEN_PATHS or request.path.startswith(ADMIN_PREFIX):
        return False
    return not check_user(users, request.headers.get("Authorization"))


def admin_refusal(request: web.Request, token: str) -> web.Response | None:
    """The answer refusing an admin request (401 without a bearer token, 403 with a wrong one), or None."""
    given = bearer_token(request.headers.get("Authorization", ""))
    if given is None:
        return plain_error(
            401, "the admin API needs 'Authorization: Bearer <admin token>'", **{"WWW-Authenticate": ADMIN_REALM}
        )
    if not _same_secret(given, token):
        return plain_error(403, "wrong admin token")
    return None


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None if there is no usable one (a header's bytes that
    are not UTF-8 arrive as lone surrogates, which no configured token has and which cannot be compared)."""
    scheme, _, given = header.partition(" ")
    token = given.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return token
