"""A block (or any policy change) at a parent pkgcache reaches what a child already holds, within the child's
index_ttl (upstream/parent_verdicts.py, docs/policy.md "Blocks", docs/operations.md "Tiers and clusters").

Before: a central block of delta-pkg==3.0 (its only release: the central shows its page whole, every file refused)
left the office's page as it was and the office served its cached wheel, so pip installed it; a blocked alpha==2.0
dropped from the office's page but its cached wheel stayed a 200 by URL; a locked conda install got the office's
cached libfoo 1.1 while the central answered 403.

mirror <- parent <- Wire (records method, path, status) <- child; real pip, uv and py-rattler through the child.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cache_service import CacheProcess, RunningCache
from tests.clients.rattler_locked import run_locked_install
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import AnacondaLikeUpstream
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.fakes.rattler_lock import write_pixi_lock
from tests.support import http_get, run_pip_install, run_uv_install, wait_for
from tests.tier_support import CLOSED_PYPI, JSON_PAGE, TierBuilder, Wire, conda_parent, pypi_parent

TOKEN = "tier-blocks-admin-token-0123456789"
# The answers' headers, as http_get gives them (in lower case): the mark of a page whose every file is refused, and
# of a policy's refusal (node_identity.py).
MARK = "x-pkgcache-files-refused"
REFUSAL = "x-pkgcache-refusal"
INSTALLERS = {"pip": run_pip_install, "uv": run_uv_install}
DELTA = "/pypi/files/delta-pkg/delta_pkg-3.0-py3-none-any.whl"
ALPHA2 = "/pypi/files/alpha/alpha-2.0-py3-none-any.whl"
GAMMA = "/pypi/files/gamma/gamma-0.5-py3-none-any.whl"
TTL = 2.0
# Long enough for a rattler lock and install to run while the office's conda index is fresh.
CONDA_TTL = 6.0
FORGE = "cloud/conda-forge"
CONDA_CHANNELS = ["pkgs/main", FORGE]


def _admin(cache: RunningCache, action: str) -> None:
    answer = http_get(f"{cache.url}/-/admin/{action}", {"Authorization": f"Bearer {TOKEN}"}, "POST")
    assert answer.status == 200, (action, answer.status, answer.body)


def _heads(wire: Wire, suffix: str) -> int:
    return len([e for e in wire.to(suffix) if e.method == "HEAD"])


def _pypi_tiers(
    official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder
) -> tuple[RunningCache, Wire, RunningCache]:
    """The central (its admin token TOKEN) over the mirror, the wire, the office (index_ttl TTL) over the wire."""
    parent = tier_builder.parent([official_upstream.index_url], access={"admin_token": TOKEN}, conda={"enabled": False})
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child([pypi_parent(wire.url)], pypi={"index_ttl": TTL}, conda={"enabled": False})
    return parent, wire, child


def _conda_tiers(
    anaconda_upstream: AnacondaLikeUpstream, tier_builder: TierBuilder, channels: list[str], ttl: float
) -> tuple[RunningCache, Wire, RunningCache]:
    """The conda side of _pypi_tiers: the central over the anaconda fake, the office's index_ttl `ttl`."""
    anaconda = anaconda_upstream.upstream_config()
    parent = tier_builder.parent(
        CLOSED_PYPI, access={"admin_token": TOKEN}, conda={"upstreams": [anaconda], "channels": channels}
    )
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child(
        CLOSED_PYPI, conda={"upstreams": [conda_parent(wire.url)], "channels": channels, "index_ttl": ttl}
    )
    return parent, wire, child


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_central_block_reaches_the_files_an_office_holds(
    kind: str, official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder, tmp_path: Path
) -> None:
    parent, wire, child = _pypi_tiers(official_upstream, tier_builder)
    warm = INSTALLERS[kind](child.index_url, tmp_path / "warm", "alpha==2.0")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    # Files the page lists, fresh: served from the cache with no request to the parent.
    for path in (DELTA, ALPHA2, GAMMA):
        assert child.get(path).status == 200
    assert [e.path for e in wire.exchanges if e.method == "HEAD"] == []

    _admin(parent, "pypi/block?target=delta-pkg==3.0&reason=INC-7")  # its only release: page shown whole
    _admin(parent, "pypi/block?target=alpha==2.0&reason=INC-10")  # alpha 1.0 stays: left off the page
    time.sleep(TTL + 0.2)
    after = INSTALLERS[kind](child.index_url, tmp_path / "after", "delta-pkg==3.0")
    said = after.stdout + after.stderr
    assert after.returncode != 0 and "INC-7" in said, said
    # The page the office serves says what the central one says: delta-pkg's every file is refused.
    wait_for(lambda: MARK in child.get("/pypi/simple/delta-pkg/", JSON_PAGE).headers, "the mark on the page")
    # By URL (a lock file, a pinned link): the office answers the central verdict as its own.
    for path, reason in ((DELTA, b"INC-7"), (ALPHA2, b"INC-10")):
        asked = _heads(wire, path)
        answers = [child.get(path) for _ in range(5)]
        assert {a.status for a in answers} == {403}, [(a.status, a.body) for a in answers]
        assert reason in answers[0].body and b"refused by pkgcache central-1" in answers[0].body
        assert answers[0].headers[REFUSAL] == "policy"
        # Asked with a HEAD, once while the verdict holds (the office's index_ttl); no file fetched for it.
        assert 1 <= _heads(wire, path) <= asked + 1
        assert len([e for e in wire.to(path) if e.method == "GET"]) == 1  # the warm install's
    pinned = run_pip_install(child.index_url, tmp_path / "pinned", f"{child.url}{ALPHA2}", extra_args=["--no-deps"])
    assert pinned.returncode != 0 and "INC-10" in pinned.stdout + pinned.stderr

    # An unblock reaches the office the same way.
    _admin(parent, "pypi/unblock?target=alpha==2.0")
    time.sleep(TTL + 0.2)
    child.get("/pypi/simple/alpha/", JSON_PAGE)
    wait_for(lambda: child.get(ALPHA2).status == 200, "alpha 2.0 served again after the unblock")


