"""Everything an index says about a project survives pkgcache: read from either format, kept, written in either.

PEP 708 tracks and alternate locations, PEP 740 provenance, PEP 792 project status and the upstream's serial, in
both directions (an HTML upstream served as JSON, a JSON upstream served as HTML); the api-version each page
declares; cached page.json files written before these fields; and links that cannot be used, left out of a page
without rejecting it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from urllib.parse import quote

import pytest

from pkgcache.pypi.model import DistFile, ProjectPage, ProjectStatus
from pkgcache.pypi.parse import ContradictoryPage, InvalidPage, parse_project_page
from pkgcache.pypi.render import html_api_version, json_api_version, render_html, render_json

SHA = "a" * 64
UPSTREAM_PAGE = "https://mirrors.example.org/pypi/simple/demo/"
CACHE_PAGE = "http://cache.example.org/pypi/simple/demo/"
WHEEL = "demo-1.0-py3-none-any.whl"
SDIST = "demo-1.0.tar.gz"
PROVENANCE = f"https://mirrors.example.org/integrity/demo/1.0/{WHEEL}/provenance"
TRACKS = "https://mirrors.example.org/simple/demo/"
ALTERNATE = "https://wheels.example.org/simple/demo/"
HTML_WITH_EVERYTHING = f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.4">
    <meta name="pypi:project-status" content="archived">
    <meta name="pypi:project-status-reason" content="moved to &quot;demo2&quot; &amp; co">
    <meta name="pypi:tracks" content="{TRACKS}">
    <meta name="pypi:alternate-locations" content="{ALTERNATE}">
    <meta name="pypi:alternate-locations" content="../../other/demo/">
    <title>Links for demo</title>
  </head>
  <body>
    <h1>Links for demo</h1>
    <a href="../../packages/ab/{WHEEL}#sha256={SHA}" data-provenance="{PROVENANCE}">{WHEEL}</a><br />
    <a href="../../packages/cd/{SDIST}#sha256={SHA}">{SDIST}</a><br />
  </body>
</html>
<!--SERIAL 4242-->
"""
WHEEL_ENTRY: dict[str, object] = {
    "filename": WHEEL,
    "url": f"../../packages/ab/{WHEEL}",
    "hashes": {"sha256": SHA},
    "size": 10,
    "upload-time": "2024-01-01T00:00:00.000000Z",
    "provenance": PROVENANCE,
}
SDIST_ENTRY: dict[str, object] = {
    "filename": SDIST,
    "url": f"../../packages/cd/{SDIST}",
    "hashes": {"sha256": SHA},
    "size": 20,
    "upload-time": "2024-01-02T00:00:00Z",
    "provenance": None,
}
JSON_WITH_EVERYTHING: dict[str, object] = {
    "meta": {"api-version": "1.4", "_last-serial": 4242, "tracks": [TRACKS]},
    "name": "demo",
    "project-status": {"status": "archived", "reason": 'moved to "demo2" & co'},
    "alternate-locations": [ALTERNATE, "../../other/demo/"],
    "files": [WHEEL_ENTRY, SDIST_ENTRY],
    "versions": ["1.0"],
}


def _parse(body: bytes | str, url: str = UPSTREAM_PAGE) -> ProjectPage:
    return parse_project_page(body.encode() if isinstance(body, str) else body, url, "demo")


def _assert_everything(page: ProjectPage, provenance: str = PROVENANCE) -> None:
    assert page.status == ProjectStatus("archived", 'moved to "demo2" & co')
    assert page.tracks == (TRACKS,)
    # Relative locations are made absolute against the page they came from.
    assert page.alternate_locations == (ALTERNATE, "https://mirrors.example.org/pypi/other/demo/")
    assert page.last_serial == 4242
    wheel, sdist = page.files
    assert wheel.provenance_url == provenance and sdist.provenance_url is None


# --- reading each format ---


def test_everything_is_read_from_html() -> None:
    page = _parse(HTML_WITH_EVERYTHING)
    _assert_everything(page)
    assert page.files[0].url == f"https://mirrors.example.org/pypi/packages/ab/{WHEEL}"


def test_everything_is_read_from_json() -> None:
    page = _parse(json.dumps(JSON_WITH_EVERYTHING))
    _assert_everything(page)
    assert [dist.size for dist in page.files] == [10, 20]
    assert page.files[1].upload_time == "2024-01-02T00:00:00Z"


