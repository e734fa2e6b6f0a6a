"""Fetching what a seed names through pkgcache's own URLs, a bounded number at a time, with progress bars.

Every request goes to pkgcache (`/pypi/simple/<project>/`, `/pypi/files/<project>/<file>`,
`/conda/<root>/<channel>/<subdir>/<file>`), never to an upstream: pkgcache's connection caps, rates, failover and
hash checks apply, and what is fetched lands in its cache exactly as a client's download would. A file already in
the cache is skipped without being read (seen on disk when the data directory is here, else by a HEAD that pkgcache
answers from its cache), so a second run fetches only what the first could not. Each file's body is hashed as it
arrives and checked against what the input expected, as pkgcache checks it against the index. A PyPI file found on
disk that was not there when the seed started was fetched by pkgcache during this run (the resolver's reads of a
small wheel, or of one from a mirror without ranges, bring it whole): it counts as fetched, not as already cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pkgcache.cache_state import REVALIDATE_HEADER, CacheState

from .credentials import Credentials

JSON_PAGE = "application/vnd.pypi.simple.v1+json"
CACHE_STATE_HEADER = "X-Pkgcache-Cache"
# Answers to a revalidation that no upstream gave: pkgcache's copy, past its time-to-live or the offline view.
CACHED_COPY_STATES = frozenset({CacheState.STALE, CacheState.OFFLINE})
CHUNK = 256 * 1024
# Where the PyPI files are, in the data directory as in pkgcache's URLs.
PYPI_FILES = "pypi/files"
# Long silences are pkgcache waiting on a slow mirror for a big file; its own read timeout ends hopeless ones.
READ_TIMEOUT = 600.0
# Files at least this big get a bar of their own while they download.
OWN_BAR_BYTES = 8 * 1024 * 1024
REASON_CHARS = 300


@dataclass(frozen=True)
class FetchItem:
    """One file to have in the cache: its path below pkgcache's root, what it must hash to, where it came from.

    `kind` is "file" (a package, whose absence is a failure) or "index" (conda index files asked for so that
    clients find them later: a 404 is an answer, remembered by pkgcache, not a failure)."""

    path: str
    origin: str
    sha256: str | None = None
    size: int | None = None
    project: str | None = None  # PyPI: the project whose page lists the file
    kind: str = "file"

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Outcome:
    """What became of one item: "fetched", "cached" (already there), "absent" (an index file upstream lacks) or
    "failed" with the reason. `transferred` counts the bytes that came over HTTP for it (0 when skipped)."""

    item: FetchItem
    state: str
    transferred: int = 0
    reason: str = ""
    size: int | None = None  # of a file found in the cache


@dataclass
class PageFile:
    """A file as pkgcache's JSON page lists it."""

    filename: str
    sha256: str | None
    size: int | None
    version: str | None = None


