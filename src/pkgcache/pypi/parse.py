"""Reading an upstream's project page, HTML (PEP 503) or JSON (PEP 691), into a ProjectPage.

The format is decided from the body, not from the Content-Type: mirrors have labelled JSON as
`application/octet-stream` and answered JSON requests with HTML.

Everything the page says is read (see model.py). What cannot be used is left out, never a reason to reject the
whole page: a file link that is not http(s) (`javascript:`, `file:`, `data:`...), a file name that is not safe as
a file name, a malformed file entry, an upload time that is not one. What was left out is said in one log line
per page. A page is rejected (InvalidPage) only when it is not a project page at all, is the page of another
project (a JSON page's `name`), or cannot be read (what the parsers raise on a mirror's bytes, a RecursionError
among them, is an InvalidPage too).

A file is named as pip and uv name it: by its URL's last path segment (unquoted), never by an HTML link's text,
which may be cut short (nginx's autoindex cuts names past 50 characters) or name something else; a JSON entry by
its `filename`. A file name listed more than once is one file when its entries agree; entries that contradict each
other (other hashes, another URL without a hash to tie them) make the page a ContradictoryPage (see there).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from packaging.utils import canonicalize_name

from pkgcache.pypi.html_scan import scan_html
from pkgcache.pypi.model import ACTIVE, DistFile, ProjectPage, ProjectStatus
from pkgcache.pypi.names import DIST_EXTENSIONS, BadName, check_filename
from pkgcache.storage.downloads import common_hash

log = logging.getLogger(__name__)

# A serial of more digits than any index will reach is no serial (int() refuses thousands of digits anyway).
_SERIAL_COMMENT = re.compile(r"\s*SERIAL\s+(\d{1,20})\s*")
_HASH_NAME = re.compile(r"^[a-z0-9_]+$")
# PEP 700's form, `yyyy-mm-ddThh:mm:ss.ffffffZ` with the fraction optional; uv refuses a whole page over a bad one.
_UPLOAD_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")
_WEB_SCHEMES = frozenset({"http", "https"})
# A host name or address as clients resolve it: no spaces or punctuation that would only fail later, at download.
_HOST = re.compile(r"[\w.:-]+")
# The usual link, known good without parsing it again (a third of a big page's parse time): http(s), a plain host
# name, a port that cannot be out of range, and a path or query. Anything else gets the full check.
_PLAIN_WEB_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,4})?(?:[/?][^\x00-\x1f\x7f]*)?", re.ASCII)
# No index writes these in a link; kept, they would reach the log lines of whatever fetches the URL.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
SUPPORTED_MAJOR_VERSION = 1
# One log line per page names this many of the entries left out, and counts the rest.
_LOGGED_EXAMPLES = 3
_SHOWN_CHARACTERS = 120


class InvalidPage(ValueError):
    """The upstream's answer is not a project page (an error page, a login page, broken JSON...)."""


class ContradictoryPage(InvalidPage):
    """A page listing one file name more than once, with entries that contradict each other (other hashes, or
    other URLs with no hash to show they are the same bytes).

    pip takes the last such entry and uv the first, so a client could not tell which file it would get; pkgcache
    serves one file under a name and will not guess. The upstream's page is unreliable for those files: the next
    upstream is asked for its page. `page` is this page as it can be taken when no upstream gives a page without a
    contradiction: a name whose entries all give a hash (of an algorithm they share) listed once, without a hash,
    the bytes fetched under it deciding which entry they are (`DistFile.candidates`: never guessed between); a
    name the bytes could not decide (an entry without a hash) left out. `files` are the names contradicted."""

    def __init__(self, message: str, page: ProjectPage, files: tuple[str, ...]) -> None:
        super().__init__(message)
        self.page = page
        self.files = files


class NeedsFullReader(Exception):
    """The page is HTML the quick reader declines: read it with `quick_only=False`, off the event loop."""


