"""Through a running pkgcache: what an index says about a project reaches JSON and HTML clients, pip and uv still
install, and a page's unusable links are left out without costing the upstream or the page."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cache_service import RunningCache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream, PageExtras, TunaLikeUpstream
from tests.support import installed_dists, run_pip_install, run_uv_install

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
TRACKS = "https://mirrors.example.org/pypi/simple/{}/"
ALTERNATE = "https://wheels.example.org/simple/{}/"
REASON = 'superseded by "alpha2" & friends'
EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
Upstream = OfficialLikeUpstream | TunaLikeUpstream


def _extras(project: str) -> PageExtras:
    return PageExtras(
        status="archived",
        status_reason=REASON,
        tracks=[TRACKS.format(project)],
        alternate_locations=[ALTERNATE.format(project)],
        provenance=True,
    )


def _filenames(upstream: Upstream, project: str) -> list[str]:
    return sorted(dist.filename for dist in upstream.dists if dist.normalized == project)


def _page(cache: RunningCache, project: str, accept: str) -> str:
    answer = cache.get(f"/pypi/simple/{project}/", {"Accept": accept})
    assert answer.status == 200, answer.body
    return answer.body.decode()


@pytest.mark.parametrize(("kind", "json_version"), [("official", "1.4"), ("tuna", "1.0")])
def test_every_field_reaches_json_and_html_clients(
    kind: str, json_version: str, request: pytest.FixtureRequest, make_cache: Callable[..., RunningCache]
) -> None:
    # The official-like index answers pkgcache in JSON, the TUNA-like one in HTML: each is served in both formats.
    upstream: Upstream = request.getfixturevalue(f"{kind}_upstream")
    upstream.page_extras["alpha"] = _extras("alpha")
    cache = make_cache([upstream.index_url])
    files = _filenames(upstream, "alpha")

    document = json.loads(_page(cache, "alpha", JSON))
    assert upstream.count("/simple/alpha/") == 1  # the page came from the upstream, once
    # TUNA-like pages give no sizes, which 1.1 and later require: pkgcache vouches for 1.0 and still passes all on.
    assert document["meta"] == {
        "api-version": json_version,
        "_last-serial": upstream.serial,
        "tracks": [TRACKS.format("alpha")],
    }
    assert document["project-status"] == {"status": "archived", "reason": REASON}
    assert document["alternate-locations"] == [ALTERNATE.format("alpha")]
    provenance = {entry["filename"]: entry["provenance"] for entry in document["files"]}
    assert provenance == {name: f"../../files/alpha/{name}.provenance" for name in files}

    page = _page(cache, "alpha", HTML)
    assert '<meta name="pypi:repository-version" content="1.4">' in page
    assert '<meta name="pypi:project-status" content="archived">' in page
    assert '<meta name="pypi:project-status-reason" content="superseded by &quot;alpha2&quot; &amp; friends">' in page
    assert f'<meta name="pypi:tracks" content="{TRACKS.format("alpha")}">' in page
    assert f'<meta name="pypi:alternate-locations" content="{ALTERNATE.format("alpha")}">' in page
    for name in files:
        assert f'data-provenance="../../files/alpha/{name}.provenance"' in page
    assert page.rstrip().endswith(f"<!--SERIAL {upstream.serial}-->")
    assert "/integrity/" not in page + json.dumps(document)  # the upstream's provenance URLs stay inside pkgcache
    assert upstream.count("/simple/alpha/") == 1  # both formats were rendered from the one cached copy


@pytest.mark.parametrize("installer", [run_pip_install, run_uv_install], ids=["pip", "uv"])
def test_pip_and_uv_install_from_pages_carrying_every_field(
    installer: Callable[..., object],
    official_upstream: OfficialLikeUpstream,
    make_cache: Callable[..., RunningCache],
    tmp_path: Path,
) -> None:
    for project in ("alpha", "beta", "gamma", "delta-pkg"):
        official_upstream.page_extras[project] = _extras(project)
    cache = make_cache([official_upstream.index_url])
    result = installer(cache.index_url, tmp_path / "target", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    assert official_upstream.count("/simple/alpha/") == 1
    fetched = [r.path for r in official_upstream.files.requests]
    assert any(path.endswith("alpha-2.0-py3-none-any.whl") for path in fetched)
    # What the clients were served carried the fields (the cached copy is what they got).
    assert json.loads(_page(cache, "gamma", JSON))["project-status"]["status"] == "archived"


UNUSABLE_LINKS = [
    '    <a href="javascript:alert(1)">alpha-0.1.tar.gz</a><br />',
    '    <a href="file:///etc/passwd">alpha-0.2.tar.gz</a><br />',
    # A file is named by its URL's last segment, percent-decoded, as pip and uv name it: here an unsafe name.
    '    <a href="../../packages/aa/bb/alpha%5C..%5Calpha-0.3.tar.gz">alpha-0.3.tar.gz</a><br />',
    '    <a href="https://[not-ipv6]/alpha-0.4.tar.gz">alpha-0.4.tar.gz</a><br />',
]


def test_unusable_links_are_left_out_and_cost_neither_the_page_nor_the_upstream(
    tuna_upstream: TunaLikeUpstream, make_cache: Callable[..., RunningCache], tmp_path: Path
) -> None:
    tuna_upstream.page_extras["alpha"] = PageExtras(html_links=UNUSABLE_LINKS, api_version="1.0")
    cache = make_cache([tuna_upstream.index_url])
    document = json.loads(_page(cache, "alpha", JSON))
    assert sorted(entry["filename"] for entry in document["files"]) == _filenames(tuna_upstream, "alpha")
    html = _page(cache, "alpha", HTML)
    assert not any(f"alpha-0.{n}" in html for n in range(1, 5))

    # A client asking for a left-out file is told it is not there; nothing is fetched for it...
    assert cache.get("/pypi/files/alpha/alpha-0.1.tar.gz").status == 404
    assert cache.get("/pypi/files/alpha/alpha-0.2.tar.gz").status == 404
    assert not any("alpha-0." in r.path for r in tuna_upstream.requests)
    # ...and the upstream is not blamed: it stays healthy and serves the rest.
    status = json.loads(cache.get("/-/status").body)
    [only] = status["upstreams"]["pypi"]
    assert only["healthy"] is True and not only["last_error"]
    result = run_pip_install(cache.index_url, tmp_path / "target", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "target") == EXPECTED_TREE
    assert any(r.path.endswith("alpha-2.0-py3-none-any.whl") for r in tuna_upstream.requests)
