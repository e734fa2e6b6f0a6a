"""`serve`, `start`, `stop` and `restart`: running the service in the foreground or in the background.

`start` resolves the settings once (flags, configuration file, environment), records them in the data directory
(`daemon.launch_record`) and launches `serve --settings-file` on that record; `restart` launches the same record
again, with any options it is given laid over it.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from pkgcache import __version__, clients
from pkgcache.cli.locate import Located, locate_instance, read_auth_headers, running_elsewhere
from pkgcache.cli.options import (
    SECONDS,
    absolute,
    flag_overrides,
    flags_as_options,
    locate_options,
    merge_flags,
    resolve_settings,
    restart_options,
    serve_options,
    settings_from_options,
)
from pkgcache.cli.owner import act_as_data_dir_owner
from pkgcache.config import ConfigError, Settings, record_settings, settings_from_record
from pkgcache.daemon.errors import AlreadyRunning, DaemonError, ServesElsewhere, StartInProgress, Unhealthy
from pkgcache.daemon.files import InstancePaths, file_size
from pkgcache.daemon.launch_record import LaunchRecord, read_launch_record, write_launch_record
from pkgcache.daemon.lifecycle import abandon, port_problem, spawn_service, stop_process, wait_until_ready
from pkgcache.daemon.lock import (
    InstanceLock,
    InstanceState,
    StartLock,
    inspect_instance,
    remove_stale_files,
    runtime_info,
)
from pkgcache.daemon.logs import problem_lines, read_from, rotate_log
from pkgcache.daemon.registry import remember, remembered
from pkgcache.daemon.status_client import local_url
from pkgcache.formatting import shell_quote

# Longer than the service's own shutdown (serving.WORKER_STOP_TIMEOUT), so `stop` never cuts a graceful stop short.
STOP_TIMEOUT = 90.0
START_TIMEOUT = 30.0
# How much longer than its own --wait a start waits for another start on the same data directory to be done: that
# one may have to stop its process, which `lifecycle.abandon` gives up to 20 s.
START_LOCK_GRACE = 30.0
# When a start fails: the last warnings and errors of its log shown (its access lines never are).
LOG_LINES_SHOWN = 12


# --- serve ---


@click.command()
@serve_options
@click.option(
    "--settings-file",
    type=click.Path(dir_okay=False, path_type=Path),
    hidden=True,
    help="Serve with the settings `pkgcache start` recorded in this file (no other settings option goes with it).",
)
@click.option("--detached", is_flag=True, hidden=True, help="Set by `pkgcache start` for the process it starts.")
def serve(settings_file: Path | None, detached: bool, **options: Any) -> None:
    """Run the service in the foreground (for containers, systemd and trying it out)."""
    if settings_file is None:
        settings = settings_from_options(**options)
    elif any(value not in (None, ()) for value in options.values()):
        raise click.UsageError("--settings-file holds every setting: give no other settings option with it")
    else:
        settings_file = settings_file.absolute()
        settings = _read_record(settings_file).settings
    run_service(settings, settings_file, detached)


def run_service(settings: Settings, settings_file: Path | None = None, detached: bool = False) -> None:
    act_as_data_dir_owner(settings.server.data_dir)
    configure_logging(settings.server.log_level)
    lock = InstanceLock(InstancePaths(settings.server.data_dir))
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot use data directory {settings.server.data_dir}: {exc}") from None
    try:
        _require_readable_blocks(settings.server.data_dir)
        server = settings.server
        lock.write_runtime(runtime_info(server.host, server.port, server.data_dir, settings_file, detached))
        code = _serve_or_explain(settings)
        logging.getLogger("pkgcache").info("pkgcache stopped")
    finally:
        lock.release()
    if code:
        raise click.ClickException("pkgcache stopped: a worker process kept failing to start (see the log above)")


def _require_readable_blocks(data_dir: Path) -> None:
    """Refuse to start on a blocks file that cannot be read whole: the service would serve what its blocks refuse
    (a running one keeps the blocks it read last; a starting one has none)."""
    from pkgcache.gate.blocks import BlockBook, BlocksUnreadable
    from pkgcache.storage.store import CacheStore

    try:
        BlockBook(CacheStore(data_dir, writable=False)).read_sound()
    except BlocksUnreadable as exc:
        raise click.ClickException(f"not started: {exc} (the blocks in it must be in force from the start)") from None


def _serve_or_explain(settings: Settings) -> int:
    from pkgcache.service import serving  # the whole service: loaded only by the commands that serve

    try:
        return serving.run(settings)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror or exc}"
        ) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --- start ---


@click.command()
@serve_options
@click.option(
    "--wait",
    "wait_timeout",
    type=SECONDS,
    default=START_TIMEOUT,
    show_default=True,
    help="Seconds to wait for its health check to answer (an unhealthy answer ends the wait: it is stopped).",
)
def start(wait_timeout: float, config_file: Path | None, **options: Any) -> None:
    """Start the service in the background (pid, log and recorded settings in the data directory)."""
    flags = flag_overrides(options)
    record = LaunchRecord(resolve_settings(config_file, flags), absolute(config_file), flags)
    _note_a_config_left_out(record)
    start_background(record, wait_timeout)


def _note_a_config_left_out(record: LaunchRecord) -> None:
    """Say so when the data directory was last started with a config file this start does not give: its settings
    (upstreams, users, policy) give way to the built-in defaults, and `restart` would have kept them."""
    data_dir = record.settings.server.data_dir
    try:
        last = read_launch_record(InstancePaths(data_dir).settings_file)
    except ConfigError:
        return
    if last.config_file is None or record.config_file is not None:
        return
    click.echo(
        f"note: {data_dir} was last started with --config {shell_quote(last.config_file)}; this start reads no "
        f"config file (built-in defaults and the options given). To start it as it was: pkgcache restart "
        f"--data-dir {shell_quote(data_dir)}",
        err=True,
    )


def start_background(record: LaunchRecord, wait_timeout: float) -> None:
    """Record the settings, launch `serve` on the record, and wait until it answers; one `start` or `restart` at a
    time on a data directory."""
    paths = InstancePaths(record.settings.server.data_dir)
    act_as_data_dir_owner(paths.data_dir)
    _refuse_if_running(inspect_instance(paths), record.settings)  # at once, without waiting for the start lock
    with _start_lock(paths, wait_timeout):
        _launch(record, wait_timeout)


def _start_lock(paths: InstancePaths, wait_timeout: float) -> StartLock:
    """The data directory's start lock, held: waits for another `start` or `restart` to be done with it (its
    process answering, or having failed and been stopped)."""
    lock = StartLock(paths)

    def tell(pid: int | None) -> None:
        who = f" (pid {pid})" if pid else ""
        click.echo(
            f"waiting for another `pkgcache start` or `restart`{who} on data directory {paths.data_dir}...", err=True
        )

    try:
        lock.acquire(wait_timeout + START_LOCK_GRACE, on_wait=tell)
    except StartInProgress as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot use data directory {paths.data_dir}: {exc.strerror or exc}") from None
    return lock


def _refuse_if_running(state: InstanceState, settings: Settings) -> None:
    if state.running or state.foreign:
        url = local_url(state.host or settings.server.host, state.port or settings.server.port)
        raise click.ClickException(str(AlreadyRunning(state.paths.data_dir, state.pid, url)))


def _launch(record: LaunchRecord, wait_timeout: float) -> None:
    """The start itself, under the start lock: nobody else starts an instance on this data directory meanwhile, nor
    rewrites the settings record the process launched reads."""
    settings = record.settings
    paths = InstancePaths(settings.server.data_dir)
    state = inspect_instance(paths)
    _refuse_if_running(state, settings)
    if state.stale and remove_stale_files(paths):
        click.echo(f"removed a stale pid file left by pid {state.pid}, which is no longer running")
    host, port = settings.server.host, settings.server.port
    problem = port_problem(host, port)
    if problem:
        raise click.ClickException(_own_instance_on(port) or problem)

    try:
        write_launch_record(paths.settings_file, record)
    except OSError as exc:
        raise click.ClickException(f"cannot write {paths.settings_file}: {exc.strerror or exc}") from None
    rotate_log(paths.log_file)
    log_offset = file_size(paths.log_file)
    process = spawn_service(paths, ["--settings-file", str(paths.settings_file), "--detached"])
    url = local_url(host, port)
    try:
        wait_until_ready(process, paths, port, url, wait_timeout, read_auth_headers(settings))
    except ServesElsewhere as exc:
        # Not what was asked for, but an instance of this data directory all the same: stopping it could leave
        # none running, so it is left for the admin to judge.
        raise click.ClickException(
            f"{exc}; left it running (see: pkgcache status --data-dir {shell_quote(paths.data_dir)})"
        ) from None
    except Unhealthy as exc:
        # It cannot serve (too little free space, a data directory it cannot write): left running it would only
        # answer 503, so it is stopped, and the reason is the whole message.
        abandon(process)
        raise click.ClickException(f"{exc}; stopped it (log: {paths.log_file})") from None
    except DaemonError as exc:
        abandon(process)
        problems = problem_lines(read_from(paths.log_file, log_offset), LOG_LINES_SHOWN)
        output = "\n".join(problems) or "(no warning or error logged)"
        raise click.ClickException(f"{exc}:\n{textwrap.indent(output, '  ')}\n(log: {paths.log_file})") from None
    _remember(paths.data_dir)
    _print_started(settings, process.pid, paths, _locating_hint(record))


def _remember(data_dir: Path) -> None:
    """Put the instance on this account's list, so later commands find it without options; never fatal."""
    try:
        remember(data_dir)
    except OSError as exc:
        click.echo(f"note: could not remember this instance for later commands: {exc}", err=True)


