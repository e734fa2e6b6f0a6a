"""The fakes behave like the real indexes: real pip and uv install from them directly."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import socket
import time
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from tests.fakes.dists import Dist, build_wheel, find_dist, sample_dists
from tests.fakes.pypi_upstreams import (
    JSON_CT,
    FailingUpstream,
    OfficialLikeUpstream,
    SlowUpstream,
    TunaLikeUpstream,
    negotiate,
)
from tests.support import BackgroundLoop, installed_dists, run_pip_install, run_uv_install

TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
PLAIN_UA = "pkgcache-test/1.0"

Installer = Callable[..., object]


def http_get(
    url: str, headers: dict[str, str] | None = None, *, method: str = "GET", timeout: float = 10
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """A request with exactly the given headers (plus Host), nothing added."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, parts.path or "/", skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.fixture
def relaxed_tuna(tuna_upstream: TunaLikeUpstream) -> TunaLikeUpstream:
    # pip's and uv's own User-Agents contain "implementation"; let them in for direct use.
    tuna_upstream.firewall.forbidden_ua_substrings = ()
    return tuna_upstream


# --- dists ---------------------------------------------------------------------------


def test_wheels_are_well_formed_and_deterministic() -> None:
    dists = sample_dists()
    assert [d.filename for d in dists] == [d.filename for d in sample_dists()]
    delta = find_dist(dists, "delta_pkg-3.0-py3-none-any.whl")
    assert (delta.project, delta.normalized) == ("Delta_Pkg", "delta-pkg")
    assert build_wheel("Delta_Pkg", "3.0").sha256 == delta.sha256  # rebuilt from scratch
    for dist in (d for d in dists if d.is_wheel):
        with zipfile.ZipFile(io.BytesIO(dist.data)) as zf:
            dist_info = dist.filename.split("-py3")[0] + ".dist-info"
            assert zf.read(f"{dist_info}/METADATA") == dist.metadata
            for line in zf.read(f"{dist_info}/RECORD").decode().splitlines():
                path, digest, size = line.split(",")
                if path.endswith("RECORD"):
                    continue
                data = zf.read(path)
                expected = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert (digest, int(size)) == (f"sha256={expected}", len(data))
    big = find_dist(dists, "bigpkg-1.0-py3-none-any.whl")
    assert big.size > 4 * 1024 * 1024
    sdist = find_dist(dists, "alpha-2.0.tar.gz")
    assert sdist.metadata is None and sdist.metadata_sha256 is None


# --- real clients against the fakes -----------------------------------------------------


@pytest.mark.parametrize("install", [run_pip_install, run_uv_install], ids=["pip", "uv"])
def test_clients_install_tree_from_official(
    official_upstream: OfficialLikeUpstream, install: Installer, tmp_path: Path
) -> None:
    result = install(official_upstream.index_url, tmp_path, "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Looking in links" not in result.stdout  # no local wheel folders crept in
    assert installed_dists(tmp_path) == TREE
    assert (tmp_path / "delta_pkg" / "__init__.py").is_file()
    for project in ("alpha", "beta", "gamma", "delta-pkg"):
        assert official_upstream.count(f"/simple/{project}/") == 1
    files = official_upstream.files
    assert files.count("alpha-2.0-py3-none-any.whl") == 1
    assert files.count("alpha-2.0-py3-none-any.whl.metadata") == 1  # PEP 658 used
    assert files.count("gamma-0.4-py3-none-any.whl") == 0  # yanked one skipped


@pytest.mark.parametrize("install", [run_pip_install, run_uv_install], ids=["pip", "uv"])
def test_clients_install_tree_from_tuna(relaxed_tuna: TunaLikeUpstream, install: Installer, tmp_path: Path) -> None:
    result = install(relaxed_tuna.index_url, tmp_path, "alpha")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path) == TREE
    assert relaxed_tuna.count("/simple/delta-pkg/") == 1
    assert relaxed_tuna.count("alpha-2.0-py3-none-any.whl") >= 1
    assert relaxed_tuna.count(".metadata") == 0  # nothing advertised, nothing asked
    assert relaxed_tuna.firewall.refused == []


def test_tuna_default_firewall_refuses_pip(tuna_upstream: TunaLikeUpstream, tmp_path: Path) -> None:
    result = run_pip_install(tuna_upstream.index_url, tmp_path, "alpha")
    assert result.returncode != 0
    assert tuna_upstream.firewall.refused and tuna_upstream.firewall.refused[0][0] == 403


