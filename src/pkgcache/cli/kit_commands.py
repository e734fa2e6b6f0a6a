"""`seed`, `export` and `import`: the offline kit (filling a cache from lock files, carrying it across an air gap).

`seed` goes through the running instance the options name (found as `status` finds it), or `--url`, or else
serves the data directory itself for the length of the seed. `export` reads the data directory of the instance
the options name (found the same way), `import` writes into the data directory the options give.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from pkgcache.bundle.manifest import kind_of
from pkgcache.cli.locate import locate_instance, read_auth_headers, require_cache
from pkgcache.cli.options import locate_options
from pkgcache.config import Settings
from pkgcache.daemon.errors import DaemonError
from pkgcache.daemon.status_client import get_json
from pkgcache.formatting import format_bytes
from pkgcache.kit_record import add_kit_entry, last_baseline, last_entry
from pkgcache.seeding.credentials import reader_credentials

if TYPE_CHECKING:
    from pkgcache.seeding.run import SeedReport

# What the data directory held at the last baseline export (`moves_baseline`), for `export --since last`.
KNOWN_FILES = "pkgcache.exported.txt.gz"
# How long `import` waits for a running instance's workers to say they act on it (each looks every 0.5 s and
# reports once a second: gate/state.py, workers/shared_counters.py), and how often it asks.
IMPORT_PICKUP_TIMEOUT = 15.0
IMPORT_PICKUP_POLL = 0.2
# Failures listed one a line before "... and N more".
LISTED_FAILURES = 50


@click.command()
@locate_options
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="NAME",
    help="A target platform: a conda subdir (linux-64, linux-aarch64, osx-64, osx-arm64, win-64) or a uv "
    "--python-platform name; repeat for several (default: this machine's).",
)
@click.option(
    "--python",
    "pythons",
    multiple=True,
    metavar="VERSION",
    help="A target Python version for requirements resolved by uv (3.11...); repeat for several "
    "(default: this interpreter's).",
)
@click.option("--channel", "channels", multiple=True, help="conda channel for specs whose file names none.")
@click.option("--jobs", "-j", type=click.IntRange(1, 32), default=4, show_default=True, help="Files fetched at once.")
@click.option("--with-sdists", is_flag=True, help="Also fetch sdists of resolved projects that have wheels.")
@click.option("--url", help="Seed through the pkgcache at this URL (default: the instance the options name).")
@click.option("--no-progress", is_flag=True, help="No progress bars (the summary is still printed).")
def seed(
    inputs: tuple[Path, ...],
    platforms: tuple[str, ...],
    pythons: tuple[str, ...],
    channels: tuple[str, ...],
    jobs: int,
    with_sdists: bool,
    url: str | None,
    no_progress: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Fill the cache with what INPUTS name: requirements files, pylock.toml, uv.lock, poetry.lock, pdm.lock,
    pixi.lock, conda-lock.yml, environment.yml, conda @EXPLICIT and spec lists.

    Locked files are fetched as they are; unpinned requirements are resolved by uv and conda specs by rattler,
    through pkgcache, for each --platform and --python. What is cached already is skipped: run it again to fetch
    what failed. Exit status 1 when anything failed."""
    from pkgcache.seed import read_inputs
    from pkgcache.seeding.resolve import ResolverMissing
    from pkgcache.seeding.run import DEFAULT_CONDA_CHANNELS, SeedOptions, run_seed
    from pkgcache.seeding.targets import (
        UnknownPlatform,
        check_python_version,
        parse_platform,
        this_platform,
        this_python,
    )

    try:
        targets = tuple(parse_platform(p) for p in platforms) or (this_platform(),)
        versions = tuple(check_python_version(v) for v in pythons) or (this_python(),)
    except (UnknownPlatform, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    options = SeedOptions(
        targets, versions, jobs, with_sdists, channels or DEFAULT_CONDA_CHANNELS, progress=not no_progress
    )
    console = Console(stderr=True)
    _log_through(console)
    plan = read_inputs(inputs)
    located = locate_instance("seed", config_file, data_dir)
    settings = located.settings

    # pkgcache's reads may need a user: seed's requests, uv's and rattler's go as the first configured reader,
    # also through the server seed starts itself (loopback, which every account on the machine reaches).
    reader = reader_credentials(settings)

    async def go() -> SeedReport:
        if url is not None:
            return await run_seed(plan, url, settings, options, data_dir=None, console=console)
        if located.state.running:
            console.print(f"seeding through the running pkgcache at {located.url}/")
            local = located.paths.data_dir
            return await run_seed(
                plan, located.url, settings, options, data_dir=local, credentials=reader, console=console
            )
        console.print(f"no pkgcache runs on {settings.server.data_dir}: serving it here for the seed")
        async with serving_in_process(settings) as own_url:
            local = settings.server.data_dir
            return await run_seed(plan, own_url, settings, options, data_dir=local, credentials=reader, console=console)

    try:
        report = asyncio.run(go())
    except ResolverMissing as exc:
        raise click.ClickException(str(exc)) from None
    except DaemonError as exc:
        raise click.ClickException(str(exc)) from None
    _print_seed_report(report, console)
    if url is None:
        add_kit_entry(located.paths.data_dir, "seed", report.as_record([str(p) for p in inputs]))
    sys.exit(0 if report.ok else 1)


@contextlib.asynccontextmanager
async def serving_in_process(settings: Settings) -> AsyncIterator[str]:
    """pkgcache on a loopback port of its own for the length of the block; yields its URL.

    Holds the data directory's lock meanwhile, so no `pkgcache serve` starts on it (and fails if one runs).
    """
    from aiohttp import web

    from pkgcache.daemon.files import InstancePaths
    from pkgcache.daemon.lock import InstanceLock
    from pkgcache.service.app import create_app

    lock = InstanceLock(InstancePaths(settings.server.data_dir))
    lock.acquire()
    try:
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
    finally:
        lock.release()


def _log_through(console: Console) -> None:
    """pkgcache's warnings (a mirror failing, a file refused) printed above the progress bars, not through them."""
    from rich.logging import RichHandler

    logger = logging.getLogger("pkgcache")
    logger.addHandler(RichHandler(console=console, show_path=False, show_time=False, markup=False))
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _print_seed_report(report: SeedReport, console: Console) -> None:
    fetched, cached, failed = report.files("fetched"), report.files("cached"), report.files("failed")
    console.print(
        f"[bold]seed:[/bold] {len(fetched)} fetched ({format_bytes(report.bytes_fetched)}), "
        f"{len(cached)} already cached ({format_bytes(report.bytes_cached)}), {len(failed)} failed, "
        f"in {report.seconds:.1f} s"
    )
    for note in report.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    _print_list(
        console, "resolved against pkgcache's cached copies (no upstream could revalidate them)", report.cached_copies
    )
    _print_list(console, "could not be read", report.input_errors)
    _print_list(console, "could not be resolved", report.resolve_failures)
    _print_list(console, "failed", [f"{o.item.path} ({o.item.origin}): {o.reason}" for o in failed])
    _print_list(console, "index files failed", [f"{o.item.path}: {o.reason}" for o in report.index_failures])
    _print_list(console, "skipped (not on a package index)", report.skipped)


def _print_list(console: Console, title: str, lines: list[str]) -> None:
    if not lines:
        return
    console.print(f"[bold]{title}[/bold] ({len(lines)}):")
    for line in lines[:LISTED_FAILURES]:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if len(lines) > LISTED_FAILURES:
        console.print(f"  ... and {len(lines) - LISTED_FAILURES} more")


def moves_baseline(since: str | None, from_inputs: tuple[Path, ...]) -> bool:
    """Whether an export is one `--since last` counts from: it carries everything (no option), or everything new
    since the last such export (`--since last`). A selection by lock file, or since a date, may leave out files
    that no bundle carried yet: after one, `--since last` still counts from the export before."""
    return not from_inputs and since in (None, "last")


def parse_since(value: str | None, data_dir: Path) -> float | None:
    """`--since`: an ISO date or time (local time when no zone is given), or `last` (the time of the last export
    that moved the baseline)."""
    if value is None:
        return None
    if value == "last":
        entry = last_baseline(data_dir)
        if entry is None:
            raise click.BadParameter(_no_baseline(data_dir), param_hint="--since")
        return float(entry["at"])
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date like 2026-11-30 or 2026-11-30T08:00", param_hint="--since"
        ) from None


