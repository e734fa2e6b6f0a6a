"""The page at `/`: what a developer on the LAN needs to use this pkgcache, in English and Chinese.

Copy-paste settings for every client with this server's real address (from the request's Host header), the
indexes and channels served, each upstream's health, and how much the cache holds and saves. Plain HTML with
inline CSS and system fonts: it works without JavaScript; a few lines of inline script only add "copy" buttons.
Nothing is loaded from anywhere else.

The markup is the Jinja2 template `templates/page.html` (autoescape on: every value is HTML-escaped); the style and
the script are `static/page.css` and `static/copy.js`, read once and inlined under the response's CSP nonce. This
module gathers what the page shows (`page_context`) and picks its language.

Language: `?lang=zh` / `?lang=en` picks one and remembers it in a cookie; otherwise the cookie; otherwise the
browser's Accept-Language; otherwise English.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from types import SimpleNamespace
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from pkgcache import __version__
from pkgcache.clients import (
    CLIENT_IDS,
    CREDENTIALS_NOTE,
    Snippet,
    base_url_for,
    client_host,
    client_snippets,
    conda_url,
    needs_credentials,
    netrc_line,
    pypi_index_url,
)
from pkgcache.formatting import format_bytes, format_duration
from pkgcache.gate.holdings import Holdings, cache_holdings
from pkgcache.http.qvalues import best_offer
from pkgcache.http.request_cycle import add_get
from pkgcache.kit_record import read_kit_record
from pkgcache.service.state import Operations, operations

LANGUAGES = ("en", "zh")
LANG_COOKIE = "pkgcache_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
# What a Host header may hold to be used in the settings shown (a name or address and a port).
_SAFE_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")

# key -> (English, Chinese)
TEXT: dict[str, tuple[str, str]] = {
    "title": ("pkgcache: packages for this network", "pkgcache：本地网络的软件包缓存"),
    "tagline": (
        "A caching proxy for PyPI and conda. Point your tools here: each package is downloaded from the "
        "mirrors once, then served from this machine to everyone.",
        "PyPI 与 conda 的缓存代理。把工具指向这里：每个包只从镜像下载一次，之后由本机提供给所有人。",
    ),
    "switch": ("中文", "English"),
    "glance": ("At a glance", "概览"),
    "cache_size": ("Cache size", "缓存大小"),
    "of_limit": ("limit {limit}", "上限 {limit}"),
    "no_limit": ("no size limit", "未设大小上限"),
    "counting": ("counting…", "统计中…"),
    "hit_ratio": ("Hit ratio", "命中率"),
    "hit_detail": ("{hits} from cache, {misses} from mirrors", "缓存 {hits} 次，镜像 {misses} 次"),
    "saved": ("Served from cache", "由缓存提供"),
    "saved_detail": ("of {served} served in all", "共提供 {served}"),
    "uptime": ("Running for", "已运行"),
    "uptime_detail": ("{requests} package requests", "{requests} 次软件包请求"),
    "metadata": ("Wheel metadata made here", "本地生成的元数据"),
    "shards": ("Sharded repodata (CEP-16)", "分片 repodata（CEP-16）"),
    "shards_made": (
        "{where}: made here, {shards} shards, {size}, built {ago} ago in {seconds} s",
        "{where}：本地生成，{shards} 个分片，{size}，{ago}前生成，用时 {seconds} 秒",
    ),
    "shards_passed": ("{where}: passed through from its upstream", "{where}：直接转发上游的分片"),
    "metadata_detail": (
        "{ranges} read by ranges, {wheels} from wheels; {saved} of wheels not downloaded",
        "{ranges} 个按范围读取，{wheels} 个取自 wheel；少下载 {saved}",
    ),
    "setup": ("Set up your tools", "配置你的工具"),
    "setup_intro": (
        "Each block below already holds this server's address, {base}. Copy it into the file named, or run it.",
        "下面每段配置都已填好本服务器地址 {base}，复制到所示文件中或直接运行即可。",
    ),
    "put_in": ("Put it in", "写入"),
    "run_shell": ("Run in a shell", "在终端中运行"),
    "copy": ("Copy", "复制"),
    "copied": ("Copied", "已复制"),
    "auth_note": CREDENTIALS_NOTE,  # the words `client-config` prints too
    "served": ("Indexes and channels", "索引与频道"),
    "pypi_index": ("PyPI simple index", "PyPI 简单索引"),
    "conda_channels": ("conda channels", "conda 频道"),
    "upstreams": ("Upstream mirrors", "上游镜像"),
    "upstreams_intro": (
        "Tried in this order. A mirror that fails is rested for a while and the next one is used.",
        "按此顺序使用。出错的镜像会暂停一段时间，改用下一个。",
    ),
    "side_pypi": ("PyPI", "PyPI"),
    "side_conda": ("conda", "conda"),
    "col_name": ("Mirror", "镜像"),
    "col_state": ("State", "状态"),
    "col_latency": ("Latency", "延迟"),
    "col_requests": ("Requests", "请求"),
    "col_failures": ("Failures", "失败"),
    "col_error": ("Last error", "最近错误"),
    "state_ok": ("OK", "正常"),
    "not_served": ("does not serve {what}: {reason}", "不提供 {what}：{reason}"),
    "state_unused": ("not used yet", "尚未使用"),
    "state_resting": ("resting, {seconds} s left", "暂停中，剩余 {seconds} 秒"),
    "state_probing": (
        "resting until it answers: asked once each rest is over",
        "暂停中，直到它再次应答：每次暂停结束后探测一次",
    ),
    "state_blocked": (
        "blocked by the mirror for this network; resting {seconds} s (see its last error)",
        "镜像站封禁了本网络；暂停 {seconds} 秒（见最近错误）",
    ),
    "kit": ("Seeded and imported", "预取与导入"),
    "kit_seed": ("seeded {ago} ago: {files} files", "{ago}前预取：{files} 个文件"),
    "kit_import": ("imported {ago} ago: {files} files", "{ago}前导入：{files} 个文件"),
    "kit_import_failed": (
        "the import {ago} ago refused {failed} files ({why})",
        "{ago}前的导入拒绝了 {failed} 个文件（{why}）",
    ),
    "gate": ("What is let in", "准入策略"),
    "gate_intro": (
        "Files the rules or blocks refuse are left out of pages and repodata, and refused with the reason if asked "
        "for (docs/policy.md).",
        "规则或封禁拒绝的文件不会出现在页面和 repodata 中，直接请求时会被拒绝并说明原因（见 docs/policy.md）。",
    ),
    "no_rules": ("No rule: everything is served.", "没有规则：全部提供。"),
    "no_blocks": ("No block.", "没有封禁。"),
    "col_blocked": ("Blocked", "已封禁"),
    "col_by": ("By", "操作人"),
    "col_when": ("When", "时间"),
    "col_why": ("Why", "原因"),
    "offline_configured": (
        "This pkgcache is offline: it asks no mirror and serves only what its cache holds.",
        "本服务处于离线模式：不访问任何镜像，只提供缓存中已有的内容。",
    ),
    "offline_degraded": (
        "Every {side} mirror is down: only what the cache holds is served until one of them answers again (each "
        "is asked once its rest is over, with one small request).",
        "所有 {side} 镜像均不可用：在其中之一重新应答之前只提供缓存中已有的内容"
        "（每个镜像暂停结束后用一个小请求探测一次）。",
    ),
    "holdings": (
        "The cache holds {projects} PyPI projects ({files} files, {pypi_size}) and {packages} conda packages "
        "({conda_size}).",
        "缓存中有 {projects} 个 PyPI 项目（{files} 个文件，{pypi_size}）和 {packages} 个 conda 包（{conda_size}）。",
    ),
    "machines": ("For machines", "机器可读接口"),
    "node": ("Node {node}", "节点 {node}"),
    "node_tier": ("Node {node}, tier {tier}", "节点 {node}，层级 {tier}"),
    "parent": ("pkgcache, node {node}", "pkgcache，节点 {node}"),
    "parent_tier": ("pkgcache, node {node}, tier {tier}", "pkgcache，节点 {node}，层级 {tier}"),
    "footer": ("pkgcache {version}", "pkgcache {version}"),
}


def text(lang: str, key: str, **values: object) -> str:
    """A translated string, with `values` filled in (the template escapes the whole, values included)."""
    english, chinese = TEXT[key]
    template = chinese if lang == "zh" else english
    return template.format(**values) if values else template


def language_from_accept(header: str | None) -> str:
    """The first language we have among those the browser prefers (by q-value), English if none."""
    return best_offer(header, _language_of) or "en"


def _language_of(tag: str) -> str | None:
    """`zh-cn` -> `zh`, when it is one of ours."""
    primary = tag.split("-")[0]
    return primary if primary in LANGUAGES else None


def choose_language(request: web.Request) -> tuple[str, bool]:
    """The page's language, and whether it was picked just now (and so must be remembered in the cookie)."""
    asked = request.query.get("lang")
    if asked in LANGUAGES:
        return asked, True
    remembered = request.cookies.get(LANG_COOKIE)
    if remembered in LANGUAGES:
        return remembered, False
    return language_from_accept(request.headers.get("Accept-Language")), False


