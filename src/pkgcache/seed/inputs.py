"""`read_inputs(paths) -> SeedPlan`: every input `pkgcache seed` takes, recognised by name and content.

The content decides, the name breaks ties: a line `@EXPLICIT` makes a conda explicit list whatever the file is
called (`conda-linux-64.lock`); TOML is told apart by its keys (pylock's top-level `lock-version`, uv's integer
`version` with `requires-python` or a `source` table in every `[[package]]`, poetry's `[metadata] lock-version`,
pdm's `[metadata] lock_version`: another tool's lock such as Cargo.lock is none of them); YAML by
its keys (pixi's `environments`, conda-lock's `metadata` + `package`, environment.yml's `dependencies`); text
is a requirements file (or a conda spec list when it carries CEP 23's `# platform:` comment). A file of no
known format is one error naming what was tried; nothing is raised, every problem is collected in the plan.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import conda_inputs, pypi_locks
from .documents import DocumentError, load_yaml, read_text, toml_error
from .model import (
    CondaFile,
    CondaSpec,
    InputError,
    InputFile,
    InputFormat,
    Origin,
    PypiFile,
    PypiIndexOption,
    PypiRequirement,
    SeedPlan,
    Skipped,
)
from .requirements_txt import read_requirements_file

__all__ = [
    "CondaFile",
    "CondaSpec",
    "InputError",
    "InputFile",
    "InputFormat",
    "Origin",
    "PypiFile",
    "PypiIndexOption",
    "PypiRequirement",
    "SeedPlan",
    "Skipped",
    "detect_format",
    "read_input",
    "read_inputs",
]

_PYLOCK_NAME = re.compile(r"^pylock\.([^.]+\.)?toml$")
_TOML_LOCK_NAMES = {"uv.lock", "poetry.lock", "pdm.lock"}
_REQUIREMENTS_NAME = re.compile(r"(requirements|constraints)|\.(txt|in|pip)$", re.IGNORECASE)
_EXPLICIT = re.compile(r"^\s*@EXPLICIT\s*$", re.MULTILINE)
_PLATFORM_COMMENT = re.compile(r"^\s*#\s*platform:\s*\S+\s*$", re.MULTILINE)
_KNOWN = (
    "requirements file, pylock.toml, uv.lock, poetry.lock, pdm.lock, pixi.lock, conda-lock.yml, environment.yml,"
    " conda @EXPLICIT or spec list"
)
_NOT_A_TOML_LOCK = "a TOML file, but not a lock file seed reads (pylock.toml, uv.lock, poetry.lock, pdm.lock)"
_NOT_A_UV_LOCK = (
    "a TOML lock file, but not a uv.lock (uv writes a top-level requires-python and a source table for each package)"
    " nor another lock file seed reads (pylock.toml, poetry.lock, pdm.lock)"
)

TomlReader = Callable[[Mapping[str, Any], str, Path, SeedPlan], None]
YamlReader = Callable[[Mapping[str, Any], Path, SeedPlan], None]
_TOML_READERS: dict[InputFormat, TomlReader] = {
    InputFormat.PYLOCK: pypi_locks.read_pylock,
    InputFormat.UV_LOCK: pypi_locks.read_uv_lock,
    InputFormat.POETRY_LOCK: pypi_locks.read_poetry_lock,
    InputFormat.PDM_LOCK: pypi_locks.read_pdm_lock,
}
_YAML_READERS: dict[InputFormat, YamlReader] = {
    InputFormat.PIXI_LOCK: conda_inputs.read_pixi_lock,
    InputFormat.CONDA_LOCK: conda_inputs.read_conda_lock,
    InputFormat.ENVIRONMENT_YML: conda_inputs.read_environment_yml,
}


def read_inputs(paths: Iterable[str | os.PathLike[str]]) -> SeedPlan:
    """Read every input into one plan; problems are in `plan.errors` (file:line: why), nothing is raised."""
    plan = SeedPlan()
    for path in paths:
        read_input(Path(path), plan)
    return plan


def read_input(path: Path, plan: SeedPlan) -> None:
    """Read one input file (and the files it includes) into `plan`."""
    try:
        text = read_text(path)
        detected, doc = detect_format(path, text)
    except DocumentError as exc:
        plan.error(Origin(path, exc.line), str(exc))
        return
    if detected in _TOML_READERS:
        _TOML_READERS[detected](doc, text, path, plan)
    elif detected in _YAML_READERS:
        _YAML_READERS[detected](doc, path, plan)
    elif detected is InputFormat.CONDA_EXPLICIT:
        conda_inputs.read_explicit(text, path, plan)
    elif detected is InputFormat.CONDA_SPECS:
        conda_inputs.read_spec_list(text, path, plan)
    else:
        read_requirements_file(path, plan, text=text)


def detect_format(path: Path, text: str) -> tuple[InputFormat, Any]:
    """The input's format and its parsed document (None for line-based formats).

    Raises DocumentError when the file is no format this reader knows, or does not parse as the format its
    name says.
    """
    name = path.name.lower()
    if _EXPLICIT.search(text):
        return InputFormat.CONDA_EXPLICIT, None
    if _PYLOCK_NAME.match(name) or name in _TOML_LOCK_NAMES or name.endswith(".toml"):
        return _as_toml(text, required=True)  # type: ignore[return-value]
    if name == "pixi.lock" or name.endswith((".yml", ".yaml")):
        return _as_yaml(text, required=True)  # type: ignore[return-value]
    if _REQUIREMENTS_NAME.search(name):
        return _text_format(text), None
    # No telling name (`py311-linux.lock`, `deps`): whatever the content parses as.
    found = _as_toml(text, required=False) or _as_yaml(text, required=False)
    if found:
        return found
    if _looks_like_requirements(path, text):
        return _text_format(text), None
    raise DocumentError(_unknown_format(text))


def _unknown_format(text: str) -> str:
    """Why a file with no telling name is none of the inputs: a TOML lock shaped like uv's is named as such."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        doc = {}
    return _NOT_A_UV_LOCK if _uv_like(doc) else f"not an input format seed reads ({_KNOWN})"


