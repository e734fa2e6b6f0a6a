"""Ready-to-paste client settings (pip, uv, poetry, pdm, conda/mamba, pixi) for a pkgcache at a given address.

Everything here is a pure function of the base URL clients use (e.g. `http://10.0.0.5:3150`) and the Settings, so the
`client-config` command, `start` and the web page at `/` all show the same text. `guess_lan_address` is the one
helper that looks at the machine, to turn a wildcard listen address into one clients can reach.

When reads need a user (`[access] users`), each client's settings say where its user and password go: always a
place of the user's own (pip.conf, uv.toml, poetry's and pdm's own stores, ~/.condarc, pixi's credential store,
~/.netrc), never a file that is committed with a project (pyproject.toml, poetry.lock, pixi.toml). They hold the
placeholders USER and PASSWORD, never a configured password; `credentials_note` says how to fill them in.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pkgcache.config import Settings
from pkgcache.formatting import shell_quote

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
# What the settings hold in place of a reader's user name and password (never a configured one).
USER_PLACEHOLDER = "USER"
PASSWORD_PLACEHOLDER = "PASSWORD"
# The name given to pkgcache's index where a client names its indexes (poetry's source, uv's index).
INDEX_NAME = "pkgcache"
# How to fill in the placeholders, for a pkgcache whose reads need a user: (English, Chinese), followed by the line
# for ~/.netrc (`netrc_line`). The page at `/` shows one of them, `client-config` the English.
CREDENTIALS_NOTE: tuple[str, str] = (
    "This pkgcache asks for a user name and password (HTTP basic auth). The settings below hold USER and PASSWORD "
    "in their place: put yours there. Each goes into your own settings, never into a project's files "
    "(pyproject.toml, poetry.lock, pixi.toml), which are shared and committed. In an address, write the special "
    "characters of a user name or password percent-encoded: @ as %40, : as %3A, / as %2F, % as %25, # as %23, "
    "? as %3F, a space as %20. Or leave them out of the addresses and put this line in ~/.netrc, which pip, uv, pdm, "
    "conda and pixi read:",
    "本服务器需要用户名和密码（HTTP basic 认证）。下面的配置中以 USER 和 PASSWORD 占位，请换成你自己的。"
    "它们只写在你自己的配置里，不要写进项目文件（pyproject.toml、poetry.lock、pixi.toml），这些文件会被共享和提交。"
    "写在地址里时，用户名和密码中的特殊字符要做百分号编码：@ 写作 %40，: 写作 %3A，/ 写作 %2F，% 写作 %25，"
    "# 写作 %23，? 写作 %3F，空格写作 %20。也可以不写在地址里，而在 ~/.netrc 中加入下面一行"
    "（pip、uv、pdm、conda 和 pixi 都会读取）：",
)


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


def with_credentials(base_url: str) -> str:
    """The base URL with the USER and PASSWORD placeholders in it, for the settings that hold them in the address."""
    parts = urlsplit(normalise_base_url(base_url))
    netloc = f"{USER_PLACEHOLDER}:{PASSWORD_PLACEHOLDER}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def netrc_line(base_url: str) -> str:
    """The ~/.netrc line giving the placeholders for pkgcache's host (netrc names a host without its port)."""
    return f"machine {url_host(base_url)} login {USER_PLACEHOLDER} password {PASSWORD_PLACEHOLDER}"


def needs_credentials(settings: Settings) -> bool:
    """Whether reads need a user, and so every client's settings need one."""
    return bool(settings.access.users)


def credentials_note(lang: str = "en") -> str:
    """How to fill in the USER and PASSWORD placeholders the settings hold, and where else they may go (then
    `netrc_line`)."""
    english, chinese = CREDENTIALS_NOTE
    return chinese if lang == "zh" else english


def conda_url(base_url: str, channel: str = "") -> str:
    """`<base>/conda` or `<base>/conda/<channel>` (channel like `pkgs/main` or `cloud/conda-forge`)."""
    root = f"{normalise_base_url(base_url)}/conda"
    return f"{root}/{channel.strip('/')}" if channel else root


def channel_alias(base_url: str) -> str:
    """The base of the community channels (`<base>/conda/cloud/`), as conda's and rattler's channel_alias."""
    return conda_url(base_url, "cloud") + "/"


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
    """Every client's settings for a pkgcache at `base_url`, PyPI ones only if PyPI is served, conda ones likewise.

    When reads need a user, each holds the USER and PASSWORD placeholders where that client takes them."""
    auth = needs_credentials(settings)
    snippets: list[Snippet] = []
    if settings.pypi.enabled:
        snippets += pip_snippets(base_url, auth)
        snippets += uv_snippets(base_url, auth)
        snippets.append(poetry_snippet(base_url, auth))
        snippets.append(pdm_snippet(base_url, auth))
    if settings.conda.enabled:
        snippets.append(condarc_snippet(base_url, settings.conda.channels, auth))
    pixi = pixi_snippet(base_url, settings)
    if pixi is not None:
        snippets.append(pixi)
        if auth:
            snippets.append(pixi_auth_snippet(base_url, settings))
    return snippets