def parse_project_page(body: bytes, page_url: str, name: str, *, quick_only: bool = False) -> ProjectPage:
    """Read a project page served at `page_url`; relative links are resolved against it (or its `<base>`).

    `quick_only`: raise NeedsFullReader rather than read HTML with html.parser, whose time on hostile markup
    is not bounded well enough for the event loop (JSON and the usual HTML take a linear, quick path)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPage("the page is not UTF-8 text") from None
    left_out: list[str] = []
    contradicted: list[str] = []
    try:
        if text.lstrip().startswith("{"):
            page = _parse_json(text, page_url, name, left_out, contradicted)
        else:
            page = _parse_html(text, page_url, name, left_out, quick_only, contradicted)
    except (InvalidPage, NeedsFullReader, MemoryError):
        raise
    except Exception as exc:
        # Whatever else a mirror's bytes make a parser do (json's RecursionError on arrays nested a thousand deep,
        # int's ValueError on a number of thousands of digits, an error html.parser did not foresee) is a verdict
        # on the page, not on pkgcache: the caller asks the next mirror, instead of answering 500 every time.
        raise InvalidPage(f"unreadable page ({type(exc).__name__}: {_shown_error(exc)})") from None
    _log_left_out(name, page_url, left_out)
    if contradicted:
        shown = ", ".join(_shown(filename) for filename in contradicted[:_LOGGED_EXAMPLES])
        more = len(contradicted) - _LOGGED_EXAMPLES
        shown += f" and {more} more" if more > 0 else ""
        raise ContradictoryPage(f"lists {shown} more than once, differently", page, tuple(contradicted))
    return page


# --- what both formats share ---


def _resolve(url: str, base: str) -> tuple[str, str] | None:
    """`url` made absolute against `base` and parted from its fragment, when it is an http(s) URL that can be
    fetched (a host, a valid port); None for anything else, a malformed URL among them."""
    url = url.strip()
    return _quick_resolve(url, base) or _resolve_with_urllib(url, base)


def _resolve_with_urllib(url: str, base: str) -> tuple[str, str] | None:
    try:
        absolute, _, fragment = urljoin(base, url).partition("#")
        if _PLAIN_WEB_URL.fullmatch(absolute):
            return absolute, fragment
        if _CONTROL_CHARACTER.search(absolute):
            return None
        parts = urlsplit(absolute)
        if parts.scheme not in _WEB_SCHEMES or not _HOST.fullmatch(parts.hostname or ""):
            return None
        _ = parts.port  # reading the port checks it: ValueError when it is not a number in range
    except ValueError:  # urllib's answer to a malformed URL, such as brackets around no IPv6 address
        return None
    return absolute, fragment


# Links of the usual shapes, joined without urllib (a third of a big page's parse time went to urljoin):
# `../` steps and plain path segments against a plain base, or an absolute http(s) URL with a plain path. A
# segment never starts with a dot (so `.` and `..` never appear but as leading steps) nor holds `:`, `;` or `?`;
# the fragment is printable ASCII. Anything else takes urljoin; tests/test_html_scan.py checks both agree.
_SEGMENT = r"[A-Za-z0-9_~%+!$&'()*,=@-][A-Za-z0-9._~%+!$&'()*,=@-]*"
_ORIGIN = r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,4})?"
_QUICK_RELATIVE = re.compile(rf"((?:\.\./)*)({_SEGMENT}(?:/{_SEGMENT})*)(?:#([!-~]*))?")
_QUICK_ABSOLUTE = re.compile(rf"({_ORIGIN}/{_SEGMENT}(?:/{_SEGMENT})*)(?:#([!-~]*))?")
_QUICK_BASE = re.compile(rf"({_ORIGIN})/((?:{_SEGMENT}/)*)(?:{_SEGMENT})?")


def _quick_resolve(url: str, base: str) -> tuple[str, str] | None:
    """What `_resolve` gives for a link of the usual shape; None for any other link (or base)."""
    absolute = _QUICK_ABSOLUTE.fullmatch(url)
    if absolute is not None:
        return absolute.group(1), absolute.group(2) or ""
    relative = _QUICK_RELATIVE.fullmatch(url)
    if relative is None:
        return None
    parts = _base_parts(base)
    if parts is None:
        return None
    origin, folders = parts
    steps_up = len(relative.group(1)) // 3
    kept = folders[: max(0, len(folders) - steps_up)]
    return "/".join((origin, *kept, relative.group(2))), relative.group(3) or ""


@functools.lru_cache(maxsize=64)
def _base_parts(base: str) -> tuple[str, tuple[str, ...]] | None:
    """A plain base URL's origin and the folders of its path (its last segment, after the last `/`, dropped)."""
    match = _QUICK_BASE.fullmatch(base)
    if match is None:
        return None
    return match.group(1), tuple(match.group(2).split("/")[:-1])


