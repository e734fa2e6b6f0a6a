"""Fake upstream package indexes (aiohttp.web, in-process, 127.0.0.1 only).

- OfficialLikeUpstream: behaves like the official index: PEP 503 HTML and
  PEP 691 JSON chosen by Accept, PEP 658/714 metadata, name redirects, files
  on a second host (``.files``) with absolute links.
- TunaLikeUpstream: behaves like a bandersnatch/nginx mirror: HTML only,
  relative links, no metadata, no normalisation, and a picky firewall.
- SlowUpstream: a TunaLike that delays answers and throttles bodies.
- FailingUpstream: answers 503, resets connections, or hangs.

Every server is a ``tests.fakes.server.FakeServer``: it logs requests (``.requests``,
``.count()``, ``.reset_log()``) and serves with ETag/Last-Modified/304 and ranges. The
index servers carry runtime fault knobs: ``corrupt_files``, ``garbage``, ``missing_projects``,
and ``page_extras``: per project, what a page can say beyond its files (PEP 708 tracks and
alternate locations, PEP 740 provenance, PEP 792 status) and raw entries to add (a
``javascript:`` link...). Without extras the pages are exactly as before.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .dists import Dist
from .server import Content, FakeServer, FaultKnob, Faults, corrupt, fault_response, serve_content

JSON_CT = "application/vnd.pypi.simple.v1+json"
HTML_V1_CT = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
_LATEST_ALIASES = {
    JSON_CT: "application/vnd.pypi.simple.latest+json",
    HTML_V1_CT: "application/vnd.pypi.simple.latest+html",
}
# On equal quality the official index prefers HTML (the PEP 503 default).
_OFFERS = (TEXT_HTML, HTML_V1_CT, JSON_CT)
FILE_CT = "application/octet-stream"

# Last-Modified of pages is this instant plus the serial, in seconds.
_BASE_TS = 1704067200  # 2024-01-01T00:00:00Z
_UPLOAD_BASE = datetime(2024, 1, 1, tzinfo=UTC)

_REPO_VERSION_META = '    <meta name="pypi:repository-version" content="1.1">'
PROVENANCE_CT = "application/json"
FAULT_MODES = ("html-error", "bad-html", "bad-json", "deep-json", "random", "truncate", "reset", "hang")


# --- content negotiation -------------------------------------------------------------


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific range matching offer (exact > type/* > */*), 0 if none."""
    names = {offer, _LATEST_ALIASES.get(offer, offer)}
    major = offer.split("/")[0]
    best_specificity, q = 0, 0.0
    for media, media_q in ranges:
        if media in names:
            specificity = 3
        elif media == f"{major}/*":
            specificity = 2
        elif media == "*/*":
            specificity = 1
        else:
            continue
        if specificity > best_specificity:
            best_specificity, q = specificity, media_q
    return q


def negotiate(accept: str | None) -> str:
    """Pick the simple-API format for an Accept header the way the official index does."""
    if not accept:
        return TEXT_HTML
    ranges = _parse_accept(accept)
    best, best_q = TEXT_HTML, 0.0  # nothing acceptable: fall back to HTML, no 406
    for offer in _OFFERS:
        q = _quality(offer, ranges)
        if q > best_q:
            best, best_q = offer, q
    return best


def _sort_versions(versions: Iterable[str]) -> list[str]:
    def key(v: str) -> tuple[bool, Version, str]:
        # Unparseable versions sort last, among themselves by text.
        try:
            return (False, Version(v), v)
        except InvalidVersion:
            return (True, Version("0"), v)

    return sorted(set(versions), key=key)