# --- the mirror's firewall and layout -----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"User-Agent": PLAIN_UA}, 200),
        ({"User-Agent": PLAIN_UA, "X-Forwarded-For": "10.0.0.1"}, 404),
        ({"User-Agent": PLAIN_UA, "Authorization": "Basic eDp5"}, 404),
        ({"User-Agent": "python-requests/2.32.0"}, 403),
        ({"User-Agent": 'pip/24.0 {"implementation":{"name":"CPython"}}'}, 403),
        ({}, 403),
    ],
    ids=["plain", "forwarded-for", "authorization", "requests-ua", "linehaul-ua", "no-ua"],
)
def test_tuna_firewall(tuna_upstream: TunaLikeUpstream, headers: dict[str, str], status: int) -> None:
    assert http_get(tuna_upstream.index_url + "alpha/", headers)[0] == status


def test_tuna_layout(tuna_upstream: TunaLikeUpstream) -> None:
    ua = {"User-Agent": PLAIN_UA}
    page_url = tuna_upstream.index_url + "gamma/"
    # The mirror ignores Accept and never normalises names.
    status, headers, body = http_get(page_url, {**ua, "Accept": JSON_CT})
    assert (status, headers["Content-Type"]) == (200, "text/html")
    assert http_get(tuna_upstream.index_url + "Delta_Pkg/", ua)[0] == 404
    assert http_get(tuna_upstream.index_url + "delta-pkg", ua)[0] == 301
    page = body.decode()
    assert "<!--SERIAL " in page and 'href="../../packages/' in page
    assert 'data-requires-python="&gt;=3.8"' in page and 'data-yanked="broken"' in page
    assert "metadata" not in page
    gamma = find_dist(tuna_upstream.dists, "gamma-0.5-py3-none-any.whl")
    assert http_get(tuna_upstream.file_url(gamma) + ".metadata", ua)[0] == 404
    # Relative link resolves to the file, whose bytes match the advertised hash.
    href = page.split('href="')[-1].split('"')[0]
    assert href.endswith(f"#sha256={gamma.sha256}")
    status, _, data = http_get(urljoin(page_url, href.split("#")[0]), ua)
    assert (status, hashlib.sha256(data).hexdigest()) == (200, gamma.sha256)
    # Conditional request.
    assert http_get(page_url, {**ua, "If-None-Match": headers["ETag"]})[0] == 304


# --- the official-like index ---------------------------------------------------------------


def test_official_json(official_upstream: OfficialLikeUpstream) -> None:
    status, headers, body = http_get(official_upstream.index_url + "gamma/", {"Accept": JSON_CT})
    assert (status, headers["Content-Type"]) == (200, JSON_CT)
    doc = json.loads(body)
    assert doc["meta"]["api-version"] == "1.1" and doc["name"] == "gamma"
    assert doc["versions"] == ["0.4", "0.5"]
    files = {f["filename"]: f for f in doc["files"]}
    for dist in (d for d in official_upstream.dists if d.normalized == "gamma"):
        entry = files[dist.filename]
        assert entry["hashes"] == {"sha256": dist.sha256}
        assert entry["core-metadata"] == {"sha256": dist.metadata_sha256}
        assert entry["url"].startswith(official_upstream.files.url + "/packages/")
        assert entry["size"] == dist.size and entry["upload-time"].endswith("Z")
        fetched = http_get(entry["url"] + ".metadata")[2]
        assert hashlib.sha256(fetched).hexdigest() == dist.metadata_sha256
    assert files["gamma-0.4-py3-none-any.whl"]["yanked"] == "broken"
    assert files["gamma-0.5-py3-none-any.whl"]["requires-python"] == ">=3.8"
    sdist = json.loads(http_get(official_upstream.index_url + "alpha/", {"Accept": JSON_CT})[2])
    assert {f["filename"]: f["core-metadata"] for f in sdist["files"]}["alpha-2.0.tar.gz"] is False
    root = json.loads(http_get(official_upstream.index_url, {"Accept": JSON_CT})[2])
    assert {p["name"] for p in root["projects"]} >= {"alpha", "Delta_Pkg", "bigpkg"}


def test_official_html_redirect_and_etag(official_upstream: OfficialLikeUpstream) -> None:
    status, headers, body = http_get(official_upstream.index_url + "gamma/")
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert '<meta name="pypi:repository-version" content="1.1">' in page
    assert 'data-requires-python="&gt;=3.8"' in page and 'data-yanked="broken"' in page
    assert "data-core-metadata=" in page and "data-dist-info-metadata=" in page
    assert f'href="{official_upstream.files.url}/packages/' in page
    assert http_get(official_upstream.index_url + "gamma/", {"If-None-Match": headers["ETag"]})[0] == 304
    status, headers, _ = http_get(official_upstream.index_url + "Delta_Pkg/")
    assert (status, headers["Location"]) == (301, official_upstream.index_url + "delta-pkg/")
    assert http_get(official_upstream.index_url + "nosuch/")[0] == 404


