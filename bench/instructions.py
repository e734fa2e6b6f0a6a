"""Instructions per request, counted by valgrind's callgrind: a figure that does not move with the machine.

req/s depends on the CPU's speed, on what else runs on the machine and on the hypervisor; the number of
instructions a server executes to answer one request does not (for the same code, libraries and request). This
module runs one server process under `valgrind --tool=callgrind` with instrumentation off (so it starts in a few
seconds), turns counting on with `callgrind_control`, sends a fixed load with wrk, dumps, and divides the
instructions counted by the requests wrk completed. Only user-space instructions are counted: the kernel's work
(loopback TCP, the copies of send and receive) is not, and is the same for any server sending the same bytes.
The same dump gives how often the server read the clock per request (clock_gettime: a cheap vDSO call on this
machine, a system call on hosts whose clock source does not allow it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import load, procs
from bench.common import clean_env, log

# glibc's entry points (valgrind hides the vDSO, so every call shows up here, versioned).
CLOCK_FUNCTIONS = ("clock_gettime", "__clock_gettime", "gettimeofday", "__gettimeofday", "__gettimeofday_syscall")


@dataclass(frozen=True)
class Count:
    requests: int
    instructions: int
    clock_calls: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests if self.requests else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"per_request": round(self.per_request)}


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def callgrind_argv(out_dir: Path, argv: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p", *argv]  # fmt: skip


def count_requests(proc: procs.Proc, url: str, out_dir: Path, seconds: float = 8, connections: int = 16,
                   accept: str | None = load.PIP_ACCEPT) -> Count:  # fmt: skip
    """Instructions `proc` (started with `callgrind_argv`) executes while wrk loads `url` for `seconds`."""
    for old in out_dir.glob("callgrind.*"):
        old.unlink()
    _control(proc.pid, "-i", "on")
    result = load.wrk(url, connections, seconds, accept)
    _control(proc.pid, "-d")
    dump = _wait_for_dump(out_dir, proc.pid)
    if result.errors:
        log(f"callgrind: {result.errors} errors while counting {url}")
    requests = round(result.requests_per_s * result.duration_s)
    text = dump.read_text(errors="replace")
    return Count(requests, _total_instructions(text), _clock_calls(text))


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=120, check=True)


def _wait_for_dump(out_dir: Path, pid: int, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dumps = sorted(out_dir.glob(f"callgrind.{pid}.*"))
        if dumps and "totals:" in dumps[-1].read_text(errors="replace"):
            return dumps[-1]
        time.sleep(0.5)
    raise RuntimeError(f"callgrind wrote no dump for {pid} in {out_dir}")


def _total_instructions(text: str) -> int:
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError("a callgrind dump without totals")
    return int(found.group(1))


def _clock_calls(text: str) -> int:
    """Calls into the clock functions, summed over every caller (callgrind's `cfn=` / `calls=` lines)."""
    names: dict[str, str] = {}
    total = 0
    callee = ""
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            callee_spec = line.split("=", 1)[1]
            found = re.match(r"\((\d+)\)(?: (.*))?", callee_spec)
            name = callee_spec
            if found:
                if found.group(2):
                    names[found.group(1)] = found.group(2)
                name = names.get(found.group(1), "")
            if line.startswith("cfn="):
                callee = name
        elif line.startswith("calls=") and callee.split("@", 1)[0] in CLOCK_FUNCTIONS:
            total += int(line.split("=", 1)[1].split()[0])
    return total


def nginx_argv(prefix: Path, conf: Path) -> list[str]:
    return ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]


def start_counted(name: str, argv: list[str], out_dir: Path, health_url: str, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> procs.Proc:  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = procs.start(name, callgrind_argv(out_dir, argv), out_dir / "server.log", env or clean_env(), cwd)
    procs.wait_http(health_url, proc, timeout=300)
    return proc
