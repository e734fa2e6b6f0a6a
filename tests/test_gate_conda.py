"""The supply-chain policy on the conda side, with real rattler: repodata, its .zst and the shards made here leave
out what is refused; a refused package asked for directly says why; a block takes effect at once."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from pkgcache.conda.repodata_filter import NOT_A_RECORD, FilterJob, filter_repodata
from pkgcache.policy.config import CondaPolicySettings
from tests.cache_service import CacheProcess, RunningCache, cache_settings, start_cache
from tests.clients.rattler_client import run_rattler_install
from tests.conda_support import SUBDIR, Channels, installed_names
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.support import BackgroundLoop, http_get

CHANNEL = "cloud/conda-forge"
TOKEN = "a-test-token-long-enough"
LIBFOO_NEW = "libfoo-1.1-h1_0.conda"


@pytest.fixture
def young_forge(conda_channels: Channels, bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[MirrorLikeUpstream]:
    """conda-forge on a plain-JSON mirror, where libfoo 1.1 was built a minute ago."""
    forge = tmp_path / "young-forge"
    shutil.copytree(conda_channels.forge, forge)
    repodata_path = forge / SUBDIR / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    repodata["packages.conda"][LIBFOO_NEW]["timestamp"] = int((time.time() - 60) * 1000)
    repodata_path.write_text(json.dumps(repodata, indent=1))
    upstream = MirrorLikeUpstream({"conda-forge": forge}, only_json=True)
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


def _cache(make_cache: Callable[..., RunningCache], upstream: Any, **conda: Any) -> RunningCache:
    section = {"upstreams": [upstream], "channels": [CHANNEL], **conda}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=section, access={"admin_token": TOKEN})


def _install(cache: RunningCache, tmp_path: Path, name: str, *specs: str, sharded: bool = True) -> dict[str, Any]:
    extra = [] if sharded else ["--no-sharded"]
    return run_rattler_install(
        [f"{cache.url}/conda/{CHANNEL}"], tmp_path / name, tmp_path / f"{name}-cache", list(specs), extra_args=extra
    )


def _versions(result: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["version"] for item in result["installed"]}


def _served_records(cache: RunningCache, filename: str = "repodata.json") -> set[str]:
    answer = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/{filename}")
    assert answer.status == 200, answer.body
    body = answer.body
    if filename.endswith(".zst"):
        body = zstandard.ZstdDecompressor().stream_reader(body).read()
    repodata = json.loads(body)
    return set(repodata["packages"]) | set(repodata["packages.conda"])


@pytest.mark.parametrize("sharded", [True, False])
def test_rattler_resolves_around_a_package_too_young(
    sharded: bool,
    young_forge: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    cache = _cache(make_cache, f"{young_forge.url}/anaconda/", min_release_age="3d")

    result = _install(cache, tmp_path, "env", "app", sharded=sharded)
    assert _versions(result)["libfoo"] == "1.0"
    assert any(path.endswith(f"{SUBDIR}/repodata.json") for path in young_forge.paths())
    for form in ("repodata.json", "repodata.json.zst"):
        served = _served_records(cache, form)
        assert LIBFOO_NEW not in served and "libfoo-1.0-h1_0.tar.bz2" in served
    if sharded:
        assert cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata_shards.msgpack.zst").status == 200

    refused = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/{LIBFOO_NEW}")
    assert refused.status == 403
    assert b'[conda] min_release_age = "3d"' in refused.body and b"served from" in refused.body
    assert not any(path.endswith(LIBFOO_NEW) for path in young_forge.paths())


def test_the_upstreams_own_shards_are_not_passed_through_while_a_filter_is_in_force(
    anaconda_upstream: AnacondaLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    config = {
        "name": "anaconda-fake",
        "pkgs_url": f"{anaconda_upstream.repo.url}/pkgs/",
        "cloud_url": f"{anaconda_upstream.conda.url}/",
    }
    cache = _cache(make_cache, config, deny=[{"name": "libfoo", "version": ">=1.1", "reason": "regression"}])

    result = _install(cache, tmp_path, "env", "app")
    assert _versions(result)["libfoo"] == "1.0"
    # The upstream is sharded, and its shards list libfoo 1.1: pkgcache made its own from the filtered repodata.
    assert not any(path.endswith("repodata_shards.msgpack.zst") for path in anaconda_upstream.paths())
    assert not any("/shards/" in path for path in anaconda_upstream.paths())
    status = json.loads(cache.get("/-/status").body)["conda"]
    assert f"{CHANNEL}/{SUBDIR}" in status["shards"]["made_here"]
    assert status["gate"]["rules"] == ['[conda] deny[0] "libfoo >=1.1" (reason: regression)']


def test_a_conda_block_takes_effect_at_once_in_shards_repodata_and_downloads(
    conda_mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = _cache(make_cache, f"{conda_mirror.url}/anaconda/")
    assert _versions(_install(cache, tmp_path, "before", "app"))["libfoo"] == "1.1"
    cached = cache.data_dir / "conda/cloud/conda-forge" / SUBDIR / LIBFOO_NEW
    assert cached.is_file()

    bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Length": "0"}
    blocked = cache.get("/-/admin/conda/block?target=libfoo==1.1&reason=broken%20build&who=ops", bearer, "POST")
    assert blocked.status == 200, blocked.body
    assert json.loads(blocked.body)["purged_files"] == 1 and not cached.exists()

    for name, sharded in (("sharded", True), ("plain", False)):
        assert _versions(_install(cache, tmp_path, name, "app", sharded=sharded))["libfoo"] == "1.0"
    refused = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/{LIBFOO_NEW}")
    assert refused.status == 403 and b"blocked: libfoo==1.1 by ops" in refused.body and b"broken build" in refused.body

    assert cache.get("/-/admin/conda/unblock?target=libfoo==1.1", bearer, "POST").status == 200
    assert _versions(_install(cache, tmp_path, "after", "app"))["libfoo"] == "1.1"


def test_a_denied_package_asked_for_by_a_stale_solve_is_refused_with_the_reason(
    conda_mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = _cache(make_cache, f"{conda_mirror.url}/anaconda/", deny=["bigpkg"])
    with pytest.raises(RuntimeError, match="bigpkg"):
        _install(cache, tmp_path, "env", "bigpkg")  # not in any repodata the client sees
    refused = cache.get(f"/conda/{CHANNEL}/noarch/bigpkg-1.0-h0_0.conda")
    assert refused.status == 403 and b'[conda] deny[0] "bigpkg"' in refused.body
    assert refused.headers.get("content-type", "").startswith("text/plain")
    assert installed_names(_install(cache, tmp_path, "app", "app")) == {"app", "libfoo", "pydata", "tzinfo"}


@pytest.fixture
def odd_forge(conda_channels: Channels, bg_loop: BackgroundLoop, tmp_path: Path) -> Iterator[MirrorLikeUpstream]:
    """conda-forge on a plain-JSON mirror whose repodata has odd records beside the real ones: libfoo 3.0 named
    "libfoo " and " libfoo" (libfoo 1.1's bytes, so the mirror would serve them), and a record named 123."""
    forge = tmp_path / "odd-forge"
    shutil.copytree(conda_channels.forge, forge)
    repodata_path = forge / SUBDIR / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    real = repodata["packages.conda"][LIBFOO_NEW]
    for filename, name in ODD_RECORDS.items():
        shutil.copy(forge / SUBDIR / LIBFOO_NEW, forge / SUBDIR / filename)
        repodata["packages.conda"][filename] = {**real, "name": name, "version": filename.split("-")[1]}
    repodata_path.write_text(json.dumps(repodata, indent=1))
    upstream = MirrorLikeUpstream({"conda-forge": forge}, only_json=True)
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


ODD_RECORDS = {"libfoo-3.0-h1_0.conda": "libfoo ", "libfoo-3.1-h1_0.conda": " libfoo", "zzz-9.0-h1_0.conda": 123}


def test_records_whose_names_cannot_be_read_are_refused_everywhere_and_the_subdir_is_served(
    odd_forge: MirrorLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    """A deny rule is not got round by padding a name (it was: the filter compared "libfoo " and the repodata and
    shards kept it, its download answered 200), and one record named 123 does not make the whole subdir a 500."""
    cache = _cache(make_cache, f"{odd_forge.url}/anaconda/", deny=["libfoo >=1.1"])

    for form in ("repodata.json", "repodata.json.zst"):
        served = _served_records(cache, form)
        assert not served & set(ODD_RECORDS) and LIBFOO_NEW not in served
        assert {"libfoo-1.0-h1_0.tar.bz2", "app-1.0-h1_0.conda"} <= served
    index = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/repodata_shards.msgpack.zst")
    assert index.status == 200
    shards = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(index.body, max_output_size=1 << 24))["shards"]
    in_shards = set()
    for digest in shards.values():
        shard = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/shards/{digest.hex()}.msgpack.zst")
        assert shard.status == 200
        content = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(shard.body, max_output_size=1 << 24))
        in_shards |= set(content["packages"]) | set(content["packages.conda"])
    assert sorted(shards) == ["app", "libfoo"] and not in_shards & set(ODD_RECORDS)
    for filename in ODD_RECORDS:
        refused = cache.get(f"/conda/{CHANNEL}/{SUBDIR}/{filename}")
        assert refused.status == 403, (filename, refused.status)
        assert b"[conda] its package name cannot be read" in refused.body
        assert not any(path.endswith(filename) for path in odd_forge.paths())
    for name, sharded in (("sharded", True), ("plain", False)):
        assert _versions(_install(cache, tmp_path, name, "app", sharded=sharded))["libfoo"] == "1.0"


