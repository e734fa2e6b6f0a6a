"""What the cache recorded of a package file when it was checked: its size, and the digest its bytes were checked
against, kept on the file itself (an extended attribute, `user.pkgcache.digest`).

A package file's name does not change when its upstream replaces it (a rebuilt conda package, a wheel uploaded
again under the same name): the index then lists another hash and size for the same name, and the cached bytes
are no longer that file. A cached file is served as a hit only when what was recorded of it agrees with the record
of the index served now (`agrees`); otherwise it is fetched again and replaces the old one by a rename.

The digest is written on the temporary file before it is renamed into place, so the file and its record appear
together, and a reader never needs to hash the file: a hit costs one stat and one getxattr. A file system without
extended attributes for users, or a file put there by other means (an older pkgcache), records only its size (the
stat's): then only the size is compared, and a replacement of the same size is not noticed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

DIGEST_ATTRIBUTE = "user.pkgcache.digest"
# Errors that mean "no record here" rather than a failing disk: no such attribute, or none supported.
_NO_RECORD = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG, errno.ERANGE}


@dataclass(frozen=True, slots=True)
class Recorded:
    """A cached file as recorded: its size, and (algorithm, hex digest) its bytes were checked against, if known."""

    size: int
    digest: tuple[str, str] | None = None


def record_digest(path: Path, digest: tuple[str, str]) -> None:
    """Record on `path` (a file about to be renamed into place) the digest its bytes were checked against
    (blocking). Nothing is recorded where the file system cannot keep it: sizes are then compared alone."""
    try:
        os.setxattr(path, DIGEST_ATTRIBUTE, f"{digest[0]}:{digest[1].lower()}".encode("ascii"))
    except OSError as exc:
        if exc.errno not in _NO_RECORD:
            raise


def recorded_of(path: Path) -> Recorded | None:
    """What was recorded of the cached file at `path`; None when there is no such file (blocking: a stat and a
    getxattr, cheap enough for the event loop, as the hit path's stat always was)."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not S_ISREG(stat.st_mode):
        return None
    size = stat.st_size
    try:
        raw = os.getxattr(path, DIGEST_ATTRIBUTE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in _NO_RECORD:
            raise
        return Recorded(size)
    name, _, value = raw.decode("ascii", "replace").partition(":")
    return Recorded(size, (name, value) if name and value else None)


def agrees(recorded: Recorded, hashes: Mapping[str, str], size: int | None) -> bool:
    """Whether a cached file, as recorded, is the file an index record describes: the same size when the record
    gives one, the same digest when both know one of the same algorithm. A record giving neither (a PyPI page
    without hashes) cannot tell: the cached file is taken as it is."""
    if size is not None and size != recorded.size:
        return False
    if recorded.digest is None:
        return True
    name, value = recorded.digest
    listed = hashes.get(name)
    return listed is None or listed.lower() == value
