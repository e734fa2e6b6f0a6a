"""The `pkgcache` command."""

from __future__ import annotations

import base64
import http.client
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from pkgcache import __version__, clients, daemon
from pkgcache import check as checks
from pkgcache.admin_cli import add_admin_commands
from pkgcache.config import ConfigError, Settings, load_settings
from pkgcache.config_template import write_config_template
from pkgcache.formatting import format_bytes, format_duration
from pkgcache.presets import CONDA_PRESETS, PYPI_PRESETS

# Longer than the service's own shutdown (serving.WORKER_STOP_TIMEOUT), so `stop` never cuts a graceful stop short.
STOP_TIMEOUT = 90.0
START_TIMEOUT = 30.0
# Exit statuses of `status`, as init scripts use them: 0 running, 3 not running, 4 unknown.
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4

# The options `start` passes on to its `serve` child, and `restart` reuses: (click name, flag).
SERVE_FLAGS: tuple[tuple[str, str], ...] = (
    ("config_file", "--config"),
    ("host", "--host"),
    ("port", "--port"),
    ("data_dir", "--data-dir"),
    ("pypi_upstreams", "--pypi-upstream"),
    ("conda_upstreams", "--conda-upstream"),
    ("log_level", "--log-level"),
    ("workers", "--workers"),
)


def _config_option(function: Any) -> Any:
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML configuration file."
    )(function)


def _data_dir_option(function: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where the cache lives (default ~/.cache/pkgcache).",
    )(function)


def _serve_options(function: Any) -> Any:
    """Options shared by every command that starts the service."""
    options = [
        _config_option,
        click.option("--host", help="Address to listen on (default 0.0.0.0)."),
        click.option("--port", type=int, help="Port to listen on (default 3150)."),
        _data_dir_option,
        click.option(
            "--pypi-upstream",
            "pypi_upstreams",
            multiple=True,
            metavar="URL_OR_PRESET",
            help="A PyPI upstream, by preset name (tuna, ustc, aliyun...) or simple-index URL; "
            "repeat in priority order.",
        ),
        click.option(
            "--conda-upstream",
            "conda_upstreams",
            multiple=True,
            metavar="URL_OR_PRESET",
            help="A conda upstream, by preset name (tuna, bfsu, anaconda...) or base URL holding pkgs/ and cloud/; "
            "repeat in priority order.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"]),
            help="How much to log (default info).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(0, 64),
            help="Serving processes sharing the port (default 0: one per CPU core, at most 4; 1: one process).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _locate_options(function: Any) -> Any:
    """How `stop`, `status`, `logs` and `client-config` find an instance: the same config or data directory."""
    return _config_option(_data_dir_option(function))


def settings_from_options(
    config_file: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
    pypi_upstreams: tuple[str, ...] = (),
    conda_upstreams: tuple[str, ...] = (),
    log_level: str | None = None,
    workers: int | None = None,
) -> Settings:
    try:
        return load_settings(
            config_file,
            server={"host": host, "port": port, "data_dir": data_dir, "log_level": log_level, "workers": workers},
            pypi={"upstreams": list(pypi_upstreams) or None},
            conda={"upstreams": list(conda_upstreams) or None},
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="pkgcache")
def main() -> None:
    """pkgcache: a caching proxy for PyPI and conda on your network."""


# The operator's cache tools (gc, purge, refresh) are defined in admin_cli.py.
add_admin_commands(main)


# --- serve ---


@main.command()
@_serve_options
@click.option("--detached", is_flag=True, hidden=True, help="Set by `pkgcache start` for the process it starts.")
def serve(detached: bool, **options: Any) -> None:
    """Run the service in the foreground (for containers, systemd and trying it out)."""
    settings = settings_from_options(**options)
    run_service(settings, launch_options=recorded_options(options), detached=detached)


