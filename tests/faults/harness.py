"""Running a fault scenario: two fake upstreams (the faulty one first), pkgcache, concurrent raw clients, and what
every scenario checks afterwards (the bytes each client got, which upstreams were asked and rested, what the cache
kept, that the service still answers).

pkgcache is started only through tests/cache_service.py. Settings the model does not know yet (issue 9's new
timeouts) make a scenario fail with the model's own message; with `PKGCACHE_FAULTS_LENIENT=1` in the environment
they are dropped instead, to see what today's code does with the fault alone (never the default: a scenario whose
settings are ignored proves less than it says).
"""

from __future__ import annotations

import asyncio
import bz2
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import zstandard

from pkgcache.config import ConfigError, Settings
from tests.cache_service import CacheProcess, RunningCache, cache_settings, start_cache
from tests.fakes.dists import Dist, build_wheel, sample_dists
from tests.fakes.faulty import (
    POISON,
    FaultyCondaMirror,
    FaultyPypiUpstream,
    Kind,
    closed_port_url,
    refused_conda_config,
)
from tests.faults.scenarios import FIRST_SHARD, MACHINE_SUBDIR, Outcome, Resource, Scenario, Side
from tests.support import BackgroundLoop

# pip's own default timeout: a client that has waited this long has given up.
CLIENT_TIMEOUT = 15.0
# How long a check waits for something that should happen soon (a download settling, a connection closing).
SETTLE_SECONDS = 10.0
JSON_ACCEPT = {"Accept": "application/vnd.pypi.simple.v1+json"}
CONDA_CHANNELS = ["pkgs/main", "cloud/conda-forge"]
SHARD_INDEX = "repodata_shards.msgpack.zst"
LENIENT = os.environ.get("PKGCACHE_FAULTS_LENIENT") == "1"
# Settings issue 9 adds; today's model refuses them.
NEW_SETTINGS = {
    "upstream": {"first_byte_timeout", "min_rate", "rate_window", "slot_wait", "max_retry_after"},
    "server": {"header_timeout", "keepalive_timeout"},
}


# ---- settings ---------------------------------------------------------------------------------------------------


def settings_for(data_dir: Path, pypi_upstreams: list[Any], **sections: dict[str, Any]) -> Settings:
    """cache_settings(), failing the test clearly when the model refuses a setting the scenario needs."""
    try:
        return cache_settings(data_dir, pypi_upstreams, **sections)
    except ConfigError as exc:
        refusal = str(exc)
    if not LENIENT:
        pytest.fail(f"pkgcache refuses the settings this scenario needs: {refusal}", pytrace=False)
    return cache_settings(data_dir, pypi_upstreams, **without_new_settings(sections))


def without_new_settings(sections: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {key: value for key, value in values.items() if key not in NEW_SETTINGS.get(name, set())}
        for name, values in sections.items()
    }


def config_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A pkgcache.toml for a real process (CacheProcess), with the same lenient rule as settings_for."""
    if LENIENT:
        sections = without_new_settings(sections)  # type: ignore[arg-type]
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A value in TOML's inline syntax (strings, numbers, booleans, lists, tables): all a test config needs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    return "[" + ", ".join(toml_value(item) for item in value) + "]"


def start_process(
    data_dir: Path, sections: Mapping[str, Mapping[str, Any]], *args: str, port: int | None = None
) -> CacheProcess:
    """`pkgcache serve` as a real process with these config sections (a TOML file beside the data directory)."""
    config = data_dir.parent / f"pkgcache-{data_dir.name}.toml"
    config.write_text(config_toml(sections))
    try:
        return CacheProcess(data_dir, "--config", str(config), *args, port=port)
    except RuntimeError as exc:
        pytest.fail(f"pkgcache did not start with the settings this test needs: {exc}", pytrace=False)


# ---- clients ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What one client got: status and headers (None when no answer), the body bytes, whether it was whole."""

    status: int | None
    headers: Mapping[str, str]
    body: bytes
    complete: bool  # every byte the Content-Length announced (or a body that ended properly, without one)
    error: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def summary(self) -> str:
        length = self.headers.get("content-length", "-")
        head = f"{self.status} Content-Length={length} got={len(self.body)} sha256={self.sha256[:12]}"
        error = f" error={self.error[:90]}" if self.error else ""
        return f"{head}{error} body={self.body[:48]!r}"


