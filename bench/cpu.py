"""Where the CPU went during a load cell: the server's process tree, the load generator, everyone else, the host.

A req/s figure alone cannot tell a slow server from a busy or slow machine. Beside it, this module measures, over
one wrk run: the CPU seconds the server's tree used (user + system, from /proc/PID/stat, so the kernel's work on
its sockets counts), the CPU seconds wrk used (its rusage), and the machine's own accounting from /proc/stat: how
much the other processes used, and `steal`, the time the hypervisor gave this VM's CPUs to someone else. Divided by
the requests served, the server's CPU per request is the cost that moves only with the machine's speed; the
share of the machine others took is what moves from one run to the next.
"""

from __future__ import annotations

import os
import resource
import subprocess
from dataclasses import asdict, dataclass

from bench import load, procs
from bench.common import clean_env
from bench.tables import Table, metric

TICK = os.sysconf("SC_CLK_TCK")
COST_CONNECTIONS = 16  # the warm-page cells whose CPU is accounted (the headline's column)
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest time is counted inside user).
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_ticks() -> dict[str, int]:
    with open("/proc/stat") as handle:
        values = handle.readline().split()[1 : 1 + len(STAT_FIELDS)]
    return dict(zip(STAT_FIELDS, map(int, values), strict=True))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and every process below it (those alive now)."""
    return sum(tree_cpu_split(pid))


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` and every process below it: the interpreter's work, the kernel's."""
    user = system = 0
    for member in procs.descendants(pid):
        try:
            with open(f"/proc/{member}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime (fields 14 and 15)
    return user / TICK, system / TICK


@dataclass(frozen=True)
class CellCpu:
    """One wrk cell's CPU accounting; `*_us` are microseconds of CPU per request served."""

    requests_per_s: float
    errors: int
    p99_ms: float | None
    server_us: float | None
    server_user_us: float | None  # of server_us: in the server's own code (the rest is the kernel's, for it)
    wrk_us: float | None
    others_pct: float  # share of the machine's CPU time used by processes other than server and wrk
    steal_pct: float  # share taken by the hypervisor for other guests
    idle_pct: float

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_with_cpu(url: str, connections: int, seconds: float, server_pid: int | None, accept: str | None = None,
                 wrk_cpus: str | None = None) -> CellCpu:  # fmt: skip
    """One wrk run (optionally pinned to `wrk_cpus` with taskset), with the CPU it and the server used."""
    return wrk_measured(url, connections, seconds, server_pid, accept, wrk_cpus)[1]


def wrk_measured(url: str, connections: int, seconds: float, server_pid: int | None, accept: str | None = None,
                 wrk_cpus: str | None = None) -> tuple[load.WrkResult, CellCpu]:  # fmt: skip
    """wrk's own result and the CPU accounting of the same run."""
    duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", duration, "--latency",
               "--timeout", "30s"]  # fmt: skip
    if accept:
        command += ["-H", f"Accept: {accept}"]
    if wrk_cpus:
        command = ["taskset", "-c", wrk_cpus, *command]
    server_before = tree_cpu_split(server_pid) if server_pid else (0.0, 0.0)
    machine_before, children_before = machine_ticks(), _children_cpu_seconds()
    child = subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=clean_env())  # fmt: skip
    out, _ = child.communicate(timeout=seconds + 60)
    wrk_cpu = _children_cpu_seconds() - children_before  # wrk is the only child reaped meanwhile
    machine_after = machine_ticks()
    server_after = tree_cpu_split(server_pid) if server_pid else (0.0, 0.0)
    server_user = server_after[0] - server_before[0]
    server_cpu = (sum(server_after) - sum(server_before)) if server_pid else None
    result = load.parse_wrk(out)
    served = result.requests_per_s * result.duration_s
    deltas = {key: machine_after[key] - machine_before[key] for key in STAT_FIELDS}
    total = sum(deltas.values()) or 1
    busy_s = (deltas["user"] + deltas["nice"] + deltas["system"] + deltas["irq"] + deltas["softirq"]) / TICK
    others_s = max(0.0, busy_s - (server_cpu or 0.0) - wrk_cpu)
    return result, CellCpu(
        requests_per_s=round(result.requests_per_s),
        errors=result.errors,
        p99_ms=result.p99_ms,
        server_us=round(server_cpu / served * 1e6, 2) if server_cpu is not None and served else None,
        server_user_us=round(server_user / served * 1e6, 2) if server_cpu is not None and served else None,
        wrk_us=round(wrk_cpu / served * 1e6, 2) if served else None,
        others_pct=round(100 * others_s * TICK / total, 1),
        steal_pct=round(100 * deltas["steal"] / total, 1),
        idle_pct=round(100 * (deltas["idle"] + deltas["iowait"]) / total, 1),
    )


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def page_cost_table() -> Table:
    return Table(
        "1b. What a warm page costs, and what else ran",
        f"The @{COST_CONNECTIONS} cells of table 1, with the CPU accounting of bench/cpu.py: server and wrk = CPU "
        "microseconds (user + system) per request served, and of the server's, the part in its own code (user "
        "space; the rest is the kernel working for it: sockets, copies); others = the share of the machine's CPU "
        "time taken by processes other than the server and wrk during the cell; steal = the share the hypervisor "
        "gave to other guests. instructions = user-space instructions per request counted by callgrind (pkgcache "
        "with 1 worker, nginx as 1 process, wrk with 16 connections for 8 s), and clock reads = clock_gettime and "
        "gettimeofday calls per request in the same count: these two do not depend on the machine's speed or load.",
        [metric("server_us", "server CPU µs/req", "lower"), metric("server_user_us", "of which user space", "lower"),
         metric("wrk_us", "wrk CPU µs/req", "lower"),
         metric("others_pct", "others %", "lower"), metric("steal_pct", "steal %", "lower"),
         metric("instructions", "instructions/req", "lower"), metric("clock_reads", "clock reads/req", "lower")],
    )  # fmt: skip


def add_cell_cost(table: Table, row: str, cell: CellCpu) -> None:
    for key in ("server_us", "server_user_us", "wrk_us", "others_pct", "steal_pct"):
        table.add(row, key, getattr(cell, key))
