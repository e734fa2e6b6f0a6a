"""`pkgcache seed`: fill the cache from what a team uses, through pkgcache, and say what happened.

`run_seed(plan, ...)` turns a `SeedPlan` into exact files (`resolve`), fetches them through a pkgcache
(`fetch`), and returns a `SeedReport`: fetched, already cached, failed with why, and what the inputs said that
cannot be seeded. The pkgcache to go through is given by URL (the command serves one itself when none runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from pkgcache.config import Settings
from pkgcache.seed.model import SeedPlan

from .credentials import Credentials
from .fetch import FetchItem, Outcome, PageFile, SeedClient, SeedProgress
from .resolve import (
    Resolution,
    conda_index_items,
    hashed_pin_items,
    locked_items,
    resolve_conda_specs,
    resolve_requirements,
    split_requirements,
    unique,
)
from .targets import Platform

DEFAULT_CONDA_CHANNELS = ("conda-forge",)


@dataclass(frozen=True)
class SeedOptions:
    platforms: tuple[Platform, ...]
    pythons: tuple[str, ...]
    jobs: int = 4
    with_sdists: bool = False
    conda_channels: tuple[str, ...] = DEFAULT_CONDA_CHANNELS
    progress: bool = True


@dataclass
class SeedReport:
    outcomes: list[Outcome] = field(default_factory=list)
    input_errors: list[str] = field(default_factory=list)
    resolve_failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Pages and index files no upstream could revalidate: what was resolved against them may not be current.
    cached_copies: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def files(self, state: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.item.kind == "file" and o.state == state]

    @property
    def index_failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.item.kind == "index" and o.state == "failed"]

    @property
    def ok(self) -> bool:
        return not (self.files("failed") or self.input_errors or self.resolve_failures or self.index_failures)

    @property
    def bytes_fetched(self) -> int:
        # A file pkgcache fetched during the run (for the resolver) came to the seed over no HTTP: its size counts.
        return sum(o.transferred or o.size or o.item.size or 0 for o in self.files("fetched"))

    @property
    def bytes_cached(self) -> int:
        return sum(o.size or o.item.size or o.transferred for o in self.files("cached"))

    def as_record(self, inputs: Sequence[str]) -> dict[str, object]:
        """What the kit record keeps of this seed (the page at / shows it)."""
        return {
            "inputs": list(inputs),
            "fetched": len(self.files("fetched")),
            "cached": len(self.files("cached")),
            "failed": len(self.files("failed")) + len(self.resolve_failures) + len(self.input_errors),
            "bytes": self.bytes_fetched,
            "seconds": round(self.seconds, 1),
        }


async def run_seed(
    plan: SeedPlan,
    base_url: str,
    settings: Settings,
    options: SeedOptions,
    *,
    data_dir: Path | None,
    credentials: Credentials | None = None,
    console: Console | None = None,
) -> SeedReport:
    """Resolve and fetch everything `plan` asks for through the pkgcache at `base_url` (as `credentials`' user,
    when its reads need one)."""
    console = console or Console(stderr=True)
    report = SeedReport(
        input_errors=[str(e) for e in [*plan.errors, *plan.hash_conflicts()]],
        skipped=[f"{s.origin}: {s.what}: {s.reason}" for s in plan.skipped],
    )
    if plan.pypi_options:
        report.notes.append("index options in requirements files are not followed: everything goes through pkgcache")
    async with SeedClient(
        base_url, data_dir=data_dir, jobs=options.jobs, credentials=credentials, console=console
    ) as client:
        found = await _resolve_everything(plan, client, settings, options, console)
        report.resolve_failures += found.failures
        report.notes += found.notes
        files = unique(found.items)
        with SeedProgress(console, enabled=options.progress) as progress:
            await _read_pages_first(files, client)
            checked = [_checked_against_page(item, await _page_of(item, client)) for item in files]
            ready = [item for item in checked if isinstance(item, FetchItem)]
            report.outcomes += [item for item in checked if isinstance(item, Outcome)]
            report.outcomes += await client.fetch_all(ready, progress)
            report.outcomes += await client.fetch_all(conda_index_items(ready), progress)
        report.seconds = client.stats.seconds
        report.cached_copies = list(dict.fromkeys(client.cached_copies))
    return report


async def _resolve_everything(
    plan: SeedPlan, client: SeedClient, settings: Settings, options: SeedOptions, console: Console
) -> Resolution:
    found = Resolution(items=locked_items(plan))
    hashed, rest = split_requirements(plan)
    if hashed:
        more = await hashed_pin_items(hashed, client)
        found.items += more.items
        found.failures += more.failures
    if any(not r.constraint for r in rest):
        targets = ", ".join(f"{p} / {v}" for p in options.platforms for v in options.pythons)
        console.print(f"resolving {len(rest)} PyPI requirements with uv for {targets}")
        more = await resolve_requirements(
            rest, client, options.platforms, options.pythons, with_sdists=options.with_sdists
        )
        _merge(found, more)
    if plan.conda_specs:
        console.print(f"solving {len(plan.conda_specs)} conda specs with rattler")
        more = await resolve_conda_specs(
            plan.conda_specs,
            client,
            options.platforms,
            settings.conda.channels,
            options.conda_channels,
        )
        _merge(found, more)
    return found


def _merge(into: Resolution, more: Resolution) -> None:
    into.items += more.items
    into.failures += more.failures
    into.notes += more.notes


async def _read_pages_first(items: Sequence[FetchItem], client: SeedClient) -> None:
    """Every PyPI project's page, before its files: pkgcache learns where each file is and what it must hash to,
    and the sizes it lists make the progress bar's total."""
    projects = {item.project for item in items if item.project}
    await asyncio.gather(*(client.project_files(project) for project in projects))


async def _page_of(item: FetchItem, client: SeedClient) -> dict[str, PageFile] | str | None:
    return await client.project_files(item.project) if item.project else None


def _checked_against_page(item: FetchItem, files: dict[str, PageFile] | str | None) -> FetchItem | Outcome:
    """The item with the size and sha256 the page lists when the input had none; a failed outcome when the page
    could not be read, does not list the file, or lists another sha256 than the input."""
    if item.project is None:
        return item
    if isinstance(files, str) or files is None:
        return Outcome(item, "failed", reason=files or "no page")
    listed = files.get(item.filename)
    if listed is None:
        return Outcome(item, "failed", reason=f"pkgcache's page of {item.project} does not list it")
    if item.sha256 and listed.sha256 and listed.sha256 != item.sha256:
        return Outcome(item, "failed", reason=f"the index lists sha256 {listed.sha256}, the input {item.sha256}")
    return FetchItem(
        item.path, item.origin, item.sha256 or listed.sha256, item.size or listed.size, item.project, item.kind
    )
