"""A cluster: pkgcache nodes behind a real HAProxy running deploy/haproxy.cfg, and the health check it relies on.

The HAProxy tests start three real `pkgcache serve` processes (one worker each) and Debian's haproxy with the
shipped configuration, its addresses replaced by this test's loopback ports; they are skipped, saying so, where
haproxy is not installed (scripts/test installs it when run as root). Every node sends the mirror its own
User-Agent, so the fake mirror's log says which node fetched what.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.cache_service import CacheProcess, RunningCache, free_port
from tests.fakes.dists import Dist, find_dist, sample_dists
from tests.fakes.pypi_upstreams import TunaLikeUpstream
from tests.support import BackgroundLoop, agent_of, http_get, installed_dists, isolated_env, run_pip_install, wait_for

REPO = Path(__file__).resolve().parent.parent
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin"))
NODES = ("node1", "node2", "node3")
EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
BIG = find_dist(sample_dists(), "bigpkg-1.0-py3-none-any.whl")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed: scripts/test installs Debian's haproxy when run as root "
    "(apt-get install haproxy); the cluster tests need it",
)


# --- /-/health: can this node serve? ---


def test_health_is_ok_while_every_upstream_fails(make_cache: Callable[..., RunningCache]) -> None:
    cache = make_cache(["http://127.0.0.1:9/simple/"], server={"node_name": "node7", "tier": "central"})
    assert cache.get("/pypi/simple/alpha/").status == 502  # no upstream answers...
    answer = cache.get("/-/health")
    assert answer.status == 200  # ...and yet the node serves its cache, so it is healthy
    body = json.loads(answer.body)
    assert body["status"] == "ok" and body["node"] == "node7" and body["tier"] == "central"
    assert body["free_bytes"] > 0
    assert answer.headers["x-pkgcache-node"] == "node7"


def test_health_is_503_when_the_disk_keeps_less_room_than_asked(make_cache: Callable[..., RunningCache]) -> None:
    cache = make_cache(["http://127.0.0.1:9/simple/"], server={"min_free_space": "1PB"})
    answer = cache.get("/-/health")
    assert answer.status == 503
    body = json.loads(answer.body)
    assert body["status"] == "unhealthy" and "free in the data directory" in body["reason"]


def test_health_is_503_while_the_data_directory_takes_no_writes(make_cache: Callable[..., RunningCache]) -> None:
    cache = make_cache(["http://127.0.0.1:9/simple/"])
    tmp = cache.data_dir / "tmp"
    assert cache.get("/-/health").status == 200
    # Where downloads are written is not a directory any more: nothing could be stored.
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")
    try:
        answer = cache.get("/-/health")
        assert answer.status == 503 and "cannot write in the data directory" in json.loads(answer.body)["reason"]
    finally:
        tmp.unlink()
        tmp.mkdir()
    assert cache.get("/-/health").status == 200


def test_with_workers_every_worker_answers_health_as_its_primary_does(tmp_path: Path) -> None:
    node = CacheProcess(tmp_path / "data", "--pypi-upstream", "http://127.0.0.1:9/simple/", "--workers", "2")
    try:
        # Connections are spread over both workers; the replica hands /-/health to the primary, whose check it is.
        answers = [http_get(node.url + "/-/health") for _ in range(12)]
        assert {answer.status for answer in answers} == {200}
        status = json.loads(http_get(node.url + "/-/status").body)
        assert len(status["workers"]) == 2
    finally:
        assert node.terminate() == 0


# --- the cluster ---


class GatedMirror(TunaLikeUpstream):
    """A TUNA-like mirror that can hold the first request for one file, as a slow mirror would, until the node
    that asked goes away."""

    def __init__(self, dists: Iterable[Dist]) -> None:
        super().__init__(dists)
        self.hold_first: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.hold_first is not None and request.path.endswith(self.hold_first) and _whole(request.headers):
            self.hold_first = None
            await asyncio.sleep(60)  # cancelled when the asking node's connection closes
        return await super().handle(request)

    def fetches(self, filename: str) -> list[str]:
        """The User-Agents (one per node) of the requests for a whole file, in order (not the ranges a node reads
        of a wheel to make its `.metadata`)."""
        return [agent_of(r) for r in self.requests if r.path.endswith("/" + filename) and _whole(r.headers)]

    def files_fetched(self) -> list[str]:
        """The files asked for whole, by name."""
        return [r.path.rsplit("/", 1)[1] for r in self.requests if "/packages/" in r.path and _whole(r.headers)]


def _whole(headers: Mapping[str, str]) -> bool:
    return "Range" not in headers


def render_haproxy_cfg(text: str, port: int, stats_port: int, node_ports: dict[str, int]) -> str:
    """The shipped configuration with this test's loopback addresses in place of its own."""
    replacements = [(r"bind :3150\b", f"bind 127.0.0.1:{port}"), (r"bind :8404\b", f"bind 127.0.0.1:{stats_port}")]
    replacements += [(rf"\b{name}:3150\b", f"127.0.0.1:{node_port}") for name, node_port in node_ports.items()]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"deploy/haproxy.cfg no longer has exactly one {pattern!r}"
    return text


