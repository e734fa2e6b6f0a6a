"""Reading settings from environment variables (`PKGCACHE_SECTION__KEY`), for `pkgcache.config`'s model.

A list or table is written as JSON (`PKGCACHE_CONDA__DENY='["numpy >=2"]'`). A list whose field is marked
`CommaSeparated` may also be written as `a,b` (`PKGCACHE_PYPI__UPSTREAMS=ustc,tuna`), the form people type; rules
and tables may hold commas themselves, so they stay JSON only. A value that is neither is an `EnvValueError`
naming the variable and the JSON form, not pydantic-settings' traceback.

Kept apart from `pkgcache.config` so the policy models (which `pkgcache.config` imports) can mark their fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError


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
