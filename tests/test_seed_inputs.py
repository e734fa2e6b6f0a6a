"""Seed inputs: every format a team uses, read into one SeedPlan.

Lock files made by the real tools (uv against the fake index, rattler's lock writer against the fake conda
mirror) and hand-written files in the exact shapes uv, pip, poetry, pdm, pixi, conda and conda-lock write.
Odd cases (continuation lines, includes, markers, editables, local paths, unknown formats, malformed lines)
must land as skipped-with-reason or as `file:line: why` errors, collected, never raised.
"""

# The lock-file texts below keep each entry on one line, as the tools write them, whatever its length.
# ruff: noqa: E501

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from pkgcache.seed import (
    CondaFile,
    InputFormat,
    PypiFile,
    SeedPlan,
    read_inputs,
)
from pkgcache.seed.conda_inputs import locate_package
from tests.fakes.conda_channel import build_channel
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.fakes.rattler_lock import write_pixi_lock
from tests.support import UV, BackgroundLoop, isolated_env

TUNA_SIMPLE = "https://mirrors.tuna.tsinghua.edu.cn/pypi/web/simple"
FILES = "https://mirrors.tuna.tsinghua.edu.cn/pypi/web/packages"
FORGE = "https://conda.anaconda.org/conda-forge"
TUNA_CONDA = "https://mirrors.tuna.tsinghua.edu.cn/anaconda"


def sha(label: str) -> str:
    """A stand-in sha256 digest, distinct per label."""
    return hashlib.sha256(label.encode()).hexdigest()


def md5(label: str) -> str:
    return hashlib.md5(label.encode()).hexdigest()


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors(plan: SeedPlan) -> list[str]:
    return [str(error) for error in plan.errors]


def files_by_name(plan: SeedPlan) -> dict[str, PypiFile]:
    return {f.filename: f for f in plan.pypi_files}


def conda_by_name(plan: SeedPlan) -> dict[str, CondaFile]:
    return {f.filename: f for f in plan.conda_files}


