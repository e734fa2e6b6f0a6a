"""Admin actions (HTTP API and CLI) and access control: off without a token, refused without it, working with it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pkgcache.cli.admin_commands import AdminError, call_admin_api, gc_command, purge_command, refresh_command
from pkgcache.cli.locate import Located
from pkgcache.daemon.files import InstancePaths
from pkgcache.daemon.lock import inspect_instance
from tests.cache_service import CacheProcess, RunningCache
from tests.conda_support import Channels
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import AnacondaLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.support import http_get, installed_dists, run_pip_install

TOKEN = "a-test-admin-token-0123456789"
ALPHA = "alpha-2.0-py3-none-any.whl"
ALPHA_FILE = f"/pypi/files/alpha/{ALPHA}"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _post(cache: RunningCache, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    answer = cache.get(path, headers, method="POST")
    body = json.loads(answer.body) if answer.headers.get("content-type", "").startswith("application/json") else {}
    return answer.status, body


def _admin_cache(make_cache: Callable[..., RunningCache], upstream: OfficialLikeUpstream) -> RunningCache:
    return make_cache([upstream.index_url], access={"admin_token": TOKEN})


def test_admin_api_is_absent_without_a_configured_token(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url])
    for path in ("/-/admin/gc", "/-/admin/pypi/purge/alpha", "/-/admin/pypi/refresh/alpha"):
        answer = cache.get(path, BEARER, method="POST")
        assert answer.status == 404 and answer.headers["x-pkgcache-admin"] == "off"


def _located_with_token(cache: RunningCache) -> Located:
    """How a command finds this instance when its config file holds the token (whether or not the instance has it)."""
    settings = cache.settings
    access = settings.access.model_copy(update={"admin_token": TOKEN})
    state = inspect_instance(InstancePaths(cache.data_dir))
    return Located("test", state, settings.model_copy(update={"access": access}))


def test_cli_says_the_servers_404_and_that_the_api_is_off_only_when_it_is(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    on = _admin_cache(make_cache, official_upstream)
    located = _located_with_token(on)
    for path, said in (
        ("/-/admin/pypi/unblock?target=gamma", "no pypi block of gamma is in force"),
        ("/-/admin/pypi/refresh/nosuchproject", "not found on any upstream"),
    ):
        with pytest.raises(AdminError) as refused:
            call_admin_api(located, on.url, path)
        assert said in refused.value.message and "admin API is off" not in refused.value.message

    off = make_cache([official_upstream.index_url])
    with pytest.raises(AdminError, match="admin API is off"):
        call_admin_api(_located_with_token(off), off.url, "/-/admin/pypi/unblock?target=gamma")


def test_admin_api_refuses_without_the_token_and_with_a_wrong_one(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _admin_cache(make_cache, official_upstream)
    assert cache.get(ALPHA_FILE).status == 200
    for path in ("/-/admin/gc?target=0", "/-/admin/pypi/purge/alpha", "/-/admin/pypi/refresh/alpha"):
        missing = cache.get(path, method="POST")
        assert missing.status == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert cache.get(path, {"Authorization": "Bearer wrong-token-but-long-enough"}, method="POST").status == 403
        assert cache.get(path, {"Authorization": f"Basic {TOKEN}"}, method="POST").status == 401
    # Nothing was touched.
    assert cache.get(ALPHA_FILE).headers["x-pkgcache-cache"] == "hit"


def test_purge_a_project_then_the_next_requests_are_misses(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _admin_cache(make_cache, official_upstream)
    size = find_dist(sample_dists(), ALPHA).size
    assert cache.get("/pypi/simple/alpha/").status == 200
    assert cache.get(ALPHA_FILE).status == 200
    assert cache.get("/pypi/simple/alpha/").headers["x-pkgcache-cache"] == "hit"

    status, answer = _post(cache, "/-/admin/pypi/purge/Alpha", BEARER)  # any spelling of the name
    assert status == 200
    # The page, the wheel, and the core metadata made from the wheel when it arrived (if that was done yet).
    assert answer["project"] == "alpha" and answer["freed_files"] >= 2 and answer["freed_bytes"] > size
    assert not (cache.data_dir / "pypi" / "files" / "alpha").exists()

    pages_before = official_upstream.count("/simple/alpha/")
    assert cache.get("/pypi/simple/alpha/").headers["x-pkgcache-cache"] == "miss"
    assert official_upstream.count("/simple/alpha/") == pages_before + 1
    assert cache.get(ALPHA_FILE).headers["x-pkgcache-cache"] == "miss"
    assert official_upstream.files.count(ALPHA) == 2


def test_purge_one_file_and_refresh_a_project(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _admin_cache(make_cache, official_upstream)
    assert cache.get(ALPHA_FILE).status == 200
    status, answer = _post(cache, f"/-/admin/pypi/purge/alpha/{ALPHA}", BEARER)
    assert status == 200 and answer["freed_files"] == 2  # the wheel and the core metadata read from it
    assert cache.get("/pypi/simple/alpha/").headers["x-pkgcache-cache"] == "hit"  # the page stays
    assert cache.get(ALPHA_FILE).headers["x-pkgcache-cache"] == "miss"

    pages_before = official_upstream.count("/simple/alpha/")
    status, answer = _post(cache, "/-/admin/pypi/refresh/alpha", BEARER)
    assert status == 200 and answer["files"] == 3
    assert official_upstream.count("/simple/alpha/") == pages_before + 1
    assert _post(cache, "/-/admin/pypi/refresh/no-such-project", BEARER)[0] == 404
    assert cache.get("/-/admin/pypi/purge/alpha/not-a-dist.txt", BEARER, method="POST").status == 400


def test_gc_by_hand_reports_what_it_freed(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = _admin_cache(make_cache, official_upstream)
    assert cache.get(ALPHA_FILE).status == 200
    status, answer = _post(cache, "/-/admin/gc?target=0", BEARER)
    assert status == 200
    assert answer["freed_files"] == 1 and answer["freed_bytes"] == find_dist(sample_dists(), ALPHA).size
    assert cache.get(ALPHA_FILE).headers["x-pkgcache-cache"] == "miss"
    assert _post(cache, "/-/admin/gc?target=lots", BEARER)[0] == 400


@pytest.mark.parametrize(
    "value",
    [b"Basic \xff", b"Basic dTpw\xff", b"Basic \xc3\xbf\xc3\xbf", b"Bearer \xff\xfe", b"Bearer \xed\xa0\x80"],
)
def test_credentials_that_are_not_ascii_are_refused_with_401(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], value: bytes
) -> None:
    cache = make_cache([official_upstream.index_url], access={"users": {"dev": "s3cret"}, "admin_token": TOKEN})
    read = cache.get("/pypi/simple/alpha/", {"Authorization": value})
    assert read.status == 401 and read.headers["www-authenticate"].startswith("Basic"), read.body
    admin = cache.get("/-/admin/gc", {"Authorization": value}, method="POST")
    assert admin.status == 401 and admin.headers["www-authenticate"].startswith("Bearer"), admin.body
    assert cache.get("/pypi/simple/alpha/", _basic("dev", "s3cret")).status == 200


def test_basic_auth_for_reads_when_users_are_set(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = make_cache([official_upstream.index_url], access={"users": {"dev": "s3cret"}, "admin_token": TOKEN})
    for path in ("/", "/pypi/simple/alpha/", ALPHA_FILE, "/metrics", "/-/stats", "/-/status"):
        refused = cache.get(path)
        assert refused.status == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert cache.get(path, _basic("dev", "wrong")).status == 401
        assert cache.get(path, _basic("nobody", "s3cret")).status == 401
        assert cache.get(path, _basic("dev", "s3cret")).status == 200, path
    assert cache.get("/-/health").status == 200
    # The admin API keeps its own token.
    assert cache.get("/-/admin/gc", _basic("dev", "s3cret"), method="POST").status == 401
    assert cache.get("/-/admin/gc", BEARER, method="POST").status == 200

    # A real client with the credentials in the index URL.
    index = cache.index_url.replace("http://", "http://dev:s3cret@")
    result = run_pip_install(index, tmp_path / "target", "alpha")
    assert result.returncode == 0, result.stderr
    assert "alpha==2.0" in installed_dists(tmp_path / "target")


# --- the command line ---


def _write_config(path: Path, upstream: OfficialLikeUpstream, token: str | None) -> Path:
    lines = ["[pypi]", f'upstreams = ["{upstream.index_url}"]', "[conda]", "enabled = false"]
    if token:
        lines += ["[access]", f'admin_token = "{token}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_works_on_a_running_instance_through_the_admin_api(
    official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    config = _write_config(tmp_path / "pkgcache.toml", official_upstream, TOKEN)
    process = CacheProcess(data_dir, "--config", str(config))
    try:
        where = ["--config", str(config), "--data-dir", str(data_dir)]
        assert http_get(process.url + ALPHA_FILE).status == 200
        runner = CliRunner()

        purged = runner.invoke(purge_command, ["alpha", "--file", ALPHA, *where])
        assert purged.exit_code == 0, purged.output
        assert "freed 2 files" in purged.output  # the wheel and the core metadata read from it
        assert http_get(process.url + ALPHA_FILE).headers["x-pkgcache-cache"] == "miss"

        pages_before = official_upstream.count("/simple/alpha/")
        refreshed = runner.invoke(refresh_command, ["alpha", *where])
        assert refreshed.exit_code == 0, refreshed.output
        assert "refreshed alpha" in refreshed.output
        assert official_upstream.count("/simple/alpha/") == pages_before + 1

        collected = runner.invoke(gc_command, ["--to", "0", *where])
        assert collected.exit_code == 0, collected.output
        assert "freed 1 file" in collected.output
        assert http_get(process.url + ALPHA_FILE).headers["x-pkgcache-cache"] == "miss"

        # Without the token in the config, the command says what to do.
        tokenless = _write_config(tmp_path / "tokenless.toml", official_upstream, None)
        refused = runner.invoke(gc_command, ["--config", str(tokenless), "--data-dir", str(data_dir)])
        assert refused.exit_code != 0 and "admin_token" in refused.output
        assert "measuring only" not in refused.output, "nothing was measured: the error is said alone"
    finally:
        process.terminate()


def test_cli_gc_and_purge_work_on_the_data_directory_when_nothing_runs(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    cache = make_cache([official_upstream.index_url])
    assert cache.get(ALPHA_FILE).status == 200
    assert cache.get("/pypi/files/beta/beta-1.1-py3-none-any.whl").status == 200
    cache.stop()
    where = ["--data-dir", str(cache.data_dir)]
    runner = CliRunner()

    purged = runner.invoke(purge_command, ["alpha", *where])
    assert purged.exit_code == 0, purged.output
    assert "not running" in purged.output
    assert not (cache.data_dir / "pypi" / "files" / "alpha").exists()
    assert not (cache.data_dir / "pypi" / "simple" / "alpha").exists()

    collected = runner.invoke(gc_command, ["--to", "0", *where])
    assert collected.exit_code == 0, collected.output
    assert "freed 1 file" in collected.output
    assert not list((cache.data_dir / "pypi" / "files").rglob("*.whl"))

    assert runner.invoke(refresh_command, ["alpha", *where]).exit_code == 1
    assert runner.invoke(purge_command, where).exit_code == 2  # neither a project nor a conda file


def test_purge_one_conda_package(
    anaconda_upstream: AnacondaLikeUpstream, conda_channels: Channels, make_cache: Callable[..., RunningCache]
) -> None:
    upstream = {
        "name": "anaconda-fake",
        "pkgs_url": f"{anaconda_upstream.repo.url}/pkgs/",
        "cloud_url": f"{anaconda_upstream.conda.url}/",
    }
    cache = make_cache(
        ["http://127.0.0.1:9/simple/"],
        conda={"upstreams": [upstream], "channels": ["pkgs/main"]},
        access={"admin_token": TOKEN},
    )
    pkg = find_pkg(conda_channels.main_pkgs, "tzinfo")
    url = f"/conda/pkgs/main/{pkg.subdir}/{pkg.filename}"
    assert cache.get(url).status == 200
    assert cache.get(url).headers["x-pkgcache-cache"] == "hit"

    status, answer = _post(cache, f"/-/admin/conda/purge/pkgs/main/{pkg.subdir}/{pkg.filename}", BEARER)
    assert status == 200 and answer["freed_files"] == 1 and answer["freed_bytes"] == pkg.size
    assert cache.get(url).headers["x-pkgcache-cache"] == "miss"
    assert anaconda_upstream.count(f"/{pkg.filename}") == 2
    # Index files follow their time-to-live; channels not served are unknown.
    assert _post(cache, f"/-/admin/conda/purge/pkgs/main/{pkg.subdir}/repodata.json", BEARER)[0] == 400
    assert _post(cache, f"/-/admin/conda/purge/cloud/bioconda/{pkg.subdir}/{pkg.filename}", BEARER)[0] == 404


def test_a_purge_holds_for_a_file_whose_download_was_under_way(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """The purge said the project went, yet the wheel being downloaded at that moment landed a second later and
    stayed (QA). Its client still gets the whole file; the cache does not keep it."""
    import hashlib
    import threading
    import time

    cache = _admin_cache(make_cache, official_upstream)
    big = "bigpkg-1.0-py3-none-any.whl"
    dist = find_dist(sample_dists(), big)
    assert cache.get("/pypi/simple/bigpkg/").status == 200
    official_upstream.faults.bytes_per_second = dist.size // 2  # about two seconds for the wheel
    got: list[Any] = []
    client = threading.Thread(target=lambda: got.append(cache.get(f"/pypi/files/bigpkg/{big}")))
    client.start()
    deadline = time.monotonic() + 10
    while cache.downloads_in_flight() == 0:
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.02)
    status, answer = _post(cache, "/-/admin/pypi/purge/bigpkg", BEARER)
    assert status == 200, answer
    client.join(30)
    assert got and got[0].status == 200 and hashlib.sha256(got[0].body).hexdigest() == dist.sha256
    wheel = cache.data_dir / "pypi" / "files" / "bigpkg" / big
    while wheel.exists():
        assert time.monotonic() < deadline + 20, "the purged wheel stayed in the cache"
        time.sleep(0.05)
    official_upstream.faults.bytes_per_second = None
    assert cache.get(f"/pypi/files/bigpkg/{big}").headers["x-pkgcache-cache"] == "miss"


def _sent(at: float, give_up_at: float | None = None) -> dict[str, str]:
    """The headers `pkgcache block/unblock` sends: when it sent the request, and when it stops waiting for it."""
    return {**BEARER, "X-Pkgcache-Sent-At": str(at), "X-Pkgcache-Give-Up-At": str(give_up_at or at + 40)}


def _listed(cache: RunningCache) -> bool:
    return ALPHA.encode() in cache.get("/pypi/simple/alpha/").body


def test_a_change_sent_before_the_last_one_or_arriving_after_its_sender_gave_up_is_not_made(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """QA v35 H1: an unblock held by a stopped replica, whose sender gave up and blocked again, must not be made
    when it reaches the primary at last."""
    cache = _admin_cache(make_cache, official_upstream)
    now = time.time()
    assert _post(cache, "/-/admin/pypi/block?target=alpha==2.0&who=first", _sent(now))[0] == 200
    # An unblock sent before that block, arriving after it: refused, the block stays.
    stale = cache.get("/-/admin/pypi/unblock?target=alpha==2.0&who=stale", _sent(now - 5), method="POST")
    assert stale.status == 409 and b"a later change to the pypi block of alpha==2.0" in stale.body
    # 2.0.0 is the same release, so the same block.
    assert cache.get("/-/admin/pypi/unblock?target=alpha==2.0.0", _sent(now - 1), method="POST").status == 409
    # One whose sender stopped waiting before it arrived: refused too, whatever it is.
    late = cache.get("/-/admin/pypi/unblock?target=alpha==2.0", _sent(now + 1, time.time() - 1), method="POST")
    assert late.status == 409 and b"after its sender stopped waiting" in late.body
    assert cache.get("/-/admin/gc", _sent(now + 1, time.time() - 1), method="POST").status == 409
    assert not _listed(cache)
    log = [json.loads(line) for line in (cache.data_dir / "gate/blocks.log").read_text().splitlines()]
    assert [(entry["action"], entry["who"]) for entry in log] == [("block", "first")]
    # A later one is made; and a request without the headers (curl) is taken as it comes.
    assert _post(cache, "/-/admin/pypi/unblock?target=alpha==2.0&who=later", _sent(time.time()))[0] == 200
    assert _listed(cache)
    assert _post(cache, "/-/admin/pypi/block?target=alpha==2.0&who=curl", BEARER)[0] == 200
    assert not _listed(cache)


def test_blocking_what_is_already_blocked_for_the_same_reason_adds_nothing_to_the_log(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    """QA v35 L3: a block repeated because its answer was lost (a replica killed mid-request) is not a second
    entry; the same release blocked for another reason is."""
    cache = _admin_cache(make_cache, official_upstream)
    status, first = _post(cache, "/-/admin/pypi/block?target=alpha==2.0&who=ops&reason=bad", BEARER)
    assert status == 200
    status, again = _post(cache, "/-/admin/pypi/block?target=alpha==2.0.0&who=ops&reason=bad", BEARER)
    assert status == 200 and again["when"] == first["when"] and again["version"] == "2.0"
    assert _post(cache, "/-/admin/pypi/block?target=alpha==2.0&who=ops&reason=worse", BEARER)[0] == 200
    log = [json.loads(line) for line in (cache.data_dir / "gate/blocks.log").read_text().splitlines()]
    assert [(entry["action"], entry["why"]) for entry in log] == [("block", "bad"), ("block", "worse")]
    assert not _listed(cache)
