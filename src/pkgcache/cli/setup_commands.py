"""`init` and `client-config`: a configuration file to start from, and the settings every client needs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import click

from pkgcache import clients
from pkgcache.cli.locate import locate_instance
from pkgcache.cli.options import locate_options
from pkgcache.config import Settings
from pkgcache.config_template import write_config_template
from pkgcache.formatting import shell_quote


@click.command()
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
    click.echo(f"wrote {path}; edit it, then run: pkgcache start --config {shell_quote(path)}")


@click.command("client-config")
@locate_options
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
    client_host: str | None,
    port: int | None,
    only: tuple[str, ...],
    as_json: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Print ready-to-paste settings for pip, uv, poetry, pdm, conda/mamba and pixi."""
    located = locate_instance("client-config", config_file, data_dir)
    state, settings = located.state, located.settings
    listen_host = state.host if state.running and state.host else settings.server.host
    listen_port = state.port if state.running and state.port else settings.server.port
    base = clients.base_url_for(clients.client_host(listen_host, client_host), port or listen_port)
    snippets = [s for s in clients.client_snippets(base, settings) if not only or s.client in only]
    if as_json:
        click.echo(clients.snippets_json(snippets))
        return
    click.echo(f"# Settings for the pkgcache at {base}/ (paste the block for your tool)")
    if clients.needs_credentials(settings):
        for line in textwrap.wrap(clients.credentials_note(), width=116, break_on_hyphens=False):
            click.echo(f"# {line}")
        click.echo(f"#     {clients.netrc_line(base)}")
    for side in _disabled_sides_asked(settings, only):
        click.echo(f"# (none for {side}: its side is disabled in this pkgcache's settings, [{side}] enabled = false)")
    for snippet in snippets:
        where = "run in a shell" if snippet.kind == "shell" else snippet.where
        click.echo(f"\n--- {snippet.client}: {snippet.title} -> {where}")
        click.echo(snippet.text, nl=False)


def _disabled_sides_asked(settings: Settings, only: tuple[str, ...]) -> list[str]:
    """The sides ("pypi", "conda") that are off while a client of theirs was asked for (or every client was)."""
    wanted = set(only) or set(clients.CLIENT_IDS)
    return [
        side
        for side, enabled in (("pypi", settings.pypi.enabled), ("conda", settings.conda.enabled))
        if not enabled and wanted & clients.CLIENTS_OF_SIDE[side]
    ]
