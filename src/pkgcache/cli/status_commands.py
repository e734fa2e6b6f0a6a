"""`status` and `logs`: how a background instance is doing, and what it wrote."""

from __future__ import annotations

import http.client
import sys
from pathlib import Path
from typing import Any

import click

from pkgcache.cli.locate import Located, SeveralInstances, locate_instance, read_auth_headers
from pkgcache.cli.options import locate_options
from pkgcache.cli.service_commands import foreign_message
from pkgcache.daemon.errors import DaemonError
from pkgcache.daemon.lock import remove_stale_files
from pkgcache.daemon.logs import follow, tail_lines
from pkgcache.daemon.status_client import get_json
from pkgcache.formatting import format_bytes, format_duration

# Exit statuses of `status`, as init scripts use them: 0 running, 3 not running, 4 unknown.
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4
# An upstream's last error is cut to this in `status` (the page at / and /-/status have it whole).
ERROR_CHARS = 80


@click.command()
@locate_options
def status(config_file: Path | None, data_dir: Path | None) -> None:
    """Whether the service runs, and how it is doing. Exit status: 0 running, 3 not running, 4 unknown."""
    try:
        located = locate_instance("status", config_file, data_dir)
    except SeveralInstances as exc:
        click.echo(exc.message)
        sys.exit(EXIT_UNKNOWN)
    state, paths = located.state, located.paths
    if state.foreign:
        click.echo(foreign_message(state))
        sys.exit(EXIT_UNKNOWN)
    if not state.running:
        click.echo(f"pkgcache is not running (data directory {paths.data_dir})")
        if state.stale and remove_stale_files(paths):
            click.echo(f"removed a stale pid file left by pid {state.pid}, which is no longer running")
        for line in located.where_to_look():
            click.echo(line)
        sys.exit(EXIT_NOT_RUNNING)
    url = located.url
    try:
        info = get_json(url + "/-/status", headers=read_auth_headers(located.settings))
    except (OSError, http.client.HTTPException, DaemonError) as exc:
        click.echo(f"pkgcache (pid {state.pid}) is running but does not answer at {url}/-/status: {exc}")
        sys.exit(EXIT_UNKNOWN)
    for label, value in status_lines(located, info):
        click.echo(f"  {label + ':':<12} {value}" if label else value)


def status_lines(located: Located, info: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines for `status`, from the pid file's instance and its /-/status answer."""
    state = located.state
    lines = [("", f"pkgcache is running (pid {state.pid})"), ("address", f"{located.url}/")]
    if state.host:
        lines.append(("listening", f"{state.host}:{state.port}"))
    lines.append(("data dir", str(located.paths.data_dir)))
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
    lines += upstream_lines(info)
    workers = info.get("workers")
    if isinstance(workers, list) and workers:
        pids = ", ".join(f"{w.get('role')} {w.get('pid') or 'restarting'}" for w in workers if isinstance(w, dict))
        lines.append(("workers", f"{len(workers)} ({pids})"))
    if state.settings_file is not None:
        lines.append(("settings", f"{state.settings_file} (recorded by `start`)"))
    return lines


def upstream_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    """One line per side: its upstreams answering or resting, and whether it serves the offline view."""
    upstreams = _mapping(info.get("upstreams"))
    lines = []
    for side in ("pypi", "conda"):
        listed = [u for u in upstreams.get(side) or [] if isinstance(u, dict)]
        gate = _mapping(_mapping(info.get(side)).get("gate"))
        if listed or gate:
            lines.append((side, side_health(listed, gate)))
    return lines


def side_health(upstreams: list[dict[str, Any]], gate: dict[str, Any]) -> str:
    """ "2 of 3 upstreams answering; tuna resting 40 s (HTTP 503 ...)", or the offline mode or view first."""
    if gate.get("offline"):
        return "offline mode: no upstream is asked, only what the cache holds is served"
    parts = [_offline_view(gate)] if gate.get("degraded") else []
    answering = sum(1 for u in upstreams if u.get("healthy"))
    parts.append(f"{answering} of {len(upstreams)} upstreams answering")
    for upstream in upstreams:
        if not upstream.get("healthy"):
            parts.append(_resting(upstream))
    parts.extend(_not_served(upstream) for upstream in upstreams if upstream.get("not_served"))
    return "; ".join(parts)


def _not_served(upstream: dict[str, Any]) -> str:
    """ "central does not serve cloud/conda-forge (pkgcache central-1: channel ... is not served here; ...)": what
    this configuration lists and its pkgcache upstream's does not."""
    notes = [note for note in upstream.get("not_served") or [] if isinstance(note, dict)]
    said = []
    for note in notes:
        reason = " ".join(str(note.get("reason") or "").split())
        reason = reason[:ERROR_CHARS] + "..." if len(reason) > ERROR_CHARS else reason
        said.append(f"{note.get('what', '?')} ({reason})" if reason else str(note.get("what", "?")))
    return f"{upstream.get('name', '?')} does not serve {', '.join(said)}"


def _offline_view(gate: dict[str, Any]) -> str:
    cause = "every upstream down, each probed once its rest is over" if gate.get("probing") else "every upstream down"
    return f"offline view ({cause}): only what the cache holds is served"


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _resting(upstream: dict[str, Any]) -> str:
    remaining = upstream.get("cooldown_remaining")
    text = f"{upstream.get('name', '?')} resting"
    if upstream.get("probe_in_flight"):
        text += ", being probed"
    elif upstream.get("probing") and not remaining:
        text += " until it answers a probe"
    elif isinstance(remaining, int | float):
        text += f" {format_duration(remaining)}"
    error = " ".join(str(upstream.get("last_error") or "").split())
    if error:
        text += f" ({error[:ERROR_CHARS] + '...' if len(error) > ERROR_CHARS else error})"
    return text


@click.command()
@locate_options
@click.option("-f", "--follow", "follow_log", is_flag=True, help="Keep printing new lines as they are written.")
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="How many of the last lines to show.")
def logs(follow_log: bool, lines: int, config_file: Path | None, data_dir: Path | None) -> None:
    """Show the log of the background service."""
    located = locate_instance("logs", config_file, data_dir)
    log_file = located.paths.log_file
    if not log_file.exists():
        message = (
            f"no log at {log_file}: pkgcache was not started with `pkgcache start` on this data directory "
            "(`pkgcache serve` logs to its terminal, to journalctl under systemd, or to `docker compose logs`)"
        )
        raise click.ClickException("\n".join([message, *located.where_to_look()]))
    out = sys.stdout.buffer  # bytes as the log holds them (click's get_binary_stream is deprecated)
    try:
        out.writelines(_read_tail(log_file, lines))
        out.flush()
        if follow_log:
            follow(log_file, out)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`| head`): nothing more to say


def _read_tail(log_file: Path, lines: int) -> list[bytes]:
    try:
        return tail_lines(log_file, lines)
    except OSError as exc:
        raise click.ClickException(f"cannot read {log_file}: {exc.strerror or exc}") from None
