"""The request cycle every answer goes through: routes no handler takes, wrong methods, and the counters."""

from __future__ import annotations

import json
from collections.abc import Callable

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
