"""The rules of a policy as the configuration writes them in table form (`{name = "numpy", version = "<1.20"}`),
and how a rule is shown in messages. Below both sides' rule compilers and the settings that hold the rules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RuleTable(BaseModel):
    """What both sides' table rules share."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    spec: str | None = Field(None, description="the rule in its string form; or give name (and version) instead")
    name: str | None = None
    version: str | None = None
    reason: str | None = Field(None, description="shown in every refusal this rule makes")
    except_: tuple[str, ...] = Field((), alias="except", description="names or patterns the rule does not apply to")

    @model_validator(mode="after")
    def _spec_or_name(self) -> RuleTable:
        if (self.spec is None) == (self.name is None):
            raise ValueError("give either spec (the rule as a string) or name (with version if you like), not both")
        if self.spec is not None and self.version is not None:
            raise ValueError("a spec already holds its version: drop version, or use name and version")
        return self


class PypiRuleTable(RuleTable):
    """A PyPI rule as a table: name (exact or pattern), PEP 440 version specifier, file kind, wheel tag pattern."""

    kind: Literal["sdist", "wheel", "other"] | None = Field(None, description="sdist, wheel, or other (eggs...)")
    tag: str | None = Field(None, description="a pattern over the wheel's tags, e.g. '*-win32' or 'cp27-*'")


class CondaRuleTable(RuleTable):
    """A conda rule as a table: name, MatchSpec version, build pattern, package format, license and channel."""

    build: str | None = Field(None, description="a pattern over the build string, e.g. 'py3*' or '*cuda*'")
    kind: Literal["conda", "tar.bz2"] | None = Field(None, description="package format: conda or tar.bz2")
    license: str | tuple[str, ...] | None = Field(None, description="patterns over the record's license field")
    channel: str | None = Field(None, description="a pattern over the channel, e.g. 'cloud/conda-forge'")

    @model_validator(mode="after")
    def _build_goes_with_name(self) -> CondaRuleTable:
        if self.build is not None and self.spec is not None:
            raise ValueError("a spec already holds its build: drop build, or use name, version and build")
        return self


PypiRuleEntry = str | PypiRuleTable
CondaRuleEntry = str | CondaRuleTable


def entry_text(entry: Any) -> str:
    return repr(entry) if isinstance(entry, str) else rule_table_text(entry)


def rule_table_text(table: RuleTable) -> str:
    """A table rule in one line for messages: its spec or name and version, then its other conditions."""
    head = table.spec or " ".join(part for part in (table.name, table.version) if part)
    conditions = []
    for key in ("build", "kind", "tag", "license", "channel"):
        value = getattr(table, key, None)
        if value is not None:
            shown = "|".join(value) if isinstance(value, tuple) else value
            conditions.append(f"{key}={shown}")
    if table.except_:
        conditions.append("except=" + ",".join(table.except_))
    return head + (f" ({', '.join(conditions)})" if conditions else "")
