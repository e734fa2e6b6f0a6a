"""The `pkgcache` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from pkgcache import __version__
from pkgcache.config import ConfigError, Settings, load_settings

SHUTDOWN_TIMEOUT = 30.0


def _serve_options(function: Any) -> Any:
    """Options shared by every command that starts the service."""
    options = [
        click.option(
            "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML configuration file."
        ),
        click.option("--host", help="Address to listen on (default 0.0.0.0)."),
        click.option("--port", type=int, help="Port to listen on (default 3150)."),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where the cache lives (default ~/.cache/pkgcache).",
        ),
        click.option(
            "--pypi-upstream",
            "pypi_upstreams",
            multiple=True,
            metavar="URL_OR_PRESET",
            help="A PyPI upstream, by preset name (tuna, ustc, aliyun...) or simple-index URL; "
            "repeat in priority order.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"]),
            help="How much to log (default info).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def settings_from_options(
    config_file: Path | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    pypi_upstreams: tuple[str, ...],
    log_level: str | None,
) -> Settings:
    try:
        return load_settings(
            config_file,
            server={"host": host, "port": port, "data_dir": data_dir, "log_level": log_level},
            pypi={"upstreams": list(pypi_upstreams) or None},
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="pkgcache")
def main() -> None:
    """pkgcache: a caching proxy for PyPI and conda on your network."""


@main.command()
@_serve_options
def serve(**options: Any) -> None:
    """Run the service in the foreground (for containers, systemd and trying it out)."""
    settings = settings_from_options(**options)
    run_service(settings)


def run_service(settings: Settings) -> None:
    from pkgcache.http.app import create_app

    configure_logging(settings.server.log_level)
    _install_uvloop()
    app = create_app(settings)
    log = logging.getLogger("pkgcache")
    log.info(
        "pkgcache %s serving on http://%s:%d/ with data in %s",
        __version__,
        settings.server.host,
        settings.server.port,
        settings.server.data_dir,
    )
    for upstream in settings.pypi.upstreams if settings.pypi.enabled else []:
        log.info("pypi upstream %s: %s", upstream.name, upstream.url)
    try:
        # run_app turns SIGINT and SIGTERM into a graceful shutdown.
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            access_log=None,
            print=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=True,
        )
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


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
