"""Why the warm-page figure moves from one machine to the next (issue 10): what each hypothesis changes, measured.

    .venv/bin/python -m bench.page_cost [--seconds 3] [--runs 3]      (about 6 minutes; after bench/run --prepare-only)

pkgcache's cached page beside nginx serving the same bytes as a static file, wrk with 16 connections, under:
- as run by the bench (2 pkgcache workers, nginx 2 workers, wrk's 2 threads, all on the machine's 2 cores);
- a busy neighbour: one more process spinning on the CPU during the cell (what another engineer's tests, or a
  host that gives this VM less CPU, do);
- pinned: the server on CPU 0 (pkgcache with 1 worker, nginx with 1 process), wrk on CPU 1;
- pkgcache variants: 1 worker unpinned, no access log, asyncio's loop, the garbage collector off;
- the spreading of wrk's 16 connections between pkgcache's 2 workers by SO_REUSEPORT, run after run;
and counts, with callgrind, the user-space instructions and clock reads per request of each server, and times a
clock read here by the vDSO and by a real system call. Every cell records the CPU the server and wrk used per
request and what the rest of the machine and the hypervisor took (bench/cpu.py). Writes
bench/page_cost_results.json, which bench/analysis.md quotes.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import cpu, instructions, load, nginx_conf, procs
from bench.common import (
    BENCH_DIR,
    LOOPBACK,
    MAIN_PYTHON,
    REPO,
    WORK,
    byte_compile_pkgcache,
    clean_env,
    free_port,
    log,
    median,
    write_json,
)
from bench.prepare_pypi import PAGE_PROJECT, UPSTREAM_ROOT
from bench.systems import Pkgcache, Upstream

OUT = WORK / "page_cost"
RESULTS = BENCH_DIR / "page_cost_results.json"
CONNECTIONS = 16


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.page_cost")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spread-runs", type=int, default=20)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so `finally` stops every server
    OUT.mkdir(parents=True, exist_ok=True)
    upstream = Upstream("upstream", OUT / "upstream")
    upstream.start(fresh=True)
    results: dict[str, Any] = {"seconds": args.seconds, "runs": args.runs, "connections": CONNECTIONS}
    try:
        static_url = _static_copy(upstream)
        results["cells"] = _cells(upstream, static_url, args.seconds, args.runs)
        results["spread"] = _spread(upstream, 2, runs=args.spread_runs)
        results["clock_read_ns"] = clock_read_ns()
        results["clock_reads"] = native_clock_reads(upstream, args.seconds)
        results["dear_clock"] = dear_clock(upstream, args.seconds, args.runs)
        if instructions.available():
            results["callgrind"] = count_both(upstream, OUT / "callgrind")
    finally:
        upstream.stop()
    results["summary"] = _summary(results["cells"] | results["dear_clock"])
    write_json(RESULTS, results)
    log(f"wrote {RESULTS.relative_to(REPO)}")


def _static_copy(upstream: Upstream) -> str:
    """nginx's URL for exactly the bytes pkgcache answers for the page (made by a throwaway pkgcache)."""
    system = Pkgcache("pkgcache", OUT / "copy", upstream)
    system.start(fresh=True)
    try:
        body = load.fetch(system.page_url(PAGE_PROJECT), accept=load.PIP_ACCEPT)
    finally:
        system.stop()
    (UPSTREAM_ROOT / "static").mkdir(exist_ok=True)
    (UPSTREAM_ROOT / "static" / "bench-page.json").write_bytes(body)
    return f"{upstream.base}/static/bench-page.json"


# --- the conditions ---


