"""CEP-15 `info.base_url`: repodata that sends clients anywhere but pkgcache for packages is made to send them here.

A repodata document may say where its packages are (`info.base_url`: absolute, or relative to the repodata's own
URL; without it they are beside the repodata). Passed through as the upstream wrote it, an absolute one sends
conda, mamba, pixi and rattler straight to the upstream (or to any other host): nothing is cached, and an intranet
without outside access cannot install. So pkgcache drops `base_url` from every repodata it serves (clients then
fetch packages beside the repodata, from pkgcache), and remembers it (in the file's sidecar) to fetch the packages
itself from where it said (`package_base`).

The rewrite is done once, when a new version of the file is stored (before it is renamed into place), never per
request; only the `info` object's bytes change: everything before and after it is copied as it is, so the records
(and the shards made from them) stay byte for byte the upstream's. `info` comes first in the documents every known
indexer writes, so it is found in the first megabyte of text; a document that has it further on is re-written
whole (records re-encoded, the same values), which costs a pass over it, once per version.

Whether a version needs the rewrite is told by the same first megabyte, so a download whose repodata needs none is
streamed to its clients as before, and one that does (or cannot be told yet) is served only once rewritten
(conda/cached_channels.py).
"""

from __future__ import annotations

import bz2
import contextlib
import io
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import zstandard

from pkgcache.conda.repodata_stream import Info, decompressed, iter_repodata_file

# The repodata documents a subdir may serve, in every compression: each may carry `info.base_url`.
REPODATA_BASES = ("repodata.json", "current_repodata.json", "repodata_from_packages.json")
REPODATA_NAMES = frozenset(base + suffix for base in REPODATA_BASES for suffix in ("", ".zst", ".bz2"))
# How much of the (decompressed) text is read to find `info` (index_checks wants "packages" as early as this).
HEAD_BYTES = 1 << 20
READ_BYTES = 1 << 16
ZSTD_LEVEL = 3  # as generated_zst.py: about as fast as the disk
# A URL no reference can resolve into without naming it, to tell references that stay beside the repodata ("", "./").
_HERE = "http://pkgcache.invalid/channel/subdir/repodata.json"  # .invalid: never a real host
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Undecided(Exception):
    """The head read does not show the document's `info` (it comes later, or the head is cut)."""


@dataclass(frozen=True)
class InfoPlace:
    """The top-level `info` object of a repodata text: its value, and its bytes' start and end in the text."""

    info: dict[str, Any]
    start: int
    end: int


def resolve(repodata_url: str, base_url: str) -> str:
    """Where packages are (a folder URL with a trailing slash) for a repodata at `repodata_url` saying `base_url`,
    as CEP-15 says and rattler does: an absolute URL as it is, a path from the host's root, or relative."""
    resolved = urljoin(urljoin(repodata_url, "./"), base_url)
    return resolved if resolved.endswith("/") else resolved + "/"


def sends_elsewhere(info: dict[str, Any]) -> bool:
    """Whether `info` sends clients anywhere but beside the repodata (any absolute or upward `base_url`)."""
    base_url = info.get("base_url")
    if base_url is None:
        return False
    if not isinstance(base_url, str):
        return True  # not a URL: dropped all the same, clients would stumble on it
    return resolve(_HERE, base_url) != resolve(_HERE, "")


def pointing_here(info: dict[str, Any]) -> dict[str, Any]:
    """`info` without its `base_url`: packages beside the repodata, at pkgcache."""
    return {key: value for key, value in info.items() if key != "base_url"}


