"""The shard build alone, by hand: `.venv/bin/python -m bench.shard_build [--form repodata.json.zst] [--runs 3]`.

Times `build_shards` on scenario 9's 110 MB repodata (bench/prepare_shards.py makes it) in a child process of its
own, as the service's builder runs, and samples the PSS of the child's process tree (its forked makers included)
every 20 ms. `--src` points at another checkout's `src/` to compare two versions side by side in one session;
`--makers` forces the number of forked makers (the builder picks one per core but the reader's). Prints each run
and the medians. Loopback and local files only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = ROOT / "bench" / ".work" / "upstream" / "conda" / "cloud" / "shardbench" / "linux-64"
SAMPLE_SECONDS = 0.02
# The child: build into a folder of its own, print the seconds and the shard count.
CHILD = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
if os.environ.get("BENCH_MAKERS"):
    cores = int(os.environ["BENCH_MAKERS"]) + 1
    os.cpu_count = lambda: cores
from pkgcache.conda.shard_builder import build_shards
started = time.monotonic()
result = build_shards(Path(sys.argv[2]), Path(sys.argv[3]) / "shards", base_url="./", shards_base_url="./shards/")
print(f"{time.monotonic() - started:.3f} {result.shards}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--form", default="repodata.json", choices=["repodata.json", "repodata.json.zst"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the src/ folder to import pkgcache from")
    parser.add_argument("--makers", type=int, help="forked makers (default: the builder's own choice)")
    args = parser.parse_args()
    repodata = CHANNEL / args.form
    if not repodata.is_file():
        sys.exit(f"{repodata} is missing: run `bash bench/run --prepare-only` first")
    seconds, peaks = [], []
    for _ in range(args.runs):
        took, shards, peak = _one_build(args.src, repodata, args.makers)
        print(f"{took:.3f} s, {shards} shards, peak PSS {peak:.1f} MB", flush=True)
        seconds.append(took)
        peaks.append(peak)
    print(f"median {statistics.median(seconds):.3f} s, peak PSS median {statistics.median(peaks):.1f} MB")


def _one_build(src: Path, repodata: Path, makers: int | None) -> tuple[float, int, float]:
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if makers:
        environment["BENCH_MAKERS"] = str(makers)
    with tempfile.TemporaryDirectory(prefix="shard-build-", dir=ROOT / "bench" / ".work") as work:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(src), str(repodata), work],
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        peak = 0.0
        while child.poll() is None:
            peak = max(peak, _tree_pss_mb(child.pid))
            time.sleep(SAMPLE_SECONDS)
        output = child.stdout.read().split() if child.stdout else []
        if child.returncode != 0 or len(output) != 2:
            sys.exit(f"the build failed ({child.returncode})")
    return float(output[0]), int(output[1]), peak


def _tree_pss_mb(pid: int) -> float:
    """PSS of `pid` and its descendants, from /proc (0 for a process gone meanwhile)."""
    total_kb, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                pending += [int(child) for child in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total_kb / 1024


if __name__ == "__main__":
    main()
