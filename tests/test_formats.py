"""Reading upstream pages in both formats and writing them back with pkgcache's links."""

from __future__ import annotations

import json

import pytest

from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.negotiate import choose_format
from pkgcache.pypi.parse import InvalidPage, parse_project_page
from pkgcache.pypi.render import HTML_CONTENT_TYPE, JSON_CONTENT_TYPE, TEXT_HTML, render_html, render_json

SHA = "a" * 64
META_SHA = "b" * 64

TUNA_STYLE_HTML = f"""<!DOCTYPE html>
<html><head><title>Links for demo</title></head><body><h1>Links for demo</h1>
<a href="../../packages/aa/bb/cc/demo-1.0-py3-none-any.whl#sha256={SHA}"
   data-requires-python="&gt;=3.8">demo-1.0-py3-none-any.whl</a><br/>
<a href="../../packages/aa/bb/dd/demo-0.9.tar.gz#sha256={SHA}" data-yanked="broken build">demo-0.9.tar.gz</a><br/>
<a href="../../packages/aa/bb/ee/demo-0.8.tar.gz" data-yanked="">demo-0.8.tar.gz</a><br/>
</body></html>
<!--SERIAL 4242-->
"""


def test_relative_html_links_resolve_against_the_page_url() -> None:
    page = parse_project_page(TUNA_STYLE_HTML.encode(), "https://mirror.test/simple/demo/", "demo")
    first, yanked, yanked_no_reason = page.files
    assert first.url == "https://mirror.test/packages/aa/bb/cc/demo-1.0-py3-none-any.whl"
    assert first.hashes == {"sha256": SHA}
    assert first.requires_python == ">=3.8"
    assert first.core_metadata is False
    assert yanked.yanked == "broken build"
    assert yanked_no_reason.yanked is True
    assert yanked_no_reason.hashes == {}
    assert page.last_serial == 4242


def test_both_metadata_spellings_are_read() -> None:
    for attribute in ("data-core-metadata", "data-dist-info-metadata"):
        link = f"https://files.test/p/x-1.0-py3-none-any.whl#sha256={SHA}"
        html = f'<a href="{link}" {attribute}="sha256={META_SHA}">x-1.0-py3-none-any.whl</a>'
        page = parse_project_page(html.encode(), "https://index.test/simple/x/", "x")
        assert page.files[0].core_metadata == {"sha256": META_SHA}


def test_json_is_recognised_whatever_its_label() -> None:
    document = {
        "meta": {"api-version": "1.1", "_last-serial": 7},
        "name": "x",
        "files": [
            {
                "filename": "x-1.0-py3-none-any.whl",
                "url": "https://files.test/packages/ab/cd/x-1.0-py3-none-any.whl",
                "hashes": {"sha256": SHA},
                "requires-python": ">=3.9",
                "core-metadata": {"sha256": META_SHA},
                "yanked": False,
                "size": 123,
                "upload-time": "2024-01-01T00:00:00.000000Z",
            }
        ],
        "versions": ["1.0"],
    }
    page = parse_project_page(json.dumps(document).encode(), "https://index.test/simple/x/", "x")
    dist = page.files[0]
    assert dist.size == 123 and dist.upload_time and dist.core_metadata == {"sha256": META_SHA}
    assert page.versions == ("1.0",) and page.last_serial == 7


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"meta": {"api-version": "2.0"}, "files": []}',
        b"<html><body><h1>Please log in</h1><a href='/login'>login</a></body></html>",
        bytes(range(256)) * 4,
        # Nested deeper than json's recursion limit: a RecursionError inside the parser, a bad page all the same.
        b'{"meta": {"api-version": "1.0"}, "files": [], "x": ' + b"[" * 1200 + b"]" * 1200 + b"}",
    ],
)
@pytest.mark.parametrize("quick_only", [False, True])
def test_garbage_is_not_a_page(body: bytes, quick_only: bool) -> None:
    with pytest.raises(InvalidPage):
        parse_project_page(body, "https://index.test/simple/x/", "x", quick_only=quick_only)


