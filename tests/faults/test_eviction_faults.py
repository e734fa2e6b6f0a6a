"""Eviction at the worst moment never fails a valid request: a file removed between its lookup and its open is a
miss that fetches it again, and a download's followers hold the file they read as senders of cached files do; and an
offline instance evicts nothing it could not fetch again.

Each race is made to happen: a hook removes the file, as eviction does (`FileUse.remove_if_idle`), at the exact
point between the two steps, instead of hoping load finds the window (QA storage report, items 3a, 3b and 4).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pkgcache.conda.cached_channels import CachedChannels
from pkgcache.pypi.cached_index import CachedIndex
from pkgcache.storage.downloads import Download, Downloader
from pkgcache.storage.file_use import FileUse
from tests.cache_service import RunningCache
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_upstreams import AnacondaLikeUpstream
from tests.fakes.dists import build_wheel
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.support import BackgroundLoop

WHEEL = build_wheel("racy", "1.0", payload_size=300 * 1024)  # sent by sendfile, not read whole
URL = f"/pypi/files/{WHEEL.normalized}/{WHEEL.filename}"
EVICT_ANYTHING_IDLE = float("inf")  # eviction's "not served since it started", for a file served just now


@pytest.fixture
def upstream(bg_loop: BackgroundLoop) -> Iterator[OfficialLikeUpstream]:
    server = OfficialLikeUpstream([WHEEL])
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def _evict(use: FileUse, path: Path) -> bool:
    """What eviction does to a package file it picked: unlink it unless something reads it."""
    return use.remove_if_idle(path, idle_since=EVICT_ANYTHING_IDLE)


def _evict_after_the_first_commit(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[bool]]:
    """The first file committed is evicted right after its rename, before the download ends. The event is set once
    that is done; the list says whether the eviction removed it."""
    committed, evicted = threading.Event(), []
    real_commit = Downloader._commit

    def commit_then_evict(self: Downloader, download: Download) -> int:
        added = real_commit(self, download)
        if not committed.is_set():
            evicted.append(_evict(self.store.file_use, download.final_path))
            committed.set()
        return added

    monkeypatch.setattr(Downloader, "_commit", commit_then_evict)
    return committed, evicted


def test_a_follower_arriving_after_the_rename_of_a_file_evicted_at_once_gets_it_whole(
    upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA 3a: a client following a download opened the file only after it was renamed into place, and eviction had
    taken it meanwhile: 200, then a cut body ("cutting ... short: No such file"). It must get the file whole."""
    committed, evicted = _evict_after_the_first_commit(monkeypatch)
    real_wait_started = Download.wait_started
    delayed = []

    async def wait_started_until_committed(self: Download) -> None:
        await real_wait_started(self)
        if not delayed:  # the first client only: it comes to the file once it is in place, and evicted
            delayed.append(self)
            while not committed.is_set():
                await asyncio.sleep(0.01)

    monkeypatch.setattr(Download, "wait_started", wait_started_until_committed)
    cache = make_cache([upstream.index_url])

    answer = cache.get(URL)

    assert evicted == [True]  # nobody had it open: eviction took it
    assert answer.status == 200
    assert hashlib.sha256(answer.body).hexdigest() == WHEEL.sha256
    assert upstream.files.count(WHEEL.filename) == 2  # fetched again, as a miss
    cache.wait_for_downloads_to_end()
    assert (cache.data_dir / "pypi" / "files" / WHEEL.normalized / WHEEL.filename).is_file()


def test_a_file_being_followed_is_not_evicted_under_its_follower(
    upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower reads the file as a sender of a cached file does: marked in use, so eviction leaves it (and does
    not count as freed bytes a reader still holds)."""
    committed, evicted = _evict_after_the_first_commit(monkeypatch)
    cache = make_cache([upstream.index_url])

    answer = cache.get(URL)

    assert committed.is_set() and evicted == [False]
    assert answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == WHEEL.sha256
    assert upstream.files.count(WHEEL.filename) == 1
    assert (cache.data_dir / "pypi" / "files" / WHEEL.normalized / WHEEL.filename).is_file()


def _evict_after_the_next_lookup(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[Path]:
    """The next lookup that finds its file cached has it evicted just after (before the file is opened)."""
    real = getattr(cls, method)
    evicted: list[Path] = []

    async def look_up_then_evict(self: Any, *args: Any) -> Any:
        found = await real(self, *args)
        if isinstance(found, Path) and not evicted:
            assert _evict(FileUse(), found)
            evicted.append(found)
        return found

    monkeypatch.setattr(cls, method, look_up_then_evict)
    return evicted


def test_a_pypi_hit_evicted_before_its_open_is_fetched_again_not_404(
    upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA 3b: a lookup saw the file, eviction removed it, the open failed: 404 "it was removed meanwhile", which
    no installer retries. It is a miss: fetched again."""
    cache = make_cache([upstream.index_url])
    assert cache.get(URL).status == 200
    cache.wait_for_downloads_to_end()
    evicted = _evict_after_the_next_lookup(monkeypatch, CachedIndex, "open_file")

    answer = cache.get(URL)

    assert [path.name for path in evicted] == [WHEEL.filename]
    assert answer.status == 200, answer.body
    assert answer.headers["x-pkgcache-cache"] == "miss"
    assert hashlib.sha256(answer.body).hexdigest() == WHEEL.sha256
    assert upstream.files.count(WHEEL.filename) == 2


def test_a_conda_package_hit_evicted_before_its_open_is_fetched_again_not_404(
    anaconda_upstream: AnacondaLikeUpstream,
    conda_channels: Channels,
    make_cache: Callable[..., RunningCache],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA 3b on the conda side (`blob11-1.0-h0_0.conda 404 cache=hit`): fetched again instead."""
    config = {
        "name": "anaconda-fake",
        "pkgs_url": f"{anaconda_upstream.repo.url}/pkgs/",
        "cloud_url": f"{anaconda_upstream.conda.url}/",
    }
    cache = make_cache(
        ["http://127.0.0.1:9/simple/"], conda={"upstreams": [config], "channels": ["pkgs/main", "cloud/conda-forge"]}
    )
    package = next(pkg for pkg in conda_channels.main_pkgs if pkg.subdir == SUBDIR)
    path = f"/conda/pkgs/main/{SUBDIR}/{package.filename}"
    assert cache.get(path).status == 200
    cache.wait_for_downloads_to_end()
    evicted = _evict_after_the_next_lookup(monkeypatch, CachedChannels, "package")

    answer = cache.get(path)

    assert [found.name for found in evicted] == [package.filename]
    assert answer.status == 200, answer.body
    assert answer.headers["x-pkgcache-cache"] == "miss"
    assert hashlib.sha256(answer.body).hexdigest() == package.sha256
    assert anaconda_upstream.count(f"/{package.filename}") == 2


def test_an_offline_instance_keeps_a_cache_over_its_limit(
    make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    """The service itself: offline, with max_size below what it holds, its start-up maintenance measures and keeps."""
    data_dir = tmp_path / "data-0"  # where make_cache puts its first instance
    wheel = data_dir / "pypi" / "files" / "p" / "p-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"x" * 5000)
    cache = make_cache(["http://127.0.0.1:9/simple/"], server={"offline": True}, cache={"max_size": 1000})
    deadline = time.monotonic() + 10
    while json.loads(cache.get("/-/stats").body)["cache_bytes"] < 5000 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # an eviction would have followed the measure at once
    assert json.loads(cache.get("/-/stats").body)["cache_bytes"] >= 5000
    assert wheel.is_file()