def test_project_status_inside_meta_as_the_specification_example_writes_it() -> None:
    document = {"meta": {"api-version": "1.4", "project-status": "deprecated", "project-status-reason": "use x"}}
    page = _parse(json.dumps({**document, "name": "demo", "files": []}))
    assert page.status == ProjectStatus("deprecated", "use x")


@pytest.mark.parametrize(
    ("html_head", "json_status", "expected"),
    [
        ("", None, None),
        ('<meta name="pypi:project-status" content="quarantined">', {"status": "quarantined"}, "quarantined"),
        # PEP 792: a reason without a status is a reason for being active.
        ('<meta name="pypi:project-status-reason" content="why">', {"reason": "why"}, "active"),
        ('<meta name="pypi:project-status" content="">', {}, None),
    ],
)
def test_project_status_variants(html_head: str, json_status: dict[str, str] | None, expected: str | None) -> None:
    html = f"<html><head>{html_head}<title>Links for demo</title></head><body></body></html>"
    document: dict[str, object] = {"meta": {"api-version": "1.4"}, "name": "demo", "files": []}
    if json_status is not None:
        document["project-status"] = json_status
    for page in (_parse(html), _parse(json.dumps(document))):
        assert (page.status.status if page.status else None) == expected


# --- writing each format ---


def test_a_json_upstream_served_as_html_keeps_everything() -> None:
    html = render_html(_parse(json.dumps(JSON_WITH_EVERYTHING))).decode()
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert '<meta name="pypi:project-status" content="archived">' in html
    assert '<meta name="pypi:project-status-reason" content="moved to &quot;demo2&quot; &amp; co">' in html
    assert f'<meta name="pypi:tracks" content="{TRACKS}">' in html
    assert f'<meta name="pypi:alternate-locations" content="{ALTERNATE}">' in html
    # The provenance is linked through pkgcache, like the file; the upstream's URL is not shown.
    assert f'data-provenance="../../files/demo/{WHEEL}.provenance"' in html
    assert "integrity" not in html and html.count("data-provenance") == 1
    assert html.rstrip().endswith("</html>\n<!--SERIAL 4242-->")


def test_an_html_upstream_served_as_json_keeps_everything() -> None:
    document = json.loads(render_json(_parse(HTML_WITH_EVERYTHING)))
    assert document["meta"]["_last-serial"] == 4242
    assert document["meta"]["tracks"] == [TRACKS]
    assert document["project-status"] == {"status": "archived", "reason": 'moved to "demo2" & co'}
    assert document["alternate-locations"] == [ALTERNATE, "https://mirrors.example.org/pypi/other/demo/"]
    wheel, sdist = document["files"]
    assert wheel["provenance"] == f"../../files/demo/{WHEEL}.provenance"
    assert "provenance" not in sdist
    assert "integrity" not in json.dumps(document)
    # An HTML upstream gives no sizes, which every version from 1.1 on requires: 1.0, with the newer fields in it.
    assert document["meta"]["api-version"] == "1.0"


def _page_with_everything() -> ProjectPage:
    return _parse(json.dumps(JSON_WITH_EVERYTHING))


@pytest.mark.parametrize("render", [render_html, render_json], ids=["html", "json"])
@pytest.mark.parametrize(
    "change",
    [
        {},
        {"status": None},
        {"status": ProjectStatus("deprecated")},
        {"tracks": (), "alternate_locations": ()},
        {"tracks": ("https://a.example.org/simple/demo/", "https://b.example.org/simple/demo/")},
        {"last_serial": None},
        {"last_serial": 0},
    ],
    ids=["everything", "no-status", "status-without-reason", "no-pep708", "two-tracks", "no-serial", "serial-0"],
)
def test_what_pkgcache_renders_reads_back_the_same(
    render: Callable[[ProjectPage], bytes], change: dict[str, object]
) -> None:
    page = dataclasses.replace(_page_with_everything(), **change)
    again = parse_project_page(render(page), CACHE_PAGE, "demo")
    assert (again.status, again.tracks, again.alternate_locations, again.last_serial) == (
        page.status,
        page.tracks,
        page.alternate_locations,
        page.last_serial,
    )
    # Provenance now points through pkgcache, beside the file.
    assert [dist.provenance_url for dist in again.files] == [
        f"http://cache.example.org/pypi/files/demo/{WHEEL}.provenance",
        None,
    ]
    assert [dist.url for dist in again.files] == [
        f"http://cache.example.org/pypi/files/demo/{name}" for name in (WHEEL, SDIST)
    ]