def run_uv(cwd: Path, *args: str) -> None:
    env = isolated_env(UV_CACHE_DIR=str(cwd / ".uv-cache"))
    proc = subprocess.run([str(UV), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --- made by uv, against the fake index -------------------------------------------------------------------------

FORKING_PROJECT = """\
[project]
name = "demo"
version = "0.1"
requires-python = ">=3.10"
dependencies = [
    "alpha==1.0; sys_platform == 'win32'",
    "alpha==2.0; sys_platform != 'win32'",
    "bigpkg",
]
"""
# What the project locks: both forks' alpha, with alpha 2.0's sdist as well as its wheel.
LOCKED = {
    "alpha-1.0-py3-none-any.whl",
    "alpha-2.0-py3-none-any.whl",
    "alpha-2.0.tar.gz",
    "beta-1.1-py3-none-any.whl",
    "gamma-0.5-py3-none-any.whl",
    "delta_pkg-3.0-py3-none-any.whl",
    "bigpkg-1.0-py3-none-any.whl",
}


@pytest.fixture
def uv_project(tmp_path: Path, official_upstream: OfficialLikeUpstream) -> Path:
    """A project whose uv.lock forks on sys_platform, locked by uv against the fake index."""
    write(tmp_path, "pyproject.toml", FORKING_PROJECT)
    run_uv(tmp_path, "lock", "--index-url", official_upstream.index_url)
    assert official_upstream.count("/simple/alpha/") >= 1, "uv must have read the fake index"
    return tmp_path


def assert_locked_files_match_the_index(plan: SeedPlan, upstream: OfficialLikeUpstream) -> None:
    found = files_by_name(plan)
    assert set(found) == LOCKED
    dists = sample_dists()
    for filename, locked in found.items():
        dist = find_dist(dists, filename)
        assert locked.sha256 == dist.sha256, filename
        assert locked.size == dist.size, filename
        assert locked.project == dist.normalized
        assert locked.url == upstream.file_url(dist)
        assert locked.cache_path == f"pypi/files/{dist.normalized}/{filename}"


def test_a_uv_lock_made_by_uv_yields_every_file_of_both_forks_with_hash_size_index_and_markers(
    uv_project: Path, official_upstream: OfficialLikeUpstream
) -> None:
    plan = read_inputs([uv_project / "uv.lock"])

    assert errors(plan) == []
    assert [i.format for i in plan.inputs] == [InputFormat.UV_LOCK]
    assert plan.inputs[0].environments == ('sys_platform == "win32"', 'sys_platform != "win32"')
    assert plan.inputs[0].requires_python == ">=3.10"
    assert_locked_files_match_the_index(plan, official_upstream)
    found = files_by_name(plan)
    assert {f.index_url for f in found.values()} == {official_upstream.index_url}
    assert found["alpha-1.0-py3-none-any.whl"].markers == ('sys_platform == "win32"',)
    assert found["alpha-2.0.tar.gz"].markers == ('sys_platform != "win32"',)
    assert found["alpha-2.0.tar.gz"].version == "2.0"
    # The project itself is built from its source: skipped, and said so.
    assert [(s.what, s.reason) for s in plan.skipped] == [
        ("demo (virtual = .)", "a local project: built from its source, not from an index")
    ]


def test_a_pylock_exported_by_uv_yields_the_same_files_with_each_package_marker(
    uv_project: Path, official_upstream: OfficialLikeUpstream
) -> None:
    run_uv(uv_project, "export", "--format", "pylock.toml", "-o", "pylock.toml")

    plan = read_inputs([uv_project / "pylock.toml"])

    assert errors(plan) == []
    assert [i.format for i in plan.inputs] == [InputFormat.PYLOCK]
    assert_locked_files_match_the_index(plan, official_upstream)
    found = files_by_name(plan)
    assert found["alpha-1.0-py3-none-any.whl"].markers == ('sys_platform == "win32"',)
    assert found["gamma-0.5-py3-none-any.whl"].markers == ('sys_platform != "win32"',)
    assert found["bigpkg-1.0-py3-none-any.whl"].markers == ()
    assert found["bigpkg-1.0-py3-none-any.whl"].index_url == official_upstream.index_url


def test_requirements_compiled_by_uv_with_hashes_are_pins_carrying_every_file_hash(
    tmp_path: Path, official_upstream: OfficialLikeUpstream
) -> None:
    write(tmp_path, "requirements.in", "alpha\nbigpkg\n")
    run_uv(
        tmp_path, "pip", "compile", "--generate-hashes", "--index-url", official_upstream.index_url,
        "requirements.in", "-o", "requirements.txt", "--python-version", "3.11",
    )  # fmt: skip
    assert official_upstream.count("/simple/bigpkg/") >= 1

    plan = read_inputs([tmp_path / "requirements.txt"])

    assert errors(plan) == []
    pins = {r.project: r for r in plan.pypi_requirements}
    assert {name: r.pinned_version for name, r in pins.items()} == {
        "alpha": "2.0", "beta": "1.1", "bigpkg": "1.0", "delta-pkg": "3.0", "gamma": "0.5",
    }  # fmt: skip
    dists = sample_dists()
    # alpha 2.0's pin lists both its files' hashes (on continuation lines): the files to seed are those.
    assert set(pins["alpha"].hashes) == {
        f"sha256:{find_dist(dists, 'alpha-2.0-py3-none-any.whl').sha256}",
        f"sha256:{find_dist(dists, 'alpha-2.0.tar.gz').sha256}",
    }
    assert pins["gamma"].origin.line is not None and not pins["gamma"].constraint


# --- made by rattler's lock writer, against the fake conda mirror ------------------------------------------------


@pytest.fixture(scope="module")
def two_platform_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed-channel") / "forge"
    build_channel(root, subdirs=("linux-64", "osx-arm64"))
    return root


def test_a_pixi_lock_written_by_rattler_yields_each_platform_file_once_with_its_platforms(
    tmp_path: Path, bg_loop: BackgroundLoop, two_platform_channel: Path
) -> None:
    mirror = MirrorLikeUpstream({"conda-forge": two_platform_channel}, only_json=True)
    bg_loop.run(mirror.start())
    try:
        wheel_url = f"{FILES}/ab/cd/alpha-2.0-py3-none-any.whl"
        locked = write_pixi_lock(
            [mirror.channel_url("conda-forge")], ["linux-64", "osx-arm64"], ["app"],
            tmp_path / "pixi.lock", tmp_path / "rattler-cache", pypi=[f"alpha==2.0@{wheel_url}"],
        )  # fmt: skip
        assert mirror.count("repodata.json") >= 3, "rattler must have read noarch and both platforms' repodata"
    finally:
        bg_loop.run(mirror.stop())

    plan = read_inputs([tmp_path / "pixi.lock"])

    assert errors(plan) == []
    assert plan.inputs[0].format is InputFormat.PIXI_LOCK
    assert plan.inputs[0].platforms == ("linux-64", "osx-arm64")
    found = conda_by_name(plan)
    # Each URL once; noarch packages used by both platforms carry both.
    assert len(plan.conda_files) == len({r["url"] for r in locked}) == 6
    for record in locked:
        conda_file = next(f for f in plan.conda_files if f.url == record["url"])
        assert (conda_file.sha256, conda_file.md5, conda_file.size) == (record["sha256"], record["md5"], record["size"])
        assert record["platform"] in conda_file.platforms
        assert conda_file.channel == "conda-forge"
        assert conda_file.cache_path == f"conda/cloud/conda-forge/{conda_file.subdir}/{conda_file.filename}"
    assert found["pydata-2.0-py_0.conda"].platforms == ("linux-64", "osx-arm64")
    assert found["pydata-2.0-py_0.conda"].subdir == "noarch"
    assert {f.subdir for f in plan.conda_files if f.filename.startswith("app-")} == {"linux-64", "osx-arm64"}
    assert [(f.project, f.filename, f.platforms) for f in plan.pypi_files] == [
        ("alpha", "alpha-2.0-py3-none-any.whl", ("linux-64", "osx-arm64"))
    ]


# --- requirements files ------------------------------------------------------------------------------------------

REQUIREMENTS = f"""\
# Production requirements, pinned by hand and by pip-compile.
--index-url {TUNA_SIMPLE}
--extra-index-url https://example.org/simple/
--find-links https://example.org/wheels/
--trusted-host example.org

requests==2.31.0 \\
    --hash=sha256:{sha("requests-whl")} \\
    --hash=sha256:{sha("requests-sdist")}
    # via -r requirements.in
urllib3>=1.21,<3 ; python_version >= "3.8"   # a range with a marker
Django[bcrypt,argon2]~=4.2
numpy
pywin32==306; sys_platform == 'win32'
-r dev/requirements-dev.txt
-c constraints.txt
"""


def test_a_requirements_file_gives_pins_ranges_extras_markers_options_and_follows_includes(tmp_path: Path) -> None:
    main = write(tmp_path, "requirements.txt", REQUIREMENTS)
    write(tmp_path, "dev/requirements-dev.txt", "pytest>=8\n-r ../shared/common.txt\n")
    write(tmp_path, "shared/common.txt", "attrs\n")
    write(tmp_path, "constraints.txt", "urllib3<2.3\ncertifi==2024.2.2\n")

    plan = read_inputs([main])

    assert errors(plan) == []
    reqs = {r.project: r for r in plan.pypi_requirements if not r.constraint}
    constraints = [str(r.requirement) for r in plan.pypi_requirements if r.constraint]
    assert set(reqs) == {"requests", "urllib3", "django", "numpy", "pywin32", "pytest", "attrs"}
    assert constraints == ["urllib3<2.3", "certifi==2024.2.2"]
    assert reqs["requests"].pinned_version == "2.31.0"
    assert reqs["requests"].hashes == (f"sha256:{sha('requests-whl')}", f"sha256:{sha('requests-sdist')}")
    assert reqs["requests"].origin.line == 7
    assert str(reqs["urllib3"].requirement.marker) == 'python_version >= "3.8"'
    assert reqs["urllib3"].pinned_version is None and reqs["urllib3"].origin.line == 11
    assert reqs["django"].requirement.extras == {"bcrypt", "argon2"}
    assert str(reqs["pywin32"].requirement.marker) == 'sys_platform == "win32"'
    # Includes are relative to the including file; -c lines are constraints, -r lines are not.
    assert reqs["pytest"].origin == reqs["pytest"].origin.__class__(tmp_path / "dev/requirements-dev.txt", 1)
    assert reqs["attrs"].origin.path == tmp_path / "dev/../shared/common.txt"
    assert [i.included_by.line if i.included_by else None for i in plan.inputs] == [None, 15, 2, 16]
    assert [(o.option, o.value) for o in plan.pypi_options] == [
        ("--index-url", TUNA_SIMPLE),
        ("--extra-index-url", "https://example.org/simple/"),
        ("--find-links", "https://example.org/wheels/"),
        ("--trusted-host", "example.org"),
    ]


def test_editables_local_paths_vcs_and_direct_urls_are_skipped_with_their_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "requirements-dev.txt",
        "-e .\n"
        "-e git+https://example.org/team/tool.git@v1.0#egg=tool\n"
        "./vendor/localpkg\n"
        "wheels/foo-1.0-py3-none-any.whl\n"
        "lib @ file:///srv/wheels/lib-1.0-py3-none-any.whl\n"
        "pkg @ https://example.org/dl/pkg-1.0-py3-none-any.whl\n"
        "git+https://example.org/team/other.git#egg=other\n"
        "-r https://example.org/requirements.txt\n"
        "six==1.16.0\n",
    )

    plan = read_inputs([path])

    assert errors(plan) == []
    assert [r.project for r in plan.pypi_requirements] == ["six"]
    reasons = [(s.origin.line, s.reason.split(":")[0]) for s in plan.skipped]
    assert reasons == [
        (1, "an editable install"),
        (2, "an editable install"),
        (3, "a local path"),
        (4, "a local path"),
        (5, "a local file"),
        (6, "a direct URL"),
        (7, "a version-control checkout"),
        (8, "a requirements file at a URL"),
    ]
    assert plan.skipped[5].url == "https://example.org/dl/pkg-1.0-py3-none-any.whl"


def test_bad_lines_are_each_reported_with_file_and_line_and_the_good_lines_still_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "requirements.txt",
        "good==1.0\n"
        "not a requirement\n"
        "also-good>=2 \\\n"
        "    ; python_version < '3.12'\n"
        "--hash=sha256:" + sha("orphan") + "\n"
        "--no-such-option\n"
        "bad-hash==1.0 --hash=md5:" + md5("x") + "\n"
        "-r missing.txt\n"
        "last==3\n",
    )

    plan = read_inputs([path])

    assert [r.project for r in plan.pypi_requirements] == ["good", "also-good", "last"]
    assert str(plan.pypi_requirements[1].requirement.marker) == 'python_version < "3.12"'
    assert errors(plan) == [
        f"{path}:2: not a requirement: Expected semicolon (after name with no version specifier) or end",
        f"{path}:5: --hash with no requirement on its line (does the line before lack its trailing '\\'?)",
        f"{path}:6: bad option: --no-such-option is not an option pip accepts in a requirements file",
        f"{path}:7: bad --hash: pip accepts sha256, sha384, sha512, not md5",
        f"{path}:8: cannot read {tmp_path / 'missing.txt'}: no such file",
    ]


