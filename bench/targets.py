"""The targets of issues 9, 11 and 12, judged from one run's results (bench/report.py renders them).

Each check is (target, what pkgcache measured, met?); met is None when the run did not measure it.
"""

from __future__ import annotations

from typing import Any

from bench.common import median, ratio
from bench.tables import DIRECT

Check = tuple[str, str, bool | None]


def _cell(rows: dict[str, Any], system: str, key: str) -> float | None:
    row = rows.get(system)
    return None if not row else median(row.get(key, []))


def _pooled(rows: dict[str, Any], system: str, keys: tuple[str, ...]) -> float | None:
    """The median over several columns' runs: straight from the mirror, cold and warm are the same thing."""
    row = rows.get(system) or {}
    return median(value for key in keys for value in row.get(key, []))


def _check(name: str, value: float | None, limit: float, fmt: str = "{:.2f}x", strict: bool = False) -> Check:
    """Met when `value` is at most `limit` (below it, if `strict`)."""
    if value is None:
        return (name, "not measured", None)
    return (name, fmt.format(value), value < limit if strict else value <= limit)


def resolution_checks(rows: dict[str, Any]) -> list[Check]:
    """Issue 11: uv through pkgcache against uv straight from the mirror; pip's bytes through pkgcache against pip's."""
    uv_bytes = _pooled(rows, DIRECT, ("uv_cold_mb", "uv_warm_mb"))
    uv_time = _pooled(rows, DIRECT, ("uv_cold_s", "uv_warm_s"))
    pip_bytes = _pooled(rows, DIRECT, ("pip_cold_mb", "pip_warm_mb"))
    return [
        _check("cold uv through pkgcache: bytes from the mirror ≤ 1.5x uv's straight",
               ratio(_cell(rows, "pkgcache", "uv_cold_mb"), uv_bytes), 1.5),
        _check("cold uv through pkgcache: time ≤ 1.5x uv's straight",
               ratio(_cell(rows, "pkgcache", "uv_cold_s"), uv_time), 1.5),
        _check("warm uv through pkgcache: time ≤ 0.5x uv's straight",
               ratio(_cell(rows, "pkgcache", "uv_warm_s"), uv_time), 0.5),
        _check("cold pip through pkgcache: bytes from the mirror ≤ 0.1x pip's straight",
               ratio(_cell(rows, "pkgcache", "pip_cold_mb"), pip_bytes), 0.1, "{:.3f}x"),
    ]  # fmt: skip


SHARDED, AHEAD, ZST = "shards made here", "shards made ahead (prebuild_shards)", "repodata.json.zst"


def shard_checks(rows: dict[str, Any]) -> list[Check]:
    """Issue 12: the sharded solve against the .zst solve, and pkgcache's memory while building."""
    checks = []
    for state in ("cold", "warm"):
        share = ratio(_cell(rows, SHARDED, f"{state}_mb"), _cell(rows, ZST, f"{state}_mb"))
        checks.append(_check(f"{state} sharded solve: bytes to the client ≤ 5% of the .zst solve's", share, 0.05,
                             "{:.1%}"))  # fmt: skip
        time_ratio = ratio(_cell(rows, SHARDED, f"{state}_s"), _cell(rows, ZST, f"{state}_s"))
        checks.append(_check(f"{state} sharded solve faster than the .zst solve (time ratio below 1)", time_ratio,
                             1.0, strict=True))  # fmt: skip
    ahead = ratio(_cell(rows, AHEAD, "cold_s"), _cell(rows, ZST, "cold_s"))
    checks.append(_check("cold sharded solve, subdirs in prebuild_shards (not the default), faster than the .zst "
                         "solve", ahead, 1.0, strict=True))  # fmt: skip
    peak = _cell(rows, SHARDED, "peak_mb")
    checks.append(_check("pkgcache's memory while building under 150 MB (PSS of the tree, builder included)", peak,
                         150, "{:.0f} MB", strict=True))  # fmt: skip
    return checks


def fault_checks(rows: dict[str, Any]) -> list[Check]:
    """Issue 9: no request fails in any phase."""
    return [_check(f"{phase}: 0 errors", _cell(rows, phase, "errors"), 0, "{:.0f}") for phase in rows]
