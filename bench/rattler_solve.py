"""A conda solve with py-rattler (what pixi runs), as a subprocess of the "shards" scenario.

    python -m bench.rattler_solve --channel URL --cache-dir DIR [--no-sharded] SPEC [SPEC ...]

Fetches the channel's linux-64 and noarch repodata into an empty cache (sharded repodata if the channel offers
it, unless --no-sharded; then repodata.json.zst), solves, and prints one JSON line: {"seconds": wall time of
fetch and solve, "solved": ["name=version=build", ...]}. Nothing is installed. Exits with `os._exit`: the Rust
runtime can abort while the interpreter shuts down, which would turn a success into a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path


async def solve(channel: str, cache_dir: Path, specs: list[str], sharded: bool) -> list[str]:
    import rattler

    config = rattler.SourceConfig(zstd_enabled=True, bz2_enabled=False, sharded_enabled=sharded)
    gateway = rattler.Gateway(cache_dir=cache_dir, default_config=config)
    records = await rattler.solve(
        [rattler.Channel(channel)],
        specs,
        gateway=gateway,
        platforms=["linux-64", "noarch"],
        virtual_packages=[],
        channel_relations="disabled",
    )
    return sorted(f"{r.name.normalized}={r.version}={r.build}" for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rattler_solve")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--no-sharded", action="store_true")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        solved = asyncio.run(solve(args.channel, args.cache_dir, args.specs, not args.no_sharded))
    except Exception as exc:
        print(f"rattler_solve: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(json.dumps({"seconds": round(time.monotonic() - started, 3), "solved": solved}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
