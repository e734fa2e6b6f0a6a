"""The policy rules engine, both sides: release age, deny and allow rules, allow-only mode, blocks, config, speed."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import Field, ValidationError

from pkgcache.config import CondaConfig, PypiConfig, Settings
from pkgcache.policy import (
    Block,
    CondaPolicySettings,
    Pin,
    PinFile,
    PypiPolicy,
    PypiPolicySettings,
    parse_block_target,
    parse_duration,
)
from pkgcache.policy.common import format_duration
from pkgcache.policy.conda import CondaPolicy
from pkgcache.policy.conda import allow_rules_for as conda_allow_rules_for
from pkgcache.policy.pypi import allow_rules_for as pypi_allow_rules_for
from pkgcache.pypi.model import DistFile, ProjectPage

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = "2024-01-01T00:00:00Z"
CHANNEL, SUBDIR = "cloud/conda-forge", "linux-64"


@dataclass(frozen=True)
class File:
    filename: str
    upload_time: str | None = OLD


def pypi(**settings: Any) -> PypiPolicy:
    return PypiPolicy(PypiPolicySettings(**settings))


def conda(**settings: Any) -> CondaPolicy:
    return CondaPolicy(CondaPolicySettings(**settings))


def served(policy: PypiPolicy, project: str, *filenames: str) -> list[str]:
    """The files of `filenames` the policy serves (all uploaded long ago)."""
    result = policy.filter_page_files(project, [File(name) for name in filenames], now=NOW)
    return [dist.filename for dist in result.kept]


def record(name: str, version: str, build: str = "py312_0", **extra: Any) -> tuple[str, dict[str, Any]]:
    fields = {"name": name, "version": version, "build": build, "timestamp": 1_700_000_000_000, **extra}
    return f"{name}-{version}-{build}.conda", fields


def kept_versions(policy: CondaPolicy, name: str, *versions: str, **extra: Any) -> list[str]:
    records = dict(record(name, version, **extra) for version in versions)
    result = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    return [entry["version"] for entry in result.kept.values()]


# --- durations and config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("36h", 36 * 3600), ("90m", 5400), ("1w", 604800), ("1d12h", 129600), ("7 days", 604800)],
)
def test_durations_read_as_people_write_them(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["7", "7 fortnights", "d7", "", "7d-"])
def test_a_duration_without_a_unit_or_with_a_strange_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


POLICY_TOML = """
[pypi]
upstreams = ["tuna"]
min_release_age = "7d"
min_release_age_exempt = ["internal-*"]
deny = [
  "requests>=2.32,<3",
  "evil-*",
  { name = "*", kind = "sdist", except = ["pyyaml"], reason = "no builds from source" },
]
allow = ["numpy"]

