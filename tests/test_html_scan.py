"""The quick page reader (pypi/html_scan.py) and the quick link join (parse._quick_resolve) against the stdlib.

Each quick path either gives exactly what html.parser / urljoin give, or declines. Checked on pages of the shapes
indexes write, on hand-made edge cases, and on thousands of seeded random mutations of a real-shaped page; and the
quick paths must actually be taken for the regular shapes (else they would be dead code that only looks fast).
"""

from __future__ import annotations

import html
import random
from html.parser import HTMLParser
from typing import Any

import pytest

from pkgcache.pypi import parse
from pkgcache.pypi.html_scan import scan_html
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.parse import parse_project_page
from pkgcache.pypi.render import render_html

SHA = "ab" * 32
YANK_REASON = 'broken "build" & <worse>'


class _Recorder(HTMLParser):
    """Every event, with consecutive text joined (html.parser may hand text over in pieces)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[Any, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", data))


def _stdlib_events(text: str) -> list[tuple[Any, ...]]:
    recorder = _Recorder()
    recorder.feed(text)
    recorder.close()
    return recorder.events


def _quick_events(text: str) -> list[tuple[Any, ...]] | None:
    recorder = _Recorder()
    return recorder.events if scan_html(text, recorder) else None


def _official_like(count: int) -> str:
    links = []
    for number in range(count):
        filename = f"demo_pkg-1.{number}-py3-none-any.whl"
        href = f"https://files.example.org/packages/{number:02x}/cd/{SHA}/{filename}#sha256={SHA}"
        attrs = [f'href="{html.escape(href)}"', f'data-requires-python="{html.escape(">=3.8, <4")}"']
        attrs.append(f'data-dist-info-metadata="sha256={SHA}" data-core-metadata="sha256={SHA}"')
        if number % 3 == 0:
            attrs.append(f'data-yanked="{html.escape(YANK_REASON)}"')
        if number % 4 == 0:
            attrs.append('data-provenance="https://index.example.org/integrity/demo/1/x/provenance"')
        links.append(f"    <a {' '.join(attrs)}>{filename}</a><br />")
    return (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.4">\n'
        '    <meta name="pypi:project-status" content="archived">\n'
        "    <title>Links for demo-pkg</title>\n  </head>\n  <body>\n    <h1>Links for demo-pkg</h1>\n"
        + "\n".join(links)
        + "\n  </body>\n</html>\n<!--SERIAL 12345-->\n"
    )


def _tuna_like(count: int) -> str:
    links = [
        f'<a href="../../packages/{n:02x}/ef/{SHA[:60]}/demo_pkg-2.{n}.tar.gz#sha256={SHA}" '
        f'data-requires-python="&gt;=3.9">demo_pkg-2.{n}.tar.gz</a><br/>'
        for n in range(count)
    ]
    return "<html><head><title>Links for demo-pkg</title></head><body><h1>Links for demo-pkg</h1>" + "".join(links)


def _written_by_pkgcache() -> str:
    files = tuple(
        DistFile(
            filename=f"demo-1.{n}.tar.gz",
            url=f"http://up.example/x/demo-1.{n}.tar.gz",
            hashes={"sha256": SHA},
            requires_python=">=3.8" if n % 2 else None,
            yanked='reason with "quotes" & <tags>' if n == 1 else n == 2,
            core_metadata={"sha256": SHA} if n % 2 else True,
            gpg_sig=False if n == 3 else None,
            provenance_url="http://up.example/prov" if n == 4 else None,
        )
        for n in range(6)
    )
    return render_html(ProjectPage(name="demo", files=files, last_serial=99)).decode()


REGULAR_PAGES = {
    "official-like": _official_like(40),
    "tuna-like": _tuna_like(40),
    "written by pkgcache": _written_by_pkgcache(),
    "upper case, single quotes, attributes on lines": (
        "<HTML><BODY>\n<A HREF='../x/demo-1.0.tar.gz#md5=00ff' DATA-YANKED>demo-1.0.tar.gz</A><BR>\n"
        '<a\n  href="demo-1.1.tar.gz"\n  data-requires-python="&lt;4"\n>demo-1.1.tar.gz</a >\n</BODY></HTML>'
    ),
    "an anchor holding markup": '<a href="d-1.0.zip"><b>d-1.0.zip</b> &amp; more</a>',
    "empty values and a self-closed anchor": '<a href="" data-yanked="">x</a><a href="d-1.0.zip"/>',
}


@pytest.mark.parametrize("name", sorted(REGULAR_PAGES))
def test_the_quick_reader_reads_the_regular_shapes_as_html_parser_does(name: str) -> None:
    text = REGULAR_PAGES[name]
    assert _quick_events(text) == _stdlib_events(text)


DECLINED = {
    "a script": '<script>var a = "<a href=x.whl>";</script><a href="d-1.0.zip">d-1.0.zip</a>',
    "a style": "<style>a > b {}</style>",
    "an unquoted value": "<a href=d-1.0.zip>d-1.0.zip</a>",
    "attributes run together": '<a href="d-1.0.zip"data-yanked="">d</a>',
    "a lone <": '<p>1 < 2</p><a href="d-1.0.zip">d</a>',
    "a processing instruction": '<?xml version="1.0"?><a href="d.zip">d</a>',
    "CDATA": "<![CDATA[ <a href='x'> ]]>",
    "a comment with -- inside": "<!-- a -- b -->",
    "an abrupt comment": "<!-->",
    "an unterminated comment": "<!-- SERIAL 1",
    "an unterminated tag": '<a href="d-1.0.zip"',
    "a quote left open": '<a href="d-1.0.zip>d</a>',
    "a title holding a tag": "<title>x <b>y</b></title>",
    "a self-closed title": '<title/><a href="d-1.0.zip">d</a>',
    "an end tag with attributes": '<a href="d.zip">d</a class="x">',
    "a < inside a value": '<a href="d.zip" title="<b>">d</a>',
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_the_quick_reader_declines_what_html_parser_may_read_otherwise(name: str) -> None:
    assert _quick_events(DECLINED[name]) is None


def test_a_declined_page_is_still_read_whole_by_html_parser() -> None:
    text = '<script>x = "<a>"</script><a href=d-1.0.tar.gz#sha256=' + SHA + ">d-1.0.tar.gz</a>"
    page = parse_project_page(text.encode(), "http://mirror.example/simple/d/", "d")
    assert [(dist.filename, dist.url, dist.hashes) for dist in page.files] == [
        ("d-1.0.tar.gz", "http://mirror.example/simple/d/d-1.0.tar.gz", {"sha256": SHA})
    ]


# Characters that make or break markup, weighted towards the ones that matter.
_MUTATIONS = [*"<>\"'&=/!-? \n\tabAB#;", "<!--", "-->", "&amp;", "&#x3c;", "</a>", "<a ", "<br/>", "&lt"]


FUZZED_PAGES = {"official-like": _official_like(5), "tuna-like": _tuna_like(6), "pkgcache's": _written_by_pkgcache()}


@pytest.mark.parametrize("base_name", sorted(FUZZED_PAGES))
def test_random_damage_is_read_as_html_parser_reads_it_or_declined(base_name: str) -> None:
    base = FUZZED_PAGES[base_name]
    rng = random.Random(f"html-scan-{base_name}")
    read_quickly = 0
    for _ in range(1500):
        text = base
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text))
            if rng.random() < 0.3:
                text = text[:at] + text[at + rng.randint(1, 6) :]
            else:
                text = text[:at] + rng.choice(_MUTATIONS) + text[at:]
        quick = _quick_events(text)
        if quick is not None:
            read_quickly += 1
            assert quick == _stdlib_events(text), text
    # Most damage lands in text or values the quick reader still reads exactly; some must be declined.
    assert 100 < read_quickly < 1500


BASES = [
    "http://mirror.example/simple/demo/",
    "https://mirror.example:8443/pypi/web/simple/demo/",
    "http://127.0.0.1:3141/root/pypi/+simple/demo/",
    "http://mirror.example/simple/demo",
    "http://mirror.example/",
    "http://mirror.example/a/b/c/d/e/index.html",
    "HTTP://mirror.example/simple/demo/",
    "http://mirror.example//double/demo/",
    "http://mirror.example/simple/./demo/",
    "http://mirror.example/simple/demo/?x=1",
]
LINK_PARTS = ["..", ".", "packages", "ab", "demo-1.0.tar.gz", "d:1", "x;y", "%2E%2E", "", "a b", "~u", "A-Z_09"]
FRAGMENTS = ["", "#sha256=" + SHA, "#", "#md5=00#x", "#a b", "#\tx"]


def _random_link(rng: random.Random) -> str:
    if rng.random() < 0.3:
        start = rng.choice(["https://files.example/", "http://h:8080/", "http://h:99999/", "ftp://h/", "//h/", "/"])
    else:
        start = "../" * rng.randint(0, 7)
    path = "/".join(rng.choice(LINK_PARTS) for _ in range(rng.randint(1, 5)))
    return start + path + rng.choice(FRAGMENTS)


def test_the_quick_link_join_gives_what_urljoin_gives() -> None:
    rng = random.Random("quick-join")
    quick = 0
    for _ in range(20000):
        base, link = rng.choice(BASES), _random_link(rng)
        found = parse._quick_resolve(link, base)
        if found is not None:
            quick += 1
            assert found == parse._resolve_with_urllib(link, base), (base, link)
    assert quick > 1000


@pytest.mark.parametrize(
    ("link", "base", "expected"),
    [
        (
            "../../packages/ab/x-1.0.whl#sha256=00",
            "http://m.example/simple/x/",
            "http://m.example/packages/ab/x-1.0.whl",
        ),
        ("../../../../x-1.0.whl", "http://m.example/simple/x/", "http://m.example/x-1.0.whl"),
        ("x-1.0.whl", "http://m.example:81/simple/x/", "http://m.example:81/simple/x/x-1.0.whl"),
        ("https://f.example/p/x-1.0.whl#md5=00", "http://m.example/simple/x/", "https://f.example/p/x-1.0.whl"),
    ],
)
def test_the_usual_links_take_the_quick_join(link: str, base: str, expected: str) -> None:
    found = parse._quick_resolve(link, base)
    assert found is not None and found[0] == expected
    assert found == parse._resolve_with_urllib(link, base)


def test_quick_only_reads_the_regular_shapes_and_leaves_the_rest_to_the_full_reader() -> None:
    regular = REGULAR_PAGES["tuna-like"].encode()
    page = parse_project_page(regular, "http://m.example/simple/demo-pkg/", "demo-pkg", quick_only=True)
    assert len(page.files) == 40
    declined = DECLINED["a script"].encode()
    with pytest.raises(parse.NeedsFullReader):
        parse_project_page(declined, "http://m.example/simple/d/", "d", quick_only=True)
    assert len(parse_project_page(declined, "http://m.example/simple/d/", "d").files) == 1


@pytest.mark.parametrize(
    "text",
    [
        '<a href="d-1.0.zip">d-1.0.zip</a><a href="d-1.1.zip',  # cut off in transit
        "<a " * 50,
        '<a href="d-1.0.zip">d-1.0.zip</a>' + "<!--x>" * 50,
        '<a href="d-1.0.zip">d-1.0.zip</a><![CDATA[x>',
    ],
)
def test_markup_left_open_is_refused_before_html_parser_reads_it(text: str) -> None:
    assert parse._unterminated_markup(text) is not None
    with pytest.raises(parse.InvalidPage, match="unterminated"):
        parse_project_page(text.encode(), "http://m.example/simple/d/", "d")


def test_markup_closed_after_it_is_opened_goes_to_html_parser() -> None:
    names = [f"d-1.{i}.zip" for i in range(3)]
    link = '<script>x</script><!-- a -- b --><a href="{0}">{0}</a><!--x>'
    text = "".join(link.format(name) for name in names) + "-->"
    assert parse._unterminated_markup(text) is None
    files = parse_project_page(text.encode(), "http://m.example/s/d/", "d").files
    assert [dist.filename for dist in files] == names
