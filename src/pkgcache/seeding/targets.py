"""The machines a seed is for: platforms and Python versions, in the names uv and conda use.

A target platform is given once, in conda's subdir spelling (`linux-64`, `osx-arm64`, `win-64`...) or as one of
uv's `--python-platform` names (`x86_64-manylinux_2_28`, `aarch64-apple-darwin`...); each is mapped to the
other side's name where one exists. Conda solves for another platform need the virtual packages a machine of
that platform would report (`__glibc`, `__osx`...): `virtual_packages` gives conservative ones (what most of
conda-forge builds for), since the seeding machine's own are not the target's.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from pkgcache.conda_subdirs import KNOWN_SUBDIRS

# conda subdir -> uv --python-platform (the generic name: uv picks its default glibc / macOS floor).
_UV_FOR_SUBDIR = {
    "linux-64": "x86_64-unknown-linux-gnu",
    "linux-aarch64": "aarch64-unknown-linux-gnu",
    "osx-64": "x86_64-apple-darwin",
    "osx-arm64": "aarch64-apple-darwin",
    "win-64": "x86_64-pc-windows-msvc",
    "win-arm64": "aarch64-pc-windows-msvc",
}
# The other subdirs of machines conda knows (not noarch, nor wasm or BSD, for which no virtual packages are given).
_OTHER_SUBDIRS = frozenset(
    subdir for subdir in KNOWN_SUBDIRS if subdir.startswith(("linux-", "osx-", "win-")) and subdir not in _UV_FOR_SUBDIR
)
# uv's short names and the start of its long ones -> conda subdir.
_SUBDIR_FOR_UV = {"linux": "linux-64", "macos": "osx-arm64", "windows": "win-64"}
_SUBDIR_FOR_UV_PREFIX = (
    ("x86_64-manylinux", "linux-64"),
    ("aarch64-manylinux", "linux-aarch64"),
    ("x86_64-unknown-linux", "linux-64"),
    ("aarch64-unknown-linux", "linux-aarch64"),
    ("x86_64-apple", "osx-64"),
    ("aarch64-apple", "osx-arm64"),
    ("x86_64-pc-windows", "win-64"),
    ("aarch64-pc-windows", "win-arm64"),
)
# Conservative virtual packages per conda platform family: a glibc and a macOS most builds accept.
_LINUX_GLIBC = "2.28"
_LINUX_KERNEL = "5.10"
_MACOS = {"osx-64": "11.0", "osx-arm64": "11.0"}
_ARCHSPEC = {
    "linux-64": "x86_64",
    "linux-aarch64": "aarch64",
    "osx-64": "x86_64",
    "osx-arm64": "arm64",
    "win-64": "x86_64",
    "win-arm64": "arm64",
}


class UnknownPlatform(ValueError):
    """A platform name that is neither a conda subdir nor a uv platform pkgcache knows."""


@dataclass(frozen=True)
class Platform:
    """One target platform: its conda subdir (None when conda has none) and uv's name (None likewise)."""

    given: str
    conda_subdir: str | None
    uv_platform: str | None

    def __str__(self) -> str:
        return self.given


def parse_platform(name: str) -> Platform:
    """A `--platform` value as a target; UnknownPlatform says what is accepted."""
    name = name.strip()
    if name in _UV_FOR_SUBDIR:
        return Platform(name, name, _UV_FOR_SUBDIR[name])
    if name in _SUBDIR_FOR_UV:
        return Platform(name, _SUBDIR_FOR_UV[name], name)
    for prefix, subdir in _SUBDIR_FOR_UV_PREFIX:
        if name.startswith(prefix):
            return Platform(name, subdir, name)
    if name in _OTHER_SUBDIRS:
        return Platform(name, name, None)  # a conda subdir uv has no wheels for (linux-ppc64le...)
    # Refused here, not skipped later: a typo (linux-65) would otherwise seed nothing and exit 0.
    accepted = ", ".join([*_UV_FOR_SUBDIR, *sorted(_OTHER_SUBDIRS)])
    raise UnknownPlatform(
        f"unknown platform {name!r}: use a conda subdir ({accepted}) or a uv --python-platform name "
        "(x86_64-manylinux_2_28...)"
    )


def this_platform() -> Platform:
    """The machine seed runs on, as the default target."""
    machine = platform.machine().lower()
    arm = machine in ("arm64", "aarch64")
    if sys.platform.startswith("linux"):
        return parse_platform("linux-aarch64" if arm else "linux-64")
    if sys.platform == "darwin":
        return parse_platform("osx-arm64" if arm else "osx-64")
    if sys.platform == "win32":
        return parse_platform("win-arm64" if arm else "win-64")
    raise UnknownPlatform(f"no default platform for {sys.platform}: give --platform")


def this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def check_python_version(version: str) -> str:
    """`3.11` or `3.11.4`; ValueError otherwise."""
    parts = version.strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(part.isdigit() for part in parts) or parts[0] != "3":
        raise ValueError(f"{version!r} is not a Python version like 3.11")
    return version.strip()


def virtual_packages(subdir: str) -> list[tuple[str, str]]:
    """(name, version) of the virtual packages to solve for `subdir` with (not this machine's own)."""
    found: list[tuple[str, str]] = []
    if subdir.startswith("linux-"):
        found += [("__unix", "0"), ("__linux", _LINUX_KERNEL), ("__glibc", _LINUX_GLIBC)]
    elif subdir.startswith("osx-"):
        found += [("__unix", "0"), ("__osx", _MACOS.get(subdir, "11.0"))]
    elif subdir.startswith("win-"):
        found += [("__win", "0")]
    if subdir in _ARCHSPEC:
        found.append(("__archspec", "1"))
    return found


def archspec_build(subdir: str) -> str:
    """The build string of `__archspec` for `subdir` (conda puts the microarchitecture there)."""
    return _ARCHSPEC.get(subdir, "0")