async def fetch_all(
    url: str, count: int, headers: Mapping[str, str] | None = None, timeout: float = CLIENT_TIMEOUT
) -> list[Received]:
    """`count` clients asking for `url` at once, each on its own connection, each with its own timeout."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        return await asyncio.gather(*(_one_client(session, url, headers, timeout) for _ in range(count)))


async def _one_client(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None, timeout: float
) -> Received:
    status: int | None = None
    answer_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                status = response.status
                answer_headers = {name.lower(): value for name, value in response.headers.items()}
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientPayloadError as exc:
        error = f"cut: {exc}"
    except (aiohttp.ClientError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    body = b"".join(chunks)
    length = answer_headers.get("content-length")
    complete = status is not None and error is None and (length is None or int(length) == len(body))
    return Received(status, answer_headers, body, complete, error)


def fetch(url: str, headers: Mapping[str, str] | None = None, timeout: float = CLIENT_TIMEOUT) -> Received:
    return asyncio.run(fetch_all(url, 1, headers, timeout))[0]


def outcome_of(received: Received, verify: Callable[[bytes], bool]) -> Outcome:
    if received.status is None:
        return Outcome.TIMEOUT if received.error == "timeout" else Outcome.NO_ANSWER
    if received.status != 200:
        return Outcome.ERROR
    if not received.complete:
        return Outcome.TIMEOUT if received.error == "timeout" else Outcome.CUT
    return Outcome.OK if verify(received.body) else Outcome.WRONG


def tally(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n}x {name}" for name, n in sorted(counts.items()))


# ---- what is true -------------------------------------------------------------------------------------------------


def fault_dists() -> list[Dist]:
    """The sample tree, plus two bulky wheels for the tests that need several slow files."""
    return sample_dists() + [build_wheel("bulky", version, payload_size=512 * 1024) for version in ("1.0", "1.1")]


def expected_page(dists: list[Dist], project: str) -> dict[str, str]:
    return {d.filename: d.sha256 for d in dists if d.normalized == project}


def page_checks_out(body: bytes, expected: Mapping[str, str]) -> bool:
    """A PEP 691 page (as pkgcache renders it) listing exactly the expected files with their sha256."""
    try:
        doc = json.loads(body)
        listed = {f["filename"]: f["hashes"]["sha256"] for f in doc["files"]}
        urls = [f["url"] for f in doc["files"]]
    except (ValueError, KeyError, TypeError):
        return False
    return listed == dict(expected) and not any(u.startswith(("javascript:", "file:")) for u in urls)


def conda_document(name: str, body: bytes) -> Any:
    """An index file's content, decoded from its form (.zst, .bz2), for comparing what it says, not its bytes."""
    if name.endswith(".zst"):
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    elif name.endswith(".bz2"):
        body = bz2.decompress(body)
    if name == SHARD_INDEX:
        return msgpack.unpackb(body)["shards"]  # base URLs are rewritten to pkgcache's: compare the shards
    return json.loads(body)


def conda_checks_out(name: str, body: bytes, truth: Any) -> bool:
    try:
        return conda_document(name, body) == truth
    except Exception:  # anything that does not decode is not the file
        return False


@dataclass(frozen=True)
class FaultChannels:
    """The conda channels the fault suite serves: the session's, with the index files they lacked added."""

    main: Path
    forge: Path
    subdir: str

    def file(self, resource: Resource) -> Path:
        root = self.main if resource.channel == "pkgs/main" else self.forge
        shards = "shards" if resource.kind == "shard" else None
        parts = [p for p in (self.subdir_of(resource), shards, resource.name) if p]
        return root.joinpath(*parts)

    def first_shard(self) -> str:
        return sorted(p.name for p in (self.forge / self.subdir / "shards").iterdir())[0]

    def resolved(self, resource: Resource) -> Resource:
        """The resource with its placeholders filled in (the first shard's name)."""
        if resource.name == FIRST_SHARD:
            return dataclasses.replace(resource, name=self.first_shard())
        return resource

    def subdir_of(self, resource: Resource) -> str | None:
        return self.subdir if resource.subdir == MACHINE_SUBDIR else resource.subdir