def base_url(request: web.Request, ops: Operations) -> str:
    """The address clients used to reach us, from the Host header; the configured one if there is none or it is
    odd. The header itself, not `request.host`, which without one is the socket's host without its port."""
    host = request.headers.get("Host")
    if host and _SAFE_HOST.match(host):
        return f"{request.scheme}://{host}"
    server = ops.settings.server
    return base_url_for(client_host(server.host), server.port, request.scheme)


# --- what the page shows ---

MACHINE_PATHS = ("/-/stats", "/metrics", "/-/health", "/-/status")
UPSTREAM_COLUMNS = ("col_name", "col_state", "col_latency", "col_requests", "col_failures", "col_error")
BLOCK_COLUMNS = ("col_blocked", "col_by", "col_when", "col_why")


@dataclass(frozen=True)
class Card:
    label: str
    value: str
    detail: str


@dataclass(frozen=True)
class UpstreamRow:
    name: str
    url: str
    css: str  # good, bad or idle
    state: str
    latency: str
    requests: object
    failures: object
    error: str
    parent: str  # when the upstream is a pkgcache (a parent tier): which node answered last, and its tier


@dataclass(frozen=True)
class UpstreamSide:
    title: str
    rows: list[UpstreamRow]


def _glance(lang: str, ops: Operations) -> list[Card]:
    summary = ops.summary()
    keeper = ops.keeper
    size = format_bytes(keeper.total_bytes) if keeper.measured else text(lang, "counting")
    limit = (
        text(lang, "of_limit", limit=format_bytes(keeper.max_size))
        if keeper.max_size is not None
        else text(lang, "no_limit")
    )
    served_from_cache = int(summary["hits"]) + int(summary["stale"])
    return [
        Card(text(lang, "cache_size"), size, limit),
        Card(
            text(lang, "hit_ratio"),
            f"{float(summary['hit_ratio']):.1%}",
            text(lang, "hit_detail", hits=served_from_cache, misses=summary["misses"]),
        ),
        Card(
            text(lang, "saved"),
            format_bytes(int(summary["bytes_saved"])),
            text(lang, "saved_detail", served=format_bytes(int(summary["bytes_served"]))),
        ),
        *_metadata_card(lang, ops),
        *_kit_card(lang, ops),
        Card(
            text(lang, "uptime"),
            format_duration(time.time() - ops.started_at),
            text(lang, "uptime_detail", requests=summary["requests"]),
        ),
    ]


