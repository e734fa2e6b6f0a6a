"""Several upstreams: failover, cool-down, sync lag, mirror quirks, freshness and stale copies."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from pkgcache.upstream.pool import parse_retry_after
from tests.cache_service import RunningCache
from tests.fakes.dists import sample_dists
from tests.fakes.pypi_upstreams import FailingUpstream, OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, installed_dists, run_pip_install

JSON = "application/vnd.pypi.simple.v1+json"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


@pytest.fixture
def second_tuna(bg_loop: BackgroundLoop) -> Iterator[TunaLikeUpstream]:
    server = TunaLikeUpstream(sample_dists())
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.mark.parametrize("mode", ["503", "reset", "429", "hang"])
def test_failover_reaches_the_second_mirror_and_rests_the_first(
    mode: str,
    bg_loop: BackgroundLoop,
    tuna_upstream: TunaLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path,
) -> None:
    broken = FailingUpstream(mode, hang_seconds=10)
    bg_loop.run(broken.start())
    try:
        cache = make_cache([broken.index_url, tuna_upstream.index_url], upstream={"read_timeout": 1})
        result = run_pip_install(cache.index_url, tmp_path / "t", "alpha==2.0")
        assert result.returncode == 0, result.stderr
        assert "alpha==2.0" in installed_dists(tmp_path / "t")
        assert tuna_upstream.count("/simple/alpha/") == 1
        # Once failed, the broken mirror is skipped for its cool-down instead of being asked on every request.
        asked = len(broken.requests)
        assert asked >= 1
        assert cache.get("/pypi/simple/gamma/").status == 200
        assert len(broken.requests) == asked
        status = json.loads(cache.get("/-/status").body)
        first, second = status["upstreams"]["pypi"]
        assert first["healthy"] is False and first["last_error"]
        assert second["healthy"] is True
    finally:
        bg_loop.run(broken.stop())


def test_a_json_page_nested_too_deep_to_parse_fails_over_and_rests_its_mirror(
    bg_loop: BackgroundLoop, tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    # Nested 1,200 deep, the page makes json.loads raise RecursionError: a bad page from that mirror, not a 500.
    deep = OfficialLikeUpstream(sample_dists())
    deep.garbage["alpha"] = "deep-json"
    bg_loop.run(deep.start())
    try:
        cache = make_cache([deep.index_url, tuna_upstream.index_url])
        answer = cache.get("/pypi/simple/alpha/")
        assert answer.status == 200 and b"alpha-2.0-py3-none-any.whl" in answer.body, answer
        assert deep.count("/simple/alpha/") == 1 and tuna_upstream.count("/simple/alpha/") == 1
        first, second = json.loads(cache.get("/-/status").body)["upstreams"]["pypi"]
        assert first["healthy"] is False and first["failures"] == 1 and "RecursionError" in first["last_error"]
        assert second["healthy"] is True and not second["last_error"]
    finally:
        bg_loop.run(deep.stop())


def test_a_project_missing_on_one_mirror_is_found_on_the_next(
    tuna_upstream: TunaLikeUpstream, second_tuna: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    tuna_upstream.missing_projects.add("alpha")  # sync lag
    cache = make_cache([tuna_upstream.index_url, second_tuna.index_url])
    answer = cache.get("/pypi/simple/alpha/")
    assert answer.status == 200 and b"alpha-2.0-py3-none-any.whl" in answer.body
    assert second_tuna.count("/simple/alpha/") == 1
    # A 404 is no failure: the first mirror still serves the next project.
    assert cache.get("/pypi/simple/beta/").status == 200
    assert second_tuna.count("/simple/beta/") == 0


def test_files_come_from_another_mirror_with_the_same_path(
    tuna_upstream: TunaLikeUpstream,
    second_tuna: TunaLikeUpstream,
    bg_loop: BackgroundLoop,
    make_cache: Callable[..., RunningCache],
) -> None:
    # The page comes from the second mirror; the first has the same packages/... path and is asked first.
    tuna_upstream.missing_projects.add("gamma")
    cache = make_cache([tuna_upstream.index_url, second_tuna.index_url])
    assert cache.get("/pypi/simple/gamma/").status == 200
    answer = cache.get("/pypi/files/gamma/gamma-0.5-py3-none-any.whl")
    assert answer.status == 200
    assert tuna_upstream.count("/gamma-0.5-py3-none-any.whl") == 1
    assert second_tuna.count("/gamma-0.5-py3-none-any.whl") == 0


def test_unknown_project_is_a_plain_404(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    answer = cache.get("/pypi/simple/no-such-project/")
    assert answer.status == 404
    assert b"no-such-project" in answer.body and answer.headers["content-type"].startswith("text/plain")
    # Remembered for a while: a client asking again and again costs the upstream nothing.
    for _ in range(5):
        assert cache.get("/pypi/simple/no-such-project/").status == 404
    assert official_upstream.count("/simple/no-such-project/") == 1


def test_names_are_normalised_with_a_redirect(
    tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([tuna_upstream.index_url])
    answer = cache.get("/pypi/simple/Delta_Pkg/")
    assert answer.status == 301 and answer.headers["location"] == "/pypi/simple/delta-pkg/"
    assert cache.get("/pypi/simple/delta-pkg").headers["location"] == "/pypi/simple/delta-pkg/"
    # The mirror itself does not normalise: pkgcache must ask it with the normalised name.
    assert cache.get("/pypi/simple/delta-pkg/").status == 200
    assert tuna_upstream.count("/simple/delta-pkg/") == 1


def test_json_for_uv_from_an_html_only_mirror(
    tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([tuna_upstream.index_url])
    answer = cache.get("/pypi/simple/gamma/", {"Accept": UV_ACCEPT})
    assert answer.headers["content-type"] == JSON
    document = json.loads(answer.body)
    by_name = {f["filename"]: f for f in document["files"]}
    assert by_name["gamma-0.4-py3-none-any.whl"]["yanked"] == "broken"
    assert by_name["gamma-0.5-py3-none-any.whl"]["requires-python"] == ">=3.8"
    assert by_name["gamma-0.5-py3-none-any.whl"]["hashes"]["sha256"]
    # This mirror has no .metadata files: pkgcache promises its own for every wheel, and none for sdists.
    for name, entry in by_name.items():
        assert ("core-metadata" in entry) == name.endswith(".whl"), name
    assert answer.headers["vary"] == "Accept, Accept-Encoding"


def test_html_for_pip_from_a_json_upstream_mislabelled_as_octet_stream(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache]
) -> None:
    upstream = OfficialLikeUpstream(sample_dists(), json_content_type="application/octet-stream")
    bg_loop.run(upstream.start())
    try:
        cache = make_cache([upstream.index_url])
        answer = cache.get("/pypi/simple/alpha/", {"Accept": "text/html"})
        assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
        body = answer.body.decode()
        assert 'href="../../files/alpha/alpha-2.0-py3-none-any.whl#sha256=' in body
        assert "data-core-metadata=" in body and "data-dist-info-metadata=" in body
        assert upstream.url not in body and upstream.files.url not in body
    finally:
        bg_loop.run(upstream.stop())


def test_clients_revalidate_pages_with_etags(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    first = cache.get("/pypi/simple/alpha/", {"Accept": JSON})
    assert first.headers["x-pkgcache-cache"] == "miss"
    again = cache.get("/pypi/simple/alpha/", {"Accept": JSON, "If-None-Match": first.headers["etag"]})
    assert again.status == 304 and again.headers["x-pkgcache-cache"] == "hit"
    assert official_upstream.count("/simple/alpha/") == 1


def test_stale_pages_are_revalidated_upstream_with_validators(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url], pypi={"index_ttl": 0})
    assert cache.get("/pypi/simple/beta/").status == 200
    stale = cache.get("/pypi/simple/beta/")
    assert stale.status == 200 and stale.headers["x-pkgcache-cache"] == "stale"
    _wait_for(lambda: official_upstream.count("/simple/beta/") == 2)
    revalidation = [r for r in official_upstream.requests if r.path.endswith("/simple/beta/")][-1]
    assert revalidation.headers.get("If-None-Match")


def test_a_new_release_appears_after_the_ttl(
    tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    from tests.fakes.dists import build_wheel

    cache = make_cache([tuna_upstream.index_url], pypi={"index_ttl": 0})
    assert b"gamma-0.6" not in cache.get("/pypi/simple/gamma/").body
    tuna_upstream.add_dist(build_wheel("gamma", "0.6"))
    # A file newer than the cached page is looked up again rather than refused.
    time.sleep(0.1)
    _wait_for(lambda: b"gamma-0.6" in cache.get("/pypi/simple/gamma/").body)
    assert cache.get("/pypi/files/gamma/gamma-0.6-py3-none-any.whl").status == 200


@pytest.mark.parametrize(
    "garbage",
    ["bad-html", "bad-json", "deep-json", "random", "truncate", "html-error", "unclosed-tags", "unclosed-comments"],
)
def test_garbage_pages_give_502_and_poison_nothing(
    garbage: str, official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url], pypi={"index_ttl": 0}, upstream={"cooldown": 0})
    official_upstream.garbage["alpha"] = garbage
    answer = cache.get("/pypi/simple/alpha/")
    assert answer.status == 502, answer
    assert not (cache.data_dir / "pypi" / "simple" / "alpha").exists()

    # With a good copy cached, garbage on revalidation leaves the good copy in place.
    official_upstream.garbage.clear()
    good = cache.get("/pypi/simple/alpha/")
    assert good.status == 200 and b"alpha-2.0" in good.body
    official_upstream.garbage["alpha"] = garbage
    for _ in range(3):
        answer = cache.get("/pypi/simple/alpha/")
        assert answer.status == 200 and b"alpha-2.0" in answer.body


@pytest.mark.parametrize("garbage", ["html-error", "truncate", "random"])
def test_garbage_files_give_an_error_and_are_not_kept(
    garbage: str, official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    import http.client

    cache = make_cache([official_upstream.index_url])
    official_upstream.garbage["alpha-2.0-py3-none-any.whl"] = garbage
    try:
        answer = cache.get("/pypi/files/alpha/alpha-2.0-py3-none-any.whl")
        assert answer.status == 502, answer
    except http.client.IncompleteRead:
        pass  # cut mid-stream: never a complete-looking body
    assert not (cache.data_dir / "pypi" / "files" / "alpha").exists()


def test_retry_after_is_read_as_seconds_or_date() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60)))
    assert later is not None and 50 < later <= 61


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)
