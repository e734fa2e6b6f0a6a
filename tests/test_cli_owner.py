"""`sudo pkgcache import ...` on the service's data directory: the commands run as root become the directory's
owner before they write, so the service (its own user) can still write next to what they wrote.

Run as root only (skipped otherwise): a data directory owned by an unused uid stands for the service's user.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgcache.cli.owner import first_unreadable
from tests.cache_service import free_port
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.kit_support import pkgcache, write, write_config
from tests.support import isolated_env

OWNER = 65534  # nobody's uid on Debian and most others: owns nothing of the test's
pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")


def _interpreter() -> tuple[str, dict[str, str]] | None:
    """A Python, and the environment to run pkgcache with it, that uid OWNER can run too: once a command switches
    to that uid it still imports modules (this interpreter's may live where root alone reaches, in /root)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    source = str(Path(__file__).resolve().parent.parent / "src")
    env = isolated_env(
        PYTHONPATH=os.pathsep.join([source, *paths, *site.getsitepackages()]), PYTHONDONTWRITEBYTECODE="1"
    )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import pkgcache.cli.kit_commands, pkgcache.cli.policy_commands"],
                user=OWNER, group=OWNER, extra_groups=[], env=env, cwd="/", capture_output=True, timeout=60,
            )  # fmt: skip
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, env
    return None


@pytest.fixture(scope="module")
def as_root() -> tuple[str, dict[str, str]]:
    found = _interpreter()
    if found is None:
        pytest.skip(f"no Python here that uid {OWNER} can run pkgcache with")
    return found


@pytest.fixture
def service_dir() -> Iterator[Path]:
    """An empty data directory owned by OWNER, in a folder every user can reach (pytest's tmp_path is root's)."""
    base = Path(tempfile.mkdtemp(prefix="pkgcache-owner-"))
    try:
        base.chmod(0o755)
        data = base / "data"
        data.mkdir()
        os.chown(data, OWNER, OWNER)
        yield data
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(as_root: tuple[str, dict[str, str]], *args: str | Path) -> subprocess.CompletedProcess[str]:
    python, env = as_root
    command = [python, "-m", "pkgcache", *map(str, args)]
    return subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=300, check=False)


def _not_owned(data: Path) -> list[str]:
    return [str(p) for p in [data, *data.rglob("*")] if p.lstat().st_uid != OWNER or p.lstat().st_gid != OWNER]


def test_import_as_root_into_another_users_data_directory_leaves_only_that_users_files(
    tmp_path: Path, official_upstream: OfficialLikeUpstream, as_root: tuple[str, dict[str, str]], service_dir: Path
) -> None:
    # A bundle of alpha 2.0 and its page, made as root where only root reads it (tmp_path's folder is 0700).
    config = write_config(tmp_path, [official_upstream.index_url])
    wheel = find_dist(sample_dists(), "alpha-2.0-py3-none-any.whl")
    lock = write(tmp_path, "lock.txt", f"alpha==2.0 --hash=sha256:{wheel.sha256}\n")
    seeded = pkgcache("seed", "--config", config, "--data-dir", tmp_path / "outside", "--no-progress", lock)
    assert seeded.returncode == 0, seeded.stderr
    bundle = tmp_path / "week.tar"
    assert pkgcache("export", "--data-dir", tmp_path / "outside", "-o", bundle).returncode == 0

    imported = _run(as_root, "import", "--data-dir", service_dir, bundle)
    assert imported.returncode == 0, imported.stderr
    assert any(p.name == wheel.filename for p in service_dir.rglob("*.whl"))
    assert _not_owned(service_dir) == []
    assert f"belongs to nobody (uid {OWNER}): running as that user" in imported.stderr, imported.stderr

    # block (and its purge) with nothing running, the same.
    blocked = _run(as_root, "block", "--data-dir", service_dir, "alpha==2.0", "--reason", "test")
    assert blocked.returncode == 0, blocked.stderr
    assert (service_dir / "gate" / "blocks.json").is_file()
    assert _not_owned(service_dir) == []


