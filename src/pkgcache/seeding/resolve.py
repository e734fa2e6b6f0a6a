"""Turning what the inputs ask for into exact files, with real resolvers that go through pkgcache itself.

- PyPI requirements without hashes: `uv pip compile --format pylock.toml` once per target (platform x Python
  version) against pkgcache's index; the lock it writes names exactly the wheels that target installs (and the
  sdist), read back with `read_inputs`. uv comes from the `seed` extra (the `uv` package) or from PATH.
- PyPI pins with `--hash` values: every file of the pinned version whose hash is listed, from pkgcache's page.
- conda MatchSpecs: py-rattler's solver once per platform (with noarch), on channels served by pkgcache, with
  the target's virtual packages; each record is one file.

Whatever the resolvers read (pages, repodata, shards) they read through pkgcache, so it is cached too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pkgcache.seed.inputs import read_inputs
from pkgcache.seed.model import CondaSpec, PypiFile, PypiRequirement, SeedPlan

from .credentials import Credentials
from .fetch import FetchItem, SeedClient
from .targets import Platform, archspec_build, virtual_packages

UV_TIMEOUT = 900.0
# uv runs again while its locks name projects whose pages were not revalidated before the run; a bound all the same.
MAX_UV_ROUNDS = 4
SOLVE_TIMEOUT = 900.0
# Environment variables that would make uv read another index than pkgcache's, or a user's configuration.
_UV_INDEX_VARIABLES = (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CONFIG_FILE",
    "UV_OFFLINE",
    "UV_INDEX_STRATEGY",
)
# uv's name for pkgcache's index: it reads the index's credentials from UV_INDEX_<NAME>_USERNAME and _PASSWORD.
UV_INDEX_NAME = "pkgcache"
# How uv starts its error when it has no interpreter (and may not download one).
NO_INTERPRETER = "No interpreter found"
UV_USER_VARIABLE = f"UV_INDEX_{UV_INDEX_NAME.upper()}_USERNAME"
UV_PASSWORD_VARIABLE = f"UV_INDEX_{UV_INDEX_NAME.upper()}_PASSWORD"


class ResolverMissing(RuntimeError):
    """A resolver the inputs need is not installed; the message says how to get it."""


@dataclass
class Resolution:
    """Exact files found for the inputs, and what could not be resolved (one line each, with the target)."""

    items: list[FetchItem] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- exact files from lock files --------------------------------------------------------------------------------


def locked_items(plan: SeedPlan) -> list[FetchItem]:
    """The files lock files and `@EXPLICIT` lists name, once each."""
    items = []
    for cache_path, found in plan.distinct_files().items():
        if isinstance(found, PypiFile):
            items.append(FetchItem(cache_path, str(found.origin), found.sha256, found.size, project=str(found.project)))
        else:
            items.append(FetchItem(cache_path, str(found.origin), found.sha256, found.size))
    return items


def conda_index_items(items: Iterable[FetchItem]) -> list[FetchItem]:
    """The index files a conda client asks for in each channel and subdir that packages come from (and the
    channel's noarch): the shard index and repodata.json.zst; pkgcache keeps what it fetches (and makes) for them,
    and remembers a 404, so clients find the same answers when no upstream can be reached."""
    subdirs: set[tuple[str, str]] = set()
    for item in items:
        if item.path.startswith("conda/"):
            channel_path, subdir, _ = item.path.rsplit("/", 2)
            subdirs.update({(channel_path, subdir), (channel_path, "noarch")})
    found = []
    for channel_path, subdir in sorted(subdirs):
        for name in ("repodata_shards.msgpack.zst", "repodata.json.zst"):
            found.append(FetchItem(f"{channel_path}/{subdir}/{name}", "index", kind="index"))
    return found


# --- PyPI -------------------------------------------------------------------------------------------------------


def find_uv() -> str:
    """The uv to resolve with: the `uv` package's (the seed extra), else the one on PATH."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    beside = Path(sys.executable).parent / ("uv.exe" if os.name == "nt" else "uv")
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    raise ResolverMissing(
        "resolving requirements without hashes needs uv: install pkgcache with the seed extra "
        "(pip install '.[seed]' in pkgcache's clone) or put uv on PATH"
    )


def requirements_text(requirements: Sequence[PypiRequirement]) -> tuple[str, str]:
    """The requirements to resolve and the constraints, as two requirements files' text."""
    wanted = [str(r.requirement) for r in requirements if not r.constraint]
    bounds = [str(r.requirement) for r in requirements if r.constraint]
    return "\n".join(wanted) + "\n", "\n".join(bounds) + "\n"


def uv_environment(credentials: Credentials | None = None) -> dict[str, str]:
    """This environment without what would make uv read another index, with the reader's credentials if any
    (here rather than in the index URL, which `ps` shows and uv may print)."""
    own = {*_UV_INDEX_VARIABLES, UV_USER_VARIABLE, UV_PASSWORD_VARIABLE}
    env = {name: value for name, value in os.environ.items() if name.upper() not in own}
    # Never a Python fetched from the internet behind pkgcache's back (uv would, for a --python-version it finds
    # no interpreter of): `uv_command` says so too.
    env["UV_PYTHON_DOWNLOADS"] = "never"
    # pkgcache is on this network (loopback when seed serves it itself): never through a proxy.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost,::1"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if credentials is not None:
        env[UV_USER_VARIABLE], env[UV_PASSWORD_VARIABLE] = credentials.user, credentials.password
    return env


def uv_command(uv: str, index_url: str, platform: Platform, python: str, work: Path) -> list[str]:
    """`uv pip compile` of `work`'s requirements.in and constraints.txt into `uv_output(...)`."""
    return [
        uv, "pip", "compile", str(work / "requirements.in"), "-c", str(work / "constraints.txt"),
        "--format", "pylock.toml", "-o", str(uv_output(platform, python, work)), "--no-header", "--quiet",
        "--no-config", "--default-index", f"{UV_INDEX_NAME}={index_url}",
        "--python-platform", str(platform.uv_platform), "--python-version", python, "--no-python-downloads",
        "--cache-dir", str(work / "uv-cache"),
    ]  # fmt: skip


def no_interpreter_message(python: str) -> str:
    """What to do when uv finds no Python to resolve with (with a Python of another version it warns, resolves
    for `python` all the same, and builds what has no wheel with that one)."""
    return (
        f"uv found no Python interpreter here to resolve for Python {python} with, and pkgcache lets it download "
        f"none (that would bypass pkgcache): install Python {python} where uv finds it (on PATH, or an active "
        f"virtual environment); any Python 3 there will do, as uv resolves for {python} all the same"
    )


def uv_output(platform: Platform, python: str, work: Path) -> Path:
    label = f"{platform.uv_platform}-py{python}".replace(".", "_")  # uv wants no dots in pylock.<name>.toml
    return work / f"pylock.{label}.toml"


async def compile_with_uv(
    uv: str,
    index_url: str,
    requirements: Sequence[PypiRequirement],
    target: tuple[Platform, str],
    work: Path,
    credentials: Credentials | None = None,
) -> SeedPlan | str:
    """One target's resolution as a plan of exact files; or why uv could not make it (its last lines)."""
    platform, python = target
    wanted, bounds = requirements_text(requirements)
    (work / "requirements.in").write_text(wanted)
    (work / "constraints.txt").write_text(bounds)
    process = await asyncio.create_subprocess_exec(
        *uv_command(uv, index_url, platform, python, work),
        env=uv_environment(credentials),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), UV_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"uv did not finish within {UV_TIMEOUT:.0f} s"
    if process.returncode != 0:
        text = stderr.decode(errors="replace")
        if NO_INTERPRETER in text:
            return no_interpreter_message(python)
        lines = [line for line in text.splitlines() if line.strip()]
        return " / ".join(lines[-6:]) or f"uv exited with status {process.returncode}"
    return read_inputs([uv_output(platform, python, work)])


def pylock_items(plan: SeedPlan, target: str, *, with_sdists: bool) -> list[FetchItem]:
    """The files of one target's lock: its wheels, and a project's sdist only when it has no wheel here (or when
    asked for)."""
    with_wheel = {f.project for f in plan.pypi_files if f.is_wheel}
    items = []
    for found in plan.pypi_files:
        if found.is_wheel or with_sdists or found.project not in with_wheel:
            items.append(FetchItem(found.cache_path, target, found.sha256, found.size, project=str(found.project)))
    return items


async def resolve_requirements(
    requirements: Sequence[PypiRequirement],
    client: SeedClient,
    platforms: Sequence[Platform],
    pythons: Sequence[str],
    *,
    with_sdists: bool,
) -> Resolution:
    """Requirements without hashes, resolved by uv for every target against current pages.

    uv reads pages as pkgcache serves them, stale ones included, so every page it resolves against is revalidated
    first, once per seed: those of the requirements before uv runs, and those of the projects its locks add,
    after which uv runs again; until a run adds no project whose page was not revalidated before it.
    """
    resolution = Resolution()
    if not any(not r.constraint for r in requirements):
        return resolution
    uv = find_uv()
    targets = [(p, v) for p in platforms if p.uv_platform for v in pythons]
    skipped = [str(p) for p in platforms if not p.uv_platform]
    if skipped:
        resolution.notes.append(f"no PyPI resolution for {', '.join(skipped)}: uv has no such platform")
    await client.revalidate_pages(str(r.project) for r in requirements if not r.constraint)
    reader = client.credentials
    with tempfile.TemporaryDirectory(prefix="pkgcache-seed-") as work:
        for round_number in range(1, MAX_UV_ROUNDS + 1):
            # A cache of uv's own per round: it would keep a page pkgcache called fresh in the round before.
            index_url, round_work = client.url("pypi/simple/"), Path(work, str(round_number))
            found = await compile_targets(
                uv, index_url, requirements, targets, round_work, with_sdists=with_sdists, credentials=reader
            )
            unseen = {item.project for item in found.items if item.project} - client.pages_read
            if not unseen:
                break
            await client.revalidate_pages(sorted(unseen))
        else:
            found.notes.append(f"uv still found projects with pages not revalidated after {MAX_UV_ROUNDS} runs")
    resolution.items += found.items
    resolution.failures += found.failures
    resolution.notes += found.notes
    return resolution


async def compile_targets(
    uv: str,
    index_url: str,
    requirements: Sequence[PypiRequirement],
    targets: Sequence[tuple[Platform, str]],
    work: Path,
    *,
    with_sdists: bool,
    credentials: Credentials | None = None,
) -> Resolution:
    """One uv run per target, and the files of each target's lock."""
    resolution = Resolution()
    work.mkdir(parents=True, exist_ok=True)
    for platform, python in targets:
        target = f"resolved by uv for {platform} / Python {python}"
        found = await compile_with_uv(uv, index_url, requirements, (platform, python), work, credentials)
        if isinstance(found, str):
            resolution.failures.append(f"{target}: {found}")
            continue
        resolution.failures += [f"{target}: {error}" for error in found.errors]
        resolution.items += pylock_items(found, target, with_sdists=with_sdists)
    return resolution


async def hashed_pin_items(requirements: Sequence[PypiRequirement], client: SeedClient) -> Resolution:
    """Pins with `--hash`: the files of the pinned version whose sha256 is listed, from pkgcache's page."""
    resolution = Resolution()
    for requirement in requirements:
        wanted = {h.partition(":")[2].lower() for h in requirement.hashes if h.lower().startswith("sha256:")}
        files = await client.project_files(requirement.project)
        if isinstance(files, str):
            resolution.failures.append(f"{requirement.origin}: {requirement.requirement}: {files}")
            continue
        matched = [f for f in files.values() if f.sha256 in wanted]
        if not matched:
            resolution.failures.append(
                f"{requirement.origin}: {requirement.requirement}: no file on the page has a listed sha256"
            )
        for found in matched:
            path = f"pypi/files/{requirement.project}/{found.filename}"
            resolution.items.append(
                FetchItem(path, str(requirement.origin), found.sha256, found.size, project=requirement.project)
            )
    return resolution


def split_requirements(plan: SeedPlan) -> tuple[list[PypiRequirement], list[PypiRequirement]]:
    """(pins carrying sha256 hashes, the rest with the constraints) from the plan's requirements."""
    hashed = [
        r
        for r in plan.pypi_requirements
        if not r.constraint and r.pinned_version and any(h.lower().startswith("sha256:") for h in r.hashes)
    ]
    rest = [r for r in plan.pypi_requirements if r not in hashed]
    return hashed, rest


# --- conda ------------------------------------------------------------------------------------------------------


def channel_path(channel: str, configured: Sequence[str]) -> list[str]:
    """pkgcache's path(s) below /conda/ for a channel as an input names it: `conda-forge` -> `cloud/conda-forge`,
    `pkgs/main` as is, `defaults` -> the configured pkgs/ channels, a URL by the channel it points at."""
    if "://" in channel:
        segments = [s for s in urlsplit(channel).path.split("/") if s]
        if "pkgs" in segments[:-1]:
            start = segments.index("pkgs")
            return ["/".join(segments[start : start + 2])]
        if "cloud" in segments[:-1]:
            start = segments.index("cloud")
            return ["cloud/" + "/".join(segments[start + 1 :])]
        if segments and segments[0] == "conda" and len(segments) > 1:  # pkgcache's own /conda/<root>/<name>
            return ["/".join(segments[1:])]
        return ["cloud/" + "/".join(segments)] if segments else []
    if channel == "defaults":
        return [c for c in configured if c.startswith("pkgs/")] or ["pkgs/main", "pkgs/r"]
    if channel.startswith(("pkgs/", "cloud/")):
        return [channel]
    return [f"cloud/{channel}"]


def spec_groups(specs: Sequence[CondaSpec]) -> dict[tuple[tuple[str, ...], tuple[str, ...]], list[CondaSpec]]:
    """Specs solved together: those of one input file share its channels and platforms."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[CondaSpec]] = defaultdict(list)
    for spec in specs:
        groups[(spec.channels, spec.platforms)].append(spec)
    return dict(groups)


def rattler_client(base_url: str, credentials: Credentials | None) -> Any:
    """None (rattler's own client) when pkgcache's reads are open; else a client that sends the reader's
    credentials to pkgcache's host, and to no other."""
    if credentials is None:
        return None
    from rattler.networking import AddHeadersMiddleware, Client, RetryMiddleware

    host, header = _bare_host(urlsplit(base_url).hostname or ""), credentials.header()

    def add_header(request_host: str, _path: str) -> dict[str, str] | None:
        return header if _bare_host(request_host) == host else None

    return Client([RetryMiddleware(), AddHeadersMiddleware(add_header)])


def _bare_host(host: str) -> str:
    # An IPv6 address comes with brackets from one side and without from the other.
    return host.strip("[]").lower()


async def solve_with_rattler(
    channel_urls: Sequence[str], specs: Sequence[str], subdir: str, cache_dir: Path, client: Any = None
) -> list[tuple[str, str | None, int | None]]:
    """(package URL, sha256, size) of every record rattler's solver picks for `subdir` (with noarch), read with
    `client` (a `rattler_client`)."""
    import rattler

    gateway = rattler.Gateway(cache_dir=cache_dir, max_concurrent_requests=8, client=client)
    channels = [rattler.Channel(url) for url in channel_urls]
    virtuals = [
        rattler.GenericVirtualPackage(
            rattler.PackageName(name),
            rattler.Version(version),
            rattler.BuildString(archspec_build(subdir) if name == "__archspec" else "0"),
        )
        for name, version in virtual_packages(subdir)
    ]
    platforms: list[Any] = [subdir, "noarch"]  # names rattler knows (the plan's subdirs are checked against them)
    records = await asyncio.wait_for(
        rattler.solve(channels, list(specs), gateway=gateway, platforms=platforms, virtual_packages=virtuals),
        SOLVE_TIMEOUT,
    )
    return [(str(r.url), r.sha256.hex() if r.sha256 else None, r.size) for r in records]


async def revalidate_subdir(client: SeedClient, channel: str, subdir: str) -> None:
    """Have pkgcache revalidate the index files a solver reads in one subdir of a channel (the shard index, else
    the repodata: the .zst, else the .json), so that it solves against current ones, not stale copies."""
    base = f"conda/{channel}/{subdir}"
    await client.revalidate_index(f"{base}/repodata_shards.msgpack.zst")
    if await client.revalidate_index(f"{base}/repodata.json.zst") == 404:
        await client.revalidate_index(f"{base}/repodata.json")


async def resolve_conda_specs(
    specs: Sequence[CondaSpec],
    client: SeedClient,
    platforms: Sequence[Platform],
    configured_channels: Sequence[str],
    default_channels: Sequence[str],
) -> Resolution:
    """Every group of specs solved by rattler for each of its platforms (the file's own, else the targets)."""
    resolution = Resolution()
    conda_root = client.url("conda/")
    reader = rattler_client(client.base_url, client.credentials)
    with tempfile.TemporaryDirectory(prefix="pkgcache-solve-") as cache_dir:
        for (channels, own_platforms), group in spec_groups(specs).items():
            paths = [p for c in (channels or tuple(default_channels)) for p in channel_path(c, configured_channels)]
            urls = [conda_root + p for p in dict.fromkeys(paths)]
            subdirs = list(own_platforms) or [p.conda_subdir for p in platforms if p.conda_subdir]
            origin = str(group[0].origin.path)
            wanted = {(path, subdir) for path in paths for subdir in [*subdirs, "noarch"]}
            await asyncio.gather(*(revalidate_subdir(client, path, subdir) for path, subdir in sorted(wanted)))
            for subdir in dict.fromkeys(subdirs):
                target = f"solved by rattler for {subdir} ({origin})"
                try:
                    records = await solve_with_rattler(urls, [s.spec for s in group], subdir, Path(cache_dir), reader)
                except Exception as exc:  # rattler raises its own exception types for unsolvable specs and I/O
                    resolution.failures.append(f"{target}: {type(exc).__name__}: {' '.join(str(exc).split())[:600]}")
                    continue
                for url, sha256, size in records:
                    if not url.startswith(conda_root):
                        resolution.failures.append(f"{target}: {url} is not served by pkgcache")
                        continue
                    resolution.items.append(FetchItem("conda/" + url[len(conda_root) :], target, sha256, size))
    return resolution


def unique(items: Iterable[FetchItem]) -> list[FetchItem]:
    """One item per path, the first kept (a file two targets share is fetched once)."""
    found: dict[str, FetchItem] = {}
    for item in items:
        found.setdefault(item.path, item)
    return list(found.values())