def pip_snippets(base_url: str, auth: bool = False) -> list[Snippet]:
    # pip.conf is the user's own file: the credentials may sit in the address (or in ~/.netrc).
    index = pypi_index_url(with_credentials(base_url) if auth else base_url)
    host = url_host(base_url)
    conf = ["[global]", f"index-url = {index}"]
    commands = [f"pip config set global.index-url {shell_quote(index)}"]
    if is_plain_http(base_url):
        # pip ignores a plain-http index unless its host is trusted (loopback excepted).
        conf.append(f"trusted-host = {host}")
        commands.append(f"pip config set global.trusted-host {shell_quote(host)}")
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


def uv_snippets(base_url: str, auth: bool = False) -> list[Snippet]:
    index = pypi_index_url(base_url)
    toml = ["[[index]]"]
    env = [f"export UV_DEFAULT_INDEX={shell_quote(index)}"]
    if auth:
        # uv.toml is the user's own file; in the environment, uv takes a named index's user and password apart.
        toml.append(f"name = {_toml_string(INDEX_NAME)}")
        toml.append(f"url = {_toml_string(pypi_index_url(with_credentials(base_url)))}")
        variable = f"UV_INDEX_{INDEX_NAME.upper()}"
        env = [
            f"export UV_DEFAULT_INDEX={shell_quote(f'{INDEX_NAME}={index}')}",
            f"export {variable}_USERNAME={USER_PLACEHOLDER}",
            f"export {variable}_PASSWORD={PASSWORD_PLACEHOLDER}",
        ]
    else:
        toml.append(f"url = {_toml_string(index)}")
    toml.append("default = true")
    if is_plain_http(base_url):
        host = url_host(base_url)
        env.append("# Plain http needs nothing more: UV_INSECURE_HOST only skips TLS certificate checks, for when")
        env.append(f"# pkgcache sits behind https with a self-signed certificate (then UV_INSECURE_HOST={host}).")
    default = f"{INDEX_NAME}={index}" if auth else index
    env.append(f'# Windows PowerShell: $env:UV_DEFAULT_INDEX = "{default}"')
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


def poetry_snippet(base_url: str, auth: bool = False) -> Snippet:
    # The source's address goes into pyproject.toml and poetry.lock, which are committed: never the password.
    commands = [f"poetry source add --priority=primary {INDEX_NAME} {shell_quote(pypi_index_url(base_url))}"]
    if auth:
        commands.append("# Your user and password go to poetry's own store (keyring or auth.toml), once per machine:")
        commands.append(f"poetry config http-basic.{INDEX_NAME} {USER_PLACEHOLDER} {PASSWORD_PLACEHOLDER}")
    return Snippet(
        client="poetry",
        title="poetry (in each project)",
        text=_lines(commands),
        kind="shell",
        language="sh",
    )


def pdm_snippet(base_url: str, auth: bool = False) -> Snippet:
    # `pdm config` without -l writes pdm's global config, the user's own file.
    commands = [f"pdm config pypi.url {shell_quote(pypi_index_url(base_url))}"]
    if is_plain_http(base_url):
        # pdm (2.29, through unearth) skips a plain-http index on any host but loopback unless its source has
        # verify_ssl=false, which marks the host trusted (and, for https, turns off certificate checks).
        commands.append("pdm config pypi.verify_ssl false")
    if auth:
        commands.append(f"pdm config pypi.username {USER_PLACEHOLDER}")
        commands.append(f"pdm config pypi.password {PASSWORD_PLACEHOLDER}")
    return Snippet(client="pdm", title="pdm config", text=_lines(commands), kind="shell", language="sh")


def condarc_snippet(base_url: str, channels: list[str], auth: bool = False) -> Snippet:
    # ~/.condarc is the user's own file; conda and mamba take a channel's user and password in its address.
    if auth:
        base_url = with_credentials(base_url)
    # With its trailing slash: rattler (pixi) joins a name to the alias as a relative URL, so without one it asks
    # for /conda/conda-forge; conda strips a trailing slash before it joins.
    lines = [f"channel_alias: {channel_alias(base_url)}"]
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
    # No credentials here: pixi copies the PyPI index-url into the pixi.toml of a project it makes.
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


def pixi_auth_snippet(base_url: str, settings: Settings) -> Snippet:
    """Where pixi finds the user and password: its credential store for conda channels (keyed by host, as
    rattler looks them up), ~/.netrc for PyPI."""
    lines = []
    if settings.conda.enabled:
        lines.append(
            f"pixi auth login {shell_quote(url_host(base_url))} "
            f"--username {USER_PLACEHOLDER} --password {PASSWORD_PLACEHOLDER}"
        )
    if settings.pypi.enabled:
        lines.append(f"# PyPI packages: pixi reads ~/.netrc, with this line in it: {netrc_line(base_url)}")
    return Snippet(client="pixi", title="pixi credentials", text=_lines(lines), kind="shell", language="sh")


def quick_setup(base_url: str, settings: Settings) -> str:
    """One line that points the most common client at pkgcache (with the placeholders when reads need a user)."""
    address = with_credentials(base_url) if needs_credentials(settings) else base_url
    if settings.pypi.enabled:
        line = f"pip config set global.index-url {shell_quote(pypi_index_url(address))}"
        if is_plain_http(base_url):
            line += f" && pip config set global.trusted-host {shell_quote(url_host(base_url))}"
        return line
    return f"conda config --set channel_alias {shell_quote(channel_alias(address))}"


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
