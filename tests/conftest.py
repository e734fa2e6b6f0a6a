"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cache_service import RunningCache, cache_settings, start_cache
from tests.fakes.dists import sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop

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
