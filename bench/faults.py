"""Scenario "faults" (issue 9): pkgcache under hostile clients and a dripping mirror, bounded in time, loopback only.

Four phases, each against pkgcache with two workers (a primary and a replica) and these settings, shorter than the
defaults so the phases stay short: [server] header_timeout = 5, keepalive_timeout = 5; [upstream]
first_byte_timeout = 3, min_rate = 10240 bytes/s over rate_window = 2 s.
- slowloris: SLOW_CONNECTIONS connections send a request head a byte a second and never finish it, while wrk (16
  connections) asks for a cached page; errors and p99 are wrk's, `shed` = slow connections pkgcache closed.
- miss burst: 1,000 distinct projects no mirror has, asked at once (one connection each): every answer must be
  a 404, never a 5xx or a reset (about half land on the replica, which hands them to the primary).
- 1,024 connections: wrk with 1,024 connections on a cached page.
- dripping mirror: the first mirror sends every body at DRIP_RATE bytes/s, the second is healthy; every project
  page of the bench's real wheels, then every wheel, cold, a few at a time; each wheel's sha256 is checked.
Each phase: requests, errors, p50/p99/max latency, and pkgcache's process tree before and after (PSS, open file
descriptors) plus the largest descriptor count seen during the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from bench import load, nginx_conf, procs
from bench.common import clean_env, log
from bench.plan import Plan
from bench.prepare_pypi import PAGE_PROJECT, UPSTREAM_ROOT
from bench.systems import Pkgcache, Upstream, start_nginx
from bench.tables import Table, metric

SLOW_CONNECTIONS = 3000
SLOWLORIS_SECONDS = 15
BURST = 1000
WIDE_CONNECTIONS = 1024
DRIP_RATE = 256  # bytes per second, per connection
DRIP_PARALLEL = 8
SERVER = {"workers": 2, "header_timeout": 5, "keepalive_timeout": 5}
UPSTREAM_SECTION = "\n[upstream]\nfirst_byte_timeout = 3\nmin_rate = 10240\nrate_window = 2\n"


class DrippingMirror(Upstream):
    """nginx serving the bench's upstream tree, every body at DRIP_RATE bytes/s: a throttled or failing mirror."""

    def _launch(self, fresh: bool) -> procs.Proc:
        conf = self.run_dir / "nginx.conf"
        conf.write_text(nginx_conf.drip_conf(self.run_dir, UPSTREAM_ROOT, self.port, self.access_log, DRIP_RATE))
        return start_nginx(self.name, self.run_dir, conf)


class TwoMirrorPkgcache(Pkgcache):
    """pkgcache whose PyPI upstreams are a dripping mirror first, the healthy one second."""

    def __init__(self, name: str, run_dir: Path, first: Upstream, second: Upstream) -> None:
        super().__init__(name, run_dir, second, server=SERVER, sections=UPSTREAM_SECTION)
        self.first = first

    def pypi_upstreams(self) -> str:
        return f'["{self.first.index_url}", "{self.upstream.index_url}"]'


