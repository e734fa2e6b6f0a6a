"""The supervisor: binds the port, forks the worker processes, starts again one that dies, stops them all.

It is the process `pkgcache stop` signals and the one holding the pid-file lock. It runs no event loop and no
threads, so forking from it is safe, and everything it imported is shared, copy-on-write, with the workers.

Each worker gets a listening socket of its own on the same port (SO_REUSEPORT), and the kernel spreads new
connections across them. The primary also gets the private socket (a Unix socket beside the pid file, that only
this user may connect to) that the replicas hand requests over on. The supervisor keeps every socket open, so
connections that arrive while a worker is being started again wait in its socket's queue instead of being refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pkgcache.workers.context import PRIMARY, WorkerContext
from pkgcache.workers.shared_counters import SharedCounters

log = logging.getLogger("pkgcache")

BACKLOG = 1024
PRIVATE_SOCKET = "pkgcache.primary.sock"
MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; a little room to spare
# A worker that dies this soon after starting counts as failing to start; after this many such failures in a row
# the service stops instead of starting it again and again.
STARTUP_SECONDS = 10.0
MAX_FAILED_STARTS = 5
RESTART_DELAY_MAX = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WATCHED = {signal.SIGCHLD, *STOP_SIGNALS}
_PR_SET_PDEATHSIG = 1

# Runs one worker's service on the sockets it is given; returns when the worker has stopped.
ServeWorker = Callable[[WorkerContext, list[socket.socket]], None]


def primary_socket_beside(runtime_dir: str) -> str | None:
    """Where the primary's private socket is for a data directory, or None when that path is too long (the socket
    is then in a temporary folder only the workers know)."""
    beside = os.path.join(runtime_dir, PRIVATE_SOCKET)
    return beside if len(os.fsencode(beside)) <= MAX_UNIX_SOCKET_PATH else None


class SupervisorError(Exception):
    """The workers could not be started or kept running; the message says why."""


@dataclass
class _Worker:
    index: int
    sockets: list[socket.socket]
    pid: int | None = None
    started_at: float = 0.0
    failed_starts: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    host: str
    port: int
    count: int
    serve: ServeWorker
    runtime_dir: str  # the data directory, where the pid file is
    shutdown_timeout: float = 60.0
    on_bound: Callable[[], None] | None = None  # once the port is held, before any worker starts
    _workers: list[_Worker] = field(default_factory=list)
    _counters: SharedCounters | None = None
    _private: socket.socket | None = None
    _private_address: str = ""
    _private_dir: str = ""
    _stopping: bool = False
    # The service's start (Unix time), which every worker reports as its uptime's, however often it was restarted.
    started_at: float = field(default_factory=time.time)

    def run(self) -> int:
        """Start the workers and keep them running until asked to stop; the exit status for the service."""
        self._bind()
        if self.on_bound is not None:
            self.on_bound()
        self._counters = SharedCounters(self.count)
        # Objects made so far are never freed: keep the collector off their pages, so they stay shared.
        gc.collect()
        gc.freeze()
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            for worker in self._workers:
                self._start(worker, previous_mask)
            return self._watch(previous_mask)
        finally:
            self._stop_all()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            self._close()

    # --- sockets ---

    def _bind(self) -> None:
        _check_port_is_free(self.host, self.port)
        try:
            self._workers = [_Worker(index, _listen(self.host, self.port)) for index in range(self.count)]
            self._private_address = self._private_socket_path()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._private_address)  # left by a supervisor that was killed; the instance lock is ours
            self._private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._private.bind(self._private_address)
            os.chmod(self._private_address, 0o600)  # only this user may connect: nobody else reaches the primary
            self._private.listen(BACKLOG)
        except OSError:
            self._close()
            raise

    def _private_socket_path(self) -> str:
        """Beside the pid file, so a killed supervisor's socket is found and replaced at the next start (and the
        command line finds the primary there); in a private temporary folder when that path is too long for a Unix
        socket."""
        beside = primary_socket_beside(self.runtime_dir)
        if beside is not None:
            return beside
        self._private_dir = tempfile.mkdtemp(prefix="pkgcache-")
        return os.path.join(self._private_dir, PRIVATE_SOCKET)

    def _close(self) -> None:
        for worker in self._workers:
            for sock in worker.sockets:
                sock.close()
        self._close_private()
        if self._private_dir:
            shutil.rmtree(self._private_dir, ignore_errors=True)
        if self._counters is not None:
            self._counters.close()
            self._counters = None

    def _close_private(self) -> None:
        """Close the primary's socket. With no primary left to accept, this also resets the requests replicas
        queued on it, which would otherwise wait the whole shutdown timeout for an answer that cannot come."""
        if self._private is not None:
            self._private.close()
            self._private = None
            with contextlib.suppress(OSError):
                os.unlink(self._private_address)

    # --- workers ---

    def _start(self, worker: _Worker, child_mask: set[int | signal.Signals]) -> None:
        assert self._counters is not None and self._private is not None
        context = WorkerContext(worker.index, self.count, self._counters, self._private_address, self.started_at)
        sockets = [*worker.sockets, self._private] if worker.index == PRIMARY else list(worker.sockets)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                self._become_worker(parent, worker, child_mask)
                self.serve(context, sockets)
                code = 0
            except BaseException:
                log.exception("worker %d failed", worker.index)
            finally:
                logging.shutdown()
                os._exit(code)
        worker.pid, worker.started_at, worker.restart_at = pid, time.monotonic(), None
        log.info("worker %d (%s) started, pid %d", worker.index, context.role, pid)

    def _become_worker(self, parent: int, worker: _Worker, child_mask: set[int | signal.Signals]) -> None:
        for number in _WATCHED:
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, child_mask)
        _die_with_parent()
        if os.getppid() != parent:
            raise SystemExit("the supervisor is gone")
        # Only its own sockets: a worker must not accept on another's.
        for other in self._workers:
            if other is not worker:
                for sock in other.sockets:
                    sock.close()
        if worker.index != PRIMARY and self._private is not None:
            self._private.close()

    def _watch(self, child_mask: set[int | signal.Signals]) -> int:
        while True:
            received = signal.sigtimedwait(_WATCHED, self._next_wake())
            if received is not None and received.si_signo in STOP_SIGNALS:
                log.info("stopping the workers")
                return 0
            exit_code = self._reap()
            if exit_code is not None:
                return exit_code
            self._restart_due(child_mask)

    def _next_wake(self) -> float:
        pending = [w.restart_at for w in self._workers if w.restart_at is not None]
        return max(0.05, min(pending) - time.monotonic()) if pending else 1.0

    def _reap(self) -> int | None:
        """Note every worker that has exited and plan its restart; an exit status when the service must stop."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            worker = next((w for w in self._workers if w.pid == pid), None)
            if worker is None:
                continue
            worker.pid = None
            lived = time.monotonic() - worker.started_at
            worker.failed_starts = worker.failed_starts + 1 if lived < STARTUP_SECONDS else 0
            if worker.failed_starts >= MAX_FAILED_STARTS:
                log.error(
                    "worker %d %s %d times within %.0f s of starting; stopping pkgcache",
                    worker.index,
                    _describe(status),
                    worker.failed_starts,
                    STARTUP_SECONDS,
                )
                return 1
            # At once after a crash; after failed starts, waiting longer each time (1, 2, 4... seconds).
            delay = 0.0 if worker.failed_starts <= 1 else min(RESTART_DELAY_MAX, 2.0 ** (worker.failed_starts - 2))
            log.warning(
                "worker %d (pid %d) %s; starting it again in %.0f s", worker.index, pid, _describe(status), delay
            )
            worker.restart_at = time.monotonic() + delay

    def _restart_due(self, child_mask: set[int | signal.Signals]) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.pid is None and worker.restart_at is not None and worker.restart_at <= now:
                self._start(worker, child_mask)

    def _stop_all(self) -> None:
        """SIGTERM every worker (each finishes what it is sending, within its shutdown timeout), then wait."""
        running = [w for w in self._workers if w.pid is not None]
        if not any(w.index == PRIMARY for w in running):
            self._close_private()
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.shutdown_timeout
        while any(w.pid is not None for w in running):
            if time.monotonic() > deadline:
                for worker in running:
                    if worker.pid is not None:
                        log.warning("worker %d did not stop in time; killing it", worker.index)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.pid, signal.SIGKILL)
                deadline = float("inf")
            for worker in running:
                if worker.pid is None:
                    continue
                try:
                    pid, _ = os.waitpid(worker.pid, os.WNOHANG)
                except ChildProcessError:
                    pid = worker.pid
                if pid:
                    worker.pid = None
            time.sleep(0.05)


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` names, sharing the port with the other workers'."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in _addresses(host, port):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _check_port_is_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, even another program that uses SO_REUSEPORT too.

    A plain bind (without SO_REUSEPORT) fails on a port held in any way; a SO_REUSEPORT bind would silently share
    the port with another program of the same user, which would then get some of pkgcache's clients.
    """
    for family, kind, proto, _name, address in _addresses(host, port):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


def _addresses(host: str, port: int) -> list[tuple]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    unique: dict[tuple, tuple] = {}
    for entry in found:
        unique.setdefault(entry[4][:2], entry)
    if not unique:
        raise OSError(errno.EADDRNOTAVAIL, f"{host} names no address")
    return list(unique.values())


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the supervisor dies.

    The supervisor only dies unasked when it is killed (a graceful stop waits for the workers), and then the whole
    service should go as a single process would: at once, releasing the port and the pid-file lock, leaving
    nothing running that `pkgcache stop` no longer knows about.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
