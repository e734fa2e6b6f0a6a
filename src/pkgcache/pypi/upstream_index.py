"""The PyPI side's way to the mirrors: project pages fetched (or revalidated) and files downloaded.

Knows the mirrors' layouts (a page's own links for the upstream that listed it, the same `packages/...` path on the
others) and what to ask for (JSON preferred, validators only towards the upstream that issued them). Keeps
nothing: caching is the layer above (cached_index.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Collection
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, urljoin

import aiohttp

from pkgcache.config import PypiConfig, PypiUpstream
from pkgcache.node_identity import FILES_REFUSED_HEADER, POLICY_REFUSAL, CopyState, NodeIdentity, copy_state
from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.pages import CachedPage, in_page_thread
from pkgcache.pypi.parse import ContradictoryPage, InvalidPage, NeedsFullReader, parse_project_page
from pkgcache.storage.downloads import Download, Expected, IntegrityError
from pkgcache.storage.filetypes import magic_for, max_package_size
from pkgcache.upstream.pool import (
    AnswerTooLarge,
    NotAuthoritative,
    TargetFor,
    Upstream,
    UpstreamError,
    UpstreamNotFound,
    UpstreamsUnavailable,
    read_limited,
)
from pkgcache.upstream.transfer import Elsewhere, Fetcher

log = logging.getLogger(__name__)

# What pkgcache asks upstreams for: JSON when they have it, HTML otherwise. The answer's format is read from
# its body either way.
UPSTREAM_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
MAX_PAGE_BYTES = 64 * 1024 * 1024
# A page this small is read on the event loop (about 2 ms for 64 KiB, some 250 links) when the quick reader can
# read it: in a thread it would hold the GIL all the same, and the hop there and back, and the wait for the GIL,
# cost a cold miss more than that. Anything html.parser has to read is read in the page threads.
INLINE_PARSE_BYTES = 64 * 1024

# What a probe asks a resting PyPI upstream for (upstream/pool.py): a page every mirror of the index has, small
# enough (and only its first byte is asked for), as `pkgcache check` asks.
PROBE_PROJECT = "pip"

# A PEP 740 provenance holds a few attestations of a few KB each; anything this big is not one.
MAX_PROVENANCE_BYTES = 4 * 1024 * 1024
# A check of a small file's whole body; raises ValueError when it is not the file asked for.
BodyCheck = Callable[[bytes], None]


class UpstreamIndex:
    """Pages and files from the PyPI upstreams, through one pool."""

    def __init__(self, config: PypiConfig, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.pool = fetcher.pool
        self._upstream_config = {upstream.name: upstream for upstream in config.upstreams}
        self.index_ttl = config.index_ttl

    async def fetch_page(self, project: str, previous: CachedPage | None) -> CachedPage:
        """The project's page from the first upstream that has it; `previous` (304) when it did not change.

        A page that lists a file name twice, differently (parse.ContradictoryPage), is passed over for the next
        upstream's; when no upstream gives a better one, the first such page is taken, each of those files listed
        once without a hash for its bytes to decide which entry it is (or left out when they could not).
        Raises UpstreamNotFound / UpstreamsUnavailable as the pool does.
        """
        contradictory: list[CachedPage] = []
        try:
            return await self.pool.fetch(
                lambda upstream: urljoin(upstream.base_url, f"{project}/"),
                lambda upstream, response: self._read_page(project, previous, upstream, response, contradictory),
                headers=lambda upstream: _page_request_headers(previous, upstream),
                ok_statuses=frozenset({200, 304}),
                # Nothing reaches the clients while a page is read: one that takes longer is left for the next upstream.
                timeout=self.pool.policy.page_timeout,
            )
        except (UpstreamNotFound, UpstreamsUnavailable) as exc:
            if not _take_contradictory(contradictory, previous, exc):
                raise
            entry = contradictory[0]
            undecided = sorted(dist.filename for dist in entry.page.files if dist.candidates)
            log.warning(
                "no upstream gave a page of %s without contradictions: %s's is taken; %s",
                project,
                entry.upstream,
                f"{', '.join(undecided)} listed once, without a hash: the bytes fetched decide which entry each is"
                if undecided
                else "without the files listed more than once, differently (no hash to tell them apart)",
            )
            return entry

    async def pages_of_others(
        self, project: str, but: str, *, nor: Collection[str] = ()
    ) -> AsyncGenerator[CachedPage, None]:
        """The project's page from each upstream other than `but` (and those in `nor`) that is not resting, in the
        pool's order, as each is asked (the caller stops asking when it has what it needs); those that fail or lack
        it are passed over. Each is asked alone, so as the last upstream left, and is bounded all the same: a page
        that takes longer than page_timeout (one that never ends) fails that upstream, as in fetch_page, rather
        than hold the check that asked. Nothing is kept."""
        for upstream in self.pool.candidates():
            if upstream.name == but or upstream.name in nor:
                continue
            try:
                yield await self.pool.fetch(
                    _only(upstream, urljoin(upstream.base_url, f"{project}/")),
                    lambda candidate, response: self._read_page(project, None, candidate, response, []),
                    headers=lambda candidate: _page_request_headers(None, candidate),
                    timeout=self.pool.policy.page_timeout,
                    bound_last=True,
                )
            except (UpstreamNotFound, UpstreamsUnavailable) as exc:
                log.info("no page of %s from %s to compare: %s", project, upstream.name, exc)

    async def _read_page(
        self,
        project: str,
        previous: CachedPage | None,
        upstream: Upstream,
        response: aiohttp.ClientResponse,
        contradictory: list[CachedPage],
    ) -> CachedPage:
        page = await self._page_of(project, previous, upstream, response, contradictory)
        if page.upstream == upstream.name:  # this answer's page (not a cached one kept over a lagging mirror's)
            # A parent pkgcache's page: what its policy let through, or (every file refused) showed whole.
            node = NodeIdentity.from_headers(response.headers)
            page.parent = None if node is None else node.name
            page.parent_refuses_all = node is not None and response.headers.get(FILES_REFUSED_HEADER) == POLICY_REFUSAL
        # A parent pkgcache's copy past its time-to-live, or its offline view: not kept as fresh (node_identity.py).
        believed = copy_state(response.headers)
        page.provisional = believed is CopyState.NOT_AUTHORITATIVE
        if believed is CopyState.FRESH:
            return page
        page.fetched_at = min(page.fetched_at, time.time() - self.index_ttl)
        if believed is CopyState.EXPIRED:
            return page
        why = f"{upstream.name}, a pkgcache, answered with its offline view or a copy it could not revalidate"
        page.refresh_error = why
        raise NotAuthoritative(f"{why}: the next upstream is asked", page)

    async def _page_of(
        self,
        project: str,
        previous: CachedPage | None,
        upstream: Upstream,
        response: aiohttp.ClientResponse,
        contradictory: list[CachedPage],
    ) -> CachedPage:
        if response.status == 304 and previous is not None:
            previous.fetched_at = time.time()
            previous.refresh_error = None
            return previous
        body = await read_limited(response, MAX_PAGE_BYTES, self.pool.policy)
        contradiction: ContradictoryPage | None = None
        try:
            page = None
            if len(body) <= INLINE_PARSE_BYTES:
                with contextlib.suppress(NeedsFullReader):
                    page = parse_project_page(body, str(response.url), project, quick_only=True)
            if page is None:
                page = await in_page_thread(parse_project_page, body, str(response.url), project)
        except ContradictoryPage as exc:
            page, contradiction = exc.page, exc
        except InvalidPage as exc:
            raise UpstreamError(f"{upstream.name}: not a project page for {project}: {exc}") from None
        if previous is not None and previous.upstream != upstream.name and _older_than(page, response, previous):
            # A lagging mirror (the one that gave the page failing): its older page would take files away that
            # the cached one lists. Kept as if it had answered 304.
            log.info("%s's page of %s is older than the cached one: the cached one is kept", upstream.name, project)
            previous.fetched_at = time.time()
            previous.refresh_error = None
            return previous
        entry = CachedPage(
            page=page,
            upstream=upstream.name,
            fetched_at=time.time(),
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
        )
        if contradiction is not None:
            # One project's page, not the upstream's fault at large: it is not rested.
            contradictory.append(entry)
            reason = f"{upstream.name}: its page of {project} {contradiction}"
            raise UpstreamError(reason, rest_upstream=False)
        return entry

    def is_resting(self, upstream_name: str) -> bool:
        """Whether an upstream rests after failing (the pages it gave may link files only it serves)."""
        upstream = self.pool.by_name(upstream_name)
        return upstream is not None and self.pool.is_resting(upstream)

    def is_pkgcache(self, upstream_name: str) -> bool:
        """Whether an upstream's answers said it is a pkgcache (a parent tier): its pages link its own files."""
        upstream = self.pool.by_name(upstream_name)
        return upstream is not None and upstream.pkgcache is not None

    def download(self, path: Path, entry: CachedPage, dist: DistFile, *, replace: bool = False) -> Download | None:
        """The download bringing a file the page lists to `path`; None if it is there already. `replace`: the
        file there is not the one the page lists now (replaced upstream under its name): fetched again, it
        replaces that one once whole and checked."""
        expected = Expected(
            hashes=dict(dist.hashes),
            size=dist.size,
            magic=magic_for(dist.filename),
            max_size=max_package_size(),
            one_of=tuple((candidate.hashes, candidate.size) for candidate in dist.candidates),
        )
        # A parent pkgcache's page links files only it serves: the other upstreams' paths for one it cannot give
        # (it cut the file its own upstream cut or spoiled, or its upstreams failed) are on their own pages.
        elsewhere = self._on_other_pages(entry, dist) if self.is_pkgcache(entry.upstream) else None
        return self.fetcher.download(
            path, self.file_target(entry, dist), expected, replace=replace, elsewhere=elsewhere
        )

    def _on_other_pages(self, entry: CachedPage, dist: DistFile) -> Elsewhere:
        """Where the upstreams not tried yet have a file `entry` lists: the link of the first one whose page lists it
        as `entry` does (no hash or size of it contradicts `entry`'s; the bytes are checked against `entry`'s all
        the same). Asked only once the upstreams `entry`'s links lead to could not give the file."""
        project = entry.page.name

        async def find(tried: frozenset[str]) -> TargetFor | None:
            async with contextlib.aclosing(self.pages_of_others(project, but=entry.upstream, nor=tried)) as others:
                async for other in others:
                    listed = other.files.get(dist.filename)
                    if listed is not None and _same_file(listed, dist):
                        log.info("%s: %s lists it too, at %s", dist.filename, other.upstream, listed.url)
                        return _only_named(other.upstream, listed.url)
            return None

        return find

    def download_provenance(self, path: Path, entry: CachedPage, dist: DistFile) -> Download | None:
        """The download of a file's PEP 740 provenance, from where the page's upstream said it is."""
        url = dist.provenance_url
        # Provenance is a JSON object: its first byte and its parse say so, as for conda's JSON indexes.
        expected = Expected(magic=(b"{",), content_check=check_provenance, max_size=MAX_PROVENANCE_BYTES)
        return self.fetcher.download(path, lambda upstream: url if upstream.name == entry.upstream else None, expected)

    def file_target(self, entry: CachedPage, dist: DistFile, suffix: str = "") -> TargetFor:
        """Which URL each upstream has for a file (plus `suffix`, e.g. `.metadata`): the page's own link for the
        upstream that listed it; on the others, its path on a pkgcache (a parent, known by its answers:
        `files/<project>/<file>` beside its `simple/`), else the same `packages/...` path as on the mirror."""
        url = dist.url
        packages_path = url.partition("/packages/")[2]
        project = entry.page.name

        def target(upstream: Upstream) -> str | None:
            if upstream.name == entry.upstream:
                return url + suffix
            if upstream.pkgcache is not None:
                return parent_file_url(upstream, project, dist.filename) + suffix
            files_base = self._files_base(upstream.name)
            if packages_path and files_base:
                return files_base + packages_path + suffix
            return None

        return target

    async def fetch_small(self, target: TargetFor, limit: int, check: BodyCheck | None = None) -> bytes:
        """A small file (a `.metadata`) read whole from the first upstream that has it and whose answer passes
        `check` (which raises ValueError on a body that is not the file: another upstream is asked). An answer over
        `limit` is no fault of its upstream's (not rested): the next is asked, and none may give it."""

        async def read(upstream: Upstream, response: aiohttp.ClientResponse) -> bytes:
            try:
                body = await read_limited(response, limit, self.pool.policy)
            except AnswerTooLarge as exc:
                # Larger than read into memory, not wrong for it: a parent pkgcache serves a METADATA of any size.
                # The caller gets the file another way; the upstream keeps serving.
                raise UpstreamError(f"{upstream.name}: {exc}", rest_upstream=False) from None
            if check is not None:
                try:
                    check(body)
                except ValueError as exc:
                    # Like a file failing its hash: counted, but the upstream's other files may be fine.
                    raise UpstreamError(f"{upstream.name}: {exc}", rest_upstream=False) from None
                except MemoryError:
                    raise
                except Exception as exc:
                    # What the body made the check's parser raise that it did not foresee: a verdict on the body
                    # all the same (as for downloads' content checks), not a 500 that leaves this upstream first.
                    reason = f"{upstream.name}: a body its check cannot read ({type(exc).__name__}: {exc})"
                    raise UpstreamError(reason, rest_upstream=False) from None
            return body

        return await self.pool.fetch(target, read, headers=lambda upstream: {"Accept-Encoding": "identity"})

    def _files_base(self, upstream_name: str) -> str | None:
        upstream: PypiUpstream | None = self._upstream_config.get(upstream_name)
        if upstream is None:
            return None
        # Mirrors keep files beside the index: <root>/simple/ and <root>/packages/.
        return upstream.files_url or urljoin(upstream.url, "../packages/")


