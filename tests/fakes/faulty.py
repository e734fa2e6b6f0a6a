"""Fake upstreams that misbehave on purpose, path by path: the fault-injecting side of the standing fault suite.

A `FaultPlan` maps request paths (by suffix) to a `Fault`; a request whose path matches gets the fault instead of the
true answer, everything else is served as the healthy fake would. The faults are the ways domestic mirrors have been
seen to fail: silence, drips, cut bodies, wrong bytes, HTML block pages with 200, throttling with absurd
Retry-After values, redirect loops, links no client may follow, and a valid body whose first TCP segment is tiny.

- `FaultyPypiUpstream`: a TUNA-like mirror that, like TUNA today, also answers PEP 691 JSON (with sizes) when asked.
- `FaultyCondaMirror`: a mirror-layout conda upstream (`/anaconda/pkgs/...`, `/anaconda/cloud/...`).
- `closed_port_url()`: an address nothing listens on, for a mirror that refuses connections.

Each keeps the request log of `FakeServer` and a `transfers` log saying how each faulty body transfer ended.
"""

from __future__ import annotations

import asyncio
import enum
import gzip
import html
import io
import json
import random
import re
import socket
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from packaging.utils import canonicalize_name

from .conda_upstreams import ChannelServer, MirrorLikeUpstream
from .dists import Dist
from .pypi_upstreams import DEEP_JSON, FILE_CT, JSON_CT, TunaLikeUpstream, negotiate
from .server import Content, Faults, corrupt, reset_connection, serve_content

# Long enough to outlast any test; the handler is cancelled as soon as the client hangs up.
FOREVER = 3600.0
# Every injected bad body carries this, so a test can search the cache for anything that came from a fault.
POISON = b"pkgcache-fault-injected"
BLOCK_PAGE = (
    b"<!DOCTYPE html><html><head><title>Access denied</title></head><body><h1>403 Forbidden</h1>"
    b"<p>Your network has been blocked for abuse. Status: 0x193. (" + POISON + b")</p></body></html>\n"
)


class Kind(enum.StrEnum):
    """What a faulty upstream does in place of a good answer."""

    REFUSE = "refuse"  # nothing listens: the upstream's URL points at a closed port (set per upstream, not per path)
    SILENT = "silent"  # accepts the request, never answers
    RESET = "reset"  # drops the connection with a TCP reset, no answer
    HANG_AFTER_HEADERS = "hang-after-headers"  # 200 and a Content-Length, then not one byte
    DRIP = "drip"  # the true body at `rate` bytes per second
    CUT = "cut"  # the true Content-Length, half the body, then the connection closes
    CUT_COMPRESSED = "cut-compressed"  # gzip on the wire, half of the encoded body, then the connection closes
    CUT_NO_LENGTH = "cut-no-length"  # no Content-Length, half the body, then the connection closes (looks whole)
    WRONG_BYTES = "wrong-bytes"  # the true size, other bytes
    WRONG_CUT = "wrong-cut"  # the true Content-Length, half the body with some of its bytes altered, then it closes
    LARGER_FILE = "larger-file"  # a different, larger file of the same kind, with its own Content-Length
    SMALLER_FILE = "smaller-file"  # a different, smaller file of the same kind, with its own Content-Length
    TOO_LONG = "too-long"  # the true body followed by more bytes, Content-Length counting them all
    HUGE_LENGTH = "huge-length"  # a Content-Length of 1 TiB, the true body, then the connection closes
    OVERSTATED_LENGTH = (
        "overstated-length"  # a Content-Length 4 KiB past the true body, which it sends whole, then closes
    )
    BLOCK_PAGE = "block-page"  # 200 with an HTML block page (text/html)
    BLOCK_PAGE_AS_OCTETS = "block-page-as-octets"  # the same page labelled application/octet-stream
    GARBAGE = "garbage"  # 200 with random bytes under the true Content-Type
    STATUS = "status"  # a bare `status` (429, 503...), with `retry_after` when given
    REDIRECT_LOOP = "redirect-loop"  # 302 to itself, forever
    SCHEME_LINKS = "scheme-links"  # the true project page plus links to javascript: and file: URLs
    FIRST_SEGMENT = "first-segment"  # the true body, its first `rate` bytes alone in the first TCP segment
    ZSTD_BOMB = "zstd-bomb"  # 200 with a 16-byte zstd frame whose header declares 1 TiB of content
    GZIP_BOMB = "gzip-bomb"  # gzip on the wire: the true JSON object padded with `rate` spaces before its last "}"
    DEEP_JSON = "deep-json"  # 200 with well-formed JSON nested 1,200 deep (json.loads: RecursionError)
    # gzip on the wire although identity was asked for: the true body followed by `rate` zero bytes (0: the true body)
    GZIP_ENCODED = "gzip-encoded"
    LARGER_NO_LENGTH = (
        "larger-no-length"  # LARGER_FILE without a Content-Length (the body ends when the connection does)
    )
    # the true body labelled Content-Encoding: x-gzip (Apache's stock `AddEncoding x-gzip .gz` on a .tar.gz)
    LABELLED_GZIP = "labelled-gzip"


