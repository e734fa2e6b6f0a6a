"""The page at `/`: what a developer on the LAN needs to use this pkgcache, in English and Chinese.

Copy-paste settings for every client with this server's real address (from the request's Host header), the
indexes and channels served, each upstream's health, and how much the cache holds and saves. Plain HTML with
inline CSS and system fonts: it works without JavaScript; a few lines of inline script only add "copy" buttons.
Nothing is loaded from anywhere else. Every value is HTML-escaped.

Language: `?lang=zh` / `?lang=en` picks one and remembers it in a cookie; otherwise the cookie; otherwise the
browser's Accept-Language; otherwise English.
"""

from __future__ import annotations

import re
import secrets
import time
from html import escape

from aiohttp import web

from pkgcache import __version__
from pkgcache.clients import (
    CLIENT_IDS,
    Snippet,
    base_url_for,
    client_host,
    client_snippets,
    conda_url,
    pypi_index_url,
)
from pkgcache.formatting import format_bytes, format_duration
from pkgcache.http.qvalues import best_offer
from pkgcache.http.request_cycle import add_get
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
    "setup": ("Set up your tools", "配置你的工具"),
    "setup_intro": (
        "Each block below already holds this server's address, {base}. Copy it into the file named, or run it.",
        "下面每段配置都已填好本服务器地址 {base}，复制到所示文件中或直接运行即可。",
    ),
    "put_in": ("Put it in", "写入"),
    "run_shell": ("Run in a shell", "在终端中运行"),
    "copy": ("Copy", "复制"),
    "copied": ("Copied", "已复制"),
    "auth_note": (
        "This server asks for a user name and password. Put them in the address, like http://USER:PASSWORD@{host}/…",
        "本服务器需要用户名和密码，请写在地址里，例如 http://用户名:密码@{host}/…",
    ),
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
    "state_unused": ("not used yet", "尚未使用"),
    "state_resting": ("resting, {seconds} s left", "暂停中，剩余 {seconds} 秒"),
    "machines": ("For machines", "机器可读接口"),
    "footer": ("pkgcache {version}", "pkgcache {version}"),
}


def text(lang: str, key: str, **values: object) -> str:
    """A translated string, with `values` filled in (escape the result, not the values, before use in HTML)."""
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
    """The address clients used to reach us, from the Host header; the configured one if the header is odd."""
    host = request.host
    if host and _SAFE_HOST.match(host):
        return f"{request.scheme}://{host}"
    server = ops.settings.server
    return base_url_for(client_host(server.host), server.port, request.scheme)


# --- rendering ---


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _card(label: str, value: str, detail: str) -> str:
    return (
        f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
        f'<div class="detail">{_e(detail)}</div></div>'
    )


def _glance(lang: str, ops: Operations) -> str:
    summary = ops.summary()
    keeper = ops.keeper
    size = format_bytes(keeper.total_bytes) if keeper.measured else text(lang, "counting")
    limit = (
        text(lang, "of_limit", limit=format_bytes(keeper.max_size))
        if keeper.max_size is not None
        else text(lang, "no_limit")
    )
    served_from_cache = int(summary["hits"]) + int(summary["stale"])
    cards = [
        _card(text(lang, "cache_size"), size, limit),
        _card(
            text(lang, "hit_ratio"),
            f"{float(summary['hit_ratio']):.1%}",
            text(lang, "hit_detail", hits=served_from_cache, misses=summary["misses"]),
        ),
        _card(
            text(lang, "saved"),
            format_bytes(int(summary["bytes_saved"])),
            text(lang, "saved_detail", served=format_bytes(int(summary["bytes_served"]))),
        ),
        _card(
            text(lang, "uptime"),
            format_duration(time.time() - ops.started_at),
            text(lang, "uptime_detail", requests=summary["requests"]),
        ),
    ]
    return f'<section><h2>{_e(text(lang, "glance"))}</h2><div class="cards">{"".join(cards)}</div></section>'


def _snippet(lang: str, snippet: Snippet) -> str:
    if snippet.kind == "shell":
        where = f'<p class="where">{_e(text(lang, "run_shell"))}</p>'
    else:
        items = "".join(
            f"<li><code>{_e(loc.path)}</code> <span>({_e(loc.os)})</span></li>" for loc in snippet.locations
        )
        where = f'<p class="where">{_e(text(lang, "put_in"))}</p><ul class="where">{items}</ul>'
    return (
        f'<div class="snippet"><div class="snippet-head"><h4>{_e(snippet.title)}</h4>'
        f'<button type="button" class="copy" hidden data-copied="{_e(text(lang, "copied"))}">'
        f"{_e(text(lang, 'copy'))}</button></div>{where}"
        f'<pre><code class="language-{_e(snippet.language)}">{_e(snippet.text)}</code></pre></div>'
    )