def test_a_parent_that_cannot_be_asked_leaves_the_office_serving_what_it_holds(
    official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder
) -> None:
    """No verdict without the parent: its rules as they were (the office's stale copy) hold, as for any page."""
    parent, wire, child = _pypi_tiers(official_upstream, tier_builder)
    assert child.get("/pypi/simple/alpha/", JSON_PAGE).status == 200
    assert child.get(ALPHA2).status == 200
    _admin(parent, "pypi/block?target=alpha==2.0&reason=INC-10")
    time.sleep(TTL + 0.2)
    child.get("/pypi/simple/alpha/", JSON_PAGE)

    def dropped() -> bool:
        page = json.loads(child.get("/pypi/simple/alpha/", JSON_PAGE).body)
        return all(f["filename"] != "alpha-2.0-py3-none-any.whl" for f in page["files"])

    wait_for(dropped, "the office's page without alpha 2.0")
    wire.faults.fail_mode = "reset"
    assert child.get(ALPHA2).status == 200
    wire.faults.fail_mode = None


def test_a_block_two_tiers_up_reaches_the_grandchild(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tier_builder: TierBuilder
) -> None:
    """office <- region <- central: the region relays the central verdict (and the mark on the page) as its own."""
    parent, _, child = _pypi_tiers(official_upstream, tier_builder)
    grandchild = make_cache(
        [{"name": "region", "url": f"{child.url}/pypi/simple/"}],
        server={"node_name": "office-2", "tier": "office"},
        pypi={"index_ttl": TTL},
        conda={"enabled": False},
    )
    assert grandchild.get("/pypi/simple/delta-pkg/", JSON_PAGE).status == 200
    assert grandchild.get(DELTA).status == 200
    _admin(parent, "pypi/block?target=delta-pkg==3.0&reason=INC-7")
    time.sleep(TTL + 0.2)

    def refused() -> bool:
        grandchild.get("/pypi/simple/delta-pkg/", JSON_PAGE)
        return grandchild.get(DELTA).status == 403

    wait_for(refused, "the grandchild refusing delta-pkg 3.0", timeout=3 * TTL + 5)
    answer = grandchild.get(DELTA)
    assert b"INC-7" in answer.body, answer.body
    wait_for(
        lambda: MARK in grandchild.get("/pypi/simple/delta-pkg/", JSON_PAGE).headers,
        "the grandchild's page marked as the central one is",
    )


def test_a_central_block_reaches_every_worker_of_an_office(
    official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder, tmp_path: Path
) -> None:
    """An office with two workers: the workers that only read hand such a file to the one that writes, which asks."""
    parent = tier_builder.parent([official_upstream.index_url], access={"admin_token": TOKEN}, conda={"enabled": False})
    wire = tier_builder.wire(parent.url)
    config = tmp_path / "office.toml"
    config.write_text(
        f'[server]\nnode_name = "office-1"\n[pypi]\nindex_ttl = {TTL}\n'
        f'upstreams = [{{ name = "central", url = "{wire.url}/pypi/simple/" }}]\n[conda]\nenabled = false\n'
    )
    office = CacheProcess(tmp_path / "office", "--workers", "2", "--config", str(config))
    try:
        for path in ("/pypi/simple/delta-pkg/", "/pypi/simple/alpha/"):
            assert http_get(office.url + path, JSON_PAGE).status == 200
        assert http_get(office.url + DELTA).status == 200 and http_get(office.url + ALPHA2).status == 200
        _admin(parent, "pypi/block?target=delta-pkg==3.0&reason=INC-7")
        _admin(parent, "pypi/block?target=alpha==2.0&reason=INC-10")
        time.sleep(TTL + 0.2)
        for path in ("/pypi/simple/delta-pkg/", "/pypi/simple/alpha/"):
            http_get(office.url + path, JSON_PAGE)
        wait_for(lambda: http_get(office.url + DELTA).status == 403, "the office refusing delta-pkg 3.0")
        # Over new connections (the kernel spreads them over both workers): every answer is the central verdict.
        statuses = [http_get(office.url + path).status for path in (DELTA, ALPHA2) * 10]
        assert set(statuses) == {403}, statuses

        def every_worker_took_some() -> bool:
            workers = json.loads(http_get(f"{office.url}/-/status").body)["workers"]
            return all(w["requests"] + w["handed_over"] > 0 for w in workers)

        wait_for(every_worker_took_some, "both workers' counts of the requests they took")
    finally:
        assert office.terminate() == 0


