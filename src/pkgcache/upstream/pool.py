"""Talking to upstreams: an ordered list of mirrors with failover, cool-down and politeness.

Both the PyPI side and the conda side go through `UpstreamPool.fetch`. It knows nothing of their formats: a caller
says which URL each upstream has for the thing it wants and hands over a coroutine that consumes the response.
Whatever goes wrong with one upstream (no connection, a timeout, a 5xx, a 429, a refusal, a body the caller
rejects) moves the request on to the next one and puts the failing upstream in a cool-down, so that it is not
hammered on every request while it is down.

A pool can be held (`hold`: the gate does it when every upstream rests, gate/offline.py): no request of a caller
then leaves it, whatever the cool-downs say, and each upstream whose rest is over is sent one probe instead
(`probe_due`), a small request of the side's choice (`probe_target`). Any answer (to a probe, or to a request
still in flight) lets go of the pool; a failed probe rests the upstream again, so probes are as far apart as
rests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp

from pkgcache.config import HostPort, redact_credentials, with_user_shown
from pkgcache.header_numbers import ascii_number
from pkgcache.node_identity import (
    LOOP_HEADER,
    NOT_SERVED_HEADER,
    NOT_SERVED_PATTERN,
    POLICY_REFUSAL,
    REFUSAL_HEADER,
    REQUEST_CHAIN,
    UPSTREAM_FAILED_HEADER,
    NodeIdentity,
    refusal_reason,
    relays_its_upstream,
    with_chain,
)
from pkgcache.storage.downloads import Absent
from pkgcache.upstream.address_guard import GuardedResolver, RefusedAddress, TrustedHosts, guard_middleware
from pkgcache.upstream.credentials import OriginCredentials, credentials_middleware

log = logging.getLogger(__name__)

T = TypeVar("T")

# Headers pkgcache may send upstream. Anything else (a client's User-Agent, X-Forwarded-For...) has made domestic
# mirrors answer 403 or 404, so requests are built from this list only.
PLAIN_REQUEST_HEADERS = frozenset(
    {"accept", "accept-encoding", "if-none-match", "if-modified-since", "range", "user-agent"}
)
# Headers only a pkgcache upstream (a parent, known by its answers' identity headers) is sent: a caller may give
# them for any upstream, and the pool drops them for the others (mirrors). A client's X-Expected-Sha256 lets the
# parent fetch a conda package its channel no longer lists (conda/package_records.py).
PKGCACHE_REQUEST_HEADERS = frozenset({"x-expected-sha256"})

NOT_FOUND_STATUSES = frozenset({404, 410})
# Statuses a mirror's "your network is blocked" page comes with.
BLOCK_STATUSES = frozenset({403, 451, 429})
# What such pages say: TUNA's shows a red identifier (an 8-digit hex status and a 32-digit request id) with
# "denied access" or "blocked your requests" in several languages; others say much the same.
_BLOCK_ID = re.compile(rb"\b([0-9a-f]{8})\s+([0-9a-f]{32})\b")
_BLOCK_WORDS = re.compile(rb"denied access|blocked your requests|enormous traffic|abnormal requests", re.IGNORECASE)
BLOCK_PAGE_BYTES = 64 * 1024
CHUNK_SIZE = 256 * 1024
# A probe asks for the first byte only (static mirrors answer 206 with it) and reads none of the body: the status
# says whether the mirror serves. "Not found" counts too: the pool never rests an upstream for it, and a mirror
# that says so is answering (a private index may lack the project a probe names).
PROBE_HEADERS = {"Range": "bytes=0-0"}
PROBE_ANSWERS = frozenset({200, 206}) | NOT_FOUND_STATUSES


# How much of a parent pkgcache's policy refusal is read for its reason (its body is the one-line message).
MAX_REFUSAL_BYTES = 1024
# Bodies smaller than this tell an upstream's latency more than its rate: they do not count towards it.
RATE_SAMPLE_BYTES = 1 << 20
# What a pkgcache upstream said it does not serve (its conda channels), remembered per upstream: at most this many.
MAX_NOT_SERVED_NOTES = 16


class UpstreamError(Exception):
    """One upstream could not give a usable answer; the next one should be tried.

    `rest_upstream` is False when the fault is not the upstream's (it was busy, or its answer was not needed any
    more): it is counted, but the upstream keeps serving other requests.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, rest_upstream: bool = True, blocked: bool = False
    ) -> None:
        # Its message reaches /-/status, the log and clients' error bodies: no URL in it shows credentials.
        super().__init__(redact_credentials(message))
        self.retry_after = retry_after
        self.rest_upstream = rest_upstream
        self.blocked = blocked


