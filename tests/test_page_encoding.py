"""Project pages gzipped for the clients that take gzip (pip, uv and the rest send Accept-Encoding: gzip).

A page is rendered and compressed once and kept; each representation has its own ETag, and a client holding either
one of a page revalidates to a 304. Small pages and clients that do not take gzip get the bytes as they are.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pkgcache.http.fast_path import FAST_PATH_KEY
from pkgcache.pypi import pages
from pkgcache.pypi.negotiate import accepts_gzip
from pkgcache.pypi.pages import Rendered, gzip_of
from tests.cache_service import RunningCache
from tests.fakes.dists import build_wheel
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.support import BackgroundLoop, installed_dists, isolated_env, run_pip_install, run_uv_install

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
HTML = {"Accept": "text/html"}
GZIP = {"Accept-Encoding": "gzip, deflate"}
# One project with enough files for its page to be worth compressing, and one whose page is under a kilobyte.
VERSIONS = [f"1.{minor}" for minor in range(30)]


@pytest.fixture
def upstream(bg_loop: BackgroundLoop) -> Iterator[OfficialLikeUpstream]:
    dists = [build_wheel("omega", version) for version in VERSIONS] + [build_wheel("tiny", "1.0")]
    server = OfficialLikeUpstream(dists)
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


@pytest.mark.parametrize(
    ("header", "takes"),
    [
        ("gzip, deflate", True),
        ("gzip, deflate, br, zstd", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("*", True),
        ("br;q=1.0, gzip;q=0.5", True),
        (None, False),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("*, gzip;q=0", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_which_clients_take_gzip(header: str | None, takes: bool) -> None:
    assert accepts_gzip(header) is takes


def test_a_page_goes_gzipped_to_a_client_that_takes_it_and_as_it_is_to_one_that_does_not(
    make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([upstream.index_url])
    fast_path = cache.runner.app[FAST_PATH_KEY]
    first = cache.get("/pypi/simple/omega/", {**JSON, **GZIP})  # a miss: answered by the route
    assert first.status == 200 and first.headers["x-pkgcache-cache"] == "miss" and fast_path.answered == 0
    plain = cache.get("/pypi/simple/omega/", JSON)
    assert fast_path.answered == 1
    assert "content-encoding" not in plain.headers
    assert first.headers["content-encoding"] == "gzip"
    assert gzip.decompress(first.body) == plain.body
    assert len(first.body) < len(plain.body) // 2
    assert len(re.findall(rb"omega-1\.\d+-py3-none-any\.whl", plain.body)) == 2 * len(VERSIONS)  # name and URL
    for answer in (first, plain):
        assert answer.headers["vary"] == "Accept, Accept-Encoding"
        assert answer.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
    assert first.headers["etag"] != plain.headers["etag"]

    hit = cache.get("/pypi/simple/omega/", {**JSON, **GZIP})  # from memory, by the fast path
    assert fast_path.answered == 2 and hit.headers["x-pkgcache-cache"] == "hit"
    assert hit.body == first.body and hit.headers["etag"] == first.headers["etag"]
    html = cache.get("/pypi/simple/omega/", {**HTML, **GZIP})
    html_plain = cache.get("/pypi/simple/omega/", HTML)
    assert html.headers["content-encoding"] == "gzip" and "content-encoding" not in html_plain.headers
    assert gzip.decompress(html.body) == html_plain.body and b"<a href" in html_plain.body
    refused = cache.get("/pypi/simple/omega/", {**JSON, "Accept-Encoding": "gzip;q=0, deflate"})
    assert "content-encoding" not in refused.headers and refused.body == plain.body
    # A HEAD says what the GET would send: the gzipped length, encoding and ETag, or the plain ones.
    for asked, got in (({**JSON, **GZIP}, first), (JSON, plain)):
        head = cache.get("/pypi/simple/omega/", asked, method="HEAD")
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) == len(got.body)
        assert head.headers.get("content-encoding") == got.headers.get("content-encoding")
        assert head.headers["etag"] == got.headers["etag"]


def test_a_client_holding_either_representation_revalidates_to_a_304(
    make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([upstream.index_url])
    gzipped = cache.get("/pypi/simple/omega/", {**JSON, **GZIP})
    plain = cache.get("/pypi/simple/omega/", JSON)
    for held in (gzipped, plain):
        for asking in (GZIP, {}):
            again = cache.get("/pypi/simple/omega/", {**JSON, **asking, "If-None-Match": held.headers["etag"]})
            assert again.status == 304 and again.body == b""
            assert "content-encoding" not in again.headers
            assert again.headers["etag"] == (gzipped if asking else plain).headers["etag"]
    # The other format's representation is another page: no 304 for it.
    html = cache.get("/pypi/simple/omega/", {**HTML, **GZIP, "If-None-Match": gzipped.headers["etag"]})
    assert html.status == 200 and b"<a href" in gzip.decompress(html.body)


def test_if_none_match_star_gets_a_304_as_it_does_for_files(
    make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream
) -> None:
    """RFC 9110 13.1.2: `*` matches any current representation, so a GET of a page that exists gets a 304."""
    cache = make_cache([upstream.index_url])
    for state in ("miss", "hit"):  # the route, then the fast path
        star = cache.get("/pypi/simple/omega/", {**JSON, **GZIP, "If-None-Match": " * "})
        assert star.status == 304 and star.body == b"" and star.headers["x-pkgcache-cache"] == state
    other = cache.get("/pypi/simple/omega/", {**JSON, "If-None-Match": '"not-this-page"'})
    assert other.status == 200 and b"omega-1.0-py3-none-any.whl" in other.body
    assert cache.get("/pypi/simple/no-such-project/", {"If-None-Match": "*"}).status == 404


def test_a_small_page_is_sent_as_it_is(make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream) -> None:
    cache = make_cache([upstream.index_url])
    for _ in range(2):  # the miss, then the hit from memory
        answer = cache.get("/pypi/simple/tiny/", {**JSON, **GZIP})
        assert answer.status == 200 and "content-encoding" not in answer.headers
        assert len(answer.body) < pages.GZIP_MIN_BYTES and b"tiny-1.0-py3-none-any.whl" in answer.body
        assert answer.headers["vary"] == "Accept, Accept-Encoding"


def test_a_rendering_that_would_not_shrink_is_kept_as_it_is() -> None:
    body = os.urandom(4096)  # does not compress
    plain = Rendered(body, "text/html", '"x"', {"ETag": '"x"'})
    assert gzip_of(plain).body == body and "Content-Encoding" not in gzip_of(plain).headers


def test_a_large_rendering_is_gzipped_at_the_fastest_level(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"".join(b'{"filename": "omega-1.%d-py3-none-any.whl"},' % n for n in range(2000))
    plain = Rendered(body, "text/html", '"x"', {"ETag": '"x"'})
    assert gzip_of(plain).body == gzip.compress(body, compresslevel=pages.GZIP_LEVEL, mtime=0)
    monkeypatch.setattr(pages, "GZIP_LARGE_BYTES", len(body) - 1)
    fast = gzip_of(plain).body
    assert fast == gzip.compress(body, compresslevel=pages.GZIP_LARGE_LEVEL, mtime=0)
    assert fast != gzip.compress(body, compresslevel=pages.GZIP_LEVEL, mtime=0)
    assert gzip.decompress(fast) == body


def test_a_big_page_is_gzipped_off_the_event_loop(
    make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "BIG_PAGE_FILES", 5)  # omega's 30 files make it big: rendered in the page threads
    used: list[str] = []
    real = pages.in_page_thread

    async def counted(function: Callable[..., object], *args: object) -> object:
        used.append(function.__name__)
        return await real(function, *args)

    monkeypatch.setattr(pages, "in_page_thread", counted)
    cache = make_cache([upstream.index_url])
    gzipped = cache.get("/pypi/simple/omega/", {**JSON, **GZIP})
    plain = cache.get("/pypi/simple/omega/", JSON)
    assert gzipped.headers["content-encoding"] == "gzip" and gzip.decompress(gzipped.body) == plain.body
    assert "gzip_of" in used and "render" in used
    assert cache.get("/pypi/simple/omega/", {**JSON, **GZIP}).body == gzipped.body


def test_a_large_rendering_is_gzipped_off_the_event_loop(
    make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "INLINE_GZIP_BYTES", 100)  # omega's page is rendered here, gzipped in a thread
    used: list[str] = []
    real = pages.in_page_thread

    async def counted(function: Callable[..., object], *args: object) -> object:
        used.append(function.__name__)
        return await real(function, *args)

    monkeypatch.setattr(pages, "in_page_thread", counted)
    cache = make_cache([upstream.index_url])
    plain = cache.get("/pypi/simple/omega/", JSON)
    fast_path = cache.runner.app[FAST_PATH_KEY]
    gzipped = cache.get("/pypi/simple/omega/", {**JSON, **GZIP})  # declined by the fast path: not gzipped yet
    rendering = ("render", "gzip_of")  # the page threads also save pages
    assert fast_path.answered == 0 and [name for name in used if name in rendering] == ["gzip_of"]
    assert gzip.decompress(gzipped.body) == plain.body
    assert cache.get("/pypi/simple/omega/", {**JSON, **GZIP}).body == gzipped.body  # kept: from memory now
    assert fast_path.answered == 1 and [name for name in used if name in rendering] == ["gzip_of"]


def test_pip_and_uv_install_through_gzipped_pages(
    make_cache: Callable[..., RunningCache],
    upstream: OfficialLikeUpstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="pkgcache.access")  # the access log is written (to stderr)
    cache = make_cache([upstream.index_url])
    plain_sizes = {
        kind: len(cache.get("/pypi/simple/omega/", headers).body) for kind, headers in (("json", JSON), ("html", HTML))
    }
    env = isolated_env()
    for client, install in (("pip", run_pip_install), ("uv", run_uv_install)):
        result = install(cache.index_url, tmp_path / client, "omega", env=env)
        assert result.returncode == 0, result.stderr
        assert installed_dists(tmp_path / client) == {f"omega=={VERSIONS[-1]}"}
    wheel = f"omega-{VERSIONS[-1]}-py3-none-any.whl"
    assert [r.path.rpartition("/")[2] for r in upstream.files.requests] == [f"{wheel}.metadata", wheel]  # once
    sent = _page_sizes(capsys, count=4)  # our two, then pip's and uv's
    assert len(sent) >= 4
    assert all(size < min(plain_sizes.values()) // 2 for size in sent[2:]), (sent, plain_sizes)


def _page_sizes(capsys: pytest.CaptureFixture[str], count: int) -> list[int]:
    """The body sizes of the omega page answers in pkgcache's access log, once `count` of them are there."""
    written, deadline = "", time.monotonic() + 5
    found: list[int] = []
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        written += capsys.readouterr().err
        found = [int(size) for size in re.findall(r"GET /pypi/simple/omega/ 200 cache=\w+ bytes=(\d+)", written)]
    return found