def _metadata_card(lang: str, ops: Operations) -> list[Card]:
    """How much the core metadata made here spared resolvers (PyPI side only)."""
    counters = ops.core_metadata()
    if counters is None:
        return []
    made = dict(counters["made"])  # type: ignore[call-overload]
    return [
        Card(
            text(lang, "metadata"),
            str(sum(made.values())),
            text(
                lang,
                "metadata_detail",
                ranges=made.get("ranges", 0),
                wheels=made.get("wheel", 0),
                saved=format_bytes(int(counters["bytes_saved"])),  # type: ignore[call-overload]
            ),
        )
    ]


def _shards(lang: str, ops: Operations) -> list[str]:
    """One line per conda subdir whose sharded repodata is made here or passed through from its upstream."""
    found = ops.side_status().get("conda", {}).get("shards")
    if not isinstance(found, dict):
        return []
    lines = []
    for where, build in sorted(dict(found.get("made_here", {})).items()):
        lines.append(
            text(
                lang,
                "shards_made",
                where=where,
                shards=build["shards"],
                size=format_bytes(int(build["shard_bytes"]) + int(build["index_size"])),
                seconds=f"{float(build['seconds']):.1f}",
                ago=format_duration(time.time() - float(build["built_at"])),
            )
        )
    lines += [text(lang, "shards_passed", where=where) for where in found.get("passed_through", [])]
    return lines


