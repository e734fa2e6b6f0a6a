"""The code's own checks, run as CI runs the tests: ruff's lint and format, and mypy over src/ (its settings in
pyproject.toml). mypy found two crashes the tests had missed (`pkgcache export --since` with a bad date, a log
follower stopped while waiting for a rotated log), so its hints are kept true rather than decorative."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(tool: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / tool), *map(str, arguments)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("arguments", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff_finds_nothing(arguments: tuple[str, ...]) -> None:
    answer = _run("ruff", *arguments, "src", "tests", "bench", "scripts")
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_mypy_finds_nothing_in_src(tmp_path: Path) -> None:
    answer = _run("mypy", "--cache-dir", tmp_path / "mypy-cache")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "Success: no issues found" in answer.stdout