def make_fault_channels(main: Path, forge: Path, root: Path, subdir: str) -> FaultChannels:
    """Copies of the two channels, with current_repodata.json, run_exports.json and channeldata.json added."""
    shutil.copytree(main, root / "main")
    shutil.copytree(forge, root / "forge")
    main_subdir = root / "main" / subdir
    (main_subdir / "current_repodata.json").write_bytes((main_subdir / "repodata.json").read_bytes())
    run_exports = {"info": {"subdir": subdir}, "packages": {"libfoo-1.1-h1_0.conda": {"run_exports": {}}}}
    (main_subdir / "run_exports.json").write_text(json.dumps(run_exports))
    channeldata = {"channeldata_version": 1, "packages": {"app": {"version": "1.0"}}, "subdirs": ["noarch", subdir]}
    (root / "main" / "channeldata.json").write_text(json.dumps(channeldata))
    return FaultChannels(root / "main", root / "forge", subdir)


# ---- one scenario, running --------------------------------------------------------------------------------------


@dataclass
class Checks:
    """Every check of a scenario is made and reported, not only the first that fails: the report is a work plan."""

    failed: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str, detail: object = "") -> bool:
        (self.passed if ok else self.failed).append(what if ok else f"{what}\n      got: {detail}")
        return ok

    def verdict(self) -> None:
        if self.failed:
            pytest.fail("\n".join(f"- FAILED: {f}" for f in self.failed), pytrace=False)


