"""The service commands as an admin uses them: real `pkgcache` processes started, inspected and stopped.

Also `init` (the written file must load) and `check` (fake upstreams on loopback, good and bad).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from pkgcache.cli import main
from pkgcache.cli.status_commands import upstream_lines
from pkgcache.config import Settings, load_settings
from pkgcache.daemon.errors import ServesElsewhere
from pkgcache.daemon.files import InstancePaths
from pkgcache.daemon.lifecycle import wait_until_ready
from pkgcache.daemon.logs import problem_lines
from tests.cache_service import RunningCache, free_port
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import FailingUpstream, SlowUpstream, TunaLikeUpstream
from tests.fakes.server import FakeServer
from tests.support import BackgroundLoop, http_get, isolated_env

BIG = "bigpkg-1.0-py3-none-any.whl"
# Every conda upstream points at a closed loopback port: nothing may leave the machine.
DEAD_CONDA = "http://127.0.0.1:9/"


# --- helpers, also used by test_client_config.py ---


# Where the started instances are remembered during the tests, instead of this account's own list.
_STATE_HOME = Path(tempfile.mkdtemp(prefix="pkgcache-test-state-"))
atexit.register(shutil.rmtree, _STATE_HOME, True)


def cli_env(**extra: str) -> dict[str, str]:
    """The test environment without any pkgcache settings of this machine, nor its list of started instances."""
    env = {k: v for k, v in isolated_env().items() if not k.startswith("PKGCACHE_")}
    env["XDG_STATE_HOME"] = str(_STATE_HOME)
    env.update(extra)
    return env


def run_pkgcache(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pkgcache", *args]
    return subprocess.run(command, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class BackgroundService:
    """`pkgcache start` on loopback with its own data directory; `close()` always leaves nothing running."""

    def __init__(self, data_dir: Path, pypi_upstream: str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or cli_env()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.serve_args = [
            "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir),
            "--pypi-upstream", pypi_upstream, "--conda-upstream", DEAD_CONDA, *extra,
        ]  # fmt: skip
        self.pids: set[int] = set()

    @property
    def locate(self) -> list[str]:
        return ["--data-dir", str(self.data_dir)]

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "pkgcache.pid"

    @property
    def pid(self) -> int:
        pid = int(self.pid_file.read_text())
        self.pids.add(pid)
        return pid

    def start(self) -> subprocess.CompletedProcess[str]:
        done = run_pkgcache("start", *self.serve_args, env=self.env)
        if self.pid_file.exists():
            self.pid  # noqa: B018 - remember it, so close() can make sure it is gone
        return done

    def run(self, command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`pkgcache COMMAND --data-dir ours ARGS...`"""
        return self.run_plain(command, *self.locate, *args, timeout=timeout)

    def run_plain(self, command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`pkgcache COMMAND ARGS...`, naming no data directory unless ARGS do."""
        done = run_pkgcache(command, *args, timeout=timeout, env=self.env)
        if self.pid_file.exists():
            self.pid  # noqa: B018
        return done

    def close(self) -> None:
        self.run("stop", "--timeout", "10")
        for pid in self.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tuna(bg_loop: BackgroundLoop) -> Iterator[TunaLikeUpstream]:
    server = TunaLikeUpstream(sample_dists())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.fixture
def service(tmp_path: Path, tuna: TunaLikeUpstream) -> Iterator[BackgroundService]:
    """A started background pkgcache over the TUNA-like fake."""
    running = BackgroundService(tmp_path / "data", tuna.index_url)
    try:
        started = running.start()
        assert started.returncode == 0, started.stderr + started.stdout
        yield running
    finally:
        running.close()


# --- start, status, stop ---


def test_start_status_stop(service: BackgroundService) -> None:
    pid = service.pid
    assert pid_alive(pid)
    runtime = json.loads((service.data_dir / "pkgcache.runtime.json").read_text())
    assert runtime["port"] == service.port and runtime["pid"] == pid
    assert http_get(service.url + "/-/health").status == 200

    # The conda upstream is dead: one request makes it rest, and `status` says so, as the page at / does.
    assert http_get(service.url + "/conda/pkgs/main/noarch/repodata.json").status >= 500
    status = service.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"pid {pid}" in status.stdout and "uptime" in status.stdout and service.url in status.stdout
    lines = {line.split(":", 1)[0].strip(): line for line in status.stdout.splitlines()}
    assert "1 of 1 upstreams answering" in lines["pypi"]
    assert "0 of 1 upstreams answering" in lines["conda"] and " resting " in lines["conda"]
    # With the default worker count, a machine with several cores runs worker processes under this pid.
    workers = json.loads(http_get(service.url + "/-/status").body)["workers"] or []
    if (os.cpu_count() or 1) > 1:
        assert len(workers) > 1 and "workers:" in status.stdout and f"primary {workers[0]['pid']}," in status.stdout

    stopped = service.run("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not pid_alive(pid)
    assert not any(pid_alive(worker["pid"]) for worker in workers)
    assert not service.pid_file.exists() and not (service.data_dir / "pkgcache.runtime.json").exists()

    status = service.run("status")
    assert status.returncode == 3 and "not running" in status.stdout
    again = service.run("stop")
    assert again.returncode == 0 and "not running" in again.stdout


def test_status_says_per_side_which_upstreams_answer_and_when_the_offline_view_is_served() -> None:
    tuna = {"name": "tuna", "healthy": False, "cooldown_remaining": 40.2, "last_error": "HTTP 503 from x " * 20}
    ustc = {"name": "ustc", "healthy": True, "cooldown_remaining": 0.0, "last_error": None}
    info = {
        "upstreams": {"pypi": [tuna, ustc, {**ustc, "name": "bfsu"}], "conda": [{**tuna, "last_error": "refused"}]},
        "pypi": {"gate": {"offline": False, "degraded": False}},
        "conda": {"gate": {"offline": False, "degraded": True}},
    }
    lines = dict(upstream_lines(info))
    assert lines["pypi"].startswith("2 of 3 upstreams answering; tuna resting 40 s (HTTP 503 from x HTTP 503")
    assert lines["pypi"].endswith("...)") and len(lines["pypi"]) < 160
    assert lines["conda"] == (
        "offline view (every upstream down): only what the cache holds is served; "
        "0 of 1 upstreams answering; tuna resting 40 s (refused)"
    )
    probing = {**tuna, "cooldown_remaining": 0.0, "probing": True, "last_error": "refused"}
    info["upstreams"]["conda"] = [probing, {**probing, "name": "ustc", "probe_in_flight": True}]
    info["conda"] = {"gate": {"offline": False, "degraded": True, "probing": True}}
    assert dict(upstream_lines(info))["conda"] == (
        "offline view (every upstream down, each probed once its rest is over): only what the cache holds is "
        "served; 0 of 2 upstreams answering; tuna resting until it answers a probe (refused); "
        "ustc resting, being probed (refused)"
    )
    offline = {"upstreams": {"pypi": [ustc]}, "pypi": {"gate": {"offline": True}}}
    assert upstream_lines(offline) == [
        ("pypi", "offline mode: no upstream is asked, only what the cache holds is served")
    ]
    assert upstream_lines({}) == []


def test_start_prints_the_url_and_client_setup(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    running = BackgroundService(tmp_path / "data", tuna.index_url)
    try:
        started = running.start()
        assert started.returncode == 0, started.stderr
        assert f"{running.url}/" in started.stdout
        assert f"pip config set global.index-url {running.url}/pypi/simple/" in started.stdout
        assert "client-config" in started.stdout
    finally:
        running.close()


def test_the_commands_start_and_restart_print_work_when_pasted_with_spaces_in_the_path(
    tmp_path: Path, tuna: TunaLikeUpstream
) -> None:
    running = BackgroundService(tmp_path / "dir with spaces" / "缓存 ü", tuna.index_url, "--workers", "1")
    data_dir = str(running.data_dir)
    try:
        for command in ("start", "restart"):
            done = running.start() if command == "start" else running.run("restart")
            assert done.returncode == 0, done.stdout + done.stderr
            # Each command printed, as a shell would split it when pasted.
            printed = [shlex.split(line[line.index("pkgcache ") :]) for line in _command_lines(done.stdout)]
            assert {tuple(words[:2]) for words in printed} >= {
                ("pkgcache", "client-config"),
                ("pkgcache", "logs"),
                ("pkgcache", "restart"),
                ("pkgcache", "stop"),
            }, done.stdout
            for words in printed:
                assert words[words.index("--data-dir") + 1] == data_dir, done.stdout
        again = running.start()
        assert again.returncode != 0 and "already running" in again.stderr
        stop = shlex.split(again.stderr[again.stderr.index("pkgcache stop") :].strip())
        assert stop == ["pkgcache", "stop", "--data-dir", data_dir], again.stderr
        # Pasted, it stops the instance.
        stopped = running.run_plain(*stop[1:])
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not running.pid_file.exists()
    finally:
        running.close()


def _command_lines(output: str) -> list[str]:
    """The lines of `start`'s output that hold a pkgcache command, cut where the command ends."""
    lines = []
    for line in output.splitlines():
        if "pkgcache " in line and "--data-dir" in line:
            command = line[line.index("pkgcache ") :]
            lines.append(command.split(")")[0].split(" starts it")[0] if "(" in line else command)
    return lines


def test_second_start_on_the_same_data_dir_fails_clearly(service: BackgroundService) -> None:
    pid = service.pid
    again = service.start()
    assert again.returncode != 0
    assert "already running" in again.stderr and str(pid) in again.stderr
    # The first one is untouched.
    assert service.pid == pid and pid_alive(pid)
    assert http_get(service.url + "/-/health").status == 200


def test_start_on_the_port_of_another_instance_names_it(
    service: BackgroundService, tmp_path: Path, tuna: TunaLikeUpstream
) -> None:
    other = BackgroundService(tmp_path / "other-data", tuna.index_url, env=service.env)
    other.serve_args[other.serve_args.index(str(other.port))] = str(service.port)
    try:
        started = other.start()
    finally:
        other.close()
    assert started.returncode != 0
    message = started.stderr.strip()
    assert "another pkgcache of this account" in message and str(service.data_dir) in message, message
    assert f"pkgcache stop --data-dir {service.data_dir}" in message and len(message.splitlines()) == 1, message


def test_start_on_a_taken_port_fails_clearly(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    running = BackgroundService(tmp_path / "data", tuna.index_url)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", running.port))
        squatter.listen()
        try:
            started = running.start()
        finally:
            running.close()
    assert started.returncode != 0
    assert "already in use" in started.stderr and str(running.port) in started.stderr
    assert not running.pid_file.exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_taken_port_never_says_it_serves(tmp_path: Path, workers: str) -> None:
    """ "serving on" is said once the port is held: not before "Address already in use"."""
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        served = run_pkgcache(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data"),
            "--workers", workers, "--pypi-upstream", "http://127.0.0.1:9/simple/", "--conda-upstream", DEAD_CONDA,
            timeout=30,
        )  # fmt: skip
    assert served.returncode != 0 and "already in use" in served.stderr, served.stderr
    assert "serving on" not in served.stdout + served.stderr


def test_the_serving_line_is_logged_once_listening(service: BackgroundService) -> None:
    assert f"serving on http://127.0.0.1:{service.port}/" in service.run("logs").stdout


@pytest.mark.parametrize(
    "args",
    [["start", "--wait", "-1"], ["restart", "--wait", "-1"], ["stop", "--timeout", "-5"], ["check", "--timeout", "-1"]],
)
def test_a_negative_wait_or_timeout_is_refused(tmp_path: Path, args: list[str]) -> None:
    """Taken, it would mean no wait at all: `start --wait -1` said it had started something it never looked at."""
    refused = CliRunner().invoke(main, [*args, "--config", str(tmp_path / "none.toml")])
    assert refused.exit_code == 2 and f"Invalid value for '{args[1]}'" in refused.output, refused.output
    assert not (tmp_path / "data").exists()


def test_start_on_a_disk_under_min_free_space_says_why_at_once_and_stops_it(
    tmp_path: Path, tuna: TunaLikeUpstream
) -> None:
    config = tmp_path / "full.toml"
    config.write_text('[server]\nmin_free_space = "10PB"\n')  # more than any disk here: /-/health answers 503
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", "--config", str(config))
    running.serve_args += ["--wait", "30"]
    try:
        began = time.monotonic()
        started = running.start()
        took = time.monotonic() - began
        pid = running.pid if running.pid_file.exists() else None
    finally:
        running.close()
    assert started.returncode == 1, started.stdout + started.stderr
    # The health answer's reason, in one line, long before the wait is over; no access lines.
    error = started.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: pkgcache started but is unhealthy: only "), started.stderr
    assert "kept free" in error[0] and "stopped it" in error[0]
    assert took < 15, took
    # It was stopped: it could not serve.
    assert not running.pid_file.exists() and (pid is None or not pid_alive(pid))
    assert not _healthy(running.url)


def test_start_on_an_unreadable_blocks_file_refuses_and_says_which(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    """A service started on it would have no block in force (a running one keeps the blocks it read last)."""
    blocks = tmp_path / "data" / "gate" / "blocks.json"
    blocks.parent.mkdir(parents=True)
    blocks.write_text('{"pypi": [{"name": "requests"')  # cut short by a hand edit
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1")
    try:
        started = running.start()
    finally:
        running.close()
    assert started.returncode == 1, started.stdout + started.stderr
    assert "not started" in started.stderr and str(blocks) in started.stderr, started.stderr
    assert not running.pid_file.exists() and not _healthy(running.url)
    assert blocks.read_text() == '{"pypi": [{"name": "requests"'


def test_a_second_foreground_serve_on_the_same_data_dir_is_refused(service: BackgroundService) -> None:
    other = run_pkgcache("serve", "--host", "127.0.0.1", "--port", str(free_port()), *service.locate, timeout=30)
    assert other.returncode != 0 and "already running" in other.stderr


def test_two_starts_at_once_on_one_data_dir_leave_exactly_one_running(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    # Different ports, so each start would wait for its own; a race, hence several rounds.
    for round_ in range(3):
        data_dir = tmp_path / f"data-{round_}"
        both = [BackgroundService(data_dir, tuna.index_url, "--workers", "1") for _ in range(2)]
        try:
            results = _start_at_once(both)
            outcomes = {index: done.returncode for index, done in results.items()}
            started = [index for index, code in outcomes.items() if code == 0]
            assert len(started) == 1, results
            winner, loser = both[started[0]], results[1 - started[0]]
            assert "already running" in loser.stderr and str(winner.pid) in loser.stderr, loser.stderr
            assert "exited during start-up" not in loser.stderr, loser.stderr
            # The one that runs is the winner's, with the winner's settings, and it answers.
            status = winner.run("status")
            assert status.returncode == 0 and f"pid {winner.pid}" in status.stdout, status.stdout + status.stderr
            runtime = json.loads((data_dir / "pkgcache.runtime.json").read_text())
            assert runtime["port"] == winner.port and _record(data_dir)["settings"]["server"]["port"] == winner.port
            assert http_get(winner.url + "/-/health").status == 200
        finally:
            for running in both:
                running.close()


def _start_at_once(services: list[BackgroundService]) -> dict[int, subprocess.CompletedProcess[str]]:
    """`start` of each service, all let go at the same moment; their results by index."""
    barrier = threading.Barrier(len(services))
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def start(index: int) -> None:
        barrier.wait()
        results[index] = services[index].start()

    threads = [threading.Thread(target=start, args=(index,)) for index in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_the_wait_for_a_start_checks_that_its_child_runs_with_its_port(tmp_path: Path) -> None:
    # As if the settings its child read were another start's: same pid, another port. Not waited out, nor taken
    # for a success because something answers.
    paths = InstancePaths(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        paths.pid_file.write_text(f"{child.pid}\n")
        paths.runtime_file.write_text(json.dumps({"pid": child.pid, "port": 31572}))
        began = time.monotonic()
        with pytest.raises(ServesElsewhere, match="port 31572, not the port 31571"):
            wait_until_ready(child, paths, 31571, "http://127.0.0.1:9", 10)
        assert time.monotonic() - began < 5
    finally:
        child.kill()
        child.wait()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stale_pid_file_is_handled_by_status_and_start(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    running = BackgroundService(tmp_path / "data", tuna.index_url)
    running.data_dir.mkdir(parents=True)
    dead = _dead_pid()
    running.pid_file.write_text(f"{dead}\n")

    status = running.run("status")
    assert status.returncode == 3
    assert "not running" in status.stdout and "stale" in status.stdout
    assert not running.pid_file.exists()

    running.pid_file.write_text(f"{dead}\n")
    try:
        started = running.start()
        assert started.returncode == 0, started.stderr
        assert "stale" in started.stdout
        assert running.pid != dead and running.run("status").returncode == 0
    finally:
        running.close()


def test_a_pid_file_naming_another_live_program_is_not_ours(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    """A recycled pid: the file names a live process that is not pkgcache. It must be neither reported nor killed."""
    running = BackgroundService(tmp_path / "data", tuna.index_url)
    running.data_dir.mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        running.pid_file.write_text(f"{stranger.pid}\n")
        assert running.run("status").returncode == 3
        running.pid_file.write_text(f"{stranger.pid}\n")
        assert running.run("stop").returncode == 0
        assert stranger.poll() is None, "stop signalled a process that is not pkgcache"
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_with_a_download_in_flight_ends_cleanly(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    slow = SlowUpstream(sample_dists(), bytes_per_second=512 * 1024)  # 4 MiB: about eight seconds
    bg_loop.run(slow.start())
    running = BackgroundService(tmp_path / "data", slow.index_url)
    try:
        assert running.start().returncode == 0
        pid = running.pid
        client = threading.Thread(target=_fetch_ignoring_errors, args=(f"{running.url}/pypi/files/bigpkg/{BIG}",))
        client.start()
        _wait_for(lambda: _partial_bytes(running.data_dir) > 0, 20, "the download never started")

        started = time.monotonic()
        stopped = running.run("stop", "--timeout", "30")
        took = time.monotonic() - started
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "killed" not in stopped.stdout + stopped.stderr
        assert took < 30 and not pid_alive(pid)
        client.join(30)

        # Whatever the shutdown chose (finish the download or cut it), only whole, verified files are kept.
        expected = find_dist(sample_dists(), BIG)
        for path in (running.data_dir / "pypi" / "files").rglob("*"):
            if path.is_file() and path.name == BIG:
                assert hashlib.sha256(path.read_bytes()).hexdigest() == expected.sha256, "partial file kept"
        assert _partial_bytes(running.data_dir) == 0
        assert "shutting down" in (running.data_dir / "pkgcache.log").read_text()
    finally:
        running.close()
        bg_loop.run(slow.stop())


def _fetch_ignoring_errors(url: str) -> None:
    # The connection may be cut by the shutdown: that is allowed.
    with contextlib.suppress(Exception):
        http_get(url, timeout=30)


def _partial_bytes(data_dir: Path) -> int:
    tmp = data_dir / "tmp"
    return sum(path.stat().st_size for path in tmp.rglob("*") if path.is_file()) if tmp.exists() else 0


def _wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(message)


def test_restart_keeps_the_options_it_was_started_with(service: BackgroundService, tuna: TunaLikeUpstream) -> None:
    old = service.pid
    restarted = service.run("restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    new = service.pid
    assert new != old and not pid_alive(old) and pid_alive(new)
    # Same port, same upstream (given to `start` only), and it serves.
    page = http_get(service.url + "/pypi/simple/alpha/")
    assert page.status == 200 and b"alpha-2.0" in page.body
    assert tuna.count("/simple/alpha/") >= 1


# --- the settings `start` records, and `restart` ---


def _record(data_dir: Path) -> dict:
    return json.loads((data_dir / "pkgcache.settings.json").read_text())


def _command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_a_start_without_the_config_file_the_last_one_had_says_so(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    """Easy to do by hand (`start --data-dir X` after `start --config C`), and the settings of C then give way to
    the built-in defaults, unseen until a client fails: the start says it, and how to start as it was."""
    config = tmp_path / "cache.toml"
    config.write_text("[pypi]\nindex_ttl = 77\n")
    first = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", "--config", str(config))
    try:
        started = first.start()
        assert started.returncode == 0, started.stderr
        assert "note:" not in started.stderr
        assert first.run("stop", "--timeout", "10").returncode == 0
        again = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1")
        again.port = first.port
        again.serve_args[again.serve_args.index("--port") + 1] = str(first.port)
        started = again.start()
        assert started.returncode == 0, started.stderr
        assert f"last started with --config {config}" in started.stderr, started.stderr
        assert f"pkgcache restart --data-dir {tmp_path / 'data'}" in started.stderr
    finally:
        first.close()


def test_start_records_the_resolved_settings_for_this_user_only(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    # One setting from the environment, the others from flags: the record holds them all, resolved.
    env = cli_env(PKGCACHE_PYPI__INDEX_TTL="123")
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", env=env)
    try:
        started = running.start()
        assert started.returncode == 0, started.stderr
        settings_file = running.data_dir / "pkgcache.settings.json"
        assert settings_file.stat().st_mode & 0o777 == 0o600
        record = _record(running.data_dir)
        assert record["settings"]["server"]["port"] == running.port
        assert record["settings"]["server"]["workers"] == 1
        assert record["settings"]["pypi"]["index_ttl"] == 123
        assert [upstream["url"] for upstream in record["settings"]["pypi"]["upstreams"]] == [tuna.index_url]
        assert record["flags"]["server"]["port"] == running.port and "index_ttl" not in json.dumps(record["flags"])
        # The service is launched on the record, not on flags passed along.
        runtime = json.loads((running.data_dir / "pkgcache.runtime.json").read_text())
        assert runtime["settings_file"] == str(settings_file)
        argv = _command_line(running.pid)
        assert "--settings-file" in argv and str(settings_file) in argv and "--port" not in argv
        assert http_get(running.url + "/pypi/simple/alpha/").status == 200
    finally:
        running.close()


def test_restart_keeps_settings_from_the_environment_of_start(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    """Readers' passwords given through the environment of `start` hold after a `restart` from a plain shell."""
    users = json.dumps({"dev": "s3cret"})
    running = BackgroundService(
        tmp_path / "data", tuna.index_url, "--workers", "1", env=cli_env(PKGCACHE_ACCESS__USERS=users)
    )
    try:
        assert running.start().returncode == 0
        assert http_get(running.url + "/pypi/simple/alpha/").status == 401
        old = running.pid
        running.env = cli_env()  # the users are not in this environment
        restarted = running.run("restart")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert running.pid != old and not pid_alive(old)
        assert http_get(running.url + "/pypi/simple/alpha/").status == 401
        credentials = {"Authorization": "Basic ZGV2OnMzY3JldA=="}  # dev:s3cret
        assert http_get(running.url + "/pypi/simple/alpha/", credentials).status == 200
        # `status` talks to it with the recorded users too (its /-/status needs them).
        status = running.run("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "uptime" in status.stdout
    finally:
        running.close()


def test_restart_with_a_new_flag_changes_only_that(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", "--log-level", "warning")
    try:
        assert running.start().returncode == 0
        old_url = running.url
        new_port = free_port()
        restarted = running.run("restart", "--port", str(new_port))
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        running.port, running.url = new_port, f"http://127.0.0.1:{new_port}"
        # The new port; the upstream, address, worker count and log level given to `start` still hold.
        assert not _healthy(old_url)
        assert http_get(running.url + "/pypi/simple/beta/").status == 200
        assert tuna.count("/simple/beta/") == 1
        server = _record(running.data_dir)["settings"]["server"]
        given = {key: server[key] for key in ("host", "port", "data_dir", "log_level", "workers")}
        assert given == {
            "host": "127.0.0.1",
            "port": new_port,
            "data_dir": str(running.data_dir),
            "log_level": "warning",
            "workers": 1,
        }
        settings = _record(running.data_dir)["settings"]
        assert [upstream["url"] for upstream in settings["pypi"]["upstreams"]] == [tuna.index_url]
        # And a restart after that keeps the new port.
        assert running.run("restart").returncode == 0
        assert _healthy(running.url)
    finally:
        running.close()


def test_restart_with_a_config_file_reads_it_again(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text("[pypi]\nindex_ttl = 100\n")
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", "--config", str(config))
    try:
        assert running.start().returncode == 0
        config.write_text("[pypi]\nindex_ttl = 200\n")
        plain = running.run("restart")
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert f"pkgcache restart --config {config}" in plain.stdout  # how to have the edit read
        assert _record(running.data_dir)["settings"]["pypi"]["index_ttl"] == 100
        reread = running.run("restart", "--config", str(config))
        assert reread.returncode == 0, reread.stdout + reread.stderr
        settings = _record(running.data_dir)["settings"]
        assert settings["pypi"]["index_ttl"] == 200
        # The flags given to `start` still hold over the file.
        assert settings["server"]["port"] == running.port and _healthy(running.url)
    finally:
        running.close()


def test_restart_says_which_options_it_keeps_and_forgets_them_when_asked(
    tmp_path: Path, tuna: TunaLikeUpstream
) -> None:
    """A --port given once kept overriding the config file's port on every later restart, unsaid."""
    file_port = free_port()
    config = tmp_path / "pkgcache.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {file_port}\nworkers = 1\n'
        f'[pypi]\nupstreams = ["{tuna.index_url}"]\n[conda]\nupstreams = ["{DEAD_CONDA}"]\n'
    )
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--config", str(config))
    try:
        assert running.start().returncode == 0
        assert _healthy(running.url)
        again = running.run("restart", "--config", str(config))
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"keeping the options given before: --host 127.0.0.1 --port {running.port}" in again.stdout
        assert f"pkgcache restart --data-dir {running.data_dir} --forget-options" in again.stdout
        assert _record(running.data_dir)["settings"]["server"]["port"] == running.port and _healthy(running.url)
        forgot = running.run("restart", "--forget-options")
        assert forgot.returncode == 0, forgot.stdout + forgot.stderr
        assert f"forgetting the options given before: --host 127.0.0.1 --port {running.port}" in forgot.stdout
        # The file's port now, from the file start was given; the data directory stays.
        assert f"listening on 127.0.0.1:{file_port}" in forgot.stdout, forgot.stdout
        record = _record(running.data_dir)
        assert record["settings"]["server"]["port"] == file_port and record["config_file"] == str(config)
        assert record["flags"] == {"server": {"data_dir": str(running.data_dir)}}
        assert _healthy(f"http://127.0.0.1:{file_port}")
        plain = running.run("restart")
        assert plain.returncode == 0 and "keeping the options" not in plain.stdout, plain.stdout
    finally:
        running.close()


def test_restart_of_a_data_directory_never_started_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    # Loopback only, should a restart start one all the same (it did, on 0.0.0.0 with the public mirrors).
    dead = json.dumps(["http://127.0.0.1:9/simple/"])
    env = _own_account(tmp_path)
    env.update(
        PKGCACHE_SERVER__HOST="127.0.0.1",
        PKGCACHE_SERVER__PORT=str(free_port()),
        PKGCACHE_SERVER__WORKERS="1",
        PKGCACHE_PYPI__UPSTREAMS=dead,
        PKGCACHE_CONDA__UPSTREAMS=json.dumps([DEAD_CONDA]),
    )
    mistyped = tmp_path / "nosuchdir"
    default_dir = tmp_path / "home" / ".cache" / "pkgcache"
    try:
        refused = run_pkgcache("restart", "--data-dir", str(mistyped), env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"pkgcache was never started on data directory {mistyped}" in refused.stderr
        assert f"pkgcache start --data-dir {mistyped}" in refused.stderr
        assert "started" not in refused.stdout and not mistyped.exists()
        # Nor, given no directory and nothing started from this account, on the default one.
        plain = run_pkgcache("restart", env=env)
        assert plain.returncode == 1 and "nothing to restart" in plain.stderr, plain.stdout + plain.stderr
        assert not default_dir.exists()
    finally:
        for data_dir in (mistyped, default_dir):
            if (data_dir / "pkgcache.pid").exists():
                run_pkgcache("stop", "--data-dir", str(data_dir), "--timeout", "10", env=env)


def test_restart_with_only_a_config_file_restarts_the_running_instance(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    """The fix the admin commands prescribe: `restart --config FILE`, given no data directory, applies FILE to the
    instance `start --data-dir` launched, rather than starting a second one on the default data directory."""
    env = _own_account(tmp_path)
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", env=env)
    try:
        assert running.start().returncode == 0
        old = running.pid
        advice = running.run_plain("purge", "alpha")
        assert advice.returncode == 1 and "`pkgcache restart --config FILE`" in advice.stderr, advice.stderr
        config = tmp_path / "admin.toml"
        config.write_text('[access]\nadmin_token = "0123456789abcdef0123"\n')
        restarted = running.run_plain("restart", "--config", str(config))
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert running.pid != old and not pid_alive(old)
        # Nothing started on the default data directory; the data directory, port and upstream of `start` hold.
        assert not (tmp_path / "home" / ".cache" / "pkgcache" / "pkgcache.pid").exists()
        settings = _record(running.data_dir)["settings"]
        assert settings["access"]["admin_token"] == "0123456789abcdef0123"
        assert settings["server"]["data_dir"] == str(running.data_dir) and settings["server"]["port"] == running.port
        assert [upstream["url"] for upstream in settings["pypi"]["upstreams"]] == [tuna.index_url]
        assert http_get(running.url + "/pypi/simple/alpha/").status == 200
        # A plain admin command now reaches it with the token.
        purged = running.run_plain("purge", "alpha")
        assert purged.returncode == 0 and "done on disk" not in purged.stdout, purged.stdout + purged.stderr

        # A file that sets another data directory is refused, in one line, and the instance is left alone.
        elsewhere = tmp_path / "admin-elsewhere.toml"
        elsewhere.write_text(f'[server]\ndata_dir = "{tmp_path / "other"}"\n')
        pid = running.pid
        refused = running.run_plain("restart", "--config", str(elsewhere))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and str(running.data_dir) in refused.stderr
        assert running.pid == pid and pid_alive(pid) and not (tmp_path / "other" / "pkgcache.pid").exists()
    finally:
        running.close()
        # Where the second instance of the bug would run (on all addresses, with the built-in mirrors).
        default_dir = tmp_path / "home" / ".cache" / "pkgcache"
        run_pkgcache("stop", "--data-dir", str(default_dir), "--timeout", "10", env=env)


# --- finding the instance when none is named ---


def _own_account(tmp_path: Path) -> dict[str, str]:
    """An environment with its own home and state directories: no list of instances, no default data directory."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return cli_env(HOME=str(home), XDG_STATE_HOME=str(tmp_path / "state"))


def test_plain_status_and_stop_find_the_instance_this_account_started(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", env=_own_account(tmp_path))
    try:
        assert running.start().returncode == 0
        pid = running.pid
        status = running.run_plain("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"pid {pid}" in status.stdout and str(running.data_dir) in status.stdout

        stopped = running.run_plain("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stopped" in stopped.stdout and not pid_alive(pid)

        # Nothing runs now: the answer says where the instance was.
        status = running.run_plain("status")
        assert status.returncode == 3 and "not running" in status.stdout
        assert f"pkgcache status --data-dir {running.data_dir}" in status.stdout
    finally:
        running.close()


def test_plain_status_lists_the_instances_when_several_run(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    env = _own_account(tmp_path)
    first = BackgroundService(tmp_path / "one", tuna.index_url, "--workers", "1", env=env)
    second = BackgroundService(tmp_path / "two", tuna.index_url, "--workers", "1", env=env)
    try:
        assert first.start().returncode == 0 and second.start().returncode == 0
        status = first.run_plain("status")
        assert status.returncode == 4, status.stdout + status.stderr
        for running in (first, second):
            assert f"pkgcache status --data-dir {running.data_dir}" in status.stdout
        stop = first.run_plain("stop")
        assert stop.returncode == 1 and f"pkgcache stop --data-dir {second.data_dir}" in stop.stderr
        assert pid_alive(first.pid) and pid_alive(second.pid)  # neither was guessed at
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "command", ["status", "stop", "logs", "export", "import", "gc", "verify", "seed", "block", "restart"]
)
def test_the_data_dir_help_says_how_the_instance_is_found_when_none_is_named(command: str) -> None:
    """It said `default ~/.cache/pkgcache` where the commands take the running instance (it may be elsewhere)."""
    shown = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
    assert "the one running instance this account started" in shown, shown
    assert "Where the cache lives (default ~/.cache/pkgcache)" not in shown
    start = " ".join(CliRunner().invoke(main, ["start", "--help"]).output.split())
    assert "Where the cache lives (default ~/.cache/pkgcache)" in start


def test_plain_status_says_where_to_look_when_nothing_was_started(tmp_path: Path) -> None:
    env = _own_account(tmp_path)
    status = run_pkgcache("status", env=env)
    assert status.returncode == 3 and "not running" in status.stdout
    assert "--data-dir" in status.stdout and str(tmp_path / "state" / "pkgcache" / "instances.json") in status.stdout


def test_export_reads_the_running_instance_and_refuses_a_directory_without_a_cache(
    tmp_path: Path, tuna: TunaLikeUpstream
) -> None:
    env = _own_account(tmp_path)
    env["COLUMNS"] = "80"  # narrower than the summary line: it must stay one line all the same
    running = BackgroundService(tmp_path / "data", tuna.index_url, "--workers", "1", env=env)
    try:
        assert running.start().returncode == 0
        assert http_get(running.url + "/pypi/simple/alpha/").status == 200
        bundle = tmp_path / "bundle.tar"
        exported = running.run_plain("export", "-o", str(bundle))
        assert exported.returncode == 0, exported.stderr
        summary = [line for line in exported.stderr.splitlines() if line.startswith("export:")]
        assert len(summary) == 1 and f"from {running.data_dir} to {bundle}" in summary[0], exported.stderr
        assert "0 index and metadata files" not in summary[0] and bundle.exists()
        # Imported back with no directory named: into the running instance's, as export read it (every file is
        # already there), not into this account's default data directory.
        imported = running.run_plain("import", str(bundle))
        assert imported.returncode == 0, imported.stderr
        said = [line for line in imported.stderr.splitlines() if line.startswith("import:")]
        assert len(said) == 1 and f"into {running.data_dir}," in said[0] and "0 files added" in said[0], said
        # Not on a terminal (a log, a pipe): no progress bars, only the summaries.
        assert "━" not in exported.stderr + imported.stderr, exported.stderr + imported.stderr
        assert not (tmp_path / "home" / ".cache" / "pkgcache").exists()

        # A typo'd data directory: refused in one line, nothing written, nothing created.
        typo = tmp_path / "dta"
        for command in (["export", "-o", str(tmp_path / "typo.tar")], ["purge", "alpha"], ["gc", "--to", "0"]):
            refused = running.run_plain(command[0], "--data-dir", str(typo), *command[1:])
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert refused.stderr.strip() == f"Error: data directory {typo} does not exist", refused.stderr
            assert "purged" not in refused.stdout and "freed" not in refused.stdout
        assert not typo.exists() and not (tmp_path / "typo.tar").exists()
        # A directory that is there but holds no cache (not the data directory meant) is refused as well.
        typo.mkdir()
        refused = running.run_plain("export", "--data-dir", str(typo), "-o", str(tmp_path / "typo.tar"))
        assert refused.returncode == 1 and "holds no pkgcache cache" in refused.stderr, refused.stderr
        assert list(typo.iterdir()) == [] and not (tmp_path / "typo.tar").exists()
    finally:
        running.close()


def test_logs_show_request_lines(service: BackgroundService) -> None:
    assert http_get(service.url + "/pypi/simple/alpha/").status == 200
    # Request lines are written in batches, a fraction of a second after their requests.
    deadline = time.monotonic() + 5
    while "GET /pypi/simple/alpha/ 200" not in (shown := service.run("logs")).stdout:
        assert time.monotonic() < deadline, shown.stdout
        time.sleep(0.2)
    assert shown.returncode == 0
    last = service.run("logs", "-n", "1")
    assert len(last.stdout.splitlines()) == 1


def test_logs_follow_prints_new_lines(service: BackgroundService) -> None:
    command = [sys.executable, "-m", "pkgcache", "logs", "-f", "-n", "0", *service.locate]
    follower = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        stdout = follower.stdout
        assert stdout is not None

        def read_lines() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=read_lines, daemon=True).start()
        # With -n 0 the follower prints only what is logged after it reached the end of the log, and when it gets
        # there depends on how long it takes to start: so the request is made again until one of them shows (lines
        # of earlier requests, the fixture's health checks, may come too; the page's request is what matters).
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while not any("GET /pypi/simple/beta/ 200" in line for line in seen):
            assert time.monotonic() < deadline, seen
            assert follower.poll() is None, "pkgcache logs -f exited"
            assert http_get(service.url + "/pypi/simple/beta/").status == 200
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1.0))
                while True:
                    seen.append(lines.get_nowait())
    finally:
        follower.terminate()
        follower.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_serve_shuts_down_gracefully_on_signals(
    tmp_path: Path, tuna: TunaLikeUpstream, sig: signal.Signals
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    command = [
        sys.executable, "-m", "pkgcache", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--pypi-upstream", tuna.index_url, "--conda-upstream", DEAD_CONDA,
    ]  # fmt: skip
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), 20, "serve did not come up")
        assert (data_dir / "pkgcache.pid").read_text().strip() == str(process.pid)
        process.send_signal(sig)
        assert process.wait(20) == 0
        assert process.stdout is not None
        output = process.stdout.read()
        assert "pkgcache stopped" in output
        assert not (data_dir / "pkgcache.pid").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        return http_get(url + "/-/health", timeout=1).status == 200
    except OSError:
        return False


# --- init ---


def test_init_writes_a_config_that_loads_and_shows_every_setting(tmp_path: Path) -> None:
    path = tmp_path / "pkgcache.toml"
    written = run_pkgcache("init", str(path))
    assert written.returncode == 0, written.stderr
    text = path.read_text()
    assert load_settings(path) == load_settings(None)
    for section, field in Settings.model_fields.items():
        assert f"[{section}]" in text
        model = field.get_default(call_default_factory=True)
        for key in type(model).model_fields:
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{section}.{key} missing"
    for preset in ("tuna", "ustc", "aliyun", "bfsu", "anaconda"):
        assert preset in text


def test_init_prints_a_start_command_that_works_when_pasted(tmp_path: Path) -> None:
    path = tmp_path / "my configs" / "pkgcache ü.toml"
    path.parent.mkdir()
    written = run_pkgcache("init", str(path))
    assert written.returncode == 0, written.stderr
    command = written.stdout[written.stdout.index("pkgcache start") :].strip()
    assert shlex.split(command) == ["pkgcache", "start", "--config", str(path)], written.stdout


def test_init_examples_are_valid_when_uncommented(tmp_path: Path) -> None:
    path = tmp_path / "pkgcache.toml"
    assert run_pkgcache("init", str(path)).returncode == 0
    lines = path.read_text().splitlines()
    examples = [i for i, line in enumerate(lines) if line.startswith("#   upstreams = ")]
    assert len(examples) == 4
    for index in examples:
        section = next(line for line in reversed(lines[:index]) if line.startswith("["))
        edited = list(lines)
        active = next(i for i in range(index, -1, -1) if lines[i].startswith("upstreams = "))
        edited[active] = lines[index].removeprefix("#   ")
        path.write_text("\n".join(edited))
        settings = load_settings(path)
        side = settings.pypi if section == "[pypi]" else settings.conda
        assert len(side.upstreams) == 2, lines[index]


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "pkgcache.toml"
    path.write_text("# mine\n")
    refused = run_pkgcache("init", str(path))
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert path.read_text() == "# mine\n"
    forced = run_pkgcache("init", str(path), "--force")
    assert forced.returncode == 0 and "[server]" in path.read_text()


# --- check ---


class FakeCondaMirror(FakeServer):
    """A mirror laid out like the university ones, with a tiny pkgs/main and conda-forge."""

    REPODATA = json.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {"x-1-0.conda": {}}})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in (
            "/anaconda/pkgs/main/noarch/repodata.json",
            "/anaconda/cloud/conda-forge/noarch/repodata.json",
        ):
            return web.Response(text=self.REPODATA, content_type="application/json")
        raise web.HTTPNotFound()


def test_check_times_every_upstream_and_reports_failures(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    good = TunaLikeUpstream(sample_dists())
    slow = SlowUpstream(sample_dists(), delay=0.3)
    failing = FailingUpstream("503")
    conda = FakeCondaMirror()
    servers = [good, slow, failing, conda]
    for server in servers:
        bg_loop.run(server.start())
    try:
        config = tmp_path / "pkgcache.toml"
        pypi = [("slow", slow.index_url), ("good", good.index_url), ("failing", failing.index_url)]
        pypi.append(("closed", "http://127.0.0.1:9/simple/"))
        tables = ", ".join(f'{{ name = "{name}", url = "{url}" }}' for name, url in pypi)
        mirror = (
            f'{{ name = "mirror", pkgs_url = "{conda.url}/anaconda/pkgs/", cloud_url = "{conda.url}/anaconda/cloud/" }}'
        )
        config.write_text(f"[pypi]\nupstreams = [{tables}]\n[conda]\nupstreams = [{mirror}]\n")
        checked = run_pkgcache("check", "--config", str(config), "--project", "alpha", "--timeout", "5")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        rows = [line for line in checked.stdout.splitlines() if line.startswith(("pypi ", "conda "))]
        by_name = {row.split()[1] + " " + row.split()[0]: row for row in rows}
        assert "OK" in by_name["good pypi"] and "files" in by_name["good pypi"]
        assert "OK" in by_name["slow pypi"]
        assert "ERROR: HTTP 503" in by_name["failing pypi"]
        assert "ERROR: cannot connect" in by_name["closed pypi"]
        assert sum("OK, 1 packages" in row for row in rows if row.startswith("conda")) == 1
        # PyPI first, then conda; in each, working ones first, fastest first; the failing ones are left out of the
        # suggested order.
        pypi_rows = [row for row in rows if row.startswith("pypi")]
        assert rows[: len(pypi_rows)] == pypi_rows
        ok_rows = [row for row in pypi_rows if "ERROR" not in row]
        assert pypi_rows[: len(ok_rows)] == ok_rows
        assert rows.index(by_name["good pypi"]) < rows.index(by_name["slow pypi"])
        assert "fastest working pypi upstreams first: good, slow\n" in checked.stdout
        assert "fastest working conda upstreams first: mirror\n" in checked.stdout
        assert good.count("/simple/alpha/") == 1 and conda.count("/repodata.json") == 2
    finally:
        for server in servers:
            bg_loop.run(server.stop())


def test_check_says_what_a_404_most_likely_means_of_an_upstream_url(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    """A PyPI URL without its /simple/ part, a conda base without a part of its path or with pkgs/ twice: every
    project or channel 404s, and check said only `HTTP 404`."""
    pypi = TunaLikeUpstream(sample_dists())
    conda = FakeCondaMirror()
    for server in (pypi, conda):
        bg_loop.run(server.start())
    try:
        assert pypi.index_url == f"{pypi.url}/simple/"
        mirrors = [
            ("missing", f"{conda.url}/pkgs/", f"{conda.url}/cloud/"),
            ("doubled", f"{conda.url}/anaconda/pkgs/pkgs/", f"{conda.url}/anaconda/pkgs/cloud/"),
            ("right", f"{conda.url}/anaconda/pkgs/", f"{conda.url}/anaconda/cloud/"),
        ]
        tables = ", ".join(f'{{ name = "{n}", pkgs_url = "{p}", cloud_url = "{c}" }}' for n, p, c in mirrors)
        config = tmp_path / "pkgcache.toml"
        config.write_text(
            f'[pypi]\nupstreams = [{{ name = "nosimple", url = "{pypi.url}/" }}, '
            f'{{ name = "simple", url = "{pypi.index_url}" }}]\n[conda]\nupstreams = [{tables}]\n'
        )
        checked = run_pkgcache("check", "--config", str(config), "--project", "alpha", "--timeout", "5")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        hints = {line.split()[1]: line for line in checked.stdout.splitlines() if line.startswith("hint: ")}
        assert sorted(hints) == ["doubled", "missing", "nosimple"], checked.stdout
        assert hints["nosimple"].startswith(f"hint: nosimple answered 404 for the project page {pypi.url}/alpha/")
        assert "most often ending in /simple/" in hints["nosimple"]
        missing = f"hint: missing answered 404 for {conda.url}/pkgs/main/noarch/repodata.json"
        assert hints["missing"].startswith(missing) and "may lack a part" in hints["missing"]
        assert "ends in pkgs/ already" in hints["doubled"]
    finally:
        for server in (pypi, conda):
            bg_loop.run(server.stop())


def test_check_names_a_pkgcache_upstream_and_puts_it_first_as_a_tier_above(
    bg_loop: BackgroundLoop, tmp_path: Path, tuna: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """An office's configuration (docs/operations.md, tiers): the central pkgcache first, a mirror after it. check
    ranked them by speed and advised the mirror first (which goes around the central's policy), did not say the
    central is a pkgcache, and its 404s (a project none of its upstreams has, a channel it does not serve) were
    `HTTP 404` with a hint that the URL may be wrong."""
    conda = FakeCondaMirror()
    bg_loop.run(conda.start())
    try:
        mirror = {
            "name": "mirror",
            "pkgs_url": f"{conda.url}/anaconda/pkgs/",
            "cloud_url": f"{conda.url}/anaconda/cloud/",
        }
        central = make_cache(
            [tuna.index_url],
            server={"node_name": "central-1", "tier": "central"},
            conda={"upstreams": [mirror], "channels": ["pkgs/main"]},
        )
        config = tmp_path / "office.toml"
        config.write_text(
            f'[pypi]\nupstreams = [{{ name = "central", url = "{central.url}/pypi/simple/" }}, '
            f'{{ name = "mirror", url = "{tuna.index_url}" }}]\n'
            f'[conda]\nupstreams = [{{ name = "central", pkgs_url = "{central.url}/conda/pkgs/", '
            f'cloud_url = "{central.url}/conda/cloud/" }}, {{ name = "mirror", pkgs_url = "{mirror["pkgs_url"]}", '
            f'cloud_url = "{mirror["cloud_url"]}" }}]\nchannels = ["pkgs/main", "cloud/conda-forge"]\n'
        )
        checked = run_pkgcache("check", "--config", str(config), "--project", "alpha", "--timeout", "5")
        out = checked.stdout
        assert "central (pypi) is a pkgcache: node central-1, tier central\n" in out, out
        assert "central (conda) is a pkgcache: node central-1, tier central\n" in out, out
        assert "suggested pypi order: central, mirror (pkgcache first, whatever its speed" in out, out
        assert "fastest working pypi upstreams first" not in out, out
        # The central does not serve conda-forge: said so, with what to do, and not taken for a wrong URL.
        assert "ERROR: HTTP 404: pkgcache central-1 does not" in out and " serve cloud/conda-forge\n" in out, out
        hints = [line for line in out.splitlines() if line.startswith("hint: ")]
        assert len(hints) == 1 and "central is a pkgcache (node central-1): its URL is right" in hints[0], out
        assert "does not serve cloud/conda-forge, which this configuration lists: add it to central-1's" in hints[0]
        # It answered pkgs/main: still first for conda, the channel it lacks being a hint of its own.
        assert "suggested conda order: central, mirror (pkgcache first" in out, out
        assert checked.returncode == 1, out + checked.stderr
        # Without --project: pip, which none of the central's upstreams has here.
        checked = run_pkgcache("check", "--config", str(config), "--timeout", "5")
        assert "ERROR: HTTP 404: project 'pip' was not found on" in checked.stdout, checked.stdout
        has_not = "central is a pkgcache (node central-1): its URL is right, and none of its upstreams has that project"
        assert has_not in checked.stdout, checked.stdout
    finally:
        bg_loop.run(conda.stop())


def test_check_pypi_only(tmp_path: Path, tuna: TunaLikeUpstream) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(f'[pypi]\nupstreams = ["{tuna.index_url}"]\n[conda]\nenabled = false\n')
    checked = run_pkgcache("check", "--config", str(config), "--project", "alpha", "--timeout", "5")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout and "ERROR" not in checked.stdout


def test_following_a_log_copies_what_is_appended_follows_its_rotation_and_stops_while_waiting(tmp_path: Path) -> None:
    """`pkgcache logs -f` reads on from the end, goes on with the new log once the old one is rotated away, and
    stops cleanly when told to while no new log has appeared yet."""
    from pkgcache.daemon.logs import follow

    log = tmp_path / "pkgcache.log"
    log.write_bytes(b"before\n")
    read_fd, write_fd = os.pipe()
    stop = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        with log.open("ab") as handle:
            handle.write(b"one\n")
        time.sleep(0.2)
        os.replace(log, tmp_path / "pkgcache.log.1")  # rotated: and no new log until told to stop
        time.sleep(0.3)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(write_fd, "wb") as out:
        follow(log, out, keep_going=lambda: not stop.is_set(), poll=0.02)
    thread.join()
    with os.fdopen(read_fd, "rb") as got:
        assert got.read() == b"one\n"


def test_a_failed_start_shows_only_the_problems_of_its_log() -> None:
    log = "\n".join(
        [
            "2026-11-30 08:00:00,001 INFO pkgcache: pkgcache 0.1.0 serving on http://127.0.0.1:3150/",
            *[f"2026-11-30 08:00:00,{i:03d} INFO pkgcache.access: GET /-/health 503 - 12 B 1 ms" for i in range(300)],
            "2026-11-30 08:00:01,000 WARNING pkgcache: cannot write to the cache: Operation not permitted",
            "Traceback (most recent call last):",
            "OSError: [Errno 28] No space left on device",
        ]
    )
    assert problem_lines(log, 12) == [
        "2026-11-30 08:00:01,000 WARNING pkgcache: cannot write to the cache: Operation not permitted",
        "Traceback (most recent call last):",
        "OSError: [Errno 28] No space left on device",
    ]
    assert problem_lines(log, 1) == ["OSError: [Errno 28] No space left on device"]


def test_policy_with_config_uses_that_files_rules_while_an_instance_runs_on_its_data_dir(
    tmp_path: Path, tuna: TunaLikeUpstream
) -> None:
    """Started with no rule, the instance runs on; `policy show|check --config FILE` report FILE's rules (and say
    the running ones differ); without --config, the running instance's."""
    data = tmp_path / "data"
    config = tmp_path / "p.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n[pypi]\ndeny = ["alpha"]\n[conda]\nenabled = false\n')
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("alpha==1.0\nbeta==1.1\n")
    running = BackgroundService(data, tuna.index_url, "--workers", "1")
    try:
        assert running.start().returncode == 0
        shown = running.run_plain("policy", "show", "--config", str(config))
        checked = running.run_plain("policy", "check", "--config", str(config), str(requirements))
        as_running = running.run_plain("policy", "show", *running.locate)
    finally:
        running.close()

    assert shown.returncode == 0, shown.stderr
    assert "deny" in shown.stdout and "alpha" in shown.stdout and "no rule" not in shown.stdout
    assert f"the pkgcache running on {data} enforces other rules than {config}" in shown.stderr
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "REFUSED  alpha==1.0" in checked.stdout and "2 pins checked: 1 refused" in checked.stdout
    assert as_running.returncode == 0 and "(no rule: everything is served)" in as_running.stdout
    assert "enforces other rules" not in as_running.stderr


def test_check_names_an_html_page_and_a_broken_answer_in_lines_a_terminal_shows() -> None:
    """A mirror's HTML error or login page in place of repodata was only `not JSON`; an answer aiohttp cannot
    parse was shown as its exception's repr, and the RESULT column was padded to it: lines of over 300
    characters."""
    from pkgcache.cli.check import format_table, plan_probes, run_probes

    html = b"<!DOCTYPE html>\n<html><body><h1>Sign in</h1></body></html>"
    raw = {
        "/anaconda/pkgs/main/noarch/repodata.json": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(html), html),
        # A body past Content-Length after Connection: close: aiohttp's parser refuses it, quoting the bytes.
        "/anaconda/cloud/conda-forge/noarch/repodata.json": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n" + b"x" * 300,
    }

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(raw[request.split()[1].decode()])
        await writer.drain()
        writer.close()

    async def probe() -> list[Any]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/anaconda/"
        settings = load_settings(
            None,
            pypi={"enabled": False},
            conda={"upstreams": [{"name": "mirror", "pkgs_url": f"{base}pkgs/", "cloud_url": f"{base}cloud/"}]},
        )
        async with server:
            return await run_probes(settings, plan_probes(settings), 5.0)

    results = asyncio.run(probe())
    table = format_table(results)
    repodata, head = results
    assert not repodata.ok and repodata.detail == "not JSON but an HTML page (an error or login page?)"
    assert not head.ok and head.detail.startswith("not a valid HTTP answer: "), head.detail
    assert "ClientResponseError" not in table and "\n " not in head.detail
    assert max(len(line) for line in table.splitlines()) < 200, table
    # The wrapped result goes on below its row, in its own column.
    assert head.detail.split()[-1] in table


def test_purge_of_a_conda_file_named_without_cloud_says_community_channels_need_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "conda").mkdir(parents=True)
    env = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}

    def purge(path: str) -> str:
        refused = CliRunner().invoke(main, ["purge", "--data-dir", str(data), "--conda-file", path], env=env)
        assert refused.exit_code == 2, refused.output
        return " ".join(refused.output.split())

    said = purge("conda-forge/noarch/x-1.0-0.conda")
    assert "community channels are under cloud/: cloud/conda-forge/noarch/x-1.0-0.conda" in said, said
    # pkgs/main is a channel of its own: the path lacks a part, and no cloud/ is offered.
    assert "cloud/" not in purge("main/noarch/x-1.0-0.conda")