def test_a_file_without_provenance_says_nothing_about_it() -> None:
    page = dataclasses.replace(_page_with_everything(), files=(DistFile(SDIST, "https://m.example.org/x", size=1),))
    assert "provenance" not in render_html(page).decode()
    assert "provenance" not in json.loads(render_json(page))["files"][0]


# --- the api-version each page declares ---


def _files(*, sizes: bool, provenance: bool = False) -> tuple[DistFile, ...]:
    return (
        DistFile(
            WHEEL,
            "https://m.example.org/w",
            size=10 if sizes else None,
            provenance_url=PROVENANCE if provenance else None,
        ),
        DistFile(SDIST, "https://m.example.org/s", size=20 if sizes else None),
    )


@pytest.mark.parametrize(
    ("page", "html_version", "json_version"),
    [
        (ProjectPage("demo", _files(sizes=True)), "1.0", "1.1"),
        (ProjectPage("demo", _files(sizes=False)), "1.0", "1.0"),
        (ProjectPage("demo", ()), "1.0", "1.1"),
        (ProjectPage("demo", _files(sizes=True), last_serial=7), "1.0", "1.1"),  # `_last-serial` is private: 1.0
        (ProjectPage("demo", _files(sizes=True), tracks=(TRACKS,)), "1.2", "1.2"),
        (ProjectPage("demo", _files(sizes=True), alternate_locations=(ALTERNATE,)), "1.2", "1.2"),
        (ProjectPage("demo", _files(sizes=True, provenance=True)), "1.3", "1.3"),
        (ProjectPage("demo", _files(sizes=True, provenance=True), tracks=(TRACKS,)), "1.3", "1.3"),
        (ProjectPage("demo", _files(sizes=True), status=ProjectStatus()), "1.4", "1.4"),
        (ProjectPage("demo", (), status=ProjectStatus("quarantined")), "1.4", "1.4"),
        # Sizes are required from 1.1 on: without them JSON can only be vouched for as 1.0.
        (ProjectPage("demo", _files(sizes=False, provenance=True), status=ProjectStatus()), "1.4", "1.0"),
    ],
)
def test_each_page_declares_the_lowest_version_that_covers_what_it_says(
    page: ProjectPage, html_version: str, json_version: str
) -> None:
    assert (html_api_version(page), json_api_version(page)) == (html_version, json_version)
    assert f'<meta name="pypi:repository-version" content="{html_version}">' in render_html(page).decode()
    assert json.loads(render_json(page))["meta"]["api-version"] == json_version


def test_an_upstream_newer_than_pkgcache_is_served_as_what_pkgcache_can_vouch_for() -> None:
    # 1.9 may add fields pkgcache does not know: they are not passed on, so neither is the version.
    document = {**JSON_WITH_EVERYTHING, "meta": {"api-version": "1.9"}, "project-status": None, "future-field": 1}
    page = _parse(json.dumps(document))
    rendered = json.loads(render_json(page))
    assert rendered["meta"]["api-version"] == "1.3" and "future-field" not in rendered


def test_an_html_page_of_another_major_version_is_not_read() -> None:
    html = '<html><head><meta name="pypi:repository-version" content="2.0"></head><body>'
    with pytest.raises(InvalidPage, match=r"2\.0"):
        _parse(html + f'<a href="/x/{WHEEL}">{WHEEL}</a></body></html>')


# --- page.json written before these fields ---

# ProjectPage.to_json() of a page as the code before these fields wrote it (generated with that code).
OLD_PAGE_JSON = {
    "name": "demo",
    "files": [
        {
            "filename": WHEEL,
            "url": f"https://mirrors.example.org/pypi/packages/ab/cd/{WHEEL}",
            "hashes": {"sha256": SHA},
            "requires_python": ">=3.8",
            "yanked": False,
            "core_metadata": {"sha256": "b" * 64},
            "gpg_sig": None,
            "size": 10,
            "upload_time": "2024-01-01T00:00:00.000000Z",
        },
        {
            "filename": "demo-0.9.tar.gz",
            "url": "https://mirrors.example.org/pypi/packages/ef/01/demo-0.9.tar.gz",
            "hashes": {},
            "requires_python": None,
            "yanked": "bad",
            "core_metadata": False,
            "gpg_sig": False,
            "size": None,
            "upload_time": None,
        },
    ],
    "versions": ["0.9", "1.0"],
    "last_serial": 4242,
}


