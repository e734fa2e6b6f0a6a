"""Whether a pid is alive, and whether it is pkgcache (a recycled pid must never be taken for ours)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
    # No /proc (macOS, the BSDs): ask ps.
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
