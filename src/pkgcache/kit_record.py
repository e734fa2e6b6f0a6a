"""What was seeded, exported and imported into a data directory, and when: `<data_dir>/pkgcache.kit.json`.

Seeding, `export` and `import` each add one entry (the newest few of each kind are kept, and the newest baseline
export whatever its age). `export --since last` reads the time of the last export that carried everything new (a
baseline: see `is_baseline`) from here; the page at `/` shows the last seed and the last import. The file is
small and written whole (a reader sees the old or the new content, never half).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

KIT_FILE = "pkgcache.kit.json"
KINDS = ("seed", "export", "import")
KEPT_PER_KIND = 20


def kit_path(data_dir: Path) -> Path:
    return data_dir / KIT_FILE


def read_kit_record(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Entries by kind, oldest first; empty lists when nothing was recorded or the file is unreadable."""
    try:
        raw = json.loads(kit_path(data_dir).read_text())
    except (OSError, ValueError):
        raw = {}
    record: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        entries = raw.get(kind) if isinstance(raw, dict) else None
        record[kind] = [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
    return record


def last_entry(data_dir: Path, kind: str) -> dict[str, Any] | None:
    entries = read_kit_record(data_dir)[kind]
    return entries[-1] if entries else None


def is_baseline(entry: dict[str, Any]) -> bool:
    """Whether an export entry is one `--since last` counts from: an export of everything, or of everything new.
    Entries from before the flag was recorded count when they name no inputs (no selection by lock file)."""
    return bool(entry.get("baseline", not entry.get("inputs")))


def last_baseline(data_dir: Path) -> dict[str, Any] | None:
    """The newest export entry `--since last` counts from, if any."""
    baselines = [entry for entry in read_kit_record(data_dir)["export"] if is_baseline(entry)]
    return baselines[-1] if baselines else None


def _kept(kind: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest entries, and the newest baseline export among them even when many partial exports followed it."""
    kept = entries[-KEPT_PER_KIND:]
    baselines = [entry for entry in entries if is_baseline(entry)] if kind == "export" else []
    if baselines and not any(entry is baselines[-1] for entry in kept):
        kept = [baselines[-1], *kept[1:]]
    return kept


def add_kit_entry(data_dir: Path, kind: str, entry: dict[str, Any], at: float | None = None) -> dict[str, Any]:
    """Append `entry` (stamped with `at`, default now) to the record of `kind`; returns it as stored."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    record = read_kit_record(data_dir)
    stored = {"at": time.time() if at is None else at, **entry}
    record[kind] = _kept(kind, [*record[kind], stored])
    path = kit_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return stored