class HAProxy:
    """Debian's haproxy in the foreground, with the rendered configuration."""

    def __init__(self, config: Path, port: int, stats_port: int) -> None:
        assert HAPROXY is not None
        self.url = f"http://127.0.0.1:{port}"
        self.stats_url = f"http://127.0.0.1:{stats_port}/;csv"
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log_path = config.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT)

    def server_states(self) -> dict[str, str]:
        """Each node's state as HAProxy sees it: UP, DOWN, "UP 1/2" (going down)..."""
        rows = csv.DictReader(io.StringIO(http_get(self.stats_url).body.decode().lstrip("# ")))
        return {
            row["svname"]: row["status"] for row in rows if row["pxname"] == "pkgcache_nodes" and row["svname"] in NODES
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)
        self._log.close()


@dataclass
class Cluster:
    mirror: GatedMirror
    haproxy: HAProxy
    nodes: dict[str, CacheProcess]
    data_dirs: dict[str, Path]
    killed: set[str] = field(default_factory=set)

    @property
    def index_url(self) -> str:
        return f"{self.haproxy.url}/pypi/simple/"

    def node_of_agent(self, agent: str) -> str:
        return agent.removeprefix("pkgcache/")

    def kill(self, name: str) -> None:
        self.nodes[name].kill()
        self.killed.add(name)

    def files_held(self) -> dict[str, set[str]]:
        """The package files each node keeps on its disk (not the `.metadata` it made of wheels)."""
        return {
            name: {path.name for path in (data_dir / "pypi" / "files").glob("*/*") if path.suffix == ".whl"}
            for name, data_dir in self.data_dirs.items()
        }


def _node_config(path: Path, name: str, mirror: TunaLikeUpstream) -> Path:
    path.write_text(
        f'[server]\nnode_name = "{name}"\ntier = "central"\nworkers = 1\n'
        f'[pypi]\nupstreams = ["{mirror.index_url}"]\n'
        f"[conda]\nenabled = false\n"
        f'[upstream]\nuser_agent = "pkgcache/{name}"\ncooldown = 30\n'
    )
    return path


