"""What the numbers were measured on: the machine and the version of every program involved."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from bench.common import MAIN_PYTHON, REPO
from bench.venvs import ensure_venv


def machine() -> dict[str, str | int]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "ram_gib": round(_meminfo_kb("MemTotal") / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        # What makes a Python server's figures move between machines of one kind (bench/analysis.md, issue 10):
        # how the clock is read (pkgcache reads it ~10 times per page, nginx ~0.5) and the CPU's own speed.
        "clocksource": _read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "clock_read_ns": _clock_read_ns(),
        "cpu_mhz": _cpuinfo("cpu MHz"),
        "cpu_family_model": f"{_cpuinfo('cpu family')}/{_cpuinfo('model')}",
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "unknown"


def _cpuinfo(key: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":", 1)[0].strip() == key:
            return line.split(":", 1)[1].strip()
    return "unknown"


def _clock_read_ns(calls: int = 200_000) -> float:
    """Nanoseconds per time.monotonic() in this Python: tens through the vDSO, hundreds or more through a system
    call or a clock source the hypervisor must emulate."""
    started = time.perf_counter_ns()
    for _ in range(calls):
        time.monotonic()
    loop = time.perf_counter_ns()
    for _ in range(calls):
        pass
    return round(((loop - started) - (time.perf_counter_ns() - loop)) / calls, 1)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_kb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def versions() -> dict[str, str]:
    devpi, proxpi, clients = ensure_venv("devpi"), ensure_venv("proxpi"), ensure_venv("clients")
    return {
        "pkgcache": _first_line([str(MAIN_PYTHON.parent / "pkgcache"), "--version"]) + _git_revision(),
        "python (pkgcache)": _first_line([str(MAIN_PYTHON), "--version"]),
        "aiohttp / uvloop": _first_line([str(MAIN_PYTHON), "-c",
                                         "import aiohttp, uvloop; print(aiohttp.__version__, uvloop.__version__)"]),
        "devpi-server": _package_version(devpi, "devpi-server"),
        "proxpi": _package_version(proxpi, "proxpi") + " (gunicorn " + _package_version(proxpi, "gunicorn") + ")",
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "curl": _first_line(["curl", "--version"]),
        "pip (client)": _package_version(clients, "pip"),
        "uv (client)": _first_line([str(clients / "uv"), "--version"]),
    }  # fmt: skip


def _package_version(bin_dir: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return _first_line([str(bin_dir / "python"), "-c", code])


def _first_line(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _git_revision() -> str:
    """The commit measured, and whether src/ had uncommitted changes (read-only git commands)."""
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if rev.returncode != 0:
        return ""
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True)
    return f" (commit {rev.stdout.strip()}{', src/ modified' if dirty.stdout.strip() else ''})"
