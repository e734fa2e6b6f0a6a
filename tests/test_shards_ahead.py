"""`[conda] prebuild_shards` rounds: a subdir whose shards cannot be made (its mirror down, or the service offline
with nothing cached) is said once, not every round, and its recovery is said too."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pkgcache.cache_state import CacheState
from pkgcache.conda.shards_ahead import _keep_ready
from pkgcache.conda.source import Lookup
from pkgcache.upstream.pool import UpstreamsUnavailable


class _FlakyChannels:
    """Answers the shard index after failing a given number of times, then fails again after that."""

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.asked = 0

    def channel(self, root: str, name: str) -> tuple[str, str]:
        return root, name

    async def index_file(self, channel: object, subdir: str, filename: str) -> Lookup:
        ok = self.outcomes[min(self.asked, len(self.outcomes) - 1)]
        self.asked += 1
        if not ok:
            raise UpstreamsUnavailable({"mirror": "every upstream failed"})
        return Lookup(CacheState.HIT, Path("index"), None)


def test_a_failing_subdir_is_warned_about_once_and_its_recovery_said(caplog: pytest.LogCaptureFixture) -> None:
    channels = _FlakyChannels([False, False, False, True, True, False])
    caplog.set_level(logging.DEBUG, logger="pkgcache.conda.shards_ahead")

    async def seven_rounds() -> None:
        task = asyncio.get_running_loop().create_task(
            _keep_ready(channels, [("cloud", "conda-forge", "linux-64")], every=0.001)  # type: ignore[arg-type]
        )
        while channels.asked < 7:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(seven_rounds())
    said = [(record.levelname, record.getMessage()) for record in caplog.records]
    warnings = [message for level, message in said if level == "WARNING"]
    assert len(warnings) == 2, said  # the first failure, and the first after the recovery
    assert all("cloud/conda-forge/linux-64 not made ahead" in message for message in warnings)
    assert "every upstream failed" in warnings[0]
    assert [message for level, message in said if level == "INFO"] == [
        "shards of cloud/conda-forge/linux-64 made ahead again"
    ]
    assert sum(level == "DEBUG" for level, _ in said) >= 2  # the repeats, kept out of the log's default level
