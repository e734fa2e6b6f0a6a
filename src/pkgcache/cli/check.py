"""`pkgcache check`: ask every configured upstream for something small and real, time it, and judge the answer.

PyPI mirrors are asked for a project page (`<index>pip/`) that must parse as one; conda mirrors for
`pkgs/main/noarch/repodata.json`, which must be repodata JSON, and (by HEAD) for the first community channel's
repodata. Every probe runs at once, each bounded by a timeout, with pkgcache's own User-Agent and client settings, so a
mirror that refuses pkgcache shows up here too.

An upstream whose answers carry `X-Pkgcache-Node` is another pkgcache (a tier above this one): it is named as one,
its 404s say its reason, and the suggested order puts it first whatever its speed (docs/operations.md, "Tiers and
clusters"): it brings its cache and its policy, which a faster mirror listed before it would go around.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp
import click

from pkgcache.cli.options import SECONDS, config_option, settings_from_options
from pkgcache.config import Settings, redact_credentials, with_user_shown
from pkgcache.formatting import format_bytes
from pkgcache.node_identity import NOT_SERVED_HEADER, NOT_SERVED_PATTERN, NodeIdentity
from pkgcache.presets import CONDA_PRESETS, PYPI_PRESETS
from pkgcache.pypi.parse import InvalidPage, parse_project_page
from pkgcache.pypi.upstream_index import PROBE_PROJECT, UPSTREAM_ACCEPT
from pkgcache.upstream.credentials import OriginCredentials
from pkgcache.upstream.pool import (
    MAX_REFUSAL_BYTES,
    UpstreamError,
    UpstreamPolicySettings,
    make_client_session,
    read_limited,
)

# The project the service's own probe asks for (pypi/upstream_index.py): what `check` says works is what it uses.
DEFAULT_PROJECT = PROBE_PROJECT
DEFAULT_TIMEOUT = 15.0
MAX_BODY_BYTES = 256 * 1024 * 1024

ProbeKind = Literal["pypi-page", "repodata", "exists"]


@click.command("check")
@config_option
@click.option("--pypi-upstream", "pypi_upstreams", multiple=True, metavar="URL_OR_PRESET", help="Probe this instead.")
@click.option("--conda-upstream", "conda_upstreams", multiple=True, metavar="URL_OR_PRESET", help="Probe this instead.")
@click.option("--presets", is_flag=True, help="Probe every known preset mirror instead of the configured ones.")
@click.option("--project", default=DEFAULT_PROJECT, show_default=True, help="PyPI project whose page is fetched.")
@click.option(
    "--timeout", type=SECONDS, default=DEFAULT_TIMEOUT, show_default=True, help="Seconds allowed for each probe."
)
def check_command(
    config_file: Path | None,
    pypi_upstreams: tuple[str, ...],
    conda_upstreams: tuple[str, ...],
    presets: bool,
    project: str,
    timeout: float,
) -> None:
    """Probe every configured upstream: latency and whether it answers correctly, fastest first."""
    if presets:
        pypi_upstreams, conda_upstreams = tuple(PYPI_PRESETS), tuple(CONDA_PRESETS)
    settings = settings_from_options(config_file, pypi_upstreams=pypi_upstreams, conda_upstreams=conda_upstreams)
    probes = plan_probes(settings, project)
    click.echo(f"probing {len(probes)} upstream URLs (at most {timeout:g} s each)...", err=True)
    results = sort_results(run_checks(settings, probes, timeout))
    click.echo(format_table(results))
    for line in hints(results):
        click.echo(f"\nhint: {line}")
    for line in pkgcache_lines(results):
        click.echo(f"\n{line}")
    for side in ("pypi", "conda"):
        advice = order_advice(results, side)
        if advice:
            click.echo(f"\n{advice}")
    failed = sum(1 for result in results if not result.ok)
    if failed:
        click.echo(f"\n{failed} of {len(results)} probes failed", err=True)
        sys.exit(1)


# --- probing ---


class ProbeFailed(Exception):
    """The upstream answered, but not with what was asked for."""


@dataclass(frozen=True)
class Probe:
    side: str  # "pypi" or "conda"
    upstream: str
    what: str
    url: str
    kind: ProbeKind
    # The user whose credentials go with the request (the upstream's), shown in its URL as `user:***@`.
    user: str | None = None
    position: int = 0  # of its upstream in the configured list of its side

    @property
    def method(self) -> str:
        return "HEAD" if self.kind == "exists" else "GET"

    @property
    def shown_url(self) -> str:
        return with_user_shown(self.url, self.user)


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    ok: bool
    latency_ms: float | None  # time to the response headers; None when there was no answer
    detail: str
    pkgcache: NodeIdentity | None = None  # the node that answered, when the upstream is a pkgcache


def plan_probes(settings: Settings, project: str = DEFAULT_PROJECT) -> list[Probe]:
    """One probe per PyPI upstream, two per conda upstream (its pkgs/ root and its cloud/ root)."""
    probes: list[Probe] = []
    if settings.pypi.enabled:
        for position, upstream in enumerate(settings.pypi.upstreams):
            url = f"{upstream.url}{project}/"
            probes.append(Probe("pypi", upstream.name, f"{project} page", url, "pypi-page", upstream.user, position))
    if settings.conda.enabled:
        cloud_channel = _first_cloud_channel(settings.conda.channels)
        for position, conda_upstream in enumerate(settings.conda.upstreams):
            name = conda_upstream.name
            url = f"{conda_upstream.pkgs_url}main/noarch/repodata.json"
            user = conda_upstream.user
            probes.append(Probe("conda", name, "pkgs/main repodata", url, "repodata", user, position))
            if cloud_channel:
                url = f"{conda_upstream.cloud_url}{cloud_channel}/noarch/repodata.json"
                probes.append(Probe("conda", name, f"{cloud_channel} (HEAD)", url, "exists", user, position))
    return probes


def run_checks(settings: Settings, probes: list[Probe], timeout: float = DEFAULT_TIMEOUT) -> list[ProbeResult]:
    return asyncio.run(run_probes(settings, probes, timeout))


async def run_probes(settings: Settings, probes: list[Probe], timeout: float) -> list[ProbeResult]:
    policy = settings.upstream
    client = UpstreamPolicySettings.of(
        policy,
        settings.trusted_upstream_hosts(),
        OriginCredentials(settings.upstream_credentials()),
        connect_timeout=min(policy.connect_timeout, timeout),
        read_timeout=min(policy.read_timeout, timeout),
    )
    async with make_client_session(client) as session:
        checks = [probe_one(session, probe, timeout, client.max_redirects) for probe in probes]
        return list(await asyncio.gather(*checks))


async def probe_one(session: aiohttp.ClientSession, probe: Probe, timeout: float, max_redirects: int) -> ProbeResult:
    started = time.monotonic()
    latency: float | None = None
    node: NodeIdentity | None = None
    headers = {"Accept": UPSTREAM_ACCEPT} if probe.kind == "pypi-page" else {}
    try:
        async with (
            asyncio.timeout(timeout),
            session.request(
                probe.method, probe.url, headers=headers, allow_redirects=True, max_redirects=max_redirects
            ) as response,
        ):
            latency = (time.monotonic() - started) * 1000
            node = NodeIdentity.from_headers(response.headers)
            if response.status != 200:
                raise ProbeFailed(await _failure(response, node))
            detail = await _judge(probe, response)
    except ProbeFailed as exc:
        return ProbeResult(probe, False, latency, str(exc), node)
    except TimeoutError:
        return ProbeResult(probe, False, latency, f"no complete answer within {timeout:g} s", node)
    except aiohttp.TooManyRedirects:
        return ProbeResult(probe, False, latency, f"more than {max_redirects} redirects", node)
    except aiohttp.ClientError as exc:
        return ProbeResult(probe, False, latency, _describe_client_error(exc), node)
    return ProbeResult(probe, True, latency, detail, node)


async def _failure(response: aiohttp.ClientResponse, node: NodeIdentity | None) -> str:
    """`HTTP <status>`; from a pkgcache, with its reason: the first line of its answer (one line of plain text), or
    for a HEAD what it says it does not serve."""
    status = f"HTTP {response.status}"
    if node is None:
        return status
    what = response.headers.get(NOT_SERVED_HEADER, "").strip()
    if NOT_SERVED_PATTERN.match(what):
        return f"{status}: pkgcache {node.name}{NOT_SERVED_WORDS}{what}"
    try:
        body = await response.content.read(MAX_REFUSAL_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    reason = _first_line(redact_credentials(body.decode("utf-8", "replace")), 200)
    return f"{status}: {reason}" if reason else status


async def _judge(probe: Probe, response: aiohttp.ClientResponse) -> str:
    if probe.kind == "exists":
        length = response.headers.get("Content-Length")
        return "OK" if not length else f"OK, {format_bytes(int(length))}"
    try:
        body = await read_limited(response, MAX_BODY_BYTES)
    except UpstreamError as exc:
        raise ProbeFailed(str(exc)) from None
    if probe.kind == "pypi-page":
        return _judge_project_page(body, str(response.url), probe)
    return _judge_repodata(body, response.headers.get("Content-Type", ""))


def _judge_project_page(body: bytes, url: str, probe: Probe) -> str:
    project = probe.url.rstrip("/").rsplit("/", 1)[-1]
    try:
        page = parse_project_page(body, url, project)
    except InvalidPage as exc:
        raise ProbeFailed(f"not a project page: {exc}") from None
    if not page.files:
        raise ProbeFailed("the project page lists no files")
    return f"OK, {len(page.files)} files"


def _judge_repodata(body: bytes, content_type: str = "") -> str:
    try:
        data = json.loads(body)
    except ValueError:
        if _is_html(body, content_type):
            raise ProbeFailed("not JSON but an HTML page (an error or login page?)") from None
        raise ProbeFailed("not JSON") from None
    if not isinstance(data, dict) or not ({"packages", "packages.conda"} & data.keys()):
        raise ProbeFailed("JSON, but not repodata")
    count = sum(len(data.get(key) or {}) for key in ("packages", "packages.conda"))
    return f"OK, {count} packages, {format_bytes(len(body))}"


def _is_html(body: bytes, content_type: str) -> bool:
    start = body[:512].lstrip().lower()
    return "html" in content_type.lower() or start.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    """One short line a person reads, not the exception's repr (aiohttp's parser messages quote the raw bytes on
    lines of their own)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before a complete answer"
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised while reading the answer (the status is aiohttp's own 400): not valid HTTP.
        return f"not a valid HTTP answer: {_first_line(exc.message) or 'unreadable'}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the body could not be read whole: {_first_line(str(exc))}"
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().split("\n", 1)[0].strip().rstrip(":")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first_cloud_channel(channels: list[str]) -> str | None:
    return next((channel.split("/", 1)[1] for channel in channels if channel.startswith("cloud/")), None)


# --- presenting ---


NOT_FOUND = "HTTP 404"
UNAUTHORIZED = "HTTP 401"
NOT_SERVED_WORDS = " does not serve "


def hints(results: list[ProbeResult]) -> list[str]:
    """What a 404 most likely means of an upstream's URL: a PyPI one without its simple-index part, a conda one
    whose channel path is missing a part or has one twice. URLs are never refused for it (private indexes have
    their own paths: devpi's `+simple/`, Artifactory's `.../simple/`). A pkgcache's 404 says its reason: its URL is
    right, and what it lacks or does not serve is said."""
    found: list[str] = []
    for result in results:
        probe = result.probe
        if not result.ok and result.detail.startswith(UNAUTHORIZED):
            given = "its user and password are refused" if probe.user is not None else "it wants a user and password"
            found.append(
                f"{probe.upstream} answered {UNAUTHORIZED} for {probe.shown_url}: {given}; give them as the "
                "upstream's user and password (a table's keys, or user:password@ in its URL)"
            )
        if result.ok or not result.detail.startswith(NOT_FOUND):
            continue
        if result.pkgcache is not None:
            found.append(_pkgcache_hint(result))
            continue
        if result.detail != NOT_FOUND:
            continue
        if probe.kind == "pypi-page":
            base = probe.url.removesuffix("/").rsplit("/", 1)[0] + "/"
            found.append(
                f"{probe.upstream} answered 404 for the project page {probe.url}: is {base} its simple index? "
                "A PyPI upstream's URL is the index's own, most often ending in /simple/ (devpi: /+simple/)"
            )
        elif probe.kind == "repodata":
            doubled = "/pkgs/pkgs/" in probe.url
            found.append(
                f"{probe.upstream} answered 404 for {probe.url}: a conda upstream is the base URL holding pkgs/ "
                "and cloud/ (BASE/pkgs/main/..., BASE/cloud/conda-forge/...); "
                + (
                    "this one ends in pkgs/ already: give the URL above it"
                    if doubled
                    else "its path may lack a part (such as anaconda/) or hold one twice"
                )
            )
    return found


def _pkgcache_hint(result: ProbeResult) -> str:
    probe, node = result.probe, result.pkgcache
    assert node is not None
    who = f"{probe.upstream} is a pkgcache (node {node.name}): its URL is right"
    _, marked, what = result.detail.partition(NOT_SERVED_WORDS)
    if marked:
        return (
            f"{who}, and it does not serve {what}, which this configuration lists: add it to {node.name}'s [conda] "
            "channels, or leave it out of this one's"
        )
    if probe.kind == "pypi-page":
        return f"{who}, and none of its upstreams has that project: give --project one they have"
    return f"{who}, and none of its upstreams has {probe.what}"


SIDE_ORDER = {"pypi": 0, "conda": 1}


def sort_results(results: list[ProbeResult]) -> list[ProbeResult]:
    """PyPI then conda; within each, working upstreams fastest first, then the failing ones."""

    def key(result: ProbeResult) -> tuple[int, bool, float]:
        latency = result.latency_ms if result.latency_ms is not None else float("inf")
        return SIDE_ORDER.get(result.probe.side, 2), not result.ok, latency

    return sorted(results, key=key)


# The RESULT column wraps at this width, so that a long reason does not pad every line past a terminal's width.
RESULT_WIDTH = 48


def format_table(results: list[ProbeResult]) -> str:
    header = ("SIDE", "UPSTREAM", "CHECK", "LATENCY", "RESULT", "URL")
    rows = [header] + [
        (
            r.probe.side,
            r.probe.upstream,
            r.probe.what,
            "-" if r.latency_ms is None else f"{r.latency_ms:.0f} ms",
            r.detail if r.ok else f"ERROR: {r.detail}",
            r.probe.shown_url,
        )
        for r in results
    ]
    results_at = header.index("RESULT")
    wrapped = [textwrap.wrap(row[results_at], RESULT_WIDTH, break_on_hyphens=False) or [""] for row in rows]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    widths[results_at] = max(len(part) for parts in wrapped for part in parts)
    lines = []
    for row, parts in zip(rows, wrapped, strict=True):
        # The first part of the result on the row's line, the rest under it, in its column.
        for number, part in enumerate(parts):
            first = number == 0
            cells = [row[column] if first else "" for column in range(len(header))]
            cells[results_at] = part
            padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=True)]
            lines.append("  ".join([*padded, cells[-1]]).rstrip())
    return "\n".join(lines)


