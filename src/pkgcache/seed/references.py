"""Small facts about references inside inputs: file names from URLs, hash strings, and why a reference that is
not an index file (a local path, a VCS checkout, a direct URL) cannot be seeded."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
# Digest lengths in hex of the algorithms lock files use; others are accepted as any hex string.
_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}


def is_remote_url(reference: str) -> bool:
    return reference.lower().startswith(("http://", "https://"))


def filename_from_url(url: str) -> str | None:
    """The last path segment, percent-decoded (as installers name the file), or None when there is none or it
    would not be one safe path segment."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    name = unquote(segment)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return name


def split_hash(value: str, separator: str = ":") -> tuple[str, str]:
    """("sha256", "<hex>") from "sha256:<hex>" (uv, poetry, pdm, pip's --hash; "=" for URL fragments).

    Raises ValueError saying what is wrong.
    """
    algorithm, sep, digest = value.partition(separator)
    algorithm = algorithm.strip().lower()
    digest = digest.strip()
    if not sep or not algorithm:
        raise ValueError(f"{value!r} is not <algorithm>{separator}<hex digest>")
    check_digest(algorithm, digest)
    return algorithm, digest.lower()


def check_digest(algorithm: str, digest: object) -> str:
    """The digest as lowercase hex; ValueError when it is not hex or has the wrong length for the algorithm."""
    if not isinstance(digest, str) or not _HEX.match(digest):
        raise ValueError(f"{algorithm} digest {digest!r} is not hexadecimal")
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is not None and len(digest) != expected:
        raise ValueError(f"{algorithm} digest has {len(digest)} hex digits, not {expected}")
    return digest.lower()


def url_or_none(reference: str) -> str | None:
    """The reference when it is a URL (kept on a skipped item), else None."""
    return reference if "://" in reference else None


def unseedable_reason(reference: str) -> str:
    """Why a reference that is not a file on a package index cannot be seeded through pkgcache."""
    lowered = reference.lower()
    if lowered.startswith(_VCS_PREFIXES):
        return "a version-control checkout: not a file on a package index"
    if lowered.startswith("file:"):
        return "a local file: not on a package index"
    if is_remote_url(reference):
        return "a direct URL: pkgcache seeds files that a package index lists"
    return "a local path: not on a package index"
