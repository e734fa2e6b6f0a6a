"""The offline kit measured: seeding a 40-package lock file and a conda environment, and bundle throughput.

    .venv/bin/python bench/seed.py [--bundle-gb 2] [--skip-bundle]

Run by hand from the repository (it uses the test fakes, all on loopback; about two minutes with a 2 GB bundle):

1. A PyPI index (the tests' TUNA-like fake) serving 40 projects of synthetic wheels (sizes spread from 40 KB to
   6 MB, about 85 MB in all). uv compiles a pylock.toml and a hashed requirements.txt of the 40 against it; then,
   each into an empty place with no client cache: `pkgcache seed pylock.toml` (serving its data directory itself),
   `pip download --no-deps -r requirements.txt`, `uv pip install --target` of the same, and `pkgcache seed` again
   (everything cached). Wall time, and bytes the upstream sent (counted by the fake).
2. A conda environment (the tests' channel: app and its tree, plus a 4 MB package) in environment.yml: `pkgcache
   seed` (rattler solves through pkgcache) beside py-rattler solving and installing it straight from the mirror.
3. A data directory of synthetic wheels (random bytes, `--bundle-gb` in all, 10 MB each, listed with their sha256
   on a page): `pkgcache export` of all of it, then `pkgcache import` into an empty directory, in MB/s.

Prints one table; nothing is written outside bench/.work/seed/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes.conda_channel import build_channel  # noqa: E402
from tests.fakes.conda_upstreams import MirrorLikeUpstream  # noqa: E402
from tests.fakes.dists import Dist, build_wheel  # noqa: E402
from tests.fakes.pypi_upstreams import TunaLikeUpstream  # noqa: E402

WORK = REPO / "bench" / ".work" / "seed"
PYTHON = sys.executable
UV = str(Path(sys.executable).parent / "uv")
PROJECTS = 40
FILE_MB = 10
MB = 1_000_000


class Loop:
    """An event loop in a thread, for the fakes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1")
    return env


def timed(command: list[str], cwd: Path = WORK) -> float:
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed:\n{result.stderr[-3000:]}")
    return seconds


def wheels() -> list[Dist]:
    """40 projects, one wheel each, sizes spread like a real lock file's (many small, a few large)."""
    sizes = random.Random(40).choices([40_000, 150_000, 400_000, 1_200_000, 3_000_000, 6_000_000], k=PROJECTS)
    return [build_wheel(f"proj{i:02d}", "1.0", payload_size=size) for i, size in enumerate(sizes)]


def upstream_bytes(server: TunaLikeUpstream, dists: list[Dist]) -> int:
    """Bytes of the files the fake answered whole (its log keeps paths, the sizes are the dists')."""
    size_of = {d.filename: d.size for d in dists}
    return sum(size_of.get(r.path.rsplit("/", 1)[-1], 0) for r in server.requests if r.status == 200)


def pkgcache(*args: str | Path) -> list[str]:
    return [PYTHON, "-m", "pkgcache", *map(str, args)]


def bench_pypi(loop: Loop, rows: list[tuple[str, str, str]]) -> None:
    dists = wheels()
    server = TunaLikeUpstream(dists, strict_ua=False)
    loop.run(server.start())
    try:
        index = server.index_url
        (WORK / "lock.in").write_text("".join(f"{d.project}\n" for d in dists))
        common = ["--index-url", index, "--python-version", "3.11", "--no-cache", "lock.in"]
        timed([UV, "pip", "compile", *common, "--format", "pylock.toml", "-o", "pylock.toml"])
        timed([UV, "pip", "compile", *common, "--generate-hashes", "-o", "requirements.txt"])
        config = WORK / "pypi.toml"
        config.write_text(f'[pypi]\nupstreams = ["{index}"]\n')
        total = sum(d.size for d in dists)
        rows.append(("40-wheel lock file", f"{total / MB:.1f} MB", ""))
        for label, command in (
            ("pkgcache seed (cold)", pkgcache("seed", "--config", config, "--data-dir", "pypi-data", "--no-progress",
                                              "pylock.toml")),
            ("pip download --no-deps", [PYTHON, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
                                        "-d", "pip-dl", "--index-url", index, "-r", "requirements.txt"]),
            ("uv pip install --target", [UV, "pip", "install", "--no-cache", "--no-deps", "--target", "uv-target",
                                         "--python", PYTHON, "--index-url", index, "-r", "requirements.txt"]),
            ("pkgcache seed (all cached)", pkgcache("seed", "--config", config, "--data-dir", "pypi-data",
                                                    "--no-progress", "pylock.toml")),
        ):  # fmt: skip
            server.reset_log()
            seconds = timed(command)
            sent = upstream_bytes(server, dists)
            rows.append((f"  {label}", f"{seconds:.2f} s", f"{sent / MB:.1f} MB from upstream"))
    finally:
        loop.run(server.stop())


