"""pkgcache's compose.yaml run by docker-compose against podman's docker-compatible service, as a user runs it.

scripts/test_container prepares what Python does not: podman and its service (DOCKER_HOST), the image
(PKGCACHE_TEST_IMAGE), the compose command (PKGCACHE_TEST_COMPOSE) and the project's name (PKGCACHE_TEST_PROJECT,
so the script can clean up after a test that died). A project is the repository's compose.yaml, unchanged, run
from a folder of the test's (which holds the pkgcache.toml it mounts), plus compose.test.yaml: the built image,
and the network namespace of this process instead of published ports, because these machines reach nothing but
loopback and the fake upstreams listen there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
OVERRIDE_FILE = Path(__file__).with_name("compose.test.yaml")
SERVICE = "pkgcache"
# The compose file's named volume; docker-compose prefixes it with the project's name.
VOLUME = "pkgcache-data"
COMMAND_TIMEOUT = 180.0
# Longer than compose.yaml's stop_grace_period (90 s), so a stop that needed the engine's kill still ends.
STOP_TIMEOUT = 150.0

REQUIRED_ENV = ("DOCKER_HOST", "PKGCACHE_TEST_IMAGE", "PKGCACHE_TEST_PROJECT")


def missing_environment() -> list[str]:
    """The variables scripts/test_container sets that this process lacks."""
    return [name for name in REQUIRED_ENV if not os.environ.get(name)]


def podman(*args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run podman (configured by the script's CONTAINERS_CONF); its output, or AssertionError saying why not."""
    return _checked(["podman", *args], os.environ.copy(), timeout)


def _checked(command: list[str], env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{shlex.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


@dataclass
class ComposeProject:
    """One compose project of the test: `docker-compose -p NAME -f compose.yaml -f compose.test.yaml ...`."""

    name: str
    directory: Path  # the project directory: ./pkgcache.toml in compose.yaml is found here
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *args: str) -> list[str]:
        compose = shlex.split(os.environ.get("PKGCACHE_TEST_COMPOSE", "docker-compose"))
        files = ["-f", str(COMPOSE_FILE), "-f", str(OVERRIDE_FILE)]
        return [*compose, "-p", self.name, *files, "--project-directory", str(self.directory), *args]

    def environment(self) -> dict[str, str]:
        env = os.environ.copy()
        env["PKGCACHE_TEST_NETNS"] = f"/proc/{os.getpid()}/ns/net"
        env["PKGCACHE_TEST_PORT"] = str(self.port)
        return env

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """One compose command, which must succeed; its output."""
        return _checked(self.command(*args), self.environment(), timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """One compose command in the background (wait for it with `.communicate(timeout=...)`)."""
        return subprocess.Popen(
            self.command(*args),
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def container_id(self) -> str:
        return self.run("ps", "-q", SERVICE).strip()

    def volume_name(self) -> str:
        return f"{self.name}_{VOLUME}"

    def volume_dir(self) -> Path:
        """Where the data volume lives on this machine (podman runs as root here, so it is readable)."""
        return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", self.volume_name()).strip())

    def volume_exists(self) -> bool:
        listed = podman("volume", "ls", "--format", "{{.Name}}").split()
        return self.volume_name() in listed


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass(frozen=True)
class TreeMemory:
    """Memory of a process tree: PSS (shared pages divided among their sharers) and RSS, summed."""

    processes: int
    pss_bytes: int
    rss_bytes: int


def process_tree_memory(root: int) -> TreeMemory:
    """The memory of `root` and every process below it, read from /proc (as BENCHMARKS.md measures pkgcache)."""
    pids = _descendants(root) | {root}
    pss = rss = 0
    for pid in pids:
        fields = _smaps_rollup(pid)
        pss += fields.get("Pss", 0)
        rss += fields.get("Rss", 0)
    return TreeMemory(len(pids), pss * 1024, rss * 1024)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])  # the field after the state, past the command's name
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _smaps_rollup(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup ({} for a process that is gone)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, int] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields
