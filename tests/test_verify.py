"""`pkgcache verify`: a cache filled by really fetching through pkgcache from the fake upstreams, then damaged as a
disk would damage it (bytes flipped, files cut short); verify must name and remove exactly the damaged files (with
their sidecars), leave the good ones, remove nothing with --dry-run, exit 1 when anything failed, and leave a cache
from which real clients get the files again, fetched anew."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import zstandard

from pkgcache.bundle import verifying
from pkgcache.bundle.verifying import verify_cache
from pkgcache.conda import index_checks
from pkgcache.storage.downloads import IntegrityError
from tests.cache_service import RunningCache
from tests.conda_support import SUBDIR, Channels
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.kit_support import flip_last_byte, pkgcache
from tests.support import installed_dists, run_pip_install

CHANNELS = ["pkgs/main", "cloud/conda-forge"]
WHEEL = "beta-1.1-py3-none-any.whl"
GOOD_WHEEL = "gamma-0.5-py3-none-any.whl"
MAIN = f"conda/pkgs/main/{SUBDIR}"
FORGE = f"conda/cloud/conda-forge/{SUBDIR}"


@dataclass
class Filled:
    cache: RunningCache
    data: Path
    conda_package: str  # paths below the data directory
    forge_package: str
    shard: str
    other_shard: str


def _unpack(raw: bytes) -> dict:  # type: ignore[type-arg]
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(raw), strict_map_key=False)


def _get_ok(cache: RunningCache, path: str) -> bytes:
    answer = cache.get(path)
    assert answer.status == 200, (path, answer.status)
    return answer.body


@pytest.fixture
def filled(
    make_cache: Callable[..., RunningCache],
    official_upstream: OfficialLikeUpstream,
    anaconda_upstream: AnacondaLikeUpstream,
    conda_channels: Channels,
) -> Filled:
    """A cache holding PyPI pages, wheels and core metadata, a plain conda subdir's repodata in three forms and
    two packages, and a sharded subdir's shard index, shards and a package, all fetched through pkgcache."""
    conda_upstream = {
        "name": "anaconda-fake",
        "pkgs_url": f"{anaconda_upstream.repo.url}/pkgs/",
        "cloud_url": f"{anaconda_upstream.conda.url}/",
    }
    cache = make_cache([official_upstream.index_url], conda={"upstreams": [conda_upstream], "channels": CHANNELS})
    for project, wheel in (("beta", WHEEL), ("gamma", GOOD_WHEEL)):
        _get_ok(cache, f"/pypi/simple/{project}/")
        _get_ok(cache, f"/pypi/files/{project}/{wheel}")
        _get_ok(cache, f"/pypi/files/{project}/{wheel}.metadata")
    for form in ("repodata.json", "repodata.json.zst", "repodata.json.bz2"):
        _get_ok(cache, f"/{MAIN}/{form}")
    libfoo, app = find_pkg(conda_channels.main_pkgs, "libfoo", "1.1"), find_pkg(conda_channels.main_pkgs, "app")
    for pkg in (libfoo, app):
        _get_ok(cache, f"/{MAIN}/{pkg.filename}")
    index = _unpack(_get_ok(cache, f"/{FORGE}/repodata_shards.msgpack.zst"))
    digests = {name: digest.hex() for name, digest in index["shards"].items()}
    for name in ("app", "libfoo"):
        _get_ok(cache, f"/{FORGE}/shards/{digests[name]}.msgpack.zst")
    forge_app = find_pkg(conda_channels.forge_pkgs, "app")
    _get_ok(cache, f"/{FORGE}/{forge_app.filename}")
    cache.wait_for_downloads_to_end()
    return Filled(
        cache,
        cache.data_dir,
        f"{MAIN}/{libfoo.filename}",
        f"{FORGE}/{forge_app.filename}",
        f"{FORGE}/shards/{digests['libfoo']}.msgpack.zst",
        f"{FORGE}/shards/{digests['app']}.msgpack.zst",
    )


