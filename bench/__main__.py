"""`python -m bench` (or `bash bench/run`): prepare once, run every scenario, write results.json and BENCHMARKS.md."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from typing import Any

from bench import machine, report
from bench.common import RESULTS_JSON, log, write_json
from bench.plan import ALL_SCENARIOS, PROXIES, make_plan
from bench.prepare_conda import prepare_conda
from bench.prepare_pypi import prepare_pypi
from bench.prepare_shards import prepare_shard_channel
from bench.resolution_mirror import prepare_resolution_mirror
from bench.scenarios import Bench
from bench.venvs import ensure_venv

SETUPS = [
    "pkgcache: `pkgcache serve --config` with defaults (so a worker process per core, uvloop, the access log on) "
    "but address, data dir and the local upstreams.",
    "nginx-cache: `proxy_cache` with `proxy_cache_lock`, stale-while-updating, upstream keep-alive, 2 workers.",
    "devpi: `devpi-server` defaults, a `type=mirror` index of the upstream.",
    "proxpi: as its Docker image runs it (gunicorn --preload, 1 worker, 2 threads).",
    "All keep their access logs on, as shipped.",
]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.report_only:
        report.write_report()
        log("BENCHMARKS.md regenerated from bench/results.json")
        return 0
    _check_tools()
    prepare_pypi()
    prepare_conda()
    prepare_resolution_mirror()
    prepare_shard_channel()
    for group in ("devpi", "proxpi", "clients"):
        ensure_venv(group)
    if args.prepare_only:
        return 0
    plan = make_plan(args.quick, args.only, args.systems, args.runs, args.policy_rules)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # so that `finally` stops every server
    started_wall, started = time.strftime("%Y-%m-%d %H:%M %Z"), time.monotonic()
    versions = machine.versions()  # before the run: src/ may change while it goes
    bench = Bench(plan)
    try:
        bench.start_all()
        for name in plan.scenarios:
            bench.run(name)
    finally:
        bench.stop_all()
    results = _results(bench, versions, started_wall, time.monotonic() - started)
    write_json(RESULTS_JSON, results)
    report.write_report()
    log(f"done in {(time.monotonic() - started) / 60:.1f} min: bench/results.json and BENCHMARKS.md written")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bash bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition, 3 s load cells (about 8 minutes)")
    parser.add_argument("--runs", type=int, help="repetitions per cell (default 3, or 1 with --quick)")
    parser.add_argument("--only", type=lambda v: v.split(","), help=f"comma-separated subset of {ALL_SCENARIOS}")
    parser.add_argument("--systems", type=lambda v: v.split(","), help=f"subset of {PROXIES} (pkgcache always)")
    parser.add_argument(
        "--policy-rules", type=int, default=0, help="run pkgcache with a policy of N rules per side (bench/policy.py)"
    )
    parser.add_argument("--prepare-only", action="store_true", help="build the upstream and virtualenvs, no run")
    parser.add_argument("--report-only", action="store_true", help="rewrite BENCHMARKS.md from bench/results.json")
    return parser.parse_args(argv)


def _check_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk", "curl") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y nginx wrk curl (bench/run does this)")


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _results(bench: Bench, versions: dict[str, str], started: str, duration: float) -> dict[str, Any]:
    tables = dict(bench.tables)
    if "memory" in bench.plan.scenarios:
        tables["memory"] = bench.memory_table()
    command = "bash bench/run" + "".join(f" {a}" for a in (sys.argv[1:] if argv_is_cli() else []))
    return {
        "meta": {
            "command": command,
            "started": started,
            "duration_s": round(duration, 1),
            "machine": machine.machine(),
            "versions": versions,
            "setups": SETUPS,
        },
        "plan": bench.plan.as_dict(),
        "scenarios": {name: table.as_dict() for name, table in tables.items()},
        "errors": bench.errors,
    }


def argv_is_cli() -> bool:
    return bool(sys.argv) and sys.argv[0].endswith(("__main__.py", "bench"))


if __name__ == "__main__":
    sys.exit(main())