def test_a_page_json_written_before_these_fields_still_loads() -> None:
    page = ProjectPage.from_json(json.loads(json.dumps(OLD_PAGE_JSON)))
    assert (page.status, page.tracks, page.alternate_locations, page.last_serial) == (None, (), (), 4242)
    wheel, sdist = page.files
    assert (wheel.provenance_url, wheel.core_metadata, wheel.size) == (None, {"sha256": "b" * 64}, 10)
    assert (sdist.yanked, sdist.gpg_sig) == ("bad", False)
    # And it is served as it was before: same files, same versions.
    document = json.loads(render_json(page))
    assert [entry["filename"] for entry in document["files"]] == [WHEEL, "demo-0.9.tar.gz"]
    assert document["versions"] == ["0.9", "1.0"] and document["meta"]["api-version"] == "1.0"


def test_page_json_round_trips_every_field() -> None:
    page = _page_with_everything()
    assert ProjectPage.from_json(json.loads(json.dumps(page.to_json()))) == page


def test_page_json_from_a_newer_pkgcache_loads_without_what_it_does_not_know() -> None:
    data = _page_with_everything().to_json()
    data["some_future_field"] = [1]
    data["files"][0]["another_future_field"] = True
    assert ProjectPage.from_json(data) == _page_with_everything()


# --- links that cannot be used are left out, and the page is kept ---

# Links whose URL names a distribution (a file is named by its URL, as pip and uv name it), that cannot be fetched.
BAD_LINKS = [
    ("javascript:alert(1)//demo-0.1.tar.gz", "demo-0.1.tar.gz"),
    ("file:///etc/demo-0.2.tar.gz", "demo-0.2.tar.gz"),
    ("data:application/zip;base64,UEsFBg==/demo-0.3-py3-none-any.whl", "demo-0.3-py3-none-any.whl"),
    ("ftp://mirrors.example.org/demo-0.4.tar.gz", "demo-0.4.tar.gz"),
    ("http:///no-host/demo-0.5.tar.gz", "demo-0.5.tar.gz"),
    # Malformed: urllib raises for these, the HTTP client would have refused them at download time.
    ("https://[not-ipv6]/demo-0.6.tar.gz", "demo-0.6.tar.gz"),
    ("https://mirrors.example.org:99999/demo-0.7.tar.gz", "demo-0.7.tar.gz"),
    ("https://mirrors example.org/demo-0.8.tar.gz", "demo-0.8.tar.gz"),
    # Control characters (here from another scheme than the page's, which urljoin passes through untouched).
    ("http://mirrors.example.org/de\nmo-0.81.tar.gz", "demo-0.81.tar.gz"),
    ("https://mirrors.example.org/de\x01mo-0.82.tar.gz", "demo-0.82.tar.gz"),
]
UNSAFE_NAMES = [
    "..\\..\\demo-0.9.tar.gz",
    "../../demo-0.10.tar.gz",
    ".demo-0.11.tar.gz",
    "demo\x01-0.12.tar.gz",
    "d" * 250 + "-1.0.tar.gz",
]


def _html_page(anchors: list[tuple[str, str]], title: str = "Links for demo") -> str:
    links = "\n".join(f'<a href="{href}">{text}</a>' for href, text in anchors)
    return f"<html><head><title>{title}</title></head><body>{links}</body></html>"


def test_unusable_html_links_are_left_out_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    good = (f"../../packages/ab/{WHEEL}#sha256={SHA}", WHEEL)
    unsafe = [(f"../../packages/x/{quote(name, safe='')}", f"{i}.tar.gz") for i, name in enumerate(UNSAFE_NAMES)]
    with caplog.at_level(logging.WARNING, logger="pkgcache.pypi.parse"):
        page = _parse(_html_page([*BAD_LINKS, good, *unsafe]))
    assert [dist.filename for dist in page.files] == [WHEEL]
    [record] = caplog.records
    message = record.getMessage()
    assert f"left out {len(BAD_LINKS) + len(UNSAFE_NAMES)} unusable entries" in message
    assert "javascript:alert(1)" in message and "file:///etc/demo-0.2.tar.gz" in message