@dataclass
class Outcome:
    """What the clients of one phase saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, answers that were right
    errors: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.errors)


def faults_table(plan: Plan, run_dir: Path, upstream: Upstream, errors: list[str]) -> Table:
    _raise_file_limit()
    table = Table(
        "10. Faults under load (issue 9)",
        "pkgcache with 2 workers, header_timeout = keepalive_timeout = 5 s, first_byte_timeout = 3 s, min_rate = "
        f"10 KB/s over 2 s. slowloris: {SLOW_CONNECTIONS} connections sending a request head a byte a second for "
        f"{SLOWLORIS_SECONDS} s while wrk (16 connections) asks for a cached page (errors, latency: wrk's; shed: "
        f"slow connections pkgcache closed). miss burst: {BURST} distinct missing projects at once, one connection "
        f"each (every answer must be 404). {WIDE_CONNECTIONS} connections: wrk on a cached page. dripping mirror: "
        f"the first mirror sends every body at {DRIP_RATE} B/s, the second is healthy; the project pages and "
        "wheels of the install set, cold, 8 at a time, each wheel's sha256 checked. PSS and open descriptors: "
        "pkgcache's whole process tree, before and after the phase (and the most descriptors seen during it).",
        [metric("requests", "requests", "higher"), metric("errors", "errors", "lower"),
         metric("p50_ms", "p50 (ms)", "lower"), metric("p99_ms", "p99 (ms)", "lower"),
         metric("max_ms", "max (ms)", "lower"), metric("shed", "slow conns shed", "higher"),
         metric("refused", "slow conns refused", "lower"),
         metric("pss_before_mb", "PSS before (MB)", "lower"), metric("pss_after_mb", "PSS after (MB)", "lower"),
         metric("fds_before", "fds before", "lower"), metric("fds_max", "fds max", "lower"),
         metric("fds_after", "fds after", "lower")],
    )  # fmt: skip
    drip = DrippingMirror("dripping-mirror", run_dir / "faults" / "drip")
    drip.start(fresh=True)
    try:
        for _ in range(plan.runs):
            _healthy_phases(table, run_dir / "faults" / "pkgcache", upstream, errors)
            _drip_phase(table, run_dir / "faults" / "pkgcache-drip", drip, upstream, errors)
    finally:
        drip.stop()
    return table


def _healthy_phases(table: Table, folder: Path, upstream: Upstream, errors: list[str]) -> None:
    system = Pkgcache("pkgcache", folder, upstream, server=SERVER, sections=UPSTREAM_SECTION)
    system.start(fresh=True)
    try:
        page = system.page_url(PAGE_PROJECT)
        for _ in range(3):
            load.fetch(page, accept=load.PIP_ACCEPT)
        phases: dict[str, Callable[[], Outcome]] = {
            "slowloris": lambda: _slowloris(system, page),
            "miss burst": lambda: asyncio.run(_miss_burst(system)),
            f"{WIDE_CONNECTIONS} connections": lambda: _wrk_outcome(page, WIDE_CONNECTIONS, 10),
        }
        for name, phase in phases.items():
            _measure_phase(table, name, system, phase, errors)
    finally:
        system.stop()


def _drip_phase(table: Table, folder: Path, drip: Upstream, healthy: Upstream, errors: list[str]) -> None:
    system = TwoMirrorPkgcache("pkgcache", folder, drip, healthy)
    system.start(fresh=True)
    try:
        _measure_phase(table, "dripping mirror", system, lambda: asyncio.run(_cold_set(system)), errors)
    finally:
        system.stop()


def _measure_phase(table: Table, name: str, system: Pkgcache, phase: Callable[[], Outcome],
                   errors: list[str]) -> None:  # fmt: skip
    assert system.proc is not None
    pid = system.proc.pid
    time.sleep(1)
    before = procs.tree_memory(pid).pss_kb, _tree_fds(pid)
    with _fd_peak(pid) as peak:
        started = time.monotonic()
        outcome = phase()
        seconds = time.monotonic() - started
    time.sleep(2)
    after = procs.tree_memory(pid).pss_kb, _tree_fds(pid)
    failed = int(outcome.extra.get("errors", 0)) + len(outcome.errors)  # wrk's count, or the clients' own
    if failed:
        errors.append(f"faults: {name}: {failed} errors, e.g. {sorted(set(outcome.errors))[:3] or 'from wrk'}")
    latencies = sorted(outcome.latencies)
    values: dict[str, float | None] = {
        "requests": outcome.extra.get("requests", outcome.requests),
        "errors": failed,
        "p50_ms": outcome.extra.get("p50_ms", _percentile(latencies, 50)),
        "p99_ms": outcome.extra.get("p99_ms", _percentile(latencies, 99)),
        "max_ms": outcome.extra.get("max_ms", latencies[-1] * 1000 if latencies else None),
        "shed": outcome.extra.get("shed"),
        "refused": outcome.extra.get("refused"),
        "pss_before_mb": round(before[0] / 1024, 1),
        "pss_after_mb": round(after[0] / 1024, 1),
        "fds_before": before[1],
        "fds_max": peak[0],
        "fds_after": after[1],
    }
    for key, value in values.items():
        table.add(name, key, value)
    log(f"faults: {name} ({seconds:.1f}s): {values}")


def _percentile(sorted_seconds: list[float], pct: float) -> float | None:
    if not sorted_seconds:
        return None
    if len(sorted_seconds) == 1:
        return sorted_seconds[0] * 1000
    return statistics.quantiles(sorted_seconds, n=100, method="inclusive")[int(pct) - 1] * 1000


# --- slowloris ---


def _slowloris(system: Pkgcache, page: str) -> Outcome:
    """wrk on a cached page while SLOW_CONNECTIONS connections dribble request heads; wrk's figures."""
    wrk = _start_wrk(page, 16, SLOWLORIS_SECONDS)
    held = asyncio.run(_hold_slow_connections(system.port, SLOWLORIS_SECONDS))
    text = wrk.communicate(timeout=SLOWLORIS_SECONDS + 60)[0]
    outcome = _from_wrk(text)
    outcome.extra["shed"] = held["shed"]
    outcome.extra["refused"] = held["refused"]  # slow clients that could not connect (not counted as errors)
    return outcome


async def _hold_slow_connections(port: int, seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    counts = {"shed": 0, "refused": 0}
    opened = await asyncio.gather(*(_open(port) for _ in range(SLOW_CONNECTIONS)))
    counts["refused"] = sum(1 for conn in opened if conn is None)
    live = [conn for conn in opened if conn is not None]
    head = b"GET /pypi/simple/slowloris/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    await asyncio.gather(*(_dribble(reader, writer, head, deadline, counts) for reader, writer in live))
    return counts


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError):
        return None


async def _dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, deadline: float,
                   counts: dict[str, int]) -> None:  # fmt: skip
    """One byte of `head` (then of a header value that never ends) a second, until the deadline or a close."""
    data = head
    position = 0
    try:
        while time.monotonic() < deadline:
            writer.write(data[position : position + 1] if position < len(data) else b"x")
            position += 1
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 1.0) == b"" or reader.at_eof():
                    counts["shed"] += 1
                    return
    except (ConnectionError, OSError):
        counts["shed"] += 1
    finally:
        writer.close()