def test_an_include_loop_is_an_error_at_the_line_that_closes_it(tmp_path: Path) -> None:
    first = write(tmp_path, "requirements.txt", "a\n-r more.txt\n")
    write(tmp_path, "more.txt", "b\n-r requirements.txt\n")

    plan = read_inputs([first])

    assert [r.project for r in plan.pypi_requirements] == ["a", "b"]
    assert errors(plan) == [
        f"{tmp_path / 'more.txt'}:2: requirements.txt includes itself (through requirements.txt -> more.txt)"
    ]


def test_requirements_lines_expand_environment_variables_as_pip_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIRROR", "https://mirrors.example.org")
    path = write(tmp_path, "reqs.in", "--index-url ${MIRROR}/simple\nalpha\n")

    plan = read_inputs([path])

    assert [(o.option, o.value) for o in plan.pypi_options] == [("--index-url", "https://mirrors.example.org/simple")]


# --- hand-written lock files, in the tools' exact shapes ---------------------------------------------------------

UV_LOCK_ODD = f"""\
version = 1
revision = 2
requires-python = ">=3.9"
supported-markers = [
    "sys_platform == 'linux'",
    "sys_platform == 'darwin'",
]

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}

[[package]]
name = "tool"
version = "1.0"
source = {{ git = "https://example.org/team/tool.git?rev=v1.0#0123456789abcdef0123456789abcdef01234567" }}

[[package]]
name = "vendored"
version = "2.0"
source = {{ path = "vendor/vendored-2.0-py3-none-any.whl" }}
wheels = [
    {{ filename = "vendored-2.0-py3-none-any.whl", hash = "sha256:{sha("vendored")}" }},
]

[[package]]
name = "direct"
version = "0.3"
source = {{ url = "https://example.org/dl/direct-0.3.tar.gz" }}
sdist = {{ hash = "sha256:{sha("direct")}" }}

[[package]]
name = "broken"
version = "1.0"
source = {{ registry = "{TUNA_SIMPLE}" }}
wheels = "not a list"

[[package]]
name = "numpy"
version = "2.0.2"
source = {{ registry = "{TUNA_SIMPLE}" }}
sdist = {{ url = "{FILES}/a9/75/numpy-2.0.2.tar.gz", hash = "sha256:{sha("np-sdist")}", size = 18902015, upload-time = "2024-08-26T20:19:40.945Z" }}
wheels = [
    {{ url = "{FILES}/21/91/numpy-2.0.2-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hash = "sha256:{sha("np-linux")}", size = 19547890 }},
    {{ url = "{FILES}/3b/df/numpy-2.0.2-cp39-cp39-macosx_14_0_arm64.whl", hash = "sha256:{sha("np-mac")}", size = 5306225 }},
]

[[package]]
name = "torch"
version = "2.3.0+cpu"
source = {{ registry = "https://download.example.org/whl/cpu" }}
wheels = [
    {{ url = "https://download.example.org/whl/cpu/torch-2.3.0%2Bcpu-cp39-cp39-linux_x86_64.whl", hash = "sha256:{sha("torch")}" }},
]
"""


def test_a_uv_lock_keeps_every_platform_wheel_and_skips_what_no_index_serves(tmp_path: Path) -> None:
    path = write(tmp_path, "uv.lock", UV_LOCK_ODD)

    plan = read_inputs([path])

    found = files_by_name(plan)
    assert set(found) == {
        "numpy-2.0.2.tar.gz",
        "numpy-2.0.2-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-2.0.2-cp39-cp39-macosx_14_0_arm64.whl",
        "torch-2.3.0+cpu-cp39-cp39-linux_x86_64.whl",  # percent-decoded, as installers name it
    }
    assert found["numpy-2.0.2.tar.gz"].size == 18902015
    assert found["numpy-2.0.2-cp39-cp39-macosx_14_0_arm64.whl"].sha256 == sha("np-mac")
    assert found["torch-2.3.0+cpu-cp39-cp39-linux_x86_64.whl"].index_url == "https://download.example.org/whl/cpu"
    assert found["torch-2.3.0+cpu-cp39-cp39-linux_x86_64.whl"].size is None
    assert plan.inputs[0].environments == ('sys_platform == "linux"', 'sys_platform == "darwin"')
    assert [(s.origin.line, s.reason.split(":")[0]) for s in plan.skipped] == [
        (9, "a local project"),
        (14, "a version-control checkout"),
        (19, "a local path"),
        (27, "a direct URL"),
    ]
    assert errors(plan) == [f"{path}:33: package broken: wheels is not a list"]


