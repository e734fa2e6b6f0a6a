"""The fault-injecting upstreams do what each fault says, seen by a plain client (no pkgcache in between): a
scenario is only worth something if its fault is really on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import aiohttp
import pytest

from tests.fakes.dists import Dist, find_dist
from tests.fakes.faulty import (
    POISON,
    Fault,
    FaultyCondaMirror,
    FaultyPypiUpstream,
    Kind,
    closed_port_url,
)
from tests.faults.harness import FaultChannels, fault_dists
from tests.support import BackgroundLoop

BIG = find_dist(fault_dists(), "bigpkg-1.0-py3-none-any.whl")
ALPHA = find_dist(fault_dists(), "alpha-2.0-py3-none-any.whl")


@pytest.fixture
def mirror(bg_loop: BackgroundLoop) -> Iterator[FaultyPypiUpstream]:
    upstream = FaultyPypiUpstream(fault_dists())
    bg_loop.run(upstream.start())
    yield upstream
    bg_loop.run(upstream.stop())


class Seen:
    """What a plain client saw: status, headers, the chunks as they came, and how reading ended."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.ending = "complete"

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def _look(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> Seen:
    seen = Seen()
    session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(force_close=True))
    try:
        async with asyncio.timeout(timeout):
            wanted = {"Accept-Encoding": "identity", **(headers or {})}
            async with session.get(url, headers=wanted, allow_redirects=False) as response:
                seen.status = response.status
                seen.headers = {k.lower(): v for k, v in response.headers.items()}
                async for chunk in response.content.iter_any():
                    seen.chunks.append(chunk)
    except TimeoutError:
        seen.ending = "timeout"
    except aiohttp.ClientPayloadError:
        seen.ending = "cut"
    except aiohttp.ClientError as exc:
        seen.ending = type(exc).__name__
    finally:
        await session.close()
    return seen


def _file_url(mirror: FaultyPypiUpstream, dist: Dist) -> str:
    return mirror.file_url(dist)


def _with(mirror: FaultyPypiUpstream, dist: Dist, fault: Fault, **options: object) -> Seen:
    mirror.plan.set(f"/{dist.filename}", fault)
    return asyncio.run(_look(_file_url(mirror, dist), **options))  # type: ignore[arg-type]


def test_silence_and_resets(mirror: FaultyPypiUpstream) -> None:
    silent = _with(mirror, ALPHA, Fault(Kind.SILENT), timeout=1.0)
    assert (silent.status, silent.ending) == (None, "timeout")
    reset = _with(mirror, ALPHA, Fault(Kind.RESET))
    assert reset.status is None and reset.ending != "complete"
    refused = asyncio.run(_look(closed_port_url("/x")))
    assert refused.status is None and refused.ending == "ClientConnectorError"


def test_slow_answers(mirror: FaultyPypiUpstream) -> None:
    hang = _with(mirror, BIG, Fault(Kind.HANG_AFTER_HEADERS), timeout=1.0)
    assert (hang.status, hang.headers["content-length"], hang.body, hang.ending) == (200, str(BIG.size), b"", "timeout")
    drip = _with(mirror, BIG, Fault(Kind.DRIP, rate=1000), timeout=1.0)
    assert drip.status == 200 and drip.ending == "timeout"
    assert 0 < len(drip.body) < BIG.size and BIG.data.startswith(drip.body)
    first = _with(mirror, ALPHA, Fault(Kind.FIRST_SEGMENT, rate=2))
    assert first.body == ALPHA.data and len(first.chunks[0]) == 2


