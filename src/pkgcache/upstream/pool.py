"""Talking to upstreams: an ordered list of mirrors with failover, cool-down and politeness.

Both the PyPI side and the conda side go through `UpstreamPool.fetch`. It knows nothing of their formats: a caller
says which URL each upstream has for the thing it wants and hands over a coroutine that consumes the response.
Whatever goes wrong with one upstream (no connection, a timeout, a 5xx, a 429, a refusal, a body the caller
rejects) moves the request on to the next one and puts the failing upstream in a cool-down, so that it is not
hammered on every request while it is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import aiohttp

log = logging.getLogger(__name__)

T = TypeVar("T")

# Headers pkgcache may send upstream. Anything else (a client's User-Agent, X-Forwarded-For...) has made domestic
# mirrors answer 403 or 404, so requests are built from this list only.
PLAIN_REQUEST_HEADERS = frozenset(
    {"accept", "accept-encoding", "if-none-match", "if-modified-since", "range", "user-agent"}
)

NOT_FOUND_STATUSES = frozenset({404, 410})


class UpstreamError(Exception):
    """One upstream could not give a usable answer; the next one should be tried.

    `rest_upstream` is False when the fault is in one answer (a damaged file), not in the upstream itself: it is
    counted, but the upstream keeps serving other requests.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, rest_upstream: bool = True) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rest_upstream = rest_upstream


class UpstreamNotFound(Exception):
    """Every upstream that answered said the thing does not exist."""