def test_accept_negotiation() -> None:
    html_v1 = "application/vnd.pypi.simple.v1+html"
    assert negotiate(None) == "text/html"
    assert negotiate("*/*") == "text/html"
    assert negotiate(f"{JSON_CT}, {html_v1};q=0.2, text/html;q=0.01") == JSON_CT
    assert negotiate(f"{JSON_CT};q=0.1, text/html") == "text/html"
    assert negotiate(f"{JSON_CT};q=0, {html_v1}") == html_v1
    assert negotiate("application/vnd.pypi.simple.latest+json") == JSON_CT
    assert negotiate("application/json") == "text/html"  # nothing offered matches: HTML


def test_official_mislabelled_json(bg_loop: BackgroundLoop) -> None:
    server = OfficialLikeUpstream(sample_dists(), json_content_type="application/octet-stream")
    bg_loop.run(server.start())
    try:
        status, headers, body = http_get(server.index_url + "alpha/", {"Accept": JSON_CT})
        assert (status, headers["Content-Type"]) == (200, "application/octet-stream")
        assert json.loads(body)["name"] == "alpha"
    finally:
        bg_loop.run(server.stop())


def test_range_request(official_upstream: OfficialLikeUpstream) -> None:
    dist = find_dist(official_upstream.dists, "alpha-2.0-py3-none-any.whl")
    status, headers, body = http_get(official_upstream.file_url(dist), {"Range": "bytes=-22"})
    assert (status, body) == (206, dist.data[-22:])
    assert headers["Content-Range"] == f"bytes {dist.size - 22}-{dist.size - 1}/{dist.size}"


# --- fault knobs --------------------------------------------------------------------------


def _file(server: OfficialLikeUpstream, filename: str) -> tuple[Dist, str]:
    dist = find_dist(server.dists, filename)
    return dist, server.file_url(dist)


def test_corrupt_and_garbage_files(official_upstream: OfficialLikeUpstream) -> None:
    dist, url = _file(official_upstream, "beta-1.0-py3-none-any.whl")
    official_upstream.corrupt_files.add(dist.filename)
    data = http_get(url)[2]
    assert len(data) == dist.size and hashlib.sha256(data).hexdigest() != dist.sha256
    official_upstream.garbage[dist.filename] = "html-error"
    status, headers, _ = http_get(url)
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/html")
    official_upstream.garbage[dist.filename] = "truncate"
    with pytest.raises(http.client.IncompleteRead):
        http_get(url)


def test_garbage_and_missing_pages(official_upstream: OfficialLikeUpstream) -> None:
    official_upstream.garbage["beta"] = "bad-json"
    status, headers, body = http_get(official_upstream.index_url + "beta/", {"Accept": JSON_CT})
    assert (status, headers["Content-Type"]) == (200, JSON_CT)
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    official_upstream.garbage["beta"] = "bad-html"
    assert b"<a " not in http_get(official_upstream.index_url + "beta/")[2]
    official_upstream.garbage["beta"] = "truncate"
    with pytest.raises(http.client.IncompleteRead):
        http_get(official_upstream.index_url + "beta/")
    official_upstream.missing_projects.add("Delta_Pkg")
    assert http_get(official_upstream.index_url + "delta-pkg/")[0] == 404
    official_upstream.missing_projects.clear()
    assert http_get(official_upstream.index_url + "delta-pkg/")[0] == 200


def test_runtime_index_changes(official_upstream: OfficialLikeUpstream) -> None:
    _, headers, _ = http_get(official_upstream.index_url + "gamma/")
    official_upstream.add_dist(build_wheel("gamma", "0.6"))
    status, _, body = http_get(official_upstream.index_url + "gamma/", {"If-None-Match": headers["ETag"]})
    assert status == 200 and b"gamma-0.6-py3-none-any.whl" in body


@pytest.fixture
def failing(bg_loop: BackgroundLoop) -> Iterator[FailingUpstream]:
    server = FailingUpstream("503", hang_seconds=3)
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def test_failing_upstream_modes(failing: FailingUpstream) -> None:
    assert http_get(failing.index_url + "alpha/")[0] == 503
    failing.mode = "reset"
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        http_get(failing.index_url + "alpha/")
    failing.mode = "hang"
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        http_get(failing.index_url + "alpha/", timeout=0.5)
    assert time.monotonic() - started < 2
    assert failing.count("/simple/alpha/") == 3


def test_slow_upstream_throttles(bg_loop: BackgroundLoop) -> None:
    dist = build_wheel("slowpkg", "1.0", payload_size=256 * 1024)
    server = SlowUpstream([dist], delay=0.1, bytes_per_second=512 * 1024)
    bg_loop.run(server.start())
    try:
        started = time.monotonic()
        status, _, data = http_get(server.file_url(dist), {"User-Agent": PLAIN_UA})
        elapsed = time.monotonic() - started
    finally:
        bg_loop.run(server.stop())
    assert status == 200 and data == dist.data
    assert 0.5 <= elapsed < 3