def test_a_page_whose_every_file_link_is_unusable_is_still_a_page(caplog: pytest.LogCaptureFixture) -> None:
    # No title, no meta tag: the links named like distributions are what shows it is a project page.
    page = _parse(_html_page(BAD_LINKS, title="demo"))
    assert page.files == ()
    assert f"left out {len(BAD_LINKS)}" in caplog.text


def test_a_file_name_taken_from_the_url_is_checked_too() -> None:
    page = _parse(_html_page([("../../packages/%2e%2e%5cdemo-1.0.tar.gz", ""), (f"../../packages/{WHEEL}", "")]))
    assert [dist.filename for dist in page.files] == [WHEEL]


def test_what_is_logged_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    _parse(_html_page([("javascript:x/forged%0D%0AERROR%20demo-1.0.tar.gz", "demo-1.0.tar.gz")]))
    assert "\n" not in caplog.records[0].getMessage() and "\\r\\n" in caplog.records[0].getMessage()


def test_unusable_json_entries_are_left_out_and_the_page_kept(caplog: pytest.LogCaptureFixture) -> None:
    entries: list[object] = [{"filename": name, "url": url, "hashes": {}} for url, name in BAD_LINKS]
    entries += [{"filename": name, "url": f"/packages/{i}.tar.gz", "hashes": {}} for i, name in enumerate(UNSAFE_NAMES)]
    entries += ["not an object", {"filename": SDIST}, {"filename": SDIST, "url": "/x", "hashes": []}]
    entries.append(WHEEL_ENTRY)
    document = {**JSON_WITH_EVERYTHING, "files": entries}
    page = _parse(json.dumps(document))
    assert [dist.filename for dist in page.files] == [WHEEL]
    assert f"left out {len(entries) - 1} unusable entries" in caplog.text


def test_an_unusable_provenance_or_location_is_dropped_and_its_file_kept(caplog: pytest.LogCaptureFixture) -> None:
    html = HTML_WITH_EVERYTHING.replace(PROVENANCE, "javascript:alert(1)").replace(TRACKS, "file:///srv/demo/")
    page = _parse(html)
    assert [dist.filename for dist in page.files] == [WHEEL, SDIST]
    assert page.files[0].provenance_url is None and page.tracks == ()
    assert "left out 2" in caplog.text


def test_a_malformed_upload_time_is_dropped_and_its_file_kept(caplog: pytest.LogCaptureFixture) -> None:
    # uv refuses a whole page over one upload-time it cannot read.
    files = [
        {**WHEEL_ENTRY, "filename": name, "upload-time": value}
        for name, value in ((WHEEL, "yesterday"), (SDIST, "2024-13-45T00:00:00Z"))
    ]
    page = _parse(json.dumps({**JSON_WITH_EVERYTHING, "files": files}))
    assert [dist.upload_time for dist in page.files] == [None, None]
    assert "left out 2" in caplog.text


def test_a_file_name_listed_twice_alike_is_one_entry() -> None:
    # An exact repeat, and one file linked from two places with the same hashes: the same bytes either way.
    elsewhere = {**WHEEL_ENTRY, "url": f"https://files.example.org/p/{WHEEL}"}
    page = _parse(json.dumps({**JSON_WITH_EVERYTHING, "files": [WHEEL_ENTRY, SDIST_ENTRY, WHEEL_ENTRY, elsewhere]}))
    assert [(dist.filename, dist.url) for dist in page.files] == [
        (WHEEL, f"https://mirrors.example.org/pypi/packages/ab/{WHEEL}"),
        (SDIST, f"https://mirrors.example.org/pypi/packages/cd/{SDIST}"),
    ]
    # The same link twice, no hash: the same URL, so the same file.
    twice = _html_page([(f"../../packages/cd/{SDIST}", SDIST)] * 2)
    assert [dist.filename for dist in _parse(twice).files] == [SDIST]


