"""Fake conda upstreams serving channels built by `conda_channel.build_channel`.

- `AnacondaLikeUpstream`: two hosts like anaconda.com's: `repo` serves `/pkgs/<name>/<subdir>/<file>` (keys such as
  "pkgs/main"), `conda` serves `/<channel>/<subdir>/<file>` for community channels (keys such as "conda-forge").
- `MirrorLikeUpstream`: one host in the layout of the big university mirrors: `/anaconda/pkgs/main/...` and
  `/anaconda/cloud/conda-forge/...`; `only_json=True` serves plain repodata.json only (no .zst, .bz2 or shards).

Files are read from disk on every request, so a test may rebuild or edit a channel while the fake runs. Faults are
shared by every host of one upstream: set `fail_mode`, `fail_paths`, `delay`, `bytes_per_second` or
`corrupt_files` on the upstream at any time.
"""

from __future__ import annotations

import asyncio
import bz2
import io
import json
from pathlib import Path, PurePosixPath

import msgpack
import zstandard
from aiohttp import web

from .server import (
    Content,
    FakeServer,
    FaultKnob,
    Faults,
    RecordedRequest,
    RequestFilter,
    corrupt,
    serve_content,
)

INDEX_NAMES = frozenset(
    {
        "repodata.json",
        "repodata.json.zst",
        "repodata.json.bz2",
        "current_repodata.json",
        "repodata_from_packages.json",
        "repodata_shards.msgpack.zst",
    }
)
REPODATA_NAMES = frozenset({"repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json"})
# What a plain-JSON mirror lacks.
COMPRESSED_INDEX_NAMES = frozenset({"repodata.json.zst", "repodata.json.bz2", "repodata_shards.msgpack.zst"})
SHARD_INDEX = "repodata_shards.msgpack.zst"
PACKAGE_MAX_AGE = 365 * 24 * 3600


def content_type_for(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".tar.bz2"):
        return "application/x-tar"
    if name.endswith(".bz2"):
        return "application/x-bzip2"
    if name.endswith(".zst"):
        return "application/zstd"
    return "application/octet-stream"


