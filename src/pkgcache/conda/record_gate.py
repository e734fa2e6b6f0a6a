"""The conda side's predicate for the filter layer (filtered_channels.py), made from the gate (gate/state.py).

Two filters, as on the PyPI side: the supply-chain policy (a refused package is left out of repodata and shards
and answered 403 with the policy's message; its age is the record's timestamp, else when pkgcache first saw it),
then the offline view (a package the cache does not hold is left out and answered 404).

What a subdir's repodata is filtered by is a `FilterJob` (repodata_filter.py): plain data, so the filtering may run
in a process of its own. A package asked for directly is first checked against the blocks by its file name alone
(no repodata needed: a block is in force before any filtered repodata is made), then against the refusals the
filtering recorded.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

from pkgcache.conda.cached_channels import ChannelPaths
from pkgcache.conda.channels import Channel
from pkgcache.conda.repodata_filter import FilterJob
from pkgcache.gate.first_seen import FirstSeen
from pkgcache.gate.misses import not_held
from pkgcache.gate.state import SideGate

if TYPE_CHECKING:  # py-rattler is imported only where a conda policy is in force (gate/state.py)
    from pkgcache.policy.conda import CondaPolicy

PACKAGE_SUFFIXES = (".conda", ".tar.bz2")


class GateRecords:
    """A `RecordPredicate` for one side's gate at one moment."""

    def __init__(self, gate: SideGate, paths: ChannelPaths) -> None:
        policy: CondaPolicy | None = gate.policy  # type: ignore[assignment]
        self.policy = policy
        self.paths = paths
        self.fingerprint = gate.fingerprint
        self.passes_everything = gate.passes_everything
        self.offline = gate.view_offline
        self.never_fetches = gate.offline
        self.ages_matter = bool(policy is not None and policy.settings.min_release_age)
        # A package its index does not list has no record for the filtering to judge: judged by its file name.
        self.judges_unlisted = policy is not None and not policy.is_empty
        # Blocks alone, to judge a package by its file name before any repodata is read.
        self._blocks = type(policy)(blocks=policy.blocks) if policy is not None and policy.blocks else None
        self._held: dict[str, tuple[int, frozenset[str]]] = {}  # subdir folder -> (its mtime, package files)

    def subdir_stamp(self, channel: Channel, subdir: str) -> str:
        """What, besides the fingerprint, the filtered repodata of a subdir depends on: the packages held, offline."""
        if not self.offline:
            return ""
        held = self.held(channel, subdir)
        return hashlib.sha256("\n".join(sorted(held)).encode()).hexdigest()[:12]

    def held(self, channel: Channel, subdir: str) -> frozenset[str]:
        """The package files the cache holds in a subdir (listed again only when the folder changed; blocking)."""
        folder = self.paths.path(channel, subdir)
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return frozenset()
        known = self._held.get(str(folder))
        if known is not None and known[0] == mtime:
            return known[1]
        with os.scandir(folder) as entries:
            names = frozenset(e.name for e in entries if e.name.endswith(PACKAGE_SUFFIXES) and e.is_file())
        self._held[str(folder)] = (mtime, names)
        return names

    def forget_held(self) -> None:
        """List the packages held again when next asked, whatever the folders' mtimes say."""
        self._held.clear()

    def job(self, channel: Channel, subdir: str, first_seen: FirstSeen | None) -> FilterJob:
        """What the subdir's repodata is to be filtered by, now."""
        policy = self.policy
        settings: dict[str, Any] | None = None
        if policy is not None:
            settings = policy.settings.model_dump(
                mode="json", by_alias=True, include=set(type(policy.settings).model_fields) & POLICY_KEYS
            )
        return FilterJob(
            channel=channel.path,
            subdir=subdir,
            now=time.time(),
            policy_settings=settings,
            blocks=tuple(block.as_json() for block in policy.blocks) if policy is not None else (),
            policy_fingerprint=policy.fingerprint if policy is not None else "",
            held=self.held(channel, subdir) if self.offline else None,
            never_fetches=self.never_fetches,
            first_seen=dict(first_seen.files) if first_seen is not None else {},
            first_seen_since=first_seen.since if first_seen is not None else None,
        )

    def quick_refusal(self, channel: Channel, subdir: str, filename: str) -> tuple[int, str] | None:
        """A refusal known from the file name alone: a block of its name and version, or (offline) not held."""
        if self._blocks is not None:
            verdict = self._blocks.check_file(channel.path, subdir, filename)
            if not verdict.allowed:
                return 403, verdict.message
        if self.offline and not self.paths.path(channel, subdir, filename).is_file():
            return not_held(f"{channel.path}/{subdir}/{filename}", configured_offline=self.never_fetches)
        return None

    def unlisted_refusal(self, channel: Channel, subdir: str, filename: str) -> tuple[int, str] | None:
        """The refusal of a package its channel's index does not list (so no filtering judged it), by what its
        file name says, with no release time (policy/conda.py, `check_unlisted`); None when allowed."""
        if self.policy is None:
            return None
        verdict = self.policy.check_unlisted(channel.path, subdir, filename)
        return None if verdict.allowed else (403, verdict.message)


# The policy keys a FilterJob carries (the section holds others: upstreams, channels...).
POLICY_KEYS = frozenset({"min_release_age", "min_release_age_exempt", "unknown_age", "deny", "allow", "allow_only"})
