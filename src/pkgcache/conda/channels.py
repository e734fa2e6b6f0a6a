"""Which conda paths exist: channels, subdirs, and the kinds of files a client may ask for."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from pkgcache.conda_subdirs import KNOWN_SUBDIRS
from pkgcache.config import CondaUpstream
from pkgcache.storage.store import UnsafePath, check_segment

_SHARD = re.compile(r"^[0-9a-f]{64}\.msgpack\.zst$")
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.(conda|tar\.bz2)$")

# Files a subdir can hold that change over time. Everything here follows the index time-to-live.
SUBDIR_INDEX_FILES = frozenset(
    {
        "repodata.json",
        "repodata.json.zst",
        "repodata.json.bz2",
        "current_repodata.json",
        "current_repodata.json.zst",
        "current_repodata.json.bz2",
        "repodata_from_packages.json",
        "repodata_from_packages.json.zst",
        "repodata_from_packages.json.bz2",
        "run_exports.json",
        "run_exports.json.zst",
        "run_exports.json.bz2",
        "repodata.jlap",
        "repodata_shards.msgpack.zst",
        "patch_instructions.json",
    }
)
CHANNEL_INDEX_FILES = frozenset({"channeldata.json", "notices.json"})
SHARD_INDEX = "repodata_shards.msgpack.zst"


class FileKind(enum.Enum):
    INDEX = "index"
    PACKAGE = "package"


class UnknownPath(LookupError):
    """Not a file a conda channel can have; the message says why."""


@dataclass(frozen=True)
class Channel:
    """A served channel: `root` is "pkgs" or "cloud", `name` e.g. "main" or "conda-forge"."""

    root: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.root}/{self.name}"

    def upstream_url(self, upstream: CondaUpstream) -> str:
        """Where this channel lives on an upstream (with a trailing slash)."""
        base = upstream.pkgs_url if self.root == "pkgs" else upstream.cloud_url
        return f"{base}{self.name}/"


def check_subdir(subdir: str) -> str:
    if subdir not in KNOWN_SUBDIRS:
        raise UnknownPath(f"{subdir!r} is not a conda subdir ({', '.join(sorted(KNOWN_SUBDIRS))})")
    return subdir


def kind_of(filename: str) -> FileKind:
    """What a file in a subdir is; raises UnknownPath for anything a channel cannot hold."""
    try:
        check_segment(filename)
    except UnsafePath as exc:
        raise UnknownPath(str(exc)) from None
    if filename in SUBDIR_INDEX_FILES:
        return FileKind.INDEX
    if _PACKAGE_NAME.match(filename):
        return FileKind.PACKAGE
    raise UnknownPath(f"{filename!r} is not a conda package or index file")


def check_shard_name(name: str) -> str:
    if not _SHARD.match(name):
        raise UnknownPath(f"{name!r} is not a shard name (<sha256>.msgpack.zst)")
    return name


def media_type(filename: str) -> str:
    if filename.endswith(".json"):
        return "application/json"
    if filename.endswith(".zst"):
        return "application/zstd"
    if filename.endswith(".bz2"):
        return "application/x-bzip2"
    if filename.endswith(".jlap"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"
