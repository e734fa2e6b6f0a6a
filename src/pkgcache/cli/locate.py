"""Which instance a command means, and how to talk to it.

Given `--config` or `--data-dir` (or `PKGCACHE_SERVER__DATA_DIR`), a command means the instance of that data
directory, as always. `restart` is the exception for `--config`: there the file names the settings to apply, not
the instance, so a file that sets no `data_dir` leaves the instance to be found as below. Given neither, it means
the instance running on the default data directory if there is one, else the one running instance among those
this account started (`daemon.registry`); when several run, the user must name one. An instance launched by
`start` is talked to with the settings it was launched with (its admin token, its users), read from its launch
record; any other with the settings the options resolve to. Run as root on a data directory another user owns,
the command then acts as that user (`owner`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from pkgcache.cli.options import flag_overrides, resolve_settings
from pkgcache.cli.owner import act_as_data_dir_owner
from pkgcache.config import ConfigError, Settings
from pkgcache.daemon.files import InstancePaths
from pkgcache.daemon.launch_record import read_launch_record
from pkgcache.daemon.lock import InstanceState, inspect_instance
from pkgcache.daemon.registry import registry_path, remembered
from pkgcache.daemon.status_client import local_url
from pkgcache.formatting import shell_quote
from pkgcache.seeding.credentials import reader_credentials
from pkgcache.storage.eviction import holds_cache

DATA_DIR_VARIABLE = "PKGCACHE_SERVER__DATA_DIR"
GATE_AREA = "gate"  # where the data directory keeps its blocks (gate/blocks.json)


@dataclass(frozen=True)
class Located:
    """The instance a command means: what its pid file says, and the settings to talk to it with."""

    command: str  # the command asking, for examples of how to name an instance
    state: InstanceState
    settings: Settings
    # How the user said which data directory ("--data-dir", the environment variable, "--config"), rather than
    # leaving it to us; None when they did not.
    named_by: str | None = None

    @property
    def named(self) -> bool:
        return self.named_by is not None

    @property
    def paths(self) -> InstancePaths:
        return self.state.paths

    @property
    def url(self) -> str:
        """Where this machine reaches it: the address it runs at, else the configured one."""
        server = self.settings.server
        return local_url(self.state.host or server.host, self.state.port or server.port)

    def others_remembered(self) -> list[Path]:
        """The data directories of the other instances this account started."""
        return [entry.data_dir for entry in remembered() if entry.data_dir != self.paths.data_dir]

    def where_to_look(self) -> list[str]:
        """For a "not running" answer given no directory: where the user's instances are, or how to name one."""
        if self.named:
            return []
        others = self.others_remembered()
        if others:
            lines = ["pkgcache instances this account started (none of them running now):"]
            lines += [f"  pkgcache {self.command} --data-dir {shell_quote(data_dir)}" for data_dir in others]
            return lines
        return [
            "if it was started with --data-dir or --config, give the same option here "
            f"(instances started with `pkgcache start` are remembered in {registry_path()})"
        ]


class SeveralInstances(click.ClickException):
    """Given no directory, and more than one instance of this account runs: the user must name one."""

    def __init__(self, command: str, states: list[InstanceState]) -> None:
        lines = [f"{len(states)} pkgcache instances started from this account are running; name one:"]
        for state in states:
            at = f", {local_url(state.host, state.port)}/" if state.host is not None and state.port else ""
            lines.append(f"  pkgcache {command} --data-dir {shell_quote(state.paths.data_dir)}   (pid {state.pid}{at})")
        super().__init__("\n".join(lines))
        self.states = states


def locate_instance(
    command: str, config_file: Path | None, data_dir: Path | None, *, config_names_instance: bool = True
) -> Located:
    """The instance `pkgcache COMMAND` means (see the module's docstring); SeveralInstances when that is unclear.

    `config_names_instance=False` (for `restart`): a config file names an instance only by the data_dir it sets.
    """
    located = _locate(command, config_file, data_dir, config_names_instance)
    # Run as root on another user's data directory (the service's), a command becomes that user before it writes
    # anything there: root-owned files would make the service fail to write (owner.py).
    act_as_data_dir_owner(located.paths.data_dir)
    return located


def _locate(command: str, config_file: Path | None, data_dir: Path | None, config_names_instance: bool) -> Located:
    settings = resolve_settings(config_file, flag_overrides({"data_dir": data_dir}))
    state = inspect_instance(InstancePaths(settings.server.data_dir))
    named_by = _named_by(settings, config_file, data_dir, config_names_instance)
    if named_by is not None or state.running or state.foreign:
        return Located(command, state, _as_launched(state, settings), named_by)
    running = running_elsewhere(settings.server.data_dir)
    if len(running) > 1:
        raise SeveralInstances(command, running)
    if running:
        found = running[0]
        fallback = resolve_settings(config_file, {"server": {"data_dir": str(found.paths.data_dir)}})
        return Located(command, found, _as_launched(found, fallback))
    return Located(command, state, settings)


def _named_by(settings: Settings, config_file: Path | None, data_dir: Path | None, config_names: bool) -> str | None:
    if data_dir is not None:
        return "--data-dir"
    if _data_dir_in_environment():
        return DATA_DIR_VARIABLE
    # Set by the file itself (pydantic counts a field as set when a source gave it), or any file, as the caller says.
    if config_file is not None and (config_names or "data_dir" in settings.server.model_fields_set):
        return "--config"
    return None


def require_cache(data_dir: Path) -> None:
    """Refuse, in one line, a data directory that is not there or holds no cache: working on it would report
    success on nothing (a typo'd --data-dir, or a default directory that is not where the cache is)."""
    if not data_dir.is_dir():
        raise click.ClickException(f"data directory {data_dir} does not exist")
    if not holds_cache(data_dir):
        raise click.ClickException(f"data directory {data_dir} holds no pkgcache cache (nothing cached there yet)")


def require_data_dir(data_dir: Path) -> None:
    """As `require_cache`, for commands that write the data directory's own records (blocks): one that holds
    blocks and nothing cached yet is a data directory too."""
    if (data_dir / GATE_AREA).is_dir():
        return
    require_cache(data_dir)


def read_auth_headers(settings: Settings) -> dict[str, str]:
    """Basic auth with the first configured reader, for when reads (status included) require it."""
    credentials = reader_credentials(settings)
    return credentials.header() if credentials is not None else {}


def _as_launched(state: InstanceState, settings: Settings) -> Settings:
    """The settings a running instance was launched with, when `start` recorded them; else `settings`."""
    if not state.running or state.settings_file is None:
        return settings
    try:
        return read_launch_record(state.settings_file).settings
    except ConfigError:
        return settings  # unreadable (another user's) or from another version: the options are the best guess


def running_elsewhere(default_dir: Path) -> list[InstanceState]:
    """The running instances this account started, other than the one on `default_dir`."""
    states = (inspect_instance(InstancePaths(entry.data_dir)) for entry in remembered())
    return [state for state in states if state.running and state.paths.data_dir != default_dir]


def _data_dir_in_environment() -> bool:
    # pydantic-settings reads environment names without regard to case.
    return any(name.upper() == DATA_DIR_VARIABLE for name in os.environ)
