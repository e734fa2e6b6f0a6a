"""Each new version of a subdir's repodata is read once, whole, as soon as it is in place, in the background: the
first package miss finds its suspects known and the first hit its cached packages' records (conda/records.py,
conda/package_records.py), instead of waiting seconds for that read (1.4 s for the bench's 110 MB .zst). Never while
a shard build's builder runs (the memory budget has room for one or the other), never a .zst made here, and one
pass at a time (conda/passes_ahead.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pkgcache.conda import generated_shards, package_records, records
from pkgcache.conda.cached_channels import CachedChannels
from pkgcache.conda.records import find_record, find_records
from pkgcache.conda.routes import CONDA_CHANNELS_KEY
from pkgcache.service.carried import find_layer
from tests.cache_service import RunningCache
from tests.conda_support import SUBDIR
from tests.fakes.conda_channel import build_channel
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.support import BackgroundLoop

CHANNEL = "cloud/conda-forge"
BASE = f"/conda/{CHANNEL}/{SUBDIR}/"
PKG = "libfoo-1.1-h1_0.conda"


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    root = tmp_path / "forge"
    build_channel(root)
    return root


def _mirror(bg_loop: BackgroundLoop, channel: Path, **options: Any) -> Iterator[MirrorLikeUpstream]:
    mirror = MirrorLikeUpstream({"conda-forge": channel}, repodata_max_age=0, **options)
    bg_loop.run(mirror.start())
    yield mirror
    bg_loop.run(mirror.stop())


@pytest.fixture
def mirror(bg_loop: BackgroundLoop, channel: Path) -> Iterator[MirrorLikeUpstream]:
    yield from _mirror(bg_loop, channel)


@pytest.fixture
def json_only_mirror(bg_loop: BackgroundLoop, channel: Path) -> Iterator[MirrorLikeUpstream]:
    yield from _mirror(bg_loop, channel, only_json=True)


def _cache(make_cache: Callable[..., RunningCache], mirror: MirrorLikeUpstream, ttl: float = 600) -> RunningCache:
    url = f"{mirror.url}/anaconda"
    upstream = {"name": "mirror", "pkgs_url": f"{url}/pkgs/", "cloud_url": f"{url}/cloud/"}
    conda = {"upstreams": [upstream], "channels": [CHANNEL], "index_ttl": ttl}
    return make_cache(["http://127.0.0.1:9/simple/"], conda=conda)


def _cached(cache: RunningCache, name: str) -> Path:
    return cache.data_dir / "conda" / "cloud" / "conda-forge" / SUBDIR / name


def _layer(cache: RunningCache) -> CachedChannels:
    layer = find_layer(cache.runner.app[CONDA_CHANNELS_KEY], CachedChannels)
    assert layer is not None
    return layer


def _wait_until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each whole read of a repodata for its suspects began (time.monotonic)."""
    began: list[float] = []

    class Counted(records._SuspectFinder):  # type: ignore[name-defined]
        def __init__(self, *args: Any) -> None:
            began.append(time.monotonic())
            super().__init__(*args)

    monkeypatch.setattr(records, "_SuspectFinder", Counted)
    return began


@pytest.fixture
def request_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hit check's scans a request started (not those made ahead): the package each was for."""
    asked: list[str] = []
    real = package_records._scan

    def scan(repodata: Path, folder: Path, filename: str | None, *rest: Any) -> Any:
        if filename is not None:
            asked.append(filename)
        return real(repodata, folder, filename, *rest)

    monkeypatch.setattr(package_records, "_scan", scan)
    return asked


def test_a_new_repodata_is_read_before_any_package_is_asked_for_and_the_first_miss_reads_it_no_more(
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    whole_reads: list[float],
    request_scans: list[str],
) -> None:
    cache = _cache(make_cache, mirror)
    assert cache.get(BASE + "repodata.json").status == 200
    repodata = _cached(cache, "repodata.json")
    # No package asked for: its suspects are found all the same, in the background.
    _wait_until(lambda: str(repodata) in records._suspects)
    passes = _layer(cache).listed.passes
    assert passes is not None
    _wait_until(lambda: passes.passes_run == 1)  # counted once its answer is in
    assert len(whole_reads) == 1

    answer = cache.get(BASE + PKG)  # the first miss
    assert answer.status == 200 and answer.headers.get("x-pkgcache-cache") == "miss"
    assert len(whole_reads) == 1  # it found them known: no second read
    assert cache.get(BASE + PKG).headers.get("x-pkgcache-cache") == "hit"
    assert len(whole_reads) == 1
    assert request_scans == []  # the first hit knew the record the miss found: no scan (it waited 0.5 s for one)


