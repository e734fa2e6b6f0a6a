"""Quality values in Accept and Accept-Language: one parser for the PyPI side's format and the page's language."""

from __future__ import annotations

import pytest

from pkgcache.http.qvalues import best_offer, parse_qvalues
from pkgcache.service.ui import language_from_accept


def test_items_keep_the_clients_order_with_their_quality() -> None:
    header = "Text/HTML;level=1, application/json; q=0.5,, */*;q=0.01"
    assert parse_qvalues(header) == [("text/html", 1.0), ("application/json", 0.5), ("*/*", 0.01)]


@pytest.mark.parametrize(
    ("param", "quality"), [("q=0", 0.0), ("q=1", 1.0), ("Q=0.3", 0.3), ("q=abc", 0.0), ("q=nan", 0.0), ("q=7", 1.0)]
)
def test_odd_quality_values(param: str, quality: float) -> None:
    assert parse_qvalues(f"en;{param}") == [("en", quality)]


def test_no_header_has_no_items() -> None:
    assert parse_qvalues(None) == [] and parse_qvalues("  ") == []


def test_best_offer_takes_the_highest_quality_then_the_first_listed() -> None:
    offers = {"a": "A", "b": "B"}
    assert best_offer("a;q=0.5, b", offers.get) == "B"
    assert best_offer("a, b", offers.get) == "A"
    assert best_offer("b;q=0.5, a;q=0.5", offers.get) == "B"
    assert best_offer("x, a;q=0.1", offers.get) == "A"  # what is not on offer is skipped
    assert best_offer("a;q=0, b;q=0", offers.get) is None  # quality 0 means "not this"
    assert best_offer(None, offers.get) is None


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("fr-FR, zh-TW;q=0.5", "zh"),
        ("de, fr", "en"),  # nothing we have: English
        ("zh;q=0, en;q=0.1", "en"),
        ("en;q=0.2, zh;q=0.2", "en"),  # a tie: the browser's first choice
    ],
)
def test_the_page_language_follows_accept_language(header: str | None, language: str) -> None:
    assert language_from_accept(header) == language