class ChannelServer(FakeServer):
    """Serves channel directories mounted at URL prefixes, e.g. {"/pkgs/main": Path(...)}."""

    def __init__(
        self,
        mounts: dict[str, Path],
        faults: Faults,
        *,
        only_json: bool = False,
        gzip_json: bool = True,
        repodata_max_age: int | None = 60,
        absolute_shard_urls: bool = False,
    ) -> None:
        # Longest prefix first, so "/anaconda/cloud/x" wins over a shorter mount.
        self.mounts = dict(sorted(mounts.items(), key=lambda kv: -len(kv[0])))
        self.only_json = only_json
        self.gzip_json = gzip_json
        self.repodata_max_age = repodata_max_age
        self.absolute_shard_urls = absolute_shard_urls
        # Another server's base URL that absolute URLs name instead of this one's, in the shard index (with
        # absolute_shard_urls) and as every repodata's info.base_url (CEP-15): a mirror sending its readers elsewhere.
        self.elsewhere: str | None = None
        # Or the info.base_url every repodata says, as given ("{subdir}" filled in): a relative one, say.
        self.base_url: str | None = None
        # Package files are not answered under the channels' mounts (404): they are only where base_url says, or
        # under the mounts of `mount_packages`.
        self.index_only = False
        self.package_mounts: set[str] = set()
        # URL path prefix -> the prefix it answers 302 to, for every path below it: a channel moved elsewhere.
        self.moved: dict[str, str] = {}
        super().__init__(faults)

    def mount_packages(self, prefix: str, root: Path) -> None:
        """Serve a channel's files at `prefix` too (e.g. where a relative base_url leads), packages included."""
        self.mounts = dict(sorted({**self.mounts, prefix: root}.items(), key=lambda kv: -len(kv[0])))
        self.package_mounts.add(prefix)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        for prefix, destination in self.moved.items():
            if request.path.startswith(prefix):
                raise web.HTTPFound(destination + request.path[len(prefix) :])
        found = self._locate(request.path)
        if found is None:
            raise web.HTTPNotFound()
        prefix, file = found
        content = await asyncio.to_thread(self._content, prefix, file, request.path)
        return await serve_content(request, content, self.faults)

    def _locate(self, path: str) -> tuple[str, Path] | None:
        """The mount prefix and file for a URL path, or None when nothing is to be served there."""
        for prefix, root in self.mounts.items():
            if not path.startswith(prefix + "/"):
                continue
            rel = PurePosixPath(path[len(prefix) + 1 :])
            # Only <subdir>/<file> and <subdir>/shards/<file>: no listings, no escaping the channel.
            if ".." in rel.parts or len(rel.parts) not in (2, 3) or (len(rel.parts) == 3 and rel.parts[1] != "shards"):
                return None
            if self.only_json and (rel.name in COMPRESSED_INDEX_NAMES or rel.parts[1] == "shards"):
                return None
            is_package = rel.name not in INDEX_NAMES and rel.parts[1] != "shards"
            if self.index_only and is_package and prefix not in self.package_mounts:
                return None
            file = root.joinpath(*rel.parts)
            return (prefix, file) if file.is_file() else None
        return None

    def _content(self, prefix: str, file: Path, url_path: str) -> Content:
        body = file.read_bytes()
        subdir_url = f"{self.elsewhere or self.url}{prefix}/{file.parent.name}/"
        if file.name == SHARD_INDEX and self.absolute_shard_urls:
            body = self._absolutise_shard_index(body, subdir_url)
        base_url = self.base_url.format(subdir=file.parent.name) if self.base_url else subdir_url
        if file.name in REPODATA_NAMES and (self.elsewhere or self.base_url):
            body = _with_base_url(file.name, body, base_url)
        if self.faults.corrupts(url_path):
            body = corrupt(body)
        is_index = file.name in INDEX_NAMES
        if is_index:
            cache = None if self.repodata_max_age is None else f"public, max-age={self.repodata_max_age}"
        else:
            cache = f"public, max-age={PACKAGE_MAX_AGE}, immutable"
        gzip_ok = self.gzip_json and file.name.endswith(".json")
        return Content(body, content_type_for(file.name), file.stat().st_mtime, cache, gzip_ok)

    @staticmethod
    def _absolutise_shard_index(body: bytes, subdir_url: str) -> bytes:
        # Some channels publish absolute URLs here; a proxy must rewrite them or clients bypass it.
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(body, max_output_size=64 << 20))
        index["info"]["base_url"] = subdir_url
        index["info"]["shards_base_url"] = subdir_url + "shards/"
        return zstandard.ZstdCompressor().compress(msgpack.packb(index))


def _with_base_url(name: str, body: bytes, base_url: str) -> bytes:
    """A repodata file (in its compression) whose info says `base_url`, as an upstream's indexer would write it."""
    if name.endswith(".zst"):
        text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True).read()
    elif name.endswith(".bz2"):
        text = bz2.decompress(body)
    else:
        text = body
    document = json.loads(text)
    document.setdefault("info", {})["base_url"] = base_url
    document["repodata_version"] = 2
    text = json.dumps(document).encode()
    if name.endswith(".zst"):
        return zstandard.ZstdCompressor().compress(text)
    if name.endswith(".bz2"):
        return bz2.compress(text)
    return text