POETRY_LOCK = f"""\
# This file is automatically @generated by Poetry 2.1.3 and should not be changed by hand.

[[package]]
name = "certifi"
version = "2024.8.30"
description = "Python package for providing Mozilla's CA Bundle."
optional = false
python-versions = ">=3.6"
groups = ["main"]
files = [
    {{file = "certifi-2024.8.30-py3-none-any.whl", hash = "sha256:{sha("certifi-whl")}"}},
    {{file = "certifi-2024.8.30.tar.gz", hash = "sha256:{sha("certifi-sdist")}"}},
]

[[package]]
name = "colorama"
version = "0.4.6"
description = "Cross-platform colored terminal text."
optional = false
python-versions = "!=3.0.*,!=3.1.*,!=3.2.*,!=3.3.*,!=3.4.*,!=3.5.*,!=3.6.*,>=2.7"
groups = ["main", "dev"]
markers = {{main = "platform_system == \\"Windows\\"", dev = "sys_platform == \\"win32\\""}}
files = [
    {{file = "colorama-0.4.6-py2.py3-none-any.whl", hash = "sha256:{sha("colorama")}"}},
]

[[package]]
name = "torch"
version = "2.3.0+cpu"
description = "Tensors and Dynamic neural networks in Python with strong GPU acceleration"
optional = false
python-versions = ">=3.8.0"
groups = ["main"]
markers = "sys_platform == \\"linux\\""
files = [
    {{file = "torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl", hash = "sha256:{sha("torch")}"}},
]

[package.source]
type = "legacy"
url = "https://download.example.org/whl/cpu"
reference = "pytorch-cpu"

[[package]]
name = "mytool"
version = "0.1.0"
description = ""
optional = false
python-versions = "^3.11"
groups = ["main"]
files = []
develop = false

[package.source]
type = "git"
url = "https://example.org/team/mytool.git"
reference = "HEAD"
resolved_reference = "0123456789abcdef0123456789abcdef01234567"

[[package]]
name = "sibling"
version = "1.0"
description = ""
optional = false
python-versions = "*"
groups = ["main"]
files = []
develop = true

[package.source]
type = "directory"
url = "../sibling"

[metadata]
lock-version = "2.1"
python-versions = "^3.11"
content-hash = "{sha("content")}"
"""


def test_a_poetry_lock_gives_file_names_and_hashes_with_group_markers_and_the_legacy_source(tmp_path: Path) -> None:
    path = write(tmp_path, "poetry.lock", POETRY_LOCK)

    plan = read_inputs([path])

    assert errors(plan) == []
    assert plan.inputs[0].format is InputFormat.POETRY_LOCK
    found = files_by_name(plan)
    assert set(found) == {
        "certifi-2024.8.30-py3-none-any.whl",
        "certifi-2024.8.30.tar.gz",
        "colorama-0.4.6-py2.py3-none-any.whl",
        "torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl",
    }
    certifi = found["certifi-2024.8.30.tar.gz"]
    assert (certifi.url, certifi.index_url, certifi.sha256, certifi.origin.line) == (
        None,
        None,
        sha("certifi-sdist"),
        3,
    )
    assert found["colorama-0.4.6-py2.py3-none-any.whl"].markers == (
        'platform_system == "Windows"',
        'sys_platform == "win32"',
    )
    assert found["torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl"].index_url == "https://download.example.org/whl/cpu"
    assert found["torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl"].markers == ('sys_platform == "linux"',)
    assert [(s.origin.line, s.reason.split(":")[0]) for s in plan.skipped] == [
        (44, "a version-control checkout"),
        (60, "a local path"),
    ]


def test_an_old_poetry_lock_with_metadata_files_and_the_oldest_with_bare_hashes_are_read(tmp_path: Path) -> None:
    old = write(
        tmp_path,
        "old/poetry.lock",
        f"""\
[[package]]
category = "main"
description = "A sample Python project"
name = "sampleproject"
optional = false
python-versions = "*"
version = "1.3.1"

[metadata]
content-hash = "{sha("c")}"
lock-version = "1.1"
python-versions = "^3.8"

[metadata.files]
sampleproject = [
    {{file = "sampleproject-1.3.1-py3-none-any.whl", hash = "sha256:{sha("s-whl")}"}},
    {{file = "sampleproject-1.3.1.tar.gz", hash = "sha256:{sha("s-sdist")}"}},
]
""",
    )
    oldest = write(
        tmp_path,
        "oldest/poetry.lock",
        f"""\
[[package]]
category = "main"
description = "Python HTTP for Humans."
name = "requests"
optional = false
platform = "*"
python-versions = ">=2.7"
version = "2.20.0"

[metadata]
content-hash = "{sha("c2")}"
python-versions = "*"
lock-version = "1.0"

[metadata.hashes]
requests = ["{sha("r1")}", "{sha("r2")}"]
""",
    )

    plan = read_inputs([old, oldest])

    assert errors(plan) == []
    assert set(files_by_name(plan)) == {"sampleproject-1.3.1-py3-none-any.whl", "sampleproject-1.3.1.tar.gz"}
    [pin] = plan.pypi_requirements
    assert (str(pin.requirement), pin.hashes) == ("requests==2.20.0", (f"sha256:{sha('r1')}", f"sha256:{sha('r2')}"))


PDM_LOCK = f"""\
# This file is @generated by PDM.
# It is not intended for manual editing.

[metadata]
groups = ["default", "dev"]
strategy = ["inherit_metadata", "static_urls"]
lock_version = "4.5.0"
content_hash = "sha256:{sha("pdm")}"

[[metadata.targets]]
requires_python = ">=3.10"
platform = "manylinux_2_17_x86_64"

[[metadata.targets]]
requires_python = ">=3.10"
platform = "windows_amd64"

[[package]]
name = "charset-normalizer"
version = "3.4.0"
requires_python = ">=3.7.0"
summary = "The Real First Universal Charset Detector."
groups = ["default"]
files = [
    {{url = "{FILES}/f0/b5/charset_normalizer-3.4.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hash = "sha256:{sha("cn-linux")}"}},
    {{url = "{FILES}/a8/31/charset_normalizer-3.4.0-cp311-cp311-win_amd64.whl", hash = "sha256:{sha("cn-win")}"}},
    {{url = "{FILES}/f2/4f/charset_normalizer-3.4.0.tar.gz", hash = "sha256:{sha("cn-sdist")}"}},
]

[[package]]
name = "pywin32"
version = "308"
summary = "Python for Window Extensions"
groups = ["default"]
marker = "sys_platform == \\"win32\\""
files = [
    {{url = "{FILES}/eb/e2/pywin32-308-cp311-cp311-win_amd64.whl", hash = "sha256:{sha("pywin32")}"}},
]

[[package]]
name = "myproject"
version = "0.1.0"
requires_python = ">=3.10"
editable = true
path = "."
summary = "The project itself"
groups = ["dev"]

[[package]]
name = "plugin"
version = "0.2"
git = "https://example.org/team/plugin.git"
revision = "0123456789abcdef0123456789abcdef01234567"
summary = ""
groups = ["default"]
"""