def bench_conda(loop: Loop, rows: list[tuple[str, str, str]]) -> None:
    channel = WORK / "channel"
    if not channel.exists():
        build_channel(channel)
    mirror = MirrorLikeUpstream({"conda-forge": channel}, only_json=True)
    loop.run(mirror.start())
    try:
        (WORK / "environment.yml").write_text("name: b\nchannels: [conda-forge]\ndependencies: [app, bigpkg]\n")
        config = WORK / "conda.toml"
        config.write_text(f'[conda]\nupstreams = ["{mirror.url}/anaconda/"]\nchannels = ["cloud/conda-forge"]\n')
        rattler = [PYTHON, str(REPO / "tests/clients/rattler_client.py"), "--channel",
                   mirror.channel_url("conda-forge"), "--prefix", "rattler-env", "--cache-dir", "rattler-cache",
                   "app", "bigpkg"]  # fmt: skip
        rows.append(("conda environment (app tree + 4 MB package)", "", ""))
        for label, command in (
            ("pkgcache seed (cold)", pkgcache("seed", "--config", config, "--data-dir", "conda-data",
                                              "--no-progress", "environment.yml")),
            ("rattler solve + install", rattler),
            ("pkgcache seed (all cached)", pkgcache("seed", "--config", config, "--data-dir", "conda-data",
                                                    "--no-progress", "environment.yml")),
        ):  # fmt: skip
            mirror.reset_log()
            seconds = timed(command)
            packages = sum(1 for r in mirror.requests if r.path.endswith((".conda", ".tar.bz2")))
            rows.append((f"  {label}", f"{seconds:.2f} s", f"{packages} packages from upstream"))
    finally:
        loop.run(mirror.stop())


def synthetic_data_dir(root: Path, gigabytes: float) -> int:
    """Random wheels of FILE_MB each under one project, with the page listing their sha256; total bytes."""
    import hashlib

    from pkgcache.pypi.model import DistFile, ProjectPage
    from pkgcache.pypi.pages import CachedPage

    files_dir = root / "pypi" / "files" / "synthetic"
    files_dir.mkdir(parents=True)
    count = max(1, int(gigabytes * 1000 / FILE_MB))
    listed = []
    for i in range(count):
        name = f"synthetic-{i}.0-py3-none-any.whl"
        data = os.urandom(FILE_MB * MB)
        (files_dir / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        listed.append(DistFile(name, f"http://example.org/{name}", {"sha256": digest}, size=len(data)))
    page = CachedPage(ProjectPage("synthetic", tuple(listed)), "example", time.time())
    (root / "pypi" / "simple" / "synthetic").mkdir(parents=True)
    (root / "pypi" / "simple" / "synthetic" / "page.json").write_text(json.dumps(page.to_json()))
    return count * FILE_MB * MB


def bench_bundle(gigabytes: float, rows: list[tuple[str, str, str]]) -> None:
    source, target, bundle = WORK / "bundle-src", WORK / "bundle-dst", WORK / "bundle.tar"
    for path in (source, target):
        shutil.rmtree(path, ignore_errors=True)
    total = synthetic_data_dir(source, gigabytes)
    subprocess.run(["sync"], check=False)
    rows.append((f"bundle of {total / 1e9:.1f} GB ({total // (FILE_MB * MB)} files)", "", ""))
    seconds = timed(pkgcache("export", "--data-dir", source, "-o", bundle))
    rows.append(("  pkgcache export", f"{seconds:.1f} s", f"{total / MB / seconds:.0f} MB/s"))
    seconds = timed(pkgcache("import", "--data-dir", target, bundle))
    rows.append(("  pkgcache import (checked)", f"{seconds:.1f} s", f"{total / MB / seconds:.0f} MB/s"))
    seconds = timed(["cp", str(bundle), str(WORK / "bundle-copy.tar")])
    rows.append(("  cp of the bundle (for scale)", f"{seconds:.1f} s", f"{total / MB / seconds:.0f} MB/s"))
    for path in (source, target, bundle, WORK / "bundle-copy.tar"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-gb", type=float, default=2.0)
    parser.add_argument("--skip-bundle", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    loop = Loop()
    rows: list[tuple[str, str, str]] = []
    bench_pypi(loop, rows)
    bench_conda(loop, rows)
    if not args.skip_bundle:
        bench_bundle(args.bundle_gb, rows)
    width = max(len(r[0]) for r in rows)
    for label, value, detail in rows:
        print(f"{label:<{width}}  {value:>10}  {detail}")


if __name__ == "__main__":
    main()
