"""Issue 11's resolution with the mirror far away: what a user on a real link sees (run by hand).

    .venv/bin/python -m bench.resolution_latency [--rtt-ms 30 80] [--runs 3]

Scenario 8 (bench/resolution.py) runs on loopback, where the mirror answers in well under a millisecond: its
cold figure is pkgcache's CPU per miss, and its ratios move with uv's own start-up cost. Here the same TUNA-like
mirror (nginx) sits behind bench/latency_proxy.py, which delays every byte by half the round-trip time each
way, and the same `uv pip compile --no-cache` runs straight through the relay and through a pkgcache whose
upstream is the relay, cold and warm. Bytes and requests are counted at the mirror. Writes
bench/resolution_latency_results.json and prints a table for bench/analysis.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench import procs
from bench.common import LOOPBACK, MAIN_PYTHON, REPO, clean_env, log
from bench.resolution import Mirror, Resolved, _resolve
from bench.resolution_mirror import prepare_resolution_mirror
from bench.systems import Pkgcache, System

RESULTS = REPO / "bench" / "resolution_latency_results.json"
RUN_DIR = REPO / "bench" / ".work" / "run" / "resolution_latency"


class FarMirror(System):
    """The mirror as seen through the delaying relay."""

    def __init__(self, name: str, run_dir: Path, mirror: Mirror, one_way_ms: float) -> None:
        super().__init__(name, run_dir)
        self.mirror = mirror
        self.one_way_ms = one_way_ms

    @property
    def index_url(self) -> str:
        return f"{self.base}/simple/"

    @property
    def health_url(self) -> str:
        return self.index_url

    def _launch(self, fresh: bool) -> procs.Proc:
        argv = [str(MAIN_PYTHON), "-m", "bench.latency_proxy", "--listen", str(self.port),
                "--to", f"{LOOPBACK}:{self.mirror.port}", "--delay-ms", str(self.one_way_ms)]  # fmt: skip
        return procs.start(self.name, argv, self.run_dir / "relay.log", clean_env(PYTHONPATH=str(REPO)))


def _cell(got: Resolved) -> dict[str, float | int | None]:
    return {
        "s": round(got.seconds, 3) if got.pins is not None else None,
        "mb": round(got.traffic.bytes_sent / 1e6, 3),
        "reqs": got.traffic.requests,
    }


def measure(rtts: list[float], runs: int) -> dict[str, object]:
    prepare_resolution_mirror()
    mirror = Mirror("resolution-mirror", RUN_DIR / "mirror")
    mirror.start(fresh=True)
    errors: list[str] = []
    results: dict[str, object] = {"runs": runs, "rtt_ms": {}, "errors": errors}
    try:
        for rtt in rtts:
            far = FarMirror(f"relay-{rtt:g}ms", RUN_DIR / f"relay-{rtt:g}", mirror, rtt / 2)
            pkgcache = Pkgcache("pkgcache", RUN_DIR / f"pkgcache-{rtt:g}", far)
            far.start(fresh=True)
            cells: dict[str, list[dict[str, float | int | None]]] = {"straight": [], "cold": [], "warm": []}
            try:
                for _ in range(runs):
                    cells["straight"].append(_cell(_resolve("uv", far.index_url, mirror, errors, "straight")))
                    pkgcache.start(fresh=True)
                    try:
                        cells["cold"].append(_cell(_resolve("uv", pkgcache.index_url, mirror, errors, "cold")))
                        cells["warm"].append(_cell(_resolve("uv", pkgcache.index_url, mirror, errors, "warm")))
                    finally:
                        pkgcache.stop()
                    log(f"resolution at {rtt:g} ms: " + ", ".join(f"{k} {v[-1]}" for k, v in cells.items()))
            finally:
                far.stop()
            results["rtt_ms"][f"{rtt:g}"] = cells  # type: ignore[index]
    finally:
        mirror.stop()
    return results


def table(results: dict[str, object]) -> str:
    lines = [
        "| round trip to the mirror | uv straight (s) | through pkgcache, cold (s) | warm (s) | cold ÷ straight "
        "| warm ÷ straight | mirror MB / requests, straight | cold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rtt, cells in results["rtt_ms"].items():  # type: ignore[attr-defined]
        med = {name: statistics.median(c["s"] for c in runs if c["s"] is not None) for name, runs in cells.items()}
        straight, cold = cells["straight"][0], cells["cold"][0]
        lines.append(
            f"| {rtt} ms | {med['straight']:.2f} | {med['cold']:.2f} | {med['warm']:.3f} "
            f"| {med['cold'] / med['straight']:.2f}x | {med['warm'] / med['straight']:.2f}x "
            f"| {straight['mb']:.2f} / {straight['reqs']} | {cold['mb']:.2f} / {cold['reqs']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[30.0, 80.0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = measure(args.rtt_ms, args.runs)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    if results["errors"]:
        print("errors:", *results["errors"], sep="\n  ")


if __name__ == "__main__":
    main()