def _own_instance_on(port: int) -> str | None:
    """When the port is taken by another pkgcache this account started, which one, and what to do."""
    for entry in remembered():
        state = inspect_instance(InstancePaths(entry.data_dir))
        if state.running and state.port == port:
            return (
                f"port {port} is already used by another pkgcache of this account (pid {state.pid}, data directory "
                f"{entry.data_dir}); stop it with `pkgcache stop --data-dir {shell_quote(entry.data_dir)}` or choose "
                "another port with --port"
            )
    return None


def _locating_hint(record: LaunchRecord) -> str:
    """The flag that points later commands at this instance, when the default data directory is not it."""
    if record.config_file is not None and "data_dir" not in record.flags.get("server", {}):
        return f" --config {shell_quote(record.config_file)}"
    if "data_dir" in record.flags.get("server", {}):
        return f" --data-dir {shell_quote(record.settings.server.data_dir)}"
    return ""


def _print_started(settings: Settings, pid: int, paths: InstancePaths, hint: str) -> None:
    host, port = settings.server.host, settings.server.port
    base = clients.base_url_for(clients.client_host(host), port)
    click.echo(f"pkgcache {__version__} started (pid {pid}), listening on {host}:{port}")
    click.echo(f"  URL:          {base}/")
    if settings.pypi.enabled:
        click.echo(f"  PyPI index:   {clients.pypi_index_url(base)}")
    if settings.conda.enabled:
        example = clients.conda_url(base, settings.conda.channels[0]) if settings.conda.channels else ""
        click.echo(f"  conda:        {clients.conda_url(base)}/<channel>  (e.g. {example})")
    click.echo(f"  quick setup:  {clients.quick_setup(base, settings)}")
    click.echo(f"  all clients:  pkgcache client-config{hint}")
    if clients.needs_credentials(settings):
        click.echo("  credentials:  reads need a user; client-config says where each client takes USER and PASSWORD")
    click.echo(f"  log:          {paths.log_file}  (pkgcache logs -f{hint})")
    click.echo(f"  settings:     {paths.settings_file}  (pkgcache restart{hint} starts it again with these)")
    click.echo(f"  stop:         pkgcache stop{hint}")


