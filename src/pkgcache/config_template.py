"""The commented configuration file that `pkgcache init` writes.

It is generated from the Settings model itself, so every section and key appears with its real default, including
ones added later; the hand-written notes below explain the keys an admin is most likely to change. Keys without a
note fall back to the field's description.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pkgcache import __version__
from pkgcache.config import Settings
from pkgcache.policy.config import TEMPLATE_NOTES as POLICY_NOTES
from pkgcache.presets import CONDA_PRESETS, DEFAULT_CONDA_UPSTREAMS, DEFAULT_PYPI_UPSTREAMS, PYPI_PRESETS

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

HEADER = f"""\
# pkgcache configuration (written by pkgcache {__version__} `pkgcache init`).
#
# Every key is shown with its default value: change what you need and delete the rest if you like.
# Use it with:  pkgcache start --config THIS_FILE   (or serve, status, stop, client-config, check).
# Priority, highest first: command-line flags, environment variables named PKGCACHE_<SECTION>__<KEY>
# (e.g. PKGCACHE_SERVER__PORT=8080), this file, built-in defaults.
"""

SECTION_NOTES: dict[str, str] = {
    "server": "Where pkgcache listens and keeps its cache.",
    "upstream": "How pkgcache treats every upstream mirror: timeouts, politeness and failover.",
    "pypi": "The PyPI side, served at http://HOST:PORT/pypi/simple/.",
    "conda": "The conda side, served at http://HOST:PORT/conda/<channel>/ (e.g. conda/cloud/conda-forge).",
    "cache": "Limits on what the cache keeps.",
    "access": "Who may use the service.",
}

KEY_NOTES: dict[str, str] = {
    "server.host": "Address to listen on; 0.0.0.0 means every IPv4 interface, 127.0.0.1 this machine only.",
    "server.port": "TCP port.",
    "server.data_dir": "The cache, the pid file and the log of `pkgcache start` live here; a relative path is "
    "taken from this file's folder.",
    "server.log_level": "debug, info, warning or error. At info, every request is logged on one line.",
    "server.workers": "Serving processes sharing the port: 0 = one per CPU core (at most 4), 1 = one process.",
    "server.offline": "Never contact a mirror: serve only what the cache holds (pages list only cached files).",
    "upstream.user_agent": "Sent to every mirror. The default names this pkgcache version.",
    "upstream.connect_timeout": "Seconds to wait for a connection to a mirror.",
    "upstream.read_timeout": "Longest silence, in seconds, while reading a mirror's answer.",
    "upstream.cooldown": "Seconds a failing mirror is skipped before it is tried again.",
    "upstream.max_connections": "Concurrent connections to each mirror (polite mirrors stay reachable).",
    "upstream.max_redirects": "Redirects followed per request.",
    "upstream.allowed_hosts": (
        "Hosts a mirror's links and redirects may lead to although they are on a private network, as host or "
        'host:port (like ["files.intranet:8080", "10.1.2.3"]). The upstreams and the proxy above are always allowed; '
        "any other host only when all its addresses are public (docs/operations.md)."
    ),
    "pypi.enabled": "Serve PyPI packages.",
    "pypi.upstreams": "Mirrors to use, in order of preference: preset names or simple-index URLs.",
    "pypi.index_ttl": "Seconds a project page is fresh; older pages are served while being refreshed.",
    "conda.enabled": "Serve conda channels.",
    "conda.upstreams": "Mirrors to use, in order of preference: preset names or base URLs (see below).",
    "conda.channels": "Channels served: pkgs/NAME (Anaconda's own) or cloud/NAME (community, like conda-forge).",
    "conda.index_ttl": "Seconds a repodata file is fresh.",
    "conda.prebuild_shards": (
        "CHANNEL/SUBDIR whose sharded repodata is made at start and kept fresh before any client asks "
        '(like "cloud/conda-forge/linux-64"): fetches that repodata whether or not anyone asks. Empty: on first use.'
    ),
    "cache.max_size": 'Largest cache size, e.g. "200GB"; least recently used packages are evicted. Unset: no limit.',
    "access.users": "user = password pairs for HTTP basic auth on every read. Empty: reads are open to all.",
    "access.admin_token": "Bearer token (16+ characters) for the admin HTTP API. Unset: the admin API is off.",
    **{f"{side}.{key}": note for side in ("pypi", "conda") for key, note in POLICY_NOTES.items()},
}

# The supply-chain policy's keys: written last in their sections, under a heading of their own.
POLICY_KEYS = tuple(POLICY_NOTES)
POLICY_HEADING = "# Supply-chain policy (docs/policy.md): what is served at all. By default, everything."

# Examples for keys whose default is "unset" (TOML has no null, so they are written commented out).
UNSET_EXAMPLES: dict[str, str] = {
    "cache.max_size": '"200GB"',
    "access.admin_token": '"a-long-random-secret-string"',
    "pypi.min_release_age": '"7d"',
    "conda.min_release_age": '"7d"',
}

# Written commented out: their defaults follow the installed version, which a copy in a file would freeze.
COMMENTED_OUT = frozenset({"upstream.user_agent"})

# Upstream lists are written as the preset names they default to, not expanded into URLs.
PRESET_DEFAULTS: dict[str, list[str]] = {
    "pypi.upstreams": DEFAULT_PYPI_UPSTREAMS,
    "conda.upstreams": DEFAULT_CONDA_UPSTREAMS,
}


def render_config_template() -> str:
    """The whole commented TOML file."""
    parts = [HEADER]
    for name, field in Settings.model_fields.items():
        section = field.get_default(call_default_factory=True)
        if isinstance(section, BaseModel):
            parts.append("\n".join(_render_table(name, section, SECTION_NOTES.get(name) or field.description)))
    return "\n".join(parts).rstrip() + "\n"


def write_config_template(path: Path, *, force: bool = False) -> None:
    """Write the template to `path`; refuses to replace an existing file unless `force`."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists (use --force to overwrite it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config_template(), encoding="utf-8")


