"""Conda test helpers shared by the fake-channel tests and the proxy tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.clients.rattler_client import run_rattler_install
from tests.fakes.conda_channel import CondaPkg, machine_subdir

SUBDIR = machine_subdir()
APP_TREE = {"app", "libfoo", "pydata", "tzinfo"}


@dataclass(frozen=True)
class Channels:
    main: Path  # plain channel with .zst and .bz2, like pkgs/main
    forge: Path  # sharded channel, like conda-forge
    main_pkgs: list[CondaPkg]
    forge_pkgs: list[CondaPkg]


def install(
    tmp_path: Path, channel_urls: list[str], specs: list[str], name: str = "env"
) -> tuple[Path, dict[str, Any]]:
    """Solve and install `specs` with py-rattler into a fresh prefix, with a fresh client cache."""
    prefix = tmp_path / name
    result = run_rattler_install(channel_urls, prefix, tmp_path / f"{name}-cache", specs)
    return prefix, result


def installed_names(result: dict[str, Any]) -> set[str]:
    return {p["name"] for p in result["installed"]}


def assert_app_landed(prefix: Path) -> None:
    assert (prefix / "share/app/app.txt").read_text() == "app 1.0\n"
    assert (prefix / "share/libfoo/libfoo.txt").read_text() == "libfoo 1.1\n"
    assert (prefix / "share/tzinfo/tzinfo.txt").is_file()
    assert (prefix / "bin/app").stat().st_mode & 0o111
    metas = {p.name for p in (prefix / "conda-meta").glob("*.json")}
    assert "app-1.0-h1_0.json" in metas and "libfoo-1.1-h1_0.json" in metas
