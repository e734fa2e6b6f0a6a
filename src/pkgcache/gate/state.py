"""`Gate`: each side's policy (rules and blocks) and offline state, as one worker sees it, kept current.

Every worker holds one. It compiles each side's rules once, lays the blocks of `gate/blocks.json` over them, and
tells the side's filter layer whenever what it filters by changes (`subscribe`). About twice a second it looks at
the blocks file's stamp (a block made on any worker, or by `pkgcache block` on the directory, is in force
everywhere within a second) and at whether a side's upstreams are all down: the primary, which talks to them,
decides (and probes them while they are: gate/offline.py) and writes `gate/degraded.json`; the replicas read it.

A side with no rule, no block and no offline view passes everything: its filter layer then costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from pkgcache.config import Settings
from pkgcache.gate.blocks import SIDES, BlockBook, BlocksUnreadable
from pkgcache.gate.holdings import IMPORTED_MARK, forget_holdings, read_import_mark
from pkgcache.gate.offline import OfflinePool, offline_view_goes_on
from pkgcache.policy.common import Block
from pkgcache.policy.config import PolicySettingsBase
from pkgcache.policy.engine import SidePolicy
from pkgcache.policy.pypi import PypiPolicy
from pkgcache.storage.store import CacheStore, Stamp, StorageError, file_stamp
from pkgcache.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.5
Listener = Callable[["SideGate"], None]
ImportListener = Callable[[], None]


@dataclass(frozen=True)
class SideGate:
    """One side's gate at one moment. Immutable: a change makes a new one."""

    side: str
    policy: SidePolicy | None  # None: no rule, no block, no age
    offline: bool  # [server] offline: never contact an upstream
    degraded: bool  # every upstream down: from when all rest until one answers (gate/offline.py)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        # Offline by configuration and offline while every upstream is down refuse what is not held differently.
        view = "offline" if self.offline else "down" if self.degraded else "-"
        parts = [self.side, self.policy.fingerprint if self.policy else "-", view]
        object.__setattr__(self, "fingerprint", hashlib.sha256("/".join(parts).encode()).hexdigest()[:16])

    @property
    def view_offline(self) -> bool:
        """Whether clients see only what the cache holds."""
        return self.offline or self.degraded

    @property
    def passes_everything(self) -> bool:
        return self.policy is None and not self.view_offline


