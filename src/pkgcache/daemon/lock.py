"""The pid file a serving process holds locked for its whole life, the runtime file beside it, and what they say.

Every serving process (foreground or background) holds an exclusive `flock` on `<data_dir>/pkgcache.pid` for as long
as it runs, with its pid written inside, and writes `<data_dir>/pkgcache.runtime.json` (address, start time, whether
`start` launched it and from which recorded settings). The lock is what says an instance is alive: the kernel drops
it when the process dies, however it dies, so a pid file left by a killed process is recognised as stale, and a
recycled pid cannot fool us. Before a pid is believed we still check that it is a pkgcache process (its command
line), in case the lock is held from another pid namespace (a container sharing the data directory).

A second lock, `<data_dir>/pkgcache.start.lock`, is held by `start` and `restart` (never by the serving process) from
the moment they look whether an instance runs until the process they launched answers or has failed: two of them at
once on one data directory take turns, so the second sees the first one's instance and says it is already running,
and neither rewrites the recorded settings the other's process is about to read.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgcache.daemon.errors import AlreadyRunning, StartInProgress
from pkgcache.daemon.files import InstancePaths, read_json, write_json_atomic
from pkgcache.daemon.processes import is_pkgcache_process

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows, where only `serve` is supported
    fcntl = None  # type: ignore[assignment]


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


def runtime_info(host: str, port: int, data_dir: Path, settings_file: Path | None, detached: bool) -> dict[str, Any]:
    """What the runtime file says about the serving process: where it listens, and how it was launched."""
    from pkgcache import __version__

    return {
        "pid": os.getpid(),
        "version": __version__,
        "host": host,
        "port": port,
        "data_dir": str(data_dir),
        "started_at": time.time(),
        "detached": detached,
        "settings_file": None if settings_file is None else str(settings_file),
    }


# --- the side of `start` and `restart` ---


class StartLock:
    """One `start` or `restart` at a time on a data directory: held from the look at the pid file until the process
    launched answers or has failed. The file stays (unlinking a lock file others may have open would let two hold
    it); the holder's pid is written inside, for the message of whoever waits."""

    def __init__(self, paths: InstancePaths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def acquire(self, timeout: float, on_wait: Callable[[int | None], None] | None = None) -> None:
        """Take the lock, waiting up to `timeout` seconds for the other holder; StartInProgress when it still holds
        it then. `on_wait` is called once, with the holder's pid, when we have to wait. OSError when the data
        directory cannot be made or the file opened."""
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        # Not inherited by the process launched (os.open makes it close-on-exec): the lock ends with this command.
        fd = os.open(self.paths.start_lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        told = False
        while not _try_lock(fd, exclusive=True):
            holder = _read_pid_from_fd(fd)
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StartInProgress(self.paths.data_dir, holder)
            if not told and on_wait is not None:
                on_wait(holder)
                told = True
            time.sleep(0.1)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # only for messages
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StartLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


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

    @property
    def settings_file(self) -> Path | None:
        """The recorded settings the instance was launched from (by `start`), if it was."""
        recorded = self.runtime.get("settings_file")
        return Path(recorded) if isinstance(recorded, str) and recorded else None


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