def _text_format(text: str) -> InputFormat:
    return InputFormat.CONDA_SPECS if _PLATFORM_COMMENT.search(text) else InputFormat.REQUIREMENTS


def _as_toml(text: str, *, required: bool) -> tuple[InputFormat, Any] | None:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if required:
            raise toml_error(exc) from None
        return None
    found = _toml_kind(doc)
    if found is None and required:
        raise DocumentError(_NOT_A_UV_LOCK if _uv_like(doc) else _NOT_A_TOML_LOCK)
    return (found, doc) if found else None


def _toml_kind(doc: Mapping[str, Any]) -> InputFormat | None:
    metadata = doc.get("metadata")
    if "lock-version" in doc:
        return InputFormat.PYLOCK
    if isinstance(metadata, Mapping) and "lock_version" in metadata:
        return InputFormat.PDM_LOCK
    if isinstance(metadata, Mapping) and "lock-version" in metadata:
        return InputFormat.POETRY_LOCK
    if _is_uv_lock(doc):
        return InputFormat.UV_LOCK
    return None


def _uv_like(doc: Mapping[str, Any]) -> bool:
    """An integer `version` and `[[package]]`: what uv.lock shares with other tools' locks (Cargo.lock)."""
    return isinstance(doc.get("version"), int) and "package" in doc


def _is_uv_lock(doc: Mapping[str, Any]) -> bool:
    """uv's integer `version` with what only uv writes beside it: the top-level `requires-python` (every uv.lock
    has one), or, failing that, a `source` table in every package (Cargo.lock's sources are strings)."""
    if not isinstance(doc.get("version"), int):
        return False
    if "requires-python" in doc:
        return True
    packages = doc.get("package")
    return (
        isinstance(packages, list)
        and bool(packages)
        and all(isinstance(package, Mapping) and isinstance(package.get("source"), Mapping) for package in packages)
    )


def _as_yaml(text: str, *, required: bool) -> tuple[InputFormat, Any] | None:
    try:
        doc = load_yaml(text)
    except DocumentError:
        if required:
            raise
        return None
    found = _yaml_kind(doc) if isinstance(doc, Mapping) else None
    if found is None and required:
        raise DocumentError("a YAML file, but not one seed reads (pixi.lock, conda-lock.yml, environment.yml)")
    return (found, doc) if found else None


def _yaml_kind(doc: Mapping[str, Any]) -> InputFormat | None:
    if "environments" in doc and "version" in doc:
        return InputFormat.PIXI_LOCK
    if "package" in doc and "metadata" in doc:
        return InputFormat.CONDA_LOCK
    if "dependencies" in doc:
        return InputFormat.ENVIRONMENT_YML
    return None


def _looks_like_requirements(path: Path, text: str) -> bool:
    """True when every line of a file with no telling name reads as requirements (one bad line is enough to
    call it something else: a README, a shell script)."""
    trial = SeedPlan()
    read_requirements_file(path, trial, text=text, reading=(path.resolve(),))
    read_anything = trial.pypi_requirements or trial.pypi_options or trial.skipped
    return bool(read_anything) and not trial.errors
