"""Client settings: the text `client-config` prints is right, and pip and uv really install with it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pkgcache.clients import (
    CLIENT_IDS,
    base_url_for,
    client_host,
    client_snippets,
    pypi_index_url,
    quick_setup,
)
from pkgcache.config import Settings, load_settings
from tests.cache_service import RunningCache
from tests.fakes.pypi_upstreams import TunaLikeUpstream
from tests.support import UV, installed_dists, isolated_env
from tests.test_cli_service import BackgroundService, run_pkgcache

BASE = "http://10.0.0.5:3150"
POETRY = Path(sys.executable).parent / "poetry"
PDM = Path(sys.executable).parent / "pdm"
# A reader whose password holds the characters an address needs percent-encoded.
READER, PASSWORD = "alice", "p@ss:w/rd%1"
ENCODED_PASSWORD = "p%40ss%3Aw%2Frd%251"
USERS = {"users": {READER: PASSWORD}}


def _settings(**sections: dict[str, object]) -> Settings:
    return load_settings(None, **sections)


def _snippet_text(settings: Settings, client: str, title_part: str, base: str = BASE) -> str:
    for snippet in client_snippets(base, settings):
        if snippet.client == client and title_part in snippet.title:
            return snippet.text
    raise KeyError((client, title_part))


# --- the text ---


def test_condarc_has_the_documented_shape() -> None:
    settings = _settings(conda={"channels": ["pkgs/main", "pkgs/r", "pkgs/msys2", "pkgs/free", "cloud/conda-forge"]})
    assert _snippet_text(settings, "conda", ".condarc") == (
        "channel_alias: http://10.0.0.5:3150/conda/cloud/\n"
        "default_channels:\n"
        "  - http://10.0.0.5:3150/conda/pkgs/main\n"
        "  - http://10.0.0.5:3150/conda/pkgs/r\n"
        "  - http://10.0.0.5:3150/conda/pkgs/msys2\n"
        "custom_channels:\n"
        "  conda-forge: http://10.0.0.5:3150/conda/cloud\n"
    )


@pytest.mark.parametrize("from_where", ["condarc", "quick setup"])
def test_rattler_reaches_the_community_channels_through_the_channel_alias_given(from_where: str) -> None:
    """rattler's ChannelConfig joins a channel's name to the alias: without the trailing slash it dropped `cloud`
    and asked for /conda/conda-forge, a 404."""
    rattler = pytest.importorskip("rattler")
    settings = _settings(
        conda={"channels": ["pkgs/main", "cloud/conda-forge"], "enabled": True}, pypi={"enabled": False}
    )
    if from_where == "condarc":
        text = _snippet_text(settings, "conda", ".condarc")
        alias = next(line for line in text.splitlines() if line.startswith("channel_alias: ")).split(": ", 1)[1]
    else:
        alias = shlex.split(quick_setup(BASE, settings))[-1]
    config = rattler.ChannelConfig(channel_alias=alias)
    for name in ("conda-forge", "bioconda"):
        assert rattler.Channel(name, config).base_url == f"{BASE}/conda/cloud/{name}/"


def test_condarc_names_every_configured_cloud_channel() -> None:
    settings = _settings(conda={"channels": ["pkgs/main", "cloud/conda-forge", "cloud/bioconda", "cloud/pytorch"]})
    text = _snippet_text(settings, "conda", ".condarc")
    for name in ("conda-forge", "bioconda", "pytorch"):
        assert f"  {name}: {BASE}/conda/cloud\n" in text
    assert "pkgs/r" not in text  # not configured, so not offered


def test_pixi_mirrors_map_original_channel_urls_to_pkgcache() -> None:
    settings = _settings(conda={"channels": ["pkgs/main", "cloud/conda-forge", "cloud/bioconda"]})
    config = tomllib.loads(_snippet_text(settings, "pixi", "config.toml"))
    assert config["mirrors"] == {
        "https://conda.anaconda.org/conda-forge": [f"{BASE}/conda/cloud/conda-forge"],
        "https://conda.anaconda.org/bioconda": [f"{BASE}/conda/cloud/bioconda"],
        "https://repo.anaconda.com/pkgs/main": [f"{BASE}/conda/pkgs/main"],
    }
    assert config["pypi-config"] == {"index-url": f"{BASE}/pypi/simple/"}


def test_pixi_pypi_settings_say_init_only_and_give_the_line_for_an_existing_workspace() -> None:
    text = _snippet_text(_settings(), "pixi", "config.toml")
    assert "into the manifest `pixi init` writes, and uses it nowhere else" in text
    # The commented lines, uncommented, are the table a pixi.toml takes.
    workspace = "\n".join(line.removeprefix("#   ") for line in text.splitlines() if line.startswith("#   "))
    assert tomllib.loads(workspace) == {"pypi-options": {"index-url": f"{BASE}/pypi/simple/"}}


def test_pip_and_uv_settings_parse_and_trust_a_plain_http_host() -> None:
    settings = _settings()
    pip_conf = _snippet_text(settings, "pip", "pip.conf")
    assert pip_conf == f"[global]\nindex-url = {BASE}/pypi/simple/\ntrusted-host = 10.0.0.5\n"
    commands = _snippet_text(settings, "pip", "pip config")
    assert f"pip config set global.index-url {BASE}/pypi/simple/" in commands
    assert "pip config set global.trusted-host 10.0.0.5" in commands
    uv_toml = tomllib.loads(_snippet_text(settings, "uv", "uv.toml"))
    assert uv_toml == {"index": [{"url": f"{BASE}/pypi/simple/", "default": True}]}
    env = _snippet_text(settings, "uv", "environment")
    assert f"export UV_DEFAULT_INDEX={BASE}/pypi/simple/" in env and "UV_INSECURE_HOST" in env
    assert f"poetry source add --priority=primary pkgcache {BASE}/pypi/simple/" in _snippet_text(
        settings, "poetry", "poetry"
    )
    assert f"pdm config pypi.url {BASE}/pypi/simple/" in _snippet_text(settings, "pdm", "pdm")


def test_https_front_needs_no_trusted_host() -> None:
    settings = _settings()
    base = "https://pkgcache.example.cn"
    assert "trusted-host" not in _snippet_text(settings, "pip", "pip.conf", base)
    assert "verify_ssl" not in _snippet_text(settings, "pdm", "pdm", base)
    assert "trusted-host" not in quick_setup(base, settings)


def test_snippets_follow_what_is_enabled() -> None:
    both = {snippet.client for snippet in client_snippets(BASE, _settings())}
    assert both == set(CLIENT_IDS)
    pypi_only = client_snippets(BASE, _settings(conda={"enabled": False}))
    assert {s.client for s in pypi_only} == {"pip", "uv", "poetry", "pdm", "pixi"}
    pixi = next(s for s in pypi_only if s.client == "pixi")
    assert "[mirrors]" not in pixi.text and "[pypi-config]" in pixi.text
    conda_only = client_snippets(BASE, _settings(pypi={"enabled": False}))
    assert {s.client for s in conda_only} == {"conda", "pixi"}
    assert "pypi" not in next(s for s in conda_only if s.client == "pixi").text
    assert quick_setup(BASE, _settings(pypi={"enabled": False})).startswith("conda config --set channel_alias")


def test_every_file_snippet_says_where_it_goes() -> None:
    for snippet in client_snippets(BASE, _settings()):
        if snippet.kind == "file":
            assert snippet.locations and all(location.path for location in snippet.locations)
        else:
            assert snippet.where == "shell"


def test_addresses() -> None:
    assert base_url_for("10.0.0.5", 3150) == "http://10.0.0.5:3150"
    assert base_url_for("fd00::5", 3150) == "http://[fd00::5]:3150"
    assert pypi_index_url("http://h:1/") == "http://h:1/pypi/simple/"
    assert client_host("0.0.0.0", "cache.lan") == "cache.lan"
    assert client_host("192.168.1.2") == "192.168.1.2"
    assert client_host("0.0.0.0") not in ("0.0.0.0", "")


def test_with_users_every_client_says_where_its_user_and_password_go_and_never_a_password() -> None:
    settings = _settings(access=USERS, conda={"channels": ["pkgs/main", "cloud/conda-forge"]})
    snippets = client_snippets(BASE, settings)
    assert {snippet.client for snippet in snippets} == set(CLIENT_IDS)
    assert not any(PASSWORD in snippet.text or READER in snippet.text for snippet in snippets)
    for client in CLIENT_IDS:
        text = "".join(snippet.text for snippet in snippets if snippet.client == client)
        assert "USER" in text and "PASSWORD" in text, client
    # The address holds them only in the user's own files, never in what poetry or pixi copy into a project.
    assert "index-url = http://USER:PASSWORD@10.0.0.5:3150/pypi/simple/" in _snippet_text(settings, "pip", "pip.conf")
    uv_toml = tomllib.loads(_snippet_text(settings, "uv", "uv.toml"))
    assert uv_toml["index"] == [
        {"name": "pkgcache", "url": "http://USER:PASSWORD@10.0.0.5:3150/pypi/simple/", "default": True}
    ]
    env = _snippet_text(settings, "uv", "environment")
    assert "export UV_DEFAULT_INDEX=pkgcache=http://10.0.0.5:3150/pypi/simple/" in env
    assert "export UV_INDEX_PKGCACHE_USERNAME=USER\nexport UV_INDEX_PKGCACHE_PASSWORD=PASSWORD\n" in env
    poetry = _snippet_text(settings, "poetry", "poetry")
    assert f"poetry source add --priority=primary pkgcache {BASE}/pypi/simple/\n" in poetry
    assert "poetry config http-basic.pkgcache USER PASSWORD\n" in poetry
    pdm = _snippet_text(settings, "pdm", "pdm")
    assert f"pdm config pypi.url {BASE}/pypi/simple/\n" in pdm
    assert "pdm config pypi.username USER\npdm config pypi.password PASSWORD\n" in pdm
    condarc = _snippet_text(settings, "conda", "condarc")
    assert "channel_alias: http://USER:PASSWORD@10.0.0.5:3150/conda/cloud/\n" in condarc
    assert "USER" not in _snippet_text(settings, "pixi", "config.toml")
    pixi = _snippet_text(settings, "pixi", "credentials")
    assert "pixi auth login 10.0.0.5 --username USER --password PASSWORD\n" in pixi
    assert "machine 10.0.0.5 login USER password PASSWORD" in pixi
    assert quick_setup(BASE, settings).startswith("pip config set global.index-url http://USER:PASSWORD@10.0.0.5")


def test_without_users_no_client_is_told_of_credentials() -> None:
    for snippet in client_snippets(BASE, _settings()):
        assert "USER" not in snippet.text and "PASSWORD" not in snippet.text and "@" not in snippet.text
        assert "credentials" not in snippet.title
    assert "USER" not in quick_setup(BASE, _settings())


# --- the printed text, used for real ---


def parse_blocks(output: str) -> dict[str, str]:
    """`--- client: title -> where` headers and the text under each."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("--- "):
            title = line.removeprefix("--- ").split(" -> ")[0]
            current = blocks.setdefault(title, [])
        elif current is not None:
            current.append(line)
    return {title: "\n".join(lines).strip() + "\n" for title, lines in blocks.items()}


