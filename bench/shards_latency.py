"""Issue 12's solve with the mirror far away: what a user on a real link sees (run by hand).

    .venv/bin/python -m bench.shards_latency [--links 30:100 80:50] [--runs 3]

Scenario 9 (bench/shards.py) runs on loopback, where the 30 MB repodata.json.zst arrives in a tenth of a second:
its cold figure is the shard build's CPU. Here the bench's conda channel (nginx, the 110 MB linux-64 repodata)
sits behind bench/latency_proxy.py, which delays every byte by half the round trip each way and carries at most
the given megabits a second per connection, and the same py-rattler solve runs through pkgcache with shards made
here and with repodata.json.zst, cold (pkgcache just started, empty cache) and warm (the same solve again from an
empty client cache). A link is ROUND_TRIP_MS:MEGABITS. Writes bench/shards_latency_results.json and prints a table
for bench/analysis.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench import procs
from bench.common import LOOPBACK, MAIN_PYTHON, REPO, clean_env, log
from bench.prepare_shards import CHANNEL, prepare_shard_channel
from bench.shards import MODES, _solve
from bench.systems import Pkgcache, System, Upstream

RESULTS = REPO / "bench" / "shards_latency_results.json"
RUN_DIR = REPO / "bench" / ".work" / "run" / "shards_latency"


class FarUpstream(System):
    """The bench's upstream as seen through the delaying, rate-limited relay."""

    def __init__(self, name: str, run_dir: Path, upstream: Upstream, one_way_ms: float, mbps: float) -> None:
        super().__init__(name, run_dir, conda=True)
        self.upstream = upstream
        self.one_way_ms = one_way_ms
        self.mbps = mbps

    @property
    def index_url(self) -> str:
        return f"{self.base}/simple/"

    @property
    def health_url(self) -> str:
        return self.index_url

    def _launch(self, fresh: bool) -> procs.Proc:
        argv = [str(MAIN_PYTHON), "-m", "bench.latency_proxy", "--listen", str(self.port),
                "--to", f"{LOOPBACK}:{self.upstream.port}", "--delay-ms", str(self.one_way_ms),
                "--rate-mbps", str(self.mbps)]  # fmt: skip
        return procs.start(self.name, argv, self.run_dir / "relay.log", clean_env(PYTHONPATH=str(REPO)))


def measure(links: list[tuple[float, float]], runs: int) -> dict[str, object]:
    prepare_shard_channel()
    upstream = Upstream("upstream", RUN_DIR / "upstream")
    upstream.start(fresh=True)
    errors: list[str] = []
    results: dict[str, object] = {"runs": runs, "links": {}, "errors": errors}
    try:
        for rtt, mbps in links:
            key = f"{rtt:g} ms, {mbps:g} Mbit/s"
            far = FarUpstream(f"relay-{rtt:g}-{mbps:g}", RUN_DIR / f"relay-{rtt:g}-{mbps:g}", upstream, rtt / 2, mbps)
            far.start(fresh=True)
            cells: dict[str, list[float | None]] = {
                f"{mode} {state}": [] for mode in MODES for state in ("cold", "warm")
            }
            try:
                for run in range(runs):
                    for mode in MODES:
                        folder = RUN_DIR / f"{mode}-{rtt:g}-{mbps:g}"
                        system = Pkgcache("pkgcache", folder, far, channels=(CHANNEL,))  # type: ignore[arg-type]
                        system.start(fresh=True)
                        try:
                            for state in ("cold", "warm"):
                                got = _solve(system, mode, folder / f"client-{state}", errors)
                                cells[f"{mode} {state}"].append(got.seconds)
                        finally:
                            system.stop()
                    log(f"shards at {key}, run {run + 1}: " + ", ".join(f"{k} {v[-1]}" for k, v in cells.items()))
            finally:
                far.stop()
            results["links"][key] = cells  # type: ignore[index]
    finally:
        upstream.stop()
    return results


def table(results: dict[str, object]) -> str:
    lines = [
        "| link to the mirror | .zst solve, cold (s) | sharded, cold (s) | cold ratio | .zst solve, warm (s) "
        "| sharded, warm (s) | warm ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, cells in results["links"].items():  # type: ignore[attr-defined]
        med = {name: statistics.median(v for v in values if v is not None) for name, values in cells.items()}
        lines.append(
            f"| {key} | {med['zst cold']:.2f} | {med['sharded cold']:.2f} "
            f"| {med['sharded cold'] / med['zst cold']:.2f}x | {med['zst warm']:.2f} | {med['sharded warm']:.3f} "
            f"| {med['sharded warm'] / med['zst warm']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", nargs="+", default=["30:100", "80:50"], help="ROUND_TRIP_MS:MEGABITS")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    links = [(float(rtt), float(mbps)) for rtt, mbps in (link.split(":") for link in args.links)]
    results = measure(links, args.runs)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    for error in results["errors"]:  # type: ignore[attr-defined]
        print("error:", error)


if __name__ == "__main__":
    main()
