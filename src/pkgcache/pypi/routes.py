"""The PyPI side's HTTP routes: `/pypi/simple/...` pages and `/pypi/files/...` files.

Handlers are thin: they check the request, ask the chain of index layers (pypi/source.py), and answer in the
negotiated format.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pkgcache.cache_state import REVALIDATE_HEADER, CacheState, revalidation
from pkgcache.http.fast_path import FastPath
from pkgcache.http.request_cycle import add_get
from pkgcache.http.responses import (
    CACHE_STATE,
    CACHE_STATE_HEADER,
    UPSTREAM_USED,
    UPSTREAMS_FAILED,
    ByteRange,
    Found,
    answer_found,
    error_for,
    not_found_error,
    parse_byte_range,
    plain_error,
    send_cached_file,
    send_download,
)
from pkgcache.node_identity import FILES_REFUSED_HEADER, POLICY_REFUSAL
from pkgcache.pypi.core_metadata import made_not_kept
from pkgcache.pypi.names import (
    METADATA_SUFFIX,
    PROVENANCE_SUFFIX,
    BadName,
    check_filename,
    companion_base,
    normalize_project,
)
from pkgcache.pypi.negotiate import accepts_gzip, choose_format
from pkgcache.pypi.pages import CachedPage, Rendered, same_page_etag
from pkgcache.pypi.render import (
    JSON_CONTENT_TYPE,
    render_project_list_html,
    render_project_list_json,
    with_charset,
)
from pkgcache.pypi.source import FileNotListed, IndexSource
from pkgcache.storage.downloads import Download
from pkgcache.storage.file_use import FileUse
from pkgcache.storage.store import StorageError
from pkgcache.upstream.pool import UpstreamNotFound
from pkgcache.upstream.ranges import (
    MAX_PASSED_RANGE,
    RangeBody,
    RangeNotSatisfiable,
    RangesRefused,
    may_pass_through,
)

log = logging.getLogger(__name__)

PYPI_INDEX_KEY = web.AppKey("pypi_index", IndexSource)
PAGES_PREFIX = "/pypi/simple/"
NOT_ACCEPTABLE = (
    "none of the formats in your Accept header is served here; ask for application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html or text/html"
)


def add_pypi_routes(
    app: web.Application, index: IndexSource, file_use: FileUse, fast_path: FastPath | None = None
) -> None:
    app[PYPI_INDEX_KEY] = index
    routes = app[PYPI_ROUTES_KEY] = PypiRoutes(index, file_use)
    if fast_path is not None:
        fast_path.register(PAGES_PREFIX, routes.fast_page)
    # aiohttp tries the routes under one prefix in the order they were added: the busiest one goes first.
    add_get(app, "/pypi/simple/{project}/", routes.project_page)
    add_get(app, "/pypi/simple/{project}", project_page_without_slash)
    add_get(app, "/pypi/simple/", routes.project_list)
    add_get(app, "/pypi/simple", _redirect_to_index_root)
    add_get(app, "/pypi/files/{project}/{filename}", routes.distribution_file)


async def _redirect_to_index_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/pypi/simple/")


async def project_page_without_slash(request: web.Request) -> web.StreamResponse:
    project = _project_or_error(request)
    raise web.HTTPMovedPermanently(_with_query(request, f"/pypi/simple/{project}/"))


class PypiRoutes:
    """The handlers that need the index, bound to it."""

    def __init__(self, index: IndexSource, file_use: FileUse) -> None:
        self.index = index
        self.file_use = file_use

    async def project_list(self, request: web.Request) -> web.StreamResponse:
        """The projects this cache holds (not the upstream's whole list: clients install by name)."""
        content_type = _negotiated_format(request)
        if content_type is None:
            return plain_error(406, NOT_ACCEPTABLE)
        names = await self.index.cached_projects()
        render = render_project_list_json if content_type == JSON_CONTENT_TYPE else render_project_list_html
        return web.Response(body=render(names), headers={"Content-Type": with_charset(content_type), "Vary": "Accept"})

    def fast_page(self, request: web.Request, rest: str, now: float) -> web.Response | None:
        """The fast path's answer for `/pypi/simple/<rest>`: a fresh page in memory, or None (the usual route)."""
        if not rest.endswith("/"):
            return None  # a query string, too, ends the raw path with something else than "/"
        return self.page_hit(request, rest[:-1], now)

    def page_hit(self, request: web.Request, raw_name: str, now: float | None = None) -> web.Response | None:
        """The answer when the page is fresh in memory, without awaiting anything; None when it needs more.

        The hot path of the whole service (http/fast_path.py offers it requests before aiohttp routes them).
        Memory is keyed by normalised names, so finding the name as written also says it needs no redirect and is
        safe (a name with a slash in it is never a key).
        """
        if REVALIDATE_HEADER in request.headers:
            return None  # revalidated first, by the index layers (project_page)
        if now is None:
            now = time.time()
        entry = self.index.fresh_page(raw_name, now)
        if entry is None:
            return None
        content_type = _negotiated_format(request)
        if content_type is None:
            return None
        rendered = entry.rendered_now(content_type, _takes_gzip(request))
        if rendered is None:
            return None  # a big page not rendered in this format yet: rendered off the event loop by the route
        request[CACHE_STATE] = CacheState.HIT
        request[UPSTREAM_USED] = entry.upstream
        return self._page_response(request, entry, CacheState.HIT, rendered, now)

    async def project_page(self, request: web.Request) -> web.StreamResponse:
        raw_name = request.match_info["project"]
        hit = self.page_hit(request, raw_name)
        if hit is not None:
            return hit
        project = _project_or_error(request)
        if raw_name != project:
            # PEP 503: one URL per project; clients follow the redirect.
            raise web.HTTPMovedPermanently(_with_query(request, f"/pypi/simple/{project}/"))
        content_type = _negotiated_format(request)
        if content_type is None:
            return plain_error(406, NOT_ACCEPTABLE)
        try:
            with revalidation(REVALIDATE_HEADER in request.headers):
                entry, state = await self.index.get_page(project)
        except Exception as exc:
            return _page_error(project, exc)
        request[CACHE_STATE] = state
        request[UPSTREAM_USED] = entry.upstream
        return self._page_response(request, entry, state, await entry.rendered(content_type, _takes_gzip(request)))

    def _page_response(
        self, request: web.Request, entry: CachedPage, state: CacheState, rendered: Rendered, now: float | None = None
    ) -> web.Response:
        age = entry.age(now)
        headers = {
            **rendered.headers,
            "Cache-Control": f"max-age={max(0, int(self.index.index_ttl - age))}",
            "Age": str(int(age)),
            CACHE_STATE_HEADER: state,
        }
        if entry.stale_reason and state == CacheState.STALE:
            headers["X-Pkgcache-Stale-Reason"] = "no upstream could revalidate this page; serving the last good copy"
        if entry.files_refused:
            headers[FILES_REFUSED_HEADER] = POLICY_REFUSAL
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and _names_page(if_none_match, rendered.etag):
            headers.pop("Content-Encoding", None)  # a 304 has no body to be encoded
            return web.Response(status=304, headers=headers)
        return web.Response(body=rendered.body, headers=headers)

    async def distribution_file(self, request: web.Request) -> web.StreamResponse:
        raw_name = request.match_info["project"]
        project = _project_or_error(request)
        try:
            filename = check_filename(request.match_info["filename"])
        except BadName as exc:
            return plain_error(400, f"refused file name: {exc}")
        if raw_name != project:
            raise web.HTTPMovedPermanently(f"/pypi/files/{project}/{filename}")
        content_type = _content_type(filename)
        size: int | None = None  # the file's size when an upstream told it and its page does not
        try:
            if self._wants_part(request, project, filename):
                answer = await self._part_of_uncached(request, project, filename, content_type)
                if not isinstance(answer, _FromDownload):
                    return answer
                size = answer.size
        except Exception as exc:
            return _page_error(project, exc)

        def failed(exc: Exception) -> web.StreamResponse:
            if isinstance(exc, FileNotListed):
                return plain_error(404, f"{project} has no file named {filename} on its upstream's page ({exc})")
            return _page_error(project, exc)

        async def look_up() -> Found | web.StreamResponse:
            try:
                return await self.index.open_file(project, filename)
            except Exception as exc:
                return failed(exc)

        async def answer_found_file(found: Found | web.StreamResponse) -> web.StreamResponse | None:
            if isinstance(found, web.StreamResponse):  # the lookup's failure
                return found
            if isinstance(found, Path):
                request[CACHE_STATE] = CacheState.HIT
                return send_cached_file(request, found, content_type, self.file_use)
            if filename.endswith(METADATA_SUFFIX):
                try:
                    return await self._made_metadata(request, found, content_type)
                except Exception as exc:
                    return failed(exc)
            request[CACHE_STATE] = CacheState.MISS
            response = await send_download(request, found, content_type, size=size)
            if found.source is not None:
                request[UPSTREAM_USED] = found.source
            return response

        return await answer_found(request, look_up, answer_found_file)

    async def _made_metadata(
        self, request: web.Request, made: Download, content_type: str
    ) -> web.StreamResponse | None:
        """Metadata made for this request, as the miss it was. It is made whole before it is kept, and is small:
        the answer waits for it (a HEAD gets its length), then sends the file kept, or the bytes from memory when a
        full disk kept them out (as a page fetched but not kept is served); any other failure is raised."""
        request[CACHE_STATE] = CacheState.MISS
        try:
            await made.wait_finished()
        except StorageError:
            unkept = made_not_kept(made)
            if unkept is None:
                raise
            log.info("served %s from memory: the disk is full, so it was not kept", made.final_path.name)
            response: web.StreamResponse = _not_kept_answer(unkept, content_type)
        else:
            sent = send_cached_file(request, made.final_path, content_type, self.file_use)
            if sent is None:
                return None  # removed since it was made (a purge): made again
            response = sent
        if made.source is not None:
            request[UPSTREAM_USED] = made.source
        response.headers[CACHE_STATE_HEADER] = CacheState.MISS
        return response

    def _wants_part(self, request: web.Request, project: str, filename: str) -> bool:
        """A HEAD, or a single range, on a distribution that is not cached: answered without fetching it whole."""
        if companion_base(filename) is not None or self.index.cached_file(project, filename) is not None:
            return False
        return request.method == "HEAD" or "Range" in request.headers

    async def _part_of_uncached(
        self, request: web.Request, project: str, filename: str, content_type: str
    ) -> web.StreamResponse | _FromDownload:
        """A HEAD, or a short range passed through to an upstream and not kept (uv and poetry read a wheel's end
        this way). Otherwise `_FromDownload`: the file is fetched whole as a GET would, and the range answered from
        that download as its bytes arrive (`send_download`), its last byte once the file is checked. That is so for
        a range over MAX_PASSED_RANGE (nothing but the download holds it, however long) and for one that is the
        whole file (it must pass its check first: see `may_pass_through`), as for several ranges, an If-Range, or
        an upstream that refuses ranges.

        The size is the page's; a page without sizes (the HTML mirrors') has it learnt from the upstream's
        Content-Range: a short range asked as is, or the file's last byte for a HEAD and for the other ranges.
        """
        asked = None
        if request.method != "HEAD":
            asked = parse_byte_range(request.headers["Range"])
            if asked is None or request.headers.get("If-Range") is not None:
                return _FromDownload(None)  # several ranges, or one to check against validators only a cached copy has
        _, dist = await self.index.find_file(project, filename)
        headers = {"Content-Type": content_type, "Accept-Ranges": "bytes", CACHE_STATE_HEADER: CacheState.MISS}
        request[CACHE_STATE] = CacheState.MISS
        try:
            size = dist.size
            if size is None and (asked is None or not _short_ask(asked)):
                size = await self._upstream_size(request, project, filename)
            if asked is None:
                head = web.StreamResponse(headers=headers)
                head.content_length = size
                return head
            if size is not None:
                part = asked.part(size)
                if part.status == 416:
                    raise RangeNotSatisfiable("past the end", size)
                if not may_pass_through(part.start, part.end, size):
                    return _FromDownload(size)
                got = await self.index.read_range(project, filename, part.start, part.end - part.start)
            else:
                ask = asked.upstream_ask()
                assert ask is not None  # a short ask: the size was learnt first otherwise
                got = await self.index.read_range(project, filename, *ask)
                if not may_pass_through(got.first, got.first + len(got.body), got.size):
                    return _FromDownload(got.size)  # the whole file: its bytes are not sent before they are checked
        except RangeNotSatisfiable as exc:
            if dist.size is not None and exc.size != dist.size:
                return plain_error(502, f"the upstream's {filename} is not the size its page gives", **UPSTREAMS_FAILED)
            return _not_satisfiable(exc.size)
        except RangesRefused:
            return _FromDownload(None)
        return _part_answer(request, filename, asked, got, dist.size, headers)

    async def _upstream_size(self, request: web.Request, project: str, filename: str) -> int:
        """A distribution's size from an upstream's answer to a range of its last byte (RangesRefused if none)."""
        try:
            got = await self.index.read_range(project, filename, None, 1)
        except RangeNotSatisfiable as exc:
            return exc.size  # an empty file has no last byte
        request[UPSTREAM_USED] = got.upstream
        return got.size


@dataclass(frozen=True)
class _FromDownload:
    """A request on an uncached distribution that is answered from its download, as a GET is; with the file's size
    when an upstream told it (the page gave none), for the range's Content-Range."""

    size: int | None


def _short_ask(asked: ByteRange) -> bool:
    """Whether a range can be asked of an upstream as written, without knowing the size: not open-ended, and no
    longer than a range passed through may be."""
    ask = asked.upstream_ask()
    return ask is not None and ask[1] <= MAX_PASSED_RANGE


def _not_kept_answer(data: bytes, content_type: str) -> web.Response:
    """Bytes served but not kept: no validators (there is no file to check them against), nor kept by clients."""
    return web.Response(body=data, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def _not_satisfiable(size: int) -> web.Response:
    return plain_error(416, "range not satisfiable", **{"Content-Range": f"bytes */{size}"})


def _part_answer(
    request: web.Request,
    filename: str,
    asked: ByteRange,
    got: RangeBody,
    page_size: int | None,
    headers: dict[str, str],
) -> web.Response:
    """The 206 for bytes read from an upstream, once they are checked to be the part asked of the whole file."""
    if page_size is not None and got.size != page_size:
        return plain_error(502, f"the upstream's {filename} is not the size its page gives", **UPSTREAMS_FAILED)
    part = asked.part(got.size)
    # read_range gives exactly the bytes asked for (clipped to the file's end); the checks stay cheap.
    if part.status != 206 or got.first != part.start or len(got.body) != part.end - part.start:
        return plain_error(
            502, f"the upstream did not send bytes {part.start}-{part.end - 1} of {filename}", **UPSTREAMS_FAILED
        )
    request[UPSTREAM_USED] = got.upstream
    headers["Content-Range"] = f"bytes {part.start}-{part.end - 1}/{got.size}"
    return web.Response(status=206, body=got.body, headers=headers)


def _content_type(filename: str) -> str:
    if filename.endswith(METADATA_SUFFIX):
        return "text/plain; charset=utf-8"
    if filename.endswith(PROVENANCE_SUFFIX):
        return "application/json"
    # As the official files host: clients go by the name, and pip lets application/zip override an sdist's.
    return "application/octet-stream"


PYPI_ROUTES_KEY = web.AppKey("pypi_routes", PypiRoutes)


def _negotiated_format(request: web.Request) -> str | None:
    # The query is only parsed when there is one: `?format=` is rare, and parsing showed in profiles.
    format_param = request.query.get("format") if request.query_string else None
    return choose_format(request.headers.get("Accept"), format_param)


def _project_or_error(request: web.Request) -> str:
    try:
        return normalize_project(request.match_info["project"])
    except BadName as exc:
        raise web.HTTPBadRequest(text=f"refused project name: {exc}\n") from None


def _page_error(project: str, exc: Exception) -> web.Response:
    response = error_for(exc)
    if response is None:
        raise exc
    if isinstance(exc, UpstreamNotFound):
        return not_found_error(f"project {project!r} was not found on any upstream", exc)
    if response.status == 404:
        return plain_error(404, f"project {project!r} was not found on any upstream")
    return response


def _with_query(request: web.Request, path: str) -> str:
    return f"{path}?{request.query_string}" if request.query_string else path


def _names_page(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match matches the page: its tag (either representation), or `*`, which matches any
    current representation (RFC 9110, 13.1.2), as it does for files."""
    return if_none_match.strip() == "*" or same_page_etag(etag) in _etags(if_none_match)


def _etags(header: str | None) -> set[str]:
    """The entity tags of an If-None-Match, weak marks and gzip marks taken off (the page is the same page)."""
    if not header:
        return set()
    return {same_page_etag(tag.strip().removeprefix("W/")) for tag in header.split(",")}


def _takes_gzip(request: web.Request) -> bool:
    return accepts_gzip(request.headers.get("Accept-Encoding"))