class _CondaUpstream:
    """Several ChannelServers with one fault switchboard and one request log view."""

    def __init__(self, channels: dict[str, Path]) -> None:
        self.channels = {key.strip("/"): Path(path) for key, path in channels.items()}
        self.faults = Faults(retry_after=1)  # the CDN asks clients to come back in a second
        self.servers: list[ChannelServer] = []

    def channel_url(self, key: str) -> str:
        """The channel URL clients use, without a trailing slash."""
        raise NotImplementedError

    async def start(self) -> None:
        for server in self.servers:
            await server.start()

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()

    async def __aenter__(self) -> _CondaUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        return [r for server in self.servers for r in server.requests]

    def count(self, what: RequestFilter, method: str | None = None) -> int:
        return sum(server.count(what, method) for server in self.servers)

    def paths(self, method: str | None = None) -> list[str]:
        return [p for server in self.servers for p in server.paths(method)]

    def reset_log(self) -> None:
        for server in self.servers:
            server.reset_log()

    # Fault knobs, forwarded to the shared Faults so every host misbehaves alike.
    fail_mode: FaultKnob[str | None] = FaultKnob()
    fail_paths: FaultKnob[set[str] | None] = FaultKnob()
    delay: FaultKnob[float] = FaultKnob()
    bytes_per_second: FaultKnob[int | None] = FaultKnob()
    corrupt_files: FaultKnob[set[str]] = FaultKnob()


class AnacondaLikeUpstream(_CondaUpstream):
    """Two hosts: `repo` for "pkgs/*" channels at /pkgs/<name>/, `conda` for community channels at /<name>/."""

    def __init__(
        self,
        channels: dict[str, Path],
        *,
        gzip_json: bool = True,
        repodata_max_age: int | None = 60,
        absolute_shard_urls: bool = False,
    ) -> None:
        super().__init__(channels)
        repo_mounts = {f"/{k}": p for k, p in self.channels.items() if k.startswith("pkgs/")}
        conda_mounts = {f"/{k}": p for k, p in self.channels.items() if not k.startswith("pkgs/")}

        def make(mounts: dict[str, Path]) -> ChannelServer:
            return ChannelServer(
                mounts,
                self.faults,
                gzip_json=gzip_json,
                repodata_max_age=repodata_max_age,
                absolute_shard_urls=absolute_shard_urls,
            )

        self.repo = make(repo_mounts)
        self.conda = make(conda_mounts)
        self.servers = [self.repo, self.conda]

    def channel_url(self, key: str) -> str:
        key = key.strip("/")
        if key not in self.channels:
            raise KeyError(key)
        host = self.repo if key.startswith("pkgs/") else self.conda
        return f"{host.url}/{key}"

    def upstream_config(self, name: str = "anaconda-fake") -> dict[str, str]:
        """This upstream as a `[conda] upstreams` table."""
        return {"name": name, "pkgs_url": f"{self.repo.url}/pkgs/", "cloud_url": f"{self.conda.url}/"}


class MirrorLikeUpstream(_CondaUpstream):
    """One host: "pkgs/*" channels under /anaconda/pkgs/, community channels under /anaconda/cloud/."""

    def __init__(
        self,
        channels: dict[str, Path],
        *,
        only_json: bool = False,
        gzip_json: bool = True,
        repodata_max_age: int | None = 60,
        absolute_shard_urls: bool = False,
    ) -> None:
        super().__init__(channels)
        mounts = {self._mount(k): p for k, p in self.channels.items()}
        self.server = ChannelServer(
            mounts,
            self.faults,
            only_json=only_json,
            gzip_json=gzip_json,
            repodata_max_age=repodata_max_age,
            absolute_shard_urls=absolute_shard_urls,
        )
        self.servers = [self.server]

    @property
    def url(self) -> str:
        """Host base URL; channels live under `{url}/anaconda/`."""
        return self.server.url

    @staticmethod
    def _mount(key: str) -> str:
        return f"/anaconda/{key}" if key.startswith("pkgs/") else f"/anaconda/cloud/{key}"

    def channel_url(self, key: str) -> str:
        key = key.strip("/")
        if key not in self.channels:
            raise KeyError(key)
        return f"{self.server.url}{self._mount(key)}"

    def upstream_config(self, name: str) -> dict[str, str]:
        """This mirror as a `[conda] upstreams` table."""
        return {"name": name, "pkgs_url": f"{self.url}/anaconda/pkgs/", "cloud_url": f"{self.url}/anaconda/cloud/"}
