"""Running pkgcache in the background: the pid file, the runtime file, starting, stopping and finding an instance.

Every serving process (foreground or background) holds an exclusive `flock` on `<data_dir>/pkgcache.pid` for as long
as it runs, with its pid written inside, and writes `<data_dir>/pkgcache.runtime.json` (address, start time, the
options it was started with). The lock is what says an instance is alive: the kernel drops it when the process dies,
however it dies, so a pid file left by a killed process is recognised as stale, and a recycled pid cannot fool us.
Before signalling a pid we still check that it is a pkgcache process (its command line), in case the lock is held
from another pid namespace (a container sharing the data directory).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows, where only `serve` is supported
    fcntl = None  # type: ignore[assignment]

PID_FILE = "pkgcache.pid"
LOG_FILE = "pkgcache.log"
RUNTIME_FILE = "pkgcache.runtime.json"
LOG_ROTATE_BYTES = 20 * 1024 * 1024
POLL_INTERVAL = 0.1


class DaemonError(Exception):
    """Something an admin must act on; the message says what."""


class AlreadyRunning(DaemonError):
    def __init__(self, data_dir: Path, pid: int | None, url: str | None = None) -> None:
        who = f"pid {pid}" if pid else "another process"
        serving = f", serving {url}/" if url else ""
        super().__init__(
            f"pkgcache is already running on data directory {data_dir} ({who}{serving}); "
            f"stop it first with: pkgcache stop --data-dir {data_dir}"
        )
        self.pid = pid


@dataclass(frozen=True)
class InstancePaths:
    """The files of one instance, all in its data directory."""

    data_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def runtime_file(self) -> Path:
        return self.data_dir / RUNTIME_FILE


# --- the serving process's side ---


class InstanceLock:
    """Held by a serving process for its whole life: the pid file, exclusively locked, with our pid in it."""

    def __init__(self, paths: InstancePaths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def acquire(self, attempts: int = 20) -> None:
        """Take the lock or raise AlreadyRunning. Retries briefly while a `status` probe holds it for an instant."""
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            fd = os.open(self.paths.pid_file, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd, exclusive=True):
                pid = _read_pid_from_fd(fd)
                os.close(fd)
                if pid is not None and is_pkgcache_process(pid):
                    raise AlreadyRunning(self.paths.data_dir, pid)
                time.sleep(0.05)
                continue
            # The previous holder may have unlinked the file between our open and our lock: then start over.
            if not _same_file(fd, self.paths.pid_file):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
            self._fd = fd
            return
        raise AlreadyRunning(self.paths.data_dir, read_pid(self.paths.pid_file))

    def write_runtime(self, info: dict[str, Any]) -> None:
        write_json_atomic(self.paths.runtime_file, info)

    def release(self) -> None:
        """Remove our files, then drop the lock (in this order, so nobody sees our pid file unlocked)."""
        if self._fd is None:
            return
        if _same_file(self._fd, self.paths.pid_file):
            for path in (self.paths.runtime_file, self.paths.pid_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        os.close(self._fd)
        self._fd = None


def runtime_info(host: str, port: int, data_dir: Path, options: dict[str, Any], detached: bool) -> dict[str, Any]:
    from pkgcache import __version__

    return {
        "pid": os.getpid(),
        "version": __version__,
        "host": host,
        "port": port,
        "data_dir": str(data_dir),
        "started_at": time.time(),
        "detached": detached,
        "options": options,
    }


# --- finding an instance ---


@dataclass(frozen=True)
class InstanceState:
    """What the pid file of a data directory says."""

    paths: InstancePaths
    pid: int | None = None
    running: bool = False  # the lock is held and the pid is a pkgcache process we can see
    foreign: bool = False  # the lock is held, but not by a process visible here
    stale: bool = False  # a pid file nobody holds: left behind by a process that was killed
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str | None:
        return self.runtime.get("host")

    @property
    def port(self) -> int | None:
        return self.runtime.get("port")


def inspect_instance(paths: InstancePaths) -> InstanceState:
    if not paths.pid_file.exists():
        return InstanceState(paths)
    pid = read_pid(paths.pid_file)
    runtime = read_json(paths.runtime_file)
    held = lock_is_held(paths.pid_file)
    ours = pid is not None and is_pkgcache_process(pid)
    if held is None:  # no flock here: trust the pid alone
        held = ours
    if not held:
        return InstanceState(paths, pid=pid, stale=True, runtime=runtime)
    if ours:
        return InstanceState(paths, pid=pid, running=True, runtime=runtime)
    return InstanceState(paths, pid=pid, foreign=True, runtime=runtime)


def remove_stale_files(paths: InstancePaths) -> bool:
    """Delete a pid file (and runtime file) that no process holds; False if a process holds it after all."""
    try:
        fd = os.open(paths.pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not ours to read (another user's instance): leave it alone
    try:
        if not _try_lock(fd, exclusive=True) or not _same_file(fd, paths.pid_file):
            return False
        for path in (paths.runtime_file, paths.pid_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True
    except OSError:
        return False  # e.g. no permission to delete in that directory
    finally:
        os.close(fd)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def lock_is_held(path: Path) -> bool | None:
    """Whether some process holds the pid file's lock; None where flock does not exist."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None  # unreadable here: fall back on the pid
    try:
        free = _try_lock(fd, exclusive=False)
        if free:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return not free
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return not _is_zombie(pid)


