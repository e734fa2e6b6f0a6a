"""What a well-formed file of a kind starts with: catches an error page served in a package's place."""

from __future__ import annotations

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


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
