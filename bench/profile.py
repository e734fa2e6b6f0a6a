"""Why pkgcache is where it is: throughput of experimental variants, and py-spy profiles of the plain service.

    .venv/bin/python -m bench.profile [--seconds 5]

Needs the upstream prepared by `bash bench/run --prepare-only`. Writes bench/profile_results.json (the variant
table that BENCHMARKS.md's analysis quotes) and, under bench/.work/profile/, py-spy's raw stacks with a summary
of the hottest functions per case.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import load, procs
from bench.common import BENCH_DIR, LOOPBACK, MAIN_PYTHON, REPO, WORK, clean_env, free_port, log, median, write_json
from bench.prepare_pypi import HERD_PROJECT, PAGE_PROJECT, UPSTREAM_ROOT, big_wheel, herd_files
from bench.scenarios import timed_install
from bench.systems import Pkgcache, Upstream
from bench.venvs import ensure_venv

OUT = WORK / "profile"
NGINX_ROW = "nginx static (page copy, files and installs straight from the upstream)"
RESULTS = BENCH_DIR / "profile_results.json"
# (row label, a variant from bench/pkgcache_variant.py or None, [server] settings).
VARIANTS: tuple[tuple[str, str | None, dict[str, str | int]], ...] = (
    ("as shipped: a worker per core (2 here), uvloop with pkgcache's sendfile", None, {}),
    ("workers = 1", None, {"workers": 1}),
    ("workers = 1, asyncio's own loop", "asyncio-loop", {"workers": 1}),
    ("log_level = warning (no access log)", None, {"log_level": "warning"}),
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-variants", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    upstream = Upstream("upstream", OUT / "upstream")
    upstream.start(fresh=True)
    results: dict[str, Any] = {"seconds": args.seconds, "variants": {}, "profiles": {}}
    try:
        if not args.skip_variants:
            results["variants"] = _variants(upstream, args.seconds)
        results["profiles"] = _profiles(upstream, args.seconds)
    finally:
        upstream.stop()
    write_json(RESULTS, results)
    log(f"wrote {RESULTS.relative_to(REPO)} and {OUT.relative_to(REPO)}/")


# --- throughput of variants ---


def _measure(page_url: str, file_url: str, seconds: float, runs: int = 3) -> dict[str, float | None]:
    """Median of `runs` wrk runs per cell."""
    cells: dict[str, list[float | None]] = collections.defaultdict(list)
    for _ in range(runs):
        page = load.wrk(page_url, 16, seconds, load.PIP_ACCEPT)
        cells["page_rps_c16"].append(round(page.requests_per_s) if page.errors == 0 else None)
        for c in (1, 16):
            got = load.wrk(file_url, c, seconds)
            cells[f"file_mbps_c{c}"].append(round(got.mb_per_s) if got.errors == 0 else None)
    return {key: median(values) for key, values in cells.items()}


def _warm(system: Pkgcache) -> tuple[str, str]:
    project, filename = big_wheel()
    page_url = system.page_url(PAGE_PROJECT)
    for _ in range(3):
        load.fetch(page_url, accept=load.PIP_ACCEPT)
    file_url = load.file_url(system.page_url(project), filename)
    load.curl_get(file_url)
    return page_url, file_url


def _variants(upstream: Upstream, seconds: float) -> dict[str, dict[str, float | None]]:
    rows: dict[str, dict[str, float | None]] = {}
    page_bytes = b""
    for number, (name, variant, server) in enumerate(VARIANTS):
        system = Pkgcache(f"pkgcache-{number}", OUT / f"variant-{number}", upstream, variant, server)
        system.start(fresh=True)
        try:
            page_url, file_url = _warm(system)
            page_bytes = load.fetch(page_url, accept=load.PIP_ACCEPT)
            rows[name] = _measure(page_url, file_url, seconds)
            rows[name]["uv_warm_s"] = _uv_warm(system.index_url)
        finally:
            system.stop()
        log(f"variant {name}: {rows[name]}")
    rows["bare aiohttp, asyncio loop (no middleware, no log)"] = _ceiling(page_bytes, seconds, 1, "asyncio")
    rows["bare aiohttp, uvloop (no middleware, no log)"] = _ceiling(page_bytes, seconds, 1, "uvloop")
    rows["bare aiohttp, uvloop, 2 processes (SO_REUSEPORT)"] = _ceiling(page_bytes, seconds, 2, "uvloop")
    static = UPSTREAM_ROOT / "static"
    static.mkdir(exist_ok=True)
    (static / "bench-page.json").write_bytes(page_bytes)
    project, filename = big_wheel()
    rows[NGINX_ROW] = _measure(f"{upstream.base}/static/bench-page.json",
                                    load.file_url(upstream.page_url(project), filename), seconds)  # fmt: skip
    rows[NGINX_ROW]["uv_warm_s"] = _uv_warm(upstream.index_url)
    return rows


def _uv_warm(index_url: str, runs: int = 5) -> float | None:
    """Median of `runs` uv installs of the whole set after one that fills the cache (the bench's own install)."""
    errors: list[str] = []
    timed_install("uv", index_url, errors)
    times = [timed_install("uv", index_url, errors) for _ in range(runs)]
    if errors:
        log(f"uv install from {index_url} failed: {errors[0][:300]}")
    return median(round(t, 3) if t else None for t in times)


def _ceiling(page: bytes, seconds: float, processes: int, loop: str) -> dict[str, float | None]:
    page_file = OUT / "ceiling-page.json"
    page_file.write_bytes(page)
    _, filename = big_wheel()
    port = free_port()
    argv = [str(MAIN_PYTHON), "-m", "bench.ceiling_app", str(port), str(page_file),
            str(UPSTREAM_ROOT / "packages" / filename), loop]  # fmt: skip
    started = [procs.start(f"ceiling-{i}", argv, OUT / f"ceiling-{i}.log", clean_env(PYTHONPATH=str(REPO)))
               for i in range(processes)]  # fmt: skip
    try:
        base = f"http://{LOOPBACK}:{port}"
        procs.wait_http(base + "/-/health", started[0])
        time.sleep(1)  # every process listening
        return _measure(base + "/page/", base + "/file", seconds)
    finally:
        for proc in started:
            procs.stop(proc)


# --- py-spy profiles of plain pkgcache ---


def _profiles(upstream: Upstream, seconds: float) -> dict[str, dict[str, Any]]:
    pyspy = ensure_venv("profile") / "py-spy"
    system = Pkgcache("pkgcache", OUT / "plain", upstream)
    system.start(fresh=True)
    assert system.proc is not None
    summaries: dict[str, dict[str, Any]] = {}
    try:
        page_url, file_url = _warm(system)
        herd_page = system.page_url(HERD_PROJECT)
        herd_url = load.file_url(herd_page, herd_files(0)[1])
        cases: dict[str, Callable[[], object]] = {
            "warm page, wrk 16 conns": lambda: load.wrk(page_url, 16, seconds, load.PIP_ACCEPT),
            "warm file, wrk 1 conn": lambda: load.wrk(file_url, 1, seconds),
            "warm file, wrk 16 conns": lambda: load.wrk(file_url, 16, seconds),
            "cold 110 MB repodata.json": lambda: load.curl_get(system.conda_url("linux-64", "repodata.json") or ""),
            "herd, 64 clients on a cold 50 MB file": lambda: load.curl_herd(herd_url, 64),
        }
        for case, action in cases.items():
            summaries[case] = _record(pyspy, system.proc.pid, case, action)
    finally:
        system.stop()
    return summaries


def _record(pyspy: Path, pid: int, case: str, action: Callable[[], object]) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
    raw = OUT / f"{slug}.txt"
    command = [str(pyspy), "record", "--nonblocking", "--subprocesses", "--rate", "250", "--format", "raw",
               "-o", str(raw), "--pid", str(pid)]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)  # py-spy attaches
    started = time.monotonic()
    action()
    elapsed = time.monotonic() - started
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
    spy.wait(30)
    summary = summarise(raw)
    summary["seconds"] = round(elapsed, 2)
    (OUT / f"{slug}-summary.txt").write_text(_summary_text(case, summary))
    log(f"profiled {case}: {summary['samples']} samples")
    return summary


def summarise(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def _function(frame: str) -> str:
    """`render (pkgcache/pypi/render.py:42)` -> `render (pkgcache/pypi/render.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def _summary_text(case: str, summary: dict[str, Any]) -> str:
    lines = [f"{case}: {summary['samples']} samples", "", "self %:"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in summary["self_pct"]]
    lines += ["", "inclusive %:"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in summary["inclusive_pct"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
