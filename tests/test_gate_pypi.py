"""The supply-chain policy on the PyPI side, with real pip and uv: pages without what is refused, refusals that say
why, blocks on every worker, allow-lists from a lock file, ETags that turn over when the policy changes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgcache.cli.policy_commands import block_command, check_command, unblock_command
from tests.cache_service import CacheProcess, RunningCache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.support import BackgroundLoop, http_get, installed_dists, run_pip_install, run_uv_install

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
TOKEN = "a-test-token-long-enough"
INSTALLERS = {"pip": run_pip_install, "uv": run_uv_install}
ALPHA_2 = ("alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz")
ALPHA_2_WHEEL = "/pypi/files/alpha/alpha-2.0-py3-none-any.whl"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _listed(cache_url: str, project: str) -> list[str]:
    answer = http_get(f"{cache_url}/pypi/simple/{project}/", JSON)
    assert answer.status == 200, answer.body
    return [item["filename"] for item in json.loads(answer.body)["files"]]


def _install(kind: str, index_url: str, target: Path, *reqs: str) -> tuple[int, str, set[str]]:
    result = INSTALLERS[kind](index_url, target, *reqs)
    return result.returncode, result.stdout + result.stderr, installed_dists(target)


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_release_too_young_is_left_out_and_clients_get_the_previous_one(
    kind: str, official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    for filename in ALPHA_2:  # uploaded just now
        official_upstream.upload_time_overrides[filename] = _now_iso()
    cache = make_cache([official_upstream.index_url], pypi={"min_release_age": "7d"})

    code, output, installed = _install(kind, cache.index_url, tmp_path / "target", "alpha")
    assert code == 0, output
    assert installed == {"alpha==1.0"}
    assert official_upstream.count("/simple/alpha/") >= 1  # the upstream listed 2.0; pkgcache left it out
    page = json.loads(http_get(f"{cache.url}/pypi/simple/alpha/", JSON).body)
    assert [item["filename"] for item in page["files"]] == ["alpha-1.0-py3-none-any.whl"]
    assert page["versions"] == ["1.0"]

    refused = http_get(cache.url + ALPHA_2_WHEEL)
    assert refused.status == 403
    assert b'[pypi] min_release_age = "7d"' in refused.body and b"served from" in refused.body
    # Its metadata is refused too, and nothing of it was fetched.
    assert http_get(cache.url + ALPHA_2_WHEEL + ".metadata").status == 403
    assert not any(r.path.endswith(ALPHA_2) for r in official_upstream.files.requests)


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_denied_project_fails_with_pkgcaches_message_in_the_clients_error(
    kind: str, official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    deny = [{"name": "delta-pkg", "reason": "typosquat of delta, INC-42"}]
    cache = make_cache([official_upstream.index_url], pypi={"deny": deny})

    code, output, installed = _install(kind, cache.index_url, tmp_path / "target", "alpha==2.0")
    assert code != 0
    assert "refused by pkgcache's policy" in output and "typosquat of delta, INC-42" in output, output
    assert not installed
    # The rest of the index is untouched by the rule.
    code, output, installed = _install(kind, cache.index_url, tmp_path / "other", "beta")
    assert code == 0, output
    assert installed == {"beta==1.1", "gamma==0.5"}


def test_files_first_seen_by_pkgcache_wait_their_age_on_a_mirror_without_upload_times(
    tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    from tests.fakes.dists import build_wheel

    # Files there when pkgcache first looks have no known age: "allow" lets them through. A file that appears
    # later was first seen then, and waits the age.
    cache = make_cache(
        [tuna_upstream.index_url], pypi={"min_release_age": "1d", "unknown_age": "allow", "index_ttl": 0}
    )
    assert _listed(cache.url, "gamma") == ["gamma-0.4-py3-none-any.whl", "gamma-0.5-py3-none-any.whl"]
    tuna_upstream.add_dist(build_wheel("gamma", "0.6"))
    record_path = cache.data_dir / "pypi/simple/gamma/first-seen.json"
    deadline = time.monotonic() + 10
    while "gamma-0.6-py3-none-any.whl" not in record_path.read_text() and time.monotonic() < deadline:
        _listed(cache.url, "gamma")  # a stale page is served while it is revalidated (index_ttl = 0)
        time.sleep(0.1)
    record = json.loads(record_path.read_text())
    assert record["files"]["gamma-0.6-py3-none-any.whl"] > record["since"]

    result = run_pip_install(cache.index_url, tmp_path / "target", "gamma")
    assert result.returncode == 0, result.stderr
    assert installed_dists(tmp_path / "target") == {"gamma==0.5"}
    assert not any(path.endswith("gamma-0.6-py3-none-any.whl") for path in tuna_upstream.paths("GET"))
    refused = http_get(f"{cache.url}/pypi/files/gamma/gamma-0.6-py3-none-any.whl")
    assert refused.status == 403 and b"served from" in refused.body


def test_upload_times_once_given_still_count_when_the_page_comes_from_a_mirror_without_them(
    bg_loop: BackgroundLoop, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    # The page first comes from a mirror giving upload times (JSON: long ago), the first mirror being down; later
    # from the first one, in HTML without upload times. The files are as old as before: pip and uv still install
    # them, and the cached wheel is still served, instead of taking them for first seen now and too young.
    from tests.fakes.dists import build_wheel

    wheel = build_wheel("demo", "1.0")
    html_mirror, json_mirror = TunaLikeUpstream([wheel], strict_ua=False), OfficialLikeUpstream([wheel])
    bg_loop.run(html_mirror.start())
    bg_loop.run(json_mirror.start())
    try:
        html_mirror.garbage["demo"] = "503"
        cache = make_cache(
            [html_mirror.index_url, json_mirror.index_url],
            pypi={"min_release_age": "7d", "index_ttl": 0},
            upstream={"cooldown": 1},
        )
        code, output, installed = _install("pip", cache.index_url, tmp_path / "first", "demo==1.0")
        assert code == 0, output
        assert json_mirror.files.count(json_mirror.file_path(wheel), "GET") >= 1
        page_path = cache.data_dir / "pypi/simple/demo/page.json"
        from_json_mirror = json.loads(page_path.read_text())["upstream"]

        html_mirror.garbage.clear()
        deadline = time.monotonic() + 15
        while json.loads(page_path.read_text())["upstream"] == from_json_mirror and time.monotonic() < deadline:
            _listed(cache.url, "demo")  # a stale page is served while it is revalidated (index_ttl = 0)
            time.sleep(0.2)
        cached = json.loads(page_path.read_text())
        assert cached["upstream"] != from_json_mirror and cached["page"]["files"][0]["upload_time"] is None
        assert html_mirror.count("/simple/demo/") >= 2

        assert _listed(cache.url, "demo") == [wheel.filename]
        for kind in ("pip", "uv"):
            code, output, installed = _install(kind, cache.index_url, tmp_path / kind, "demo==1.0")
            assert code == 0, output
            assert installed == {"demo==1.0"}
        assert http_get(f"{cache.url}/pypi/files/demo/{wheel.filename}").status == 200
    finally:
        bg_loop.run(html_mirror.stop())
        bg_loop.run(json_mirror.stop())


def test_a_policy_change_turns_a_cached_pages_etag_over(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]
) -> None:
    cache = make_cache([official_upstream.index_url], access={"admin_token": TOKEN})
    first = cache.get("/pypi/simple/alpha/", JSON)
    etag = first.headers["etag"]
    assert cache.get("/pypi/simple/alpha/", {**JSON, "If-None-Match": etag}).status == 304

    blocked = cache.get("/-/admin/pypi/block?target=alpha==2.0&reason=bad&who=tester", _bearer(), "POST")
    assert blocked.status == 200, blocked.body
    after = cache.get("/pypi/simple/alpha/", {**JSON, "If-None-Match": etag})
    assert after.status == 200 and after.headers["etag"] != etag
    assert [f["filename"] for f in json.loads(after.body)["files"]] == ["alpha-1.0-py3-none-any.whl"]
    assert cache.get("/pypi/simple/alpha/", {**JSON, "If-None-Match": after.headers["etag"]}).status == 304

    assert cache.get("/-/admin/pypi/unblock?target=alpha==2.0", _bearer(), "POST").status == 200
    back = cache.get("/pypi/simple/alpha/", {**JSON, "If-None-Match": after.headers["etag"]})
    assert back.status == 200 and back.headers["etag"] == etag


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Length": "0"}


def _config(path: Path, upstream: OfficialLikeUpstream, *extra: str) -> Path:
    lines = [
        "[pypi]",
        f'upstreams = ["{upstream.index_url}"]',
        "index_ttl = 600",
        *extra,
        "[conda]",
        "enabled = false",
        "[access]",
        f'admin_token = "{TOKEN}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_block_is_in_force_on_every_worker_and_purges_the_release(
    official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    config = _config(tmp_path / "pkgcache.toml", official_upstream)
    process = CacheProcess(data_dir, "--config", str(config), "--workers", "2")
    index_url = process.url + "/pypi/simple/"
    where = ["--config", str(config), "--data-dir", str(data_dir)]
    try:
        result = run_pip_install(index_url, tmp_path / "before", "alpha==2.0")
        assert result.returncode == 0, result.stderr
        assert (data_dir / "pypi/files/alpha/alpha-2.0-py3-none-any.whl").is_file()
        # Both workers hold the page in memory and the file on disk: each would answer by itself.
        assert all(http_get(process.url + ALPHA_2_WHEEL).status == 200 for _ in range(20))

        blocked = CliRunner().invoke(block_command, ["alpha==2.0", "--reason", "compromised, INC-7", *where])
        assert blocked.exit_code == 0, blocked.output
        assert "purged 2 cached files" in blocked.output  # the wheel and its core metadata
        assert not (data_dir / "pypi/files/alpha/alpha-2.0-py3-none-any.whl").exists()
        # Fresh connections land on both workers (SO_REUSEPORT): every one refuses, and no page lists it.
        replica_before = _replica_requests(process.url)
        for _ in range(20):
            refused = http_get(process.url + ALPHA_2_WHEEL)
            assert refused.status == 403 and b"compromised, INC-7" in refused.body
            assert _listed(process.url, "alpha") == ["alpha-1.0-py3-none-any.whl"]
        time.sleep(1.2)  # the replica publishes its counters once a second
        assert _replica_requests(process.url) > replica_before  # the replica answered some of them itself

        # Clients resolve around the blocked release; asking for it exactly finds no such version.
        pinned = run_uv_install(index_url, tmp_path / "pinned", "alpha==2.0")
        assert pinned.returncode != 0 and "no version of alpha==2.0" in pinned.stderr
        latest = run_pip_install(index_url, tmp_path / "latest", "alpha")
        assert latest.returncode == 0, latest.stderr
        assert installed_dists(tmp_path / "latest") == {"alpha==1.0"}
        log = (data_dir / "gate/blocks.log").read_text()
        assert '"target": "alpha==2.0"' in log and '"why": "compromised, INC-7"' in log

        unblocked = CliRunner().invoke(unblock_command, ["alpha==2.0", *where])
        assert unblocked.exit_code == 0, unblocked.output
        assert all(http_get(process.url + ALPHA_2_WHEEL).status == 200 for _ in range(20))
    finally:
        process.terminate()


def test_when_block_and_unblock_return_no_worker_shows_the_old_page(
    official_upstream: OfficialLikeUpstream, tmp_path: Path
) -> None:
    """Every worker holds the page (and its filtered view) in memory; a block's command returns only once all of them
    have it in force: the requests right after it, whichever worker takes them, list no blocked file (nor, right
    after the unblock, leave it out)."""
    data_dir = tmp_path / "data"
    config = _config(tmp_path / "pkgcache.toml", official_upstream)
    process = CacheProcess(data_dir, "--config", str(config), "--workers", "4")
    where = ["--config", str(config), "--data-dir", str(data_dir)]
    wheel = "alpha-2.0-py3-none-any.whl"
    try:
        deadline = time.monotonic() + 20
        while not all(
            int(row["requests"]) > 0 for row in json.loads(http_get(process.url + "/-/status").body)["workers"]
        ):
            assert time.monotonic() < deadline, "not every worker served the page"
            for _ in range(20):  # a new connection each: the kernel spreads them over the workers
                assert wheel in _listed(process.url, "alpha")
                assert http_get(process.url + "/pypi/simple/alpha/").status == 200
            time.sleep(0.3)  # each worker publishes its counters once a second

        for round in range(3):
            reason = f"compromised, round {round}"
            blocked = CliRunner().invoke(block_command, ["alpha==2.0", "--reason", reason, *where])
            assert blocked.exit_code == 0, blocked.output
            listing = [_listed(process.url, "alpha") for _ in range(30)]
            html = [http_get(process.url + "/pypi/simple/alpha/").body for _ in range(30)]
            assert [files for files in listing if wheel in files] == [], f"round {round}: a worker still lists it"
            assert [page for page in html if wheel.encode() in page] == [], f"round {round}: an HTML page lists it"
            refused = http_get(process.url + ALPHA_2_WHEEL)
            assert refused.status == 403 and reason.encode() in refused.body

            unblocked = CliRunner().invoke(unblock_command, ["alpha==2.0", *where])
            assert unblocked.exit_code == 0, unblocked.output
            listing = [_listed(process.url, "alpha") for _ in range(30)]
            assert [files for files in listing if wheel not in files] == [], f"round {round}: still left out"
    finally:
        process.terminate()


def _replica_requests(url: str) -> int:
    workers = json.loads(http_get(url + "/-/status").body)["workers"]
    return sum(int(row["requests"]) for row in workers if row["role"] == "replica")


def test_an_allow_list_of_a_lock_files_contents_installs_it_and_nothing_else(
    official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    from tests.support import UV, isolated_env

    open_cache = make_cache([official_upstream.index_url])
    (tmp_path / "requirements.in").write_text("alpha==2.0\n")
    lock = tmp_path / "requirements.txt"
    compiled = __import__("subprocess").run(
        [str(UV), "pip", "compile", "--index-url", open_cache.index_url, "--no-header", "--no-annotate",
         "--no-cache", str(tmp_path / "requirements.in"), "-o", str(lock)],
        env=isolated_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    pins = sorted(line.strip() for line in lock.read_text().splitlines() if "==" in line)
    assert pins == ["alpha==2.0", "beta==1.1", "delta-pkg==3.0", "gamma==0.5"]

    gated = make_cache([official_upstream.index_url], pypi={"allow_only": True, "allow": pins})
    for kind in ("pip", "uv"):
        code, output, installed = _install(kind, gated.index_url, tmp_path / f"locked-{kind}", "-r", str(lock))
        assert code == 0, output
        assert installed == set(pins)
    # Nothing else: another version of a locked project is not there, another project says why.
    assert _listed(gated.url, "beta") == ["beta-1.1-py3-none-any.whl"]
    code, output, _ = _install("pip", gated.index_url, tmp_path / "other", "bigpkg")
    assert code != 0 and "allow_only = true, and no allow rule matches it" in output

    # The same lock checked by `pkgcache policy check` against the gated instance's policy: nothing refused.
    config = tmp_path / "gated.toml"
    config.write_text("[pypi]\nallow_only = true\nallow = " + json.dumps(pins[:-1]) + "\n[conda]\nenabled = false\n")
    checked = CliRunner().invoke(check_command, ["--config", str(config), "--data-dir", str(gated.data_dir), str(lock)])
    assert checked.exit_code == 1, checked.output  # gamma 0.5 is not in this shorter list
    assert "REFUSED  gamma==0.5" in checked.output and "4 pins checked: 1 refused" in checked.output