class Gate:
    """The gate of both sides in this worker (see the module docstring)."""

    def __init__(self, settings: Settings, store: CacheStore, pools: Mapping[str, UpstreamPool]) -> None:
        self.store = store
        self.book = BlockBook(store)
        self.offline = settings.server.offline
        self.primary = store.writable
        self._pools = pools
        self._settings: dict[str, PolicySettingsBase] = {}
        if settings.pypi.enabled:
            self._settings["pypi"] = settings.pypi
        if settings.conda.enabled:
            self._settings["conda"] = settings.conda
        self._rules: dict[str, SidePolicy] = {}  # compiled when first needed (see _rules_of_side)
        self._degraded_path = store.path_for("gate", "degraded.json")
        self._degraded: dict[str, bool] = dict.fromkeys(SIDES, False)
        self._stamps: dict[str, Stamp | None] = {}
        self._listeners: dict[str, list[Listener]] = {side: [] for side in SIDES}
        self._imported_path = store.path_for(*IMPORTED_MARK)
        self._import_listeners: list[ImportListener] = []
        # The id of the last import mark this worker has acted on (its listeners have run), for `/-/status`.
        self.import_mark = 0
        self._pending_mark = 0  # read with the mark's stamp, acted on by _imported
        self.blocks: dict[str, tuple[Block, ...]] = {side: () for side in SIDES}
        self.sides: dict[str, SideGate] = {}
        self._publish_all()

    # --- what the layers use ---

    def subscribe(self, side: str, listener: Listener) -> None:
        """Call `listener` with the side's gate now and whenever it changes."""
        self._listeners[side].append(listener)
        listener(self.sides[side])

    def on_import(self, listener: ImportListener) -> None:
        """Call `listener` (on the event loop) whenever an import has changed the cache since the last look."""
        self._import_listeners.append(listener)

    def policy(self, side: str) -> SidePolicy | None:
        """The side's rules with the blocks in force (None when the side is not served)."""
        return self.sides[side].policy if side in self.sides else None

    # --- keeping it current ---

    def load_blocks_at_start(self) -> None:
        """Read the blocks file for the first time (blocking); BlocksUnreadable when it is there but cannot be read
        whole: a worker has no blocks read before to keep in force, and starting without them would serve what
        they refuse, so it does not start."""
        self._stamps["blocks"] = self.book.stamp()
        self.blocks = self.book.read_sound()
        self._publish_all()

    def load_blocks(self) -> bool:
        """Read the blocks file if it changed (blocking); whether it did."""
        stamp = self.book.stamp()
        if "blocks" in self._stamps and stamp == self._stamps["blocks"]:
            return False
        self._stamps["blocks"] = stamp
        try:
            self.blocks = self.book.read_sound()
        except BlocksUnreadable as exc:
            # The blocks read last stay in force: a damaged file never lifts them (at start, see load_blocks_at_start).
            log.error("%s; the blocks read before stay in force", exc)
            return False
        self._publish_all()
        return True

    def set_blocks(self, side: str, blocks: tuple[Block, ...]) -> None:
        """Blocks just written by this worker: in force here at once (the others read the file)."""
        self.blocks = {**self.blocks, side: blocks}
        self._stamps["blocks"] = self.book.stamp()
        self._publish(side)

    async def watch(self) -> None:
        """Look at the blocks file and the upstreams' health about twice a second, until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.load_blocks)
                if await asyncio.to_thread(self.import_seen):
                    self._imported()
                if self.primary:
                    await self._decide_degraded()
                else:
                    await asyncio.to_thread(self._read_degraded)
            except Exception:  # the gate keeps its last state; say why
                log.exception("the gate could not look at its files")
            await asyncio.sleep(WATCH_SECONDS)

    def import_seen(self) -> bool:
        """Whether the import mark changed since the last look (blocking); the first look only notes it (a worker
        that has just started holds nothing from before the mark) and counts it as acted on."""
        stamp = file_stamp(self._imported_path)
        first = "imported" not in self._stamps
        if not first and stamp == self._stamps["imported"]:
            return False
        self._stamps["imported"] = stamp
        self._pending_mark = read_import_mark(self.store.root)
        if first:
            self.import_mark = self._pending_mark
        return not first

    def _imported(self) -> None:
        log.info("an import changed the cache: what this worker holds in memory about it is read again")
        forget_holdings()
        for listener in self._import_listeners:
            listener()
        self.import_mark = self._pending_mark  # acknowledged only once every listener has run

    async def _decide_degraded(self) -> None:
        if self.offline:
            return
        now = {
            side: offline_view_goes_on(pool, self._degraded.get(side, False))
            for side, pool in self._pools.items()
            if not isinstance(pool, OfflinePool)
        }
        changed = [side for side, down in now.items() if down != self._degraded.get(side)]
        if not changed:
            return
        self._degraded.update(now)
        for side in changed:
            if now[side]:
                log.warning(
                    "every %s upstream is down: serving what the cache holds (the offline view) until a probe "
                    "finds one back",
                    side,
                )
            else:
                log.warning("a %s upstream is back: serving everything again", side)
            self._publish(side)
        try:
            await asyncio.to_thread(self.store.write_json_atomic, self._degraded_path, self._degraded)
        except StorageError as exc:  # this worker goes on; the others keep the view they had until it is written
            log.warning("could not tell the other workers which sides are down: %s", exc)

    def _read_degraded(self) -> None:
        stamp = file_stamp(self._degraded_path)
        if stamp == self._stamps.get("degraded"):
            return
        self._stamps["degraded"] = stamp
        data = self.store.read_json(self._degraded_path) or {}
        for side in SIDES:
            down = bool(data.get(side)) if isinstance(data, dict) else False
            if down != self._degraded[side]:
                self._degraded[side] = down
                self._publish(side)

    def _publish_all(self) -> None:
        for side in self._settings:
            self._publish(side)

    def _rules_of_side(self, side: str) -> SidePolicy | None:
        """The side's rules compiled, once; None while it has neither rules nor blocks (conda's versions need
        py-rattler, loaded only then)."""
        rules = self._rules.get(side)
        if rules is not None:
            return rules
        settings = self._settings.get(side)
        if settings is None:
            return None
        if side == "pypi":
            rules = PypiPolicy(settings)
        else:
            if not self.blocks.get(side) and _without_rules(settings):
                return None
            from pkgcache.policy.conda import CondaPolicy

            rules = CondaPolicy(settings)
        self._rules[side] = rules
        return rules

    def _publish(self, side: str) -> None:
        if side not in self._settings:
            return
        rules = self._rules_of_side(side)
        policy: SidePolicy | None = rules
        try:
            if rules is not None and self.blocks.get(side):
                policy = rules.with_blocks(self.blocks[side])
        except ValueError as exc:  # a block conda cannot read (written by hand): the others stay in force
            log.error("a %s block cannot be used: %s", side, exc)
            assert rules is not None
            policy = rules.with_blocks(b for b in self.blocks[side] if _usable(rules, b))
        if policy is not None and policy.is_empty:
            policy = None
        gate = SideGate(side, policy, self.offline, self._degraded.get(side, False))
        previous = self.sides.get(side)
        self.sides[side] = gate
        if previous is not None and previous.fingerprint == gate.fingerprint:
            return
        for listener in self._listeners[side]:
            listener(gate)

    # --- what the operator sees ---

    def _probing(self, side: str) -> bool:
        pool = self._pools.get(side)  # held on the primary only: the replicas send nothing upstream
        return pool is not None and pool.held

    def status(self) -> dict[str, object]:
        """For `/-/status`, the page at / and `/metrics`."""
        return {
            side: {
                "rules": _rules_of(gate.policy),
                "blocks": [block.as_json() for block in self.blocks.get(side, ())],
                "fingerprint": gate.fingerprint,
                "offline": gate.offline,
                "degraded": gate.degraded,
                # The primary asks the resting upstreams whether they are back (their pool is held meanwhile).
                "probing": gate.degraded and self._probing(side),
                "filtering": not gate.passes_everything,
            }
            for side, gate in self.sides.items()
        }


def _without_rules(settings: PolicySettingsBase) -> bool:
    return not (settings.min_release_age or settings.deny or settings.allow_only)


def _rules_of(policy: SidePolicy | None) -> list[str]:
    """The rules in words, without the blocks (`describe` lists those last; they are shown apart)."""
    if policy is None:
        return []
    lines = policy.describe()
    return lines[: len(lines) - len(policy.blocks)]


def _usable(rules: SidePolicy, block: Block) -> bool:
    try:
        rules.compile_block(block)
    except ValueError:
        return False
    return True


GATE_KEY = web.AppKey("gate", Gate)
