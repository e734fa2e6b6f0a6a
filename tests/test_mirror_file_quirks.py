"""What one mirror's quirks on files must not cost clients, when another mirror has the file right: a page without
a usable hash and a body cut short that looks whole; an sdist labelled with its own gzip (Apache's stock
`AddEncoding x-gzip .gz`); a wrong PEP 658 hash; ranges refused by a slow mirror; a file sent slowly (above
min_rate) on a cold start, when no rate is known for the next mirror yet.

Mirror A (first) has the quirk, mirror B (second) is healthy; the tests check that B was asked, and, where the
quirk was about what a client installs, that real pip and uv install through pkgcache."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import io
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pkgcache.config import UpstreamPolicy
from pkgcache.upstream.compare import Progress, comparison_due
from pkgcache.upstream.credentials import OriginCredentials
from pkgcache.upstream.pool import UpstreamPolicySettings
from tests.cache_service import RunningCache
from tests.fakes.dists import Dist, build_buildable_sdist, build_sdist, build_wheel
from tests.fakes.faulty import Fault, FaultyPypiUpstream, Kind
from tests.fakes.pypi_upstreams import SlowUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, http_get, installed_dists, run_pip_install, run_uv_install

INSTALLERS = {"pip": run_pip_install, "uv": run_uv_install}


def _start(bg_loop: BackgroundLoop, *servers: TunaLikeUpstream) -> None:
    for server in servers:
        bg_loop.run(server.start())


@contextlib.contextmanager
def _serving(bg_loop: BackgroundLoop, *servers: TunaLikeUpstream) -> Iterator[None]:
    """The servers started, and stopped on leaving."""
    _start(bg_loop, *servers)
    try:
        yield
    finally:
        for server in servers:
            bg_loop.run(server.stop())


@pytest.fixture
def mirrors(bg_loop: BackgroundLoop) -> Iterator[Callable[[list[Dist]], tuple[FaultyPypiUpstream, TunaLikeUpstream]]]:
    """make([dists]) -> (A, B): A an HTML-only mirror that misbehaves where its plan says, B a healthy one (with
    `b_faulty`, one that misbehaves where its own plan says)."""
    started: list[TunaLikeUpstream] = []

    def make(dists: list[Dist], *, b_faulty: bool = False) -> tuple[FaultyPypiUpstream, TunaLikeUpstream]:
        a = FaultyPypiUpstream(dists, json_pages=False)
        b = FaultyPypiUpstream(dists, json_pages=False) if b_faulty else TunaLikeUpstream(dists, strict_ua=False)
        _start(bg_loop, a, b)
        started.extend((a, b))
        return a, b

    yield make
    for server in started:
        bg_loop.run(server.stop())


def _kept(cache: RunningCache, project: str, filename: str) -> bytes:
    return (cache.data_dir / "pypi" / "files" / project / filename).read_bytes()


def _get_until_whole(cache: RunningCache, path: str) -> bytes:
    """The file through pkgcache: the first client may be cut (it followed A's bytes before they were judged), the
    next one gets what was kept."""
    for _ in range(2):
        try:
            answer = cache.get(path)
        except http.client.IncompleteRead:
            cache.wait_for_downloads_to_end()
            continue
        if answer.status == 200:
            return answer.body
        cache.wait_for_downloads_to_end()
    raise AssertionError(f"{path}: no whole answer")


# --- a page without a usable hash, and a body cut short that looks whole ------------------------------------------


@pytest.mark.parametrize("kind", ["pip", "uv"])
@pytest.mark.parametrize("fragment", ["", "sha256="], ids=["no-fragment", "empty-sha256"])
def test_a_cut_wheel_from_a_page_without_a_usable_hash_is_refused_and_fetched_from_the_next_mirror(
    kind: str, fragment: str, mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]],
    make_cache: Callable[..., RunningCache], tmp_path: Path,
) -> None:  # fmt: skip
    wheel = build_wheel("cutwheel", "1.0", payload_size=200_000)
    a, b = mirrors([wheel])
    a.link_fragments[wheel.filename] = fragment  # A's page: nothing to check the bytes against
    a.plan.set(wheel.filename, Fault(Kind.CUT_NO_LENGTH))  # half the wheel, chunked: looks whole
    cache = make_cache([a.index_url, b.index_url])
    result = INSTALLERS[kind](cache.index_url, tmp_path / "target", "cutwheel==1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == {"cutwheel==1.0"}
    assert a.count(f"/{wheel.filename}", "GET") >= 1  # A was asked first, and cut its answer
    assert b.count_whole(f"/{wheel.filename}") == 1  # then B, for the whole wheel
    assert hashlib.sha256(_kept(cache, "cutwheel", wheel.filename)).hexdigest() == wheel.sha256


def _zip_sdist(name: str, version: str) -> Dist:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}-{version}/PKG-INFO", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{name}-{version}/data.bin", hashlib.sha256(b"x").digest() * 8000)
    return Dist(project=name, version=version, filename=f"{name}-{version}.zip", data=buffer.getvalue())


@pytest.mark.parametrize(
    "dist",
    [
        build_wheel("cutwheel", "1.0", payload_size=200_000),
        build_sdist("cutwheel", "1.0"),
        _zip_sdist("cutwheel", "1.0"),
    ],
    ids=["wheel", "tar.gz", "zip"],
)
@pytest.mark.parametrize("fault", [Fault(Kind.CUT_NO_LENGTH), Fault(Kind.CUT)], ids=["no-length", "with-length"])
def test_no_file_cut_short_is_kept_without_a_hash_whatever_its_kind(
    dist: Dist, fault: Fault, mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]],
    make_cache: Callable[..., RunningCache],
) -> None:  # fmt: skip
    a, b = mirrors([dist])
    a.link_fragments[dist.filename] = ""
    a.plan.set(dist.filename, fault)
    cache = make_cache([a.index_url, b.index_url])
    assert cache.get("/pypi/simple/cutwheel/").status == 200
    body = _get_until_whole(cache, f"/pypi/files/cutwheel/{dist.filename}")
    assert body == dist.data
    assert _kept(cache, "cutwheel", dist.filename) == dist.data
    assert b.count(f"/{dist.filename}", "GET") >= 1


def _cut_points(size: int) -> list[int]:
    return sorted({1, 2, 10, size // 3, size // 2, size - 30, size - 22, size - 9, size - 8, size - 1})


@pytest.mark.parametrize("dist", [build_wheel("w", "1.0", payload_size=50_000), build_sdist("s", "1.0")])
def test_the_whole_file_check_refuses_every_cut_and_takes_the_whole(dist: Dist) -> None:
    from pkgcache.storage.filetypes import GZIP_MAGIC, ZIP_MAGIC, whole_check_for

    magic = ZIP_MAGIC if dist.filename.endswith(".whl") else GZIP_MAGIC

    def judge(data: bytes) -> bool:
        check = whole_check_for(magic)
        assert check is not None
        for offset in range(0, len(data), 4096):
            check.feed(data[offset : offset + 4096])

        def read(offset: int, size: int) -> bytes:
            if offset + size > len(data):
                raise ValueError("past the end")
            return data[offset : offset + size]

        try:
            check.check(read, len(data))
        except ValueError:
            return False
        return True

    assert judge(dist.data)
    for cut in _cut_points(dist.size):
        assert not judge(dist.data[:cut]), cut
    if magic == GZIP_MAGIC:
        # A second gzip member, and zero padding after the stream, are whole files too (gzip readers take them);
        # a second member cut short is not.
        second = gzip.compress(b"more", mtime=0)
        assert judge(dist.data + second)
        assert judge(dist.data + bytes(512))
        assert not judge(dist.data + second[:-3])


# --- an sdist labelled with its own gzip -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_an_sdist_both_mirrors_label_x_gzip_installs_as_from_the_mirror_itself(
    kind: str, mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]],
    make_cache: Callable[..., RunningCache], tmp_path: Path,
) -> None:  # fmt: skip
    sdist = build_buildable_sdist("labelled", "1.0")
    a, b = mirrors([sdist], b_faulty=True)  # both labelled by the same web server configuration
    for mirror in (a, b):
        assert isinstance(mirror, FaultyPypiUpstream)
        mirror.plan.set(sdist.filename, Fault(Kind.LABELLED_GZIP))
    direct = INSTALLERS[kind](a.index_url, tmp_path / "direct", "labelled==1.0")
    assert direct.returncode == 0, direct.stdout + direct.stderr
    a.reset_log()
    cache = make_cache([a.index_url, b.index_url])
    result = INSTALLERS[kind](cache.index_url, tmp_path / "target", "labelled==1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == {"labelled==1.0"}
    assert (tmp_path / "target" / "labelled_sdist_built.py").is_file()
    assert a.count(f"/{sdist.filename}", "GET") == 1  # taken from A, labelled as it was
    assert a.transfers[-1].ending == "complete"
    assert _kept(cache, "labelled", sdist.filename) == sdist.data


def test_a_wheel_labelled_gzip_is_still_refused_and_comes_from_the_next_mirror(
    mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]], make_cache: Callable[..., RunningCache]
) -> None:
    # A wheel is no gzip file: a gzip label on it is a coding of the bytes (their hash fails as sent, and decoding
    # them is what a gzip bomb asks for), refused from the headers as before.
    wheel = build_wheel("labelled", "1.0")
    a, b = mirrors([wheel])
    a.plan.set(wheel.filename, Fault(Kind.LABELLED_GZIP))
    cache = make_cache([a.index_url, b.index_url])
    answer = cache.get(f"/pypi/files/labelled/{wheel.filename}")
    assert answer.status == 200 and answer.body == wheel.data
    assert b.count(f"/{wheel.filename}", "GET") == 1


# --- a wrong PEP 658 hash ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_mirrors_wrong_metadata_hash_is_never_advertised(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    wheel = build_wheel("metahash", "1.0")
    wrong = "1" * 64
    a, b = TunaLikeUpstream([wheel], strict_ua=False), TunaLikeUpstream([wheel], strict_ua=False)
    a.serves_metadata = True  # the right METADATA, under a wrong hash; B has no PEP 658 at all
    a.advertised_metadata_hashes[wheel.filename] = wrong
    with _serving(bg_loop, a, b):
        cache = make_cache([a.index_url, b.index_url])
        # The first run is the one that failed: the page then carried A's hash, the .metadata another.
        result = INSTALLERS[kind](cache.index_url, tmp_path / "target", "metahash==1.0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed_dists(tmp_path / "target") == {"metahash==1.0"}
        assert a.count(f"/{wheel.filename}.metadata") >= 1  # A's .metadata was asked for, and refused
        page = cache.get("/pypi/simple/metahash/").body.decode()
        assert wrong not in page
        assert f"sha256={hashlib.sha256(wheel.metadata or b'').hexdigest()}" in page


# --- ranges refused by a slow mirror -----------------------------------------------------------------------------


def test_a_metadata_read_asks_the_next_mirror_for_ranges_when_a_slow_one_refuses_them(
    mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]], make_cache: Callable[..., RunningCache]
) -> None:
    wheel = build_wheel("slowmeta", "1.0", payload_size=1_500_000)
    a, b = mirrors([wheel])
    # A answers every request for the wheel, ranges too, with the whole wheel at 20 KB/s (above min_rate): 75 s.
    a.plan.set(wheel.filename, Fault(Kind.DRIP, rate=20_000))
    cache = make_cache([a.index_url, b.index_url])
    assert cache.get("/pypi/simple/slowmeta/").status == 200
    started = time.monotonic()
    # pip's own read timeout is 15 s: it got no byte before, and failed after five tries.
    answer = http_get(f"{cache.url}/pypi/files/slowmeta/{wheel.filename}.metadata", timeout=10)
    assert answer.status == 200 and answer.body == wheel.metadata
    assert time.monotonic() - started < 5
    assert any("Range" in request.headers for request in b.requests if request.path.endswith(wheel.filename))


# --- a slow mirror on a cold start: compared with the next one, which takes the transfer over -----------------


def _ranges_asked(server: TunaLikeUpstream, filename: str) -> list[str]:
    return [r.headers["Range"] for r in server.requests if r.path.endswith(f"/{filename}") and "Range" in r.headers]


def _fetched_comparing_after_1s(
    make_cache: Callable[..., RunningCache], a: TunaLikeUpstream, b: TunaLikeUpstream, project: str, wheel: Dist
) -> RunningCache:
    """A pkgcache over [A, B] comparing a slow transfer after 1 s, once it has served `wheel` whole and kept it."""
    cache = make_cache([a.index_url, b.index_url], upstream={"compare_after": 1})
    assert cache.get(f"/pypi/simple/{project}/").status == 200
    answer = cache.get(f"/pypi/files/{project}/{wheel.filename}")
    assert answer.status == 200 and answer.body == wheel.data
    cache.wait_for_downloads_to_end()
    return cache


def _resumed_from(ranges: list[str]) -> list[int]:
    """Where the open-ended ranges asked (`bytes=N-`, N > 0: a transfer resumed) start."""
    return [int(found.group(1)) for asked in ranges if (found := re.fullmatch(r"bytes=([1-9][0-9]*)-", asked))]


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_wheel_dripping_from_the_first_mirror_on_a_cold_start_goes_on_from_the_next_one(
    kind: str, mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]],
    make_cache: Callable[..., RunningCache], tmp_path: Path,
) -> None:  # fmt: skip
    wheel = build_wheel("dripwheel", "1.0", payload_size=600_000)
    a, b = mirrors([wheel])
    # A sends the wheel (ranges too: it refuses them) at 20 KB/s, above min_rate: 30 s whole, while B has it at
    # once. Cold: no rate is known for B, so relative_min_rate alone has nothing to compare A with (pip waited
    # 123 s for a 1.5 MB wheel so).
    a.plan.set(wheel.filename, Fault(Kind.DRIP, rate=20_000))
    cache = make_cache([a.index_url, b.index_url], upstream={"compare_after": 1})
    result = INSTALLERS[kind](cache.index_url, tmp_path / "target", "dripwheel==1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == {"dripwheel==1.0"}
    cache.wait_for_downloads_to_end()
    assert hashlib.sha256(_kept(cache, "dripwheel", wheel.filename)).hexdigest() == wheel.sha256
    ranges = _ranges_asked(b, wheel.filename)
    # B was timed on one range of the wheel's first bytes (all of it: under 1 MiB), then resumed the transfer
    # where A's bytes stopped; it never sent the whole wheel in one answer.
    assert ranges.count(f"bytes=0-{len(wheel.data) - 1}") == 1
    resumed = _resumed_from(ranges)
    assert len(resumed) == 1 and 0 < resumed[0] < len(wheel.data), ranges
    assert b.count_whole(f"/{wheel.filename}") == 0
    # A never finished sending the wheel: the install did not wait for it.
    endings = [transfer.ending for transfer in a.transfers if transfer.path.endswith(wheel.filename)]
    assert endings and "complete" not in endings, endings


def test_a_wheel_dripping_from_the_own_mirror_goes_on_from_a_parent_pkgcache_not_yet_known_as_one(
    mirrors: Callable[..., tuple[FaultyPypiUpstream, TunaLikeUpstream]],
    make_cache: Callable[..., RunningCache], tmp_path: Path,
) -> None:  # fmt: skip
    # An office over [its own mirror, the central pkgcache]: the comparison's range learns the central is a
    # pkgcache (its first answer to the office); the resume must then ask it at its files/ path, not at the page's
    # link made before it was known (a 404 there cut the client, and pip failed the install: QA verify35 M1).
    wheel = build_wheel("tierdrip", "1.0", payload_size=600_000)
    a, b = mirrors([wheel])
    a.plan.set(wheel.filename, Fault(Kind.DRIP, rate=20_000))
    # A gives pip the wheel's metadata itself: the child's first answer from the parent is the comparison's range.
    a.serves_metadata = True
    parent = make_cache([b.index_url])
    child = make_cache([a.index_url, parent.index_url], upstream={"compare_after": 1})
    result = run_pip_install(child.index_url, tmp_path / "target", "tierdrip==1.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == {"tierdrip==1.0"}
    child.wait_for_downloads_to_end()
    assert hashlib.sha256(_kept(child, "tierdrip", wheel.filename)).hexdigest() == wheel.sha256
    # The parent was timed on a range and resumed the transfer; A never finished sending the wheel.
    endings = [transfer.ending for transfer in a.transfers if transfer.path.endswith(wheel.filename)]
    assert endings and "complete" not in endings, endings
    parent.wait_for_downloads_to_end()
    assert hashlib.sha256(_kept(parent, "tierdrip", wheel.filename)).hexdigest() == wheel.sha256


def test_a_mirror_that_took_a_slow_transfer_over_and_throttles_after_its_first_mib_is_compared_again(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    # B sends each answer's first 1.1 MB at once, then 20 KB/s (nginx's limit_rate_after): its range of the wheel's
    # first MiB beats A's drip, and it takes the transfer over. Its crawl after the burst is its own transfer's,
    # compared again with the next upstream, C, which ends the wheel (once per download, B sent the rest at
    # 20 KB/s, and 2 MiB took 250 s against 105 s from A alone: QA verify35 M4).
    wheel = build_wheel("burstwheel", "1.0", payload_size=2_400_000)
    a = FaultyPypiUpstream([wheel], json_pages=False)
    a.plan.set(wheel.filename, Fault(Kind.DRIP, rate=20_000))
    b = SlowUpstream([wheel], bytes_per_second=20_000, strict_ua=False)
    b.fast_bytes = 1_100_000
    c = TunaLikeUpstream([wheel], strict_ua=False)
    with _serving(bg_loop, a, b, c):
        cache = make_cache([a.index_url, b.index_url, c.index_url], upstream={"compare_after": 1})
        assert cache.get("/pypi/simple/burstwheel/").status == 200
        assert _get_until_whole(cache, f"/pypi/files/burstwheel/{wheel.filename}") == wheel.data
        cache.wait_for_downloads_to_end()
        assert hashlib.sha256(_kept(cache, "burstwheel", wheel.filename)).hexdigest() == wheel.sha256
        # B was timed on the first MiB and resumed A's transfer; C was timed on the first MiB too, and resumed
        # B's transfer past where B's had started.
        from_b = _resumed_from(_ranges_asked(b, wheel.filename))
        from_c = _resumed_from(_ranges_asked(c, wheel.filename))
        assert len(from_b) == 1 and len(from_c) == 1, (_ranges_asked(b, wheel.filename), from_c)
        assert from_b[0] < from_c[0] < len(wheel.data)
        assert c.count_whole(f"/{wheel.filename}") == 0


def test_a_slow_transfer_is_compared_once_and_goes_on_when_the_next_mirror_is_no_faster(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    wheel = build_wheel("slowboth", "1.0", payload_size=150_000)
    a = SlowUpstream([wheel], bytes_per_second=20_000, strict_ua=False)
    b = SlowUpstream([wheel], bytes_per_second=20_000, strict_ua=False)
    with _serving(bg_loop, a, b):
        _fetched_comparing_after_1s(make_cache, a, b, "slowboth", wheel)
        # One range to B, given up on once B could no longer prove much faster; A sent the whole wheel.
        assert _ranges_asked(b, wheel.filename) == [f"bytes=0-{len(wheel.data) - 1}"]
        assert b.count_whole(f"/{wheel.filename}") == 0
        assert a.count_whole(f"/{wheel.filename}") == 1 and not _ranges_asked(a, wheel.filename)


def test_a_faster_mirror_whose_first_bytes_differ_does_not_take_a_slow_transfer_over(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    wheel = build_wheel("otherbytes", "1.0", payload_size=150_000)
    a = SlowUpstream([wheel], bytes_per_second=20_000, strict_ua=False)
    b = TunaLikeUpstream([wheel], strict_ua=False)
    # B answers ranges of the wheel with other bytes of the same length: resumed from it, the file would fail its
    # hash, and A's good bytes would go with B's.
    b.range_bodies[wheel.filename] = bytes(len(wheel.data))
    with _serving(bg_loop, a, b):
        _fetched_comparing_after_1s(make_cache, a, b, "otherbytes", wheel)
        assert _ranges_asked(b, wheel.filename) == [f"bytes=0-{len(wheel.data) - 1}"]
        assert a.count_whole(f"/{wheel.filename}") == 1


def test_only_a_transfer_far_from_its_end_after_compare_after_is_compared() -> None:
    policy = UpstreamPolicySettings.of(UpstreamPolicy(), (), OriginCredentials())
    assert policy.compare_after == 3.0
    drip = Progress(received=36_000, seconds=3.0)  # 12 KB/s
    assert comparison_due(policy, drip, 1_500_000)
    assert not comparison_due(policy, Progress(received=24_000, seconds=2.0), 1_500_000)  # not yet
    assert not comparison_due(policy, drip, 32_000)  # small: a range would cost about what is left
    assert not comparison_due(policy, Progress(received=30_000_000, seconds=3.0), 20_000_000)  # ends within 2 s
    assert comparison_due(policy, Progress(received=0, seconds=3.0), 1_000_000)  # nothing since its headers
    assert not comparison_due(dataclasses.replace(policy, compare_after=0.0), drip, 1_500_000)
    assert not comparison_due(dataclasses.replace(policy, relative_min_rate=0.0), drip, 1_500_000)