def test_cut_bodies(mirror: FaultyPypiUpstream) -> None:
    cut = _with(mirror, BIG, Fault(Kind.CUT))
    assert cut.headers["content-length"] == str(BIG.size) and cut.ending == "cut"
    assert cut.body == BIG.data[: BIG.size // 2]
    unannounced = _with(mirror, BIG, Fault(Kind.CUT_NO_LENGTH))
    # No Content-Length: the body just ends, and looks whole to a client that does not check it.
    assert "content-length" not in unannounced.headers and unannounced.ending == "complete"
    assert unannounced.body == BIG.data[: BIG.size // 2]
    gzipped = _with(mirror, BIG, Fault(Kind.CUT_COMPRESSED), headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["content-encoding"] == "gzip" and gzipped.ending == "cut"


def test_wrong_bodies(mirror: FaultyPypiUpstream) -> None:
    wrong = _with(mirror, BIG, Fault(Kind.WRONG_BYTES))
    assert len(wrong.body) == BIG.size and hashlib.sha256(wrong.body).hexdigest() != BIG.sha256
    larger = _with(mirror, BIG, Fault(Kind.LARGER_FILE))
    assert larger.headers["content-length"] == str(len(larger.body)) and len(larger.body) > BIG.size
    assert larger.body.startswith(b"PK\x03\x04") and larger.ending == "complete"
    smaller = _with(mirror, BIG, Fault(Kind.SMALLER_FILE))
    assert smaller.headers["content-length"] == str(len(smaller.body)) and len(smaller.body) < BIG.size
    assert smaller.body.startswith(b"PK\x03\x04") and POISON in smaller.body
    long = _with(mirror, BIG, Fault(Kind.TOO_LONG))
    assert long.body.startswith(BIG.data) and len(long.body) > BIG.size
    for kind, content_type in ((Kind.BLOCK_PAGE, "text/html"), (Kind.BLOCK_PAGE_AS_OCTETS, "application/octet-stream")):
        page = _with(mirror, BIG, Fault(kind))
        assert page.status == 200 and page.headers["content-type"].startswith(content_type) and POISON in page.body
    garbage = _with(mirror, BIG, Fault(Kind.GARBAGE))
    assert garbage.headers["content-type"] == "application/octet-stream" and POISON in garbage.body


def test_statuses_and_redirects(mirror: FaultyPypiUpstream) -> None:
    throttled = _with(mirror, ALPHA, Fault(Kind.STATUS, status=429, retry_after="999999999"))
    assert (throttled.status, throttled.headers["retry-after"]) == (429, "999999999")
    loop = _with(mirror, ALPHA, Fault(Kind.REDIRECT_LOOP))
    assert loop.status == 302 and loop.headers["location"] == _file_url(mirror, ALPHA)


def test_pages_in_json_with_sizes_and_with_links_no_client_may_follow(mirror: FaultyPypiUpstream) -> None:
    json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    page = asyncio.run(_look(mirror.index_url + "alpha/", json_accept))
    files = {f["filename"]: f for f in json.loads(page.body)["files"]}
    assert files[ALPHA.filename]["size"] == ALPHA.size
    assert files[ALPHA.filename]["hashes"] == {"sha256": ALPHA.sha256}
    mirror.plan.set("/simple/alpha/", Fault(Kind.SCHEME_LINKS))
    evil = asyncio.run(_look(mirror.index_url + "alpha/", json_accept))
    urls = [f["url"] for f in json.loads(evil.body)["files"]]
    assert any(u.startswith("javascript:") for u in urls) and any(u.startswith("file:") for u in urls)
    html = asyncio.run(_look(mirror.index_url + "alpha/"))
    assert b'href="javascript:' in html.body and b'href="file:///' in html.body


def test_conda_index_files_misbehave_too(bg_loop: BackgroundLoop, fault_channels: FaultChannels) -> None:
    mirror = FaultyCondaMirror({"pkgs/main": fault_channels.main, "conda-forge": fault_channels.forge})
    bg_loop.run(mirror.start())
    try:
        base = mirror.upstream_config("m")["pkgs_url"] + "main/"
        channeldata = asyncio.run(_look(base + "channeldata.json"))
        assert channeldata.status == 200 and json.loads(channeldata.body)["channeldata_version"] == 1
        path = f"/main/{fault_channels.subdir}/repodata.json"
        mirror.plan.set(path, Fault(Kind.BLOCK_PAGE))
        blocked = asyncio.run(_look(base + path.removeprefix("/main/")))
        assert blocked.status == 200 and POISON in blocked.body
        assert mirror.count(path) == 1
    finally:
        bg_loop.run(mirror.stop())


def test_the_fault_channels_have_every_index_file(fault_channels: FaultChannels) -> None:
    subdir = fault_channels.main / fault_channels.subdir
    for name in (
        "repodata.json",
        "repodata.json.zst",
        "repodata.json.bz2",
        "current_repodata.json",
        "run_exports.json",
    ):
        assert (subdir / name).is_file(), name
    assert (fault_channels.main / "channeldata.json").is_file()
    assert (fault_channels.forge / fault_channels.subdir / "repodata_shards.msgpack.zst").is_file()
