"""Sharded repodata made here (issue 12): py-rattler solves and installs through pkgcache from a mirror that has no
shards, reading the shards pkgcache made instead of repodata.json, and again after the mirror's repodata changed."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from pkgcache.conda import generated_shards, shard_packs
from pkgcache.conda.shard_packs import PackWriter
from tests.cache_service import RunningCache, start_cache
from tests.conda_support import APP_TREE, SUBDIR, install, installed_names
from tests.fakes.conda_channel import BUILD_TIMESTAMP_MS, _build_package, _PkgSpec, build_channel
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.support import BackgroundLoop

SHARD_INDEX = "repodata_shards.msgpack.zst"


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    """A channel of this test's own (it changes): repodata.json only, as a domestic mirror serves it."""
    root = tmp_path / "forge"
    build_channel(root)
    return root


@pytest.fixture
def mirror(bg_loop: BackgroundLoop, channel: Path) -> Iterator[MirrorLikeUpstream]:
    upstream = MirrorLikeUpstream({"conda-forge": channel}, only_json=True, repodata_max_age=0)
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


@pytest.fixture
def builds_in_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build in a builder process, as a subdir bigger than the test channel's takes (theirs are a few KB,
    which pkgcache otherwise makes into shards in its own process)."""
    monkeypatch.setattr(generated_shards, "IN_PROCESS_MAX_BYTES", -1)


def _cache(
    make_cache: Callable[..., RunningCache], mirror: MirrorLikeUpstream, **sections: dict[str, Any]
) -> RunningCache:
    base = f"{mirror.url}/anaconda/"
    config = {"name": "mirror", "pkgs_url": base + "pkgs/", "cloud_url": base + "cloud/"}
    conda = {"upstreams": [config], "channels": ["cloud/conda-forge"], "index_ttl": 0}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda, **sections)


def _access_lines(capsys: pytest.CaptureFixture[str], wait_for: str) -> list[str]:
    """What pkgcache's access log wrote (after "pkgcache.access: "), once a line with `wait_for` is among them."""
    written, deadline = capsys.readouterr().err, time.monotonic() + 5
    while wait_for not in written and time.monotonic() < deadline:
        time.sleep(0.05)
        written += capsys.readouterr().err
    return [line.partition("pkgcache.access: ")[2] for line in written.splitlines() if "pkgcache.access: " in line]


def _client_requests(capsys: pytest.CaptureFixture[str], wait_for: str) -> list[str]:
    """The conda requests pkgcache logged (method and path), once a line with `wait_for` is among them."""
    written, deadline = "", time.monotonic() + 5
    while wait_for not in written and time.monotonic() < deadline:
        time.sleep(0.05)
        written += capsys.readouterr().err
    lines = [line.partition("pkgcache.access: ")[2] for line in written.splitlines() if "pkgcache.access: " in line]
    return [" ".join(line.split()[:2]) for line in lines if "/conda/" in line]


def _unpack(body: bytes) -> Any:
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26), raw=False)


def _assert_shards_hold_the_repodata(cache: RunningCache, channel: Path) -> None:
    """Every record in the shards pkgcache serves equals the mirror's repodata.json's (hashes as bytes)."""
    for subdir in ("noarch", SUBDIR):
        base = f"/conda/cloud/conda-forge/{subdir}/"
        index = _unpack(cache.get(base + SHARD_INDEX).body)
        assert index["info"]["base_url"] == "" and index["info"]["shards_base_url"] == "./shards/"
        repodata = json.loads((channel / subdir / "repodata.json").read_text())
        seen: dict[str, dict[str, Any]] = {}
        for name, digest in index["shards"].items():
            shard = _unpack(cache.get(base + f"shards/{digest.hex()}.msgpack.zst").body)
            for section in ("packages", "packages.conda"):
                for filename, record in shard[section].items():
                    assert record["name"].lower() == name
                    seen[filename] = {k: v.hex() if isinstance(v, bytes) else v for k, v in record.items()}
        expected = {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}
        assert seen == expected


