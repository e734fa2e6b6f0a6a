"""pkgcache itself, started for a test: in-process on the shared background loop, or as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pkgcache.config import Settings, load_settings
from pkgcache.http.fast_path import ServiceRunner
from pkgcache.service.app import create_app
from tests.fakes.pypi_upstreams import public_stand_ins
from tests.support import Answer, BackgroundLoop, http_get


@dataclass
class RunningCache:
    """A pkgcache serving on loopback."""

    url: str
    settings: Settings
    runner: web.AppRunner
    loop: BackgroundLoop

    @property
    def index_url(self) -> str:
        return f"{self.url}/pypi/simple/"

    @property
    def data_dir(self) -> Path:
        return self.settings.server.data_dir

    def get(self, path: str, headers: Mapping[str, str | bytes] | None = None, method: str = "GET") -> Answer:
        return http_get(self.url + path, headers, method)

    def downloads_in_flight(self) -> int:
        return int(json.loads(self.get("/-/status").body)["downloads_in_flight"])

    def wait_for_downloads_to_end(self, deadline_seconds: float = 30) -> None:
        """Until no download is in flight (a download ends after its clients may have been answered: a client it
        cut goes on while it tries the next upstream, cleans up and records its outcome)."""
        deadline = time.monotonic() + deadline_seconds
        while self.downloads_in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.downloads_in_flight() == 0, "a download is still in flight"

    def stop(self) -> None:
        self.loop.run(self.runner.cleanup())


def cache_settings(data_dir: Path, pypi_upstreams: list[Any], **sections: dict[str, Any]) -> Settings:
    """Settings for a pkgcache under test. The official-like fakes' files hosts, which stand in for a public host,
    are allowed (`public_stand_ins`) unless the test gives `allowed_hosts` itself."""
    server = {"host": "127.0.0.1", "port": 1, "data_dir": data_dir, **sections.pop("server", {})}
    pypi = {"upstreams": pypi_upstreams, **sections.pop("pypi", {})}
    upstream = {
        "cooldown": 30,
        "connect_timeout": 2,
        "read_timeout": 5,
        "allowed_hosts": public_stand_ins(),
        **sections.pop("upstream", {}),
    }
    return load_settings(None, server=server, pypi=pypi, upstream=upstream, **sections)


def start_cache(loop: BackgroundLoop, settings: Settings) -> RunningCache:
    async def start() -> tuple[web.AppRunner, int]:
        runner = ServiceRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, port

    runner, port = loop.run(start())
    return RunningCache(f"http://127.0.0.1:{port}", settings, runner, loop)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CacheProcess:
    """`pkgcache serve` as a real process, for what only a process shows (being killed, signals)."""

    def __init__(self, data_dir: Path, *args: str, timeout: float = 20, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "pkgcache",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            *args,
        ]
        self.log_path = data_dir.parent / f"pkgcache-{self.port}.log"
        self._log = self.log_path.open("wb")
        # As in cache_settings: the stand-ins for public files hosts are allowed, unless the test names its own.
        stand_ins = {"PKGCACHE_UPSTREAM__ALLOWED_HOSTS": ",".join(public_stand_ins())} if public_stand_ins() else {}
        env = {**stand_ins, **os.environ}
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pkgcache exited: {self.log_path.read_text()}")
            try:
                if http_get(self.url + "/-/health", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("pkgcache did not become healthy")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def terminate(self) -> int:
        self.process.terminate()
        code = self.process.wait(30)
        self._log.close()
        return code
