"""What pkgcache knows about a cached file that changes upstream, kept beside it as `<file>.meta` (JSON).

Which upstream gave the file, its validators (ETag, Last-Modified) and when it was last checked; or that every
upstream said it does not exist; or that pkgcache made it itself (and from what). A sidecar records the size and
mtime of the file it describes, so a sidecar left over from a crash between two renames is noticed.

`Sidecars` reads them through a small memory: a sidecar read less than a second ago is not read again, so what
another process (the writing worker) changed is seen within about that long, without a disk read per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pkgcache.cache_state import age_since
from pkgcache.storage.store import READER_RECHECK_SECONDS, CacheStore

META_SUFFIX = ".meta"
# An index file's `extra` note of the URL its copy was fetched from, after redirects: what relative URLs in it
# (a repodata's base_url, a shard index's) are relative to, on its upstream.
FETCHED_URL = "fetched_url"
# An index file's `extra` note of the node name of the parent pkgcache whose copy it is (whose policy made it).
PARENT_NODE = "parent"


@dataclass
class FileMeta:
    """What pkgcache knows about one changing file."""

    fetched_at: float
    upstream: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    missing: bool = False  # every upstream said 404
    size: int | None = None  # of the file this describes, to notice a sidecar that no longer matches it
    mtime_ns: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def age(self) -> float:
        return age_since(self.fetched_at, time.time())


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + META_SUFFIX)


class Sidecars:
    """Reading and writing sidecars, with the last read of each kept for about a second."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._known: dict[Path, tuple[FileMeta, float]] = {}

    async def meta_for(self, path: Path) -> FileMeta | None:
        """The file's metadata if the file and its sidecar agree; None when there is no usable copy."""
        known = self._known.get(path)
        # A file removed under the service (an import removes what is made from the repodata it replaced) is not
        # served from this memory, which would answer 404 "removed meanwhile": it is made or fetched again.
        recent = known is not None and time.monotonic() - known[1] <= READER_RECHECK_SECONDS
        if known is not None and recent and (known[0].missing or path.exists()):
            return known[0]
        meta = await asyncio.to_thread(self._load, path)
        if meta is None:
            self._known.pop(path, None)
        else:
            self._known[path] = (meta, time.monotonic())
        return meta

    def forget_all(self) -> None:
        """Read every sidecar again when next asked (another process, an import, replaced files and sidecars)."""
        self._known.clear()

    async def save(self, path: Path, meta: FileMeta) -> None:
        """Record `meta` for the file at `path` (as it is now on disk)."""
        await asyncio.to_thread(self._save, path, meta)
        self._known[path] = (meta, time.monotonic())

    def _save(self, path: Path, meta: FileMeta) -> None:
        if not meta.missing:
            try:
                stat = path.stat()
            except FileNotFoundError:
                return
            meta.size, meta.mtime_ns = stat.st_size, stat.st_mtime_ns
        self.store.write_json_atomic(sidecar_of(path), asdict(meta))

    def _load(self, path: Path) -> FileMeta | None:
        data = self.store.read_json(sidecar_of(path))
        if not isinstance(data, dict):
            return None
        try:
            meta = FileMeta(**data)
        except TypeError:
            return None
        if meta.missing:
            return meta
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (meta.size, meta.mtime_ns):
            # The file was replaced after this sidecar was written (a crash between the two renames): the copy
            # is still whole, but its validators are not its own, so it must be revalidated from scratch.
            return FileMeta(fetched_at=0.0, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return meta
