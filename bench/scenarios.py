"""The seven scenarios of issue 5. Each fills a table: rows are systems, columns metrics, cells lists of runs.

Systems are interleaved inside every repetition (pkgcache, then each peer, then the next repetition) so slow
drift of the machine lands on all of them alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpu, instructions, load
from bench.common import MAIN_PYTHON, WORK, clean_env, log
from bench.cpu import COST_CONNECTIONS, add_cell_cost, page_cost_table
from bench.faults import faults_table
from bench.page_cost import count_both
from bench.plan import Plan
from bench.prepare_conda import COLD_SUBDIRS
from bench.prepare_pypi import (
    HERD_PROJECT,
    PAGE_PROJECT,
    REQUIREMENTS,
    UPSTREAM_ROOT,
    big_wheel,
    cold_file,
    cold_project,
    herd_files,
    pinned,
)
from bench.procs import MemorySampler, TreeMemory, tree_memory
from bench.resolution import resolution_table
from bench.shards import shards_table
from bench.systems import Devpi, NginxCache, Pkgcache, Proxpi, System, Upstream
from bench.tables import DIRECT, Table, metric
from bench.venvs import ensure_venv

STATIC_COPY = "nginx static, pkgcache's bytes"
INSTALL_TIMEOUT = 600
# Installs unpack into memory: on this machine's disk, write-back stalls varied a 2 s install by 5 s from run to run,
# drowning the proxy's share; tmpfs leaves the index and download path as the difference between systems.
INSTALL_SCRATCH = Path("/dev/shm") / f"pkgcache-bench-{os.getpid()}"


@dataclass
class Bench:
    plan: Plan
    run_dir: Path = WORK / "run"
    sampler: MemorySampler = field(default_factory=MemorySampler)
    tables: dict[str, Table] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    idle_start: dict[str, TreeMemory] = field(default_factory=dict)
    idle_end: dict[str, TreeMemory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.upstream = Upstream("upstream", self.run_dir / "upstream")
        makers: dict[str, Callable[[], System]] = {
            "pkgcache": lambda: Pkgcache(
                "pkgcache", self.run_dir / "pkgcache", self.upstream, policy_rules=self.plan.policy_rules
            ),
            "nginx-cache": lambda: NginxCache("nginx-cache", self.run_dir / "nginx-cache", self.upstream),
            "devpi": lambda: Devpi("devpi", self.run_dir / "devpi", self.upstream),
            "proxpi": lambda: Proxpi("proxpi", self.run_dir / "proxpi", self.upstream),
        }
        self.systems: dict[str, System] = {name: makers[name]() for name in self.plan.systems}

    # --- life cycle ---

    def start_all(self) -> None:
        self.upstream.start(fresh=True)
        self.sampler.start()
        for system in self.systems.values():
            self.restart(system)
        time.sleep(2)  # let start-up work settle before calling anything idle
        for name, system in self.systems.items():
            assert system.proc is not None
            self.idle_start[name] = tree_memory(system.proc.pid)

    def restart(self, system: System) -> None:
        """A fresh instance with an empty cache."""
        self.sampler.watch(system.name, None)
        system.start(fresh=True)
        self.sampler.watch(system.name, system.proc)

    def stop_all(self) -> None:
        self.sampler.close()
        for system in [*self.systems.values(), self.upstream]:
            try:
                system.stop()
            except Exception as exc:  # one failing stop must not leave the others running
                self.errors.append(f"stopping {system.name}: {exc}")

    def run(self, name: str) -> None:
        log(f"scenario {name}")
        started = time.monotonic()
        try:
            with self.sampler.window(name):
                getattr(self, f"scenario_{name}")()
        except Exception as exc:
            log(f"scenario {name} failed: {exc}")
            self.errors.append(f"{name}: {exc}\n{traceback.format_exc(limit=4)}")
        log(f"scenario {name} took {time.monotonic() - started:.0f}s")

    # --- 5. real install ---

    def scenario_install(self) -> None:
        tools = self.plan.install_tools
        metrics = [metric(f"{tool}_{state}", f"{tool} {state} (s)", "lower") for tool in tools
                   for state in ("cold", "warm")]  # fmt: skip
        table = self.tables["install"] = Table(
            "5. Real install of the 44-wheel set",
            "`pip install` / `uv pip install` of bench/requirements.txt into an empty --target, client caches off; "
            "cold = the proxy just started with an empty cache, warm = the same install again right after.",
            metrics + [metric(f"{tool}_warm_vs_direct", f"{tool} warm ÷ direct", "lower") for tool in tools],
        )
        for _ in range(self.plan.runs):
            for tool in tools:
                first = self._install(tool, self.upstream.index_url)
                second = self._install(tool, self.upstream.index_url)
                table.add(DIRECT, f"{tool}_cold", first)
                table.add(DIRECT, f"{tool}_warm", second)
                table.add(DIRECT, f"{tool}_warm_vs_direct", 1.0)
                direct = min(v for v in (first, second) if v is not None) if first or second else None
                for system in self.systems.values():
                    self.restart(system)
                    table.add(system.name, f"{tool}_cold", self._install(tool, system.index_url))
                    warm = self._install(tool, system.index_url)
                    table.add(system.name, f"{tool}_warm", warm)
                    table.add(system.name, f"{tool}_warm_vs_direct", warm / direct if warm and direct else None)

    def _install(self, tool: str, index_url: str) -> float | None:
        return timed_install(tool, index_url, self.errors)

    # --- 3. cold miss ---

    def scenario_cold_miss(self) -> None:
        table = self.tables["cold_miss"] = Table(
            "3. Cold miss: one 20 MB file nobody asked for before",
            "First the project's page (cold too), then the file it links, with curl; through each proxy and "
            "straight from the upstream. Loopback upstream: this is each proxy's own overhead.",
            [metric("page_total_ms", "page total (ms)", "lower"), metric("file_ttfb_ms", "file TTFB (ms)", "lower"),
             metric("file_total_ms", "file total (ms)", "lower"),
             metric("file_vs_direct", "file total ÷ direct", "lower")],
        )  # fmt: skip
        for run in range(self.plan.runs):
            project, filename = cold_project(run), cold_file(run)
            direct = self._cold_fetch(table, DIRECT, self.upstream, project, filename)
            for system in self.systems.values():
                total = self._cold_fetch(table, system.name, system, project, filename)
                table.add(system.name, "file_vs_direct", total / direct if total and direct else None)
            table.add(DIRECT, "file_vs_direct", 1.0)

    def _cold_fetch(self, table: Table, row: str, system: System, project: str, filename: str) -> float | None:
        page = load.curl_get(system.page_url(project), accept=load.PIP_ACCEPT)
        table.add(row, "page_total_ms", page.total_s * 1000 if page.status == 200 else None)
        got = load.curl_get(load.file_url(system.page_url(project), filename))
        ok = got.status == 200 and got.size == (UPSTREAM_ROOT / "packages" / filename).stat().st_size
        if not ok:
            self.errors.append(f"cold miss via {row}: status {got.status}, {got.size} bytes")
        table.add(row, "file_ttfb_ms", got.ttfb_s * 1000 if ok else None)
        table.add(row, "file_total_ms", got.total_s * 1000 if ok else None)
        return got.total_s * 1000 if ok else None

    # --- 4. thundering herd ---

    def scenario_herd(self) -> None:
        clients = self.plan.herd_clients
        table = self.tables["herd"] = Table(
            f"4. Thundering herd: {clients} clients, one missing 50 MB file",
            f"The upstream sends herd files at 10 MiB/s per connection (a fast internet mirror), so one client alone "
            f"takes about 5 s. `single` = one client, cold file; `herd` = {clients} clients at once (one curl, one "
            "connection each) on another cold file; fetches = GETs of that file in the upstream's access log.",
            [metric("upstream_fetches", "upstream fetches", "lower"), metric("single_s", "single (s)", "lower"),
             metric("herd_wall_s", "herd wall (s)", "lower"), metric("herd_vs_single", "herd ÷ single", "lower"),
             metric("failed_clients", "failed clients", "lower")],
        )  # fmt: skip
        urls = {name: self._herd_urls(system) for name, system in self.systems.items()}
        for run in range(self.plan.runs):
            single_name, herd_name = herd_files(run)
            size = (UPSTREAM_ROOT / "slow" / herd_name).stat().st_size
            for name in self.systems:
                before = self.upstream.fetches("/slow/" + herd_name)
                single = load.curl_get(urls[name][single_name])
                single_s = single.total_s if single.status == 200 and single.size == size else None
                results = load.curl_herd(urls[name][herd_name], clients)
                failed = clients - sum(1 for r in results if r.status == 200 and r.size == size)
                wall = max((r.total_s for r in results), default=None)
                time.sleep(1)  # the upstream logs a request when it ends
                table.add(name, "upstream_fetches", self.upstream.fetches("/slow/" + herd_name) - before)
                table.add(name, "single_s", single_s)
                table.add(name, "herd_wall_s", wall)
                table.add(name, "herd_vs_single", wall / single_s if wall and single_s else None)
                table.add(name, "failed_clients", failed)

    def _herd_urls(self, system: System) -> dict[str, str]:
        page = system.page_url(HERD_PROJECT)
        names = [name for run in range(self.plan.runs) for name in herd_files(run)]
        return {name: load.file_url(page, name) for name in names}

    # --- 1. warm project page ---

    def scenario_warm_page(self) -> None:
        conns = self.plan.page_connections
        metrics = []
        for c in conns:
            metrics += [metric(f"rps_c{c}", f"req/s @{c}", "higher"), metric(f"p99_c{c}", f"p99 ms @{c}", "lower")]
        table = self.tables["warm_page"] = Table(
            "1. Warm project page",
            f"wrk, {self.plan.wrk_seconds:g} s per cell, pip's Accept header (JSON preferred), on the {PAGE_PROJECT} "
            f"page (110 files). `{DIRECT}` is nginx serving the upstream's HTML page as a static file; "
            f"`{STATIC_COPY}` is nginx serving, as a static file, exactly the bytes pkgcache answers.",
            metrics,
        )
        targets = {name: system.page_url(PAGE_PROJECT) for name, system in self.systems.items()}
        targets[DIRECT] = self.upstream.page_url(PAGE_PROJECT)
        for url in targets.values():
            for _ in range(3):
                load.fetch(url, accept=load.PIP_ACCEPT)
        targets[STATIC_COPY] = self._static_copy(targets["pkgcache"])
        sizes = {name: len(load.fetch(url, accept=load.PIP_ACCEPT)) for name, url in targets.items()}
        table.notes.append("page bytes: " + ", ".join(f"{n} {s}" for n, s in sizes.items()))
        cost = self.tables["page_cost"] = page_cost_table()
        pids = {name: self._server_pid(name) for name in targets}
        self._wrk_table(table, targets, conns, load.PIP_ACCEPT, "rps", lambda r: r.requests_per_s, (pids, cost))
        if instructions.available() and "pkgcache" in self.systems:
            counted = count_both(self.upstream, self.run_dir / "callgrind")
            for name, row in (("pkgcache", "pkgcache"), ("nginx static", STATIC_COPY)):
                cost.add(row, "instructions", counted[name]["per_request"])
                cost.add(row, "clock_reads", round(counted[name]["clock_calls"] / max(1, counted[name]["requests"]), 2))
        else:
            cost.notes.append("valgrind is not installed here: no instruction counts (apt-get install valgrind)")

    def _server_pid(self, name: str) -> int | None:
        system = self.systems.get(name) or self.upstream  # direct and the static copy: the upstream nginx
        return system.proc.pid if system.proc else None

    def _static_copy(self, pkgcache_url: str) -> str:
        folder = UPSTREAM_ROOT / "static"
        folder.mkdir(exist_ok=True)
        (folder / "bench-page.json").write_bytes(load.fetch(pkgcache_url, accept=load.PIP_ACCEPT))
        return f"{self.upstream.base}/static/bench-page.json"

    def _wrk_table(self, table: Table, targets: dict[str, str], conns: tuple[int, ...], accept: str | None,
                   prefix: str, value: Callable[[load.WrkResult], float],
                   cost: tuple[dict[str, int | None], Table] | None = None) -> None:  # fmt: skip
        """wrk on every target; with `cost`, the CPU accounting of every @16 cell too (bench/cpu.py)."""
        for _ in range(self.plan.runs):
            for c in conns:
                for name, url in targets.items():
                    if cost is not None and c == COST_CONNECTIONS:
                        result, spent = cpu.wrk_measured(url, c, self.plan.wrk_seconds, cost[0][name], accept)
                        add_cell_cost(cost[1], name, spent)
                    else:
                        result = load.wrk(url, c, self.plan.wrk_seconds, accept)
                    good = result.errors == 0
                    if not good:
                        self.errors.append(f"{table.title}: {name} @{c}: {result.errors} errors")
                    table.add(name, f"{prefix}_c{c}", value(result) if good else None)
                    table.add(name, f"p99_c{c}", result.p99_ms if good else None)

    # --- 2. warm file ---

    def scenario_warm_file(self) -> None:
        project, filename = big_wheel()
        size_mb = (UPSTREAM_ROOT / "packages" / filename).stat().st_size / 1e6
        conns = self.plan.file_connections
        metrics = []
        for c in conns:
            metrics += [metric(f"mbps_c{c}", f"MB/s @{c}", "higher"), metric(f"p99_c{c}", f"p99 ms @{c}", "lower")]
        table = self.tables["warm_file"] = Table(
            "2. Warm file download",
            f"wrk, {self.plan.wrk_seconds:g} s per cell, the {size_mb:.0f} MB {filename} already in every cache; "
            "MB/s = bytes received ÷ time (10^6 bytes).",
            metrics,
        )
        targets = {name: load.file_url(system.page_url(project), filename) for name, system in self.systems.items()}
        targets[DIRECT] = load.file_url(self.upstream.page_url(project), filename)
        for name, url in targets.items():
            self._warm_up(name, url, (UPSTREAM_ROOT / "packages" / filename).stat().st_size)
        self._wrk_table(table, targets, conns, None, "mbps", lambda r: r.mb_per_s)

    def _warm_up(self, name: str, url: str, size: int, timeout: float = 60) -> None:
        """Until the file comes straight from the cache (proxpi redirects to the upstream while it downloads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = load.curl_get(url, follow=False)
            if got.status == 200 and got.size == size:
                return
            time.sleep(0.5)
        self.errors.append(f"{name} never served {url} from its cache")

    # --- 6. conda ---

    def scenario_conda(self) -> None:
        table = self.tables["conda"] = Table(
            "6. conda: a 110 MB repodata.json",
            "curl, identity encoding. cold = a subdir this proxy never saw (the same bytes under another subdir "
            "name each repetition); warm = the same file again; `x4` = four clients at once, warm. PSS = the "
            "server's largest memory during this scenario (see 7).",
            [metric("json_cold_s", "json cold (s)", "lower"), metric("json_warm_s", "json warm (s)", "lower"),
             metric("zst_cold_s", ".zst cold (s)", "lower"), metric("zst_warm_s", ".zst warm (s)", "lower"),
             metric("json_warm_x4_s", "json warm x4 wall (s)", "lower"), metric("rss_mb", "peak PSS (MB)", "lower")],
        )  # fmt: skip
        for name, system in self.systems.items():
            if not system.conda:
                table.not_applicable(name)
        conda_systems: dict[str, System] = {n: s for n, s in self.systems.items() if s.conda}
        conda_systems[DIRECT] = self.upstream
        for run in range(self.plan.runs):
            subdir = COLD_SUBDIRS[run % len(COLD_SUBDIRS)]
            for name, system in conda_systems.items():
                with self.sampler.window(f"conda-{name}-{run}"):
                    self._conda_cell(table, name, system, subdir)
                peak = self.sampler.windows[f"conda-{name}-{run}"].get(name)
                table.add(name, "rss_mb", peak / 1024 if peak and name != DIRECT else None)

    def _conda_cell(self, table: Table, name: str, system: System, subdir: str) -> None:
        for filename, key in (("repodata.json", "json"), ("repodata.json.zst", "zst")):
            url = system.conda_url(subdir, filename)
            assert url is not None
            size = (UPSTREAM_ROOT / "conda" / "cloud" / "bench" / subdir / filename).stat().st_size
            for state in ("cold", "warm"):
                got = load.curl_get(url)
                ok = got.status == 200 and got.size == size
                if not ok:
                    self.errors.append(f"conda {filename} {state} via {name}: {got.status}, {got.size} bytes")
                table.add(name, f"{key}_{state}_s", got.total_s if ok else None)
        herd = load.curl_herd(system.conda_url(subdir, "repodata.json") or "", 4)
        table.add(name, "json_warm_x4_s", max(r.total_s for r in herd) if all(r.status == 200 for r in herd) else None)

    # --- 8. resolution against a mirror without metadata (issue 11; its own mirror and systems) ---

    def scenario_resolution(self) -> None:
        self.tables["resolution"] = resolution_table(self.plan, self.run_dir, self.errors)

    # --- 9. a conda solve with shards made here (issue 12; its own pkgcache instances) ---

    def scenario_shards(self) -> None:
        self.tables["shards"] = shards_table(self.plan, self.run_dir, self.upstream, self.errors)

    # --- 10. faults under load (issue 9; its own pkgcache instances and a dripping mirror) ---

    def scenario_faults(self) -> None:
        self.tables["faults"] = faults_table(self.plan, self.run_dir, self.upstream, self.errors)

    # --- 7. memory ---

    def scenario_memory(self) -> None:
        time.sleep(2)
        for name, system in self.systems.items():
            if system.proc is not None:
                self.idle_end[name] = tree_memory(system.proc.pid)

    def memory_table(self) -> Table:
        windows = [w for w in ("install", "cold_miss", "herd", "warm_page", "warm_file", "conda") if w in
                   self.sampler.windows]  # fmt: skip
        table = Table(
            "7. Memory",
            "Each server's whole process tree (workers included), sampled every 0.1 s from /proc. PSS = proportional "
            "set size summed over the tree: each page shared between processes (forked workers share most of "
            "theirs) is divided among them, so the sum is what the tree costs the machine. RSS summed counts a "
            "shared page once per process. idle = 2 s after start / after the last scenario; peak = the largest "
            "sample of the run (a server restarted with an empty cache counts as the same server); VmHWM = the "
            "kernel's per-process RSS high-water mark, summed over the tree, largest over its instances.",
            [metric("idle_start_mb", "idle at start, PSS (MB)", "lower"),
             metric("idle_end_mb", "idle at end, PSS (MB)", "lower"),
             metric("peak_mb", "peak PSS (MB)", "lower"), metric("peak_rss_mb", "peak RSS summed (MB)", "lower"),
             metric("idle_start_rss_mb", "idle RSS summed (MB)", "lower"), metric("hwm_mb", "VmHWM (MB)", "lower")]
            + [metric(f"peak_{w}_mb", f"peak PSS in {w} (MB)", "lower") for w in windows],
        )  # fmt: skip
        for name, system in self.systems.items():
            start, end = self.idle_start.get(name), self.idle_end.get(name)
            table.add(name, "idle_start_mb", _mb(start.pss_kb if start else None))
            table.add(name, "idle_end_mb", _mb(end.pss_kb if end else None))
            table.add(name, "peak_mb", _mb(self.sampler.peak_kb.get(name)))
            table.add(name, "peak_rss_mb", _mb(self.sampler.peak_rss_kb.get(name)))
            table.add(name, "idle_start_rss_mb", _mb(start.rss_kb if start else None))
            table.add(name, "hwm_mb", _mb(system.hwm_kb))
            for w in windows:
                table.add(name, f"peak_{w}_mb", _mb(self.sampler.windows[w].get(name)))
        return table


def _mb(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb else None


def timed_install(tool: str, index_url: str, errors: list[str]) -> float | None:
    """Seconds to install the whole set with `tool` from `index_url`, or None (and a line in `errors`)."""
    clients = ensure_venv("clients")
    target, tmp = INSTALL_SCRATCH / "target", INSTALL_SCRATCH / "tmp"
    shutil.rmtree(INSTALL_SCRATCH, ignore_errors=True)
    tmp.mkdir(parents=True)
    if tool == "pip":
        command = [str(clients / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-input",
                   "--only-binary=:all:", "--target", str(target), "--index-url", index_url,
                   "-r", str(REQUIREMENTS)]  # fmt: skip
    else:
        command = [str(clients / "uv"), "pip", "install", "--quiet", "--no-cache", "--target", str(target),
                   "--python", str(MAIN_PYTHON), "--index-url", index_url, "-r", str(REQUIREMENTS)]  # fmt: skip
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=clean_env(TMPDIR=str(tmp)), capture_output=True, text=True,
                                timeout=INSTALL_TIMEOUT)  # fmt: skip
        elapsed = time.monotonic() - started
        installed = len(list(target.glob("*.dist-info"))) if target.exists() else 0
    finally:
        shutil.rmtree(INSTALL_SCRATCH, ignore_errors=True)
    if result.returncode != 0 or installed < len(pinned()):
        errors.append(f"{tool} install from {index_url} failed ({installed} installed): "
                      f"{result.stderr.strip()[-1500:]}")  # fmt: skip
        return None
    return elapsed
