"""The files of one instance, all in its data directory, and small JSON files written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PID_FILE = "pkgcache.pid"
LOG_FILE = "pkgcache.log"
RUNTIME_FILE = "pkgcache.runtime.json"
SETTINGS_FILE = "pkgcache.settings.json"
START_LOCK_FILE = "pkgcache.start.lock"


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

    @property
    def settings_file(self) -> Path:
        return self.data_dir / SETTINGS_FILE

    @property
    def start_lock_file(self) -> Path:
        return self.data_dir / START_LOCK_FILE


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; empty when the file is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json_atomic(path: Path, value: dict[str, Any], private: bool = False) -> None:
    """Write beside the file, then rename over it: a reader sees the old content or the new, never half.

    `private` files (secrets inside) are mode 0600 from the moment they are created, not made so afterwards;
    others get the umask's say, as `open` gives.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w") as handle:
            if private and hasattr(os, "fchmod"):  # a leftover of the same name keeps its mode through O_CREAT
                os.fchmod(fd, 0o600)
            handle.write(json.dumps(value, indent=2) + "\n")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    os.replace(temp, path)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