@pytest.mark.parametrize("made", ["in the service", "by a builder process"])
def test_rattler_solves_through_shards_made_here_and_again_after_the_repodata_changed(
    mirror: MirrorLikeUpstream,
    channel: Path,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    made: str,
) -> None:
    if made == "by a builder process":
        monkeypatch.setattr(generated_shards, "IN_PROCESS_MAX_BYTES", -1)
    caplog.set_level(logging.INFO, logger="pkgcache.access")
    caplog.set_level(logging.INFO, logger="pkgcache.conda.generated_shards")
    cache = _cache(make_cache, mirror)
    url = f"{cache.url}/conda/cloud/conda-forge"
    _, first = install(tmp_path, [url], ["app"], name="first")
    libfoo_shard = _unpack(cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}").body)["shards"]["libfoo"]
    assert installed_names(first) == APP_TREE
    asked = _client_requests(capsys, "/shards/")
    # The client read the shard indexes and shards pkgcache made, never repodata.json.
    assert any(line.endswith(f"/{SUBDIR}/{SHARD_INDEX}") for line in asked), asked
    assert any("/shards/" in line for line in asked) and not any("repodata.json" in line for line in asked)
    # pkgcache asked the mirror for shards (it has none), and built them from its repodata.json.
    assert mirror.count(SHARD_INDEX) >= 1 and mirror.count(f"/{SUBDIR}/repodata.json") >= 1
    status = json.loads(cache.get("/-/status").body)["conda"]["shards"]
    assert f"cloud/conda-forge/{SUBDIR}" in status["made_here"]
    assert f'pkgcache_shards_made{{subdir="cloud/conda-forge/{SUBDIR}"}}' in cache.get("/metrics").body.decode()
    assert f"cloud/conda-forge/{SUBDIR}: made here" in cache.get("/", {"Accept-Language": "en"}).body.decode()
    _assert_shards_hold_the_repodata(cache, channel)
    builds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("made ")]
    assert len(builds) == 2 and all(("own process" in b) == (made == "in the service") for b in builds), builds

    # The mirror's repodata changes: libfoo 1.1 goes, a new noarch package comes.
    extra = _build_package(
        _PkgSpec("extra", "1.0", "py_0", 0, "noarch", ".conda", ("tzinfo",), {"share/extra/extra.txt": b"x\n"}),
        channel,
    )
    _change(channel / "noarch" / "repodata.json", add={extra.filename: _record(extra)})
    _change(channel / SUBDIR / "repodata.json", remove=["libfoo-1.1-h1_0.conda"])
    # Requests see the repodata changed (index_ttl = 0: revalidated each time) and are served the current shards
    # while new ones are built from it: soon every subdir's index has them.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        noarch = _unpack(cache.get(f"/conda/cloud/conda-forge/noarch/{SHARD_INDEX}").body)
        platform = _unpack(cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}").body)
        if "extra" in noarch["shards"] and platform["shards"]["libfoo"] != libfoo_shard:
            break
        time.sleep(0.2)
    _, second = install(tmp_path, [url], ["app", "extra"], name="second")
    versions = {p["name"]: p["version"] for p in second["installed"]}
    assert versions["libfoo"] == "1.0" and "extra" in versions
    assert (tmp_path / "second" / "share/extra/extra.txt").read_bytes() == b"x\n"
    _assert_shards_hold_the_repodata(cache, channel)


def test_a_new_package_is_served_while_the_repodata_that_lists_it_is_revalidated_again(
    bg_loop: BackgroundLoop, mirror: MirrorLikeUpstream, channel: Path, make_cache: Callable[..., RunningCache]
) -> None:
    """A client that learned of a new package from the shards made here asks for it while repodata.json is being
    revalidated again (index_ttl 0: each shard index request starts one). The package is looked up in the cached
    repodata.json, which lists it, not in the .zst made here from an older repodata.json: never a 404."""
    # The mirror's silence below lasts until it is stopped, not until pkgcache gives up on it.
    cache = _cache(make_cache, mirror, upstream={"first_byte_timeout": 3600})
    base = "/conda/cloud/conda-forge/noarch/"
    assert cache.get(base + SHARD_INDEX).status == 200
    # Made from repodata.json on the way (the mirror has no .zst), and made again only when a client asks for it.
    assert (cache.data_dir / "conda/cloud/conda-forge/noarch/repodata.json.zst").is_file()
    extra = _build_package(
        _PkgSpec("extra", "1.0", "py_0", 0, "noarch", ".conda", ("tzinfo",), {"share/extra/extra.txt": b"x\n"}),
        channel,
    )
    _change(channel / "noarch" / "repodata.json", add={extra.filename: _record(extra)})
    deadline = time.monotonic() + 30
    while "extra" not in _unpack(cache.get(base + SHARD_INDEX).body)["shards"] and time.monotonic() < deadline:
        time.sleep(0.2)  # each request revalidates repodata.json; new shards are built from the new one
    assert "extra" in _unpack(cache.get(base + SHARD_INDEX).body)["shards"]
    cache.wait_for_downloads_to_end()
    # The mirror now holds the next revalidation of repodata.json: it stays in flight while the client goes on.
    mirror.faults.fail_paths, mirror.faults.fail_mode = {"/noarch/repodata.json"}, "hang"
    mirror.faults.hang_seconds = 3600
    asked = mirror.count("/noarch/repodata.json")
    assert cache.get(base + SHARD_INDEX).status == 200
    deadline = time.monotonic() + 30
    while mirror.count("/noarch/repodata.json") == asked and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mirror.count("/noarch/repodata.json") == asked + 1
    answer = cache.get(base + extra.filename)
    assert answer.status == 200, answer.body[:300]
    assert hashlib.sha256(answer.body).hexdigest() == extra.sha256
    assert mirror.count(f"/noarch/{extra.filename}") == 1
    # The revalidation was still held all along (it ends, failing, when the mirror stops).
    assert cache.downloads_in_flight() >= 1
    bg_loop.run(mirror.stop())