def parent_file_url(upstream: Upstream, project: str, filename: str) -> str:
    """Where a pkgcache upstream (a parent) serves a project's file: `files/<project>/<file>` beside its `simple/`."""
    return urljoin(upstream.base_url, f"../files/{quote(project)}/{quote(filename)}")


def _only(upstream: Upstream, url: str) -> TargetFor:
    """A target that only `upstream` has (at `url`)."""
    return _only_named(upstream.name, url)


def _only_named(name: str, url: str) -> TargetFor:
    """A target that only the upstream called `name` has (at `url`)."""
    return lambda candidate: url if candidate.name == name else None


def _same_file(listed: DistFile, wanted: DistFile) -> bool:
    """Whether another page's entry can be the file `wanted` is (one of, when it is listed undecided): no hash both
    give differs, nor the size."""
    if listed.size is not None and wanted.size is not None and listed.size != wanted.size:
        return False
    entries = [(wanted.hashes, wanted.size)] + [(c.hashes, c.size) for c in wanted.candidates]
    return any(
        all(listed.hashes[name].lower() == digest.lower() for name, digest in hashes.items() if name in listed.hashes)
        for hashes, _ in entries
    )


def probe_target(upstream: Upstream) -> str:
    """The URL a probe of a PyPI upstream asks for."""
    return urljoin(upstream.base_url, f"{PROBE_PROJECT}/")


