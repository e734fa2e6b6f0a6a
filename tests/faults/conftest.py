"""Fixtures of the fault suite: the conda channels it serves, and a scenario runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conda_support import SUBDIR, Channels
from tests.faults.harness import FaultChannels, FaultRun, make_fault_channels
from tests.faults.scenarios import Scenario
from tests.support import BackgroundLoop


@pytest.fixture(scope="session")
def fault_channels(conda_channels: Channels, tmp_path_factory: pytest.TempPathFactory) -> FaultChannels:
    """The session's two channels, copied, with every index file a channel can have."""
    root = tmp_path_factory.mktemp("fault-channels")
    return make_fault_channels(conda_channels.main, conda_channels.forge, root, SUBDIR)


@pytest.fixture
def fault_run(
    bg_loop: BackgroundLoop, tmp_path: Path, fault_channels: FaultChannels
) -> Iterator[Callable[..., FaultRun]]:
    """fault_run(scenario, **upstream_settings): a FaultRun to use as a context manager."""

    def make(scenario: Scenario, **upstream_settings: Any) -> FaultRun:
        return FaultRun(scenario, bg_loop, tmp_path / "data", fault_channels, upstream_settings)

    yield make