def _no_baseline(data_dir: Path) -> str:
    if last_entry(data_dir, "export") is None:
        return "no export of this data directory is recorded yet"
    return (
        "no export of everything from this data directory is recorded yet (exports with --from or --since DATE "
        "carry a selection): export it without them first"
    )


@click.command("export")
@locate_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="The bundle to write (a tar file; - for standard output).",
)
@click.option(
    "--since",
    metavar="DATE|last",
    help="Only what was added since this date or time (2026-11-30, 2026-11-30T08:00), or since the last export "
    "of everything (one with no option, or with --since last; not one with --from or --since DATE).",
)
@click.option(
    "--from",
    "from_inputs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Only the files this lock file names (repeatable).",
)
def export_command(
    output: Path, since: str | None, from_inputs: tuple[Path, ...], config_file: Path | None, data_dir: Path | None
) -> None:
    """Write cached packages, with the pages and repodata that serve them, into one bundle file with a manifest
    (every file's path, size and sha256). Exit status 1 when a file a lock file names is not in the cache."""
    from pkgcache.bundle.exporting import ExportError, build_manifest, export_to
    from pkgcache.bundle.selection import (
        known_files,
        read_known_files,
        select_all,
        select_named,
        select_since,
        write_known_files,
    )

    # The instance the other commands would find (its data directory, not the default one), and it must hold a
    # cache: an empty bundle of a typo'd directory would be carried across the air gap for nothing.
    directory = locate_instance("export", config_file, data_dir).paths.data_dir
    require_cache(directory)
    started = time.time()
    since_time = parse_since(since, directory)
    known = read_known_files(directory / KNOWN_FILES) if since == "last" else None
    baseline = moves_baseline(since, from_inputs)
    # What arrives during the export goes in the next one.
    present_at_start = known_files(directory) if baseline else []
    console = Console(stderr=True)
    if from_inputs:
        selection = select_named(directory, from_inputs)
        if since_time is not None:
            recent = select_since(directory, since_time, known).paths
            selection.paths = {p for p in selection.paths if kind_of(p) != "package" or p in recent}
    elif since_time is not None:
        selection = select_since(directory, since_time, known)
    else:
        selection = select_all(directory)
    inputs = [str(p) for p in from_inputs]
    try:
        manifest = build_manifest(directory, selection.paths, since=since_time, inputs=inputs)
        destination = None if str(output) == "-" else output
        with _byte_progress(console, "writing", manifest.total_bytes) as advance:
            result = export_to(directory, manifest, destination, advance)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    packages = [e for e in manifest.files if e.kind == "package"]
    speed = manifest.total_bytes / result.seconds if result.seconds > 0 else 0
    console.print(
        f"[bold]export:[/bold] {len(packages)} packages ({format_bytes(sum(e.size for e in packages))}) and "
        f"{len(manifest.files) - len(packages)} index and metadata files, {format_bytes(manifest.total_bytes)} "
        f"in all, from {directory} to {output} in {result.seconds:.1f} s ({format_bytes(int(speed))}/s)",
        soft_wrap=True,  # one line whatever the paths' length, as scripts and logs read it
    )
    # The manifest inside finds damage, not tampering: this digest, carried apart, lets import check the whole.
    console.print(f"sha256 {result.sha256} (check it inside with: pkgcache import --sha256 HEX BUNDLE)", soft_wrap=True)
    _print_list(console, "named but not in the cache (seed them first)", selection.missing)
    _print_list(
        console, "not exact files, left out (resolve them with seed, then export --since)", selection.unsupported
    )
    entry = {
        "bundle": str(output),
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
        "since": since_time,
        "sha256": result.sha256,
        "baseline": baseline,
    }
    add_kit_entry(directory, "export", {**entry, "inputs": inputs}, at=started)
    if baseline:
        write_known_files(present_at_start, directory / KNOWN_FILES)
    sys.exit(1 if selection.missing else 0)


