"""PEP 691 content negotiation: which format a client asked for in its Accept header."""

from __future__ import annotations

import functools

from pkgcache.http.qvalues import best_offer
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
