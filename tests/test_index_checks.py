"""The shape checks an index file passes before it may replace a good copy (conda/index_checks.py), and what they
cost the worker that runs them: a repodata of tens of MB must not be turned into Python objects to be checked."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from pkgcache.conda import index_checks
from pkgcache.conda.index_checks import CHUNK, PARSE_WHOLE_BYTES, content_check_for
from pkgcache.storage.downloads import IntegrityError
from tests.fakes.synthetic_repodata import write_synthetic_repodata

SMALL_REPODATA = (
    b'{"info": {"subdir": "linux-64"}, "packages": {"a-1-0.tar.bz2": {"name": "a", "version": "1", '
    b'"depends": ["b >=2", "c"]}}, "packages.conda": {}, "removed": []}'
)


def _check(path: Path) -> None:
    check = content_check_for(path.name)
    assert check is not None
    check(path)


def _write(tmp_path: Path, name: str, text: bytes, *, content_size: bool = True) -> Path:
    path = tmp_path / name
    if name.endswith(".zst"):
        text = zstandard.ZstdCompressor(write_content_size=content_size, write_checksum=True).compress(text)
    path.write_bytes(text)
    return path


@pytest.mark.parametrize("name", ["repodata.json", "repodata.json.zst"])
def test_a_small_repodata_passes_and_every_byte_of_its_syntax_is_checked(tmp_path: Path, name: str) -> None:
    _check(_write(tmp_path, name, SMALL_REPODATA))
    broken = SMALL_REPODATA.replace(b'"b >=2", "c"', b'"b >=2",, "c"')  # deep inside, far from both ends
    with pytest.raises(IntegrityError, match="not valid JSON"):
        _check(_write(tmp_path, name, broken))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "an HTML page"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"info": {}} {"packages": {}}', "not valid JSON"),
        (b'{"info": {"subdir": "linux-64"}}', "repodata without packages"),
        (b'{"info": {"subdir": "linux-64"}, "packages": {"a": tru}}', "not valid JSON"),
    ],
)
def test_what_is_not_repodata_is_refused(tmp_path: Path, text: bytes, said: str) -> None:
    with pytest.raises(IntegrityError, match=said):
        _check(_write(tmp_path, "repodata.json", text))


def test_a_zst_whose_checksum_fails_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "repodata.json.zst", SMALL_REPODATA)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the frame's checksum, at its end
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not decompress"):
        _check(path)


def _peak_while(run: Callable[[], None]) -> int:
    """The most memory Python allocated at once while `run` ran (bytes)."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def big_repodata(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A repodata past PARSE_WHOLE_BYTES: the size where the check must stream."""
    path = tmp_path_factory.mktemp("big") / "repodata.json"
    write_synthetic_repodata(path, size=PARSE_WHOLE_BYTES + (4 << 20))
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "content_size", "bound"),
    [
        ("repodata.json", True, 4 * CHUNK),  # its size is known: nothing is kept but the head
        ("repodata.json.zst", True, 4 * CHUNK),  # the frame says its size
        ("repodata.json.zst", False, PARSE_WHOLE_BYTES + 4 * CHUNK),  # known once more than the bound has come
    ],
)
def test_checking_a_big_repodata_holds_a_bounded_amount_of_it(
    tmp_path: Path, big_repodata: bytes, name: str, content_size: bool, bound: int
) -> None:
    path = _write(tmp_path, name, big_repodata, content_size=content_size)
    peak = _peak_while(lambda: _check(path))
    # (The check used to parse anything up to 32 MB with json.loads: a 30 MB repodata.json cost 135 MB.)
    assert peak < bound, f"{peak / 1e6:.1f} MB held to check {len(big_repodata) / 1e6:.1f} MB"


def test_a_big_repodata_still_gets_the_streaming_checks(tmp_path: Path, big_repodata: bytes) -> None:
    _check(_write(tmp_path, "repodata.json", big_repodata))
    with pytest.raises(IntegrityError, match="not a JSON object"):
        _check(_write(tmp_path, "repodata.json", big_repodata.rstrip()[:-1]))  # no closing brace
    renamed = big_repodata.replace(b'"packages', b'"pockages')
    with pytest.raises(IntegrityError, match='without the repodata\'s "packages"'):
        _check(_write(tmp_path, "repodata.json", renamed))


# ---- the subdir a repodata (or shard index) names ----------------------------------------------------------------


def _subdir_check(path: Path, subdir: str = "linux-64") -> None:
    check = content_check_for(path.name, subdir)
    assert check is not None
    check(path)