@click.command("import")
@locate_options
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--sha256",
    "sha256",
    metavar="HEX",
    help="The bundle's sha256 as export printed it, carried apart: a bundle that is not that one is refused whole.",
)
def import_command(bundle: Path, sha256: str | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Merge a bundle into the data directory. Every file is checked against the manifest and its index (a package
    against its page's or repodata's sha256) before it is moved into place; nothing good is replaced by anything
    bad. Exit status 1, with a report per file, when any file in the bundle fails its check."""
    from pkgcache.bundle.digests import BundleDigestError, parse_sha256
    from pkgcache.bundle.importing import BundleUnreadable, import_bundle

    try:
        wanted = None if sha256 is None else parse_sha256(sha256)
    except BundleDigestError as exc:
        raise click.BadParameter(str(exc), param_hint="--sha256") from None

    console = Console(stderr=True)
    from_stdin = str(bundle) == "-"
    total = None if from_stdin else bundle.stat().st_size
    try:
        with contextlib.ExitStack() as stack:
            # Opened first: run as root on the service's data directory, the command goes on as that directory's
            # owner (locate_instance), who may not be allowed to read a bundle root can read.
            source = sys.stdin.buffer if from_stdin else stack.enter_context(bundle.open("rb"))
            # Into the running instance's data directory when none is named, as export reads it: a bundle merged
            # into the default directory while the service serves another would look imported and never be served.
            located = locate_instance("import", config_file, data_dir)
            directory = located.paths.data_dir
            advance = stack.enter_context(_byte_progress(console, "importing", total))
            report = import_bundle(source, directory, advance, sha256=wanted)
    except BundleUnreadable as exc:
        raise click.ClickException(f"{bundle}: {exc}") from None
    not_taken = f"{len(report.not_taken)} not taken (made or fetched again here when asked for), "
    console.print(
        f"[bold]import:[/bold] {len(report.added)} files added ({format_bytes(report.added_bytes)}), "
        f"{len(report.replaced)} index files updated, {len(report.present)} already here, "
        f"{not_taken if report.not_taken else ''}"
        f"{len(report.failed)} refused, into {directory}, in {report.seconds:.1f} s",
        soft_wrap=True,  # one line whatever the paths' length
    )
    added_packages = [e.path for e in report.added if e.kind == "package"]
    _print_list(console, "packages added", added_packages)
    _print_list(console, "refused", [f"{path}: {why}" for path, why in report.failed])
    _print_list(
        console,
        "damaged here, could not be read: replaced by the merged index (or removed)",
        [f"{path}: {why}" for path, why in report.repaired],
    )
    _print_list(
        console,
        "WARNING: added, but no page or repodata kept here lists them (no client can install them; import a "
        "bundle whose index lists them)",
        report.unlisted,
    )
    add_kit_entry(directory, "import", report.as_record(str(bundle)))
    if report.mark and (located.state.running or located.state.foreign):
        _wait_for_pickup(console, located.url, read_auth_headers(located.settings), report.mark, directory)
    sys.exit(0 if report.ok else 1)


def _wait_for_pickup(console: Console, url: str, headers: dict[str, str], mark: int, directory: Path) -> None:
    """Wait until every worker of the instance running on `directory` says it has acted on the import's mark
    (`/-/status`), bounded; say which did not."""
    deadline = time.monotonic() + IMPORT_PICKUP_TIMEOUT
    behind: list[str] = []
    while True:
        try:
            behind = workers_behind(get_json(url + "/-/status", timeout=2.0, headers=headers), mark)
        except (DaemonError, OSError, http.client.HTTPException) as exc:
            behind = [f"its status could not be read ({exc})"]
        if not behind or time.monotonic() >= deadline:
            break
        time.sleep(IMPORT_PICKUP_POLL)
    if not behind:
        console.print(f"the pkgcache running on {directory} serves what was imported now", soft_wrap=True)
        return
    console.print(
        f"[yellow]warning:[/yellow] the pkgcache running on {directory} did not say within "
        f"{IMPORT_PICKUP_TIMEOUT:.0f} s that it serves what was imported: {'; '.join(behind)}; such a worker "
        "may serve what it held before the import until it notices (or until `pkgcache restart`)",
        soft_wrap=True,
    )


def workers_behind(status: dict[str, object], mark: int) -> list[str]:
    """The workers in a `/-/status` answer that have not yet acted on import mark `mark`, each described."""
    rows = status.get("workers")
    if not isinstance(rows, list):  # one process, no workers
        return [] if status.get("import_mark") == mark else ["the service has not looked yet"]
    return [
        f"worker {row.get('index')} (pid {row.get('pid')}) has not looked yet"
        for row in rows
        if isinstance(row, dict) and row.get("import_mark") != mark
    ]


@contextlib.contextmanager
def _byte_progress(console: Console, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar of bytes (with speed and time left) for export and import; yields the function that advances it.
    None in a log or a pipe (not a terminal): the summary line says it all there."""
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda amount: progress.advance(task, amount)
        # Done: whole. (An import counts the files' bytes, not the tar's headers and padding, which `total` holds.)
        progress.update(task, completed=total)