@dataclass(frozen=True)
class Fault:
    """One way of misbehaving. `rate`: bytes per second for DRIP, first-segment size for FIRST_SEGMENT."""

    kind: Kind
    rate: int = 0
    status: int = 0
    retry_after: str | None = None

    def slug(self) -> str:
        """A short name for test ids: the kind, or the status and what its Retry-After says."""
        if self.kind is Kind.STATUS:
            return f"{self.status}" + (f"-retry-after-{self.retry_after}" if self.retry_after else "")
        return str(self.kind)

    def describe(self) -> str:
        """A few words for tables and test ids."""
        text = {
            Kind.REFUSE: "refuses connections (closed port)",
            Kind.SILENT: "accepts, never answers",
            Kind.RESET: "resets the connection",
            Kind.HANG_AFTER_HEADERS: "sends headers, then nothing",
            Kind.DRIP: f"drips the body at {self.rate} B/s",
            Kind.CUT: "cuts the body (with Content-Length)",
            Kind.CUT_COMPRESSED: "cuts a gzip-encoded body",
            Kind.CUT_NO_LENGTH: "cuts the body (no Content-Length: looks whole)",
            Kind.WRONG_BYTES: "wrong bytes, right size",
            Kind.WRONG_CUT: "cuts the body (with Content-Length), and the bytes it sent were wrong",
            Kind.LARGER_FILE: "a different, larger file with its own Content-Length",
            Kind.SMALLER_FILE: "a different, smaller file with its own Content-Length",
            Kind.TOO_LONG: "the right bytes followed by more",
            Kind.HUGE_LENGTH: "declares 1 TiB, sends the right bytes",
            Kind.OVERSTATED_LENGTH: "declares 4 KiB more than the right bytes it sends",
            Kind.BLOCK_PAGE: "200 with an HTML block page",
            Kind.BLOCK_PAGE_AS_OCTETS: "200 with an HTML block page labelled octet-stream",
            Kind.GARBAGE: "200 with random bytes",
            Kind.STATUS: f"{self.status}" + (f" with Retry-After: {self.retry_after}" if self.retry_after else ""),
            Kind.REDIRECT_LOOP: "redirects to itself",
            Kind.SCHEME_LINKS: "lists javascript: and file: links",
            Kind.FIRST_SEGMENT: f"a valid body whose first TCP segment is {self.rate} bytes",
            Kind.ZSTD_BOMB: "200 with a 16-byte zstd frame declaring 1 TiB",
            Kind.GZIP_BOMB: f"gzip on the wire, decoding to the JSON padded with {self.rate} bytes",
            Kind.DEEP_JSON: "200 with JSON nested 1,200 deep",
            Kind.GZIP_ENCODED: "gzip on the wire, asked for identity"
            + (f" (the file followed by {self.rate} zero bytes)" if self.rate else ""),
            Kind.LARGER_NO_LENGTH: "a different, larger file without a Content-Length",
            Kind.LABELLED_GZIP: "the true body labelled Content-Encoding: x-gzip",
        }
        return text[self.kind]


