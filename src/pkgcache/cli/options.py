"""The options the commands share, and turning them into settings (always through `pkgcache.config`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from pkgcache.config import LOG_LEVELS, ConfigError, Settings, load_settings
from pkgcache.formatting import shell_quote

F = TypeVar("F", bound=Callable[..., Any])
# A wait or a timeout in seconds: a negative one would be taken and mean "no time at all", so it is refused.
SECONDS = click.FloatRange(min=0)


def config_option(function: F) -> F:
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML configuration file."
    )(function)


SERVE_DATA_DIR_HELP = "Where the cache lives (default ~/.cache/pkgcache)."
# The commands after `start` look for the instance when no data directory is named (locate.locate_instance).
LOCATE_DATA_DIR_HELP = (
    "The instance's data directory (default: the pkgcache running on ~/.cache/pkgcache, else the one running "
    "instance this account started with `pkgcache start`)."
)


def data_dir_option(function: F, help_text: str = SERVE_DATA_DIR_HELP) -> F:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=help_text)(function)


def locate_options(function: F) -> F:
    """How the commands after `start` find an instance: the same config or data directory (or, given neither, the
    one running instance this account started)."""
    return config_option(data_dir_option(function, LOCATE_DATA_DIR_HELP))


def restart_options(function: F) -> F:
    """`restart`: the options of `start`, its data directory found as the commands after `start` find it."""
    return serve_options(function, LOCATE_DATA_DIR_HELP)


def serve_options(function: F, data_dir_help: str = SERVE_DATA_DIR_HELP) -> F:
    """Options shared by every command that starts the service."""
    options = [
        config_option,
        click.option("--host", help="Address to listen on (default 0.0.0.0)."),
        click.option("--port", type=int, help="Port to listen on (default 3150)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=data_dir_help),
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
            type=click.Choice(LOG_LEVELS),
            help="How much to log (default info).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(0, 64),
            help="Serving processes sharing the port (default 0: one per CPU core, at most 4; 1: one process).",
        ),
        click.option(
            "--offline/--online",
            default=None,
            help="Never contact an upstream, serving only what the cache holds ([server] offline); --online: do.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def flag_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings flags given (not config_file), shaped as `load_settings` overrides, in JSON values; flags not
    given are left out, so they never hide the configuration file or the environment."""
    data_dir = options.get("data_dir")
    sections: dict[str, dict[str, Any]] = {
        "server": {
            "host": options.get("host"),
            "port": options.get("port"),
            # Absolute, so a recorded flag means the same directory whatever the working directory of a restart.
            "data_dir": None if data_dir is None else str(Path(data_dir).expanduser().absolute()),
            "log_level": options.get("log_level"),
            "workers": options.get("workers"),
            "offline": options.get("offline"),  # None when neither flag is given: the file has its say
        },
        "pypi": {"upstreams": list(options.get("pypi_upstreams") or ()) or None},
        "conda": {"upstreams": list(options.get("conda_upstreams") or ()) or None},
    }
    given = {name: {k: v for k, v in values.items() if v is not None} for name, values in sections.items()}
    return {name: values for name, values in given.items() if values}


# How each recorded flag is written on the command line (`flag_overrides` read the other way).
_FLAG_NAMES = {
    ("server", "host"): "--host",
    ("server", "port"): "--port",
    ("server", "data_dir"): "--data-dir",
    ("server", "log_level"): "--log-level",
    ("server", "workers"): "--workers",
    ("pypi", "upstreams"): "--pypi-upstream",
    ("conda", "upstreams"): "--conda-upstream",
}


def flags_as_options(flags: Mapping[str, Any]) -> list[str]:
    """Recorded flags as the options that give them (`--port 3151`, `--offline`), for messages."""
    options: list[str] = []
    for section, values in flags.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if (section, key) == ("server", "offline"):
                options.append("--offline" if value else "--online")
                continue
            name = _FLAG_NAMES.get((section, key), f"{section}.{key}")
            for item in value if isinstance(value, list) else [value]:
                options.append(f"{name} {shell_quote(str(item))}")
    return options


def merge_flags(recorded: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Flags given now win, key by key; the recorded ones fill in the rest."""
    merged = {name: dict(values) for name, values in recorded.items() if isinstance(values, Mapping)}
    for name, values in given.items():
        merged.setdefault(name, {}).update(values)
    return merged


def resolve_settings(config_file: Path | None, flags: Mapping[str, Any]) -> Settings:
    """Flags over the environment over the configuration file over the defaults."""
    try:
        return load_settings(config_file, **flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def settings_from_options(config_file: Path | None = None, **options: Any) -> Settings:
    """The settings the command line asks for (click's keyword arguments)."""
    return resolve_settings(config_file, flag_overrides(options))


def absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().absolute()
