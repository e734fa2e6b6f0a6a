"""Reading settings from environment variables (`PKGCACHE_SECTION__KEY`), for `pkgcache.config`'s model.

A list or table is written as JSON (`PKGCACHE_CONDA__DENY='["numpy >=2"]'`). A list whose field is marked
`CommaSeparated` may also be written as `a,b` (`PKGCACHE_PYPI__UPSTREAMS=ustc,tuna`), the form people type; rules
and tables may hold commas themselves, so they stay JSON only. A value that is neither is an `EnvValueError`
naming the variable and the JSON form, not pydantic-settings' traceback.

A `PKGCACHE_` variable that names no setting is an `EnvValueError` too, naming the nearest one: pydantic-settings
would ignore it, so `PKGCACHE_SERVER_PORT` (one underscore) would leave the port as it was without a word, where
the same typo in the config file is an error.

Kept apart from `pkgcache.config` so the policy models (which `pkgcache.config` imports) can mark their fields.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

# Variables with the prefix that are not settings: read by pkgcache's own test suite and its tools (tests/,
# scripts/test_container), so a developer's shell holding one is no configuration error.
NOT_SETTINGS = frozenset({"PKGCACHE_FAULTS_LENIENT", "PKGCACHE_SHARD_MEMORY_TEST_MB", "PKGCACHE_SCREENSHOT_DIR"})
NOT_SETTINGS_PREFIX = "PKGCACHE_TEST_"


class CommaSeparated:
    """Field metadata (`Annotated[list[str], CommaSeparated()]`): in the environment, `a,b` means `["a", "b"]`."""


class EnvValueError(ValueError):
    """An environment variable holds a list or table that cannot be read; the message says how to write it."""


class _Undecodable(ValueError):
    def __init__(self, value: str, field: FieldInfo | None) -> None:
        super().__init__(value)
        self.value = value
        self.field = field


class PkgcacheEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, with comma lists and an error an admin can act on."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError:
            if field is not None and any(isinstance(mark, CommaSeparated) for mark in field.metadata):
                return [item.strip() for item in value.split(",") if item.strip()]
            raise _Undecodable(value, field) from None

    def __call__(self) -> dict[str, Any]:
        unknown = unknown_variables(self.settings_cls, self.env_prefix, os.environ)
        if unknown:
            raise EnvValueError("; ".join(unknown))
        try:
            return super().__call__()
        except SettingsError as exc:
            if isinstance(exc.__cause__, _Undecodable):
                raise EnvValueError(self._explain(exc.__cause__)) from None
            raise

    def _explain(self, error: _Undecodable) -> str:
        variable = _variable_holding(self.env_vars, self.env_prefix, error.value)
        # The value itself is not repeated: a table of users holds passwords.
        is_list = error.field is not None and get_origin(error.field.annotation) is list
        example = '["first", "second"]' if is_list else '{"key": "value"}'
        kind = "a list" if is_list else "a table"
        return f"{variable} is not valid JSON: write {kind} as JSON, e.g. {variable}='{example}'"


def _variable_holding(env_vars: Mapping[str, str | None], prefix: str, value: str) -> str:
    # pydantic-settings reports the field, not the variable; the variable is the one of ours holding that value.
    ours = (name.upper() for name, held in env_vars.items() if held == value)
    names = sorted(name for name in ours if name.startswith(prefix.upper()))
    return " or ".join(names) or f"a {prefix.upper()} environment variable"


def unknown_variables(settings_cls: type[BaseSettings], prefix: str, names: Iterable[str]) -> list[str]:
    """What is wrong with each variable among `names` that has the prefix but names no setting (none: empty)."""
    prefix = prefix.upper()
    settings, tables = setting_variables(settings_cls, prefix)
    found = []
    for name in sorted(names):
        upper = name.upper()  # pydantic-settings reads names without regard to case
        if not upper.startswith(prefix) or upper in settings or upper in NOT_SETTINGS:
            continue
        if upper.startswith(NOT_SETTINGS_PREFIX) or upper.startswith(tables):
            continue
        found.append(f"{name} is not a pkgcache setting{_nearest(upper, settings, prefix)}")
    return found


def setting_variables(settings_cls: type[BaseSettings], prefix: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The variables naming a setting (`PKGCACHE_SECTION`, as JSON, and `PKGCACHE_SECTION__KEY`), and the starts of
    those naming one entry of a table (`PKGCACHE_ACCESS__USERS__ALICE`)."""
    names: set[str] = set()
    tables: list[str] = []
    for section, field in settings_cls.model_fields.items():
        base = f"{prefix}{section}".upper()
        names.add(base)
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key, key_field in model.model_fields.items():
            names.add(f"{base}__{key.upper()}")
            if get_origin(key_field.annotation) is dict:
                tables.append(f"{base}__{key.upper()}__")
    return frozenset(names), tuple(tables)


def _nearest(name: str, settings: frozenset[str], prefix: str) -> str:
    """ ": did you mean X?" for the setting `name` most likely means, or how settings are named when none is near."""
    tail = name.removeprefix(prefix)
    tails = {setting.removeprefix(prefix): setting for setting in settings}
    # A key given without its section (PKGCACHE_DATA_DIR) is that key, in whichever sections have it.
    by_key = sorted(setting for short, setting in tails.items() if short.partition("__")[2] == tail)
    nearest = closest_name(tail, tails)
    close = by_key or ([tails[nearest]] if nearest is not None else [])
    if close:
        return f": did you mean {' or '.join(close)}?"
    return f" (settings are {prefix}<SECTION>__<KEY>, two underscores between the config file's section and key)"


def closest_name(name: str, names: Iterable[str]) -> str | None:
    """The one of `names` that `name` most likely misspells, regardless of case, or None when none is near.

    The one measure for every mistyped name: environment variables here, the config file's sections, keys and
    presets in `pkgcache.config`."""
    by_lower = {candidate.lower(): candidate for candidate in sorted(names, reverse=True)}
    found = difflib.get_close_matches(name.lower(), sorted(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None
