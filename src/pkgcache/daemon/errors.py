"""What goes wrong when running an instance in the background, in words an admin can act on."""

from __future__ import annotations

from pathlib import Path

from pkgcache.formatting import shell_quote


class DaemonError(Exception):
    """Something an admin must act on; the message says what."""


class AlreadyRunning(DaemonError):
    def __init__(self, data_dir: Path, pid: int | None, url: str | None = None) -> None:
        who = f"pid {pid}" if pid else "another process"
        serving = f", serving {url}/" if url else ""
        super().__init__(
            f"pkgcache is already running on data directory {data_dir} ({who}{serving}); "
            f"stop it first with: pkgcache stop --data-dir {shell_quote(data_dir)}"
        )
        self.pid = pid


class StartInProgress(DaemonError):
    """Another `pkgcache start` or `restart` is still starting an instance on this data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f" (pid {pid})" if pid else ""
        super().__init__(
            f"another `pkgcache start` or `restart`{who} is still starting pkgcache on data directory {data_dir}; "
            f"wait for it, then see: pkgcache status --data-dir {shell_quote(data_dir)}"
        )
        self.pid = pid


class ServesElsewhere(DaemonError):
    """The process launched runs, but with another port than the one it was launched for (its settings were not
    the ones given): it is not what was asked for, and it is not another instance either."""

    def __init__(self, pid: int, actual: object, expected: int) -> None:
        super().__init__(
            f"pkgcache (pid {pid}) started with port {actual}, not the port {expected} it was launched for "
            "(were its recorded settings rewritten meanwhile?)"
        )
        self.pid = pid


class Unhealthy(DaemonError):
    """The service runs and answers its health check, but says it cannot serve (e.g. too little free space)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"pkgcache started but is unhealthy: {reason}")
        self.reason = reason
