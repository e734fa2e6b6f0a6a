"""A real conda client (py-rattler) installing exactly what a lock file pins, as pixi install --locked does.

    python tests/clients/rattler_locked.py --lock pixi.lock --platform linux-64 --prefix DIR --cache-dir DIR

Reads the lock (rattler's own reader), takes the records of environment "default" for the platform, and installs
them with no solve and no repodata: each package is fetched from the URL the lock gives and checked against the
lock's sha256. Prints one JSON line {"installed": [{"name", "url", "sha256"}...]}; exits 0 on success, 1 with the
error on stderr. The exit is `os._exit`, as in rattler_client.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TIMEOUT = 180


async def _install(args: argparse.Namespace) -> list[dict[str, Any]]:
    import rattler

    lock = rattler.LockFile.from_path(args.lock)
    environment = lock.default_environment()
    assert environment is not None, "the lock has no default environment"
    platform = next(each for each in lock.platforms() if each.name == args.platform)  # the lock's own
    records = environment.conda_repodata_records_for_platform(platform)
    assert records, f"the lock pins nothing for {args.platform}"
    await rattler.install(records, args.prefix, cache_dir=args.cache_dir, show_progress=False)
    return [
        {"name": r.name.normalized, "url": str(r.url), "sha256": r.sha256.hex() if r.sha256 else None} for r in records
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", required=True, type=Path)
    parser.add_argument("--platform", required=True)
    parser.add_argument("--prefix", required=True, type=Path)
    parser.add_argument("--cache-dir", required=True, type=Path)
    args = parser.parse_args()
    try:
        line = json.dumps({"installed": asyncio.run(_install(args))})
    except Exception as exc:
        print(f"rattler_locked: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(line, flush=True)
    os._exit(0)


def run_locked_install(lock: Path, platform: str, prefix: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run this script in a subprocess (loopback only) and return what it did."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--lock", str(lock), "--platform", platform]
    cmd += ["--prefix", str(prefix), "--cache-dir", str(cache_dir)]
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env)


if __name__ == "__main__":
    main()
