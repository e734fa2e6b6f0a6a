"""`Gate`: each side's policy (rules and blocks) and offline state, as one worker sees it, kept current.

Every worker holds one. It compiles each side's rules once, lays the blocks of `gate/blocks.json` over them, and
tells the side's filter layer whenever what it filters by changes (`subscribe`). A block or unblock is made on the
primary (the admin API), which puts it in force in its own gate, then advances the blocks' generation in shared
memory and wakes the other workers (workers/gate_sync.py); each reads the file again and says it has, and the API
answers once every live worker has: when it returns, no worker judges a request by the blocks before it. About
twice a second the gate also looks at the blocks file's stamp (a file written by hand, or by a command while
nothing answered) and at whether a side's upstreams are all down: the
primary, which talks to them, decides (and probes them while they are: gate/offline.py) and writes
`gate/degraded.json`; the replicas read it.

What the gate holds changes on the event loop only: files are read in threads, and what was read is put in force
back on the loop, one read of the blocks at a time (a read begun before a newer one can never be put in force after
it). What the layers keep made under the previous blocks (filtered pages, repodata) is keyed by the fingerprint of
the predicate they were made under, so a change is seen by the next request.

A side with no rule, no block and no offline view passes everything: its filter layer then costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from pkgcache.workers.gate_sync import GateSync, Straggler

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.5
# How often the primary looks whether every worker has applied a generation, while a block's API call waits; and how
# often a worker looks at the generation where it cannot be woken (no eventfd: workers/gate_sync.py).
FOLLOW_SECONDS = 0.01
# How long a block's API call waits for every worker to have it in force, before it answers naming those that do not.
APPLY_TIMEOUT = 10.0
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

    def __init__(
        self,
        settings: Settings,
        store: CacheStore,
        pools: Mapping[str, UpstreamPool],
        sync: GateSync | None = None,
        worker: int = 0,
    ) -> None:
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
        self._policies: dict[str, SidePolicy | None] = {}  # each side's rules with the blocks in force
        self.sides: dict[str, SideGate] = {}
        # With several workers: the blocks' generation shared with the others, and this worker's number.
        self._sync = sync
        self._worker = worker
        self.blocks_generation = 0  # the generation whose blocks this worker has in force
        self._blocks_turn = asyncio.Lock()  # one read of the blocks put in force at a time
        self._apply_blocks(self.blocks, self._policies_for(self.blocks))

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
        """Read the blocks file for the first time (blocking), before the worker serves anything; BlocksUnreadable
        when it is there but cannot be read whole: a worker has no blocks read before to keep in force, and starting
        without them would serve what they refuse, so it does not start."""
        if self._sync is not None:
            self._sync.joined(self._worker)  # waited for from now on (workers/gate_sync.py)
        generation = self._sync.generation() if self._sync is not None else 0
        self._stamps["blocks"] = self.book.stamp()
        blocks = self.book.read_sound()
        self._apply_blocks(blocks, self._policies_for(blocks))
        self._applied(generation)

    def load_blocks(self) -> bool:
        """Read the blocks file if it changed and put them in force (blocking: for a gate no event loop runs, and
        tests); whether it changed."""
        found = self._read_blocks(force=False)
        if found is None:
            return False
        self._apply_blocks(*found)
        return True

    async def reload_blocks(self, force: bool = True) -> bool:
        """Read the blocks file (`force` False: only if its stamp changed) and put them in force; whether it was
        read. The generation seen before the read is then reported as applied."""
        async with self._blocks_turn:
            generation = self._sync.generation() if self._sync is not None else 0
            found = await asyncio.to_thread(self._read_blocks, force)
            if found is not None:
                self._apply_blocks(*found)
            if force:
                self._applied(generation)
            return found is not None

    async def blocks_changed(self, timeout: float = APPLY_TIMEOUT) -> list[Straggler]:
        """The blocks file was just written here (by the admin API): put it in force in this worker, tell the others,
        and wait (within `timeout`) until every live worker has it in force. The workers that have not, if any."""
        await self.reload_blocks()
        if self._sync is None:
            return []
        generation = self._sync.advance()  # after this worker's read: its blocks are at least this generation's
        self._applied(generation)
        self._sync.wake_others(self._worker)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            behind = self._sync.stragglers(generation)
            if not behind or asyncio.get_running_loop().time() >= deadline:
                return behind
            await asyncio.sleep(FOLLOW_SECONDS / 2)

    def _read_blocks(self, force: bool) -> tuple[dict[str, tuple[Block, ...]], dict[str, SidePolicy | None]] | None:
        """The blocks file and each side's policy with them (blocking), or None when the file has not changed since
        the last read (`force`: read anyway) or cannot be read whole (the blocks read last stay in force)."""
        stamp = self.book.stamp()
        if not force and "blocks" in self._stamps and stamp == self._stamps["blocks"]:
            return None
        self._stamps["blocks"] = stamp
        try:
            blocks = self.book.read_sound()
        except BlocksUnreadable as exc:
            # A damaged file never lifts a block (at start, see load_blocks_at_start).
            log.error("%s; the blocks read before stay in force", exc)
            return None
        return blocks, self._policies_for(blocks)

    def _applied(self, generation: int) -> None:
        self.blocks_generation = max(self.blocks_generation, generation)
        if self._sync is not None:
            self._sync.applied(self._worker, self.blocks_generation)

    async def follow(self) -> None:
        """With several workers: read the blocks again whenever their generation moves, until cancelled. Woken by the
        primary (workers/gate_sync.py), and looking every WATCH_SECONDS besides; nothing on the request path."""
        sync = self._sync
        if sync is None:
            return
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        fd = sync.wake_fd(self._worker)
        if fd is not None:
            loop.add_reader(fd, woken.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), WATCH_SECONDS if fd is not None else FOLLOW_SECONDS)
                woken.clear()
                sync.woken(self._worker)
                if sync.generation() != self.blocks_generation:
                    try:
                        await self.reload_blocks()
                    except Exception:  # the blocks in force stay; the API names this worker as behind
                        log.exception("the gate could not read the blocks file")
                        await asyncio.sleep(WATCH_SECONDS)
        finally:
            if fd is not None:
                loop.remove_reader(fd)

    async def watch(self) -> None:
        """Look at the blocks file and the upstreams' health about twice a second, until cancelled."""
        while True:
            try:
                await self.reload_blocks(force=False)
                if await asyncio.to_thread(self.import_seen):
                    self._imported()
                if self.primary:
                    await self._decide_degraded()
                else:
                    self._apply_degraded(await asyncio.to_thread(self._degraded_file))
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
        self._apply_degraded(self._degraded_file())

    def _degraded_file(self) -> dict[str, bool] | None:
        """Which sides the primary says are down (blocking), or None when its file has not changed."""
        stamp = file_stamp(self._degraded_path)
        if stamp == self._stamps.get("degraded"):
            return None
        self._stamps["degraded"] = stamp
        data = self.store.read_json(self._degraded_path) or {}
        return {side: bool(data.get(side)) if isinstance(data, dict) else False for side in SIDES}

    def _apply_degraded(self, found: dict[str, bool] | None) -> None:
        for side, down in (found or {}).items():
            if down != self._degraded[side]:
                self._degraded[side] = down
                self._publish(side)

    def _publish_all(self) -> None:
        for side in self._settings:
            self._publish(side)

    def _apply_blocks(self, blocks: dict[str, tuple[Block, ...]], policies: dict[str, SidePolicy | None]) -> None:
        self.blocks = blocks
        self._policies = policies
        self._publish_all()

    def _policies_for(self, blocks: Mapping[str, tuple[Block, ...]]) -> dict[str, SidePolicy | None]:
        """Each served side's rules with these blocks (may run in a thread: it changes nothing in force)."""
        return {side: self._policy_for(side, blocks.get(side, ())) for side in self._settings}

    def _rules_of_side(self, side: str, blocks: tuple[Block, ...]) -> SidePolicy | None:
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
            if not blocks and _without_rules(settings):
                return None
            from pkgcache.policy.conda import CondaPolicy

            rules = CondaPolicy(settings)
        self._rules[side] = rules
        return rules

    def _policy_for(self, side: str, blocks: tuple[Block, ...]) -> SidePolicy | None:
        rules = self._rules_of_side(side, blocks)
        policy: SidePolicy | None = rules
        try:
            if rules is not None and blocks:
                policy = rules.with_blocks(blocks)
        except ValueError as exc:  # a block conda cannot read (written by hand): the others stay in force
            log.error("a %s block cannot be used: %s", side, exc)
            assert rules is not None
            policy = rules.with_blocks(b for b in blocks if _usable(rules, b))
        if policy is not None and policy.is_empty:
            policy = None
        return policy

    def _publish(self, side: str) -> None:
        if side not in self._settings:
            return
        gate = SideGate(side, self._policies.get(side), self.offline, self._degraded.get(side, False))
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
