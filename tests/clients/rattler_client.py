"""A real conda client (py-rattler), run as a subprocess by the tests.

    python tests/clients/rattler_client.py --channel URL [--channel URL ...] --prefix DIR --cache-dir DIR \
        [--platform linux-64] [--no-sharded] [--no-zst] [--no-bz2] SPEC [SPEC ...]

Fetches repodata through the channels, solves, installs into the prefix, and prints one JSON line:
{"installed": [{"name": ..., "version": ..., "build": ..., "url": ..., "sha256": ...}, ...]}.
Exits 0 on success, 1 with the error on stderr otherwise. The exit is `os._exit`, because the Rust runtime can
abort while the interpreter shuts down, which would turn a success into a crash.
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

CLIENT_TIMEOUT = 180


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channel", action="append", required=True, help="channel URL; repeat for more")
    parser.add_argument("--prefix", required=True, type=Path)
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--platform", default=None, help="target subdir; default: this machine's")
    parser.add_argument("--no-sharded", action="store_true", help="do not try sharded repodata")
    parser.add_argument("--no-zst", action="store_true", help="do not try repodata.json.zst")
    parser.add_argument("--no-bz2", action="store_true", help="do not try repodata.json.bz2")
    parser.add_argument("specs", nargs="+")
    return parser.parse_args(argv)


async def _install(args: argparse.Namespace) -> list[dict[str, Any]]:
    import rattler

    platform = args.platform or str(rattler.Subdir.current())
    source_config = rattler.SourceConfig(
        zstd_enabled=not args.no_zst,
        bz2_enabled=not args.no_bz2,
        sharded_enabled=not args.no_sharded,
    )
    # A fresh repodata cache per run, so every run shows its requests on the wire.
    gateway = rattler.Gateway(cache_dir=args.cache_dir / "repodata", default_config=source_config)
    channels = [rattler.Channel(url) for url in args.channel]
    records = await rattler.solve(
        channels,
        args.specs,
        gateway=gateway,
        platforms=[platform, "noarch"],
        virtual_packages=[],
        channel_relations="disabled",
    )
    await rattler.install(
        records,
        args.prefix,
        cache_dir=args.cache_dir / "pkgs",
        platform=rattler.Subdir(platform),
        show_progress=False,
    )
    return [
        {
            "name": r.name.normalized,
            "version": str(r.version),
            "build": str(r.build),
            "subdir": str(r.subdir),
            "url": str(r.url),
            "sha256": r.sha256.hex() if r.sha256 else None,
        }
        for r in records
    ]


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        line = json.dumps({"installed": asyncio.run(_install(args))})
    except Exception as exc:
        print(f"rattler_client: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(line, flush=True)
    os._exit(0)


def run_rattler_install(
    channels: list[str],
    prefix: Path,
    cache_dir: Path,
    specs: list[str],
    *,
    platform: str | None = None,
    extra_args: list[str] | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> dict[str, Any]:
    """Run this script in a subprocess and return its JSON; raise with its stderr if it failed."""
    cmd = [sys.executable, str(Path(__file__).resolve())]
    for url in channels:
        cmd += ["--channel", url]
    cmd += ["--prefix", str(prefix), "--cache-dir", str(cache_dir)]
    if platform:
        cmd += ["--platform", platform]
    cmd += [*(extra_args or []), *specs]
    # Loopback only: keep any proxy settings in the environment away from the fake servers.
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"rattler client failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"rattler client printed no JSON:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    main()