def _setup(lang: str, ops: Operations, base: str, host: str) -> str:
    snippets = client_snippets(base, ops.settings)
    clients = [client for client in CLIENT_IDS if any(snippet.client == client for snippet in snippets)]
    nav = "".join(f'<a href="#client-{_e(client)}">{_e(client)}</a>' for client in clients)
    parts = [
        f'<section id="setup"><h2>{_e(text(lang, "setup"))}</h2>',
        f"<p>{_e(text(lang, 'setup_intro', base=base))}</p>",
    ]
    if ops.settings.access.users:
        parts.append(f'<p class="note">{_e(text(lang, "auth_note", host=host))}</p>')
    parts.append(f'<nav class="clients">{nav}</nav>')
    for client in clients:
        blocks = "".join(_snippet(lang, snippet) for snippet in snippets if snippet.client == client)
        parts.append(f'<div class="client" id="client-{_e(client)}"><h3>{_e(client)}</h3>{blocks}</div>')
    parts.append("</section>")
    return "".join(parts)


def _served(lang: str, ops: Operations, base: str) -> str:
    rows: list[str] = []
    if ops.settings.pypi.enabled:
        rows.append(f"<dt>{_e(text(lang, 'pypi_index'))}</dt><dd><code>{_e(pypi_index_url(base))}</code></dd>")
    if ops.settings.conda.enabled:
        channels = "".join(
            f"<li><code>{_e(conda_url(base, channel))}</code></li>" for channel in ops.settings.conda.channels
        )
        rows.append(f"<dt>{_e(text(lang, 'conda_channels'))}</dt><dd><ul>{channels}</ul></dd>")
    return f'<section id="served"><h2>{_e(text(lang, "served"))}</h2><dl>{"".join(rows)}</dl></section>'


def _upstream_state(lang: str, status: dict[str, object]) -> tuple[str, str]:
    """(css class, words) for one upstream's health."""
    if not status.get("healthy"):
        return "bad", text(lang, "state_resting", seconds=round(float(status.get("cooldown_remaining") or 0)))
    if not status.get("requests"):
        return "idle", text(lang, "state_unused")
    return "good", text(lang, "state_ok")


def _upstream_row(lang: str, status: dict[str, object]) -> str:
    css, state = _upstream_state(lang, status)
    latency = status.get("latency_ms")
    return (
        f"<tr><td><strong>{_e(status.get('name'))}</strong><br><small>{_e(status.get('url'))}</small></td>"
        f'<td><span class="state {css}">{_e(state)}</span></td>'
        f'<td class="num">{_e("–" if latency is None else f"{latency} ms")}</td>'
        f'<td class="num">{_e(status.get("requests", 0))}</td>'
        f'<td class="num">{_e(status.get("failures", 0))}</td>'
        f'<td class="error">{_e(status.get("last_error") or "")}</td></tr>'
    )


def _upstreams(lang: str, ops: Operations) -> str:
    head = "".join(
        f"<th>{_e(text(lang, key))}</th>"
        for key in ("col_name", "col_state", "col_latency", "col_requests", "col_failures", "col_error")
    )
    tables = []
    for side, pool in ops.pools.items():
        rows = "".join(_upstream_row(lang, status) for status in pool.status())
        tables.append(
            f"<h3>{_e(text(lang, f'side_{side}') if f'side_{side}' in TEXT else side)}</h3>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
        )
    return (
        f'<section id="upstreams"><h2>{_e(text(lang, "upstreams"))}</h2>'
        f"<p>{_e(text(lang, 'upstreams_intro'))}</p>{''.join(tables)}</section>"
    )


def _machines(lang: str) -> str:
    links = "".join(f'<a href="{path}">{path}</a>' for path in ("/-/stats", "/metrics", "/-/health", "/-/status"))
    return f'<section id="machines"><h2>{_e(text(lang, "machines"))}</h2><p class="links">{links}</p></section>'


def render_page(lang: str, ops: Operations, base: str, host: str, nonce: str) -> str:
    other = "en" if lang == "zh" else "zh"
    html_lang = "zh-CN" if lang == "zh" else "en"
    body = "".join(
        [
            "<header>",
            f'<div><h1>pkgcache</h1><p class="tagline">{_e(text(lang, "tagline"))}</p></div>',
            f'<a class="lang" href="?lang={other}" hreflang="{other}" lang="{"zh-CN" if other == "zh" else "en"}">'
            f"{_e(text(lang, 'switch'))}</a>",
            "</header><main>",
            _glance(lang, ops),
            _setup(lang, ops, base, host),
            _served(lang, ops, base),
            _upstreams(lang, ops),
            _machines(lang),
            f"</main><footer>{_e(text(lang, 'footer', version=__version__))}</footer>",
        ]
    )
    return (
        f'<!DOCTYPE html><html lang="{html_lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(text(lang, 'title'))}</title>"
        f'<style nonce="{nonce}">{STYLE}</style></head><body>{body}'
        f'<script nonce="{nonce}">{COPY_SCRIPT}</script></body></html>'
    )


