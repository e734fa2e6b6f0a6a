"""Starting a detached `pkgcache serve` and waiting until it answers; stopping a running one."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from pkgcache.daemon.errors import DaemonError, ServesElsewhere, Unhealthy
from pkgcache.daemon.files import InstancePaths, read_json
from pkgcache.daemon.lock import read_pid, remove_stale_files
from pkgcache.daemon.processes import process_alive
from pkgcache.daemon.status_client import ask_health

POLL_INTERVAL = 0.1


# --- starting ---


def port_problem(host: str, port: int) -> str | None:
    """Why pkgcache could not listen on host:port right now, or None if it could."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            # The same options the server uses, so the answer is the same as it would get.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {port} on {host} is already in use by another program; choose another with --port"
                return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def spawn_service(paths: InstancePaths, serve_args: list[str]) -> subprocess.Popen[bytes]:
    """Start `python -m pkgcache serve ...` detached from this terminal, its output appended to the log file."""
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pkgcache", "serve", *serve_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with paths.log_file.open("ab") as log:
        # A new session: closing the terminal or pressing Ctrl-C there does not reach the service.
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )


def wait_until_ready(
    process: subprocess.Popen[bytes],
    paths: InstancePaths,
    port: int,
    url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Wait until our child answers its health check on `port`, or raise DaemonError saying why it did not
    (Unhealthy when it answered that it cannot serve, ServesElsewhere when it runs with another port than the one
    it was launched for: waiting longer would change neither)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DaemonError(f"pkgcache exited during start-up (exit status {process.returncode})")
        health = ask_health(url, headers) if _is_our_child(process, paths, port) else None
        if health is not None and health.ok:
            return
        if health is not None:
            raise Unhealthy(health.reason)
        time.sleep(POLL_INTERVAL)
    raise DaemonError(f"pkgcache did not answer {url}/-/health within {timeout:.0f} s")


def _is_our_child(process: subprocess.Popen[bytes], paths: InstancePaths, port: int) -> bool:
    """Whether the data directory's instance is our child, with the port it was launched for: only then is what
    answers at the URL ours, not something else that took the port meanwhile, nor another instance."""
    if read_pid(paths.pid_file) != process.pid:
        return False
    runtime = read_json(paths.runtime_file)
    if runtime.get("pid") != process.pid:
        return False  # not written yet
    if runtime.get("port") != port:
        raise ServesElsewhere(process.pid, runtime.get("port"), port)
    return True


def abandon(process: subprocess.Popen[bytes]) -> None:
    """Stop a child that failed to become ready; gone when this returns, so the next start finds no trace of it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


# --- stopping ---


@dataclass(frozen=True)
class StopOutcome:
    pid: int
    seconds: float
    killed: bool  # it did not stop in time and got SIGKILL


def stop_process(paths: InstancePaths, pid: int, timeout: float) -> StopOutcome:
    """SIGTERM, wait up to `timeout` for a graceful exit, then SIGKILL. Leaves no pid file behind."""
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    killed = False
    if not wait_for_exit(pid, timeout):
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_for_exit(pid, 10):
            raise DaemonError(f"pid {pid} is still there after SIGKILL")
    # A killed process cannot clean up after itself; a graceful one already has.
    remove_stale_files(paths)
    return StopOutcome(pid, time.monotonic() - started, killed)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True