def test_an_upstreams_own_shards_are_still_passed_through(
    anaconda_upstream: Any, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    from tests.test_conda_proxy import anaconda_config, channel_urls, conda_cache

    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    _, result = install(tmp_path, channel_urls(cache)[1:], ["app"])  # conda-forge, sharded upstream
    assert installed_names(result) == APP_TREE
    assert any("/shards/" in path for path in anaconda_upstream.paths())
    status = json.loads(cache.get("/-/status").body)["conda"]["shards"]
    assert any(key.startswith("cloud/conda-forge/") for key in status["passed_through"])
    assert not any(key.startswith("cloud/conda-forge/") for key in status["made_here"])


def _change(path: Path, *, add: dict[str, dict[str, Any]] | None = None, remove: list[str] = ()) -> None:
    document = json.loads(path.read_text())
    document.setdefault("packages.conda", {}).update(add or {})
    for filename in remove:
        for section in ("packages", "packages.conda"):
            document.get(section, {}).pop(filename, None)
        document.setdefault("removed", []).append(filename)
    path.write_text(json.dumps(document))


def _record(pkg: Any) -> dict[str, Any]:
    return {
        "build": pkg.build, "build_number": 0, "depends": ["tzinfo"], "license": "MIT", "md5": pkg.md5,
        "name": "extra", "noarch": "generic", "sha256": pkg.sha256, "size": pkg.size, "subdir": "noarch",
        "timestamp": BUILD_TIMESTAMP_MS, "version": "1.0",
    }  # fmt: skip


def test_a_record_without_a_name_is_left_out_of_the_shards_made_here_and_rattler_reads_them(
    mirror: MirrorLikeUpstream,
    channel: Path,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """One record without a name made the build fail and the shard index answer 404, which rattler remembers (it
    then reads repodata.json for a while). The shards are made without it, every other record as it is."""
    libfoo = json.loads((channel / SUBDIR / "repodata.json").read_text())["packages.conda"]["libfoo-1.1-h1_0.conda"]
    nameless = {key: value for key, value in libfoo.items() if key != "name"}
    _change(channel / SUBDIR / "repodata.json", add={"libfoo-9.0-h1_0.conda": {**nameless, "version": "9.0"}})
    caplog.set_level(logging.INFO, logger="pkgcache.access")
    cache = _cache(make_cache, mirror)

    index = cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}")
    assert index.status == 200, index.body
    _, result = install(tmp_path, [f"{cache.url}/conda/cloud/conda-forge"], ["app"])
    assert installed_names(result) == APP_TREE
    assert {p["name"]: p["version"] for p in result["installed"]}["libfoo"] == "1.1"
    asked = _client_requests(capsys, "/shards/")
    assert any("/shards/" in line for line in asked) and not any("repodata.json" in line for line in asked)
    status = json.loads(cache.get("/-/status").body)["conda"]["shards"]["made_here"][f"cloud/conda-forge/{SUBDIR}"]
    assert status["records_skipped"] == 1
    # Every other record is in its shard as the mirror's repodata.json has it.
    shards = _unpack(index.body)["shards"]
    libfoo_shard = _unpack(
        cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/shards/{shards['libfoo'].hex()}.msgpack.zst").body
    )
    found = {
        k: v.hex() if isinstance(v, bytes) else v
        for k, v in libfoo_shard["packages.conda"]["libfoo-1.1-h1_0.conda"].items()
    }
    assert found == libfoo and "libfoo-9.0-h1_0.conda" not in libfoo_shard["packages.conda"]


def test_a_shard_still_in_its_pack_is_served_and_given_its_file(
    mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """Between a build and the files of its new shards (the builder makes them after reporting), a client asking
    for a shard gets it out of the pack: never a 404 for a shard the index lists. A pack no builder is working on
    (its builder was stopped with the service) gets its shards' files from pkgcache."""
    cache = _cache(make_cache, mirror)
    base = f"/conda/cloud/conda-forge/{SUBDIR}/"
    index = _unpack(cache.get(base + SHARD_INDEX).body)
    names = [f"{digest.hex()}.msgpack.zst" for digest in index["shards"].values()]
    shards_dir = next(cache.data_dir.rglob(f"{SUBDIR}/shards"))
    deadline = time.monotonic() + 30
    while not all((shards_dir / name).is_file() for name in names) and time.monotonic() < deadline:
        time.sleep(0.05)  # the builder is still giving them their files
    files = {name: (shards_dir / name).read_bytes() for name in names}
    # Put them back in a pack, as a build leaves them before its explosion.
    writer = PackWriter(shards_dir.parent / "shard-packs")
    for name, data in files.items():
        writer.add(bytes.fromhex(name.removesuffix(".msgpack.zst")), data)
        (shards_dir / name).unlink()
    writer.close()
    first = next(iter(files))
    answer = cache.get(base + f"shards/{first}")
    assert answer.status == 200 and answer.body == files[first]
    assert (shards_dir / first).read_bytes() == files[first]
    # No builder is at work on that pack (as after a restart): pkgcache gives the others their files itself.
    deadline = time.monotonic() + 10
    while list((shards_dir.parent / "shard-packs").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((shards_dir.parent / "shard-packs").iterdir()) == []
    for name, data in files.items():
        assert (shards_dir / name).read_bytes() == data
        answer = cache.get(base + f"shards/{name}")
        assert answer.status == 200 and answer.body == data


class _FullDiskFile:
    """A pack's file on a full disk: its bytes are refused, and so is their flush when it is closed (as a buffered
    file's is)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def fileno(self) -> int:
        return int(self._handle.fileno())

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self._handle.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_builds_failing_on_a_full_disk_leave_no_pack_and_a_retry_makes_the_right_shards(
    mirror: MirrorLikeUpstream, channel: Path, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each client's retry on a full disk starts a build that fails: it answers 507 and leaves no pack behind (they
    used to pile up, each one taking more of the little space left). Once the disk takes bytes again, the next
    request makes the shards, and they hold the repodata."""
    real_init = PackWriter.__init__

    def on_a_full_disk(self: PackWriter, packs_dir: Path) -> None:
        real_init(self, packs_dir)
        self._handle = _FullDiskFile(self._handle)  # type: ignore[assignment]

    monkeypatch.setattr(shard_packs.PackWriter, "__init__", on_a_full_disk)
    cache = _cache(make_cache, mirror)
    base = f"/conda/cloud/conda-forge/{SUBDIR}/"
    for _ in range(3):
        answer = cache.get(base + SHARD_INDEX)
        assert answer.status == 507, answer.body[:300]
    packs = [path.name for path in cache.data_dir.rglob("shard-packs/*")]
    assert packs == []
    monkeypatch.setattr(shard_packs.PackWriter, "__init__", real_init)
    _assert_shards_hold_the_repodata(cache, channel)


def test_the_primary_removes_packs_no_build_finished_as_it_starts(
    bg_loop: BackgroundLoop, mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """A pack without a table (its builder was killed) is never read: the primary removes it as it starts, and
    leaves a pack a build still writes and one with a table (its shards may be listed by the index)."""
    cache = _cache(make_cache, mirror)
    base = f"/conda/cloud/conda-forge/{SUBDIR}/"
    assert cache.get(base + SHARD_INDEX).status == 200
    packs_dir = next(cache.data_dir.rglob(f"{SUBDIR}/shards")).parent / "shard-packs"
    deadline = time.monotonic() + 30
    while any(packs_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the build's shards are given their files after it reports
    cache.stop()
    killed = PackWriter(packs_dir)
    killed.add(b"\1" * 32, b"bytes no table lists")
    killed._handle.close()  # its builder killed: no table, no lock
    writing = PackWriter(packs_dir)  # a builder still at work (of the service before this one, say)
    writing.add(b"\2" * 32, b"bytes on their way")
    finished = PackWriter(packs_dir)
    finished.add(b"\3" * 32, b"bytes a table lists")
    table = finished.close()
    again = start_cache(bg_loop, cache.settings)
    try:
        assert not killed.pack_path.exists()
        assert writing.pack_path.exists() and table is not None and table.exists()
    finally:
        writing.discard()
        again.stop()


def test_a_shard_lost_from_the_disk_is_made_again_for_the_client_that_holds_its_index(
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A shard file lost after its build (a disk fault, `pkgcache verify`): the index made here still lists it and
    no upstream has it. pkgcache makes the shards again from the cached repodata (the same bytes: they name the
    file), so rattler's solve gets it instead of a 404; a shard name no index lists builds nothing."""
    caplog.set_level(logging.INFO, logger="pkgcache.conda.generated_shards")
    cache = _cache(make_cache, mirror)
    base = f"/conda/cloud/conda-forge/{SUBDIR}/"
    index = _unpack(cache.get(base + SHARD_INDEX).body)
    lost = f"{index['shards']['libfoo'].hex()}.msgpack.zst"
    shards_dir = next(cache.data_dir.rglob(f"{SUBDIR}/shards"))
    packs = shards_dir.parent / "shard-packs"
    deadline = time.monotonic() + 30
    while not ((shards_dir / lost).is_file() and not any(packs.glob("*.table"))) and time.monotonic() < deadline:
        time.sleep(0.05)  # the build's shards are given their files after it reports
    data = (shards_dir / lost).read_bytes()
    (shards_dir / lost).unlink()
    _, installed = install(tmp_path, [f"{cache.url}/conda/cloud/conda-forge"], ["app"], name="after")
    assert installed_names(installed) == APP_TREE
    assert (shards_dir / lost).read_bytes() == data
    again = [r for r in caplog.records if "is missing; making the shards again" in r.getMessage()]
    assert len(again) == 1 and lost in again[0].getMessage()
    unknown = cache.get(base + f"shards/{'0' * 64}.msgpack.zst")  # the mirror has no shards: its 404 stands
    assert unknown.status == 404
    assert len([r for r in caplog.records if "making the shards again" in r.getMessage()]) == 1


@pytest.fixture
def zst_mirrors(bg_loop: BackgroundLoop, channel: Path, tmp_path: Path) -> Iterator[list[MirrorLikeUpstream]]:
    """Two mirrors of the channel that serve repodata.json.zst too (shards are then made from it). The first has
    a copy of the channel of its own, which a test may break."""
    shutil.copytree(channel, tmp_path / "forge-copy")
    mirrors = [
        MirrorLikeUpstream({"conda-forge": root}, repodata_max_age=0) for root in (tmp_path / "forge-copy", channel)
    ]
    for upstream in mirrors:
        bg_loop.run(upstream.start())
    yield mirrors
    for upstream in mirrors:
        bg_loop.run(upstream.stop())


@pytest.mark.usefixtures("builds_in_a_process")
def test_builders_take_turns_and_each_ends_in_a_fresh_interpreter_giving_shards_their_files(
    mirror: MirrorLikeUpstream, channel: Path, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first solve asks for a platform subdir and noarch together. Their builders take turns: a build takes about
    50 MB whatever the repodata's size, and two at once do not fit the memory budget beside the service. A builder
    that has reported gives its shards their files after exec'ing into an interpreter that loads only
    shard_packs, so its build's memory is not held beside the next build."""
    running, most, started = [0], [0], []
    build = generated_shards._build_in_own_process

    async def counted(arguments: dict[str, object], feed: object = None, spare: object = None) -> object:
        running[0] += 1
        most[0] = max(most[0], running[0])
        started.append(arguments["shards_dir"])
        try:
            return await build(arguments, feed, spare)  # type: ignore[arg-type]
        finally:
            running[0] -= 1

    monkeypatch.setattr(generated_shards, "_build_in_own_process", counted)
    spawned: list[list[str]] = []
    spawn = asyncio.create_subprocess_exec

    async def recorded(*argv: str, **options: object) -> object:
        spawned.append(list(argv))
        return await spawn(*argv, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(generated_shards.asyncio, "create_subprocess_exec", recorded)
    cache = _cache(make_cache, mirror)
    with ThreadPoolExecutor(2) as pool:
        paths = [f"/conda/cloud/conda-forge/{subdir}/{SHARD_INDEX}" for subdir in ("noarch", SUBDIR)]
        answers = list(pool.map(cache.get, paths))
    assert [answer.status for answer in answers] == [200, 200]
    assert len(started) == 2 and most[0] == 1, (started, most)
    assert all("pkgcache.conda.shard_builder" in argv for argv in spawned) and len(spawned) == 2
    _assert_shards_hold_the_repodata(cache, channel)
    deadline = time.monotonic() + 30
    while any(cache.data_dir.rglob("shard-packs/*.pack")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the exec'd interpreters are giving the shards their files
    assert not list(cache.data_dir.rglob("shard-packs/*.pack"))
    shards = list(cache.data_dir.rglob("shards/*.msgpack.zst"))
    index = _unpack(cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}").body)
    assert {f"{digest.hex()}.msgpack.zst" for digest in index["shards"].values()} <= {p.name for p in shards}


def _two_mirror_cache(make_cache: Callable[..., RunningCache], mirrors: list[MirrorLikeUpstream]) -> RunningCache:
    configs = [
        {"name": f"mirror{i}", "pkgs_url": f"{m.url}/anaconda/pkgs/", "cloud_url": f"{m.url}/anaconda/cloud/"}
        for i, m in enumerate(mirrors)
    ]
    conda = {"upstreams": configs, "channels": ["cloud/conda-forge"], "index_ttl": 0}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda)


@pytest.mark.usefixtures("builds_in_a_process")
@pytest.mark.parametrize(
    "first_mirror", ["healthy", "cuts the repodata midway", "sends it slowly", "sends corrupt bytes"]
)
def test_first_shards_are_made_from_the_repodata_as_it_downloads(
    zst_mirrors: list[MirrorLikeUpstream],
    channel: Path,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    first_mirror: str,
) -> None:
    """The first shard index of a subdir is built while its repodata.json.zst downloads (the builder reads the
    bytes as they come); a download that breaks off and goes on from the other mirror, or that drips, still
    gives shards holding exactly the repodata's records, and a client solves from them."""
    caplog.set_level(logging.INFO, logger="pkgcache.conda.generated_shards")
    first = zst_mirrors[0]
    first.fail_paths = {f"{SUBDIR}/repodata.json.zst"}
    if first_mirror == "cuts the repodata midway":
        first.fail_mode = "truncate"
    elif first_mirror == "sends it slowly":
        first.bytes_per_second = 20_000
    elif first_mirror == "sends corrupt bytes":  # the .zst's checksum fails at its end: the bytes given are void
        broken = tmp_path / "forge-copy" / SUBDIR / "repodata.json.zst"
        data = bytearray(broken.read_bytes())
        data[len(data) // 2 :] = bytes(b ^ 0x5A for b in data[len(data) // 2 :])  # a good start, a bad rest
        broken.write_bytes(bytes(data))
        first.bytes_per_second = 2_000  # slowly enough that the builder is given some of them first
    cache = _two_mirror_cache(make_cache, zst_mirrors)
    _assert_shards_hold_the_repodata(cache, channel)
    made = [r.getMessage() for r in caplog.records if f"shards for cloud/conda-forge/{SUBDIR}" in r.getMessage()]
    assert len(made) == 1, made
    if first_mirror in ("healthy", "sends it slowly"):
        assert "from the download" in made[0], made
    elif first_mirror == "sends corrupt bytes":  # the builder fed the first mirror's bytes was stopped
        assert "from the download" not in made[0], made
    # Made from the .zst: the plain .json was never fetched.
    assert sum(m.count(f"{SUBDIR}/repodata.json.zst") for m in zst_mirrors) >= 1
    assert sum(m.count(f"{SUBDIR}/repodata.json") for m in zst_mirrors) == 0
    url = f"{cache.url}/conda/cloud/conda-forge"
    _, solved = install(tmp_path, [url], ["app"], name="client")
    assert installed_names(solved) == APP_TREE


def test_shards_named_in_prebuild_shards_are_made_before_any_client_asks(
    mirror: MirrorLikeUpstream,
    channel: Path,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`[conda] prebuild_shards`: the primary makes the named subdirs' shards at start, with no client asking; a
    client's first solve then finds them made (its shard-index requests are cache hits), and a change of the
    repodata is picked up without a client too."""
    caplog.set_level(logging.INFO, logger="pkgcache.access")  # the access log is written (to stderr)
    base = f"{mirror.url}/anaconda/"
    upstream = {"name": "mirror", "pkgs_url": base + "pkgs/", "cloud_url": base + "cloud/"}
    subdirs = [f"cloud/conda-forge/{subdir}" for subdir in ("noarch", SUBDIR)]
    conda = {"upstreams": [upstream], "channels": ["cloud/conda-forge"], "index_ttl": 0, "prebuild_shards": subdirs}
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr("pkgcache.conda.shards_ahead.MIN_INTERVAL", 0.5)
        cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
        deadline = time.monotonic() + 30
        made: dict[str, Any] = {}
        while time.monotonic() < deadline and not all(subdir in made for subdir in subdirs):
            time.sleep(0.1)
            made = json.loads(cache.get("/-/status").body)["conda"]["shards"]["made_here"]
        assert all(subdir in made for subdir in subdirs), made
        before_any_client = _access_lines(capsys, "GET /-/status")
        assert any("GET /-/status" in line for line in before_any_client)  # the access log is read here...
        assert not [line for line in before_any_client if "/conda/" in line]  # ...and no client asked
        assert mirror.count(f"/{SUBDIR}/repodata.json") >= 1

        _, solved = install(tmp_path, [f"{cache.url}/conda/cloud/conda-forge"], ["app"], name="client")
        assert installed_names(solved) == APP_TREE
        index_answers = [line for line in _access_lines(capsys, "/shards/") if f"/{SUBDIR}/{SHARD_INDEX}" in line]
        # Made ahead, not for this client: a hit, or stale (index_ttl 0 puts every repodata past its time-to-live,
        # answered while revalidated, and an index made from it says so, as the repodata would), never a miss.
        made_ahead = (" 200 cache=hit ", " 200 cache=stale ")
        assert index_answers and all(any(s in line for s in made_ahead) for line in index_answers), index_answers
        _assert_shards_hold_the_repodata(cache, channel)

        # The repodata changes; with nobody asking, the next round sees it and the shards are made again.
        _change(channel / SUBDIR / "repodata.json", remove=["libfoo-1.1-h1_0.conda"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shards = _unpack(cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}").body)["shards"]
            libfoo = _unpack(
                cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/shards/{shards['libfoo'].hex()}.msgpack.zst").body
            )
            if "libfoo-1.1-h1_0.conda" in libfoo["removed"]:
                break
            time.sleep(0.2)
        assert "libfoo-1.1-h1_0.conda" in libfoo["removed"]


def test_prebuild_shards_must_name_a_served_channel_and_a_subdir() -> None:
    from pydantic import ValidationError

    from pkgcache.config import CondaConfig

    assert CondaConfig(prebuild_shards=["/cloud/conda-forge/linux-64/"]).prebuild_shards == [
        "cloud/conda-forge/linux-64"
    ]
    for wrong in (
        "cloud/elsewhere/linux-64",
        "cloud/conda-forge",
        "conda-forge/linux-64",
        "cloud/conda-forge/Linux 64",
    ):
        with pytest.raises(ValidationError, match="prebuild_shards"):
            CondaConfig(prebuild_shards=[wrong])


def _pad(repodata: Path, size: int) -> None:
    """Make a repodata.json about `size` bytes bigger with a top-level key readers drop, and write its .zst anew
    when it has one (padding that compresses to almost nothing)."""
    document = json.loads(repodata.read_text())
    document["x_padding"] = "a" * size
    repodata.write_text(json.dumps(document))
    compressed = repodata.with_name("repodata.json.zst")
    if compressed.exists():
        compressed.write_bytes(zstandard.ZstdCompressor().compress(repodata.read_bytes()))


def _recording_spawns(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    spawned: list[list[str]] = []
    spawn = asyncio.create_subprocess_exec

    async def recorded(*argv: str, **options: object) -> object:
        spawned.append(list(argv))
        return await spawn(*argv, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(generated_shards.asyncio, "create_subprocess_exec", recorded)
    return spawned


def test_a_small_subdir_is_made_here_while_a_big_ones_builder_holds_its_turn(
    mirror: MirrorLikeUpstream,
    channel: Path,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A repodata of a few KB is made into shards in pkgcache's own process, without a builder: it neither starts
    an interpreter nor waits for the turn of a big subdir's builder (a first solve asks for both at once)."""
    caplog.set_level(logging.INFO, logger="pkgcache.conda.generated_shards")
    monkeypatch.setattr(generated_shards, "IN_PROCESS_MAX_BYTES", 8 << 10)
    _pad(channel / SUBDIR / "repodata.json", 16 << 10)  # the big one
    gate, building = threading.Event(), threading.Event()
    build = generated_shards._build_in_own_process

    async def held(arguments: dict[str, object], feed: object = None, spare: object = None) -> object:
        building.set()
        await asyncio.to_thread(gate.wait, 30)
        return await build(arguments, feed, spare)  # type: ignore[arg-type]

    monkeypatch.setattr(generated_shards, "_build_in_own_process", held)
    spawned = _recording_spawns(monkeypatch)
    cache = _cache(make_cache, mirror)
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(cache.get, f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}")
        assert building.wait(10)  # the big subdir's builder has its turn, and is held there
        small = cache.get(f"/conda/cloud/conda-forge/noarch/{SHARD_INDEX}")
        # The one interpreter so far is the big subdir's, started when its request came (a spare may not wait twice).
        assert small.status == 200 and not big.done() and len(spawned) <= 1
        gate.set()
        assert big.result(30).status == 200
    assert len(spawned) == 1 and "pkgcache.conda.shard_builder" in spawned[0]  # the big one's: the small made none
    made = {r.getMessage().split()[4]: r.getMessage() for r in caplog.records if r.getMessage().startswith("made ")}
    assert "own process" in made["cloud/conda-forge/noarch"], made
    assert "own process" not in made[f"cloud/conda-forge/{SUBDIR}"], made
    # The shards made here get whole files, like a builder's (no pack is left), and hold the repodata's records.
    deadline = time.monotonic() + 10
    while list(cache.data_dir.rglob("noarch/shard-packs/*.pack")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(cache.data_dir.rglob("noarch/shard-packs/*.pack"))
    assert len(list(cache.data_dir.rglob("noarch/shards/*.msgpack.zst"))) == 3
    _assert_shards_hold_the_repodata(cache, channel)


@pytest.mark.usefixtures("builds_in_a_process")
def test_a_first_build_runs_in_the_interpreter_started_when_its_request_came(
    mirror: MirrorLikeUpstream, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The builder's interpreter starts while the upstream is asked for its own index, before the repodata is
    fetched, and the build runs in it: one interpreter per build, not a second."""
    spawn, started = generated_shards._spawn_builder, []

    async def recorded() -> asyncio.subprocess.Process:
        started.append(mirror.count(f"/{SUBDIR}/repodata.json"))  # what the mirror had been asked for by then
        return await spawn()

    monkeypatch.setattr(generated_shards, "_spawn_builder", recorded)
    cache = _cache(make_cache, mirror)
    index = cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}")
    assert index.status == 200 and _unpack(index.body)["shards"]
    assert started == [0]


def test_an_interpreter_started_for_a_build_that_never_came_ends(
    anaconda_upstream: Any, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream has shards of its own (passed through): the interpreter started when the request came is told
    to end (its input ends without arguments) and exits cleanly."""
    from tests.test_conda_proxy import anaconda_config, conda_cache

    spawn, processes = generated_shards._spawn_builder, []

    async def recorded() -> asyncio.subprocess.Process:
        processes.append(await spawn())
        return processes[-1]

    monkeypatch.setattr(generated_shards, "_spawn_builder", recorded)
    cache = conda_cache(make_cache, anaconda_config(anaconda_upstream))
    index = cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}")
    assert index.status == 200 and any(path.endswith(SHARD_INDEX) for path in anaconda_upstream.paths())
    assert len(processes) == 1
    deadline = time.monotonic() + 10
    while processes[0].returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes[0].returncode == 0
    status = json.loads(cache.get("/-/status").body)["conda"]["shards"]
    assert f"cloud/conda-forge/{SUBDIR}" in status["passed_through"] and not status["made_here"]


def test_a_repodata_bigger_than_its_compressed_size_said_goes_to_a_builder(
    bg_loop: BackgroundLoop,
    channel: Path,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether a repodata is small is decided on its JSON, decompressed: a .zst of a few hundred bytes that holds
    more than the limit (what a mirror could send to make pkgcache's own process work) goes to a builder."""
    caplog.set_level(logging.INFO, logger="pkgcache.conda.generated_shards")
    monkeypatch.setattr(generated_shards, "IN_PROCESS_MAX_BYTES", 8 << 10)
    _pad(channel / SUBDIR / "repodata.json", 64 << 10)
    assert (channel / SUBDIR / "repodata.json.zst").stat().st_size < 8 << 10
    spawned = _recording_spawns(monkeypatch)
    upstream = MirrorLikeUpstream({"conda-forge": channel}, repodata_max_age=0)
    bg_loop.run(upstream.start())
    try:
        cache = _cache(make_cache, upstream)
        assert cache.get(f"/conda/cloud/conda-forge/{SUBDIR}/{SHARD_INDEX}").status == 200
        assert upstream.count(f"{SUBDIR}/repodata.json.zst") >= 1
        assert len(spawned) == 1 and "pkgcache.conda.shard_builder" in spawned[0]
        assert cache.get(f"/conda/cloud/conda-forge/noarch/{SHARD_INDEX}").status == 200
        # noarch's .zst is small all through: made here (an interpreter started when its request came, before its
        # size was known, was told to end unused)
        made = {r.getMessage().split()[4]: r.getMessage() for r in caplog.records if r.getMessage().startswith("made ")}
        assert (
            "own process" in made["cloud/conda-forge/noarch"]
            and "own process" not in made[f"cloud/conda-forge/{SUBDIR}"]
        )
        _assert_shards_hold_the_repodata(cache, channel)
    finally:
        bg_loop.run(upstream.stop())


def test_a_cached_repodata_is_small_by_its_recorded_size_and_never_by_a_missing_one(tmp_path: Path) -> None:
    from pkgcache.cache_state import CacheState
    from pkgcache.conda.source import Lookup
    from pkgcache.storage.sidecars import FileMeta

    def lookup(size: int | None) -> Lookup:
        return Lookup(CacheState.HIT, tmp_path / "repodata.json", FileMeta(fetched_at=0.0, size=size))

    limit = generated_shards.IN_PROCESS_MAX_BYTES
    assert generated_shards._said_to_be_small(lookup(limit))
    assert not generated_shards._said_to_be_small(lookup(limit + 1))
    assert not generated_shards._said_to_be_small(lookup(None))
    assert not generated_shards._said_to_be_small(Lookup(CacheState.HIT, tmp_path / "repodata.json"))