@pytest.fixture
def cluster(bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[Cluster]:
    mirror = GatedMirror(sample_dists())
    bg_loop.run(mirror.start())
    nodes: dict[str, CacheProcess] = {}
    haproxy: HAProxy | None = None
    try:
        data_dirs = {name: tmp_path / name / "data" for name in NODES}
        for name in NODES:
            data_dirs[name].parent.mkdir(parents=True)
            config = _node_config(tmp_path / name / "pkgcache.toml", name, mirror)
            nodes[name] = CacheProcess(data_dirs[name], "--config", str(config))
        port, stats_port = free_port(), free_port()
        rendered = tmp_path / "haproxy.cfg"
        node_ports = {name: node.port for name, node in nodes.items()}
        rendered.write_text(render_haproxy_cfg(HAPROXY_CFG.read_text(), port, stats_port, node_ports))
        haproxy = HAProxy(rendered, port, stats_port)
        cluster = Cluster(mirror, haproxy, nodes, data_dirs)
        wait_for(lambda: _states_are(haproxy, dict.fromkeys(NODES, "UP")), "haproxy to see every node up", 30)
        yield cluster
    finally:
        if haproxy is not None:
            haproxy.stop()
        for node in nodes.values():
            if node.process.poll() is None:
                node.terminate()
        bg_loop.run(mirror.stop())


def _states_are(haproxy: HAProxy, wanted: dict[str, str]) -> bool:
    try:
        return haproxy.server_states() == wanted
    except OSError:
        return False


async def _herd(url: str, count: int) -> list[tuple[int, str, bytes]]:
    """`count` clients asking for `url` at once: status, the node that answered, body."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> tuple[int, str, bytes]:
            async with session.get(url) as response:
                return response.status, response.headers.get("X-Pkgcache-Node", ""), await response.read()

        return await asyncio.gather(*(one() for _ in range(count)))


@needs_haproxy
def test_a_herd_of_64_clients_through_haproxy_causes_one_upstream_fetch(
    cluster: Cluster, bg_loop: BackgroundLoop
) -> None:
    cluster.mirror.faults.bytes_per_second = 4 * 1024 * 1024  # about a second: the herd arrives mid-download
    answers = bg_loop.run(_herd(f"{cluster.haproxy.url}/pypi/files/bigpkg/{BIG.filename}", 64))
    assert [status for status, _, _ in answers] == [200] * 64
    assert all(body == BIG.data for _, _, body in answers)
    # One node answered them all (the path's node), fetched the file once, and is the only one that keeps it.
    (node,) = {node for _, node, _ in answers}
    assert cluster.mirror.fetches(BIG.filename) == [f"pkgcache/{node}"]
    assert [name for name, files in cluster.files_held().items() if BIG.filename in files] == [node]


@needs_haproxy
def test_a_node_killed_in_the_middle_of_a_pip_install_costs_the_install_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    held = "beta-1.1-py3-none-any.whl"
    cluster.mirror.hold_first = held
    target = tmp_path / "target"
    command = [*_pip_install_command(cluster.index_url, target), "alpha==2.0"]
    pip = subprocess.Popen(command, env=isolated_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # pip has its first files and waits for beta's wheel, which the mirror holds: kill the node fetching it.
        wait_for(lambda: cluster.mirror.fetches(held) != [], "the node that fetches beta's wheel", 60)
        (agent,) = cluster.mirror.fetches(held)
        victim = cluster.node_of_agent(agent)
        cluster.kill(victim)
        output, _ = pip.communicate(timeout=120)
    finally:
        if pip.poll() is None:
            pip.kill()
    assert pip.returncode == 0, output
    assert installed_dists(target) == EXPECTED_TREE
    # HAProxy sent the request again to another node, which fetched the file again and keeps it now.
    first, second = cluster.mirror.fetches(held)
    taker = cluster.node_of_agent(second)
    assert first == agent and taker != victim
    assert held in cluster.files_held()[taker]


def _pip_install_command(index_url: str, target: Path) -> list[str]:
    """What run_pip_install runs, to start it in the background."""
    return [
        sys.executable, "-m", "pip", "install", "--target", str(target), "--index-url", index_url,
        "--no-cache-dir", "--no-input", "--progress-bar", "off",
    ]  # fmt: skip


@needs_haproxy
def test_losing_a_node_costs_only_the_refetch_of_the_files_it_held(cluster: Cluster, tmp_path: Path) -> None:
    first = run_pip_install(cluster.index_url, tmp_path / "first", "alpha==2.0")
    assert first.returncode == 0, first.stdout + first.stderr
    held = cluster.files_held()
    wheels = {name for files in held.values() for name in files}
    assert len(wheels) == 4 and sum(len(files) for files in held.values()) == 4  # each file on one node only
    victim = max(held, key=lambda name: len(held[name]))
    cluster.kill(victim)
    survivors = dict.fromkeys(set(NODES) - {victim}, "UP") | {victim: "DOWN"}
    wait_for(lambda: _states_are(cluster.haproxy, survivors), f"haproxy to take {victim} out", 30)
    cluster.mirror.reset_log()

    again = run_pip_install(cluster.index_url, tmp_path / "again", "alpha==2.0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert installed_dists(tmp_path / "again") == EXPECTED_TREE
    # The files the lost node held were fetched again, once each, by the nodes its paths moved to; no other file.
    assert sorted(cluster.mirror.files_fetched()) == sorted(held[victim])


def test_the_compose_example_matches_the_haproxy_configuration() -> None:
    """deploy/compose.cluster.yaml is not run here (no container engine): at least its nodes and haproxy.cfg's
    servers must be the same, each node with its own name and volume, and only HAProxy published."""
    compose = yaml.safe_load((REPO / "deploy" / "compose.cluster.yaml").read_text())
    services = compose["services"]
    servers = re.findall(r"^\s*server (\S+) (\S+):3150 id (\d+)", HAPROXY_CFG.read_text(), re.MULTILINE)
    assert [(name, host) for name, host, _ in servers] == [(name, name) for name in NODES]
    assert len({ident for _, _, ident in servers}) == len(servers)
    for name in NODES:
        node = services[name]
        assert node["environment"]["PKGCACHE_SERVER__NODE_NAME"] == name
        assert node["environment"]["PKGCACHE_SERVER__TIER"] == "central"
        assert node["volumes"] == [f"{name}-data:/data"] and "ports" not in node
    assert services["haproxy"]["volumes"] == ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    assert "3150:3150" in services["haproxy"]["ports"]
