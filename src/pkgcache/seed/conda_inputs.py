"""conda inputs: `@EXPLICIT` lists, plain spec lists, environment.yml, pixi.lock (versions 4 to 7) and
conda-lock.yml, into exact `CondaFile`s (and `PypiFile`s for the PyPI packages pixi and conda-lock lock) or
`CondaSpec`s to resolve.

Shapes, as the tools write them (facts from their sources and specs): CEP 23 for explicit and plain spec lists
(`#<md5>` or `#sha256:<hex>` after a URL, `# platform: <subdir>` comments); rattler's `rattler_lock`
(`parse/models/v6`, `v7`, `parse/deserialize.rs`) and its test-data locks for pixi.lock: environments list
`{conda: URL}` / `{pypi: URL}` per platform, packages carry the hashes, v4/v5 entries say `kind` and `url`,
v7 adds `platforms` naming each platform's subdir; conda-lock's v1 `package` list (`manager`, `platform`,
`url`, `hash`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from . import fields
from .documents import LineList
from .fields import EntryError
from .model import CondaFile, CondaSpec, InputFile, InputFormat, Origin, PypiFile, SeedPlan
from .references import check_digest, filename_from_url, is_remote_url, unseedable_reason
from .requirements_txt import clean_lines, read_requirement_lines

# noarch, or <platform>-<arch> as conda names them (linux-64, osx-arm64, win-64, emscripten-wasm32...).
_SUBDIR = re.compile(r"^(noarch|[a-z0-9]+-[a-z0-9_]+)$")
_PACKAGE_FILE = re.compile(r"^[A-Za-z0-9_.+-]+-[^-/]+-[^-/]+\.(conda|tar\.bz2)$")
# CEP 23's explicit line: a URL or path to a package file, then an optional #md5 or #[sha256:]sha256.
_EXPLICIT_LINE = re.compile(
    r"^(?P<location>.*?(?P<fn>[^/\\#]+(?:\.tar\.bz2|\.conda)))"
    r"(?:#(?:(?P<md5>[0-9a-f]{32})|(?:sha256:)?(?P<sha256>[0-9a-f]{64})))?$"
)
_PLATFORM_COMMENT = re.compile(r"^#\s*platform:\s*(\S+)\s*$")
# A MatchSpec's name: an optional `channel[/subdir]::` prefix, then the package name, then its version/build.
_MATCHSPEC = re.compile(
    r"^(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_][A-Za-z0-9_.+-]*)(?P<rest>(?:[\s=<>!~\[].*)?)$"
)


# --- channels from URLs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageLocation:
    channel: str
    channel_url: str
    subdir: str
    filename: str


def locate_package(url: str, filename: str | None = None) -> PackageLocation:
    """Channel, subdir and file name of a conda package URL, whatever the host.

    `.../pkgs/<name>/<subdir>/<file>` is `pkgs/<name>` (repo.anaconda.com, mirrors' `anaconda/pkgs/...`,
    pkgcache's `conda/pkgs/...`); `.../cloud/<channel>/<subdir>/<file>` is `<channel>` (mirrors' and pkgcache's
    `cloud/`); otherwise the whole path before the subdir is the channel (`conda-forge` on anaconda.org and
    prefix.dev, `nvidia/label/cuda-12.1.0`), without anaconda.org's `t/<token>/` prefix. Raises ValueError.
    """
    parts = urlsplit(url)
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) < 3:
        raise ValueError(f"{url} is not <channel>/<subdir>/<package file>")
    name = filename or filename_from_url(url)
    subdir = segments[-2]
    if not name or not _PACKAGE_FILE.match(name):
        raise ValueError(f"{url} does not end in a conda package file (<name>-<version>-<build>.conda or .tar.bz2)")
    if not _SUBDIR.match(subdir):
        raise ValueError(f"{subdir!r} in {url} is not a conda subdir")
    base = segments[:-2]
    channel_url = f"{parts.scheme}://{parts.netloc}/{'/'.join(base)}"
    return PackageLocation(_channel_name(base), channel_url, subdir, name)


def _channel_name(base: list[str]) -> str:
    if "pkgs" in base[:-1]:
        start = len(base) - 1 - base[::-1].index("pkgs")
        return "/".join(base[start:])
    if "cloud" in base[:-1]:
        start = len(base) - base[::-1].index("cloud")
        return "/".join(base[start:])
    if len(base) > 2 and base[0] == "t":  # anaconda.org's private channels: /t/<token>/<channel>/...
        base = base[2:]
    return "/".join(base)


def _conda_file(url: str, origin: Origin, *, filename: str | None = None, **details: Any) -> CondaFile:
    location = locate_package(url, filename)
    return CondaFile(
        channel=location.channel,
        channel_url=location.channel_url,
        subdir=location.subdir,
        filename=location.filename,
        url=url,
        origin=origin,
        **details,
    )


def _digest(entry: Mapping[str, Any], algorithm: str) -> str | None:
    value = entry.get(algorithm)
    if value is None:
        return None
    try:
        return check_digest(algorithm, str(value))
    except ValueError as exc:
        raise EntryError(str(exc)) from None


# --- @EXPLICIT and plain spec lists --------------------------------------------------------------------------


def read_explicit(text: str, path: Path, plan: SeedPlan) -> None:
    """An `@EXPLICIT` list (conda list --explicit, conda-lock's per-platform `.lock` files)."""
    platform = _platform_comment(text)
    plan.inputs.append(InputFile(path, InputFormat.CONDA_EXPLICIT, platforms=(platform,) if platform else ()))
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#") or line == "@EXPLICIT":
            continue
        origin = Origin(path, number)
        found = _EXPLICIT_LINE.match(line)
        if not found:
            plan.error(origin, f"not a conda package URL (<url>/<name>-<version>-<build>.conda[#hash]): {line}")
            continue
        location = found.group("location")
        if not is_remote_url(location):
            plan.skip(location, unseedable_reason(location), origin)
            continue
        try:
            conda_file = _conda_file(location, origin, sha256=found.group("sha256"), md5=found.group("md5"))
        except ValueError as exc:
            plan.error(origin, str(exc))
            continue
        platforms = (platform,) if platform else (conda_file.subdir,)
        plan.conda_files.append(replace(conda_file, platforms=platforms))


def read_spec_list(text: str, path: Path, plan: SeedPlan) -> None:
    """A plain conda spec list (CEP 23 without `@EXPLICIT`: one MatchSpec a line, `# platform:` comment)."""
    platform = _platform_comment(text)
    platforms = (platform,) if platform else ()
    plan.inputs.append(InputFile(path, InputFormat.CONDA_SPECS, platforms=platforms))
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            _add_spec(line, Origin(path, number), (), platforms, plan)


def _platform_comment(text: str) -> str | None:
    for line in text.splitlines():
        found = _PLATFORM_COMMENT.match(line.strip())
        if found:
            return found.group(1)
    return None


def _add_spec(spec: str, origin: Origin, channels: tuple[str, ...], platforms: tuple[str, ...], plan: SeedPlan) -> None:
    found = _MATCHSPEC.match(spec.strip())
    if not found:
        plan.error(origin, f"not a conda MatchSpec: {spec}")
        return
    plan.conda_specs.append(CondaSpec(spec.strip(), found.group("name"), origin, channels, platforms))


# --- environment.yml -----------------------------------------------------------------------------------------


def read_environment_yml(doc: Mapping[str, Any], path: Path, plan: SeedPlan) -> None:
    top = Origin(path, getattr(doc, "line", None))
    try:
        channels = fields.strings(doc.get("channels"), "channels")
        platforms = fields.strings(doc.get("platforms"), "platforms")  # conda-lock's extension
        dependencies = fields.items(doc.get("dependencies"), "dependencies")
    except EntryError as exc:
        plan.error(top, str(exc))
        return
    plan.inputs.append(InputFile(path, InputFormat.ENVIRONMENT_YML, platforms=platforms))
    for index, dependency in enumerate(dependencies):
        origin = Origin(path, _line_of(dependencies, index))
        if isinstance(dependency, str):
            _add_spec(dependency, origin, channels, platforms, plan)
        elif isinstance(dependency, Mapping) and set(dependency) == {"pip"}:
            _read_pip_section(dependency["pip"], path, plan, origin)
        else:
            plan.error(origin, f"a dependency is a MatchSpec string or a 'pip:' list, not {dependency!r}")


def _read_pip_section(pip_lines: Any, path: Path, plan: SeedPlan, origin: Origin) -> None:
    if not isinstance(pip_lines, list) or not all(isinstance(line, str) for line in pip_lines):
        plan.error(origin, "'pip:' is not a list of requirement lines")
        return
    numbered = [(_line_of(pip_lines, index) or origin.line or 0, line) for index, line in enumerate(pip_lines)]
    # conda hands these to pip as a requirements file beside environment.yml: includes are relative to it.
    read_requirement_lines(clean_lines(numbered), path, path.parent, plan)


def _line_of(items: list[Any], index: int) -> int | None:
    return items.line_of(index) if isinstance(items, LineList) else None


# --- pixi.lock -----------------------------------------------------------------------------------------------


@dataclass
class _Uses:
    """Where a locked package is used: platforms and environments, in first-seen order."""

    platforms: dict[str, None] = field(default_factory=dict)
    environments: dict[str, None] = field(default_factory=dict)

    def add(self, platform: str, environment: str) -> None:
        self.platforms.setdefault(platform)
        self.environments.setdefault(environment)


_PIXI_VERSIONS = (4, 5, 6, 7)


def read_pixi_lock(doc: Mapping[str, Any], path: Path, plan: SeedPlan) -> None:
    version = doc.get("version")
    if version not in _PIXI_VERSIONS:
        plan.error(Origin(path), f"pixi.lock version {version!r} is not one this reader knows (4 to 7)")
        return
    try:
        subdirs = _pixi_platform_subdirs(doc)
        environments = fields.table(doc.get("environments"), "environments")
        packages = fields.items(doc.get("packages"), "packages")
        uses, indexes = _pixi_uses(environments, subdirs)
    except EntryError as exc:
        plan.error(Origin(path), str(exc))
        return
    all_platforms = {platform: None for use in uses.values() for platform in use.platforms}
    plan.inputs.append(
        InputFile(path, InputFormat.PIXI_LOCK, environments=tuple(environments), platforms=tuple(all_platforms))
    )
    for index, entry in enumerate(packages):
        origin = Origin(path, _line_of(packages, index))
        try:
            _read_pixi_package(fields.table(entry, "a packages entry"), origin, uses, indexes, plan)
        except EntryError as exc:
            plan.error(origin, f"package {_pixi_label(entry, index)}: {exc}")


def _pixi_label(entry: Any, index: int) -> str:
    """How an error names a packages entry: its name, else its file name (v6+ binary entries have no name)."""
    if not isinstance(entry, Mapping):
        return str(index + 1)
    location = next((entry[k] for k in ("conda", "pypi", "url", "path") if isinstance(entry.get(k), str)), "")
    return str(entry.get("name") or filename_from_url(location) or index + 1)


def _pixi_platform_subdirs(doc: Mapping[str, Any]) -> dict[str, str]:
    """Platform name -> conda subdir (v7 names its platforms; before, the name was the subdir)."""
    subdirs = {}
    for platform in fields.items(doc.get("platforms"), "platforms"):
        platform = fields.table(platform, "a platforms entry")
        name = fields.required_text(platform, "name")
        subdirs[name] = fields.text(platform, "subdir") or name
    return subdirs


def _pixi_uses(environments: Mapping[str, Any], subdirs: Mapping[str, str]) -> tuple[dict[str, _Uses], dict[str, str]]:
    """(location -> where it is used, pypi location -> the environment's first index)."""
    uses: dict[str, _Uses] = {}
    indexes: dict[str, str] = {}
    for env_name, environment in environments.items():
        environment = fields.table(environment, f"environment {env_name}")
        env_indexes = fields.strings(environment.get("indexes"), f"environment {env_name} indexes")
        by_platform = fields.table(environment.get("packages") or {}, f"environment {env_name} packages")
        for platform, refs in by_platform.items():
            for ref in fields.items(refs, f"environment {env_name} packages for {platform}"):
                ref = fields.table(ref, f"a package of environment {env_name}")
                location = fields.text(ref, "conda") or fields.text(ref, "pypi")
                if location is None:
                    raise EntryError(f"environment {env_name} lists a package with neither 'conda' nor 'pypi'")
                uses.setdefault(location, _Uses()).add(subdirs.get(str(platform), str(platform)), str(env_name))
                if "pypi" in ref and env_indexes:
                    indexes.setdefault(location, env_indexes[0])
    return uses, indexes


def _pixi_kind(entry: Mapping[str, Any]) -> tuple[str, str]:
    """("conda" | "pypi", location) of a packages entry, in either shape (v6+: the kind is the key)."""
    for kind in ("conda", "pypi"):
        if kind in entry:
            return kind, fields.required_text(entry, kind)
    kind = fields.required_text(entry, "kind")
    location = fields.text(entry, "url") or fields.text(entry, "path")
    if kind not in ("conda", "pypi") or location is None:
        raise EntryError("neither a conda nor a pypi package with a url or path")
    return kind, location


def _read_pixi_package(
    entry: Mapping[str, Any], origin: Origin, uses: Mapping[str, _Uses], indexes: Mapping[str, str], plan: SeedPlan
) -> None:
    kind, location = _pixi_kind(entry)
    use = uses.get(location, _Uses())
    name = fields.text(entry, "name") or location
    if not is_remote_url(location):
        what = "a package built from source" if kind == "conda" and not location.endswith((".conda", ".bz2")) else ""
        plan.skip(f"{name} ({location})", what or unseedable_reason(location), origin)
        return
    details = {
        "platforms": tuple(use.platforms),
        "environments": tuple(use.environments),
    }
    if kind == "conda":
        try:
            conda_file = _conda_file(
                location,
                origin,
                filename=fields.text(entry, "file_name"),
                sha256=_digest(entry, "sha256"),
                md5=_digest(entry, "md5"),
                size=fields.size(entry),
                **details,
            )
        except ValueError as exc:
            raise EntryError(str(exc)) from None
        plan.conda_files.append(conda_file)
        return
    filename = filename_from_url(location)
    if not filename:
        raise EntryError(f"{location} has no file name")
    hashes = {algorithm: digest for algorithm in ("sha256", "md5") if (digest := _digest(entry, algorithm))}
    plan.pypi_files.append(
        PypiFile(
            project=canonicalize_name(fields.required_text(entry, "name")),
            filename=filename,
            origin=origin,
            version=fields.text(entry, "version"),
            url=location,
            hashes=hashes,
            size=fields.size(entry),
            index_url=fields.text(entry, "index") or indexes.get(location),
            requires_python=fields.text(entry, "requires_python"),
            **details,
        )
    )


# --- conda-lock.yml ------------------------------------------------------------------------------------------


def read_conda_lock(doc: Mapping[str, Any], path: Path, plan: SeedPlan) -> None:
    """conda-lock's unified lock (version 1): one entry per package and platform."""
    if doc.get("version") != 1:
        plan.error(Origin(path), f"conda-lock version {doc.get('version')!r} is not one this reader knows (1)")
        return
    try:
        metadata = fields.table(doc.get("metadata"), "metadata")
        platforms = fields.strings(metadata.get("platforms"), "metadata.platforms")
        packages = fields.items(doc.get("package"), "package")
    except EntryError as exc:
        plan.error(Origin(path), str(exc))
        return
    plan.inputs.append(InputFile(path, InputFormat.CONDA_LOCK, platforms=platforms))
    merged: dict[str, tuple[Mapping[str, Any], Origin, _Uses]] = {}
    for index, entry in enumerate(packages):
        origin = Origin(path, _line_of(packages, index))
        try:
            entry = fields.table(entry, "a package entry")
            url = fields.required_text(entry, "url")
            platform = fields.required_text(entry, "platform")
        except EntryError as exc:
            plan.error(origin, str(exc))
            continue
        first = merged.setdefault(url, (entry, origin, _Uses()))
        first[2].add(platform, fields.text(entry, "category") or "main")
    for url, (entry, origin, use) in merged.items():
        try:
            _read_conda_lock_package(url, entry, origin, use, plan)
        except EntryError as exc:
            plan.error(origin, f"package {entry.get('name') or url}: {exc}")


def _read_conda_lock_package(url: str, entry: Mapping[str, Any], origin: Origin, use: _Uses, plan: SeedPlan) -> None:
    name = fields.required_text(entry, "name")
    if not is_remote_url(url):
        plan.skip(f"{name} ({url})", unseedable_reason(url), origin)
        return
    hashes = fields.table(entry.get("hash") or {}, "hash")
    details: dict[str, Any] = {"platforms": tuple(use.platforms), "environments": tuple(use.environments)}
    manager = fields.text(entry, "manager")
    if manager == "conda":
        try:
            digests = {"sha256": _digest(hashes, "sha256"), "md5": _digest(hashes, "md5")}
            conda_file = _conda_file(url, origin, **digests, **details)
        except ValueError as exc:
            raise EntryError(str(exc)) from None
        plan.conda_files.append(conda_file)
    elif manager == "pip":
        filename = filename_from_url(url)
        if not filename:
            raise EntryError(f"{url} has no file name")
        found = {algorithm: digest for algorithm in ("sha256", "md5") if (digest := _digest(hashes, algorithm))}
        plan.pypi_files.append(
            PypiFile(canonicalize_name(name), filename, origin, fields.text(entry, "version"), url, found, **details)
        )
    else:
        raise EntryError(f"manager {manager!r} is neither conda nor pip")
