"""The seed model: what a team's requirement and lock files ask for, in one shape for both ecosystems.

Exact files (from lock files and `@EXPLICIT` lists) are `PypiFile` and `CondaFile`: file name, hashes, size and
the URL as written, plus where pkgcache keeps them (`cache_path`). Inputs that still need a resolver are
`PypiRequirement` (PEP 508 requirements, pinned or not, with `--hash` values when given) and `CondaSpec`
(MatchSpecs with the file's channels and platforms). What cannot be seeded through an index (local paths,
editables, VCS checkouts, direct URLs) is `Skipped` with the reason; what cannot be read is an `InputError`
with the file and line. Every item carries its `Origin`, so a report can point at the line it came from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name


class InputFormat(enum.Enum):
    """The kinds of input `read_inputs` understands; the value is how reports name them."""

    REQUIREMENTS = "requirements file"
    PYLOCK = "pylock.toml"
    UV_LOCK = "uv.lock"
    POETRY_LOCK = "poetry.lock"
    PDM_LOCK = "pdm.lock"
    CONDA_EXPLICIT = "conda @EXPLICIT list"
    CONDA_SPECS = "conda spec list"
    ENVIRONMENT_YML = "conda environment.yml"
    PIXI_LOCK = "pixi.lock"
    CONDA_LOCK = "conda-lock.yml"


@dataclass(frozen=True)
class Origin:
    """Where an item was read: the file and, when the format tells, the 1-based line."""

    path: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


@dataclass(frozen=True)
class InputFile:
    """One file that was read, and what it says about the environments it covers.

    `environments` holds what the whole file is locked for: uv's `supported-markers`/`resolution-markers`,
    pylock's `environments`, pdm's lock targets, pixi's environment names. `platforms` are the conda subdirs
    (or pixi platform names) the file names. `included_by` is set for files reached through `-r`/`-c`.
    """

    path: Path
    format: InputFormat
    requires_python: str | None = None
    environments: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    included_by: Origin | None = None


@dataclass(frozen=True)
class PypiFile:
    """One exact distribution file (wheel or sdist) a lock file names.

    `url` is as written in the lock file (None when the format keeps only the file name: poetry, pdm without
    static URLs); `index_url` is the simple index it came from when the file says (None: the file does not
    say, which for poetry means the official index). `hashes` maps a lowercase algorithm to its hex digest.
    `markers` (in packaging's spelling) say when the package applies: pylock's and pdm's `marker`, poetry's
    `markers` (one per dependency group), uv's per-package `resolution-markers` (the forks it belongs to);
    empty means every environment of the file. `platforms`/`environments` come from pixi and conda-lock.
    """

    project: NormalizedName
    filename: str
    origin: Origin
    version: str | None = None
    url: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    index_url: str | None = None
    markers: tuple[str, ...] = ()
    requires_python: str | None = None
    platforms: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def cache_path(self) -> str:
        """Where pkgcache serves it, below its root: `pypi/files/<project>/<filename>`."""
        return f"pypi/files/{self.project}/{self.filename}"


@dataclass(frozen=True)
class PypiRequirement:
    """A requirement to resolve: from a requirements file, an environment.yml `pip:` list, or a poetry lock
    without file names.

    `hashes` are the `--hash` values ("sha256:<hex>"): when given, the files to seed are exactly the files of
    the pinned version whose hash is listed (every platform's wheels and the sdist, as the hash list holds
    them). `constraint` is True for lines read from a `-c` file: they bound versions, they do not ask for the
    project.
    """

    requirement: Requirement
    origin: Origin
    hashes: tuple[str, ...] = ()
    constraint: bool = False

    @property
    def project(self) -> NormalizedName:
        return canonicalize_name(self.requirement.name)

    @property
    def pinned_version(self) -> str | None:
        """The version when the requirement is an exact pin (`==1.2` or `===1.2`), else None."""
        specs = list(self.requirement.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and not specs[0].version.endswith(".*"):
            return specs[0].version
        return None


@dataclass(frozen=True)
class PypiIndexOption:
    """An index option a requirements file carries (`--index-url`, `--extra-index-url`, `--find-links`,
    `--no-index`, `--trusted-host`): recorded for the lead's resolver, never followed here."""

    option: str
    value: str
    origin: Origin


@dataclass(frozen=True)
class CondaFile:
    """One exact conda package file from an `@EXPLICIT` list or a lock file.

    `channel` is the channel as pkgcache names it: `conda-forge`, `pytorch` (under `cloud/`) or `pkgs/main`
    (under `pkgs/`), read from the URL whatever its host (anaconda, prefix.dev, a TUNA-like mirror,
    pkgcache itself). `channel_url` is the URL up to the channel, as written. `platforms` are the platforms
    the input lists it for (a pixi lock lists a noarch package under each platform that uses it).
    """

    channel: str
    subdir: str
    filename: str
    url: str
    origin: Origin
    channel_url: str = ""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    platforms: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()

    @property
    def cache_path(self) -> str:
        """Where pkgcache serves it: `conda/pkgs/<name>/<subdir>/<file>` or `conda/cloud/<channel>/<subdir>/<file>`."""
        if self.channel.startswith("pkgs/"):
            return f"conda/{self.channel}/{self.subdir}/{self.filename}"
        return f"conda/cloud/{self.channel}/{self.subdir}/{self.filename}"


@dataclass(frozen=True)
class CondaSpec:
    """A conda MatchSpec to resolve (from environment.yml or a plain spec list), with the channels the file
    names in priority order (names or URLs, as written; `defaults` kept as a name) and its platforms (empty:
    the file does not say; the seed command's own platforms apply)."""

    spec: str
    name: str
    origin: Origin
    channels: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """Something an input asks for that cannot be seeded through an index, and why (an editable, a local
    path, a VCS checkout, a direct URL). `url` is kept when there is one."""

    what: str
    reason: str
    origin: Origin
    url: str | None = None


@dataclass(frozen=True)
class InputError:
    """A file or line that could not be read: `file:line: why`."""

    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


@dataclass
class SeedPlan:
    """Everything read from the inputs, in reading order. Nothing here is deduplicated across inputs: the
    same file locked by two inputs appears twice (`distinct_files` merges them by cache path)."""

    inputs: list[InputFile] = field(default_factory=list)
    pypi_files: list[PypiFile] = field(default_factory=list)
    pypi_requirements: list[PypiRequirement] = field(default_factory=list)
    pypi_options: list[PypiIndexOption] = field(default_factory=list)
    conda_files: list[CondaFile] = field(default_factory=list)
    conda_specs: list[CondaSpec] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, origin: Origin, message: str) -> None:
        self.errors.append(InputError(origin, message))

    def skip(self, what: str, reason: str, origin: Origin, url: str | None = None) -> None:
        self.skipped.append(Skipped(what, reason, origin, url))

    def _all_files(self) -> list[PypiFile | CondaFile]:
        return [*self.pypi_files, *self.conda_files]

    def distinct_files(self) -> dict[str, PypiFile | CondaFile]:
        """Exact files by cache path, the first occurrence kept (see `hash_conflicts`)."""
        found: dict[str, PypiFile | CondaFile] = {}
        for item in self._all_files():
            found.setdefault(item.cache_path, item)
        return found

    def hash_conflicts(self) -> list[InputError]:
        """Items naming a cache path already named with another digest of the same algorithm: one of the two
        inputs does not expect the file the other does (a private index's rebuild, a stale lock)."""
        first_seen = self.distinct_files()
        conflicts = []
        for item in self._all_files():
            first = first_seen[item.cache_path]
            theirs = _hashes_of(first)
            clash = sorted(algo for algo, digest in _hashes_of(item).items() if theirs.get(algo, digest) != digest)
            if clash:
                message = f"{item.cache_path}: its {'/'.join(clash)} differs from {first.origin}'s"
                conflicts.append(InputError(item.origin, message))
        return conflicts


def _hashes_of(item: PypiFile | CondaFile) -> dict[str, str]:
    if isinstance(item, PypiFile):
        return item.hashes
    return {k: v for k, v in (("sha256", item.sha256), ("md5", item.md5)) if v}
