"""PyPI lock files: pylock.toml (PEP 751), uv.lock, poetry.lock and pdm.lock, into exact `PypiFile`s.

Every wheel and sdist a lock file names is kept, whatever platform or Python it is for, with the markers the
package is locked under; packages that do not come from an index (the project itself, editables, paths, VCS,
direct URLs) are skipped with the reason. Each reader takes the parsed TOML and its text (for the line each
package starts on); a malformed package is one error at its line and the rest of the file is still read.

The shapes are those the tools write (facts from their sources): uv's `crates/uv-resolver/src/lock/mod.rs`
(`PackageWire`, `SourceWire`, `WheelWire`, `SourceDist`), poetry's `packages/locker.py` (`files` per package
since lock-version 2.0, `metadata.files` before), pdm's `models/repositories/lock.py` and its lock-file docs.
pylock.toml is validated by `packaging.pylock`, one package at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from packaging.pylock import Pylock, PylockValidationError
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from . import fields
from .documents import array_table_lines
from .fields import EntryError
from .model import InputFile, InputFormat, Origin, PypiFile, PypiRequirement, SeedPlan
from .references import check_digest, filename_from_url, is_remote_url, split_hash, unseedable_reason, url_or_none

_EDITABLE = "an editable install: built from its source, not from an index"
PackageReader = Callable[[Mapping[str, Any], Origin, SeedPlan], None]


def _each_package(packages: list[Any], text: str, header: str, path: Path, plan: SeedPlan, read: PackageReader) -> None:
    """Call `read` for each package with its origin; a malformed one becomes an error at its line."""
    lines = array_table_lines(text, header)
    if len(lines) != len(packages):  # written as inline tables, or hand-edited: no per-package lines
        lines = []
    for index, package in enumerate(packages):
        origin = Origin(path, lines[index] if lines else None)
        try:
            read(fields.table(package, f"[[{header}]] entry {index + 1}"), origin, plan)
        except EntryError as exc:
            name = package.get("name") if isinstance(package, Mapping) else None
            plan.error(origin, f"package {name or index + 1}: {exc}")


def _project(package: Mapping[str, Any]) -> NormalizedName:
    return canonicalize_name(fields.required_text(package, "name"))


def _file_name(url: str | None, given: str | None, what: str) -> str:
    name = given or (filename_from_url(url) if url else None)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise EntryError(f"{what} has no usable file name")
    return name


def _digest(algorithm: str, value: str) -> str:
    try:
        return check_digest(algorithm, value)
    except ValueError as exc:
        raise EntryError(str(exc)) from None


def _hash_table(value: str | None, what: str) -> dict[str, str]:
    """{"sha256": hex} from "sha256:<hex>" (uv, poetry, pdm); empty when the lock file has none."""
    if value is None:
        return {}
    try:
        algorithm, digest = split_hash(value)
    except ValueError as exc:
        raise EntryError(f"{what}: {exc}") from None
    return {algorithm: digest}


# --- pylock.toml ---------------------------------------------------------------------------------------------


def read_pylock(doc: Mapping[str, Any], text: str, path: Path, plan: SeedPlan) -> None:
    top = {key: value for key, value in doc.items() if key != "packages"}
    try:
        lock = Pylock.from_dict({**top, "packages": []})
    except PylockValidationError as exc:
        plan.error(Origin(path), f"not a valid pylock.toml: {exc}")
        return
    plan.inputs.append(
        InputFile(
            path,
            InputFormat.PYLOCK,
            requires_python=str(lock.requires_python) if lock.requires_python else None,
            environments=tuple(str(marker) for marker in lock.environments or ()),
        )
    )
    packages = doc.get("packages")
    if not isinstance(packages, list):
        plan.error(Origin(path), "'packages' is not an array of tables")
        return
    lines = array_table_lines(text, "packages")
    for index, package in enumerate(packages):
        origin = Origin(path, lines[index] if len(lines) == len(packages) else None)
        try:
            validated = Pylock.from_dict({**top, "packages": [package]}).packages[0]
        except PylockValidationError as exc:
            where = (exc.context or "").replace("packages[0]", f"packages[{index}]")
            plan.error(origin, f"{exc.message}" + (f" (in {where})" if where else ""))
            continue
        try:
            _read_pylock_package(validated, origin, plan)
        except EntryError as exc:
            plan.error(origin, f"package {validated.name}: {exc}")


def _read_pylock_package(package: Any, origin: Origin, plan: SeedPlan) -> None:
    name = str(package.name)
    if package.is_direct:
        source = package.vcs or package.directory or package.archive
        reference = str(getattr(source, "url", None) or getattr(source, "path", None) or name)
        reason = unseedable_reason(f"{package.vcs.type}+{reference}" if package.vcs else reference)
        plan.skip(name, reason, origin, url=getattr(source, "url", None))
        return
    common: dict[str, Any] = {
        "project": package.name,
        "origin": origin,
        "version": str(package.version) if package.version else None,
        "index_url": package.index,
        "markers": (str(package.marker),) if package.marker else (),
        "requires_python": str(package.requires_python) if package.requires_python else None,
    }
    for dist in [*(package.wheels or ()), *([package.sdist] if package.sdist else [])]:
        if dist.url is None or not is_remote_url(dist.url):
            plan.skip(f"{name} {dist.filename}", unseedable_reason(dist.url or dist.path or dist.filename), origin)
            continue
        filename = _file_name(None, dist.filename, f"{name}'s file {dist.url}")
        hashes = {algorithm.lower(): _digest(algorithm.lower(), value) for algorithm, value in dist.hashes.items()}
        plan.pypi_files.append(PypiFile(filename=filename, url=dist.url, hashes=hashes, size=dist.size, **common))


# --- uv.lock -------------------------------------------------------------------------------------------------


def read_uv_lock(doc: Mapping[str, Any], text: str, path: Path, plan: SeedPlan) -> None:
    version = doc.get("version")
    if version != 1:
        plan.error(Origin(path), f"uv.lock version {version!r} is not one this reader knows (1)")
        return
    try:
        markers = fields.markers(
            fields.strings(doc.get("supported-markers") or doc.get("resolution-markers"), "markers")
        )
        requires_python = fields.text(doc, "requires-python")
        packages = fields.items(doc.get("package"), "[[package]]")
    except EntryError as exc:
        plan.error(Origin(path), str(exc))
        return
    plan.inputs.append(InputFile(path, InputFormat.UV_LOCK, requires_python=requires_python, environments=markers))
    _each_package(packages, text, "package", path, plan, _read_uv_package)


def _read_uv_package(package: Mapping[str, Any], origin: Origin, plan: SeedPlan) -> None:
    project = _project(package)
    source = fields.table(package.get("source"), "source")
    registry = source.get("registry")
    if not isinstance(registry, str):
        kind, reference = next(iter(source.items()), ("source", ""))
        what = f"{project} ({kind} = {reference})"
        if kind in ("virtual", "editable", "directory"):
            plan.skip(what, "a local project: built from its source, not from an index", origin)
        else:
            reference = str(reference)
            reason = unseedable_reason(f"git+{reference}" if kind == "git" else reference)
            plan.skip(what, reason, origin, url=url_or_none(reference))
        return
    common: dict[str, Any] = {
        "project": project,
        "origin": origin,
        "version": fields.text(package, "version"),
        "index_url": registry if is_remote_url(registry) else None,
        "markers": fields.markers(fields.strings(package.get("resolution-markers"), "resolution-markers")),
    }
    dists = [*fields.items(package.get("wheels"), "wheels")]
    if package.get("sdist") is not None:
        dists.append(package["sdist"])
    for dist in dists:
        dist = fields.table(dist, "a wheel or sdist entry")
        url = fields.text(dist, "url")
        if url is None or not is_remote_url(url):  # a local index (`path`) or a local wheel (`filename`)
            local = url or fields.text(dist, "path") or fields.text(dist, "filename") or "?"
            plan.skip(f"{project} {local}", "a file of a local index: not on a package index", origin)
            continue
        filename = _file_name(url, None, f"{project}'s file {url}")
        hashes = _hash_table(fields.text(dist, "hash"), filename)
        plan.pypi_files.append(PypiFile(filename=filename, url=url, hashes=hashes, size=fields.size(dist), **common))


# --- poetry.lock ---------------------------------------------------------------------------------------------


def read_poetry_lock(doc: Mapping[str, Any], text: str, path: Path, plan: SeedPlan) -> None:
    try:
        metadata = fields.table(doc.get("metadata"), "[metadata]")
        lock_version = fields.required_text(metadata, "lock-version")
        packages = fields.items(doc.get("package"), "[[package]]")
    except EntryError as exc:
        plan.error(Origin(path), str(exc))
        return
    if not lock_version.startswith(("1.", "2.")):
        plan.error(Origin(path), f"poetry lock-version {lock_version} is not one this reader knows (1.x, 2.x)")
        return
    python_versions = fields.text(metadata, "python-versions")
    plan.inputs.append(InputFile(path, InputFormat.POETRY_LOCK, requires_python=python_versions))
    # Before lock-version 2.0 the files were listed apart, by package name.
    listed_files, listed_hashes = metadata.get("files"), metadata.get("hashes")
    legacy_files: Mapping[str, Any] = listed_files if isinstance(listed_files, Mapping) else {}
    legacy_hashes: Mapping[str, Any] = listed_hashes if isinstance(listed_hashes, Mapping) else {}

    def read(package: Mapping[str, Any], origin: Origin, plan: SeedPlan) -> None:
        _read_poetry_package(package, origin, plan, legacy_files, legacy_hashes)

    _each_package(packages, text, "package", path, plan, read)


def _poetry_markers(package: Mapping[str, Any]) -> tuple[str, ...]:
    markers = package.get("markers")
    if isinstance(markers, str):
        return fields.markers([markers])
    if isinstance(markers, Mapping):  # one marker per dependency group (lock-version 2.1)
        return tuple(dict.fromkeys(fields.markers(str(marker) for marker in markers.values())))
    return ()


def _read_poetry_package(
    package: Mapping[str, Any],
    origin: Origin,
    plan: SeedPlan,
    legacy_files: Mapping[str, Any],
    legacy_hashes: Mapping[str, Any],
) -> None:
    name = fields.required_text(package, "name")
    project = canonicalize_name(name)
    version = fields.required_text(package, "version")
    source = fields.table(package.get("source") or {}, "source")
    source_type = fields.text(source, "type")
    source_url = fields.text(source, "url")
    if source_type not in (None, "legacy"):
        reference = source_url or name
        reason = unseedable_reason(f"git+{reference}" if source_type == "git" else reference)
        plan.skip(f"{name} ({source_type} = {reference})", reason, origin, url=url_or_none(reference))
        return
    requires_python = fields.text(package, "python-versions")
    files = package.get("files")
    if files is None:
        files = legacy_files.get(name) or legacy_files.get(project)
    if files is None and (legacy_hashes.get(name) or legacy_hashes.get(project)):
        # The oldest locks kept hashes without file names: the pin and its hashes pick the files.
        hashes = fields.strings(legacy_hashes.get(name) or legacy_hashes.get(project), "metadata.hashes")
        pin = _requirement(f"{name}=={version}")
        prefixed = tuple(h if ":" in h else f"sha256:{h}" for h in hashes)
        plan.pypi_requirements.append(PypiRequirement(pin, origin, prefixed))
        return
    for entry in fields.items(files, "files"):
        entry = fields.table(entry, "a files entry")
        filename = _file_name(None, fields.text(entry, "file"), f"{name}'s files entry")
        plan.pypi_files.append(
            PypiFile(
                project=project,
                filename=filename,
                origin=origin,
                version=version,
                hashes=_hash_table(fields.text(entry, "hash"), filename),
                index_url=source_url,
                markers=_poetry_markers(package),
                requires_python=None if requires_python in (None, "*") else requires_python,
            )
        )


def _requirement(text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise EntryError(f"{text!r} is not a valid pin: {exc}") from None


# --- pdm.lock ------------------------------------------------------------------------------------------------


def read_pdm_lock(doc: Mapping[str, Any], text: str, path: Path, plan: SeedPlan) -> None:
    try:
        metadata = fields.table(doc.get("metadata"), "[metadata]")
        lock_version = fields.required_text(metadata, "lock_version")
        targets = [fields.table(t, "[[metadata.targets]]") for t in fields.items(metadata.get("targets"), "targets")]
        packages = fields.items(doc.get("package"), "[[package]]")
    except EntryError as exc:
        plan.error(Origin(path), str(exc))
        return
    if not lock_version.startswith("4."):
        plan.error(Origin(path), f"pdm lock_version {lock_version} is not one this reader knows (4.x)")
        return
    plan.inputs.append(InputFile(path, InputFormat.PDM_LOCK, environments=tuple(_describe_target(t) for t in targets)))
    _each_package(packages, text, "package", path, plan, _read_pdm_package)


def _describe_target(target: Mapping[str, Any]) -> str:
    """A pdm lock target as one string, e.g. "requires_python >=3.10; platform manylinux_2_17_x86_64"."""
    parts = [f"{key} {value}" for key, value in target.items() if value not in (None, "")]
    return "; ".join(parts) or "any"


def _read_pdm_package(package: Mapping[str, Any], origin: Origin, plan: SeedPlan) -> None:
    project = _project(package)
    for vcs in ("git", "hg", "svn", "bzr"):
        if package.get(vcs):
            plan.skip(f"{project} ({vcs} = {package[vcs]})", unseedable_reason(f"{vcs}+{package[vcs]}"), origin)
            return
    if package.get("editable") or package.get("path") or package.get("url"):
        reference = str(package.get("url") or package.get("path"))
        reason = _EDITABLE if package.get("editable") else unseedable_reason(reference)
        plan.skip(f"{project} ({reference})", reason, origin, url=url_or_none(reference))
        return
    marker = fields.text(package, "marker")
    for entry in fields.items(package.get("files"), "files"):
        entry = fields.table(entry, "a files entry")
        url = fields.text(entry, "url")  # present with the static_urls strategy
        filename = _file_name(url, fields.text(entry, "file"), f"{project}'s files entry")
        if url is not None and not is_remote_url(url):
            plan.skip(f"{project} {filename}", unseedable_reason(url), origin)
            continue
        plan.pypi_files.append(
            PypiFile(
                project=project,
                filename=filename,
                origin=origin,
                version=fields.text(package, "version"),
                url=url,
                hashes=_hash_table(fields.text(entry, "hash"), filename),
                markers=fields.markers([marker]) if marker else (),
                requires_python=fields.text(package, "requires_python") or None,
            )
        )
