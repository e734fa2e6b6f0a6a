"""Cache entries written whole or not at all; which are flushed to the disk (downloads, what cannot be made
again), and why the others may skip it.

A page.json or metadata.json is written without an fsync (a cold miss would wait for the disk): a power cut may
then leave it empty or cut short. These tests check that such a file reads as absent, so it is made again, never
served half.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from pkgcache.pypi.metadata_records import MetadataRecord, MetadataRecords
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.pages import CachedPage, PageStore
from pkgcache.storage.store import CacheStore


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_entries_are_flushed_unless_said_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    calls = _count_fsyncs(monkeypatch)
    store.write_json_atomic(tmp_path / "gate" / "first_seen.json", {"since": 1})
    assert len(calls) == 1
    store.write_json_atomic(tmp_path / "pypi" / "simple" / "x" / "page.json", {"a": 1}, durable=False)
    assert len(calls) == 1
    assert (tmp_path / "pypi" / "simple" / "x" / "page.json").read_text() == '{"a":1}'


def test_saving_pages_and_metadata_records_does_not_wait_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    calls = _count_fsyncs(monkeypatch)
    asyncio.run(PageStore(store).save("demo", _page()))
    asyncio.run(MetadataRecords(store).add("demo", "demo-1.0-py3-none-any.whl", _record()))
    assert calls == []
    assert (tmp_path / "pypi" / "simple" / "demo" / "page.json").is_file()
    assert (tmp_path / "pypi" / "simple" / "demo" / "metadata.json").is_file()


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_a_page_json_left_empty_or_cut_short_reads_as_absent(tmp_path: Path, keep: float) -> None:
    pages = PageStore(_store(tmp_path))
    asyncio.run(pages.save("demo", _page()))
    assert asyncio.run(pages.load("demo")) is not None
    _cut(pages.page_path("demo"), keep)
    assert asyncio.run(pages.load("demo")) is None


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_a_metadata_json_left_empty_or_cut_short_reads_as_no_records(tmp_path: Path, keep: float) -> None:
    store = _store(tmp_path)
    asyncio.run(MetadataRecords(store).add("demo", "demo-1.0-py3-none-any.whl", _record()))
    records = MetadataRecords(store)
    assert asyncio.run(records.get("demo"))[0] == {"demo-1.0-py3-none-any.whl": _record()}
    _cut(records.path("demo"), keep)
    assert asyncio.run(MetadataRecords(store).get("demo"))[0] == {}


def _store(root: Path) -> CacheStore:
    store = CacheStore(root)
    store.prepare()
    return store


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _page() -> CachedPage:
    dist = DistFile(filename="demo-1.0-py3-none-any.whl", url="http://up.example/demo-1.0-py3-none-any.whl")
    return CachedPage(ProjectPage(name="demo", files=(dist,)), upstream="up", fetched_at=1.0)


def _record() -> MetadataRecord:
    return MetadataRecord(sha256="ab" * 32, dist_sha256="cd" * 32, source="ranges", verified=False)


def test_a_download_is_on_the_disk_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A downloaded file is served from the cache without being hashed again, so it must never be found cut short:
    its bytes are flushed before the rename that makes it an entry (without, a power cut soon after can leave
    the renamed file empty: file systems write the rename before data they have not placed yet)."""
    from pkgcache.storage import store as store_module
    from pkgcache.storage.downloads import Download, Downloader, Expected

    events: list[tuple[str, str]] = []
    real_fdatasync, real_replace = os.fdatasync, os.replace

    def fdatasync(descriptor: int) -> None:
        events.append(("flushed", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fdatasync(descriptor)

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(("renamed", str(source)))
        real_replace(source, target)

    monkeypatch.setattr(store_module.os, "fdatasync", fdatasync)
    monkeypatch.setattr(store_module.os, "replace", replace)
    store = _store(tmp_path)
    data = os.urandom(300_000)
    final = tmp_path / "pypi" / "files" / "demo-1.0-py3-none-any.whl"

    async def produce(download: Download) -> None:
        download.begin("fake upstream", {})
        await download.write(data)

    async def run() -> None:
        download = Downloader(store).get_or_start(final, Expected(size=len(data)), produce)
        assert download is not None
        await download.wait_finished()

    asyncio.run(run())
    assert final.read_bytes() == data
    temp = next(path for kind, path in events if kind == "renamed")
    assert events == [("flushed", temp), ("renamed", temp)], events


def test_a_long_download_is_flushed_as_it_comes_so_its_last_flush_covers_only_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every FLUSH_EVERY bytes the writing thread flushes the file: a 2 GB wheel's client does not wait at its end
    for the disk to take the whole file (seconds on a slow disk), only the tail since the last flush."""
    from pkgcache.storage import downloads as downloads_module
    from pkgcache.storage.downloads import Download, Downloader, Expected

    flushed_at: list[int] = []
    real_fdatasync = os.fdatasync

    def fdatasync(descriptor: int) -> None:
        # Where writing has got to (its position: the space taken first does not count in the file's size); the
        # flush before the rename is of a descriptor opened afresh, at 0: then the file's size.
        flushed_at.append(os.lseek(descriptor, 0, os.SEEK_CUR) or os.fstat(descriptor).st_size)
        real_fdatasync(descriptor)

    monkeypatch.setattr(downloads_module, "FLUSH_EVERY", 100_000)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    store = _store(tmp_path)
    data = os.urandom(350_000)
    final = tmp_path / "pypi" / "files" / "long-1.0-py3-none-any.whl"

    async def produce(download: Download) -> None:
        download.begin("fake upstream", {})
        for start in range(0, len(data), 50_000):
            await download.write(data[start : start + 50_000])

    async def run() -> None:
        download = Downloader(store).get_or_start(final, Expected(size=len(data)), produce)
        assert download is not None
        await download.wait_finished()

    asyncio.run(run())
    assert final.read_bytes() == data
    # Three times on the way, then once more before the rename, for the last 50,000 bytes.
    assert flushed_at == [100_000, 200_000, 300_000, 350_000], flushed_at


@pytest.mark.parametrize("refusal", ["EOPNOTSUPP", "ENOSPC"])
def test_a_download_takes_its_space_first_unless_the_file_system_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    """A file whose size the index gives has its space taken before its first byte (fallocate(2)): a disk too full
    for it refuses it before any client is answered. A file system that cannot reserve space (NFS, some FUSE) says
    EOPNOTSUPP, and the file is written as its bytes come."""
    import ctypes
    import errno

    from pkgcache.storage import downloads as downloads_module
    from pkgcache.storage.downloads import Download, Downloader, Expected
    from pkgcache.storage.store import StorageError

    asked: list[int] = []

    def fallocate(descriptor: int, mode: int, offset: int, size: int) -> int:
        asked.append(size)
        ctypes.set_errno(getattr(errno, refusal))
        return -1

    monkeypatch.setattr(downloads_module, "_FALLOCATE", fallocate)
    store = _store(tmp_path)
    data = os.urandom(200_000)
    final = tmp_path / "pypi" / "files" / "demo-1.0-py3-none-any.whl"

    async def produce(download: Download) -> None:
        download.begin("fake upstream", {})
        await download.write(data)

    async def run() -> BaseException | None:
        download = Downloader(store).get_or_start(final, Expected(size=len(data)), produce)
        assert download is not None
        with contextlib.suppress(StorageError):
            await download.wait_finished()
        return download.error

    error = asyncio.run(run())
    assert asked == [len(data)]
    if refusal == "ENOSPC":
        assert isinstance(error, StorageError) and error.disk_full, error
        assert not final.exists() and not list((tmp_path / "tmp").iterdir())
    else:
        assert error is None and final.read_bytes() == data


def test_a_file_of_no_known_size_takes_the_space_its_answer_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no size in the index, the space is taken by the answer's declared length (capped by the most a file of
    its kind may be), once per answer and again after bytes are thrown away; the file keeps its written size
    (FALLOC_FL_KEEP_SIZE), and space taken past what came is given back before the commit."""
    from pkgcache.storage import downloads as downloads_module
    from pkgcache.storage.downloads import FALLOC_FL_KEEP_SIZE, Download, Downloader, Expected

    real = downloads_module._FALLOCATE
    if real is None:
        pytest.skip("no fallocate(2) here")
    asked: list[tuple[int, int]] = []

    def fallocate(descriptor: int, mode: int, offset: int, size: int) -> int:
        asked.append((mode, size))
        return int(real(descriptor, mode, offset, size))

    monkeypatch.setattr(downloads_module, "_FALLOCATE", fallocate)
    store = _store(tmp_path)
    data = os.urandom(100_000)
    final = tmp_path / "conda" / "repodata.json"

    async def produce(download: Download) -> None:
        download.begin("first", {}, declared_length=10 << 20)  # more than the cap: the cap is taken
        await download.write(data[:1000])
        await download.discard()  # that upstream lied: its bytes go, and the space with them
        download.begin("second", {}, declared_length=len(data) * 2)  # more than comes
        for start in range(0, len(data), 10_000):
            await download.write(data[start : start + 10_000])

    async def run() -> None:
        expected = Expected(max_size=1 << 20)
        download = Downloader(store).get_or_start(final, expected, produce)
        assert download is not None
        await download.wait_finished()
        assert download.length is None  # clients are never told a declared length

    asyncio.run(run())
    assert asked == [(FALLOC_FL_KEEP_SIZE, 1 << 20), (FALLOC_FL_KEEP_SIZE, len(data) * 2)]
    assert final.read_bytes() == data
    # 100,000 bytes in 4 KB blocks: not the 200,000 taken.
    assert final.stat().st_blocks * 512 < len(data) + 16 * 1024, final.stat().st_blocks


def test_a_download_whose_folder_cannot_take_it_fails_before_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder files cannot be renamed into (read-only, another user's: simulated, as root ignores modes) fails the
    download before any client is answered, naming the folder and the errno for the operator, not the client."""
    from pkgcache.http.responses import error_for
    from pkgcache.storage.downloads import Download, Downloader, Expected
    from pkgcache.storage.store import StorageError

    store = _store(tmp_path)
    folder = tmp_path / "pypi" / "files" / "demo"
    folder.mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != folder and real_access(path, mode, **kw))

    async def produce(download: Download) -> None:
        download.begin("fake upstream", {})
        await download.write(b"PK\x03\x04 whatever")

    async def run() -> BaseException | None:
        download = Downloader(store).get_or_start(folder / "demo-1.0-py3-none-any.whl", Expected(), produce)
        assert download is not None
        with contextlib.suppress(StorageError):
            await download.wait_started()
        return download.error

    error = asyncio.run(run())
    assert isinstance(error, StorageError) and not error.disk_full, error
    assert f"(EACCES) at {folder}" in str(error)
    answer = error_for(error)
    assert answer is not None and answer.status == 500 and answer.text is not None and str(tmp_path) not in answer.text
    assert not list(folder.iterdir()) and not list((tmp_path / "tmp").iterdir())


def test_a_record_that_a_full_disk_refuses_after_a_download_is_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """QA 6: on a full disk, a repodata's sidecar could not be saved after its download, and every request logged
    an ERROR with a whole traceback. The disk's failure is one WARNING line; the download itself still counts."""
    import errno

    from pkgcache.storage.downloads import Download, Downloader, Expected
    from pkgcache.storage.sidecars import FileMeta, Sidecars

    store = _store(tmp_path)
    final = tmp_path / "conda" / "pkgs" / "main" / "noarch" / "repodata.json"

    def full(path: Path, data: bytes, *, durable: bool = True) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    async def produce(download: Download) -> None:
        download.begin("fake upstream", {})
        await download.write(b'{"packages": {}}')

    async def record(download: Download) -> None:
        monkeypatch.setattr(store, "write_bytes_atomic", full)  # the disk fills up after the file is in
        await Sidecars(store).save(download.final_path, FileMeta(fetched_at=0.0, upstream="fake upstream"))

    async def run() -> None:
        download = Downloader(store).get_or_start(final, Expected(), produce, on_done=record)
        assert download is not None
        await download.wait_finished()

    with caplog.at_level("DEBUG", logger="pkgcache.storage.downloads"):
        asyncio.run(run())
    assert final.is_file()
    hook_records = [r for r in caplog.records if "repodata.json" in r.getMessage() and "cached" not in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in hook_records] == [("WARNING", None)], caplog.text
    assert "No space left on device" in hook_records[0].getMessage()