@pytest.mark.parametrize("cached", [False, True], ids=["not-cached", "cached"])
@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.unlink(),
        lambda path: path.write_bytes(path.read_bytes()[:-7]),
        lambda path: path.write_text('{"libfoo-1.1-h1_0.conda": "refused"}'),
    ],
    ids=["removed", "cut-short", "not-refusals"],
)
def test_a_filtered_view_whose_refusals_are_lost_is_made_again_and_still_refuses(
    cached: bool,
    damage: Callable[[Path], None],
    conda_mirror: MirrorLikeUpstream,
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    """The refusals of a filtering, read back after a restart to answer a package asked for directly: missing or
    unreadable, they say nothing, and the view counts as not made (it is made again from the repodata, with the
    rules), never as "nothing refused". `cached`: libfoo 1.1 was fetched before the rule came in (its refusal
    is then read from the last filtering without looking at the repodata's freshness)."""
    data = tmp_path / "data"
    upstream = f"{conda_mirror.url}/anaconda/"
    package = f"/conda/{CHANNEL}/{SUBDIR}/{LIBFOO_NEW}"

    def started(**conda: Any) -> RunningCache:
        section = {"upstreams": [upstream], "channels": [CHANNEL], **conda}
        return start_cache(bg_loop, cache_settings(data, ["http://127.0.0.1:9/simple/"], conda=section))

    if cached:
        cache = started()
        assert cache.get(package).status == 200
        cache.wait_for_downloads_to_end()
        cache.stop()
    cache = started(deny=["libfoo >=1.1"])
    try:
        assert LIBFOO_NEW not in _served_records(cache)
        assert cache.get(package).status == 403
    finally:
        cache.stop()
    (refusals,) = (data / "conda" / CHANNEL / SUBDIR / "filtered").glob("*/repodata.json.refused.json")
    damage(refusals)
    conda_mirror.reset_log()

    cache = started(deny=["libfoo >=1.1"])
    try:
        refused = cache.get(package)
        assert refused.status == 403, refused.body
        assert b'[conda] deny[0] "libfoo >=1.1"' in refused.body
        assert not any(path.endswith(LIBFOO_NEW) for path in conda_mirror.paths())
        assert LIBFOO_NEW in json.loads(refusals.read_bytes())  # made again, whole
        assert LIBFOO_NEW not in _served_records(cache) and "libfoo-1.0-h1_0.tar.bz2" in _served_records(cache)
    finally:
        cache.stop()


# --- the filter itself ---

RECORD = {"name": "x", "version": "1.0", "build": "h0_0", "build_number": 0, "depends": [], "license": "MIT"}


def test_filtering_keeps_the_document_and_every_record_it_does_not_refuse(tmp_path: Path) -> None:
    old = int((time.time() - 30 * 86400) * 1000)
    young = int((time.time() - 60) * 1000)
    source = {
        "info": {"subdir": "linux-64", "base_url": "https://example.org/x/"},
        "packages": {
            "a-1.0-h0_0.tar.bz2": {**RECORD, "name": "a", "timestamp": old},
            "b-2.0-h0_0.tar.bz2": {**RECORD, "name": "b", "version": "2.0", "timestamp": young},
        },
        "packages.conda": {"b-2.0-h0_0.conda": {**RECORD, "name": "b", "version": "2.0", "timestamp": young}},
        "removed": ["gone-1.0-h0_0.tar.bz2"],
        "repodata_version": 2,
        "v3": {"whl": {"c-1.0-py3-none-any.whl": {**RECORD, "name": "c", "timestamp": old}}},
    }
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps(source, indent=2))
    settings = CondaPolicySettings(min_release_age="7d")
    job = FilterJob("cloud/x", "linux-64", time.time(), settings.model_dump(mode="json", by_alias=True), (), "f")

    outcome = filter_repodata(path, tmp_path / "out.json", tmp_path / "out.json.zst", job)

    written = json.loads((tmp_path / "out.json").read_text())
    expected = {**source, "packages": {"a-1.0-h0_0.tar.bz2": source["packages"]["a-1.0-h0_0.tar.bz2"]}}
    # All but info.base_url (CEP-15): packages are fetched beside the filtered repodata, from pkgcache.
    assert written == {**expected, "info": {"subdir": "linux-64"}, "packages.conda": {}}
    decompressed = zstandard.ZstdDecompressor().stream_reader((tmp_path / "out.json.zst").read_bytes()).read()
    assert decompressed == (tmp_path / "out.json").read_bytes()
    assert outcome.kept == 2 and set(outcome.refused) == {"b-2.0-h0_0.tar.bz2", "b-2.0-h0_0.conda"}
    assert all(status == 403 and "served from" in message for status, message in outcome.refused.values())
    assert outcome.valid_until is not None and outcome.valid_until > time.time() + 6 * 86400


