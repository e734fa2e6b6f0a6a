"""Asking a running instance over plain HTTP: its health check and its status, as JSON.

The standard library's http.client, with no proxy from the environment: this is our own service, usually on
loopback, and a command should not need aiohttp's start-up cost to ask it one question.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
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
    status, value = _get_json_answer(url, timeout, headers)
    if status != 200:
        raise DaemonError(f"{url} answered HTTP {status}")
    if value is None:
        raise DaemonError(f"{url} did not answer a JSON object")
    return value


@dataclass(frozen=True)
class Health:
    """What `/-/health` answered: ok, or unhealthy with the service's reason (service/health.py)."""

    ok: bool
    reason: str = ""


def ask_health(base_url: str, headers: dict[str, str] | None = None) -> Health | None:
    """The instance's health answer; None when it gives none (not listening yet, or not pkgcache's answer)."""
    try:
        status, value = _get_json_answer(base_url + "/-/health", 1.0, headers)
    except (OSError, http.client.HTTPException):
        return None
    if status == 200 and value is not None:
        return Health(ok=True)
    # A 503 saying "unhealthy" is an answer, not a silence: the service runs and says why it cannot serve.
    if status == 503 and value is not None and value.get("status") == "unhealthy":
        return Health(ok=False, reason=str(value.get("reason") or "no reason given"))
    return None


def _get_json_answer(url: str, timeout: float, headers: dict[str, str] | None) -> tuple[int, dict[str, Any] | None]:
    """The status of a GET and its body as a JSON object (None when it is not one)."""
    connection = _connection_for(url, timeout)
    try:
        connection.request("GET", _path_of(url), headers={"Accept": "application/json", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        value = json.loads(body)
    except ValueError:
        return response.status, None
    return response.status, value if isinstance(value, dict) else None


def _connection_for(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
