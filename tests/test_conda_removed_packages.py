"""A package its channel no longer lists (taken out under `removed`, as conda-forge marks a package broken, or
dropped), still on the channel's server: served to a client that says the sha256 it expects (a lock file's; rattler
sends it as X-Expected-Sha256), checked against that; a clear 404 to any other; judged by the policy all the same.

Before: every request for such a package was a 404 ("has no package"), so `pixi install --locked` and rattler
installing from a lock failed through pkgcache where they worked straight from the channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pkgcache.conda import cached_channels
from pkgcache.conda.package_records import ListedRecords
from pkgcache.policy.conda import CondaPolicy
from pkgcache.policy.config import CondaPolicySettings
from pkgcache.storage.file_records import Recorded, recorded_of
from tests.cache_service import RunningCache, cache_settings, start_cache
from tests.clients.rattler_locked import run_locked_install
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_channel import CondaPkg, find_pkg
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.rattler_lock import write_pixi_lock
from tests.support import BackgroundLoop

CHANNEL = "cloud/conda-forge"
HEADER = "X-Expected-Sha256"
INDEX_FORMS = ("repodata.json.zst", "repodata.json.bz2", "repodata_shards.msgpack.zst")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _take_out(root: Path, subdir: str, filename: str, *, under_removed: bool) -> None:
    """The channel takes a package out of its repodata (naming it under `removed`, or not); the file stays."""
    path = root / subdir / "repodata.json"
    repodata = json.loads(path.read_text())
    for section in ("packages", "packages.conda"):
        repodata.get(section, {}).pop(filename, None)
    if under_removed:
        repodata["removed"] = sorted({*repodata.get("removed", []), filename})
    path.write_text(json.dumps(repodata, indent=1))
    for name in INDEX_FORMS:  # only the .json is served: it alone says what is listed
        (root / subdir / name).unlink(missing_ok=True)
    shutil.rmtree(root / subdir / "shards", ignore_errors=True)


def _libfoo(conda_channels: Channels) -> CondaPkg:
    return find_pkg(conda_channels.forge_pkgs, "libfoo", "1.1")


def _pydata(conda_channels: Channels) -> CondaPkg:
    return find_pkg(conda_channels.forge_pkgs, "pydata")


@pytest.fixture
def forge(conda_channels: Channels, tmp_path: Path) -> Path:
    """conda-forge where libfoo 1.1 was marked broken (under `removed`) and pydata dropped (not listed at all)."""
    root = tmp_path / "forge"
    shutil.copytree(conda_channels.forge, root)
    _take_out(root, SUBDIR, _libfoo(conda_channels).filename, under_removed=True)
    _take_out(root, "noarch", _pydata(conda_channels).filename, under_removed=False)
    return root


def _mirrors(bg_loop: BackgroundLoop, roots: list[Path]) -> list[MirrorLikeUpstream]:
    started = [MirrorLikeUpstream({"conda-forge": root}, only_json=True) for root in roots]
    for mirror in started:
        bg_loop.run(mirror.start())
    return started


@pytest.fixture
def mirror(bg_loop: BackgroundLoop, forge: Path) -> Iterator[MirrorLikeUpstream]:
    (started,) = _mirrors(bg_loop, [forge])
    yield started
    bg_loop.run(started.stop())


def _conda(mirrors: list[MirrorLikeUpstream], **conda: Any) -> dict[str, Any]:
    upstreams = [
        {"name": f"mirror{n}", "pkgs_url": f"{m.url}/anaconda/pkgs/", "cloud_url": f"{m.url}/anaconda/cloud/"}
        for n, m in enumerate(mirrors)
    ]
    return {"upstreams": upstreams, "channels": [CHANNEL], "index_ttl": 600, **conda}


def _settings(data_dir: Path, mirrors: list[MirrorLikeUpstream], **sections: Any) -> Any:
    return cache_settings(data_dir, ["http://127.0.0.1:9/simple/"], **sections, conda=_conda(mirrors))


def _cache(make_cache: Callable[..., RunningCache], mirrors: list[MirrorLikeUpstream], **conda: Any) -> RunningCache:
    return make_cache(["http://127.0.0.1:9/simple/"], conda=_conda(mirrors, **conda))


def _asked(mirror: MirrorLikeUpstream, filename: str) -> int:
    return sum(1 for path in mirror.paths() if path.endswith("/" + filename))


def test_a_removed_package_is_served_to_a_client_that_sends_its_sha256_and_a_clear_404_to_others(
    conda_channels: Channels, mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    pkg = _libfoo(conda_channels)
    cache = _cache(make_cache, [mirror])
    url = f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}"

    refused = cache.get(url)
    assert refused.status == 404, refused.body
    assert b"removed from the channel" in refused.body and HEADER.encode() in refused.body, refused.body
    assert _asked(mirror, pkg.filename) == 0  # nothing to check it against: never fetched

    answer = cache.get(url, headers={HEADER: pkg.sha256})
    assert answer.status == 200, answer.body
    assert answer.body == pkg.path.read_bytes() and answer.headers.get("x-pkgcache-cache") == "miss"
    assert _asked(mirror, pkg.filename) == 1
    cached = cache.data_dir / "conda/cloud/conda-forge" / SUBDIR / pkg.filename
    assert recorded_of(cached) == Recorded(pkg.size, ("sha256", pkg.sha256))

    # Later requests, with the header or without, are hits: the file was checked when it came, and the channel
    # still serves it at that URL (as a package cached while listed and removed since is served).
    for headers in ({HEADER: pkg.sha256}, {}):
        again = cache.get(url, headers=headers)
        assert (again.status, again.headers.get("x-pkgcache-cache")) == (200, "hit")
        assert again.body == pkg.path.read_bytes()
    assert _asked(mirror, pkg.filename) == 1

    # A package dropped without being named under `removed`: the same, its 404 saying it is not listed.
    dropped = _pydata(conda_channels)
    dropped_url = f"/conda/{CHANNEL}/noarch/{dropped.filename}"
    not_listed = cache.get(dropped_url)
    assert not_listed.status == 404 and b"its repodata does not list it" in not_listed.body, not_listed.body
    assert b"removed from" not in not_listed.body
    served = cache.get(dropped_url, headers={HEADER: dropped.sha256})
    assert (served.status, _sha256(served.body)) == (200, dropped.sha256)


def test_a_removed_package_whose_bytes_fail_the_clients_sha256_is_never_served_complete(
    conda_channels: Channels, mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    pkg = _libfoo(conda_channels)
    cache = _cache(make_cache, [mirror])
    url = f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}"
    wrong = _sha256(b"not this package")
    refused = cache.get(url, headers={HEADER: wrong})
    assert refused.status == 502, refused.body
    assert b"no upstream has it with the sha256 the client expects" in refused.body, refused.body
    assert _asked(mirror, pkg.filename) >= 1
    assert not (cache.data_dir / "conda/cloud/conda-forge" / SUBDIR / pkg.filename).exists()
    # The right sha256 still gets it: the wrong one left nothing behind.
    right = cache.get(url, headers={HEADER: pkg.sha256})
    assert (right.status, right.body) == (200, pkg.path.read_bytes())


def test_a_sha256_no_upstream_had_is_not_fetched_again_for_a_while(
    conda_channels: Channels,
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client sending made-up sha256s (or a stale lock, again and again) made each request a whole download.
    pkg = _libfoo(conda_channels)
    cache = _cache(make_cache, [mirror])
    url = f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}"
    wrong = _sha256(b"not this package")
    assert cache.get(url, headers={HEADER: wrong}).status == 502
    asked = _asked(mirror, pkg.filename)
    assert asked >= 1
    again = cache.get(url, headers={HEADER: wrong})
    assert again.status == 502, again.body
    assert b"not asked again for" in again.body, again.body
    assert _asked(mirror, pkg.filename) == asked
    # Another sha256 (the right one) is asked as before; and the wrong one is once its time is up.
    right = cache.get(url, headers={HEADER: pkg.sha256})
    assert (right.status, right.body) == (200, pkg.path.read_bytes())
    asked = _asked(mirror, pkg.filename)
    monkeypatch.setattr(cached_channels, "UNMATCHED_SECONDS", 0.0)
    cache.get(url, headers={HEADER: wrong})
    assert _asked(mirror, pkg.filename) > asked


def _with_wrong_bytes(root: Path, pkg: CondaPkg, conda_channels: Channels) -> None:
    """The mirror has other bytes under the package's name (another package's, so a sound .conda)."""
    other = find_pkg(conda_channels.forge_pkgs, "app")
    (root / pkg.subdir / pkg.filename).write_bytes(other.path.read_bytes())


def test_a_mirror_with_wrong_bytes_for_a_removed_package_fails_over_and_all_wrong_is_an_error(
    conda_channels: Channels,
    forge: Path,
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    pkg = _libfoo(conda_channels)
    wrong_one, wrong_two = tmp_path / "wrong-one", tmp_path / "wrong-two"
    for root in (wrong_one, wrong_two):
        shutil.copytree(forge, root)
        _with_wrong_bytes(root, pkg, conda_channels)
    mirrors = _mirrors(bg_loop, [wrong_one, forge, wrong_two])
    try:
        url = f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}"
        # First mirror wrong, second right: failed over, served, cached as the right file.
        cache = _cache(make_cache, mirrors[:2])
        answer = cache.get(url, headers={HEADER: pkg.sha256})
        assert (answer.status, _sha256(answer.body)) == (200, pkg.sha256)
        assert _asked(mirrors[0], pkg.filename) == 1 and _asked(mirrors[1], pkg.filename) == 1
        cached = cache.data_dir / "conda/cloud/conda-forge" / SUBDIR / pkg.filename
        assert _sha256(cached.read_bytes()) == pkg.sha256

        # Every mirror wrong: an error, nothing cached.
        every_wrong = _cache(make_cache, [mirrors[0], mirrors[2]])
        failed = every_wrong.get(url, headers={HEADER: pkg.sha256})
        assert failed.status == 502 and b"the sha256 the client expects" in failed.body, failed.body
        assert _asked(mirrors[2], pkg.filename) >= 1
        assert not (every_wrong.data_dir / "conda/cloud/conda-forge" / SUBDIR / pkg.filename).exists()
    finally:
        for started in mirrors:
            bg_loop.run(started.stop())


@pytest.mark.parametrize(
    ("policy", "refused_with"),
    [
        ({"deny": [{"name": "libfoo", "version": ">=1.1", "reason": "regression"}]}, b"regression"),
        ({"deny": ["libfoo"]}, b'deny[0] "libfoo"'),
        ({"min_release_age": "3d"}, b"its release time is not known"),
        ({"allow_only": True, "allow": ["app"]}, b"allow_only"),
    ],
)
def test_the_policy_refuses_a_removed_package_as_a_listed_one(
    policy: dict[str, Any],
    refused_with: bytes,
    conda_channels: Channels,
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
) -> None:
    pkg = _libfoo(conda_channels)
    cache = _cache(make_cache, [mirror], **policy)
    refused = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}", headers={HEADER: pkg.sha256})
    assert refused.status == 403, refused.body
    assert refused_with in refused.body and b"does not list it" in refused.body, refused.body
    assert _asked(mirror, pkg.filename) == 0


def test_an_age_rule_lets_a_removed_package_through_when_unknown_ages_are_allowed(
    conda_channels: Channels, mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    pkg = _libfoo(conda_channels)
    cache = _cache(make_cache, [mirror], min_release_age="3d", unknown_age="allow")
    answer = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}", headers={HEADER: pkg.sha256})
    assert (answer.status, answer.body) == (200, pkg.path.read_bytes())


def test_a_cached_removed_package_is_judged_by_a_rule_added_later(
    conda_channels: Channels, mirror: MirrorLikeUpstream, bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    """The hit path: a package its index does not list is judged there too, not let through for want of a record
    the filtering could have refused."""
    pkg = _libfoo(conda_channels)
    url = f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}"
    data_dir = tmp_path / "data"
    first = start_cache(bg_loop, _settings(data_dir, [mirror]))
    try:
        assert first.get(url, headers={HEADER: pkg.sha256}).status == 200
    finally:
        first.stop()
    assert (data_dir / "conda/cloud/conda-forge" / SUBDIR / pkg.filename).is_file()
    deny = _conda([mirror], deny=[{"name": "libfoo", "reason": "broken"}])
    denying = start_cache(bg_loop, cache_settings(data_dir, ["http://127.0.0.1:9/simple/"], conda=deny))
    try:
        for headers in ({}, {HEADER: pkg.sha256}):
            refused = denying.get(url, headers=headers)
            assert refused.status == 403 and b"broken" in refused.body, refused.body
        # A listed package of the same subdir is served as ever.
        app = find_pkg(conda_channels.forge_pkgs, "app")
        assert denying.get(f"/conda/{CHANNEL}/{SUBDIR}/{app.filename}").status == 200
    finally:
        denying.stop()


def test_an_offline_pkgcache_never_fetches_a_removed_package(
    conda_channels: Channels, mirror: MirrorLikeUpstream, bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    pkg = _libfoo(conda_channels)
    settings = _settings(tmp_path / "data", [mirror], server={"offline": True})
    offline = start_cache(bg_loop, settings)
    try:
        answer = offline.get(f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}", headers={HEADER: pkg.sha256})
        assert answer.status == 404 and b"offline" in answer.body, answer.body
    finally:
        offline.stop()
    assert mirror.paths() == []


def test_what_the_hit_path_asks_before_judging_a_package_its_index_may_not_list(tmp_path: Path) -> None:
    """ListedRecords.lists: what the hit path asks before judging (the scan waited for, not HIT_CHECK_WAIT)."""
    folder = tmp_path / "linux-64"
    folder.mkdir()
    (folder / "repodata.json").write_text(
        json.dumps({"packages": {"a-1-0.tar.bz2": {"sha256": "0" * 64, "size": 1}}, "removed": ["b-1-0.tar.bz2"]})
    )
    for name in ("a-1-0.tar.bz2", "b-1-0.tar.bz2"):
        (folder / name).write_bytes(b"x")

    meta = SimpleNamespace(missing=False, size=1, mtime_ns=1, fetched_at=1.0, extra={})

    async def meta_for(path: Path) -> Any:
        return meta if path.name == "repodata.json" else None

    records = ListedRecords(meta_for)

    async def check() -> tuple[bool, bool]:
        return await records.lists(folder / "a-1-0.tar.bz2"), await records.lists(folder / "b-1-0.tar.bz2")

    assert asyncio.run(check()) == (True, False)


def test_check_unlisted_applies_every_rule_and_the_unknown_age_setting() -> None:
    def policy(**settings: Any) -> CondaPolicy:
        return CondaPolicy(CondaPolicySettings.model_validate(settings))

    name = "libfoo-1.1-h1_0.conda"
    assert policy().check_unlisted("conda-forge", SUBDIR, name).allowed
    assert not policy(deny=["libfoo"]).check_unlisted("conda-forge", SUBDIR, name).allowed
    assert not policy(deny=[{"name": "libfoo", "build": "h1*"}]).check_unlisted("conda-forge", SUBDIR, name).allowed
    assert policy(deny=[{"name": "libfoo", "version": "<1.1"}]).check_unlisted("conda-forge", SUBDIR, name).allowed
    refused = policy(min_release_age="1d").check_unlisted("conda-forge", SUBDIR, name)
    assert not refused.allowed and "release time is not known" in refused.message
    assert policy(min_release_age="1d", unknown_age="allow").check_unlisted("conda-forge", SUBDIR, name).allowed


def test_rattler_installs_a_locked_package_the_channel_removed_since(
    conda_channels: Channels,
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    """pixi install --locked: the lock was made while libfoo 1.1 was listed; the channel has marked it broken since.
    rattler installs the lock's records with no solve, sending each one's sha256 (X-Expected-Sha256)."""
    root = tmp_path / "live-forge"
    shutil.copytree(conda_channels.forge, root)
    for name in INDEX_FORMS:
        for subdir in ("noarch", SUBDIR):
            (root / subdir / name).unlink(missing_ok=True)
    (started,) = _mirrors(bg_loop, [root])
    try:
        cache = _cache(make_cache, [started], index_ttl=1)
        channel = f"{cache.url}/conda/{CHANNEL}"
        lock = tmp_path / "pixi.lock"
        locked = write_pixi_lock([channel], [SUBDIR], ["app"], lock, tmp_path / "lock-cache")
        pkg = _libfoo(conda_channels)
        assert any(item["url"].endswith(pkg.filename) and item["sha256"] == pkg.sha256 for item in locked)

        _take_out(root, SUBDIR, pkg.filename, under_removed=True)
        deadline = time.monotonic() + 20
        while pkg.filename.encode() in _listed_part(cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata.json").body):
            assert time.monotonic() < deadline, "pkgcache's repodata still lists the package"
            time.sleep(0.3)

        done = run_locked_install(lock, SUBDIR, tmp_path / "env", tmp_path / "pkgs")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "env/share/libfoo/libfoo.txt").read_text() == "libfoo 1.1\n"
        assert _asked(started, pkg.filename) == 1
        served = json.loads(cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata.json").body)
        assert pkg.filename in served.get("removed", []) and pkg.filename not in served["packages.conda"]
    finally:
        bg_loop.run(started.stop())


def _listed_part(body: bytes) -> bytes:
    repodata = json.loads(body)
    return json.dumps({**repodata.get("packages", {}), **repodata.get("packages.conda", {})}).encode()


def test_a_removed_package_still_coming_after_the_wait_is_streamed_not_held_back(
    conda_channels: Channels,
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Held back whole until checked, a big package from a slow mirror would give its client no byte for as long as
    # the whole download takes, past its read timeout (conda's is 60 s): the wait is bounded.
    monkeypatch.setattr(cached_channels, "UNLISTED_WHOLE_WAIT", 0.2, raising=False)
    pkg = _libfoo(conda_channels)
    cache = _cache(make_cache, [mirror])
    assert cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata.json").status == 200  # at full speed
    seconds = 3.0
    mirror.bytes_per_second = max(1, int(pkg.size / seconds))
    connection = http.client.HTTPConnection(cache.url.removeprefix("http://"), timeout=30)
    try:
        started = time.monotonic()
        connection.request("GET", f"/conda/{CHANNEL}/{SUBDIR}/{pkg.filename}", headers={HEADER: pkg.sha256})
        response = connection.getresponse()
        headers_after = time.monotonic() - started
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200 and _sha256(body) == pkg.sha256
    # The mirror needs `seconds` for the body; its first bytes reached the client long before the last.
    assert headers_after < seconds / 2, headers_after
