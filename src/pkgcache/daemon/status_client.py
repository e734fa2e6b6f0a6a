"""Asking a running instance over plain HTTP: its health check and its status, as JSON.

The standard library's http.client, with no proxy from the environment: this is our own service, usually on
loopback, and a command should not need aiohttp's start-up cost to ask it one question.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from pkgcache.daemon.errors import DaemonError


def local_url(host: str, port: int) -> str:
    """A URL this machine can reach the instance at (a wildcard listen address means loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def get_json(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET a JSON object; DaemonError when the answer is not a 200 with a JSON object."""
    connection = _connection_for(url, timeout)
    try:
        connection.request("GET", _path_of(url), headers={"Accept": "application/json", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise DaemonError(f"{url} answered HTTP {response.status}")
    try:
        value = json.loads(body)
    except ValueError:
        raise DaemonError(f"{url} did not answer JSON") from None
    if not isinstance(value, dict):
        raise DaemonError(f"{url} did not answer a JSON object")
    return value


def health_ok(base_url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        get_json(base_url + "/-/health", timeout=1.0, headers=headers)
    except (OSError, DaemonError, http.client.HTTPException):
        return False
    return True


def _connection_for(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
