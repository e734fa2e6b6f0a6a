"""Stats and metrics: counted from real requests through a fake upstream, and readable by Prometheus."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cache_service import RunningCache
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream

ALPHA = "alpha-2.0-py3-none-any.whl"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _fetch_page_and_file_twice(cache: RunningCache) -> int:
    """A miss then a hit for a project page and for a file; returns the file's size."""
    for _ in range(2):
        assert cache.get("/pypi/simple/alpha/").status == 200
        answer = cache.get(f"/pypi/files/alpha/{ALPHA}")
        assert answer.status == 200
    assert answer.headers["x-pkgcache-cache"] == "hit"
    # A request is counted once its answer is sent, which the client may see first.
    deadline = time.monotonic() + 5
    while json.loads(cache.get("/-/stats").body)["requests"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(answer.body)


def test_metrics_parse_as_prometheus_text_and_count_hits_and_misses(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    size = _fetch_page_and_file_twice(cache)
    assert size == find_dist(sample_dists(), ALPHA).size

    answer = cache.get("/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = _samples(answer.body.decode())

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("pkgcache_cache_lookups_total", side="pypi", result="hit") == 2
    assert value("pkgcache_cache_lookups_total", side="pypi", result="miss") == 2
    assert value("pkgcache_cache_lookups_total", side="pypi", result="stale") == 0
    assert value("pkgcache_requests_total", side="pypi") == 4
    # The hit went out by sendfile: its bytes are counted all the same.
    assert value("pkgcache_saved_bytes_total", side="pypi") >= size
    assert value("pkgcache_served_bytes_total", side="pypi") >= 2 * size
    assert value("pkgcache_fetched_bytes_total", side="pypi") == size
    assert value("pkgcache_cache_size_bytes") >= size
    upstream = f"127.0.0.1:{official_upstream.port}"  # named after its address, as config does for a bare URL
    assert value("pkgcache_upstream_requests_total", side="pypi", upstream=upstream) >= 2
    assert value("pkgcache_upstream_healthy", side="pypi", upstream=upstream) == 1
    assert value("pkgcache_upstream_latency_seconds", side="pypi", upstream=upstream) > 0
    # The service's own pages are not package requests.
    assert cache.get("/metrics").status == 200
    assert _samples(cache.get("/metrics").body.decode())[("pkgcache_requests_total", (("side", "pypi"),))] == 4


def test_stats_and_status_json(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    size = _fetch_page_and_file_twice(cache)
    stats = json.loads(cache.get("/-/stats").body)
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["requests"] == 4
    assert stats["hit_ratio"] == 0.5
    assert stats["bytes_saved"] >= size
    assert stats["bytes_fetched"] == size
    assert stats["cache_bytes"] >= size
    assert stats["sides"]["pypi"]["hits"] == 2
    [upstream] = stats["upstreams"]["pypi"]
    assert upstream["healthy"] is True and upstream["requests"] >= 2

    status = json.loads(cache.get("/-/status").body)
    assert status["hit_ratio"] == 0.5
    assert status["cache_bytes"] >= size


def test_access_log_line_has_status_cache_state_bytes_time_and_upstream(
    official_upstream: OfficialLikeUpstream,
    make_cache: Callable[..., RunningCache],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="pkgcache.access")  # as server.log_level = "info" does
    cache = make_cache([official_upstream.index_url])
    size = _fetch_page_and_file_twice(cache)
    # Lines are written in batches, a fraction of a second after their requests.
    written = ""
    deadline = time.monotonic() + 5
    while len(file_lines := _file_lines(written)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        written += capsys.readouterr().err
    assert len(file_lines) == 2
    # One line each; the miss's may come second: a request's line is written once its answer is done with,
    # which for a download is after its last byte reached the client (who may have asked again by then).
    miss, hit = sorted(file_lines, key=lambda line: " cache=hit " in line)
    assert " 200 cache=miss " in miss and f"bytes={size} " in miss
    assert f"upstream=127.0.0.1:{official_upstream.port}" in miss
    assert " 200 cache=hit " in hit and f"bytes={size} " in hit and " ms=" in hit
    # Stamped like every other log line.
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO pkgcache.access: GET /pypi/files/", written, re.M)


def _file_lines(written: str) -> list[str]:
    requests = [line.partition("pkgcache.access: ")[2] for line in written.splitlines() if "pkgcache.access: " in line]
    return [line for line in requests if line.startswith(f"GET /pypi/files/alpha/{ALPHA} ")]
