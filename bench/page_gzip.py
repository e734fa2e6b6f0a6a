"""Pages gzipped for the clients that take them, by hand: `.venv/bin/python -m bench.page_gzip [--runs 3]`.

pip, uv, poetry and pdm send `Accept-Encoding: gzip`; wrk in scenario 1 sends none, so the table there is the
page as it is. Here wrk asks for scenario 1's page (110 files) through pkgcache with and without
`Accept-Encoding: gzip`, 16 connections, beside nginx serving the very bytes pkgcache answered each way as a static
file, in turns; it prints the page's bytes each way and the requests a second of each cell (medians). Needs the
bench's upstream tree (`bash bench/run --prepare-only`). Loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import urllib.request

from bench import load
from bench.common import REPO, log
from bench.prepare_pypi import PAGE_PROJECT, UPSTREAM_ROOT, prepare_pypi
from bench.systems import Pkgcache, Upstream

RUN_DIR = REPO / "bench" / ".work" / "run" / "page_gzip"
GZIP = "Accept-Encoding: gzip, deflate"
CONNECTIONS = 16


def _answer(url: str, gzip: bool) -> bytes:
    headers = {"Accept": load.PIP_ACCEPT, **({"Accept-Encoding": "gzip, deflate"} if gzip else {})}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        return response.read()  # as sent: urllib does not decode it


def measure(runs: int, seconds: float) -> None:
    prepare_pypi()
    upstream = Upstream("upstream", RUN_DIR / "upstream")
    upstream.start(fresh=True)
    system = Pkgcache("pkgcache", RUN_DIR / "pkgcache", upstream)
    system.start(fresh=True)
    try:
        page = system.page_url(PAGE_PROJECT)
        for _ in range(3):
            _answer(page, gzip=True)
        static = UPSTREAM_ROOT / "static"
        static.mkdir(exist_ok=True)
        bodies = {gzip: _answer(page, gzip) for gzip in (False, True)}
        for gzip, body in bodies.items():
            (static / f"bench-page-{'gz' if gzip else 'plain'}.bin").write_bytes(body)
        print(f"page bytes: as it is {len(bodies[False])}, gzipped {len(bodies[True])}")
        cells = {
            "pkgcache, no Accept-Encoding": (page, ()),
            "pkgcache, Accept-Encoding: gzip": (page, (GZIP,)),
            "nginx static, pkgcache's plain bytes": (f"{upstream.base}/static/bench-page-plain.bin", ()),
            "nginx static, pkgcache's gzipped bytes": (f"{upstream.base}/static/bench-page-gz.bin", ()),
        }
        rates: dict[str, list[float]] = {name: [] for name in cells}
        for run in range(runs):
            for name, (url, headers) in cells.items():
                result = load.wrk(url, CONNECTIONS, seconds, load.PIP_ACCEPT, *headers)
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors")
                rates[name].append(result.requests_per_s)
            log(f"page_gzip run {run + 1}: " + ", ".join(f"{n} {r[-1]:.0f}" for n, r in rates.items()))
        print("| cell | req/s @16, median | runs |")
        print("|---|---|---|")
        for name, values in rates.items():
            print(f"| {name} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")
    finally:
        system.stop()
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    measure(args.runs, args.seconds)


if __name__ == "__main__":
    main()
