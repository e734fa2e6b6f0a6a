"""A quick reader for the regular HTML that package indexes write; it gives up on anything else.

Simple-API pages (PEP 503) all have one shape: a doctype, a few meta tags, one anchor per file with quoted
attributes, perhaps a serial comment, plain text. html.parser reads any HTML, at about 10 µs per anchor in pure
Python; a cold page miss of a big project spent most of its time there. `scan_html` reads that one shape with a few
regular expressions, handing the same events to the same handler methods html.parser would call
(`handle_starttag`, `handle_endtag`, `handle_data`, `handle_comment`), and returns False at the first thing outside
it: script, style and other raw-text elements, CDATA, processing instructions, a `<` that opens no tag, an
unquoted or unusual attribute, a comment with `--` inside. The caller then reads the page again with html.parser,
from a fresh handler. So a page is read either exactly as html.parser reads it or by html.parser itself:
tests/test_html_scan.py checks both readers agree on every page they both read.

What is read is read as html.parser does: tag and attribute names in lower case, character references resolved in
attribute values and in text, an attribute without a value as None, `<tag/>` as a start and an end.
"""

from __future__ import annotations

import re
from html import unescape
from typing import Protocol

# Elements whose content html.parser reads as raw text (some only in newer Pythons): a page with one is left to it.
# A title is read too, when it holds plain text: then every version of html.parser reads it the same.
_RAW_TEXT_ELEMENTS = frozenset(
    {"script", "style", "textarea", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext"}
)
_TITLE_END = re.compile(r"</title[ \t\n\r\f]*>", re.IGNORECASE)
_SPACE = "[ \t\n\r\f]"
_START_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)")
# One attribute, preceded by white space: a plain name, and a quoted value or none.
_ATTRIBUTE = re.compile(rf"{_SPACE}+([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:{_SPACE}*={_SPACE}*(?:\"([^\"<]*)\"|'([^'<]*)'))?")
_TAG_CLOSE = re.compile(rf"{_SPACE}*(/?)>")
_END_TAG = re.compile(rf"</([a-zA-Z][a-zA-Z0-9]*){_SPACE}*>")
_DOCTYPE = re.compile(r"<!doctype[ \t\n\r\f][^<>]*>", re.IGNORECASE)
_COMMENT_END = "-->"


class Handler(Protocol):
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None: ...

    def handle_endtag(self, tag: str) -> None: ...

    def handle_data(self, data: str) -> None: ...

    def handle_comment(self, data: str) -> None: ...


class _Declined(Exception):
    """Something the quick reader does not read exactly as html.parser would."""


def scan_html(text: str, handler: Handler) -> bool:
    """Hand `text`'s events to `handler`; False when the page is not of the regular shape (the handler may have
    been given some events by then: read the page again with a fresh one)."""
    try:
        _scan(text, handler)
    except _Declined:
        return False
    return True


def _scan(text: str, handler: Handler) -> None:
    position, end = 0, len(text)
    while position < end:
        opening = text.find("<", position)
        if opening < 0:
            opening = end
        if opening > position:
            _data(text[position:opening], handler)
        if opening == end:
            return
        position = _markup(text, opening, handler)


def _data(data: str, handler: Handler) -> None:
    handler.handle_data(unescape(data) if "&" in data else data)


def _markup(text: str, position: int, handler: Handler) -> int:
    """Read the tag, comment or doctype at `position` (a `<`); return where it ends."""
    following = text[position + 1 : position + 2]
    if following.isascii() and following.isalpha():
        return _start_tag(text, position, handler)
    if following == "/":
        match = _END_TAG.match(text, position)
        if match is None:
            raise _Declined
        handler.handle_endtag(match.group(1).lower())
        return match.end()
    if text.startswith("<!--", position):
        return _comment(text, position, handler)
    match = _DOCTYPE.match(text, position)
    if match is None:
        raise _Declined
    return match.end()


def _start_tag(text: str, position: int, handler: Handler) -> int:
    match = _START_TAG.match(text, position)
    assert match is not None  # a letter follows the `<`
    tag = match.group(1).lower()
    if tag in _RAW_TEXT_ELEMENTS:
        raise _Declined
    attrs: list[tuple[str, str | None]] = []
    position = match.end()
    while True:
        attribute = _ATTRIBUTE.match(text, position)
        if attribute is None:
            break
        name, double_quoted, single_quoted = attribute.groups()
        value = double_quoted if double_quoted is not None else single_quoted
        if value is not None and "&" in value:
            value = unescape(value)
        attrs.append((name.lower(), value))
        position = attribute.end()
    close = _TAG_CLOSE.match(text, position)
    if close is None:
        raise _Declined
    if tag == "title" and (close.group(1) or not _plain_title(text, close.end())):
        raise _Declined
    handler.handle_starttag(tag, attrs)
    if close.group(1):
        handler.handle_endtag(tag)
    return close.end()


def _plain_title(text: str, position: int) -> bool:
    """Whether the title starting at `position` holds text only, up to its end tag."""
    opening = text.find("<", position)
    return opening >= 0 and _TITLE_END.match(text, opening) is not None


def _comment(text: str, position: int, handler: Handler) -> int:
    start = position + len("<!--")
    finish = text.find(_COMMENT_END, start)
    if finish < 0:
        raise _Declined
    body = text[start:finish]
    # Where html.parser's versions differ (`--` inside, `<!-->`, `<!--->`), it decides.
    if "--" in body or "<!-" in body or body.startswith((">", "->")) or body.endswith("-"):
        raise _Declined
    handler.handle_comment(body)
    return finish + len(_COMMENT_END)
