"""`pkgcache export`: cached files into one bundle (a tar with its manifest first; see manifest.py).

Files are hashed first (two threads: hashing releases the GIL), so the manifest can lead the tar; then copied into
it. A file that changes between the two passes (a page pkgcache refreshed meanwhile) stops the export with a
clear error rather than a bundle whose manifest lies. The bundle is written beside its name and renamed into place
when whole, so a bundle that exists is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pkgcache import __version__

from .digests import HashingWriter
from .manifest import MANIFEST_NAME, Entry, Manifest, bundle_order, kind_of

COPY_BUFFER = 1 << 20
HASH_THREADS = 2

Progress = Callable[[int], None]


class ExportError(Exception):
    """The bundle could not be written; nothing is left under its name."""


@dataclass(frozen=True)
class ExportResult:
    manifest: Manifest
    seconds: float
    bundle_bytes: int
    sha256: str  # of the whole bundle, for the other side to check (bundle/digests.py)


def hash_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def build_manifest(data_dir: Path, paths: Iterable[str], *, since: float | None, inputs: list[str]) -> Manifest:
    """Stat and hash every file (those gone meanwhile are left out), in bundle order."""
    ordered = sorted(set(paths), key=bundle_order)

    def entry(path: str) -> Entry | None:
        full = data_dir / path
        try:
            before = full.stat()
            digest = hash_file(full)
            after = full.stat()
        except FileNotFoundError:
            return None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            raise ExportError(f"{path} changed while it was read: run the export again")
        return Entry(path, after.st_size, digest, after.st_mtime_ns, kind_of(path))

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        entries = [e for e in pool.map(entry, ordered) if e is not None]
    return Manifest(entries, time.time(), __version__, since, inputs)


def write_bundle(data_dir: Path, manifest: Manifest, out: HashingWriter, progress: Progress | None = None) -> None:
    """The tar: the manifest, then every file as the manifest lists it."""
    # copybufsize is TarFile's, which tarfile.open passes on; typeshed's overloads of open leave it out.
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFFER
    ) as tar:
        raw = manifest.to_json()
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size, info.mtime, info.mode = len(raw), int(manifest.created_at), 0o644
        tar.addfile(info, io.BytesIO(raw))
        for entry in manifest.files:
            _add_file(tar, data_dir, entry)
            if progress is not None:
                progress(entry.size)


def _add_file(tar: tarfile.TarFile, data_dir: Path, entry: Entry) -> None:
    full = data_dir / entry.path
    try:
        handle = full.open("rb")
    except FileNotFoundError:
        raise ExportError(f"{entry.path} was removed during the export (evicted?): run the export again") from None
    with handle:
        stat = os.fstat(handle.fileno())
        if (stat.st_size, stat.st_mtime_ns) != (entry.size, entry.mtime_ns):
            raise ExportError(f"{entry.path} changed during the export: run the export again")
        info = tarfile.TarInfo(entry.path)
        info.size, info.mode = entry.size, 0o644
        info.mtime = entry.mtime_ns // 1_000_000_000  # to the nanosecond in the manifest
        tar.addfile(info, handle)


def export_to(
    data_dir: Path, manifest: Manifest, destination: Path | None, progress: Progress | None = None
) -> ExportResult:
    """Write the bundle to `destination` (a file, renamed into place when whole) or to stdout (None)."""
    started = time.monotonic()
    if destination is None:
        import sys

        stream = HashingWriter(sys.stdout.buffer)
        write_bundle(data_dir, manifest, stream, progress)
        return ExportResult(manifest, time.monotonic() - started, 0, stream.hexdigest())
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        with partial.open("wb") as out:
            stream = HashingWriter(out)
            write_bundle(data_dir, manifest, stream, progress)
        os.replace(partial, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return ExportResult(manifest, time.monotonic() - started, destination.stat().st_size, stream.hexdigest())
