"""Starting and stopping the servers under test, and watching their memory.

Every process is started in its own session so that it and its children form one process group whose id is
the pid we started; stopping sends SIGTERM to that pid, waits, and only then kills the group we created.
Nothing else on the machine is ever signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import log

_RUNNING: dict[int, str] = {}


@dataclass
class Proc:
    """One server process we started (the leader of its own process group)."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    hwm_kb: int = 0  # the largest VmHWM sum seen over its tree, taken just before it stops

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


def start(name: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = log_path.open("ab")
    popen = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL
    )
    out.close()
    _RUNNING[popen.pid] = name
    return Proc(name, popen, log_path)


def stop(proc: Proc, timeout: float = 15.0) -> None:
    if proc.pid not in _RUNNING:
        return
    proc.hwm_kb = max(proc.hwm_kb, tree_memory_kb(proc.pid, "VmHWM"))
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{proc.name} (pid {proc.pid}) ignored SIGTERM; killing its process group")
    # Children left behind by the leader (workers) die with the group we created for it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(5)
    _RUNNING.pop(proc.pid, None)


def _stop_all_at_exit() -> None:
    for pid, name in list(_RUNNING.items()):
        log(f"stopping {name} (pid {pid}) at exit")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in list(_RUNNING):
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _RUNNING.clear()


atexit.register(_stop_all_at_exit)


def _pid_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


def wait_http(url: str, proc: Proc | None = None, timeout: float = 90.0) -> None:
    """Until `url` answers (any HTTP status below 500), or fail with the server's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{_tail(proc.log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail = _tail(proc.log_path) if proc else ""
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s\n{tail}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- memory ---


def children_map() -> dict[int, list[int]]:
    """Every process's children, from /proc's parent links (one scan, shared by all the trees sampled)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """pid and every process below it."""
    children = children_map() if children is None else children
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


# Where each figure is: /proc/PID/status (VmRSS, VmHWM) or smaps_rollup (Pss: resident pages, each shared page
# divided among the processes sharing it, so the sum over a tree counts every page once).
_SOURCES = {"Pss": "smaps_rollup"}


def memory_kb(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/{_SOURCES.get(field_name, 'status')}") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kb(pid: int, field_name: str = "VmRSS", children: dict[int, list[int]] | None = None) -> int:
    return sum(memory_kb(p, field_name) for p in descendants(pid, children))


@dataclass(frozen=True)
class TreeMemory:
    """A process tree's memory: PSS summed (what the tree costs the machine) and RSS summed (shared pages counted
    once per process that maps them, which overstates forked workers)."""

    pss_kb: int
    rss_kb: int


def tree_memory(pid: int, children: dict[int, list[int]] | None = None) -> TreeMemory:
    tree = descendants(pid, children)
    return TreeMemory(sum(memory_kb(p, "Pss") for p in tree), sum(memory_kb(p, "VmRSS") for p in tree))


@dataclass
class MemorySampler:
    """Samples each system's process tree ten times a second: the peak PSS and RSS sums overall, and the peak PSS
    sum per window."""

    interval: float = 0.1
    procs: dict[str, Proc] = field(default_factory=dict)
    peak_kb: dict[str, int] = field(default_factory=dict)  # PSS
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    windows: dict[str, dict[str, int]] = field(default_factory=dict)  # PSS
    _active: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._loop, name="rss-sampler", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def watch(self, system: str, proc: Proc | None) -> None:
        with self._lock:
            if proc is None:
                self.procs.pop(system, None)
            else:
                self.procs[system] = proc

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        with self._lock:
            self.windows.setdefault(name, {})
            self._active.add(name)
        try:
            yield
        finally:
            self._sample()
            with self._lock:
                self._active.discard(name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            procs = dict(self.procs)
            active = list(self._active)
        children = children_map()
        for system, proc in procs.items():
            if not proc.alive():
                continue
            memory = tree_memory(proc.pid, children)
            with self._lock:
                self.peak_kb[system] = max(self.peak_kb.get(system, 0), memory.pss_kb)
                self.peak_rss_kb[system] = max(self.peak_rss_kb.get(system, 0), memory.rss_kb)
                for name in active:
                    window = self.windows[name]
                    window[system] = max(window.get(system, 0), memory.pss_kb)
