"""Issue 12's solve over real links: the mirror far away, the client on another machine (run by hand).

    .venv/bin/python -m bench.shards_latency [--links 30:100 80:50] [--client-links 0:0] [--runs 3]

Scenario 9 (bench/shards.py) runs on loopback, where the 30 MB repodata.json.zst arrives in a tenth of a second
and reaches the client for free: its cold figure is the shard build's CPU. Here bench/latency_proxy.py, which
delays every byte by half the round trip each way and carries at most the given megabits a second per
connection, can sit between pkgcache and the bench's conda channel (nginx, the 110 MB linux-64 repodata: a
mirror far away, `--links`) and between the client and pkgcache (a client on the LAN or on Wi-Fi,
`--client-links`), and the same py-rattler solve runs through pkgcache with shards made here and with
repodata.json.zst, cold (pkgcache just started, empty cache) and warm (the same solve again from an empty client
cache). A link is ROUND_TRIP_MS:MEGABITS; 0:0 is loopback, no relay. Every pair of links is measured. Writes
bench/shards_latency_results.json and prints a table for bench/analysis.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from collections.abc import Iterator

from bench.common import REPO, log
from bench.prepare_shards import CHANNEL, prepare_shard_channel
from bench.shards import _solve
from bench.systems import Pkgcache, Relay, System, Upstream

RESULTS = REPO / "bench" / "shards_latency_results.json"
RUN_DIR = REPO / "bench" / ".work" / "run" / "shards_latency"
LINK_MODES = ("sharded", "zst")  # scenario 9's rows with the default configuration
Link = tuple[float, float]  # round trip (ms), megabits a second; (0, 0): loopback


def measure(links: list[Link], client_links: list[Link], runs: int) -> dict[str, object]:
    prepare_shard_channel()
    upstream = Upstream("upstream", RUN_DIR / "upstream")
    upstream.start(fresh=True)
    errors: list[str] = []
    results: dict[str, object] = {"runs": runs, "links": {}, "errors": errors}
    try:
        for link in links:
            with _relayed("mirror", upstream, link) as mirror:
                for client_link in client_links:
                    key = f"{_label(link)} | {_label(client_link)}"
                    results["links"][key] = _measure_pair(mirror, client_link, key, runs, errors)  # type: ignore[index]
    finally:
        upstream.stop()
    return results


def _measure_pair(mirror: System, client_link: Link, key: str, runs: int, errors: list[str]) -> dict[str, list]:
    cells: dict[str, list[float | None]] = {f"{mode} {state}": [] for mode in LINK_MODES for state in ("cold", "warm")}
    for run in range(runs):
        for mode in LINK_MODES:
            folder = RUN_DIR / f"{mode}-{_slug(key)}"
            system = Pkgcache("pkgcache", folder, mirror, channels=(CHANNEL,))  # type: ignore[arg-type]
            system.start(fresh=True)
            try:
                with _relayed("client", system, client_link) as front:
                    for state in ("cold", "warm"):
                        got = _solve(system, mode, folder / f"client-{state}", errors, front.base)
                        cells[f"{mode} {state}"].append(got.seconds)
            finally:
                system.stop()
        log(f"shards at {key}, run {run + 1}: " + ", ".join(f"{k} {v[-1]}" for k, v in cells.items()))
    return cells


@contextlib.contextmanager
def _relayed(name: str, behind: System, link: Link) -> Iterator[System]:
    """`behind` as reached over `link`: through a relay, or itself for loopback."""
    if link == (0, 0):
        yield behind
        return
    relay = Relay(f"{name}-relay", RUN_DIR / f"{name}-relay-{link[0]:g}-{link[1]:g}", behind, *link)
    relay.start(fresh=True)
    try:
        yield relay
    finally:
        relay.stop()


def _label(link: Link) -> str:
    return "loopback" if link == (0, 0) else f"{link[0]:g} ms, {link[1]:g} Mbit/s"


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in key)


def table(results: dict[str, object]) -> str:
    lines = [
        "| link to the mirror | link to the client | .zst solve, cold (s) | sharded, cold (s) | cold ratio "
        "| .zst solve, warm (s) | sharded, warm (s) | warm ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, cells in results["links"].items():  # type: ignore[attr-defined]
        med = {name: statistics.median(v for v in values if v is not None) for name, values in cells.items()}
        mirror, client = key.split(" | ")
        lines.append(
            f"| {mirror} | {client} | {med['zst cold']:.2f} | {med['sharded cold']:.2f} "
            f"| {med['sharded cold'] / med['zst cold']:.2f}x | {med['zst warm']:.2f} | {med['sharded warm']:.3f} "
            f"| {med['sharded warm'] / med['zst warm']:.2f}x |"
        )
    return "\n".join(lines)


def _links(given: list[str]) -> list[Link]:
    return [(float(rtt), float(mbps)) for rtt, mbps in (link.split(":") for link in given)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", nargs="+", default=["30:100", "80:50"], help="to the mirror: RTT_MS:MEGABITS")
    parser.add_argument("--client-links", nargs="+", default=["0:0"], help="to the client: RTT_MS:MEGABITS")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = measure(_links(args.links), _links(args.client_links), args.runs)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    for error in results["errors"]:  # type: ignore[attr-defined]
        print("error:", error)


if __name__ == "__main__":
    main()
