"""What a well-formed file of a kind starts with (catches an error page served in a package's place), and the most
a package file may be."""

from __future__ import annotations

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# The most a package file (a wheel, an sdist, a conda package) may be, whatever its index says or does not say (PEP
# 503 HTML pages give no size): past it, a mirror's answer is refused as that mirror's bad answer, as its bytes
# arrive, and nothing of it is kept. The main public index caps a file at 1 GiB (the ceiling of its per-project
# limits); other indexes serve GPU builds of a few GB. 8 GiB leaves a few times the largest, while a
# mirror can no longer make one answer (a gzip-encoded stream of zeros, say) fill the disk. Index files have their
# own cap (conda/index_checks.MAX_INDEX_BYTES), provenance its own (pypi/upstream_index.MAX_PROVENANCE_BYTES).
MAX_PACKAGE_BYTES = 8 << 30


def max_package_size() -> int:
    """The cap on a package file's size (read when a download starts, so tests may lower it)."""
    return MAX_PACKAGE_BYTES


def magic_for(filename: str) -> tuple[bytes, ...]:
    lowered = filename.lower()
    if lowered.endswith((".whl", ".zip", ".egg", ".conda")):
        return ZIP_MAGIC
    if lowered.endswith((".tar.gz", ".tgz")):
        return (b"\x1f\x8b",)
    if lowered.endswith(".bz2"):
        return (b"BZh",)
    if lowered.endswith(".zst"):
        return (b"\x28\xb5\x2f\xfd",)
    return ()