@pytest.mark.parametrize("name", ["repodata.json", "repodata.json.zst", "current_repodata.json"])
def test_a_small_repodata_of_another_subdir_is_refused(tmp_path: Path, name: str) -> None:
    _subdir_check(_write(tmp_path, name, SMALL_REPODATA))
    with pytest.raises(IntegrityError, match="'linux-64', asked for 'noarch'"):
        _subdir_check(_write(tmp_path, name, SMALL_REPODATA), "noarch")
    # Without an info naming its subdir (old indexers), nothing is judged.
    _subdir_check(_write(tmp_path, name, SMALL_REPODATA.replace(b'"subdir": "linux-64"', b'"arch": null')), "noarch")
    # A channel's own files are not a subdir's.
    assert content_check_for("channeldata.json", "noarch") is not None
    content_check_for("channeldata.json", "noarch")(_write(tmp_path, "channeldata.json", b'{"info": {"subdir": "x"}}'))  # type: ignore[misc]


def _big_repodata(info_at: str, subdir: str = "noarch") -> bytes:
    info = f'"info": {{"subdir": "{subdir}", "base_url": ""}}'.encode()
    # Records that carry an "info" of their own and a "subdir", to be told from the top level's.
    record = b'"a-%d-0.tar.bz2": {"name": "a", "subdir": "nowhere", "info": {"subdir": "nowhere"}}'
    records = b", ".join(record % n for n in range(120_000))
    packages = b'"packages": {' + records + b'}, "packages.conda": {}'
    removed = b'"removed": [], "repodata_version": 1'
    middle = b'"packages.conda": {' + records + b"}"
    members = {
        "first": [info, packages, removed],
        "last": [packages, removed, info],
        "before-removed": [packages, info, removed],
        "middle": [b'"packages": {}', middle, info, middle.replace(b"packages.conda", b"v3"), removed],
    }[info_at]
    return b"{" + b", ".join(members) + b"}"


@pytest.mark.parametrize("info_at", ["first", "last", "before-removed"])
@pytest.mark.parametrize("name", ["repodata.json", "repodata.json.zst"])
def test_a_big_repodata_of_another_subdir_is_refused_where_its_info_is_cheap_to_read(
    tmp_path: Path, info_at: str, name: str
) -> None:
    text = _big_repodata(info_at)
    assert len(text) > PARSE_WHOLE_BYTES  # the streaming checks
    with pytest.raises(IntegrityError, match="'noarch', asked for 'linux-64'"):
        _subdir_check(_write(tmp_path, name, text))
    _subdir_check(_write(tmp_path, name, _big_repodata(info_at, subdir="linux-64")))


def test_a_big_repodata_whose_info_is_deep_in_the_middle_goes_unchecked(tmp_path: Path) -> None:
    text = _big_repodata("middle")
    assert len(text) > PARSE_WHOLE_BYTES
    _subdir_check(_write(tmp_path, "repodata.json", text))  # documented: not read there


def test_a_shard_index_of_another_subdir_is_refused(tmp_path: Path) -> None:
    import msgpack

    def index(subdir: str) -> Path:
        doc = {"version": 1, "info": {"subdir": subdir, "base_url": "", "shards_base_url": ""}, "shards": {}}
        path = tmp_path / "repodata_shards.msgpack.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(msgpack.packb(doc)))
        return path

    _subdir_check(index("linux-64"))
    with pytest.raises(IntegrityError, match="'noarch', asked for 'linux-64'"):
        _subdir_check(index("noarch"))


@pytest.mark.parametrize("chunk", [97, 4096])
def test_the_streaming_checks_hold_across_small_chunks(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tail kept as the last chunks (INFO_TAIL_BYTES of them), the last byte found past whitespace-only chunks.
    monkeypatch.setattr(index_checks, "CHUNK", chunk)
    text = _big_repodata("last") + b"\n" * 300 + b" \t\r\n" * 50
    with pytest.raises(IntegrityError, match="'noarch', asked for 'linux-64'"):
        _subdir_check(_write(tmp_path, "repodata.json.zst", text))
    _subdir_check(_write(tmp_path, "repodata.json.zst", _big_repodata("last", subdir="linux-64") + b"\n" * 300))
    with pytest.raises(IntegrityError, match="not a JSON object"):
        _subdir_check(_write(tmp_path, "repodata.json.zst", _big_repodata("last", subdir="linux-64")[:-2] + b"\n"))