@pytest.mark.parametrize("markup", ["", "<script>var x;</script>"])  # the quick reader, then html.parser
def test_a_serial_of_thousands_of_digits_is_no_serial(markup: str) -> None:
    # int() refuses to read it (a ValueError where nothing expected one): the page is read, without a serial.
    body = f"<html><body>{markup}<a href='demo-1.0.tar.gz'>demo-1.0.tar.gz</a></body></html><!--SERIAL {'9' * 5000}-->"
    page = parse_project_page(body.encode(), "https://index.test/simple/demo/", "demo")
    assert [dist.filename for dist in page.files] == ["demo-1.0.tar.gz"] and page.last_serial is None


def test_an_empty_project_page_is_still_a_page() -> None:
    page = parse_project_page(b"<html><title>Links for x</title><body></body></html>", "https://i.test/simple/x/", "x")
    assert page.files == ()


def _sample_page() -> ProjectPage:
    return ProjectPage(
        name="demo",
        files=(
            DistFile(
                filename="demo-1.0-py3-none-any.whl",
                url="https://elsewhere.test/packages/demo-1.0-py3-none-any.whl",
                hashes={"sha256": SHA},
                requires_python=">=3.8",
                core_metadata={"sha256": META_SHA},
                size=10,
            ),
            DistFile(filename="demo-0.9.tar.gz", url="https://elsewhere.test/x", hashes={}, yanked="bad", size=5),
        ),
    )


def test_rendered_pages_link_only_to_pkgcache_and_keep_what_upstream_said() -> None:
    page = _sample_page()
    html = render_html(page).decode()
    assert "elsewhere.test" not in html
    assert f'href="../../files/demo/demo-1.0-py3-none-any.whl#sha256={SHA}"' in html
    assert 'data-requires-python="&gt;=3.8"' in html
    assert f'data-core-metadata="sha256={META_SHA}"' in html
    assert f'data-dist-info-metadata="sha256={META_SHA}"' in html
    assert 'data-yanked="bad"' in html
    document = json.loads(render_json(page))
    assert document["meta"]["api-version"] == "1.1"
    assert document["versions"] == ["0.9", "1.0"]
    first = document["files"][0]
    assert first["url"] == "../../files/demo/demo-1.0-py3-none-any.whl"
    assert first["core-metadata"] == {"sha256": META_SHA}
    assert "elsewhere.test" not in json.dumps(document)


def test_render_then_parse_round_trips() -> None:
    page = _sample_page()
    for body in (render_html(page), render_json(page)):
        again = parse_project_page(body, "http://cache.test/pypi/simple/demo/", "demo")
        assert [d.filename for d in again.files] == [d.filename for d in page.files]
        assert again.files[0].url == "http://cache.test/pypi/files/demo/demo-1.0-py3-none-any.whl"
        assert again.files[0].core_metadata == {"sha256": META_SHA}
        assert again.files[1].yanked == "bad"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT_HTML),
        ("*/*", TEXT_HTML),
        ("text/html,application/xhtml+xml,*/*;q=0.8", TEXT_HTML),
        # pip's and uv's headers
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
            JSON_CONTENT_TYPE,
        ),
        ("application/vnd.pypi.simple.v1+html;q=0.2, application/vnd.pypi.simple.v1+json", JSON_CONTENT_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0.1, application/vnd.pypi.simple.v1+html", HTML_CONTENT_TYPE),
        ("application/vnd.pypi.simple.latest+json", JSON_CONTENT_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0", None),
        ("image/png", None),
    ],
)
def test_accept_header_with_quality_values(accept: str | None, expected: str | None) -> None:
    assert choose_format(accept) == expected


def test_format_query_parameter_wins() -> None:
    assert choose_format("text/html", "application/vnd.pypi.simple.v1+json") == JSON_CONTENT_TYPE
