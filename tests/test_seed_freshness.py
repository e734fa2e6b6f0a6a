"""`pkgcache seed` resolves against current pages and repodata, not the stale copies pkgcache serves other clients
while it revalidates them: the weekly routine (seed outside, export --since last, import inside) brings this
week's releases. Each page or index file is revalidated once per seed; with no upstream, the seed works from the
cache and says it did.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cache_service import CacheProcess, cache_settings, start_cache
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.dists import sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.fakes.server import RecordedRequest
from tests.kit_support import CHANNELS, UNREACHABLE_PYPI, cached_names, pkgcache, write, write_config
from tests.support import BackgroundLoop, http_get

NEW_RELEASE = {"alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz"}
WEEK = 7 * 24 * 3600


@pytest.fixture
def week1_upstream(bg_loop: BackgroundLoop) -> Iterator[OfficialLikeUpstream]:
    """The mirror before alpha 2.0 was released (it gains it with `add_dist`)."""
    server = OfficialLikeUpstream([d for d in sample_dists() if d.filename not in NEW_RELEASE])
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def age_cached_indexes(data: Path, seconds: float) -> None:
    """Make every cached page and conda index file `seconds` older, as a week between two seeds would."""
    for page in (data / "pypi" / "simple").glob("*/page.json"):
        document = json.loads(page.read_text())
        document["fetched_at"] -= seconds
        page.write_text(json.dumps(document))
    for sidecar in (data / "conda").rglob("*.meta"):
        document = json.loads(sidecar.read_text())
        document["fetched_at"] -= seconds
        sidecar.write_text(json.dumps(document))


def page_requests(upstream: OfficialLikeUpstream, project: str) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.path.endswith(f"/simple/{project}/")]


@pytest.mark.parametrize("requirement", ["alpha", "alpha==2.0"])
def test_the_weekly_seed_resolves_against_revalidated_pages_and_brings_the_new_release(
    tmp_path: Path, week1_upstream: OfficialLikeUpstream, requirement: str
) -> None:
    config = write_config(tmp_path, [week1_upstream.index_url])
    data = tmp_path / "outside"
    week1 = write(tmp_path, "week1.in", "alpha\n")
    first = pkgcache("seed", "--config", config, "--data-dir", data, "--python", "3.11", "--no-progress", week1)
    assert first.returncode == 0, first.stderr
    assert cached_names(data, "pypi/files/alpha") == {"alpha-1.0-py3-none-any.whl"}

    # A week later: the mirror has alpha 2.0, and every page pkgcache keeps is past its time-to-live.
    for dist in sample_dists():
        if dist.filename in NEW_RELEASE:
            week1_upstream.add_dist(dist)
    age_cached_indexes(data, WEEK)
    week1_upstream.reset_log()

    week2 = write(tmp_path, "week2.in", requirement + "\n")
    second = pkgcache("seed", "--config", config, "--data-dir", data, "--python", "3.11", "--no-progress", week2)

    assert second.returncode == 0, second.stderr
    assert "alpha-2.0-py3-none-any.whl" in cached_names(data, "pypi/files/alpha")
    assert {"beta-1.1-py3-none-any.whl", "delta_pkg-3.0-py3-none-any.whl"} <= cached_names(data, "pypi/files")
    # The page was revalidated (a conditional request) once, before uv read it, not once per request.
    revalidations = page_requests(week1_upstream, "alpha")
    assert len(revalidations) == 1, [r.path for r in week1_upstream.requests]
    assert revalidations[0].headers.get("If-None-Match") or revalidations[0].headers.get("If-Modified-Since")
    assert "cached copies" not in second.stderr


def test_with_no_upstream_the_seed_works_from_the_cache_and_says_it_used_cached_pages(
    tmp_path: Path, official_upstream: OfficialLikeUpstream
) -> None:
    data = tmp_path / "outside"
    wanted = write(tmp_path, "wanted.in", "alpha\n")
    online = write_config(tmp_path / "online", [official_upstream.index_url])
    first = pkgcache("seed", "--config", online, "--data-dir", data, "--python", "3.11", "--no-progress", wanted)
    assert first.returncode == 0, first.stderr
    age_cached_indexes(data, WEEK)

    cut_off = write_config(tmp_path / "cut-off", [UNREACHABLE_PYPI])
    again = pkgcache("seed", "--config", cut_off, "--data-dir", data, "--python", "3.11", "--no-progress", wanted)

    assert again.returncode == 0, again.stderr
    assert "0 failed" in again.stderr
    assert "resolved against pkgcache's cached copies (no upstream could revalidate them)" in again.stderr
    assert "the page of alpha" in again.stderr


def test_conda_seeding_solves_against_revalidated_repodata(
    tmp_path: Path, conda_channels: Channels, bg_loop: BackgroundLoop
) -> None:
    # pkgs/main as a mirror serves it (repodata.json only); in week 1 its repodata does not list libfoo 1.1 yet.
    channel = tmp_path / "main"
    shutil.copytree(conda_channels.main, channel)
    repodata_path = channel / SUBDIR / "repodata.json"
    full = repodata_path.read_text()
    week1 = json.loads(full)
    for section in ("packages", "packages.conda"):
        week1[section] = {k: v for k, v in week1.get(section, {}).items() if not k.startswith("libfoo-1.1-")}
    repodata_path.write_text(json.dumps(week1))
    mirror = MirrorLikeUpstream({"pkgs/main": channel}, only_json=True)
    bg_loop.run(mirror.start())
    try:
        config = write_config(tmp_path, [UNREACHABLE_PYPI], [f"{mirror.url}/anaconda/"])
        data = tmp_path / "outside"
        env = write(tmp_path, "environment.yml", "name: t\nchannels:\n  - pkgs/main\ndependencies:\n  - libfoo\n")
        args = ("seed", "--config", config, "--data-dir", data, "--platform", SUBDIR, "--no-progress", env)
        first = pkgcache(*args)
        assert first.returncode == 0, first.stderr
        # The mirror has no shards and no .zst: the 404s for them are its answer, not worth a warning.
        assert "failed: not found" not in first.stderr
        assert cached_names(data, "conda/pkgs/main") == {"libfoo-1.0-h1_0.tar.bz2"}

        repodata_path.write_text(full)  # the mirror gains libfoo 1.1
        age_cached_indexes(data, WEEK)
        mirror.reset_log()
        second = pkgcache(*args)
    finally:
        bg_loop.run(mirror.stop())

    assert second.returncode == 0, second.stderr
    assert "libfoo-1.1-h1_0.conda" in cached_names(data, "conda/pkgs/main")
    assert mirror.count(f"/{SUBDIR}/repodata.json", "GET") == 1
    assert "cached copies" not in second.stderr


def test_the_revalidation_header_is_honoured_by_every_worker_once_and_client_cache_control_is_not(
    tmp_path: Path, official_upstream: OfficialLikeUpstream
) -> None:
    data = tmp_path / "data"
    server = CacheProcess(data, "--pypi-upstream", official_upstream.index_url, "--workers", "2")
    try:
        page = f"{server.url}/pypi/simple/alpha/"
        assert http_get(page).status == 200
        official_upstream.reset_log()
        # pip sends max-age=0 on every page request: a fresh page is served from the cache all the same.
        for _ in range(4):
            answer = http_get(page, {"Cache-Control": "max-age=0"})
            assert answer.headers["x-pkgcache-cache"] == "hit"
        assert page_requests(official_upstream, "alpha") == []
        time.sleep(1.1)  # older than the floor below which a page is not revalidated again
        # Whichever worker takes them, the requests asking for revalidation cost one upstream request.
        started = time.monotonic()
        answers = [http_get(page, {"X-Pkgcache-Revalidate": "1"}) for _ in range(4)]
        within_floor = time.monotonic() - started < 1.0
    finally:
        server.terminate()
    assert [a.status for a in answers] == [200] * 4
    assert answers[0].headers["x-pkgcache-cache"] == "miss"
    assert len(page_requests(official_upstream, "alpha")) == 1 if within_floor else 2


def test_a_404_for_an_optional_index_file_is_no_warning_and_a_mirror_that_fails_still_is(
    tmp_path: Path, conda_channels: Channels, bg_loop: BackgroundLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pkgcache")
    mirror = MirrorLikeUpstream({"pkgs/main": conda_channels.main}, only_json=True)
    bg_loop.run(mirror.start())
    conda = {"upstreams": [f"{mirror.url}/anaconda/"], "channels": CHANNELS}
    cache = start_cache(bg_loop, cache_settings(tmp_path / "data", [UNREACHABLE_PYPI], conda=conda))
    try:
        # No shards upstream: pkgcache makes them from the repodata.
        assert cache.get(f"/conda/pkgs/main/{SUBDIR}/repodata_shards.msgpack.zst").status == 200
        bg_loop.run(mirror.stop())
        assert cache.get("/conda/pkgs/main/noarch/repodata.json").status >= 500
    finally:
        cache.stop()
    downloads = [r for r in caplog.records if r.getMessage().startswith("download of ")]
    warned = [r.getMessage() for r in downloads if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("download of repodata.json failed"), warned
    assert any(r.getMessage().startswith("download of repodata_shards.msgpack.zst failed") for r in downloads)


def test_files_pkgcache_fetched_for_the_resolver_count_as_fetched_not_as_already_cached(
    tmp_path: Path, bg_loop: BackgroundLoop
) -> None:
    # A mirror without metadata that ignores Range: pkgcache fetches each wheel whole when uv asks for its metadata,
    # during the resolution, and the seed then finds it on disk. On an empty data directory, that is this run's
    # fetch: the summary said "0 fetched (0 B), N already cached". (Not told by mtime: it is the mirror's.)
    mirror = TunaLikeUpstream(sample_dists(), strict_ua=False)
    mirror.honour_ranges = False
    bg_loop.run(mirror.start())
    try:
        config = write_config(tmp_path, [mirror.index_url])
        data = tmp_path / "fresh"
        wanted = write(tmp_path, "wanted.in", "alpha==2.0\n")
        seed = ("seed", "--config", config, "--data-dir", data, "--python", "3.11", "--no-progress", wanted)
        first = pkgcache(*seed)
        assert first.returncode == 0, first.stderr
        wheels = {"alpha-2.0-py3-none-any.whl", "beta-1.1-py3-none-any.whl", "delta_pkg-3.0-py3-none-any.whl"}
        assert wheels <= cached_names(data, "pypi/files")
        fetched_for_metadata = [r.path for r in mirror.requests if r.path.endswith(".whl")]
        assert fetched_for_metadata, "the resolver's metadata reads fetched no wheel: the test shows nothing"
        summary = _summary(first.stderr)
        assert summary["already cached"] == 0 and summary["fetched"] >= len(wheels), first.stderr
        assert not summary["fetched bytes"].startswith("0 B"), first.stderr

        second = pkgcache(*seed)
        assert second.returncode == 0, second.stderr
        again = _summary(second.stderr)
        assert again["fetched"] == 0 and again["already cached"] == summary["fetched"], second.stderr
    finally:
        bg_loop.run(mirror.stop())


def _summary(stderr: str) -> dict[str, Any]:
    found = re.search(r"seed: (\d+) fetched \(([^)]*)\), (\d+) already cached", stderr)
    assert found is not None, stderr
    return {"fetched": int(found[1]), "fetched bytes": found[2], "already cached": int(found[3])}
