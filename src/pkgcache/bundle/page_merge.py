"""A project's index files from a bundle and from the data directory, merged as one unit.

`page.json` and `metadata.json` of a project go together: the newer page (by when it was fetched, as it says, not
by a file time another machine's clock set) is the base, and the other page's files that the cache holds (or that
this import brings) are added to it, so every package imported stays listed, whichever page is newer. The core
metadata records are merged the same way, the base's winning for a file both describe.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pkgcache.pypi.model import DistFile, ProjectPage, version_of
from pkgcache.pypi.pages import CachedPage


@dataclasses.dataclass(frozen=True)
class MergedIndex:
    """What a project's page and records become; None for a file that stays as the data directory has it."""

    page: bytes | None
    records: bytes | None


def read_page(path: Path) -> CachedPage | None:
    try:
        return CachedPage.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_records(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def merge_project(
    bundle_page: CachedPage,
    here_page: CachedPage,
    bundle_records: dict[str, Any],
    here_records: dict[str, Any],
    held: set[str],
) -> MergedIndex:
    """The project's index after the import (see the module docstring); `held` names its files in the cache after it."""
    if bundle_page.fetched_at > here_page.fetched_at:
        base, other, records = bundle_page, here_page, {**here_records, **bundle_records}
    else:
        base, other, records = here_page, bundle_page, {**bundle_records, **here_records}
    page = with_files(base, [d for d in other.page.files if d.filename in held and d.filename not in base.files])
    page_bytes = None if page is here_page else json.dumps(page.to_json(), separators=(",", ":")).encode()
    records_bytes = None if records == here_records else json.dumps(records).encode()
    return MergedIndex(page_bytes, records_bytes)


def with_files(entry: CachedPage, extra: list[DistFile]) -> CachedPage:
    """The page with `extra` files listed after its own (and their versions in PEP 700 `versions`)."""
    if not extra:
        return entry
    page: ProjectPage = entry.page
    versions = page.versions
    if versions is not None:
        added = [v for v in dict.fromkeys(version_of(d.filename) for d in extra) if v and v not in versions]
        versions = (*versions, *added)
    merged = dataclasses.replace(page, files=(*page.files, *extra), versions=versions)
    return entry.listing(merged)