class ParentUpstreamsFailed(UpstreamError):
    """A pkgcache upstream (a parent) answered a 5xx marked `X-Pkgcache-Upstream-Failed`: ITS upstreams failed for
    this request (it does not hold the thing, and could not fetch it). The parent answered, so it is up: it is not
    rested (it serves the rest of its cache) and the next upstream is asked for this request only."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rest_upstream=False)


class RelayCut(UpstreamError):
    """A pkgcache upstream (a parent) cut an answer it was relaying from its own upstream as it came (its miss:
    node_identity.relays_its_upstream) mid-body. Its headers were out, so its upstream cutting the file, or sending
    bytes that failed its check, left it nothing else to do: the parent answered, and is not rested for it (which
    would also take a child past the parent's policy, to its own mirror, for the whole cool-down). The cut is
    counted, and the next upstream is asked for this request only. A parent that is really gone refuses the next
    request's connection, and rests then."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rest_upstream=False)


class AskAgain(UpstreamError):
    """The answer cannot be judged as this upstream's alone: the same upstream is asked once more (a whole file, not
    a resumed one, when the bytes another upstream gave before it are in doubt: upstream/transfer.py). Not counted
    against it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rest_upstream=False)


def is_cut(exc: BaseException) -> bool:
    """Whether aiohttp raised `exc` for a body cut mid-way: the connection closed or reset before the body's end
    (not a silence: a read timeout is the slowness the rate floors also rest an upstream for)."""
    return isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)) and not isinstance(
        exc, TimeoutError
    )


class RequestLooped(ParentUpstreamsFailed):
    """A pkgcache upstream answered 508 marked `X-Pkgcache-Loop`: this request already came through it (pkgcaches
    whose upstreams make a loop, such as two offices listing each other), or through too many pkgcaches. It answers
    other requests, so it is not rested; the next upstream is asked for this one (node_identity.py)."""


class NotAuthoritative(UpstreamError):
    """An answer that will do only when no other upstream gives one (a parent pkgcache's offline view of an index):
    the next upstream is asked, and `answer` is what `UpstreamPool.fetch` returns if none gives one (None: there is
    nothing to fall back on, its body was not read; the request then fails as when no upstream answers)."""

    def __init__(self, message: str, answer: object | None) -> None:
        super().__init__(message, rest_upstream=False)
        self.answer = answer


class UpstreamBusy(UpstreamError):
    """Every connection this pkgcache may open to the upstream is in use; another upstream should be tried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rest_upstream=False)


class AnswerTooLarge(UpstreamError):
    """A body larger than its reader holds in memory (`read_limited`). The upstream is rested for it, unless the
    reader knows that such a size may be right (`UpstreamIndex.fetch_small`: a `.metadata` of any size)."""


class UpstreamRefused(Exception):
    """A pkgcache upstream (a parent) refused the thing by its policy: its verdict, final. The upstream is not
    rested and no other one is asked (that would serve what the policy refused); the client gets the refusal."""

    def __init__(self, reason: str, node: str) -> None:
        super().__init__(f"{reason} (refused by pkgcache {node})")
        self.reason = reason
        self.node = node


class UpstreamNotFound(Absent):
    """Every upstream that answered said the thing does not exist.

    `unanswered` names the upstreams that could have had it and did not answer (they failed, or were resting),
    with why: empty when every one of them said "not found". A caller holding a copy may find one upstream's word
    too little to drop it for (pypi/cached_index.py keeps a cached page then).

    `not_served` names the pkgcache upstreams whose 404 said they do not serve it at all (a conda channel they are
    not configured for: `X-Pkgcache-Not-Served`), with their reasons, and `what` is what they do not serve: the
    client is told, and a child below this one too (http/responses.py).
    """

    def __init__(
        self,
        message: str,
        unanswered: Mapping[str, str] | None = None,
        not_served: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> None:
        super().__init__(message)
        self.unanswered = dict(unanswered or {})
        self.not_served = dict(not_served or {})
        self.what = what

    def not_served_words(self) -> str:
        """The upstreams that do not serve it, with their reasons, in one line ("" when none said so)."""
        return "; ".join(f"{name} does not serve it: {reason}" for name, reason in self.not_served.items())


class UpstreamsUnavailable(Exception):
    """No upstream gave a usable answer. `errors` says what each one did; `retry_after` (seconds), when every
    upstream is resting, says when the first one comes back."""

    def __init__(self, errors: Mapping[str, str], retry_after: float | None = None) -> None:
        self.errors = {name: redact_credentials(reason) for name, reason in errors.items()}
        self.retry_after = retry_after
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in self.errors.items()))


class BadBytesEverywhere(UpstreamsUnavailable):
    """No upstream gave the file, and at least one sent bytes that failed the index's check. When every mirror
    sends the same wrong bytes, the index that gave the hash is the likely culprit (it may be out of date), so
    none of them is rested for it: a layer that keeps that index may refresh it and try again."""


@dataclass
class UpstreamStats:
    requests: int = 0
    failures: int = 0
    probes: int = 0  # requests of the pool's own, asking a resting upstream whether it is back
    not_found: int = 0
    bytes_received: int = 0
    latency_seconds: float | None = None  # smoothed time to response headers
    rate: float | None = None  # smoothed bytes per second of its bodies big enough to tell (RATE_SAMPLE_BYTES)

    def observe_latency(self, seconds: float) -> None:
        if self.latency_seconds is None:
            self.latency_seconds = seconds
        else:
            self.latency_seconds = 0.8 * self.latency_seconds + 0.2 * seconds

    def observe_body(self, size: int, seconds: float) -> None:
        """A body of `size` bytes took `seconds`: its rate counts when it is big enough not to be all latency."""
        if size < RATE_SAMPLE_BYTES or seconds <= 0:
            return
        rate = size / seconds
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate


@dataclass
class NotServed:
    """A pkgcache upstream's word that it does not serve something (a conda channel), and when it last said so."""

    reason: str
    seen_at: float  # monotonic


@dataclass
class Upstream:
    """One mirror as the pool sees it: its name, a connection cap and its health."""

    name: str
    base_url: str
    max_connections: int
    # Seconds between two range requests to this upstream (USTC allows about one a second per client); 0: none.
    range_interval: float = 0.0
    # The user whose credentials go with its requests (upstream/credentials.py): shown as `user:***@` in its URL.
    user: str | None = None
    cooldown_until: float = 0.0
    # When it last failed (and was rested), and last answered (monotonic): an answer after the failure proves it up.
    failed_at: float = 0.0
    answered_at: float = 0.0
    last_error: str | None = None
    # The last failure was the mirror's block page for this network (shown on the page at /, rested long).
    blocked: bool = False
    stats: UpstreamStats = field(default_factory=UpstreamStats)
    # Set once one of its answers says it is a pkgcache (a parent tier, or a cluster of nodes): the last node seen.
    pkgcache: NodeIdentity | None = None
    # What it, a pkgcache, said it does not serve (a channel's path -> its reason), until it answers under that path:
    # not a failure (it serves the rest), but a configuration that disagrees with this one's, shown in /-/status.
    not_served: dict[str, NotServed] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None
    _next_range_at: float = 0.0

    async def pace_range_request(self) -> None:
        """Wait until this upstream may be sent another range request."""
        if self.range_interval <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next_range_at)
        self._next_range_at = start + self.range_interval
        if start > now:
            await asyncio.sleep(start - now)

    @property
    def slots(self) -> asyncio.Semaphore:
        # Made lazily so that an Upstream can be built outside a running loop.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        return self._slots

    def is_cooling_down(self, now: float) -> bool:
        return now < self.cooldown_until

    def is_down(self, now: float) -> bool:
        """Resting after a failure that no answer has followed (an answer to a request sent before the failure,
        arriving after it, proves it up although its rest goes on)."""
        return self.is_cooling_down(now) and self.answered_at <= self.failed_at

    def note_answer(self, headers: Mapping[str, str]) -> None:
        """Recognise a pkgcache upstream by its answers' identity headers; an answer without them (a proxy's error
        page in front of it, say) leaves what was noted."""
        identity = NodeIdentity.from_headers(headers)
        if identity is not None:
            self.pkgcache = identity

    def note_not_served(self, what: str, reason: str) -> bool:
        """Remember that it does not serve `what`, for `reason`; True when that is news."""
        news = self.not_served.get(what, NotServed("", 0.0)).reason != reason
        self.not_served.pop(what, None)
        self.not_served[what] = NotServed(reason, time.monotonic())
        while len(self.not_served) > MAX_NOT_SERVED_NOTES:
            del self.not_served[next(iter(self.not_served))]
        return news

    def note_served(self, url: str) -> None:
        """It answered `url`: forget that it does not serve what holds that URL (its configuration changed)."""
        if not self.not_served:
            return
        path = urlsplit(url).path
        for what in [what for what in self.not_served if f"/{what}/" in path]:
            del self.not_served[what]

    def status(self, now: float) -> dict[str, object]:
        return {
            "name": self.name,
            "url": with_user_shown(redact_credentials(self.base_url), self.user),
            "healthy": not self.is_cooling_down(now),
            "blocked": self.blocked and self.is_cooling_down(now),
            "cooldown_remaining": max(0.0, round(self.cooldown_until - now, 1)),
            "last_error": self.last_error,
            "requests": self.stats.requests,
            "failures": self.stats.failures,
            "bytes_received": self.stats.bytes_received,
            "latency_ms": None if self.stats.latency_seconds is None else round(self.stats.latency_seconds * 1000, 1),
            "rate_bytes_per_second": None if self.stats.rate is None else round(self.stats.rate),
            "pkgcache": None if self.pkgcache is None else self.pkgcache.to_json(),
            "not_served": [
                {"what": what, "reason": note.reason, "seen_seconds_ago": round(now - note.seen_at)}
                for what, note in self.not_served.items()
            ],
        }


