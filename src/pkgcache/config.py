"""The one place configuration lives: a typed model loaded from TOML, the environment and command-line flags.

Priority, highest first: flags given to `pkgcache serve`, environment variables (`PKGCACHE_SECTION__KEY`, e.g.
`PKGCACHE_SERVER__PORT=8080`; lists in JSON or, for lists of names, `a,b`: `pkgcache.env_settings`), the TOML
file, built-in defaults. A relative path in the TOML file is taken from the file's folder; one given as a flag or
in the environment, from the working directory.

Settings once resolved can be recorded (`record_settings`) and read back as they were (`settings_from_record`),
without the environment or a TOML file having a say: that is how `pkgcache start` hands its settings to the process
it launches, and how `restart` brings the same service back.
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import ipaddress
import os
import re
import sys
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pkgcache import __version__
from pkgcache.conda_subdirs import KNOWN_SUBDIRS
from pkgcache.env_settings import CommaSeparated, EnvValueError, PkgcacheEnvSource, closest_name
from pkgcache.node_identity import NAME_PATTERN, NodeIdentity, host_node_name
from pkgcache.policy.config import CondaPolicySettings, PypiPolicySettings
from pkgcache.presets import (
    CONDA_PRESETS,
    DEFAULT_CONDA_UPSTREAMS,
    DEFAULT_PYPI_UPSTREAMS,
    PYPI_PRESET_LIMITS,
    PYPI_PRESETS,
)

DEFAULT_PORT = 3150


class ConfigError(Exception):
    """The configuration cannot be used; the message says why, in words an admin can act on."""


def _default_data_dir() -> Path:
    return Path.home() / ".cache" / "pkgcache"


def _check_http_url(url: str, *, presets: Mapping[str, object] | None = None) -> str:
    """`url` ending in "/"; ValueError, naming the nearest preset and listing them where one would have been taken
    (`presets`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = redact_credentials(url)
        if presets is None:
            raise ValueError(f"{shown!r} is not an http(s) URL")
        nearest = closest_name(url, presets)
        hint = f"; did you mean {nearest!r}?" if nearest is not None else ";"
        listed = ", ".join(presets)
        raise ValueError(f"{shown!r} is neither a preset name nor an http(s) URL{hint} the presets are {listed}")
    return url if url.endswith("/") else url + "/"


def _name_from_url(url: str) -> str:
    """An upstream given by URL is named by its host and port: never by its credentials (user:password@)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`url` without its `user:password@`, and the user and password it held (percent-decoded; None: not given)."""
    parts = urlsplit(url)
    userinfo, at, host_port = parts.netloc.rpartition("@")
    if not at:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, host_port, parts.path, parts.query, parts.fragment))
    return bare, unquote(user), unquote(password) if colon else None


# A URL's `user:password@` (or `user@`) in any text: up to the last "@" before the path.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s?#]*)@")


def redact_credentials(text: str) -> str:
    """`text` with every URL's credentials shown as `user:***@`: what status, logs, errors and commands show."""

    def shown(match: re.Match[str]) -> str:
        return f"{match.group(1)}{match.group(2).partition(':')[0]}:***@"

    return _USERINFO.sub(shown, text)


def with_user_shown(url: str, user: str | None) -> str:
    """`url` (without credentials) as it may be shown when `user` (and a password) go with its requests."""
    if user is None:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{user}:***@{parts.netloc}", parts.path, parts.query, parts.fragment))


# Where an http(s) URL's requests go: its scheme, host (as `normalise_host` gives it) and port (the scheme's when it
# names none). An upstream's credentials go with every request to its own origins, and with none to any other.
Origin = tuple[str, str, int | None]


def url_origin(url: str) -> Origin:
    """The origin of an http(s) URL (`Origin`)."""
    host, port = url_host_port(url)
    return (urlsplit(url).scheme.lower(), host, port)


def format_origin(origin: Origin) -> str:
    scheme, host, port = origin
    return f"{scheme}://{format_host_entry(host, port)}"