# --- stop ---


@click.command()
@locate_options
@click.option("--timeout", type=SECONDS, default=STOP_TIMEOUT, show_default=True, help="Seconds before SIGKILL.")
def stop(timeout: float, config_file: Path | None, data_dir: Path | None) -> None:
    """Stop the background service gracefully (SIGTERM; SIGKILL after the timeout)."""
    located = locate_instance("stop", config_file, data_dir)
    if not stop_instance(located.state, timeout):
        for line in located.where_to_look():
            click.echo(line)


def stop_instance(state: InstanceState, timeout: float) -> bool:
    """Stop the instance whose pid file `state` read; True if one was running."""
    paths = state.paths
    if state.foreign:
        raise click.ClickException(foreign_message(state))
    if not state.running:
        if state.stale and remove_stale_files(paths):
            click.echo(f"pkgcache is not running (removed a stale pid file left by pid {state.pid})")
        else:
            click.echo(f"pkgcache is not running (data directory {paths.data_dir})")
        return False
    assert state.pid is not None
    click.echo(f"stopping pkgcache (pid {state.pid}, data directory {paths.data_dir})...")
    try:
        outcome = stop_process(paths, state.pid, timeout)
    except DaemonError as exc:
        raise click.ClickException(str(exc)) from None
    if outcome.killed:
        click.echo(f"pkgcache (pid {outcome.pid}) did not stop within {timeout:g} s and was killed", err=True)
    else:
        click.echo(f"pkgcache stopped (pid {outcome.pid}, {outcome.seconds:.1f} s)")
    return True


