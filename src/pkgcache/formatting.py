"""Numbers as people read them (byte counts and durations, for the page, the CLI and the logs), and the words of
the commands we suggest, quoted as a shell needs them."""

from __future__ import annotations

import shlex

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(size: float) -> str:
    """`1536` → `1.5 KiB`; whole bytes below a KiB."""
    for unit in _BYTE_UNITS:
        if abs(size) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    """`3725` → `1 h 2 min`: the two largest units that matter."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def shell_quote(word: object) -> str:
    """A path or other argument of a command we print for pasting into a shell: quoted when a shell would split or
    expand it (`/srv/dir with spaces` → `'/srv/dir with spaces'`), as it is otherwise."""
    return shlex.quote(str(word))
