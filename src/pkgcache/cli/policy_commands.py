"""`pkgcache block`, `pkgcache unblock` and `pkgcache policy check|show`: the supply-chain policy on the command line.

Blocks go through the running instance's admin API when one serves the data directory (it answers once every
worker has the block in force, so when the command returns no worker lists or serves the release; its cached files
are purged through the instance, which keeps its size count); with nothing running they are written to the data
directory (`gate/blocks.json`), where the next start reads them.

`policy check` reads requirement and lock files (`pkgcache.seed.inputs`), and says which pins the configured policy
and the blocks in force refuse, and why, without installing anything: exit status 1 when any is refused, for CI.
A lock's pin is judged by the files the lock lists for it, as an installer meets them: refused when no file of it is
allowed (or its version is refused whatever the file); when some are, the others are noted. Release times come from
the cache's pages when it has them; a pin whose time is not known is reported with a note.

Which policy `policy show` and `policy check` use: given `--config FILE`, that file's rules (what it says, running
or not: a file being written is checked before `restart --config` applies it); else the rules of the instance the
options find, as it was launched when `start` recorded that. The blocks are those in force in its data directory.
"""

from __future__ import annotations

import getpass
import os
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import click

from pkgcache.cli.admin_commands import CHANGE_TIMEOUT, call_admin_api, running_instance_url
from pkgcache.cli.locate import Located, locate_instance, require_data_dir
from pkgcache.cli.options import flag_overrides, locate_options, resolve_settings
from pkgcache.config import Settings
from pkgcache.formatting import format_bytes, shell_quote
from pkgcache.gate.blocks import BlockBook, BlockChange, BlocksUnreadable, block_from_target
from pkgcache.gate.purge import blocked_files
from pkgcache.policy.common import Block, from_epoch, parse_block_target, parse_upload_time
from pkgcache.policy.engine import Pin, PinFile, PinVerdict
from pkgcache.policy.pypi import PypiPolicy, normalize_name
from pkgcache.pypi.model import version_of
from pkgcache.seed.inputs import CondaFile, PypiFile, PypiRequirement, SeedPlan, read_inputs
from pkgcache.storage.eviction import remove_entries
from pkgcache.storage.store import CacheStore

EXIT_REFUSED = 1
EXIT_UNREADABLE = 2


