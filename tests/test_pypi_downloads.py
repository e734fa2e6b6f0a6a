"""Files: fetched once however many ask, streamed, checked, written atomically, never half-kept."""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import gzip
import hashlib
import http.client
import io
import json
import lzma
import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from pkgcache.pypi import routes as pypi_routes
from pkgcache.pypi import upstream_index
from pkgcache.storage import filetypes
from pkgcache.storage.downloads import Download
from pkgcache.upstream import ranges
from pkgcache.upstream.ranges import MAX_PASSED_RANGE
from tests.cache_service import CacheProcess, RunningCache
from tests.fakes.dists import Dist, build_wheel, find_dist, sample_dists
from tests.fakes.faulty import Fault, FaultyPypiUpstream, Kind
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, PageExtras, SlowUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, fetch_concurrently, http_get

BIG = "bigpkg-1.0-py3-none-any.whl"
ALPHA = "alpha-2.0-py3-none-any.whl"


def _dist(filename: str) -> Dist:
    return find_dist(sample_dists(), filename)


def _cached_files(data_dir: Path) -> list[Path]:
    """The distributions in the cache (not the core metadata read from them)."""
    files = (data_dir / "pypi" / "files").rglob("*")
    return [path for path in files if path.is_file() and not path.name.endswith(".metadata")]


