"""docs/reliability.md carries the scenario tables generated from tests/faults/scenarios.py: they cannot drift."""

from __future__ import annotations

from pathlib import Path

from tests.faults import test_upstream_faults
from tests.faults.scenarios import SCENARIOS, SERVICE_SCENARIOS, render_table, table_in

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
REGENERATE = ".venv/bin/python -m tests.faults.scenarios --write docs/reliability.md"


def test_the_committed_tables_are_the_generated_ones() -> None:
    doc = DOC.read_text()
    assert REGENERATE in doc, "the document must say how to regenerate its tables"
    assert table_in(doc) == render_table(), f"docs/reliability.md is out of date; run: {REGENERATE}"


def test_every_scenario_is_run_and_every_service_scenario_names_a_test_that_exists() -> None:
    ids = [scenario.id for scenario in SCENARIOS]
    assert len(ids) == len(set(ids)), "scenario ids must be unique"
    assert test_upstream_faults.test_a_faulty_first_mirror_is_covered_for.pytestmark[0].args[1] == SCENARIOS
    here = Path(__file__).parent
    for scenario in SERVICE_SCENARIOS:
        module, _, function = scenario.test.partition("::")
        assert f"def {function}(" in (here / module).read_text(), scenario.test