@dataclass
class FaultPlan:
    """Which paths misbehave: path suffix -> fault. Changed freely while the server runs."""

    faults: dict[str, Fault] = field(default_factory=dict)

    def fault_for(self, path: str) -> Fault | None:
        return next((fault for suffix, fault in self.faults.items() if path.endswith(suffix)), None)

    def set(self, suffix: str, fault: Fault) -> None:
        self.faults[suffix] = fault

    def clear(self) -> None:
        self.faults.clear()


@dataclass(frozen=True)
class Transfer:
    """How one faulty body transfer ended: "complete", or "aborted" when the client hung up first."""

    path: str
    ending: str


def closed_port_url(path: str = "/") -> str:
    """An http URL on loopback where nothing listens (the port was bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# ---- the bodies faults are made of ----------------------------------------------------------------------------


def garbage(seed: str, size: int = 2048) -> bytes:
    """Random bytes that are no file format at all (and carry the poison marker)."""
    return b"\x00" + POISON + random.Random(seed).randbytes(size)


def zstd_frame_declaring(size: int, payload: bytes = b"\x80") -> bytes:
    """A zstd frame whose header declares `size` bytes of content, holding one raw block of `payload`."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0b11100000]) + size.to_bytes(8, "little")  # single segment, 8-byte size
    block = (1 | (len(payload) << 3)).to_bytes(3, "little")  # the last block, raw
    return header + block + payload


