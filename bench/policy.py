"""A policy of many rules for pkgcache under benchmark (`bash bench/run --policy-rules 1000`).

The rules look like an organisation's: mostly exact releases and whole projects denied, name patterns, rules on
the very projects the scenarios use (which match none of their files, so every scenario still runs), a minimum
release age (the bench's upstream gives no upload times: files seen at first sight have no known age, and
`unknown_age = "allow"` serves them) and file-kind rules. Both sides get as many; conda's have no age.
"""

from __future__ import annotations

from bench.prepare_pypi import HERD_PROJECT, PAGE_PROJECT
from pkgcache.config_template import toml_value


def pypi_rules(count: int) -> list[object]:
    concerning = [f"{PAGE_PROJECT}==999.{i}" for i in range(20)] + [f"{HERD_PROJECT}==999.{i}" for i in range(10)]
    rules: list[object] = [*concerning, {"name": "*", "tag": "*-win32", "reason": "no 32-bit Windows"}]
    for i in range(count - len(rules)):
        kind = i % 10
        if kind < 7:
            rules.append(f"zz-denied-{i}=={i % 13}.{i % 7}")
        elif kind == 7:
            rules.append(f"zz-project-{i}")
        else:
            rules.append(f"zz{i}-*")
    return rules[:count]


def conda_rules(count: int) -> list[object]:
    rules: list[object] = []
    for i in range(count):
        kind = i % 10
        if kind < 7:
            rules.append(f"zz-denied-{i} =={i % 13}.{i % 7}")
        elif kind == 7:
            rules.append(f"zz-package-{i}")
        elif kind == 8:
            rules.append(f"zz{i}-*")
        else:
            rules.append({"name": f"zz-licensed-{i}", "license": ["*GPL*"]})
    return rules


def policy_keys(side: str, count: int) -> str:
    """The TOML lines to add to a side's section for `count` rules (nothing for 0)."""
    if count <= 0:
        return ""
    if side == "pypi":
        return f'min_release_age = "7d"\nunknown_age = "allow"\ndeny = {toml_value(pypi_rules(count))}\n'
    return f"deny = {toml_value(conda_rules(count))}\n"