_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>The upstream server is temporarily unavailable.</p></body></html>"
)
_LOGIN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
    b"<h1>Please sign in to continue</h1><form method='post'><input name='user'>"
    b"<input name='password' type='password'><button>Sign in</button></form></body></html>"
)
_BAD_JSON = b'{"meta": {"api-version": "1.1"}, "name": "x", "files": [{"filename": '
# Well-formed JSON nested deeper than Python's json module recurses (a RecursionError in the parser).
DEEP_JSON = b'{"meta": {"api-version": "1.1"}, "name": "x", "files": [], "x": ' + b"[" * 1200 + b"]" * 1200 + b"}"
# Pages whose markup never closes, which html.parser reads in time growing with the square of their size (seconds
# for these 40-60 KB): a link that looks good, then tags or comments left open. A hostile or broken mirror.
_LINK_FIRST = b'<html><body><a href="alpha-2.0-py3-none-any.whl">alpha-2.0-py3-none-any.whl</a>'
_UNCLOSED_TAGS = _LINK_FIRST + b"<a " * 13000
_UNCLOSED_COMMENTS = _LINK_FIRST + b"<!--x>" * 8000


async def garbage_response(
    request: web.Request,
    mode: str,
    content: Content,
    faults: Faults,
    *,
    json_content_type: str = JSON_CT,
) -> web.StreamResponse:
    """A broken answer in place of ``content``.

    Modes: "html-error" (200 HTML error page), "bad-html" (200 login page, no links), "unclosed-tags" and
    "unclosed-comments" (200 HTML, a good-looking link, then markup that never closes),
    "bad-json" (200, JSON content type, invalid JSON), "deep-json" (200, JSON content type, valid JSON nested
    1,200 deep), "chunked" (the true body, chunked: no Content-Length), "random" (200, random bytes),
    "truncate" (full Content-Length, half the body, then close), "endless" (200, chunked, the page's links over
    and over at 20 KB/s until the client hangs up), and the server-level
    faults of ``tests.fakes.server.fault_response``: "reset" (drop the connection, no
    answer), "hang" (answer nothing for ``faults.hang_seconds``), or a 3-digit status
    such as "503".
    """
    if mode == "html-error":
        return web.Response(body=_ERROR_PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
    if mode == "bad-html":
        return web.Response(body=_LOGIN_PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
    if mode == "bad-json":
        return web.Response(body=_BAD_JSON, headers={"Content-Type": json_content_type})
    if mode == "deep-json":
        return web.Response(body=DEEP_JSON, headers={"Content-Type": json_content_type})
    if mode == "chunked":
        response = web.StreamResponse(headers={"Content-Type": content.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(content.body)
        await response.write_eof()
        return response
    if mode in ("unclosed-tags", "unclosed-comments"):
        body = _UNCLOSED_TAGS if mode == "unclosed-tags" else _UNCLOSED_COMMENTS
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})
    if mode == "random":
        body = random.Random(request.path).randbytes(512)
        return web.Response(body=body, headers={"Content-Type": content.content_type})
    if mode == "truncate":
        return await serve_content(request, content, faults, truncate=True)
    if mode == "endless":
        return await _endless_response(request, content)
    return await fault_response(request, mode, faults)


ENDLESS_BYTES_PER_SECOND = 20 * 1024


async def _endless_response(request: web.Request, content: Content) -> web.StreamResponse:
    """The page's first half, then its links' lines over and over, chunked, at ENDLESS_BYTES_PER_SECOND (above
    pkgcache's min_rate), until the client hangs up: a page that never ends."""
    response = web.StreamResponse(headers={"Content-Type": content.content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    body = content.body
    links = b"".join(line + b"\n" for line in body.splitlines() if b"<a " in line) or b"<!-- -->\n"
    chunk = links * max(1, ENDLESS_BYTES_PER_SECOND // 10 // len(links))
    try:
        await response.write(body[: len(body) // 2])
        while True:
            await response.write(chunk)
            await asyncio.sleep(len(chunk) / ENDLESS_BYTES_PER_SECOND)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up
    return response


# --- what a page can say beyond its files ----------------------------------------------


@dataclass
class PageExtras:
    """Set on ``server.page_extras[<normalised name>]``; both index styles serve it, each in its own format(s).

    ``provenance``: every file links a provenance on the index host, at the path the official index
    uses (``/integrity/<project>/<version>/<filename>/provenance``), and the fake serves it there.
    ``html_links`` are added verbatim to the HTML page, ``json_files`` to the JSON ``files`` list.
    ``api_version`` is what the page declares while it has extras.
    """

    status: str | None = None
    status_reason: str | None = None
    tracks: list[str] = field(default_factory=list)
    alternate_locations: list[str] = field(default_factory=list)
    provenance: bool = False
    html_links: list[str] = field(default_factory=list)
    json_files: list[object] = field(default_factory=list)
    api_version: str = "1.4"

    def html_meta(self) -> str:
        """The head's meta tags, one per line."""
        tags = [("pypi:repository-version", self.api_version)]
        if self.status is not None:
            tags.append(("pypi:project-status", self.status))
        if self.status_reason is not None:
            tags.append(("pypi:project-status-reason", self.status_reason))
        tags += [("pypi:tracks", url) for url in self.tracks]
        tags += [("pypi:alternate-locations", url) for url in self.alternate_locations]
        return "\n".join(f'    <meta name="{n}" content="{html.escape(c)}">' for n, c in tags)


def provenance_document(dist: Dist) -> bytes:
    """The (stand-in) PEP 740 provenance the fakes serve for a file: JSON naming the file and its digest."""
    doc = {"version": 1, "attestation_bundles": [], "_file": dist.filename, "_sha256": dist.sha256}
    return json.dumps(doc, separators=(",", ":")).encode()


# --- shared index behaviour ------------------------------------------------------------


class _IndexServer(FakeServer):
    """Dists, serial, fault knobs and file serving shared by the index fakes."""

    serves_metadata = False  # PEP 658 .metadata files and attributes
    metadata_hash_given = True  # False: the pages say only that metadata exists (`true`), with no hash to check
    honour_ranges = True  # False: a Range request gets the whole file with 200, as some mirrors answer
    # True: a Range request gets the whole file as a 206 whose Content-Range covers it all (a mirror that claims to
    # answer ranges, or a hostile one); `range_bytes_sent` counts the body bytes that left for such answers.
    ranges_as_whole_206 = False
    range_bytes_sent = 0
    # filename -> other bytes of the same length, served to Range requests only (a mirror whose ranges lie)
    range_bodies: dict[str, bytes]
    # Fault knobs, settable at any time from the test thread; these two live on ``faults``, shared with ``.files``.
    corrupt_files: FaultKnob[set[str]] = FaultKnob()  # filenames (or "<wheel>.metadata") served altered
    hang_seconds: FaultKnob[float] = FaultKnob()  # how long "hang" garbage stays silent

    def __init__(self, dists: Iterable[Dist] = ()) -> None:
        super().__init__()
        self.garbage: dict[str, str] = {}  # filename or project name -> fault mode
        self.range_bodies = {}
        self.missing_projects: set[str] = set()  # 404 for these project pages (sync lag)
        self.page_extras: dict[str, PageExtras] = {}  # normalised project name -> what its page adds
        self.serial = 12344
        self.dists: list[Dist] = []
        self._by_path: dict[str, Dist] = {}
        self._upload_times: dict[str, str] = {}
        # filename -> PEP 700 upload-time to give instead of the made-up one (a release uploaded just now...)
        self.upload_time_overrides: dict[str, str] = {}
        # filename -> the sha256 its page lists instead of the file's own (a page wrong about a file it serves right)
        self.listed_sha256: dict[str, str] = {}
        self.listed_size: dict[str, int] = {}  # filename -> the size a JSON page lists instead of the file's own
        # False: project pages carry no serial (`<!--SERIAL n-->`), and/or come with no ETag or Last-Modified (a
        # dynamic index: devpi, a proxy)
        self.page_serial = True
        self.page_validators = True
        # filename -> the URL fragment its HTML link carries instead of `sha256=<hex>`: "" for none, "sha256=" for
        # an empty hash (mirrors that give no usable hash)
        self.link_fragments: dict[str, str] = {}
        # filename -> the sha256 its HTML link advertises for its `.metadata` instead of the true one (a mirror
        # whose PEP 658 hash is wrong); needs serves_metadata
        self.advertised_metadata_hashes: dict[str, str] = {}
        # filename -> the text of its HTML link instead of its name (nginx's autoindex cuts long names: "..>")
        self.link_texts: dict[str, str] = {}
        # normalised project name -> the project whose page is answered in its place (a CDN's cache-key mix-up)
        self.pages_instead: dict[str, str] = {}
        self.set_dists(dists)

    # -- index contents --

    def set_dists(self, dists: Iterable[Dist]) -> None:
        """Replace the whole index (bumps the serial, so ETags change)."""
        self.dists = list(dists)
        self._by_path = {self.file_path(d): d for d in self.dists}
        # Later positions in the list look like later uploads.
        self._upload_times = {
            d.filename: (_UPLOAD_BASE + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for i, d in enumerate(self.dists)
        }
        self.serial += 1

    def add_dist(self, dist: Dist) -> None:
        self.set_dists([*self.dists, dist])

    def remove_dist(self, filename: str) -> None:
        self.set_dists([d for d in self.dists if d.filename != filename])

    @staticmethod
    def file_path(dist: Dist) -> str:
        sha = dist.sha256
        return f"/packages/{sha[:2]}/{sha[2:4]}/{sha[4:]}/{dist.filename}"

    def projects(self) -> dict[str, list[Dist]]:
        """Visible projects by normalised name (missing_projects left out)."""
        hidden = {canonicalize_name(n) for n in self.missing_projects}
        out: dict[str, list[Dist]] = {}
        for dist in self.dists:
            if dist.normalized not in hidden:
                out.setdefault(dist.normalized, []).append(dist)
        return dict(sorted(out.items()))

    @property
    def last_modified_ts(self) -> int:
        return _BASE_TS + self.serial

    def _extras(self, normalized: str) -> PageExtras | None:
        return self.page_extras.get(normalized)

    def provenance_url(self, dist: Dist) -> str:
        """Where a file's provenance is, on the index host (not beside the file, as on the official index)."""
        return f"{self.url}/integrity/{dist.normalized}/{dist.version}/{dist.filename}/provenance"

    async def serve_provenance(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"/integrity/([^/]+)/([^/]+)/([^/]+)/provenance", request.path)
        extras = self._extras(match.group(1)) if match else None
        dist = next((d for d in self.dists if match and d.filename == match.group(3)), None)
        if dist is None or extras is None or not extras.provenance:
            raise web.HTTPNotFound()
        content = Content(provenance_document(dist), PROVENANCE_CT, _BASE_TS, "max-age=600, public")
        mode = self.garbage.get(dist.filename + ".provenance")
        if mode:
            return await garbage_response(request, mode, content, self.faults)
        return await serve_content(request, content, self.faults)

    def _project_fault(self, name: str) -> str | None:
        """The fault mode set for this project, under any spelling of its name."""
        wanted = canonicalize_name(name)
        return next((mode for key, mode in self.garbage.items() if canonicalize_name(key) == wanted), None)

    # -- HTML shared by both index styles --

    def _link(self, dist: Dist, href: str, extras: PageExtras | None = None) -> str:
        sha256 = self.listed_sha256.get(dist.filename, dist.sha256)
        fragment = self.link_fragments.get(dist.filename, "sha256=" + sha256)
        attrs = [f'href="{html.escape(href + ("#" + fragment if fragment else ""))}"']
        if dist.requires_python:
            attrs.append(f'data-requires-python="{html.escape(dist.requires_python)}"')
        if self.serves_metadata and dist.metadata_sha256:
            # Both spellings, as PEP 714 asks during the transition.
            metadata_sha256 = self.advertised_metadata_hashes.get(dist.filename, dist.metadata_sha256)
            value = f"sha256={metadata_sha256}" if self.metadata_hash_given else "true"
            attrs.append(f'data-dist-info-metadata="{value}"')
            attrs.append(f'data-core-metadata="{value}"')
        if dist.yanked is not False:
            reason = "" if dist.yanked is True else str(dist.yanked)
            attrs.append(f'data-yanked="{html.escape(reason)}"')
        if extras is not None and extras.provenance:
            attrs.append(f'data-provenance="{html.escape(self.provenance_url(dist))}"')
        text = self.link_texts.get(dist.filename, dist.filename)
        return f"    <a {' '.join(attrs)}>{html.escape(text)}</a><br />"

    def _html_page(self, title: str, links: list[str], head_extra: str = "") -> bytes:
        lines = [
            "<!DOCTYPE html>",
            "<html>",
            "  <head>",
            *([head_extra] if head_extra else []),
            f"    <title>{html.escape(title)}</title>",
            "  </head>",
            "  <body>",
            f"    <h1>{html.escape(title)}</h1>",
            *links,
            "  </body>",
            "</html>",
            *([f"<!--SERIAL {self.serial}-->"] if self.page_serial else []),
            "",
        ]
        return "\n".join(lines).encode("utf-8")

    async def _page_response(
        self,
        request: web.Request,
        body: bytes,
        content_type: str,
        extra: dict[str, str],
        mode: str | None = None,
        *,
        json_content_type: str = JSON_CT,
    ) -> web.StreamResponse:
        """A page with validators; a fault ``mode`` set on its project replaces it with garbage."""
        content = Content(body, content_type, self.last_modified_ts, "max-age=600, public", headers=extra)
        if mode:
            return await garbage_response(request, mode, content, self.faults, json_content_type=json_content_type)
        if not self.page_validators:
            return web.Response(body=body, headers={"Content-Type": content_type, **extra})
        return await serve_content(request, content, self.faults)

    def _redirect(self, path: str) -> web.Response:
        # Absolute Location, as both the official index and nginx send it.
        return web.Response(status=301, headers={"Location": self.url + path})

    # -- files --

    async def serve_file(self, request: web.Request) -> web.StreamResponse:
        """A dist (or its .metadata) at its /packages/... path, with faults applied."""
        path = request.path
        is_metadata = path.endswith(".metadata")
        dist = self._by_path.get(path.removesuffix(".metadata") if is_metadata else path)
        if dist is None or (is_metadata and (not self.serves_metadata or dist.metadata is None)):
            raise web.HTTPNotFound()
        body = dist.metadata if is_metadata else dist.data
        assert body is not None
        if "Range" in request.headers:
            if not self.honour_ranges:
                return web.Response(body=body, content_type=FILE_CT)
            if self.ranges_as_whole_206:
                return await self._whole_as_206(request, body)
            body = self.range_bodies.get(dist.filename, body)
        if self.faults.corrupts(path):
            body = corrupt(body)
        content = Content(body, FILE_CT, _BASE_TS, "max-age=365000000, immutable, public")
        mode = self.garbage.get(dist.filename + (".metadata" if is_metadata else ""))
        if mode:
            return await garbage_response(request, mode, content, self.faults)
        return await serve_content(request, content, self.faults)

    async def _whole_as_206(self, request: web.Request, body: bytes) -> web.StreamResponse:
        headers = {"Content-Type": FILE_CT, "Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}"}
        response = web.StreamResponse(status=206, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        try:
            for offset in range(0, len(body), 64 * 1024):
                chunk = body[offset : offset + 64 * 1024]
                await response.write(chunk)  # returns once the chunk is out (or buffered by the kernel)
                self.range_bytes_sent += len(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client took what it asked for and hung up
        return response


class _FilesHost(FakeServer):
    """The separate files host of OfficialLikeUpstream; faults come from the owner."""

    def __init__(self, owner: _IndexServer) -> None:
        super().__init__(owner.faults)
        self._owner = owner

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not request.path.startswith("/packages/"):
            raise web.HTTPNotFound()
        return await self._owner.serve_file(request)


# --- the official-like index ------------------------------------------------------------

# The files hosts of the official-like fakes now running, as `allowed_hosts` entries. The real index's files host is
# a public one, which pkgcache's guard against private addresses lets through; these stand-ins are on loopback, so
# the pkgcaches the tests start are told of them (tests/cache_service.py), as an admin would name a LAN files host.
_PUBLIC_STAND_INS: set[str] = set()


def public_stand_ins() -> list[str]:
    """The running official-like fakes' files hosts ("127.0.0.1:<port>"), which stand in for public hosts."""
    return sorted(_PUBLIC_STAND_INS)


class OfficialLikeUpstream(_IndexServer):
    """Simple API at ``{url}/simple/``, files on ``.files`` (another port).

    ``json_content_type`` is what JSON answers are labelled with; set it to
    "application/octet-stream" to imitate a mirror that mislabels JSON.
    Requests to the files host are logged on ``.files.requests``.
    """

    serves_metadata = True

    def __init__(self, dists: Iterable[Dist] = (), *, json_content_type: str = JSON_CT) -> None:
        super().__init__(dists)
        self.json_content_type = json_content_type
        self.files = _FilesHost(self)

    async def start(self) -> None:
        await self.files.start()
        await super().start()
        _PUBLIC_STAND_INS.add(self.files_host)

    async def stop(self) -> None:
        if self.files.port:
            _PUBLIC_STAND_INS.discard(self.files_host)
        await super().stop()
        await self.files.stop()

    @property
    def files_host(self) -> str:
        """The files host as an `[upstream] allowed_hosts` entry."""
        return f"127.0.0.1:{self.files.port}"

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    def file_url(self, dist: Dist) -> str:
        return self.files.url + self.file_path(dist)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/simple":
            return self._redirect("/simple/")
        if path == "/simple/":
            return await self._root(request)
        if path.startswith("/integrity/"):
            return await self.serve_provenance(request)
        match = re.fullmatch(r"/simple/([^/]+)(/?)", path)
        if match is None:
            raise web.HTTPNotFound()
        name, slash = match.groups()
        normalized = canonicalize_name(name)
        if name != normalized or not slash:
            return self._redirect(f"/simple/{normalized}/")
        normalized = self.pages_instead.get(normalized, normalized)
        dists = self.projects().get(normalized, [])
        body, content_type = self._render(
            negotiate(request.headers.get("Accept")),
            self._project_doc(normalized, dists),
            self._project_html(normalized, dists),
        )
        # A fault set on the project wins over both the page and its absence.
        mode = self._project_fault(normalized)
        if not dists and not mode:
            raise web.HTTPNotFound()
        return await self._page_response(
            request, body, content_type, self._headers(), mode, json_content_type=self.json_content_type
        )

    def _headers(self) -> dict[str, str]:
        return {"Vary": "Accept, Accept-Encoding", "X-PyPI-Last-Serial": str(self.serial)}

    def _render(self, chosen: str, json_doc: dict[str, object], html_body: bytes) -> tuple[bytes, str]:
        """(body, Content-Type) for the negotiated format."""
        if chosen == JSON_CT:
            return json.dumps(json_doc, separators=(",", ":")).encode(), self.json_content_type
        return html_body, "text/html; charset=utf-8" if chosen == TEXT_HTML else HTML_V1_CT

    def _meta(self) -> dict[str, object]:
        return {"api-version": "1.1", "_last-serial": self.serial}

    async def _root(self, request: web.Request) -> web.StreamResponse:
        chosen = negotiate(request.headers.get("Accept"))
        projects = self.projects()
        names = {norm: dists[0].project for norm, dists in projects.items()}
        doc = {"meta": self._meta(), "projects": [{"name": n, "_last-serial": self.serial} for n in names.values()]}
        links = [f'    <a href="/simple/{norm}/">{html.escape(n)}</a>' for norm, n in names.items()]
        page = self._html_page("Simple index", links, _REPO_VERSION_META)
        return await self._page_response(request, *self._render(chosen, doc, page), self._headers())

    def _file_entry(self, dist: Dist, extras: PageExtras | None = None) -> dict[str, object]:
        metadata: object = {"sha256": dist.metadata_sha256} if dist.metadata_sha256 else False
        if metadata and not self.metadata_hash_given:
            metadata = True
        entry: dict[str, object] = {
            "filename": dist.filename,
            "url": self.file_url(dist),
            "hashes": {"sha256": self.listed_sha256.get(dist.filename, dist.sha256)},
            "requires-python": dist.requires_python,
            "yanked": dist.yanked,
            "core-metadata": metadata,
            "data-dist-info-metadata": metadata,
            "size": self.listed_size.get(dist.filename, dist.size),
            "upload-time": self.upload_time_overrides.get(dist.filename, self._upload_times[dist.filename]),
        }
        if extras is not None:
            # As the official index writes it: a URL, or null for a file without provenance.
            entry["provenance"] = self.provenance_url(dist) if extras.provenance else None
        return entry

    def _project_doc(self, normalized: str, dists: list[Dist]) -> dict[str, object]:
        extras = self._extras(normalized)
        meta = self._meta()
        files: list[object] = [self._file_entry(d, extras) for d in dists]
        doc: dict[str, object] = {"meta": meta, "name": normalized}
        if extras is not None:
            meta["api-version"] = extras.api_version
            if extras.tracks:
                meta["tracks"] = list(extras.tracks)  # PEP 708: in meta
            status = {"status": extras.status, "reason": extras.status_reason}
            if any(value is not None for value in status.values()):
                doc["project-status"] = {key: value for key, value in status.items() if value is not None}
            doc["alternate-locations"] = list(extras.alternate_locations)
            files += extras.json_files
        doc["files"] = files
        doc["versions"] = _sort_versions(d.version for d in dists)
        return doc

    def _project_html(self, normalized: str, dists: list[Dist]) -> bytes:
        extras = self._extras(normalized)
        links = [self._link(d, self.file_url(d), extras) for d in dists]
        if extras is None:
            return self._html_page(f"Links for {normalized}", links, _REPO_VERSION_META)
        return self._html_page(f"Links for {normalized}", [*links, *extras.html_links], extras.html_meta())


# --- the mirror-like index ---------------------------------------------------------------

TUNA_ALLOWED_HEADERS = frozenset(
    {
        "host",
        "user-agent",
        "accept",
        "accept-encoding",
        "connection",
        "if-none-match",
        "if-modified-since",
        "range",
        "cache-control",
        "pragma",
        "content-length",
        "keep-alive",
    }
)


@dataclass
class Firewall:
    """The mirror's request filter; every rule can be changed by a test."""

    allowed_headers: frozenset[str] = TUNA_ALLOWED_HEADERS
    forbidden_ua_prefixes: tuple[str, ...] = ("python-requests",)
    # pip's and uv's own User-Agents contain "implementation" (linehaul JSON), so this
    # rule also refuses them when they talk to the mirror directly.
    forbidden_ua_substrings: tuple[str, ...] = ("implementation",)
    enabled: bool = True
    refused: list[tuple[int, str]] = field(default_factory=list)  # (status, why) per refusal

    def check(self, request: web.BaseRequest) -> web.Response | None:
        if not self.enabled:
            return None
        for raw_name, _ in request.raw_headers:
            name = raw_name.decode("latin-1")
            if name.lower() not in self.allowed_headers:
                return self._refuse(404, f"header {name}")
        ua = request.headers.get("User-Agent")
        if not ua:
            return self._refuse(403, "no User-Agent")
        if ua.startswith(self.forbidden_ua_prefixes) or any(s in ua for s in self.forbidden_ua_substrings):
            return self._refuse(403, f"User-Agent {ua[:60]}")
        return None

    def _refuse(self, status: int, why: str) -> web.Response:
        self.refused.append((status, why))
        return web.Response(status=status, text=f"{status} refused\n", headers={"Content-Type": "text/html"})


class TunaLikeUpstream(_IndexServer):
    """A static mirror: HTML only, relative links, files under ``{url}/packages/``.

    ``firewall`` holds the request filter; ``TunaLikeUpstream(dists, strict_ua=False)``
    drops the "implementation" rule so pip and uv can talk to it directly.
    """

    def __init__(self, dists: Iterable[Dist] = (), *, strict_ua: bool = True) -> None:
        super().__init__(dists)
        self.firewall = Firewall()
        if not strict_ua:
            self.firewall.forbidden_ua_substrings = ()

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    def file_url(self, dist: Dist) -> str:
        return self.url + self.file_path(dist)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = self.firewall.check(request)
        if refusal is not None:
            return refusal
        path = request.path
        if path.startswith("/packages/"):
            return await self.serve_file(request)
        if path.startswith("/integrity/"):
            return await self.serve_provenance(request)
        if path == "/simple":
            return self._redirect("/simple/")
        if path == "/simple/":
            return await self._root(request)
        match = re.fullmatch(r"/simple/([^/]+)(/?)", path)
        # No normalisation: only the exact normalised directory name exists.
        if match is None or match.group(1) != canonicalize_name(match.group(1)):
            raise web.HTTPNotFound()
        name, slash = match.groups()
        if not slash:
            return self._redirect(f"/simple/{name}/")  # nginx adds the slash for directories
        dists = self.projects().get(name, [])
        extras = self._extras(name)
        links = [self._link(d, "../.." + self.file_path(d), extras) for d in dists]
        if extras is None:
            body = self._html_page(f"Links for {name}", links)
        else:
            body = self._html_page(f"Links for {name}", [*links, *extras.html_links], extras.html_meta())
        mode = self._project_fault(name)
        if not dists and not mode:
            raise web.HTTPNotFound()
        return await self._mirror_page(request, body, mode)

    async def _root(self, request: web.Request) -> web.StreamResponse:
        links = [f'    <a href="{norm}/">{norm}</a><br />' for norm in self.projects()]
        return await self._mirror_page(request, self._html_page("Simple Index", links))

    async def _mirror_page(self, request: web.Request, body: bytes, mode: str | None = None) -> web.StreamResponse:
        return await self._page_response(request, body, TEXT_HTML, {"Server": "nginx"}, mode)


class SlowUpstream(TunaLikeUpstream):
    """TunaLike that waits ``delay`` seconds before every answer and sends bodies at
    ``bytes_per_second`` (0 = unthrottled) in small chunks, each body's first ``fast_bytes`` unthrottled (nginx's
    ``limit_rate_after``); all can be changed while running."""

    delay: FaultKnob[float] = FaultKnob()
    bytes_per_second: FaultKnob[int | None] = FaultKnob()
    fast_bytes: FaultKnob[int] = FaultKnob()

    def __init__(
        self,
        dists: Iterable[Dist] = (),
        *,
        delay: float = 0.0,
        bytes_per_second: int = 1024 * 1024,
        strict_ua: bool = True,
    ) -> None:
        super().__init__(dists, strict_ua=strict_ua)
        self.delay = delay
        self.bytes_per_second = bytes_per_second


class FailingUpstream(FakeServer):
    """Every request fails: mode "503" (or any 3-digit status), "reset", "hang".

    ``mode`` and ``hang_seconds`` can be changed while running.
    """

    mode: FaultKnob[str | None] = FaultKnob("fail_mode")
    hang_seconds: FaultKnob[float] = FaultKnob()

    def __init__(self, mode: str = "503", *, hang_seconds: float = 30.0) -> None:
        super().__init__(Faults(fail_mode=mode, hang_seconds=hang_seconds))

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"
