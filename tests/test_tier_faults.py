"""Tiers when something fails: a child pkgcache over a parent pkgcache whose own mirrors fail, or beside a mirror
that fails (docs/operations.md, "A pkgcache as another pkgcache's upstream").

- The parent's offline view (or a copy it could not revalidate) is not the index: the child asks its next
  upstream, and when none has better, serves it without keeping it as fresh.
- The parent's 5xx about ITS upstreams (`X-Pkgcache-Upstream-Failed`) fails that request over, without resting the
  parent (which would also take the child past the parent's policy, through its own mirror).
- A client's `X-Expected-Sha256` goes to the parent (never to a mirror), so a locked conda install of a package its
  channel dropped works through a tier.
- With a mirror first and the parent second, a file fails over to the parent's own path for it.

The child reaches the parent through tests/test_tiers.py's `Wire`, which records what went between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pkgcache.node_identity import NODE_HEADER
from tests.cache_service import RunningCache
from tests.clients.rattler_client import run_rattler_install
from tests.clients.rattler_locked import run_locked_install
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.fakes.rattler_lock import write_pixi_lock
from tests.fakes.server import FakeServer
from tests.support import BackgroundLoop, agent_of, installed_dists, run_pip_install, run_uv_install, wait_for
from tests.test_conda_removed_packages import _take_out
from tests.tier_support import CHILD, CHILD_AGENT, CLOSED_PYPI, JSON_PAGE, TierBuilder, Wire, conda_parent, pypi_parent

FORGE = "cloud/conda-forge"
CONDA_BOTH = ["pkgs/main", FORGE]
# A literal (these tests also run against code without it), in lower case as an Answer's headers are.
NOT_SERVED = "x-pkgcache-not-served"
EXPECTED = "X-Expected-Sha256"
ALPHA_WHEEL = "alpha-2.0-py3-none-any.whl"
# A literal, not node_identity's name for it: these tests also run against code without it.
UPSTREAM_FAILED_HEADER = "X-Pkgcache-Upstream-Failed"


def _files_on(body: bytes) -> list[str]:
    return sorted(f["filename"] for f in json.loads(body)["files"])


def _child_asked(server: Any, suffix: str) -> list[Any]:
    return [r for r in server.requests if agent_of(r) == CHILD_AGENT and r.path.endswith(suffix)]


@pytest.fixture
def second_mirror(bg_loop: BackgroundLoop) -> Iterator[OfficialLikeUpstream]:
    """A healthy mirror of the same index, the child's own (the parent's mirror is `official_upstream`)."""
    mirror = OfficialLikeUpstream(sample_dists())
    bg_loop.run(mirror.start())
    yield mirror
    bg_loop.run(mirror.stop())


@pytest.fixture
def offline_parent(official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder) -> tuple[RunningCache, Wire]:
    """A parent showing its offline view: it held alpha's page and alpha 2.0's wheel, and its mirror went down."""
    parent = tier_builder.parent(
        [official_upstream.index_url],
        pypi={"index_ttl": 1},
        upstream={"cooldown": 1, "connect_timeout": 1, "first_byte_timeout": 1},
        conda={"enabled": False},
    )
    assert parent.get("/pypi/simple/alpha/").status == 200
    assert parent.get(f"/pypi/files/alpha/{ALPHA_WHEEL}").status == 200
    time.sleep(1.1)
    official_upstream.faults.fail_mode = "reset"
    parent.get("/pypi/simple/beta/")
    wait_for(
        lambda: parent.get("/pypi/simple/alpha/", JSON_PAGE).headers.get("x-pkgcache-cache") == "offline",
        "the parent's offline view",
    )
    return parent, tier_builder.wire(parent.url)


# --- 1. the parent's offline view is not the index ---


def test_a_mirror_second_in_the_child_gives_the_page_the_parents_offline_view_shrank(
    offline_parent: tuple[RunningCache, Wire],
    second_mirror: OfficialLikeUpstream,
    tier_builder: TierBuilder,
    tmp_path: Path,
) -> None:
    _, wire = offline_parent
    child = tier_builder.child([pypi_parent(wire.url), second_mirror.index_url])
    result = run_uv_install(child.index_url, tmp_path / "t", "alpha==1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "t") == {"alpha==1.0"}
    # The parent was asked first and answered its offline view; the child took the page from its mirror.
    (asked,) = wire.to("/pypi/simple/alpha/")
    assert asked.status == 200 and asked.headers["X-Pkgcache-Cache"] == "offline"
    assert _child_asked(second_mirror, "/simple/alpha/")
    # The parent is not rested for it: it answered.
    status = json.loads(child.get("/-/status").body)
    assert next(u for u in status["upstreams"]["pypi"] if u["name"] == "parent")["healthy"] is True


def test_the_parents_offline_view_is_served_for_want_of_better_but_not_kept_once_the_parent_is_back(
    offline_parent: tuple[RunningCache, Wire],
    official_upstream: OfficialLikeUpstream,
    tier_builder: TierBuilder,
    tmp_path: Path,
) -> None:
    parent, wire = offline_parent
    child = tier_builder.child([pypi_parent(wire.url)])
    first = child.get("/pypi/simple/alpha/", JSON_PAGE)
    # No other upstream: the parent's view is served, said to be stale (for a child below) and not fresh at all.
    assert first.status == 200 and _files_on(first.body) == [ALPHA_WHEEL]
    assert first.headers["x-pkgcache-cache"] == "stale" and first.headers["cache-control"] == "max-age=0"
    assert "x-pkgcache-stale-reason" in first.headers
    official_upstream.faults.fail_mode = None
    wait_for(
        lambda: parent.get("/pypi/simple/alpha/", JSON_PAGE).headers.get("x-pkgcache-cache") != "offline",
        "the parent back online",
    )
    # The very next request revalidates before answering: the whole page, and pip finds alpha 1.0.
    asked = len(wire.to("/pypi/simple/alpha/"))
    after = child.get("/pypi/simple/alpha/", JSON_PAGE)
    assert _files_on(after.body) == _files_on(parent.get("/pypi/simple/alpha/", JSON_PAGE).body)
    assert after.headers["x-pkgcache-cache"] == "miss" and len(wire.to("/pypi/simple/alpha/")) == asked + 1
    result = run_pip_install(child.index_url, tmp_path / "t", "alpha==1.0")
    assert result.returncode == 0, result.stdout + result.stderr


def test_conda_the_parents_offline_shard_index_says_so_and_the_child_drops_it_once_the_parent_is_back(
    conda_channels: Channels, tier_builder: TierBuilder, bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    mirror = MirrorLikeUpstream({"conda-forge": conda_channels.forge})
    bg_loop.run(mirror.start())
    try:
        parent = tier_builder.parent(
            CLOSED_PYPI,
            conda={"upstreams": [f"{mirror.url}/anaconda/"], "channels": [FORGE], "index_ttl": 1},
            upstream={"cooldown": 1, "connect_timeout": 1, "first_byte_timeout": 1},
        )

        def rattler(url: str, name: str, spec: str) -> Any:
            return run_rattler_install([f"{url}/conda/{FORGE}"], tmp_path / name, tmp_path / f"{name}-c", [spec])

        rattler(parent.url, "seed", "app")
        mirror.faults.fail_mode = "reset"
        time.sleep(1.2)
        shard_index = f"/conda/{FORGE}/noarch/repodata_shards.msgpack.zst"
        down = 'pkgcache_offline{cause="upstreams_down",side="conda"} 1.0'

        def offline() -> bool:
            parent.get(shard_index)
            return down in parent.get("/metrics").body.decode()

        wait_for(offline, "the parent's conda offline view")
        view = parent.get(shard_index)
        # The shard index made from the offline view says it is one (it said "miss"), and is not to be kept.
        assert view.headers["x-pkgcache-cache"] == "offline" and view.headers["cache-control"] == "public, max-age=0"
        wire = tier_builder.wire(parent.url)
        child = tier_builder.child(CLOSED_PYPI, conda={"upstreams": [conda_parent(wire.url)], "channels": [FORGE]})
        for form in ("noarch/repodata_shards.msgpack.zst", f"{SUBDIR}/repodata_shards.msgpack.zst"):
            assert child.get(f"/conda/{FORGE}/{form}").status == 200
        mirror.faults.fail_mode = None
        wait_for(lambda: down not in parent.get("/metrics").body.decode(), "the parent back online")
        installed = rattler(child.url, "b-big", "bigpkg")
        assert "bigpkg" in {p["name"] for p in installed["installed"]}
        assert any(e.status == 200 and "/bigpkg" in e.path for e in wire.exchanges)
    finally:
        bg_loop.run(mirror.stop())


# --- 2. the parent's 5xx about its own upstreams fails the request over, never rests the parent ---


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_5xx_of_the_parent_for_what_its_mirrors_cannot_give_leaves_the_parent_serving_its_cache(
    kind: str, official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder, tmp_path: Path
) -> None:
    install = run_pip_install if kind == "pip" else run_uv_install
    parent = tier_builder.parent([official_upstream.index_url], upstream={"cooldown": 60})
    warm = install(parent.index_url, tmp_path / "warm", "alpha==2.0")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    official_upstream.faults.fail_mode = "reset"
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child([pypi_parent(wire.url)], upstream={"cooldown": 60})
    miss = child.get("/pypi/simple/bigpkg/")
    (relayed,) = wire.to("/pypi/simple/bigpkg/")
    assert relayed.status in (502, 503) and relayed.headers[UPSTREAM_FAILED_HEADER] == "1"
    # The child's own answer says the same to a child below it, with the parent's reason.
    assert miss.status == 502 and miss.headers[UPSTREAM_FAILED_HEADER.lower()] == "1", miss.body
    assert b"could not get it from its own upstreams" in miss.body
    result = install(child.index_url, tmp_path / "t", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert wire.to(f"/pypi/files/alpha/{ALPHA_WHEEL}")
    status = json.loads(child.get("/-/status").body)
    parent_status = next(u for u in status["upstreams"]["pypi"] if u["name"] == "parent")
    assert parent_status["healthy"] is True and parent_status["failures"] == 0, parent_status


def test_a_5xx_of_the_parent_does_not_take_the_child_past_the_parents_policy_to_its_own_mirror(
    official_upstream: OfficialLikeUpstream,
    second_mirror: OfficialLikeUpstream,
    tier_builder: TierBuilder,
    tmp_path: Path,
) -> None:
    """The parent denies delta-pkg; the child lists it first and a healthy mirror second. One 502 of the parent
    (its mirror blipped for an unrelated miss) once rested it, and the child served delta-pkg from its mirror."""
    deny = {"deny": [{"name": "delta-pkg", "reason": "typosquat INC-42"}]}
    parent = tier_builder.parent([official_upstream.index_url], pypi=deny, conda={"enabled": False})
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child(
        [pypi_parent(wire.url), second_mirror.index_url],
        conda={"enabled": False},
    )
    wheel = "/pypi/files/delta-pkg/delta_pkg-3.0-py3-none-any.whl"
    assert child.get(wheel).status == 403
    official_upstream.faults.fail_mode = "reset"
    # The parent cannot get bigpkg (which it never held): that request, and it alone, goes to the mirror.
    assert child.get("/pypi/simple/bigpkg/").status == 200
    assert [e.status for e in wire.to("/pypi/simple/bigpkg/")] == [502]
    official_upstream.faults.fail_mode = None
    refused = child.get(wheel)
    assert refused.status == 403 and b"INC-42" in refused.body
    result = run_pip_install(child.index_url, tmp_path / "t", "delta-pkg")
    assert result.returncode != 0 and "INC-42" in result.stdout + result.stderr
    assert not [r.path for r in second_mirror.requests + second_mirror.files.requests if "delta" in r.path]


# --- 3. a client's X-Expected-Sha256 reaches the parent, never a mirror ---


@pytest.fixture
def removed_forge(conda_channels: Channels, tmp_path: Path) -> Path:
    """conda-forge with libfoo 1.1 taken out of its index (still on the server)."""
    root = tmp_path / "forge"
    shutil.copytree(conda_channels.forge, root)
    _take_out(root, SUBDIR, find_pkg(conda_channels.forge_pkgs, "libfoo", "1.1").filename, under_removed=True)
    return root


@pytest.mark.parametrize("order", ["parent-first", "mirror-first"])
def test_a_locked_install_of_a_package_its_channel_dropped_works_through_a_cold_parent(
    order: str,
    removed_forge: Path,
    conda_channels: Channels,
    tier_builder: TierBuilder,
    bg_loop: BackgroundLoop,
) -> None:
    pkg = find_pkg(conda_channels.forge_pkgs, "libfoo", "1.1")
    mirrors = [MirrorLikeUpstream({"conda-forge": removed_forge}, only_json=True) for _ in range(2)]
    for mirror in mirrors:
        bg_loop.run(mirror.start())
    central, own = mirrors
    parent = tier_builder.parent(
        CLOSED_PYPI, conda={"upstreams": [central.upstream_config("central")], "channels": [FORGE]}
    )
    wire = tier_builder.wire(parent.url)
    try:
        upstreams: list[Any] = [conda_parent(wire.url)]
        if order == "mirror-first":
            # The child's own mirror first, which lost the file: only the parent can give it. The child has not
            # talked to the parent before (its repodata came from the mirror): the parent's 404 says what it is.
            own.faults.fail_mode = "404"
            own.faults.fail_paths = {pkg.filename}
            upstreams.insert(0, own.upstream_config("own"))
        child = tier_builder.child(CLOSED_PYPI, conda={"upstreams": upstreams, "channels": [FORGE]})
        url = f"/conda/{FORGE}/{SUBDIR}/{pkg.filename}"
        answer = child.get(url, {EXPECTED: pkg.sha256})
        assert answer.status == 200, answer.body
        assert answer.body == parent.get(url, {EXPECTED: pkg.sha256}).body
        asked = wire.to(pkg.filename)
        assert asked[-1].request_headers[EXPECTED] == pkg.sha256 and asked[-1].status == 200
        # Mirrors (the parent's, and the child's own) are never sent it: they refuse unusual headers.
        assert not [r.path for mirror in mirrors for r in mirror.requests if EXPECTED in r.headers]
        assert [r for r in central.requests if r.path.endswith(pkg.filename)]
    finally:
        for mirror in mirrors:
            bg_loop.run(mirror.stop())


def _listed_by(cache: RunningCache, filename: str) -> bool:
    repodata = json.loads(cache.get(f"/conda/{FORGE}/{SUBDIR}/repodata.json").body)
    return filename in {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}


@contextlib.contextmanager
def _tier_with_shards_from_before(
    conda_channels: Channels,
    tier_builder: TierBuilder,
    bg_loop: BackgroundLoop,
    tmp_path: Path,
    child_ttl: float,
) -> Iterator[tuple[RunningCache, RunningCache, Wire, MirrorLikeUpstream, Path]]:
    """A child over a parent over a mirror serving repodata.json alone (the parent makes the shards). A lock is made
    through the child (its shards cached), then the channel takes libfoo 1.1 out under `removed` and the parent's
    index no longer lists it. Nothing had fetched the package: neither tier has it. Gives the child, the parent, the
    wire between them, the mirror and the lock."""
    pkg = find_pkg(conda_channels.forge_pkgs, "libfoo", "1.1")
    root = tmp_path / "live-forge"
    shutil.copytree(conda_channels.forge, root)
    for subdir in ("noarch", SUBDIR):
        for name in ("repodata.json.zst", "repodata.json.bz2", "repodata_shards.msgpack.zst"):
            (root / subdir / name).unlink(missing_ok=True)
    mirror = MirrorLikeUpstream({"conda-forge": root}, only_json=True)
    bg_loop.run(mirror.start())
    parent = tier_builder.parent(
        CLOSED_PYPI,
        conda={"upstreams": [mirror.upstream_config("central")], "channels": [FORGE], "index_ttl": 1},
    )
    wire = tier_builder.wire(parent.url)
    try:
        conda = {"upstreams": [conda_parent(wire.url)], "channels": [FORGE], "index_ttl": child_ttl}
        child = tier_builder.child(CLOSED_PYPI, conda=conda)
        lock = tmp_path / "pixi.lock"
        locked = write_pixi_lock([f"{child.url}/conda/{FORGE}"], [SUBDIR], ["app"], lock, tmp_path / "lock-cache")
        assert any(item["url"].endswith(pkg.filename) for item in locked)
        assert list(child.data_dir.rglob(f"{SUBDIR}/shards/*.msgpack.zst")), "the child cached no shard"
        _take_out(root, SUBDIR, pkg.filename, under_removed=True)
        wait_for(lambda: not _listed_by(parent, pkg.filename), "the parent's index to drop the package", 30)
        assert not wire.to(pkg.filename) and not [p for p in mirror.paths() if p.endswith(pkg.filename)]
        yield child, parent, wire, mirror, lock
    finally:
        bg_loop.run(mirror.stop())


@pytest.mark.parametrize("child_index", ["fresh", "refreshed"])
def test_a_locked_install_of_a_package_dropped_since_the_child_cached_its_shards_works_through_the_tier(
    child_index: str,
    conda_channels: Channels,
    tier_builder: TierBuilder,
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    # The child's cached shards still list the package (its repodata too while fresh; "refreshed": its repodata no
    # longer does). It takes its record from them, but the parent's index no longer lists it: the parent fetches
    # it only for the client's sha256, which the child passes on though it found a record (as it agrees with it).
    pkg = find_pkg(conda_channels.forge_pkgs, "libfoo", "1.1")
    ttl = 600 if child_index == "fresh" else 1
    tier = _tier_with_shards_from_before(conda_channels, tier_builder, bg_loop, tmp_path, ttl)
    with tier as (child, _, wire, m, lock):
        if child_index == "refreshed":
            wait_for(lambda: not _listed_by(child, pkg.filename), "the child's repodata to drop the package", 30)
        done = run_locked_install(lock, SUBDIR, tmp_path / "env", tmp_path / "pkgs")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "env/share/libfoo/libfoo.txt").read_text() == "libfoo 1.1\n"
        asked = wire.to(pkg.filename)
        assert [e.request_headers.get(EXPECTED) for e in asked] == [pkg.sha256] and asked[0].status == 200
        assert not [r.path for r in m.requests if EXPECTED in r.headers]  # never sent to a mirror
        # Listed packages went to the parent with the client's sha256 too (each agrees with the child's record).
        assert all(e.request_headers.get(EXPECTED) for e in wire.exchanges if e.path.endswith(".conda"))


# --- 4. a mirror first, the parent second: files fail over to the parent's own path for them ---


@pytest.mark.parametrize("fault", ["404", "corrupt"])
def test_with_a_mirror_first_a_file_it_lacks_or_spoils_comes_from_the_parent_second(
    fault: str,
    official_upstream: OfficialLikeUpstream,
    second_mirror: OfficialLikeUpstream,
    tier_builder: TierBuilder,
    tmp_path: Path,
) -> None:
    parent = tier_builder.parent([official_upstream.index_url], conda={"enabled": False})
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child(
        [second_mirror.index_url, pypi_parent(wire.url)],
        conda={"enabled": False},
    )
    if fault == "corrupt":
        second_mirror.faults.corrupt_files = {ALPHA_WHEEL}
    else:  # sync lag: the page lists the wheel, the mirror's files host does not have it (nor its metadata) yet
        second_mirror.faults.fail_mode = "404"
        second_mirror.faults.fail_paths = {ALPHA_WHEEL}
    result = run_uv_install(child.index_url, tmp_path / "t", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alpha==2.0" in installed_dists(tmp_path / "t")
    got = child.get(f"/pypi/files/alpha/{ALPHA_WHEEL}")
    assert got.status == 200 and got.body == find_dist(sample_dists(), ALPHA_WHEEL).data
    # The pages came from the mirror; the wheel from the parent, at its own path for it (never `packages/`).
    assert _child_asked(second_mirror, "/simple/alpha/")
    assert [e.status for e in wire.to(f"/pypi/files/alpha/{ALPHA_WHEEL}")][-1] == 200
    assert not [e for e in wire.exchanges if "/pypi/packages/" in e.path and e.status == 200]


# --- 5. the parent cuts a file its own mirror cut or spoiled: not rested, and the file comes from elsewhere ---

BIG_WHEEL = "bigpkg-1.0-py3-none-any.whl"


def _spoil(mirror: OfficialLikeUpstream | MirrorLikeUpstream, filename: str, fault: str) -> None:
    """The mirror sends `filename` wrong (same size, bad hash) or cut after half its body."""
    if fault == "corrupt":
        mirror.faults.corrupt_files = {filename}
    else:
        mirror.faults.fail_mode, mirror.faults.fail_paths = "truncate", {filename}


def _mend(mirror: OfficialLikeUpstream | MirrorLikeUpstream) -> None:
    mirror.faults.corrupt_files, mirror.faults.fail_mode, mirror.faults.fail_paths = set(), None, set()


def _upstream_of(cache: RunningCache, side: str, name: str) -> dict[str, Any]:
    status = json.loads(cache.get("/-/status").body)
    return next(u for u in status["upstreams"][side] if u["name"] == name)


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_a_parent_cutting_a_wheel_its_mirror_spoiled_or_cut_is_not_rested_and_its_policy_holds(
    fault: str,
    official_upstream: OfficialLikeUpstream,
    second_mirror: OfficialLikeUpstream,
    tier_builder: TierBuilder,
    tmp_path: Path,
) -> None:
    """The parent denies delta-pkg; the child lists it first (no pass-through between them: a cut stays a cut) and
    a mirror of its own second, with the default cool-down. The parent's mirror spoils or cuts bigpkg's wheel, which
    the parent was streaming to the child: it can only cut. That cut once rested the parent for 60 s, and the child
    served delta-pkg from its own mirror. The wheel comes from the child's own mirror instead (a cut one is resumed
    where the parent stopped), without resting the parent."""
    deny = {"deny": [{"name": "delta-pkg", "reason": "typosquat INC-42"}]}
    parent = tier_builder.parent([official_upstream.index_url], pypi=deny, conda={"enabled": False})
    child = tier_builder.child(
        [pypi_parent(parent.url), {"name": "own", "url": second_mirror.index_url}],
        conda={"enabled": False},
    )
    warm = run_uv_install(parent.index_url, tmp_path / "warm", "beta")  # the parent holds beta and gamma
    assert warm.returncode == 0, warm.stdout + warm.stderr
    before = run_pip_install(child.index_url, tmp_path / "before", "delta-pkg")
    assert before.returncode != 0 and "INC-42" in before.stdout + before.stderr
    _spoil(official_upstream, BIG_WHEEL, fault)
    big = run_pip_install(child.index_url, tmp_path / "big", "bigpkg")
    _mend(official_upstream)
    parent_seen = _upstream_of(child, "pypi", "parent")
    # Counted and told, not rested.
    assert parent_seen["healthy"] is True and parent_seen["failures"] == 1, parent_seen
    assert "a pkgcache, cut" in parent_seen["last_error"]
    asked_own = [r for r in second_mirror.files.requests if r.path.endswith(BIG_WHEEL)]
    assert asked_own, "the child did not ask its own mirror for the wheel the parent could not give"
    if fault == "truncate":
        # Resumed where the parent stopped: the first install works.
        assert big.returncode == 0, big.stdout + big.stderr
        assert asked_own[0].headers.get("Range", "").startswith("bytes=")
    # The wheel is whole at the child either way (for a spoiled one, the client that had its first bytes was cut),
    # and the child's own mirror, which sent only right bytes, is not blamed for the parent's.
    got = child.get(f"/pypi/files/bigpkg/{BIG_WHEEL}")
    assert got.status == 200 and got.body == find_dist(sample_dists(), BIG_WHEEL).data
    own = _upstream_of(child, "pypi", "own")
    assert own["failures"] == 0, own
    # The parent's policy still holds, and what the parent holds comes from it (not from the child's own mirror).
    refused = run_pip_install(child.index_url, tmp_path / "after", "delta-pkg")
    assert refused.returncode != 0 and "INC-42" in refused.stdout + refused.stderr
    fine = run_uv_install(child.index_url, tmp_path / "beta", "beta")
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert installed_dists(tmp_path / "beta") == {"beta==1.1", "gamma==0.5"}
    # (After the cut, the parent rests its own mirror and shows its offline view: the child takes pages from its
    # own mirror then, as documented, but not the files the parent holds, nor anything of delta-pkg.)
    assert not [r.path for r in second_mirror.requests + second_mirror.files.requests if "delta" in r.path]
    own_files = [r.path for r in second_mirror.files.requests]
    assert not [path for path in own_files if "beta" in path or "gamma" in path], own_files


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_conda_a_parent_cutting_a_package_its_mirror_spoiled_or_cut_is_not_rested_and_no_mirror_is_blamed(
    fault: str,
    conda_channels: Channels,
    tier_builder: TierBuilder,
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    """The conda side, with the child's own mirror second. The parent's mirror spoils or cuts bigpkg, which the
    parent was streaming to the child. A spoiled one was resumed (Range) from the child's own mirror on the parent's
    wrong first bytes: the whole failed its check, and the own mirror, which sent only right bytes, was blamed for
    it. Now such a whole is fetched again from the own mirror in full; a cut one is still resumed."""
    pkg = find_pkg(conda_channels.forge_pkgs, "bigpkg")
    central, own = (MirrorLikeUpstream({"conda-forge": conda_channels.forge}) for _ in range(2))
    for mirror in (central, own):
        bg_loop.run(mirror.start())
    try:
        parent = tier_builder.parent(
            CLOSED_PYPI, conda={"upstreams": [central.upstream_config("central")], "channels": [FORGE]}
        )
        child = tier_builder.child(
            CLOSED_PYPI,
            conda={"upstreams": [conda_parent(parent.url), own.upstream_config("own")], "channels": [FORGE]},
        )
        parent_name = next(u["name"] for u in json.loads(child.get("/-/status").body)["upstreams"]["conda"])

        def rattler(name: str, spec: str) -> set[str]:
            try:
                done = run_rattler_install(
                    [f"{child.url}/conda/{FORGE}"], tmp_path / name, tmp_path / f"{name}-c", [spec]
                )
            except RuntimeError:
                return set()
            return {p["name"] for p in done["installed"]}

        # The parent holds the app tree; the child has its index from the parent.
        assert "app" in rattler("warm", "app")
        _spoil(central, pkg.filename, fault)
        first = rattler("big", "bigpkg")
        _mend(central)
        parent_seen = _upstream_of(child, "conda", parent_name)
        assert parent_seen["healthy"] is True and "a pkgcache, cut" in parent_seen["last_error"], parent_seen
        own_seen = _upstream_of(child, "conda", "own")
        assert own_seen["failures"] == 0 and own_seen["last_error"] is None, own_seen
        asked_own = [r for r in own.requests if r.path.endswith(pkg.filename)]
        if fault == "truncate":
            assert "bigpkg" in first
            assert asked_own and asked_own[0].headers.get("Range", "").startswith("bytes=")
        # The child holds the right bytes: a hit, nobody asked again.
        asked = len(own.requests) + len(central.requests)
        got = child.get(f"/conda/{FORGE}/noarch/{pkg.filename}")
        assert got.status == 200 and got.headers["x-pkgcache-cache"] == "hit"
        assert hashlib.sha256(got.body).hexdigest() == pkg.sha256
        assert len(own.requests) + len(central.requests) == asked
        assert "bigpkg" in rattler("again", "bigpkg")
    finally:
        for mirror in (central, own):
            bg_loop.run(mirror.stop())


class _CuttingParent(FakeServer):
    """A stand-in for a parent pkgcache (its identity headers) listing bigpkg's wheel on its page, whose answer for
    the wheel (a miss) ends after `cut_at` bytes of `body`, as a pkgcache's does when its mirror cuts the file, or
    (`cut_at` = the size less one: the last byte it holds back until the file is checked) when its check fails."""

    def __init__(self, dist: Any, body: bytes, cut_at: int) -> None:
        super().__init__()
        self.dist, self.body, self.cut_at = dist, body, cut_at

    async def handle(self, request: web.Request) -> web.StreamResponse:
        identity = {NODE_HEADER: "central-1"}
        if request.path == "/pypi/simple/bigpkg/":
            entry = {
                "filename": self.dist.filename,
                "url": f"../../files/bigpkg/{self.dist.filename}",
                "hashes": {"sha256": self.dist.sha256},
                "size": len(self.dist.data),
            }
            page = {"meta": {"api-version": "1.1"}, "name": "bigpkg", "files": [entry], "versions": ["1.0"]}
            return web.json_response(
                page,
                content_type="application/vnd.pypi.simple.v1+json",
                headers={**identity, "X-Pkgcache-Cache": "hit"},
            )
        if request.path != f"/pypi/files/bigpkg/{self.dist.filename}" or request.transport is None:
            return web.Response(status=404, headers=identity)
        head = [
            "HTTP/1.1 200 OK",
            "Content-Type: application/octet-stream",
            f"Content-Length: {len(self.body)}",
            f"{NODE_HEADER}: central-1",
            "X-Pkgcache-Cache: miss",
        ]
        request.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + self.body[: self.cut_at])
        request.transport.close()  # what was written goes out, then the connection ends
        raise asyncio.CancelledError


@pytest.mark.parametrize("bytes_sent", ["wrong", "right"])
def test_a_parents_cut_is_resumed_from_the_next_upstream_and_a_whole_that_fails_is_asked_of_it_in_full(
    bytes_sent: str,
    second_mirror: OfficialLikeUpstream,
    tier_builder: TierBuilder,
    bg_loop: BackgroundLoop,
) -> None:
    """A parent pkgcache's mirror cuts a file (the parent cuts midway), or sends wrong bytes (the parent cuts before
    the last byte, which it holds back until the file is checked). Either way the child's own mirror resumes it
    (Range). Resumed on wrong bytes, the whole fails its check: the own mirror, which sent only right bytes, was
    blamed for it, and the file failed. It is now asked for the whole file. The parent is rested neither time."""
    dist = find_dist(sample_dists(), BIG_WHEEL)
    wrong = dist.data[:1000] + bytes(b ^ 0xFF for b in dist.data[1000:1016]) + dist.data[1016:]
    cut_at = len(dist.data) - 1 if bytes_sent == "wrong" else len(dist.data) // 2
    parent = _CuttingParent(dist, wrong if bytes_sent == "wrong" else dist.data, cut_at)
    bg_loop.run(parent.start())
    try:
        child = tier_builder.child(
            [pypi_parent(parent.url), {"name": "own", "url": second_mirror.index_url}],
            conda={"enabled": False},
        )
        status, body = asyncio.run(_download(f"{child.url}/pypi/files/bigpkg/{BIG_WHEEL}"))
        if bytes_sent == "right":
            assert (status, body) == (200, dist.data), "the client was not given the file resumed from the own mirror"
        else:
            assert status == 200 and len(body) < len(dist.data)  # the client had the wrong bytes: it is cut
        # The next client gets the right file (joining its download, or from the cache), with no request more.
        kept = child.get(f"/pypi/files/bigpkg/{BIG_WHEEL}")
        assert kept.status == 200 and kept.body == dist.data
        asked = [r.headers.get("Range") for r in second_mirror.files.requests if r.path.endswith(BIG_WHEEL)]
        # Resumed where the parent stopped (where the child's reader was: it drops what it had not read when the
        # connection ends); after wrong bytes, then the whole file from the first byte.
        assert len(asked) == (2 if bytes_sent == "wrong" else 1) and (asked[0] or "").startswith("bytes="), asked
        assert asked[1:] == ([None] if bytes_sent == "wrong" else []), asked
        seen = {u["name"]: u for u in json.loads(child.get("/-/status").body)["upstreams"]["pypi"]}
        assert seen["parent"]["healthy"] is True and seen["parent"]["failures"] == 1, seen["parent"]
        assert seen["own"]["failures"] == 0 and seen["own"]["last_error"] is None, seen["own"]
    finally:
        bg_loop.run(parent.stop())


async def _download(url: str) -> tuple[int, bytes]:
    """A client's GET: the status and the bytes it got, however the body ended."""
    got = bytearray()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        with contextlib.suppress(aiohttp.ClientPayloadError):
            async for chunk in response.content.iter_any():
                got += chunk
        return response.status, bytes(got)


