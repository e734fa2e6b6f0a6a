"""Several worker processes on one port: real clients through them, one upstream fetch for all, restarts, stops."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zstandard
from aiohttp import web

from pkgcache.cli import admin_commands
from pkgcache.cli.admin_commands import call_admin_api
from pkgcache.cli.locate import Located
from pkgcache.cli.options import flag_overrides, resolve_settings
from pkgcache.conda.shard_packs import PackWriter
from pkgcache.daemon.files import InstancePaths
from pkgcache.daemon.lock import inspect_instance
from pkgcache.gate.state import APPLY_TIMEOUT
from pkgcache.pypi.core_metadata import MetadataCounters
from pkgcache.service.app import _pypi_pool
from pkgcache.service.carried import PrimaryCounters
from pkgcache.stats import RequestStats
from pkgcache.storage.eviction import CacheKeeper, Freed
from pkgcache.storage.store import CacheStore
from pkgcache.workers.forwarding import Forwarder
from pkgcache.workers.gate_sync import GateSync
from pkgcache.workers.shared_counters import _CARRIED_HEADER, CARRIED_BYTES, SharedCounters
from tests.cache_service import CacheProcess, cache_settings
from tests.conda_support import APP_TREE, assert_app_landed, install, installed_names
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.fakes.dists import build_wheel, find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, SlowUpstream
from tests.support import (
    BackgroundLoop,
    fetch_concurrently,
    http_get,
    installed_dists,
    run_pip_install,
    run_uv_install,
)

BIG = "bigpkg-1.0-py3-none-any.whl"
TOKEN = "workers-admin-token-0123456789"


def _status(process: CacheProcess) -> dict:
    answer = http_get(f"{process.url}/-/status")
    assert answer.status == 200, answer
    return json.loads(answer.body)


def _eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


def _pages_over_new_connections(process: CacheProcess, path: str, count: int) -> list[dict[str, str]]:
    """`count` requests, each on a connection of its own: the kernel spreads them over the workers."""
    answers = [http_get(process.url + path) for _ in range(count)]
    assert all(answer.status == 200 for answer in answers), [a.status for a in answers]
    return [answer.headers for answer in answers]


@pytest.mark.parametrize("installer", [run_pip_install, run_uv_install], ids=["pip", "uv"])
def test_real_clients_install_through_three_workers(
    installer: Callable[..., object], official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    process = CacheProcess(tmp_path / "data", "--workers", "3", "--pypi-upstream", official_upstream.index_url)
    try:
        index = f"{process.url}/pypi/simple/"
        first = installer(index, tmp_path / "first", "alpha==2.0")
        assert first.returncode == 0, first.stdout + first.stderr  # type: ignore[attr-defined]
        assert installed_dists(tmp_path / "first") == {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
        assert official_upstream.count("/simple/alpha/") >= 1
        assert any(p.endswith("/alpha-2.0-py3-none-any.whl") for p in official_upstream.files.paths())

        # Warm: many connections, so every worker answers some; nothing more is asked upstream.
        asked_before = len(official_upstream.requests) + len(official_upstream.files.requests)
        states = {h["x-pkgcache-cache"] for h in _pages_over_new_connections(process, "/pypi/simple/alpha/", 30)}
        again = installer(index, tmp_path / "again", "alpha==2.0")
        assert again.returncode == 0, again.stdout + again.stderr  # type: ignore[attr-defined]
        assert states == {"hit"}
        assert len(official_upstream.requests) + len(official_upstream.files.requests) == asked_before

        workers = _status(process)["workers"]
        assert [w["role"] for w in workers] == ["primary", "replica", "replica"]
        _eventually(lambda: all(w["requests"] > 0 for w in _status(process)["workers"]), what="every worker served")

        # The service's totals are every worker's requests, whichever answered the stats. Workers publish their
        # counters about once a second, so the last second's hits may not be summed yet: wait for them.
        def totals_counted() -> bool:
            totals = json.loads(http_get(f"{process.url}/-/stats").body)["sides"]["pypi"]
            return totals["requests"] >= 30 and totals["hits"] >= 30

        _eventually(totals_counted, what="the service's totals to count every worker's hits")
    finally:
        assert process.terminate() == 0


def test_many_clients_on_every_worker_cause_one_upstream_download(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    slow = SlowUpstream(sample_dists(), bytes_per_second=4 * 1024 * 1024)  # about a second for the 4 MiB wheel
    bg_loop.run(slow.start())
    process = CacheProcess(tmp_path / "data", "--workers", "3", "--pypi-upstream", slow.index_url)
    try:
        url = f"{process.url}/pypi/files/bigpkg/{BIG}"
        answers = asyncio.run(fetch_concurrently(url, 40))
        expected = find_dist(sample_dists(), BIG).sha256
        assert [status for status, _ in answers] == [200] * 40
        assert all(hashlib.sha256(body).hexdigest() == expected for _, body in answers)
        assert slow.count(f"/{BIG}") == 1
        # The clients reached every worker: the replicas handed the missing file over to the primary.
        _eventually(
            lambda: all(w["handed_over"] > 0 for w in _status(process)["workers"][1:]), what="every replica took some"
        )
    finally:
        assert process.terminate() == 0
        bg_loop.run(slow.stop())


def test_a_download_failing_its_check_is_cut_for_clients_on_every_worker(
    bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    slow = SlowUpstream(sample_dists(), bytes_per_second=4 * 1024 * 1024)
    slow.corrupt_files.add(BIG)  # same size, other bytes: only the hash check can tell
    bg_loop.run(slow.start())
    process = CacheProcess(tmp_path / "data", "--workers", "2", "--pypi-upstream", slow.index_url)
    try:
        outcomes = asyncio.run(_fetch_outcomes(f"{process.url}/pypi/files/bigpkg/{BIG}", 20))
        # Every client saw an error or a cut connection; none was handed a whole body of the wrong bytes.
        assert all(outcome in ("cut", 502) for outcome in outcomes), outcomes
        assert "cut" in outcomes  # streaming had begun: clients on both workers were following
        _eventually(lambda: _status(process)["workers"][1]["handed_over"] > 0, what="the replica handed some over")
        assert list((tmp_path / "data" / "pypi" / "files").rglob("*.whl")) == []
    finally:
        assert process.terminate() == 0
        bg_loop.run(slow.stop())


async def _fetch_outcomes(url: str, count: int) -> list[object]:
    """Each client's outcome: the status of a whole answer, or "cut" if its body ended early."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

        async def one() -> object:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return response.status
            except aiohttp.ClientPayloadError:
                return "cut"

        return await asyncio.gather(*(one() for _ in range(count)))