def _kit_card(lang: str, ops: Operations) -> list[Card]:
    """The last `pkgcache seed` and `pkgcache import` into this data directory, when there were any."""
    record = read_kit_record(ops.settings.server.data_dir)
    now = time.time()
    lines = []
    if record["seed"]:
        last = record["seed"][-1]
        files = int(last.get("fetched") or 0) + int(last.get("cached") or 0)
        lines.append(text(lang, "kit_seed", ago=_ago(now, last), files=files))
    # The last import that refused nothing, then a later one that refused files, with its first reason: a failed
    # import must not hide the good one before it (its files are still here).
    good = [entry for entry in record["import"] if not entry.get("failed")]
    if good:
        lines.append(text(lang, "kit_import", ago=_ago(now, good[-1]), files=int(good[-1].get("added") or 0)))
    if record["import"] and record["import"][-1].get("failed"):
        last = record["import"][-1]
        why = str(last.get("why") or last.get("bundle") or "")
        lines.append(text(lang, "kit_import_failed", ago=_ago(now, last), failed=int(last["failed"]), why=why))
    if not lines:
        return []
    return [Card(text(lang, "kit"), lines[0], "; ".join(lines[1:]))]


def _ago(now: float, entry: dict[str, Any]) -> str:
    return format_duration(now - float(entry.get("at") or now))


def _clients(ops: Operations, base: str) -> list[tuple[str, list[Snippet]]]:
    """Each client that has settings, in the usual order, with its blocks."""
    snippets = client_snippets(base, ops.settings)
    grouped = [(client, [snippet for snippet in snippets if snippet.client == client]) for client in CLIENT_IDS]
    return [(client, blocks) for client, blocks in grouped if blocks]


def _upstream_state(lang: str, status: dict[str, Any]) -> tuple[str, str]:
    """(css class, words) for one upstream's health."""
    if status.get("blocked"):
        return "bad", text(lang, "state_blocked", seconds=round(float(status.get("cooldown_remaining") or 0)))
    seconds = round(float(status.get("cooldown_remaining") or 0))
    if not status.get("healthy") and status.get("probing") and not seconds:
        return "bad", text(lang, "state_probing")
    if not status.get("healthy"):
        return "bad", text(lang, "state_resting", seconds=seconds)
    if not status.get("requests"):
        return "idle", text(lang, "state_unused")
    return "good", text(lang, "state_ok")


def _identity_words(lang: str, identity: dict[str, Any] | None, plain: str, with_tier: str) -> str:
    """A node's name and tier in words ("" for no node), from `{"node": ..., "tier": ...}`."""
    if not identity:
        return ""
    if identity.get("tier"):
        return text(lang, with_tier, node=identity["node"], tier=identity["tier"])
    return text(lang, plain, node=identity["node"])


def _upstream_error(lang: str, status: dict[str, Any]) -> str:
    """Its last error, and what it (a pkgcache) said it does not serve although this configuration lists it."""
    said = [str(status.get("last_error") or "")]
    for note in status.get("not_served") or []:
        said.append(text(lang, "not_served", what=note.get("what"), reason=note.get("reason")))
    return "; ".join(words for words in said if words)


def _upstream_row(lang: str, status: dict[str, Any]) -> UpstreamRow:
    css, state = _upstream_state(lang, status)
    latency = status.get("latency_ms")
    return UpstreamRow(
        name=str(status.get("name")),
        url=str(status.get("url")),
        css=css,
        state=state,
        latency="–" if latency is None else f"{latency} ms",
        requests=status.get("requests", 0),
        failures=status.get("failures", 0),
        error=_upstream_error(lang, status),
        parent=_identity_words(lang, status.get("pkgcache"), "parent", "parent_tier"),
    )


def _upstream_sides(lang: str, ops: Operations) -> list[UpstreamSide]:
    return [
        UpstreamSide(
            title=text(lang, f"side_{side}") if f"side_{side}" in TEXT else side,
            rows=[_upstream_row(lang, status) for status in pool.status()],
        )
        for side, pool in ops.pools.items()
    ]


@dataclass(frozen=True)
class BlockRow:
    target: str
    who: str
    when: str
    why: str


@dataclass(frozen=True)
class GateSide:
    title: str
    rules: list[str]
    blocks: list[BlockRow]


def _gates(ops: Operations) -> dict[str, dict[str, Any]]:
    """Each side's gate, as the side's status says it (service/app.py)."""
    return {side: dict(status.get("gate") or {}) for side, status in ops.side_status().items()}


def _gate_sides(lang: str, gates: dict[str, dict[str, Any]]) -> list[GateSide]:
    return [
        GateSide(
            title=text(lang, f"side_{side}") if f"side_{side}" in TEXT else side,
            rules=list(gate.get("rules") or []),
            blocks=[
                BlockRow(
                    target=f"{block.get('name')}" + (f"=={block['version']}" if block.get("version") else ""),
                    who=str(block.get("who") or ""),
                    when=str(block.get("when") or "")[:19].replace("T", " "),
                    why=str(block.get("why") or ""),
                )
                for block in gate.get("blocks") or []
            ],
        )
        for side, gate in gates.items()
    ]