@dataclass
class FetchStats:
    started: float = field(default_factory=time.monotonic)
    bytes_fetched: int = 0

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class SeedClient:
    """HTTP to one pkgcache: pages, files and index files, `jobs` transfers at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        data_dir: Path | None,
        jobs: int,
        credentials: Credentials | None = None,
        console: Console | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.data_dir = data_dir
        self.jobs = max(1, jobs)
        # The resolvers seed runs (uv, rattler) read pkgcache with these too.
        self.credentials = credentials
        self.headers = credentials.header() if credentials is not None else {}
        self.console = console or Console(stderr=True)
        self.stats = FetchStats()
        self._slots = asyncio.Semaphore(self.jobs)
        self._pages: dict[str, asyncio.Task[dict[str, PageFile] | str]] = {}
        self._indexes: dict[str, asyncio.Task[int | None]] = {}
        # Pages and index files no upstream could revalidate: the seed resolved against pkgcache's copies.
        self.cached_copies: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        # The PyPI files in the data directory (its paths) when the seed started, before anything was resolved.
        self._present_at_start: frozenset[str] | None = None

    async def __aenter__(self) -> SeedClient:
        if self.data_dir is not None:
            self._present_at_start = await asyncio.to_thread(_files_below, self.data_dir, PYPI_FILES)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=self.jobs * 2)
        # trust_env False: pkgcache is on this network, never behind the proxy the environment may name. Bodies
        # are read as sent (auto_decompress off), so no Accept-Encoding is sent either: pkgcache gzips pages for
        # clients that say they take it.
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            headers=self.headers,
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use SeedClient in `async with`"
        return self._session

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # --- PyPI pages ------------------------------------------------------------------------------------------

    @property
    def pages_read(self) -> set[str]:
        """The projects whose page this seed has read (each revalidated with its upstream when it was)."""
        return set(self._pages)

    async def project_files(self, project: str) -> dict[str, PageFile] | str:
        """The files pkgcache's page for `project` lists, by name; or why the page could not be had (text).

        Read once per seed, and revalidated with the upstream first: a seed must see this week's releases, not
        the copy other clients are served while it is revalidated in the background."""
        task = self._pages.get(project)
        if task is None:
            task = self._pages[project] = asyncio.ensure_future(self._read_page(project))
        return await task

    async def revalidate_pages(self, projects: Iterable[str]) -> None:
        """Have pkgcache revalidate these pages (those not read yet in this seed) before a resolver reads them."""
        await asyncio.gather(*(self.project_files(project) for project in projects))

    async def _read_page(self, project: str) -> dict[str, PageFile] | str:
        headers = {"Accept": JSON_PAGE, REVALIDATE_HEADER: "1"}
        async with self._slots:
            try:
                async with self.session.get(self.url(f"pypi/simple/{project}/"), headers=headers) as response:
                    if response.status != 200:
                        return await _reason(response)
                    self._note_cached_copy(f"the page of {project}", response)
                    document = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return f"the page of {project}: {_describe(exc)}"
        return _page_files(document)

    # --- conda index files ------------------------------------------------------------------------------------

    async def revalidate_index(self, path: str) -> int | None:
        """Have pkgcache revalidate a conda index file (once per seed) before a solver reads it: a HEAD, so
        that nothing big comes over. Its status (None when pkgcache could not be reached)."""
        task = self._indexes.get(path)
        if task is None:
            task = self._indexes[path] = asyncio.ensure_future(self._head_index(path))
        return await task

    async def _head_index(self, path: str) -> int | None:
        async with self._slots:
            try:
                async with self.session.head(self.url(path), headers={REVALIDATE_HEADER: "1"}) as response:
                    if response.status == 200:
                        self._note_cached_copy(path, response)
                    return response.status
            except (aiohttp.ClientError, TimeoutError):
                return None

    def _note_cached_copy(self, what: str, response: aiohttp.ClientResponse) -> None:
        if response.headers.get(CACHE_STATE_HEADER) in CACHED_COPY_STATES:
            self.cached_copies.append(what)

    # --- files ------------------------------------------------------------------------------------------------

    async def cached_size(self, item: FetchItem) -> int | None:
        """The file's size when pkgcache has it already (found without transferring it), else None."""
        if self.data_dir is not None:
            try:
                return (self.data_dir / item.path).stat().st_size
            except OSError:
                return None
        try:
            async with self.session.head(self.url(item.path)) as response:
                if response.status == 200 and response.headers.get(CACHE_STATE_HEADER) == "hit":
                    return response.content_length or item.size or 0
        except (aiohttp.ClientError, TimeoutError):
            pass
        return None

    async def fetch(self, item: FetchItem, progress: SeedProgress) -> Outcome:
        """Have `item` in pkgcache's cache: skipped when there, else fetched through pkgcache and checked."""
        async with self._slots:
            size = await self.cached_size(item) if item.kind == "file" else None
            if size is not None:
                return Outcome(item, "cached" if self._there_at_start(item) else "fetched", size=size)
            try:
                return await self._download(item, progress)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return Outcome(item, "failed", reason=_describe(exc))

    def _there_at_start(self, item: FetchItem) -> bool:
        """Whether a file found in the cache was there when the seed started (or cannot be told: taken as so). Not
        by its times: a cached file's mtime is its upstream's Last-Modified."""
        if self._present_at_start is None or not item.path.lstrip("/").startswith(PYPI_FILES + "/"):
            return True
        return item.path.lstrip("/") in self._present_at_start

    async def _download(self, item: FetchItem, progress: SeedProgress) -> Outcome:
        async with self.session.get(self.url(item.path)) as response:
            if item.kind == "index" and response.status == 404:
                return Outcome(item, "absent")
            if response.status != 200:
                return Outcome(item, "failed", reason=await _reason(response))
            digest = hashlib.sha256()
            received = 0
            length = response.content_length or item.size
            with progress.file_bar(item, length) as advance:
                async for chunk in response.content.iter_chunked(CHUNK):
                    digest.update(chunk)
                    received += len(chunk)
                    self.stats.bytes_fetched += len(chunk)
                    advance(len(chunk))
            state = "cached" if response.headers.get(CACHE_STATE_HEADER) == "hit" else "fetched"
        if item.sha256 and digest.hexdigest() != item.sha256:
            return Outcome(item, "failed", received, f"sha256 {digest.hexdigest()} is not the {item.sha256} expected")
        if item.size is not None and item.kind == "file" and received != item.size:
            return Outcome(item, "failed", received, f"{received} bytes, not the {item.size} expected")
        return Outcome(item, state, received)

    async def fetch_all(self, items: Iterable[FetchItem], progress: SeedProgress) -> list[Outcome]:
        """Every item, `jobs` at a time; outcomes in the items' order."""
        listed = list(items)
        progress.expect(listed)

        async def one(item: FetchItem) -> Outcome:
            outcome = await self.fetch(item, progress)
            progress.done(outcome)
            return outcome

        return list(await asyncio.gather(*(one(item) for item in listed)))


