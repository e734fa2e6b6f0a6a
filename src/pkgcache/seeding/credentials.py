"""The reader's user and password, for a pkgcache whose reads need one (`[access] users`).

Seed's own requests send them as a header; uv, which seed runs, gets them in its environment, and rattler through
a client that adds the header to requests to pkgcache's host. Never on a command line, which every account on the
machine can read, nor in a message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from pkgcache.config import Settings


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)

    def header(self) -> dict[str, str]:
        """`Authorization: Basic ...` for these credentials."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def reader_credentials(settings: Settings) -> Credentials | None:
    """The first configured reader's, when reads (status included) require one; None when reads are open."""
    users = settings.access.users
    if not users:
        return None
    user, password = next(iter(users.items()))
    return Credentials(user, password)
