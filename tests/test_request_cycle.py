"""The request cycle every answer goes through: routes no handler takes, wrong methods, and the counters."""

from __future__ import annotations

import json
from collections.abc import Callable

from pkgcache.http.fast_path import FAST_PATH_KEY
from pkgcache.http.request_cycle import REQUEST_CYCLE_KEY
from tests.cache_service import RunningCache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream


def test_every_route_is_inside_the_cycle(
    make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    """A handler mounted with app.router directly would skip the path check, auth, counters and log."""
    cache = make_cache([official_upstream.index_url], access={"admin_token": "t" * 16})
    app = cache.runner.app
    assert REQUEST_CYCLE_KEY in app
    routes = list(app.router.routes())
    assert len(routes) > 10
    for route in routes:
        assert hasattr(route.handler, "__wrapped__"), route


def test_unknown_paths_and_wrong_methods_get_clear_answers(
    make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([official_upstream.index_url])
    missing = cache.get("/no/such/page")
    assert missing.status == 404
    assert missing.body == b"no such page\n"

    wrong = cache.get("/pypi/simple/alpha/", method="POST")
    assert wrong.status == 405
    assert wrong.headers["allow"] == "GET, HEAD"

    # A hostile path is refused even where no route would take it.
    assert cache.get("/elsewhere/..%2f..%2fetc/passwd").status == 400
    assert official_upstream.requests == []


def test_refusals_are_counted_on_their_side(
    make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([official_upstream.index_url])
    assert cache.get("/pypi/files/alpha/%2e%2e").status == 400
    assert cache.get("/pypi/nothing-here").status == 404
    stats = json.loads(cache.get("/-/stats").body)
    assert stats["sides"]["pypi"]["requests"] == 2
    assert stats["sides"]["pypi"]["hits"] == 0


def test_fresh_pages_are_answered_before_routing_and_still_counted(
    make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([official_upstream.index_url])
    fast_path = cache.runner.app[FAST_PATH_KEY]
    json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    first = cache.get("/pypi/simple/alpha/", json_accept)  # a miss: the route fetches it
    assert first.headers["x-pkgcache-cache"] == "miss" and fast_path.answered == 0

    second = cache.get("/pypi/simple/alpha/", json_accept)
    assert fast_path.answered == 1
    assert second.status == 200 and second.body == first.body
    assert second.headers["x-pkgcache-cache"] == "hit" and second.headers["vary"] == "Accept, Accept-Encoding"
    assert second.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
    assert int(second.headers["cache-control"].removeprefix("max-age=")) > 0

    html = cache.get("/pypi/simple/alpha/", {"Accept": "text/html"})
    assert html.headers["content-type"] == "text/html; charset=utf-8" and b"<a href" in html.body
    not_modified = cache.get("/pypi/simple/alpha/", {**json_accept, "If-None-Match": second.headers["etag"]})
    assert not_modified.status == 304
    assert fast_path.answered == 3

    # What it does not take goes the usual way, with the same answers.
    assert cache.get("/pypi/simple/alpha/?format=application/vnd.pypi.simple.v1%2Bjson").body == first.body
    assert cache.get("/pypi/simple/Alpha/").status == 301
    assert cache.get("/pypi/simple/alpha/", {"Accept": "image/png"}).status == 406
    assert cache.get("/pypi/simple/alpha/", method="HEAD").status == 200
    assert fast_path.answered == 3

    stats = json.loads(cache.get("/-/stats").body)["sides"]["pypi"]
    assert stats["requests"] == 8 and stats["hits"] == 5 and stats["misses"] == 1
    assert official_upstream.count("/simple/alpha/") == 1


def test_no_fast_path_when_reads_need_credentials(
    make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([official_upstream.index_url], access={"users": {"dev": "s3cret"}})
    assert FAST_PATH_KEY not in cache.runner.app
    login = {"Authorization": "Basic ZGV2OnMzY3JldA=="}
    assert cache.get("/pypi/simple/alpha/", login).status == 200
    assert cache.get("/pypi/simple/alpha/").status == 401  # cached now, and still refused without credentials
