"""Known upstreams, by short name.

The domestic mirrors' URLs come from their own help pages (their layouts and quirks: docs/upstreams.md). The
official Python index is deliberately absent: a user who wants it gives its URL.
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

DEFAULT_CONDA_UPSTREAMS: list[str] = ["tuna", "bfsu", "anaconda"]