@pytest.fixture
def service(tmp_path: Path, tuna_upstream: TunaLikeUpstream) -> Iterator[BackgroundService]:
    running = BackgroundService(tmp_path / "data", tuna_upstream.index_url)
    try:
        started = running.start()
        assert started.returncode == 0, started.stderr
        yield running
    finally:
        running.close()


def _client_config(service: BackgroundService, *extra: str) -> str:
    printed = run_pkgcache("client-config", *service.locate, "--host", "127.0.0.1", *extra)
    assert printed.returncode == 0, printed.stderr
    return printed.stdout


def test_client_config_uses_the_running_instance_address(service: BackgroundService) -> None:
    output = _client_config(service)
    # The port was only given to `start`: client-config finds it from the running instance.
    assert f"{service.url}/pypi/simple/" in output
    blocks = parse_blocks(output)
    assert {"pip: pip.conf", "uv: uv.toml", "conda: .condarc (conda, mamba)", "pixi: pixi config.toml"} <= set(blocks)
    as_json = json.loads(_client_config(service, "--json", "--client", "uv"))
    assert {entry["client"] for entry in as_json} == {"uv"}


def test_printed_pip_conf_installs_through_the_service(
    service: BackgroundService, tuna_upstream: TunaLikeUpstream, tmp_path: Path
) -> None:
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(parse_blocks(_client_config(service))["pip: pip.conf"])
    target = tmp_path / "pip-target"
    command = [
        sys.executable, "-m", "pip", "install", "--target", str(target),
        "--no-cache-dir", "--no-input", "--progress-bar", "off", "alpha==2.0",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=isolated_env(PIP_CONFIG_FILE=str(pip_conf)), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"} <= installed_dists(target)
    assert tuna_upstream.count("/simple/alpha/") >= 1
    # Downloaded whole once (its core metadata may have been read before by a few ranges).
    assert tuna_upstream.count_whole("alpha-2.0-py3-none-any.whl") == 1


def test_printed_uv_toml_installs_through_the_service(
    service: BackgroundService, tuna_upstream: TunaLikeUpstream, tmp_path: Path
) -> None:
    uv_toml = tmp_path / "uv.toml"
    uv_toml.write_text(parse_blocks(_client_config(service))["uv: uv.toml"])
    target = tmp_path / "uv-target"
    env = {k: v for k, v in isolated_env().items() if k != "UV_NO_CONFIG"}
    command = [
        str(UV), "pip", "install", "--config-file", str(uv_toml),
        "--python", sys.executable, "--target", str(target), "--no-cache", "alpha==2.0",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"} <= installed_dists(target)
    # Downloaded whole once (its core metadata may have been read before by a few ranges).
    assert tuna_upstream.count_whole("alpha-2.0-py3-none-any.whl") == 1
    # Through the service: its access log says so. Request lines are written in batches, a moment after.
    deadline = time.monotonic() + 5
    while "GET /pypi/files/alpha/alpha-2.0-py3-none-any.whl 200" not in (
        log := run_pkgcache("logs", *service.locate, "-n", "200").stdout
    ):
        assert time.monotonic() < deadline, log
        time.sleep(0.2)


def test_client_config_without_a_running_instance_uses_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(f'[server]\nport = 4567\ndata_dir = "{tmp_path / "data"}"\n[pypi]\nenabled = false\n')
    printed = run_pkgcache("client-config", "--config", str(config), "--host", "cache.lan")
    assert printed.returncode == 0, printed.stderr
    assert "http://cache.lan:4567/conda/cloud" in printed.stdout
    assert not any(title.startswith(("pip", "uv", "poetry", "pdm")) for title in parse_blocks(printed.stdout))


def test_client_config_says_when_the_side_of_a_client_asked_for_is_disabled(tmp_path: Path) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(f'[server]\nport = 4567\ndata_dir = "{tmp_path / "data"}"\n[conda]\nenabled = false\n')
    printed = run_pkgcache("client-config", "--config", str(config), "--host", "cache.lan", "--client", "conda")
    assert printed.returncode == 0, printed.stderr
    assert "none for conda: its side is disabled" in printed.stdout, printed.stdout  # not a header alone
    every = run_pkgcache("client-config", "--config", str(config), "--host", "cache.lan")
    assert "none for conda" in every.stdout and "none for pypi" not in every.stdout, every.stdout
    pip_only = run_pkgcache("client-config", "--config", str(config), "--host", "cache.lan", "--client", "pip")
    assert "none for" not in pip_only.stdout and "index-url" in pip_only.stdout, pip_only.stdout


def test_client_config_tells_how_to_give_credentials_only_when_reads_need_them(tmp_path: Path) -> None:
    config = tmp_path / "pkgcache.toml"
    config.write_text(f'[server]\nport = 4567\ndata_dir = "{tmp_path / "data"}"\n')
    open_reads = run_pkgcache("client-config", "--config", str(config), "--host", "cache.lan")
    assert open_reads.returncode == 0, open_reads.stderr
    assert "USER:PASSWORD" not in open_reads.stdout and "password" not in open_reads.stdout.lower(), open_reads.stdout

    with config.open("a") as out:
        out.write(f'[access]\nusers = {{{READER} = "{PASSWORD}"}}\n')
    printed = run_pkgcache("client-config", "--config", str(config), "--host", "cache.lan")
    assert printed.returncode == 0, printed.stderr
    header = printed.stdout.split("\n---", 1)[0]
    assert "asks for a user name and password" in header and "percent-encoded" in header, header
    assert "@ as %40, : as %3A, / as %2F" in header
    assert "#     machine cache.lan login USER password PASSWORD\n" in header
    blocks = parse_blocks(printed.stdout)
    assert "http://USER:PASSWORD@cache.lan:4567/pypi/simple/" in blocks["pip: pip.conf"]
    assert "poetry config http-basic.pkgcache USER PASSWORD" in blocks["poetry: poetry (in each project)"]
    assert "pixi auth login cache.lan" in blocks["pixi: pixi credentials"]
    # Never a configured password, nor a user's name.
    assert PASSWORD not in printed.stdout and READER not in printed.stdout
    as_json = _json_snippets(run_pkgcache("client-config", "--config", str(config), "--json", "--client", "uv").stdout)
    assert "UV_INDEX_PKGCACHE_PASSWORD=PASSWORD" in "".join(entry["text"] for entry in as_json)


def _json_snippets(output: str) -> list[dict[str, str]]:
    return list(json.loads(output))


# --- with credentials, for real: each client reaches a pkgcache whose reads need a user ---


def _filled_in(text: str, password: str = PASSWORD) -> str:
    return text.replace("USER", READER).replace("PASSWORD", password)


def _commands(text: str) -> list[list[str]]:
    """The shell lines of a snippet, comments left out, each split as a shell would."""
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture
def guarded(make_cache: Callable[..., RunningCache], tuna_upstream: TunaLikeUpstream) -> RunningCache:
    """A pkgcache whose reads need a user, and the snippets shown for it."""
    tuna_upstream.firewall.forbidden_ua_substrings = ()
    return make_cache([tuna_upstream.index_url], access=USERS)


def _guarded_snippet(cache: RunningCache, client: str, title_part: str) -> str:
    return _snippet_text(cache.settings, client, title_part, cache.url)


def _demo_project(directory: Path) -> Path:
    directory.mkdir()
    (directory / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = ["alpha==2.0"]\n'
    )
    return directory


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _locked_names(lock: Path) -> set[str]:
    return {package["name"] for package in tomllib.loads(lock.read_text())["package"]}


def test_poetry_with_http_basic_locks_through_pkgcache_and_keeps_the_password_out_of_the_project(
    guarded: RunningCache, tmp_path: Path
) -> None:
    project = _demo_project(tmp_path / "project")
    env = isolated_env(
        POETRY_CONFIG_DIR=str(tmp_path / "poetry-config"),
        POETRY_CACHE_DIR=str(tmp_path / "poetry-cache"),
        # No keyring here: poetry keeps the password in its own auth.toml, in its config directory.
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    source_add, http_basic = _commands(_filled_in(_guarded_snippet(guarded, "poetry", "poetry")))
    added = _run([str(POETRY), *source_add[1:]], project, env)
    assert added.returncode == 0, added.stdout + added.stderr

    # Without the user, pkgcache refuses poetry: the credentials below are what lets it through.
    refused = _run([str(POETRY), "lock", "--no-interaction"], project, env)
    assert refused.returncode != 0 and "Authorization error" in refused.stdout + refused.stderr, refused.stdout

    configured = _run([str(POETRY), *http_basic[1:]], project, env)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    locked = _run([str(POETRY), "lock", "--no-interaction"], project, env)
    assert locked.returncode == 0, locked.stdout + locked.stderr
    assert {"alpha", "beta", "gamma", "delta-pkg"} <= _locked_names(project / "poetry.lock")
    for name in ("pyproject.toml", "poetry.lock"):
        text = (project / name).read_text()
        assert PASSWORD not in text and ENCODED_PASSWORD not in text and READER not in text, name
    assert f"{guarded.url}/pypi/simple/" in (project / "pyproject.toml").read_text()


def test_uv_toml_with_a_percent_encoded_password_installs_through_pkgcache(
    guarded: RunningCache, tmp_path: Path
) -> None:
    uv_toml = tmp_path / "uv.toml"
    uv_toml.write_text(_filled_in(_guarded_snippet(guarded, "uv", "uv.toml"), ENCODED_PASSWORD))
    env = {k: v for k, v in isolated_env().items() if k != "UV_NO_CONFIG"}
    target = tmp_path / "uv-target"
    command = [
        str(UV), "pip", "install", "--config-file", str(uv_toml),
        "--python", sys.executable, "--target", str(target), "--no-cache", "alpha==2.0",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"} <= installed_dists(target)


def test_pdm_with_its_user_and_password_settings_locks_through_pkgcache(guarded: RunningCache, tmp_path: Path) -> None:
    project = _demo_project(tmp_path / "project")
    env = isolated_env(
        PDM_CONFIG_FILE=str(tmp_path / "pdm-config.toml"),
        PDM_CACHE_DIR=str(tmp_path / "pdm-cache"),
        PDM_PYTHON=sys.executable,
        PDM_NO_SELF="1",
        PDM_IGNORE_ACTIVE_VENV="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    for command in _commands(_filled_in(_guarded_snippet(guarded, "pdm", "pdm"))):
        done = _run([str(PDM), *command[1:]], project, env)
        assert done.returncode == 0, done.stdout + done.stderr
    locked = _run([str(PDM), "lock", "--no-isolation"], project, env)
    assert locked.returncode == 0, locked.stdout + locked.stderr
    assert {"alpha", "beta", "gamma", "delta-pkg"} <= _locked_names(project / "pdm.lock")
    for name in ("pyproject.toml", "pdm.lock"):
        assert PASSWORD not in (project / name).read_text(), name


@pytest.mark.parametrize("pypi", [True, False], ids=["pypi", "conda only"])
def test_shell_lines_quote_an_ipv6_address_which_a_shell_would_take_for_a_pattern(pypi: bool) -> None:
    """`[::1]` unquoted is a glob: zsh stops with "no matches found", bash passes it on only while nothing matches."""
    settings = _settings(pypi={"enabled": pypi}, access={"users": {"alice": "secret"}})
    base = "http://[fd00::5]:8080"
    lines = [quick_setup(base, settings)]
    lines += [s.text for s in client_snippets(base, settings) if s.kind == "shell"]
    shell_words = [
        word for text in lines for line in text.splitlines() if not line.startswith("#") for word in line.split()
    ]
    bare = [word for word in shell_words if "[fd00::5]" in word and "'" not in word]
    assert shell_words and not bare, bare
    assert any("'" in word and "[fd00::5]" in word for word in shell_words)
