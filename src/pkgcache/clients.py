"""Ready-to-paste client settings (pip, uv, poetry, pdm, conda/mamba, pixi) for a pkgcache at a given address.

Everything here is a pure function of the base URL clients use (e.g. `http://10.0.0.5:3150`) and the Settings, so the
`client-config` command, `start` and the web page at `/` all show the same text. `guess_lan_address` is the one
helper that looks at the machine, to turn a wildcard listen address into one clients can reach.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pkgcache.config import Settings

CLIENT_IDS: tuple[str, ...] = ("pip", "uv", "poetry", "pdm", "conda", "pixi")
# Which side of pkgcache each client's settings point at.
CLIENTS_OF_SIDE: dict[str, frozenset[str]] = {
    "pypi": frozenset({"pip", "uv", "poetry", "pdm"}),
    "conda": frozenset({"conda", "pixi"}),
}
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
# Where the `defaults` channel of conda points, in conda's own order.
DEFAULT_PKGS_CHANNELS: tuple[str, ...] = ("pkgs/main", "pkgs/r", "pkgs/msys2")
# The original locations that pixi's [mirrors] keys must name.
ANACONDA_PKGS_URL = "https://repo.anaconda.com/pkgs/"
ANACONDA_CLOUD_URL = "https://conda.anaconda.org/"


@dataclass(frozen=True)
class Location:
    """Where a settings file goes on one operating system."""

    os: str
    path: str


@dataclass(frozen=True)
class Snippet:
    """One block of settings a user pastes: into a file at one of `locations`, or into a shell."""

    client: str  # one of CLIENT_IDS
    title: str
    text: str
    kind: Literal["file", "shell"]
    language: str  # for highlighting: ini, toml, yaml, sh
    locations: tuple[Location, ...] = ()

    @property
    def where(self) -> str:
        if self.kind == "shell":
            return "shell"
        return "; ".join(f"{location.path} ({location.os})" for location in self.locations)

    def as_dict(self) -> dict[str, object]:
        return {
            "client": self.client,
            "title": self.title,
            "kind": self.kind,
            "language": self.language,
            "where": self.where,
            "locations": [{"os": loc.os, "path": loc.path} for loc in self.locations],
            "text": self.text,
        }


# --- URLs ---


def normalise_base_url(base_url: str) -> str:
    """The base URL without a trailing slash, so paths can be appended with one."""
    return base_url.rstrip("/")


def pypi_index_url(base_url: str) -> str:
    return f"{normalise_base_url(base_url)}/pypi/simple/"


def conda_url(base_url: str, channel: str = "") -> str:
    """`<base>/conda` or `<base>/conda/<channel>` (channel like `pkgs/main` or `cloud/conda-forge`)."""
    root = f"{normalise_base_url(base_url)}/conda"
    return f"{root}/{channel.strip('/')}" if channel else root


def is_plain_http(base_url: str) -> bool:
    return urlsplit(base_url).scheme == "http"


def url_host(base_url: str) -> str:
    """The host part of a URL as clients name a trusted host (no port, IPv6 without brackets)."""
    return urlsplit(base_url).hostname or ""


def base_url_for(host: str, port: int, scheme: str = "http") -> str:
    """`http://host:port`, with IPv6 addresses in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def guess_lan_address() -> str:
    """This machine's primary non-loopback address, or 127.0.0.1 when there is none.

    Connecting a UDP socket sends nothing; it only asks the kernel which source address it would route from.
    """
    for probe in ("10.255.255.255", "192.0.2.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                address = sock.getsockname()[0]
        except OSError:
            continue
        if address and not address.startswith("127.") and address != "0.0.0.0":
            return address
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return "127.0.0.1" if address.startswith("127.") else address


def client_host(listen_host: str, override: str | None = None) -> str:
    """The host clients should use: the override, the listen address, or this machine's address for a wildcard."""
    if override:
        return override
    if listen_host in WILDCARD_HOSTS:
        return guess_lan_address()
    return listen_host


# --- snippets ---


def client_snippets(base_url: str, settings: Settings) -> list[Snippet]:
    """Every client's settings for a pkgcache at `base_url`, PyPI ones only if PyPI is served, conda ones likewise."""
    snippets: list[Snippet] = []
    if settings.pypi.enabled:
        snippets += pip_snippets(base_url)
        snippets += uv_snippets(base_url)
        snippets.append(poetry_snippet(base_url))
        snippets.append(pdm_snippet(base_url))
    if settings.conda.enabled:
        snippets.append(condarc_snippet(base_url, settings.conda.channels))
    pixi = pixi_snippet(base_url, settings)
    if pixi is not None:
        snippets.append(pixi)
    return snippets


def pip_snippets(base_url: str) -> list[Snippet]:
    index = pypi_index_url(base_url)
    host = url_host(base_url)
    conf = ["[global]", f"index-url = {index}"]
    commands = [f"pip config set global.index-url {index}"]
    if is_plain_http(base_url):
        # pip ignores a plain-http index unless its host is trusted (loopback excepted).
        conf.append(f"trusted-host = {host}")
        commands.append(f"pip config set global.trusted-host {host}")
    return [
        Snippet(
            client="pip",
            title="pip.conf",
            text=_lines(conf),
            kind="file",
            language="ini",
            locations=(
                Location("Linux", "~/.config/pip/pip.conf"),
                Location("macOS", "~/Library/Application Support/pip/pip.conf"),
                Location("Windows", r"%APPDATA%\pip\pip.ini"),
                Location("all users, Linux", "/etc/pip.conf"),
            ),
        ),
        Snippet(client="pip", title="pip config", text=_lines(commands), kind="shell", language="sh"),
    ]


def uv_snippets(base_url: str) -> list[Snippet]:
    index = pypi_index_url(base_url)
    toml = ["[[index]]", f"url = {_toml_string(index)}", "default = true"]
    env = [f"export UV_DEFAULT_INDEX={index}"]
    if is_plain_http(base_url):
        host = url_host(base_url)
        env.append("# Plain http needs nothing more: UV_INSECURE_HOST only skips TLS certificate checks, for when")
        env.append(f"# pkgcache sits behind https with a self-signed certificate (then UV_INSECURE_HOST={host}).")
    env.append(f'# Windows PowerShell: $env:UV_DEFAULT_INDEX = "{index}"')
    return [
        Snippet(
            client="uv",
            title="uv.toml",
            text=_lines(toml),
            kind="file",
            language="toml",
            locations=(
                Location("Linux, macOS", "~/.config/uv/uv.toml"),
                Location("Windows", r"%APPDATA%\uv\uv.toml"),
                Location("all users, Linux", "/etc/uv/uv.toml"),
            ),
        ),
        Snippet(client="uv", title="uv environment", text=_lines(env), kind="shell", language="sh"),
    ]


def poetry_snippet(base_url: str) -> Snippet:
    command = f"poetry source add --priority=primary pkgcache {pypi_index_url(base_url)}"
    return Snippet(
        client="poetry",
        title="poetry (in each project)",
        text=_lines([command]),
        kind="shell",
        language="sh",
    )


def pdm_snippet(base_url: str) -> Snippet:
    commands = [f"pdm config pypi.url {pypi_index_url(base_url)}"]
    if is_plain_http(base_url):
        # pdm (2.29, through unearth) skips a plain-http index on any host but loopback unless its source has
        # verify_ssl=false, which marks the host trusted (and, for https, turns off certificate checks).
        commands.append("pdm config pypi.verify_ssl false")
    return Snippet(client="pdm", title="pdm config", text=_lines(commands), kind="shell", language="sh")


def condarc_snippet(base_url: str, channels: list[str]) -> Snippet:
    lines = [f"channel_alias: {conda_url(base_url, 'cloud')}"]
    defaults = [channel for channel in DEFAULT_PKGS_CHANNELS if channel in channels]
    if defaults:
        lines.append("default_channels:")
        lines += [f"  - {conda_url(base_url, channel)}" for channel in defaults]
    cloud = _cloud_channel_names(channels)
    if cloud:
        # conda builds BASE/name from a custom channel, so BASE must not end in the name.
        lines.append("custom_channels:")
        lines += [f"  {name}: {conda_url(base_url, 'cloud')}" for name in cloud]
    return Snippet(
        client="conda",
        title=".condarc (conda, mamba)",
        text=_lines(lines),
        kind="file",
        language="yaml",
        locations=(
            Location("Linux, macOS", "~/.condarc"),
            Location("Windows", r"%USERPROFILE%\.condarc"),
        ),
    )


def pixi_snippet(base_url: str, settings: Settings) -> Snippet | None:
    lines: list[str] = []
    if settings.conda.enabled:
        lines.append("[mirrors]")
        for channel in settings.conda.channels:
            original = _original_channel_url(channel)
            lines.append(f"{_toml_string(original)} = [{_toml_string(conda_url(base_url, channel))}]")
    if settings.pypi.enabled:
        if lines:
            lines.append("")
        index = _toml_string(pypi_index_url(base_url))
        lines += [
            # pixi's docs: [pypi-config] index-url is no global setting, only what `pixi init` writes in a manifest.
            "# pixi copies this index-url into the manifest `pixi init` writes, and uses it nowhere else: a workspace",
            "# that exists uses its manifest's index (the default one when it names none). For such a workspace, put",
            "# these lines in its pixi.toml ([tool.pixi.pypi-options] in a pyproject.toml):",
            "#   [pypi-options]",
            f"#   index-url = {index}",
            "[pypi-config]",
            f"index-url = {index}",
        ]
    if not lines:
        return None
    return Snippet(
        client="pixi",
        title="pixi config.toml",
        text=_lines(lines),
        kind="file",
        language="toml",
        locations=(
            Location("all systems", "~/.pixi/config.toml"),
            Location("Linux", "~/.config/pixi/config.toml"),
            Location("Windows", r"%APPDATA%\pixi\config.toml"),
        ),
    )


def quick_setup(base_url: str, settings: Settings) -> str:
    """One line that points the most common client at pkgcache."""
    if settings.pypi.enabled:
        line = f"pip config set global.index-url {pypi_index_url(base_url)}"
        if is_plain_http(base_url):
            line += f" && pip config set global.trusted-host {url_host(base_url)}"
        return line
    return f"conda config --set channel_alias {conda_url(base_url, 'cloud')}"


def snippets_json(snippets: list[Snippet]) -> str:
    return json.dumps([snippet.as_dict() for snippet in snippets], indent=2, ensure_ascii=False)


# --- helpers ---


def _cloud_channel_names(channels: list[str]) -> list[str]:
    return [channel.split("/", 1)[1] for channel in channels if channel.startswith("cloud/")]


def _original_channel_url(channel: str) -> str:
    """The URL a conda client knows a channel by, which pixi's [mirrors] keys must match."""
    area, name = channel.split("/", 1)
    if area == "pkgs":
        return f"{ANACONDA_PKGS_URL}{name}"
    return f"{ANACONDA_CLOUD_URL}{name}"


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for the URLs and names used here.
    return json.dumps(value, ensure_ascii=False)


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"