def _cells(upstream: Upstream, static_url: str, seconds: float, runs: int) -> dict[str, list[dict]]:
    cells: dict[str, list[dict]] = {}

    def add(name: str, cell: cpu.CellCpu) -> None:
        cells.setdefault(name, []).append(cell.as_dict())
        log(f"{name}: {cell.requests_per_s:,.0f} req/s, server {cell.server_us} us/req ({cell.server_user_us} user), "
            f"wrk {cell.wrk_us} us/req, "
            f"others {cell.others_pct}%, steal {cell.steal_pct}%")  # fmt: skip

    variants: dict[str, dict[str, Any]] = {
        "pkgcache, 1 worker": {"server": {"workers": 1}},
        "pkgcache, no access log": {"server": {"log_level": "warning"}},
        "pkgcache, asyncio loop": {"variant": "asyncio-loop"},
        "pkgcache, gc off": {"variant": "gc-off"},
    }
    with _pkgcache(upstream) as (shipped, page), _single_nginx() as (single_pid, single_url):
        pinned_pkgcache = Pkgcache("pkgcache-pinned", OUT / "pinned", upstream, server={"workers": 1})
        pinned_pkgcache.start(fresh=True)
        try:
            assert pinned_pkgcache.proc is not None and upstream.proc is not None and shipped.proc is not None
            pinned_page = _warm(pinned_pkgcache)
            _pin_tree(pinned_pkgcache.proc.pid, "0")
            _pin_tree(single_pid, "0")
            for _ in range(runs):
                add("pkgcache as shipped", _cell(page, shipped.proc.pid, seconds))
                add("nginx static", _cell(static_url, upstream.proc.pid, seconds))
                with _busy_neighbour():
                    add("pkgcache, busy neighbour", _cell(page, shipped.proc.pid, seconds))
                    add("nginx static, busy neighbour", _cell(static_url, upstream.proc.pid, seconds))
                add("pkgcache pinned (1 worker on CPU 0, wrk on CPU 1)",
                    _cell(pinned_page, pinned_pkgcache.proc.pid, seconds, "1"))  # fmt: skip
                add("nginx pinned (1 process on CPU 0, wrk on CPU 1)",
                    _cell(single_url, single_pid, seconds, "1"))  # fmt: skip
        finally:
            pinned_pkgcache.stop()
    for name, options in variants.items():
        with _pkgcache(upstream, **options) as (system, page):
            assert system.proc is not None
            for _ in range(runs):
                add(name, _cell(page, system.proc.pid, seconds))
    return cells


def _cell(url: str, pid: int, seconds: float, wrk_cpus: str | None = None) -> cpu.CellCpu:
    return cpu.wrk_with_cpu(url, CONNECTIONS, seconds, pid, load.PIP_ACCEPT, wrk_cpus)


@contextmanager
def _pkgcache(upstream: Upstream, server: dict[str, Any] | None = None,
              variant: str | None = None) -> Iterator[tuple[Pkgcache, str]]:  # fmt: skip
    system = Pkgcache("pkgcache", OUT / "pkgcache", upstream, variant=variant, server=server)
    system.start(fresh=True)
    try:
        yield system, _warm(system)
    finally:
        system.stop()


def _warm(system: Pkgcache) -> str:
    page = system.page_url(PAGE_PROJECT)
    for _ in range(3):
        load.fetch(page, accept=load.PIP_ACCEPT)
    time.sleep(0.5)  # every worker has loaded the page by now (the replica from the shared cache)
    return page


@contextmanager
def _single_nginx() -> Iterator[tuple[int, str]]:
    """nginx as one process serving the static tree (pinnable, and what callgrind counts)."""
    folder = OUT / "nginx-single"
    for sub in ("client_body", "proxy_temp", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_conf.single_process_conf(folder, UPSTREAM_ROOT, port, folder / "access.log"))
    proc = procs.start("nginx-single", instructions.nginx_argv(folder, conf), folder / "server.log", clean_env())
    url = f"http://{LOOPBACK}:{port}/static/bench-page.json"
    try:
        procs.wait_http(url, proc)
        yield proc.pid, url
    finally:
        procs.stop(proc)


@contextmanager
def _busy_neighbour() -> Iterator[None]:
    """One process spinning for as long as the block lasts (at most two minutes)."""
    spin = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"
    proc = procs.start("busy-neighbour", [str(MAIN_PYTHON), "-c", spin], OUT / "busy.log", clean_env())
    try:
        time.sleep(0.3)
        yield
    finally:
        procs.stop(proc)


def _pin_tree(pid: int, cpus: str) -> None:
    for member in procs.descendants(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(member)], capture_output=True, check=False)


# --- SO_REUSEPORT: how wrk's connections land on the workers ---


def _spread(upstream: Upstream, seconds: float, runs: int) -> dict[str, list[dict[str, Any]]]:
    """Each run: a new wrk (new source ports), the connections each server process holds, each one's share of the
    server's CPU, and req/s; for pkgcache (2 workers) and the nginx upstream (2 workers, `listen ... reuseport`)."""
    found: dict[str, list[dict[str, Any]]] = {"pkgcache": [], "nginx static": []}
    with _pkgcache(upstream) as (system, page):
        assert system.proc is not None and upstream.proc is not None
        for _ in range(runs):
            found["pkgcache"].append(_spread_run(system.proc.pid, system.port, page, seconds))
            found["nginx static"].append(
                _spread_run(upstream.proc.pid, upstream.port, f"{upstream.base}/static/bench-page.json", seconds)
            )
    for name, rows in found.items():
        log(f"spread, {name}: " + ", ".join(f"{r['connections_per_worker']} {r['requests_per_s']:,.0f}" for r in rows))
    return found