# --- a channel the child lists and its parent does not serve ---


def test_a_channel_the_parent_does_not_serve_is_said_so_to_clients_and_in_the_childs_status(
    conda_mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache], tier_builder: TierBuilder
) -> None:
    """The parent serves pkgs/main only; the child (and a grandchild below it) list conda-forge too. Every tier's
    client is told why (the parent's reason, not a bare 'not found'), the first answer and the remembered 404 alike,
    and the child's /-/status names what its parent does not serve, without resting it."""
    parent = tier_builder.parent(
        CLOSED_PYPI,
        conda={"upstreams": [conda_mirror.upstream_config("mirror")], "channels": ["pkgs/main"]},
    )
    child = tier_builder.child(CLOSED_PYPI, conda={"upstreams": [conda_parent(parent.url)], "channels": CONDA_BOTH})
    grandchild = make_cache(
        CLOSED_PYPI,
        server={"node_name": "desk-1", "tier": "desk"},
        conda={"upstreams": [conda_parent(child.url)], "channels": CONDA_BOTH},
    )
    repodata = f"/conda/{FORGE}/noarch/repodata.json"
    said = parent.get(repodata)
    assert said.status == 404 and said.headers.get(NOT_SERVED) == FORGE
    for tier in (child, grandchild, child, grandchild):  # the second time, the remembered 404
        answer = tier.get(repodata)
        text = answer.body.decode()
        assert answer.status == 404, text
        assert f"channel {FORGE} is not served here; served: pkgs/main" in text, text
        assert "pkgcache central-1" in text and answer.headers.get(NOT_SERVED) == FORGE, text
    assert child.get("/conda/pkgs/main/noarch/repodata.json").status == 200
    status = json.loads(child.get("/-/status").body)
    (central,) = status["upstreams"]["conda"]
    assert central["healthy"] and central["failures"] == 0 and not central["last_error"]
    (note,) = central["not_served"]
    assert note["what"] == FORGE and f"channel {FORGE} is not served here" in note["reason"]
    from pkgcache.cli.status_commands import side_health

    assert f"does not serve {FORGE} (pkgcache central-1: channel {FORGE}" in side_health(
        status["upstreams"]["conda"], {}
    )
    assert f"does not serve {FORGE}: pkgcache central-1: channel {FORGE}" in child.get("/").body.decode()
    (office,) = json.loads(grandchild.get("/-/status").body)["upstreams"]["conda"]
    assert office["pkgcache"]["node"] == CHILD["node_name"]
    assert office["healthy"] and [n["what"] for n in office["not_served"]] == [FORGE]