@pytest.mark.parametrize("channel", CONDA_CHANNELS)
def test_a_central_block_reaches_a_locked_conda_install_through_an_office(
    channel: str,
    anaconda_upstream: AnacondaLikeUpstream,
    conda_channels: Channels,
    tier_builder: TierBuilder,
    tmp_path: Path,
) -> None:
    """pixi install --locked through the office: no solve, each package asked for with its sha256. The office
    holds libfoo 1.1 from an earlier install; the central blocks it since."""
    parent, wire, child = _conda_tiers(anaconda_upstream, tier_builder, CONDA_CHANNELS, CONDA_TTL)
    lock = tmp_path / "pixi.lock"
    write_pixi_lock([f"{child.url}/conda/{channel}"], [SUBDIR], ["app"], lock, tmp_path / "lock-cache")
    warm = run_locked_install(lock, SUBDIR, tmp_path / "warm", tmp_path / "warm-pkgs")
    assert warm.returncode == 0, warm.stderr
    pkgs = conda_channels.forge_pkgs if channel == FORGE else conda_channels.main_pkgs
    libfoo = find_pkg(pkgs, "libfoo", "1.1")
    package = f"/conda/{channel}/{SUBDIR}/{libfoo.filename}"
    locked = {"X-Expected-Sha256": libfoo.sha256}
    assert child.get(package, locked).status == 200
    assert [e.path for e in wire.exchanges if e.method == "HEAD"] == []  # its index fresh, listing it

    _admin(parent, "conda/block?target=libfoo==1.1&reason=INC-9")
    time.sleep(CONDA_TTL + 0.2)
    after = run_locked_install(lock, SUBDIR, tmp_path / "after", tmp_path / "after-pkgs")
    assert after.returncode != 0, after.stdout
    assert libfoo.filename in after.stderr and "INC-9" in after.stderr, after.stderr  # rattler shows the reason
    answers = [child.get(package, locked) for _ in range(4)]
    assert {a.status for a in answers} == {403}, [(a.status, a.body) for a in answers]
    assert b"INC-9" in answers[0].body and b"refused by pkgcache central-1" in answers[0].body
    assert _heads(wire, libfoo.filename) == 1
    # What the central still lets through is served from the office's cache as before.
    other = find_pkg(pkgs, "app")
    assert child.get(f"/conda/{channel}/{SUBDIR}/{other.filename}", {"X-Expected-Sha256": other.sha256}).status == 200


def test_a_central_block_reaches_a_package_an_office_checks_against_repodata(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, tier_builder: TierBuilder
) -> None:
    """The office holds the central's repodata.json (no shards): once revalidated, it no longer lists the blocked
    package, and a locked request for the office's cached copy gets the central verdict."""
    parent, wire, child = _conda_tiers(anaconda_upstream, tier_builder, ["pkgs/main"], TTL)
    libfoo = find_pkg(conda_channels.main_pkgs, "libfoo", "1.1")
    repodata, package = f"/conda/pkgs/main/{SUBDIR}/repodata.json", f"/conda/pkgs/main/{SUBDIR}/{libfoo.filename}"
    locked = {"X-Expected-Sha256": libfoo.sha256}
    assert child.get(repodata).status == 200
    assert child.get(package, locked).status == 200
    assert child.get(package, locked).status == 200 and _heads(wire, libfoo.filename) == 0

    _admin(parent, "conda/block?target=libfoo==1.1&reason=INC-9")
    time.sleep(TTL + 0.2)
    child.get(repodata)  # stale: revalidated meanwhile

    def dropped() -> bool:
        listed = json.loads(child.get(repodata).body)
        return libfoo.filename not in {**listed.get("packages", {}), **listed.get("packages.conda", {})}

    wait_for(dropped, "the office's repodata without libfoo 1.1")
    answers = [child.get(package, locked) for _ in range(4)]
    assert {a.status for a in answers} == {403}, [(a.status, a.body) for a in answers]
    assert b"INC-9" in answers[0].body
    assert _heads(wire, libfoo.filename) == 1
