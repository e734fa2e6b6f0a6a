"""Scenario "resolution" (issue 11): resolving the scientific stack against a mirror without metadata.

A TUNA-like mirror (bench/resolution_mirror.py, served by nginx with Range on and `$bytes_sent` logged) and,
for every system and straight from the mirror, `uv pip compile --no-cache` and `pip install --dry-run --report`
of the same requirements, cold (the proxy just started with an empty cache) and warm (the same command again
right after). Each cell: wall time, bytes the mirror sent (headers and bodies, from its access log, waiting
until it is quiet so downloads a proxy finishes after the client left count too) and requests it answered.
Every resolution is checked to equal the one made straight from the mirror.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from bench import nginx_conf, procs
from bench.common import MAIN_PYTHON, clean_env, log
from bench.plan import Plan
from bench.resolution_mirror import MIRROR_ROOT, REQUIREMENTS_IN, prepare_resolution_mirror
from bench.systems import Devpi, NginxCache, Pkgcache, Proxpi, System, Upstream, start_nginx
from bench.tables import DIRECT, Table, metric
from bench.venvs import ensure_venv

TOOLS = ("uv", "pip")
RESOLVE_TIMEOUT = 600
QUIET_SECONDS = 1.5  # the mirror's log unchanged this long: nothing more is coming
SCRATCH = Path("/dev/shm") / f"pkgcache-bench-resolution-{os.getpid()}"


@dataclass(frozen=True)
class Traffic:
    requests: int
    range_requests: int
    bytes_sent: int


class Mirror(Upstream):
    """nginx serving the generated mirror; its access log tells what every system cost it."""

    def _launch(self, fresh: bool) -> procs.Proc:
        conf = self.run_dir / "nginx.conf"
        conf.write_text(nginx_conf.mirror_conf(self.run_dir, MIRROR_ROOT, self.port, self.access_log))
        return start_nginx(self.name, self.run_dir, conf)

    def log_size(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def wait_quiet(self, limit: float = 60.0) -> None:
        """Until nothing was logged for QUIET_SECONDS (nginx logs a transfer when it ends)."""
        deadline = time.monotonic() + limit
        size, since = self.log_size(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.log_size()
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= QUIET_SECONDS:
                return

    def traffic_since(self, offset: int) -> Traffic:
        with self.access_log.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
        requests = ranges = sent = 0
        for line in lines:
            parts = line.split(" ", 5)
            if len(parts) < 6:
                continue
            requests += 1
            sent += int(parts[4])
            ranges += parts[5] != '"-"'
        return Traffic(requests, ranges, sent)


@dataclass(frozen=True)
class Resolved:
    seconds: float
    traffic: Traffic
    pins: frozenset[str] | None  # name==version of every package chosen; None: the resolver failed


def resolution_table(plan: Plan, run_dir: Path, errors: list[str]) -> Table:
    prepare_resolution_mirror()
    table = Table(
        "8. Resolution against a mirror without metadata (issue 11)",
        "A TUNA-like mirror (nginx: HTML pages with sha256, no PEP 658 metadata, Range on) holding numpy, scipy, "
        "pandas, matplotlib, pillow, scikit-learn, sympy, networkx and their dependencies, 2 to 10 versions each, "
        "wheels of their real sizes (0.7 GB in all); the requirements hold numpy below 2, which the newest scipy "
        "and scikit-learn need, so resolvers step back through versions. `uv pip compile --no-cache` and "
        "`pip install --dry-run --report` (pip from bench/tools.txt, no cache); cold = the proxy just started "
        "with an empty cache, warm = the same command again. MB = bytes the mirror sent (headers and bodies, "
        f"10^6); reqs = requests it answered. `{DIRECT}` = the client straight from the mirror (both columns: "
        "two runs of the same thing).",
        [metric(f"{tool}_{state}_{what}", f"{tool} {state} {label}", "lower")
         for tool in TOOLS for state in ("cold", "warm")
         for what, label in (("s", "(s)"), ("mb", "MB"), ("reqs", "reqs"))],
    )  # fmt: skip
    mirror = Mirror("resolution-mirror", run_dir / "resolution" / "mirror")
    mirror.start(fresh=True)
    makers: dict[str, Callable[[Path], System]] = {
        "pkgcache": lambda d: Pkgcache("pkgcache", d, mirror),
        "nginx-cache": lambda d: NginxCache("nginx-cache", d, mirror),
        "devpi": lambda d: Devpi("devpi", d, mirror),
        "proxpi": lambda d: Proxpi("proxpi", d, mirror),
    }
    systems = {name: makers[name](run_dir / "resolution" / name) for name in plan.systems}
    try:
        for _ in range(plan.runs):
            for tool in TOOLS:
                expected = _direct_cells(table, tool, mirror, errors)
                for name, system in systems.items():
                    _system_cells(table, tool, name, system, mirror, expected, errors)
    finally:
        for system in [*systems.values(), mirror]:
            system.stop()
    return table


def _direct_cells(table: Table, tool: str, mirror: Mirror, errors: list[str]) -> frozenset[str] | None:
    first = _resolve(tool, mirror.index_url, mirror, errors, DIRECT)
    second = _resolve(tool, mirror.index_url, mirror, errors, DIRECT)
    _add(table, DIRECT, tool, "cold", first)
    _add(table, DIRECT, tool, "warm", second)
    log(f"resolution: {tool} straight from the mirror: {first.seconds:.2f}s, {first.traffic}")
    return first.pins


def _system_cells(table: Table, tool: str, name: str, system: System, mirror: Mirror,
                  expected: frozenset[str] | None, errors: list[str]) -> None:  # fmt: skip
    system.start(fresh=True)
    try:
        for state in ("cold", "warm"):
            got = _resolve(tool, system.index_url, mirror, errors, name)
            _add(table, name, tool, state, got)
            log(f"resolution: {tool} {state} through {name}: {got.seconds:.2f}s, {got.traffic}")
            if got.pins is not None and expected is not None and got.pins != expected:
                errors.append(f"resolution: {tool} {state} through {name} chose {sorted(got.pins ^ expected)} "
                              "unlike the mirror straight")  # fmt: skip
    finally:
        system.stop()


def _add(table: Table, row: str, tool: str, state: str, got: Resolved) -> None:
    ok = got.pins is not None
    table.add(row, f"{tool}_{state}_s", round(got.seconds, 3) if ok else None)
    table.add(row, f"{tool}_{state}_mb", round(got.traffic.bytes_sent / 1e6, 2))
    table.add(row, f"{tool}_{state}_reqs", got.traffic.requests)


def _resolve(tool: str, index_url: str, mirror: Mirror, errors: list[str], row: str) -> Resolved:
    """One resolution by `tool` through `index_url`; the mirror's traffic it caused, once the mirror is quiet."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    (SCRATCH / "tmp").mkdir(parents=True)
    output = SCRATCH / ("pins.txt" if tool == "uv" else "report.json")
    mirror.wait_quiet()
    offset = mirror.log_size()
    started = time.monotonic()
    try:
        result = subprocess.run(_command(tool, index_url, output), env=clean_env(TMPDIR=str(SCRATCH / "tmp")),
                                capture_output=True, text=True, timeout=RESOLVE_TIMEOUT)  # fmt: skip
        seconds = time.monotonic() - started
        pins = _pins(tool, output) if result.returncode == 0 else None
        if pins is None:
            errors.append(f"resolution: {tool} via {row} failed: {result.stderr.strip()[-800:]}")
    except subprocess.TimeoutExpired:
        seconds, pins = time.monotonic() - started, None
        errors.append(f"resolution: {tool} via {row} took over {RESOLVE_TIMEOUT}s")
    mirror.wait_quiet()
    traffic = mirror.traffic_since(offset)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return Resolved(seconds, traffic, pins)


def _command(tool: str, index_url: str, output: Path) -> list[str]:
    clients = ensure_venv("clients")
    if tool == "uv":
        return [str(clients / "uv"), "pip", "compile", "--no-cache", "--quiet", "--no-header", "--python",
                str(MAIN_PYTHON), "--index-url", index_url, "--output-file", str(output),
                str(REQUIREMENTS_IN)]  # fmt: skip
    return [str(clients / "python"), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--no-cache-dir", "--no-input", "--only-binary=:all:", "--report", str(output), "--index-url", index_url,
            "-r", str(REQUIREMENTS_IN)]  # fmt: skip


def _pins(tool: str, output: Path) -> frozenset[str] | None:
    if not output.exists():
        return None
    if tool == "uv":
        lines = (line.split("#", 1)[0].strip() for line in output.read_text().splitlines())
        return frozenset(_pin(*line.split("==", 1)) for line in lines if "==" in line)
    report = json.loads(output.read_text())
    return frozenset(_pin(item["metadata"]["name"], item["metadata"]["version"]) for item in report.get("install", []))


def _pin(name: str, version: str) -> str:
    return f"{canonicalize_name(name.strip())}=={version.strip()}"
