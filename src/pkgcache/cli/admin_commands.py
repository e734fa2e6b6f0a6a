"""`pkgcache gc`, `purge`, `refresh` and `verify`: the operator's tools on the command line.

When an instance runs on the data directory (found as the other commands find it: the same `--config` /
`--data-dir`, or the one running instance this account started), they go through its admin HTTP API, so that its
memory and its size count stay right: that needs `access.admin_token`, taken from the settings the instance was
started with (or the config file, for one started otherwise). When nothing runs, `gc` and `purge` work directly on
the data directory; `refresh` needs a running instance. `verify` always works on the data directory itself
(bundle/verifying.py says why that is safe beside a running instance).
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import click

from pkgcache.cli.locate import Located, locate_instance, require_cache
from pkgcache.cli.options import locate_options
from pkgcache.formatting import format_bytes, shell_quote
from pkgcache.pypi.names import BadName, check_filename, normalize_project
from pkgcache.pypi.pages import project_entries
from pkgcache.service.admin import (
    ADMIN_OFF,
    ADMIN_STATE_HEADER,
    GIVE_UP_AT_HEADER,
    SENT_AT_HEADER,
    parse_size,
    pypi_file_entries,
)
from pkgcache.storage.eviction import Freed, collect_offline, remove_entries
from pkgcache.storage.store import CacheStore, UnsafePath
from pkgcache.workers.supervisor import primary_socket_beside

if TYPE_CHECKING:
    from pkgcache.bundle.verifying import VerifyReport  # imported when verify runs: the CLI starts without it

ADMIN_TIMEOUT = 600.0  # a gc of a large cache walks it whole
# A block or unblock is answered within the service's APPLY_TIMEOUT (10 s) plus its purge. The request says when the
# command stops waiting, a little before it does: one the primary starts by then is answered before the command
# gives up, and one that reaches it later (held by a stuck worker) is refused rather than done unseen.
CHANGE_TIMEOUT = 60.0
GIVE_UP_MARGIN = 20.0


class AdminError(click.ClickException):
    """A failure the operator can act on."""


# --- finding and asking the running instance ---


def running_instance_url(located: Located) -> str | None:
    """The local URL of the instance serving this data directory, or None when none runs."""
    if not (located.state.running or located.state.foreign):
        return None
    return located.url


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the primary worker's private socket."""

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connect(located: Located, url: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to the instance: to its primary worker's private socket when it has one this user may use (the
    worker that makes every change, so the call never waits on a replica that is stopped or stuck), else its port."""
    parts = urlsplit(url)
    address = primary_socket_beside(str(located.paths.data_dir))
    if address is not None:
        connection = _UnixConnection(address, timeout)
        try:
            connection.connect()
        except OSError:  # a single worker (no such socket), one left by a killed instance, another user's
            connection.close()
        else:
            return connection
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)


def call_admin_api(located: Located, url: str, path: str, timeout: float | None = None) -> dict[str, Any]:
    """POST to the admin API of the instance at `url` (waiting `timeout`, ADMIN_TIMEOUT if None); its JSON answer,
    or AdminError saying what went wrong."""
    timeout = ADMIN_TIMEOUT if timeout is None else timeout
    token = located.settings.access.admin_token
    if token is None:
        # `restart --config FILE` finds the instance as this command did (and keeps its other settings); a data
        # directory the user named must be named to it too.
        named = f" --data-dir {shell_quote(located.paths.data_dir)}" if located.named else ""
        raise AdminError(
            f"pkgcache is running at {url} with its admin API off: set access.admin_token in a config file "
            f"and apply it with `pkgcache restart{named} --config FILE` (the other settings it was started with "
            "still hold), or stop it, to work on the data directory directly"
        )
    sent_at = time.time()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Length": "0",
        SENT_AT_HEADER: f"{sent_at:.6f}",
        GIVE_UP_AT_HEADER: f"{sent_at + max(timeout - GIVE_UP_MARGIN, timeout / 2):.6f}",
    }
    connection = _connect(located, url, timeout)
    try:
        connection.request("POST", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    except TimeoutError:
        raise AdminError(
            f"pkgcache at {url} did not answer within {timeout:g} s: the service refuses this request if it reaches "
            "it later, but it may have been under way already: see the service's log (and, for a block, "
            "`pkgcache policy show`)"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise AdminError(
            f"pkgcache at {url} did not answer: {exc} (it may have done the request before the answer was lost: see "
            "the service's log; a block or unblock can safely be given again)"
        ) from None
    finally:
        connection.close()
    if response.status == 200:
        return json.loads(body)
    raise AdminError(f"HTTP {response.status} from {url}{path}: {_refusal(response, body)}")


def _refusal(response: http.client.HTTPResponse, body: bytes) -> str:
    """What a refused admin request means, in the server's own words unless it marked the API as off."""
    message = body.decode("utf-8", "replace").strip()
    # Only the service's mark says the API is off: a 404 from an action (no such block) is said as it came.
    if response.status == 404 and response.getheader(ADMIN_STATE_HEADER) == ADMIN_OFF:
        return "the admin API is off on the running instance (it was started without access.admin_token)"
    if response.status in (401, 403):
        return f"the running instance refused the admin token from the config file ({message})"
    return message