def _web_url(url: str, base: str) -> str | None:
    resolved = _resolve(url, base)
    return None if resolved is None else resolved[0]


def _is_safe_filename(filename: str) -> bool:
    """Whether a file name can be a cache entry and a request path segment (no separator, control character...)."""
    try:
        check_filename(filename)
    except BadName:
        return False
    return True


def _last_segment(url: str) -> str:
    return unquote(url.partition("#")[0].partition("?")[0].rsplit("/", 1)[-1])


def _looks_like_distribution(filename: str) -> bool:
    # Safety aside: a name that ends like a distribution was meant to be one, so leaving it out is worth a log line.
    return filename.lower().endswith(DIST_EXTENSIONS)


def _location_urls(values: Iterable[Any], base: str, what: str, left_out: list[str]) -> tuple[str, ...]:
    """PEP 708 `tracks` / `alternate-locations`: the http(s) URLs, absolute, each once."""
    urls: list[str] = []
    for value in values:
        url = _web_url(value, base) if isinstance(value, str) else None
        if url is None:
            left_out.append(f"{what} {_shown(value)}: not an http(s) URL")
        elif url not in urls:
            urls.append(url)
    return tuple(urls)


def _project_status(status: Any, reason: Any) -> ProjectStatus | None:
    status = status.strip() if isinstance(status, str) else ""
    reason = reason if isinstance(reason, str) and reason else None
    if not status and reason is None:
        return None
    return ProjectStatus(status=status or ACTIVE, reason=reason)


def _provenance_url(value: Any, filename: str, base: str, left_out: list[str]) -> str | None:
    if value is None or value == "":
        return None
    url = _web_url(value, base) if isinstance(value, str) else None
    if url is None:
        left_out.append(f"provenance of {_shown(filename)}: not an http(s) URL ({_shown(value)})")
    return url


def _clean_hashes(hashes: Mapping[Any, Any]) -> dict[str, str]:
    return {
        str(algo).lower(): str(digest).lower()
        for algo, digest in hashes.items()
        if isinstance(digest, str) and _HASH_NAME.match(str(algo).lower())
    }


def _one_per_filename(files: Iterable[DistFile], contradicted: list[str]) -> tuple[DistFile, ...]:
    """One entry per file name. Entries of one name that agree (`_same_entry`) are one entry, the first; a name
    whose entries contradict each other is put in `contradicted` (pip would take its last entry and uv its first,
    and pkgcache serves one file under a name), and listed undecided (`_undecided`) or left out."""
    kept: dict[str, DistFile] = {}
    others: dict[str, list[DistFile]] = {}
    for dist in files:
        first = kept.setdefault(dist.filename, dist)
        if first is dist or _same_entry(first, dist):
            continue
        entries = others.setdefault(dist.filename, [first])
        if not any(_same_entry(entry, dist) for entry in entries):
            entries.append(dist)
    if not others:
        return tuple(kept.values())
    contradicted.extend(name for name in kept if name in others)
    listed = (_undecided(others[name]) if name in others else dist for name, dist in kept.items())
    return tuple(dist for dist in listed if dist is not None)


def _undecided(entries: list[DistFile]) -> DistFile | None:
    """One file name's entries that contradict each other, as one entry: what they all say (where the first one
    has it), no hash, size or core metadata, and the entries as `candidates`, among which the bytes fetched under it
    decide. None when the bytes could not decide: an entry gives no hash of an algorithm the others give."""
    if common_hash(entry.hashes for entry in entries) is None:
        return None
    first = entries[0]
    values: dict[str, Any] = {}
    for name, default in _AGREED_OR.items():
        value = getattr(first, name)
        values[name] = value if all(getattr(entry, name) == value for entry in entries) else default
    return DistFile(filename=first.filename, url=first.url, candidates=tuple(entries), **values)


# The fields of an undecided entry (`_undecided`) kept when every entry gives the same, else the default.
_AGREED_OR: dict[str, Any] = {
    "requires_python": None,
    "yanked": False,
    "gpg_sig": None,
    "upload_time": None,
    "provenance_url": None,
}