def run_service(settings: Settings, launch_options: dict[str, Any] | None = None, detached: bool = False) -> None:
    configure_logging(settings.server.log_level)
    lock = daemon.InstanceLock(daemon.InstancePaths(settings.server.data_dir))
    try:
        lock.acquire()
    except daemon.AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot use data directory {settings.server.data_dir}: {exc}") from None
    try:
        server = settings.server
        info = daemon.runtime_info(server.host, server.port, server.data_dir, launch_options or {}, detached)
        lock.write_runtime(info)
        code = _serve_or_explain(settings)
        logging.getLogger("pkgcache").info("pkgcache stopped")
    finally:
        lock.release()
    if code:
        raise click.ClickException("pkgcache stopped: a worker process kept failing to start (see the log above)")


def _serve_or_explain(settings: Settings) -> int:
    from pkgcache.service import serving

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


def recorded_options(options: dict[str, Any]) -> dict[str, Any]:
    """The serve options as JSON, paths made absolute, so `restart` can start the same thing from anywhere."""
    recorded: dict[str, Any] = {}
    for name, _flag in SERVE_FLAGS:
        value = options.get(name)
        if isinstance(value, Path):
            value = str(value.expanduser().absolute())
        elif isinstance(value, tuple):
            value = list(value)
        recorded[name] = value
    return recorded


def options_to_args(options: dict[str, Any]) -> list[str]:
    """Recorded options back into `serve` arguments."""
    args: list[str] = []
    for name, flag in SERVE_FLAGS:
        value = options.get(name)
        if value is None or value == []:
            continue
        for item in value if isinstance(value, list) else [value]:
            args += [flag, str(item)]
    return args