class FaultRun:
    """Two upstreams for one side (faulty first, healthy second) and pkgcache in front of them."""

    def __init__(
        self,
        scenario: Scenario,
        loop: BackgroundLoop,
        data_dir: Path,
        channels: FaultChannels,
        upstream_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.scenario = scenario
        self.loop = loop
        self.data_dir = data_dir
        self.channels = channels
        self.resource = channels.resolved(scenario.resource)
        self.dists = fault_dists()
        self.extra_upstream = dict(upstream_settings or {})
        self.faulty: FaultyPypiUpstream | FaultyCondaMirror
        self.healthy: FaultyPypiUpstream | FaultyCondaMirror
        self.cache: RunningCache | None = None

    # -- lifecycle --

    def __enter__(self) -> FaultRun:
        if self.scenario.side is Side.PYPI:
            self.faulty = FaultyPypiUpstream(self.dists, json_pages=self.scenario.json_pages)
            self.healthy = FaultyPypiUpstream(self.dists, json_pages=self.scenario.json_pages)
        else:
            channels = {"pkgs/main": self.channels.main, "conda-forge": self.channels.forge}
            self.faulty, self.healthy = FaultyCondaMirror(channels), FaultyCondaMirror(channels)
        self.loop.run(self.faulty.start())
        self.loop.run(self.healthy.start())
        try:
            self.cache = start_cache(self.loop, self._settings())
        except BaseException:
            self._stop_upstreams()
            raise
        if not self.scenario.revalidation:
            self.inject()
        return self

    def __exit__(self, *exc: object) -> None:
        # The faulty upstream first: whatever pkgcache still waits on from it ends, so pkgcache stops quickly.
        self.loop.run(self.faulty.stop())
        if self.cache is not None:
            self.cache.stop()
        self.loop.run(self.healthy.stop())

    def _stop_upstreams(self) -> None:
        self.loop.run(self.faulty.stop())
        self.loop.run(self.healthy.stop())

    def _settings(self) -> Settings:
        upstream = {**self.scenario.settings, **self.extra_upstream}
        refused = self.scenario.fault.kind is Kind.REFUSE
        if self.scenario.side is Side.PYPI:
            faulty_url = closed_port_url("/simple/") if refused else self.faulty.index_url  # type: ignore[union-attr]
            pypi = [{"name": "faulty", "url": faulty_url}, {"name": "healthy", "url": self.healthy.index_url}]  # type: ignore[union-attr]
            ttl = {"index_ttl": 0} if self.scenario.revalidation else {}
            return settings_for(self.data_dir, pypi, pypi=ttl, conda={"enabled": False}, upstream=upstream)
        assert isinstance(self.faulty, FaultyCondaMirror) and isinstance(self.healthy, FaultyCondaMirror)
        faulty = refused_conda_config("faulty") if refused else self.faulty.upstream_config("faulty")
        conda = {
            "upstreams": [faulty, self.healthy.upstream_config("healthy")],
            "channels": CONDA_CHANNELS,
            "index_ttl": 0 if self.scenario.revalidation else 300,
        }
        # The PyPI side points at a closed port: conda scenarios must never need it.
        return settings_for(self.data_dir, [closed_port_url("/simple/")], conda=conda, upstream=upstream)

    def inject(self) -> None:
        if self.scenario.fault.kind is not Kind.REFUSE:
            self.faulty.plan.set(self.upstream_suffix(self.resource), self.scenario.fault)

    # -- where things are --

    @property
    def url(self) -> str:
        assert self.cache is not None
        return self.cache.url

    def client_path(self, resource: Resource) -> str:
        if resource.side is Side.PYPI:
            if resource.kind == "page":
                return f"/pypi/simple/{resource.name}/"
            return f"/pypi/files/{resource.project}/{resource.name}"
        shards = "shards" if resource.kind == "shard" else None
        parts = [resource.channel, self.channels.subdir_of(resource), shards, resource.name]
        return "/conda/" + "/".join(p for p in parts if p)

    def upstream_suffix(self, resource: Resource) -> str:
        if resource.side is Side.PYPI:
            return f"/simple/{resource.name}/" if resource.kind == "page" else f"/{resource.name}"
        shards = "shards" if resource.kind == "shard" else None
        parts = [resource.channel.removeprefix("cloud/"), self.channels.subdir_of(resource), shards, resource.name]
        return "/" + "/".join(p for p in parts if p)

    def request_headers(self, resource: Resource) -> dict[str, str]:
        return dict(JSON_ACCEPT) if resource.kind == "page" else {}

    # -- what is right --

    def verifier(self, resource: Resource) -> Callable[[bytes], bool]:
        if resource.side is Side.PYPI:
            if resource.kind == "page":
                expected = expected_page(self.dists, resource.name)
                return lambda body: page_checks_out(body, expected)
            sha = next(d.sha256 for d in self.dists if d.filename == resource.name)
            return lambda body: hashlib.sha256(body).hexdigest() == sha
        true_bytes = self.channels.file(resource).read_bytes()
        if resource.kind in ("package", "shard"):
            sha = hashlib.sha256(true_bytes).hexdigest()
            return lambda body: hashlib.sha256(body).hexdigest() == sha
        truth = conda_document(resource.name, true_bytes)
        return lambda body: conda_checks_out(resource.name, body, truth)

    def normal_resource(self) -> Resource:
        """Something unrelated to the fault that a working service serves."""
        if self.scenario.side is Side.PYPI:
            return Resource(Side.PYPI, "page", "beta")
        return Resource(Side.CONDA, "package", "app-1.0-h1_0.conda")

    # -- asking --

    def burst(self, resource: Resource | None = None, count: int | None = None) -> list[Received]:
        resource = resource or self.resource
        url = self.url + self.client_path(resource)
        return asyncio.run(fetch_all(url, count or self.scenario.clients, self.request_headers(resource)))

    def get(self, resource: Resource | None = None) -> Received:
        return self.burst(resource, 1)[0]

    def get_path(self, path: str) -> Received:
        return fetch(self.url + path)

    def status(self) -> dict[str, Any]:
        answer = self.get_path("/-/status")
        assert answer.status == 200, answer.summary()
        return json.loads(answer.body)

    def upstreams(self) -> dict[str, dict[str, Any]]:
        return {u["name"]: u for u in self.status()["upstreams"][self.scenario.side]}

    def asked(self, upstream: FaultyPypiUpstream | FaultyCondaMirror, resource: Resource | None = None) -> int:
        return upstream.count(self.upstream_suffix(resource or self.resource))

    # -- waiting and looking at the cache --

    def wait_downloads_settled(self) -> bool:
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            if self.status()["downloads_in_flight"] == 0 and not self.tmp_leftovers():
                return True
            time.sleep(0.1)
        return False

    def tmp_leftovers(self) -> list[str]:
        tmp = self.data_dir / "tmp"
        return sorted(p.name for p in tmp.rglob("*") if p.is_file()) if tmp.exists() else []

    def cached_files(self) -> Iterator[Path]:
        for path in self.data_dir.rglob("*"):
            if path.is_file() and "tmp" not in path.relative_to(self.data_dir).parts[:1]:
                yield path

    def cached_copies(self, resource: Resource) -> list[Path]:
        """Files in the cache that are this resource (same name, and for conda the same channel and subdir)."""
        if resource.side is Side.PYPI:
            wanted = [resource.project]
        else:
            wanted = [resource.channel.split("/")[-1], self.channels.subdir_of(resource)]
        return [
            path
            for path in self.cached_files()
            if path.name == resource.name and all(part in path.parts for part in wanted if part)
        ]

    def poisoned_files(self) -> list[str]:
        """Cached files holding bytes that only a fault sends."""
        return [str(p.relative_to(self.data_dir)) for p in self.cached_files() if POISON in p.read_bytes()]