def _freed_line(files: int, size: int, cache_bytes: int | None = None) -> str:
    line = f"freed {files} file{'s' if files != 1 else ''}, {format_bytes(size)}"
    if cache_bytes is not None:
        line += f"; the cache now holds {format_bytes(cache_bytes)}"
    return line


# --- the commands ---


def _say_if_measuring_only(measuring_only: bool) -> None:
    if measuring_only:
        click.echo("no cache.max_size is configured and no --to given: nothing to evict; measuring only", err=True)


@click.command("gc")
@locate_options
@click.option("--to", "target", metavar="SIZE", help="Evict down to this size (e.g. 50GB) instead of the limit.")
def gc_command(config_file: Path | None, data_dir: Path | None, target: str | None) -> None:
    """Evict least recently used package files now, down to 90 % of cache.max_size (or to --to)."""
    located = locate_instance("gc", config_file, data_dir)
    settings = located.settings
    try:
        target_bytes = None if target is None else parse_size(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    measuring_only = target_bytes is None and settings.cache.max_size is None
    if settings.server.offline and not measuring_only:
        click.echo(
            "warning: this instance is offline: package files evicted now cannot be fetched again "
            "(only a new bundle, or an upstream, brings them back)",
            err=True,
        )
    url = running_instance_url(located)
    if url is not None:
        path = "/-/admin/gc" + ("" if target_bytes is None else f"?target={target_bytes}")
        answer = call_admin_api(located, url, path)
        _say_if_measuring_only(measuring_only)  # once it is known to have run: an error is said alone
        click.echo(_freed_line(answer["freed_files"], answer["freed_bytes"], answer["cache_bytes"]))
        return
    require_cache(located.paths.data_dir)
    _say_if_measuring_only(measuring_only)
    store = CacheStore(located.paths.data_dir)
    freed, remaining = collect_offline(store, settings.cache.max_size, target_bytes)
    click.echo(_freed_line(freed.files, freed.bytes, remaining) + " (pkgcache is not running: done on disk)")


@click.command("purge")
@locate_options
@click.argument("project", required=False)
@click.option("--file", "filename", metavar="NAME", help="Only this file of the project (and its .metadata).")
@click.option(
    "--conda-file",
    metavar="CHANNEL/SUBDIR/FILE",
    help="A conda package instead, e.g. cloud/conda-forge/linux-64/numpy-2.0.0-py312h1_0.conda.",
)
def purge_command(
    config_file: Path | None, data_dir: Path | None, project: str | None, filename: str | None, conda_file: str | None
) -> None:
    """Drop a PyPI project's cached page and files (or one file, or one conda package) so they are fetched anew."""
    if (project is None) == (conda_file is None):
        raise click.UsageError("give a PROJECT, or --conda-file, but not both")
    if filename is not None and project is None:
        raise click.UsageError("--file needs the PROJECT it belongs to")
    located = locate_instance("purge", config_file, data_dir)
    if conda_file is not None:
        _purge_conda(located, conda_file)
    else:
        _purge_pypi(located, project or "", filename)


def _purge_pypi(located: Located, project: str, filename: str | None) -> None:
    try:
        name = normalize_project(project)
        if filename is not None:
            check_filename(filename)
    except BadName as exc:
        raise click.BadParameter(str(exc)) from None
    what = f"{filename} of {name}" if filename else f"project {name}"
    url = running_instance_url(located)
    if url is not None:
        path = f"/-/admin/pypi/purge/{quote(name)}" + (f"/{quote(filename)}" if filename else "")
        answer = call_admin_api(located, url, path)
        click.echo(f"purged {what}: " + _freed_line(answer["freed_files"], answer["freed_bytes"]))
        return
    require_cache(located.paths.data_dir)
    store = CacheStore(located.paths.data_dir)
    paths = project_entries(store, name) if filename is None else pypi_file_entries(store, name, filename)
    freed = remove_entries(paths)
    click.echo(f"purged {what}: " + _freed_line(freed.files, freed.bytes) + " (pkgcache is not running: done on disk)")


def _purge_conda(located: Located, conda_file: str) -> None:
    parts = conda_file.strip("/").split("/")
    if len(parts) != 4:
        # A community channel is named with its cloud/ root, as in pkgcache's URLs: conda-forge is cloud/conda-forge.
        channels = located.settings.conda.channels
        community = len(parts) == 3 and parts[0] not in channels and f"cloud/{parts[0]}" in channels
        hint = f"; community channels are under cloud/: cloud/{'/'.join(parts)}" if community else ""
        raise click.BadParameter(f"give CHANNEL/SUBDIR/FILE, e.g. pkgs/main/linux-64/zlib-1.3-h0_0.conda{hint}")
    url = running_instance_url(located)
    if url is not None:
        answer = call_admin_api(located, url, "/-/admin/conda/purge/" + "/".join(quote(part) for part in parts))
        click.echo(f"purged {conda_file}: " + _freed_line(answer["freed_files"], answer["freed_bytes"]))
        return
    if not parts[-1].endswith((".conda", ".tar.bz2")):
        raise click.BadParameter(f"{parts[-1]!r} is not a conda package (.conda or .tar.bz2)")
    require_cache(located.paths.data_dir)
    store = CacheStore(located.paths.data_dir)
    try:
        path = store.path_for("conda", *parts)
    except UnsafePath as exc:
        raise click.BadParameter(str(exc)) from None
    freed: Freed = remove_entries([path])
    click.echo(f"purged {conda_file}: " + _freed_line(freed.files, freed.bytes) + " (pkgcache is not running)")


@click.command("refresh")
@locate_options
@click.argument("project")
def refresh_command(config_file: Path | None, data_dir: Path | None, project: str) -> None:
    """Fetch a PyPI project's page from the upstreams now, instead of when its time-to-live runs out."""
    located = locate_instance("refresh", config_file, data_dir)
    settings = located.settings
    try:
        name = normalize_project(project)
    except BadName as exc:
        raise click.BadParameter(str(exc)) from None
    url = running_instance_url(located)
    if url is None:
        click.echo(
            f"pkgcache is not running on {settings.server.data_dir}; start it, or drop the cached page with "
            f"`pkgcache purge {shell_quote(name)}`",
            err=True,
        )
        sys.exit(1)
    answer = call_admin_api(located, url, f"/-/admin/pypi/refresh/{quote(name)}")
    click.echo(f"refreshed {answer['project']} from {answer['upstream']}: {answer['files']} files listed")


def _tell_progress(report: VerifyReport, files: int, size: int) -> None:
    """A line on stderr now and then while verify runs (stdout keeps the summary alone)."""
    click.echo(
        f"verify: {report.checked} of {files} files checked ({format_bytes(report.checked_bytes)} of "
        f"{format_bytes(size)}), {len(report.failures)} failed so far",
        err=True,
    )


@click.command("verify")
@locate_options
@click.option("--dry-run", is_flag=True, help="Report what fails, remove nothing.")
def verify_command(config_file: Path | None, data_dir: Path | None, dry_run: bool) -> None:
    """Check every cached file against what is known of it, and remove what fails (with its sidecar), so that the
    next request fetches it again.

    Packages are hashed against their page's, repodata's or shard's digest, shards against their name, core
    metadata against the hash it is served under; index files are checked for their shape (repodata parses, a .zst
    or .bz2 decompresses, a page reads as one) and against the size their sidecar records. Safe beside a running
    instance: files being written are temporaries and are left alone, and a removed file is fetched again when
    asked for. Reads every byte of the cache once. Exit status 0 when everything is whole, 1 when something failed
    (even once removed)."""
    from pkgcache.bundle.verifying import failure_lines, verify_cache

    directory = locate_instance("verify", config_file, data_dir).paths.data_dir
    require_cache(directory)
    report = verify_cache(directory, dry_run=dry_run, progress=_tell_progress)
    how = report.how
    click.echo(
        f"verify: {report.checked} files checked ({format_bytes(report.checked_bytes)}: {how['digest']} against a "
        f"digest, {how['shape']} by shape or size, {how['unchecked']} with nothing to check them against), "
        f"{len(report.failures)} failed, {report.removed} removed ({format_bytes(report.removed_bytes)}), "
        f"in {report.seconds:.1f} s" + (" (dry run: nothing removed)" if dry_run else "")
    )
    for line in failure_lines(report):
        click.echo(f"  FAILED {line}")
    for path in report.also_removed:
        click.echo(f"  removed {path} too (made here from what failed: made again when next asked for)")
    for path in report.changed:
        click.echo(f"  {path}: replaced while it was checked, left as it is (verify again to check the new one)")
    sys.exit(0 if report.ok else 1)