def altered_half(body: bytes) -> bytes:
    """The first half of `body`, some bytes in its middle replaced by POISON (its first bytes stay those of a file of
    its kind): a prefix that a resume from another upstream would complete into a file failing its hash."""
    half = bytearray(body[: len(body) // 2])
    middle = max(0, len(half) // 2 - len(POISON))
    half[middle : middle + len(POISON)] = POISON
    return bytes(half[: len(body) // 2])


def other_zip(body: bytes, seed: str, *, larger: bool = True) -> bytes:
    """A well-formed zip archive (so it starts like a wheel or a .conda) of other content, larger than `body` or
    much smaller."""
    payload = random.Random(seed).randbytes(len(body) + 512 * 1024 if larger else 16)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("payload.bin", date_time=(2024, 1, 1, 0, 0, 0)), payload)
        archive.writestr(zipfile.ZipInfo("marker.txt", date_time=(2024, 1, 1, 0, 0, 0)), POISON)
    return buffer.getvalue()


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


# ---- answering with a fault -----------------------------------------------------------------------------------


class FaultAnswers:
    """Turns a fault and the true content of a path into the bad answer, and logs how body transfers end."""

    def __init__(self) -> None:
        self.transfers: list[Transfer] = []

    async def answer(self, request: web.Request, fault: Fault, content: Content | None) -> web.StreamResponse:
        kind = fault.kind
        if kind is Kind.SILENT:
            await asyncio.sleep(FOREVER)
            raise web.HTTPGatewayTimeout()
        if kind is Kind.RESET:
            reset_connection(request)
            raise asyncio.CancelledError  # nothing may be written after the socket is gone
        if kind is Kind.STATUS:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.Response(status=fault.status, text=f"{fault.status} injected\n", headers=headers)
        if kind is Kind.REDIRECT_LOOP:
            location = f"http://{request.host}{request.path_qs}"
            return web.Response(status=302, headers={"Location": location})
        if kind is Kind.BLOCK_PAGE:
            return web.Response(body=BLOCK_PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
        if kind is Kind.BLOCK_PAGE_AS_OCTETS:
            return web.Response(body=BLOCK_PAGE, headers={"Content-Type": FILE_CT})
        if content is None:
            raise web.HTTPNotFound()
        return await self._body_fault(request, fault, content)

    async def _body_fault(self, request: web.Request, fault: Fault, content: Content) -> web.StreamResponse:
        kind, body, ctype = fault.kind, content.body, content.content_type
        if kind is Kind.GARBAGE:
            return web.Response(body=garbage(request.path), headers={"Content-Type": ctype})
        if kind is Kind.WRONG_BYTES:
            return await self._stream(request, 200, {"Content-Type": ctype}, corrupt(body))
        if kind in (Kind.LARGER_FILE, Kind.SMALLER_FILE):
            other = other_zip(body, request.path, larger=kind is Kind.LARGER_FILE)
            return await self._stream(request, 200, {"Content-Type": ctype}, other)
        if kind is Kind.LARGER_NO_LENGTH:
            other = other_zip(body, request.path)
            return await self._raw(request, {"Content-Type": ctype, "Connection": "close"}, other)
        if kind is Kind.GZIP_ENCODED:
            encoded = gzip.compress(body + bytes(fault.rate), mtime=0)
            return await self._stream(request, 200, {"Content-Type": ctype, "Content-Encoding": "gzip"}, encoded)
        if kind is Kind.LABELLED_GZIP:
            return await self._stream(request, 200, {"Content-Type": ctype, "Content-Encoding": "x-gzip"}, body)
        if kind is Kind.TOO_LONG:
            return await self._stream(request, 200, {"Content-Type": ctype}, body + garbage(request.path, 64 * 1024))
        if kind is Kind.DRIP:
            return await self._stream(request, 200, {"Content-Type": ctype}, body, rate=fault.rate)
        if kind is Kind.FIRST_SEGMENT:
            return await self._stream(request, 200, {"Content-Type": ctype}, body, first=fault.rate)
        if kind is Kind.HANG_AFTER_HEADERS:
            return await self._raw(request, {"Content-Type": ctype, "Content-Length": str(len(body))}, b"", FOREVER)
        if kind is Kind.CUT:
            headers = {"Content-Type": ctype, "Content-Length": str(len(body))}
            return await self._raw(request, headers, body[: len(body) // 2])
        if kind is Kind.WRONG_CUT:
            headers = {"Content-Type": ctype, "Content-Length": str(len(body))}
            return await self._raw(request, headers, altered_half(body))
        if kind is Kind.HUGE_LENGTH:
            return await self._raw(request, {"Content-Type": ctype, "Content-Length": str(1 << 40)}, body)
        if kind is Kind.OVERSTATED_LENGTH:
            return await self._raw(request, {"Content-Type": ctype, "Content-Length": str(len(body) + 4096)}, body)
        if kind is Kind.CUT_NO_LENGTH:
            return await self._raw(request, {"Content-Type": ctype, "Connection": "close"}, body[: len(body) // 2])
        if kind is Kind.DEEP_JSON:
            return web.Response(body=DEEP_JSON, headers={"Content-Type": JSON_CT})
        if kind is Kind.ZSTD_BOMB:
            return web.Response(body=zstd_frame_declaring(1 << 40), headers={"Content-Type": ctype})
        if kind is Kind.GZIP_BOMB:
            padded = body.rstrip()[:-1] + b" " * fault.rate + b"}"
            return web.Response(
                body=gzip.compress(padded, mtime=0), headers={"Content-Type": ctype, "Content-Encoding": "gzip"}
            )
        if kind is Kind.CUT_COMPRESSED:
            encoded = gzip.compress(body, mtime=0) if _accepts_gzip(request) else body
            headers = {"Content-Type": ctype, "Content-Length": str(len(encoded))}
            if encoded is not body:
                headers["Content-Encoding"] = "gzip"
            return await self._raw(request, headers, encoded[: len(encoded) // 2])
        raise ValueError(f"{kind} needs the server's own handling")

    async def _stream(
        self, request: web.Request, status: int, headers: dict[str, str], body: bytes, *, rate: int = 0, first: int = 0
    ) -> web.StreamResponse:
        """A well-formed answer with a Content-Length, sent at `rate` bytes/s, or with a tiny first segment."""
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                await self._write_body(response, body, rate, first)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.transfers.append(Transfer(request.path, "aborted"))
            raise
        self.transfers.append(Transfer(request.path, "complete"))
        return response

    @staticmethod
    async def _write_body(response: web.StreamResponse, body: bytes, rate: int, first: int) -> None:
        if first:
            await response.write(body[:first])  # headers and these bytes leave together, on their own
            await asyncio.sleep(0.05)
            body = body[first:]
        step = max(1, rate // 10) if rate else 64 * 1024
        for offset in range(0, len(body), step):
            await response.write(body[offset : offset + step])
            if rate:
                await asyncio.sleep(0.1)

    async def _raw(
        self, request: web.Request, headers: dict[str, str], body: bytes, linger: float = 0.0
    ) -> web.StreamResponse:
        """Bytes straight onto the socket (headers aiohttp would not send as they are), then the connection ends."""
        transport = request.transport
        if transport is None:
            raise asyncio.CancelledError
        transport.write(_head(200, "OK", headers) + body)
        try:
            if linger:
                await asyncio.sleep(linger)
        finally:
            self.transfers.append(Transfer(request.path, "aborted" if linger else "cut"))
            transport.close()  # flushes what was written, then FIN
        raise asyncio.CancelledError  # the answer is on the wire already: aiohttp must add nothing


# ---- PyPI ------------------------------------------------------------------------------------------------------

_PAGE_PATH = re.compile(r"/simple/([^/]+)/")
EVIL_LINKS = (
    ("javascript:alert(document.domain)", "6.6.6"),
    ("file:///etc/passwd", "6.6.7"),
)


class FaultyPypiUpstream(TunaLikeUpstream):
    """A TUNA-like mirror (relative links, files under /packages/) that misbehaves where `plan` says.

    Like TUNA today it answers PEP 691 JSON, with each file's size, to a client that prefers JSON, and HTML
    otherwise; `json_pages=False` makes it HTML only (no sizes: only the hash tells a wrong file).
    """

    def __init__(self, dists: Iterable[Dist] = (), *, json_pages: bool = True) -> None:
        super().__init__(dists, strict_ua=False)
        self.plan = FaultPlan()
        self.json_pages = json_pages
        self.answers = FaultAnswers()

    @property
    def transfers(self) -> list[Transfer]:
        return self.answers.transfers

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.plan.fault_for(request.path)
        if fault is None:
            return await self._healthy(request)
        if fault.kind is Kind.SCHEME_LINKS:
            return await self._page_with_evil_links(request)
        return await self.answers.answer(request, fault, self.true_content(request))

    async def _healthy(self, request: web.Request) -> web.StreamResponse:
        content = self._json_page(request)
        if content is not None:
            return await serve_content(request, content, self.faults)
        return await super().handle(request)

    def true_content(self, request: web.Request) -> Content | None:
        """What a healthy mirror would answer for this request."""
        path = request.path
        dist = self._by_path.get(path)
        if dist is not None:
            return Content(dist.data, FILE_CT, 1704067200)
        return self._json_page(request) or self._html_page_content(path)

    def _wants_json(self, request: web.Request) -> bool:
        return self.json_pages and negotiate(request.headers.get("Accept")) == JSON_CT

    def _project_dists(self, path: str) -> tuple[str, list[Dist]] | None:
        match = _PAGE_PATH.fullmatch(path)
        if match is None or match.group(1) != canonicalize_name(match.group(1)):
            return None
        dists = self.projects().get(match.group(1))
        return (match.group(1), dists) if dists else None

    def _json_page(self, request: web.Request, extra: list[dict[str, object]] = ()) -> Content | None:
        found = self._project_dists(request.path)
        if found is None or not self._wants_json(request):
            return None
        name, dists = found
        doc = {
            "meta": {"api-version": "1.1", "_last-serial": self.serial},
            "name": name,
            "files": [self._json_file(dist) for dist in dists] + list(extra),
        }
        return Content(json.dumps(doc).encode(), JSON_CT, self.last_modified_ts, "max-age=600, public")

    def _json_file(self, dist: Dist) -> dict[str, object]:
        return {
            "filename": dist.filename,
            "url": "../.." + self.file_path(dist),
            "hashes": {"sha256": dist.sha256},
            "size": dist.size,
            "requires-python": dist.requires_python,
            "yanked": dist.yanked,
        }

    def _html_page_content(self, path: str, extra: list[str] = ()) -> Content | None:
        found = self._project_dists(path)
        if found is None:
            return None
        name, dists = found
        links = [self._link(d, "../.." + self.file_path(d)) for d in dists] + list(extra)
        return Content(self._html_page(f"Links for {name}", links), "text/html", self.last_modified_ts)

    async def _page_with_evil_links(self, request: web.Request) -> web.StreamResponse:
        found = self._project_dists(request.path)
        if found is None:
            raise web.HTTPNotFound()
        name = found[0]
        evil = [(href, f"{name.replace('-', '_')}-{version}-py3-none-any.whl") for href, version in EVIL_LINKS]
        json_extra = [{"filename": filename, "url": href, "hashes": {"sha256": "0" * 64}} for href, filename in evil]
        html_extra = [f'    <a href="{html.escape(href)}">{filename}</a><br />' for href, filename in evil]
        content = self._json_page(request, json_extra) or self._html_page_content(request.path, html_extra)
        assert content is not None
        return await serve_content(request, content, self.faults)


def evil_filenames(project: str) -> list[str]:
    """The file names the SCHEME_LINKS fault lists for `project` (none of them may be served)."""
    return [f"{canonicalize_name(project).replace('-', '_')}-{version}-py3-none-any.whl" for _, version in EVIL_LINKS]


# ---- conda -----------------------------------------------------------------------------------------------------


CHANNEL_FILES = frozenset({"channeldata.json"})


class FaultyChannelServer(ChannelServer):
    """A ChannelServer that consults a FaultPlan before serving."""

    def __init__(self, mounts: dict[str, Path], faults: Faults, plan: FaultPlan, answers: FaultAnswers) -> None:
        super().__init__(mounts, faults)
        self.plan = plan
        self.answers = answers

    def _locate(self, path: str) -> tuple[str, Path] | None:
        # Channel-level files (channeldata.json) too, which the plain fake does not serve.
        found = super()._locate(path)
        if found is not None:
            return found
        for prefix, root in self.mounts.items():
            name = path.removeprefix(prefix + "/")
            if name != path and name in CHANNEL_FILES and (root / name).is_file():
                return prefix, root / name
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.plan.fault_for(request.path)
        if fault is None:
            return await super().handle(request)
        content = None
        found = self._locate(request.path)
        if found is not None:
            content = await asyncio.to_thread(self._content, found[0], found[1], request.path)
        return await self.answers.answer(request, fault, content)


class FaultyCondaMirror(MirrorLikeUpstream):
    """A conda upstream in the domestic mirrors' layout, with every index form, misbehaving where `plan` says."""

    def __init__(self, channels: dict[str, Path]) -> None:
        super().__init__(channels)
        self.plan = FaultPlan()
        self.answers = FaultAnswers()
        self.server = FaultyChannelServer(self.server.mounts, self.faults, self.plan, self.answers)
        self.servers = [self.server]

    @property
    def transfers(self) -> list[Transfer]:
        return self.answers.transfers


def refused_conda_config(name: str) -> dict[str, str]:
    """A conda upstream table whose addresses refuse connections."""
    base = closed_port_url("/anaconda/")
    return {"name": name, "pkgs_url": base + "pkgs/", "cloud_url": base + "cloud/"}