def _same_entry(first: DistFile, other: DistFile) -> bool:
    """Whether two entries of one file name say the same: equal, or the same hashes (so the same bytes) and
    everything else equal but where the file is (a mirror linking one file from two places)."""
    if first == other:
        return True
    return bool(first.hashes) and first.hashes == other.hashes and dataclasses.replace(other, url=first.url) == first


def _shown_error(exc: BaseException) -> str:
    """An exception's words as a log line may show them: printable, and short."""
    text = "".join(c if c.isprintable() else "?" for c in str(exc))
    return text if len(text) <= _SHOWN_CHARACTERS else text[: _SHOWN_CHARACTERS - 3] + "..."


def _shown(value: Any) -> str:
    """A value as a log line may show it: repr (so CR/LF cannot forge a line), and short."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARACTERS else text[: _SHOWN_CHARACTERS - 3] + "..."


def _log_left_out(name: str, page_url: str, left_out: list[str]) -> None:
    if not left_out:
        return
    shown = "; ".join(left_out[:_LOGGED_EXAMPLES])
    if len(left_out) > _LOGGED_EXAMPLES:
        shown += f"; and {len(left_out) - _LOGGED_EXAMPLES} more"
    log.warning("project page of %s from %s: left out %d unusable entries: %s", name, page_url, len(left_out), shown)


# --- PEP 691 JSON ---


def _parse_json(text: str, page_url: str, name: str, left_out: list[str], contradicted: list[str]) -> ProjectPage:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidPage(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise InvalidPage("JSON without a 'files' list")
    meta = data.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    api_version = str(meta.get("api-version", ""))
    if not api_version.startswith(f"{SUPPORTED_MAJOR_VERSION}."):
        raise InvalidPage(f"unsupported simple API version {api_version!r}")
    _check_json_name(data.get("name"), name)
    files = (_json_file(item, page_url, left_out) for item in data["files"])
    versions = data.get("versions")
    tracks, alternates = meta.get("tracks"), data.get("alternate-locations")
    return ProjectPage(
        name=name,
        files=_one_per_filename((dist for dist in files if dist is not None), contradicted),
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else None,
        last_serial=_serial(meta.get("_last-serial")),
        status=_json_status(data, meta),
        tracks=_location_urls(tracks, page_url, "tracks", left_out) if isinstance(tracks, list) else (),
        alternate_locations=(
            _location_urls(alternates, page_url, "alternate location", left_out) if isinstance(alternates, list) else ()
        ),
    )


def _json_file(item: Any, page_url: str, left_out: list[str]) -> DistFile | None:
    if not isinstance(item, dict):
        left_out.append(f"a file entry that is not an object: {_shown(item)}")
        return None
    filename, url, hashes = item.get("filename"), item.get("url"), item.get("hashes", {})
    if not isinstance(filename, str) or not isinstance(url, str) or not isinstance(hashes, dict):
        left_out.append(f"a file entry without a filename, url or hashes: {_shown(filename)}")
        return None
    if not _looks_like_distribution(filename):
        return None
    absolute = _web_url(url, page_url)
    if absolute is None:
        left_out.append(f"{_shown(filename)}: not an http(s) link ({_shown(url)})")
        return None
    if not _is_safe_filename(filename):
        left_out.append(f"unsafe file name {_shown(filename)}")
        return None
    metadata = item.get("core-metadata", item.get("dist-info-metadata", False))
    size = item.get("size")
    requires_python = item.get("requires-python")
    gpg_sig = item.get("gpg-sig")
    return DistFile(
        filename=filename,
        url=absolute,
        hashes=_clean_hashes(hashes),
        requires_python=requires_python if isinstance(requires_python, str) and requires_python else None,
        yanked=_json_yanked(item.get("yanked", False)),
        core_metadata=_json_metadata(metadata),
        gpg_sig=gpg_sig if isinstance(gpg_sig, bool) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        upload_time=_upload_time(item.get("upload-time"), filename, left_out),
        provenance_url=_provenance_url(item.get("provenance"), filename, page_url, left_out),
    )


def _check_json_name(value: Any, name: str) -> None:
    """PEP 691's `name` is the project's: a page naming another project (a mirror's or its CDN's mix-up) is no
    answer for this one. A page without a usable name is taken (HTML pages never have one)."""
    if isinstance(value, str) and value.strip() and canonicalize_name(value.strip()) != canonicalize_name(name):
        raise InvalidPage(f"the page of another project ({_shown(value)})")


def _json_status(data: Mapping[str, Any], meta: Mapping[str, Any]) -> ProjectStatus | None:
    """PEP 792's `project-status` object; or the status inside `meta`, as the spec's own example once wrote it."""
    value = data.get("project-status")
    if isinstance(value, dict):
        return _project_status(value.get("status"), value.get("reason"))
    if isinstance(meta.get("project-status"), str):
        return _project_status(meta["project-status"], meta.get("project-status-reason"))
    return None


def _json_yanked(value: Any) -> bool | str:
    if isinstance(value, str):
        return value or True
    return bool(value)


def _json_metadata(value: Any) -> bool | Mapping[str, str]:
    if isinstance(value, dict):
        return _clean_hashes(value) or True
    return bool(value)


def _serial(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _upload_time(value: Any, filename: str, left_out: list[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _UPLOAD_TIME.fullmatch(value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    left_out.append(f"upload-time of {_shown(filename)}: not a PEP 700 time ({_shown(value)})")
    return None


# --- PEP 503 HTML ---


def _parse_html(
    text: str, page_url: str, name: str, left_out: list[str], quick_only: bool, contradicted: list[str]
) -> ProjectPage:
    reader = _PageReader()
    if not scan_html(text, reader):
        # Not the regular shape the quick reader knows: html.parser reads it, from the start.
        if quick_only:
            raise NeedsFullReader
        unterminated = _unterminated_markup(text)
        if unterminated is not None:
            raise InvalidPage(f"cut-off or unterminated markup: {unterminated}")
        reader = _PageReader()
        try:
            reader.feed(text)
            reader.close()
        except (AssertionError, ValueError) as exc:  # HTMLParser's way of giving up
            raise InvalidPage(f"unreadable HTML: {exc}") from None
    _check_html_version(reader.meta_content("pypi:repository-version"))
    base = _html_base(reader.base_href, page_url, left_out)
    files: list[DistFile] = []
    links_to_files = 0
    for anchor in reader.anchors:
        dist, meant_as_file = _html_file(anchor, base, left_out)
        links_to_files += meant_as_file
        if dist is not None:
            files.append(dist)
    # A page whose every file link had to be left out is still a project page, not an error page.
    if not links_to_files and not reader.looks_like_index(text):
        raise InvalidPage("an HTML page that is not a project index (no distribution links)")
    return ProjectPage(
        name=name,
        files=_one_per_filename(files, contradicted),
        last_serial=reader.serial,
        status=_project_status(
            reader.meta_content("pypi:project-status"), reader.meta_content("pypi:project-status-reason")
        ),
        tracks=_location_urls(reader.meta.get("pypi:tracks", ()), base, "tracks", left_out),
        alternate_locations=_location_urls(
            reader.meta.get("pypi:alternate-locations", ()), base, "alternate location", left_out
        ),
    )


# html.parser searches for the end of a construct it has opened, and when there is none it gives up and starts
# again a little further on: on markup that never closes (`<a ` or `<!--x>` repeated, say) its time grows with
# the square of the page's size (9 s for 40 KB of `<a `, 0.3 s for 46 KB of `<!--x>` and growing, on Python
# 3.11). A page whose every opened construct closes somewhere after it is read in linear time: each search
# then ends at a close, and the parser goes on from there. No index writes anything else, and a page cut off in
# the middle of a tag was cut in transit: both are refused, and the next upstream is asked.
_MARKUP_OPENING = re.compile(r"<[a-zA-Z/!?]")
_CLOSES_AFTER_LAST = (("<!--", "-->"), ("<![", "]]>"))


def _unterminated_markup(text: str) -> str | None:
    """What is left open in `text`, if anything html.parser would search for to the end of the page."""
    last_close = text.rfind(">")
    opened = _MARKUP_OPENING.search(text, last_close + 1)
    if opened is not None:
        return f"{_shown(text[opened.start() : opened.start() + 20])} without a '>' after it"
    for opening, closing in _CLOSES_AFTER_LAST:
        last = text.rfind(opening)
        if last >= 0 and text.find(closing, last + len(opening)) < 0:
            return f"{opening!r} without {closing!r} after it"
    return None


class _PageReader(HTMLParser):
    """Collects a page's anchors, its `pypi:` meta tags, its first `<base href>` and its serial comment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, list[str]] = {}
        self.base_href: str | None = None
        self.serial: int | None = None
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta":
            self._read_meta(dict(attrs))
        elif tag == "base" and self.base_href is None:
            # The document's base URL is the first <base> that has an href (HTML standard), wherever it stands.
            self.base_href = dict(attrs).get("href") or None

    def _read_meta(self, attrs: Mapping[str, str | None]) -> None:
        name = (attrs.get("name") or "").strip().lower()
        if name.startswith("pypi:"):
            self.meta.setdefault(name, []).append(attrs.get("content") or "")

    def meta_content(self, name: str) -> str | None:
        """The first value of a meta tag; None when the page has no such tag."""
        values = self.meta.get(name)
        return values[0] if values else None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None

    def handle_comment(self, data: str) -> None:
        match = _SERIAL_COMMENT.fullmatch(data)
        if match:
            self.serial = int(match.group(1))

    def looks_like_index(self, text: str) -> bool:
        # An empty project (every file deleted) is still a page: it has the usual title or the API meta tag.
        return "pypi:repository-version" in self.meta or "Links for" in text


