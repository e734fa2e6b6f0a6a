"""A clock stepped back: copies fetched while it was ahead carry a fetch time in the future. Taken at face value
they would pass for fresh until the clock caught up (days, weeks) and never be revalidated; they are taken as of
unknown age instead, so the next request revalidates them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pkgcache.cache_state import CLOCK_SLIP_SECONDS, UNKNOWN_AGE_SECONDS, age_since
from pkgcache.pypi.model import ProjectPage
from pkgcache.pypi.pages import CachedPage
from pkgcache.storage.sidecars import FileMeta
from tests.cache_service import cache_settings, start_cache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.support import BackgroundLoop

MONTH = 30 * 86400.0


def test_a_fetch_time_in_the_future_is_an_unknown_age_and_a_slip_of_the_clock_is_none() -> None:
    now = time.time()
    assert age_since(now - 5, now) == 5
    assert age_since(now + CLOCK_SLIP_SECONDS / 2, now) == 0.0  # a slip: as good as now
    assert age_since(now + MONTH, now) == UNKNOWN_AGE_SECONDS
    assert FileMeta(fetched_at=now + MONTH).age() == UNKNOWN_AGE_SECONDS
    assert CachedPage(ProjectPage(name="demo", files=()), upstream="up", fetched_at=now + MONTH).age() > 1e8


def test_a_page_fetched_while_the_clock_was_ahead_is_revalidated_after_it_was_stepped_back(
    official_upstream: OfficialLikeUpstream, bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    settings = cache_settings(tmp_path / "data", [official_upstream.index_url], pypi={"index_ttl": 600})
    cache = start_cache(bg_loop, settings)
    try:
        assert cache.get("/pypi/simple/alpha/").status == 200
    finally:
        cache.stop()
    page_json = tmp_path / "data" / "pypi" / "simple" / "alpha" / "page.json"
    page = json.loads(page_json.read_text())
    page["fetched_at"] = time.time() + MONTH  # written while the clock was a month ahead
    page_json.write_text(json.dumps(page))

    official_upstream.reset_log()
    cache = start_cache(bg_loop, settings)
    try:
        answer = cache.get("/pypi/simple/alpha/")
        assert answer.status == 200
        assert answer.headers["x-pkgcache-cache"] != "hit", answer.headers  # not fresh: its age is unknown
        deadline = time.monotonic() + 5
        while not [r for r in official_upstream.requests if r.path.endswith("/simple/alpha/")]:
            assert time.monotonic() < deadline, "the page was never revalidated"
            time.sleep(0.05)
        while json.loads(page_json.read_text())["fetched_at"] > time.time() + CLOCK_SLIP_SECONDS:
            assert time.monotonic() < deadline, "the page kept its fetch time in the future"
            time.sleep(0.05)
    finally:
        cache.stop()
