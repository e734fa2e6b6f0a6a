"""A pixi.lock written by rattler's own lock-file writer (py-rattler), for the seed-input tests.

    python tests/fakes/rattler_lock.py --channel URL [--channel URL ...] --platform linux-64 [--platform ...] \
        --cache-dir DIR --output pixi.lock [--pypi NAME==VERSION@URL ...] SPEC [SPEC ...]

Solves SPECs through the channels for each platform (with noarch), puts every record in environment "default"
under its platform, adds the `--pypi` packages to every platform, writes the lock file and prints one JSON line:
{"conda": [{"platform", "url", "sha256", "md5", "size"}...]}. Exits with `os._exit`, as the Rust runtime can abort
while the interpreter shuts down.
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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channel", action="append", required=True)
    parser.add_argument("--platform", action="append", required=True)
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--pypi", action="append", default=[], help="NAME==VERSION@URL")
    parser.add_argument("specs", nargs="+")
    return parser.parse_args(argv)


async def _write_lock(args: argparse.Namespace) -> list[dict[str, Any]]:
    import rattler

    gateway = rattler.Gateway(cache_dir=args.cache_dir)
    channels = [rattler.Channel(url) for url in args.channel]
    lock = rattler.LockFile([rattler.LockPlatform(name) for name in args.platform])
    lock.set_channels("default", [rattler.LockChannel(url) for url in args.channel])
    locked = []
    for platform in args.platform:
        records = await rattler.solve(
            channels, args.specs, gateway=gateway, platforms=[platform, "noarch"], virtual_packages=[]
        )
        for record in records:
            lock.add_conda_package("default", rattler.LockPlatform(platform), record)
            locked.append(
                {
                    "platform": platform,
                    "url": str(record.url),
                    "sha256": record.sha256.hex() if record.sha256 else None,
                    "md5": record.md5.hex() if record.md5 else None,
                    "size": record.size,
                }
            )
        for pypi in args.pypi:
            pin, _, url = pypi.partition("@")
            name, _, version = pin.partition("==")
            lock.add_pypi_package("default", rattler.LockPlatform(platform), name, version, url)
    lock.to_path(args.output)
    return locked


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        line = json.dumps({"conda": asyncio.run(_write_lock(args))})
    except Exception as exc:
        print(f"rattler_lock: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(line, flush=True)
    os._exit(0)


def write_pixi_lock(
    channels: list[str],
    platforms: list[str],
    specs: list[str],
    output: Path,
    cache_dir: Path,
    pypi: list[str] = (),  # type: ignore[assignment]
) -> list[dict[str, Any]]:
    """Run this script in a subprocess; return the conda records it locked (raise with its stderr on failure)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cache-dir", str(cache_dir), "--output", str(output)]
    cmd += [arg for url in channels for arg in ("--channel", url)]
    cmd += [arg for platform in platforms for arg in ("--platform", platform)]
    cmd += [arg for package in pypi for arg in ("--pypi", package)]
    cmd += specs
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"rattler_lock failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return json.loads(lines[-1])["conda"]


if __name__ == "__main__":
    main()
