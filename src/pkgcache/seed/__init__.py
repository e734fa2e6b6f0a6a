"""Seeding the cache from what a team uses: the inputs (`inputs.read_inputs`) and their model (`model`).

`read_inputs(paths)` reads requirements files, pylock.toml, uv.lock, poetry.lock, pdm.lock, pixi.lock,
conda-lock.yml, environment.yml and conda `@EXPLICIT`/spec lists into one `SeedPlan`: exact files to fetch
(`PypiFile`, `CondaFile`), requirements and MatchSpecs to resolve, what is skipped and why, and per-line errors.
"""

from .inputs import detect_format, read_input, read_inputs
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
