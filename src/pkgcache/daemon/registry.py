"""The instances this account started, so `status`, `stop` and the others find one when given no directory.

`pkgcache start --data-dir X` puts X on a short list in `$XDG_STATE_HOME/pkgcache/instances.json` (by default
`~/.local/state/pkgcache/instances.json`). A plain `pkgcache status` then looks at the instances on that list as well
as the default data directory. The list only remembers where to look: whether an instance runs is still decided by
its pid file's lock. Entries whose data directory is gone are dropped; the list keeps the most recent few.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pkgcache.daemon.files import read_json, write_json_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows, where only `serve` is supported
    fcntl = None  # type: ignore[assignment]

REGISTRY_NAME = "instances.json"
MAX_REMEMBERED = 20


@dataclass(frozen=True)
class RememberedInstance:
    data_dir: Path
    started_at: float


def registry_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where this account's list lives: the XDG state directory, as the XDG base directory spec puts it."""
    state_home = environ.get("XDG_STATE_HOME", "")
    # The spec says a relative path there is invalid and must be ignored.
    base = Path(state_home) if os.path.isabs(state_home) else Path.home() / ".local" / "state"
    return base / "pkgcache" / REGISTRY_NAME


def remember(data_dir: Path, path: Path | None = None) -> None:
    """Put an instance at the top of the list (once: starting it again moves it up)."""
    path = path or registry_path()
    with _locked(path):
        kept = [entry for entry in _read(path) if entry.data_dir != data_dir]
        entries = [RememberedInstance(data_dir, time.time()), *kept][:MAX_REMEMBERED]
        _write(path, entries)


def remembered(path: Path | None = None) -> list[RememberedInstance]:
    """The instances started from this account, most recent first, leaving out those whose directory is gone."""
    return [entry for entry in _read(path or registry_path()) if entry.data_dir.is_dir()]


def _read(path: Path) -> list[RememberedInstance]:
    entries: list[RememberedInstance] = []
    items = read_json(path).get("instances")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("data_dir"), str):
            continue  # hand-edited or from a future version: skip what we cannot read
        started_at = item.get("started_at")
        entries.append(
            RememberedInstance(
                data_dir=Path(item["data_dir"]),
                started_at=float(started_at) if isinstance(started_at, int | float) else 0.0,
            )
        )
    return entries


def _write(path: Path, entries: list[RememberedInstance]) -> None:
    instances = [{"data_dir": str(entry.data_dir), "started_at": entry.started_at} for entry in entries]
    write_json_atomic(path, {"instances": instances}, private=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two `start`s at once must not lose each other's entry: one read-modify-write at a time."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
