"""A parent pkgcache's word on a file a child holds, asked before the child serves it from its cache.

A child (an office) caches what its parent (a central pkgcache) served it, and the parent's policy can change
after that: a block, a deny rule. The parent then leaves the file out of its pages, repodata and shards (or, when
its policy leaves a project page empty, lists every file as refused: FILES_REFUSED_HEADER), and a child's copies of
those come to say so within the child's index_ttl. A cached file the index in force no longer lists is not the
index's to judge, though: a mirror's removed or yanked file stays served as it was checked, which lock files need.
When that index came from a parent, the child asks the parent about the file first (the index layers decide when:
pypi/cached_index.py, conda/cached_channels.py), with a HEAD of the file at the parent:

- a 403 marked as the parent's policy (UpstreamRefused) is the parent's verdict: the child answers its own 403
  with the parent's reason, and remembers it for its index_ttl;
- any other answer (200: the parent serves it; 404: it neither lists nor holds it, as after a removal) is no
  refusal: the cached file is served, and the parent is not asked again about it for the index_ttl;
- a parent that does not answer (down, resting, its upstreams failing) is no verdict: the file is served as it
  was before this check (a parent's stale rules), nothing is remembered, and the pool's rest keeps the next asks
  from waiting on it.

One ask per file at a time (concurrent requests share it). Held by the worker that writes; the workers that only
read hand such a request over to it, so the verdicts live in one place.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import aiohttp

from pkgcache.upstream.pool import Upstream, UpstreamNotFound, UpstreamPool, UpstreamRefused, UpstreamsUnavailable

log = logging.getLogger(__name__)

# Verdicts kept (the oldest forgotten first): each is a file name and a few words.
VERDICTS_KEPT = 100_000
# A verdict is believed for the index_ttl, but at least this long: with index_ttl = 0 a herd of requests for one
# file still costs the parent one ask.
MIN_VERDICT_SECONDS = 1.0

# What the parent said: its reason and node name when it refused, None when it did not.
Verdict = tuple[str, str] | None


class ParentVerdicts:
    """The verdicts of the parent pkgcaches on cached files, asked for when needed and kept for a while."""

    def __init__(self, pool: UpstreamPool, ttl: float) -> None:
        self.pool = pool
        self.ttl = max(ttl, MIN_VERDICT_SECONDS)
        self._known: collections.OrderedDict[str, tuple[float, Verdict]] = collections.OrderedDict()
        self._asking: dict[str, asyncio.Task[Verdict]] = {}
        self.asked = 0
        self.refused = 0

    def parent(self, name: str | None) -> Upstream | None:
        """The upstream of that name, if it is still configured."""
        return None if name is None else self.pool.by_name(name)

    async def heed(self, key: str, upstream: Upstream, url: str) -> None:
        """Raises UpstreamRefused when `upstream` (a parent pkgcache) refuses the file at `url` by its policy, as it
        said within the time-to-live or says now; returns otherwise. `key` names the file among those asked about."""
        known, verdict = self._remembered(key)
        if not known:
            task = self._asking.get(key)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._ask(key, upstream, url))
                self._asking[key] = task
                task.add_done_callback(lambda _: self._asking.pop(key, None))
            verdict = await asyncio.shield(task)
        if verdict is not None:
            reason, node = verdict
            raise UpstreamRefused(reason, node)

    def _remembered(self, key: str) -> tuple[bool, Verdict]:
        """Whether a verdict on the file is in force, and that verdict."""
        known = self._known.get(key)
        if known is None:
            return False, None
        until, verdict = known
        if time.monotonic() < until:
            return True, verdict
        del self._known[key]
        return False, None

    async def _ask(self, key: str, upstream: Upstream, url: str) -> Verdict:
        self.asked += 1

        async def nothing(_: Upstream, __: aiohttp.ClientResponse) -> None:
            return None

        verdict: Verdict = None
        try:
            await self.pool.fetch(lambda candidate: url if candidate is upstream else None, nothing, method="HEAD")
        except UpstreamRefused as exc:
            verdict = (exc.reason, exc.node)
            self.refused += 1
            log.info("%s refuses %s by its policy: not served from the cache (%s)", upstream.name, key, exc.reason)
        except UpstreamNotFound:
            pass  # it neither lists nor holds it (a removed file): no refusal
        except UpstreamsUnavailable as exc:
            # No verdict: served as before the check, its rules as they were. Not kept, so asked again once it is
            # back (meanwhile the pool's rest answers at once).
            log.info("%s could not be asked about %s, served from the cache as it is: %s", upstream.name, key, exc)
            return None
        self._known[key] = (time.monotonic() + self.ttl, verdict)
        self._known.move_to_end(key)
        while len(self._known) > VERDICTS_KEPT:
            self._known.popitem(last=False)
        return verdict

    def status(self) -> dict[str, int]:
        return {"parent_asked": self.asked, "parent_refused": self.refused, "parent_verdicts_kept": len(self._known)}
