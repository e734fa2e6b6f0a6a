"""Tiers and clusters, measured by hand on loopback (docs/operations.md, "Tiers and clusters"):

    .venv/bin/python -m bench.tiers [--mirror-rate 4] [--wheels 20] [--wheel-mib 2]

1. A child's cold install over a warm parent, against the same install straight from the mirror: pip and uv
   install a tree of synthetic wheels (one root depending on all) from a fake TUNA-like mirror that sends each
   answer at `--mirror-rate` MB/s (a mirror over a slow link), and the same through a child pkgcache whose parent
   pkgcache already holds every file. Both tiers are real `pkgcache serve` processes; "unthrottled" rows are the
   same with the mirror at loopback speed, which shows what the two hops cost.
2. A herd across a cluster: three nodes behind haproxy (deploy/haproxy.cfg), 64 clients at once for one missing
   32 MiB file: how many times the mirror was asked for it, and the wall time beside one client alone.
3. Losing a node: the cluster installs the tree, the node holding most files is killed, and the tree is installed
   again: how long haproxy took to take the node out, and what was fetched again, beside the whole.

Needs haproxy (Debian's) for 2 and 3. Everything listens on 127.0.0.1; it stops by itself (a few minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.cache_service import CacheProcess, free_port
from tests.fakes.dists import Dist, build_wheel
from tests.fakes.pypi_upstreams import TunaLikeUpstream
from tests.support import UV, BackgroundLoop, isolated_env
from tests.test_cluster import HAPROXY, HAPROXY_CFG, NODES, HAProxy, render_haproxy_cfg

MB = 1_000_000
MiB = 1024 * 1024


def synthetic_tree(count: int, size: int) -> list[Dist]:
    """`count` wheels of `size` bytes (incompressible), and `root`, which requires them all."""
    leaves = [build_wheel(f"leaf{index:02d}", "1.0", payload_size=size) for index in range(count)]
    root = build_wheel("root", "1.0", requires=[f"leaf{index:02d}" for index in range(count)])
    return [root, *leaves]


def node_config(path: Path, name: str, tier: str, upstreams: list[str]) -> Path:
    listed = ", ".join(f'"{url}"' for url in upstreams)
    path.write_text(
        f'[server]\nnode_name = "{name}"\ntier = "{tier}"\nworkers = 1\n'
        f"[pypi]\nupstreams = [{listed}]\n[conda]\nenabled = false\n"
        f'[upstream]\nuser_agent = "pkgcache/{name}"\n'
    )
    return path


def start_node(root: Path, name: str, tier: str, upstreams: list[str]) -> CacheProcess:
    (root / name).mkdir(parents=True, exist_ok=True)
    config = node_config(root / name / "pkgcache.toml", name, tier, upstreams)
    return CacheProcess(root / name / "data", "--config", str(config))


def timed_install(tool: str, index_url: str, target: Path) -> float:
    if tool == "pip":
        command = [sys.executable, "-m", "pip", "install", "--target", str(target), "--index-url", index_url]
        command += ["--no-cache-dir", "--no-input", "--progress-bar", "off", "root"]
    else:
        command = [str(UV), "pip", "install", "--python", sys.executable, "--target", str(target)]
        command += ["--index-url", index_url, "--no-cache", "root"]
    # One download at a time, as pip does: the fake mirror slows each answer, not the link, so parallel downloads
    # would see the mirror as that many times faster than a slow link is.
    env = isolated_env(UV_CONCURRENT_DOWNLOADS="1")
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}")
    return elapsed


def measure_tiers(loop: BackgroundLoop, work: Path, dists: list[Dist], rate: int) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for throttled in (True, False):
        label = f"mirror at {rate / MB:g} MB/s" if throttled else "mirror unthrottled"
        mirror = TunaLikeUpstream(dists, strict_ua=False)  # clients ask it directly too
        mirror.faults.bytes_per_second = rate if throttled else None
        loop.run(mirror.start())
        root = Path(tempfile.mkdtemp(dir=work))
        try:
            parent = start_node(root, "parent", "central", [mirror.index_url])
            try:
                for tool in ("pip", "uv"):
                    direct = timed_install(tool, mirror.index_url, root / f"{tool}-direct")
                    timed_install(tool, f"{parent.url}/pypi/simple/", root / f"{tool}-warm")  # warms the parent
                    child = start_node(
                        root, f"child-{tool}", "office", [f"{parent.url}/pypi/simple/", mirror.index_url]
                    )
                    try:
                        over_parent = timed_install(tool, f"{child.url}/pypi/simple/", root / f"{tool}-child")
                    finally:
                        child.terminate()
                    rows.append((f"{tool}, {label}: straight from the mirror", direct))
                    rows.append((f"{tool}, {label}: cold child over a warm parent", over_parent))
            finally:
                parent.terminate()
        finally:
            loop.run(mirror.stop())
    return rows


class Cluster:
    def __init__(self, loop: BackgroundLoop, work: Path, mirror: TunaLikeUpstream) -> None:
        self.root = Path(tempfile.mkdtemp(dir=work))
        self.nodes = {name: start_node(self.root, name, "central", [mirror.index_url]) for name in NODES}
        port, stats_port = free_port(), free_port()
        config = self.root / "haproxy.cfg"
        ports = {name: node.port for name, node in self.nodes.items()}
        config.write_text(render_haproxy_cfg(HAPROXY_CFG.read_text(), port, stats_port, ports))
        self.haproxy = HAProxy(config, port, stats_port)
        wait_until(lambda: self.states() == dict.fromkeys(NODES, "UP"), 30)

    def states(self) -> dict[str, str]:
        try:
            return self.haproxy.server_states()
        except OSError:
            return {}

    def files_held(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                path.name: path.stat().st_size
                for path in (self.root / name / "data/pypi/files").glob("*/*")
                if path.suffix == ".whl"  # not the `.metadata` a node made of a wheel
            }
            for name in NODES
        }

    def stop(self) -> None:
        self.haproxy.stop()
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.terminate()


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError("gave up waiting")
        time.sleep(0.05)
    return time.monotonic() - started


async def herd(url: str, count: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one() for _ in range(count)))


def measure_herd(loop: BackgroundLoop, work: Path, rate: int) -> list[tuple[str, float]]:
    big = [build_wheel(f"herd{index}", "1.0", payload_size=32 * MiB) for index in range(2)]
    mirror = TunaLikeUpstream(big)
    mirror.faults.bytes_per_second = rate
    loop.run(mirror.start())
    cluster = Cluster(loop, work, mirror)
    try:
        rows = []
        for dist, clients in ((big[0], 1), (big[1], 64)):
            url = f"{cluster.haproxy.url}/pypi/files/{dist.normalized}/{dist.filename}"
            started = time.monotonic()
            statuses = loop.run(herd(url, clients), timeout=900)
            elapsed = time.monotonic() - started
            assert statuses == [200] * clients, statuses
            fetches = sum(1 for r in mirror.requests if r.path.endswith(dist.filename))
            rows.append((f"{clients} client(s), one missing 32 MiB file: seconds (mirror fetches: {fetches})", elapsed))
        rows.append(("haproxy's resident memory after the herd, MB", rss_bytes(cluster.haproxy.process.pid) / MB))
        for name, node in cluster.nodes.items():
            rows.append((f"{name}'s resident memory after the herd, MB", rss_bytes(node.process.pid) / MB))
        rows += measure_spread(loop, cluster, 3000)
        return rows
    finally:
        cluster.stop()
        loop.run(mirror.stop())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def answering_nodes(base: str, paths: list[str]) -> list[str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:

        async def one(path: str) -> str:
            async with session.get(base + path) as response:
                await response.read()
                return response.headers.get("X-Pkgcache-Node", "")

        return await asyncio.gather(*(one(path) for path in paths))


def measure_spread(loop: BackgroundLoop, cluster: Cluster, count: int) -> list[tuple[str, float]]:
    """How evenly the hash spreads paths: `count` file paths that exist nowhere, and which node each went to."""
    paths = [f"/pypi/files/spread{index}/spread{index}-1.0-py3-none-any.whl" for index in range(count)]
    nodes = loop.run(answering_nodes(cluster.haproxy.url, paths), timeout=900)
    shares = sorted((nodes.count(name) / count for name in NODES), reverse=True)
    return [
        (f"share of {count} paths on the busiest, middle, quietest node (x N)", share * len(NODES)) for share in shares
    ]


def measure_loss(loop: BackgroundLoop, work: Path, dists: list[Dist]) -> list[tuple[str, float]]:
    mirror = TunaLikeUpstream(dists, strict_ua=False)  # clients ask it directly too
    loop.run(mirror.start())
    cluster = Cluster(loop, work, mirror)
    try:
        index = f"{cluster.haproxy.url}/pypi/simple/"
        timed_install("pip", index, cluster.root / "first")
        held = cluster.files_held()
        victim = max(held, key=lambda name: len(held[name]))
        total_files = sum(len(files) for files in held.values())
        total_bytes = sum(sum(files.values()) for files in held.values())
        cluster.nodes[victim].kill()
        expected = dict.fromkeys(set(NODES) - {victim}, "UP") | {victim: "DOWN"}
        detection = wait_until(lambda: cluster.states() == expected, 60)
        mirror.reset_log()
        again = timed_install("pip", index, cluster.root / "again")
        # Whole files: a node making a wheel's `.metadata` reads a few ranges of it, counted apart.
        refetched = [
            r.path.rsplit("/", 1)[1] for r in mirror.requests if "/packages/" in r.path and "Range" not in r.headers
        ]
        ranges = sum(1 for r in mirror.requests if "Range" in r.headers)
        lost = held[victim]
        assert sorted(refetched) == sorted(lost), (refetched, lost)
        return [
            (f"files held by the lost node: {len(lost)} of {total_files}", len(lost)),
            (f"bytes fetched again: {sum(lost.values()) / MB:.1f} MB of {total_bytes / MB:.1f} MB", 0.0),
            ("range requests for the lost node's .metadata, made again", ranges),
            ("seconds until haproxy took the node out", detection),
            ("pip install after the loss (the lost node's files fetched again), seconds", again),
        ]
    finally:
        cluster.stop()
        loop.run(mirror.stop())


def show(rows: list[tuple[str, float]]) -> None:
    for label, value in rows:
        print(f"| {label} | {value:.2f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror-rate", type=float, default=4.0, help="MB/s the slow mirror sends each answer at")
    parser.add_argument("--wheels", type=int, default=20, help="wheels in the installed tree")
    parser.add_argument("--wheel-mib", type=float, default=2.0, help="size of each wheel")
    args = parser.parse_args()
    rate = int(args.mirror_rate * MB)
    dists = synthetic_tree(args.wheels, int(args.wheel_mib * MiB))
    loop = BackgroundLoop()
    work = Path(tempfile.mkdtemp(prefix="pkgcache-bench-tiers-"))
    try:
        print(f"tree: root + {args.wheels} wheels of {args.wheel_mib:g} MiB; slow mirror: {args.mirror_rate:g} MB/s")
        show(measure_tiers(loop, work, dists, rate))
        if HAPROXY is None:
            print("haproxy is not installed: the cluster measurements are skipped")
        else:
            show(measure_herd(loop, work, rate * 4))
            show(measure_loss(loop, work, dists))
    finally:
        loop.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