async def landing_page(request: web.Request) -> web.StreamResponse:
    ops = operations(request)
    lang, picked = choose_language(request)
    base = base_url(request, ops)
    host = base.split("://", 1)[1]
    nonce = secrets.token_urlsafe(16)
    response = web.Response(
        text=render_page(lang, ops, base, host, nonce),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Language": "zh-CN" if lang == "zh" else "en",
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
    add_get(app, "/", landing_page)


STYLE = """
:root{--bg:#f7f8fa;--fg:#1d2330;--muted:#5b6475;--card:#fff;--line:#e2e5eb;--accent:#2563eb;--code:#f1f3f7;
--good:#15803d;--bad:#b91c1c;--idle:#6b7280}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e6e8ec;--muted:#9aa3b2;--card:#1c2027;--line:#2c323c;
--accent:#60a5fa;--code:#232830;--good:#4ade80;--bad:#f87171;--idle:#9ca3af}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.5;
font-family:system-ui,-apple-system,"Segoe UI","PingFang SC","Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC",
"Noto Sans",sans-serif}
header,main,footer{max-width:64rem;margin:0 auto;padding:0 1rem}
header{display:flex;justify-content:space-between;align-items:flex-start;gap:1rem;padding-top:1.5rem}
h1{margin:0;font-size:1.8rem;letter-spacing:-.01em}
h2{font-size:1.25rem;margin:2rem 0 .75rem;padding-bottom:.3rem;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin:1.25rem 0 .5rem}
h4{margin:0;font-size:.95rem}
.tagline{margin:.25rem 0 0;color:var(--muted);max-width:44rem}
a{color:var(--accent)}
.lang{white-space:nowrap;border:1px solid var(--line);border-radius:999px;padding:.3rem .9rem;text-decoration:none;
background:var(--card)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:.75rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:.6rem;padding:.8rem 1rem}
.card .label{color:var(--muted);font-size:.85rem}
.card .value{font-size:1.5rem;font-weight:600;font-variant-numeric:tabular-nums}
.card .detail{color:var(--muted);font-size:.8rem}
nav.clients{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0}
nav.clients a{border:1px solid var(--line);border-radius:.4rem;padding:.15rem .6rem;text-decoration:none;
background:var(--card)}
.client{scroll-margin-top:1rem}
.snippet{background:var(--card);border:1px solid var(--line);border-radius:.6rem;padding:.7rem .9rem;margin:.6rem 0}
.snippet-head{display:flex;justify-content:space-between;align-items:center;gap:.5rem}
p.where{margin:.3rem 0 0;color:var(--muted);font-size:.85rem}
ul.where{margin:.1rem 0 0;padding-left:1.2rem;font-size:.85rem;color:var(--muted)}
pre{background:var(--code);border-radius:.4rem;padding:.6rem .8rem;overflow-x:auto;margin:.5rem 0 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:.85rem}
button.copy{font:inherit;font-size:.8rem;border:1px solid var(--line);background:var(--bg);color:var(--fg);
border-radius:.35rem;padding:.15rem .7rem;cursor:pointer}
button.copy:hover{border-color:var(--accent)}
.note{border-left:3px solid var(--accent);padding:.3rem .8rem;background:var(--card)}
dl{margin:0}dt{font-weight:600;margin-top:.6rem}dd{margin:.2rem 0 0}dd ul{margin:0;padding-left:1.2rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;min-width:36rem;background:var(--card);border:1px solid var(--line);
border-radius:.6rem}
th,td{text-align:left;padding:.45rem .7rem;border-bottom:1px solid var(--line);vertical-align:top;font-size:.9rem}
th{color:var(--muted);font-weight:600;font-size:.8rem}
td small{color:var(--muted);word-break:break-all}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.error{color:var(--muted);font-size:.8rem;max-width:20rem;word-break:break-word}
.state{white-space:nowrap;font-weight:600}.state.good{color:var(--good)}.state.bad{color:var(--bad)}
.state.idle{color:var(--idle)}
.links a{margin-right:1rem}
footer{color:var(--muted);font-size:.8rem;padding:2rem 1rem}
"""

# Shows the copy buttons (hidden without JavaScript) and copies a block's text; the clipboard API needs a secure
# context, which plain http on a LAN address is not, hence the selection fallback.
COPY_SCRIPT = """
document.querySelectorAll("button.copy").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    var code = button.closest(".snippet").querySelector("pre code");
    var label = button.textContent;
    function done() { button.textContent = button.dataset.copied;
      setTimeout(function () { button.textContent = label; }, 1500); }
    function fallback() { var range = document.createRange(); range.selectNodeContents(code);
      var selection = window.getSelection(); selection.removeAllRanges(); selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) {} }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(done, fallback);
    } else { fallback(); }
  });
});
"""
