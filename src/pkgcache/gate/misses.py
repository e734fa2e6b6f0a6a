"""What the offline view answers for something it leaves out, as (status, message): kept free of aiohttp, since
the conda repodata filter that uses it may run in a spawned process of its own (conda/repodata_filter.py)."""

from __future__ import annotations


def not_held(what: str, *, configured_offline: bool) -> tuple[int, str]:
    """The refusal of something the cache does not hold: for good (404) when the cache is offline by configuration,
    for now (503) when every upstream of its side is down, since it can be fetched once one answers again."""
    if configured_offline:
        return 404, f"{what} is not in this cache, which is offline (no upstream is asked)"
    return 503, f"{what} is not in this cache, and every upstream is down: it can be fetched once one answers again"