# --- a burst of misses ---


async def _miss_burst(system: Pkgcache) -> Outcome:
    outcome = Outcome()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = asyncio.Event()
        tasks = [asyncio.create_task(_one_miss(session, f"{system.index_url}bench-missing-{n}/", start, outcome))
                 for n in range(BURST)]  # fmt: skip
        await asyncio.sleep(0.1)
        start.set()
        await asyncio.gather(*tasks)
    return outcome


async def _one_miss(session: aiohttp.ClientSession, url: str, start: asyncio.Event, outcome: Outcome) -> None:
    await start.wait()
    began = time.monotonic()
    try:
        async with session.get(url) as response:
            await response.read()
            if response.status == 404:
                outcome.latencies.append(time.monotonic() - began)
            else:
                outcome.errors.append(f"status {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome.errors.append(type(exc).__name__)


# --- the dripping mirror ---


async def _cold_set(system: Pkgcache) -> Outcome:
    """Every project page of the install set, then every wheel, DRIP_PARALLEL at a time, each wheel checked."""
    outcome = Outcome()
    # The real wheels of the install set (the synthetic bench_* files are the other scenarios').
    wanted = {w.name for w in (UPSTREAM_ROOT / "packages").glob("*.whl") if not w.name.startswith("bench_")}
    gate = asyncio.Semaphore(DRIP_PARALLEL)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        projects = sorted({_project(name) for name in wanted})
        pages = await asyncio.gather(*(_timed(gate, outcome, _page_links(session, system, p)) for p in projects))
        links = {name: url for found in pages if found for name, url in found.items() if name in wanted}
        await asyncio.gather(*(_timed(gate, outcome, _checked_wheel(session, url, UPSTREAM_ROOT / "packages" / n))
                               for n, url in links.items()))  # fmt: skip
        if len(links) < len(wanted):
            outcome.errors.append(f"{len(wanted) - len(links)} wheels not linked from their pages")
    return outcome


def _project(wheel_name: str) -> str:
    return wheel_name.split("-", 1)[0].lower().replace("_", "-")


async def _timed(gate: asyncio.Semaphore, outcome: Outcome, work: Awaitable[object]) -> object:
    async with gate:
        began = time.monotonic()
        try:
            result = await work
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            outcome.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return None
        outcome.latencies.append(time.monotonic() - began)
        return result


async def _page_links(session: aiohttp.ClientSession, system: Pkgcache, project: str) -> dict[str, str]:
    url = system.page_url(project)
    async with session.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"}) as response:
        if response.status != 200:
            raise ValueError(f"page {project}: status {response.status}")
        files = (await response.json(content_type=None))["files"]
    return {item["filename"]: urljoin(url, item["url"]) for item in files}


async def _checked_wheel(session: aiohttp.ClientSession, url: str, original: Path) -> None:
    async with session.get(url) as response:
        body = await response.read()
    if response.status != 200:
        raise ValueError(f"{original.name}: status {response.status}")
    if hashlib.sha256(body).hexdigest() != hashlib.sha256(original.read_bytes()).hexdigest():
        raise ValueError(f"{original.name}: wrong bytes ({len(body)} of {original.stat().st_size})")


# --- wrk and measurements ---


def _start_wrk(url: str, connections: int, seconds: float) -> subprocess.Popen[str]:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", "--timeout", "10s",
               "-H", f"Accept: {load.PIP_ACCEPT}", url]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())


def _wrk_outcome(url: str, connections: int, seconds: float) -> Outcome:
    wrk = _start_wrk(url, connections, seconds)
    out, err = wrk.communicate(timeout=seconds + 60)
    if wrk.returncode != 0:
        return Outcome(errors=[f"wrk failed: {err.strip()[:200]}"])
    return _from_wrk(out)


def _from_wrk(text: str) -> Outcome:
    result = load.parse_wrk(text)
    outcome = Outcome()
    outcome.extra = {
        "requests": round(result.requests_per_s * result.duration_s),
        "errors": result.errors,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
    }
    # wrk's "Latency  avg  stdev  max  +/- stdev" line.
    found = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)\b", text)
    if found:
        outcome.extra["max_ms"] = float(found.group(1)) * load.TIME_UNITS[found.group(2)] * 1000
    return outcome


def _tree_fds(pid: int) -> int:
    total = 0
    for member in procs.descendants(pid):
        with contextlib.suppress(OSError):
            total += len(list(Path(f"/proc/{member}/fd").iterdir()))
    return total


@contextlib.contextmanager
def _fd_peak(pid: int, interval: float = 0.25) -> Iterator[list[int]]:
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _tree_fds(pid))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, name="fd-sampler", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _raise_file_limit() -> None:
    """The slow connections and the burst need more descriptors in this process than the usual soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_CONNECTIONS + BURST + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))
