"""Project names and file names as they appear in request paths."""

from __future__ import annotations

import functools
import re

from packaging.utils import canonicalize_name

from pkgcache.policy.pypi_rules import SDIST_EXTENSIONS
from pkgcache.storage.store import UnsafePath, check_segment

# PEP 508 names; longer than any real project, short enough to be a safe file name.
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?$")

# Extensions of files an index may list: wheels, the sdists pip and uv read, and the old binary kinds. Anything else
# in a page is not a distribution and is dropped.
DIST_EXTENSIONS = (".whl", *SDIST_EXTENSIONS, ".egg", ".exe", ".msi", ".rpm", ".dmg")
METADATA_SUFFIX = ".metadata"
PROVENANCE_SUFFIX = ".provenance"  # PEP 740 attestations of a file, fetched from where the upstream's page says


class BadName(ValueError):
    """A project or file name that cannot be one."""


@functools.lru_cache(maxsize=4096)
def normalize_project(name: str) -> str:
    """The PEP 503 form of a project name from a request; raises BadName for anything that is not a name.

    Memoised: clients ask for the same few thousand names over and over (a refusal is not memoised).
    """
    if not _PROJECT_NAME.match(name):
        raise BadName(f"{name!r} is not a valid project name")
    return canonicalize_name(name)


def check_filename(filename: str) -> str:
    """A distribution (or its PEP 658 metadata or PEP 740 provenance) file name from a request, checked to be a
    plain, safe file name."""
    try:
        check_segment(filename)
    except UnsafePath as exc:
        raise BadName(str(exc)) from None
    base = companion_base(filename) or filename
    if not is_distribution_filename(base):
        raise BadName(f"{filename!r} is not a distribution file name")
    return filename


def is_distribution_filename(filename: str) -> bool:
    return filename.lower().endswith(DIST_EXTENSIONS) and "/" not in filename


def companion_base(filename: str) -> str | None:
    """The distribution a `.metadata` or `.provenance` file goes with; None for a distribution itself."""
    for suffix in (METADATA_SUFFIX, PROVENANCE_SUFFIX):
        if filename.endswith(suffix):
            return filename.removesuffix(suffix)
    return None
