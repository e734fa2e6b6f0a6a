"""The settings `start` records for the process it launches, and this account's list of started instances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pkgcache.config import ConfigError, Settings, load_settings, record_settings, settings_from_record
from pkgcache.daemon.launch_record import LaunchRecord, read_launch_record, write_launch_record
from pkgcache.daemon.registry import MAX_REMEMBERED, registry_path, remember, remembered

TOKEN = "a-test-admin-token-0123456789"


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        None,
        server={"port": 4000, "data_dir": str(tmp_path / "data")},
        pypi={"upstreams": ["tuna", "https://example.org/simple/"]},
        cache={"max_size": "5GB"},
        access={"admin_token": TOKEN, "users": {"dev": "pw"}},
    )


# --- reading recorded settings back ---


def test_recorded_settings_read_back_equal(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings_from_record(json.loads(json.dumps(record_settings(settings)))) == settings


def test_the_environment_has_no_say_over_recorded_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = record_settings(_settings(tmp_path))
    monkeypatch.setenv("PKGCACHE_SERVER__PORT", "5000")
    monkeypatch.setenv("PKGCACHE_PYPI__INDEX_TTL", "7")
    assert load_settings(None).server.port == 5000  # as it would for a fresh start
    read = settings_from_record(record)
    assert read.server.port == 4000 and read.pypi.index_ttl == 600
    # A key missing from the record takes its default, not the environment's value.
    del record["server"]["port"]
    assert settings_from_record(record).server.port == 3150


def test_an_override_changes_only_its_own_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    changed = settings_from_record(record_settings(settings), server={"port": 4001, "host": None})
    assert changed.server.port == 4001
    assert changed.server.host == settings.server.host and changed.server.data_dir == settings.server.data_dir
    assert changed.pypi == settings.pypi and changed.access == settings.access
    replaced = settings_from_record(record_settings(settings), pypi={"upstreams": ["ustc"]})
    assert [upstream.name for upstream in replaced.pypi.upstreams] == ["ustc"]


def test_a_bad_override_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        settings_from_record(record_settings(_settings(tmp_path)), server={"port": 0})


# --- the record file ---


def test_the_record_is_written_for_this_user_only_and_read_back(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = tmp_path / "data" / "pkgcache.settings.json"
    flags = {"server": {"port": 4000}}
    write_launch_record(path, LaunchRecord(settings, tmp_path / "pkgcache.toml", flags))
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the admin token and passwords
    assert not list(path.parent.glob(".*.tmp"))
    read = read_launch_record(path)
    assert read == LaunchRecord(settings, tmp_path / "pkgcache.toml", flags)
    # Written again over a file someone made readable: private again.
    path.chmod(0o644)
    write_launch_record(path, read)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no recorded settings"),
        ("not json", "not a settings record"),
        (json.dumps({"format": 99, "settings": {}}), "not a settings record"),
        (json.dumps({"format": 1, "settings": {"server": {"port": "x"}}}), "not valid any more"),
    ],
)
def test_an_unusable_record_says_why(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "pkgcache.settings.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_launch_record(path)


# --- the account's list of started instances ---


def test_the_list_lives_in_the_xdg_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "pkgcache" / "instances.json"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "state" / "pkgcache" / "instances.json"
    assert registry_path({}) == expected
    assert registry_path({"XDG_STATE_HOME": "relative/path"}) == expected  # the spec says: ignore it


def test_remembered_instances_most_recent_first_once_each(tmp_path: Path) -> None:
    path = tmp_path / "state" / "instances.json"
    dirs = [tmp_path / name for name in ("a", "b", "c")]
    for data_dir in dirs:
        data_dir.mkdir()
        remember(data_dir, path)
    remember(dirs[0], path)  # started again: moves up, not twice
    assert [entry.data_dir for entry in remembered(path)] == [dirs[0], dirs[2], dirs[1]]
    assert path.stat().st_mode & 0o777 == 0o600
    # A data directory that was deleted is not offered.
    dirs[2].rmdir()
    assert [entry.data_dir for entry in remembered(path)] == [dirs[0], dirs[1]]


def test_the_list_is_bounded_and_survives_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    for index in range(MAX_REMEMBERED + 5):
        data_dir = tmp_path / f"d{index}"
        data_dir.mkdir()
        remember(data_dir, path)
    assert len(remembered(path)) == MAX_REMEMBERED
    assert remembered(path)[0].data_dir == tmp_path / f"d{MAX_REMEMBERED + 4}"
    path.write_text("{not json")
    assert remembered(path) == []
    remember(tmp_path / "d0", path)
    assert [entry.data_dir for entry in remembered(path)] == [tmp_path / "d0"]
