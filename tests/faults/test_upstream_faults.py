"""Every scenario of SCENARIOS: the first of two mirrors misbehaves, many clients ask at once, and then:

- no client received a complete 200 (every byte of its Content-Length) whose bytes fail their check;
- each client got what the scenario allows (the verified bytes, or a failed transfer where bytes had gone out);
- the next request gets the verified bytes;
- the faulty mirror was asked, and is resting (or, for a fault that is not its fault, not blamed); the healthy
  mirror was asked where failover is the point, and is never blamed;
- the cache holds the verified file or nothing (the verified file, for a scenario that `keeps_file`), no byte a
  fault sent, and nothing in tmp/ once downloads end;
- the service still answers a normal request.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.faulty import Kind, evil_filenames
from tests.faults.harness import Checks, FaultRun, outcome_of, tally
from tests.faults.scenarios import SCENARIOS, Outcome, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_a_faulty_first_mirror_is_covered_for(scenario: Scenario, fault_run: Callable[..., FaultRun]) -> None:
    checks = Checks()
    with fault_run(scenario) as run:
        verify = run.verifier(run.resource)
        if scenario.revalidation:
            _warm_up(run, verify)
            run.inject()

        received = run.burst()
        outcomes = [outcome_of(r, verify) for r in received]
        _check_clients(checks, scenario, received, outcomes)
        if scenario.fault.kind is Kind.SCHEME_LINKS:
            _check_links_are_skipped(checks, run)

        settled = run.wait_downloads_settled()
        if scenario.keeps_file:
            kept = [p for p in run.cached_copies(run.resource) if verify(p.read_bytes())]
            checks.expect(bool(kept), "the clients' download kept the verified file", run.cached_copies(run.resource))
        after = run.get()
        checks.expect(
            outcome_of(after, verify) is Outcome.OK, "the next request gets the verified bytes", after.summary()
        )
        _check_upstreams(checks, run)
        _check_cache(checks, run, verify, settled)
        normal = run.normal_resource()
        answer = run.get(normal)
        checks.expect(
            outcome_of(answer, run.verifier(normal)) is Outcome.OK,
            f"the service still answers a normal request ({run.client_path(normal)})",
            answer.summary(),
        )
    checks.verdict()


def _warm_up(run: FaultRun, verify: Callable[[bytes], bool]) -> None:
    first = run.get()
    assert outcome_of(first, verify) is Outcome.OK, f"warm-up (no fault yet) failed: {first.summary()}"
    assert run.wait_downloads_settled(), "the warm-up download did not settle"


def _check_clients(checks: Checks, scenario: Scenario, received: list, outcomes: list[Outcome]) -> None:
    wrong = [r.summary() for r, o in zip(received, outcomes, strict=True) if o is Outcome.WRONG]
    checks.expect(
        not wrong,
        "no client received a complete 200 of wrong bytes",
        f"{len(wrong)} of {len(received)}, e.g. {wrong[:1]}",
    )
    unexpected = [f"{o}: {r.summary()}" for r, o in zip(received, outcomes, strict=True) if o not in scenario.allowed]
    checks.expect(
        not unexpected,
        f"every client got one of {sorted(scenario.allowed)}",
        f"{tally(outcomes)}; e.g. {unexpected[:1]}",
    )


def _check_links_are_skipped(checks: Checks, run: FaultRun) -> None:
    for filename in evil_filenames(run.resource.name):
        answer = run.get_path(f"/pypi/files/{run.resource.name}/{filename}")
        checks.expect(
            answer.status == 404, f"a javascript:/file: link is not served ({filename}): 404", answer.summary()
        )
    kept = [str(p) for p in run.cached_files() if b"javascript:" in p.read_bytes() or b"file:///" in p.read_bytes()]
    checks.expect(not kept, "no javascript:/file: link is kept in the cache", kept)


def _check_upstreams(checks: Checks, run: FaultRun) -> None:
    scenario = run.scenario
    upstreams = run.upstreams()
    faulty, healthy = upstreams["faulty"], upstreams["healthy"]
    if scenario.fault.kind is not Kind.REFUSE:
        checks.expect(run.asked(run.faulty) > 0, "the faulty mirror was asked (the fault was met)", run.faulty.paths())
    healthy_asked = run.asked(run.healthy)
    if scenario.healthy_asked is True:
        checks.expect(healthy_asked > 0, "the healthy mirror was asked", run.healthy.paths())
    elif scenario.healthy_asked is False:
        checks.expect(healthy_asked == 0, "the healthy mirror was not needed", run.healthy.paths())
    if scenario.rests_faulty:
        checks.expect(
            not faulty["healthy"] and faulty["cooldown_remaining"] > 0, "the faulty mirror is resting", faulty
        )
        cap = scenario.settings.get("max_retry_after")
        if cap is not None:
            checks.expect(faulty["cooldown_remaining"] <= cap, f"its rest is capped at max_retry_after={cap}", faulty)
    else:
        checks.expect(faulty["healthy"] and not faulty["last_error"], "the faulty mirror is not blamed", faulty)
    checks.expect(healthy["healthy"] and not healthy["last_error"], "the healthy mirror is never blamed", healthy)


def _check_cache(checks: Checks, run: FaultRun, verify: Callable[[bytes], bool], settled: bool) -> None:
    checks.expect(settled, "downloads end and tmp/ is empty afterwards", run.tmp_leftovers())
    bad = [str(p) for p in run.cached_copies(run.resource) if not verify(p.read_bytes())]
    checks.expect(not bad, "the cache holds the verified file or nothing", bad)
    poisoned = run.poisoned_files()
    checks.expect(not poisoned, "no byte a fault sent is kept in the cache", poisoned)