# A host (lower case, no brackets, an IP address in one spelling) and a port; None: any port.
HostPort = tuple[str, int | None]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_host(host: str) -> str:
    """A host as pkgcache compares hosts: `::1` and `[0:0::1]`, or `Files.Intranet.` and `files.intranet`, are one."""
    host = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    try:
        return host.encode("idna").decode("ascii")  # as it goes on the wire (and as aiohttp names it)
    except UnicodeError:
        return host


def parse_host_entry(entry: str) -> HostPort:
    """An `allowed_hosts` entry: `host`, `host:port`, an IP address, `[v6 address]:port`."""
    text = entry.strip()
    try:
        return (ipaddress.IPv6Address(text).compressed, None)  # a bare IPv6 address: its colons are not a port
    except ValueError:
        pass
    hint = f"{entry!r} is not a host or host:port (like files.intranet:8080, 10.1.2.3 or [fd00::5]:8080)"
    if not text or any(mark in text for mark in "/@?# "):
        raise ValueError(hint)
    parts = urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(hint) from None
    if not parts.hostname:
        raise ValueError(hint)
    return (normalise_host(parts.hostname), port)


def format_host_entry(host: str, port: int | None) -> str:
    """A host and port written as an `allowed_hosts` entry (the way a refusal names them)."""
    shown = f"[{host}]" if ":" in host and port is not None else host
    return shown if port is None else f"{shown}:{port}"


def url_host_port(url: str) -> HostPort:
    """The host and port an http(s) URL connects to (the scheme's port when it names none)."""
    parts = urlsplit(url)
    return (normalise_host(parts.hostname or ""), parts.port or _DEFAULT_PORTS.get(parts.scheme))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_AUTO_WORKERS = 4

# The levels `--log-level` offers; the file and the environment are held to the same.
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


class ServerConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: LogLevel = "info"
    # Serving processes sharing the port: 0 = one per CPU core (at most 4), 1 = a single process.
    workers: int = Field(0, ge=0, le=64)
    # A client that takes longer than this to send its request headers is disconnected (slowloris).
    header_timeout: float = Field(10.0, gt=0, description="seconds a client has to send its request headers")
    keepalive_timeout: float = Field(15.0, gt=0, description="seconds an idle keep-alive connection is kept")
    # Who this node is, in every answer's X-Pkgcache-Node / X-Pkgcache-Tier headers, /metrics and the page.
    node_name: str | None = Field(
        None, description="this node's name in answers' headers, /metrics and the page; unset: the host name"
    )
    tier: str | None = Field(
        None, description='a label for this node\'s level, shared by a cluster\'s nodes (e.g. "central", "office-sh")'
    )
    # /-/health answers 503 below this, so a load balancer sends nothing to a node that could not store a file.
    min_free_space: ByteSize = Field(
        ByteSize(1 << 30),
        description='free space (bytes, or a size like "5GB") the data directory keeps for /-/health to answer 200',
    )
    # Never contact an upstream: pages list only cached files, repodata only cached packages (docs/operations.md).
    offline: bool = Field(False, description="serve only what the cache holds and never contact an upstream")

    def worker_count(self) -> int:
        """How many serving processes to run. Several need Linux (SO_REUSEPORT spreading connections, fork)."""
        if not sys.platform.startswith("linux"):
            return 1
        if self.workers:
            return self.workers
        return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        # "INFO" was always understood (logging's own spelling): keep it so.
        return value.lower() if isinstance(value, str) else value

    @field_validator("node_name", "tier")
    @classmethod
    def _fit_for_a_header(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError("use 1 to 63 letters, digits, '.', '-' or '_', starting with a letter or digit")
        return value

    def identity(self) -> NodeIdentity:
        """This node's name (the host name unless one is set) and tier."""
        return NodeIdentity(self.node_name or host_node_name(), self.tier)

    def loop_mark(self) -> str:
        """A short mark this instance puts in the User-Agent it sends upstream, to know its own requests when a
        configuration loops back to itself (an upstream, or a cluster's address, that is this very pkgcache), or
        through other pkgcaches (the marks of those a request came through go on with it: node_identity.py).
        Derived from the node and its data directory: the same in every worker, no host name given away."""
        seed = f"{self.identity().name}\0{self.data_dir}".encode()
        return "+" + hashlib.sha256(seed).hexdigest()[:12]


class UpstreamPolicy(_Section):
    """How pkgcache treats every upstream: politeness, timeouts and failover."""

    user_agent: str = f"pkgcache/{__version__}"
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0, description="longest silence while reading a response")
    # Below the clients' own timeouts (pip gives up after 15 s): a silent mirror is left for the next one in time.
    first_byte_timeout: float = Field(10.0, gt=0, description="seconds to wait for an upstream's answer to start")
    # A body arriving slower than this (averaged over rate_window) is taken over by the next upstream, resuming
    # where it stopped; the last upstream left is never given up on for being slow.
    min_rate: int = Field(10240, ge=0, description="bytes per second an upstream must keep up; 0: no minimum")
    rate_window: float = Field(10.0, gt=0, description="seconds over which min_rate is measured")
    # A body arriving at under this share of what another upstream has lately delivered is taken over by that one
    # in the same way (and its upstream rests): a mirror at 20 KB/s is not left to hold a download for minutes
    # while another does megabytes a second.
    relative_min_rate: float = Field(
        0.1, ge=0, le=1, description="share of another upstream's recent rate an upstream must keep up; 0: off"
    )
    # No rate is known for the others on a cold start, so relative_min_rate has nothing to compare with: a file
    # transfer that has run this long and is not near its end has one other upstream that has the file timed on a
    # range of up to 1 MiB (upstream/compare.py), once per upstream transfer; under relative_min_rate of what that
    # one did, the transfer goes on from it, resuming with Range. A drip above min_rate held pip for 2 minutes
    # otherwise.
    compare_after: float = Field(
        3.0,
        ge=0,
        description="seconds into a file transfer before a slow one is compared with another upstream; 0: never",
    )
    slot_wait: float = Field(2.0, ge=0, description="seconds to wait for a busy upstream before trying the next")
    # A PyPI project page is read whole before its client gets a byte (pip gives up after 15 s of silence and asks
    # again, up to 5 times; uv after 30 s): one that takes longer than this (a page that never ends, arriving above
    # min_rate) is left for the next upstream, and its upstream rests. Not shorter: a big project's page from a far
    # mirror (7 MB, 30,000 files) takes 12-15 s whole, and cutting it rested a healthy mirror for every project.
    # The last upstream left is never given up on for it, except by the check of a disputed hash against the other
    # upstreams' pages (each asked alone, which only that check waits on).
    page_timeout: float = Field(
        20.0, gt=0, description="seconds one upstream may take to give a whole project page while another could"
    )
    cooldown: float = Field(60.0, ge=0, description="seconds a failing upstream is skipped")
    max_retry_after: float = Field(3600.0, ge=0, description="longest rest an upstream's Retry-After can ask for")
    max_connections: int = Field(8, ge=1, description="concurrent connections per upstream")
    max_redirects: int = Field(5, ge=0)
    # An HTTP proxy for reaching upstreams (e.g. "http://proxy.corp:3128"); None: connect directly. The
    # environment's *_PROXY variables are deliberately not used, so a proxy is always a visible choice.
    proxy: str | None = None
    # Hosts pkgcache may fetch from whatever address they resolve to, besides the ones the upstreams' URLs and the
    # proxy name (upstream/address_guard.py): a mirror's link to any other host is followed only to public addresses.
    allowed_hosts: Annotated[list[str], CommaSeparated()] = Field(
        default_factory=list,
        description="hosts (host or host:port) a mirror's links may lead to although they are on a private network",
    )

    @field_validator("proxy")
    @classmethod
    def _proxy_is_http(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value).rstrip("/")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_or_host_ports(cls, value: list[str]) -> list[str]:
        return [format_host_entry(*parse_host_entry(entry)) for entry in value]


