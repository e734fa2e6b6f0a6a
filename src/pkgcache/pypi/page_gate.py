"""The PyPI side's predicate for the filter layer (filtered_index.py), made from the gate (gate/state.py).

Two filters, applied in this order to a page:
- the supply-chain policy (pkgcache.policy): a refused file is left out and answered 403 with the policy's message;
  a file's age is its PEP 700 upload time, else the one an earlier page gave, else when pkgcache first saw it
  (gate/first_seen.py);
- the offline view: a file the cache does not hold is left out and answered 404 in offline mode, or 503 (with
  Retry-After) while every upstream is down, since it can be fetched once one answers again.
Either leaves out of PEP 700 `versions` the versions it left with no file.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from packaging.version import InvalidVersion, Version

from pkgcache.gate.first_seen import FILE_NAME as FIRST_SEEN_FILE
from pkgcache.gate.first_seen import note_first_seen
from pkgcache.gate.misses import not_held
from pkgcache.gate.state import SideGate
from pkgcache.policy.common import parse_upload_time
from pkgcache.policy.pypi import PypiPolicy, normalize_name
from pkgcache.pypi.filtered_index import PageSplit, Refusal
from pkgcache.pypi.model import ProjectPage, version_of
from pkgcache.pypi.pages import PageStore

# A worker that only reads the cache, finding files the writer has not recorded as seen yet, looks again this soon.
UNRECORDED_RECHECK_SECONDS = 1.0


class GatePages:
    """A `PagePredicate` for one side's gate at one moment."""

    def __init__(self, gate: SideGate, pages: PageStore) -> None:
        policy = gate.policy
        assert policy is None or isinstance(policy, PypiPolicy)
        self.policy = policy
        self.pages = pages
        self.fingerprint = gate.fingerprint
        self.passes_everything = gate.passes_everything
        self.offline = gate.view_offline
        self.never_fetches = gate.offline
        self.does_io = self.offline or bool(policy is not None and policy.settings.min_release_age)

    def project_stamp(self, project: str) -> object:
        if not self.offline:
            return None
        try:
            return ("files", os.stat(self.pages.store.path_for("pypi", "files", project)).st_mtime_ns)
        except OSError:
            return ("files", None)

    def split(self, project: str, page: ProjectPage) -> PageSplit:
        shown, refused, until = page, {}, None
        if self.policy is not None:
            first_seen, complete = self._first_seen(project, page, self.policy)
            shown, result = self.policy.filter_page(page, first_seen=first_seen)
            refused = {dist.filename: Refusal(403, verdict.message) for dist, verdict in result.refused}
            until = None if result.valid_until is None else result.valid_until.timestamp()
            if not complete:
                until = min(until or float("inf"), time.time() + UNRECORDED_RECHECK_SECONDS)
        if self.offline:
            held = self._held(project)
            missing = [dist.filename for dist in shown.files if dist.filename not in held]
            if missing:
                shown = without_files(shown, missing)
                for name in missing:
                    refused.setdefault(name, Refusal(*not_held(name, configured_offline=self.never_fetches)))
        return PageSplit(shown, refused, until)

    def _first_seen(
        self, project: str, page: ProjectPage, policy: PypiPolicy
    ) -> tuple[Callable[[str], datetime | None] | None, bool]:
        """When files were first seen or released, as far as pkgcache knows (files without an upload time recorded
        as seen now if new, upload times kept), and whether the record is on disk; (None, True) when ages do not
        matter.

        Upload times are kept as well, so that a later page without them (another mirror's, in HTML) does not make
        files known to be old new again."""
        settings = policy.settings
        if not settings.min_release_age or policy.plan(normalize_name(project)).age_exempt:
            return None, True
        names = [dist.filename for dist in page.files if not dist.upload_time]
        released = {
            dist.filename: moment for dist in page.files if (moment := parse_upload_time(dist.upload_time)) is not None
        }
        path = self.pages.store.path_for("pypi", "simple", project, FIRST_SEEN_FILE)
        record, complete = note_first_seen(self.pages.store, path, names, released=released)
        return record.lookup(count_first_sight=settings.unknown_age == "refuse"), complete

    def _held(self, project: str) -> set[str]:
        try:
            return set(os.listdir(self.pages.store.path_for("pypi", "files", project)))
        except OSError:
            return set()


def without_files(page: ProjectPage, names: Iterable[str]) -> ProjectPage:
    """The page without these files, and without the PEP 700 versions that have no file left."""
    gone = set(names)
    kept = tuple(dist for dist in page.files if dist.filename not in gone)
    versions = page.versions
    if versions is not None:
        left = {_version_key(version_of(dist.filename)) for dist in kept}
        dropped = {_version_key(version_of(name)) for name in gone} - left
        dropped.discard(None)  # a file whose version cannot be read says nothing about `versions`
        versions = tuple(v for v in versions if _version_key(v) not in dropped)
    return dataclasses.replace(page, files=kept, versions=versions)


def _version_key(text: str | None) -> Version | str | None:
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return text
