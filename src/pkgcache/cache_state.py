"""How a request was answered from the cache: the one vocabulary of handlers, headers, logs and stats."""

from __future__ import annotations

import enum


class CacheState(enum.StrEnum):
    HIT = "hit"  # served from the cache, fresh
    MISS = "miss"  # fetched from an upstream for this request
    STALE = "stale"  # served from the cache past its time-to-live (revalidating, or no upstream answered)
    OFFLINE = "offline"  # the offline view: only what the cache holds, no upstream asked (gate/offline.py)