@pytest.mark.parametrize("odd", [5, "x", ["a", "b"], None], ids=["a number", "a string", "a list", "null"])
def test_a_record_that_is_not_an_object_is_refused_and_the_rest_filtered(tmp_path: Path, odd: object) -> None:
    """It failed the whole filtered view (and the shards made from it) with a policy in force."""
    path = tmp_path / "repodata.json"
    records = {"a-1.0-h0_0.conda": {**RECORD, "name": "a"}, "odd-1.0-h0_0.conda": odd}
    path.write_text(json.dumps({"packages": {}, "packages.conda": records}))
    settings = CondaPolicySettings(deny=["zzz"]).model_dump(mode="json", by_alias=True)
    job = FilterJob("cloud/x", "linux-64", time.time(), settings, (), "f")

    outcome = filter_repodata(path, tmp_path / "out.json", None, job)

    assert json.loads((tmp_path / "out.json").read_text())["packages.conda"] == {
        "a-1.0-h0_0.conda": records["a-1.0-h0_0.conda"]
    }
    assert outcome.kept == 1 and outcome.refused == {"odd-1.0-h0_0.conda": (403, NOT_A_RECORD)}


def test_records_without_a_timestamp_are_judged_by_when_pkgcache_first_saw_them(tmp_path: Path) -> None:
    path = tmp_path / "repodata.json"
    records = {f"n{i}-1.0-h0_0.conda": {**RECORD, "name": f"n{i}"} for i in range(3)}
    path.write_text(json.dumps({"packages": {}, "packages.conda": records}))
    policy = CondaPolicySettings(min_release_age="1d", unknown_age="allow").model_dump(mode="json", by_alias=True)
    now = time.time()

    def run(first_seen: dict[str, float], since: float | None) -> Any:
        job = FilterJob("cloud/x", "noarch", now, policy, (), "f", first_seen=first_seen, first_seen_since=since)
        return filter_repodata(path, tmp_path / "out.json", None, job)

    first = run({}, None)  # first sight: their age is not known, and "allow" lets them through
    assert first.kept == 3 and set(first.new_first_seen) == set(records)
    # n2 was there at first sight; n0 and n1 appeared an hour ago, so they are an hour old at most.
    seen = {"n0-1.0-h0_0.conda": now - 3600, "n1-1.0-h0_0.conda": now - 3600, "n2-1.0-h0_0.conda": now - 7200}
    later = run(seen, now - 7200)
    assert later.kept == 1 and set(later.refused) == {"n0-1.0-h0_0.conda", "n1-1.0-h0_0.conda"}
    assert later.new_first_seen == {}


