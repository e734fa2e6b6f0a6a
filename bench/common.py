"""Paths, ports, clean environments and small helpers shared by every part of the harness."""

from __future__ import annotations

import compileall
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"
LOOPBACK = "127.0.0.1"
RESULTS_JSON = BENCH_DIR / "results.json"
ANALYSIS_MD = BENCH_DIR / "analysis.md"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def byte_compile_pkgcache() -> None:
    """Byte-compile pkgcache's sources, as pip does when it installs it. The harness runs the editable install, and
    where the environment sets PYTHONDONTWRITEBYTECODE (these machines' does) no process writes its .pyc files: each
    process pkgcache starts compiled its modules again, 40-60 ms of every shard builder's start (its imports took
    100-127 ms against 61-71 ms compiled, under load) that an installed pkgcache does not spend. Quick when done."""
    compileall.compile_dir(REPO / "src" / "pkgcache", quiet=1)


def free_port() -> int:
    """A port nothing listens on right now, on loopback only."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for clients and peers: no pip/uv/proxy settings of this machine leak in."""
    dropped = ("PIP_", "UV_", "PKGCACHE_", "PROXPI_", "DEVPI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(key, None)
    # Loopback only, whatever a proxy variable elsewhere would say.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_NO_CONFIG"] = "1"
    env.update(extra)
    return env


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference in (None, 0):
        return None
    return value / reference


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