def foreign_message(state: InstanceState) -> str:
    return (
        f"the pid file {state.paths.pid_file} is locked by a process not visible from here (pid {state.pid}); "
        "is pkgcache running in a container that shares this data directory? Stop it where it runs."
    )


# --- restart ---


@click.command()
@restart_options
@click.option("--timeout", type=SECONDS, default=STOP_TIMEOUT, show_default=True, help="Seconds before SIGKILL.")
@click.option("--wait", "wait_timeout", type=SECONDS, default=START_TIMEOUT, show_default=True, help="Seconds to wait.")
@click.option(
    "--forget-options",
    is_flag=True,
    help="Drop the options given to earlier starts and restarts (the data directory stays): the settings are read "
    "afresh, as `start` reads them, from --config (else the file start was given), the environment and the "
    "options given now.",
)
def restart(
    timeout: float, wait_timeout: float, forget_options: bool, config_file: Path | None, **options: Any
) -> None:
    """Stop the background service and start it again, with the settings `start` recorded for it.

    Options given here replace those, and only those, and are recorded in their turn: an option given to `start`
    or to a restart holds for every later restart, over the config file too (restart names those it keeps; drop
    them with --forget-options). Given --config, that file and the environment are read afresh (the other
    options given before still hold, the data directory included). The instance is found as `status` finds it:
    --config names the settings to apply, not the instance, unless the file sets data_dir; a file whose data_dir
    is not where the running instance is, is refused (add --data-dir to say which one you mean). A data directory
    no `start` ever started is refused.
    """
    located = locate_instance("restart", config_file, options.get("data_dir"), config_names_instance=False)
    state = located.state
    _refuse_foreground(state)
    if config_file is not None and located.named_by == "--config" and not (state.running or state.foreign):
        _refuse_another_data_dir(config_file, located)
    if not (state.running or state.foreign or located.paths.settings_file.exists()):
        _refuse_never_started(located)
    # From here on, as `start`: no other `start` or `restart` on this data directory until this one is done, and
    # what runs there is looked at again once that is so.
    with _start_lock(located.paths, wait_timeout):
        located = dataclasses.replace(located, state=inspect_instance(located.paths))
        _refuse_foreground(located.state)
        record = _restart_record(located, config_file, flag_overrides(options), forget_options)
        stop_instance(located.state, timeout)
        if InstancePaths(record.settings.server.data_dir) == located.paths:
            _launch(record, wait_timeout)
        else:  # a record that names another data directory: that one's start lock is the one to hold
            start_background(record, wait_timeout)


def _refuse_never_started(located: Located) -> None:
    """Nothing runs there and nothing was started there: a mistyped --data-dir, or a plain `restart` meaning an
    instance started elsewhere. Starting one afresh there, with every default, is not what "restart" means."""
    data_dir = located.paths.data_dir
    if not located.named and located.others_remembered():
        lines = [f"pkgcache was not started on the default data directory {data_dir}", *located.where_to_look()]
        raise click.ClickException("\n".join(lines))
    named = f" --data-dir {shell_quote(data_dir)}" if located.named else ""
    raise click.ClickException(
        f"pkgcache was never started on data directory {data_dir} (no {located.paths.settings_file.name} there), "
        f"so there is nothing to restart; to start one there: pkgcache start{named} [options]"
    )