def is_pkgcache_process(pid: int) -> bool:
    """The process is alive and its command line mentions pkgcache (a recycled pid would not)."""
    if not process_alive(pid):
        return False
    command = _command_line(pid)
    return command is None or "pkgcache" in command


def _command_line(pid: int) -> str | None:
    """The process's command line; None if it cannot be read here (then the caller trusts the lock)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""  # gone, or hidden from us
    try:
        done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may itself contain spaces.
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def _try_lock(fd: int, *, exclusive: bool) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_pid_from_fd(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


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


def rotate_log(path: Path, limit: int = LOG_ROTATE_BYTES) -> None:
    """Keep one previous log (`.1`) when the log has grown past `limit`."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))


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
    url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Wait until our child answers its health check, or raise DaemonError saying why it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DaemonError(f"pkgcache exited during start-up (exit status {process.returncode})")
        # The pid check makes sure it is our child answering, not something else that took the port meanwhile.
        if read_pid(paths.pid_file) == process.pid and health_ok(url, headers):
            return
        time.sleep(POLL_INTERVAL)
    raise DaemonError(f"pkgcache did not answer {url}/-/health within {timeout:.0f} s")


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


# --- talking to an instance ---


def local_url(host: str, port: int) -> str:
    """A URL this machine can reach the instance at (a wildcard listen address means loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def get_json(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET a JSON object over plain HTTP (no proxy from the environment: this is our own service)."""
    connection = _connection_for(url, timeout)
    try:
        connection.request("GET", _path_of(url), headers={"Accept": "application/json", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise DaemonError(f"{url} answered HTTP {response.status}")
    try:
        value = json.loads(body)
    except ValueError:
        raise DaemonError(f"{url} did not answer JSON") from None
    if not isinstance(value, dict):
        raise DaemonError(f"{url} did not answer a JSON object")
    return value


def health_ok(base_url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        get_json(base_url + "/-/health", timeout=1.0, headers=headers)
    except (OSError, DaemonError, http.client.HTTPException):
        return False
    return True


def _connection_for(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


# --- small files ---


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temp, path)


# --- logs ---


def tail_lines(path: Path, count: int, block: int = 8192) -> list[bytes]:
    """The last `count` lines of a file, read from its end."""
    if count <= 0:
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.splitlines(keepends=True)
    return lines[-count:]


def follow(path: Path, out: IO[bytes], keep_going: Callable[[], bool] = lambda: True, poll: float = 0.25) -> None:
    """Copy what is appended to `path` to `out` as it arrives; follows a rotated or truncated log."""
    handle = path.open("rb")
    handle.seek(0, os.SEEK_END)
    try:
        while keep_going():
            chunk = handle.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if _replaced_or_truncated(handle, path):
                handle.close()
                handle = _wait_open(path, keep_going, poll)
                if handle is None:
                    return
                continue
            time.sleep(poll)
    finally:
        if not handle.closed:
            handle.close()


def _replaced_or_truncated(handle: IO[bytes], path: Path) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return True
    return current.st_ino != os.fstat(handle.fileno()).st_ino or current.st_size < handle.tell()


def _wait_open(path: Path, keep_going: Callable[[], bool], poll: float) -> IO[bytes] | None:
    while keep_going():
        with contextlib.suppress(FileNotFoundError):
            return path.open("rb")
        time.sleep(poll)
    return None


def read_from(path: Path, offset: int) -> str:
    """What was written to a file after `offset` (for showing why a start failed)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- formatting ---
