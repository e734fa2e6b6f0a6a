"""Cached files answered as RFC 9110 says: validators, one range, several ranges, If-Range, HEAD."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.cache_service import RunningCache
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream

BIG = "bigpkg-1.0-py3-none-any.whl"
URL = f"/pypi/files/bigpkg/{BIG}"


@pytest.fixture
def cache(official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]) -> RunningCache:
    running = make_cache([official_upstream.index_url])
    assert running.get(URL).status == 200  # cached from here on
    return running


def test_validators_give_304_and_412(cache: RunningCache) -> None:
    whole = cache.get(URL)
    etag, last_modified = whole.headers["etag"], whole.headers["last-modified"]
    assert whole.headers["x-pkgcache-cache"] == "hit" and whole.headers["accept-ranges"] == "bytes"
    assert cache.get(URL, {"If-None-Match": etag}).status == 304
    assert cache.get(URL, {"If-None-Match": f'"other", W/{etag}'}).status == 304  # weak comparison
    assert cache.get(URL, {"If-Modified-Since": last_modified}).status == 304
    assert cache.get(URL, {"If-Match": '"other"'}).status == 412
    assert cache.get(URL, {"If-Match": etag}).status == 200
    assert cache.get(URL, {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status == 412


def test_ranges_one_several_none_and_unsatisfiable(cache: RunningCache) -> None:
    data = find_dist(sample_dists(), BIG).data
    one = cache.get(URL, {"Range": "bytes=10-19"})
    assert one.status == 206 and one.body == data[10:20]
    assert one.headers["content-range"] == f"bytes 10-19/{len(data)}"
    suffix = cache.get(URL, {"Range": "bytes=-100"})
    assert suffix.status == 206 and suffix.body == data[-100:]
    open_ended = cache.get(URL, {"Range": f"bytes={len(data) - 5}-"})
    assert open_ended.status == 206 and open_ended.body == data[-5:]
    several = cache.get(URL, {"Range": "bytes=0-9,20-29"})
    assert several.status == 200 and several.body == data  # the whole file, as the RFC allows
    assert cache.get(URL, {"Range": "bytes=-0"}).status == 416
    beyond = cache.get(URL, {"Range": f"bytes={len(data)}-"})
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert cache.get(URL, {"Range": "lines=1-2"}).status == 200  # not a byte range: ignored


@pytest.mark.parametrize("spec", ["²-³", "-²", "١-٢", "0-١", "+1-2", "1_0-20", " 1 - 2x"])
def test_a_range_without_ascii_digits_is_ignored(cache: RunningCache, spec: str) -> None:
    data = find_dist(sample_dists(), BIG).data
    answer = cache.get(URL, {"Range": f"bytes={spec}".encode()})
    assert answer.status == 200 and answer.body == data and "content-range" not in answer.headers


def test_if_range_sends_the_part_only_while_the_file_is_the_same(cache: RunningCache) -> None:
    data = find_dist(sample_dists(), BIG).data
    whole = cache.get(URL)
    same = cache.get(URL, {"Range": "bytes=0-9", "If-Range": whole.headers["etag"]})
    assert same.status == 206 and same.body == data[:10]
    by_date = cache.get(URL, {"Range": "bytes=0-9", "If-Range": whole.headers["last-modified"]})
    assert by_date.status == 206
    changed = cache.get(URL, {"Range": "bytes=0-9", "If-Range": '"an-older-version"'})
    assert changed.status == 200 and changed.body == data  # pip resumes this way: the whole file, never a part


def test_head_says_what_get_would_and_sends_nothing(cache: RunningCache) -> None:
    head = cache.get(URL, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == find_dist(sample_dists(), BIG).size
    assert head.headers["etag"] == cache.get(URL).headers["etag"]