class SeedProgress:
    """Rich progress bars: one for the whole seed (files done, bytes, speed, time left), one per big file."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not enabled,
        )
        self._total: TaskID | None = None
        self._files = 0
        self._finished = 0
        self._bytes_expected = 0

    def __enter__(self) -> SeedProgress:
        self.progress.start()
        self._total = self.progress.add_task("files", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def expect(self, items: list[FetchItem]) -> None:
        self._files += len(items)
        self._bytes_expected += sum(item.size or 0 for item in items)
        self._update()

    def done(self, outcome: Outcome) -> None:
        self._finished += 1
        # What came over HTTP replaces what was expected: nothing for a file skipped, a part for one that failed.
        self._bytes_expected += outcome.transferred - (outcome.item.size or 0)
        self._update()

    def _update(self) -> None:
        if self._total is None:
            return
        total = self._bytes_expected or None
        self.progress.update(self._total, description=f"{self._finished}/{self._files} files", total=total)

    def file_bar(self, item: FetchItem, length: int | None) -> _FileBar:
        return _FileBar(self, item, length)

    def _advance(self, task: TaskID | None, amount: int) -> None:
        if self._total is not None:
            self.progress.advance(self._total, amount)
        if task is not None:
            self.progress.advance(task, amount)


class _FileBar:
    """Within `with`: a callable adding bytes to the whole seed's bar and, for a big file, to its own."""

    def __init__(self, owner: SeedProgress, item: FetchItem, length: int | None) -> None:
        self.owner = owner
        self.item = item
        self.length = length
        self.task: TaskID | None = None

    def __enter__(self) -> Any:
        if self.length is not None and self.length >= OWN_BAR_BYTES:
            self.task = self.owner.progress.add_task(f"  {self.item.filename}", total=self.length)
        return lambda amount: self.owner._advance(self.task, amount)

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.owner.progress.remove_task(self.task)


def _page_files(document: Any) -> dict[str, PageFile] | str:
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list):
        return "pkgcache's page is not a PEP 691 page"
    found: dict[str, PageFile] = {}
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            continue
        hashes = entry["hashes"] if isinstance(entry.get("hashes"), dict) else {}
        size = entry.get("size")
        found[entry["filename"]] = PageFile(
            entry["filename"], hashes.get("sha256"), size if isinstance(size, int) else None
        )
    return found


async def _reason(response: aiohttp.ClientResponse) -> str:
    """pkgcache's answer in one line: status and the start of its text (which names what each upstream did)."""
    try:
        body = (await response.content.read(4096)).decode("utf-8", errors="replace")
    except (aiohttp.ClientError, TimeoutError):
        body = ""
    text = " ".join(body.split())[:REASON_CHARS]
    return f"HTTP {response.status}" + (f": {text}" if text else "")


def _files_below(data_dir: Path, folder: str) -> frozenset[str]:
    """The paths (relative to `data_dir`, as in pkgcache's URLs) of the files in `folder`'s project folders
    (blocking: a listing of each)."""
    found: set[str] = set()
    try:
        projects = list(os.scandir(data_dir / folder))
    except OSError:
        return frozenset()
    for project in projects:
        try:
            names = os.listdir(project.path)
        except OSError:  # not a folder, or gone meanwhile
            continue
        found.update(f"{folder}/{project.name}/{name}" for name in names)
    return frozenset(found)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
