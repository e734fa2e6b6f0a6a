"""The conda side's way to the mirrors: where each upstream keeps a channel's files, and fetching them.

Every configured upstream lays channels out as the anaconda mirrors do (`<pkgs_url><name>/...` for `pkgs/<name>`,
`<cloud_url><name>/...` for `cloud/<name>`); a shard index may say its shards live elsewhere (`shards_base_url`),
which holds for the upstream that gave that index only, and a repodata (or shard index) that its packages do
(`base_url`, CEP-15): an absolute one holds for that upstream only, a relative one for each. Keeps nothing:
caching is the layers above.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urljoin

from pkgcache.conda.base_url import package_base
from pkgcache.conda.channels import Channel
from pkgcache.config import CondaConfig, CondaUpstream
from pkgcache.storage.sidecars import FETCHED_URL, FileMeta
from pkgcache.upstream.pool import TargetFor, Upstream
from pkgcache.upstream.transfer import Fetcher


class UpstreamChannels:
    """Channel files from the conda upstreams, through one pool."""

    def __init__(self, config: CondaConfig, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._upstreams: dict[str, CondaUpstream] = {upstream.name: upstream for upstream in config.upstreams}

    def target(self, channel: Channel, relative: str) -> TargetFor:
        """Each upstream's URL for a file of a channel (`relative` to the channel's root)."""

        def target(upstream: Upstream) -> str | None:
            config = self._upstreams.get(upstream.name)
            return None if config is None else channel.upstream_url(config) + relative

        return target

    def package_target(
        self,
        channel: Channel,
        subdir: str,
        filename: str,
        base_url: str,
        giver: str | None,
        said_in: str,
        said_at: str | None = None,
    ) -> TargetFor:
        """Each upstream's URL for a package whose subdir's `said_in` (repodata or shard index) from `giver` says
        its packages are at `base_url`: resolved against each upstream's own URL of that file when relative (mirrors
        copy the channel's layout; on `giver`, the URL its copy came from after redirects, `said_at`, when known),
        followed on `giver` only when absolute (the others: beside their repodata)."""

        def target(upstream: Upstream) -> str | None:
            config = self._upstreams.get(upstream.name)
            if config is None:
                return None
            subdir_url = channel.upstream_url(config) + f"{subdir}/"
            from_giver = upstream.name == giver
            file_url = said_at if from_giver and said_at else subdir_url + said_in
            base = package_base(file_url, base_url, from_giver=from_giver)
            return (base or subdir_url) + filename

        return target

    def shards_base(
        self, channel: Channel, subdir: str, index_meta: FileMeta | None
    ) -> Callable[[Upstream], str | None]:
        """Where each upstream keeps this subdir's shards: as its shard index said, else beside it."""
        said = (index_meta.extra.get("upstream_urls", {}) if index_meta else {}).get("shards_base_url") or "./shards/"
        index_upstream = index_meta.upstream if index_meta else None
        fetched_url = index_meta.extra.get(FETCHED_URL) if index_meta else None

        def base(upstream: Upstream) -> str | None:
            config = self._upstreams.get(upstream.name)
            if config is None:
                return None
            subdir_url = channel.upstream_url(config) + f"{subdir}/"
            # An absolute URL belongs to the upstream whose index gave it; other upstreams use their own layout.
            if "://" in said and upstream.name != index_upstream:
                return urljoin(subdir_url, "shards/")
            # A relative one, on that upstream, is relative to where its index came from after redirects.
            index_url = fetched_url if upstream.name == index_upstream and isinstance(fetched_url, str) else None
            return urljoin(index_url or subdir_url, said if said.endswith("/") else said + "/")

        return base


def probe_target(config: CondaConfig) -> TargetFor:
    """What a probe of a resting conda upstream asks for (upstream/pool.py): the noarch repodata of the first
    channel served, which every mirror of that channel has (only its first byte is asked for)."""
    channel = Channel(*config.channels[0].split("/", 1)) if config.channels else None
    upstreams = {upstream.name: upstream for upstream in config.upstreams}

    def target(upstream: Upstream) -> str | None:
        found = upstreams.get(upstream.name)
        if found is None or channel is None:
            return None  # the pool asks for the upstream's root instead
        return channel.upstream_url(found) + "noarch/repodata.json"

    return target