def merge_options(recorded: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Options given now win; the rest are the ones the running instance was started with."""
    given_json = recorded_options(given)
    return {name: given_json[name] or recorded.get(name) for name, _flag in SERVE_FLAGS}


def _locating_hint(options: dict[str, Any]) -> str:
    """The flags that point later commands at this instance (`--config X` or `--data-dir X`)."""
    if options.get("config_file"):
        return f" --config {options['config_file']}"
    if options.get("data_dir"):
        return f" --data-dir {options['data_dir']}"
    return ""


def _read_auth_headers(settings: Settings) -> dict[str, str]:
    """Basic auth with the first configured reader, for when reads (status included) require it."""
    users = settings.access.users
    if not users:
        return {}
    user, password = next(iter(users.items()))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- start, stop, restart ---


@main.command()
@_serve_options
@click.option("--wait", "wait_timeout", type=float, default=START_TIMEOUT, show_default=True, help="Seconds to wait.")
def start(wait_timeout: float, **options: Any) -> None:
    """Start the service in the background (pid and log files in the data directory)."""
    settings = settings_from_options(**options)
    start_background(settings, recorded_options(options), wait_timeout)


def start_background(settings: Settings, options: dict[str, Any], wait_timeout: float) -> None:
    paths = daemon.InstancePaths(settings.server.data_dir)
    state = daemon.inspect_instance(paths)
    if state.running or state.foreign:
        url = daemon.local_url(state.host or settings.server.host, state.port or settings.server.port)
        raise click.ClickException(str(daemon.AlreadyRunning(paths.data_dir, state.pid, url)))
    if state.stale and daemon.remove_stale_files(paths):
        click.echo(f"removed a stale pid file left by pid {state.pid}, which is no longer running")
    host, port = settings.server.host, settings.server.port
    problem = daemon.port_problem(host, port)
    if problem:
        raise click.ClickException(problem)

    daemon.rotate_log(paths.log_file)
    log_offset = daemon.file_size(paths.log_file)
    # The child reads the same configuration file and environment, so it resolves the same settings.
    process = daemon.spawn_service(paths, [*options_to_args(options), "--detached"])
    url = daemon.local_url(host, port)
    try:
        daemon.wait_until_ready(process, paths, url, wait_timeout, _read_auth_headers(settings))
    except daemon.DaemonError as exc:
        _abandon(process)
        output = daemon.read_from(paths.log_file, log_offset).strip() or "(nothing logged)"
        raise click.ClickException(f"{exc}:\n{textwrap.indent(output, '  ')}\n(log: {paths.log_file})") from None
    _print_started(settings, process.pid, paths, _locating_hint(options))


def _abandon(process: subprocess.Popen[bytes]) -> None:
    """Stop a child that failed to become ready."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _print_started(settings: Settings, pid: int, paths: daemon.InstancePaths, hint: str) -> None:
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
    click.echo(f"  log:          {paths.log_file}  (pkgcache logs -f{hint})")
    click.echo(f"  stop:         pkgcache stop{hint}")


@main.command()
@_locate_options
@click.option("--timeout", type=float, default=STOP_TIMEOUT, show_default=True, help="Seconds before SIGKILL.")
def stop(timeout: float, **options: Any) -> None:
    """Stop the background service gracefully (SIGTERM; SIGKILL after the timeout)."""
    settings = settings_from_options(**options)
    _stop_instance(settings, timeout)


def _stop_instance(settings: Settings, timeout: float) -> bool:
    """Stop the instance of this data directory; True if one was running."""
    paths = daemon.InstancePaths(settings.server.data_dir)
    state = daemon.inspect_instance(paths)
    if state.foreign:
        raise click.ClickException(_foreign_message(state))
    if not state.running:
        if state.stale and daemon.remove_stale_files(paths):
            click.echo(f"pkgcache is not running (removed a stale pid file left by pid {state.pid})")
        else:
            click.echo(f"pkgcache is not running (data directory {paths.data_dir})")
        return False
    assert state.pid is not None
    click.echo(f"stopping pkgcache (pid {state.pid})...")
    try:
        outcome = daemon.stop_process(paths, state.pid, timeout)
    except daemon.DaemonError as exc:
        raise click.ClickException(str(exc)) from None
    if outcome.killed:
        click.echo(f"pkgcache (pid {outcome.pid}) did not stop within {timeout:g} s and was killed", err=True)
    else:
        click.echo(f"pkgcache stopped (pid {outcome.pid}, {outcome.seconds:.1f} s)")
    return True


def _foreign_message(state: daemon.InstanceState) -> str:
    return (
        f"the pid file {state.paths.pid_file} is locked by a process not visible from here (pid {state.pid}); "
        "is pkgcache running in a container that shares this data directory? Stop it where it runs."
    )


@main.command()
@_serve_options
@click.option("--timeout", type=float, default=STOP_TIMEOUT, show_default=True, help="Seconds before SIGKILL.")
@click.option("--wait", "wait_timeout", type=float, default=START_TIMEOUT, show_default=True, help="Seconds to wait.")
def restart(timeout: float, wait_timeout: float, **options: Any) -> None:
    """Stop the background service and start it again, with the options it was started with.

    Options given here replace those; the configuration file and environment are read afresh.
    """
    settings = settings_from_options(**options)
    state = daemon.inspect_instance(daemon.InstancePaths(settings.server.data_dir))
    merged = recorded_options(options)
    if state.running:
        if not state.runtime.get("detached"):
            raise click.ClickException(
                f"pkgcache (pid {state.pid}) runs in the foreground (pkgcache serve, e.g. under systemd or docker); "
                "restart it the way it was started"
            )
        merged = merge_options(state.runtime.get("options") or {}, options)
        settings = settings_from_options(**_as_click_options(merged))
    _stop_instance(settings, timeout)
    start_background(settings, merged, wait_timeout)


def _as_click_options(recorded: dict[str, Any]) -> dict[str, Any]:
    """Recorded (JSON) options in the shape settings_from_options takes."""
    options = dict(recorded)
    for name in ("config_file", "data_dir"):
        if options.get(name):
            options[name] = Path(options[name])
    for name in ("pypi_upstreams", "conda_upstreams"):
        options[name] = tuple(options.get(name) or ())
    return options


# --- status and logs ---


@main.command()
@_locate_options
def status(**options: Any) -> None:
    """Whether the service runs, and how it is doing. Exit status: 0 running, 3 not running, 4 unknown."""
    settings = settings_from_options(**options)
    paths = daemon.InstancePaths(settings.server.data_dir)
    state = daemon.inspect_instance(paths)
    if state.foreign:
        click.echo(_foreign_message(state))
        sys.exit(EXIT_UNKNOWN)
    if not state.running:
        click.echo(f"pkgcache is not running (data directory {paths.data_dir})")
        if state.stale and daemon.remove_stale_files(paths):
            click.echo(f"removed a stale pid file left by pid {state.pid}, which is no longer running")
        sys.exit(EXIT_NOT_RUNNING)
    url = daemon.local_url(state.host or settings.server.host, state.port or settings.server.port)
    try:
        info = daemon.get_json(url + "/-/status", headers=_read_auth_headers(settings))
    except (OSError, http.client.HTTPException, daemon.DaemonError) as exc:
        click.echo(f"pkgcache (pid {state.pid}) is running but does not answer at {url}/-/status: {exc}")
        sys.exit(EXIT_UNKNOWN)
    for label, value in _status_lines(state, paths, url, info):
        click.echo(f"  {label + ':':<12} {value}" if label else value)


def _status_lines(
    state: daemon.InstanceState, paths: daemon.InstancePaths, url: str, info: dict[str, Any]
) -> list[tuple[str, str]]:
    lines = [("", f"pkgcache is running (pid {state.pid})"), ("address", f"{url}/")]
    listen = f"{state.host}:{state.port}" if state.host else None
    if listen:
        lines.append(("listening", listen))
    lines.append(("data dir", str(paths.data_dir)))
    if "version" in info:
        lines.append(("version", str(info["version"])))
    if isinstance(info.get("uptime_seconds"), int | float):
        lines.append(("uptime", format_duration(info["uptime_seconds"])))
    if isinstance(info.get("cache_bytes"), int | float):
        size = format_bytes(info["cache_bytes"])
        if isinstance(info.get("cache_max_bytes"), int | float):
            size += f" of at most {format_bytes(info['cache_max_bytes'])}"
        lines.append(("cache size", size))
    if "hit_ratio" in info:
        ratio = info["hit_ratio"]
        lines.append(("hit ratio", f"{ratio * 100:.1f} %" if isinstance(ratio, int | float) else "n/a (no requests)"))
    if isinstance(info.get("bytes_saved"), int | float):
        lines.append(("saved", f"{format_bytes(info['bytes_saved'])} served from the cache"))
    if isinstance(info.get("downloads_in_flight"), int):
        lines.append(("downloads", f"{info['downloads_in_flight']} in flight"))
    workers = info.get("workers")
    if isinstance(workers, list) and workers:
        pids = ", ".join(f"{w.get('role')} {w.get('pid') or 'restarting'}" for w in workers if isinstance(w, dict))
        lines.append(("workers", f"{len(workers)} ({pids})"))
    return lines


@main.command()
@_locate_options
@click.option("-f", "--follow", "follow_log", is_flag=True, help="Keep printing new lines as they are written.")
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="How many of the last lines to show.")
def logs(follow_log: bool, lines: int, **options: Any) -> None:
    """Show the log of the background service."""
    settings = settings_from_options(**options)
    log_file = daemon.InstancePaths(settings.server.data_dir).log_file
    if not log_file.exists():
        raise click.ClickException(
            f"no log at {log_file}: pkgcache was not started with `pkgcache start` on this data directory "
            "(`pkgcache serve` logs to its terminal, to journalctl under systemd, or to `docker compose logs`)"
        )
    out = click.get_binary_stream("stdout")
    try:
        out.writelines(_read_tail(log_file, lines))
        out.flush()
        if follow_log:
            daemon.follow(log_file, out)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`| head`): nothing more to say


