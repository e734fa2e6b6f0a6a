"""The page's markup from its template, without a browser: values escaped, style and script inlined, both languages.

tests/test_page_browser.py shows the page working in chromium; these check what only the markup shows.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest

from pkgcache.clients import base_url_for
from pkgcache.config import load_settings
from pkgcache.service.ui import render_page
from tests.cache_service import RunningCache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream

BASE = "http://10.0.0.5:3150"
HOSTILE = "<script>alert(1)</script>"


class _Pool:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def status(self) -> list[dict[str, Any]]:
        return self.rows


def _operations(**sections: Any) -> Any:
    """What the page reads of Operations, with one upstream whose name and last error are hostile."""
    return SimpleNamespace(
        settings=load_settings(None, **sections),
        started_at=0.0,
        keeper=SimpleNamespace(total_bytes=1536, measured=True, max_size=None),
        summary=lambda: {
            "hits": 1,
            "stale": 0,
            "misses": 1,
            "hit_ratio": 0.5,
            "bytes_saved": 10,
            "bytes_served": 20,
            "requests": 2,
        },
        core_metadata=lambda: {"made": {"ranges": 3, "wheel": 1}, "bytes_saved": 5 * 1024 * 1024},
        side_status=lambda: {
            "conda": {"shards": {"made_here": {}, "passed_through": ["cloud/conda-forge/noarch"]}},
            "pypi": {"gate": _GATE},
        },
        pools={
            "pypi": _Pool(
                [
                    {
                        "name": "tuna",
                        "url": "https://example.org/simple/",
                        "healthy": True,
                        "requests": 3,
                        "failures": 0,
                        "latency_ms": 42,
                        "last_error": None,
                    },
                    {
                        "name": f"evil{HOSTILE}",
                        "url": "https://example.org/x/",
                        "healthy": False,
                        "cooldown_remaining": 12.4,
                        "requests": 1,
                        "failures": 1,
                        "latency_ms": None,
                        "last_error": f"HTTP 503 {HOSTILE}",
                    },
                ]
            )
        },
    )


# A side's gate as service/app.py reports it, with a block whose target, author and reason are hostile.
_GATE = {
    "rules": ['[pypi] deny[0] "evil-*"'],
    "blocks": [
        {"name": f"x{HOSTILE}", "version": "1.0", "who": HOSTILE, "why": HOSTILE, "when": "2026-05-01T09:30:00+00:00"}
    ],
    "offline": False,
    "degraded": True,
}


def test_every_value_is_escaped_and_only_our_own_code_runs() -> None:
    html = render_page("en", _operations(), BASE, "10.0.0.5:3150", "N0NCE")
    assert HOSTILE not in html
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;==1.0" in html  # a block's target, who and why are escaped too
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # One style and one script, both ours, both under the nonce; nothing else is loaded.
    assert re.findall(r"<(style|script)\b[^>]*>", html) == ["style", "script"]
    assert '<style nonce="N0NCE">' in html and '<script nonce="N0NCE">' in html
    assert ":root{--bg:" in html and 'querySelectorAll("button.copy")' in html  # inlined as is, not escaped
    assert " src=" not in html and "<link" not in html


def test_the_page_shows_settings_state_and_the_other_language_link() -> None:
    html = render_page("en", _operations(access={"users": {"dev": "pw"}}), BASE, "10.0.0.5:3150", "n")
    assert html.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert "index-url = http://USER:PASSWORD@10.0.0.5:3150/pypi/simple/" in html
    assert '<a class="lang" href="?lang=zh" hreflang="zh" lang="zh-CN">中文</a>' in html
    assert "resting, 12 s left" in html and "42 ms" in html
    assert 'data-copied="Copied">Copy</button>' in html
    for path in ("/-/stats", "/metrics", "/-/health", "/-/status"):
        assert f'<a href="{path}">{path}</a>' in html


@pytest.mark.parametrize(("lang", "words"), [("en", "percent-encoded"), ("zh", "百分号编码")])
def test_with_users_the_page_says_where_credentials_go_and_never_shows_a_password(lang: str, words: str) -> None:
    html = render_page(lang, _operations(access={"users": {"dev": "pw-s3cret"}}), BASE, "10.0.0.5:3150", "n")
    assert words in html and "@ %40" not in html
    assert "<pre><code>machine 10.0.0.5 login USER password PASSWORD</code></pre>" in html
    assert "poetry config http-basic.pkgcache USER PASSWORD" in html
    assert "pixi auth login 10.0.0.5 --username USER --password PASSWORD" in html
    assert "pw-s3cret" not in html and "dev:" not in html


def test_without_users_the_page_says_nothing_of_credentials() -> None:
    html = render_page("en", _operations(), BASE, "10.0.0.5:3150", "n")
    assert "USER" not in html.replace("%USERPROFILE%", "") and "password" not in html.lower()
    assert "http-basic" not in html and "netrc" not in html


@pytest.mark.parametrize(
    ("lang", "heading", "html_lang"), [("en", "Set up your tools", "en"), ("zh", "配置你的工具", "zh-CN")]
)
def test_both_languages(lang: str, heading: str, html_lang: str) -> None:
    html = render_page(lang, _operations(), BASE, "10.0.0.5:3150", "n")
    assert f'<html lang="{html_lang}">' in html and f"<h2>{heading}</h2>" in html
    assert html.count(">Copy</button>" if lang == "en" else ">复制</button>") >= 6


def test_a_side_turned_off_is_not_offered() -> None:
    html = render_page("en", _operations(conda={"enabled": False}), BASE, "10.0.0.5:3150", "n")
    assert "/conda/" not in html and 'id="client-conda"' not in html
    assert f"<code>{BASE}/pypi/simple/</code>" in html


def test_the_page_shows_the_policy_the_blocks_and_a_side_whose_upstreams_are_all_down() -> None:
    html = render_page("en", _operations(), BASE, "10.0.0.5:3150", "n")
    assert "<code>[pypi] deny[0] &#34;evil-*&#34;</code>" in html
    assert "2026-05-01 09:30:00" in html
    assert "Every pypi mirror is down: only what the cache holds is served until one of them answers again" in html


def test_an_upstream_of_the_offline_view_whose_rest_is_over_is_shown_as_waiting_for_a_probe() -> None:
    waiting = {"name": "tuna", "healthy": False, "cooldown_remaining": 0.0, "probing": True, "requests": 2}
    ops = _operations()
    ops.pools = {"pypi": _Pool([waiting, {**waiting, "name": "ustc", "cooldown_remaining": 20.0}])}
    html = render_page("en", ops, BASE, "10.0.0.5:3150", "n")
    assert "resting until it answers: asked once each rest is over" in html  # tuna: its probe is due or in flight
    assert "resting, 20 s left" in html  # ustc: a probe failed, and it rests again


def _page_without_host(url: str) -> str:
    """The page at `/` asked as HTTP/1.0 allows: no Host header at all."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nAccept-Language: en\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def test_the_snippets_carry_the_port_whatever_the_host_header(
    make_cache: Callable[..., RunningCache], official_upstream: OfficialLikeUpstream
) -> None:
    cache = make_cache([official_upstream.index_url])
    server = cache.settings.server
    configured = base_url_for(server.host, server.port)  # 127.0.0.1: what clients are told with no Host to go by
    assert f"index-url = {configured}/pypi/simple/" in _page_without_host(cache.url)
    named = cache.get("/", {"Host": "pkgcache.example:3141", "Accept-Language": "en"}).body.decode()
    assert "index-url = http://pkgcache.example:3141/pypi/simple/" in named