def _spread_run(root: int, port: int, url: str, seconds: float) -> dict[str, Any]:
    import threading

    members = [pid for pid in procs.descendants(root) if pid != root] or [root]
    before = {pid: cpu.tree_cpu_seconds(pid) for pid in members}
    holder: dict[str, list[int]] = {}
    thread = threading.Thread(target=lambda: (time.sleep(seconds / 2), holder.update(c=connections_per_process(port))))
    thread.start()
    cell = _cell(url, root, seconds)
    thread.join()
    used = sorted((cpu.tree_cpu_seconds(pid) - before[pid] for pid in members), reverse=True)
    return {
        "connections_per_worker": holder.get("c", []),
        "cpu_share_per_worker": [round(u / max(sum(used), 1e-9), 2) for u in used],
        "requests_per_s": cell.requests_per_s,
        "others_pct": cell.others_pct,
    }


def connections_per_process(port: int) -> list[int]:
    """Established connections on the server side of `port`, per process holding them, largest first."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True).stdout  # fmt: skip
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.values(), reverse=True)


# --- the clock, and instruction counts ---


def clock_read_ns(calls: int = 200_000) -> dict[str, float]:
    """What one clock_gettime(CLOCK_MONOTONIC) costs here: through the vDSO, and as a real system call."""
    libc = ctypes.CDLL(None, use_errno=True)
    timespec = (ctypes.c_long * 2)()
    sys_clock_gettime = 228  # x86-64

    def timed(call: Callable[[], object]) -> float:
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        return (time.perf_counter_ns() - started) / calls

    empty = timed(lambda: None)
    vdso = timed(lambda: libc.clock_gettime(1, timespec)) - empty
    syscall = timed(lambda: libc.syscall(sys_clock_gettime, 1, timespec)) - empty
    source = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    return {"vdso_ns": round(vdso, 1), "syscall_ns": round(syscall, 1),
            "clocksource": source.read_text().strip() if source.exists() else "unknown"}  # fmt: skip


def _clock_shim() -> Path:
    shim = OUT / "libclockcount.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(BENCH_DIR / "clockcount.c"), "-ldl",
                    "-lpthread"], check=True)  # fmt: skip
    return shim


def dear_clock(upstream: Upstream, seconds: float, runs: int) -> dict[str, list[dict]]:
    """pkgcache (as shipped) and nginx (2 workers) with every clock read made DELAY ns dearer, as on a VM whose
    clock source the hypervisor emulates: CPU per request and req/s."""
    shim = _clock_shim()
    cells: dict[str, list[dict]] = {}
    for delay in (0, 1000, 5000):
        env = {"LD_PRELOAD": str(shim), "CLOCKCOUNT_DIR": str(OUT / "clock-counts"), "CLOCKCOUNT_DELAY_NS": str(delay)}
        system = Pkgcache("pkgcache-dear-clock", OUT / "dear-clock", upstream, env=env)
        system.start(fresh=True)
        nginx, url = _clock_counted_nginx(env, single=False)
        try:
            assert system.proc is not None
            page = _warm(system)
            for _ in range(runs):
                for name, target, pid in (("pkgcache", page, system.proc.pid), ("nginx static", url, nginx.pid)):
                    cell = _cell(target, pid, seconds)
                    cells.setdefault(f"{name}, clock read +{delay} ns", []).append(cell.as_dict())
                    log(f"{name}, clock read +{delay} ns: {cell.requests_per_s:,.0f} req/s, server {cell.server_us} "
                        f"us/req ({cell.server_user_us} user), others {cell.others_pct}%")  # fmt: skip
        finally:
            system.stop()
            procs.stop(nginx)
    return cells


def native_clock_reads(upstream: Upstream, seconds: float) -> dict[str, float]:
    """Clock reads per request at full speed (bench/clockcount.c preloaded): pkgcache's tree and nginx's."""
    shim = _clock_shim()
    counts_dir = OUT / "clock-counts"
    found: dict[str, float] = {}
    env = {"LD_PRELOAD": str(shim), "CLOCKCOUNT_DIR": str(counts_dir)}
    counts_dir.mkdir(parents=True, exist_ok=True)
    system = Pkgcache("pkgcache-clock", OUT / "clock", upstream, env=env)
    system.start(fresh=True)
    try:
        assert system.proc is not None
        found["pkgcache"] = _reads_per_request(system.proc.pid, _warm(system), counts_dir, seconds)
    finally:
        system.stop()
    nginx, url = _clock_counted_nginx(env)
    try:
        found["nginx static"] = _reads_per_request(nginx.pid, url, counts_dir, seconds)
    finally:
        procs.stop(nginx)
    log(f"clock reads per request at full speed: {found}")
    return found


def _clock_counted_nginx(env: dict[str, str], single: bool = True) -> tuple[procs.Proc, str]:
    """nginx serving the static tree with `env` (the clock counter preloaded): one process, or as the bench's."""
    port = free_port()
    folder = OUT / f"nginx-clock-{port}"
    for sub in ("client_body", "proxy_temp", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    make_conf = nginx_conf.single_process_conf if single else nginx_conf.upstream_conf
    conf.write_text(make_conf(folder, UPSTREAM_ROOT, port, folder / "access.log"))
    proc = procs.start("nginx-clock", instructions.nginx_argv(folder, conf), folder / "server.log",
                       clean_env(**env))  # fmt: skip
    url = f"http://{LOOPBACK}:{port}/static/bench-page.json"
    procs.wait_http(url, proc)
    return proc, url


def _reads_per_request(pid: int, url: str, counts_dir: Path, seconds: float) -> float:
    time.sleep(0.3)
    before = _clock_count(pid, counts_dir)
    cell = cpu.wrk_with_cpu(url, CONNECTIONS, seconds, pid, load.PIP_ACCEPT)
    time.sleep(0.3)
    return round((_clock_count(pid, counts_dir) - before) / (cell.requests_per_s * seconds), 2)


def _clock_count(pid: int, counts_dir: Path) -> int:
    total = 0
    for member in procs.descendants(pid):
        path = counts_dir / f"clock.{member}"
        if path.exists():
            total += int(path.read_text().strip() or 0)
    return total


def count_both(upstream: Upstream, folder: Path, seconds: float = 8) -> dict[str, dict]:
    """callgrind's instructions and clock reads per page request: pkgcache (1 worker) and nginx (1 process)."""
    counts: dict[str, dict] = {}
    system = Pkgcache("pkgcache-callgrind", folder / "pkgcache", upstream, server={"workers": 1})
    system.start(fresh=True)  # writes its config and fills its cache, then runs again under valgrind
    page_body = load.fetch(system.page_url(PAGE_PROJECT), accept=load.PIP_ACCEPT)
    system.stop()
    argv = [str(MAIN_PYTHON.parent / "pkgcache"), "serve", "--config", str(system.run_dir / "pkgcache.toml")]
    byte_compile_pkgcache()
    proc = instructions.start_counted("pkgcache-callgrind", argv, folder / "pkgcache",
                                      f"{system.base}/-/health", clean_env(PYTHONPATH=str(REPO)))  # fmt: skip
    try:
        page = _warm(system)
        if load.fetch(page, accept=load.PIP_ACCEPT) != page_body:
            log("callgrind: pkgcache's page changed between runs")
        counts["pkgcache"] = instructions.count_requests(proc, page, folder / "pkgcache", seconds).as_dict()
    finally:
        procs.stop(proc)
    nginx_dir = folder / "nginx"
    for sub in ("client_body", "proxy_temp", "fastcgi", "uwsgi", "scgi"):
        (nginx_dir / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(nginx_conf.single_process_conf(nginx_dir, UPSTREAM_ROOT, port, nginx_dir / "access.log"))
    url = f"http://{LOOPBACK}:{port}/static/bench-page.json"
    proc = instructions.start_counted("nginx-callgrind", instructions.nginx_argv(nginx_dir, conf), nginx_dir, url)
    try:
        counts["nginx static"] = instructions.count_requests(proc, url, nginx_dir, seconds).as_dict()
    finally:
        procs.stop(proc)
    for name, count in counts.items():
        log(f"callgrind: {name}: {count['per_request']:,} instructions and "
            f"{count['clock_calls'] / max(1, count['requests']):.2f} clock reads per request")  # fmt: skip
    return counts


def _summary(cells: dict[str, list[dict]]) -> dict[str, dict[str, float | None]]:
    keys = ("requests_per_s", "server_us", "server_user_us", "wrk_us", "others_pct", "steal_pct", "idle_pct")
    return {name: {key: median(run[key] for run in runs) for key in keys} for name, runs in cells.items()}


if __name__ == "__main__":
    main()
