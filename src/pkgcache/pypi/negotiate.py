"""Content negotiation for pages: which format a client asked for in its Accept header (PEP 691), and whether it
takes gzip (Accept-Encoding)."""

from __future__ import annotations

import functools

from pkgcache.http.qvalues import best_offer, parse_qvalues
from pkgcache.pypi.render import HTML_CONTENT_TYPE, JSON_CONTENT_TYPE, TEXT_HTML

# What each acceptable media type gives. Among equal quality values the client's order decides, not ours.
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
    return best_offer(accept, _offer_for)


def _offer_for(media_type: str) -> str | None:
    return _OFFERS.get(media_type) or _WILDCARDS.get(media_type)


@functools.lru_cache(maxsize=64)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether a client's Accept-Encoding takes gzip (RFC 9110, 12.5.3): named, or `*`, with a quality above 0.
    Memoised like choose_format: a few distinct headers, on every page request."""
    qualities = dict(parse_qvalues(accept_encoding))
    quality = qualities.get("gzip", qualities.get("x-gzip", qualities.get("*", 0.0)))
    return quality > 0