def _render_table(dotted: str, model: BaseModel, note: str | None) -> Iterator[str]:
    if note:
        yield f"# {note}"
    yield f"[{dotted}]"
    subtables: list[tuple[str, BaseModel, str | None]] = []
    fields = type(model).model_fields
    policy_keys = [key for key in POLICY_KEYS if key in fields]
    for key in [*(key for key in fields if key not in policy_keys), *policy_keys]:
        value = getattr(model, key)
        path = f"{dotted}.{key}"
        if isinstance(value, BaseModel):
            subtables.append((path, value, KEY_NOTES.get(path) or fields[key].description))
            continue
        if policy_keys and key == policy_keys[0]:
            yield POLICY_HEADING
        yield from _render_key(path, key, value, KEY_NOTES.get(path) or fields[key].description)
        yield from _extra_notes(path)
    yield ""
    for path, value, sub_note in subtables:
        yield from _render_table(path, value, sub_note)


def _render_key(path: str, key: str, value: Any, note: str | None) -> Iterator[str]:
    if note:
        yield f"# {note}"
    if path in PRESET_DEFAULTS:
        value = PRESET_DEFAULTS[path]
    if value is None:
        yield f"# {key} = {UNSET_EXAMPLES.get(path, '...')}"
        return
    line = f"{key} = {toml_value(value)}"
    yield f"# {line}" if path in COMMENTED_OUT else line


def _extra_notes(path: str) -> Iterator[str]:
    """Preset lists and examples of custom upstreams, right after the upstreams keys."""
    if path == "pypi.upstreams":
        yield "# PyPI presets:"
        yield from (f"#   {name:<8} {url}" for name, url in PYPI_PRESETS.items())
        yield "# A mirror of your own, by URL (its simple-index root), or as a table to name it; a table may also give"
        yield "# files_url (where the mirror keeps packages/, when not beside simple/) and max_connections:"
        yield '#   upstreams = ["tuna", "https://pypi.campus.cn/simple/"]'
        yield (
            '#   upstreams = ["tuna", { name = "campus", url = "https://pypi.campus.cn/simple/", max_connections = 4 }]'
        )
        yield from _credentials_note()
    elif path == "conda.upstreams":
        yield "# conda presets (where pkgs/* channels live, where cloud/* channels live):"
        for name, (pkgs, cloud) in CONDA_PRESETS.items():
            yield f"#   {name:<9} {pkgs}  {cloud}"
        yield "# A mirror of your own: a base URL laid out like the university mirrors (BASE/pkgs/..., BASE/cloud/...),"
        yield "# or a table naming both roots:"
        yield '#   upstreams = ["tuna", "https://mirror.campus.cn/anaconda/"]'
        yield (
            '#   upstreams = ["tuna", { name = "campus", pkgs_url = "https://mirror.campus.cn/anaconda/pkgs/", '
            'cloud_url = "https://mirror.campus.cn/anaconda/cloud/" }]'
        )
        yield from _credentials_note()
    elif path == "access.users":
        yield '#   users = { alice = "a long password", build-bot = "another one" }'


def _credentials_note() -> Iterator[str]:
    yield "# One whose reads need HTTP basic auth (a central pkgcache with [access] users, an Artifactory): a table's"
    yield '# user = "...", password = "..." (or user:password@ in its URL); sent to its own host only, never shown.'


def toml_value(value: Any) -> str:
    """A default value written as TOML (strings, numbers, booleans, paths, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return _toml_string(_home_relative(value))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, BaseModel):
        return toml_value(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return _toml_string(str(value))


def _toml_string(value: str) -> str:
    # JSON string escapes are all valid in TOML basic strings.
    return json.dumps(value, ensure_ascii=False)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _home_relative(path: Path) -> str:
    """`~/...` for paths under the home directory, so the file works for whoever uses it."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)