def _take_contradictory(
    contradictory: list[CachedPage], previous: CachedPage | None, failure: UpstreamNotFound | UpstreamsUnavailable
) -> bool:
    """Whether the first page that contradicted itself is taken (without those files) as no upstream gave a better
    one: unless the cached page came from another upstream that could not answer now (it is kept, stale)."""
    if not contradictory:
        return False
    return previous is None or previous.upstream == contradictory[0].upstream or isinstance(failure, UpstreamNotFound)


def _older_than(page: ProjectPage, response: aiohttp.ClientResponse, previous: CachedPage) -> bool:
    """Whether a page from another upstream is an older version than the cached one: by the index's serial, which
    mirrors copy from the index they mirror, when both pages give one; failing that, by Last-Modified, when both
    answers gave one. When neither tells (one page without a serial, one answer without a date), a page that only
    takes files away (it lists none the cached one does not) is taken for a lagging copy: a project rarely loses
    files (yanked ones stay listed), and the upstream that gave the cached page still tells of a real removal."""
    if page.last_serial is not None and previous.page.last_serial is not None:
        return page.last_serial < previous.page.last_serial
    new, old = _http_date(response.headers.get("Last-Modified")), _http_date(previous.last_modified)
    if new is not None and old is not None:
        return new < old
    names = {dist.filename for dist in page.files}
    return names < previous.files.keys()


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _page_request_headers(previous: CachedPage | None, upstream: Upstream) -> dict[str, str]:
    headers = {"Accept": UPSTREAM_ACCEPT}
    # Validators are only meaningful to the upstream that issued them.
    if previous is not None and previous.upstream == upstream.name:
        if previous.etag:
            headers["If-None-Match"] = previous.etag
        if previous.last_modified:
            headers["If-Modified-Since"] = previous.last_modified
    return headers


def check_provenance(path: Path) -> None:
    """Raises IntegrityError unless the file is one JSON object (not an HTML page served with 200, not a huge
    body a mirror made up): it is kept for a year, and clients read it as PEP 740 provenance. (Its size is capped as
    it arrives, too: Expected.max_size.)"""
    if path.stat().st_size > MAX_PROVENANCE_BYTES:
        raise IntegrityError(f"provenance of more than {MAX_PROVENANCE_BYTES} bytes")
    try:
        document = json.loads(path.read_bytes())
    except ValueError as exc:  # invalid JSON or UTF-8
        raise IntegrityError(f"provenance that is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise IntegrityError("provenance that is not a JSON object")
