"""Instant blocks, kept in the data directory so that every worker (and the next start) sees them.

`gate/blocks.json` holds the blocks in force, by side; `gate/blocks.log` has one JSON line per block and unblock,
with who, when and why. The file is replaced whole (written aside, renamed), so a reader never sees half of it;
a block made through the admin API has every worker read it again before the API answers (`state.Gate`), and every
worker also looks at its stamp about twice a second (a file changed by other means).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pkgcache.policy.common import Block, Side, parse_block_target
from pkgcache.policy.conda_rules import parse_version as parse_conda_version
from pkgcache.policy.pypi import normalize_name as normalize_pypi_name
from pkgcache.policy.pypi_rules import parse_version as parse_pypi_version
from pkgcache.storage.store import CacheStore, Stamp, file_stamp

log = logging.getLogger(__name__)

SIDES: tuple[Side, ...] = ("pypi", "conda")
Blocks = Mapping[str, tuple[Block, ...]]


def normalize(side: str, name: str) -> str:
    """A name as the side compares it: PEP 503 for PyPI, case folded for conda."""
    return normalize_pypi_name(name) if side == "pypi" else name.strip().lower()


def block_key(side: str, name: str, version: str | None) -> tuple[str, object]:
    """What makes two blocks the same: the normalised name and the version as the side compares versions (PEP 440
    or conda's: `1.1` and `1.1.0` are one version), or its text when it is no version of the side's."""
    if version is None:
        return normalize(side, name), None
    parsed = parse_pypi_version(version) if side == "pypi" else parse_conda_version(version)
    return normalize(side, name), parsed if parsed is not None else version


def block_from_target(side: str, target: str, who: str, why: str, when: datetime | None = None) -> Block:
    """A block of `NAME==VERSION` (or `NAME` alone: every version); ValueError says what is wrong with `target`."""
    name, version = parse_block_target(target)
    return Block(normalize(side, name), version, who=who, why=why, when=when or datetime.now(UTC))


@dataclass(frozen=True)
class BlockChange:
    """What one block or unblock did, for its answer and its log line."""

    action: str  # "block" or "unblock"
    side: str
    block: Block | None  # the block added, or the one removed (None: there was none)
    who: str
    purged_files: int = 0
    purged_bytes: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "at": datetime.now(UTC).isoformat(),
            "action": self.action,
            "side": self.side,
            "target": None if self.block is None else self.block.target,
            "who": self.who,
            "why": None if self.block is None else self.block.why,
            "purged_files": self.purged_files,
            "purged_bytes": self.purged_bytes,
        }


class BlocksUnreadable(Exception):
    """The blocks file is there but cannot be read whole (its words say which, and what to do)."""


class BlockBook:
    """The blocks file and its log, in a data directory."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.path = store.path_for("gate", "blocks.json")
        self.log_path = store.path_for("gate", "blocks.log")
        self.lock_path = store.path_for("gate", "blocks.lock")

    def stamp(self) -> Stamp | None:
        return file_stamp(self.path)

    def read(self) -> dict[str, tuple[Block, ...]]:
        """The blocks in force by side (none for a side without any); a damaged file is logged and read as empty.
        For showing them; what writes the file or enforces it reads with `read_sound`."""
        try:
            return self.read_sound()
        except BlocksUnreadable as exc:
            log.error("%s", exc)
            return {side: () for side in SIDES}

    def read_sound(self) -> dict[str, tuple[Block, ...]]:
        """The blocks in force by side; BlocksUnreadable when the file is there but cannot be read whole, so that
        nothing takes it for "no blocks": a block written over it would drop every other one, and a running
        gate would stop enforcing them."""
        found: dict[str, tuple[Block, ...]] = {side: () for side in SIDES}
        try:
            # One open: a file renamed in between a look for it and a read of it is neither missing nor damaged.
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return found
        except (OSError, ValueError):
            raise BlocksUnreadable(f"the blocks file {self.path} cannot be read: fix or remove it") from None
        if not isinstance(data, dict):
            raise BlocksUnreadable(f"the blocks file {self.path} is not a JSON object: fix or remove it")
        for side in SIDES:
            try:
                found[side] = tuple(Block.from_json(item) for item in data.get(side, ()))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise BlocksUnreadable(f"the {side} blocks of {self.path} cannot be read ({exc}): fix it") from None
        return found

    def add(self, side: str, block: Block) -> Block:
        """Keep `block` (replacing one of the same name and version), blocking: call from a thread. The block in
        force afterwards: `block`, or the one already in force for the same release and reason (left as it was)."""
        with self._changing():
            blocks = self.read_sound()
            key = block_key(side, block.name, block.version)
            for present in blocks[side]:
                if block_key(side, present.name, present.version) == key and present.why == block.why:
                    return present
            kept = [b for b in blocks[side] if block_key(side, b.name, b.version) != key]
            self._write({**blocks, side: (*kept, block)})
        return block

    def remove(self, side: str, name: str, version: str | None) -> Block | None:
        """Drop the block of `name` at `version` (None: the block of every version; `1.1` is `1.1.0`, as a block
        of either refuses the files of both); the block dropped, if any."""
        with self._changing():
            blocks = self.read_sound()
            key = block_key(side, name, version)
            gone = [b for b in blocks[side] if block_key(side, b.name, b.version) == key]
            if gone:
                self._write({**blocks, side: tuple(b for b in blocks[side] if b not in gone)})
        return gone[0] if gone else None

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Held while the file is read, changed and written again: two blocks made at once (admin API calls in
        threads or workers, `pkgcache block` on the directory) would each write the file without the other's."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # each open is its own lock: threads wait for each other too
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def record(self, change: BlockChange) -> None:
        """Append the change to the log (one line, appended whole)."""
        line = json.dumps(change.as_json(), ensure_ascii=False) + "\n"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(line)

    def history(self, limit: int = 50) -> list[dict[str, object]]:
        """The last `limit` log lines, newest last."""
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()[-limit:]
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def _write(self, blocks: Blocks) -> None:
        self.store.tmp_dir.mkdir(parents=True, exist_ok=True)  # a command working on the directory directly
        content: dict[str, Any] = {
            side: [b.as_json() for b in sorted(blocks[side], key=lambda b: b.target)] for side in SIDES
        }
        content["written_at"] = time.time()
        self.store.write_json_atomic(self.path, content)