def test_the_records_of_the_packages_held_are_read_ahead_with_them_and_the_first_hit_scans_nothing(
    channel: Path,
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    whole_reads: list[float],
    request_scans: list[str],
) -> None:
    cache = _cache(make_cache, mirror, ttl=1)
    assert cache.get(BASE + PKG).status == 200  # cached (the repodata.json.zst fetched to check it)
    zst = _cached(cache, "repodata.json.zst")
    listed = _layer(cache).listed
    _wait_until(lambda: not listed._scans)

    # The channel changes (another package added): the next revalidation brings a new version.
    doc = json.loads((channel / SUBDIR / "repodata.json").read_text())
    doc["packages.conda"]["zzother-1.0-h1_0.conda"] = {"name": "zzother", "version": "1.0", "sha256": "ab" * 32}
    text = json.dumps(doc)
    (channel / SUBDIR / "repodata.json").write_text(text)
    (channel / SUBDIR / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    before = zst.stat().st_mtime_ns
    reads_before = len(whole_reads)
    time.sleep(1.1)
    assert cache.get(BASE + "repodata.json.zst").status == 200  # stale: revalidated in the background
    _wait_until(lambda: zst.stat().st_mtime_ns != before)
    _wait_until(lambda: not listed._scans and str(zst) in records._suspects)
    assert len(whole_reads) == reads_before + 1  # one read of the new version, for both

    answer = cache.get(BASE + PKG)
    assert (answer.status, answer.headers.get("x-pkgcache-cache")) == (200, "hit")
    assert request_scans == []  # the hit found its record known: no scan on its way


def test_no_pass_runs_while_a_shard_build_does_and_one_runs_after_it(
    mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    whole_reads: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[float, float]] = []
    build = generated_shards._build_small_here

    def slow_build(arguments: dict[str, object]) -> object:
        began = time.monotonic()
        time.sleep(1.0)  # a big subdir's build takes seconds: the repodata is whole and in place long before
        try:
            return build(arguments)
        finally:
            built.append((began, time.monotonic()))

    monkeypatch.setattr(generated_shards, "_build_small_here", slow_build)
    cache = _cache(make_cache, mirror)
    answer = cache.get(BASE + "repodata_shards.msgpack.zst")  # no shards upstream: made here, from the .zst
    assert answer.status == 200
    assert len(built) == 1
    _wait_until(lambda: str(_cached(cache, "repodata.json.zst")) in records._suspects)
    assert len(whole_reads) == 1
    assert whole_reads[0] >= built[0][1]  # after the build, not during it


def test_a_zst_made_here_is_never_read_ahead(
    json_only_mirror: MirrorLikeUpstream,
    make_cache: Callable[..., RunningCache],
    whole_reads: list[float],
    request_scans: list[str],
) -> None:
    cache = _cache(make_cache, json_only_mirror)
    answer = cache.get(BASE + "repodata.json.zst")  # the upstream has none: made here from the .json
    assert answer.status == 200
    made = _cached(cache, "repodata.json.zst")
    assert made.is_file()
    _wait_until(lambda: str(_cached(cache, "repodata.json")) in records._suspects)  # the .json is
    passes = _layer(cache).listed.passes
    assert passes is not None
    _wait_until(lambda: not passes.waiting())
    time.sleep(0.3)
    assert str(made) not in records._suspects
    assert len(whole_reads) == 1


# --- the parts ---


def _adversarial(tmp_path: Path) -> Path:
    """A repodata whose names a plain scan may get wrong: nested objects under a name, repeats, both sections."""
    real = {"name": "libfoo", "sha256": "aa" * 32, "size": 10}
    fake = {"name": "libfoo", "sha256": "bb" * 32, "size": 1}
    packages = [
        f'"libfoo-1.0-0.tar.bz2": {json.dumps({**fake, "extra": {"libfoo-1.1-0.conda": {"size": 1}}})}',
        f'"twice-1-0.tar.bz2": {json.dumps(real)}',
        f'"twice-1-0.tar.bz2": {json.dumps(fake)}',
        f'"same-1-0.tar.bz2": {json.dumps(real)}',
        f'"same-1-0.tar.bz2": {json.dumps(real)}',
        f'"both-1-0.conda": {json.dumps(fake)}',
        *(f'"p{i}-1-0.tar.bz2": {json.dumps({**real, "size": i})}' for i in range(3000)),
    ]
    conda = [f'"libfoo-1.1-0.conda": {json.dumps(real)}', f'"both-1-0.conda": {json.dumps(real)}']
    info = '{"x": {"ininfo-1-0.conda": {}}}'
    text = f'{{"info": {info}, "packages": {{{", ".join(packages)}}}, "packages.conda": {{{", ".join(conda)}}}}}'
    path = tmp_path / "repodata.json.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    return path


def test_the_records_read_with_the_suspects_are_those_each_lookup_finds(tmp_path: Path) -> None:
    path = _adversarial(tmp_path)
    names = [
        "libfoo-1.0-0.tar.bz2",
        "libfoo-1.1-0.conda",
        "twice-1-0.tar.bz2",
        "same-1-0.tar.bz2",
        "both-1-0.conda",
        "ininfo-1-0.conda",
        "p0-1-0.tar.bz2",
        "p2999-1-0.tar.bz2",
        "absent-1-0.conda",
    ]
    records._suspects.pop(str(path), None)
    together = find_records(path, names)  # the pass that finds the suspects gives them
    one_by_one = {}
    for name in names:
        try:
            record = find_record(path, name)
        except records.AmbiguousRecord:
            continue
        if record is not None:
            one_by_one[name] = record
    assert together == one_by_one
    assert set(together) == {"libfoo-1.0-0.tar.bz2", "libfoo-1.1-0.conda", "same-1-0.tar.bz2", "p0-1-0.tar.bz2",
                             "p2999-1-0.tar.bz2"}  # fmt: skip
    assert together["libfoo-1.1-0.conda"]["sha256"] == "aa" * 32
    assert find_records(path, names) == together  # the suspects known: the scan, the same answers


def test_a_pass_told_to_stop_ends_early_and_leaves_nothing_known(tmp_path: Path) -> None:
    path = _adversarial(tmp_path)
    records._suspects.pop(str(path), None)
    stop = threading.Event()
    stop.set()
    with pytest.raises(records.PassStopped):
        find_records(path, ["p0-1-0.tar.bz2"], stop)
    assert str(path) not in records._suspects


def test_passes_run_one_at_a_time_never_while_held_and_a_newer_one_takes_an_older_ones_place() -> None:
    from pkgcache.conda.passes_ahead import PassesAhead, PassStopped, Superseded

    log: list[str] = []
    running = threading.Lock()

    def work(name: str, steps: int = 20) -> Callable[[threading.Event], str]:
        def run(stop: threading.Event) -> str:
            assert running.acquire(blocking=False), "two passes at once"
            try:
                log.append(f"start {name}")
                for _ in range(steps):
                    if stop.is_set():
                        log.append(f"stopped {name}")
                        raise PassStopped(name)
                    time.sleep(0.01)
                log.append(f"end {name}")
                return name
            finally:
                running.release()

        return run

    async def scenario() -> None:
        passes = PassesAhead()
        release = passes.hold()  # a build runs
        first = passes.submit("a", work("a1"))
        older = passes.submit("b", work("b1"))
        newer = passes.submit("b", work("b2"))
        await asyncio.sleep(0.1)
        assert log == []  # nothing while held
        with pytest.raises(Superseded):
            await older
        release()
        await asyncio.sleep(0.05)
        assert log == ["start a1"]
        release = passes.hold()  # another build starts: a1 stops, and starts again after it
        await asyncio.sleep(0.1)
        assert log == ["start a1", "stopped a1"]
        release()
        assert await first == "a1" and await newer == "b2"
        assert log[2:] == ["start a1", "end a1", "start b2", "end b2"]
        assert passes.passes_run == 2

        slow = passes.submit("c", work("c", steps=1000))  # ten seconds, unless stopped
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await passes.close()
        assert time.monotonic() - began < 1.0
        with pytest.raises(PassStopped):
            await slow
        with pytest.raises(PassStopped):
            await passes.submit("d", work("d"))

    asyncio.run(scenario())
