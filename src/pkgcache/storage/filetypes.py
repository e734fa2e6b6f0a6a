"""What a well-formed file of a kind starts with (catches an error page served in a package's place), how a whole
one ends (catches a body cut short that looked whole, when no hash can), and the most a package file may be."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

from pkgcache import zip_records

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = (b"\x1f\x8b",)
# The most a package file (a wheel, an sdist, a conda package) may be, whatever its index says or does not say (PEP
# 503 HTML pages give no size): past it, a mirror's answer is refused as that mirror's bad answer, as its bytes
# arrive, and nothing of it is kept. The main public index caps a file at 1 GiB (the ceiling of its per-project
# limits); other indexes serve GPU builds of a few GB. 8 GiB leaves a few times the largest, while a
# mirror can no longer make one answer (a gzip-encoded stream of zeros, say) fill the disk. Index files have their
# own cap (conda/index_checks.MAX_INDEX_BYTES), provenance its own (pypi/upstream_index.MAX_PROVENANCE_BYTES).
MAX_PACKAGE_BYTES = 8 << 30


def max_package_size() -> int:
    """The cap on a package file's size (read when a download starts, so tests may lower it)."""
    return MAX_PACKAGE_BYTES


def magic_for(filename: str) -> tuple[bytes, ...]:
    """What a file of this name starts with; () when its kind has no fixed start (a plain tar, an lzma stream,
    `.tlz`/`.tar.lz`, which pip reads as xz/lzma and lzip writes as its own)."""
    lowered = filename.lower()
    if lowered.endswith((".whl", ".zip", ".egg", ".conda")):
        return ZIP_MAGIC
    if lowered.endswith((".tar.gz", ".tgz")):
        return GZIP_MAGIC
    if lowered.endswith((".bz2", ".tbz")):
        return (b"BZh",)
    if lowered.endswith((".tar.xz", ".txz")):
        return (b"\xfd7zXZ\x00",)
    if lowered.endswith(".zst"):
        return (b"\x28\xb5\x2f\xfd",)
    return ()


# Reads `size` bytes of the file at `offset` (raises OSError when it cannot).
ReadAt = Callable[[int, int], bytes]


class WholeCheck:
    """Whether a file is whole, as far as its kind can tell: for a file its index gives no hash for (a PEP 503 page
    without a fragment, or with an empty one), where a body cut short that looks whole (chunked, no length) would
    otherwise be kept. Fed the bytes as they are written (`feed`, in the thread that writes them), asked once they
    all are (`check`, which raises ValueError)."""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes written."""

    def check(self, read: ReadAt, size: int) -> None:
        """Raises ValueError unless the `size` bytes written (readable through `read`) are a whole file."""


class _ZipEnd(WholeCheck):
    """A wheel, a zip sdist, an egg, a .conda: its end record ends the file and its central directory is where that
    record says (zip_records.check_whole): a few reads at its end, nothing while it is written."""

    def check(self, read: ReadAt, size: int) -> None:
        zip_records.check_whole(read, size)


# The most a gzip stream is inflated, to see it end, for each byte of it: real sdists inflate 3-10 times. Past it
# (a file of zeros, or one built to take the CPU: deflate reaches about 1000 to 1) the file is not judged at all,
# as before this check, rather than refused: CPU stays proportional to the bytes received.
MAX_INFLATE_RATIO = 64
MIN_INFLATE_BUDGET = 64 << 20
# Inflated bytes are made, and dropped, at most this many at a time (a chunk of a bomb must not take the memory).
INFLATE_STEP = 1 << 20


class _Inflater(Protocol):
    """What `_GzipEnd` uses of a zlib decompression object."""

    @property
    def eof(self) -> bool: ...
    @property
    def unconsumed_tail(self) -> bytes: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, /, max_length: int = 0) -> bytes: ...


class _GzipEnd(WholeCheck):
    """A .tar.gz: a gzip stream inflated as it is written, which must reach its end (its trailer read, its CRC-32
    and length checked by zlib) by the file's last byte. A stream cut short never does; one that is not gzip
    (zlib's error) is refused too. Members after the first are followed; bytes after a member that do not start
    another one (zero padding, say) are not judged, as gzip readers skip them."""

    def __init__(self) -> None:
        self._inflater: _Inflater | None = zlib.decompressobj(wbits=31)
        self._between = b""  # bytes after a member ended, before it is known whether another one starts
        self._received = 0
        self._inflated = 0
        self._judged = True  # False once the check is given up on (past its budget, or foreign bytes after a member)
        self._error: str | None = None

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        data = chunk
        while data and self._judged and self._error is None:
            if self._inflater is None:
                self._between += data
                if len(self._between) < len(GZIP_MAGIC[0]):
                    return
                if not self._between.startswith(GZIP_MAGIC[0]):
                    self._judged = False
                    return
                data, self._between = self._between, b""
                self._inflater = zlib.decompressobj(wbits=31)
            data = self._inflate(self._inflater, data)

    def _inflate(self, inflater: _Inflater, data: bytes) -> bytes:
        """Inflate `data` into nothing; what follows the member when it ends there (else nothing)."""
        budget = max(MIN_INFLATE_BUDGET, MAX_INFLATE_RATIO * self._received)
        try:
            while data and not inflater.eof:
                if self._inflated > budget:
                    self._judged = False
                    return b""
                self._inflated += len(inflater.decompress(data, INFLATE_STEP))
                data = inflater.unconsumed_tail
        except zlib.error as exc:
            self._error = f"not a gzip stream ({exc})"
            return b""
        if not inflater.eof:
            return b""
        self._inflater = None
        return inflater.unused_data

    def check(self, read: ReadAt, size: int) -> None:
        if self._error is not None:
            raise ValueError(self._error)
        if self._judged and self._inflater is not None:
            raise ValueError("its gzip stream ends before its end: the file was cut short")


def whole_check_for(magic: tuple[bytes, ...]) -> WholeCheck | None:
    """The check of a whole file of the kind that starts with `magic` (`magic_for`'s), or None: a kind whose end
    says nothing cheap to check."""
    if magic == ZIP_MAGIC:
        return _ZipEnd()
    if magic == GZIP_MAGIC:
        return _GzipEnd()
    return None
