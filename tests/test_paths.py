"""Nothing a request says can reach outside the data directory."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pkgcache.http.request_cycle import hostile_path_reason
from pkgcache.pypi.names import BadName, check_filename, normalize_project
from pkgcache.storage.store import CacheStore, UnsafePath
from tests.cache_service import RunningCache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream


@pytest.mark.parametrize("segment", ["..", ".", "", "a/b", "a\\b", "a\x00b", ".hidden", "x" * 300, "tab\there"])
def test_unsafe_segments_are_refused(tmp_path: Path, segment: str) -> None:
    with pytest.raises(UnsafePath):
        CacheStore(tmp_path).path_for("pypi", segment)


def test_a_symlink_cannot_lead_out(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "data")
    (tmp_path / "data" / "pypi").mkdir(parents=True)
    (tmp_path / "data" / "pypi" / "evil").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        store.path_for("pypi", "evil", "secret")


@pytest.mark.parametrize(
    "path",
    [
        "/pypi/files/x/..%2F..%2Fetc%2Fpasswd",
        "/pypi/files/x/%2e%2e/y",
        "/pypi/simple/../../etc/passwd",
        "/pypi/files/x/a%00.whl",
        "/pypi/files/x/a%5c..%5cb.whl",
        "/pypi/simple/http://evil.test/x/",
        "/pypi/simple/" + "a" * 2000 + "/",
    ],
)
def test_hostile_request_paths_are_refused(path: str) -> None:
    assert hostile_path_reason(path) is not None


def test_ordinary_paths_pass() -> None:
    assert hostile_path_reason("/pypi/files/alpha/alpha-1.0-py3-none-any.whl") is None
    assert hostile_path_reason("/pypi/simple/zope.interface/") is None


def test_names() -> None:
    assert normalize_project("Zope.Interface") == "zope-interface"
    assert normalize_project("Delta_Pkg") == "delta-pkg"
    for bad in ("", "-x", "a/b", "a" * 300, "x\x00"):
        with pytest.raises(BadName):
            normalize_project(bad)
    assert check_filename("a-1.0-py3-none-any.whl.metadata")
    for bad in ("passwd", ".whl", "../a-1.0.tar.gz", "a-1.0.tar.gz\x00"):
        with pytest.raises(BadName):
            check_filename(bad)


@pytest.mark.parametrize(
    "path",
    [
        "/pypi/files/alpha/..%2F..%2F..%2Fetc%2Fpasswd",
        "/pypi/files/alpha/%2e%2e",
        "/pypi/files/../../../etc/passwd",
        "/pypi/simple/..%2f/",
        "/pypi/files/alpha/alpha-2.0-py3-none-any.whl%00.txt",
        "/pypi/simple/" + "a" * 300 + "/",
        "/pypi/files/alpha/" + "a" * 300 + ".whl",
        "/pypi/files/alpha/passwd",
        "/pypi/simple/http:%2F%2Fevil.test/",
    ],
)
def test_hostile_requests_are_refused_over_http(
    path: str, make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([official_upstream.index_url])
    answer = cache.get(path)
    assert answer.status in (400, 404), (path, answer)
    # Nothing was asked upstream, nothing written anywhere.
    assert official_upstream.requests == [] and official_upstream.files.requests == []
    written = [p for p in cache.data_dir.rglob("*") if p.is_file()]
    assert written == []


def _raw_request(url: str, head: bytes) -> bytes:
    """The server's answer to a request written byte for byte (clients refuse to send what these tests need)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "head",
    [
        b"GET /pypi/simple/" + b"a" * 20_000 + b"/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /pypi/simple/alpha/ HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 20_000 + b"\r\n\r\n",
        b"GET /pypi/simple/alpha/ HTTP/1.1\r\nHost: x\r\nBad\x01Name: 1\r\n\r\n",
    ],
    ids=["request line too long", "header too long", "bad header name"],
)
def test_a_request_that_cannot_be_parsed_gets_400_and_one_log_line_without_traceback(
    head: bytes,
    make_cache: Callable[..., RunningCache],
    official_upstream: OfficialLikeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    cache = make_cache([official_upstream.index_url])
    answer = _raw_request(cache.url, head)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer[:200]
    deadline = time.monotonic() + 5
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO and logged[0].exc_info is None, logged
    line = logged[0].getMessage()
    assert line.startswith("a request from 127.0.0.1 could not be parsed, answered 400: ") and len(line) < 400
    assert "Traceback" not in caplog.text and "\n" not in line
    assert cache.get("/-/health").status == 200