class UpstreamsUnavailable(Exception):
    """No upstream gave a usable answer. `errors` says what each one did."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{name}: {reason}" for name, reason in self.errors.items())
        super().__init__(detail or "every upstream is cooling down after failures")


@dataclass
class UpstreamStats:
    requests: int = 0
    failures: int = 0
    not_found: int = 0
    bytes_received: int = 0
    latency_seconds: float | None = None  # smoothed time to response headers

    def observe_latency(self, seconds: float) -> None:
        if self.latency_seconds is None:
            self.latency_seconds = seconds
        else:
            self.latency_seconds = 0.8 * self.latency_seconds + 0.2 * seconds


@dataclass
class Upstream:
    """One mirror as the pool sees it: its name, a connection cap and its health."""

    name: str
    base_url: str
    max_connections: int
    cooldown_until: float = 0.0
    last_error: str | None = None
    stats: UpstreamStats = field(default_factory=UpstreamStats)
    _slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        # Made lazily so that an Upstream can be built outside a running loop.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        return self._slots

    def is_cooling_down(self, now: float) -> bool:
        return now < self.cooldown_until

    def status(self, now: float) -> dict[str, object]:
        return {
            "name": self.name,
            "url": self.base_url,
            "healthy": not self.is_cooling_down(now),
            "cooldown_remaining": max(0.0, round(self.cooldown_until - now, 1)),
            "last_error": self.last_error,
            "requests": self.stats.requests,
            "failures": self.stats.failures,
            "bytes_received": self.stats.bytes_received,
            "latency_ms": None if self.stats.latency_seconds is None else round(self.stats.latency_seconds * 1000, 1),
        }


@dataclass(frozen=True)
class UpstreamPolicySettings:
    user_agent: str
    connect_timeout: float
    read_timeout: float
    cooldown: float
    max_redirects: int
    proxy: str | None = None


TargetFor = Callable[[Upstream], str | None]
HeadersFor = Callable[[Upstream], Mapping[str, str]]
ResponseHandler = Callable[[Upstream, aiohttp.ClientResponse], Awaitable[T]]


class UpstreamPool:
    """An ordered list of upstreams sharing one HTTP client session."""

    def __init__(self, upstreams: list[Upstream], policy: UpstreamPolicySettings) -> None:
        if not upstreams:
            raise ValueError("an upstream pool needs at least one upstream")
        self.upstreams = upstreams
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = make_client_session(self.policy)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def candidates(self) -> list[Upstream]:
        """Upstreams to try, in configured order, leaving out those cooling down."""
        now = time.monotonic()
        return [upstream for upstream in self.upstreams if not upstream.is_cooling_down(now)]

    def by_name(self, name: str) -> Upstream | None:
        return next((upstream for upstream in self.upstreams if upstream.name == name), None)

    async def fetch(
        self,
        target: TargetFor,
        handle: ResponseHandler[T],
        *,
        headers: HeadersFor | None = None,
        method: str = "GET",
        ok_statuses: frozenset[int] = frozenset({200}),
    ) -> T:
        """Ask each upstream in turn until one gives an answer that `handle` accepts.

        `target(upstream)` gives that upstream's URL, or None when it cannot have the thing. `handle` is called
        with the open response when its status is in `ok_statuses`; raising UpstreamError in it moves on to the
        next upstream. Raises UpstreamNotFound when no upstream had it and at least one answered 404/410, and
        UpstreamsUnavailable when none gave a usable answer for any other reason.
        """
        errors: dict[str, str] = {}
        asked_any = False
        for upstream in self.candidates():
            url = target(upstream)
            if url is None:
                continue
            asked_any = True
            request_headers = dict(headers(upstream)) if headers else {}
            try:
                return await self._fetch_from(upstream, url, handle, request_headers, method, ok_statuses)
            except UpstreamNotFound:
                errors[upstream.name] = "not found"
            except UpstreamError as exc:
                errors[upstream.name] = str(exc)
                if exc.rest_upstream:
                    self.report_failure(upstream, str(exc), exc.retry_after)
                else:
                    self.record_bad_answer(upstream, str(exc))
        not_found_on = [name for name, reason in errors.items() if reason == "not found"]
        if asked_any and not_found_on:
            # An upstream that answered "not there" is believed over the ones that could not answer at all.
            raise UpstreamNotFound(f"not found on {', '.join(not_found_on)}")
        raise UpstreamsUnavailable(errors)

    async def _fetch_from(
        self,
        upstream: Upstream,
        url: str,
        handle: ResponseHandler[T],
        headers: dict[str, str],
        method: str,
        ok_statuses: frozenset[int],
    ) -> T:
        unknown = {name for name in headers if name.lower() not in PLAIN_REQUEST_HEADERS}
        if unknown:
            # A programming error, not an upstream's: fail loudly rather than send them.
            raise ValueError(f"refusing to send non-plain headers upstream: {sorted(unknown)}")
        upstream.stats.requests += 1
        started = time.monotonic()
        async with upstream.slots:
            try:
                async with self.session.request(
                    method, url, headers=headers, allow_redirects=True, max_redirects=self.policy.max_redirects
                ) as response:
                    upstream.stats.observe_latency(time.monotonic() - started)
                    self._check_status(response, ok_statuses, url)
                    result = await handle(upstream, response)
            except (UpstreamError, UpstreamNotFound):
                raise
            except aiohttp.TooManyRedirects:
                raise UpstreamError(f"more than {self.policy.max_redirects} redirects from {url}") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamError(f"{type(exc).__name__} from {url}: {exc}".rstrip(": ")) from None
        upstream.last_error = None
        return result

    def _check_status(self, response: aiohttp.ClientResponse, ok_statuses: frozenset[int], url: str) -> None:
        status = response.status
        if status in ok_statuses:
            return
        if status in NOT_FOUND_STATUSES:
            raise UpstreamNotFound(url)
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        raise UpstreamError(f"HTTP {status} from {url}", retry_after=retry_after)

    def record_bad_answer(self, upstream: Upstream, reason: str) -> None:
        """Count a bad answer (a file failing its hash) without resting the upstream: its other files may be fine."""
        upstream.stats.failures += 1
        upstream.last_error = reason
        log.warning("upstream %s: %s", upstream.name, reason)

    def report_failure(self, upstream: Upstream, reason: str, retry_after: float | None = None) -> None:
        """Count a failure of `upstream` and skip it for the cool-down (or as long as it asked us to wait)."""
        upstream.stats.failures += 1
        upstream.last_error = reason
        pause = max(self.policy.cooldown, retry_after or 0.0)
        upstream.cooldown_until = time.monotonic() + pause
        log.warning("upstream %s failed (%s); skipping it for %.0f s", upstream.name, reason, pause)

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [upstream.status(now) for upstream in self.upstreams]


def make_client_session(policy: UpstreamPolicySettings) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.connect_timeout, sock_read=policy.read_timeout)
    # limit=0: the per-upstream semaphores are the caps; the connector only pools connections.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        headers={"User-Agent": policy.user_agent},
        # Never store or send cookies: requests must stay plain and alike whoever asked.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        trust_env=False,
        proxy=policy.proxy,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """A whole body read into memory, refusing one larger than `limit`: an upstream must not exhaust our memory."""
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamError(f"a {response.content_length}-byte answer is larger than the {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise UpstreamError(f"an answer larger than the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)
