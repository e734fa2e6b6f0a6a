"""The standing fault suite as data: every way a mirror misbehaves that pkgcache must cover for, and what then.

`SCENARIOS` are run by one parametrized test (test_upstream_faults.py) against two upstreams, the faulty one first
and a healthy one second; `SERVICE_SCENARIOS` are the faults with a test of their own (workers, clients that hang
up or dawdle, a full disk...). `render_table()` turns both into the table of docs/reliability.md; regenerate it with

    .venv/bin/python -m tests.faults.scenarios --write docs/reliability.md
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.faulty import Fault, Kind


class Side(enum.StrEnum):
    PYPI = "pypi"
    CONDA = "conda"


class Outcome(enum.StrEnum):
    """What one client ended up with."""

    OK = "ok"  # 200, every byte of its Content-Length, and the bytes check out
    WRONG = "WRONG"  # 200, every byte of its Content-Length, and the bytes do NOT check out: never allowed
    CUT = "cut"  # 200 whose body ended before its Content-Length: the client knows it failed
    ERROR = "error"  # a 4xx or 5xx status
    TIMEOUT = "timeout"  # no answer, or a body that stalled, within the client's own timeout
    NO_ANSWER = "no-answer"  # the connection failed before any status


VERIFIED = frozenset({Outcome.OK})
# Where the first mirror's bytes already went out before they could be checked: a client may see its transfer
# fail, but never a whole body of wrong bytes; the next request gets the verified bytes.
VERIFIED_OR_FAILED = frozenset({Outcome.OK, Outcome.CUT, Outcome.ERROR})

# The machine's conda subdir (linux-64...), filled in by the harness; the table shows it as is.
MACHINE_SUBDIR = "<subdir>"

# New [upstream] settings the suite relies on (issue 9), with the small values that keep scenarios quick. With
# read_timeout far above the clients' own timeout, only these can rescue a client from a silent or dripping mirror.
DEADLINES: Mapping[str, float] = {
    "first_byte_timeout": 1.0,
    "min_rate": 2048,
    "rate_window": 1.0,
    "slot_wait": 0.5,
    "read_timeout": 60.0,
}
RETRY_CAP: Mapping[str, float] = {"max_retry_after": 120.0}


@dataclass(frozen=True)
class Resource:
    """What the clients ask for: a project page, a file, or a conda index file or package."""

    side: Side
    kind: str  # "page" | "file" | "index" | "package" | "shard"
    name: str  # project name for pages; file name otherwise
    project: str = ""  # PyPI files: their project
    channel: str = "pkgs/main"  # conda: the channel
    subdir: str | None = MACHINE_SUBDIR  # conda: the subdir, or None for a channel-level file

    def label(self) -> str:
        if self.side is Side.PYPI:
            return f"project page `{self.name}`" if self.kind == "page" else f"file `{self.name}`"
        if self.kind == "shard":
            return f"a shard of `{self.channel}/{self.subdir}`"
        where = "/".join(p for p in (self.channel, self.subdir, self.name) if p)
        return f"`{where}`"


PAGE = Resource(Side.PYPI, "page", "alpha")
BIG_FILE = Resource(Side.PYPI, "file", "bigpkg-1.0-py3-none-any.whl", project="bigpkg")
SMALL_FILE = Resource(Side.PYPI, "file", "alpha-2.0-py3-none-any.whl", project="alpha")
CONDA_BIG_PACKAGE = Resource(Side.CONDA, "package", "bigpkg-1.0-h0_0.conda", subdir="noarch")
# The first shard (by name) of the sharded channel's subdir: its name is its sha256, known once the channel is built.
FIRST_SHARD = "<first shard>"
CONDA_SHARD = Resource(Side.CONDA, "shard", FIRST_SHARD, channel="cloud/conda-forge")


def conda_index(name: str, channel: str = "pkgs/main", subdir: str | None = MACHINE_SUBDIR) -> Resource:
    return Resource(Side.CONDA, "index", name, channel=channel, subdir=subdir)


CONDA_INDEX_FILES = (
    conda_index("repodata.json"),
    conda_index("repodata.json.zst"),
    conda_index("repodata.json.bz2"),
    conda_index("current_repodata.json"),
    conda_index("repodata_shards.msgpack.zst", channel="cloud/conda-forge"),
    conda_index("channeldata.json", subdir=None),
    conda_index("run_exports.json"),
)
REPODATA = CONDA_INDEX_FILES[0]


@dataclass(frozen=True)
class Scenario:
    """One fault of the first upstream, what every client must get, and what the cache must keep."""

    id: str
    resource: Resource
    fault: Fault
    allowed: frozenset[Outcome] = VERIFIED  # what each of the concurrent clients may end up with
    rests_faulty: bool = True  # the faulty upstream is resting afterwards (False: it must not even be blamed)
    healthy_asked: bool | None = True  # the healthy upstream was asked for the resource (None: either way)
    clients: int = 8
    settings: Mapping[str, float] = field(default_factory=dict)  # [upstream] settings beyond the harness's own
    revalidation: bool = False  # a good copy is cached first; the fault meets its revalidation
    json_pages: bool = True  # the mirror's pages give sizes (PEP 691 JSON); False: HTML, hashes only
    keeps_file: bool = False  # the clients' own download keeps the verified file (not only the next request's)
    items: tuple[int, ...] = ()  # the items of issue 9 it checks
    client_gets: str = ""  # for the table; a default is derived from `allowed`
    cache_keeps: str = ""

    @property
    def side(self) -> Side:
        return self.resource.side

    def client_text(self) -> str:
        if self.client_gets:
            return self.client_gets
        right = _RIGHT_ONE[self.resource.kind]
        if self.revalidation:
            return f"200 with the good cached copy; afterwards {right} again"
        if self.allowed == VERIFIED:
            source = "from the healthy mirror" if self.healthy_asked else "from this mirror"
            return f"200 with {right}, {source}"
        return f"{right}, or a failed transfer (never a whole wrong body); the next request: {right}"

    def cache_text(self) -> str:
        if self.cache_keeps:
            return self.cache_keeps
        if self.keeps_file:
            return _RIGHT_ONE[self.resource.kind]
        if self.revalidation:
            return "the good copy, never the fault's body"
        return f"{_RIGHT_ONE[self.resource.kind]}, or nothing"

    def mirror_text(self) -> str:
        if not self.rests_faulty:
            return "not blamed"
        if self.settings.get("max_retry_after") and self.fault.retry_after:
            return "rested, at most max_retry_after"
        return "rested"


_RIGHT_ONE = {
    "page": "the right page",
    "file": "the verified bytes",
    "package": "the verified bytes",
    "shard": "the verified bytes",
    "index": "the right index file",
}


def _named(prefix: str, resource: Resource, fault: Fault, **options: object) -> Scenario:
    """A scenario called `<prefix>-<fault>`."""
    return Scenario(f"{prefix}-{fault.slug()}", resource, fault, **options)  # type: ignore[arg-type]


ABSURD_429 = Fault(Kind.STATUS, status=429, retry_after="999999999")
SLOW = (Fault(Kind.SILENT), Fault(Kind.HANG_AFTER_HEADERS), Fault(Kind.DRIP, rate=50))
# Faults seen before any byte could reach a client: failover must be invisible to clients.
BEFORE_ANY_BYTE = (
    Fault(Kind.REFUSE),
    Fault(Kind.RESET),
    Fault(Kind.STATUS, status=503),
    Fault(Kind.STATUS, status=304),  # "not modified" to a request that had no copy to compare
    Fault(Kind.REDIRECT_LOOP),
    Fault(Kind.BLOCK_PAGE),
)


def _page_scenarios() -> list[Scenario]:
    scenarios = [
        _named("page", PAGE, fault, items=(15,) if fault.kind is Kind.BLOCK_PAGE else ()) for fault in BEFORE_ANY_BYTE
    ]
    scenarios += [
        _named("page", PAGE, Fault(Kind.BLOCK_PAGE_AS_OCTETS), items=(15,)),
        _named("page", PAGE, Fault(Kind.GARBAGE)),
        _named("page", PAGE, Fault(Kind.DEEP_JSON)),
        _named("page", PAGE, Fault(Kind.CUT)),
        _named("page", PAGE, Fault(Kind.CUT_NO_LENGTH)),
        _named("page", PAGE, Fault(Kind.STATUS, status=429, retry_after="5")),
        _named("page", PAGE, ABSURD_429, settings=RETRY_CAP, items=(12,)),
    ]
    scenarios += [_named("page", PAGE, fault, settings=DEADLINES, items=(6, 13)) for fault in SLOW]
    scenarios += [
        Scenario(
            "page-scheme-links",
            PAGE,
            Fault(Kind.SCHEME_LINKS),
            rests_faulty=False,
            healthy_asked=False,
            items=(12,),
            client_gets="200 with the page, the javascript:/file: links left out (asking for them: 404)",
            cache_keeps="the page without those links",
        ),
        Scenario("page-revalidation-block-page", PAGE, Fault(Kind.BLOCK_PAGE), revalidation=True, healthy_asked=None),
    ]
    return scenarios


def _file_scenarios() -> list[Scenario]:
    def file(fault: Fault, **options: object) -> Scenario:
        return _named("file", BIG_FILE, fault, **{"clients": 20, **options})

    scenarios = [file(fault, items=(2,) if fault.kind is Kind.BLOCK_PAGE else ()) for fault in BEFORE_ANY_BYTE]
    scenarios += [
        file(Fault(Kind.BLOCK_PAGE_AS_OCTETS), items=(2,)),
        file(ABSURD_429, settings=RETRY_CAP, items=(12,)),
        file(Fault(Kind.CUT), items=(3,)),
        file(Fault(Kind.CUT_NO_LENGTH), items=(3,)),
        file(Fault(Kind.WRONG_BYTES), allowed=VERIFIED_OR_FAILED, items=(2,)),
        # Resumed (Range) from the healthy mirror, the whole fails its hash: that mirror, which sent only right
        # bytes, is asked for the whole file, never blamed.
        file(
            Fault(Kind.WRONG_CUT),
            allowed=VERIFIED_OR_FAILED,
            keeps_file=True,
            cache_keeps="the verified bytes: the healthy mirror, which resumed the cut file, is asked for it whole",
        ),
        file(Fault(Kind.LARGER_FILE), clients=40, allowed=VERIFIED_OR_FAILED, items=(1,)),
        Scenario(
            "file-larger-file-hash-only-index",
            BIG_FILE,
            Fault(Kind.LARGER_FILE),
            clients=40,
            allowed=VERIFIED_OR_FAILED,
            json_pages=False,
            items=(1,),
        ),
        file(Fault(Kind.TOO_LONG), allowed=VERIFIED_OR_FAILED, items=(2, 11)),
        Scenario(
            "file-overstated-length-hash-only-index",
            SMALL_FILE,
            Fault(Kind.OVERSTATED_LENGTH),
            clients=20,
            json_pages=False,
            items=(3,),
            client_gets="200 with the verified bytes: the healthy mirror, asked for the rest, says there is none",
        ),
        file(Fault(Kind.SMALLER_FILE), allowed=VERIFIED_OR_FAILED, items=(3,)),
        Scenario(
            "file-gzip-encoded-hash-only-index",
            BIG_FILE,
            Fault(Kind.GZIP_ENCODED),
            clients=20,
            json_pages=False,
        ),
        Scenario(
            "file-smaller-file-hash-only-index",
            BIG_FILE,
            Fault(Kind.SMALLER_FILE),
            clients=20,
            allowed=VERIFIED_OR_FAILED,
            json_pages=False,
            items=(3,),
        ),
    ]
    scenarios += [file(fault, settings=DEADLINES, items=(6, 13)) for fault in SLOW]
    scenarios.append(
        Scenario(
            "file-first-segment-2-bytes",
            SMALL_FILE,
            Fault(Kind.FIRST_SEGMENT, rate=2),
            rests_faulty=False,
            healthy_asked=False,
            items=(4,),
        )
    )
    return scenarios


# A block page or random bytes differ from an index file in their first bytes: none of them may reach a client.
_FIRST_BYTES_TELL = "200 with the right index file, from the healthy mirror (the first bytes tell: none may go out)"


def _after_bytes(fault: Fault) -> frozenset[Outcome]:
    """A drip is seen only after its first bytes went out: on a compressed transfer, followers may see it fail."""
    return VERIFIED_OR_FAILED if fault.kind is Kind.DRIP else VERIFIED


def _conda_scenarios() -> list[Scenario]:
    scenarios: list[Scenario] = []
    for resource in CONDA_INDEX_FILES:
        stem = f"conda-{resource.name.replace('_', '-')}"
        for fault in (Fault(Kind.BLOCK_PAGE), Fault(Kind.GARBAGE)):
            scenarios.append(_named(stem, resource, fault, items=(5,), client_gets=_FIRST_BYTES_TELL))
    repodata = "conda-repodata.json"
    scenarios += [_named(repodata, REPODATA, fault) for fault in BEFORE_ANY_BYTE if fault.kind is not Kind.BLOCK_PAGE]
    scenarios += [
        _named(repodata, REPODATA, Fault(Kind.BLOCK_PAGE_AS_OCTETS), items=(5,)),
        # Only seen once bytes went out, and a compressed transfer cannot be resumed: followers may see it fail.
        _named(repodata, REPODATA, Fault(Kind.WRONG_BYTES), allowed=VERIFIED_OR_FAILED, items=(5,)),
        _named(repodata, REPODATA, Fault(Kind.CUT_NO_LENGTH), allowed=VERIFIED_OR_FAILED, items=(5,)),
        _named(repodata, REPODATA, Fault(Kind.CUT_COMPRESSED), items=(3,)),
        _named("conda-repodata.json.zst", CONDA_INDEX_FILES[1], Fault(Kind.CUT), items=(3,)),
        _named(repodata, REPODATA, ABSURD_429, settings=RETRY_CAP, items=(12,)),
        Scenario(
            "conda-repodata.json-revalidation-block-page",
            REPODATA,
            Fault(Kind.BLOCK_PAGE),
            revalidation=True,
            healthy_asked=None,
            items=(5,),
        ),
    ]
    scenarios += [
        _named(repodata, REPODATA, fault, settings=DEADLINES, items=(6, 13), allowed=_after_bytes(fault))
        for fault in SLOW
    ]
    scenarios += [
        _named(
            "conda-package",
            CONDA_BIG_PACKAGE,
            Fault(Kind.WRONG_BYTES),
            clients=20,
            allowed=VERIFIED_OR_FAILED,
            items=(2,),
        ),
        _named(
            "conda-package",
            CONDA_BIG_PACKAGE,
            Fault(Kind.WRONG_CUT),
            clients=20,
            allowed=VERIFIED_OR_FAILED,
            keeps_file=True,
            cache_keeps="the verified bytes: the healthy mirror, which resumed the cut file, is asked for it whole",
        ),
        _named(
            "conda-package",
            CONDA_BIG_PACKAGE,
            Fault(Kind.LARGER_FILE),
            clients=40,
            allowed=VERIFIED_OR_FAILED,
            items=(1,),
        ),
        _named("conda-shard", CONDA_SHARD, Fault(Kind.WRONG_BYTES), allowed=VERIFIED_OR_FAILED, items=(2,)),
        _named("conda-shard", CONDA_SHARD, Fault(Kind.BLOCK_PAGE), items=(2,)),
        # python-zstandard would allocate the declared terabyte up front: refused from the header, as the mirror's.
        _named("conda-repodata-shards.msgpack.zst", CONDA_INDEX_FILES[4], Fault(Kind.ZSTD_BOMB), items=(5,)),
    ]
    return scenarios


SCENARIOS: list[Scenario] = _page_scenarios() + _file_scenarios() + _conda_scenarios()


@dataclass(frozen=True)
class ServiceScenario:
    """A fault with a test of its own: `test` names it (module::function)."""

    id: str
    fault: str
    client_gets: str
    cache_keeps: str
    test: str
    items: tuple[int, ...] = ()


SERVICE_SCENARIOS: list[ServiceScenario] = [
    ServiceScenario(
        "slots-held-by-slow-mirror",
        "the first mirror's only connection slot is held by a slow (but not too slow) download",
        "other misses wait at most slot_wait, then come from the second mirror: 200, verified",
        "the verified files",
        "test_upstream_service.py::test_misses_do_not_queue_behind_a_slow_mirrors_busy_slots",
        (6,),
    ),
    ServiceScenario(
        "abandoned-download",
        "a dripping mirror, and the only client hangs up early",
        "(nobody waits) the download is stopped",
        "nothing; tmp/ empty",
        "test_upstream_service.py::test_a_download_nobody_waits_for_is_stopped",
        (6,),
    ),
    ServiceScenario(
        "every-mirror-resting",
        "both mirrors answer 503, so both rest",
        "an error naming each mirror and when it comes back, with a short Retry-After; pip fails within seconds",
        "nothing",
        "test_upstream_service.py::test_every_mirror_resting_is_named_with_retry_after",
        (13,),
    ),
    ServiceScenario(
        "client-hangs-up",
        "clients hang up in the middle of a download, on both workers",
        "(gone) access log: 499, not 500; not counted as an error; no traceback",
        "the verified file",
        "test_clients.py::test_a_client_hanging_up_is_logged_499_and_not_counted_as_an_error",
        (14,),
    ),
    ServiceScenario(
        "slowloris",
        "connections that send their headers a byte at a time",
        "closed after header_timeout; normal clients keep being served",
        "-",
        "test_clients.py::test_connections_sending_headers_slowly_are_closed",
        (8,),
    ),
    ServiceScenario(
        "idle-keep-alive",
        "a client keeps an idle connection open",
        "closed after keepalive_timeout",
        "-",
        "test_clients.py::test_idle_keep_alive_connections_are_closed",
        (8,),
    ),
    ServiceScenario(
        "range-minus-zero",
        "`Range: bytes=-0` on a cached file",
        "416",
        "the file",
        "test_clients.py::test_an_empty_suffix_range_is_416",
        (12,),
    ),
    ServiceScenario(
        "crlf-in-path",
        "a request path with an encoded CR/LF and a fake log line",
        "an error; the access log gets one line for it, no forged line",
        "-",
        "test_clients.py::test_a_crlf_in_the_path_cannot_forge_an_access_log_line",
        (12,),
    ),
    ServiceScenario(
        "replica-burst-of-misses",
        "1,000 distinct missing projects at once, through two workers",
        "404 for each, no 503",
        "remembered misses only",
        "test_workers_faults.py::test_a_burst_of_misses_through_a_replica_never_gets_503",
        (7,),
    ),
    ServiceScenario(
        "replica-renders-host",
        "the page at / asked through a replica",
        "the page shows the client's Host, never the primary's private name",
        "-",
        "test_workers_faults.py::test_the_page_through_a_replica_shows_the_clients_host",
        (16,),
    ),
    ServiceScenario(
        "replica-after-cut",
        "the primary cuts a download that failed its check; clients keep asking through the replica",
        "no 503 from a reused dead connection to the primary",
        "nothing of the bad file",
        "test_workers_faults.py::test_a_replica_does_not_reuse_a_connection_the_primary_closed",
        (11,),
    ),
    ServiceScenario(
        "sharded-upstream-down-after-ttl",
        "the only conda mirror, one with real shards (or a parent pkgcache), stops answering; its clients had "
        "fetched shards only (no repodata.json cached); index_ttl has passed",
        "200 for the shard index in both views of the gate: the stale index passed through, then the offline "
        "view's, made from the cached shards; rattler solves and installs what the cache holds",
        "what it had (the mirror's shards are kept beside those made here)",
        "../test_gate_offline.py::test_a_sharded_channel_solves_from_cache_once_its_upstream_is_down_past_the_ttl",
    ),
    ServiceScenario(
        "repodata-other-form-while-down",
        "every mirror stops answering; repodata.json is asked for with only its .zst cached (or the reverse), "
        "before the gate shows the offline view",
        "200 stale, made from the cached form (the shard index: made here from it), not a 502/503",
        "the made form, replaced by the mirror's own once one answers",
        "../test_gate_offline.py::test_a_missing_form_of_repodata_is_made_from_the_cached_one_when_no_upstream_answers",
    ),
    ServiceScenario(
        "every-mirror-down-past-its-rest",
        "the only mirror goes silent (connections accepted, nothing answered) and stays so while its rest ends "
        "again and again",
        "the offline view throughout, across every cool-down's end: what the cache holds (pip and uv install it), "
        "a clear 503 at once for the rest; never a wait on the dead mirror. The mirror sees one small probe per "
        "cool-down (pypi: the pip page's first byte; conda: the first channel's noarch repodata's), no client's",
        "what it had",
        "../test_gate_offline.py::test_the_offline_view_lasts_across_cool_downs_while_the_mirror_stays_down_and_only_"
        "probes_reach_it",
    ),
    ServiceScenario(
        "mirror-back-after-offline-view",
        "the mirror of a side in the offline view comes back (or answers its probe 503 with Retry-After)",
        "the whole index again once a probe is answered (a probe answered with Retry-After rests the mirror as "
        "long as asked)",
        "what it had; what clients fetch from then on",
        "../test_gate_offline.py::test_the_offline_view_ends_when_a_probe_finds_the_mirror_back",
    ),
    ServiceScenario(
        "conda-repodata-of-another-subdir",
        "the first mirror answers `<subdir>/repodata.json` (and `.zst`) with another subdir's repodata: sound JSON "
        "whose `info.subdir` is `noarch`",
        "200 with the healthy mirror's, never streamed the wrong one; rattler installs. The first mirror rests",
        "the healthy mirror's repodata",
        "../test_conda_mirror_versions.py::test_another_subdirs_repodata_is_the_mirrors_bad_answer",
    ),
    ServiceScenario(
        "lagging-mirror-older-index",
        "the mirror that gave the cached repodata (or PyPI page) fails at its revalidation; the second mirror lags "
        "behind it (an older Last-Modified; a lower serial for a page), whether it honours If-Modified-Since or not",
        "200 with the cached, newer version: no package disappears",
        "the newer copy, counted fresh for the TTL, the first mirror's validators kept; the second mirror's copy "
        "once it is newer",
        "../test_conda_mirror_versions.py::test_a_lagging_mirror_does_not_take_the_cache_back_to_older_repodata",
    ),
    ServiceScenario(
        "pypi-down-plus-404",
        "a project only the first mirror has (the second lags, or leaves it out: 404); its page and wheel are cached; "
        "the first mirror fails (503) and index_ttl passes",
        "200 with the cached page, stale (saying why); pip and uv install from it. 404 only once every mirror that "
        "could have it says 404",
        "the page and the wheel; the page dropped once every mirror says 404",
        "../test_pypi_failover.py::test_a_cached_project_is_served_stale_when_one_mirror_is_down_and_another_says_404",
    ),
    ServiceScenario(
        "pypi-wrong-hash-on-page",
        "the first mirror's page lists a file with a wrong sha256 (or size); both mirrors serve the right bytes",
        "the first client, which read the wrong page: its transfer cut (or an error), never whole unchecked bytes; "
        "then the page lists the file as the second mirror's page does, and pip and uv install",
        "the file, checked against the second mirror's entry; the first mirror's page with that file's entry "
        "(hashes, size, core metadata) taken from the second's",
        "../test_pypi_failover.py::test_a_hash_every_mirrors_bytes_fail_is_checked_against_the_other_mirrors_pages",
    ),
    ServiceScenario(
        "pypi-wrong-hash-endless-other-page",
        "the first mirror's page lists a file with a wrong sha256; both mirrors serve the right bytes; the second "
        "mirror's page, asked by the check, never ends (valid link lines at 20 KB/s, above min_rate)",
        "the first client: its transfer cut (or an error), never whole unchecked bytes; the check gives up on the "
        "second mirror's page after page_timeout, although it is the only page asked",
        "nothing of the file; the first mirror's page as it is; the second mirror rests",
        "../test_pypi_failover.py::test_the_other_mirrors_page_asked_to_check_a_hash_is_bounded_by_page_timeout",
    ),
    ServiceScenario(
        "pypi-mirrors-disagree-on-hash",
        "the mirrors list one file name as different bytes; it was cached from the second (the first was down) and a "
        "lock file holds its hash; the first comes back and gives the page",
        "the page lists the cached bytes' hash while the second mirror's page does; pip and uv install with "
        "--require-hashes",
        "the verified file, unchanged; the first mirror's page with that file's entry from the second's",
        "../test_pypi_failover.py::test_a_verified_cached_file_stays_while_a_mirrors_page_lists_it",
    ),
    ServiceScenario(
        "pypi-lagging-page-without-serial",
        "the mirror that gave the cached page (with a serial) fails; the second lags (fewer versions) and its page has "
        "no serial, and no Last-Modified on one side",
        "200 with the cached page: no version disappears; uv installs the newer version",
        "the cached page (a page from another mirror that only takes files away is a lagging copy)",
        "../test_pypi_failover.py::test_a_lagging_page_without_a_serial_does_not_take_versions_away",
    ),
    ServiceScenario(
        "pypi-endless-page",
        "the first mirror's project page never ends: valid link lines at 20 KB/s, above min_rate",
        "200 with the second mirror's page after page_timeout (pip asks again after 15 s of silence, uv waits 30 s); "
        "pip and uv install",
        "the second mirror's page; the first mirror rests",
        "../test_pypi_failover.py::test_a_page_that_never_ends_is_left_for_the_next_mirror_after_page_timeout",
    ),
    ServiceScenario(
        "page-of-another-project",
        "the first mirror answers a project's page with another project's sound JSON page (its `name` another's: a "
        "CDN's cache-key mix-up)",
        "200 with the healthy mirror's page; pip and uv install from it. The first mirror rests",
        "the healthy mirror's page, never the other project's",
        "../test_pypi_clients.py::test_a_page_of_another_project_gives_way_to_the_next_mirrors_page",
    ),
    ServiceScenario(
        "page-lists-a-file-twice",
        "the first mirror's page lists one file name twice, differently (other hashes; other URLs without a hash): "
        "pip would take the last entry, uv the first",
        "200 with the healthy mirror's page and file: pip and uv install the same file. No mirror with a page "
        "free of the contradiction: that page with the file listed once without a hash (logged), fetched from the "
        "first entry's link; bytes that are one entry (its hash and size) are served and the page lists that entry, "
        "and pip and uv install the same file; bytes that are neither: never served whole, then a 502 saying why for "
        "a minute. Entries with no hash to tell them apart: the file left off the page (logged)",
        "the healthy mirror's page and file; else the file its bytes decided, the page listing it as that entry",
        "../test_pypi_clients.py::test_a_page_listing_a_file_twice_differently_gives_way_to_the_next_mirrors_page",
    ),
    ServiceScenario(
        "single-page-lists-a-file-twice",
        "the only mirror's page lists one file name twice with other hashes and links (pip straight from it takes "
        "the last entry, uv the first)",
        "the file listed once without a hash until fetched, then as the entry its bytes are: pip and uv install "
        "that same file, the other client with --require-hashes",
        "the file, checked to be one of the entries; the page listing it as that entry",
        "../test_pypi_clients.py::test_a_file_listed_twice_differently_on_every_mirror_is_the_entry_its_bytes_are",
    ),
    ServiceScenario(
        "page-link-texts-cut",
        "the mirror's link texts are not the files' names: an nginx autoindex cuts them past 50 characters "
        "(`..>`), or a text names another file",
        "200 with every file named by its URL, as pip and uv name it: they install the long-named wheel",
        "the files as their URLs name them",
        "../test_pypi_clients.py::test_files_are_named_by_their_urls_as_clients_name_them_not_by_cut_link_texts",
    ),
    ServiceScenario(
        "page-loses-upload-times",
        "with min_release_age: a page first came from a mirror giving upload times (JSON), and is revalidated "
        "from one that gives none (HTML)",
        "the files as old as before: pip and uv install them, the cached wheel is served (not held back as if "
        "released at the revalidation)",
        "the upload times once given (first-seen.json), kept for pages without them",
        "../test_gate_pypi.py::test_upload_times_once_given_still_count_when_the_page_comes_from_a_mirror_without_them",
    ),
    ServiceScenario(
        "upstream-shards-deleted",
        "an upstream with its own shards re-indexes and deletes the shards its old index named; index_ttl has passed",
        "the new shard index (revalidated before it is answered; stale only when no upstream answers) and its "
        "shards: rattler solves and installs the new version",
        "the new index and shards",
        "../test_conda_mirror_versions.py::test_a_shard_index_past_its_ttl_never_names_shards_the_upstream_deleted",
    ),
    ServiceScenario(
        "disk-full",
        "the data directory's disk is full (4 MB tmpfs, filled)",
        "507 with a clear message, before any body, for files and repodata (a page: 507 or the right page, not "
        "kept); cached content still served; served again once space is freed",
        "nothing new; what it had",
        "test_disk_full.py::test_a_full_disk_answers_507_and_recovers",
        (10,),
    ),
    ServiceScenario(
        "disk-full-metadata",
        "the disk is full when a wheel's .metadata is asked for and not kept yet (made from the cached wheel, read "
        "by ranges, or the upstream's own)",
        "200 with the metadata, from memory (not a 507); pip installs the cached wheel; kept on a later request once "
        "space is freed",
        "nothing new: neither the .metadata nor its record; nothing left in tmp/",
        "test_disk_full.py::test_metadata_made_while_the_disk_is_full_is_served_and_not_kept",
        (10,),
    ),
    ServiceScenario(
        "disk-full-made-here",
        "the disk is full when pkgcache makes an index file (repodata.json.zst, the shard index)",
        "507 with a clear message, not a 500 (a client's retries too)",
        "nothing new; nothing left in tmp/, no shard pack (each failed build removes its own; one a killed builder "
        "left goes when the primary starts)",
        "test_disk_full.py::test_a_full_disk_while_making_index_files_here_answers_507",
        (10,),
    ),
    ServiceScenario(
        "disk-full-no-size",
        "a file bigger than the free space, from HTML-only mirrors (no size in the index); one mirror declares 1 TiB",
        "507 before any header (its space is taken by the answer's Content-Length first); a file that fits is "
        "served whole, from the next mirror when one declares more than the disk holds",
        "nothing of the file that does not fit; the one that fits, at its own size",
        "test_disk_full.py::test_a_file_the_index_gives_no_size_of_takes_its_space_by_the_answers_length",
        (10,),
    ),
    ServiceScenario(
        "evicted-before-open",
        "a cached package file (a wheel, a .conda) is evicted between its lookup and its open",
        '200 with the verified bytes, fetched again as a miss (before: 404 "it was removed meanwhile")',
        "the file again",
        "test_eviction_faults.py::test_a_pypi_hit_evicted_before_its_open_is_fetched_again_not_404",
    ),
    ServiceScenario(
        "evicted-after-commit",
        "a download's file is evicted right after its rename into place, before a client following it opened it",
        "200 with the verified bytes, fetched again as a miss (before: 200 cut short); a client already following "
        "it holds the file in use, so eviction leaves it",
        "the file again",
        "test_eviction_faults.py::test_a_follower_arriving_after_the_rename_of_a_file_evicted_at_once_gets_it_whole",
    ),
    ServiceScenario(
        "offline-over-limit",
        "an offline instance holds more than [cache] max_size (an imported bundle)",
        "what it holds: nothing is evicted for size (the log says once that max_size is not enforced)",
        "every file; `pkgcache gc` by hand still evicts, with a warning",
        "test_eviction_faults.py::test_an_offline_instance_keeps_a_cache_over_its_limit",
    ),
    ServiceScenario(
        "unwritable-folder",
        "one folder of the data directory cannot be written (a file in its place) while tmp/ can",
        "500 with a short reason before any body, not a 200 cut at its last byte; served again once it is fixed",
        "nothing; the log names the folder and the errno",
        "test_disk_full.py::test_a_folder_that_cannot_be_written_answers_a_clear_error",
        (),
    ),
    ServiceScenario(
        "replaced-upstream",
        "a mirror replaces a cached package under the same name (its page or repodata lists another sha256/size)",
        "once pkgcache's index lists the new file: the new bytes (a miss, then hits); pip, uv and rattler install "
        "it. Every upstream down: an error, never the old bytes as the new record's; a rattler that says "
        "(x-expected-sha256) it was served the old record gets the old file",
        "the new file, replacing the old by a rename, its checked sha256 recorded on it (user.pkgcache.digest)",
        "../test_replaced_files.py::test_a_conda_package_replaced_upstream_is_fetched_again",
        (),
    ),
    ServiceScenario(
        "replaced-upstream-metadata",
        "a mirror replaces a cached wheel under the same name with one declaring other dependencies; the page is "
        "revalidated and a client asks for its core metadata (.metadata) before the wheel",
        "the new wheel's metadata, made from the upstream's current file (its own .metadata, ranges, or the new "
        "wheel fetched whole), never from the old wheel still cached; pip and uv install the new dependency "
        "(before: pip failed, inconsistent Requires-Dist; uv left the dependency out)",
        "the new metadata, recorded for the new sha256 (a record made for another sha256 is made again); `pkgcache "
        "verify` removes a .metadata that is not the METADATA of the cached wheel it is recorded for",
        "../test_replaced_files.py::test_a_wheel_replaced_upstream_gets_its_own_core_metadata",
        (),
    ),
    ServiceScenario(
        "removed-upstream",
        "a channel takes a package out of its repodata (named under `removed`, as conda-forge marks one broken, or "
        "dropped) while the file stays on its server; a client installs it from a lock file",
        "with the lock's sha256 (x-expected-sha256: rattler, pixi --locked): the file, fetched and checked against "
        "that sha256 (failover past a mirror with other bytes; none right: 502 saying so, before any byte); without "
        "it: 404 saying the channel does not list it (removed from the channel); refused by the policy as a listed "
        "one (judged by its file name, its age unknown)",
        "the file, its checked sha256 recorded on it; later requests, with the header or not, are hits; nothing "
        "when no mirror has the sha256",
        "../test_conda_removed_packages.py::test_rattler_installs_a_locked_package_the_channel_removed_since",
        (),
    ),
    ServiceScenario(
        "file-cut-no-hash-on-page",
        "a mirror's HTML page gives no usable hash for a file (no fragment, or `#sha256=` with nothing after it), "
        "and that mirror sends the file cut short without a Content-Length (chunked: it looks whole)",
        "the whole file from the next mirror: a wheel or zip sdist must end in its end-of-central-directory record "
        "with its central directory where it says, a .tar.gz's gzip stream must reach its end, a body shorter than "
        "its Content-Length is resumed elsewhere; a client that followed the cut bytes is cut (pip and uv retry "
        "and install)",
        "the whole file (the cut one never; the mirror that cut it rests once another gave it)",
        "../test_mirror_file_quirks.py::test_a_cut_wheel_from_a_page_without_a_usable_hash_is_refused_and_fetched_from"
        "_the_next_mirror",
        (),
    ),
    ServiceScenario(
        "sdist-labelled-x-gzip",
        "every mirror labels a .tar.gz sdist `Content-Encoding: x-gzip` (or gzip: Apache's stock "
        "`AddEncoding x-gzip .gz`)",
        "200 with the file's bytes as sent, checked by its hash (or its gzip stream's end); pip and uv install it as "
        "from the mirror itself. A wheel labelled gzip is still refused from its headers (the next mirror is asked)",
        "the sdist as the mirror sent it",
        "../test_mirror_file_quirks.py::test_an_sdist_both_mirrors_label_x_gzip_installs_as_from_the_mirror_itself",
        (),
    ),
    ServiceScenario(
        "wrong-metadata-hash",
        "a mirror's page advertises a wrong PEP 658 hash (data-core-metadata / data-dist-info-metadata sha256) for a "
        "wheel's `.metadata`, which does not match it",
        "a page advertising `true` until pkgcache has made the metadata, then the sha256 of the bytes it serves "
        "(never the mirror's): pip and uv install on the first run",
        "the metadata read from the wheel (by ranges, or from the cached wheel), its own sha256 recorded",
        "../test_mirror_file_quirks.py::test_a_mirrors_wrong_metadata_hash_is_never_advertised",
        (),
    ),
    ServiceScenario(
        "metadata-over-8-mib",
        "a wheel's METADATA is over the 8 MiB pkgcache reads into memory (a long description); the mirror serves "
        "no metadata (or its own `.metadata`, as large), and the page says `true` on a fresh pkgcache",
        "200 with the whole METADATA at the first request, streamed from the wheel fetched whole (never a 404: pip "
        "and uv fail an install on one); pip and uv install on the first run. An index serving its own large "
        "`.metadata` is not rested for it",
        "the wheel and its metadata, recorded (the pages then advertise its sha256)",
        "../test_core_metadata.py::test_pip_and_uv_install_a_wheel_with_metadata_over_8_mib_through_a_new_pkgcache_at_"
        "the_first_attempt",
    ),
    ServiceScenario(
        "ranges-refused-slow-mirror",
        "the first mirror answers a wheel's Range requests with the whole wheel (200), slowly but above min_rate; "
        "the next mirror answers ranges",
        "its `.metadata` within a second or so, read by ranges from the next mirror (it waited for the whole wheel "
        "from the slow one: pip got no byte and failed after 98 s). The wheel itself: as in "
        "`slow-file-cold-start`",
        "the metadata; the wheel once it is whole",
        "../test_mirror_file_quirks.py::test_a_metadata_read_asks_the_next_mirror_for_ranges_when_a_slow_one_refuses_"
        "them",
        (),
    ),
    ServiceScenario(
        "slow-file-cold-start",
        "the first mirror sends a file slowly but above min_rate (a 1.5 MB wheel at 12 KB/s), on a cold start: no "
        "rate is known yet for the next mirror, which has the file, so relative_min_rate has nothing to compare with",
        "200 with the checked file: after compare_after (3 s) the next mirror is timed on one range of the file's "
        "first bytes (up to 1 MiB, once per upstream transfer); far faster (relative_min_rate), it resumes the "
        "transfer where it stopped (Range) and the first mirror rests. pip and uv install within seconds (they "
        "waited 2 minutes for the slow mirror). No take-over when the next mirror is no faster, refuses ranges, or has "
        "other bytes",
        "the file, checked whole against the page's hash (the first mirror's bytes and the next one's together)",
        "../test_mirror_file_quirks.py::test_a_wheel_dripping_from_the_first_mirror_on_a_cold_start_goes_on_from_"
        "the_next_one",
        (),
    ),
    ServiceScenario(
        "slow-file-burst-then-throttle",
        "the first mirror drips a file; the next one sends each answer's first MiB at once, then crawls (nginx's "
        "limit_rate_after): it wins the comparison on the file's first MiB and takes the transfer over",
        "200 with the checked file: the transfer from the mirror that took over is compared again once it is slow "
        "(one comparison per upstream transfer), and a third mirror that is faster resumes it. With two mirrors the "
        "crawl is waited for (the first one rests)",
        "the file, checked whole against the page's hash (three mirrors' bytes together)",
        "../test_mirror_file_quirks.py::test_a_mirror_that_took_a_slow_transfer_over_and_throttles_after_its_first_"
        "mib_is_compared_again",
        (),
    ),
    ServiceScenario(
        "slow-file-through-a-parent-not-yet-known",
        "a child over [its own mirror, a parent pkgcache]: its mirror drips a file, and the comparison's range is "
        "the child's first answer from the parent, which says it is a pkgcache",
        "200 with the checked file: the parent resumes the transfer at its own files/ path (it got the page's link, "
        "a 404, and pip failed the install)",
        "the file, checked whole against the page's hash, in the child and in the parent",
        "../test_mirror_file_quirks.py::test_a_wheel_dripping_from_the_own_mirror_goes_on_from_a_parent_pkgcache_"
        "not_yet_known_as_one",
        (),
    ),
    ServiceScenario(
        "tier-parent-offline-view",
        "a child's parent pkgcache shows its offline view (its mirrors down): its pages and conda index files come "
        "marked `X-Pkgcache-Cache: offline` (a stale page with `X-Pkgcache-Stale-Reason`), listing only what it holds",
        "the index from the child's next upstream (uv installs what the parent's view left out); with none, the "
        "parent's view, labelled stale, max-age=0; once the parent is back, the whole index on the next request "
        "(revalidated before it is answered); rattler solves what the parent's view left out",
        "the next upstream's index; else the parent's view as already expired and provisional, never as fresh",
        "../test_tier_faults.py::test_the_parents_offline_view_is_served_for_want_of_better_but_not_kept_once_the_"
        "parent_is_back",
    ),
    ServiceScenario(
        "tier-parent-upstreams-failed",
        "the parent pkgcache's own mirrors fail for something it does not hold: it answers 502/503 marked "
        "`X-Pkgcache-Upstream-Failed: 1`",
        "that request fails over to the child's next upstream (or 502, marked the same, with the parent's reason); "
        "the parent is not rested: pip and uv install what it holds, and its policy's 403s still stand (no way "
        "around them through the child's own mirror)",
        "what the parent or the next upstream gave",
        "../test_tier_faults.py::test_a_5xx_of_the_parent_does_not_take_the_child_past_the_parents_policy_to_its_"
        "own_mirror",
    ),
    ServiceScenario(
        "tier-parent-cuts-what-its-mirror-cut-or-spoiled",
        "the parent pkgcache's mirror cuts a file, or sends it wrong (same size, bad hash), while the parent streams "
        "it to a child (a miss: it can only cut its answer); the child lists a mirror of its own second",
        "the parent is not rested (counted: `failures`, `last_error`): pip and uv install what it holds at once, and "
        "its policy's 403s still stand; the file from the child's own mirror (found on its page, for PyPI): a cut "
        "one resumed where the parent stopped (pip installs), a wrong one fetched in full, its first client cut "
        "(the parent's wrong bytes had reached it)",
        "the verified file, the own mirror never blamed for the parent's bytes",
        "../test_tier_faults.py::test_a_parent_cutting_a_wheel_its_mirror_spoiled_or_cut_is_not_rested_and_its_"
        "policy_holds",
    ),
    ServiceScenario(
        "tier-parent-cuts-conda-package",
        "the same on the conda side: the parent's mirror cuts bigpkg or sends it wrong while the parent streams it "
        "to a child that lists its own mirror second",
        "rattler installs (a cut package resumed from the own mirror; a wrong one fetched there in full, the "
        "first transfer cut); the parent is not rested",
        "the verified package, the own mirror never blamed",
        "../test_tier_faults.py::test_conda_a_parent_cutting_a_package_its_mirror_spoiled_or_cut_is_not_rested_and_"
        "no_mirror_is_blamed",
    ),
    ServiceScenario(
        "tier-parent-channel-not-served",
        "a child lists a conda channel its parent pkgcache is not configured for (the parent answers 404 marked "
        "`X-Pkgcache-Not-Served: <channel>`)",
        "404 with the parent's reason (`channel ... is not served here; served: ...`), marked the same for a tier "
        "below, also while the 404 is remembered; the parent is not rested, and the child's `/-/status`, page and "
        "`pkgcache status` name the channel it does not serve (it said only `not found on any upstream`, its status "
        "showed nothing wrong)",
        "the 404, with the reason, for the conda index_ttl",
        "../test_tier_faults.py::test_a_channel_the_parent_does_not_serve_is_said_so_to_clients_and_in_the_childs_"
        "status",
    ),
    ServiceScenario(
        "tier-mutual-backup-loop",
        "two offices list the central first and each other second; the central is down (or its mirror), and a "
        "client asks one office for a page neither holds",
        "a 502/503 at once (it took 10 s: the request went A -> B -> A and waited on A's own download), naming the "
        "pkgcache already on the request's way: each request carries the loop marks of the pkgcaches it came through "
        "in its User-Agent, and a pkgcache on that chain answers 508 marked `X-Pkgcache-Loop` and "
        "`X-Pkgcache-Upstream-Failed`; neither office rests the other, and what one holds the other still gets",
        "nothing new",
        "../test_tier_faults.py::test_two_offices_listing_each_other_as_backup_answer_a_miss_neither_holds_at_once_"
        "and_rest_neither",
    ),
    ServiceScenario(
        "tier-locked-unlisted-conda-package",
        "a lock-file install, through a child, of a conda package its channel no longer lists; the parent is cold "
        "(parent first, or the child's own mirror first and lacking the file)",
        "200 with the checked bytes: the client's X-Expected-Sha256 is passed to the parent (an upstream known to "
        "be a pkgcache), never to a mirror",
        "the file, at both tiers",
        "../test_tier_faults.py::test_a_locked_install_of_a_package_its_channel_dropped_works_through_a_cold_parent",
    ),
    ServiceScenario(
        "tier-locked-package-dropped-since-child-cached",
        "a lock-file install, through a child, of a conda package its channel dropped after the child cached its "
        "shards (which still list it; its repodata too, or no longer); the parent's index no longer lists it",
        "200 with the checked bytes (rattler installs): the client's X-Expected-Sha256 goes to the parent with every "
        "package request that carries one, unless the child's record gives another sha256 (then its record, looked "
        "up again, decides); a shard index past its ttl is revalidated before a package's record is taken from it",
        "the file, at both tiers",
        "../test_tier_faults.py::"
        "test_a_locked_install_of_a_package_dropped_since_the_child_cached_its_shards_works_through_the_tier",
    ),
    ServiceScenario(
        "tier-parent-policy-changed",
        "the parent pkgcache blocks (or denies) a release its child holds in its cache; the child's copy of the "
        "page or index past its index_ttl, or revalidated since (the release left off, or its page shown whole "
        "with `X-Pkgcache-Files-Refused: policy`)",
        "403 with the parent's reason, for the file by URL (a lock file) as for a resolver's install (pip, uv, a "
        "locked rattler install): the child asks the parent with a HEAD of that file, once per index_ttl",
        "the file, kept (not purged); the verdict, for the index_ttl",
        "../test_tier_blocks.py::test_a_central_block_reaches_the_files_an_office_holds",
    ),
    ServiceScenario(
        "tier-parent-down-policy-unknown",
        "a child holds a file its copy of the parent's page no longer lists, and the parent cannot be asked about it "
        "(down, resting)",
        "200 with the cached file: no verdict, so the parent's rules as the child last saw them (as a stale page)",
        "the file; nothing remembered, the parent asked again once it answers",
        "../test_tier_blocks.py::test_a_parent_that_cannot_be_asked_leaves_the_office_serving_what_it_holds",
    ),
    ServiceScenario(
        "tier-mirror-first-file-fails",
        "a child lists a mirror first and its parent pkgcache second; the mirror lacks a wheel its page lists "
        "(sync lag, 404) or sends wrong bytes",
        "200: the file from the parent, at its own path for it (`/pypi/files/<project>/<file>`); uv installs",
        "the verified file",
        "../test_tier_faults.py::test_with_a_mirror_first_a_file_it_lacks_or_spoils_comes_from_the_parent_second",
    ),
    ServiceScenario(
        "proxy-refuses-or-down",
        "the `[upstream] proxy` answers 407 (it wants credentials), or cannot be reached",
        "502 naming the proxy (without its credentials) and, for a 407, the credentials of `[upstream] proxy`; "
        "`/-/status` says the same for each mirror; the mirrors rest (each request would fail the same way) and "
        "the side serves its offline view until a probe gets through",
        "nothing new; what it had",
        "../test_upstream_proxy.py::test_a_proxy_asking_for_credentials_is_named_as_the_fault_not_the_mirror",
    ),
    ServiceScenario(
        "tier-parent-with-users",
        "the parent pkgcache has `[access] users` (every read needs basic auth); the child's upstream gives its user "
        "and password (`user`/`password`, or `user:password@` in its URL)",
        "200: pip, uv and rattler install through the child (files, `.metadata`, shards, packages: the credentials "
        "go with every request to the parent's origin, to no other host); the password is in no status, stats, "
        "metrics, page, log, CLI output or error body (the upstream is named by host:port, shown as `user:***@`)",
        "what the parent gave",
        "../test_upstream_credentials.py::test_pip_uv_and_rattler_install_through_an_office_over_a_central_with_users",
    ),
]


# ---- the table of docs/reliability.md ----------------------------------------------------------------------------

BEGIN = "<!-- scenarios:begin (generated from tests/faults/scenarios.py) -->"
END = "<!-- scenarios:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _items(items: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in items) or "-"


def render_table() -> str:
    """The tables of docs/reliability.md, from SCENARIOS and SERVICE_SCENARIOS."""
    lines = [
        "### The first of two mirrors misbehaves",
        "",
        "| scenario | asked for | the first mirror | each client gets | the cache keeps | that mirror | issue 9 |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SCENARIOS:
        cells = [
            f"`{s.id}`",
            s.resource.label() + ("" if s.json_pages else " (HTML index: hash, no size)"),
            s.fault.describe() + (" on revalidation" if s.revalidation else ""),
            s.client_text(),
            s.cache_text(),
            s.mirror_text(),
            _items(s.items),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        "### The service under stress",
        "",
        "| scenario | fault | clients get | the cache keeps | test | issue 9 |",
        "|---|---|---|---|---|---|",
    ]
    for t in SERVICE_SCENARIOS:
        cells = [f"`{t.id}`", t.fault, t.client_gets, t.cache_keeps, f"`{t.test}`", _items(t.items)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def table_in(doc: str) -> str:
    """The generated part of a document (between the markers), or "" when the markers are missing."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        return ""
    return doc[start + len(BEGIN) : end].strip("\n") + "\n"


def with_table(doc: str) -> str:
    """`doc` with its generated part replaced by the current table."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise ValueError("the document lacks the scenario table markers")
    return doc[: start + len(BEGIN)] + "\n" + render_table() + doc[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print, or write into a document, the fault suite's table.")
    parser.add_argument("--write", type=Path, help="rewrite the table between the markers of this file")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(render_table())
        return 0
    args.write.write_text(with_table(args.write.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
