"""Known upstreams, by short name, and who runs them.

The domestic mirrors' URLs come from their own help pages (their layouts and quirks: docs/upstreams.md). The
official Python index is deliberately absent: a user who wants it gives its URL.

Failing over between mirrors only helps when they do not fail together. Several are run by one team or copy
another: BFSU is run by TUNA's team with TUNA's scripts and anti-abuse rules; USTC's PyPI index is copied from
TUNA and its misses (and its anaconda `pkgs/*`) redirect there; SJTUG's PyPI pages come from TUNA and its
uncached files redirect there; ZJU sends off-campus requests to TUNA. `OPERATORS` says whose infrastructure each
preset ends up on, and the defaults take one mirror per operator.
"""

from __future__ import annotations

# PEP 503 simple-index roots of PyPI mirrors.
PYPI_PRESETS: dict[str, str] = {
    "tuna": "https://pypi.tuna.tsinghua.edu.cn/simple/",
    "bfsu": "https://mirrors.bfsu.edu.cn/pypi/web/simple/",
    "ustc": "https://mirrors.ustc.edu.cn/pypi/simple/",
    "sjtu": "https://mirror.sjtu.edu.cn/pypi/web/simple/",
    "nju": "https://mirror.nju.edu.cn/pypi/web/simple/",
    "aliyun": "https://mirrors.aliyun.com/pypi/simple/",
    "huawei": "https://repo.huaweicloud.com/repository/pypi/simple/",
    "tencent": "https://mirrors.cloud.tencent.com/pypi/simple/",
    "douban": "https://pypi.doubanio.com/simple/",
    "netease": "https://mirrors.163.com/pypi/simple/",
    "zju": "https://mirrors.zju.edu.cn/pypi/web/simple/",
    "pku": "https://mirrors.pku.edu.cn/pypi/web/simple/",
    "sustech": "https://mirrors.sustech.edu.cn/pypi/web/simple/",
}

# What a preset's mirror asks of its clients, as its documentation says (USTC's limiter: 12 connections per
# address, range requests about one a second).
PYPI_PRESET_LIMITS: dict[str, dict[str, float | int]] = {
    "ustc": {"max_connections": 12, "range_interval": 1.0},
}

# Three operators that share nothing: a university team, and two cloud companies.
DEFAULT_PYPI_UPSTREAMS: list[str] = ["tuna", "aliyun", "tencent"]

# Conda upstreams have two roots: one holding the `pkgs/...` channels and one holding the community channels that
# pkgcache publishes under `cloud/...`. Domestic mirrors serve both under one `/anaconda/` tree.
CONDA_PRESETS: dict[str, tuple[str, str]] = {
    "anaconda": ("https://repo.anaconda.com/pkgs/", "https://conda.anaconda.org/"),
    "tuna": (
        "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/",
        "https://mirrors.tuna.tsinghua.edu.cn/anaconda/cloud/",
    ),
    "bfsu": ("https://mirrors.bfsu.edu.cn/anaconda/pkgs/", "https://mirrors.bfsu.edu.cn/anaconda/cloud/"),
    "ustc": ("https://mirrors.ustc.edu.cn/anaconda/pkgs/", "https://mirrors.ustc.edu.cn/anaconda/cloud/"),
    "sjtu": ("https://mirror.sjtu.edu.cn/anaconda/pkgs/", "https://mirror.sjtu.edu.cn/anaconda/cloud/"),
    "nju": ("https://mirror.nju.edu.cn/anaconda/pkgs/", "https://mirror.nju.edu.cn/anaconda/cloud/"),
    "aliyun": ("https://mirrors.aliyun.com/anaconda/pkgs/", "https://mirrors.aliyun.com/anaconda/cloud/"),
}

# A domestic mirror, a cloud company's mirror, and the origin: three operators (BFSU, the earlier second choice,
# is TUNA's own team).
DEFAULT_CONDA_UPSTREAMS: list[str] = ["tuna", "aliyun", "anaconda"]

# Whose infrastructure a preset's answers come from, when it is not its own (docs/upstreams.md gives the sources).
OPERATORS: dict[str, str] = {
    "tuna": "tuna",
    "bfsu": "tuna",  # run by TUNA's team, with its scripts and anti-abuse rules
    "ustc": "tuna",  # PyPI index copied from TUNA; misses and anaconda pkgs/* redirect there
    "sjtu": "tuna",  # PyPI pages from TUNA; uncached files redirect there
    "zju": "tuna",  # off-campus requests go to TUNA
}


def operator_of(name: str) -> str:
    """Who runs the mirror a preset (or any upstream, by its name) ends up on."""
    return OPERATORS.get(name, name)


def shared_operators(names: list[str]) -> dict[str, list[str]]:
    """Operators behind more than one of `names`: the upstreams that would fail together."""
    by_operator: dict[str, list[str]] = {}
    for name in names:
        by_operator.setdefault(operator_of(name), []).append(name)
    return {operator: members for operator, members in by_operator.items() if len(members) > 1}