@pytest.mark.parametrize(
    "other",
    [
        {"hashes": {"sha256": "c" * 64}},  # other bytes
        {"url": f"../../packages/cd/{WHEEL}", "hashes": {"sha256": "c" * 64}, "provenance": None},  # elsewhere
        {"size": 11},  # the same hash and another size: one of them is wrong
    ],
)
def test_a_file_name_listed_twice_differently_makes_the_page_contradict_itself(other: dict[str, object]) -> None:
    # pip takes the last entry of a name and uv the first: pkgcache serves one file under a name and does not guess.
    # The page is refused (the next upstream's is asked for). What is left otherwise lists the file once, undecided:
    # what its entries agree on, no hash, size or metadata, and the entries, among which the bytes fetched decide.
    document = {**JSON_WITH_EVERYTHING, "files": [WHEEL_ENTRY, SDIST_ENTRY, {**WHEEL_ENTRY, **other}]}
    with pytest.raises(ContradictoryPage) as raised:
        _parse(json.dumps(document))
    assert isinstance(raised.value, InvalidPage)
    assert raised.value.files == (WHEEL,) and WHEEL in str(raised.value)
    assert [dist.filename for dist in raised.value.page.files] == [WHEEL, SDIST]
    undecided = raised.value.page.files[0]
    assert undecided.url == f"https://mirrors.example.org/pypi/packages/ab/{WHEEL}"  # the first entry's link
    assert (undecided.hashes, undecided.size, undecided.core_metadata) == ({}, None, False)
    assert undecided.upload_time == "2024-01-01T00:00:00.000000Z"  # the same in both
    assert undecided.provenance_url == (PROVENANCE if "provenance" not in other else None)
    assert [(dist.hashes, dist.size) for dist in undecided.candidates] == [
        ({"sha256": SHA}, 10),
        (other.get("hashes", {"sha256": SHA}), other.get("size", 10)),
    ]
    assert raised.value.page.files[1].candidates == ()
    assert raised.value.page.tracks == (TRACKS,)  # the rest of the page as read
    # Kept and read back as such (page.json).
    again = ProjectPage.from_json(json.loads(json.dumps(raised.value.page.to_json())))
    assert again == raised.value.page


def test_a_file_name_listed_twice_with_nothing_to_tell_its_entries_apart_is_left_out() -> None:
    # Elsewhere, and no hash shows whether they are the same bytes: the bytes could not decide.
    other = {"url": f"../../packages/cd/{WHEEL}", "hashes": {}}
    document = {**JSON_WITH_EVERYTHING, "files": [WHEEL_ENTRY, SDIST_ENTRY, {**WHEEL_ENTRY, **other}]}
    with pytest.raises(ContradictoryPage) as raised:
        _parse(json.dumps(document))
    assert raised.value.files == (WHEEL,)
    assert [dist.filename for dist in raised.value.page.files] == [SDIST]


def test_a_file_listed_twice_on_an_html_page_with_other_hashes_contradicts_it() -> None:
    links = [
        (f"../../packages/ab/{WHEEL}#sha256={SHA}", WHEEL),
        (f"../../packages/cd/{WHEEL}#sha256={'c' * 64}", WHEEL),
    ]
    with pytest.raises(ContradictoryPage) as raised:
        _parse(_html_page([*links, (f"../../packages/cd/{SDIST}", SDIST)]))
    assert [dist.filename for dist in raised.value.page.files] == [WHEEL, SDIST]
    assert [dist.hashes for dist in raised.value.page.files[0].candidates] == [{"sha256": SHA}, {"sha256": "c" * 64}]


def test_a_file_is_named_by_its_url_not_by_its_link_text() -> None:
    # pip and uv name a file by its URL's last segment. nginx's autoindex cuts a name past 50 characters in the
    # text ("..>"); a text may name another file; the URL's name is percent-decoded.
    long_wheel = "demo-2.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    links = [
        (long_wheel, long_wheel[:47] + "..&gt;"),
        (f"../../packages/ab/{WHEEL}#sha256={SHA}", "demo-9.9-py3-none-any.whl"),
        ("../../packages/cd/demo-1.0%2Blocal.tar.gz", "demo-1.0+local.tar.gz"),
        ("../../packages/ef/demo-3.0.tar.gz", ""),
    ]
    page = _parse(_html_page(links, title="Index of /simple/demo/"))
    assert [(dist.filename, dist.url.rsplit("/", 1)[-1]) for dist in page.files] == [
        (long_wheel, long_wheel),
        (WHEEL, WHEEL),
        ("demo-1.0+local.tar.gz", "demo-1.0%2Blocal.tar.gz"),
        ("demo-3.0.tar.gz", "demo-3.0.tar.gz"),
    ]
    assert page.files[1].hashes == {"sha256": SHA}


def test_a_link_named_like_a_file_only_by_its_text_is_no_file() -> None:
    # What pip and uv see: a URL whose name is not a distribution's is no file to them, whatever its text says.
    page = _parse(_html_page([("../../download?id=1", WHEEL), (f"../../packages/cd/{SDIST}", SDIST)]))
    assert [dist.filename for dist in page.files] == [SDIST]


