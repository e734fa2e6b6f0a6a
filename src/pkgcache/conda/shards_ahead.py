"""Shards made ahead: the subdirs named in `[conda] prebuild_shards` have their sharded repodata before any
client asks for it.

A first sharded solve of a subdir waits for its shards, which cannot be made before its whole repodata has come
from the mirror: against a mirror with no shards (all of them), that first solve can at best tie with one reading
repodata.json.zst (bench/analysis.md, table 9). Naming a subdir here moves that wait to the service's start: the
primary asks its own conda chain for the subdir's shard index, exactly as a client's request would (so the
repodata is fetched, the shards made and the index kept by the same layers), then again every index time-to-live,
which revalidates the repodata and rebuilds the shards in the background when it changed. So the subdir stays
ready, for clients and for a link that goes down. It costs what a client's request would: the repodata's
download whenever it changes, whether or not anyone asks; hence off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from pkgcache.conda.channels import SHARD_INDEX
from pkgcache.conda.source import ChannelSource
from pkgcache.conda_subdirs import KNOWN_SUBDIRS
from pkgcache.config import CondaConfig

log = logging.getLogger(__name__)

# However short the index time-to-live, the subdirs are looked at no more often than this.
MIN_INTERVAL = 60.0


def shards_made_ahead(
    channels: ChannelSource, conda: CondaConfig
) -> Callable[[web.Application], AsyncIterator[None]] | None:
    """An aiohttp cleanup context keeping the configured subdirs' shards ready (None when none is configured)."""
    targets = _targets(conda.prebuild_shards)
    if not targets:
        return None
    every = max(conda.index_ttl, MIN_INTERVAL)

    async def keeping(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(_keep_ready(channels, targets, every))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return keeping


def _targets(entries: list[str]) -> list[tuple[str, str, str]]:
    """(root, name, subdir) of each entry; a subdir conda does not know is left out, and said so."""
    targets = []
    for entry in entries:
        channel, _, subdir = entry.rpartition("/")
        root, _, name = channel.partition("/")
        if subdir not in KNOWN_SUBDIRS:
            log.error(
                "prebuild_shards: %r names no conda subdir (%s): left out", entry, ", ".join(sorted(KNOWN_SUBDIRS))
            )
            continue
        targets.append((root, name, subdir))
    return targets


async def _keep_ready(channels: ChannelSource, targets: list[tuple[str, str, str]], every: float) -> None:
    failing: set[tuple[str, str, str]] = set()  # said once, not every round (a mirror down, or offline)
    while True:
        for target in targets:
            error = await make_ready(channels, *target)
            _say(target, error, failing)
        await asyncio.sleep(every)


async def make_ready(channels: ChannelSource, root: str, name: str, subdir: str) -> Exception | None:
    """Ask for the subdir's shard index as a client would; None when it could be had, else why not (the next
    round tries again)."""
    try:
        found = await channels.index_file(channels.channel(root, name), subdir, SHARD_INDEX)
        if found.download is not None:  # passed through from an upstream that has shards: let it finish
            await found.download.wait_finished()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return exc
    return None


def _say(target: tuple[str, str, str], error: Exception | None, failing: set[tuple[str, str, str]]) -> None:
    """A warning when a subdir's shards stop being made ahead, a line when they are again; silence meanwhile."""
    where = "/".join(target)
    if error is None:
        if target in failing:
            failing.discard(target)
            log.info("shards of %s made ahead again", where)
    elif target not in failing:
        failing.add(target)
        log.warning("shards of %s not made ahead (tried again every round, said once): %s", where, error)
    else:
        log.debug("shards of %s still not made ahead: %s", where, error)
