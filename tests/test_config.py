"""Configuration: presets, TOML, environment overrides, flags, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from pkgcache.config import ConfigError, Settings, load_settings
from pkgcache.presets import CONDA_PRESETS, PYPI_PRESETS


def test_defaults_use_domestic_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    names = [upstream.name for upstream in settings.pypi.upstreams]
    assert names and all(name in PYPI_PRESETS for name in names)
    assert all(upstream.name in CONDA_PRESETS for upstream in settings.conda.upstreams)


def test_presets_cover_the_domestic_mirrors() -> None:
    for name in ("tuna", "ustc", "aliyun", "bfsu", "sjtu", "nju", "huawei", "tencent"):
        assert PYPI_PRESETS[name].startswith("https://") and PYPI_PRESETS[name].endswith("/simple/")
    for name in ("tuna", "ustc", "bfsu", "sjtu", "nju", "aliyun", "anaconda"):
        assert name in CONDA_PRESETS


def test_toml_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(
        """
[server]
port = 9000
data_dir = "/srv/cache"
[upstream]
cooldown = 5
[pypi]
upstreams = ["ustc", "https://corp.test/simple", {name = "backup", url = "https://backup.test/simple/"}]
index_ttl = 30
"""
    )
    settings = load_settings(config)
    assert settings.server.port == 9000
    assert settings.server.data_dir == Path("/srv/cache")
    assert [u.name for u in settings.pypi.upstreams] == ["ustc", "corp.test", "backup"]
    assert settings.pypi.upstreams[1].url == "https://corp.test/simple/"
    assert settings.upstream.cooldown == 5

    monkeypatch.setenv("PKGCACHE_SERVER__PORT", "9100")
    monkeypatch.setenv("PKGCACHE_PYPI__INDEX_TTL", "60")
    settings = load_settings(config)
    assert settings.server.port == 9100 and settings.pypi.index_ttl == 60
    assert settings.server.data_dir == Path("/srv/cache")

    settings = load_settings(config, server={"port": 9200, "host": None}, pypi={"upstreams": ["tuna"]})
    assert settings.server.port == 9200
    assert [u.name for u in settings.pypi.upstreams] == ["tuna"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[pypi]\nupstreams = ['no-such-preset']\n", "neither a preset name nor an http(s) URL"),
        ("[conda]\nupstreams = ['no-such-preset']\n", "neither a preset name nor an http(s) URL"),
        # Proxies and an upstream table's URLs have no presets: the message does not offer any.
        (
            "[upstream]\nproxy = 'proxy.corp:3128'\n",
            "upstream.proxy: 'proxy.corp:3128' is not an http(s) URL",
        ),
        ("[[pypi.upstreams]]\nname = 'm'\nurl = 'ftp://m/'\n", "'ftp://m/' is not an http(s) URL"),
        ("[pypi]\nupstreams = []\n", "at least one upstream"),
        ("[pypi]\nupstreams = ['tuna', 'tuna']\n", "distinct names"),
        ("[server]\nprot = 1\n", "server.prot"),
        ("[conda]\nchannels = ['conda-forge']\n", "pkgs/NAME"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_configuration_is_explained(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(config)


PYPI_PRESET_LIST = ", ".join(PYPI_PRESETS)
CONDA_PRESET_LIST = ", ".join(CONDA_PRESETS)


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        # A mistyped key, table or preset is named with the nearest known one, as a mistyped variable is.
        ("[server]\nprot = 3150\n", "unknown setting server.prot; did you mean server.port?"),
        ("[sever]\nport = 3150\n", "unknown setting sever; did you mean server?"),
        ("[access]\nadmin_tokn = 'x'\n", "unknown setting access.admin_tokn; did you mean access.admin_token?"),
        ("[pypi]\nindex_tll = 60\n", "unknown setting pypi.index_tll; did you mean pypi.index_ttl?"),
        (
            "[[pypi.upstreams]]\nname = 'm'\nurl = 'https://m/'\nmax_conections = 3\n",
            "unknown setting pypi.upstreams.0.max_conections; did you mean pypi.upstreams.0.max_connections?",
        ),
        # A key written above every [section] line: the section that has it.
        ("port = 3150\n", "unknown setting port; did you mean server.port (under [server])?"),
        # Nothing near: the names there are.
        (
            "[zzzz]\nport = 1\n",
            "unknown setting zzzz; the sections are [access], [cache], [conda], [pypi], [server], [upstream]",
        ),
        ("[cache]\nqqqqqq = 1\n", "unknown setting cache.qqqqqq; the settings of [cache] are max_size"),
        (
            "[pypi]\nupstreams = ['tunaa']\n",
            "pypi.upstreams: 'tunaa' is neither a preset name nor an http(s) URL; did you mean 'tuna'? "
            f"the presets are {PYPI_PRESET_LIST}",
        ),
        (
            "[conda]\nupstreams = ['tuna', 'anacoda']\n",
            "conda.upstreams: 'anacoda' is neither a preset name nor an http(s) URL; did you mean 'anaconda'? "
            f"the presets are {CONDA_PRESET_LIST}",
        ),
        (
            "[pypi]\nupstreams = ['zzzzzz']\n",
            f"pypi.upstreams: 'zzzzzz' is neither a preset name nor an http(s) URL; the presets are {PYPI_PRESET_LIST}",
        ),
    ],
)
def test_a_mistyped_name_in_the_file_is_named_with_the_nearest_setting(tmp_path: Path, toml: str, line: str) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert str(raised.value).splitlines() == [f"invalid configuration in {config}:", f"  {line}"]


def test_missing_config_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def _run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """pkgcache as a user runs it, in a process of its own: what reaches the terminal is what is asserted."""
    full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PKGCACHE_")}
    full_env.update(env or {})
    command = [sys.executable, "-m", "pkgcache", *args]
    return subprocess.run(command, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("PKGCACHE_PYPI__UPSTREAMS", "ustc", "pypi", ["ustc"]),
        ("PKGCACHE_PYPI__UPSTREAMS", "ustc, tuna", "pypi", ["ustc", "tuna"]),
        ("PKGCACHE_PYPI__UPSTREAMS", '["ustc", "tuna"]', "pypi", ["ustc", "tuna"]),
        ("PKGCACHE_CONDA__UPSTREAMS", "tuna,anaconda", "conda", ["tuna", "anaconda"]),
    ],
)
def test_upstreams_from_the_environment_as_a_comma_list_or_json(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: list[str]
) -> None:
    monkeypatch.setenv(variable, value)
    side = getattr(load_settings(), field)
    assert [upstream.name for upstream in side.upstreams] == expected


def test_string_lists_from_the_environment_as_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKGCACHE_CONDA__CHANNELS", "pkgs/main,cloud/conda-forge")
    monkeypatch.setenv("PKGCACHE_CONDA__PREBUILD_SHARDS", "cloud/conda-forge/linux-64")
    monkeypatch.setenv("PKGCACHE_PYPI__MIN_RELEASE_AGE_EXEMPT", "ourcompany-*,internal-*")
    settings = load_settings()
    assert settings.conda.channels == ["pkgs/main", "cloud/conda-forge"]
    assert settings.conda.prebuild_shards == ["cloud/conda-forge/linux-64"]
    assert settings.pypi.min_release_age_exempt == ["ourcompany-*", "internal-*"]


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("cloud/conda-forge/linux-65", "'linux-65' is not a conda subdir (emscripten-wasm32, freebsd-64, linux-32"),
        ("cloud/conda-forge/Linux-64", "'Linux-64' is not a conda subdir"),
        ("cloud/elsewhere/linux-64", "CHANNEL one of conda.channels"),
    ],
)
def test_prebuild_shards_names_a_served_channel_and_a_subdir_conda_knows(tmp_path: Path, entry: str, said: str) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(f'[conda]\nprebuild_shards = ["{entry}"]\n')
    with pytest.raises(ConfigError, match=f"prebuild_shards entry '{entry}'") as refused:
        load_settings(config)
    assert said in str(refused.value)


def test_a_comma_list_is_for_the_environment_only(tmp_path: Path) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text('[conda]\nchannels = "pkgs/main,cloud/conda-forge"\n')
    with pytest.raises(ConfigError, match=r"conda\.channels"):
        load_settings(config)


@pytest.mark.parametrize(
    ("variable", "value", "shape"),
    [
        # Rules may hold commas themselves ("requests>=2,<3"): only JSON says where one ends.
        ("PKGCACHE_PYPI__DENY", "requests>=2,<3", '["'),
        ("PKGCACHE_ACCESS__USERS", "bob", '{"'),
        ("PKGCACHE_SERVER", "port=8080", '{"'),
    ],
)
def test_an_environment_value_that_must_be_json_is_explained(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, shape: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message and "JSON" in message and f"{variable}='{shape}" in message


def test_an_environment_value_that_must_be_json_is_one_line_from_the_cli(tmp_path: Path) -> None:
    result = _run_cli("client-config", env={"PKGCACHE_ACCESS__USERS": "bob:secret", "HOME": str(tmp_path)})
    line = _one_line_error(result)
    assert "PKGCACHE_ACCESS__USERS" in line and "JSON" in line and "secret" not in line


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [
        ("PKGCACHE_SERVER_PORT", "did you mean PKGCACHE_SERVER__PORT?"),  # one underscore
        ("PKGCACHE_SEVER__PORT", "did you mean PKGCACHE_SERVER__PORT?"),
        ("PKGCACHE_DATA_DIR", "did you mean PKGCACHE_SERVER__DATA_DIR?"),  # the key without its section
        ("PKGCACHE_UPSTREAMS", "did you mean PKGCACHE_CONDA__UPSTREAMS or PKGCACHE_PYPI__UPSTREAMS?"),
        ("pkgcache_server__portt", "did you mean PKGCACHE_SERVER__PORT?"),  # read without regard to case
        ("PKGCACHE_XYZZY", "settings are PKGCACHE_<SECTION>__<KEY>"),
    ],
)
def test_an_environment_variable_that_names_no_setting_is_an_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, nearest: str
) -> None:
    """As a mistyped key in the config file is: pydantic-settings alone would leave the setting as it was."""
    monkeypatch.setenv(variable, "18197")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"{variable} is not a pkgcache setting" in str(caught.value) and nearest in str(caught.value)


@pytest.mark.parametrize(
    "variable", ["PKGCACHE_TEST_PORT", "PKGCACHE_FAULTS_LENIENT", "PKGCACHE_SHARD_MEMORY_TEST_MB", "PKGCACHE_PYPI"]
)
def test_the_projects_own_variables_and_whole_sections_are_no_error(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "{}" if variable == "PKGCACHE_PYPI" else "1")
    monkeypatch.setenv("PKGCACHE_ACCESS__USERS__ALICE", "secret")  # one entry of a table
    assert load_settings().server.port == 3150


def test_an_unknown_environment_variable_is_one_line_from_the_cli(tmp_path: Path) -> None:
    result = _run_cli("client-config", env={"PKGCACHE_SERVER_PORT": "18197", "HOME": str(tmp_path)})
    line = _one_line_error(result)
    assert "PKGCACHE_SERVER_PORT is not a pkgcache setting: did you mean PKGCACHE_SERVER__PORT?" in line


def test_a_config_file_not_in_utf8_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "gbk.toml"
    config.write_bytes("# 清华镜像\n[pypi]\nupstreams = ['tuna']\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"gbk\.toml is not UTF-8 \(byte 0xc7 at offset 2\).*save it as UTF-8"):
        load_settings(config)


def test_a_config_file_not_in_utf8_is_one_line_from_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "gbk.toml"
    config.write_bytes("# 清华镜像\n[pypi]\nupstreams = ['tuna']\n".encode("gbk"))
    result = _run_cli("client-config", "--config", str(config), env={"HOME": str(tmp_path)})
    assert "not UTF-8" in _one_line_error(result)


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    config = tmp_path / "bom.toml"
    config.write_bytes(b"\xef\xbb\xbf[server]\nport = 45985\n")
    assert load_settings(config).server.port == 45985


def test_relative_paths_in_a_config_file_are_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "pkgcache.toml"
    config.write_text('[server]\ndata_dir = "cache"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_settings(config).server.data_dir == folder / "cache"
    monkeypatch.chdir(folder)
    assert load_settings(Path("pkgcache.toml")).server.data_dir == folder / "cache"


def test_relative_paths_from_the_environment_or_flags_are_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "pkgcache.toml"
    config.write_text('[server]\ndata_dir = "cache"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings(config, server={"data_dir": "flagged"}).server.data_dir == tmp_path / "flagged"
    monkeypatch.setenv("PKGCACHE_SERVER__DATA_DIR", "from-env")
    assert load_settings(config).server.data_dir == tmp_path / "from-env"


def test_every_path_setting_is_anchored_to_the_config_file() -> None:
    # A new Path-valued setting must be listed where relative paths are anchored, or this test says so.
    paths = {
        f"{section}.{key}"
        for section, field in Settings.model_fields.items()
        for key, sub in field.annotation.model_fields.items()  # type: ignore[union-attr]
        if Path in (sub.annotation, *get_args(sub.annotation))
    }
    assert paths == {"server.data_dir"}


@pytest.mark.parametrize("level", ["verbose", "trace"])
def test_an_unknown_log_level_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(f'[server]\nlog_level = "{level}"\n')
    with pytest.raises(ConfigError, match=r"server\.log_level"):
        load_settings(config)
    monkeypatch.setenv("PKGCACHE_SERVER__LOG_LEVEL", level)
    with pytest.raises(ConfigError, match=r"server\.log_level.*'debug', 'info', 'warning' or 'error'"):
        load_settings()


def test_log_levels_are_those_of_the_flag_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKGCACHE_SERVER__LOG_LEVEL", "WARNING")
    assert load_settings().server.log_level == "warning"
