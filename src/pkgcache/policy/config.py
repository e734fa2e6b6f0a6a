"""The policy's configuration, one model per side, mounted by `config.py` as fields of `[pypi]` and `[conda]`.

Both sides take the same words: `min_release_age`, `min_release_age_exempt`, `unknown_age`, `deny`, `allow`,
`allow_only`. A rule is a string written the way the side's users already write requirements (`"requests>=2.32,<3"`,
`"numpy >=2"`), or a table for what a string cannot say (kind, wheel tag, license, channel, reason, exceptions).
Every rule is compiled while the configuration loads, so a bad one is reported then, not when a file is asked for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator

from pkgcache.env_settings import CommaSeparated
from pkgcache.policy.common import format_duration, parse_duration
from pkgcache.policy.rule_tables import CondaRuleEntry, PypiRuleEntry, entry_text


def _duration_or_none(value: Any) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return None
    if not isinstance(value, str):
        raise ValueError('write a duration as a string, like "7d", "36h" or "90m"')
    return parse_duration(value) or None


Duration = Annotated[
    timedelta | None,
    BeforeValidator(_duration_or_none),
    PlainSerializer(lambda value: None if value is None else format_duration(value), return_type=str | None),
]


class PolicySettingsBase(BaseModel):
    """The policy settings of one side. Defaults: no minimum age, no rules: everything is served."""

    model_config = ConfigDict(extra="forbid")

    min_release_age: Duration = Field(
        None, description='files younger than this are not served, e.g. "7d" or "36h"; unset: no minimum'
    )
    min_release_age_exempt: Annotated[list[str], CommaSeparated()] = Field(
        default_factory=list, description="names or patterns the minimum release age does not apply to"
    )
    unknown_age: Literal["refuse", "allow"] = Field(
        "refuse", description="what to do with files whose age is not known, while min_release_age is set"
    )
    allow_only: bool = Field(False, description="serve only what some allow rule matches")

    if TYPE_CHECKING:  # each side's own model declares them, with its own rule types
        deny: list[Any] = Field(default_factory=list)
        allow: list[Any] = Field(default_factory=list)

    @field_validator("deny", "allow", mode="after", check_fields=False)
    @classmethod
    def _rules_compile(cls, value: list[Any]) -> list[Any]:
        for position, entry in enumerate(value):
            try:
                cls._compile_check(entry)
            except ValueError as exc:
                raise ValueError(f"rule {position} ({entry_text(entry)}): {exc}") from None
        return value

    @classmethod
    def _compile_check(cls, entry: Any) -> None:
        raise NotImplementedError


class PypiPolicySettings(PolicySettingsBase):
    """The `[pypi]` policy keys."""

    deny: list[PypiRuleEntry] = Field(default_factory=list, description='rules refusing files, e.g. "evil-*"')
    allow: list[PypiRuleEntry] = Field(default_factory=list, description="with allow_only: what is served")

    @classmethod
    def _compile_check(cls, entry: Any) -> None:
        from pkgcache.policy.pypi_rules import compile_rule

        compile_rule(entry, "deny", 0)


class CondaPolicySettings(PolicySettingsBase):
    """The `[conda]` policy keys."""

    deny: list[CondaRuleEntry] = Field(default_factory=list, description='rules refusing packages, e.g. "numpy <1.20"')
    allow: list[CondaRuleEntry] = Field(default_factory=list, description="with allow_only: what is served")

    @classmethod
    def _compile_check(cls, entry: Any) -> None:
        from pkgcache.policy.conda_rules import compile_rule  # py-rattler: only when there are rules

        compile_rule(entry, "deny", 0)


# Notes for `pkgcache init` (config_template.KEY_NOTES), one per key; the same for both sides.
TEMPLATE_NOTES: dict[str, str] = {
    "min_release_age": 'Files younger than this are left out, e.g. "7d" (see docs/policy.md). Unset: no minimum.',
    "min_release_age_exempt": 'Names or patterns (e.g. "internal-*") the minimum release age does not apply to.',
    "unknown_age": '"refuse" (default) or "allow" files whose upload time is not known, while an age is set.',
    "deny": 'Rules refusing files: strings like "requests>=2.32,<3" or "evil-*", or tables (docs/policy.md).',
    "allow": "Rules listing what is served when allow_only is true (e.g. generated from a lock file).",
    "allow_only": "Serve only what some allow rule matches.",
}
