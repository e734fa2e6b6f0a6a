"""PyPI's side of the policy: rules over project names (PEP 503), PEP 440 versions, file kinds and wheel tags.

The page layer calls `PypiPolicy.filter_page_files` once per page and policy (never per request) and
`check_file` for a file asked for directly; `check_project` says whether a whole project is refused, so a client
can be told why instead of seeing an empty page. A file's version is read from its name only when a rule needs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from packaging.specifiers import Specifier

from pkgcache.policy.common import (
    ALLOWED,
    Block,
    RuleRef,
    Verdict,
    epoch_of,
    from_epoch,
    now_epoch,
    parse_upload_time,
    refusal,
)
from pkgcache.policy.config import PypiPolicySettings
from pkgcache.policy.engine import Pin, PinVerdict, Plan, SidePolicy, earliest
from pkgcache.policy.pypi_rules import (
    FileFacts,
    PypiRule,
    compile_rule,
    file_kind,
    normalize_name,
    parse_version,
    version_key,
)


class PageFile(Protocol):
    """What the policy reads of a file in a project page (`pypi.model.DistFile` is one)."""

    @property
    def filename(self) -> str: ...

    @property
    def upload_time(self) -> str | None: ...


F = TypeVar("F", bound=PageFile)


class Page(Protocol):
    """What `filter_page` reads of a project page (`pypi.model.ProjectPage` is one): a dataclass, copied with
    the files it keeps."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def name(self) -> str: ...

    @property
    def files(self) -> Sequence[PageFile]: ...

    @property
    def versions(self) -> Sequence[str] | None: ...


P = TypeVar("P", bound=Page)


@dataclass(frozen=True, slots=True)
class PageFilter(Generic[F]):
    """A page's files split by the policy, in their order.

    `valid_until` is when the split may change with no change of policy or page: the earliest time a file kept out
    by the release age becomes old enough (None: never). Filter again then.
    """

    kept: tuple[F, ...]
    refused: tuple[tuple[F, Verdict], ...]
    valid_until: datetime | None

    @property
    def changed(self) -> bool:
        return bool(self.refused)


@dataclass(frozen=True, slots=True)
class PypiBlock:
    block: Block
    ref: RuleRef
    specifier: Specifier | None

    def matches(self, facts: FileFacts) -> bool:
        if self.block.version is None:
            return True
        version = facts.version
        if version is None or self.specifier is None:
            return facts.version_text == self.block.version
        return self.specifier.contains(version, prereleases=True)


class PypiPolicy(SidePolicy):
    """The PyPI side's rules, compiled. Immutable: `with_blocks`/`add_block`/`remove_block` make new ones."""

    side: ClassVar = "pypi"
    settings_type: ClassVar = PypiPolicySettings
    normalize = staticmethod(normalize_name)

    @classmethod
    def compile_rule(cls, entry: Any, kind: str, index: int) -> PypiRule:
        return compile_rule(entry, kind, index)

    def compile_block(self, block: Block) -> PypiBlock:
        specifier = None
        if block.version is not None and parse_version(block.version) is not None:
            specifier = Specifier(f"=={block.version}")
        return PypiBlock(block, RuleRef("pypi", "block", block.describe()), specifier)

    def check_project(self, project: str) -> Verdict:
        """Refused when no file of the project can be served whatever its version (blocked, denied, not allowed)."""
        whole = self.plan(normalize_name(project)).whole
        return ALLOWED if whole is None else refusal(f"project {project}", whole)

    def filter_page_files(
        self,
        project: str,
        files: Iterable[F],
        *,
        now: datetime | None = None,
        first_seen: Callable[[str], datetime | None] | None = None,
    ) -> PageFilter[F]:
        """Split a page's files into those served and those refused (with why).

        A file's age is its PEP 700 upload time, else `first_seen(filename)` (when pkgcache first saw it; a dict's
        `.get` will do), else unknown.
        """
        name = normalize_name(project)
        plan = self.plan(name)
        ages_matter = bool(self._age_seconds) and not plan.age_exempt
        if plan.rules_only_age and not ages_matter:
            return PageFilter(tuple(files), (), None)
        moment = now_epoch(now)
        kept: list[F] = []
        refused: list[tuple[F, Verdict]] = []
        until: float | None = None
        for dist in files:
            released = _released(dist, first_seen) if ages_matter else None
            verdict = self._decide_file(name, plan, dist.filename, released, moment)
            if verdict.allowed:
                kept.append(dist)
            else:
                refused.append((dist, verdict))
                until = earliest(until, verdict.available_at)
        return PageFilter(tuple(kept), tuple(refused), None if until is None else from_epoch(until))

    def filter_page(
        self,
        page: P,
        *,
        now: datetime | None = None,
        first_seen: Callable[[str], datetime | None] | None = None,
    ) -> tuple[P, PageFilter[Any]]:
        """A project page (a dataclass with `name`, `files` and PEP 700 `versions`, like `pypi.model.ProjectPage`)
        with only the files served, and the split itself.

        A version all of whose files are refused leaves `versions` too, so nothing names a release that cannot
        be had; versions listed without files stay. The same page object comes back when nothing is refused.
        """
        result = self.filter_page_files(page.name, page.files, now=now, first_seen=first_seen)
        if not result.changed:
            return page, result
        versions = page.versions
        if versions is not None:
            project = normalize_name(page.name)
            gone = {version_key(project, dist.filename) for dist, _ in result.refused}
            gone -= {version_key(project, dist.filename) for dist in result.kept}
            gone.discard(None)  # files whose version cannot be read say nothing of `versions`
            versions = tuple(v for v in versions if parse_version(v) not in gone and v not in gone)
        return dataclasses.replace(page, files=result.kept, versions=versions), result

    def check_file(
        self,
        project: str,
        filename: str,
        *,
        upload_time: str | datetime | None = None,
        first_seen: datetime | None = None,
        now: datetime | None = None,
    ) -> Verdict:
        """The verdict for one file asked for directly (a 403 with `verdict.message` when refused)."""
        name = normalize_name(project)
        if isinstance(upload_time, datetime):
            released: float | None = epoch_of(upload_time)
        else:
            released = parse_upload_time(upload_time)
        if released is None and first_seen is not None:
            released = epoch_of(first_seen)
        return self._decide_file(name, self.plan(name), filename, released, now_epoch(now))

    def _decide_file(self, name: str, plan: Plan, filename: str, released: float | None, now: float) -> Verdict:
        if plan.rules_only_age:
            return self.check_age(filename, plan, released, now)
        return self.decide(filename, plan, FileFacts.of_file(name, filename), released, now)

    def check_pin(self, pin: Pin, now: float) -> PinVerdict:
        name = normalize_name(pin.name)
        kind = file_kind(pin.filename) if pin.filename else None
        return self.decide_pin(pin, self.plan(name), FileFacts(name, pin.filename, kind, pin.version), now)


def _released(dist: PageFile, first_seen: Callable[[str], datetime | None] | None) -> float | None:
    released = parse_upload_time(dist.upload_time)
    if released is None and first_seen is not None:
        seen = first_seen(dist.filename)
        released = None if seen is None else epoch_of(seen)
    return released


def allow_rules_for(pins: Iterable[Pin]) -> list[str]:
    """Allow rules admitting exactly these pins (`name==version`), e.g. every package of a lock file, sorted."""
    return sorted({f"{normalize_name(pin.name)}=={pin.version}" for pin in pins})
