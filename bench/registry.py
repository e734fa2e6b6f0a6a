"""Where preparation downloads real wheels from: the registry this machine's pip is set up for.

The address is read at run time (never written into any file of the repository, nor printed): first
BENCH_INDEX_URL, then PIP_INDEX_URL, then `pip config get global.index-url`, then pip's own built-in default.
Only preparation uses it, once; every measured request goes to 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys


def registry_index_url() -> str:
    for key in ("BENCH_INDEX_URL", "PIP_INDEX_URL"):
        if os.environ.get(key):
            return os.environ[key]
    configured = _pip_output(["config", "get", "global.index-url"])
    if configured:
        return configured
    # pip's default index, asked of pip itself so that no address is spelled out here.
    code = "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _pip_output(args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""