def _snapshot(data: Path) -> dict[str, str]:
    """Every file of the cache (sidecars too) -> its sha256."""
    found = {}
    for area in ("pypi", "conda"):
        for path in (data / area).rglob("*"):
            if path.is_file():
                found[path.relative_to(data).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Change a file in place, keeping its mtime (a disk fault does not touch the inode's times)."""
    stat = path.stat()
    path.write_bytes(change(path.read_bytes()))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x55]) + data[middle + 1 :]


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _damage(filled: Filled) -> dict[str, str]:
    """Damage one file of each kind; the damaged paths -> a word the failure's reason must hold."""
    data = filled.data
    wheel = f"pypi/files/beta/{WHEEL}"
    _rewrite(data / wheel, _flip_middle_byte)  # same size: only its hash tells
    _rewrite(data / filled.conda_package, _half)
    _rewrite(data / filled.shard, flip_last_byte)
    # A repodata.json cut short whose sidecar was made to agree: only its shape check can tell.
    repodata = data / MAIN / "repodata.json"
    _rewrite(repodata, _half)
    sidecar = repodata.with_name("repodata.json.meta")
    meta = json.loads(sidecar.read_text())
    meta["size"] = repodata.stat().st_size
    sidecar.write_text(json.dumps(meta))
    # A .bz2 cut short: its sidecar's size tells before anything is decompressed.
    bz2 = f"{MAIN}/repodata.json.bz2"
    _rewrite(data / bz2, _half)
    return {
        wheel: "sha256",
        filled.conda_package: "bytes, not the",
        filled.shard: "its name",
        f"{MAIN}/repodata.json": "JSON",
        bz2: "its sidecar says",
    }


def _failures(output: str) -> dict[str, str]:
    lines = [line.strip().removeprefix("FAILED ") for line in output.splitlines() if "FAILED " in line]
    return dict(line.split(": ", 1) for line in lines)