def test_a_data_directory_root_owns_is_left_to_root(as_root: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "gate").mkdir(parents=True)
    blocked = _run(as_root, "block", "--data-dir", data, "alpha", "--reason", "test")
    assert blocked.returncode == 0, blocked.stderr
    assert "running as that user" not in blocked.stderr
    assert (data / "gate" / "blocks.json").stat().st_uid == 0


def test_readability_is_checked_with_the_owners_uid_and_groups_on_every_folder_above() -> None:
    base = Path(tempfile.mkdtemp(prefix="pkgcache-modes-"))  # /tmp: every user reaches it (tmp_path is root's)
    try:
        base.chmod(0o755)
        tree = {"open": 0o755, "open/lib": 0o755, "closed": 0o700, "closed/lib": 0o755, "group": 0o750}
        tree |= {"listless": 0o711, "listless/lib": 0o755, "own": 0o700, "own-no-group": 0o070}
        for name, mode in tree.items():
            (base / name).mkdir()
            (base / name).chmod(mode)
        (base / "open/lib/mod.py").write_text("")
        (base / "open/lib/mod.py").chmod(0o644)
        (base / "open/secret.py").write_text("")
        (base / "open/secret.py").chmod(0o600)
        (base / "open/link").symlink_to(base / "closed/lib")
        os.chown(base / "group", 0, 4242)
        os.chown(base / "own", OWNER, 0)
        os.chown(base / "own-no-group", OWNER, 4242)
        rx, r = os.R_OK | os.X_OK, os.R_OK

        def check(path: str, access: int = rx, gids: frozenset[int] = frozenset({OWNER})) -> tuple[Path, Path] | None:
            return first_unreadable([(base / path, access)], OWNER, gids)

        assert check("open/lib") is None
        assert check("open/lib/mod.py", r) is None
        assert check("open/secret.py", r) == (base / "open/secret.py", base / "open/secret.py")
        assert check("closed/lib") == (base / "closed/lib", base / "closed")  # a 0700 folder of root's above it
        assert check("open/link") == (base / "open/link", base / "closed")  # a link: the folders above its target
        assert check("group") == (base / "group", base / "group")
        assert check("group", gids=frozenset({OWNER, 4242})) is None  # one of its groups owns it
        assert check("listless") == (base / "listless", base / "listless")  # searched, not listed
        assert check("listless/lib") is None  # searching it is enough on the way
        assert check("own") is None
        assert check("own-no-group", gids=frozenset({4242})) is not None  # the owner's bits, even with the group's
        assert check("not-there") is None
        assert first_unreadable([(base / "open/lib", rx), (base / "closed/lib", rx)], OWNER, {OWNER}) is not None
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("command", ["gc", "start"])
def test_a_python_the_owner_cannot_read_is_refused_before_switching(
    command: str, tmp_path: Path, service_dir: Path
) -> None:
    # This machine's interpreter (the venv's links to /root/.pyenv, and /root is 0700): once switched to the owner
    # the command could not import its lazy modules (`start` crashed on encodings.idna with a traceback).
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import encodings.idna"], user=OWNER, group=OWNER, extra_groups=[], cwd="/",
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except PermissionError:
        pass  # it cannot even run it: the case at hand
    else:
        if probe.returncode == 0:
            pytest.skip(f"uid {OWNER} can run this Python: nothing to refuse")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    source = str(Path(__file__).resolve().parent.parent / "src")
    env = isolated_env(
        PYTHONPATH=os.pathsep.join([source, *paths]), PYTHONDONTWRITEBYTECODE="1", XDG_STATE_HOME=str(tmp_path)
    )
    args = ["--host", "127.0.0.1", "--port", str(free_port())] if command == "start" else []
    try:
        ran = _run((sys.executable, env), command, "--data-dir", service_dir, *args)
    finally:
        _run((sys.executable, env), "stop", "--data-dir", service_dir)  # had it started after all
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr, ran.stderr
    assert "running as that user" not in ran.stderr
    assert f"Error: not switching to nobody (uid {OWNER}), the owner of the data directory {service_dir}" in ran.stderr
    assert "that user cannot read " in ran.stderr and "sudo -u nobody pkgcache" in ran.stderr, ran.stderr
    assert ran.stderr.count("\n") == 1, ran.stderr  # one paragraph
    assert list(service_dir.iterdir()) == []  # nothing written there, as root or as the owner
