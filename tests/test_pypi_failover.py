"""The PyPI side when mirrors disagree or half-fail: what a page, or a file's hash, is taken from.

- A mirror down and another answering 404 is not proof that a cached project is gone: its page is served stale.
- A page whose hash (or size) every mirror's bytes fail is the suspect: the other mirrors' pages are asked, and the
  file is listed (and served) as the one whose entry its bytes pass.
- Mirrors listing one file name as different bytes: the verified cached copy stays, listed as the page that
  vouches for it, while one does.
- A page from another mirror that cannot be dated against the cached one (no serial, no Last-Modified on one side)
  does not take files away.
- A page that never ends (arriving above min_rate) is left for the next mirror after page_timeout.

Real pip and uv install through pkgcache where the finding was about what a client installs; the fake upstreams'
request logs show who was asked.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pkgcache.cache_state import REVALIDATE_HEADER
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.pages import CachedPage
from pkgcache.pypi.upstream_index import _older_than
from pkgcache.storage.file_records import recorded_of
from tests.cache_service import RunningCache
from tests.fakes.dists import build_wheel
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, http_get, run_pip_install, run_uv_install


def _wait_until(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _mirrors(bg_loop: BackgroundLoop, *servers: Any) -> list[dict[str, Any]]:
    for server in servers:
        bg_loop.run(server.start())
    return [{"name": name, "url": server.index_url} for name, server in zip("AB", servers, strict=False)]


def _stop(bg_loop: BackgroundLoop, *servers: Any) -> None:
    for server in servers:
        bg_loop.run(server.stop())


def _page_requests(server: Any, project: str) -> int:
    return sum(1 for request in server.requests if request.path == f"/simple/{project}/")


def _install(client: str, cache: RunningCache, target: Path, *reqs: str, extra: list[str] | None = None) -> None:
    run = run_pip_install if client == "pip" else run_uv_install
    result = run(cache.index_url, target, *reqs, extra_args=["--no-deps", *(extra or [])], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


# --- H2: one mirror down, another says 404 ---


def test_a_cached_project_is_served_stale_when_one_mirror_is_down_and_another_says_404(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    wheel = build_wheel("onlyona", "1.0")
    a, b = TunaLikeUpstream([wheel], strict_ua=False), TunaLikeUpstream([], strict_ua=False)
    upstreams = _mirrors(bg_loop, a, b)
    try:
        cache = make_cache(upstreams, pypi={"index_ttl": 1}, upstream={"cooldown": 1})
        _install("pip", cache, tmp_path / "first", "onlyona==1.0")
        page_json = cache.data_dir / "pypi/simple/onlyona/page.json"
        assert page_json.is_file()

        a.garbage["onlyona"] = "503"  # A is down; B never had the project (it lags, or leaves it out)
        time.sleep(1.2)
        stale = http_get(f"{cache.url}/pypi/simple/onlyona/")  # stale: revalidated in the background
        assert stale.status == 200
        _wait_until(lambda: _page_requests(b, "onlyona") >= 1)
        time.sleep(0.3)
        for client in ("pip", "uv"):
            _install(client, cache, tmp_path / client, "onlyona==1.0")
        again = http_get(f"{cache.url}/pypi/simple/onlyona/")
        assert (again.status, again.headers.get("x-pkgcache-cache")) == (200, "stale")
        assert page_json.is_file()
        assert _page_requests(b, "onlyona") >= 1  # B was asked, and said 404

        # Once every upstream that could have it says so (A back from its rest), the project is gone.
        a.garbage.clear()
        a.missing_projects.add("onlyona")
        time.sleep(1.5)
        http_get(f"{cache.url}/pypi/simple/onlyona/")
        _wait_until(lambda: http_get(f"{cache.url}/pypi/simple/onlyona/").status == 404)
        assert not page_json.exists()
    finally:
        _stop(bg_loop, a, b)


# --- H3: a page whose hash every mirror's bytes fail ---


@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_a_hash_every_mirrors_bytes_fail_is_checked_against_the_other_mirrors_pages(
    wrong: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    wheel = build_wheel("wronghash", "1.0")
    a: TunaLikeUpstream | OfficialLikeUpstream
    if wrong == "sha256":
        a = TunaLikeUpstream([wheel], strict_ua=False)
        a.listed_sha256[wheel.filename] = "0" * 64
    else:
        a = OfficialLikeUpstream([wheel])  # JSON pages, which give sizes
        a.listed_size[wheel.filename] = len(wheel.data) + 1
    b = TunaLikeUpstream([wheel], strict_ua=False)
    upstreams = _mirrors(bg_loop, a, b)
    try:
        cache = make_cache(upstreams)
        url = f"{cache.url}/pypi/files/wronghash/{wheel.filename}"
        assert http_get(f"{cache.url}/pypi/simple/wronghash/").status == 200
        try:
            first = http_get(url)
        except http.client.IncompleteRead:
            pass  # the client that read the wrong page: cut, never a whole answer of bytes nobody checked
        else:
            assert first.status != 200, first.status

        def listed_right() -> bool:
            page = http_get(f"{cache.url}/pypi/simple/wronghash/", {"Accept": "application/vnd.pypi.simple.v1+json"})
            (entry,) = [f for f in json.loads(page.body)["files"] if f["filename"] == wheel.filename]
            return entry["hashes"] == {"sha256": wheel.sha256} and entry.get("size") in (None, len(wheel.data))

        _wait_until(listed_right)
        assert _page_requests(b, "wronghash") >= 1  # B's page was asked for
        for client in ("pip", "uv"):
            _install(client, cache, tmp_path / client, "wronghash==1.0")
        hit = http_get(url)
        assert (hit.status, hit.body) == (200, wheel.data)
        recorded = recorded_of(cache.data_dir / "pypi/files/wronghash" / wheel.filename)
        assert recorded is not None and recorded.digest == ("sha256", wheel.sha256)
        assert any(wheel.filename in request.path for request in b.requests)
    finally:
        _stop(bg_loop, a, b)


def test_a_settled_hash_dispute_costs_its_pages_revalidations_no_other_mirrors_page(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    wheel = build_wheel("settled", "1.0")
    a, b = TunaLikeUpstream([wheel], strict_ua=False), TunaLikeUpstream([wheel], strict_ua=False)
    a.listed_sha256[wheel.filename] = "0" * 64
    a.page_validators = False  # every revalidation gets A's whole (wrong) page again, as from a dynamic index
    upstreams = _mirrors(bg_loop, a, b)
    try:
        cache = make_cache(upstreams, pypi={"index_ttl": 1})
        page_url = f"{cache.url}/pypi/simple/settled/"
        assert http_get(page_url).status == 200
        with contextlib.suppress(http.client.IncompleteRead):  # every mirror's bytes fail A's page: B's is asked
            http_get(f"{cache.url}/pypi/files/settled/{wheel.filename}")
        _wait_until(lambda: wheel.sha256 in http_get(page_url).body.decode())
        _install("uv", cache, tmp_path / "uv", "settled==1.0")
        asked_of_b = _page_requests(b, "settled")
        assert asked_of_b == 1
        for revalidation in range(1, 4):
            time.sleep(1.1)
            before = _page_requests(a, "settled")
            page = http_get(page_url, {REVALIDATE_HEADER: "1"})
            assert _page_requests(a, "settled") == before + 1, revalidation
            assert wheel.sha256 in page.body.decode() and "0" * 64 not in page.body.decode()
        assert _page_requests(b, "settled") == asked_of_b  # the dispute, as it stands, was settled already
        _install("pip", cache, tmp_path / "pip", "settled==1.0")

        a.listed_sha256[wheel.filename] = "1" * 64  # A's entry changes: another dispute, B's page asked again
        time.sleep(1.1)
        page = http_get(page_url, {REVALIDATE_HEADER: "1"})
        assert wheel.sha256 in page.body.decode() and "1" * 64 not in page.body.decode()
        assert _page_requests(b, "settled") == asked_of_b + 1
    finally:
        _stop(bg_loop, a, b)


def test_the_other_mirrors_page_asked_to_check_a_hash_is_bounded_by_page_timeout(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    wheel = build_wheel("slowcheck", "1.0")
    a, b = TunaLikeUpstream([wheel], strict_ua=False), TunaLikeUpstream([wheel], strict_ua=False)
    a.listed_sha256[wheel.filename] = "0" * 64
    b.garbage["slowcheck"] = "endless"  # B's page, asked only by the check, never ends (above min_rate)
    upstreams = _mirrors(bg_loop, a, b)
    try:
        cache = make_cache(upstreams, upstream={"page_timeout": 2, "min_rate": 10240, "rate_window": 1})
        assert http_get(f"{cache.url}/pypi/simple/slowcheck/").status == 200
        with contextlib.suppress(http.client.IncompleteRead):  # every mirror's bytes fail A's page: B's is asked
            http_get(f"{cache.url}/pypi/files/slowcheck/{wheel.filename}")
        _wait_until(lambda: _page_requests(b, "slowcheck") == 1)
        started = time.monotonic()
        # B, the one upstream the check asks, is held to page_timeout all the same: it failed (and rests).
        _wait_until(lambda: "within 2 s" in http_get(f"{cache.url}/-/status").body.decode(), seconds=10)
        assert time.monotonic() - started < 6
    finally:
        _stop(bg_loop, a, b)


# --- M6: mirrors disagree on a file name's bytes ---


def test_a_verified_cached_file_stays_while_a_mirrors_page_lists_it(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    on_b = build_wheel("disagree", "1.0")
    on_a = build_wheel("disagree", "1.0", payload_size=50)  # other bytes under the same name
    a, b = TunaLikeUpstream([on_a], strict_ua=False), TunaLikeUpstream([on_b], strict_ua=False)
    upstreams = _mirrors(bg_loop, a, b)
    try:
        a.garbage["disagree"] = "503"
        cache = make_cache(upstreams, pypi={"index_ttl": 1}, upstream={"cooldown": 1})
        requirements = tmp_path / "req.txt"
        requirements.write_text(f"disagree==1.0 --hash=sha256:{on_b.sha256}\n")
        _install("pip", cache, tmp_path / "first", "-r", str(requirements), extra=["--require-hashes"])
        kept = cache.data_dir / "pypi/files/disagree" / on_b.filename
        assert kept.read_bytes() == on_b.data

        a.garbage.clear()  # A is back, listing (and serving) other bytes under the name
        time.sleep(1.5)
        http_get(f"{cache.url}/pypi/simple/disagree/")
        _wait_until(lambda: _page_requests(a, "disagree") >= 2)
        time.sleep(1.5)
        page = http_get(f"{cache.url}/pypi/simple/disagree/").body.decode()
        assert on_b.sha256 in page and on_a.sha256 not in page
        for client in ("pip", "uv"):
            _install(client, cache, tmp_path / client, "-r", str(requirements), extra=["--require-hashes"])
        assert kept.read_bytes() == on_b.data
        assert _page_requests(b, "disagree") >= 2  # B's page was asked again, and vouched for the cached bytes
    finally:
        _stop(bg_loop, a, b)


# --- M4: a page from another mirror that cannot be dated ---


@pytest.mark.parametrize("variant", ["no-validators", "one-last-modified"])
def test_a_lagging_page_without_a_serial_does_not_take_versions_away(
    variant: str, bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    old, new = build_wheel("lagdemo", "1.0"), build_wheel("lagdemo", "2.0")
    a, b = TunaLikeUpstream([old, new], strict_ua=False), TunaLikeUpstream([old], strict_ua=False)
    b.page_serial = False
    if variant == "no-validators":
        b.page_validators = False
    else:
        a.page_validators = False  # A's page has a serial but no Last-Modified; B's an (older) Last-Modified only
    upstreams = _mirrors(bg_loop, a, b)
    try:
        cache = make_cache(upstreams, pypi={"index_ttl": 1})
        _install("uv", cache, tmp_path / "first", "lagdemo==2.0")  # 2.0 is cached (only A has it)
        a.garbage["lagdemo"] = "503"
        time.sleep(1.2)
        http_get(f"{cache.url}/pypi/simple/lagdemo/")
        _wait_until(lambda: _page_requests(b, "lagdemo") >= 1)
        time.sleep(0.5)
        page = http_get(f"{cache.url}/pypi/simple/lagdemo/")
        assert new.filename in page.body.decode()
        _install("uv", cache, tmp_path / "uv", "lagdemo==2.0")
    finally:
        _stop(bg_loop, a, b)


def _cached(files: list[str], serial: int | None = None, last_modified: str | None = None) -> CachedPage:
    dists = tuple(DistFile(name, f"http://a.test/packages/{name}") for name in files)
    return CachedPage(ProjectPage("p", dists, last_serial=serial), "A", 0.0, last_modified=last_modified)


def test_which_page_is_older_when_serials_or_dates_are_missing() -> None:
    def older(new: CachedPage, previous: CachedPage) -> bool:
        response = SimpleNamespace(headers={"Last-Modified": new.last_modified} if new.last_modified else {})
        return _older_than(new.page, response, previous)  # type: ignore[arg-type]

    both = ["p-1.0.tar.gz", "p-2.0.tar.gz"]
    # Serials on both sides decide.
    assert older(_cached(both, 5), _cached(both, 6))
    assert not older(_cached(["p-1.0.tar.gz"], 7), _cached(both, 6))
    # A serial on one side only: Last-Modified on both sides decides.
    monday, tuesday = "Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"
    assert older(_cached(both, None, monday), _cached(both, 6, tuesday))
    assert not older(_cached(["p-1.0.tar.gz"], None, tuesday), _cached(both, 6, monday))
    # Neither tells: a page that only takes files away is a lagging copy; one that adds a file is not.
    assert older(_cached(["p-1.0.tar.gz"]), _cached(both, 6))
    assert older(_cached([]), _cached(both))
    assert not older(_cached([*both, "p-3.0.tar.gz"]), _cached(both, 6))
    assert not older(_cached(["p-1.0.tar.gz", "p-3.0.tar.gz"]), _cached(both, 6))
    assert not older(_cached(both), _cached(both, 6))


# --- M2: a page that never ends ---


def test_a_page_that_never_ends_is_left_for_the_next_mirror_after_page_timeout(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    wheel = build_wheel("endless", "1.0")
    a, b = TunaLikeUpstream([wheel], strict_ua=False), TunaLikeUpstream([wheel], strict_ua=False)
    a.garbage["endless"] = "endless"  # valid link lines at 20 KB/s, above min_rate, for ever
    upstreams = _mirrors(bg_loop, a, b)
    try:
        cache = make_cache(upstreams, upstream={"page_timeout": 2, "min_rate": 10240, "rate_window": 1})
        started = time.monotonic()
        page = http_get(f"{cache.url}/pypi/simple/endless/", timeout=30)
        took = time.monotonic() - started
        assert page.status == 200 and wheel.filename in page.body.decode()
        assert 1.5 < took < 6, took
        assert _page_requests(a, "endless") == 1 and _page_requests(b, "endless") == 1
        status = http_get(f"{cache.url}/-/status").body.decode()
        assert "within 2 s" in status
        for client in ("pip", "uv"):
            _install(client, cache, tmp_path / client, "endless==1.0")
    finally:
        _stop(bg_loop, a, b)