def test_a_whole_cache_passes_and_every_kind_of_file_was_checked(filled: Filled) -> None:
    before = _snapshot(filled.data)
    result = pkgcache("verify", "--data-dir", filled.data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed, 0 removed" in result.stdout
    assert _snapshot(filled.data) == before
    # 2 wheels, 2 .metadata, 3 conda packages, 2 shards hashed; pages, repodata forms, the shard index by shape.
    summary = result.stdout.splitlines()[0]
    assert "9 against a digest" in summary, summary


def test_verify_names_and_removes_exactly_the_damaged_files_and_real_clients_get_them_again(
    filled: Filled,
    official_upstream: OfficialLikeUpstream,
    anaconda_upstream: AnacondaLikeUpstream,
    conda_channels: Channels,
    tmp_path: Path,
) -> None:
    data, cache = filled.data, filled.cache
    damaged = _damage(filled)
    before = _snapshot(data)

    dry = pkgcache("verify", "--dry-run", "--data-dir", data)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert set(_failures(dry.stdout)) == set(damaged), dry.stdout
    assert "5 failed, 0 removed" in dry.stdout and "dry run" in dry.stdout
    assert _snapshot(data) == before  # nothing removed, nothing changed

    result = pkgcache("verify", "--data-dir", data)
    assert result.returncode == 1, result.stdout + result.stderr
    failures = _failures(result.stdout)
    assert set(failures) == set(damaged), result.stdout
    for path, word in damaged.items():
        assert word in failures[path] and failures[path].endswith("; removed"), (path, failures[path])
    assert "5 failed, 5 removed" in result.stdout
    after = _snapshot(data)
    gone = {path for path in damaged} | {f"{path}.meta" for path in damaged if f"{path}.meta" in before}
    assert set(before) - set(after) == gone  # the damaged files and their sidecars, nothing else
    assert all(after[path] == before[path] for path in after)  # the good ones untouched

    again = pkgcache("verify", "--data-dir", data)
    assert again.returncode == 0, again.stdout
    assert " 0 failed" in again.stdout

    # Real clients get the removed files again through pkgcache, fetched anew from the upstreams.
    official_upstream.files.reset_log()
    target = tmp_path / "target"
    installed = run_pip_install(cache.index_url, target, "beta==1.1")
    assert installed.returncode == 0, installed.stderr
    assert "beta==1.1" in installed_dists(target)
    assert official_upstream.files.count_whole(f"/{WHEEL}") == 1
    wheel = find_dist(sample_dists(), WHEEL)
    assert hashlib.sha256((data / "pypi/files/beta" / WHEEL).read_bytes()).hexdigest() == wheel.sha256

    anaconda_upstream.reset_log()
    libfoo = find_pkg(conda_channels.main_pkgs, "libfoo", "1.1")
    body = _get_ok(cache, f"/{filled.conda_package}")
    assert hashlib.sha256(body).hexdigest() == libfoo.sha256
    assert anaconda_upstream.count(f"/{libfoo.filename}") == 1
    shard = _get_ok(cache, f"/{filled.shard}")
    assert hashlib.sha256(shard).hexdigest() == filled.shard.rsplit("/", 1)[-1].split(".")[0]
    for form in ("repodata.json", "repodata.json.bz2"):
        assert anaconda_upstream.count(f"/{SUBDIR}/{form}") == 0
        _get_ok(cache, f"/{MAIN}/{form}")
        assert anaconda_upstream.count(f"/{SUBDIR}/{form}") == 1
    cache.wait_for_downloads_to_end()
    final = pkgcache("verify", "--data-dir", data)
    assert final.returncode == 0 and " 0 failed" in final.stdout, final.stdout


def test_a_sidecar_that_cannot_be_read_fails_its_file(filled: Filled) -> None:
    sidecar = filled.data / MAIN / "repodata.json.zst.meta"
    sidecar.write_text("{not json")
    result = pkgcache("verify", "--data-dir", filled.data)
    assert result.returncode == 1
    assert _failures(result.stdout) == {
        f"{MAIN}/repodata.json.zst": "its sidecar repodata.json.zst.meta cannot be read; removed"
    }
    assert not sidecar.exists() and not (filled.data / MAIN / "repodata.json.zst").exists()


def test_a_damaged_shard_made_here_takes_its_index_with_it_and_both_are_made_again(
    make_cache: Callable[..., RunningCache], conda_mirror: MirrorLikeUpstream
) -> None:
    """Shards made here cannot be fetched from an upstream: the index made here goes too, so that the next
    request makes both again from the cached repodata instead of answering 404 for the shard."""
    conda = {"upstreams": [f"{conda_mirror.url}/anaconda/"], "channels": CHANNELS}
    cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
    subdir = f"conda/pkgs/main/{SUBDIR}"
    index_path = f"{subdir}/made-here/repodata_shards.msgpack.zst"
    digest = _unpack(_get_ok(cache, f"/{subdir}/repodata_shards.msgpack.zst"))["shards"]["libfoo"].hex()
    shard = f"{subdir}/shards/{digest}.msgpack.zst"
    _get_ok(cache, f"/{shard}")
    data = cache.data_dir
    assert (data / index_path).is_file() and (data / shard).is_file()
    _wait_for(lambda: not list((data / subdir / "shard-packs").glob("*")))  # every shard has its own file
    _rewrite(data / shard, flip_last_byte)

    result = pkgcache("verify", "--data-dir", data)

    assert result.returncode == 1, result.stdout + result.stderr
    assert set(_failures(result.stdout)) == {shard}, result.stdout
    assert f"removed {index_path} too" in result.stdout
    assert not (data / shard).exists() and not (data / index_path).exists()
    assert not (data / f"{index_path}.meta").exists()
    again = _unpack(_get_ok(cache, f"/{subdir}/repodata_shards.msgpack.zst"))["shards"]["libfoo"].hex()
    assert again == digest
    assert hashlib.sha256(_get_ok(cache, f"/{shard}")).hexdigest() == digest
    assert pkgcache("verify", "--data-dir", data).returncode == 0


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_what_a_damaged_index_says_is_not_held_against_the_packages(filled: Filled) -> None:
    """A repodata.json that fails (here: not the size its sidecar records) and lists a wrong hash for a package:
    the package is judged by the other forms of the index, and kept."""
    repodata = filled.data / MAIN / "repodata.json"
    document = json.loads(repodata.read_bytes())
    name = filled.conda_package.rsplit("/", 1)[-1]
    document["packages.conda"][name]["sha256"] = "0" * 64
    _rewrite(repodata, lambda _: json.dumps(document, indent=1).encode())
    assert json.loads(repodata.with_name("repodata.json.meta").read_bytes())["size"] != repodata.stat().st_size
    for dry_run in (["--dry-run"], []):  # a dry run leaves the damaged index in place: it must not be believed
        result = pkgcache("verify", *dry_run, "--data-dir", filled.data)
        assert result.returncode == 1
        assert set(_failures(result.stdout)) == {f"{MAIN}/repodata.json"}, result.stdout
        assert (filled.data / filled.conda_package).is_file()


def test_a_big_repodata_is_read_record_by_record_and_damage_in_its_middle_is_found(
    filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond 8 MB the download's shape check looks at the ends of a repodata only (made 0 bytes here, so this small
    one counts as big): verify reads every record as the package lookups do, in bounded memory."""
    monkeypatch.setattr(index_checks, "PARSE_WHOLE_BYTES", 0)
    repodata = filled.data / MAIN / "repodata.json"
    text = repodata.read_bytes()
    middle = text.index(b'"sha256"', len(text) // 2)
    _rewrite(repodata, lambda data: data[:middle] + b"#" + data[middle + 1 :])  # same size: the sidecar agrees
    with pytest.raises(IntegrityError):  # what the whole-file check would have said, were it used
        index_checks._check_whole(bytearray(repodata.read_bytes()), repodata=True)

    report = verify_cache(filled.data)

    assert [(f.path, f.removed) for f in report.failures] == [(f"{MAIN}/repodata.json", True)]
    assert report.failures[0].reason.startswith("not a readable repodata")
    assert not repodata.exists() and (filled.data / filled.conda_package).is_file()


def test_a_file_replaced_while_it_was_checked_is_left_in_place(filled: Filled, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running instance may rename a new version in while verify hashes the old one: the new one is not removed
    for what was wrong with the old."""
    wheel = filled.data / "pypi/files/beta" / WHEEL
    _rewrite(wheel, _flip_middle_byte)
    good = find_dist(sample_dists(), WHEEL).data
    hashing = verifying._digest_problem

    def replaced_meanwhile(full: Path, algorithm: str, expected: str, source: str) -> str | None:
        problem = hashing(full, algorithm, expected, source)
        if full == wheel:
            fresh = wheel.with_name(".fresh.tmp")
            fresh.write_bytes(good)
            os.replace(fresh, wheel)  # as the service commits a download: a new inode
        return problem

    monkeypatch.setattr(verifying, "_digest_problem", replaced_meanwhile)
    report = verify_cache(filled.data)
    assert report.failures == [] and report.changed == [f"pypi/files/beta/{WHEEL}"]
    assert wheel.read_bytes() == good


def test_a_long_run_tells_how_far_it_has_gone(filled: Filled, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `every` at 0 each file checked is told: the counts only grow, up to every file and byte of the cache."""
    told: list[tuple[int, int, int, int]] = []

    def progress(report: verifying.VerifyReport, files: int, size: int) -> None:
        told.append((report.checked, report.checked_bytes, files, size))

    report = verify_cache(filled.data, progress=progress, every=0)
    assert report.ok and report.checked > 3
    assert [checked for checked, *_ in told] == list(range(1, report.checked + 1))
    assert {(files, size) for *_, files, size in told} == {(report.checked, report.checked_bytes)}
    assert told[-1][:2] == (report.checked, report.checked_bytes)
    quiet: list[int] = []
    verify_cache(filled.data, progress=lambda report, files, size: quiet.append(files))  # a quick run: never told
    assert quiet == []


def test_the_command_tells_its_progress_on_stderr(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    from pkgcache.cli.admin_commands import _tell_progress

    report = verify_cache(filled.data)
    _tell_progress(report, report.checked * 2, report.checked_bytes * 2)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"verify: {report.checked} of {report.checked * 2} files checked (") and "0 failed" in err


# --- a policy's filtered views (conda/filtered_channels.py) ---

DENIED = "libfoo-1.1-h1_0.conda"
FILTERED_FORGE = f"conda/cloud/conda-forge/{SUBDIR}"


@pytest.fixture
def denying(make_cache: Callable[..., RunningCache], conda_mirror: MirrorLikeUpstream) -> RunningCache:
    """A cache whose conda side denies libfoo >=1.1, with its filtered view of a subdir made (the .json, its .zst
    and .bz2, the refusals), the shards made from it and an allowed package: libfoo 1.1 asked for is a 403."""
    conda = {
        "upstreams": [f"{conda_mirror.url}/anaconda/"],
        "channels": ["cloud/conda-forge"],
        "deny": ["libfoo >=1.1"],
    }
    cache = make_cache(["http://127.0.0.1:9/simple/"], conda=conda)
    for form in ("repodata.json", "repodata.json.zst", "repodata.json.bz2", "repodata_shards.msgpack.zst"):
        _get_ok(cache, f"/{FILTERED_FORGE}/{form}")
    _get_ok(cache, f"/{FILTERED_FORGE}/app-1.0-h1_0.conda")
    assert cache.get(f"/{FILTERED_FORGE}/{DENIED}").status == 403
    cache.wait_for_downloads_to_end()
    return cache


def _view(data: Path) -> Path:
    (folder,) = (data / FILTERED_FORGE / "filtered").iterdir()
    assert (folder / "repodata.json.refused.json").is_file()
    return folder


def _restart(cache: RunningCache) -> RunningCache:
    """The same service started again on the same directory: nothing of what the first one knew is in memory."""
    from tests.cache_service import start_cache

    cache.stop()
    again = start_cache(cache.loop, cache.settings)
    cache.runner = again.runner  # the fixture stops it
    cache.url = again.url
    return cache


def test_a_filtered_view_passes_as_it_is_and_its_refusals_stay_in_force(denying: RunningCache) -> None:
    """The refusals beside a filtered repodata are checked as what they are (a JSON object of file name ->
    [status, reason]), never as a repodata: a healthy cache passes, and the package stays refused."""
    data = denying.data_dir
    refusals = _view(data) / "repodata.json.refused.json"
    before = _snapshot(data)

    result = pkgcache("verify", "--data-dir", data)

    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed, 0 removed" in result.stdout
    assert _snapshot(data) == before
    assert DENIED in json.loads(refusals.read_bytes())
    cache = _restart(denying)
    refused = cache.get(f"/{FILTERED_FORGE}/{DENIED}")
    assert refused.status == 403 and b'deny[0] "libfoo >=1.1"' in refused.body


@pytest.mark.parametrize(
    ("part", "damage", "word"),
    [
        ("repodata.json.refused.json", _half, "not a record of refusals"),
        ("repodata.json.refused.json", lambda _: b'{"libfoo-1.1-h1_0.conda": 403}', "not a record of refusals"),
        ("repodata.json.zst", flip_last_byte, "decompress"),
        ("repodata.json", _half, "JSON"),
    ],
)
def test_a_damaged_part_of_a_filtered_view_takes_the_whole_view_with_it(
    denying: RunningCache, part: str, damage: Callable[[bytes], bytes], word: str
) -> None:
    """A filtered view is one thing made in one pass: verify removes all of it when any part fails, so that it is
    made again, with the rules, and never served (nor believed) in part."""
    data = denying.data_dir
    folder = _view(data)
    damaged = folder / part
    _rewrite(damaged, damage)
    if damaged.with_name(f"{part}.meta").exists():  # only the shape check can tell
        sidecar = damaged.with_name(f"{part}.meta")
        meta = json.loads(sidecar.read_text())
        meta["size"] = damaged.stat().st_size
        sidecar.write_text(json.dumps(meta))
    path = damaged.relative_to(data).as_posix()

    result = pkgcache("verify", "--data-dir", data)

    assert result.returncode == 1, result.stdout + result.stderr
    failures = _failures(result.stdout)
    assert list(failures) == [path], result.stdout
    assert word in failures[path] and failures[path].endswith("; removed"), failures[path]
    assert not [p for p in folder.glob("repodata.json*")], sorted(folder.iterdir())
    assert f"removed {folder.relative_to(data).as_posix()}/repodata.json" in result.stdout

    cache = _restart(denying)
    refused = cache.get(f"/{FILTERED_FORGE}/{DENIED}")
    assert refused.status == 403 and b'deny[0] "libfoo >=1.1"' in refused.body
    for form in ("repodata.json", "repodata.json.zst"):
        body = _get_ok(cache, f"/{FILTERED_FORGE}/{form}")
        if form.endswith(".zst"):
            body = zstandard.ZstdDecompressor().stream_reader(body).read()
        assert DENIED not in json.loads(body)["packages.conda"]
    cache.wait_for_downloads_to_end()
    again = pkgcache("verify", "--data-dir", data)
    assert again.returncode == 0, again.stdout


def test_a_damaged_record_of_first_sightings_is_replaced_by_one_that_knows_none(denying: RunningCache) -> None:
    """Removed, it would be begun again with every record taken for one there before pkgcache looked, which
    `unknown_age = "allow"` serves even when pkgcache had seen it appear an hour ago."""
    data = denying.data_dir
    record = data / FILTERED_FORGE / "first-seen.json"
    record.write_bytes(b'{"since": 1000.0, "files": {"libfoo-1.0-h1_0.conda": 50')  # cut short
    path = record.relative_to(data).as_posix()

    result = pkgcache("verify", "--data-dir", data)

    assert result.returncode == 1, result.stdout + result.stderr
    failures = _failures(result.stdout)
    assert list(failures) == [path], result.stdout + result.stderr
    assert "knows no sighting" in failures[path] and failures[path].endswith("; removed"), failures[path]
    assert json.loads(record.read_bytes()) == {"since": 0.0, "files": {}}
    assert pkgcache("verify", "--data-dir", data).returncode == 0