@dataclass(frozen=True)
class UpstreamPolicySettings:
    user_agent: str
    connect_timeout: float
    read_timeout: float
    cooldown: float
    max_redirects: int
    proxy: str | None = None
    # Bounds that keep one slow or silent upstream from stalling clients while another one could answer
    # (config.UpstreamPolicy says what each means).
    first_byte_timeout: float = 10.0
    min_rate: int = 10240
    rate_window: float = 10.0
    relative_min_rate: float = 0.1
    compare_after: float = 3.0
    slot_wait: float = 2.0
    page_timeout: float = 20.0
    max_retry_after: float = 3600.0
    # Hosts (host, port; port None: any) reached whatever their addresses: the configured ones (address_guard.py).
    trusted_hosts: frozenset[HostPort] = frozenset()
    # The upstreams' credentials, by origin (credentials.py); its repr shows no password.
    credentials: OriginCredentials = field(default_factory=OriginCredentials)

    @classmethod
    def of(
        cls,
        policy: object,
        trusted_hosts: Iterable[HostPort],
        credentials: OriginCredentials,
        **overrides: object,
    ) -> UpstreamPolicySettings:
        """These settings from the configuration's [upstream] section (config.UpstreamPolicy, whose names are the
        same), the hosts it trusts (`Settings.trusted_upstream_hosts()`) and the upstreams' credentials
        (`Settings.upstream_credentials()`), with `overrides`: every field is carried over, so a client made
        elsewhere (`pkgcache check`) cannot miss one, as it once missed the proxy."""
        given: dict[str, Any] = {"trusted_hosts": frozenset(trusted_hosts), "credentials": credentials}
        values: dict[str, Any] = {
            field.name: getattr(policy, field.name) for field in fields(cls) if field.name not in given
        }
        return cls(**{**values, **given, **overrides})


TargetFor = Callable[[Upstream], str | None]
HeadersFor = Callable[[Upstream], Mapping[str, str]]
ResponseHandler = Callable[[Upstream, aiohttp.ClientResponse], Awaitable[T]]