def _refuse_foreground(state: InstanceState) -> None:
    if state.running and not state.runtime.get("detached"):
        raise click.ClickException(
            f"pkgcache (pid {state.pid}) runs in the foreground (pkgcache serve, e.g. under systemd or docker); "
            "restart it the way it was started"
        )


def _restart_record(
    located: Located, config_file: Path | None, flags: dict[str, Any], forget: bool = False
) -> LaunchRecord:
    """What to launch again: the recorded settings with the flags given now laid over them."""
    previous = _previous_record(located.paths)
    here = {"server": {"data_dir": str(located.paths.data_dir)}}
    if previous is None:
        # The instance found (perhaps on this account's list, given no directory) is the one to start again.
        flags = merge_flags(here, flags)
        return LaunchRecord(resolve_settings(config_file, flags), absolute(config_file), flags)
    kept = _flags_kept(previous.flags, flags)
    named = f" --data-dir {shell_quote(located.paths.data_dir)}" if located.named else ""
    if forget:
        # As `start` would, on this data directory, with the file given now or else the one given to `start`.
        file = absolute(config_file) or previous.config_file
        if kept:
            click.echo(f"forgetting the options given before: {' '.join(flags_as_options(kept))}")
        flags = merge_flags(here, flags)
        return LaunchRecord(resolve_settings(file, flags), file, flags)
    if kept:
        click.echo(
            f"keeping the options given before: {' '.join(flags_as_options(kept))} (they hold over the config file; "
            f"to drop them: pkgcache restart{named} --forget-options)"
        )
    merged_flags = merge_flags(previous.flags, flags)
    if config_file is not None:
        # The instance stays where it is, even when its data directory came from the environment of `start` or
        # from the file it read then, neither of which is read again.
        merged_flags = merge_flags({"server": {"data_dir": str(located.paths.data_dir)}}, merged_flags)
        return LaunchRecord(resolve_settings(config_file, merged_flags), absolute(config_file), merged_flags)
    if previous.config_file is not None:
        click.echo(
            f"using the settings recorded at start (to read {previous.config_file} again: "
            f"pkgcache restart --config {shell_quote(previous.config_file)})"
        )
    try:
        settings = settings_from_record(record_settings(previous.settings), **flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return LaunchRecord(settings, previous.config_file, merged_flags)


def _flags_kept(recorded: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The recorded flags that hold on because no flag given now replaces them (the data directory aside: it is
    the instance itself)."""
    kept: dict[str, Any] = {}
    for section, values in recorded.items():
        if not isinstance(values, dict):
            continue
        left = {
            key: value
            for key, value in values.items()
            if key not in given.get(section, {}) and (section, key) != ("server", "data_dir")
        }
        if left:
            kept[section] = left
    return kept


def _refuse_another_data_dir(config_file: Path, located: Located) -> None:
    """`restart --config FILE` where FILE's data_dir has no running instance and another instance runs: the user
    most likely means the running one, with FILE's other settings, so say how rather than start a second one."""
    running = running_elsewhere(located.paths.data_dir)
    if not running:
        return
    elsewhere = ", ".join(str(other.paths.data_dir) for other in running)
    raise click.ClickException(
        f"{config_file} sets data_dir {located.paths.data_dir}, where pkgcache is not running (it runs on "
        f"{elsewhere}): to restart that one with this file, add --data-dir DIR (it wins over the file); to start "
        f"one on {located.paths.data_dir}: pkgcache start --config {shell_quote(config_file)}"
    )


def _previous_record(paths: InstancePaths) -> LaunchRecord | None:
    if not paths.settings_file.exists():
        return None  # never started with `start` (or by a pkgcache from before records): the options decide
    return _read_record(paths.settings_file)


def _read_record(path: Path) -> LaunchRecord:
    try:
        return read_launch_record(path)
    except ConfigError as exc:
        raise click.ClickException(f"{exc}; stop it and start it with the options you want") from None
