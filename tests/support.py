"""Helpers shared by the tests: a background event loop and isolated pip/uv runs."""

from __future__ import annotations

import asyncio
import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

T = TypeVar("T")

UV = Path(sys.executable).parent / "uv"
CLIENT_TIMEOUT = 120.0


class BackgroundLoop:
    """An asyncio loop in a daemon thread, so sync tests can drive async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="bg-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def isolated_env(**extra: str) -> dict[str, str]:
    """os.environ without any pip/uv settings, so clients only see the index we name.

    This machine's pip config adds local wheel folders and extra indexes; leaving
    them in would let installs succeed without touching the server under test.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # pip reads no config file at all when this is /dev/null
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
    )
    # Loopback must never go through a proxy.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(extra)
    return env


def run_pip_install(
    index_url: str,
    target: Path | str,
    *reqs: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``pip install --target`` from one index only, with no cache."""
    cmd = [
        sys.executable, "-m", "pip", "install",
        "--target", str(target),
        "--index-url", index_url,
        "--no-cache-dir", "--no-input", "--progress-bar", "off",
        *extra_args, *reqs,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env or isolated_env(), capture_output=True, text=True, timeout=timeout)


def run_uv_install(
    index_url: str,
    target: Path | str,
    *reqs: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``uv pip install --target`` from one index only, with no cache."""
    cmd = [
        str(UV), "pip", "install",
        "--python", sys.executable,
        "--target", str(target),
        "--index-url", index_url,
        "--no-cache",
        *extra_args, *reqs,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env or isolated_env(), capture_output=True, text=True, timeout=timeout)


def installed_dists(target: Path | str) -> set[str]:
    """Normalised ``name==version`` of the dist-info folders in a --target dir."""
    found = set()
    for entry in Path(target).glob("*.dist-info"):
        name, _, version = entry.name.removesuffix(".dist-info").rpartition("-")
        found.add(f"{name.replace('_', '-').lower()}=={version}")
    return found


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def http_get(
    url: str, headers: Mapping[str, str | bytes] | None = None, method: str = "GET", timeout: float = 30
) -> Answer:
    """One plain HTTP request: no proxies from the environment, no redirects followed, no decompression. A header
    given as bytes goes out as those bytes (for values that are not UTF-8 or not ASCII)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, headers=dict(headers or {}))
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


async def fetch_concurrently(url: str, count: int) -> list[tuple[int, bytes]]:
    """`count` clients asking for `url` at the same moment: their statuses and bodies."""
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, bytes]:
            async with session.get(url) as response:
                return response.status, await response.read()

        return await asyncio.gather(*(one() for _ in range(count)))


def agent_of(request: Any) -> str:
    """The User-Agent of a request a fake recorded, without the loop mark pkgcache adds to it (" (+1a2b...)")."""
    agent = request.headers.get("User-Agent", "")
    return agent.split(" (+", 1)[0]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