# --- pkgcaches whose upstreams make a loop ---


def test_two_offices_listing_each_other_as_backup_answer_a_miss_neither_holds_at_once_and_rest_neither(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tier_builder: TierBuilder
) -> None:
    """Offices A and B list the central mirror first and each other second. With the central down, a page neither
    holds went A -> B -> A, where it joined A's own download and waited for itself: 10 s (first_byte_timeout),
    then each office rested the other for a minute. The request carries the chain of pkgcaches it came through
    (in the User-Agent), and A, finding itself on it, answers B at once with a 508 that rests nobody."""
    wire_to_a = tier_builder.wire("http://127.0.0.1:9")  # aimed at A once A listens
    timeouts = {"first_byte_timeout": 10}
    b = make_cache(
        [
            {"name": "central", "url": official_upstream.index_url},
            {"name": "peer", "url": f"{wire_to_a.url}/pypi/simple/"},
        ],
        server={"node_name": "office-b", "tier": "office"},
        upstream=timeouts,
        conda={"enabled": False},
    )
    a = make_cache(
        [{"name": "central", "url": official_upstream.index_url}, {"name": "peer", "url": f"{b.url}/pypi/simple/"}],
        server={"node_name": "office-a", "tier": "office"},
        upstream=timeouts,
        conda={"enabled": False},
    )
    wire_to_a.target = a.url
    assert b.get("/pypi/simple/alpha/").status == 200  # B holds alpha's page
    official_upstream.faults.fail_mode = "reset"
    # The backup still works: what B holds, A gets from it.
    assert a.get("/pypi/simple/alpha/", JSON_PAGE).status == 200
    for project in ("beta", "gamma"):  # a page neither holds: once with the central failing, once resting
        started = time.monotonic()
        answer = a.get(f"/pypi/simple/{project}/")
        took = time.monotonic() - started
        assert answer.status in (502, 503), answer.body
        assert took < 3, f"{took:.1f} s: {answer.body!r}"
        assert b"pkgcache office-a is on this request's way already" in answer.body, answer.body
    # B's request came back to A marked with A's own mark: 508, marked, at once; B asked A nothing it waited on.
    looped = [e for e in wire_to_a.exchanges if e.status == 508]
    assert looped and all(e.headers.get("X-Pkgcache-Loop") == "1" for e in looped)
    for office in (a, b):
        peer = next(u for u in json.loads(office.get("/-/status").body)["upstreams"]["pypi"] if u["name"] == "peer")
        assert peer["healthy"] and peer["failures"] == 0, peer
    # A request that came through as many pkgcaches as a chain may hold is not sent on (nor a client's mark).
    marks = [f"+{n:012x}" for n in range(8)]
    long_way = {"User-Agent": f"pkgcache/0 ({marks[0]}) (via {' '.join(marks[1:])})"}
    refused = a.get("/pypi/simple/delta-pkg/", long_way)
    assert refused.status == 508 and refused.headers.get("x-pkgcache-loop") == "1", refused.body
    assert b"came through 8 pkgcaches" in refused.body
    assert "on this request's way already" in (
        next(u for u in json.loads(b.get("/-/status").body)["upstreams"]["pypi"] if u["name"] == "peer")["last_error"]
        or ""
    )
