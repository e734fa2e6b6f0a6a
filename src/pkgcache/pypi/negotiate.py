"""PEP 691 content negotiation: which format a client asked for in its Accept header."""

from __future__ import annotations

import functools

from pkgcache.pypi.render import HTML_CONTENT_TYPE, JSON_CONTENT_TYPE, TEXT_HTML

# What each acceptable media type gives, in the server's order of preference for ties.
_OFFERS: dict[str, str] = {
    JSON_CONTENT_TYPE: JSON_CONTENT_TYPE,
    "application/vnd.pypi.simple.latest+json": JSON_CONTENT_TYPE,
    HTML_CONTENT_TYPE: HTML_CONTENT_TYPE,
    "application/vnd.pypi.simple.latest+html": HTML_CONTENT_TYPE,
    TEXT_HTML: TEXT_HTML,
}
_WILDCARDS = {"*/*": TEXT_HTML, "text/*": TEXT_HTML, "application/*": JSON_CONTENT_TYPE}


@functools.lru_cache(maxsize=256)
def choose_format(accept: str | None, format_param: str | None = None) -> str | None:
    """The content type to answer with, or None when nothing the client accepts is on offer (406).

    No Accept header means text/html, as PEP 691 asks for old clients. A `?format=` query parameter wins.
    Memoised: clients send the same few headers over and over, and parsing them showed in profiles.
    """
    if format_param:
        return _OFFERS.get(format_param.strip().lower())
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for position, (media_type, quality) in enumerate(_parse_accept(accept)):
        offer = _OFFERS.get(media_type) or _WILDCARDS.get(media_type)
        if offer is None or quality <= 0:
            continue
        # Highest quality wins; among equals, the one the client listed first.
        candidate = (quality, -position, offer)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    entries: list[tuple[str, float]] = []
    for part in accept.split(","):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        if not media_type:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        entries.append((media_type.lower(), quality))
    return entries