def suggested_order(results: list[ProbeResult], side: str) -> list[str]:
    """Upstream names of one side: the pkgcaches first (tiers above this one), in the configured order, each that
    answered one probe well (a channel it does not serve is a hint of its own); then the mirrors, fastest first,
    leaving out any with a failed probe."""
    failing = {r.probe.upstream for r in results if r.probe.side == side and not r.ok}
    working = {r.probe.upstream for r in results if r.probe.side == side and r.ok}
    tiers = pkgcache_upstreams(results, side)
    order = [name for name in tiers if name in working]
    for result in sort_results(results):
        name = result.probe.upstream
        if result.probe.side == side and name not in failing and name not in order and name not in tiers:
            order.append(name)
    return order


def pkgcache_upstreams(results: list[ProbeResult], side: str) -> dict[str, NodeIdentity]:
    """The upstreams of one side that answered as a pkgcache, in the configured order, with the node that did."""
    found = sorted(
        (r for r in results if r.probe.side == side and r.pkgcache is not None), key=lambda r: r.probe.position
    )
    tiers: dict[str, NodeIdentity] = {}
    for result in found:
        assert result.pkgcache is not None
        tiers.setdefault(result.probe.upstream, result.pkgcache)
    return tiers


def pkgcache_lines(results: list[ProbeResult]) -> list[str]:
    """ "central (pypi) is a pkgcache: node central-1, tier central", one line per upstream that is one."""
    lines = []
    for side in SIDE_ORDER:
        for name, node in pkgcache_upstreams(results, side).items():
            tier = f", tier {node.tier}" if node.tier else ""
            lines.append(f"{name} ({side}) is a pkgcache: node {node.name}{tier}")
    return lines


def order_advice(results: list[ProbeResult], side: str) -> str:
    """The order to give one side's upstreams in, as one line ("" when none works)."""
    order = suggested_order(results, side)
    if not order:
        return ""
    tiers = [name for name in order if name in pkgcache_upstreams(results, side)]
    if not tiers:
        return f"fastest working {side} upstreams first: {', '.join(order)}"
    then = "; then the mirrors, fastest first" if len(tiers) < len(order) else ""
    return (
        f"suggested {side} order: {', '.join(order)} (pkgcache first, whatever its speed: a tier above this one "
        f"brings its cache and its policy, which a mirror listed before it would go around{then})"
    )
