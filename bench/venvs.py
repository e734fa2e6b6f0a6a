"""One virtualenv per peer (and one for the install clients) under bench/.work/venvs/, from bench/tools.txt pins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import BENCH_DIR, WORK, clean_env, log
from bench.registry import registry_index_url

VENVS = WORK / "venvs"
# Which pinned packages each virtualenv gets.
GROUPS: dict[str, tuple[str, ...]] = {
    "devpi": ("devpi-server", "devpi-client"),
    "proxpi": ("proxpi", "gunicorn"),
    "clients": ("pip", "uv"),
    "profile": ("py-spy",),
}


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (BENCH_DIR / "tools.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[name] = version
    return found


def ensure_venv(group: str) -> Path:
    """The virtualenv for `group`, created and filled on first use; returns its bin/ folder."""
    venv = VENVS / group
    wanted = " ".join(f"{name}=={pins()[name]}" for name in GROUPS[group])
    stamp = venv / ".bench-installed"
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    log(f"creating virtualenv {group}: {wanted}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--index-url", registry_index_url()]
    # The command line holds the registry's address: keep it out of logs and error messages.
    result = subprocess.run([*command, *wanted.split()], env=clean_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"installing {wanted} into {venv} failed:\n{result.stderr[-2000:]}")
    stamp.write_text(wanted)
    return venv / "bin"