class UpstreamPool:
    """An ordered list of upstreams sharing one HTTP client session."""

    def __init__(
        self, upstreams: list[Upstream], policy: UpstreamPolicySettings, probe_target: TargetFor | None = None
    ) -> None:
        if not upstreams:
            raise ValueError("an upstream pool needs at least one upstream")
        self.upstreams = upstreams
        self.policy = policy
        # What a probe asks each upstream for (the side knows something small every mirror has); None: its root.
        self.probe_target = probe_target
        self._session: aiohttp.ClientSession | None = None
        self._held = False
        self._probes: dict[str, asyncio.Task[None]] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = make_client_session(self.policy)
        return self._session

    async def close(self) -> None:
        probes = list(self._probes.values())
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def candidates(self) -> list[Upstream]:
        """Upstreams to try, in configured order, leaving out those cooling down (all of them while held)."""
        now = time.monotonic()
        return [upstream for upstream in self.upstreams if not self.is_resting(upstream, now)]

    def is_resting(self, upstream: Upstream, now: float | None = None) -> bool:
        """Whether a caller's request would skip the upstream now: cooling down, or the pool is held."""
        return self._held or upstream.is_cooling_down(time.monotonic() if now is None else now)

    # --- holding the pool while every upstream is down: probes instead of callers' requests ---

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        """Send no caller's request from now on until an upstream answers (a probe, or a request in flight)."""
        if not self._held:
            self._held = True
            log.info("every upstream rests: none is asked again before it answers a probe")

    def probe_due(self, now: float | None = None) -> None:
        """While held: one probe to each upstream whose rest is over and that has none in flight."""
        if not self._held:
            return
        moment = time.monotonic() if now is None else now
        for upstream in self.upstreams:
            if upstream.is_cooling_down(moment) or upstream.name in self._probes:
                continue
            self._probes[upstream.name] = asyncio.get_running_loop().create_task(self._probe(upstream))

    def _probe_done(self, name: str) -> None:
        self._probes.pop(name, None)

    def probing(self, upstream: Upstream) -> bool:
        """Whether a probe of the upstream is in flight."""
        return upstream.name in self._probes

    async def _probe(self, upstream: Upstream) -> None:
        """Ask a resting upstream whether it is back: an answer lets go of the pool (`_answered`), a failure rests
        it again (for the cool-down, or as long as its Retry-After or its block page asks)."""
        upstream.stats.probes += 1
        try:
            url = (self.probe_target(upstream) if self.probe_target else None) or upstream.base_url
            shown = redact_credentials(url)
            log.info("upstream %s: its rest is over; asking %s whether it is back", upstream.name, shown)
            await self._fetch_from(upstream, url, _status_only, dict(PROBE_HEADERS), "GET", PROBE_ANSWERS, None)
        except ParentUpstreamsFailed:
            self._answered(upstream)  # a parent whose own upstreams fail answers: it is back (its cache serves)
        except UpstreamError as exc:
            upstream.blocked = exc.blocked
            self.report_failure(upstream, f"probe: {exc}", exc.retry_after)
        except Exception as exc:  # never a probe that neither answers nor rests its upstream
            log.exception("probing upstream %s failed", upstream.name)
            self.report_failure(upstream, f"probe: {type(exc).__name__}: {exc}")
        finally:
            self._probe_done(upstream.name)

    def _answered(self, upstream: Upstream) -> None:
        """The upstream gave a usable answer: it is up, and a held pool lets go."""
        upstream.answered_at = time.monotonic()
        if self._held:
            self._held = False
            log.warning("upstream %s answered: it is back, and is asked again", upstream.name)

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
        timeout: float | None = None,
        bound_last: bool = False,
        decode: bool = True,
    ) -> T:
        """Ask each upstream in turn until one gives an answer that `handle` accepts.

        `target(upstream)` gives that upstream's URL, or None when it cannot have the thing. `handle` is called
        with the open response when its status is in `ok_statuses`; raising UpstreamError in it moves on to the
        next upstream. `timeout`: the seconds one upstream's whole exchange (its answer and `handle`'s reading of
        it) may take while another upstream could still be asked; past it that upstream failed (and rests), and
        the next one is asked. The last upstream left is not bounded (waiting for it is better than no answer),
        unless `bound_last`: for an exchange that only a check waits on, which must end. Raises UpstreamNotFound
        when no upstream had it and at least one answered 404/410 (saying which could not answer), and
        UpstreamsUnavailable when none gave a usable answer for any other reason (or all are resting).
        `decode=False`: bodies are read as sent, whatever their Content-Encoding (`handle` judges it).
        """
        errors: dict[str, str] = {}
        not_served: dict[str, str] = {}
        what: str | None = None
        asked_any = False
        fallback: NotAuthoritative | None = None
        tries = [
            (upstream, url, upstream.pkgcache is not None)
            for upstream in self.candidates()
            if (url := target(upstream)) is not None
        ]
        for position, (upstream, url, known) in enumerate(tries):
            asked_any = True
            last = position == len(tries) - 1
            # A busy upstream is waited for only as long as another one could answer instead.
            slot_wait = self.policy.slot_wait if not last else None
            for _ in range(2):
                if not known and upstream.pkgcache is not None:
                    # Learnt to be a pkgcache since its URL was made (by another request meanwhile, such as a
                    # comparison's range while an upstream before it was sending): asked at its own path.
                    url = target(upstream) or url
                known = upstream.pkgcache is not None
                request_headers = self._request_headers(upstream, headers)
                try:
                    exchange = self._fetch_from(
                        upstream, url, handle, request_headers, method, ok_statuses, slot_wait, decode
                    )
                    return await _within(exchange, None if last and not bound_last else timeout, url)
                except UpstreamNotFound as exc:
                    if upstream.name in exc.not_served:
                        not_served[upstream.name] = exc.not_served[upstream.name]
                        what = what or exc.what
                    # Its "not found" just said it is a pkgcache: asked once more as one, when that changes the
                    # URL (its files' own paths) or the headers (those only a pkgcache is sent).
                    again = target(upstream) if not known and upstream.pkgcache is not None else None
                    if again is not None and (again, self._request_headers(upstream, headers)) != (
                        url,
                        request_headers,
                    ):
                        log.info("upstream %s is a pkgcache: asking it again as one (%s)", upstream.name, again)
                        url = again
                        continue
                    errors[upstream.name] = "not found"
                except AskAgain as exc:
                    # Once: the loop's second round is the last (a first one asked again as a pkgcache included).
                    errors[upstream.name] = str(exc)
                    log.info("upstream %s is asked once more: %s", upstream.name, exc)
                    continue
                except NotAuthoritative as exc:
                    errors[upstream.name] = str(exc)
                    if exc.answer is not None:
                        fallback = fallback or exc
                    self._answered(upstream)
                except ParentUpstreamsFailed as exc:
                    errors[upstream.name] = str(exc)
                    upstream.last_error = str(exc)
                    self._answered(upstream)
                except UpstreamError as exc:
                    errors[upstream.name] = str(exc)
                    if exc.rest_upstream:
                        upstream.blocked = exc.blocked
                        self.report_failure(upstream, str(exc), exc.retry_after)
                    elif not isinstance(exc, UpstreamBusy):
                        self.record_bad_answer(upstream, str(exc))
                break
        if fallback is not None:
            # No upstream gave a better answer than this one: it will do (its caller knows what it is).
            return cast(T, fallback.answer)
        not_found_on = [name for name, reason in errors.items() if reason == "not found"]
        if asked_any and not_found_on:
            # An upstream that answered "not there" is believed over the ones that could not answer at all; which
            # ones those were goes with it, for a caller holding a copy that one upstream's word is too little for.
            now = time.monotonic()
            unanswered = {name: reason for name, reason in errors.items() if reason != "not found"}
            for upstream in self.upstreams:
                if upstream.name not in errors and self.is_resting(upstream, now) and target(upstream) is not None:
                    unanswered[upstream.name] = self._resting_words(upstream, now)
            raise UpstreamNotFound(f"not found on {', '.join(not_found_on)}", unanswered, not_served, what)
        if not asked_any:
            raise self._all_resting(target)
        raise UpstreamsUnavailable(errors)

    @staticmethod
    def _request_headers(upstream: Upstream, headers: HeadersFor | None) -> dict[str, str]:
        """The caller's headers for `upstream`, less those only a pkgcache is sent when it is not known to be one."""
        given = dict(headers(upstream)) if headers else {}
        if upstream.pkgcache is not None:
            return given
        return {name: value for name, value in given.items() if name.lower() not in PKGCACHE_REQUEST_HEADERS}

    def _all_resting(self, target: TargetFor) -> UpstreamsUnavailable:
        """Every upstream that could have the thing is resting after failures: say which, why and until when."""
        now = time.monotonic()
        resting = [upstream for upstream in self.upstreams if target(upstream) is not None]
        errors = {upstream.name: self._resting_words(upstream, now) for upstream in resting}
        back_in = min((max(0.0, upstream.cooldown_until - now) for upstream in resting), default=0.0)
        return UpstreamsUnavailable(errors or {"-": "no upstream can have this"}, retry_after=max(1.0, back_in))

    def _resting_words(self, upstream: Upstream, now: float) -> str:
        if upstream.is_cooling_down(now):
            return f"resting {upstream.cooldown_until - now:.0f} s more after: {upstream.last_error}"
        # Held: its rest is over, and a probe (not a caller's request) finds out whether it is back.
        return f"resting until it answers a probe ({self.policy.cooldown:g} s apart) after: {upstream.last_error}"

    async def _fetch_from(
        self,
        upstream: Upstream,
        url: str,
        handle: ResponseHandler[T],
        headers: dict[str, str],
        method: str,
        ok_statuses: frozenset[int],
        slot_wait: float | None,
        decode: bool = True,
    ) -> T:
        allowed = PLAIN_REQUEST_HEADERS | (PKGCACHE_REQUEST_HEADERS if upstream.pkgcache is not None else frozenset())
        unknown = {name for name in headers if name.lower() not in allowed}
        if unknown:
            # A programming error, not an upstream's: fail loudly rather than send them.
            raise ValueError(f"refusing to send non-plain headers upstream: {sorted(unknown)}")
        if "Range" in headers:
            await upstream.pace_range_request()
        async with self._slot(upstream, slot_wait):
            upstream.stats.requests += 1
            started = time.monotonic()
            relayed = False  # the answer is a pkgcache's miss, relayed from its own upstream as it comes
            try:
                response = await self._send(method, url, headers, decode)
                relayed = relays_its_upstream(response.headers)
                try:
                    upstream.stats.observe_latency(time.monotonic() - started)
                    upstream.note_answer(response.headers)
                    await self._check_status(upstream, response, ok_statuses, url)
                    result = await handle(upstream, response)
                finally:
                    response.release()
            except (UpstreamError, UpstreamNotFound):
                raise
            except RefusedAddress as exc:
                # A link or redirect of this upstream's to a private address: not followed. Its other files may be
                # fine, so it is counted and logged without resting the upstream; the next one is asked.
                raise UpstreamError(f"{exc} (from {url})", rest_upstream=False) from None
            except aiohttp.TooManyRedirects:
                raise UpstreamError(f"more than {self.policy.max_redirects} redirects from {url}") from None
            except aiohttp.InvalidURL as exc:
                raise UpstreamError(f"a redirect from {url} to an unusable URL: {exc}") from None
            except aiohttp.ClientProxyConnectionError as exc:
                raise UpstreamError(
                    f"the proxy {self._proxy_shown()} cannot be reached (asked for {url}): {exc}"
                ) from None
            except aiohttp.ClientHttpProxyError as exc:
                raise UpstreamError(self._proxy_refusal(exc.status, url)) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"{type(exc).__name__} from {url}: {exc}".rstrip(": ")
                if relayed and is_cut(exc):
                    raise RelayCut(f"{failure} (a pkgcache's answer relayed from its own upstream, cut)") from None
                raise UpstreamError(failure) from None
        upstream.last_error = None
        upstream.blocked = False
        upstream.note_served(url)
        self._answered(upstream)
        return result

    async def _send(
        self, method: str, url: str, headers: dict[str, str], decode: bool = True
    ) -> aiohttp.ClientResponse:
        """The upstream's answer, its headers read; a silent upstream is given up on after first_byte_timeout."""
        chain = REQUEST_CHAIN.get()
        if chain:
            # For a request that came through other pkgcaches: their marks go on, so that a loop is seen at once.
            headers = {**headers, "User-Agent": with_chain(self.policy.user_agent, chain)}
        try:
            async with asyncio.timeout(self.policy.first_byte_timeout):
                return await self.session.request(
                    method,
                    url,
                    headers=headers,
                    allow_redirects=True,
                    max_redirects=self.policy.max_redirects,
                    auto_decompress=decode,
                )
        except TimeoutError:
            raise UpstreamError(f"no answer from {url} within {self.policy.first_byte_timeout:g} s") from None

    @contextlib.asynccontextmanager
    async def _slot(self, upstream: Upstream, wait: float | None) -> AsyncIterator[None]:
        """One of the upstream's connection slots; UpstreamBusy if none frees up within `wait` seconds."""
        if wait is None:
            await upstream.slots.acquire()
        else:
            try:
                async with asyncio.timeout(wait):
                    await upstream.slots.acquire()
            except TimeoutError:
                raise UpstreamBusy(f"all {upstream.max_connections} connections to {upstream.name} are busy") from None
        try:
            yield
        finally:
            upstream.slots.release()

    async def _check_status(
        self, upstream: Upstream, response: aiohttp.ClientResponse, ok_statuses: frozenset[int], url: str
    ) -> None:
        status = response.status
        if status in ok_statuses:
            return
        if status in NOT_FOUND_STATUSES:
            what = response.headers.get(NOT_SERVED_HEADER, "").strip()
            node = NodeIdentity.from_headers(response.headers)
            if node is not None and NOT_SERVED_PATTERN.match(what):
                # Not "it does not exist" but "I do not serve that at all": this configuration lists something its
                # pkgcache upstream's does not. Said to the client, and shown in /-/status until it is served.
                reason = f"pkgcache {node.name}: {await _refusal_reason(response, f'{what} is not served')}"
                if upstream.note_not_served(what, reason):
                    log.warning("upstream %s does not serve %s (%s)", upstream.name, what, reason)
                raise UpstreamNotFound(redact_credentials(url), not_served={upstream.name: reason}, what=what)
            raise UpstreamNotFound(redact_credentials(url))
        if status == 407 and self.policy.proxy:
            # The proxy's answer, not the mirror's (every upstream is asked through it and gets the same).
            raise UpstreamError(self._proxy_refusal(status, url))
        refusing_node = NodeIdentity.from_headers(response.headers)
        if status == 403 and refusing_node is not None and response.headers.get(REFUSAL_HEADER) == POLICY_REFUSAL:
            raise UpstreamRefused(await _refusal_reason(response), refusing_node.name)
        if status == 508 and refusing_node is not None and response.headers.get(LOOP_HEADER):
            raise RequestLooped(
                f"HTTP 508 from {url}: pkgcache {refusing_node.name} is on this request's way already, a loop of "
                f"pkgcaches' upstreams ({await _refusal_reason(response, 'a loop')})"
            )
        if status >= 500 and refusing_node is not None and response.headers.get(UPSTREAM_FAILED_HEADER):
            reason = await _refusal_reason(response)
            raise ParentUpstreamsFailed(
                f"HTTP {status} from {url}: pkgcache {refusing_node.name} could not get it from its own upstreams"
                f" ({reason})"
            )
        if status in BLOCK_STATUSES and response.content_type in ("text/html", "text/plain"):
            block = await _block_page(response)
            if block is not None:
                # The mirror blocked this network: asking again soon only prolongs it. Rest it long.
                raise UpstreamError(
                    f"HTTP {status} from {url}: the mirror blocks this network ({block})",
                    retry_after=self.policy.max_retry_after,
                    blocked=True,
                )
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        raise UpstreamError(f"HTTP {status} from {url}", retry_after=retry_after)

    def _proxy_shown(self) -> str:
        """The configured proxy as it may be shown: its credentials left out."""
        return proxy_shown(self.policy.proxy or "")

    def _proxy_refusal(self, status: int, url: str) -> str:
        shown = self._proxy_shown()
        if status == 407:
            return (
                f"HTTP 407 from the proxy {shown} (asked for {url}): it wants credentials, and those of"
                " [upstream] proxy (user:password@ in its URL) are missing or wrong"
            )
        return f"HTTP {status} from the proxy {shown} (asked for {url})"

    def record_bad_answer(self, upstream: Upstream, reason: str) -> None:
        """Count a bad answer (a file failing its hash) without resting the upstream: its other files may be fine."""
        upstream.stats.failures += 1
        upstream.last_error = reason = redact_credentials(reason)
        log.warning("upstream %s: %s", upstream.name, reason)

    def report_failure(self, upstream: Upstream, reason: str, retry_after: float | None = None) -> None:
        """Count a failure of `upstream` and skip it for the cool-down (or as long as it asked us to wait)."""
        upstream.stats.failures += 1
        self.rest(upstream, reason, retry_after)

    def rest(self, upstream: Upstream, reason: str, retry_after: float | None = None) -> None:
        """Skip `upstream` for the cool-down (or as long as it asked us to wait), a failure counted already."""
        upstream.last_error = reason = redact_credentials(reason)
        # A mirror may ask for a long rest, but not for years (one sent Retry-After: 999999999).
        longest = max(self.policy.max_retry_after, self.policy.cooldown)
        pause = min(max(self.policy.cooldown, retry_after or 0.0), longest)
        upstream.failed_at = time.monotonic()
        upstream.cooldown_until = upstream.failed_at + pause
        log.warning("upstream %s failed (%s); skipping it for %.0f s", upstream.name, reason, pause)

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [
            {
                **upstream.status(now),
                "healthy": not self.is_resting(upstream, now),
                # Held: its rest is over or not, it is asked again only once it answers a probe.
                "probing": self._held,
                "probe_in_flight": self.probing(upstream),
                "probes": upstream.stats.probes,
            }
            for upstream in self.upstreams
        ]