def _read_tail(log_file: Path, lines: int) -> list[bytes]:
    try:
        return daemon.tail_lines(log_file, lines)
    except OSError as exc:
        raise click.ClickException(f"cannot read {log_file}: {exc.strerror or exc}") from None


# --- set-up helpers ---


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="pkgcache.toml")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def init(path: Path, force: bool) -> None:
    """Write a commented configuration file (default ./pkgcache.toml) with every setting and the presets."""
    try:
        write_config_template(path, force=force)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path}; edit it, then run: pkgcache start --config {path}")


@main.command("client-config")
@_locate_options
@click.option(
    "--host",
    "client_host",
    metavar="ADDR",
    help="Address clients reach pkgcache at (default: the listen address, or this machine's address when "
    "listening on all interfaces).",
)
@click.option("--port", type=int, help="Port clients use (default: the running instance's, or the configured one).")
@click.option(
    "--client",
    "only",
    multiple=True,
    type=click.Choice(list(clients.CLIENT_IDS)),
    help="Only this client (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snippets as JSON.")
def client_config(
    client_host: str | None, port: int | None, only: tuple[str, ...], as_json: bool, **options: Any
) -> None:
    """Print ready-to-paste settings for pip, uv, poetry, pdm, conda/mamba and pixi."""
    settings = settings_from_options(**options)
    state = daemon.inspect_instance(daemon.InstancePaths(settings.server.data_dir))
    listen_host = state.host if state.running and state.host else settings.server.host
    listen_port = state.port if state.running and state.port else settings.server.port
    base = clients.base_url_for(clients.client_host(listen_host, client_host), port or listen_port)
    snippets = [s for s in clients.client_snippets(base, settings) if not only or s.client in only]
    if as_json:
        click.echo(clients.snippets_json(snippets))
        return
    click.echo(f"# Settings for the pkgcache at {base}/ (paste the block for your tool)")
    for snippet in snippets:
        where = "run in a shell" if snippet.kind == "shell" else snippet.where
        click.echo(f"\n--- {snippet.client}: {snippet.title} -> {where}")
        click.echo(snippet.text, nl=False)


