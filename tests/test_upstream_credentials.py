"""Upstreams whose reads need HTTP basic auth: a central pkgcache with `[access] users`, an internal mirror.

An upstream's user and password (its table's `user` and `password`, or `user:password@` in its URL) go with every
request to the origins of its URLs (pages, files there, ranges, metadata, conda index files and packages, probes)
and with none to any other origin (a files host a page links, a redirect's target); and they are never shown:
/-/status, /-/stats, /metrics, the page at /, the log, `pkgcache status`, `pkgcache check` and clients' error
bodies name the upstream by host and port, and show its URL with `user:***@` at most.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from pkgcache.config import ConfigError, load_settings, record_settings, redact_credentials, settings_from_record
from pkgcache.http.access_log import AccessLog
from pkgcache.service.app import make_pool
from pkgcache.upstream.pool import Upstream, UpstreamsUnavailable
from tests.cache_service import CacheProcess, RunningCache, cache_settings
from tests.conda_support import APP_TREE, Channels, install, installed_names
from tests.fakes.conda_upstreams import AnacondaLikeUpstream, MirrorLikeUpstream
from tests.fakes.dists import sample_dists
from tests.fakes.pypi_upstreams import TUNA_ALLOWED_HEADERS, OfficialLikeUpstream, TunaLikeUpstream
from tests.fakes.server import FakeServer, RecordedRequest
from tests.support import BackgroundLoop, http_get, installed_dists, isolated_env, run_pip_install, run_uv_install
from tests.tier_support import CHILD, PARENT

USER = "office"
# Characters a URL must percent-encode: the password given in a URL is read decoded.
SECRET = "S3cret/Office@pw"
IN_URL = f"{USER}:{quote(SECRET, safe='')}@"
EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
BASIC = aiohttp.encode_basic_auth(USER, SECRET)


def secret_forms(password: str = SECRET) -> list[str]:
    """Every way the password could be shown: as it is, percent-encoded, and inside an Authorization header."""
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    return [password, quote(password, safe=""), token]


def shows_secret(text: str) -> bool:
    return any(form in text for form in secret_forms())


def require_basic_auth(servers: Iterable[FakeServer], user: str = USER, password: str = SECRET) -> None:
    """Make each server (not yet started) answer 401 to any request without these credentials."""
    expected = aiohttp.encode_basic_auth(user, password)

    @web.middleware
    async def check(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, text="401 who are you?\n", headers={"WWW-Authenticate": 'Basic realm="x"'})
        response: web.StreamResponse = await handler(request)
        return response

    for server in servers:
        server.app.middlewares.append(check)


def authorizations(requests: list[RecordedRequest]) -> set[str | None]:
    return {request.headers.get("Authorization") for request in requests}


# --- the configuration ---


def test_credentials_in_an_upstreams_url_are_taken_out_of_it(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        pypi={"upstreams": [f"http://{IN_URL}central.example:3150/pypi/simple/"]},
        conda={"upstreams": [f"http://{IN_URL}central.example:3150/conda/"]},
    )
    pypi, conda = settings.pypi.upstreams[0], settings.conda.upstreams[0]
    assert (pypi.name, pypi.url, pypi.user, pypi.password) == (
        "central.example:3150",
        "http://central.example:3150/pypi/simple/",
        USER,
        SECRET,
    )
    assert (conda.name, conda.pkgs_url, conda.cloud_url, conda.user, conda.password) == (
        "central.example:3150",
        "http://central.example:3150/conda/pkgs/",
        "http://central.example:3150/conda/cloud/",
        USER,
        SECRET,
    )
    assert settings.upstream_credentials() == {("http", "central.example", 3150): (USER, SECRET)}
    assert pypi.shown(pypi.url) == "http://office:***@central.example:3150/pypi/simple/"
    assert not shows_secret(repr(settings))
    # `start` records them (readable by its user only) and `restart` reads them back.
    again = settings_from_record(json.loads(json.dumps(record_settings(settings))))
    assert again.upstream_credentials() == settings.upstream_credentials()


def test_an_upstreams_table_gives_its_user_and_password_for_every_origin_of_its_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {
        "name": "artifactory",
        "url": "https://repo.example/api/pypi/simple/",
        "files_url": "https://files.example:8443/pypi/",
        "user": USER,
        "password": SECRET,
    }
    # The whole list in the environment, as JSON: the password in no file at all.
    monkeypatch.setenv("PKGCACHE_PYPI__UPSTREAMS", json.dumps([table, "https://mirror.example/simple/"]))
    settings = load_settings(None)
    assert settings.upstream_credentials() == {
        ("https", "repo.example", 443): (USER, SECRET),
        ("https", "files.example", 8443): (USER, SECRET),
    }
    assert settings.pypi.upstreams[1].credentials() is None


@pytest.mark.parametrize(
    ("upstreams", "said"),
    [
        (
            [{"name": "c", "url": f"http://{IN_URL}central.example/simple/", "password": "another"}],
            "differ",
        ),
        ([{"name": "c", "url": "http://central.example/simple/", "password": SECRET}], "without a user"),
        (
            [f"http://{IN_URL}central.example/simple/", {"name": "b", "url": "http://central.example/b/", "user": "x"}],
            "different credentials",
        ),
        ([f"ftp://{IN_URL}central.example/simple/"], "office:***@"),
    ],
)
def test_credentials_that_cannot_be_used_are_refused_without_being_shown(upstreams: list[Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, pypi={"upstreams": upstreams})
    assert said in str(caught.value)
    assert not shows_secret(str(caught.value))


def test_any_urls_credentials_in_a_text_are_shown_as_user_and_stars() -> None:
    assert redact_credentials("HTTP 401 from http://u:p@ss@h:1/x?a=b@c") == "HTTP 401 from http://u:***@h:1/x?a=b@c"
    assert redact_credentials("see https://token@h/ and http://h/a@b") == "see https://token:***@h/ and http://h/a@b"
    assert redact_credentials(f"http://{IN_URL}h/, http://h/") == "http://office:***@h/, http://h/"


# --- on the wire ---


def test_a_probe_and_each_hop_of_a_redirect_carry_them_to_the_upstreams_origin_only(
    bg_loop: BackgroundLoop, tmp_path: Path
) -> None:
    class Mirror(FakeServer):
        async def handle(self, request: web.Request) -> web.StreamResponse:
            if request.path == "/away/":  # to another origin, which sends the client back
                raise web.HTTPFound(f"{other.url}/there/")
            return web.Response(text="ok")

    class Other(FakeServer):
        async def handle(self, request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{mirror.url}/back/")

    mirror, other = Mirror(), Other()
    require_basic_auth([mirror])
    bg_loop.run(mirror.start())
    bg_loop.run(other.start())
    table = {"name": "m", "url": f"{mirror.url}/simple/", "user": USER, "password": SECRET}
    settings = cache_settings(tmp_path, [table], upstream={"allowed_hosts": ["127.0.0.1"], "cooldown": 0.1})

    async def scenario() -> str:
        pool = make_pool([("m", f"{mirror.url}/simple/", None, 0.0)], settings, lambda _: f"{mirror.url}/probe/")
        try:
            assert pool.status()[0]["url"] == f"http://office:***@127.0.0.1:{mirror.port}/simple/"
            got = await pool.fetch(lambda _: f"{mirror.url}/away/", _text)
            upstream = pool.upstreams[0]
            pool.report_failure(upstream, "down")
            pool.hold()
            await asyncio.sleep(0.2)
            pool.probe_due()
            while pool.probing(upstream) or pool.held:
                await asyncio.sleep(0.05)
            return got
        finally:
            await pool.close()

    try:
        assert bg_loop.run(scenario()) == "ok"
    finally:
        bg_loop.run(mirror.stop())
        bg_loop.run(other.stop())
    assert [(r.path, r.status) for r in mirror.requests] == [("/away/", 302), ("/back/", 200), ("/probe/", 200)]
    assert authorizations(mirror.requests) == {BASIC}
    assert [r.path for r in other.requests] == ["/there/"] and authorizations(other.requests) == {None}


async def _text(upstream: Upstream, response: aiohttp.ClientResponse) -> str:
    return await response.text()


def test_a_mirror_with_basic_auth_gets_them_with_pages_and_metadata_and_its_files_host_never(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    mirror = OfficialLikeUpstream(sample_dists())
    require_basic_auth([mirror])  # the index only: its files host is another origin, open to all
    bg_loop.run(mirror.start())
    try:
        office = make_cache([f"http://{IN_URL}127.0.0.1:{mirror.port}/simple/"])
        for name, run in (("pip", run_pip_install), ("uv", run_uv_install)):
            result = run(office.index_url, tmp_path / name, "alpha==2.0")
            assert result.returncode == 0, result.stdout + result.stderr
            assert installed_dists(tmp_path / name) == EXPECTED_TREE
    finally:
        bg_loop.run(mirror.stop())
    assert mirror.requests and authorizations(mirror.requests) == {BASIC}
    assert {r.status for r in mirror.requests} <= {200, 304}
    assert any(r.path.endswith(".whl") for r in mirror.files.requests)
    assert any(r.path.endswith(".metadata") for r in mirror.files.requests)
    assert authorizations(mirror.files.requests) == {None}


def test_a_mirror_with_basic_auth_gets_them_with_its_own_files_ranges_and_conda_packages(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], conda_channels: Channels, tmp_path: Path
) -> None:
    # A static mirror without core metadata: uv's metadata comes from ranges of its wheels, on the same origin.
    mirror = TunaLikeUpstream(sample_dists())
    mirror.firewall.allowed_headers = TUNA_ALLOWED_HEADERS | {"authorization"}
    conda = MirrorLikeUpstream({"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge})
    require_basic_auth([mirror, *conda.servers])
    bg_loop.run(mirror.start())
    bg_loop.run(conda.start())
    try:
        office = make_cache(
            [{"name": "nexus", "url": mirror.index_url, "user": USER, "password": SECRET}],
            conda={"upstreams": [f"http://{IN_URL}127.0.0.1:{conda.server.port}/anaconda/"], "channels": ["pkgs/main"]},
        )
        result = run_uv_install(office.index_url, tmp_path / "uv", "alpha==2.0")
        assert result.returncode == 0, result.stdout + result.stderr
        _, installed = install(tmp_path, [f"{office.url}/conda/pkgs/main"], ["app"])
        assert installed_names(installed) == APP_TREE
    finally:
        bg_loop.run(mirror.stop())
        bg_loop.run(conda.stop())
    assert any("Range" in r.headers for r in mirror.requests), "no range was read"
    assert any(r.path.endswith(".whl") and "Range" not in r.headers for r in mirror.requests)
    assert authorizations(mirror.requests) == {BASIC} and {r.status for r in mirror.requests} <= {200, 206, 304}
    assert any(r.path.endswith(".conda") or r.path.endswith(".tar.bz2") for r in conda.server.requests)
    assert authorizations(conda.server.requests) == {BASIC}
    assert {r.status for r in conda.server.requests} <= {200, 304, 404}


# --- an office over a central with `[access] users`, real clients ---


@pytest.mark.parametrize("given", ["in the url", "as user and password"])
def test_pip_uv_and_rattler_install_through_an_office_over_a_central_with_users(
    given: str,
    anaconda_upstream: AnacondaLikeUpstream,
    official_upstream: OfficialLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    anaconda = anaconda_upstream.upstream_config()
    channels = ["pkgs/main", "cloud/conda-forge"]
    central = make_cache(
        [official_upstream.index_url],
        server=PARENT,
        conda={"upstreams": [anaconda], "channels": channels},
        access={"users": {USER: SECRET, "alice": "another one"}},
    )
    assert central.get("/pypi/simple/alpha/").status == 401
    host = central.url.removeprefix("http://")
    if given == "in the url":
        pypi: list[Any] = [f"http://{IN_URL}{host}/pypi/simple/"]
        conda: list[Any] = [f"http://{IN_URL}{host}/conda/"]
    else:
        login = {"user": USER, "password": SECRET}
        pypi = [{"name": "central", "url": f"{central.url}/pypi/simple/", **login}]
        conda = [
            {"name": "central", "pkgs_url": f"{central.url}/conda/pkgs/", "cloud_url": f"{central.url}/conda/cloud/"}
        ]
        conda[0].update(login)
    office = make_cache(pypi, server=CHILD, conda={"upstreams": conda, "channels": channels})
    for name, run in (("pip", run_pip_install), ("uv", run_uv_install)):
        result = run(office.index_url, tmp_path / name, "alpha==2.0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed_dists(tmp_path / name) == EXPECTED_TREE
    for channel in channels:  # conda-forge is sharded: the shard index and shards come through too
        _, installed = install(tmp_path, [f"{office.url}/conda/{channel}"], ["app"], name=channel.split("/")[1])
        assert installed_names(installed) == APP_TREE
    status = json.loads(office.get("/-/status").body)
    for side in ("pypi", "conda"):
        (upstream,) = status["upstreams"][side]
        assert upstream["healthy"] and upstream["failures"] == 0, upstream
        assert upstream["pkgcache"] == {"node": "central-1", "tier": "central"}
        assert upstream["url"].startswith(f"http://office:***@{host}/")
    # Nothing reached the mirrors but through the central.
    assert official_upstream.files.count(".whl") >= 4


# --- never shown ---


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def _serve(root: Path, name: str, toml: str, *flags: str) -> tuple[CacheProcess, Path]:
    folder = root / name
    folder.mkdir()
    config = folder / "pkgcache.toml"
    config.write_text(toml)
    return CacheProcess(folder / "data", "--config", str(config), *flags), config


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pkgcache", *args], capture_output=True, text=True, timeout=60, env=isolated_env()
    )
    return done.stdout + done.stderr


@pytest.mark.timeout(300)
def test_the_password_is_shown_nowhere(
    bg_loop: BackgroundLoop, official_upstream: OfficialLikeUpstream, conda_channels: Channels, tmp_path: Path
) -> None:
    """Status, stats, metrics, the page, the log (at debug), `pkgcache status` and `check`, and the bodies of the
    errors clients get, with the central answering and after it is gone."""
    conda_mirror = MirrorLikeUpstream({"pkgs/main": conda_channels.main, "conda-forge": conda_channels.forge})
    bg_loop.run(conda_mirror.start())
    central, _ = _serve(
        tmp_path,
        "central",
        f"""[server]\nnode_name = "central-1"\ntier = "central"\n
