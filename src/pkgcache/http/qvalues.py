"""Weighted list headers (Accept, Accept-Language): each item with its quality value, and the best item on offer.

A leaf: it imports nothing from pkgcache, so the PyPI side's format negotiation and the page's language choice
share it. Quality values follow RFC 9110 (section 12.4.2): a number from 0 to 1, 1 when absent, 0 meaning "not
acceptable".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def parse_qvalues(header: str | None) -> list[tuple[str, float]]:
    """The header's items, lowercased, each with its quality value, in the order the client listed them.

    Parameters other than `q` (such as `level=1`) are dropped. A quality value that is not a number counts as 0;
    one outside 0..1 is brought to the nearest end.
    """
    items: list[tuple[str, float]] = []
    for part in (header or "").split(","):
        item, *params = (piece.strip() for piece in part.split(";"))
        if item:
            items.append((item.lower(), _quality(params)))
    return items


def best_offer(header: str | None, offer_for: Callable[[str], T | None]) -> T | None:
    """What `offer_for` gives for the client's most wanted item, or None when it gives nothing for any.

    Highest quality wins; among equals, the item the client listed first. Items of quality 0 are refused.
    """
    best: T | None = None
    best_quality = 0.0
    for item, quality in parse_qvalues(header):
        # Strictly greater: an equal quality later in the list does not displace the earlier one.
        if quality <= best_quality:
            continue
        offer = offer_for(item)
        if offer is not None:
            best, best_quality = offer, quality
    return best


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                return 0.0
            return 0.0 if math.isnan(quality) else min(max(quality, 0.0), 1.0)
    return 1.0
