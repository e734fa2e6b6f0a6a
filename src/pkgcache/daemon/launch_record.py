"""The settings `pkgcache start` resolved, recorded in the data directory for the `serve` it launches and for
`restart`.

`start` resolves the settings once (flags, configuration file, environment), writes them here, and launches
`pkgcache serve --settings-file <this file>`, which reads them back as they were. `restart` brings the same
service back from the same record, whatever the environment of the shell it runs in; options given to it are laid
over the record. The record also keeps what produced it (the configuration file and the flags), so a restart given
a configuration file anew can read that again and still keep the other flags.

The file is `<data_dir>/pkgcache.settings.json`, mode 0600: it may hold the admin token and the users' passwords.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgcache.config import ConfigError, Settings, record_settings, settings_from_record
from pkgcache.daemon.files import write_json_atomic

RECORD_FORMAT = 1


@dataclass(frozen=True)
class LaunchRecord:
    """Resolved settings, and what they were resolved from."""

    settings: Settings
    config_file: Path | None = None  # the `--config` given, made absolute
    flags: dict[str, Any] = field(default_factory=dict)  # the other flags given, shaped as load_settings' overrides


def write_launch_record(path: Path, record: LaunchRecord) -> None:
    """Record the settings, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "format": RECORD_FORMAT,
        "recorded_at": time.time(),
        "config_file": None if record.config_file is None else str(record.config_file),
        "flags": record.flags,
        "settings": record_settings(record.settings),
    }
    write_json_atomic(path, content, private=True)


def read_launch_record(path: Path) -> LaunchRecord:
    """The record at `path`; ConfigError saying why when it is missing, unreadable or no longer valid."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no recorded settings at {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the recorded settings at {path}: {exc.strerror or exc}") from None
    except ValueError:
        content = None
    if (
        not isinstance(content, dict)
        or content.get("format") != RECORD_FORMAT
        or not isinstance(content.get("settings"), dict)
    ):
        raise ConfigError(f"{path} is not a settings record this pkgcache can read")
    try:
        settings = settings_from_record(content["settings"])
    except ConfigError as exc:
        raise ConfigError(f"the settings recorded in {path} are not valid any more: {exc}") from None
    config_file = content.get("config_file")
    flags = content.get("flags")
    return LaunchRecord(
        settings=settings,
        config_file=Path(config_file) if isinstance(config_file, str) else None,
        flags=flags if isinstance(flags, dict) else {},
    )
