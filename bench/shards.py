"""Scenario "shards" (issue 12): a rattler solve through pkgcache with shards made here, against the same solve
through it with repodata.json.zst.

The channel (bench/prepare_shards.py) has a 110 MB linux-64 repodata.json and no shards, like every domestic
mirror. For each mode, pkgcache starts with an empty cache; `cold` = the first solve (pkgcache fetches the
repodata and, sharded, builds the shards in its builder process), `warm` = the same solve again from an empty
client cache. Bytes to the client = the bytes of every answer in pkgcache's access log during that solve;
seconds = the client's own fetch-and-solve time (bench/rattler_solve.py, interpreter start left out); peak PSS =
pkgcache's whole process tree, builder included, sampled every 0.1 s during the cold solve. The "made ahead" row
starts pkgcache with the channel's subdirs in `[conda] prebuild_shards` and waits for its status to report them
made before the cold solve: what a client sees of a subdir an operator keeps ready.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.common import MAIN_PYTHON, REPO, clean_env, log
from bench.plan import Plan
from bench.prepare_shards import CHANNEL, SPECS, prepare_shard_channel
from bench.procs import MemorySampler
from bench.systems import Pkgcache, Upstream
from bench.tables import Table, metric

MODES = {
    "sharded": "shards made here",
    "ahead": "shards made ahead (prebuild_shards)",
    "zst": "repodata.json.zst",
}
SUBDIRS = ("linux-64", "noarch")
AHEAD_TIMEOUT = 120
SOLVE_TIMEOUT = 600
ACCESS = re.compile(r"pkgcache\.access: (\w+) (\S+) (\d+) cache=\S+ bytes=(\d+)")
BUILT = re.compile(r"made (\d+) shards for (\S+) in ([\d.]+) s")


@dataclass(frozen=True)
class Solve:
    seconds: float | None
    bytes_to_client: int
    paths: list[str]  # every path the client asked for
    solved: list[str] | None


def shards_table(plan: Plan, run_dir: Path, upstream: Upstream, errors: list[str]) -> Table:
    prepare_shard_channel()
    table = Table(
        "9. A conda solve with shards made here (issue 12)",
        f"py-rattler solves {', '.join(SPECS)} (8 packages) from `{CHANNEL}`: linux-64 repodata.json of 110 MB, "
        "no shards upstream. Rows: pkgcache making shards from the cached repodata when first asked; the same with "
        "the channel's subdirs in `prebuild_shards` (made at start, unasked; the solve begins once pkgcache reports "
        "them made); pkgcache with the client told not to try shards (so it fetches repodata.json.zst). cold = "
        "pkgcache just started with an empty cache (and, made ahead, after its start-up build); warm = the same "
        "solve again (client cache empty). MB = bytes pkgcache sent the client; s = the "
        "client's fetch and solve; peak PSS = pkgcache's process tree (the shard builder included) during the "
        "cold solve; build = the builder's own time, from pkgcache's log.",
        [metric("cold_mb", "cold MB", "lower"), metric("cold_s", "cold (s)", "lower"),
         metric("warm_mb", "warm MB", "lower"), metric("warm_s", "warm (s)", "lower"),
         metric("peak_mb", "peak PSS, cold (MB)", "lower"),
         metric("builder_mb", "builder's own peak PSS (MB)", "lower"), metric("build_s", "build (s)", "lower")],
    )  # fmt: skip
    sampler = MemorySampler()
    sampler.start()
    try:
        for run in range(plan.runs):
            for mode, row in MODES.items():
                _mode_cells(table, row, mode, run_dir / "shards" / mode, upstream, sampler, errors, run)
    finally:
        sampler.close()
    return table


def _mode_cells(table: Table, row: str, mode: str, folder: Path, upstream: Upstream, sampler: MemorySampler,
                errors: list[str], run: int) -> None:  # fmt: skip
    ahead = f"prebuild_shards = {json.dumps([f'{CHANNEL}/{subdir}' for subdir in SUBDIRS])}\n"
    system = Pkgcache("pkgcache", folder, upstream, channels=(CHANNEL,), sections=ahead if mode == "ahead" else "")
    server_log = system.run_dir / "server.log"
    log_start = server_log.stat().st_size if server_log.exists() else 0  # the log is appended to, run after run
    system.start(fresh=True)
    assert system.proc is not None
    if mode == "ahead" and not _made_ahead(system):
        errors.append(f"shards: the shards of {CHANNEL} were not made ahead within {AHEAD_TIMEOUT} s")
    window = f"shards-{mode}-{run}"
    sampler.watch("pkgcache", system.proc)
    try:
        with sampler.window(window), builder_peak(system.proc.pid) as builder:
            cold = _solve(system, mode, folder / "client-cold", errors)
        sampler.watch("pkgcache", None)
        warm = _solve(system, mode, folder / "client-warm", errors)
    finally:
        sampler.watch("pkgcache", None)
        system.stop()
    for state, got in (("cold", cold), ("warm", warm)):
        table.add(row, f"{state}_mb", round(got.bytes_to_client / 1e6, 3) if got.solved else None)
        table.add(row, f"{state}_s", got.seconds)
        _check_paths(mode, state, got, errors)
    peak = sampler.windows[window].get("pkgcache")
    table.add(row, "peak_mb", round(peak / 1024, 1) if peak else None)
    table.add(row, "builder_mb", round(builder[0] / 1024, 1) if builder[0] else None)
    table.add(row, "build_s", _build_seconds(server_log, log_start) if mode != "zst" else None)
    log(f"shards: {mode}: cold {cold.seconds}s {cold.bytes_to_client / 1e6:.2f} MB, warm {warm.seconds}s "
        f"{warm.bytes_to_client / 1e6:.2f} MB, peak {peak and peak / 1024:.0f} MB")  # fmt: skip


def _made_ahead(system: Pkgcache) -> bool:
    """Wait until pkgcache reports the subdirs' shards made (it started making them at start, unasked)."""
    deadline = time.monotonic() + AHEAD_TIMEOUT
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{system.base}/-/status", timeout=5) as response:
            made = json.load(response)["conda"]["shards"]["made_here"]
        if all(f"{CHANNEL}/{subdir}" in made for subdir in SUBDIRS):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def builder_peak(root: int, interval: float = 0.1) -> Iterator[list[int]]:
    """The largest PSS (kB) of the shard builder alone: its own process (`python -m pkgcache.conda.shard_builder`)
    under `root`."""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            for pid in procs.descendants(root):
                if _is_spawned_child(pid):
                    peak[0] = max(peak[0], procs.memory_kb(pid, "Pss"))

    thread = threading.Thread(target=sample, name="builder-sampler", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _is_spawned_child(pid: int) -> bool:
    try:
        return b"pkgcache.conda.shard_builder" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _solve(system: Pkgcache, mode: str, cache_dir: Path, errors: list[str], base: str | None = None) -> Solve:
    """The solve through `base` (pkgcache's own address by default, or a relay's in front of it)."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    server_log = system.run_dir / "server.log"
    offset = server_log.stat().st_size
    command = [str(MAIN_PYTHON), "-m", "bench.rattler_solve", "--channel", f"{base or system.base}/conda/{CHANNEL}",
               "--cache-dir", str(cache_dir), *(["--no-sharded"] if mode == "zst" else []), *SPECS]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=SOLVE_TIMEOUT, cwd=REPO,
                            env=clean_env(PYTHONPATH=str(REPO)))  # fmt: skip
    time.sleep(0.6)  # the access log is written in batches every 0.2 s
    lines = _read_from(server_log, offset)
    answers = [m for m in (ACCESS.search(line) for line in lines) if m]
    sent = sum(int(m.group(4)) for m in answers)
    paths = [m.group(2) for m in answers]
    shutil.rmtree(cache_dir, ignore_errors=True)
    if result.returncode != 0:
        errors.append(f"shards: {mode} solve failed: {result.stderr.strip()[-800:]}")
        return Solve(None, sent, paths, None)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return Solve(out["seconds"], sent, paths, out["solved"])


def _check_paths(mode: str, state: str, got: Solve, errors: list[str]) -> None:
    """A sharded solve that fell back to the whole repodata (or a .zst solve that did not read it) measures nothing."""
    asked_index = any(p.endswith("/linux-64/repodata_shards.msgpack.zst") for p in got.paths)
    asked_whole = any(re.search(r"/linux-64/repodata\.json(\.zst)?$", p) for p in got.paths)
    if mode != "zst" and (not asked_index or asked_whole):
        errors.append(f"shards: the {state} sharded solve did not use shards only: {got.paths[:12]}")
    if mode == "zst" and not asked_whole:
        errors.append(f"shards: the {state} .zst solve did not fetch the repodata: {got.paths[:12]}")


def _read_from(path: Path, offset: int) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace").splitlines()


def _build_seconds(server_log: Path, offset: int) -> float | None:
    """The first linux-64 build this run's pkgcache logged (its log from `offset` on)."""
    found = [float(m.group(3)) for m in (BUILT.search(line) for line in _read_from(server_log, offset))
             if m and m.group(2).endswith("linux-64")]  # fmt: skip
    return found[0] if found else None