def make_client_session(policy: UpstreamPolicySettings) -> aiohttp.ClientSession:
    """The one HTTP client every upstream request goes through, guarded against private addresses that the
    configuration does not name (address_guard.py)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.connect_timeout, sock_read=policy.read_timeout)
    trusted = TrustedHosts(policy.trusted_hosts)
    # limit=0: the per-upstream semaphores are the caps; the connector only pools connections. The resolver's
    # verdict is cached with its answer (ttl_dns_cache): no lookup is added to a request.
    connector = aiohttp.TCPConnector(
        limit=0, ttl_dns_cache=300, enable_cleanup_closed=True, resolver=GuardedResolver(trusted)
    )
    return aiohttp.ClientSession(
        # Each hop of a redirect is checked, then given its origin's credentials (and no other's).
        middlewares=(guard_middleware(trusted), credentials_middleware(policy.credentials)),
        timeout=timeout,
        connector=connector,
        headers={"User-Agent": policy.user_agent},
        # Never store or send cookies: requests must stay plain and alike whoever asked.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        trust_env=False,
        proxy=policy.proxy,
    )


def proxy_shown(proxy: str) -> str:
    """A proxy URL without its credentials (user:password@), fit for /-/status, a log or a client's error."""
    try:
        parsed = urlsplit(proxy)
        host = parsed.hostname or ""
        port = parsed.port
    except ValueError:
        return "(the configured proxy)"
    where = f"[{host}]" if ":" in host else host
    return f"{parsed.scheme}://{where}{f':{port}' if port else ''}"


