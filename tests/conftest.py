"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cache_service import RunningCache, cache_settings, start_cache
from tests.conda_support import Channels
from tests.fakes.conda_channel import build_channel
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.fakes.dists import sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop
from tests.tier_support import TierBuilder

# --- fake upstreams ---


@pytest.fixture(scope="session")
def bg_loop() -> Iterator[BackgroundLoop]:
    """One event loop in a thread for every async fake of the session."""
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture
def official_upstream(bg_loop: BackgroundLoop) -> Iterator[OfficialLikeUpstream]:
    """OfficialLikeUpstream serving sample_dists(); index at .index_url, files on .files."""
    server = OfficialLikeUpstream(sample_dists())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.fixture
def tuna_upstream(bg_loop: BackgroundLoop) -> Iterator[TunaLikeUpstream]:
    """TunaLikeUpstream serving sample_dists(), with its default (strict) firewall."""
    server = TunaLikeUpstream(sample_dists())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


# --- pkgcache under test ---


@pytest.fixture
def make_cache(bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[Callable[..., RunningCache]]:
    """Start pkgcache in-process against the given upstreams: make_cache([url, ...], pypi={...}, ...)."""
    started: list[RunningCache] = []

    def make(pypi_upstreams: list[Any], **sections: dict[str, Any]) -> RunningCache:
        data_dir = tmp_path / f"data-{len(started)}"
        cache = start_cache(bg_loop, cache_settings(data_dir, pypi_upstreams, **sections))
        started.append(cache)
        return cache

    yield make
    for cache in started:
        cache.stop()


@pytest.fixture
def tier_builder(make_cache: Callable[..., RunningCache], bg_loop: BackgroundLoop) -> Iterator[TierBuilder]:
    """Tiers of pkgcache: tier_builder.parent(...), .wire(parent.url), .child([pypi_parent(wire.url)], ...).
    The Wires stop when the test ends, then the pkgcaches."""
    builder = TierBuilder(make_cache, bg_loop)
    yield builder
    builder.stop_wires()


# --- conda channels and fake conda upstreams ---


@pytest.fixture(scope="session")
def conda_channels(tmp_path_factory: pytest.TempPathFactory) -> Channels:
    """Two real channels built once: a plain one (.zst and .bz2 indexes) and a sharded one."""
    root = tmp_path_factory.mktemp("conda-channels")
    main_pkgs = build_channel(root / "main", write_bz2=True)
    forge_pkgs = build_channel(root / "forge", sharded=True)
    return Channels(root / "main", root / "forge", main_pkgs, forge_pkgs)


@pytest.fixture
def anaconda_upstream(bg_loop: BackgroundLoop, conda_channels: Channels) -> Iterator[AnacondaLikeUpstream]:
    """anaconda.com-like: pkgs/main on one host, conda-forge (sharded) on another."""
    upstream = AnacondaLikeUpstream({"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge})
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


@pytest.fixture
def conda_mirror(bg_loop: BackgroundLoop, conda_channels: Channels) -> Iterator[MirrorLikeUpstream]:
    """TUNA-like: both roots under /anaconda/ on one host, repodata.json only (no .zst, .bz2 or shards)."""
    upstream = MirrorLikeUpstream(
        {"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge}, only_json=True
    )
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())