[conda]
upstreams = ["tuna"]
min_release_age = "36h"
unknown_age = "allow"
deny = ["numpy >=2", { name = "*", license = ["*GPL*", "AGPL*"], channel = "conda-forge", reason = "legal" }]
"""


class MountedPypi(PypiConfig, PypiPolicySettings):
    """How config.py will mount the policy: its sections take the policy keys as their own."""


class MountedConda(CondaConfig, CondaPolicySettings):
    pass


def test_the_policy_keys_sit_in_the_pypi_and_conda_sections_beside_their_own() -> None:
    data = tomllib.loads(POLICY_TOML)
    pypi_section = MountedPypi.model_validate(data["pypi"])
    conda_section = MountedConda.model_validate(data["conda"])
    assert pypi_section.upstreams[0].name == "tuna" and pypi_section.index_ttl == 600
    assert pypi_section.min_release_age == timedelta(days=7)
    assert conda_section.unknown_age == "allow" and conda_section.min_release_age == timedelta(hours=36)

    policy = PypiPolicy(pypi_section)
    refused = policy.filter_page_files("pyyaml", [File("PyYAML-6.0.tar.gz"), File("pyyaml-6.0-py3-none-any.whl")])
    assert not refused.changed  # pyyaml is excepted from the sdist rule
    verdict = policy.check_file("requests", "requests-2.31.0.tar.gz", upload_time=OLD, now=NOW)
    assert verdict.message == (
        "requests-2.31.0.tar.gz is refused by pkgcache's policy: "
        '[pypi] deny[2] "* (kind=sdist, except=pyyaml)" (reason: no builds from source)'
    )
    gpl = record("readline", "8.2", license="GPL-3.0-only")
    assert not CondaPolicy(conda_section).check_record(CHANNEL, SUBDIR, *gpl, now=NOW)
    assert CondaPolicy(conda_section).check_record("pkgs/main", SUBDIR, *gpl, now=NOW)  # the rule names conda-forge


class MountedSettings(Settings):
    pypi: MountedPypi = Field(default_factory=MountedPypi)
    conda: MountedConda = Field(default_factory=MountedConda)


def test_policy_keys_come_from_the_environment_like_every_other_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKGCACHE_PYPI__MIN_RELEASE_AGE", "36h")
    monkeypatch.setenv("PKGCACHE_CONDA__DENY", '["numpy >=2", {"name": "*", "license": "*GPL*"}]')
    settings = MountedSettings()
    assert settings.pypi.min_release_age == timedelta(hours=36)
    policy = CondaPolicy(settings.conda)
    assert policy.describe() == ['[conda] deny[0] "numpy >=2"', '[conda] deny[1] "* (license=*GPL*)"']
    # The fingerprint reads the policy keys only, not the section's other keys.
    assert policy.fingerprint == conda(deny=settings.conda.deny).fingerprint


@pytest.mark.parametrize(
    ("side", "rules", "message"),
    [
        ("pypi", ["requests>=2.32|<3"], "rule 0 ('requests>=2.32|<3'): '>=2.32|<3' is not a PEP 440 version"),
        ("pypi", ["requests[socks]>=2"], "extras, markers and URLs have no meaning here"),
        ("pypi", ["", "ok"], "rule 0 (''): start with a project name"),
        ("pypi", [{"name": "x", "kind": "egg"}], "kind"),
        ("pypi", [{"spec": "x", "name": "x"}], "give either spec"),
        ("pypi", [{"name": "x", "colour": "red"}], "colour"),
        ("conda", ["numpy >=2,,<3!"], "rule 0 ('numpy >=2,,<3!'): not a conda match spec"),
        ("conda", ["conda-forge::numpy"], "use the table form"),
        ("conda", [{"name": "numpy", "version": ">=>2"}], "is not a conda version spec"),
        ("conda", [{"name": "numpy", "kind": "zip"}], "kind"),
    ],
)
def test_a_bad_rule_is_reported_when_the_config_loads_naming_the_rule(side: str, rules: list, message: str) -> None:
    model = PypiPolicySettings if side == "pypi" else CondaPolicySettings
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        model(deny=rules)


def test_loading_settings_loads_py_rattler_only_for_conda_rules() -> None:
    """The settings check every rule as they load; a configuration with no conda rules (most, and every CLI
    command's) must not pay for importing py-rattler, which only the conda rules' compiler needs."""
    script = """
import sys
from pkgcache.config import Settings
Settings(pypi={"deny": ["evil-*"], "upstreams": ["http://127.0.0.1:9/simple/"]})
print("rattler" in sys.modules)
Settings(conda={"deny": ["numpy <1.20"]})
print("rattler" in sys.modules)
"""
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert answer.stdout.split() == ["False", "True"], answer.stderr


def test_min_release_age_accepts_zero_and_unset_as_no_minimum() -> None:
    assert PypiPolicySettings(min_release_age="0").min_release_age is None
    assert PypiPolicySettings(min_release_age=0).min_release_age is None
    assert pypi(min_release_age="0").is_empty
    with pytest.raises(ValidationError, match="duration"):
        PypiPolicySettings(min_release_age=7)


# --- PyPI: names, patterns, versions, kinds ---------------------------------------------------------------------


def test_project_names_are_compared_normalised_as_pep_503_says() -> None:
    policy = pypi(deny=["Zope.Interface", "evil_*"])
    assert not policy.check_project("zope-interface")
    assert not policy.check_project("ZOPE__interface")
    assert not policy.check_project("Evil.Thing")
    assert not policy.check_project("evil-")  # the pattern's * matches nothing, too
    assert policy.check_project("zope-interfaces")
    assert policy.check_project("not-evil-thing")


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("evil-*", ["evil-a", "evil-pkg-two"], ["evil", "devil-a"]),
        ("*-evil", ["a-evil"], ["evil", "a-evil-b"]),
        ("?ip", ["pip", "zip"], ["ip", "pipx"]),
        ("*", ["anything"], []),
        ("a*b*c", ["abc", "a-b-c", "axxbyyc"], ["ab", "acb"]),
    ],
)
def test_name_patterns_take_star_and_question_mark(pattern: str, matching: list, not_matching: list) -> None:
    policy = pypi(deny=[pattern, "unrelated"])
    assert [name for name in matching if not policy.check_project(name)] == matching
    assert [name for name in not_matching if policy.check_project(name)] == not_matching


@pytest.mark.parametrize(
    ("rule", "denied", "served_too"),
    [
        # 1.0 and 1.0.0 are one version to PEP 440.
        ("pkg==1.0", ["1.0.0", "1.0"], ["1.0.1", "1.0.post1"]),
        # Pre-releases are judged like any other version: a deny rule takes them.
        ("pkg>=2", ["2.0", "2.1rc1", "3.0.dev0"], ["1.9", "2.0rc1"]),
        ("pkg>=2,<3", ["2.5", "2.0"], ["3.0", "1.0"]),
        # PEP 440: <2 leaves out 2's own pre-releases, >1.0 leaves out 1.0's post-releases.
        ("pkg<2", ["1.9", "2.0.dev0.post1"], ["2.0rc1", "2.0.dev1"]),
        ("pkg>1.0", ["1.1"], ["1.0.post1", "1.0"]),
        ("pkg~=1.4.2", ["1.4.5"], ["1.5.0"]),
        ("pkg!=1.5", ["1.4", "1.6"], ["1.5", "1.5.0"]),
        ("pkg==1.*", ["1.0", "1.9.9"], ["2.0", "0.9"]),
    ],
)
def test_pep_440_specifiers_decide_which_versions_a_rule_takes(rule: str, denied: list, served_too: list) -> None:
    policy = pypi(deny=[rule])
    wheels = [f"pkg-{version}-py3-none-any.whl" for version in denied + served_too]
    assert served(policy, "pkg", *wheels) == wheels[len(denied) :]


def test_versions_are_read_from_every_kind_of_file_name() -> None:
    policy = pypi(deny=["my-pkg==1.0"])
    names = [
        "my_pkg-1.0-py3-none-any.whl",
        "my_pkg-1.0-1-py3-none-any.whl",  # a build tag
        "my-pkg-1.0.tar.gz",
        "My.Pkg-1.0.zip",
        "my_pkg-1.0.tar.bz2",
        "my_pkg-1.0-py2.7.egg",
        "my_pkg-1.1.tar.gz",
        "my_pkg-1.1-py3-none-any.whl",
    ]
    assert served(policy, "my-pkg", *names) == ["my_pkg-1.1.tar.gz", "my_pkg-1.1-py3-none-any.whl"]


def test_a_version_no_rule_can_read_is_taken_by_deny_rules_and_not_by_allow_rules() -> None:
    odd = "pkg-nightly-build.tar.gz"
    assert served(pypi(deny=["pkg<1"]), "pkg", odd, "pkg-1.0.tar.gz") == ["pkg-1.0.tar.gz"]
    assert served(pypi(allow=["pkg>=0"], allow_only=True), "pkg", odd, "pkg-1.0.tar.gz") == ["pkg-1.0.tar.gz"]
    assert served(pypi(deny=["pkg"]), "pkg", odd) == []
    assert served(pypi(deny=["other<1"]), "pkg", odd) == [odd]


def test_file_kinds_and_wheel_tags() -> None:
    files = [
        "pkg-1.0.tar.gz",
        "pkg-1.0-py2.py3-none-any.whl",
        "pkg-1.0-cp312-cp312-win32.whl",
        "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "pkg-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
        "pkg-1.0.win32.exe",
    ]
    no_sdist = pypi(deny=[{"name": "*", "kind": "sdist"}])
    assert served(no_sdist, "pkg", *files) == files[1:]
    no_wheels = pypi(deny=[{"name": "pkg", "kind": "wheel"}])
    assert served(no_wheels, "pkg", *files) == [files[0], files[5]]
    no_other = pypi(deny=[{"name": "pkg", "kind": "other"}])
    assert served(no_other, "pkg", *files) == files[:5]
    no_win32 = pypi(deny=[{"name": "*", "tag": "*-win32"}])
    assert served(no_win32, "pkg", *files) == [files[0], files[1], files[3], files[4], files[5]]
    # Any of a wheel's tags (compressed tag sets expanded) may match; tags are compared lower-case.
    no_2014 = pypi(deny=[{"name": "pkg", "tag": "*-MANYLINUX2014_*"}, {"name": "pkg", "tag": "py2-*"}])
    assert served(no_2014, "pkg", *files) == [files[0], files[2], files[4], files[5]]
    no_cp27 = pypi(deny=[{"spec": "pkg>=1", "tag": "cp27-*"}])
    assert served(no_cp27, "pkg", *files) == [f for f in files if "cp27" not in f]


def test_a_deny_rule_can_except_names_and_patterns() -> None:
    policy = pypi(deny=[{"name": "*", "kind": "sdist", "except": ["PyYAML", "internal-*"]}])
    assert served(policy, "pyyaml", "PyYAML-6.0.tar.gz") == ["PyYAML-6.0.tar.gz"]
    assert served(policy, "internal-tools", "internal_tools-1.0.tar.gz") == ["internal_tools-1.0.tar.gz"]
    assert served(policy, "numpy", "numpy-2.0.tar.gz") == []


def test_the_first_refusing_rule_is_named_in_the_order_written() -> None:
    policy = pypi(deny=["pkg>=2", "pkg>=1", "p*"])
    result = policy.filter_page_files("pkg", [File("pkg-2.0.tar.gz"), File("pkg-1.5.tar.gz")], now=NOW)
    refs = [verdict.rule for _, verdict in result.refused]
    # A rule over the whole name ("p*") refuses every file before version rules are looked at.
    assert [ref.text for ref in refs if ref] == ["p*", "p*"]
    versions_only = pypi(deny=["pkg>=2", "pkg>=1"])
    result = versions_only.filter_page_files("pkg", [File("pkg-2.0.tar.gz"), File("pkg-1.5.tar.gz")], now=NOW)
    assert [(ref.index, ref.text) for _, v in result.refused if (ref := v.rule)] == [(0, "pkg>=2"), (1, "pkg>=1")]


# --- PyPI: allow-only ---------------------------------------------------------------------------------------------


def test_allow_only_serves_what_an_allow_rule_matches_and_nothing_else() -> None:
    policy = pypi(allow_only=True, allow=["requests==2.32.3", "urllib3>=2", {"name": "certifi", "kind": "wheel"}])
    assert served(policy, "requests", "requests-2.32.3.tar.gz", "requests-2.32.4.tar.gz") == ["requests-2.32.3.tar.gz"]
    assert served(policy, "urllib3", "urllib3-1.26.0.tar.gz", "urllib3-2.2.0.tar.gz") == ["urllib3-2.2.0.tar.gz"]
    assert served(policy, "certifi", "certifi-1.tar.gz", "certifi-1-py3-none-any.whl") == ["certifi-1-py3-none-any.whl"]
    assert served(policy, "idna", "idna-3.7.tar.gz") == []
    verdict = policy.check_project("idna")
    assert not verdict and verdict.rule is not None and verdict.rule.kind == "allow_only"
    assert verdict.message == (
        "project idna is refused by pkgcache's policy: [pypi] allow_only = true, and no allow rule matches it"
    )
    assert policy.check_project("requests")  # some of its files are served


def test_allow_rules_mean_nothing_without_allow_only_and_deny_wins_over_allow() -> None:
    assert served(pypi(allow=["requests"]), "idna", "idna-3.7.tar.gz") == ["idna-3.7.tar.gz"]
    both = pypi(allow_only=True, allow=["requests"], deny=["requests==2.32.0"])
    assert served(both, "requests", "requests-2.32.0.tar.gz", "requests-2.31.0.tar.gz") == ["requests-2.31.0.tar.gz"]


# --- PyPI: release age --------------------------------------------------------------------------------------------


def test_files_younger_than_the_minimum_age_are_kept_out_until_the_date_given() -> None:
    policy = pypi(min_release_age="7d")
    files = [
        File("pkg-1.0.tar.gz", "2026-05-01T00:00:00Z"),
        File("pkg-1.1.tar.gz", "2026-05-25T12:00:00.000000Z"),  # exactly 7 days: old enough
        File("pkg-1.2.tar.gz", "2026-05-28T08:30:15.123456Z"),
        File("pkg-1.3.tar.gz", "2026-05-30T00:00:00+00:00"),
    ]
    result = policy.filter_page_files("pkg", files, now=NOW)
    assert [f.filename for f in result.kept] == ["pkg-1.0.tar.gz", "pkg-1.1.tar.gz"]
    (_, verdict), (_, later) = result.refused
    assert verdict.available_at == datetime(2026, 6, 4, 8, 30, 15, 123456, tzinfo=UTC)
    assert later.available_at == datetime(2026, 6, 6, tzinfo=UTC)
    assert result.valid_until == verdict.available_at  # when the page must be filtered again
    assert verdict.message == (
        'pkg-1.2.tar.gz is refused by pkgcache\'s policy: [pypi] min_release_age = "7d"; '
        "released 2026-05-28 08:30:15 UTC, served from 2026-06-04 08:30:15 UTC"
    )
    assert policy.filter_page_files("pkg", files, now=verdict.available_at).valid_until == later.available_at


def test_without_an_upload_time_the_first_sighting_counts_and_else_unknown_age_decides() -> None:
    files = [File("pkg-1.0.tar.gz", None), File("pkg-1.1.tar.gz", None), File("pkg-1.2.tar.gz", "not a time")]
    seen = {"pkg-1.0.tar.gz": NOW - timedelta(days=30), "pkg-1.1.tar.gz": NOW - timedelta(days=1)}
    refusing = pypi(min_release_age="7d")
    result = refusing.filter_page_files("pkg", files, now=NOW, first_seen=seen.get)
    assert [f.filename for f in result.kept] == ["pkg-1.0.tar.gz"]
    reasons = {f.filename: v.rule.kind for f, v in result.refused if v.rule}
    assert reasons == {"pkg-1.1.tar.gz": "min_release_age", "pkg-1.2.tar.gz": "unknown_age"}
    assert refusing.check_file("pkg", "pkg-1.2.tar.gz", now=NOW).message == (
        'pkg-1.2.tar.gz is refused by pkgcache\'s policy: [pypi] unknown_age = "refuse"; its release time is not known'
    )
    allowing = pypi(min_release_age="7d", unknown_age="allow")
    result = allowing.filter_page_files("pkg", files, now=NOW, first_seen=seen.get)
    assert [f.filename for f in result.kept] == ["pkg-1.0.tar.gz", "pkg-1.2.tar.gz"]
    # Without a minimum age, an unknown age does not matter.
    assert served(pypi(), "pkg", "pkg-1.2.tar.gz") == ["pkg-1.2.tar.gz"]


def test_projects_exempt_from_the_age_are_served_at_once() -> None:
    policy = pypi(min_release_age="7d", min_release_age_exempt=["Internal_*", "black"])
    young = [File("internal-tools-1.0.tar.gz", "2026-06-01T11:00:00Z")]
    assert policy.filter_page_files("internal.tools", young, now=NOW).kept == tuple(young)
    assert policy.check_file("black", "black-24.1.tar.gz", upload_time=None, now=NOW)
    assert not policy.check_file("blacken", "blacken-1.tar.gz", upload_time=NOW, now=NOW)


def test_age_and_rules_apply_to_the_page_model_the_index_layer_uses() -> None:
    files = (
        DistFile("pkg-1.0.tar.gz", "https://example.org/p/pkg-1.0.tar.gz", upload_time="2026-01-01T00:00:00Z"),
        DistFile("pkg-2.0-py3-none-any.whl", "https://example.org/p/w.whl", upload_time="2026-05-31T00:00:00Z"),
        DistFile("pkg-1.5-py3-none-any.whl", "https://example.org/p/v.whl", upload_time="2026-02-01T00:00:00Z"),
    )
    result = pypi(min_release_age="3d", deny=["pkg==1.5"]).filter_page_files("pkg", files, now=NOW)
    assert result.kept == (files[0],)  # the same objects, in their order
    assert [v.rule.kind for _, v in result.refused if v.rule] == ["min_release_age", "deny"]


def test_a_filtered_page_drops_the_versions_whose_files_are_all_refused() -> None:
    page = ProjectPage(
        "pkg",
        (
            DistFile("pkg-1.0.tar.gz", "https://example.org/a", upload_time=OLD),
            DistFile("pkg-1.0-py3-none-any.whl", "https://example.org/b", upload_time=OLD),
            DistFile("pkg-2.0.tar.gz", "https://example.org/c", upload_time=OLD),
            DistFile("pkg-2.0-py3-none-any.whl", "https://example.org/d", upload_time=OLD),
        ),
        versions=("0.9", "1.0", "2.0"),  # 0.9 has no files: the upstream lists it anyway
        last_serial=7,
    )
    filtered, result = pypi(deny=["pkg==2", {"name": "pkg", "kind": "sdist"}]).filter_page(page, now=NOW)
    assert filtered.files == (page.files[1],) and len(result.refused) == 3
    assert filtered.versions == ("0.9", "1.0") and filtered.last_serial == 7 and filtered.name == "pkg"
    same, _ = pypi(deny=["other"]).filter_page(page, now=NOW)
    assert same is page


def test_a_policy_without_rules_hands_back_every_file() -> None:
    policy = pypi()
    assert policy.is_empty
    files = [File(f"pkg-{i}.tar.gz", None) for i in range(10)]
    result = policy.filter_page_files("pkg", files, now=NOW)
    assert list(result.kept) == files and not result.changed and result.valid_until is None


# --- blocks and the fingerprint -----------------------------------------------------------------------------------


def test_a_block_takes_effect_and_changes_the_fingerprint_and_its_removal_restores_both() -> None:
    policy = pypi(deny=["evil-*"])
    before = policy.fingerprint
    assert pypi(deny=["evil-*"]).fingerprint == before  # every worker computes the same one
    block = Block("Requests", "2.32.0", who="alice", why="compromised release", when=datetime(2026, 5, 1, tzinfo=UTC))
    blocked = policy.add_block(block)
    assert blocked.fingerprint != before and blocked.blocks == (block,)
    assert policy.blocks == ()  # the old policy is untouched: pages filtered under it stay consistent
    files = ("requests-2.32.0-py3-none-any.whl", "requests-2.32.tar.gz", "requests-2.31.0.tar.gz")
    assert served(blocked, "requests", *files) == ["requests-2.31.0.tar.gz"]
    verdict = blocked.check_file("requests", files[0], upload_time=OLD, now=NOW)
    assert verdict.message == (
        "requests-2.32.0-py3-none-any.whl is refused by pkgcache's policy: "
        "blocked: Requests==2.32.0 by alice on 2026-05-01 00:00:00 UTC: compromised release"
    )
    unblocked = blocked.remove_block("requests", "2.32.0")
    assert unblocked.fingerprint == before
    assert served(unblocked, "requests", *files) == list(files)


def test_a_block_without_version_refuses_the_whole_project_and_blocks_replace_their_own_kind() -> None:
    policy = pypi().add_block(Block("evil", None, who="bob", why="typosquat"))
    assert not policy.check_project("Evil") and policy.check_project("evil2")
    assert served(policy, "evil", "evil-1.0.tar.gz") == []
    again = policy.add_block(Block("EVIL", None, who="carol", why="still"))
    assert [b.who for b in again.blocks] == ["carol"] and again.fingerprint != policy.fingerprint
    assert again.remove_block("evil", None).is_empty


def test_every_rule_change_changes_the_fingerprint() -> None:
    base = dict(min_release_age="7d", deny=["a"], allow=["b"])
    fingerprints = {
        pypi(**base).fingerprint,
        pypi(**{**base, "min_release_age": "8d"}).fingerprint,
        pypi(**{**base, "deny": ["a", "c"]}).fingerprint,
        pypi(**{**base, "allow": ["b2"]}).fingerprint,
        pypi(**{**base, "allow_only": True}).fingerprint,
        pypi(**{**base, "unknown_age": "allow"}).fingerprint,
        pypi(**{**base, "deny": [{"name": "a", "reason": "r"}]}).fingerprint,
        conda(**base).fingerprint,
    }
    assert len(fingerprints) == 8


@pytest.mark.parametrize(
    ("text", "target"),
    [("requests==2.32.0", ("requests", "2.32.0")), ("numpy 1.26.4", ("numpy", "1.26.4")), ("evil", ("evil", None))],
)
def test_block_targets_are_read_from_the_command_line_forms(text: str, target: tuple) -> None:
    assert parse_block_target(text) == target


def test_a_block_target_with_a_range_is_refused() -> None:
    with pytest.raises(ValueError, match="NAME==VERSION"):
        parse_block_target("requests>=2")


def test_blocks_survive_a_round_trip_through_json() -> None:
    block = Block("numpy", "1.26.4", who="alice", why="bad build", when=datetime(2026, 5, 1, 9, 30, tzinfo=UTC))
    assert Block.from_json(block.as_json()) == block


# --- conda: versions, builds, kinds, licenses, channels ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "denied", "served_too"),
    [
        ("numpy 1.2", ["1.2", "1.2.0"], ["1.2.1", "1.20"]),  # a bare version in a spec is exact; 1.2 == 1.2.0
        ("numpy=1.2", ["1.2", "1.2.0", "1.2.7"], ["1.20", "1.3"]),  # name=version means 1.2.*
        ("numpy 1.2.*", ["1.2", "1.2.5", "1.2.5.1"], ["1.20.0", "1.3", "1.1.9"]),
        ("numpy >=1.2,<2", ["1.2", "1.9.9", "2.0.0a1"], ["1.1", "2.0"]),  # 2.0.0a1 sorts before 2.0 in conda
        ("numpy 1.2|1.4", ["1.2", "1.4.0"], ["1.3", "1.2.1"]),
        ("numpy >=1.0", ["1.0", "1.0.post1"], ["1.0.dev1", "0.9"]),  # dev < release < post
        ("numpy <1.0", ["1.0.dev1", "1.0rc1", "0.9"], ["1.0", "1.0.0"]),
        ("numpy !=1.2.*", ["1.3", "1.1"], ["1.2", "1.2.9"]),
        ("numpy >=1.1_", ["1.1a", "1.2"], ["1.0"]),
    ],
)
def test_conda_match_spec_versions_follow_conda_ordering(rule: str, denied: list, served_too: list) -> None:
    policy = conda(deny=[rule])
    assert kept_versions(policy, "numpy", *denied, *served_too) == served_too


def test_conda_build_strings_narrow_a_rule() -> None:
    policy = conda(deny=["numpy >=1.26 *cuda*", "scipy=1.13.1=py311*"])
    records = dict(
        [
            record("numpy", "1.26.4", "cuda120py312_0"),
            record("numpy", "1.26.4", "py312_0"),
            record("numpy", "1.25.0", "cuda120py312_0"),
            record("scipy", "1.13.1", "py311h1234_0"),
            record("scipy", "1.13.1", "py312h1234_0"),
        ]
    )
    result = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    assert sorted(result.refused) == ["numpy-1.26.4-cuda120py312_0.conda", "scipy-1.13.1-py311h1234_0.conda"]
    # As in conda, NAME=VERSION=BUILD takes the version exactly (1.13 is not 1.13.*): this one matches nothing.
    assert not conda(deny=["scipy=1.13=py311*"]).filter_records(CHANNEL, SUBDIR, records, now=NOW).changed
    table = conda(deny=[{"name": "numpy", "version": ">=1.26", "build": "*cuda*"}])
    assert sorted(table.filter_records(CHANNEL, SUBDIR, records, now=NOW).refused) == [
        "numpy-1.26.4-cuda120py312_0.conda"
    ]


def test_conda_package_names_and_patterns() -> None:
    policy = conda(deny=["cuda-*", "Evil"])
    records = dict([record("cuda-nvcc", "12.4"), record("cudatoolkit", "11.8"), record("evil", "1.0")])
    kept = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept
    assert [entry["name"] for entry in kept.values()] == ["cudatoolkit"]
    # conda names are not PEP 503 names: ruamel.yaml and ruamel-yaml are two packages.
    dotted = conda(deny=["ruamel.yaml"])
    records = dict([record("ruamel.yaml", "0.18"), record("ruamel-yaml", "0.18")])
    assert list(dotted.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept) == ["ruamel-yaml-0.18-py312_0.conda"]


def test_conda_formats_licenses_and_channels() -> None:
    records = {
        "a-1.0-0.conda": {"name": "a", "version": "1.0", "build": "0", "license": "MIT", "timestamp": 1},
        "a-1.0-0.tar.bz2": {"name": "a", "version": "1.0", "build": "0", "license": "MIT", "timestamp": 1},
        "b-1.0-0.conda": {"name": "b", "version": "1.0", "build": "0", "license": "GPL-3.0-or-later"},
        "c-1.0-0.conda": {"name": "c", "version": "1.0", "build": "0", "license": "agpl-3.0"},
        "d-1.0-0.conda": {"name": "d", "version": "1.0", "build": "0"},  # no license at all
    }
    no_bz2 = conda(deny=[{"name": "*", "kind": "tar.bz2"}])
    assert "a-1.0-0.tar.bz2" not in no_bz2.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept
    no_gpl = conda(deny=[{"name": "*", "license": ["*GPL*"], "reason": "legal"}])
    result = no_gpl.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    assert sorted(result.refused) == ["b-1.0-0.conda", "c-1.0-0.conda"]  # patterns ignore case
    assert result.refused["b-1.0-0.conda"].message == (
        "cloud/conda-forge/linux-64/b-1.0-0.conda is refused by pkgcache's policy: "
        '[conda] deny[0] "* (license=*GPL*)" (reason: legal)'
    )
    only_permissive = conda(allow_only=True, allow=[{"name": "*", "license": ["MIT", "BSD-*"]}])
    kept = only_permissive.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept
    assert sorted(kept) == ["a-1.0-0.conda", "a-1.0-0.tar.bz2"]  # an unknown license is not an allowed one
    in_forge = conda(deny=[{"name": "a", "channel": "conda-forge"}])
    assert not in_forge.filter_records("cloud/conda-forge", SUBDIR, records, now=NOW).kept.get("a-1.0-0.conda")
    assert in_forge.filter_records("pkgs/main", SUBDIR, records, now=NOW).kept.get("a-1.0-0.conda")
    by_path = conda(deny=[{"name": "a", "channel": "pkgs/*"}])
    assert by_path.filter_records("cloud/conda-forge", SUBDIR, records, now=NOW).kept.get("a-1.0-0.conda")
    assert not by_path.filter_records("pkgs/main", SUBDIR, records, now=NOW).kept.get("a-1.0-0.conda")


def test_conda_allow_only_and_blocks() -> None:
    policy = conda(allow_only=True, allow=["numpy 1.26.*", "python >=3.11"])
    assert kept_versions(policy, "numpy", "1.26.4", "2.0.0") == ["1.26.4"]
    assert kept_versions(policy, "pandas", "2.2.0") == []
    blocked = policy.add_block(Block("numpy", "1.26.4", who="alice", why="bad build"))
    assert kept_versions(blocked, "numpy", "1.26.4", "1.26.3", "1.26.4.0") == ["1.26.3"]
    whole = conda().add_block(Block("evil", None))
    assert kept_versions(whole, "evil", "1.0") == [] and kept_versions(whole, "good", "1.0") == ["1.0"]
    with pytest.raises(ValueError, match="not a conda version"):
        conda().add_block(Block("numpy", "1..2!!"))


# --- conda: timestamps and ages -----------------------------------------------------------------------------------


def test_conda_timestamps_in_milliseconds_and_in_seconds_mean_the_same_time() -> None:
    policy = conda(min_release_age="7d")
    recent = NOW - timedelta(days=2)
    old = NOW - timedelta(days=30)
    records = {
        "a-1-ms.conda": {"name": "a", "version": "1", "build": "ms", "timestamp": int(recent.timestamp() * 1000)},
        "a-1-s.conda": {"name": "a", "version": "1", "build": "s", "timestamp": int(recent.timestamp())},
        "a-0-ms.conda": {"name": "a", "version": "0", "build": "ms", "timestamp": int(old.timestamp() * 1000)},
        "a-0-s.tar.bz2": {"name": "a", "version": "0", "build": "s", "timestamp": old.timestamp()},
    }
    result = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    assert sorted(result.kept) == ["a-0-ms.conda", "a-0-s.tar.bz2"]
    available = {verdict.available_at for verdict in result.refused.values()}
    assert available == {datetime.fromtimestamp(int(recent.timestamp()), UTC) + timedelta(days=7)}
    assert result.valid_until == available.pop()


def test_conda_records_without_timestamp_use_the_first_sighting_or_unknown_age() -> None:
    records = {
        "a-1-0.conda": {"name": "a", "version": "1", "build": "0"},
        "a-2-0.conda": {"name": "a", "version": "2", "build": "0"},
        "a-3-0.conda": {"name": "a", "version": "3", "build": "0", "timestamp": "soon"},
    }
    seen = {"a-1-0.conda": NOW - timedelta(days=9)}
    refusing = conda(min_release_age="7d")
    result = refusing.filter_records(CHANNEL, SUBDIR, records, now=NOW, first_seen=seen.get)
    assert list(result.kept) == ["a-1-0.conda"]
    assert {v.rule.kind for v in result.refused.values() if v.rule} == {"unknown_age"}
    assert result.valid_until is None  # only time-bound refusals end by themselves
    allowing = conda(min_release_age="7d", unknown_age="allow")
    assert len(allowing.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept) == 3
    exempt = conda(min_release_age="7d", min_release_age_exempt=["a"])
    assert len(exempt.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept) == 3


def test_a_conda_package_asked_for_directly_gets_a_verdict_naming_the_rule() -> None:
    policy = conda(deny=["numpy >=2"], min_release_age="36h")
    filename, fields = record("numpy", "2.0.0")
    verdict = policy.check_record(CHANNEL, SUBDIR, filename, fields, now=NOW)
    assert verdict.message == (
        "cloud/conda-forge/linux-64/numpy-2.0.0-py312_0.conda is refused by pkgcache's policy: "
        '[conda] deny[0] "numpy >=2"'
    )
    young = {
        "name": "tiny",
        "version": "1.0",
        "build": "0",
        "timestamp": int((NOW - timedelta(hours=1)).timestamp() * 1000),
    }
    verdict = policy.check_record(CHANNEL, SUBDIR, "tiny-1.0-0.conda", young, now=NOW)
    assert verdict.available_at == NOW + timedelta(hours=35)
    assert '[conda] min_release_age = "36h"' in verdict.message and "2026-06-02 23:00:00 UTC" in verdict.message


# --- conda: the name a package is judged by (policy/conda_names.py) ----------------------------------------------

# Records whose name the policy cannot read, in the file `libfoo-3.0-h1_0.conda` unless given: rattler installs a
# record under its `name` as written (padded, look-alike) or cannot read it at all (missing, not a string).
UNREADABLE_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "trailing space": ("libfoo-3.0-h1_0.conda", {"name": "libfoo "}),
    "leading space": ("libfoo-3.0-h1_0.conda", {"name": " libfoo"}),
    "tab": ("libfoo-3.0-h1_0.conda", {"name": "libfoo\t"}),
    "zero-width space": ("libfoo-3.0-h1_0.conda", {"name": "lib\u200bfoo"}),
    "full-width letters": ("libfoo-3.0-h1_0.conda", {"name": "\uff4c\uff49\uff42\uff46\uff4f\uff4f"}),
    "kelvin sign": ("kfoo-3.0-h1_0.conda", {"name": "\u212afoo"}),  # Python's lower() makes it "kfoo"
    "kelvin sign in its file name": ("\u212afoo-3.0-h1_0.conda", {"name": "kfoo"}),
    "empty": ("libfoo-3.0-h1_0.conda", {"name": ""}),
    "null": ("libfoo-3.0-h1_0.conda", {"name": None}),
    "missing": ("libfoo-3.0-h1_0.conda", {}),
    "a number": ("libfoo-3.0-h1_0.conda", {"name": 123}),
    "a list": ("libfoo-3.0-h1_0.conda", {"name": ["libfoo"]}),
    "another name than its file's": ("libfoo-3.0-h1_0.conda", {"name": "zzz"}),
    "its file named another": ("zzz-3.0-h1_0.conda", {"name": "libfoo"}),
    "a file name without version and build": ("libfoo.conda", {"name": "libfoo"}),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_NAMES))
def test_a_conda_record_whose_name_cannot_be_read_is_refused_and_the_others_judged(case: str) -> None:
    """Filtering a repodata and judging a package asked for directly read one name, and refuse a record without
    one a rule can be looked up by, whatever the rules: one such record never fails the rest of the subdir."""
    filename, fields = UNREADABLE_NAMES[case]
    odd = {"version": "3.0", "build": "h1_0", "timestamp": 1_700_000_000_000, **fields}
    records = {filename: odd, **dict([record("libfoo", "1.0"), record("libfoo", "1.1"), record("app", "1.0")])}
    for policy in (conda(deny=["libfoo >=1.1"]), conda(min_release_age="1d"), conda(allow_only=True, allow=["*"])):
        result = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
        assert filename in result.refused and filename not in result.kept
        assert set(result.kept) >= {"libfoo-1.0-py312_0.conda", "app-1.0-py312_0.conda"}
        verdict = policy.check_record(CHANNEL, SUBDIR, filename, odd, now=NOW)
        assert verdict.message == result.refused[filename].message
        assert verdict.rule is not None and verdict.rule.kind == "name"
        assert verdict.message.startswith(
            f"{CHANNEL}/{SUBDIR}/{filename} is refused by pkgcache's policy: [conda] its package name cannot be read"
        )


def test_conda_names_are_compared_with_ascii_case_folded_by_every_path() -> None:
    """What a record says and what its file name says are one name whatever their case: the repodata filter, a
    package asked for directly, its quick look by file name (blocks), a pin and a purge all judge `libfoo`."""
    policy = conda(deny=["libfoo >=1.1"]).add_block(Block("libfoo", "3.0"))
    records = {
        "LibFoo-3.0-h1_0.conda": {"name": "LibFoo", "version": "3.0", "build": "h1_0"},
        "libfoo-3.1-h1_0.conda": {"name": "LIBFOO", "version": "3.1", "build": "h1_0"},
        "LIBFOO-1.0-h1_0.tar.bz2": {"name": "libfoo", "version": "1.0", "build": "h1_0"},
    }
    result = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    assert list(result.kept) == ["LIBFOO-1.0-h1_0.tar.bz2"]
    assert all("deny[0]" in v.message or "blocked: libfoo==3.0" in v.message for v in result.refused.values())
    for filename, fields in records.items():
        by_record = policy.check_record(CHANNEL, SUBDIR, filename, fields, now=NOW)
        assert bool(by_record) == (filename in result.kept)
    blocks = CondaPolicy(blocks=policy.blocks)
    assert not blocks.check_file(CHANNEL, SUBDIR, "LibFoo-3.0-h1_0.conda")
    assert blocks.check_file(CHANNEL, SUBDIR, "LibFoo-3.1-h1_0.conda")
    assert not blocks.check_file(CHANNEL, SUBDIR, "libfoo .conda"), "a file name that names no package"
    pins = [Pin("LibFoo", "3.1", filename="LibFoo-3.1-h1_0.conda", build="h1_0"), Pin("x", "1", filename="x.conda")]
    assert [bool(r.verdict) for r in policy.check_requirements(pins, now=NOW)] == [False, False]
    # A v3 record of another file format (a wheel) is judged by its record's name alone.
    wheel = {"c-1.0-py3-none-any.whl": {"name": "c", "version": "1.0", "build": "py_0"}}
    assert list(conda(deny=["libfoo"]).filter_records(CHANNEL, SUBDIR, wheel, now=NOW).kept) == list(wheel)


# --- pins (pkgcache policy check) ---------------------------------------------------------------------------------


def test_pins_are_checked_and_what_a_pin_cannot_tell_is_noted() -> None:
    policy = pypi(
        min_release_age="7d",
        deny=["requests==2.32.0", {"name": "*", "kind": "sdist", "reason": "wheels only"}],
        allow_only=True,
        allow=["requests", "idna"],
    )
    pins = [
        Pin("requests", "2.32.0"),
        Pin("requests", "2.31.0", filename="requests-2.31.0.tar.gz"),
        Pin("requests", "2.31.0", filename="requests-2.31.0-py3-none-any.whl", released_at=NOW - timedelta(days=1)),
        Pin("idna", "3.7", released_at=NOW - timedelta(days=100)),
        Pin("urllib3", "2.2.0"),
    ]
    results = policy.check_requirements(pins, now=NOW)
    assert [bool(r.verdict) for r in results] == [False, False, False, True, False]
    assert [r.verdict.rule.kind for r in results if r.verdict.rule] == [
        "deny",
        "deny",
        "min_release_age",
        "allow_only",
    ]
    assert results[2].verdict.available_at == NOW + timedelta(days=6)
    assert results[3].notes == (
        'not checked, the pin does not say enough: [pypi] deny[1] "* (kind=sdist)" (reason: wheels only)',
    )


def test_a_pin_with_files_passes_when_one_of_them_is_allowed_and_notes_the_others() -> None:
    policy = pypi(deny=["evil-*", "alpha==1.0", {"name": "*", "kind": "sdist", "except": ["pyyaml"]}])
    wheel, sdist = PinFile("alpha-2.0-py3-none-any.whl"), PinFile("alpha-2.0.tar.gz")
    both, only_sdist, old_wheel, evil, exempt = policy.check_requirements(
        [
            Pin("alpha", "2.0", files=(wheel, sdist)),
            Pin("alpha", "2.0", files=(sdist,)),
            Pin("alpha", "1.0", files=(PinFile("alpha-1.0-py3-none-any.whl"),)),
            Pin("evil-pkg", "1.0", files=(PinFile("evil_pkg-1.0-py3-none-any.whl"),)),
            Pin("PyYAML", "6.0", files=(PinFile("PyYAML-6.0.tar.gz"),)),
        ],
        now=NOW,
    )
    # What an installer of the lock meets: the wheel is served, the sdist is not; a note says so.
    assert both.verdict and both.notes == (
        "1 of its 2 files is refused (an installer that can use no other file fails): alpha-2.0.tar.gz by "
        '[pypi] deny[2] "* (kind=sdist, except=pyyaml)"',
    )
    assert not only_sdist.verdict and only_sdist.verdict.message.startswith("alpha-2.0.tar.gz is refused")
    # A rule on the name or the version refuses the pin whatever its files.
    assert not old_wheel.verdict and old_wheel.verdict.message.startswith("alpha==1.0 is refused")
    assert not evil.verdict and '[pypi] deny[0] "evil-*"' in evil.verdict.message
    assert exempt.verdict and exempt.notes == ()


def test_a_pin_all_of_whose_files_are_refused_says_why_for_each() -> None:
    policy = pypi(min_release_age="7d", deny=[{"name": "*", "kind": "sdist"}])
    young = NOW - timedelta(days=2)
    result = policy.check_requirements(
        [
            Pin(
                "alpha",
                "2.0",
                files=(
                    PinFile("alpha-2.0-cp312-cp312-manylinux_2_17_x86_64.whl", young),
                    PinFile("alpha-2.0-cp312-cp312-win_amd64.whl", young),
                    PinFile("alpha-2.0.tar.gz", NOW - timedelta(days=30)),
                ),
            )
        ],
        now=NOW,
    )[0]
    assert not result.verdict
    assert result.verdict.message == (
        "no file of alpha==2.0 is allowed by pkgcache's policy: alpha-2.0-cp312-cp312-manylinux_2_17_x86_64.whl, "
        'alpha-2.0-cp312-cp312-win_amd64.whl by [pypi] min_release_age = "7d" (served from 2026-06-06 12:00:00 UTC); '
        'alpha-2.0.tar.gz by [pypi] deny[0] "* (kind=sdist)"'
    )
    assert result.verdict.available_at == young + timedelta(days=7)  # then the wheels are served


def test_conda_pins_are_checked_with_what_they_say() -> None:
    policy = conda(deny=["numpy >=2", {"name": "*", "build": "*cuda*"}], min_release_age="7d")
    results = policy.check_requirements(
        [
            Pin("numpy", "2.0.1"),
            Pin("numpy", "1.26.4", build="cuda120_0", released_at=NOW - timedelta(days=50)),
            Pin("scipy", "1.13.1", released_at=NOW - timedelta(days=50)),
        ],
        now=NOW,
    )
    assert [bool(r.verdict) for r in results] == [False, False, True]
    assert results[2].notes and "build=*cuda*" in results[2].notes[0]
    unknown_time = policy.check_requirements([Pin("scipy", "1.13.1", build="py312_0")], now=NOW)[0]
    assert unknown_time.verdict and unknown_time.notes == (
        'release time not given: [conda] min_release_age = "7d" not checked',
    )


def test_an_allow_list_made_from_a_lock_file_serves_that_lock_file_and_nothing_else() -> None:
    locked = [Pin("Requests", "2.32.3"), Pin("idna", "3.7"), Pin("urllib3", "2.2.1"), Pin("idna", "3.7")]
    rules = pypi_allow_rules_for(locked)
    assert rules == ["idna==3.7", "requests==2.32.3", "urllib3==2.2.1"]  # what `uv export` lines look like
    policy = pypi(allow_only=True, allow=rules)
    assert served(policy, "requests", "requests-2.32.3-py3-none-any.whl", "requests-2.32.4-py3-none-any.whl") == [
        "requests-2.32.3-py3-none-any.whl"
    ]
    assert served(policy, "idna", "idna-3.7.tar.gz", "idna-3.6.tar.gz") == ["idna-3.7.tar.gz"]
    assert not policy.check_project("certifi")
    assert all(result.verdict for result in policy.check_requirements(locked, now=NOW))

    conda_locked = [Pin("numpy", "1.26.4", build="py312h1234_0"), Pin("python", "3.12.3")]
    conda_rules = conda_allow_rules_for(conda_locked)
    assert conda_rules == ["numpy ==1.26.4 py312h1234_0", "python ==3.12.3"]
    only_locked = conda(allow_only=True, allow=conda_rules)
    records = dict(
        [
            record("numpy", "1.26.4", "py312h1234_0"),
            record("numpy", "1.26.4", "py311h1234_0"),
            record("python", "3.12.3", "h0_cpython"),
            record("python", "3.12.30", "h0_cpython"),
            record("pandas", "2.2.0"),
        ]
    )
    kept = only_locked.filter_records(CHANNEL, SUBDIR, records, now=NOW).kept
    assert sorted(kept) == ["numpy-1.26.4-py312h1234_0.conda", "python-3.12.3-h0_cpython.conda"]


# --- speed (printed, not asserted) --------------------------------------------------------------------------------


def _synthetic_repodata(names: int, per_name: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(15)
    now_ms = int(NOW.timestamp() * 1000)
    records: dict[str, dict[str, Any]] = {}
    for index in range(names):
        name = f"pkg{index:05d}"
        for build_number in range(per_name):
            version = f"{build_number // 5}.{build_number % 5}.{rng.randint(0, 3)}"
            build = f"py3{build_number % 3}h{build_number:04x}_{build_number % 2}"
            age_ms = rng.randint(0, 3 * 365 * 86400 * 1000)
            stamp = now_ms - age_ms if build_number % 7 else (now_ms - age_ms) // 1000  # a few in seconds
            records[f"{name}-{version}-{build}.conda"] = {
                "name": name,
                "version": version,
                "build": build,
                "license": rng.choice(["MIT", "BSD-3-Clause", "GPL-3.0-or-later", "Apache-2.0"]),
                "timestamp": stamp,
                "depends": ["python >=3.10"],
                "sha256": "0" * 64,
                "size": 1000,
            }
    return records


def _thousand_conda_rules() -> list[Any]:
    rng = random.Random(16)
    rules: list[Any] = [f"pkg{rng.randrange(25000):05d} >=2.1,<3|1.0.*" for _ in range(700)]
    rules += [f"pkg{rng.randrange(25000):05d}" for _ in range(100)]
    rules += [f"pkg{rng.randrange(2500):04d}*" for _ in range(150)]  # each pattern covers ten names
    rules += [{"name": f"pkg{rng.randrange(250):03d}*", "license": "*GPL*", "reason": "legal"} for _ in range(49)]
    rules.append("pkg00042 >=1")
    return rules


def test_a_thousand_conda_rules_over_conda_forge_sized_repodata() -> None:
    records = _synthetic_repodata(25_000, 20)
    started = time.perf_counter()
    policy = conda(deny=_thousand_conda_rules(), min_release_age="7d", min_release_age_exempt=["pkg1*"])
    compiled = time.perf_counter()
    first = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    filtered = time.perf_counter()
    again = policy.filter_records(CHANNEL, SUBDIR, records, now=NOW)
    refiltered = time.perf_counter()
    print(
        f"\n1,000 conda rules + 7d age over {len(records):,} records: compile {compiled - started:.3f} s, "
        f"filter {filtered - compiled:.2f} s (plans worked out), {refiltered - filtered:.2f} s (plans kept); "
        f"{len(first.kept):,} kept, {len(first.refused):,} refused"
    )
    assert len(first.kept) + len(first.refused) == len(records) and first.refused.keys() == again.refused.keys()
    # The last rule, "pkg00042 >=1", leaves only 0.x versions of pkg00042 to be served.
    assert {first.kept[name]["version"][0] for name in first.kept if name.startswith("pkg00042-")} == {"0"}
    assert any(name.startswith("pkg00042-1.") for name in first.refused)
    assert all(
        v.rule is not None and (v.rule.kind != "min_release_age" or v.available_at is not None)
        for v in first.refused.values()
    )


def test_a_thousand_pypi_rules_over_a_page_of_two_thousand_files() -> None:
    files = []
    for minor in range(100):
        when = (NOW - timedelta(days=1000 - 10 * minor)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        files.append(File(f"numpy-1.{minor}.0.tar.gz", when))
        files += [File(f"numpy-1.{minor}.0-cp3{t}-cp3{t}-manylinux_2_17_x86_64.whl", when) for t in range(19)]
    rules: list[Any] = [f"proj{i}>=1" for i in range(800)] + [f"ev{i}-*" for i in range(150)]
    rules += [
        "numpy>=1.50,<1.60",
        {"name": "*", "kind": "sdist", "except": ["pyyaml"]},
        {"name": "numpy", "tag": "cp35-*"},
    ]
    rules += [f"extra{i}" for i in range(1000 - len(rules))]
    policy = pypi(deny=rules, min_release_age="7d")
    started = time.perf_counter()
    result = policy.filter_page_files("numpy", files, now=NOW)
    took = time.perf_counter() - started
    untouched = time.perf_counter()
    policy.filter_page_files("requests", files, now=NOW)
    other = time.perf_counter() - untouched
    print(
        f"\n1,000 PyPI rules + 7d age over {len(files):,} files: {took * 1000:.1f} ms with 4 rules on the project, "
        f"{other * 1000:.1f} ms for a project only the sdist rule and the age concern"
    )
    # sdists (100), 1.50-1.59 (10 x 19 wheels), cp35 wheels of the other 90 versions, nothing too young.
    assert len(result.refused) == 100 + 10 * 19 + 90 and len(result.kept) == 2000 - 380