class _UpstreamCredentials(_Section):
    """An upstream's user and password (HTTP basic auth), for a mirror whose reads need them: a central pkgcache
    with `[access] users`, an internal Artifactory or Nexus. Given as `user` and `password`, or in its URLs
    (`http://user:password@host/...`), where they are taken out at once: the URLs kept (and shown, logged, named
    after) have none. They go with every request to the origins of the upstream's URLs (scheme, host, port: its
    pages, its files there, ranges, metadata, probes), never to another origin (a page's links to another host, a
    redirect there); see `upstream/credentials.py`."""

    url_keys: ClassVar[tuple[str, ...]]
    user: str | None = None
    password: str | None = Field(None, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_urls(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        found: set[tuple[str, str]] = set()
        for key in cls.url_keys:
            url = value.get(key)
            if isinstance(url, str):
                bare, user, password = split_credentials(url)
                if user is not None:
                    found.add((user, password or ""))
                    value[key] = bare
        if len(found) > 1:
            raise ValueError("the upstream's URLs give different credentials (user:password@): give one user")
        if found:
            user, password = found.pop()
            given_user, given_password = value.get("user"), value.get("password")
            if (given_user is not None and given_user != user) or (
                given_password is not None and given_password != password
            ):
                raise ValueError("the credentials in the upstream's URL and its user or password differ: give one")
            value["user"], value["password"] = user, password
        return value

    @model_validator(mode="after")
    def _password_with_a_user(self) -> _UpstreamCredentials:
        if self.password is not None and self.user is None:
            raise ValueError("a password is given without a user: give the upstream's user too")
        if self.user is not None and ":" in self.user:
            raise ValueError("a user name cannot hold a ':' (HTTP basic auth)")
        return self

    def credentials(self) -> tuple[str, str] | None:
        """(user, password) to send this upstream; None: its requests carry none."""
        return None if self.user is None else (self.user, self.password or "")

    def origins(self) -> set[Origin]:
        """Where this upstream's URLs send requests: the origins its credentials go to."""
        return {url_origin(url) for key in self.url_keys if isinstance(url := getattr(self, key), str)}

    def shown(self, url: str) -> str:
        """One of its URLs as it may be shown: `user:***@` when credentials go with it."""
        return with_user_shown(url, self.user)


class PypiUpstream(_UpstreamCredentials):
    """One PyPI upstream: a simple-index root URL, named for logs and status."""

    url_keys = ("url", "files_url")
    name: str
    url: str
    # Where this mirror keeps `packages/...` when it is not beside the index (`<root>/packages/`).
    files_url: str | None = None
    max_connections: int | None = Field(None, ge=1)
    # Seconds between two range requests to this mirror (reading wheel metadata); USTC allows about one a second.
    range_interval: float = Field(0.0, ge=0)

    @classmethod
    def parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value in PYPI_PRESETS:
            return {"name": value, "url": PYPI_PRESETS[value], **PYPI_PRESET_LIMITS.get(value, {})}
        url = _check_http_url(value, presets=PYPI_PRESETS)
        return {"name": _name_from_url(url), "url": url}

    @field_validator("url", "files_url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


class _UpstreamSide(_Section):
    """What the PyPI and conda sections share: an ordered list of upstreams, given by preset name, URL or table."""

    upstream_type: ClassVar[type[PypiUpstream] | type[CondaUpstream]]
    enabled: bool = True

    @field_validator("upstreams", mode="before", check_fields=False)
    @classmethod
    def _resolve_presets(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        return [cls.upstream_type.parse(item) for item in items]

    @field_validator("upstreams", check_fields=False)
    @classmethod
    def _at_least_one_and_named_apart(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("give at least one upstream")
        seen: set[str] = set()
        for upstream in value:
            if upstream.name in seen:
                raise ValueError(f"two upstreams are named {upstream.name!r}; give them distinct names")
            seen.add(upstream.name)
        return value


class PypiConfig(_UpstreamSide, PypiPolicySettings):
    # The policy keys (min_release_age, deny, allow...) come from PypiPolicySettings: docs/policy.md.
    upstream_type = PypiUpstream
    upstreams: Annotated[list[PypiUpstream], CommaSeparated()] = Field(
        default_factory=lambda: list(DEFAULT_PYPI_UPSTREAMS), validate_default=True
    )
    index_ttl: float = Field(600.0, ge=0, description="seconds a project page is fresh")


class CondaUpstream(_UpstreamCredentials):
    """One conda upstream: where its `pkgs/...` channels live and where its community channels live."""

    url_keys = ("pkgs_url", "cloud_url")
    name: str
    pkgs_url: str
    cloud_url: str
    max_connections: int | None = Field(None, ge=1)

    @classmethod
    def parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value in CONDA_PRESETS:
            pkgs, cloud = CONDA_PRESETS[value]
            return {"name": value, "pkgs_url": pkgs, "cloud_url": cloud}
        # A bare URL is a mirror laid out like the domestic ones: BASE/pkgs/... and BASE/cloud/...
        base = _check_http_url(value, presets=CONDA_PRESETS)
        return {"name": _name_from_url(base), "pkgs_url": base + "pkgs/", "cloud_url": base + "cloud/"}

    @field_validator("pkgs_url", "cloud_url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        return _check_http_url(value)


class CacheConfig(_Section):
    """Limits on what the cache keeps."""

    # e.g. "200GB"; when passed, least recently used package files are evicted. None: no limit.
    max_size: ByteSize | None = None


class AccessConfig(_Section):
    """Who may use the service. Reads are open unless users are listed; the admin API needs the token."""

    # user -> password for HTTP basic auth on every read; empty: reads are open.
    users: dict[str, str] = Field(default_factory=dict)
    # Bearer token for the admin HTTP API (purge, refresh, gc); None: the admin API is off.
    admin_token: str | None = None

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        return value


DEFAULT_CONDA_CHANNELS = [
    "pkgs/main",
    "pkgs/r",
    "pkgs/msys2",
    "pkgs/free",
    "cloud/conda-forge",
    "cloud/bioconda",
    "cloud/pytorch",
    "cloud/nvidia",
]


class CondaConfig(_UpstreamSide, CondaPolicySettings):
    # The same policy keys as [pypi], in conda's words (CondaPolicySettings).
    upstream_type = CondaUpstream
    upstreams: Annotated[list[CondaUpstream], CommaSeparated()] = Field(
        default_factory=lambda: list(DEFAULT_CONDA_UPSTREAMS), validate_default=True
    )
    channels: Annotated[list[str], CommaSeparated()] = Field(default_factory=lambda: list(DEFAULT_CONDA_CHANNELS))
    index_ttl: float = Field(300.0, ge=0, description="seconds a repodata file is fresh")
    # "<channel>/<subdir>" whose shards are made ahead of any request (conda/shards_ahead.py).
    prebuild_shards: Annotated[list[str], CommaSeparated()] = Field(default_factory=list)

    @field_validator("channels")
    @classmethod
    def _channel_paths(cls, value: list[str]) -> list[str]:
        for channel in value:
            parts = channel.strip("/").split("/")
            if len(parts) != 2 or parts[0] not in ("pkgs", "cloud") or not parts[1]:
                raise ValueError(f"channel {channel!r} must look like 'pkgs/NAME' or 'cloud/NAME'")
        return [channel.strip("/") for channel in value]

    @model_validator(mode="after")
    def _prebuilt_subdirs_served(self) -> CondaConfig:
        for entry in self.prebuild_shards:
            channel, _, subdir = entry.strip("/").rpartition("/")
            if channel not in self.channels:
                raise ValueError(
                    f"prebuild_shards entry {entry!r} must be CHANNEL/SUBDIR with CHANNEL one of conda.channels "
                    "(like 'cloud/conda-forge/linux-64')"
                )
            # Checked here, not when the service starts: a typo (linux-65) would only be an error in its log.
            if subdir not in KNOWN_SUBDIRS:
                known = ", ".join(sorted(KNOWN_SUBDIRS))
                raise ValueError(f"prebuild_shards entry {entry!r}: {subdir!r} is not a conda subdir ({known})")
        self.prebuild_shards = [entry.strip("/") for entry in self.prebuild_shards]
        return self


# The config file's values, as `_read_config_file` gives them, while `load_settings` builds the settings.
_file_values: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pkgcache_file_values", default=None
)
# Set while reading recorded settings back: then only the values given count, not the environment.
_given_only: contextvars.ContextVar[bool] = contextvars.ContextVar("pkgcache_given_only", default=False)


class Settings(BaseSettings):
    """Everything pkgcache can be told."""

    model_config = SettingsConfigDict(
        env_prefix="PKGCACHE_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    upstream: UpstreamPolicy = Field(default_factory=UpstreamPolicy)
    pypi: PypiConfig = Field(default_factory=PypiConfig)
    conda: CondaConfig = Field(default_factory=CondaConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)

    @model_validator(mode="after")
    def _something_enabled(self) -> Settings:
        if not (self.pypi.enabled or self.conda.enabled):
            raise ValueError("both pypi and conda are disabled: nothing to serve")
        return self

    @model_validator(mode="after")
    def _one_user_an_origin(self) -> Settings:
        seen: dict[Origin, tuple[str, tuple[str, str]]] = {}
        upstreams: list[PypiUpstream | CondaUpstream] = [*self.pypi.upstreams, *self.conda.upstreams]
        for upstream in upstreams:
            credentials = upstream.credentials()
            if credentials is None:
                continue
            for origin in sorted(upstream.origins()):
                other = seen.setdefault(origin, (upstream.name, credentials))
                if other[1] != credentials:
                    raise ValueError(
                        f"upstreams {other[0]!r} and {upstream.name!r} give {format_origin(origin)} different"
                        " credentials: requests to one origin carry one user's"
                    )
        return self

    def upstream_credentials(self) -> dict[Origin, tuple[str, str]]:
        """The user and password that go with every request to each origin of an upstream that has them (the
        enabled sides')."""
        sides = [side for side in (self.pypi, self.conda) if side.enabled]
        found: dict[Origin, tuple[str, str]] = {}
        for upstream in (upstream for side in sides for upstream in side.upstreams):
            credentials = upstream.credentials()
            if credentials is not None:
                found.update(dict.fromkeys(upstream.origins(), credentials))
        return found

    def trusted_upstream_hosts(self) -> frozenset[HostPort]:
        """Every host:port the configuration names for reaching upstreams (each upstream's URLs, the proxy) and
        `[upstream] allowed_hosts`: pkgcache may fetch from these whatever addresses they have. Disabled sides
        count too: they are the admin's own choices all the same."""
        urls = [url for upstream in self.pypi.upstreams for url in (upstream.url, upstream.files_url) if url]
        urls += [url for upstream in self.conda.upstreams for url in (upstream.pkgs_url, upstream.cloud_url)]
        if self.upstream.proxy:
            urls.append(self.upstream.proxy)
        named = {url_host_port(url) for url in urls}
        return frozenset(named | {parse_host_entry(entry) for entry in self.upstream.allowed_hosts})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _given_only.get():
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, PkgcacheEnvSource(settings_cls)]
        file_values = _file_values.get()
        if file_values is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=file_values))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a TOML file (optional), the environment and flag overrides.

    `overrides` are nested dicts keyed like the TOML file (`server={"port": 8080}`); None values are dropped so
    an unset flag never hides the file or the environment.
    """
    token = _file_values.set(None if config_file is None else _read_config_file(config_file))
    try:
        return Settings(**_drop_none(overrides))
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, config_file)) from None
    except EnvValueError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        _file_values.reset(token)


def record_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON values, every field spelled out, for `settings_from_record` to read back."""
    return settings.model_dump(mode="json")


def settings_from_record(record: Mapping[str, Any], **overrides: Any) -> Settings:
    """Settings recorded by `record_settings`, with `overrides` (shaped as for `load_settings`) laid over them.

    Neither the environment nor a TOML file is read: a record is already resolved, and reading it back must give
    the same settings whatever the environment of the process that reads it. An override changes only its own key
    (`server={"port": 8080}` keeps the recorded host).
    """
    merged = _deep_merge(copy.deepcopy(dict(record)), _drop_none(overrides))
    token = _given_only.set(True)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, None)) from None
    finally:
        _given_only.reset(token)


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _read_config_file(path: Path) -> dict[str, Any]:
    """The TOML file's values, its relative paths made absolute from the file's folder."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    # Windows editors (Notepad among them) may start a UTF-8 file with a byte order mark, which TOML does not allow.
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Most often GBK from an editor's default here: say so in words, not as a traceback.
        bad = raw[exc.start]
        raise ConfigError(
            f"config file {path} is not UTF-8 (byte {bad:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    _anchor_relative_paths(values, path.absolute().parent)
    return values


def _anchor_relative_paths(values: dict[str, Any], folder: Path) -> None:
    """Relative paths in a config file are taken from its folder, so a command given the file's absolute path
    finds the same data directory from any working directory. Every Path-valued key of every section counts."""
    for section_name, field in Settings.model_fields.items():
        section = values.get(section_name)
        model = field.annotation
        if not isinstance(section, dict) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key, key_field in model.model_fields.items():
            value = section.get(key)
            if isinstance(value, str) and Path in (key_field.annotation, *get_args(key_field.annotation)):
                section[key] = str(folder / Path(value).expanduser())  # an absolute path is kept as it is


def _drop_none(value: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = _drop_none(item)
            if not item:
                continue
        if item is not None:
            cleaned[key] = item
    return cleaned


def _describe_validation_error(exc: ValidationError, config_file: Path | None) -> str:
    where = f" in {config_file}" if config_file else ""
    lines = [f"invalid configuration{where}:"]
    lines += [f"  {_describe_error(error)}" for error in exc.errors()]
    return "\n".join(lines)


def _describe_error(error: ErrorDetails) -> str:
    """One validation error in words: an unknown name with the nearest known one, a check's own message as is."""
    location = error["loc"]
    if error["type"] == "extra_forbidden":
        return _unknown_setting(location)
    message = error["msg"]
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        message = str(error["ctx"]["error"])  # pydantic's "Value error, " adds nothing
    return f"{_dotted(location) or '(top level)'}: {message}"


def _unknown_setting(location: tuple[int | str, ...]) -> str:
    """`unknown setting server.prot; did you mean server.port?`, for a section or key that the model has not, at
    any depth (`pypi.upstreams.0.nmae`); when none is near, the names there are."""
    name, parent = str(location[-1]), location[:-1]
    model = _model_at(parent)
    known = sorted(model.model_fields) if model is not None else []
    said = f"unknown setting {_dotted(location)}"
    nearest = closest_name(name, known)
    if nearest is not None:
        return f"{said}; did you mean {_dotted((*parent, nearest))}?"
    if not parent:
        # A key written before any [section] line, or under none: the sections that have it.
        sections = [
            f"{section}.{name}"
            for section, field in Settings.model_fields.items()
            if name in getattr(_model_in(field.annotation), "model_fields", {})
        ]
        if sections:
            return f"{said}; did you mean {' or '.join(sections)} (under [{sections[0].partition('.')[0]}])?"
        return f"{said}; the sections are {', '.join(f'[{section}]' for section in known)}"
    if known:
        table = f"[{parent[0]}]" if len(parent) == 1 else _dotted(parent)
        return f"{said}; the settings of {table} are {', '.join(known)}"
    return said


def _dotted(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location)


def _model_at(location: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose keys are allowed at `location` (a path of keys and list indexes from the top), if any."""
    model: type[BaseModel] | None = Settings
    for part in location:
        if isinstance(part, int):
            continue  # the list's items: already unwrapped to their model
        field = model.model_fields.get(part) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or the items of a list, the values of a table, the one of a union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_in(get_args(annotation)[0])
    if origin in (list, dict, Union, types.UnionType):
        for argument in reversed(get_args(annotation)):
            found = _model_in(argument)
            if found is not None:
                return found
    return None
