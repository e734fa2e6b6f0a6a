"""The page at `/` in a real headless browser: Debian's chromium, driven by Playwright (no browser download)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cache_service import RunningCache
from tests.fakes.pypi_upstreams import OfficialLikeUpstream

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(os.environ.get("PKGCACHE_SCREENSHOT_DIR", "/tmp"))


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # Not skipped when missing: the test extras install it (it never downloads a browser; Debian's is used).
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def cache(official_upstream: OfficialLikeUpstream, make_cache: Callable[..., RunningCache]) -> RunningCache:
    cache = make_cache([official_upstream.index_url], cache={"max_size": "5GB"})
    # Some traffic, so that the numbers on the page are not all zero.
    for _ in range(2):
        assert cache.get("/pypi/files/alpha/alpha-2.0-py3-none-any.whl").status == 200
    # Counted once sent, which the client may see first.
    deadline = time.monotonic() + 5
    while json.loads(cache.get("/-/stats").body)["requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return cache


def test_the_page_shows_settings_with_the_real_address_and_switches_language(browser: Any, cache: RunningCache) -> None:
    # A browser that prefers English, and no proxy for loopback.
    context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        response = page.goto(cache.url + "/")
        assert response is not None and response.status == 200
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.get_by_role("heading", name="Set up your tools").is_visible()

        # The pip settings carry the address this browser used.
        index_url = f"{cache.url}/pypi/simple/"
        pip_block = page.locator("#client-pip pre").first
        assert index_url in pip_block.inner_text()
        assert "index-url" in pip_block.inner_text()
        for client in ("uv", "poetry", "pdm", "conda", "pixi"):
            assert page.locator(f"#client-{client} pre").count() >= 1, client
        # The upstream is listed, healthy, and the hit ratio shows the one hit out of two.
        upstreams = page.locator("#upstreams").inner_text()
        assert "OK" in upstreams and "127.0.0.1" in upstreams
        assert "50.0%" in page.locator(".cards").inner_text()
        # The little script ran: copy buttons are shown, and nothing failed (the CSP lets only our own code run).
        assert page.locator("button.copy").first.is_visible()
        assert errors == []
        page.screenshot(path=str(SCREENSHOT_DIR / "pkgcache-page-en.png"), full_page=True)

        # Switch to Chinese with the link; the choice sticks.
        page.get_by_role("link", name="中文").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        assert page.get_by_role("heading", name="配置你的工具").is_visible()
        assert index_url in page.locator("#client-pip pre").first.inner_text()
        page.goto(cache.url + "/")
        assert page.get_by_role("heading", name="上游镜像").is_visible()
        assert page.get_by_role("link", name="English").is_visible()
        page.screenshot(path=str(SCREENSHOT_DIR / "pkgcache-page-zh.png"), full_page=True)

        # And back.
        page.get_by_role("link", name="English").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "en"
        assert errors == []
    finally:
        context.close()


def test_the_page_follows_accept_language_and_reads_on_a_phone(browser: Any, cache: RunningCache) -> None:
    context = browser.new_context(
        locale="zh-CN",
        extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"},
        viewport={"width": 390, "height": 844},
        is_mobile=True,
    )
    page = context.new_page()
    try:
        page.goto(cache.url + "/")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        assert page.get_by_role("heading", name="概览").is_visible()
        # Nothing spills sideways on a narrow screen: wide blocks scroll inside themselves.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.screenshot(path=str(SCREENSHOT_DIR / "pkgcache-page-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_page_works_without_javascript(browser: Any, cache: RunningCache) -> None:
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    page = context.new_page()
    try:
        page.goto(cache.url + "/?lang=en")
        assert f"{cache.url}/pypi/simple/" in page.locator("#client-pip pre").first.inner_text()
        # Without the script the copy buttons stay hidden rather than doing nothing.
        assert not page.locator("button.copy").first.is_visible()
    finally:
        context.close()