def find_info(head: bytes, whole: bool) -> InfoPlace | None:
    """Where the top-level `info` object is in the first bytes of a repodata text (`whole`: all of it). None when
    the document has none; raises Undecided when these bytes do not tell."""
    text = _text_of(head, whole)
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if text[pos : pos + 1] != "{":
        raise Undecided("not a JSON object")
    pos = _skip_space(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return None
    while True:
        try:
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip_space(text, pos)
            if text[pos : pos + 1] != ":" or not isinstance(key, str):
                raise Undecided("a member without its key")
            start = _skip_space(text, pos + 1)
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            raise Undecided("the head ends inside a member") from None
        if end >= len(text) and not whole:
            raise Undecided("the head ends with a value that may go on")
        if key == "info":
            if not isinstance(value, dict):
                raise Undecided("'info' is not an object")
            return InfoPlace(value, len(text[:start].encode()), len(text[:end].encode()))
        pos = _skip_space(text, end)
        separator = text[pos : pos + 1]
        if separator == "}":
            return None
        if separator != ",":
            raise Undecided("no ',' between members")
        pos = _skip_space(text, pos + 1)


def _text_of(head: bytes, whole: bool) -> str:
    # A head cut inside a character loses that character's bytes (up to 3): the offsets of what precedes hold.
    for cut in range(0 if whole else 4):
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        raise Undecided("not UTF-8") from None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def needs_rewrite(head: bytes, whole: bool, subdir: str | None = None) -> bool | None:
    """Whether a repodata whose text begins with `head` (`whole`: all of it) must be rewritten before clients see
    it, as `rewrite_repodata` will find (a head of HEAD_BYTES that does not tell: it may have to be). None when more
    of the text is needed to tell: `info` was not yet read whole and the head is shorter than HEAD_BYTES.
    True as well when its `info` names a subdir other than `subdir`: its check will refuse it (index_checks), so
    clients wait for the next upstream's instead of being streamed it and cut."""
    try:
        place = find_info(head, whole)
    except Undecided:
        return None if not whole and len(head) < HEAD_BYTES else True
    if place is None:
        return False
    said = place.info.get("subdir")
    if subdir is not None and isinstance(said, str) and said != subdir:
        return True
    return sends_elsewhere(place.info)


def head_of_bytes(name: str, data: bytes) -> bytes:
    """The first HEAD_BYTES (at most) of the text of a repodata file called `name` whose first bytes, compressed as
    its name says, are `data` (all of them, or the start of a download: what a cut stream gives)."""
    head = bytearray()
    with (
        contextlib.suppress(zstandard.ZstdError, EOFError, OSError, ValueError),
        decompressed(name, io.BytesIO(data)) as binary,
    ):
        while len(head) < HEAD_BYTES and (chunk := binary.read(min(READ_BYTES, HEAD_BYTES - len(head)))):
            head += chunk  # kept as it comes: the read past the cut raises
    return bytes(head)


def rewrite_repodata(path: Path, temp: Path, name: str) -> str | None:
    """Point the repodata file at `path` (called `name`: .json, .zst or .bz2) at pkgcache, replacing it through
    `temp` (blocking).

    Returns the `base_url` it dropped (what the upstream said, to fetch packages from), or None when the file sends
    clients nowhere else and is left as it is.
    """
    with path.open("rb") as raw, decompressed(name, raw) as source:
        head = _head_of(source)
        try:
            place = find_info(head, whole=len(head) < HEAD_BYTES)
        except Undecided:
            place = None
            undecided = True
        else:
            undecided = False
        if not undecided:
            if place is None or not sends_elsewhere(place.info):
                return None
            with _writer(temp, name) as out:
                out.write(head[: place.start])
                out.write(_ENCODE(pointing_here(place.info)).encode())
                out.write(head[place.end :])
                shutil.copyfileobj(source, out, READ_BYTES * 16)
            temp.replace(path)
            return _said(place.info)
    return _rewrite_whole(path, temp, name)


def _head_of(source: IO[bytes]) -> bytes:
    head = bytearray()
    while len(head) < HEAD_BYTES and (chunk := source.read(min(READ_BYTES, HEAD_BYTES - len(head)))):
        head += chunk
    return bytes(head)


def _said(info: dict[str, Any]) -> str:
    base_url = info.get("base_url")
    return base_url if isinstance(base_url, str) else ""


def _rewrite_whole(path: Path, temp: Path, name: str) -> str | None:
    """The rare document whose `info` is not in its first megabyte: found by reading it all, and when it must
    change, the document is written again member by member (repodata_filter: records re-encoded, same values)."""
    from pkgcache.conda.repodata_filter import FilterJob, filter_repodata

    # The readers below tell the compression from the file's name: the file is seen under its own name.
    source = temp.with_name(temp.name + "-" + name)
    text = temp.with_name(temp.name + "-repodata.json")
    try:
        source.hardlink_to(path)
        info = next((item.info for item in iter_repodata_file(source) if isinstance(item, Info)), None)
        if info is None or not sends_elsewhere(info):
            return None
        filter_repodata(source, text, None, FilterJob("", "", time.time()))
        with text.open("rb") as reader, _writer(temp, name) as out:
            shutil.copyfileobj(reader, out, READ_BYTES * 16)
    finally:
        source.unlink(missing_ok=True)
        text.unlink(missing_ok=True)
    temp.replace(path)
    return _said(info)


@contextlib.contextmanager
def _writer(path: Path, name: str) -> Iterator[IO[bytes]]:
    """A file at `path` written through the compression the name `name` says."""
    with path.open("wb") as raw:
        if name.endswith(".zst"):
            with zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).stream_writer(raw, closefd=False) as out:
                yield out  # type: ignore[misc]
        elif name.endswith(".bz2"):
            with bz2.BZ2File(raw, "wb") as out:
                yield out  # type: ignore[misc]
        else:
            yield raw


def package_base(repodata_url: str | None, base_url: str | None, from_giver: bool) -> str | None:
    """The folder URL to fetch a subdir's packages from on one upstream, for a repodata that said `base_url` (the
    dropped one, recorded in its sidecar): its own subdir (None) when it said none; a relative one holds for every
    upstream (mirrors copy the channel's layout); an absolute one only for the upstream that gave it (`from_giver`)."""
    if not base_url or repodata_url is None:
        return None
    resolved = resolve(repodata_url, base_url)
    if resolved == resolve(repodata_url, ""):
        return None
    split = urlsplit(base_url)
    if split.scheme or split.netloc:
        return resolved if from_giver else None
    return resolved