def test_when_a_conda_block_returns_no_worker_lists_the_package(
    conda_mirror: MirrorLikeUpstream, tmp_path: Path
) -> None:
    """Every worker serves the cached repodata and shards; right after the block's API call returns, whichever
    worker a request lands on, neither the repodata (and its .zst) nor the shards list the blocked package, and
    right after the unblock they list it again."""
    config = tmp_path / "pkgcache.toml"
    config.write_text(
        f'[pypi]\nenabled = false\n[conda]\nchannels = ["{CHANNEL}"]\nupstreams = ["{conda_mirror.url}/anaconda/"]\n'
        f'[access]\nadmin_token = "{TOKEN}"\n'
    )
    process = CacheProcess(tmp_path / "data", "--workers", "4", "--config", str(config))
    base = f"{process.url}/conda/{CHANNEL}/{SUBDIR}/"
    bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Length": "0"}

    def served(form: str) -> set[str]:
        answer = http_get(base + form)  # a new connection each: the kernel spreads them over the workers
        assert answer.status == 200, (form, answer.status, answer.body[:200])
        body = zstandard.ZstdDecompressor().stream_reader(answer.body).read() if form.endswith(".zst") else answer.body
        repodata = json.loads(body)
        return set(repodata["packages"]) | set(repodata["packages.conda"])

    def libfoo_in_shards() -> set[str]:
        index = msgpack.unpackb(zstandard.ZstdDecompressor().stream_reader(
            http_get(base + "repodata_shards.msgpack.zst").body).read())  # fmt: skip
        shard = http_get(base + f"shards/{index['shards']['libfoo'].hex()}.msgpack.zst")
        assert shard.status == 200, shard.status
        records = msgpack.unpackb(zstandard.ZstdDecompressor().stream_reader(shard.body).read())
        return set(records["packages"]) | set(records["packages.conda"])

    try:
        deadline = time.monotonic() + 20
        while not all(
            int(row["requests"]) > 0 for row in json.loads(http_get(process.url + "/-/status").body)["workers"]
        ):
            assert time.monotonic() < deadline, "not every worker served the repodata"
            for _ in range(20):
                assert LIBFOO_NEW in served("repodata.json") and LIBFOO_NEW in libfoo_in_shards()
            time.sleep(0.3)  # each worker publishes its counters once a second

        for round in range(4):
            blocked = http_get(
                f"{process.url}/-/admin/conda/block?target=libfoo==1.1&reason=broken&who=ops", bearer, "POST"
            )
            assert blocked.status == 200 and json.loads(blocked.body).get("workers_behind", []) == [], blocked.body
            for form in ("repodata.json", "repodata.json.zst"):
                listing = [served(form) for _ in range(15)]
                assert [s for s in listing if LIBFOO_NEW in s] == [], f"round {round}: {form} still lists it"
            assert [s for s in (libfoo_in_shards() for _ in range(15)) if LIBFOO_NEW in s] == [], round
            assert http_get(base + LIBFOO_NEW).status == 403

            lifted = http_get(f"{process.url}/-/admin/conda/unblock?target=libfoo==1.1", bearer, "POST")
            assert lifted.status == 200, lifted.body
            listing = [served("repodata.json") for _ in range(15)]
            assert [s for s in listing if LIBFOO_NEW not in s] == [], f"round {round}: still left out"
            assert [s for s in (libfoo_in_shards() for _ in range(15)) if LIBFOO_NEW not in s] == [], round
    finally:
        assert process.terminate() == 0