@pytest.mark.parametrize("name", ["other", "Other_Project", "demo2"])
def test_a_json_page_of_another_project_is_no_page_of_this_one(name: str) -> None:
    # A mirror's (or its CDN's) mix-up: refused, so that the next upstream is asked, and nothing is cached.
    with pytest.raises(InvalidPage, match="another project"):
        _parse(json.dumps({**JSON_WITH_EVERYTHING, "name": name}))


@pytest.mark.parametrize("name", ["demo", "Demo", "DEMO", " demo", None, "", 7])
def test_a_json_page_named_as_asked_or_not_named_is_taken(name: object) -> None:
    document = {key: value for key, value in JSON_WITH_EVERYTHING.items() if key != "name"}
    if name is not None:
        document["name"] = name
    assert [dist.filename for dist in _parse(json.dumps(document)).files] == [WHEEL, SDIST]


def test_a_json_page_is_read_under_any_spelling_of_the_name_asked_for() -> None:
    body = json.dumps({**JSON_WITH_EVERYTHING, "name": "Zope.Interface"}).encode()
    page = parse_project_page(body, UPSTREAM_PAGE, "zope-interface")
    assert page.name == "zope-interface" and len(page.files) == 2


@pytest.mark.parametrize(
    "suffix", [".tar.gz", ".zip", ".tar.bz2", ".tbz", ".tgz", ".tar", ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma"]
)
def test_every_sdist_kind_pip_reads_is_listed(suffix: str) -> None:
    # pip's archive kinds (pip/_internal/utils/filetypes.py); uv reads those and .tar.zst.
    name = f"demo-1.0{suffix}"
    page = _parse(_html_page([(f"../../packages/ab/{name}#sha256={SHA}", name)]))
    assert [dist.filename for dist in page.files] == [name]


def test_sdist_kinds_uv_reads_are_listed_and_others_are_not() -> None:
    links = [(f"../../packages/ab/demo-1.0{suffix}", "") for suffix in (".tar.zst", ".tar.7z", ".rar", ".tar.Z")]
    assert [dist.filename for dist in _parse(_html_page(links)).files] == ["demo-1.0.tar.zst"]


def test_booleans_are_neither_sizes_nor_serials() -> None:
    document = {**JSON_WITH_EVERYTHING, "meta": {"api-version": "1.1", "_last-serial": True}}
    document["files"] = [{**WHEEL_ENTRY, "size": True}]
    page = _parse(json.dumps(document))
    assert (page.last_serial, page.files[0].size) == (None, None)


def test_relative_links_follow_the_pages_base() -> None:
    html = '<html><head><base href="https://files.example.org/root/"><title>Links for demo</title></head><body>'
    html += f'<a href="packages/{WHEEL}" data-provenance="att/{WHEEL}">{WHEEL}</a></body></html>'
    [dist] = _parse(html).files
    assert dist.url == f"https://files.example.org/root/packages/{WHEEL}"
    assert dist.provenance_url == f"https://files.example.org/root/att/{WHEEL}"


def test_a_base_that_is_not_http_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    html = f'<html><head><base href="javascript:void(0)"></head><body><a href="p/{WHEEL}">{WHEEL}</a></body></html>'
    [dist] = _parse(html).files
    assert dist.url == f"https://mirrors.example.org/pypi/simple/demo/p/{WHEEL}"
    assert "<base href=" in caplog.text


@pytest.mark.parametrize(
    "href",
    [
        f"https://mirrors.example.org:8443/p/{WHEEL}",
        f"HTTPS://Mirrors.Example.org/p/{WHEEL}",
        f"https://mirrors.example.org:65535/p/{WHEEL}",
        f"https://bücher.example/p/{WHEEL}",
        f"http://[::1]:8080/p/{WHEEL}",
        f"https://user@mirrors.example.org/p/{WHEEL}?x=1",
        f"//other.example.org/p/{WHEEL}",
    ],
)
def test_unusual_but_valid_links_are_kept(href: str, caplog: pytest.LogCaptureFixture) -> None:
    [dist] = _parse(_html_page([(href, WHEEL)])).files
    assert dist.url.lower().endswith(f"/p/{WHEEL}".lower()) or dist.url.endswith("?x=1")
    assert not caplog.records
