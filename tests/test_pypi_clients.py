"""Real clients (pip and uv) install through pkgcache, from each kind of upstream, and again from cache alone."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgcache.cache_state import REVALIDATE_HEADER
from tests.cache_service import RunningCache
from tests.fakes.dists import build_wheel
from tests.fakes.pypi_upstreams import JSON_CT as JSON_TYPE
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, installed_dists, run_pip_install, run_uv_install

EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
Installer = Callable[..., object]
INSTALLERS = {"pip": run_pip_install, "uv": run_uv_install}


def _install(kind: str, cache: RunningCache, target: Path) -> set[str]:
    result = INSTALLERS[kind](cache.index_url, target, "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    return installed_dists(target)


def _file_requests(server: OfficialLikeUpstream | TunaLikeUpstream) -> list[str]:
    files_server = getattr(server, "files", server)
    return [r.path for r in files_server.requests if "/packages/" in r.path]


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_install_from_official_layout_then_from_cache_alone(
    kind: str,
    official_upstream: OfficialLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    cache = make_cache([official_upstream.index_url])
    assert _install(kind, cache, tmp_path / "first") == EXPECTED_TREE
    # The upstream really served this install: pages on the index host, files on the files host.
    assert official_upstream.count("/simple/alpha/") >= 1
    assert official_upstream.count("/simple/delta-pkg/") >= 1
    fetched = _file_requests(official_upstream)
    assert any(path.endswith("alpha-2.0-py3-none-any.whl") for path in fetched)
    if kind == "uv":
        # uv reads PEP 658 metadata, which pkgcache passes on because this upstream has it.
        assert any(path.endswith(".whl.metadata") for path in fetched)
    # Every request pkgcache made upstream was plain and carried its own User-Agent.
    for request in official_upstream.requests + official_upstream.files.requests:
        assert request.headers.get("User-Agent", "").startswith("pkgcache/")
        assert not any(name.lower().startswith("x-") for name in request.headers)

    bg_loop.run(official_upstream.stop())
    assert _install(kind, cache, tmp_path / "second") == EXPECTED_TREE


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_install_from_tuna_like_mirror_then_from_cache_alone(
    kind: str,
    tuna_upstream: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
    bg_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    cache = make_cache([tuna_upstream.index_url], pypi={"index_ttl": 0})
    assert _install(kind, cache, tmp_path / "first") == EXPECTED_TREE
    # The mirror's firewall let every pkgcache request through, and it served the relative ../../packages links.
    assert tuna_upstream.firewall.refused == []
    assert any(path.endswith("beta-1.1-py3-none-any.whl") for path in _file_requests(tuna_upstream))

    bg_loop.run(tuna_upstream.stop())
    # index_ttl 0: every page is stale now and its revalidation fails, yet the install works from cache.
    assert _install(kind, cache, tmp_path / "second") == EXPECTED_TREE
    answer = cache.get("/pypi/simple/alpha/")
    assert answer.status == 200
    # Served from the cache either way: "stale" (its revalidation failed), or "offline" once the gate has seen
    # every upstream resting after those failures (it looks every 0.5 s) and switched to the offline view.
    assert answer.headers["x-pkgcache-cache"] in ("stale", "offline")


def test_clients_take_different_entries_of_a_file_name_listed_twice(bg_loop: BackgroundLoop, tmp_path: Path) -> None:
    # Straight from a mirror listing one file name twice with other bytes: pip installs the last entry, uv the first.
    first, second = build_wheel("demo", "1.0"), build_wheel("demo", "1.0", payload_size=100)
    assert first.filename == second.filename and first.sha256 != second.sha256
    mirror = OfficialLikeUpstream([first, second])
    bg_loop.run(mirror.start())
    try:
        taken = {}
        for kind, installer in INSTALLERS.items():
            mirror.files.reset_log()
            result = installer(mirror.index_url, tmp_path / kind, "demo==1.0")
            assert result.returncode == 0, result.stdout + result.stderr
            taken[kind] = [d for d in (first, second) if mirror.files.count(mirror.file_path(d), "GET")]
        assert taken == {"pip": [second], "uv": [first]}
    finally:
        bg_loop.run(mirror.stop())


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_page_listing_a_file_twice_differently_gives_way_to_the_next_mirrors_page(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # Through pkgcache every client gets one and the same file: the mirror whose page contradicts itself is passed
    # over for the next one's page, and the file comes from there.
    first, second = build_wheel("demo", "1.0"), build_wheel("demo", "1.0", payload_size=100)
    contradicting, sound = OfficialLikeUpstream([first, second]), TunaLikeUpstream([second], strict_ua=False)
    bg_loop.run(contradicting.start())
    bg_loop.run(sound.start())
    try:
        cache = make_cache([contradicting.index_url, sound.index_url])
        result = INSTALLERS[kind](cache.index_url, tmp_path / "through", "demo==1.0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert contradicting.count("/simple/demo/") >= 1 and sound.count("/simple/demo/") >= 1
        page = json.loads(cache.get("/pypi/simple/demo/", {"Accept": JSON_TYPE}).body)
        assert [f["hashes"] for f in page["files"]] == [{"sha256": second.sha256}]
        kept = cache.data_dir / "pypi" / "files" / "demo" / second.filename
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == second.sha256
        assert sound.count(sound.file_path(second), "GET") >= 1
        assert contradicting.files.requests == []
    finally:
        bg_loop.run(contradicting.stop())
        bg_loop.run(sound.stop())


def test_a_page_from_a_mirror_now_down_is_kept_over_one_that_contradicts_itself(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    # The cached page came from the sound mirror; at its revalidation that mirror is down and the other one's page
    # lists the file twice: the cached page (with the file) is served stale, not replaced by one without it.
    first, second = build_wheel("demo", "1.0"), build_wheel("demo", "1.0", payload_size=100)
    contradicting, sound = OfficialLikeUpstream([first, second]), TunaLikeUpstream([second], strict_ua=False)
    bg_loop.run(contradicting.start())
    bg_loop.run(sound.start())
    try:
        cache = make_cache([contradicting.index_url, sound.index_url], pypi={"index_ttl": 0})
        listed = lambda: json.loads(cache.get("/pypi/simple/demo/", {"Accept": JSON_TYPE}).body)["files"]  # noqa: E731
        assert [f["hashes"] for f in listed()] == [{"sha256": second.sha256}]
        sound.garbage["demo"] = "503"
        asked = contradicting.count("/simple/demo/")
        for _ in range(50):
            if contradicting.count("/simple/demo/") > asked + 1:
                break
            listed()  # each serves the cached page and revalidates it in the background (index_ttl = 0)
            time.sleep(0.1)
        assert contradicting.count("/simple/demo/") > asked + 1
        assert [f["hashes"] for f in listed()] == [{"sha256": second.sha256}]
    finally:
        bg_loop.run(contradicting.stop())
        bg_loop.run(sound.stop())


def _files(cache: RunningCache, project: str) -> dict[str, dict[str, object]]:
    page = json.loads(cache.get(f"/pypi/simple/{project}/", {"Accept": JSON_TYPE}).body)
    return {entry["filename"]: entry for entry in page["files"]}


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_file_listed_twice_differently_on_every_mirror_is_the_entry_its_bytes_are(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # No mirror gives a page without the contradiction: the file is listed once, without a hash, and is the entry
    # whose hash the bytes fetched for it give (pip straight from the mirror would take the last entry, uv the
    # first); from then on the page lists it as that entry, and every client installs that same file.
    first, second = build_wheel("demo", "1.0"), build_wheel("demo", "1.0", payload_size=100)
    older = build_wheel("demo", "0.9")
    mirror = OfficialLikeUpstream([older, first, second])
    bg_loop.run(mirror.start())
    try:
        cache = make_cache([mirror.index_url])
        undecided = _files(cache, "demo")[first.filename]
        assert undecided["hashes"] == {} and "size" not in undecided
        pinned = INSTALLERS[kind](cache.index_url, tmp_path / kind, "demo==1.0")
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        assert installed_dists(tmp_path / kind) == {"demo==1.0"}
        assert mirror.count("/simple/demo/") >= 1
        assert mirror.files.count(mirror.file_path(first), "GET") >= 1  # the first entry's link
        assert mirror.files.count(mirror.file_path(second)) == 0
        kept = cache.data_dir / "pypi" / "files" / "demo" / first.filename
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == first.sha256
        decided = _files(cache, "demo")[first.filename]
        assert (decided["hashes"], decided["size"]) == ({"sha256": first.sha256}, len(first.data))
        assert decided["core-metadata"] == {"sha256": first.metadata_sha256}  # made from the file kept

        # The other client, holding the hash the page lists now, installs the same file, from the cache.
        other = "uv" if kind == "pip" else "pip"
        requirements = tmp_path / "req.txt"
        requirements.write_text(f"demo==1.0 --hash=sha256:{first.sha256}\n")
        locked = INSTALLERS[other](cache.index_url, tmp_path / other, "-r", str(requirements), "--require-hashes")
        assert locked.returncode == 0, locked.stdout + locked.stderr
        assert mirror.files.count(mirror.file_path(second)) == 0
    finally:
        bg_loop.run(mirror.stop())


def test_a_file_listed_twice_differently_is_the_entry_its_bytes_are_whichever_link_served_them(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # The first entry's link serves the second entry's bytes (the first entry's hash is a stale one): the bytes
    # are that entry, and the page lists their hash, not the first entry's.
    first, second = build_wheel("demo", "1.0"), build_wheel("demo", "1.0", payload_size=100)
    mirror = OfficialLikeUpstream([first, second])
    mirror._by_path[mirror.file_path(first)] = second  # what the fake serves at the first entry's link
    mirror.page_validators = False  # each revalidation gets the whole page again
    bg_loop.run(mirror.start())
    try:
        cache = make_cache([mirror.index_url])
        result = run_uv_install(cache.index_url, tmp_path / "uv", "demo==1.0")
        assert result.returncode == 0, result.stdout + result.stderr
        decided = _files(cache, "demo")[first.filename]
        assert (decided["hashes"], decided["size"]) == ({"sha256": second.sha256}, len(second.data))
        kept = cache.data_dir / "pypi" / "files" / "demo" / first.filename
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == second.sha256

        # Revalidated, the mirror's page lists the file twice again: it is listed as the entry the cached bytes are.
        asked = mirror.count("/simple/demo/")
        time.sleep(1.1)
        revalidated = cache.get("/pypi/simple/demo/", {"Accept": JSON_TYPE, REVALIDATE_HEADER: "1"})
        assert mirror.count("/simple/demo/") == asked + 1
        entry = {f["filename"]: f for f in json.loads(revalidated.body)["files"]}[first.filename]
        assert (entry["hashes"], entry["size"]) == ({"sha256": second.sha256}, len(second.data))
    finally:
        bg_loop.run(mirror.stop())


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_file_listed_twice_differently_whose_bytes_are_neither_entry_is_never_served_whole(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    first, second = build_wheel("demo", "1.0"), build_wheel("demo", "1.0", payload_size=100)
    mirror = OfficialLikeUpstream([first, second])
    mirror.corrupt_files = {first.filename}  # the bytes under that name are neither entry's
    bg_loop.run(mirror.start())
    try:
        cache = make_cache([mirror.index_url])
        result = INSTALLERS[kind](cache.index_url, tmp_path / kind, "demo==1.0")
        assert result.returncode != 0
        assert installed_dists(tmp_path / kind) == set()
        assert mirror.files.count(mirror.file_path(first), "GET") >= 1
        assert not (cache.data_dir / "pypi" / "files" / "demo" / first.filename).exists()
        assert _files(cache, "demo")[first.filename]["hashes"] == {}  # still undecided
        # Asked again soon after, it is a 502 saying why, not the bytes fetched again to be cut once more.
        fetched = mirror.files.count(mirror.file_path(first), "GET")
        again = cache.get(f"/pypi/files/demo/{first.filename}")
        assert again.status == 502 and b"none of the 2 files the index lists under its name" in again.body
        assert mirror.files.count(mirror.file_path(first), "GET") == fetched
    finally:
        bg_loop.run(mirror.stop())


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_files_are_named_by_their_urls_as_clients_name_them_not_by_cut_link_texts(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # nginx's autoindex cuts a name past 50 characters in its link text ("..>"); pip and uv read the URL.
    wheel = build_wheel("demo_long_project_name_for_autoindex", "1.0")
    assert len(wheel.filename) > 50
    mirror = TunaLikeUpstream([wheel], strict_ua=False)
    mirror.link_texts[wheel.filename] = wheel.filename[:47] + "..>"
    bg_loop.run(mirror.start())
    try:
        cache = make_cache([mirror.index_url])
        result = INSTALLERS[kind](cache.index_url, tmp_path / "through", "demo-long-project-name-for-autoindex==1.0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed_dists(tmp_path / "through") == {"demo-long-project-name-for-autoindex==1.0"}
        assert mirror.count("/simple/demo-long-project-name-for-autoindex/") >= 1
        assert mirror.count(mirror.file_path(wheel), "GET") >= 1
    finally:
        bg_loop.run(mirror.stop())


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_page_of_another_project_gives_way_to_the_next_mirrors_page(
    kind: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # A mirror (or its CDN) answers demo's page with other's, a sound JSON page naming "other": pkgcache asks the
    # next mirror, and never caches the other project's page as demo's.
    demo, other = build_wheel("demo", "1.0"), build_wheel("other", "1.0")
    mixed_up, sound = OfficialLikeUpstream([demo, other]), TunaLikeUpstream([demo, other], strict_ua=False)
    mixed_up.pages_instead["demo"] = "other"
    bg_loop.run(mixed_up.start())
    bg_loop.run(sound.start())
    try:
        cache = make_cache([mixed_up.index_url, sound.index_url])
        result = INSTALLERS[kind](cache.index_url, tmp_path / "through", "demo==1.0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed_dists(tmp_path / "through") == {"demo==1.0"}
        assert mixed_up.count("/simple/demo/") >= 1 and sound.count("/simple/demo/") >= 1
        assert sound.count(sound.file_path(demo), "GET") >= 1
        cached = json.loads((cache.data_dir / "pypi" / "simple" / "demo" / "page.json").read_text())
        assert [f["filename"] for f in cached["page"]["files"]] == [demo.filename]
    finally:
        bg_loop.run(mixed_up.stop())
        bg_loop.run(sound.stop())