def _who() -> str:
    """The person running the command (the one behind sudo, when there is one)."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _side_of(conda: bool) -> str:
    return "conda" if conda else "pypi"


# --- block and unblock ---


@click.command("block")
@locate_options
@click.argument("target")
@click.option("--conda", is_flag=True, help="A conda package (NAME==VERSION matches every build of it).")
@click.option("--reason", default="", help="Why: quoted in every refusal and in the log.")
def block_command(config_file: Path | None, data_dir: Path | None, target: str, conda: bool, reason: str) -> None:
    """Refuse a release now (TARGET is NAME==VERSION, or NAME for every release) and purge its cached files."""
    side = _side_of(conda)
    located = locate_instance("block", config_file, data_dir)
    try:
        made = block_from_target(side, target, _who(), reason)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    url = running_instance_url(located)
    if url is not None:
        query = urlencode({"target": target, "reason": reason, "who": made.who})
        answer = call_admin_api(located, url, f"/-/admin/{side}/block?{query}", timeout=CHANGE_TIMEOUT)
        files, size = int(answer.get("purged_files", 0)), int(answer.get("purged_bytes", 0))
        behind = _workers_behind(answer)
    else:
        files, size = _block_on_disk(located.settings, side, made)
        behind = ""
    everyone = "" if behind else " for everyone"
    click.echo(f"blocked {made.target} ({side}){everyone}{_why(reason)}; purged {_files(files)}, {format_bytes(size)}")
    if behind:
        _not_everywhere("block", behind)


def _workers_behind(answer: dict[str, object]) -> str:
    """The workers an admin answer says have not put the change in force, in words ("" when none)."""
    rows = answer.get("workers_behind")
    if not isinstance(rows, list):
        return ""
    return ", ".join(f"worker {row.get('worker')} (pid {row.get('pid')})" for row in rows if isinstance(row, dict))


def _not_everywhere(action: str, behind: str) -> None:
    """Exit 1: the change is made, but workers of the running instance did not say they have it in force."""
    click.echo(
        f"warning: the {action} is made and in force on the other workers, but {behind} did not say it has it in "
        "force: such a worker may still answer as before it (see its log; `pkgcache restart` starts it again)",
        err=True,
    )
    sys.exit(1)


def _block_on_disk(settings: Settings, side: str, made: Block) -> tuple[int, int]:
    # A mistyped --data-dir would be created and hold a block no instance reads: refuse it, as gc and purge do.
    require_data_dir(settings.server.data_dir)
    if side == "conda":
        from pkgcache.policy.conda import CondaPolicy

        try:
            CondaPolicy(blocks=[made])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
    store = CacheStore(settings.server.data_dir)
    book = BlockBook(store)
    try:
        kept = book.add(side, made)
    except BlocksUnreadable as exc:
        raise click.ClickException(str(exc)) from None
    freed = remove_entries(blocked_files(store, side, made))
    if kept is made:  # the same block already in force is not logged again
        book.record(BlockChange("block", side, made, made.who, freed.files, freed.bytes))
    click.echo("pkgcache is not running: the block is written to the data directory, in force when it starts")
    return freed.files, freed.bytes


@click.command("unblock")
@locate_options
@click.argument("target")
@click.option("--conda", is_flag=True, help="A conda package block.")
def unblock_command(config_file: Path | None, data_dir: Path | None, target: str, conda: bool) -> None:
    """Lift a block made with `pkgcache block` (TARGET as it was blocked)."""
    side = _side_of(conda)
    located = locate_instance("unblock", config_file, data_dir)
    try:
        name, version = parse_block_target(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    url = running_instance_url(located)
    if url is not None:
        query = urlencode({"target": target, "who": _who()})
        path = f"/-/admin/{side}/unblock?{query}"
        behind = _workers_behind(call_admin_api(located, url, path, timeout=CHANGE_TIMEOUT))
        if behind:
            click.echo(f"unblocked {target} ({side})")
            _not_everywhere("unblock", behind)
            return
    else:
        require_data_dir(located.settings.server.data_dir)
        book = BlockBook(CacheStore(located.settings.server.data_dir))
        try:
            removed = book.remove(side, name, version)
        except BlocksUnreadable as exc:
            raise click.ClickException(str(exc)) from None
        if removed is None:
            raise click.ClickException(f"no {side} block of {target} is in force")
        book.record(BlockChange("unblock", side, removed, _who()))
    click.echo(f"unblocked {target} ({side})")


def _why(reason: str) -> str:
    return f" ({reason})" if reason else ""


def _files(count: int) -> str:
    return f"{count} cached file{'s' if count != 1 else ''}"


# --- policy show and check ---


@click.group("policy")
def policy_group() -> None:
    """The supply-chain policy: what it refuses (see docs/policy.md)."""


@policy_group.command("show")
@locate_options
def show_command(config_file: Path | None, data_dir: Path | None) -> None:
    """The rules of both sides (those of --config FILE when given) and the blocks in force."""
    located = locate_instance("policy show", config_file, data_dir)
    settings = policy_settings(located, config_file, data_dir)
    blocks = BlockBook(CacheStore(settings.server.data_dir)).read()
    for side, lines in rules_by_side(settings).items():
        click.echo(f"[{side}]")
        for line in lines or ["(no rule: everything is served)"]:
            click.echo(f"  {line}")
        for made in blocks[side]:
            click.echo(f"  blocked: {made.describe()}")


def rules_by_side(settings: Settings) -> dict[str, list[str]]:
    """The rules of each enabled side, one line each."""
    rules = {}
    if settings.pypi.enabled:
        rules["pypi"] = PypiPolicy(settings.pypi).describe()
    if settings.conda.enabled:
        rules["conda"] = _conda_rules(settings)
    return rules


def policy_settings(located: Located, config_file: Path | None, data_dir: Path | None) -> Settings:
    """The settings whose policy to show or check: `--config FILE`'s when given, since the user named that file
    (the running instance may have been launched with other rules); else those the instance found runs with."""
    if config_file is None:
        return located.settings
    named = resolve_settings(config_file, flag_overrides({"data_dir": data_dir}))
    if located.state.running and rules_by_side(located.settings) != rules_by_side(named):
        click.echo(
            f"note: the pkgcache running on {located.paths.data_dir} enforces other rules than {config_file} "
            f"(`pkgcache policy show --data-dir {shell_quote(located.paths.data_dir)}` shows them; "
            f"`pkgcache restart --config {shell_quote(config_file)}` applies the file's); these are the file's",
            err=True,
        )
    return named


def _conda_rules(settings: Settings) -> list[str]:
    conda = settings.conda
    if not (conda.min_release_age or conda.deny or conda.allow_only):
        return []
    from pkgcache.policy.conda import CondaPolicy

    return CondaPolicy(conda).describe()


@policy_group.command("check")
@locate_options
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_command(config_file: Path | None, data_dir: Path | None, files: tuple[Path, ...]) -> None:
    """Say which pins of requirement or lock FILES the policy refuses, and why (exit 1 if any is).

    Reads requirements files, pylock.toml, uv.lock, poetry.lock, pdm.lock, pixi.lock, conda-lock files, conda
    @EXPLICIT lists and environment.yml.
    """
    located = locate_instance("policy check", config_file, data_dir)
    settings = policy_settings(located, config_file, data_dir)
    plan = read_inputs(files)
    for error in plan.errors:
        click.echo(f"cannot read {error}", err=True)
    if not plan.ok:
        sys.exit(EXIT_UNREADABLE)
    report = PolicyReport(settings)
    report.check(plan)
    sys.exit(EXIT_REFUSED if report.refused else 0)


class PolicyReport:
    """Checks a plan's pins against the policy of `settings` and the blocks in force in its data directory, and
    prints what it finds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = CacheStore(self.settings.server.data_dir)
        self.blocks = BlockBook(self.store).read()
        self.checked = self.files = self.refused = self.noted = 0

    def check(self, plan: SeedPlan) -> None:
        pypi_pins, unpinned = self._pypi_pins(plan)
        if pypi_pins:
            policy = PypiPolicy(self.settings.pypi, self.blocks["pypi"])
            self._report("pypi", policy.check_requirements([pin for pin, _ in pypi_pins]), [w for _, w in pypi_pins])
        for requirement in unpinned:
            self._unpinned(requirement)
        conda_pins = [(self._conda_pin(item), str(item.origin)) for item in plan.conda_files]
        if conda_pins:
            from pkgcache.policy.conda import CondaPolicy

            conda_policy = CondaPolicy(self.settings.conda, self.blocks["conda"])
            verdicts = conda_policy.check_requirements([pin for pin, _ in conda_pins])
            self._report("conda", verdicts, [w for _, w in conda_pins])
        for spec in plan.conda_specs:
            click.echo(f"note     {spec.spec} ({spec.origin}): not pinned; lock it to check it")
            self.noted += 1
        files = f" ({_count(self.files, 'file')})" if self.files else ""
        summary = f"{_count(self.checked, 'pin')} checked{files}: {self.refused} refused"
        click.echo(summary + (f", {self.noted} with notes" if self.noted else ""))

    def _report(self, side: str, verdicts: list[PinVerdict], origins: list[str]) -> None:
        for verdict, origin in zip(verdicts, origins, strict=True):
            self.checked += 1
            pin = verdict.pin
            self.files += len(pin.files) or (1 if pin.filename else 0)
            label = f"{pin.name}=={pin.version}" if side == "pypi" else f"{pin.name}={pin.version}={pin.build or ''}"
            if not verdict.verdict.allowed:
                self.refused += 1
                click.echo(f"REFUSED  {label} ({origin}): {verdict.verdict.message}")
            self.noted += 1 if verdict.notes else 0
            for note in verdict.notes:
                click.echo(f"note     {label} ({origin}): {note}")

    def _pypi_pins(self, plan: SeedPlan) -> tuple[list[tuple[Pin, str]], list[PypiRequirement]]:
        pins = [(self._pypi_pin(items), str(items[0].origin)) for items in _files_by_pin(plan.pypi_files)]
        unpinned: list[PypiRequirement] = []
        for requirement in plan.pypi_requirements:
            version = _exact_version(requirement)
            if version is None:
                if not requirement.constraint:
                    unpinned.append(requirement)
                continue
            pin = Pin(
                requirement.requirement.name,
                version,
                released_at=self._released(requirement.requirement.name, version, None),
            )
            pins.append((pin, str(requirement.origin)))
        return pins, unpinned

    def _pypi_pin(self, items: list[PypiFile]) -> Pin:
        """A pin with the files a lock lists for it, each with its upload time."""
        project, version = items[0].project, _version_of(items[0])
        files = tuple(PinFile(item.filename, self._released(project, version, item.filename)) for item in items)
        return Pin(project, version, files=files)

    def _released(self, project: str, version: str, filename: str | None) -> datetime | None:
        """The upload time the cache's page gives the file (or the version's earliest file), if it has the page."""
        page = self.store.read_json(self.store.path_for("pypi", "simple", normalize_name(project), "page.json"))
        if not isinstance(page, dict):
            return None
        times = []
        for dist in page.get("page", {}).get("files", ()):
            name = dist.get("filename", "")
            if filename is not None and name != filename:
                continue
            if filename is None and _version_from_filename(name) != version:
                continue
            if (when := parse_upload_time(dist.get("upload_time"))) is not None:
                times.append(when)
        return from_epoch(min(times)) if times else None

    def _unpinned(self, requirement: PypiRequirement) -> None:
        name = requirement.requirement.name
        verdict = PypiPolicy(self.settings.pypi, self.blocks["pypi"]).check_project(name)
        self.checked += 1
        if not verdict.allowed:
            self.refused += 1
            click.echo(f"REFUSED  {requirement.requirement} ({requirement.origin}): {verdict.message}")
        else:
            self.noted += 1
            click.echo(
                f"note     {requirement.requirement} ({requirement.origin}): not pinned; only rules on the "
                "whole project were checked"
            )

    @staticmethod
    def _conda_pin(item: CondaFile) -> Pin:
        stem = item.filename.removesuffix(".conda").removesuffix(".tar.bz2")
        name_version, _, build = stem.rpartition("-")
        name, _, version = name_version.rpartition("-")
        channel = item.channel if item.channel.startswith("pkgs/") else f"cloud/{item.channel}"
        return Pin(name, version, filename=item.filename, build=build, channel=channel)


def _files_by_pin(items: list[PypiFile]) -> list[list[PypiFile]]:
    """A lock's files grouped by the package entry that lists them (a pin: its wheels and sdist, of which an
    installer takes one), in the order they come. A file listed apart (a pixi or conda-lock entry, which one
    platform installs as it is) is a pin of its own."""
    pins: dict[tuple[object, ...], list[PypiFile]] = {}
    for item in items:
        key = (item.origin, item.project, _version_of(item), item.platforms, item.environments)
        pins.setdefault(key, []).append(item)
    return list(pins.values())


def _version_of(item: PypiFile) -> str:
    return item.version or _version_from_filename(item.filename) or ""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _exact_version(requirement: PypiRequirement) -> str | None:
    specs = list(requirement.requirement.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return specs[0].version
    return None


def _version_from_filename(filename: str) -> str | None:
    return version_of(filename)
