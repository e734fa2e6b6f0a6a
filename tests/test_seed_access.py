"""`pkgcache seed` on a cache whose reads need a user (`[access] users`): uv and rattler, which seed runs to
resolve, reach pkgcache with the reader's credentials as seed's own requests do, through a running instance and
through the loopback server seed starts itself; the password is never on a command line or in what seed prints.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pkgcache.seed.model import Origin, PypiRequirement, SeedPlan
from pkgcache.seeding.credentials import Credentials
from pkgcache.seeding.resolve import compile_with_uv, find_uv, uv_command, uv_environment
from pkgcache.seeding.targets import parse_platform
from tests.cache_service import CacheProcess
from tests.conda_support import SUBDIR
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.fakes.server import FakeServer
from tests.kit_support import cached_names, pkgcache, write, write_config
from tests.support import BackgroundLoop

PASSWORD = "s3cret-pw"


def config_with_users(directory: Path, pypi: OfficialLikeUpstream, conda: MirrorLikeUpstream) -> Path:
    config = write_config(directory, [pypi.index_url], [f"{conda.url}/anaconda/"])
    with config.open("a") as out:
        out.write(f'[access]\nusers = {{alice = "{PASSWORD}"}}\n')
    return config


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    """One input uv resolves and one rattler solves."""
    return [
        write(tmp_path / "inputs", "requirements.in", "alpha<2\n"),
        write(tmp_path / "inputs", "environment.yml", "name: t\nchannels:\n  - pkgs/main\ndependencies:\n  - bigpkg\n"),
    ]


@pytest.mark.parametrize("how", ["served by seed", "running"])
def test_seed_resolves_with_uv_and_rattler_when_reads_need_a_user(
    tmp_path: Path,
    official_upstream: OfficialLikeUpstream,
    conda_mirror: MirrorLikeUpstream,
    inputs: list[Path],
    how: str,
) -> None:
    config = config_with_users(tmp_path, official_upstream, conda_mirror)
    data = tmp_path / "data"
    data.mkdir()
    seed = ("seed", "--config", config, "--data-dir", data, "--python", "3.11", "--platform", SUBDIR, "--no-progress")
    server = CacheProcess(data, "--config", str(config), "--workers", "1") if how == "running" else None
    try:
        seeded = pkgcache(*seed, *inputs)
    finally:
        if server is not None:
            server.terminate()

    assert seeded.returncode == 0, seeded.stderr
    assert ("seeding through the running pkgcache" in seeded.stderr) == (server is not None)
    assert "401" not in seeded.stderr and PASSWORD not in seeded.stderr + seeded.stdout
    assert cached_names(data, "pypi/files") == {"alpha-1.0-py3-none-any.whl"}
    assert cached_names(data, "conda/pkgs/main") == {"bigpkg-1.0-h0_0.conda"}


def test_uv_gets_the_password_in_its_environment_not_on_its_command_line(tmp_path: Path) -> None:
    reader = Credentials("alice", PASSWORD)
    command = uv_command("uv", "http://127.0.0.1:1/pypi/simple/", parse_platform(SUBDIR), "3.11", tmp_path)
    env = uv_environment(reader)

    assert not any(PASSWORD in part for part in command)
    assert PASSWORD in env.values() and "alice" in env.values()
    assert PASSWORD not in repr(reader)


def test_uv_downloads_no_python_and_seed_says_what_to_do_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bg_loop: BackgroundLoop
) -> None:
    """`seed --python 3.12` with no such interpreter had uv download a CPython from the internet, past pkgcache."""
    uv = find_uv()  # before PATH changes
    # The index (it knows no project: uv fails fast) and, under /python/, where uv is told to fetch Pythons from.
    server = FakeServer()
    bg_loop.run(server.start())
    index = f"{server.url}/simple/"
    target = (parse_platform(SUBDIR), "3.12")

    def compile_in(work: Path) -> SeedPlan | str:
        work.mkdir()
        requirement = PypiRequirement(Requirement("alpha"), Origin(tmp_path / "requirements.in"))
        return asyncio.run(asyncio.wait_for(compile_with_uv(uv, index, [requirement], target, work), 120))

    try:
        for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PYTHON_DOWNLOADS", "UV_PYTHON", "UV_PYTHON_PREFERENCE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "managed"))  # no Python uv installed itself
        monkeypatch.setenv("UV_PYTHON_INSTALL_MIRROR", f"{server.url}/python")
        monkeypatch.chdir(tmp_path)
        assert uv_environment()["UV_PYTHON_DOWNLOADS"] == "never"
        assert "--no-python-downloads" in uv_command(uv, index, *target, tmp_path)

        # This Python alone on PATH, of another version than 3.12: uv resolves for 3.12 without downloading one.
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "python3").symlink_to(os.path.realpath(sys.executable))
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        other = compile_in(tmp_path / "other")
        assert isinstance(other, str) and "alpha" in other, other  # the index has no alpha: uv got that far
        assert [path for path in server.paths() if path.startswith("/python")] == []
        assert any(path.startswith("/simple/alpha") for path in server.paths())

        # No Python at all: pkgcache says what to do.
        monkeypatch.setenv("PATH", str(tmp_path / "managed"))
        none = compile_in(tmp_path / "none")
    finally:
        bg_loop.run(server.stop())
    assert isinstance(none, str), none
    assert "uv found no Python interpreter here to resolve for Python 3.12 with" in none, none
    assert "install Python 3.12 where uv finds it" in none
    assert [path for path in server.paths() if path.startswith("/python")] == []
