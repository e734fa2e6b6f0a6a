"""Who a worker process is: its number, its role, and what it shares with the others."""

from __future__ import annotations

from dataclasses import dataclass

from pkgcache.workers.shared_counters import SharedCounters

PRIMARY = 0


@dataclass(frozen=True)
class WorkerContext:
    index: int  # 0: the primary
    count: int
    counters: SharedCounters
    # The Unix socket only the primary listens on, for the requests the replicas hand over.
    primary_address: str
    # When the service started (Unix time): the supervisor's start, which a restarted worker does not change.
    service_started_at: float

    @property
    def is_primary(self) -> bool:
        return self.index == PRIMARY

    @property
    def role(self) -> str:
        return "primary" if self.is_primary else "replica"