def test_a_pdm_lock_with_static_urls_and_targets_yields_urls_and_skips_editables_and_git(tmp_path: Path) -> None:
    path = write(tmp_path, "pdm.lock", PDM_LOCK)

    plan = read_inputs([path])

    assert errors(plan) == []
    assert plan.inputs[0].environments == (
        "requires_python >=3.10; platform manylinux_2_17_x86_64",
        "requires_python >=3.10; platform windows_amd64",
    )
    found = files_by_name(plan)
    assert len(found) == 4
    sdist = found["charset_normalizer-3.4.0.tar.gz"]
    assert (sdist.project, sdist.url, sdist.sha256) == (
        "charset-normalizer",
        f"{FILES}/f2/4f/charset_normalizer-3.4.0.tar.gz",
        sha("cn-sdist"),
    )
    assert sdist.requires_python == ">=3.7.0"
    assert found["pywin32-308-cp311-cp311-win_amd64.whl"].markers == ('sys_platform == "win32"',)
    assert [(s.origin.line, s.reason.split(":")[0]) for s in plan.skipped] == [
        (40, "an editable install"),
        (49, "a version-control checkout"),
    ]


def test_a_pdm_lock_without_static_urls_gives_names_only_and_any_lock_name_is_recognised(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "py311-linux.lock",
        f"""\
# This file is @generated by PDM.
# It is not intended for manual editing.

[metadata]
groups = ["default"]
strategy = ["inherit_metadata"]
lock_version = "4.5.0"
content_hash = "sha256:{sha("x")}"

[[metadata.targets]]
requires_python = "==3.11.*"
platform = "manylinux_2_17_x86_64"

[[package]]
name = "idna"
version = "3.10"
requires_python = ">=3.6"
summary = "Internationalized Domain Names in Applications (IDNA)"
groups = ["default"]
files = [
    {{file = "idna-3.10-py3-none-any.whl", hash = "sha256:{sha("idna")}"}},
]
""",
    )

    plan = read_inputs([path])

    assert errors(plan) == []
    assert plan.inputs[0].format is InputFormat.PDM_LOCK
    [idna] = plan.pypi_files
    assert (idna.filename, idna.url, idna.sha256, idna.origin.line) == (
        "idna-3.10-py3-none-any.whl",
        None,
        sha("idna"),
        14,
    )


PYLOCK = f"""\
lock-version = '1.0'
environments = ["sys_platform == 'win32'", "sys_platform == 'linux'"]
requires-python = '==3.12.*'
created-by = 'mousebender'

[[packages]]
name = 'attrs'
version = '25.1.0'
requires-python = '>=3.8'
index = '{TUNA_SIMPLE}'
wheels = [
  {{name = 'attrs-25.1.0-py3-none-any.whl', upload-time = 2025-01-25T11:30:10.164985+00:00, url = '{FILES}/fc/30/attrs-25.1.0-py3-none-any.whl', size = 63152, hashes = {{sha256 = '{sha("attrs")}'}}}},
]

[[packages]]
name = 'numpy'
version = '2.2.3'
marker = "python_version >= '3.12'"
wheels = [
  {{name = 'numpy-2.2.3-cp312-cp312-win_amd64.whl', url = '{FILES}/42/6e/numpy-2.2.3-cp312-cp312-win_amd64.whl', size = 12626357, hashes = {{sha256 = '{sha("np-win")}', blake2b = '{hashlib.blake2b(b"x").hexdigest()}'}}}},
  {{url = '{FILES}/39/04/numpy-2.2.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl', size = 16116679, hashes = {{sha256 = '{sha("np-linux")}'}}}},
]

[[packages]]
name = 'Bad_Name'
version = '1.0'
wheels = [{{url = '{FILES}/bad_name-1.0-py3-none-any.whl', hashes = {{sha256 = '{sha("bad")}'}}}}]

[[packages]]
name = 'tool'
[packages.vcs]
type = 'git'
url = 'https://example.org/team/tool.git'
commit-id = '0123456789abcdef0123456789abcdef01234567'

[[packages]]
name = 'local'
[packages.directory]
path = './local'
editable = true

[[packages]]
name = 'archived'
version = '0.1'
[packages.archive]
url = 'https://example.org/dl/archived-0.1.tar.gz'
hashes = {{sha256 = '{sha("archived")}'}}

[tool.mousebender]
command = ['.', 'lock', '--platform', 'cpython3.12-windows-x64', 'attrs', 'numpy']
"""