def test_fifty_clients_asking_for_one_missing_file_cause_one_upstream_download(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    slow = SlowUpstream(sample_dists(), bytes_per_second=4 * 1024 * 1024)
    bg_loop.run(slow.start())
    try:
        cache = make_cache([slow.index_url])
        url = f"{cache.url}/pypi/files/bigpkg/{BIG}"
        answers = asyncio.run(fetch_concurrently(url, 50))
        expected = _dist(BIG).sha256
        assert all(status == 200 for status, _ in answers)
        assert all(hashlib.sha256(body).hexdigest() == expected for _, body in answers)
        assert slow.count(f"/{BIG}") == 1
        # And then it is a plain cache hit.
        again = cache.get(f"/pypi/files/bigpkg/{BIG}")
        assert again.headers["x-pkgcache-cache"] == "hit"
        assert hashlib.sha256(again.body).hexdigest() == expected
    finally:
        bg_loop.run(slow.stop())


def test_a_client_gets_bytes_before_the_download_ends(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    slow = SlowUpstream(sample_dists(), bytes_per_second=1024 * 1024)  # 4 MiB: about four seconds
    bg_loop.run(slow.start())
    try:
        cache = make_cache([slow.index_url])

        async def first_chunk_then_rest() -> tuple[float, float, bytes]:
            started = time.monotonic()
            async with aiohttp.ClientSession() as session, session.get(f"{cache.url}/pypi/files/bigpkg/{BIG}") as r:
                first = await r.content.readany()
                first_at = time.monotonic() - started
                rest = await r.read()
                return first_at, time.monotonic() - started, first + rest

        first_at, total, body = asyncio.run(first_chunk_then_rest())
        assert hashlib.sha256(body).hexdigest() == _dist(BIG).sha256
        assert first_at < total / 2, (first_at, total)
    finally:
        bg_loop.run(slow.stop())


def test_a_file_failing_its_hash_is_refused_and_not_kept(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    official_upstream.corrupt_files.add(ALPHA)
    # The lying upstream is rested (the fault suite checks that); with no rest, the mended one is asked again.
    cache = make_cache([official_upstream.index_url], upstream={"cooldown": 0})
    try:
        answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
    except http.client.IncompleteRead as cut:
        # Streaming had begun: the connection is cut before the last byte, so the client cannot take it as whole.
        assert len(cut.partial) < _dist(ALPHA).size
    else:
        assert answer.status == 502, answer
    assert _cached_files(cache.data_dir) == []
    # A client is cut (or refused) as soon as the bytes are known bad; the download then ends on its own (it would
    # try the next upstream), dropping its temporary file before it stops being in flight.
    cache.wait_for_downloads_to_end()
    assert list((cache.data_dir / "tmp").iterdir()) == []

    official_upstream.corrupt_files.clear()
    answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
    assert answer.status == 200
    assert hashlib.sha256(answer.body).hexdigest() == _dist(ALPHA).sha256


def test_a_killed_process_leaves_no_partial_file_that_is_later_served(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    slow = SlowUpstream(sample_dists(), bytes_per_second=512 * 1024)  # 4 MiB takes about eight seconds
    bg_loop.run(slow.start())
    data_dir = tmp_path / "data"
    try:
        process = CacheProcess(data_dir, "--pypi-upstream", slow.index_url)
        reader = threading.Thread(
            target=lambda: _ignore_errors(lambda: http_get(f"{process.url}/pypi/files/bigpkg/{BIG}", timeout=20)),
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + 10
        while not any(p.stat().st_size > 0 for p in (data_dir / "tmp").glob("*.part")):
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        process.kill()
        assert _cached_files(data_dir) == []

        slow.bytes_per_second = 0
        process = CacheProcess(data_dir, "--pypi-upstream", slow.index_url)
        try:
            assert list((data_dir / "tmp").glob("*.part")) == []  # leftovers are dropped at start
            answer = http_get(f"{process.url}/pypi/files/bigpkg/{BIG}")
            assert answer.status == 200
            assert hashlib.sha256(answer.body).hexdigest() == _dist(BIG).sha256
            (kept,) = _cached_files(data_dir)
            assert hashlib.sha256(kept.read_bytes()).hexdigest() == _dist(BIG).sha256
        finally:
            assert process.terminate() == 0
    finally:
        bg_loop.run(slow.stop())


def _ignore_errors(action: Callable[[], object]) -> None:
    # The server is killed under this reader on purpose.
    with contextlib.suppress(Exception):
        action()


def test_cached_files_support_range_requests(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    whole = cache.get(f"/pypi/files/alpha/{ALPHA}").body
    part = cache.get(f"/pypi/files/alpha/{ALPHA}", {"Range": "bytes=10-19"})
    assert part.status == 206
    assert part.body == whole[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole)}"


def test_metadata_files_are_served_when_the_upstream_has_them(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    answer = cache.get(f"/pypi/files/alpha/{ALPHA}.metadata")
    assert answer.status == 200
    assert hashlib.sha256(answer.body).hexdigest() == _dist(ALPHA).metadata_sha256
    assert b"Requires-Dist: beta" in answer.body


@pytest.mark.parametrize("filename", [ALPHA, BIG], ids=["small, read whole", "large, sendfile"])
def test_cached_files_answer_plain_and_conditional_requests_alike(
    filename: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    """A plain GET is answered on a quick path, ranges and conditional requests by aiohttp: both must agree."""
    upstream = SlowUpstream(sample_dists(), bytes_per_second=0)
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url])
        project = filename.split("-", 1)[0]
        url = f"/pypi/files/{project}/{filename}"
        assert cache.get(url).headers["x-pkgcache-cache"] == "miss"
        plain = cache.get(url)
        assert plain.status == 200 and plain.headers["x-pkgcache-cache"] == "hit"
        assert hashlib.sha256(plain.body).hexdigest() == _dist(filename).sha256
        assert plain.headers["content-length"] == str(len(plain.body))
        assert plain.headers["accept-ranges"] == "bytes" and plain.headers["etag"].startswith('"')
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"

        head = cache.get(url, method="HEAD")
        assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(len(plain.body))
        # The quick path's validators are the ones aiohttp's FileResponse checks.
        again = cache.get(url, {"If-None-Match": plain.headers["etag"]})
        assert again.status == 304 and again.body == b""
        since = cache.get(url, {"If-Modified-Since": plain.headers["last-modified"]})
        assert since.status == 304
        part = cache.get(url, {"Range": "bytes=100-199"})
        assert part.status == 206 and part.body == plain.body[100:200]
        assert part.headers["etag"] == plain.headers["etag"]
        assert upstream.count(f"/{filename}") == 1
    finally:
        bg_loop.run(upstream.stop())


# --- ranges on a distribution that is not cached ---

MiB = 1024 * 1024


def _range_lengths(server: OfficialLikeUpstream | TunaLikeUpstream, filename: str) -> list[int | None]:
    """How many bytes each ranged GET for `filename` asked the upstream for (None: open-ended)."""
    files = getattr(server, "files", server)
    lengths: list[int | None] = []
    for request in files.requests:
        spec = request.headers.get("Range", "") if request.path.endswith(f"/{filename}") else ""
        if spec:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            lengths.append(int(last) if not first else None if not last else int(last) - int(first) + 1)
    return lengths


@pytest.mark.parametrize("sizes_on_page", [True, False], ids=["page with sizes", "page without sizes"])
def test_an_open_ended_range_on_a_big_uncached_wheel_streams_from_its_download(
    sizes_on_page: bool, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    """`Range: bytes=1-` on a 12 MiB wheel is not passed to the upstream (its answer would be held in memory
    whole, then sent unchecked): the wheel is downloaded as for a GET, the part streamed as it arrives."""
    big = build_wheel("huge", "1.0", payload_size=12 * MiB)
    server: OfficialLikeUpstream | TunaLikeUpstream
    if sizes_on_page:
        server = OfficialLikeUpstream([big])
    else:
        server = SlowUpstream([big], bytes_per_second=8 * MiB, strict_ua=False)
    bg_loop.run(server.start())
    try:
        cache = make_cache([server.index_url])
        url = f"{cache.url}/pypi/files/huge/{big.filename}"

        async def first_chunk_then_rest() -> tuple[int, dict[str, str], float, float, bytes]:
            started = time.monotonic()
            async with aiohttp.ClientSession() as session, session.get(url, headers={"Range": "bytes=1-"}) as r:
                first = await r.content.readany()
                first_at = time.monotonic() - started
                rest = await r.read()
                return r.status, dict(r.headers), first_at, time.monotonic() - started, first + rest

        status, headers, first_at, total, body = asyncio.run(first_chunk_then_rest())
        assert status == 206 and body == big.data[1:]
        assert headers["Content-Range"] == f"bytes 1-{big.size - 1}/{big.size}"
        assert headers["Content-Length"] == str(big.size - 1)
        if not sizes_on_page:  # throttled: the part went out as the wheel came in, not once all of it was here
            assert first_at < total / 2, (first_at, total)
        # The upstream was asked for the wheel once, whole, and for no range longer than a passed-through one
        # (the page without sizes: its last byte, for the size).
        assert getattr(server, "files", server).count_whole(big.filename) == 1
        assert all(length is not None and length <= MAX_PASSED_RANGE for length in _range_lengths(server, big.filename))
        again = cache.get(f"/pypi/files/huge/{big.filename}", {"Range": "bytes=2-"})
        assert again.status == 206 and again.headers["x-pkgcache-cache"] == "hit" and again.body == big.data[2:]
    finally:
        bg_loop.run(server.stop())


@pytest.mark.parametrize("sizes_on_page", [True, False], ids=["page with sizes", "page without sizes"])
@pytest.mark.parametrize("spec", ["bytes=0-", "bytes=0-{last}", "bytes=-{size}", "bytes=-{more}"])
def test_a_range_covering_a_wheel_its_mirror_falsifies_never_gets_a_complete_206(
    sizes_on_page: bool, spec: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    """The mirror sends other bytes of the same size than the page's hash says: a plain GET is cut short, and so
    is any range that is the whole file (it is not passed through: it comes from the download, which fails its
    check before the last byte goes out). Nothing is kept."""
    liar = build_wheel("liar", "1.0", payload_size=300_000)
    server: OfficialLikeUpstream | TunaLikeUpstream = (
        OfficialLikeUpstream([liar]) if sizes_on_page else TunaLikeUpstream([liar], strict_ua=False)
    )
    server.corrupt_files.add(liar.filename)  # every answer, whole or ranged: same size, other bytes
    bg_loop.run(server.start())
    try:
        cache = make_cache([server.index_url])
        header = spec.format(last=liar.size - 1, size=liar.size, more=liar.size + 10)
        try:
            answer = cache.get(f"/pypi/files/liar/{liar.filename}", {"Range": header})
        except http.client.IncompleteRead as cut:
            assert len(cut.partial) < liar.size
        else:
            assert answer.status >= 500 and len(answer.body) < liar.size, (answer.status, answer.headers)
        cache.wait_for_downloads_to_end()
        assert _cached_files(cache.data_dir) == []
    finally:
        bg_loop.run(server.stop())


def test_a_short_range_passes_through_and_one_over_the_cap_comes_from_the_download(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv's and poetry's reads of a wheel's end (a tail, then a part of it) are passed through and not kept, up to
    the cap, which is lowered here; one byte more is answered from the wheel's download, which then is kept."""
    cap = 64 * 1024
    monkeypatch.setattr(ranges, "MAX_PASSED_RANGE", cap)
    monkeypatch.setattr(pypi_routes, "MAX_PASSED_RANGE", cap)
    cache = make_cache([official_upstream.index_url])
    data, url = _dist(BIG).data, f"/pypi/files/bigpkg/{BIG}"
    for spec, (first, end) in {
        "bytes=-16384": (len(data) - 16384, len(data)),  # uv's first read
        "bytes=-10000": (len(data) - 10000, len(data)),  # poetry's
        f"bytes=1000-{1000 + cap - 1}": (1000, 1000 + cap),
        f"bytes={len(data) - cap}-": (len(data) - cap, len(data)),
    }.items():
        part = cache.get(url, {"Range": spec})
        assert part.status == 206 and part.body == data[first:end], spec
        assert part.headers["content-range"] == f"bytes {first}-{end - 1}/{len(data)}", spec
    assert official_upstream.files.count_whole(BIG) == 0
    assert _cached_files(cache.data_dir) == []
    longer = cache.get(url, {"Range": f"bytes=1000-{1000 + cap}"})
    assert longer.status == 206 and longer.body == data[1000 : 1000 + cap + 1]
    assert longer.headers["content-range"] == f"bytes 1000-{1000 + cap}/{len(data)}"
    assert official_upstream.files.count_whole(BIG) == 1
    assert [path.name for path in _cached_files(cache.data_dir)] == [BIG]


def test_fetch_range_refuses_a_range_over_its_limit_before_asking() -> None:
    with pytest.raises(ranges.RangeTooLong):
        asyncio.run(ranges.fetch_range(None, None, 0, ranges.MAX_PASSED_RANGE + 1))  # type: ignore[arg-type]
    with pytest.raises(ranges.RangeTooLong):
        asyncio.run(ranges.fetch_range(None, None, None, 1025, limit=1024))  # type: ignore[arg-type]


# --- what a mirror may make pkgcache write ---

CAP = 64 * 1024


@pytest.fixture
def disk_peaks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The most each download's temporary file took on disk at any moment: its size, or the space reserved for it,
    seen after every write."""
    peaks: dict[str, int] = {}
    original = Download._append

    def append(download: Download, chunk: bytes) -> None:
        original(download, chunk)
        assert download._handle is not None
        taken = max(os.fstat(download._handle.fileno()).st_size, download._reserved)
        name = download.final_path.name
        peaks[name] = max(peaks.get(name, 0), taken)

    monkeypatch.setattr(Download, "_append", append)
    return peaks


@pytest.mark.parametrize(
    "fault",
    [
        # ~1 KiB of gzip decoding to 1 MiB (16 times the cap); the page gives no size to bound it.
        Fault(Kind.GZIP_ENCODED, rate=1 << 20),
        Fault(Kind.LARGER_FILE),  # 512 KiB more than the file, with its Content-Length
        Fault(Kind.LARGER_NO_LENGTH),  # the same without a length: only the bytes tell
    ],
    ids=lambda fault: fault.slug(),
)
def test_a_sizeless_mirror_never_puts_more_than_the_cap_on_disk(
    fault: Fault,
    disk_peaks: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    bg_loop: BackgroundLoop,
    tuna_upstream: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
) -> None:
    monkeypatch.setattr(filetypes, "MAX_PACKAGE_BYTES", CAP, raising=False)  # (not there before the cap was)
    faulty = FaultyPypiUpstream(sample_dists(), json_pages=False)  # HTML: hashes, no sizes
    faulty.plan.set(f"/{ALPHA}", fault)
    bg_loop.run(faulty.start())
    try:
        cache = make_cache([faulty.index_url, tuna_upstream.index_url])
        answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
        assert answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == _dist(ALPHA).sha256
        assert faulty.count(f"/{ALPHA}") == 1 and tuna_upstream.count(f"/{ALPHA}") == 1
        cache.wait_for_downloads_to_end()
        assert disk_peaks[ALPHA] <= CAP, disk_peaks
        if fault.kind is Kind.GZIP_ENCODED:
            assert disk_peaks[ALPHA] == _dist(ALPHA).size  # refused from its headers: only the good bytes were written
        assert list((cache.data_dir / "tmp").iterdir()) == []
        (kept,) = _cached_files(cache.data_dir)
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == _dist(ALPHA).sha256
        # The mirror's bad answer is counted, and it rests now that another one gave the file.
        first, second = json.loads(cache.get("/-/status").body)["upstreams"]["pypi"]
        assert first["failures"] == 1 and first["healthy"] is False, first
        assert second["healthy"] is True and not second["last_error"]
    finally:
        bg_loop.run(faulty.stop())


@pytest.mark.parametrize("mode", [None, "chunked"], ids=["with its length", "without a length"])
def test_provenance_past_its_cap_is_refused_at_the_cap(
    mode: str | None,
    disk_peaks: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    official_upstream: OfficialLikeUpstream,
    make_cache: Callable[..., RunningCache],
) -> None:
    cap = 64  # the stand-in provenance is some 200 bytes
    monkeypatch.setattr(upstream_index, "MAX_PROVENANCE_BYTES", cap)
    official_upstream.page_extras["alpha"] = PageExtras(provenance=True)
    if mode is not None:
        official_upstream.garbage[ALPHA + ".provenance"] = mode
    cache = make_cache([official_upstream.index_url])
    answer = cache.get(f"/pypi/files/alpha/{ALPHA}.provenance")
    assert answer.status == 502, answer
    cache.wait_for_downloads_to_end()
    assert disk_peaks.get(ALPHA + ".provenance", 0) <= cap, disk_peaks
    assert not (cache.data_dir / "pypi" / "files" / "alpha" / f"{ALPHA}.provenance").exists()
    assert list((cache.data_dir / "tmp").iterdir()) == []


def _sdist_bytes(suffix: str) -> bytes:
    """A small sdist archive of the kind its name says (zstd's frame magic before filler: no zstd in the stdlib)."""
    if suffix == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("demo-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        return buffer.getvalue()
    if suffix == ".tar.zst":
        return b"\x28\xb5\x2f\xfd" + os.urandom(64)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        content = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    plain = buffer.getvalue()
    if suffix in (".tar.gz", ".tgz"):
        return gzip.compress(plain)
    if suffix in (".tar.bz2", ".tbz"):
        return bz2.compress(plain)
    if suffix in (".tar.xz", ".txz"):
        return lzma.compress(plain)
    if suffix in (".tar.lzma", ".tlz", ".tar.lz"):
        return lzma.compress(plain, format=lzma.FORMAT_ALONE)
    return plain


@pytest.mark.parametrize(
    "suffix",
    [
        ".tar.gz",
        ".tgz",
        ".zip",
        ".tar",
        ".tar.bz2",
        ".tbz",
        ".tar.xz",
        ".txz",
        ".tlz",
        ".tar.lz",
        ".tar.lzma",
        ".tar.zst",
    ],
)
def test_sdists_of_every_kind_pip_and_uv_read_are_listed_and_served(
    suffix: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    sdist = Dist(project="demo", version="1.0", filename=f"demo-1.0{suffix}", data=_sdist_bytes(suffix))
    mirror = TunaLikeUpstream([sdist], strict_ua=False)
    bg_loop.run(mirror.start())
    try:
        cache = make_cache([mirror.index_url])
        page = json.loads(cache.get("/pypi/simple/demo/", {"Accept": "application/vnd.pypi.simple.v1+json"}).body)
        assert [item["filename"] for item in page["files"]] == [sdist.filename]
        answer = cache.get(f"/pypi/files/demo/{sdist.filename}")
        assert answer.status == 200 and answer.body == sdist.data
        assert mirror.count(mirror.file_path(sdist), "GET") == 1
    finally:
        bg_loop.run(mirror.stop())


@pytest.mark.parametrize("suffix", [".tar.xz", ".txz", ".tbz"])
def test_an_error_page_in_place_of_an_sdist_fails_its_kinds_first_bytes(
    suffix: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    # A mirror whose page lists what it then serves, an HTML page (its hash and all): not an archive of that kind.
    page = b"<html><body>Please log in</body></html>"
    sdist = Dist(project="demo", version="1.0", filename=f"demo-1.0{suffix}", data=page)
    mirror = TunaLikeUpstream([sdist], strict_ua=False)
    bg_loop.run(mirror.start())
    try:
        cache = make_cache([mirror.index_url])
        assert filetypes.magic_for(sdist.filename)
        try:
            answer = cache.get(f"/pypi/files/demo/{sdist.filename}")
        except http.client.IncompleteRead:
            pass  # cut once known bad
        else:
            assert answer.status == 502, answer
        assert mirror.count(mirror.file_path(sdist), "GET") >= 1
        assert _cached_files(cache.data_dir) == []
    finally:
        bg_loop.run(mirror.stop())
