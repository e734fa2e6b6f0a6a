"""Tiers: a child pkgcache whose first upstream is a parent pkgcache, over the fake mirrors.

The child reaches the parent through `Wire` (tests/tier_support.py), a recording pass-through, so the tests see
exactly what went between the two tiers: the child's requests (validators included) and the parent's answers
(statuses and headers). The child sends its own User-Agent, so the fake mirrors' logs tell its requests from the
parent's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pkgcache.http.fast_path import FAST_PATH_KEY
from pkgcache.node_identity import NODE_HEADER, TIER_HEADER
from tests.cache_service import RunningCache
from tests.conda_support import APP_TREE, SUBDIR, assert_app_landed, install, installed_names
from tests.fakes.conda_upstreams import AnacondaLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, TunaLikeUpstream
from tests.fakes.server import FakeServer
from tests.support import agent_of, http_get, installed_dists, run_pip_install, run_uv_install, wait_for
from tests.tier_support import CHILD_AGENT, CLOSED_PYPI, JSON_PAGE, TierBuilder, Wire, conda_parent, pypi_parent

EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
INSTALLERS = {"pip": run_pip_install, "uv": run_uv_install}
CONDA_CHANNELS = ["pkgs/main", "cloud/conda-forge"]


@dataclass
class Tiers:
    mirror: OfficialLikeUpstream
    parent: RunningCache
    wire: Wire
    child: RunningCache

    def mirror_requests_from_child(self) -> list[str]:
        return [r.path for r in self.mirror.requests + self.mirror.files.requests if agent_of(r) == CHILD_AGENT]

    def mirror_page(self, project: str) -> dict[str, Any]:
        return json.loads(http_get(f"{self.mirror.index_url}{project}/", JSON_PAGE).body)

    def child_upstream(self, side: str, name: str) -> dict[str, Any]:
        status = json.loads(self.child.get("/-/status").body)
        return next(u for u in status["upstreams"][side] if u["name"] == name)


@pytest.fixture
def tiers(
    official_upstream: OfficialLikeUpstream,
    anaconda_upstream: AnacondaLikeUpstream,
    tier_builder: TierBuilder,
) -> Tiers:
    """mirror ← parent ← wire ← child; the child lists the parent first, then the mirror itself (both sides)."""
    anaconda = anaconda_upstream.upstream_config()
    parent = tier_builder.parent(
        [official_upstream.index_url], conda={"upstreams": [anaconda], "channels": CONDA_CHANNELS}
    )
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child(
        [pypi_parent(wire.url), official_upstream.index_url],
        # The short form of a pkgcache parent on the conda side: its /conda/ base (pkgs/ and cloud/ below it).
        conda={"upstreams": [conda_parent(wire.url), anaconda], "channels": CONDA_CHANNELS},
    )
    return Tiers(official_upstream, parent, wire, child)


# --- installs through two tiers ---


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_pip_and_uv_install_through_a_child_over_a_parent(kind: str, tiers: Tiers, tmp_path: Path) -> None:
    result = INSTALLERS[kind](tiers.child.index_url, tmp_path / "target", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    # Everything came through the parent: the child never asked the mirror, and the parent fetched every file.
    assert tiers.mirror_requests_from_child() == []
    fetched = [r.path for r in tiers.mirror.files.requests]
    assert any(path.endswith("alpha-2.0-py3-none-any.whl") for path in fetched)
    assert tiers.wire.to("/pypi/files/alpha/alpha-2.0-py3-none-any.whl")
    if kind == "uv":
        # uv reads PEP 658 metadata: the mirror's, through both tiers.
        assert tiers.wire.to("alpha-2.0-py3-none-any.whl.metadata")
    # The child knows its first upstream is a pkgcache, and which.
    assert tiers.child_upstream("pypi", "parent")["pkgcache"] == {"node": "central-1", "tier": "central"}


def test_rattler_installs_through_a_child_over_a_parent_with_shards_through_both(
    tiers: Tiers, anaconda_upstream: AnacondaLikeUpstream, tmp_path: Path
) -> None:
    for channel in CONDA_CHANNELS:
        prefix, result = install(tmp_path, [f"{tiers.child.url}/conda/{channel}"], ["app"], name=channel.split("/")[1])
        assert installed_names(result) == APP_TREE
        assert_app_landed(prefix)
        assert all(p["url"].startswith(tiers.child.url) for p in result["installed"])
    # conda-forge is sharded at the source: rattler read the shards, which came down through both tiers.
    assert tiers.wire.to("/repodata_shards.msgpack.zst") and any("/shards/" in e.path for e in tiers.wire.exchanges)
    assert anaconda_upstream.count("/repodata_shards.msgpack.zst") >= 1
    # The child asked the mirror only for what the parent had said does not exist (probes for optional files).
    assert _found_by_child(anaconda_upstream) == []
    # Named from its URL, as any upstream given as a bare URL.
    assert tiers.child_upstream("conda", f"127.0.0.1:{tiers.wire.port}")["pkgcache"]["tier"] == "central"


def test_over_a_mirror_without_metadata_the_child_takes_the_parents_metadata_and_reads_no_ranges(
    tuna_upstream: TunaLikeUpstream, tier_builder: TierBuilder, tmp_path: Path
) -> None:
    parent = tier_builder.parent([tuna_upstream.index_url])
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child([pypi_parent(wire.url), tuna_upstream.index_url])
    result = run_uv_install(child.index_url, tmp_path / "target", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    # The mirror has no metadata; the parent makes it (by ranges of the mirror's wheels, or from the wheel),
    # and the child takes the parent's `.metadata` as any upstream's: never a range of the parent's wheels.
    assert wire.to("alpha-2.0-py3-none-any.whl.metadata")
    assert [e.path for e in wire.exchanges if "Range" in e.request_headers] == []
    assert not any(agent_of(r) == CHILD_AGENT for r in tuna_upstream.requests)


# --- what the index says, intact ---


def test_pages_through_two_tiers_keep_every_field_of_the_mirrors_page(tiers: Tiers) -> None:
    child = json.loads(tiers.child.get("/pypi/simple/gamma/", JSON_PAGE).body)
    parent = json.loads(tiers.parent.get("/pypi/simple/gamma/", JSON_PAGE).body)
    assert child == parent
    upstream = tiers.mirror_page("gamma")
    by_name = {f["filename"]: f for f in child["files"]}
    for original in upstream["files"]:
        served = by_name[original["filename"]]
        assert served["hashes"] == original["hashes"]
        assert served["size"] == original["size"]
        assert served["upload-time"] == original["upload-time"]
        assert served.get("requires-python") == original["requires-python"]
        assert served.get("yanked", False) == original["yanked"]
        # A mirror's metadata hash is never passed on unchecked: `true` until the metadata is here.
        assert served["core-metadata"] in (True, original["core-metadata"])
    assert by_name["gamma-0.4-py3-none-any.whl"]["yanked"] == "broken"
    assert child["versions"] == upstream["versions"]
    # Once a client has read it through both tiers, the hash of those bytes, which are the mirror's.
    gamma_04 = find_dist(sample_dists(), "gamma-0.4-py3-none-any.whl")
    assert tiers.child.get(f"/pypi/files/gamma/{gamma_04.filename}.metadata").body == gamma_04.metadata
    child = json.loads(tiers.child.get("/pypi/simple/gamma/", JSON_PAGE).body)
    served = {f["filename"]: f for f in child["files"]}[gamma_04.filename]
    assert served["core-metadata"] == {"sha256": gamma_04.metadata_sha256}
    # The same page in HTML, to clients that ask for it, says the same (hash fragment, yank reason, metadata hash).
    html = tiers.child.get("/pypi/simple/gamma/", {"Accept": "text/html"}).body.decode()
    assert f"#sha256={gamma_04.sha256}" in html and 'data-yanked="broken"' in html
    assert f'data-core-metadata="sha256={gamma_04.metadata_sha256}"' in html


def test_metadata_and_files_through_two_tiers_are_the_mirrors_bytes(tiers: Tiers) -> None:
    alpha = find_dist(sample_dists(), "alpha-2.0-py3-none-any.whl")
    assert tiers.child.get("/pypi/simple/alpha/").status == 200
    metadata = tiers.child.get(f"/pypi/files/alpha/{alpha.filename}.metadata")
    assert metadata.status == 200 and metadata.body == alpha.metadata
    wheel = tiers.child.get(f"/pypi/files/alpha/{alpha.filename}")
    assert wheel.status == 200 and wheel.body == alpha.data


# --- whose headers ---


def test_the_child_answers_with_its_own_cache_state_and_identity_never_the_parents(tiers: Tiers) -> None:
    alpha = find_dist(sample_dists(), "alpha-2.0-py3-none-any.whl")
    path = f"/pypi/files/alpha/{alpha.filename}"
    # The parent has the file already: its answer to the child says hit, from central-1.
    assert tiers.parent.get("/pypi/simple/alpha/").status == 200
    assert tiers.parent.get(path).headers["x-pkgcache-cache"] == "miss"
    answer = tiers.child.get(path)
    assert answer.status == 200 and answer.body == alpha.data
    (relayed,) = tiers.wire.to(path)
    assert relayed.headers["X-Pkgcache-Cache"] == "hit"
    assert relayed.headers[NODE_HEADER] == "central-1" and relayed.headers[TIER_HEADER] == "central"
    # ...but the child's answer is the child's: a miss here, from office-1.
    assert answer.headers["x-pkgcache-cache"] == "miss"
    assert answer.headers[NODE_HEADER.lower()] == "office-1" and answer.headers[TIER_HEADER.lower()] == "office"
    again = tiers.child.get(path)
    assert again.headers["x-pkgcache-cache"] == "hit" and len(tiers.wire.to(path)) == 1
    # Pages the same way, the fast path's answers (a fresh page from memory) included.
    fast_path = tiers.child.runner.app[FAST_PATH_KEY]
    assert tiers.child.get("/pypi/simple/alpha/").status == 200
    answered = fast_path.answered
    page = tiers.child.get("/pypi/simple/alpha/")
    assert fast_path.answered == answered + 1
    assert page.headers["x-pkgcache-cache"] == "hit" and page.headers[NODE_HEADER.lower()] == "office-1"


# --- 304s all the way ---


def test_a_stale_page_is_revalidated_with_304s_down_the_chain(
    official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder
) -> None:
    parent = tier_builder.parent([official_upstream.index_url], pypi={"index_ttl": 0})
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child([pypi_parent(wire.url)], pypi={"index_ttl": 0})
    first = child.get("/pypi/simple/alpha/", JSON_PAGE)
    assert first.status == 200
    # index_ttl 0: the next request is served stale at once while the child revalidates with the parent...
    assert child.get("/pypi/simple/alpha/", JSON_PAGE).headers["x-pkgcache-cache"] == "stale"
    wait_for(lambda: len(wire.to("/pypi/simple/alpha/")) == 2, "the child's revalidation")
    fetch, revalidation = wire.to("/pypi/simple/alpha/")
    assert "If-None-Match" not in fetch.request_headers
    assert revalidation.request_headers["If-None-Match"] == fetch.headers["ETag"]
    assert revalidation.status == 304
    # ...and the parent, its own copy stale too, revalidated with the mirror the same way.
    wait_for(lambda: _conditional_answers(official_upstream, "/simple/alpha/"), "the parent's revalidation")
    assert _conditional_answers(official_upstream, "/simple/alpha/") == [304]
    # A client's own validator gets its 304 from the child.
    etag = first.headers["etag"]
    assert child.get("/pypi/simple/alpha/", {**JSON_PAGE, "If-None-Match": etag}).status == 304


def test_stale_repodata_is_revalidated_with_304s_down_the_chain(
    anaconda_upstream: AnacondaLikeUpstream, tier_builder: TierBuilder
) -> None:
    anaconda = anaconda_upstream.upstream_config()
    parent = tier_builder.parent(
        CLOSED_PYPI, conda={"upstreams": [anaconda], "channels": ["pkgs/main"], "index_ttl": 0}
    )
    wire = tier_builder.wire(parent.url)
    path = f"/conda/pkgs/main/{SUBDIR}/repodata.json"
    child = tier_builder.child(
        CLOSED_PYPI, conda={"upstreams": [conda_parent(wire.url)], "channels": ["pkgs/main"], "index_ttl": 0}
    )
    # The parent holds the file (a streamed first answer carries no validators yet: see docs/operations.md).
    assert parent.get(path).status == 200
    first = child.get(path)
    assert first.status == 200 and first.body == parent.get(path).body
    assert child.get(path).headers["x-pkgcache-cache"] == "stale"
    wait_for(lambda: len(wire.to(path)) == 2, "the child's revalidation")
    fetch, revalidation = wire.to(path)
    assert revalidation.request_headers["If-None-Match"] == fetch.headers["ETag"]
    assert revalidation.status == 304
    wait_for(lambda: _conditional_answers(anaconda_upstream, path.split("main", 1)[1]), "the parent's 304")
    assert 304 in _conditional_answers(anaconda_upstream, path.split("main", 1)[1])
    # And a client's validator gets its 304 from the child (a streamed first answer had none to give).
    cached = child.get(path)
    assert child.get(path, {"If-None-Match": cached.headers["etag"]}).status == 304


def _found_by_child(server: FakeServer) -> list[str]:
    """The paths the child asked a fake mirror for and got something other than a 404."""
    return [r.path for r in server.requests if agent_of(r) == CHILD_AGENT and r.status != 404]


def _conditional_answers(server: FakeServer, suffix: str) -> list[int | None]:
    """The statuses a fake answered to conditional requests for paths ending with `suffix`."""
    return [
        r.status
        for r in server.requests
        if r.path.endswith(suffix) and (r.headers.get("If-None-Match") or r.headers.get("If-Modified-Since"))
    ]


# --- failover, and a warm parent ---


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_with_the_parent_down_the_child_installs_from_the_mirror_itself(
    kind: str, tiers: Tiers, tmp_path: Path
) -> None:
    tiers.wire.faults.fail_mode = "reset"
    result = INSTALLERS[kind](tiers.child.index_url, tmp_path / "target", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    from_child = tiers.mirror_requests_from_child()
    assert any(path.endswith("/simple/alpha/") for path in from_child)
    assert any(path.endswith("alpha-2.0-py3-none-any.whl") for path in from_child)
    parent = tiers.child_upstream("pypi", "parent")
    assert parent["healthy"] is False and parent["failures"] >= 1


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_parent_lost_after_the_child_cached_its_pages_fails_over_to_the_mirror(
    kind: str, tiers: Tiers, tmp_path: Path
) -> None:
    for project in ("alpha", "beta", "gamma", "delta-pkg"):
        assert tiers.child.get(f"/pypi/simple/{project}/").status == 200
    # The pages came from the parent and link files only the parent serves (files/<project>/<file>)...
    tiers.wire.faults.fail_mode = "reset"
    result = INSTALLERS[kind](tiers.child.index_url, tmp_path / "target", "alpha==2.0")
    # ...yet the install completes: the first file's download from the parent fails, the parent rests from then on,
    # and the child takes each page again from the mirror, whose links lead to the mirror's files (the client
    # never sees the failure: the child tries once more itself).
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    from_child = tiers.mirror_requests_from_child()
    assert any(path.endswith("/simple/alpha/") for path in from_child)
    assert any(path.endswith("alpha-2.0-py3-none-any.whl") for path in from_child)


def test_rattler_with_the_parent_down_installs_from_the_mirror_itself(
    tiers: Tiers, anaconda_upstream: AnacondaLikeUpstream, tmp_path: Path
) -> None:
    tiers.wire.faults.fail_mode = "reset"
    prefix, result = install(tmp_path, [f"{tiers.child.url}/conda/pkgs/main"], ["app"])
    assert installed_names(result) == APP_TREE
    assert_app_landed(prefix)
    assert any(agent_of(r) == CHILD_AGENT for r in anaconda_upstream.requests)


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_over_a_warm_parent_the_child_never_reaches_the_mirror(
    kind: str, tiers: Tiers, anaconda_upstream: AnacondaLikeUpstream, tmp_path: Path
) -> None:
    warm = INSTALLERS[kind](tiers.parent.index_url, tmp_path / "warm", "alpha==2.0")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    _, conda_warm = install(tmp_path, [f"{tiers.parent.url}/conda/pkgs/main"], ["app"], name="warm-env")
    assert installed_names(conda_warm) == APP_TREE
    tiers.mirror.reset_log()
    tiers.mirror.files.reset_log()
    anaconda_upstream.reset_log()

    result = INSTALLERS[kind](tiers.child.index_url, tmp_path / "target", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    _, conda_result = install(tmp_path, [f"{tiers.child.url}/conda/pkgs/main"], ["app"])
    assert installed_names(conda_result) == APP_TREE
    # Nothing the install used came from the mirrors: the parent served it all from its cache. The only requests
    # the mirrors saw were the child's for what the parent says does not exist (a pkgcache's 404 is not yet
    # believed over the next upstream: docs/operations.md), and they answered 404 too.
    assert tiers.mirror.files.requests == []
    for server in (tiers.mirror, anaconda_upstream):
        assert all(agent_of(r) == CHILD_AGENT for r in server.requests)
        assert _found_by_child(server) == []
    assert tiers.wire.to("/pypi/files/alpha/alpha-2.0-py3-none-any.whl")


# --- who is who, for the operator ---


def test_metrics_and_the_page_name_the_node_its_tier_and_its_parent(tiers: Tiers) -> None:
    assert tiers.child.get("/pypi/simple/alpha/").status == 200
    metrics = tiers.child.get("/metrics").body.decode()
    assert 'pkgcache_node_info{node="office-1",tier="office"} 1.0' in metrics
    assert 'pkgcache_upstream_parent_info{parent_tier="central",side="pypi",upstream="parent"} 1.0' in metrics
    parent_metrics = tiers.parent.get("/metrics").body.decode()
    assert 'pkgcache_node_info{node="central-1",tier="central"} 1.0' in parent_metrics
    assert "pkgcache_upstream_parent_info{" not in parent_metrics  # the parent's own upstream is a mirror
    page = tiers.child.get("/").body.decode()
    assert "Node office-1, tier office" in page and "pkgcache, node central-1, tier central" in page
    status = json.loads(tiers.child.get("/-/status").body)
    assert status["node"] == "office-1" and status["tier"] == "office"


@pytest.mark.parametrize("kind", ["pip", "uv"])
def test_a_parents_policy_refusal_reaches_the_client_and_neither_rests_the_parent_nor_goes_to_the_mirror(
    kind: str, official_upstream: OfficialLikeUpstream, tier_builder: TierBuilder, tmp_path: Path
) -> None:
    """The central cache denies delta-pkg; an office cache lists it first and the public mirror after it. The
    office passes the central verdict on: asking the mirror instead would serve what the central policy refused,
    and resting the central cache would send every other install of the office to the mirror meanwhile."""
    deny = {"deny": [{"name": "delta-pkg", "reason": "typosquat INC-42"}]}
    parent = tier_builder.parent([official_upstream.index_url], pypi=deny)
    wire = tier_builder.wire(parent.url)
    child = tier_builder.child([pypi_parent(wire.url), official_upstream.index_url], conda={"enabled": False})
    result = INSTALLERS[kind](child.index_url, tmp_path / "target", "alpha==2.0")
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "INC-42" in said, said  # both show a refused download's reason phrase
    answer = child.get("/pypi/files/delta-pkg/delta_pkg-3.0-py3-none-any.whl")
    assert answer.status == 403 and b"INC-42" in answer.body, (answer.status, answer.body)
    mirror_seen = official_upstream.requests + official_upstream.files.requests
    assert not [r.path for r in mirror_seen if agent_of(r) == CHILD_AGENT]  # all through the central cache
    status = json.loads(child.get("/-/status").body)
    parent_status = next(u for u in status["upstreams"]["pypi"] if u["name"] == "parent")
    assert parent_status["healthy"] and parent_status["failures"] == 0, parent_status
    # The rest of the office's installs still go through the central cache at once.
    other = INSTALLERS[kind](child.index_url, tmp_path / "other", "gamma==0.5")
    assert other.returncode == 0, other.stdout + other.stderr


def test_a_refusals_message_rides_in_a_header_for_an_answer_without_a_body() -> None:
    """A HEAD's 403 has no body, and a proxy (or HTTP/2) may drop the status line's reason: the message is in
    X-Pkgcache-Refusal-Reason too, printable ASCII on the wire whatever its language."""
    # Imported here, so that the rest of this module loads on code without these.
    from pkgcache.node_identity import refusal_headers, refusal_reason

    message = "delta_pkg-3.0.whl is refused by pkgcache's policy: blocked by 李雷: 100% a typosquat\n(INC-7)"
    headers = refusal_headers(message)
    assert headers["X-Pkgcache-Refusal"] == "policy" and headers["Cache-Control"] == "no-store"
    assert headers["X-Pkgcache-Refusal-Reason"].isascii() and headers["X-Pkgcache-Refusal-Reason"].isprintable()
    assert refusal_reason(headers) == " ".join(message.split())
    assert refusal_reason({}) is None