def test_a_pylock_gives_every_wheel_with_its_hashes_and_reports_an_invalid_package_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pylock.dev.toml", PYLOCK)

    plan = read_inputs([path])

    assert plan.inputs[0].environments == ('sys_platform == "win32"', 'sys_platform == "linux"')
    assert plan.inputs[0].requires_python == "==3.12.*"
    found = files_by_name(plan)
    assert set(found) == {
        "attrs-25.1.0-py3-none-any.whl",
        "numpy-2.2.3-cp312-cp312-win_amd64.whl",
        "numpy-2.2.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    }
    assert found["attrs-25.1.0-py3-none-any.whl"].index_url == TUNA_SIMPLE
    assert found["attrs-25.1.0-py3-none-any.whl"].requires_python == ">=3.8"
    assert set(found["numpy-2.2.3-cp312-cp312-win_amd64.whl"].hashes) == {"sha256", "blake2b"}
    assert found["numpy-2.2.3-cp312-cp312-win_amd64.whl"].markers == ('python_version >= "3.12"',)
    assert [(s.what, s.reason.split(":")[0]) for s in plan.skipped] == [
        ("tool", "a version-control checkout"),
        ("local", "a local path"),
        ("archived", "a direct URL"),
    ]
    assert errors(plan) == [f"{path}:24: Name 'Bad_Name' is not normalized (in packages[2].name)"]


# --- conda ---------------------------------------------------------------------------------------------------------

EXPLICIT = f"""\
# This file may be used to create an environment using:
# $ conda create --name <env> --file <this file>
# platform: linux-64
# created-by: conda-lock 2.5.7
@EXPLICIT
{FORGE}/linux-64/_libgcc_mutex-0.1-conda_forge.tar.bz2#{md5("mutex")}
{FORGE}/noarch/tzdata-2024a-h0c530f3_0.conda#sha256:{sha("tzdata")}
https://repo.anaconda.com/pkgs/main/linux-64/openssl-3.0.15-h5eee18b_0.conda#{sha("openssl")}
{TUNA_CONDA}/cloud/conda-forge/linux-64/python-3.12.7-hc5c86c4_0_cpython.conda
{TUNA_CONDA}/pkgs/main/noarch/pip-24.2-py312h06a4308_0.conda#{md5("pip")}
file:///home/me/conda-bld/linux-64/mine-0.1-0.conda
https://conda.anaconda.org/conda-forge/linux-64/not-a-package.txt
"""


def test_an_explicit_list_under_any_name_gives_each_url_with_its_md5_or_sha256_and_channel(tmp_path: Path) -> None:
    path = write(tmp_path, "conda-linux-64.lock", EXPLICIT)

    plan = read_inputs([path])

    assert plan.inputs[0].format is InputFormat.CONDA_EXPLICIT
    assert plan.inputs[0].platforms == ("linux-64",)
    found = conda_by_name(plan)
    mutex = found["_libgcc_mutex-0.1-conda_forge.tar.bz2"]
    assert (mutex.channel, mutex.subdir, mutex.md5, mutex.sha256) == ("conda-forge", "linux-64", md5("mutex"), None)
    assert mutex.cache_path == "conda/cloud/conda-forge/linux-64/_libgcc_mutex-0.1-conda_forge.tar.bz2"
    assert (found["tzdata-2024a-h0c530f3_0.conda"].sha256, found["tzdata-2024a-h0c530f3_0.conda"].subdir) == (
        sha("tzdata"),
        "noarch",
    )
    openssl = found["openssl-3.0.15-h5eee18b_0.conda"]
    assert (openssl.channel, openssl.sha256) == ("pkgs/main", sha("openssl"))
    assert openssl.cache_path == "conda/pkgs/main/linux-64/openssl-3.0.15-h5eee18b_0.conda"
    python = found["python-3.12.7-hc5c86c4_0_cpython.conda"]
    assert (python.channel, python.channel_url, python.md5, python.sha256) == (
        "conda-forge",
        f"{TUNA_CONDA}/cloud/conda-forge",
        None,
        None,
    )
    assert found["pip-24.2-py312h06a4308_0.conda"].channel == "pkgs/main"
    assert all(f.platforms == ("linux-64",) for f in plan.conda_files)
    assert [(s.origin.line, s.reason.split(":")[0]) for s in plan.skipped] == [(11, "a local file")]
    assert errors(plan) == [
        f"{path}:12: not a conda package URL (<url>/<name>-<version>-<build>.conda[#hash]): "
        "https://conda.anaconda.org/conda-forge/linux-64/not-a-package.txt"
    ]


@pytest.mark.parametrize(
    ("url", "channel", "subdir"),
    [
        (f"{FORGE}/linux-64/numpy-2.1.2-py312h58c1407_0.conda", "conda-forge", "linux-64"),
        ("https://prefix.dev/conda-forge/osx-arm64/numpy-2.1.2-py312h801f5e3_0.conda", "conda-forge", "osx-arm64"),
        ("https://repo.anaconda.com/pkgs/main/win-64/numpy-1.26.4-py312hfd52020_0.conda", "pkgs/main", "win-64"),
        ("https://repo.anaconda.com/pkgs/r/noarch/r-base-4.3.1-0.conda", "pkgs/r", "noarch"),
        (f"{TUNA_CONDA}/cloud/pytorch/linux-64/pytorch-2.4.0-py3.12_cpu_0.tar.bz2", "pytorch", "linux-64"),
        (f"{TUNA_CONDA}/pkgs/main/linux-64/zlib-1.2.13-h5eee18b_1.conda", "pkgs/main", "linux-64"),
        (
            "https://mirrors.ustc.edu.cn/anaconda/cloud/conda-forge/noarch/pip-24.2-pyh8b19718_1.conda",
            "conda-forge",
            "noarch",
        ),
        (
            "http://10.0.0.5:3150/conda/cloud/conda-forge/linux-64/zlib-1.3.1-hb9d3cd8_2.conda",
            "conda-forge",
            "linux-64",
        ),
        ("http://10.0.0.5:3150/conda/pkgs/main/linux-64/zlib-1.2.13-h5eee18b_1.conda", "pkgs/main", "linux-64"),
        (
            "https://conda.anaconda.org/nvidia/label/cuda-12.1.0/linux-64/cuda-nvcc-12.1.66-0.tar.bz2",
            "nvidia/label/cuda-12.1.0",
            "linux-64",
        ),
        ("https://conda.anaconda.org/t/tk-0123/private/linux-64/secret-1.0-0.conda", "private", "linux-64"),
    ],
)
def test_the_channel_is_read_from_the_url_whatever_the_host(url: str, channel: str, subdir: str) -> None:
    location = locate_package(url)
    assert (location.channel, location.subdir) == (channel, subdir)
    assert url.startswith(location.channel_url + "/")


ENVIRONMENT_YML = """\
name: analysis
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.11
  - numpy>=1.26,<2
  - conda-forge::pandas 2.2.*
  - scipy[version='>=1.13']
  - pip
  - pip:
      - --index-url https://mirrors.tuna.tsinghua.edu.cn/pypi/web/simple
      - requests==2.32.3
      - -r requirements-extra.txt
      - -e .
  - "???"
variables:
  OMP_NUM_THREADS: "1"
"""


def test_an_environment_yml_gives_matchspecs_with_its_channels_and_its_pip_section_as_requirements(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "env/environment.yml", ENVIRONMENT_YML)
    write(tmp_path, "env/requirements-extra.txt", "rich>=13\n")

    plan = read_inputs([path])

    assert plan.inputs[0].format is InputFormat.ENVIRONMENT_YML
    assert [(s.spec, s.name, s.origin.line) for s in plan.conda_specs] == [
        ("python=3.11", "python", 6),
        ("numpy>=1.26,<2", "numpy", 7),
        ("conda-forge::pandas 2.2.*", "pandas", 8),
        ("scipy[version='>=1.13']", "scipy", 9),
        ("pip", "pip", 10),
    ]
    assert {s.channels for s in plan.conda_specs} == {("conda-forge", "defaults")}
    assert [(r.project, r.origin.path.name, r.origin.line) for r in plan.pypi_requirements] == [
        ("requests", "environment.yml", 13),
        ("rich", "requirements-extra.txt", 1),
    ]
    assert [(o.option, o.origin.line) for o in plan.pypi_options] == [("--index-url", 12)]
    assert [(s.what, s.origin.line) for s in plan.skipped] == [(".", 15)]
    assert errors(plan) == [f"{path}:16: not a conda MatchSpec: ???"]


def test_a_conda_spec_list_with_a_platform_comment_is_matchspecs_to_resolve_for_that_platform(tmp_path: Path) -> None:
    path = write(tmp_path, "spec-file.txt", "# platform: osx-arm64\npython=3.12\nnumpy\nscipy=1.13.1=py312h*\n")

    plan = read_inputs([path])

    assert errors(plan) == []
    assert [(s.name, s.platforms) for s in plan.conda_specs] == [
        ("python", ("osx-arm64",)),
        ("numpy", ("osx-arm64",)),
        ("scipy", ("osx-arm64",)),
    ]


PIXI_LOCK_V6 = f"""\
version: 6
environments:
  default:
    channels:
    - url: {FORGE}/
    indexes:
    - {TUNA_SIMPLE}
    packages:
      linux-64:
      - conda: {FORGE}/linux-64/python-3.12.7-hc5c86c4_0_cpython.conda
      - conda: {FORGE}/noarch/tzdata-2024b-hc8b5060_0.conda
      - pypi: {FILES}/ab/cd/rich-13.9.2-py3-none-any.whl
      - pypi: ./packages/localpkg
      win-64:
      - conda: {FORGE}/win-64/python-3.12.7-hce54a09_0_cpython.conda
      - conda: {FORGE}/noarch/tzdata-2024b-hc8b5060_0.conda
      - pypi: {FILES}/ab/cd/rich-13.9.2-py3-none-any.whl
  test:
    channels:
    - url: {FORGE}/
    packages:
      linux-64:
      - conda: {FORGE}/linux-64/python-3.12.7-hc5c86c4_0_cpython.conda
      - conda: {FORGE}/noarch/pytest-8.3.3-pyhd8ed1ab_0.conda
packages:
- conda: {FORGE}/linux-64/python-3.12.7-hc5c86c4_0_cpython.conda
  sha256: {sha("py-linux")}
  md5: {md5("py-linux")}
  depends:
  - __glibc >=2.17,<3.0.a0
  license: Python-2.0
  size: 31574780
  timestamp: 1728059777603
- conda: {FORGE}/noarch/pytest-8.3.3-pyhd8ed1ab_0.conda
  sha256: {sha("pytest")}
  md5: {md5("pytest")}
  size: 258293
- conda: {FORGE}/noarch/tzdata-2024b-hc8b5060_0.conda
  sha256: {sha("tzdata")}
  md5: {md5("tzdata")}
  license: LicenseRef-Public-Domain
  size: 122354
- conda: {FORGE}/win-64/python-3.12.7-hce54a09_0_cpython.conda
  sha256: not-hex
  size: 16235296
- pypi: {FILES}/ab/cd/rich-13.9.2-py3-none-any.whl
  name: rich
  version: 13.9.2
  sha256: {sha("rich")}
  requires_dist:
  - markdown-it-py>=2.2.0
  requires_python: '>=3.8.0'
- pypi: ./packages/localpkg
  name: localpkg
  version: 0.1.0
  sha256: {sha("local")}
  editable: true
- conda: ../recipes/mytool
  name: mytool
  version: '0.1'
  build: hbf21a9e_0
  subdir: noarch
"""


def test_a_pixi_lock_v6_merges_each_package_across_environments_and_platforms(tmp_path: Path) -> None:
    path = write(tmp_path, "pixi.lock", PIXI_LOCK_V6)

    plan = read_inputs([path])

    assert plan.inputs[0].environments == ("default", "test")
    assert plan.inputs[0].platforms == ("linux-64", "win-64")
    found = conda_by_name(plan)
    assert set(found) == {
        "python-3.12.7-hc5c86c4_0_cpython.conda",
        "pytest-8.3.3-pyhd8ed1ab_0.conda",
        "tzdata-2024b-hc8b5060_0.conda",
    }
    python = found["python-3.12.7-hc5c86c4_0_cpython.conda"]
    assert (python.sha256, python.md5, python.size, python.origin.line) == (
        sha("py-linux"), md5("py-linux"), 31574780, 26,
    )  # fmt: skip
    assert (python.platforms, python.environments) == (("linux-64",), ("default", "test"))
    assert found["tzdata-2024b-hc8b5060_0.conda"].platforms == ("linux-64", "win-64")
    assert found["pytest-8.3.3-pyhd8ed1ab_0.conda"].environments == ("test",)
    [rich] = plan.pypi_files
    assert (rich.project, rich.sha256, rich.index_url, rich.platforms, rich.requires_python) == (
        "rich", sha("rich"), TUNA_SIMPLE, ("linux-64", "win-64"), ">=3.8.0",
    )  # fmt: skip
    assert [(s.origin.line, s.reason) for s in plan.skipped] == [
        (53, "a local path: not on a package index"),
        (58, "a package built from source"),
    ]
    assert errors(plan) == [
        f"{path}:43: package python-3.12.7-hce54a09_0_cpython.conda: sha256 digest 'not-hex' is not hexadecimal"
    ]


def test_a_pixi_lock_v5_names_kind_and_url_and_a_v7_maps_platform_names_to_subdirs(tmp_path: Path) -> None:
    v5 = write(
        tmp_path,
        "v5/pixi.lock",
        f"""\
version: 5
environments:
  default:
    channels:
    - url: {FORGE}/
    packages:
      osx-arm64:
      - conda: {FORGE}/osx-arm64/bzip2-1.0.8-h93a5062_5.conda
      - pypi: {FILES}/ba/06/certifi-2024.2.2-py3-none-any.whl
packages:
- kind: conda
  name: bzip2
  version: 1.0.8
  build: h93a5062_5
  build_number: 5
  subdir: osx-arm64
  url: {FORGE}/osx-arm64/bzip2-1.0.8-h93a5062_5.conda
  sha256: {sha("bzip2")}
  md5: {md5("bzip2")}
  size: 122325
- kind: pypi
  name: certifi
  version: 2024.2.2
  url: {FILES}/ba/06/certifi-2024.2.2-py3-none-any.whl
  sha256: {sha("certifi")}
  requires_python: '>=3.6'
""",
    )
    v7 = write(
        tmp_path,
        "v7/pixi.lock",
        f"""\
version: 7
platforms:
- name: linux-64-cuda
  subdir: linux-64
  virtual_packages:
  - __cuda=12.4
environments:
  default:
    channels:
    - url: {FORGE}/
    packages:
      linux-64-cuda:
      - conda: {FORGE}/linux-64/cuda-version-12.4-h3060b56_3.conda
packages:
- conda: {FORGE}/linux-64/cuda-version-12.4-h3060b56_3.conda
  sha256: {sha("cuda")}
  md5: {md5("cuda")}
  size: 21155
""",
    )

    plan = read_inputs([v5, v7])

    assert errors(plan) == []
    found = conda_by_name(plan)
    assert found["bzip2-1.0.8-h93a5062_5.conda"].platforms == ("osx-arm64",)
    assert found["bzip2-1.0.8-h93a5062_5.conda"].size == 122325
    assert found["cuda-version-12.4-h3060b56_3.conda"].platforms == ("linux-64",)
    assert [(f.project, f.version, f.sha256) for f in plan.pypi_files] == [("certifi", "2024.2.2", sha("certifi"))]


CONDA_LOCK = f"""\
version: 1
metadata:
  content_hash:
    linux-64: {sha("h1")}
    osx-arm64: {sha("h2")}
  channels:
  - url: conda-forge
    used_env_vars: []
  platforms:
  - linux-64
  - osx-arm64
  sources:
  - environment.yml
package:
- name: tzdata
  version: 2024b
  manager: conda
  platform: linux-64
  dependencies: {{}}
  url: {FORGE}/noarch/tzdata-2024b-hc8b5060_0.conda
  hash:
    md5: {md5("tzdata")}
    sha256: {sha("tzdata")}
  category: main
  optional: false
- name: tzdata
  version: 2024b
  manager: conda
  platform: osx-arm64
  dependencies: {{}}
  url: {FORGE}/noarch/tzdata-2024b-hc8b5060_0.conda
  hash:
    md5: {md5("tzdata")}
    sha256: {sha("tzdata")}
  category: main
  optional: false
- name: requests
  version: 2.32.3
  manager: pip
  platform: linux-64
  dependencies:
    certifi: '>=2017.4.17'
  url: {FILES}/f9/9b/requests-2.32.3-py3-none-any.whl
  hash:
    sha256: {sha("requests")}
  category: main
  optional: false
"""


def test_a_conda_lock_yml_merges_a_noarch_package_listed_per_platform(tmp_path: Path) -> None:
    path = write(tmp_path, "conda-lock.yml", CONDA_LOCK)

    plan = read_inputs([path])

    assert errors(plan) == []
    assert plan.inputs[0].platforms == ("linux-64", "osx-arm64")
    [tzdata] = plan.conda_files
    assert (tzdata.platforms, tzdata.sha256, tzdata.md5, tzdata.origin.line) == (
        ("linux-64", "osx-arm64"), sha("tzdata"), md5("tzdata"), 15,
    )  # fmt: skip
    [requests] = plan.pypi_files
    assert (requests.project, requests.platforms, requests.sha256) == ("requests", ("linux-64",), sha("requests"))


# --- recognising formats, and what is not one ------------------------------------------------------------------


def test_a_file_with_no_telling_name_is_read_by_its_content(tmp_path: Path) -> None:
    reqs = write(tmp_path, "deps", "alpha==1.0\nbeta>=2\n")
    uv_lock = write(tmp_path, "locked", UV_LOCK_ODD)
    env = write(tmp_path, "conda-env", ENVIRONMENT_YML.replace('  - "???"\n', ""))

    plan = read_inputs([reqs, uv_lock, env])

    assert [i.format for i in plan.inputs if i.included_by is None] == [
        InputFormat.REQUIREMENTS,
        InputFormat.UV_LOCK,
        InputFormat.ENVIRONMENT_YML,
    ]


def test_unknown_formats_and_unreadable_files_are_errors_and_the_other_inputs_are_still_read(tmp_path: Path) -> None:
    readme = write(tmp_path, "README.md", "# My project\n\nInstall it with pip.\n")
    pyproject = write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n')
    broken_toml = write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "x\n')
    broken_yaml = write(tmp_path, "environment.yml", "dependencies:\n  - numpy\n - scipy\n")
    binary = tmp_path / "archive.bin"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    good = write(tmp_path, "requirements.txt", "alpha\n")

    plan = read_inputs([readme, pyproject, broken_toml, broken_yaml, binary, tmp_path / "absent.txt", tmp_path, good])

    assert [r.project for r in plan.pypi_requirements] == ["alpha"]
    found = errors(plan)
    assert found[0].startswith(f"{readme}: not an input format seed reads (requirements file, pylock.toml, uv.lock")
    assert (
        found[1]
        == f"{pyproject}: a TOML file, but not a lock file seed reads (pylock.toml, uv.lock, poetry.lock, pdm.lock)"
    )
    assert found[2].startswith(f"{broken_toml}:3: not valid TOML:")
    assert found[3].startswith(f"{broken_yaml}:3: not valid YAML:")
    assert found[4].startswith(f"{binary}: {binary} is not a text file")
    assert found[5] == f"{tmp_path / 'absent.txt'}: cannot read {tmp_path / 'absent.txt'}: no such file"
    assert found[6] == f"{tmp_path}: cannot read {tmp_path}: it is a directory"
    assert len(found) == 7


CARGO_LOCK = """\
# This file is automatically @generated by Cargo.
# It is not intended for manual editing.
version = 3

[[package]]
name = "demo"
version = "0.1.0"
dependencies = [
 "itoa",
]

[[package]]
name = "itoa"
version = "1.0.11"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b"
"""


def test_another_tools_toml_lock_is_not_taken_for_a_uv_lock_of_an_unknown_version(tmp_path: Path) -> None:
    # A Cargo.lock has uv.lock's integer `version` and `[[package]]`, but no `requires-python` (uv always
    # writes one) and no package `source` table: it is no input seed reads, whatever it is called.
    cargo = write(tmp_path, "Cargo.lock", CARGO_LOCK)
    misnamed = write(tmp_path, "uv.lock", CARGO_LOCK)
    future_uv = write(tmp_path, "sub/uv.lock", UV_LOCK_ODD.replace("version = 1\n", "version = 3\n", 1))

    plan = read_inputs([cargo, misnamed, future_uv])

    not_uv = (
        "a TOML lock file, but not a uv.lock (uv writes a top-level requires-python and a source table for each"
        " package) nor another lock file seed reads (pylock.toml, poetry.lock, pdm.lock)"
    )
    assert errors(plan) == [
        f"{cargo}: {not_uv}",
        f"{misnamed}: {not_uv}",
        f"{future_uv}: uv.lock version 3 is not one this reader knows (1)",
    ]
    assert plan.inputs == [] and plan.pypi_files == []


def test_a_requirements_file_saved_as_utf16_by_a_windows_editor_is_read(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_bytes("\ufeffalpha==1.0\r\nbeta\r\n".encode("utf-16-le"))

    plan = read_inputs([path])

    assert errors(plan) == []
    assert [str(r.requirement) for r in plan.pypi_requirements] == ["alpha==1.0", "beta"]


def test_the_same_file_from_two_inputs_is_one_cache_path_and_a_different_hash_for_it_is_a_conflict(
    tmp_path: Path,
) -> None:
    first = write(tmp_path, "a/pylock.toml", PYLOCK)
    second = write(tmp_path, "b/pylock.toml", PYLOCK.replace(sha("attrs"), sha("attrs-rebuilt")))

    plan = read_inputs([first, second])

    distinct = plan.distinct_files()
    assert len(plan.pypi_files) == 6 and len(distinct) == 3
    assert distinct["pypi/files/attrs/attrs-25.1.0-py3-none-any.whl"].origin.path == first
    assert [str(c) for c in plan.hash_conflicts()] == [
        f"{second}:6: pypi/files/attrs/attrs-25.1.0-py3-none-any.whl: its sha256 differs from {first}:6's"
    ]


def test_a_malformed_marker_in_a_lock_file_is_an_error_at_its_package_and_the_rest_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pdm.lock",
        PDM_LOCK.replace('marker = "sys_platform == \\"win32\\""', 'marker = "sys_platform = win32"'),
    )

    plan = read_inputs([path])

    assert "pywin32-308-cp311-cp311-win_amd64.whl" not in files_by_name(plan)
    assert len(plan.pypi_files) == 3
    assert errors(plan) == [
        f"{path}:30: package pywin32: 'sys_platform = win32' is not an environment marker: "
        "Expected marker operator, one of <=, <, !=, ==, >=, >, ~=, ===, in, not in"
    ]
