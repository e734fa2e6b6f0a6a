"""A wheel's METADATA read from disk or by HTTP ranges, and an sdist's PKG-INFO and whether to trust it.

Every wheel here is also read with `zipfile`, so the expected bytes never come from the code under test. Ranged
reads go through a loopback server with real Range support, which counts the requests and bytes it sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import tarfile
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from pkgcache import zip_records
from pkgcache.pypi import sdist_metadata, wheel_metadata
from pkgcache.pypi.sdist_metadata import pkg_info_from_sdist_file, sdist_metadata_is_reliable
from pkgcache.pypi.wheel_metadata import (
    DEFAULT_TAIL_LENGTH,
    MetadataTooLarge,
    MetadataUnavailable,
    RangeAnswer,
    RangeCounter,
    RangesNotSupported,
    WheelMetadataStream,
    metadata_by_ranges,
    metadata_from_wheel_file,
    metadata_path,
    range_answer,
)
from tests.fakes import zips
from tests.fakes.dists import MiB, build_sdist, find_dist, sample_dists
from tests.fakes.range_files import HttpRangeReader, RangeFileServer
from tests.fakes.zips import BZIP2, DEFLATED, LZMA, STORED, ZipMember, build_zip
from tests.support import BackgroundLoop

KiB = 1024


# ---- wheels with chosen layouts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CraftedWheel:
    filename: str
    data: bytes
    metadata: bytes
    metadata_name: str


def _metadata_text(name: str, version: str) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", "Requires-Dist: numpy>=1.20"]
    return ("\n".join(lines) + "\n\n" + f"The {name} project, described at length. " * 40 + "\n").encode()


def craft_wheel(
    *,
    project: str = "odd_pkg",
    dist_info_project: str | None = None,
    version: str = "1.0",
    metadata_first: bool = False,
    payload: int = 0,
    extra_files: int = 0,
    metadata_method: int = DEFLATED,
    local_extra: bytes = b"",
    **zip_options: object,
) -> CraftedWheel:
    """A wheel of `project`, its .dist-info named after `dist_info_project` (default the same).

    Members: the package (with a random `payload` stored, and `extra_files` small modules), then METADATA, WHEEL,
    RECORD; `metadata_first` moves METADATA to the front.
    """
    dist_info = f"{dist_info_project or project}-{version}.dist-info"
    metadata = _metadata_text(dist_info_project or project, version)
    metadata_name = f"{dist_info}/METADATA"
    package = [ZipMember(f"{project}/__init__.py", b"VERSION = 1\n")]
    if payload:
        package.append(ZipMember(f"{project}/payload.bin", _random_bytes(payload), STORED))
    package += [ZipMember(f"{project}/module_{i:05d}_with_a_long_name.py", b"x = %d\n" % i) for i in range(extra_files)]
    meta = ZipMember(metadata_name, metadata, metadata_method, local_extra)
    tail = [ZipMember(f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nTag: py3-none-any\n")]
    tail.append(ZipMember(f"{dist_info}/RECORD", b"".join(m.name.encode() + b",,\n" for m in package)))
    members = [meta, *package, *tail] if metadata_first else [*package, meta, *tail]
    data = build_zip(members, **zip_options)  # type: ignore[arg-type]
    filename = f"{project}-{version}-py3-none-any.whl"
    return CraftedWheel(filename, data, metadata, metadata_name)


def _random_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _zipfile_reads(wheel: CraftedWheel) -> bytes:
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:
        return archive.read(wheel.metadata_name)


LAYOUTS: dict[str, Callable[[], CraftedWheel]] = {
    "deflated, METADATA near the end": lambda: craft_wheel(payload=256 * KiB),
    "stored METADATA": lambda: craft_wheel(payload=256 * KiB, metadata_method=STORED),
    "bzip2 METADATA": lambda: craft_wheel(payload=256 * KiB, metadata_method=BZIP2),
    "LZMA METADATA": lambda: craft_wheel(payload=256 * KiB, metadata_method=LZMA),
    "LZMA METADATA first": lambda: craft_wheel(payload=256 * KiB, metadata_method=LZMA, metadata_first=True),
    "METADATA first": lambda: craft_wheel(payload=256 * KiB, metadata_first=True),
    "zip64 records": lambda: craft_wheel(payload=256 * KiB, zip64=True),
    "zip64 with METADATA first": lambda: craft_wheel(payload=256 * KiB, zip64=True, metadata_first=True),
    "data descriptors": lambda: craft_wheel(payload=256 * KiB, data_descriptor=True),
    "zip64 and data descriptors": lambda: craft_wheel(payload=256 * KiB, zip64=True, data_descriptor=True),
    "a short archive comment": lambda: craft_wheel(payload=256 * KiB, comment=b"built by hand"),
    "a 60 KiB archive comment": lambda: craft_wheel(payload=256 * KiB, comment=b"c" * (60 * KiB)),
    "the longest archive comment": lambda: craft_wheel(payload=256 * KiB, comment=b"c" * 0xFFFF),
    "a 2 KiB local extra field": lambda: craft_wheel(payload=256 * KiB, metadata_first=True, local_extra=b"\0" * 2048),
    "3000 entries, METADATA near the end": lambda: craft_wheel(payload=256 * KiB, extra_files=3000),
    "3000 entries, METADATA first": lambda: craft_wheel(payload=256 * KiB, extra_files=3000, metadata_first=True),
    "project spelled differently": lambda: craft_wheel(project="odd_pkg", dist_info_project="Odd.Pkg", version="1.0"),
    "a whole wheel smaller than the tail": lambda: craft_wheel(),
}

# Requests a ranged read takes for each layout with the default 64 KiB tail, and why.
EXPECTED_REQUESTS = {
    "deflated, METADATA near the end": 1,  # the tail holds the directory and METADATA
    "stored METADATA": 1,
    "bzip2 METADATA": 1,
    "LZMA METADATA": 1,
    "LZMA METADATA first": 2,
    "METADATA first": 2,  # tail, then METADATA at the front
    "zip64 records": 1,
    "zip64 with METADATA first": 2,
    "data descriptors": 1,
    "zip64 and data descriptors": 1,
    "a short archive comment": 1,
    "a 60 KiB archive comment": 1,
    "the longest archive comment": 2,  # the end record starts before the tail: it comes next, with what precedes it
    "a 2 KiB local extra field": 3,  # tail, METADATA with a 1 KiB margin, then the rest past the long extra field
    "3000 entries, METADATA near the end": 2,  # tail (METADATA's entry is among the directory's last), METADATA
    "3000 entries, METADATA first": 3,  # tail, the rest of the directory (METADATA's entry is in it), METADATA
    "project spelled differently": 1,
    "a whole wheel smaller than the tail": 1,
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> tuple[str, CraftedWheel]:
    name = request.param
    wheel = LAYOUTS[name]()
    assert _zipfile_reads(wheel) == wheel.metadata, "the crafted archive must be a valid ZIP to zipfile too"
    return name, wheel


def test_crafted_zip64_wheels_really_use_zip64_records() -> None:
    wheel = LAYOUTS["zip64 records"]()
    assert b"PK\x06\x06" in wheel.data and b"PK\x06\x07" in wheel.data
    end = zips.end_record_offset(wheel.data)
    assert wheel.data[end + 8 : end + 20] == b"\xff\xff\xff\xff" + b"\xff" * 8


def test_crafted_big_central_directories_do_not_fit_the_first_read() -> None:
    wheel = LAYOUTS["3000 entries, METADATA first"]()
    end = zips.end_record_offset(wheel.data)
    directory_size = int.from_bytes(wheel.data[end + 12 : end + 16], "little")
    assert directory_size > DEFAULT_TAIL_LENGTH


# ---- the central directory's last entries, from a cut ---------------------------------------------------------


def _whole_entries_after(archive: bytes, cut: int) -> list[str]:
    """Names of the central-directory entries that lie wholly at or after `cut`, read with zipfile."""
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        names = [info.filename for info in opened.infolist()]
    return [name for name in names if zips.central_header_offset(archive, name) >= cut]


def _directory_tail(archive: bytes, cut: int) -> list[str]:
    offset, size = _central_directory(CraftedWheel("x-1.0-py3-none-any.whl", archive, b"", ""))
    directory = zip_records.CentralDirectory(offset, size, 0)
    return [member.name for member in zip_records.parse_directory_tail(archive[cut:], cut, directory)]


@pytest.mark.parametrize("names_hold_signatures", [False, True])
def test_the_directorys_last_entries_are_found_wherever_the_cut_falls(names_hold_signatures: bool) -> None:
    # Names holding the entry signature itself are where a search by signature could go wrong.
    stem = "odd_pkg/PK\x01\x02_{:04d}_PK\x01\x02.py" if names_hold_signatures else "odd_pkg/module_{:04d}.py"
    members = [ZipMember(stem.format(i), b"x = %d\n" % i) for i in range(400)]
    archive = build_zip(members)
    offset, size = _central_directory(CraftedWheel("x-1.0-py3-none-any.whl", archive, b"", ""))
    end = offset + size
    last_entry = zips.central_header_offset(archive, members[-1].name)
    cuts = [end - 1000 + shift for shift in range(0, 160, 3)] + [offset + 1, last_entry, last_entry + 1]
    for cut in cuts:
        assert _directory_tail(archive, cut) == _whole_entries_after(archive, cut), f"cut at {cut}"
    assert _directory_tail(archive, last_entry) == [members[-1].name]
    assert _directory_tail(archive, last_entry + 1) == []
    assert len(_directory_tail(archive, offset + 1)) == len(members) - 1


def test_bytes_full_of_signatures_give_no_entries() -> None:
    garbage = b"PK\x01\x02" * 4096
    directory = zip_records.CentralDirectory(offset=100, size=len(garbage), entries=3)
    assert zip_records.parse_directory_tail(garbage, 100 + 1, directory) == []


def test_a_directory_that_does_not_start_before_the_bytes_is_refused() -> None:
    archive = build_zip([ZipMember("odd_pkg/a.py", b"a = 1\n")])
    offset, size = _central_directory(CraftedWheel("x-1.0-py3-none-any.whl", archive, b"", ""))
    directory = zip_records.CentralDirectory(offset, size, 1)
    with pytest.raises(zip_records.ZipRecordError):
        zip_records.parse_directory_tail(archive[offset:], offset, directory)


# ---- from disk ------------------------------------------------------------------------------------------------


def test_built_wheels_on_disk_give_their_metadata_file(tmp_path: Path) -> None:
    wheels = [dist for dist in sample_dists() if dist.is_wheel]
    for dist in wheels:
        path = tmp_path / dist.filename
        path.write_bytes(dist.data)
        assert metadata_from_wheel_file(path) == dist.metadata


def test_every_layout_reads_from_disk_as_zipfile_reads_it(layout: tuple[str, CraftedWheel], tmp_path: Path) -> None:
    _, wheel = layout
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    assert metadata_from_wheel_file(path) == wheel.metadata


def test_a_cached_wheel_under_another_name_is_read_with_the_name_given(tmp_path: Path) -> None:
    wheel = craft_wheel()
    path = tmp_path / "sha256-of-the-file"
    path.write_bytes(wheel.data)
    assert metadata_from_wheel_file(path, wheel.filename) == wheel.metadata
    with pytest.raises(MetadataUnavailable, match="not a wheel"):
        metadata_from_wheel_file(path)


def test_a_missing_file_is_unavailable_not_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataUnavailable):
        metadata_from_wheel_file(tmp_path / "gone-1.0-py3-none-any.whl")


# ---- choosing the .dist-info directory --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dist_info", "filename"),
    [
        ("Foo.Bar-1.0.dist-info", "foo_bar-1.0-py3-none-any.whl"),
        ("foo_bar-1.0.0.dist-info", "foo_bar-1.0-py3-none-any.whl"),  # versions compared as versions
        ("FOO-BAR-1.0.dist-info", "foo_bar-1.0-py3-none-any.whl"),  # hyphens in an old unescaped name
        ("torch-2.3.0+cpu.dist-info", "torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl"),
    ],
)
def test_the_dist_info_directory_is_matched_normalised(dist_info: str, filename: str) -> None:
    names = ["foo_bar/__init__.py", f"{dist_info}/METADATA", f"{dist_info}/RECORD"]
    assert metadata_path(names, filename) == f"{dist_info}/METADATA"


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["foo/__init__.py"], "none"),
        (["foo-1.0.dist-info/METADATA", "bar-2.0.dist-info/METADATA"], "bar-2.0.dist-info, foo-1.0.dist-info"),
        (["foo-1.0.dist-info/METADATA", "foo-1.0.dist-info/METADATA"], "appears 2 times"),
        (["foo-1.0.dist-info/RECORD"], "appears 0 times"),
        (["bar-1.0.dist-info/METADATA"], "not the .dist-info of foo"),
        (["foo-2.0.dist-info/METADATA"], "not the .dist-info of foo"),
        (["foobar-1.0.dist-info/METADATA"], "not the .dist-info of foo"),  # pip's prefix test would take it
        (["sub/foo-1.0.dist-info/METADATA"], "none"),  # not at the top
    ],
)
def test_a_missing_foreign_or_ambiguous_dist_info_is_refused(names: list[str], reason: str) -> None:
    with pytest.raises(MetadataUnavailable, match=reason):
        metadata_path(names, "foo-1.0-py3-none-any.whl")


def test_a_file_name_that_is_not_a_wheels_is_refused_before_any_read(bg_loop: BackgroundLoop) -> None:
    async def read(start: int | None, length: int) -> RangeAnswer:
        raise AssertionError("nothing should be fetched")

    with pytest.raises(MetadataUnavailable, match="not a wheel"):
        bg_loop.run(metadata_by_ranges(read, 1000, "foo-1.0.tar.gz"))


# ---- by ranges, through a loopback server -----------------------------------------------------------------------


@pytest.fixture
def serve(bg_loop: BackgroundLoop) -> Iterator[Callable[..., RangeFileServer]]:
    """serve({name: bytes}, honour_ranges=True) -> a started RangeFileServer."""
    started: list[RangeFileServer] = []

    def start(files: dict[str, bytes], honour_ranges: bool = True) -> RangeFileServer:
        server = RangeFileServer(files, honour_ranges=honour_ranges)
        bg_loop.run(server.start())
        started.append(server)
        return server

    yield start
    for server in started:
        bg_loop.run(server.stop())


def read_by_ranges(
    bg_loop: BackgroundLoop, server: RangeFileServer, filename: str, size: int | None, **options: int
) -> tuple[bytes, RangeCounter]:
    async def run() -> tuple[bytes, RangeCounter]:
        async with aiohttp.ClientSession() as session:
            counter = RangeCounter(HttpRangeReader(session, server.url_of(filename)))
            return await metadata_by_ranges(counter, size, filename, **options), counter

    return bg_loop.run(run())


def test_every_layout_reads_by_ranges_in_the_expected_requests(
    layout: tuple[str, CraftedWheel], serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    name, wheel = layout
    server = serve({wheel.filename: wheel.data})
    metadata, counter = read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data))
    assert metadata == wheel.metadata
    assert server.count(wheel.filename, method="GET") == counter.requests == EXPECTED_REQUESTS[name]
    assert all(header and header.startswith("bytes=") for header in server.range_headers())
    assert server.bytes_sent == counter.bytes_read


def test_a_wheel_with_metadata_out_of_the_tail_takes_two_ranges_and_a_small_fraction_of_its_bytes(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    wheel = craft_wheel(payload=4 * MiB, extra_files=200, metadata_first=True)
    server = serve({wheel.filename: wheel.data})
    metadata, counter = read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data))
    assert metadata == wheel.metadata
    assert counter.requests == 2
    size = len(wheel.data)
    metadata_offset = zips.local_header_offset(wheel.data, wheel.metadata_name)
    assert server.range_headers() == [
        f"bytes={size - DEFAULT_TAIL_LENGTH}-{size - 1}",
        f"bytes={metadata_offset}-{metadata_offset + 30 + len(wheel.metadata_name) + _compressed_size(wheel) + 1023}",
    ]
    assert server.bytes_sent < size / 50


def test_metadata_among_the_directorys_last_entries_is_read_without_the_rest_of_the_directory(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    wheel = craft_wheel(payload=4 * MiB, extra_files=3000)
    _, directory_size = _central_directory(wheel)
    assert directory_size > 16 * KiB, "the directory must start before the first read"
    server = serve({wheel.filename: wheel.data})
    metadata, _ = read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data), tail_length=16 * KiB)
    assert metadata == wheel.metadata
    size = len(wheel.data)
    metadata_offset = zips.local_header_offset(wheel.data, wheel.metadata_name)
    assert server.range_headers() == [
        f"bytes={size - 16 * KiB}-{size - 1}",
        f"bytes={metadata_offset}-{metadata_offset + 30 + len(wheel.metadata_name) + _compressed_size(wheel) + 1023}",
    ]
    assert server.bytes_sent < 16 * KiB + len(wheel.metadata) + 2 * KiB < directory_size


def test_metadata_whose_entry_is_not_among_the_last_ones_takes_exactly_the_rest_of_the_directory(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    wheel = craft_wheel(payload=1 * MiB, extra_files=3000, metadata_first=True)
    directory_offset, _ = _central_directory(wheel)
    server = serve({wheel.filename: wheel.data})
    metadata, counter = read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data), tail_length=16 * KiB)
    assert metadata == wheel.metadata
    size = len(wheel.data)
    assert server.range_headers()[:2] == [
        f"bytes={size - 16 * KiB}-{size - 1}",
        f"bytes={directory_offset}-{size - 16 * KiB - 1}",
    ]
    assert counter.requests == 3


def _central_directory(wheel: CraftedWheel) -> tuple[int, int]:
    end = zips.end_record_offset(wheel.data)
    size = int.from_bytes(wheel.data[end + 12 : end + 16], "little")
    offset = int.from_bytes(wheel.data[end + 16 : end + 20], "little")
    return offset, size


def _compressed_size(wheel: CraftedWheel) -> int:
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:
        return archive.getinfo(wheel.metadata_name).compress_size


def test_a_built_wheel_with_metadata_at_its_end_takes_one_range(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    dist = find_dist(sample_dists(), "bigpkg-1.0-py3-none-any.whl")
    server = serve({dist.filename: dist.data})
    metadata, counter = read_by_ranges(bg_loop, server, dist.filename, dist.size)
    assert metadata == dist.metadata
    assert counter.requests == 1
    assert server.range_headers() == [f"bytes={dist.size - DEFAULT_TAIL_LENGTH}-{dist.size - 1}"]
    assert server.bytes_sent == DEFAULT_TAIL_LENGTH < dist.size / 60


def test_an_unknown_size_starts_with_a_suffix_range(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    wheel = craft_wheel(payload=1 * MiB, metadata_first=True)
    server = serve({wheel.filename: wheel.data})
    metadata, counter = read_by_ranges(bg_loop, server, wheel.filename, None)
    assert metadata == wheel.metadata
    assert counter.requests == 2
    assert server.range_headers()[0] == f"bytes=-{DEFAULT_TAIL_LENGTH}"


def test_the_tail_length_is_the_callers_choice(serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop) -> None:
    wheel = craft_wheel(payload=256 * KiB, extra_files=3000)
    server = serve({wheel.filename: wheel.data})
    metadata, counter = read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data), tail_length=512 * KiB)
    assert metadata == wheel.metadata
    assert counter.requests == 1


def test_a_server_that_ignores_ranges_is_reported_after_one_request(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    wheel = craft_wheel(payload=1 * MiB)
    server = serve({wheel.filename: wheel.data}, honour_ranges=False)
    with pytest.raises(RangesNotSupported, match="answered 200"):
        read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data))
    assert server.count(wheel.filename, method="GET") == 1


def test_the_counter_keeps_what_a_failed_read_cost(bg_loop: BackgroundLoop) -> None:
    data = b"not a zip at all" * 1000

    async def read(start: int | None, length: int) -> RangeAnswer:
        begin = len(data) - length if start is None else start
        return RangeAnswer(begin, data[begin : begin + length], len(data))

    counter = RangeCounter(read)
    with pytest.raises(MetadataUnavailable, match="no end-of-central-directory"):
        bg_loop.run(metadata_by_ranges(counter, len(data), "foo-1.0-py3-none-any.whl"))
    assert (counter.requests, counter.bytes_read) == (1, len(data))


@pytest.mark.parametrize(
    ("status", "content_range", "body", "reason"),
    [
        (200, None, b"", "answered 200"),
        (206, None, b"abc", "unusable Content-Range"),
        (206, "bytes 0-2/*", b"abc", "unusable Content-Range"),
        (206, "bytes 0-3/10", b"abc", "does not match"),
        (206, "bytes 8-10/10", b"abc", "unusable Content-Range"),
        (416, "bytes */10", b"", "answered 416"),
    ],
)
def test_answers_that_are_not_a_usable_206_mean_ranges_are_not_supported(
    status: int, content_range: str | None, body: bytes, reason: str
) -> None:
    with pytest.raises(RangesNotSupported, match=reason):
        range_answer(status, content_range, body)
    assert range_answer(206, "bytes 7-9/10", b"abc") == RangeAnswer(7, b"abc", 10)


# ---- lying and broken archives: a clear refusal, never bytes ------------------------------------------------------


def _truncated_end(wheel: CraftedWheel) -> bytes:
    return wheel.data[:-100]


def _truncated_middle(wheel: CraftedWheel) -> bytes:
    return wheel.data[: len(wheel.data) // 2] + wheel.data[-(200 * KiB) :]


def _directory_outside_the_file(wheel: CraftedWheel) -> bytes:
    end = zips.end_record_offset(wheel.data)
    return zips.patched(wheel.data, end + zips.END_DIRECTORY_OFFSET, "L", len(wheel.data) + 5000)


def _directory_elsewhere_inside(wheel: CraftedWheel) -> bytes:
    end = zips.end_record_offset(wheel.data)
    return zips.patched(wheel.data, end + zips.END_DIRECTORY_OFFSET, "L", 1000)


def _entry_field(field: int, fmt: str, value: Callable[[int], int]) -> Callable[[CraftedWheel], bytes]:
    def doctor(wheel: CraftedWheel) -> bytes:
        offset = zips.central_header_offset(wheel.data, wheel.metadata_name) + field
        current = int.from_bytes(wheel.data[offset : offset + 4 if fmt == "L" else offset + 2], "little")
        return zips.patched(wheel.data, offset, fmt, value(current))

    return doctor


def _local_name_differs(wheel: CraftedWheel) -> bytes:
    offset = zips.local_header_offset(wheel.data, wheel.metadata_name) + 30
    return zips.patched(wheel.data, offset, "B", ord("X"))


def _metadata_bytes_altered(wheel: CraftedWheel) -> bytes:
    offset = zips.local_header_offset(wheel.data, wheel.metadata_name) + 30 + len(wheel.metadata_name) + 10
    return zips.patched(wheel.data, offset, "B", wheel.data[offset] ^ 0xFF)


LIES: dict[str, tuple[Callable[[CraftedWheel], bytes], str]] = {
    "truncated at the end": (_truncated_end, "no end-of-central-directory"),
    "a middle part missing": (_truncated_middle, "does not end at the end record"),
    "directory pointing outside the file": (_directory_outside_the_file, "does not end at the end record"),
    "directory pointing elsewhere inside": (_directory_elsewhere_inside, "does not end at the end record"),
    "compressed size too small": (_entry_field(zips.CENTRAL_COMPRESSED_SIZE, "L", lambda n: n - 7), "deflate stream"),
    "compressed size too large": (_entry_field(zips.CENTRAL_COMPRESSED_SIZE, "L", lambda n: n + 7), "deflate stream"),
    "uncompressed size wrong": (_entry_field(zips.CENTRAL_SIZE, "L", lambda n: n + 1), "inflates to"),
    "CRC wrong": (_entry_field(zips.CENTRAL_CRC, "L", lambda n: n ^ 1), "CRC-32"),
    "encrypted": (_entry_field(zips.CENTRAL_FLAGS, "H", lambda n: n | 1), "encrypted"),
    "an unknown compression method": (_entry_field(zips.CENTRAL_METHOD, "H", lambda n: 99), "compression method 99"),
    "local header offset outside": (_entry_field(zips.CENTRAL_HEADER_OFFSET, "L", lambda n: 10**9), "reach into"),
    "local header offset wrong": (_entry_field(zips.CENTRAL_HEADER_OFFSET, "L", lambda n: n + 1), "no local header"),
    "local header names another file": (_local_name_differs, "names another member"),
    "METADATA bytes altered": (_metadata_bytes_altered, "deflate|CRC-32"),
}


LIARS: dict[str, Callable[[], CraftedWheel]] = {
    # The whole directory in the first read.
    "small directory": lambda: craft_wheel(payload=256 * KiB, metadata_first=True),
    # METADATA's entry read from the directory's last entries, the rest of the directory never fetched.
    "big directory, METADATA last": lambda: craft_wheel(payload=256 * KiB, extra_files=3000),
}


@pytest.fixture(params=[(lie, liar) for lie in sorted(LIES) for liar in sorted(LIARS)], ids=" / ".join)
def lie(request: pytest.FixtureRequest) -> tuple[CraftedWheel, bytes, str]:
    lie_name, liar = request.param
    wheel = LIARS[liar]()
    doctor, reason = LIES[lie_name]
    return wheel, doctor(wheel), reason


def test_a_lying_archive_is_refused_by_ranges(
    lie: tuple[CraftedWheel, bytes, str], serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    wheel, data, reason = lie
    server = serve({wheel.filename: data})
    with pytest.raises(MetadataUnavailable, match=reason):
        read_by_ranges(bg_loop, server, wheel.filename, len(data))


def test_a_lying_archive_is_refused_from_disk(lie: tuple[CraftedWheel, bytes, str], tmp_path: Path) -> None:
    wheel, data, reason = lie
    path = tmp_path / wheel.filename
    path.write_bytes(data)
    with pytest.raises(MetadataUnavailable, match=reason):
        metadata_from_wheel_file(path)


COMPRESSED_LIES: dict[str, tuple[Callable[[CraftedWheel], bytes], str]] = {
    "compressed size too small": (_entry_field(zips.CENTRAL_COMPRESSED_SIZE, "L", lambda n: n - 7), "stream|data"),
    "compressed size too large": (_entry_field(zips.CENTRAL_COMPRESSED_SIZE, "L", lambda n: n + 7), "stream|data"),
    "uncompressed size too small": (_entry_field(zips.CENTRAL_SIZE, "L", lambda n: n - 1), "stream|inflates to"),
    "uncompressed size too large": (_entry_field(zips.CENTRAL_SIZE, "L", lambda n: n + 1), "inflates to"),
    "CRC wrong": (_entry_field(zips.CENTRAL_CRC, "L", lambda n: n ^ 1), "CRC-32"),
    "METADATA bytes altered": (_metadata_bytes_altered, "stream|data|CRC-32|inflates to"),
}


@pytest.mark.parametrize("method", [BZIP2, LZMA], ids=["bzip2", "LZMA"])
@pytest.mark.parametrize("lie_name", sorted(COMPRESSED_LIES))
def test_a_lying_bzip2_or_lzma_member_is_refused(lie_name: str, method: int, tmp_path: Path) -> None:
    wheel = craft_wheel(payload=256 * KiB, metadata_method=method)
    doctor, reason = COMPRESSED_LIES[lie_name]
    path = tmp_path / wheel.filename
    path.write_bytes(doctor(wheel))
    with pytest.raises(MetadataUnavailable, match=reason):
        metadata_from_wheel_file(path)


@pytest.mark.parametrize("method", [BZIP2, LZMA], ids=["bzip2", "LZMA"])
def test_a_bzip2_or_lzma_bomb_is_inflated_no_further_than_its_size(method: int, tmp_path: Path) -> None:
    # 64 MiB of zeros that claim to be 100 bytes: refused after inflating 101 bytes of them.
    bomb = ZipMember("bomb-1.0.dist-info/METADATA", bytes(64 * MiB), method)
    data = build_zip([ZipMember("bomb/__init__.py", b""), bomb])
    offset = zips.central_header_offset(data, bomb.name) + zips.CENTRAL_SIZE
    path = tmp_path / "bomb-1.0-py3-none-any.whl"
    path.write_bytes(zips.patched(data, offset, "L", 100))
    tracemalloc.start()
    try:
        with pytest.raises(MetadataUnavailable, match="stream"):
            metadata_from_wheel_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak


def test_an_lzma_dictionary_claimed_far_larger_than_its_member_is_not_allocated(tmp_path: Path) -> None:
    wheel = craft_wheel(payload=256 * KiB, metadata_method=LZMA)
    properties = zips.local_header_offset(wheel.data, wheel.metadata_name) + 30 + len(wheel.metadata_name) + 4
    path = tmp_path / wheel.filename
    path.write_bytes(zips.patched(wheel.data, properties + 1, "L", 0xFFFFFFFF))  # a 4 GiB dictionary
    tracemalloc.start()  # liblzma allocates through Python's allocator: traced
    try:
        assert metadata_from_wheel_file(path) == wheel.metadata
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak


def test_an_answer_for_a_file_of_another_size_is_refused(bg_loop: BackgroundLoop) -> None:
    wheel = craft_wheel(payload=256 * KiB, metadata_first=True)

    async def read(start: int | None, length: int) -> RangeAnswer:
        assert start is not None
        return RangeAnswer(start, wheel.data[start : start + length], len(wheel.data) + 1)

    with pytest.raises(MetadataUnavailable, match="bytes now"):
        bg_loop.run(metadata_by_ranges(read, len(wheel.data), wheel.filename))


def test_an_answer_that_misses_the_bytes_asked_for_is_refused(bg_loop: BackgroundLoop) -> None:
    wheel = craft_wheel(payload=256 * KiB, metadata_first=True)

    async def read(start: int | None, length: int) -> RangeAnswer:
        assert start is not None
        return RangeAnswer(start, wheel.data[start : start + length - 1], len(wheel.data))

    with pytest.raises(MetadataUnavailable, match="asked for bytes"):
        bg_loop.run(metadata_by_ranges(read, len(wheel.data), wheel.filename))


def test_metadata_over_the_cap_is_refused_without_reading_it(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    huge = b"Metadata-Version: 2.1\nName: big\nVersion: 1.0\n\n" + b"x" * (wheel_metadata.MAX_METADATA_SIZE + 1)
    members = [ZipMember("big/__init__.py", b""), ZipMember("big-1.0.dist-info/METADATA", huge)]
    data = build_zip(members)
    server = serve({"big-1.0-py3-none-any.whl": data})
    with pytest.raises(MetadataUnavailable, match="over the"):
        read_by_ranges(bg_loop, server, "big-1.0-py3-none-any.whl", len(data))
    assert server.bytes_sent < 2 * DEFAULT_TAIL_LENGTH


def test_a_central_directory_over_the_cap_is_refused_before_it_is_read(
    serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel_metadata, "MAX_CENTRAL_DIRECTORY", 64 * KiB)
    wheel = craft_wheel(payload=256 * KiB, extra_files=3000)
    server = serve({wheel.filename: wheel.data})
    with pytest.raises(MetadataUnavailable, match=r"central directory of \d+ bytes is over"):
        read_by_ranges(bg_loop, server, wheel.filename, len(wheel.data))
    assert server.count(wheel.filename, method="GET") == 1


def test_zip64_records_that_disagree_are_refused(tmp_path: Path) -> None:
    wheel = craft_wheel(payload=256 * KiB, zip64=True)
    locator = wheel.data.rindex(b"PK\x06\x07")
    doctored = zips.patched(wheel.data, locator + 8, "Q", 12345)  # the locator points at no ZIP64 end record
    path = tmp_path / wheel.filename
    path.write_bytes(doctored)
    with pytest.raises(MetadataUnavailable, match="no ZIP64 end record"):
        metadata_from_wheel_file(path)


# ---- METADATA over what is read into memory: streamed from the wheel on disk ------------------------------------


def _streamed(path: Path, chunk_size: int = zip_records.EXTRACT_CHUNK) -> list[bytes]:
    with WheelMetadataStream(path, chunk_size=chunk_size) as stream:
        return list(iter(stream.read, b""))


def test_every_layout_streams_zipfiles_bytes_in_chunks_no_longer_than_asked(
    layout: tuple[str, CraftedWheel], tmp_path: Path
) -> None:
    _, wheel = layout
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    chunks = _streamed(path, chunk_size=1000)
    assert b"".join(chunks) == wheel.metadata
    assert max(len(chunk) for chunk in chunks) <= 1000 and len(chunks) >= len(wheel.metadata) // 1000


def test_a_lying_archive_is_refused_by_the_stream_before_its_last_bytes(
    lie: tuple[CraftedWheel, bytes, str], tmp_path: Path
) -> None:
    wheel, data, reason = lie
    path = tmp_path / wheel.filename
    path.write_bytes(data)
    given: list[bytes] = []
    with pytest.raises(MetadataUnavailable, match=reason), WheelMetadataStream(path, chunk_size=256) as stream:
        while chunk := stream.read():
            given.append(chunk)
    assert len(b"".join(given)) < len(wheel.metadata)  # never the whole of it: the last chunk waits for the checks


@pytest.mark.parametrize("method", [BZIP2, LZMA], ids=["bzip2", "LZMA"])
@pytest.mark.parametrize("lie_name", sorted(COMPRESSED_LIES))
def test_a_lying_bzip2_or_lzma_member_is_refused_by_the_stream(lie_name: str, method: int, tmp_path: Path) -> None:
    wheel = craft_wheel(payload=256 * KiB, metadata_method=method)
    doctor, reason = COMPRESSED_LIES[lie_name]
    path = tmp_path / wheel.filename
    path.write_bytes(doctor(wheel))
    with pytest.raises(MetadataUnavailable, match=reason):
        _streamed(path, chunk_size=256)


@pytest.mark.parametrize("read_size", [1, 7, 4096, MiB])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, MiB])
@pytest.mark.parametrize("method", [STORED, DEFLATED, BZIP2, LZMA], ids=["stored", "deflate", "bzip2", "LZMA"])
def test_iter_extract_gives_zipfiles_bytes_whatever_its_chunks_and_reads(
    method: int, chunk_size: int, read_size: int
) -> None:
    text = b"".join(random.Random(7).choice([b"alpha ", b"beta\n", b"gamma delta "]) for _ in range(4000))
    member = ZipMember("x-1.0.dist-info/METADATA", text, method)
    archive = build_zip([member])
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.read(member.name) == text
    end = zip_records.find_end_record(archive, 0, len(archive))
    assert end is not None
    directory = zip_records.central_directory_of(end, MiB)
    listed = memoryview(archive)[directory.offset : directory.end]
    (entry,) = zip_records.iter_central_directory(listed, directory, lambda _: True)
    header = archive[entry.header_offset : entry.header_offset + zip_records.LOCAL_HEADER_SIZE + len(entry.raw_name)]
    data = io.BytesIO(archive[zip_records.member_data_offset(header, entry) :][: entry.compressed_size])
    chunks = list(zip_records.iter_extract(entry, data.read, chunk_size=chunk_size, read_size=read_size))
    assert b"".join(chunks) == text
    assert max(len(chunk) for chunk in chunks) <= (chunk_size if method != STORED else read_size)


def _long_metadata(size: int) -> bytes:
    """Core metadata with a long description: a block of 64 KiB of words over and over (deflate's 32 KiB window does
    not reach back to the last copy, so it deflates as text does, 3 to 4 times; LZMA's does, and is quick)."""
    words = [b"wheel", b"metadata", b"description", b"of", b"a", b"project\n", b"the", b"long"]
    pick = random.Random(size).choice
    block = bytearray()
    while len(block) < 64 * KiB:
        block += pick(words) + b" "
    head = b"Metadata-Version: 2.1\nName: big\nVersion: 1.0\nRequires-Dist: numpy>=1.20\n\n"
    return (head + bytes(block) * (size // len(block) + 1))[:size]


# bzip2 and LZMA are streamed alike (every layout, and iter_extract, in small chunks): their state, bounded above,
# is what differs, and compressing 20 MiB with them would take a minute of the tests' time.
@pytest.mark.parametrize("method", [STORED, DEFLATED], ids=["stored", "deflate"])
def test_metadata_over_what_memory_holds_is_streamed_from_disk_a_chunk_at_a_time(
    method: int, tmp_path: Path, serve: Callable[..., RangeFileServer], bg_loop: BackgroundLoop
) -> None:
    metadata = _long_metadata(wheel_metadata.MAX_METADATA_SIZE + 12 * MiB)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writing:  # at deflate's quickest level: zips' level 9 takes seconds
        writing.writestr("big/__init__.py", b"")
        writing.writestr("big-1.0.dist-info/METADATA", metadata, compress_type=method, compresslevel=1)
    data = archive.getvalue()
    path = tmp_path / "big-1.0-py3-none-any.whl"
    path.write_bytes(data)
    # Neither way in holds it in memory: each says it is too large, and ranges fetched a tail and no more.
    with pytest.raises(MetadataTooLarge, match="over the"):
        metadata_from_wheel_file(path)
    server = serve({path.name: data})
    with pytest.raises(MetadataTooLarge):
        read_by_ranges(bg_loop, server, path.name, len(data))
    assert server.bytes_sent <= DEFAULT_TAIL_LENGTH
    tracemalloc.start()
    try:
        digest = hashlib.sha256()
        with WheelMetadataStream(path) as stream:
            assert stream.size == len(metadata)
            while chunk := stream.read():
                assert len(chunk) <= zip_records.EXTRACT_CHUNK
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(metadata).hexdigest()
    # A chunk made, the one held back, a read of the file and zlib's copy of its unconsumed part, deflate's window:
    # some 6 MiB, less than MAX_METADATA_SIZE (what a read into memory may take), far less than the 20 MiB made.
    assert peak < wheel_metadata.MAX_METADATA_SIZE, peak


def test_metadata_over_the_streamed_cap_is_refused_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel_metadata, "MAX_STREAMED_METADATA_SIZE", 2 * MiB)
    members = [ZipMember("big/__init__.py", b""), ZipMember("big-1.0.dist-info/METADATA", _long_metadata(3 * MiB))]
    path = tmp_path / "big-1.0-py3-none-any.whl"
    path.write_bytes(build_zip(members))
    with pytest.raises(MetadataUnavailable, match="over the 2097152-byte cap") as refused:
        WheelMetadataStream(path)
    assert not isinstance(refused.value, MetadataTooLarge)
    with pytest.raises(MetadataUnavailable, match="over the 2097152-byte cap") as refused:
        metadata_from_wheel_file(path)
    assert not isinstance(refused.value, MetadataTooLarge)


def test_a_streamed_lzma_dictionary_over_what_memory_holds_is_refused(tmp_path: Path) -> None:
    wheel = craft_wheel(payload=256 * KiB, metadata_method=LZMA)
    claimed = wheel_metadata.MAX_METADATA_SIZE + MiB  # METADATA's size as its entry gives it: one to stream
    data = zips.patched(
        wheel.data, zips.central_header_offset(wheel.data, wheel.metadata_name) + zips.CENTRAL_SIZE, "L", claimed
    )
    properties = zips.local_header_offset(data, wheel.metadata_name) + 30 + len(wheel.metadata_name) + 4
    path = tmp_path / wheel.filename
    path.write_bytes(zips.patched(data, properties + 1, "L", 64 * MiB))  # zipfile's own is 8 MiB
    with pytest.raises(MetadataTooLarge):
        metadata_from_wheel_file(path)
    tracemalloc.start()
    try:
        with pytest.raises(MetadataUnavailable, match="LZMA dictionary of 9437184 bytes, over 8388608"):
            _streamed(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, peak


# ---- a central directory of many entries --------------------------------------------------------------------------


def _wheel_of_tiny_entries(entries: int, *, dist_infos: int = 1) -> CraftedWheel:
    """METADATA first (so that the whole directory is read), then `entries` empty members with 1-byte names, the
    shape of a hostile wheel (364,000 of them fit in MAX_CENTRAL_DIRECTORY); `dist_infos` - 1 more .dist-info."""
    metadata = _metadata_text("many", "1.0")
    members = [ZipMember("many-1.0.dist-info/METADATA", metadata, STORED)]
    members += [ZipMember(f"other_{index:02d}-1.0.dist-info/RECORD", b"", STORED) for index in range(dist_infos - 1)]
    members += [ZipMember(chr(ord("a") + index % 26), b"", STORED) for index in range(entries)]
    return CraftedWheel("many-1.0-py3-none-any.whl", build_zip(members), metadata, "many-1.0.dist-info/METADATA")


def test_a_directory_of_many_entries_is_read_from_disk_without_keeping_them(tmp_path: Path) -> None:
    # A list of every entry made 8 times the directory's bytes here (109 MiB for 357,000 entries).
    wheel = _wheel_of_tiny_entries(60_000)
    _, directory_size = _central_directory(wheel)
    assert directory_size > 16 * DEFAULT_TAIL_LENGTH
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    result, peak = _peak_while(lambda: metadata_from_wheel_file(path))
    assert result == wheel.metadata
    assert peak < 2.5 * directory_size, (peak, directory_size)  # the directory's bytes, and its tail once more


def test_a_directory_of_many_entries_is_read_by_ranges_without_keeping_them() -> None:
    wheel = _wheel_of_tiny_entries(60_000)
    _, directory_size = _central_directory(wheel)

    async def read(start: int | None, length: int) -> RangeAnswer:
        start = len(wheel.data) - length if start is None else start
        return RangeAnswer(start, wheel.data[start : start + length], len(wheel.data))

    result, peak = _peak_while(lambda: asyncio.run(metadata_by_ranges(read, len(wheel.data), wheel.filename)))
    assert result == wheel.metadata
    assert peak < 2.5 * directory_size, (peak, directory_size)


def test_every_entry_of_a_directory_read_whole_is_still_checked(tmp_path: Path) -> None:
    # Only METADATA's entry is kept, but an entry elsewhere that points into the directory still refuses the wheel.
    wheel = _wheel_of_tiny_entries(3000)
    offset = wheel.data.rindex(b"\x00z") + 1 - 46 + zips.CENTRAL_HEADER_OFFSET  # the directory's last "z" entry
    path = tmp_path / wheel.filename
    path.write_bytes(zips.patched(wheel.data, offset, "L", len(wheel.data) - 100))
    with pytest.raises(MetadataUnavailable, match="'z' would reach into the central directory"):
        metadata_from_wheel_file(path)


@pytest.mark.parametrize(
    ("field", "fmt", "value", "reason"),
    [
        (zips.CENTRAL_SIZE, "L", 0xFFFFFFFF, "marks ZIP64 sizes but has no ZIP64 extra field"),
        (34, "H", 1, "member lives on another disk"),  # the disk the member starts on
    ],
    ids=["ZIP64 mark without its field", "on another disk"],
)
def test_every_entry_of_a_directory_read_whole_has_its_fields_checked(
    field: int, fmt: str, value: int, reason: str, tmp_path: Path
) -> None:
    # Entries outside any .dist-info are made no Member, but their ZIP64 fields and disk are still checked.
    wheel = _wheel_of_tiny_entries(3000)
    offset = wheel.data.rindex(b"\x00z") + 1 - 46 + field  # in the directory's last "z" entry
    path = tmp_path / wheel.filename
    path.write_bytes(zips.patched(wheel.data, offset, fmt, value))
    with pytest.raises(MetadataUnavailable, match=reason):
        metadata_from_wheel_file(path)


@pytest.mark.parametrize(
    ("dist_infos", "reason"),
    [
        (2, r"found many-1\.0\.dist-info, other_00-1\.0\.dist-info$"),
        (10, r"other_08-1\.0\.dist-info$"),
        (15, r"other_08-1\.0\.dist-info, and more$"),  # wheel_metadata.NAMED_DIST_INFOS named, not 15
    ],
)
def test_a_directory_of_many_dist_infos_is_refused_naming_a_few(dist_infos: int, reason: str, tmp_path: Path) -> None:
    wheel = _wheel_of_tiny_entries(3000, dist_infos=dist_infos)
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    with pytest.raises(MetadataUnavailable, match=reason):
        metadata_from_wheel_file(path)


def test_a_second_metadata_among_many_entries_is_refused(tmp_path: Path) -> None:
    wheel = _wheel_of_tiny_entries(3000)
    first, *others = _zip_members(wheel.data)
    data = build_zip([first, ZipMember(wheel.metadata_name, wheel.metadata), *others])  # not among the last entries
    path = tmp_path / wheel.filename
    path.write_bytes(data)
    with pytest.raises(MetadataUnavailable, match="appears 2 times"):
        metadata_from_wheel_file(path)


def _zip_members(archive: bytes) -> list[ZipMember]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return [ZipMember(info.filename, opened.read(info), STORED) for info in opened.infolist()]


# ---- sdists -------------------------------------------------------------------------------------------------------


def _pkg_info(version: str = "2.2", *extra_lines: str, name: str = "Foo.Bar", project_version: str = "1.0") -> bytes:
    lines = [f"Metadata-Version: {version}", f"Name: {name}", f"Version: {project_version}", *extra_lines]
    return ("\n".join(lines) + "\n\nA description.\n").encode()


@pytest.mark.parametrize(
    ("pkg_info", "reliable"),
    [
        (_pkg_info("2.2"), True),
        (_pkg_info("2.4", "Requires-Dist: numpy", "Dynamic: Description", "Dynamic: License-Expression"), True),
        (_pkg_info("2.1"), False),  # before PEP 643 nothing in PKG-INFO is binding
        (_pkg_info("1.2"), False),
        (_pkg_info("3.0"), False),  # a future major version may mean something else
        (_pkg_info("2.2", "Dynamic: Requires-Dist"), False),
        (_pkg_info("2.3", "Dynamic: requires-python"), False),  # field names are case-insensitive
        (_pkg_info("2.2", "Dynamic: Provides-Extra"), False),
        (_pkg_info("2.2", "Dynamic: Version"), False),  # not allowed by the spec; uv tolerates it, we do not
        (_pkg_info("2.2", name=""), False),
        (b"Metadata-Version: 2.2\nVersion: 1.0\n\n", False),
        (b"\xff\xfe not metadata", False),
    ],
)
def test_pkg_info_is_reliable_only_from_2_2_without_dynamic_fields_resolvers_use(
    pkg_info: bytes, reliable: bool
) -> None:
    assert sdist_metadata_is_reliable(pkg_info) is reliable


def test_pkg_info_must_name_the_sdist_it_came_from_when_the_name_is_given() -> None:
    pkg_info = _pkg_info("2.2", name="Foo.Bar", project_version="1.0.0")
    assert sdist_metadata_is_reliable(pkg_info, "foo_bar-1.0.tar.gz")
    assert not sdist_metadata_is_reliable(pkg_info, "foo_bar-1.1.tar.gz")
    assert not sdist_metadata_is_reliable(pkg_info, "other-1.0.tar.gz")
    assert not sdist_metadata_is_reliable(pkg_info, "not an sdist name")


def test_the_pkg_info_of_a_built_sdist_is_read_and_is_not_reliable(tmp_path: Path) -> None:
    dist = build_sdist("Foo.Bar", "1.0")
    path = tmp_path / dist.filename
    path.write_bytes(dist.data)
    pkg_info = pkg_info_from_sdist_file(path)
    assert pkg_info.startswith(b"Metadata-Version: 2.1\nName: Foo.Bar\nVersion: 1.0\n")
    assert not sdist_metadata_is_reliable(pkg_info, dist.filename)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    return build_zip([ZipMember(name, data) for name, data in members.items()])


@pytest.mark.parametrize("pack", [_tar_gz, _zip], ids=["tar.gz", "zip"])
def test_only_the_top_pkg_info_of_the_project_is_taken(
    pack: Callable[[dict[str, bytes]], bytes], tmp_path: Path
) -> None:
    top = _pkg_info("2.2")
    members = {
        "foo_bar-1.0/vendored/other-2.0/PKG-INFO": _pkg_info("2.2", name="other"),
        "foo_bar-1.0/src/foo_bar.egg-info/PKG-INFO": _pkg_info("2.1"),
        "foo_bar-1.0/PKG-INFO": top,
        "foo_bar-1.0/pyproject.toml": b"[project]\n",
    }
    suffix = ".tar.gz" if pack is _tar_gz else ".zip"
    path = tmp_path / f"foo_bar-1.0{suffix}"
    path.write_bytes(pack(members))
    assert pkg_info_from_sdist_file(path) == top
    assert sdist_metadata_is_reliable(top, path.name)


@pytest.mark.parametrize(
    ("filename", "data", "reason"),
    [
        ("foo-1.0.tar.gz", _tar_gz({"foo-1.0/setup.py": b""}), "no foo-1.0/PKG-INFO"),
        ("foo-1.0.tar.gz", _tar_gz({"bar-1.0/PKG-INFO": _pkg_info()}), "no foo-1.0/PKG-INFO"),
        ("foo-1.0.tar.gz", _tar_gz({"foo-1.0/PKG-INFO": _pkg_info()})[:-40], "cannot read it"),
        ("foo-1.0.tar.gz", b"not a tarball", "cannot read it"),
        ("foo-1.0.zip", _zip({"foo-1.0/setup.py": b""}), "0 foo-1.0/PKG-INFO"),
        ("foo-1.0.whl", b"", "not an sdist"),
    ],
)
def test_an_sdist_without_a_readable_top_pkg_info_is_unavailable(
    filename: str, data: bytes, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(MetadataUnavailable, match=reason):
        pkg_info_from_sdist_file(path)


# ---- sdists anyone can upload: the read of PKG-INFO stays within bounds ---------------------------------------


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _gzip_blocks(path: Path, *parts: tuple[bytes, int]) -> None:
    """Write a .tar.gz of `parts`, each (bytes, times): repeated bytes are compressed as they go, so a tarball of
    hundreds of MB once inflated is made without holding it."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for data, times in parts:
            for _ in range(times):
                out.write(packer.compress(data))
        out.write(packer.compress(bytes(1024)))
        out.write(packer.flush())


def _pkg_info_member(project: str = "bomb") -> bytes:
    data = _pkg_info("2.2", name=project)
    return _header(f"{project}-1.0/PKG-INFO", len(data)) + data + bytes(-len(data) % 512)


def _peak_while(read: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            result: object = read()
        except MetadataUnavailable as error:
            result = error
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_name_header_of_200_mb_is_refused_without_being_read(tmp_path: Path) -> None:
    # What tarfile reads whole into memory: a GNU long name of 200 MB of zeros (about 200 KB compressed).
    claimed = 200 * MiB
    path = tmp_path / "bomb-1.0.tar.gz"
    _gzip_blocks(path, (_header("././@LongLink", claimed, tarfile.GNUTYPE_LONGNAME), 1), (bytes(MiB), 200))
    with path.open("ab") as out:  # a second gzip member: the PKG-INFO after the bomb, as gzip readers join them
        packer = zlib.compressobj(6, zlib.DEFLATED, 31)
        out.write(packer.compress(_pkg_info_member()) + packer.compress(bytes(1024)) + packer.flush())
    assert path.stat().st_size < 1 * MiB
    result, peak = _peak_while(lambda: pkg_info_from_sdist_file(path))
    assert isinstance(result, MetadataUnavailable) and "extended header" in str(result)
    assert peak < 1 * MiB, peak


def test_a_pax_header_over_the_bound_is_refused(tmp_path: Path) -> None:
    record = b"path=" + b"x" * (sdist_metadata.MAX_EXTENDED_HEADER + 10) + b"\n"
    length = len(record) + 6  # "NNNNN " and the record: six digits and a space for these sizes
    pax = f"{length} ".encode() + record
    path = tmp_path / "bomb-1.0.tar.gz"
    _gzip_blocks(
        path, (_header("pax", len(pax), tarfile.XHDTYPE) + pax + bytes(-len(pax) % 512), 1), (_pkg_info_member(), 1)
    )
    with pytest.raises(MetadataUnavailable, match="extended header"):
        pkg_info_from_sdist_file(path)


def test_the_members_of_a_tarball_are_not_kept_while_it_is_read(tmp_path: Path) -> None:
    # tarfile keeps a TarInfo for every member it passes: a few MB here, 0.9 GB for two million.
    empty = _header("bomb-1.0/x", 0)
    path = tmp_path / "bomb-1.0.tar.gz"
    _gzip_blocks(path, (empty * 1000, 30), (_pkg_info_member(), 1))
    result, peak = _peak_while(lambda: pkg_info_from_sdist_file(path))
    assert result == _pkg_info("2.2", name="bomb")  # far under MAX_MEMBERS: read, however many members precede it
    assert peak < 1 * MiB, peak


def test_a_tarball_of_more_members_than_the_bound_is_given_up_on_at_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdist_metadata, "MAX_MEMBERS", 1000)
    path = tmp_path / "bomb-1.0.tar.gz"
    _gzip_blocks(path, (_header("bomb-1.0/x", 0) * 1000, 3), (_pkg_info_member(), 1))
    with pytest.raises(MetadataUnavailable, match="no PKG-INFO in its first 1000 members"):
        pkg_info_from_sdist_file(path)


def test_a_tarball_is_inflated_no_further_than_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdist_metadata, "MAX_INFLATED", 1 * MiB)
    path = tmp_path / "bomb-1.0.tar.gz"
    _gzip_blocks(path, (_header("bomb-1.0/zeros", 4 * MiB), 1), (bytes(MiB), 4), (_pkg_info_member(), 1))
    with pytest.raises(MetadataUnavailable, match="once inflated"):
        pkg_info_from_sdist_file(path)


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_pkg_info_is_found_under_a_long_top_directory_whatever_the_tar_format(tar_format: int, tmp_path: Path) -> None:
    # Names over 100 bytes: a GNU long-name member, a pax `path`, or ustar's prefix field.
    project = "a" * 90
    data = _pkg_info("2.2", name=project)
    path = tmp_path / f"{project}-1.0.tar.gz"
    with tarfile.open(path, "w:gz", format=tar_format) as archive:
        top = tarfile.TarInfo(f"{project}-1.0")
        top.type = tarfile.DIRTYPE
        archive.addfile(top)
        link = tarfile.TarInfo(f"{project}-1.0/link")
        link.type, link.linkname = tarfile.SYMTYPE, "PKG-INFO"
        archive.addfile(link)
        for name, content in ((f"{project}-1.0/{'b' * 50}/setup.py", b"x" * 700), (f"{project}-1.0/PKG-INFO", data)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    assert pkg_info_from_sdist_file(path) == data


def test_a_tar_header_with_a_wrong_checksum_is_unreadable(tmp_path: Path) -> None:
    broken = bytearray(_pkg_info_member("foo"))
    broken[0] ^= 1
    path = tmp_path / "foo-1.0.tar.gz"
    _gzip_blocks(path, (bytes(broken), 1))
    with pytest.raises(MetadataUnavailable, match="cannot read it: a tar header with a wrong checksum"):
        pkg_info_from_sdist_file(path)


def test_a_zip_sdist_of_more_entries_than_the_bound_is_given_up_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdist_metadata, "MAX_MEMBERS", 100)
    members = {f"foo-1.0/{index}.py": b"" for index in range(150)}
    path = tmp_path / "foo-1.0.zip"
    path.write_bytes(_zip({**members, "foo-1.0/PKG-INFO": _pkg_info(name="foo")}))
    with pytest.raises(MetadataUnavailable, match="151 members, over 100"):
        pkg_info_from_sdist_file(path)


def test_a_zip_sdist_is_read_without_keeping_its_entries(tmp_path: Path) -> None:
    data = _pkg_info(name="foo")
    path = tmp_path / "foo-1.0.zip"
    path.write_bytes(_zip({**{f"foo-1.0/{index}.py": b"" for index in range(20_000)}, "foo-1.0/PKG-INFO": data}))
    result, peak = _peak_while(lambda: pkg_info_from_sdist_file(path))
    assert result == data
    assert peak < 2 * path.stat().st_size, (peak, path.stat().st_size)  # the directory's bytes, not an object each