[pypi]\nupstreams = {_toml_list([official_upstream.index_url])}\n
[conda]\nupstreams = {_toml_list([f"{conda_mirror.url}/anaconda/"])}\nchannels = ["pkgs/main"]\n
[access]\nusers = {{ {USER} = {json.dumps(SECRET)} }}\n""",
    )
    host = central.url.removeprefix("http://")
    office, office_config = _serve(
        tmp_path,
        "office",
        f"""[server]\nnode_name = "office-1"\ntier = "office"\n
[pypi]\nupstreams = {_toml_list([f"http://{IN_URL}{host}/pypi/simple/"])}\n
[conda]\nupstreams = {_toml_list([f"http://{IN_URL}{host}/conda/"])}\nchannels = ["pkgs/main"]\n
[upstream]\nconnect_timeout = 2\nread_timeout = 5\ncooldown = 30\n""",
        "--log-level",
        "debug",
    )
    shown: dict[str, str] = {}
    try:
        result = run_pip_install(office.url + "/pypi/simple/", tmp_path / "pip", "alpha==2.0")
        assert result.returncode == 0, result.stdout + result.stderr
        _, installed = install(tmp_path, [f"{office.url}/conda/pkgs/main"], ["app"])
        assert installed_names(installed) == APP_TREE

        def look(moment: str) -> None:
            for path in ("/-/status", "/-/stats", "/metrics", "/"):
                shown[f"{path} ({moment})"] = http_get(office.url + path).body.decode(errors="replace")
            shown[f"pkgcache status ({moment})"] = _cli("status", "--data-dir", str(tmp_path / "office" / "data"))
            shown[f"pkgcache check ({moment})"] = _cli("check", "--config", str(office_config), "--project", "alpha")

        look("central up")
        answer = http_get(office.url + "/pypi/simple/no-such-project/")
        shown["a 404 body"] = f"{answer.status} {answer.body.decode(errors='replace')}"
        assert answer.status == 404
        central.terminate()
        # Not cached: the first fails on the wire, the next finds every upstream resting.
        for attempt, path in enumerate(("/pypi/simple/zeta/", "/pypi/simple/eta/", "/conda/pkgs/main/osx-64/")):
            answer = http_get(office.url + path + ("repodata.json" if "conda" in path else ""))
            shown[f"an error body, {attempt}"] = f"{answer.status} {answer.body.decode(errors='replace')}"
            assert answer.status >= 500, shown
        look("central down")
    finally:
        if central.process.poll() is None:
            central.terminate()
        office.terminate()
        bg_loop.run(conda_mirror.stop())
    shown["the log"] = office.log_path.read_text(errors="replace")
    leaks = [where for where, text in shown.items() if shows_secret(text)]
    assert leaks == [], [(where, redact_credentials(shown[where])[:300]) for where in leaks]
    # The scan saw what it should have: the upstream named, its URL with the user and no password.
    status = json.loads(shown["/-/status (central up)"])
    assert status["upstreams"]["pypi"][0]["name"] == host
    assert status["upstreams"]["pypi"][0]["url"] == f"http://office:***@{host}/pypi/simple/"
    assert f"http://office:***@{host}/pypi/simple/alpha/" in shown["pkgcache check (central up)"]
    assert "cannot connect" in shown["pkgcache check (central down)"]
    assert host in shown["pkgcache status (central down)"]
    assert "office:***@" in shown["the log"] and host in shown["an error body, 1"]


def test_a_401_in_check_says_the_upstream_wants_a_user_and_password(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    mirror = OfficialLikeUpstream(sample_dists())
    require_basic_auth([mirror])
    bg_loop.run(mirror.start())
    config = tmp_path / "pkgcache.toml"
    try:
        for given, said in (("", "it wants a user and password"), ("office:wrong@", "are refused")):
            config.write_text(
                f'[pypi]\nupstreams = ["http://{given}127.0.0.1:{mirror.port}/simple/"]\n[conda]\nenabled = false\n'
            )
            out = _cli("check", "--config", str(config), "--project", "alpha")
            assert "HTTP 401" in out and said in out, out
            assert "wrong" not in out
    finally:
        bg_loop.run(mirror.stop())


def test_an_upstream_error_never_carries_a_urls_password() -> None:
    error = UpstreamsUnavailable({"m": f"HTTP 401 from http://{IN_URL}h/simple/x/"})
    assert not shows_secret(str(error)) and "office:***@h" in str(error)


def test_the_access_log_names_an_upstream_kept_from_before_by_its_host_and_port_only() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.enabled = True
    log.record("GET", "/pypi/simple/alpha/", 200, "hit", 10, 0.001, f"{USER}:{quote(SECRET, safe='')}@h:3150")
    log.flush()
    assert stream.getvalue().endswith(" upstream=h:3150\n") and not shows_secret(stream.getvalue())
