"""The sha256 of a whole bundle, taken as it streams past: export prints it, import checks it when given.

The manifest inside a bundle finds accidental damage, not tampering: whoever can edit the tar can edit its
manifest. A digest carried to the other side by another channel (read out, sent apart) covers that.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import IO

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleDigestError(ValueError):
    """A sha256 given for a bundle that is not one (64 hex digits)."""


def parse_sha256(text: str) -> str:
    """A sha256 as a user gives it: 64 hex digits, any case, or `sha256sum`'s line (digest first)."""
    words = text.strip().lower().removeprefix("sha256:").split()
    if not words or not _SHA256.fullmatch(words[0]):
        raise BundleDigestError(f"{text!r} is not a sha256 (64 hex digits)")
    return words[0]


class HashingWriter:
    """Writes through to `out`, hashing every byte."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.out.write(data)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class HashingReader:
    """Reads from `source`, hashing every byte; `drain` reads what the tar reader left (its end padding)."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.position += len(data)
        return data

    # The rest of what tarfile asks of a file object; a stream is read forwards only, and its owner closes it.
    def tell(self) -> int:
        return self.position

    def seek(self, position: int) -> int:
        raise io.UnsupportedOperation("a bundle is read as a stream")

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("a bundle is read, not written, here")

    def close(self) -> None:
        pass

    def drain(self, chunk: int = 1024 * 1024) -> None:
        while self.read(chunk):
            pass

    def hexdigest(self) -> str:
        return self.digest.hexdigest()