def _check_html_version(version: str | None) -> None:
    """PEP 629: a major version other than the one pkgcache reads means a page it cannot understand."""
    if version is None:
        return
    major = version.strip().partition(".")[0]
    if major.isdigit() and int(major) != SUPPORTED_MAJOR_VERSION:
        raise InvalidPage(f"unsupported simple API version {version!r}")


def _html_base(base_href: str | None, page_url: str, left_out: list[str]) -> str:
    """What relative links are resolved against: the page's `<base href>` when it has a usable one."""
    if base_href is None:
        return page_url
    base = _web_url(base_href, page_url)
    if base is None:
        left_out.append(f"<base href={_shown(base_href)}>: not an http(s) URL")
        return page_url
    return base


def _html_file(
    anchor: tuple[dict[str, str | None], str], base: str, left_out: list[str]
) -> tuple[DistFile | None, bool]:
    """The file an anchor links, and whether the anchor was meant as a file link (even one left out)."""
    attrs, _text = anchor
    href = attrs.get("href")
    if not href:
        return None, False
    resolved = _resolve(href, base)
    # The URL's name, as pip and uv read it: the link's text may be cut short or name another file.
    filename = _last_segment(resolved[0] if resolved else href)
    if not _looks_like_distribution(filename):
        return None, False
    if resolved is None:
        left_out.append(f"{_shown(filename)}: not an http(s) link ({_shown(href)})")
        return None, True
    if not _is_safe_filename(filename):
        left_out.append(f"unsafe file name {_shown(filename)}")
        return None, True
    url, fragment = resolved
    dist = DistFile(
        filename=filename,
        url=url,
        hashes=_fragment_hashes(fragment),
        requires_python=attrs.get("data-requires-python") or None,
        yanked=_html_yanked(attrs),
        core_metadata=_html_metadata(attrs),
        gpg_sig=_html_bool(attrs.get("data-gpg-sig")),
        provenance_url=_provenance_url(attrs.get("data-provenance"), filename, base, left_out),
    )
    return dist, True


def _fragment_hashes(fragment: str) -> dict[str, str]:
    algo, _, digest = fragment.partition("=")
    return _clean_hashes({algo: digest}) if algo and digest else {}


def _html_yanked(attrs: Mapping[str, str | None]) -> bool | str:
    if "data-yanked" not in attrs:
        return False
    return attrs["data-yanked"] or True


def _html_metadata(attrs: Mapping[str, str | None]) -> bool | Mapping[str, str]:
    # PEP 714 renamed data-dist-info-metadata to data-core-metadata; upstreams may write either or both.
    for key in ("data-core-metadata", "data-dist-info-metadata"):
        if key in attrs:
            value = attrs[key] or "true"
            if value.lower() == "true":
                return True
            if value.lower() == "false":
                return False
            return _fragment_hashes(value) or True
    return False


def _html_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() == "true"
