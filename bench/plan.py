"""How much a run does: the full run (about 25 minutes here) or --quick (about 8)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ALL_SCENARIOS = (
    "install", "cold_miss", "herd", "warm_page", "warm_file", "conda", "resolution", "shards", "faults", "memory",
)  # fmt: skip
PROXIES = ("pkgcache", "nginx-cache", "devpi", "proxpi")


@dataclass(frozen=True)
class Plan:
    quick: bool
    runs: int  # repetitions of every measurement; tables give the median
    wrk_seconds: float
    page_connections: tuple[int, ...] = (1, 16, 64)
    file_connections: tuple[int, ...] = (1, 16)
    herd_clients: int = 64
    install_tools: tuple[str, ...] = ("pip", "uv")
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    systems: tuple[str, ...] = PROXIES
    notes: list[str] = field(default_factory=list)
    policy_rules: int = 0  # pkgcache runs with a policy of this many rules per side (bench/policy.py)

    def as_dict(self) -> dict:
        return asdict(self)


def make_plan(
    quick: bool, only: list[str] | None, systems: list[str] | None, runs: int | None, policy_rules: int = 0
) -> Plan:
    scenarios = tuple(s for s in ALL_SCENARIOS if not only or s in only)
    chosen = tuple(s for s in PROXIES if not systems or s in systems)
    if "pkgcache" not in chosen:
        chosen = ("pkgcache", *chosen)  # every ratio is to pkgcache
    if quick:
        return Plan(True, runs or 1, 3, scenarios=scenarios, systems=chosen, policy_rules=policy_rules)
    return Plan(False, runs or 3, 5, scenarios=scenarios, systems=chosen, policy_rules=policy_rules)
