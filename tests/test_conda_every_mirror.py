"""One conda file wrong on every mirror at once: that file fails, nothing else does, and it mends itself.

When every mirror sends the same bytes and they fail the check, the mirrors are not the likely liars: the cached
repodata may be older than a package the channel replaced, or the mirrors may all be caught mid-sync on one
`.zst`. No mirror is rested for it (resting them all would switch the whole side to the offline view), a replaced
package is looked up again in refreshed repodata, and a `.zst` that no mirror has sound is answered as not there,
so that clients and the shards made here use the `.json`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pkgcache.conda import cached_channels
from tests.cache_service import RunningCache
from tests.conda_support import SUBDIR, install, installed_names
from tests.fakes.conda_channel import _build_package, _index, _PkgSpec, build_channel
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.support import BackgroundLoop

CHANNEL = "cloud/conda-forge"


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    root = tmp_path / "forge"
    build_channel(root)  # repodata.json and .zst
    return root


@pytest.fixture
def mirrors(bg_loop: BackgroundLoop, channel: Path) -> Iterator[list[MirrorLikeUpstream]]:
    """Two mirrors of the same channel: whatever one serves wrong, the other serves the same way."""
    started = [MirrorLikeUpstream({"conda-forge": channel}, repodata_max_age=0) for _ in range(2)]
    for mirror in started:
        bg_loop.run(mirror.start())
    yield started
    for mirror in started:
        bg_loop.run(mirror.stop())


def _cache(make_cache: Callable[..., RunningCache], mirrors: list[MirrorLikeUpstream]) -> RunningCache:
    upstreams = [
        {"name": f"mirror{n}", "pkgs_url": f"{m.url}/anaconda/pkgs/", "cloud_url": f"{m.url}/anaconda/cloud/"}
        for n, m in enumerate(mirrors)
    ]
    # The repodata stays fresh for the whole test: only a contradiction may send pkgcache to look again.
    conda = {"upstreams": upstreams, "channels": [CHANNEL], "index_ttl": 600}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda)


def _get_body(cache: RunningCache, path: str) -> tuple[int, bytes | None]:
    """Status and body, None for a body cut before its end (streaming had begun when the check failed)."""
    try:
        answer = cache.get(path)
    except http.client.IncompleteRead:
        return 200, None
    return answer.status, answer.body


def _resting(cache: RunningCache) -> list[str]:
    status = json.loads(cache.get("/-/status").body)
    return [up["name"] for up in status["upstreams"]["conda"] if up.get("cooldown_remaining", 0) > 0]


def _rebuild(channel: Path, name: str, version: str, ext: str, payload: bytes) -> str:
    """The channel replaces a package with new bytes under the same file name, and indexes again."""
    filename = f"{name}-{version}-h1_0{ext}"
    (channel / SUBDIR / filename).unlink()
    spec = _PkgSpec(name, version, "h1_0", 0, SUBDIR, ext, (), {f"share/{name}/{name}.txt": payload})
    new = _build_package(spec, channel)
    _index(channel, sharded=False, write_zst=True)
    return new.sha256


def test_a_package_the_channel_replaced_is_fetched_again_against_refreshed_repodata(
    channel: Path,
    mirrors: list[MirrorLikeUpstream],
    make_cache: Callable[..., RunningCache],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cached_channels, "MISSING_PACKAGE_RECHECK_SECONDS", 0.0)
    cache = _cache(make_cache, mirrors)
    base = f"/conda/{CHANNEL}/{SUBDIR}/"
    assert cache.get(base + "repodata.json").status == 200  # cached, and fresh for ten minutes
    new_sha256 = _rebuild(channel, "libfoo", "1.1", ".conda", b"libfoo 1.1, rebuilt\n")

    status, body = _get_body(cache, base + "libfoo-1.1-h1_0.conda")
    assert status == 502 or body is None, status  # both mirrors' bytes fail the cached record: never served whole
    assert not (cache.data_dir / "conda" / "cloud" / "conda-forge" / SUBDIR / "libfoo-1.1-h1_0.conda").exists()
    assert _resting(cache) == []  # neither mirror is blamed for it...
    # ...so the rest of the channel is still fetched from them, not refused by an offline view.
    assert cache.get(base + "libfoo-1.0-h1_0.tar.bz2").status == 200

    answer = cache.get(base + "libfoo-1.1-h1_0.conda")  # looked up again in the refreshed repodata
    assert answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == new_sha256
    fetched = [p for p in mirrors[0].paths("GET") + mirrors[1].paths("GET") if p.endswith(f"{SUBDIR}/repodata.json")]
    assert len(fetched) == 2, fetched  # the first fetch, and the refresh the contradiction asked for


def test_a_mirror_that_sends_a_bad_package_is_rested_once_the_other_sends_it_right(
    channel: Path, mirrors: list[MirrorLikeUpstream], make_cache: Callable[..., RunningCache]
) -> None:
    cache = _cache(make_cache, mirrors)
    pkg = "libfoo-1.1-h1_0.conda"
    mirrors[0].faults.corrupt_files = {pkg}
    good = hashlib.sha256((channel / SUBDIR / pkg).read_bytes()).hexdigest()
    status, body = _get_body(cache, f"/conda/{CHANNEL}/{SUBDIR}/{pkg}")
    if body is not None:  # cut, at worst, while the first mirror's bytes went out
        assert status == 200 and hashlib.sha256(body).hexdigest() == good
    assert _resting(cache) == ["mirror0"]


# How a mirror's .zst goes bad: caught mid-sync (cut short: found at its end), or something else in its place
# (found at its first bytes). Every mirror serves the same file here.
BROKEN_ZST = {
    "cut-short": lambda good: good[: len(good) // 2],
    "not-zstd": lambda good: b"<html><body>syncing, come back later</body></html>",
}


def _break_zst(channel: Path, how: str) -> None:
    zst = channel / SUBDIR / "repodata.json.zst"
    zst.write_bytes(BROKEN_ZST[how](zst.read_bytes()))


@pytest.mark.parametrize("how", sorted(BROKEN_ZST))
def test_a_zst_broken_on_every_mirror_sends_clients_and_shards_to_the_json(
    how: str,
    channel: Path,
    mirrors: list[MirrorLikeUpstream],
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    _break_zst(channel, how)
    cache = _cache(make_cache, mirrors)
    base = f"/conda/{CHANNEL}/{SUBDIR}/"
    # A package's record is looked up in the .json once the .zst proves unsound on every mirror.
    pkg = "libfoo-1.0-h1_0.tar.bz2"
    answer = cache.get(base + pkg)
    assert answer.status == 200, answer.body
    assert hashlib.sha256(answer.body).hexdigest() == hashlib.sha256((channel / SUBDIR / pkg).read_bytes()).hexdigest()
    assert _resting(cache) == []

    # Clients now get a .zst made here from the .json, which decompresses to the channel's records.
    zst = cache.get(base + "repodata.json.zst")
    assert zst.status == 200
    served: dict[str, Any] = json.loads(_unzstd(zst.body))
    assert (
        served["packages.conda"].keys()
        == json.loads((channel / SUBDIR / "repodata.json").read_text())["packages.conda"].keys()
    )

    # And a real client solves through shards made here from the .json.
    _, result = install(tmp_path, [f"{cache.url}/conda/{CHANNEL}"], ["app"])
    assert {"app", "libfoo", "pydata", "tzinfo"} <= installed_names(result)


def _unzstd(body: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)


@pytest.mark.parametrize("how", sorted(BROKEN_ZST))
def test_a_zst_broken_on_every_mirror_on_the_first_shard_request_is_made_from_the_json(
    how: str, channel: Path, mirrors: list[MirrorLikeUpstream], make_cache: Callable[..., RunningCache]
) -> None:
    _break_zst(channel, how)
    cache = _cache(make_cache, mirrors)
    index = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata_shards.msgpack.zst")
    assert index.status == 200, index.body
    assert _resting(cache) == []
