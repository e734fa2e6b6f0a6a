"""Which cached files are being sent right now, and when each was last served (for eviction's recency)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path


class FileUse:
    """Which cached files are being sent right now, and when each was last served.

    One per data directory (`CacheStore.file_use`), shared by what sends files and what evicts them. The lock is
    held by the event loop only for a dict update, and by the eviction thread for one check-and-unlink, so a file
    can never be removed between the check and the unlink while a send starts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sending: Counter[Path] = Counter()
        self._served: dict[Path, float] = {}

    def begin(self, path: Path) -> None:
        with self._lock:
            self._sending[path] += 1
            self._served[path] = time.time()

    def note_served(self, path: Path) -> None:
        """A file was served whole at once (read into memory): only its serve time matters."""
        with self._lock:
            self._served[path] = time.time()

    def end(self, path: Path) -> None:
        with self._lock:
            self._sending[path] -= 1
            if self._sending[path] <= 0:
                del self._sending[path]

    def is_sending(self, path: Path) -> bool:
        with self._lock:
            return path in self._sending

    def remove_if_idle(self, path: Path, idle_since: float) -> bool:
        """Unlink `path` unless it is being sent or was served after `idle_since` (blocking)."""
        with self._lock:
            if path in self._sending or self._served.get(path, 0.0) >= idle_since:
                return False
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            self._served.pop(path, None)
            return True

    def take_served_under(self, root: Path) -> dict[Path, float]:
        """Remove and return the serve times noted for files under `root` (to be written back as atimes)."""
        with self._lock:
            taken = {path: when for path, when in self._served.items() if path.is_relative_to(root)}
            for path in taken:
                del self._served[path]
            return taken

    def forget_under(self, root: Path) -> None:
        with self._lock:
            for path in [path for path in self._served if path.is_relative_to(root)]:
                del self._served[path]
