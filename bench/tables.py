"""The tables scenarios fill: rows are systems, columns metrics, cells lists of runs (the report shows medians)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIRECT = "direct (upstream)"


@dataclass
class Table:
    title: str
    description: str
    metrics: list[dict[str, str]]
    rows: dict[str, dict[str, list[Any]] | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, system: str, key: str, value: Any) -> None:
        row = self.rows.setdefault(system, {})
        assert row is not None
        row.setdefault(key, []).append(value)

    def not_applicable(self, system: str) -> None:
        self.rows[system] = None

    def as_dict(self) -> dict:
        return {"title": self.title, "description": self.description, "metrics": self.metrics, "rows": self.rows,
                "notes": self.notes}  # fmt: skip


def metric(key: str, label: str, better: str) -> dict[str, str]:
    return {"key": key, "label": label, "better": better}