@main.command()
@_config_option
@click.option("--pypi-upstream", "pypi_upstreams", multiple=True, metavar="URL_OR_PRESET", help="Probe this instead.")
@click.option("--conda-upstream", "conda_upstreams", multiple=True, metavar="URL_OR_PRESET", help="Probe this instead.")
@click.option("--presets", is_flag=True, help="Probe every known preset mirror instead of the configured ones.")
@click.option("--project", default="pip", show_default=True, help="PyPI project whose page is fetched.")
@click.option("--timeout", type=float, default=15.0, show_default=True, help="Seconds allowed for each probe.")
def check(presets: bool, project: str, timeout: float, **options: Any) -> None:
    """Probe every configured upstream: latency and whether it answers correctly, fastest first."""
    if presets:
        options["pypi_upstreams"] = tuple(PYPI_PRESETS)
        options["conda_upstreams"] = tuple(CONDA_PRESETS)
    settings = settings_from_options(**options)
    probes = checks.plan_probes(settings, project)
    click.echo(f"probing {len(probes)} upstream URLs (at most {timeout:g} s each)...", err=True)
    results = checks.sort_results(checks.run_checks(settings, probes, timeout))
    click.echo(checks.format_table(results))
    for side in ("pypi", "conda"):
        order = checks.suggested_order(results, side)
        if order:
            click.echo(f"\nfastest working {side} upstreams first: {', '.join(order)}")
    failed = sum(1 for result in results if not result.ok)
    if failed:
        click.echo(f"\n{failed} of {len(results)} probes failed", err=True)
        sys.exit(1)