def _three_workers(upstream: OfficialLikeUpstream, tmp_path: Path) -> tuple[Path, CacheProcess]:
    """pkgcache with three workers over `upstream` (conda off, the admin token TOKEN), its data in tmp_path/data:
    its configuration file, and the process."""
    config = tmp_path / "pkgcache.toml"
    config.write_text(
        f'[pypi]\nupstreams = ["{upstream.index_url}"]\n[conda]\nenabled = false\n[access]\nadmin_token = "{TOKEN}"\n'
    )
    return config, CacheProcess(tmp_path / "data", "--workers", "3", "--config", str(config))


def test_a_new_release_reaches_every_worker_after_a_refresh(
    official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    _, process = _three_workers(official_upstream, tmp_path)
    try:
        _pages_over_new_connections(process, "/pypi/simple/alpha/", 20)  # every worker now holds the page
        official_upstream.add_dist(build_wheel("alpha", "9.0"))
        refreshed = http_get(
            f"{process.url}/-/admin/pypi/refresh/alpha", {"Authorization": f"Bearer {TOKEN}"}, method="POST"
        )
        assert refreshed.status == 200, refreshed

        def everyone_lists_it() -> bool:
            pages = [http_get(f"{process.url}/pypi/simple/alpha/").body for _ in range(20)]
            return all(b"alpha-9.0-py3-none-any.whl" in page for page in pages)

        _eventually(everyone_lists_it, timeout=5, what="every worker lists the new release")
    finally:
        assert process.terminate() == 0


def test_a_worker_that_dies_is_started_again(official_upstream: OfficialLikeUpstream, tmp_path: Path) -> None:
    process = CacheProcess(tmp_path / "data", "--workers", "2", "--pypi-upstream", official_upstream.index_url)
    try:
        _pages_over_new_connections(process, "/pypi/simple/alpha/", 10)
        _eventually(lambda: all(w["requests"] > 0 for w in _status(process)["workers"]), what="both workers served")
        replica = _status(process)["workers"][1]
        served_before = replica["requests"]
        os.kill(replica["pid"], signal.SIGKILL)

        def started_again() -> bool:
            now = _status(process)["workers"][1]
            return now["pid"] not in (None, replica["pid"]) and now["reported_seconds_ago"] is not None

        _eventually(started_again, what="a new replica")
        _pages_over_new_connections(process, "/pypi/simple/alpha/", 10)
        # Its counters carry on from its predecessor's: totals never go down.
        assert _status(process)["workers"][1]["requests"] >= served_before
        assert "worker 1 (pid" in process.log_path.read_text()
    finally:
        assert process.terminate() == 0


def test_stopping_the_supervisor_stops_every_worker(official_upstream: OfficialLikeUpstream, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "pkgcache.primary.sock").write_text("left by a supervisor that was killed")
    process = CacheProcess(data_dir, "--workers", "3", "--pypi-upstream", official_upstream.index_url)
    pids = [w["pid"] for w in _status(process)["workers"]]
    assert len(set(pids)) == 3
    private = data_dir / "pkgcache.primary.sock"
    assert stat.S_ISSOCK(private.stat().st_mode) and stat.S_IMODE(private.stat().st_mode) == 0o600
    assert process.terminate() == 0
    assert not private.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not (data_dir / "pkgcache.pid").exists()


def test_a_primary_that_cannot_start_stops_the_service(official_upstream: OfficialLikeUpstream, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "tmp").write_text("not a folder: the primary cannot prepare its temporary files")
    # Five starts, each importing the service, with 7 s of pauses between them: on a loaded machine that is well
    # over half a minute, so the deadline is the harness's patience, not a claim about speed.
    with pytest.raises(RuntimeError, match="kept failing to start"):
        CacheProcess(data_dir, "--workers", "2", "--pypi-upstream", official_upstream.index_url, timeout=180)


# --- the shared counters ---


def test_counters_published_by_one_worker_are_read_whole_by_another() -> None:
    shared = SharedCounters(2)
    try:
        stats = RequestStats()
        stats.record("/pypi/simple/a/", 200, "hit", 100)
        stats.record("/conda/pkgs/main/noarch/x.conda", 200, "miss", 7)
        shared.slot(1).publish(stats, import_mark=12345)
        pid, published_at, read, import_mark = shared.slot(1).read()
        assert pid == os.getpid() and time.time() - published_at < 5
        assert import_mark == 12345  # the import the worker has acted on, which `pkgcache import` waits for
        assert read.sides["pypi"].hits == 1 and read.sides["pypi"].bytes_saved == 100
        assert read.sides["conda"].misses == 1 and read.sides["conda"].bytes_served == 7
        assert shared.slot(0).read().pid == 0  # never published

        restarted = RequestStats()
        shared.slot(1).restore_into(restarted)
        assert restarted.totals().requests == 2
    finally:
        shared.close()


def test_a_slot_left_half_written_by_a_killed_worker_is_still_read_and_written() -> None:
    shared = SharedCounters(1)
    try:
        stats = RequestStats()
        stats.record("/pypi/simple/a/", 200, "hit", 5)
        slot = shared.slot(0)
        slot.publish(stats)
        shared._words[0] += 1  # the sequence a writer leaves when it is killed between its first and last step
        assert slot.read().stats.sides["pypi"].hits == 1  # a reader does not wait for a write nobody will finish

        successor = RequestStats()
        slot.restore_into(successor)  # the restarted worker starts from it...
        successor.record("/pypi/simple/a/", 200, "hit", 5)
        slot.publish(successor)  # ...and its next publication leaves the slot whole again
        assert shared._words[0] % 2 == 0 and slot.read().stats.sides["pypi"].hits == 2
    finally:
        shared.close()


def test_counters_are_shared_with_forked_workers() -> None:
    shared = SharedCounters(1)
    try:
        pid = os.fork()
        if pid == 0:
            stats = RequestStats()
            stats.record("/pypi/simple/a/", 200, "hit", 5)
            shared.slot(0).publish(stats)
            os._exit(0)
        os.waitpid(pid, 0)
        reading = shared.slot(0).read()
        assert reading.pid == pid and reading.stats.sides["pypi"].hits == 1
    finally:
        shared.close()


def test_the_blocks_generation_waits_for_live_workers_only_and_wakes_them() -> None:
    """A worker is waited for from the moment it has joined until it says it applied the generation; a dead one (or
    a zombie not yet reaped) is not; every other worker is woken through its eventfd."""
    sync = GateSync(3)  # made by this process: the workers' parent, as the supervisor
    try:
        sync.joined(0)  # the primary is this process here
        generation = sync.advance()
        sync.applied(0, generation)
        assert sync.stragglers(generation) == []  # workers 1 and 2 never started: nobody to wait for

        ready_read, ready_write = os.pipe()
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker 1: joins, waits for a word, applies, then stays until killed
            sync.joined(1)
            os.write(ready_write, b"j")
            os.read(go_read, 1)
            sync.applied(1, sync.generation())
            os.write(ready_write, b"a")
            time.sleep(60)
            os._exit(0)
        try:
            assert os.read(ready_read, 1) == b"j"
            assert sync.stragglers(generation) == [(1, pid)]

            readable = [sync.wake_fd(1), sync.wake_fd(2)]
            sync.wake_others(0)
            assert all(os.read(fd, 8) for fd in readable if fd is not None)  # each eventfd counted a wake
            sync.woken(1)  # nothing left to read: no error

            os.write(go_write, b"g")
            assert os.read(ready_read, 1) == b"a"
            assert sync.stragglers(generation) == [] and sync.applied_by(1) == generation
            newer = sync.advance()
            assert sync.stragglers(newer) == [(1, pid)]
        finally:
            os.kill(pid, signal.SIGKILL)
            # Dead but not reaped yet: a zombie is not waited for.
            deadline = time.monotonic() + 5
            while sync.stragglers(newer) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sync.stragglers(newer) == []
            os.waitpid(pid, 0)
            for fd in (ready_read, ready_write, go_read, go_write):
                os.close(fd)
    finally:
        sync.close()


def _admin_over_private_socket(data_dir: Path, path: str) -> tuple[int, dict]:
    """An admin POST to the primary through its private socket: a port connection may land on a stopped replica."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(60)
            self.sock.connect(str(data_dir / "pkgcache.primary.sock"))

    connection = UnixConnection("pkgcache-primary", timeout=60)
    try:
        connection.request("POST", path, headers={"Authorization": f"Bearer {TOKEN}", "Content-Length": "0"})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_a_block_names_a_worker_that_does_not_apply_it_and_does_not_wait_for_a_dead_one(
    official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    _, process = _three_workers(official_upstream, tmp_path)
    data_dir = tmp_path / "data"
    try:
        _pages_over_new_connections(process, "/pypi/simple/alpha/", 10)
        replicas = [row["pid"] for row in _status(process)["workers"][1:]]

        # A replica killed just before: its successor reads the blocks before it serves; the dead one is not waited
        # for, and the API answers at once.
        os.kill(replicas[0], signal.SIGKILL)
        started = time.monotonic()
        status, answer = _admin_over_private_socket(data_dir, "/-/admin/pypi/block?target=alpha==2.0&who=t")
        assert status == 200 and answer["workers_behind"] == [], answer
        assert time.monotonic() - started < APPLY_TIMEOUT / 2
        _eventually(lambda: _status(process)["workers"][1]["pid"] not in (None, replicas[0]), what="a new replica")
        for _ in range(20):
            assert b"alpha-2.0-py3-none-any.whl" not in http_get(f"{process.url}/pypi/simple/alpha/").body

        # A replica that cannot run: the unblock is made, answered after the bound, naming it.
        os.kill(replicas[1], signal.SIGSTOP)
        try:
            status, answer = _admin_over_private_socket(data_dir, "/-/admin/pypi/unblock?target=alpha==2.0&who=t")
            assert status == 200 and answer["workers_behind"] == [{"worker": 2, "pid": replicas[1]}], answer
        finally:
            os.kill(replicas[1], signal.SIGCONT)
        # Running again, it catches up at once (it was woken meanwhile).
        _eventually(
            lambda: len({row["blocks_generation"] for row in _status(process)["workers"]}) == 1,
            timeout=5,
            what="every worker at the same generation",
        )
        for _ in range(20):
            assert b"alpha-2.0-py3-none-any.whl" in http_get(f"{process.url}/pypi/simple/alpha/").body
        assert "has not put the pypi unblock of alpha==2.0 in force" in process.log_path.read_text()
    finally:
        assert process.terminate() == 0


def test_the_primarys_own_counters_carry_over_a_restart_even_one_killed_mid_write(tmp_path: Path) -> None:
    settings = cache_settings(tmp_path / "data", ["http://127.0.0.1:9/simple/"])

    def primary() -> PrimaryCounters:
        keeper = CacheKeeper(CacheStore(tmp_path / "data"), None)
        return PrimaryCounters({"pypi": _pypi_pool(settings.pypi.upstreams, settings)}, keeper, MetadataCounters())

    shared = SharedCounters(1)
    try:
        pid = os.fork()
        if pid == 0:  # the first primary
            first = primary()
            upstream = first.pools["pypi"].upstreams[0]
            upstream.stats.requests, upstream.stats.bytes_received, upstream.stats.latency_seconds = 3, 898, 0.25
            first.keeper.evicted.add(Freed(files=2, bytes=100))
            assert first.metadata is not None
            first.metadata.made["ranges"] += 4
            first.metadata.range_bytes = 77
            shared.carried.save(first.snapshot())
            os._exit(0)
        os.waitpid(pid, 0)
        # The next write killed half-way: its copy is not the one in force.
        carried = shared.carried
        assert carried._words[0] == 0
        copy = _CARRIED_HEADER + CARRIED_BYTES  # the other one
        carried._map[copy : copy + 64] = b"\xff" * 64
        carried._words[2] = 64

        second = primary()
        second.restore(shared.carried.load())
        upstream = second.pools["pypi"].upstreams[0]
        assert (upstream.stats.requests, upstream.stats.bytes_received) == (3, 898)
        assert upstream.stats.latency_seconds == 0.25
        assert (second.keeper.evicted.files, second.keeper.evicted.bytes) == (2, 100)
        assert second.metadata is not None
        assert second.metadata.made["ranges"] == 4 and second.metadata.range_bytes == 77
        fresh = SharedCounters(1)
        assert fresh.carried.load() == {}  # before any primary has written
        fresh.close()
    finally:
        shared.close()


@pytest.mark.parametrize("kind", ["anaconda", "mirror"])
def test_rattler_installs_through_two_workers_then_from_cache_alone(
    kind: str,
    anaconda_upstream: AnacondaLikeUpstream,
    conda_mirror: MirrorLikeUpstream,
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    """A real conda client: repodata (sharded from the anaconda-like upstream), .zst made by the primary, packages
    checked; then served by both workers with the upstream gone."""
    upstream = anaconda_upstream if kind == "anaconda" else conda_mirror
    if kind == "anaconda":
        conda_upstream = (
            f'{{ name = "anaconda-fake", pkgs_url = "{anaconda_upstream.repo.url}/pkgs/", '
            f'cloud_url = "{anaconda_upstream.conda.url}/" }}'
        )
    else:
        conda_upstream = f'"{conda_mirror.url}/anaconda/"'
    config = tmp_path / "pkgcache.toml"
    config.write_text(
        '[pypi]\nenabled = false\n[conda]\nchannels = ["pkgs/main", "cloud/conda-forge"]\n'
        f"upstreams = [{conda_upstream}]\n"
    )
    process = CacheProcess(tmp_path / "data", "--workers", "2", "--config", str(config))
    try:
        channels = [f"{process.url}/conda/pkgs/main", f"{process.url}/conda/cloud/conda-forge"]
        for number, channel in enumerate(channels):
            prefix, result = install(tmp_path, [channel], ["app"], name=f"env-{number}")
            assert installed_names(result) == APP_TREE
            assert_app_landed(prefix)
        assert upstream.requests and all(
            r.headers.get("User-Agent", "").startswith("pkgcache/") for r in upstream.requests
        )

        bg_loop.run(upstream.stop())
        for number in range(3):  # several installs: rattler's connections land on both workers
            prefix, result = install(tmp_path, channels, ["app"], name=f"offline-{number}")
            assert installed_names(result) == APP_TREE
        _eventually(lambda: _status(process)["workers"][1]["requests"] > 0, what="the replica served some")
    finally:
        assert process.terminate() == 0


def test_shards_still_in_their_pack_are_served_by_every_worker(
    conda_mirror: MirrorLikeUpstream, tmp_path: Path
) -> None:
    """A shard made moments ago may still be in its build's pack (conda/shard_packs.py): a replica, which writes
    nothing, hands the request to the primary, which gives the shard its file; no worker answers 404."""
    config = tmp_path / "pkgcache.toml"
    config.write_text(
        '[pypi]\nenabled = false\n[conda]\nchannels = ["cloud/conda-forge"]\n'
        f'upstreams = ["{conda_mirror.url}/anaconda/"]\n'
    )
    process = CacheProcess(tmp_path / "data", "--workers", "2", "--config", str(config))
    try:
        base = f"{process.url}/conda/cloud/conda-forge/noarch/"
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(
            http_get(base + "repodata_shards.msgpack.zst").body))  # fmt: skip
        names = [f"{digest.hex()}.msgpack.zst" for digest in index["shards"].values()]
        shards_dir = next((tmp_path / "data").rglob("noarch/shards"))
        _eventually(lambda: all((shards_dir / name).is_file() for name in names), what="the shards' files")
        files = {name: (shards_dir / name).read_bytes() for name in names}
        packs = shards_dir.parent / "shard-packs"
        for _ in range(10):  # a new connection for each request: the kernel spreads them over both workers
            _eventually(lambda: not any(packs.iterdir()), what="the last round's pack given its files")
            writer = PackWriter(packs)  # the shards back in a pack alone, as a build leaves them
            for name, data in files.items():
                writer.add(bytes.fromhex(name.removesuffix(".msgpack.zst")), data)
                (shards_dir / name).unlink()
            writer.close()
            for name, data in files.items():
                answer = http_get(base + f"shards/{name}")
                assert answer.status == 200 and answer.body == data, answer.status
    finally:
        assert process.terminate() == 0


def test_admin_commands_go_to_the_primary_and_never_wait_on_a_stopped_replica(
    official_upstream: OfficialLikeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA v35 H1: `pkgcache block/unblock/gc` talked to the port, where the kernel may hand the connection to a
    replica that is stopped; the command hung, and what it asked for was done once the replica ran again."""
    config, process = _three_workers(official_upstream, tmp_path)
    data_dir = tmp_path / "data"
    replicas: list[int] = []
    try:
        replicas = [row["pid"] for row in _status(process)["workers"][1:]]
        settings = resolve_settings(config, flag_overrides({"data_dir": data_dir}))
        located = Located("gc", inspect_instance(InstancePaths(data_dir)), settings)
        monkeypatch.setattr(admin_commands, "ADMIN_TIMEOUT", 5.0)
        for pid in replicas:
            os.kill(pid, signal.SIGSTOP)
        # Two thirds of the port's connections would land on a stopped replica: through it, 8 calls in a row
        # would all be answered once in 6561.
        for _ in range(8):
            started = time.monotonic()
            answer = call_admin_api(located, process.url, "/-/admin/gc")
            assert "freed_files" in answer and time.monotonic() - started < 5
    finally:
        for pid in replicas:
            os.kill(pid, signal.SIGCONT)
        process.terminate()


async def _serve_forwarding(tmp_path: Path, seen: list[str]) -> tuple[web.AppRunner, web.AppRunner, Forwarder, int]:
    async def primary_handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.json_response({"done": request.path_qs})

    primary = web.Application()
    primary.router.add_route("*", "/{tail:.*}", primary_handler)
    primary_runner = web.AppRunner(primary)
    await primary_runner.setup()
    await web.UnixSite(primary_runner, str(tmp_path / "primary.sock")).start()

    forwarder = Forwarder(str(tmp_path / "primary.sock"))
    await forwarder.start()

    async def stuck_replica(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)  # stopped, or busy, while its client gives up
        return await forwarder.forward(request)

    replica = web.Application()
    replica.router.add_route("*", "/{tail:.*}", stuck_replica)
    replica_runner = web.AppRunner(replica)
    await replica_runner.setup()
    site = web.TCPSite(replica_runner, "127.0.0.1", 0)
    await site.start()
    port = replica_runner.addresses[0][1]
    return primary_runner, replica_runner, forwarder, port


def test_a_replica_does_not_pass_on_a_change_whose_client_has_gone(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    """QA v35 H1: an unblock whose sender gave up while a replica held it was done when the replica resumed,
    undoing the block made since."""
    seen: list[str] = []
    primary_runner, replica_runner, forwarder, port = bg_loop.run(_serve_forwarding(tmp_path, seen))
    request = b"POST /-/admin/pypi/unblock?target=alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(request.replace(b"alpha", b"gone"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as waiting:
            waiting.sendall(request.replace(b"alpha", b"waiting"))
            assert waiting.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
        assert seen == ["/-/admin/pypi/unblock?target=waiting"]
    finally:
        bg_loop.run(replica_runner.cleanup())
        bg_loop.run(forwarder.close())
        bg_loop.run(primary_runner.cleanup())