def _offline_notes(lang: str, gates: dict[str, dict[str, Any]], holdings: Holdings | None) -> list[str]:
    notes = []
    if any(gate.get("offline") for gate in gates.values()):
        notes.append(text(lang, "offline_configured"))
    else:
        notes += [text(lang, "offline_degraded", side=side) for side, gate in gates.items() if gate.get("degraded")]
    if notes and holdings is not None:
        notes.append(
            text(
                lang,
                "holdings",
                projects=holdings.pypi_projects,
                files=holdings.pypi_files,
                pypi_size=format_bytes(holdings.pypi_bytes),
                packages=holdings.conda_packages,
                conda_size=format_bytes(holdings.conda_bytes),
            )
        )
    return notes


def serves_offline_view(ops: Operations) -> bool:
    """Whether some side shows only what the cache holds (offline mode, or every upstream down)."""
    return any(gate.get("offline") or gate.get("degraded") for gate in _gates(ops).values())


def page_context(
    lang: str, ops: Operations, base: str, host: str, nonce: str, holdings: Holdings | None = None
) -> dict[str, Any]:
    """Everything the template shows, for one request."""
    other = "en" if lang == "zh" else "zh"
    settings = ops.settings
    gates = _gates(ops)
    return {
        "html_lang": _html_lang(lang),
        "other": other,
        "other_html_lang": _html_lang(other),
        "words": _words(lang),
        "t": functools.partial(text, lang),
        "nonce": nonce,
        "style": _static_text("page.css"),
        "script": _static_text("copy.js"),
        "version": __version__,
        "base": base,
        "host": host,
        "node": _identity_words(lang, settings.server.identity().to_json(), "node", "node_tier"),
        "cards": _glance(lang, ops),
        "auth_required": needs_credentials(settings),
        "netrc_line": netrc_line(base),
        "clients": _clients(ops, base),
        "pypi_index": pypi_index_url(base) if settings.pypi.enabled else None,
        "conda_channels": [conda_url(base, channel) for channel in settings.conda.channels]
        if settings.conda.enabled
        else None,
        "sides": _upstream_sides(lang, ops),
        "shards": _shards(lang, ops),
        "columns": UPSTREAM_COLUMNS,
        "gate_sides": _gate_sides(lang, gates),
        "block_columns": BLOCK_COLUMNS,
        "offline_notes": _offline_notes(lang, gates, holdings),
        "machine_paths": MACHINE_PATHS,
    }


def render_page(lang: str, ops: Operations, base: str, host: str, nonce: str, holdings: Holdings | None = None) -> str:
    return _template().render(page_context(lang, ops, base, host, nonce, holdings))


@functools.cache
def _words(lang: str) -> SimpleNamespace:
    """Every fixed text in one language, escaped once per process rather than on every request.

    A namespace, not a dict: in the template `words.copy` must be our word, not the dict's method.
    """
    return SimpleNamespace(**{key: escape(text(lang, key)) for key in TEXT})


def _html_lang(lang: str) -> str:
    return "zh-CN" if lang == "zh" else "en"


@functools.cache
def _template() -> jinja2.Template:
    """Compiled once per process: the template is package data and does not change while we run."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pkgcache.service", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a name missing from page_context is a bug, not an empty string
        auto_reload=False,
    )
    return environment.get_template("page.html")


@functools.cache
def _static_text(name: str) -> Markup:
    """Our own CSS or script, read once, to be inlined as it is (not escaped: it is code, not a value)."""
    return Markup(resources.files("pkgcache.service").joinpath("static", name).read_text(encoding="utf-8"))


async def landing_page(request: web.Request) -> web.StreamResponse:
    ops = operations(request)
    lang, picked = choose_language(request)
    base = base_url(request, ops)
    host = base.split("://", 1)[1]
    nonce = secrets.token_urlsafe(16)
    holdings = await asyncio.to_thread(cache_holdings, ops.store.root) if serves_offline_view(ops) else None
    response = web.Response(
        text=render_page(lang, ops, base, host, nonce, holdings),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Language": _html_lang(lang),
            "Vary": "Accept-Language, Cookie, Host",
            # Nothing but our own inline style and script, and no framing.
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
    if picked:
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, path="/", samesite="Lax", httponly=True)
    return response


def add_ui_routes(app: web.Application) -> None:
    # Load the package data now: an install without it fails at start, not at someone's first visit.
    _template()
    _static_text("page.css")
    _static_text("copy.js")
    add_get(app, "/", landing_page)