async def _status_only(upstream: Upstream, response: aiohttp.ClientResponse) -> None:
    """A probe's answer: its status said enough; the body is not read (the connection is closed instead)."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    seconds = ascii_number(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def read_limited(
    response: aiohttp.ClientResponse, limit: int, policy: UpstreamPolicySettings | None = None
) -> bytes:
    """A whole body read into memory, refusing one larger than `limit` (an upstream must not exhaust our memory)
    and, given the policy, one that arrives slower than its minimum rate."""
    if response.content_length is not None and response.content_length > limit:
        raise AnswerTooLarge(f"a {response.content_length}-byte answer is larger than the {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in watched_chunks(response, policy):
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(f"an answer larger than the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


async def watched_chunks(
    response: aiohttp.ClientResponse,
    policy: UpstreamPolicySettings | None,
    *,
    enforce_rate: bool = True,
    rate_to_beat: float | None = None,
) -> AsyncIterator[bytes]:
    """A response body as it arrives. Given a policy (and `enforce_rate`), raises UpstreamError when fewer than
    `min_rate` bytes per second arrived over the last `rate_window` seconds, or fewer than `relative_min_rate` of
    `rate_to_beat` (what another upstream that could take over has lately done): a drip, a silence or a crawl
    mid-body ends here, and the caller can go on with another upstream. Without it, only the session's read
    timeout applies."""
    floor, why = _rate_floor(policy, rate_to_beat) if policy is not None and enforce_rate else (0.0, "")
    if policy is None or floor <= 0:
        async for piece in response.content.iter_chunked(CHUNK_SIZE):
            yield piece
        return
    loop = asyncio.get_running_loop()
    window_start, window_bytes = loop.time(), 0
    needed = floor * policy.rate_window
    while True:
        remaining = window_start + policy.rate_window - loop.time()
        chunk: bytes | None
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                chunk = await response.content.read(CHUNK_SIZE)
        except TimeoutError:
            chunk = None
        if chunk == b"":
            return
        if chunk:
            window_bytes += len(chunk)
            yield chunk
        if loop.time() - window_start >= policy.rate_window:
            if window_bytes < needed:
                rate = window_bytes / policy.rate_window
                raise UpstreamError(f"sending {rate:.0f} B/s, under {why} over {policy.rate_window:g} s")
            window_start, window_bytes = loop.time(), 0


def _rate_floor(policy: UpstreamPolicySettings, rate_to_beat: float | None) -> tuple[float, str]:
    """The bytes per second a body must keep up, and in words why."""
    floor, why = float(policy.min_rate), f"the {policy.min_rate} B/s minimum"
    if rate_to_beat is not None and policy.relative_min_rate > 0:
        relative = policy.relative_min_rate * rate_to_beat
        if relative > floor:
            share = f"{policy.relative_min_rate:.0%}"
            floor, why = relative, f"{share} of the {rate_to_beat:.0f} B/s another upstream lately delivered"
    return floor, why


async def _refusal_reason(response: aiohttp.ClientResponse, default: str = "refused by its policy") -> str:
    """A pkgcache's policy refusal in its words: the first line of its body (a proxy between may drop the status
    line's reason, and HTTP/2 has none), else what its headers say (a HEAD's answer has no body), else that reason,
    as one printable line fit for a status line."""
    try:
        first = (await response.content.read(MAX_REFUSAL_BYTES)).decode("utf-8", "replace").strip().split("\n")[0]
    except (aiohttp.ClientError, TimeoutError):
        first = ""
    words = " ".join(first.split()) or refusal_reason(response.headers) or response.reason or default
    return "".join(c if c.isprintable() else "?" for c in words).encode("latin-1", "replace").decode("latin-1")


async def _block_page(response: aiohttp.ClientResponse) -> str | None:
    """What a mirror's block page says about the block (its identifier, for the operator to quote), or None."""
    try:
        body = await response.content.read(BLOCK_PAGE_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        return None
    if not _BLOCK_WORDS.search(body):
        return None
    found = _BLOCK_ID.search(body)
    return f"identifier {found.group(1).decode()} {found.group(2).decode()}" if found else "no identifier given"


async def _within(exchange: Awaitable[T], timeout: float | None, url: str) -> T:
    """`exchange`, failed as that upstream's (UpstreamError) when it takes longer than `timeout` seconds (None: no
    bound, for the last upstream left)."""
    if timeout is None:
        return await exchange
    try:
        async with asyncio.timeout(timeout):
            return await exchange
    except TimeoutError:
        raise UpstreamError(f"no whole answer from {url} within {timeout:g} s") from None
