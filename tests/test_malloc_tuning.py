"""malloc's thresholds fixed: freed buffers go back to the system as they are freed (pkgcache/malloc_tuning.py)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

from pkgcache import malloc_tuning
from pkgcache.malloc_tuning import release_freed_memory_promptly
from pkgcache.service import serving
from pkgcache.storage import downloads
from pkgcache.upstream import pool

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# A process frees one mapped block (which raises glibc's thresholds unless they are fixed), then allocates 60 MB
# of 600 kB buffers, each followed by a small one it keeps (as a server's buffers lie among its longer-lived
# objects), and frees the big ones: what it still holds.
RETAINED = textwrap.dedent(
    """
    import json, os, sys
    from pkgcache.malloc_tuning import release_freed_memory_promptly

    def rss_kb():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    tuned = release_freed_memory_promptly() if sys.argv[1] == "tuned" else None
    first = bytearray(600_000)
    del first
    before = rss_kb()
    buffers, kept = [], []
    for _ in range(100):
        buffers.append(bytearray(600_000))
        kept.append(bytearray(4096))
    del buffers
    print(json.dumps({"tuned": tuned, "retained_kb": rss_kb() - before}))
    """
)


def _retained(mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", RETAINED, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@glibc_only
def test_freed_buffers_are_given_back_at_once_with_the_thresholds_fixed() -> None:
    tuned = _retained("tuned")
    assert tuned["tuned"] is True
    assert tuned["retained_kb"] < 8 * 1024
    # The same without: glibc keeps them (if a glibc stops doing so, this module has nothing left to do).
    assert _retained("plain")["retained_kb"] > 40 * 1024


def test_the_service_fixes_them_before_its_workers_are_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(serving, "release_freed_memory_promptly", lambda threshold: calls.append(threshold) or True)
    monkeypatch.setattr(serving, "serve_worker", lambda *args, **kwargs: calls.append("served"))
    settings = serving.Settings.model_validate({"server": {"workers": 1}})
    assert serving.run(settings) == 0
    assert calls == [malloc_tuning.SERVICE_MMAP_THRESHOLD, "served"]


def test_the_services_download_chunks_are_never_a_mapping_each() -> None:
    # Each one mapped and unmapped: a big miss at half its rate.
    assert max(downloads.CHUNK_SIZE, pool.CHUNK_SIZE) + 4096 < malloc_tuning.SERVICE_MMAP_THRESHOLD


def test_nothing_is_done_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert release_freed_memory_promptly() is False
