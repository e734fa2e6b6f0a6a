"""Who answered: a pkgcache node's name and tier, as every answer of it says in two headers.

Every pkgcache answer carries `X-Pkgcache-Node` (the node's name) and, when one is set, `X-Pkgcache-Tier` (a label
shared by the nodes of one cluster or level, such as "central" or "office-sh"). They serve two readers: an operator
looking at a cluster or a chain of caches (which node answered this?), and a pkgcache whose upstream is another
pkgcache (a child over a parent), which recognises its parent by them (upstream/pool.py notes them per upstream).

Nothing here knows the configuration: config.py makes a NodeIdentity from `[server] node_name` and `tier`.
"""

from __future__ import annotations

import enum
import re
import socket
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import quote, unquote

NODE_HEADER = "X-Pkgcache-Node"
TIER_HEADER = "X-Pkgcache-Tier"
# On a 403 of the policy's (`policy`): the refusal is the node's verdict, not a fault. A child passes it on to its
# client as it is, without resting that node or asking another upstream, which would serve what the policy refused.
REFUSAL_HEADER = "X-Pkgcache-Refusal"
POLICY_REFUSAL = "policy"
# With it, the refusal's message (UTF-8, percent-encoded where it is not printable ASCII): read by a child when the
# answer has no body to read it from (a HEAD's: upstream/parent_verdicts.py) and its status line no reason (HTTP/2,
# or a proxy between that drops it).
REFUSAL_REASON_HEADER = "X-Pkgcache-Refusal-Reason"
MAX_REFUSAL_REASON_CHARS = 480
_REASON_SAFE = "".join(chr(code) for code in range(32, 127) if chr(code) != "%")
# On a project page (200 or 304) that lists files every one of which the node's policy refuses: a page the policy
# alone would leave empty is shown whole, each file refused when asked for (docs/policy.md). A child holding one of
# those files asks the node before serving it (upstream/parent_verdicts.py), and says the same of its own page.
FILES_REFUSED_HEADER = "X-Pkgcache-Files-Refused"
# On a 5xx the node answers because ITS upstreams failed for that request (none could answer, every one sent bad
# bytes, or every one rests): a failure of that request, not of the node, which answers the rest of its cache. A
# child fails that request over to its next upstream without resting the node (upstream/pool.py).
UPSTREAM_FAILED_HEADER = "X-Pkgcache-Upstream-Failed"
# On a 404: the node does not serve that at all (a conda channel it is not configured for), not "it does not exist".
# Its value is what is not served (the channel's path, such as "cloud/conda-forge") and its body the node's reason.
# A child relays that reason to its client, marked the same, and shows it with the node in its /-/status.
NOT_SERVED_HEADER = "X-Pkgcache-Not-Served"
NOT_SERVED_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# How fresh the copy a node answered with is (http/responses.py names it too), and, on a stale page, why it is.
CACHE_STATE_HEADER = "X-Pkgcache-Cache"
STALE_REASON_HEADER = "X-Pkgcache-Stale-Reason"

# Loops across pkgcaches (two offices listing each other as a backup, say). Each pkgcache's upstream requests carry
# its loop mark in their User-Agent (config.py, `ServerConfig.loop_mark`): "pkgcache/0.1 (+1a2b3c4d5e6f)"; one sent
# for a request that came from other pkgcaches adds their marks, nearest first: "pkgcache/0.1 (+1a2b3c4d5e6f) (via
# +0f1e2d3c4b5a)". The User-Agent is the one header every upstream is sent, a mirror or a pkgcache not known as one
# yet. A pkgcache whose own mark is in that chain (not first: that is its own request come straight back, a
# configuration that reaches itself), or whose chain holds MAX_CHAIN marks, answers 508 at once, marked
# LOOP_HEADER and UPSTREAM_FAILED_HEADER: the caller tries its next upstream and rests none (each answers other
# requests). Without it the request joined the download it was made for, and waited for itself until a timeout.
LOOP_HEADER = "X-Pkgcache-Loop"
MAX_CHAIN = 8
_CHAIN_PATTERN = re.compile(r"\((\+[0-9a-f]{12})\)(?: \(via (\+[0-9a-f]{12}(?: \+[0-9a-f]{12})*)\))?$")
# The chain of the request being answered (its sender's mark first), () when no pkgcache sent it: set by the request
# cycle (http/request_cycle.py) and read by the upstream pool for every request it sends on that request's behalf
# (downloads started for it inherit it, as asyncio tasks copy their context).
REQUEST_CHAIN: ContextVar[tuple[str, ...]] = ContextVar("pkgcache_request_chain", default=())

# What a node name or tier may hold: it goes into a response header and a Prometheus label as it is.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_OUTSIDE_PATTERN = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A pkgcache node: its name (unique within a cluster) and its tier (None when the operator set none)."""

    name: str
    tier: str | None = None

    def headers(self) -> dict[str, str]:
        """The headers every answer of this node carries."""
        if self.tier:
            return {NODE_HEADER: self.name, TIER_HEADER: self.tier}
        return {NODE_HEADER: self.name}

    def to_json(self) -> dict[str, str | None]:
        return {"node": self.name, "tier": self.tier}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> NodeIdentity | None:
        """The pkgcache node that sent an answer with these headers, or None when it was not a pkgcache."""
        name = headers.get(NODE_HEADER)
        if not name or not NAME_PATTERN.match(name):
            return None
        tier = headers.get(TIER_HEADER)
        return cls(name, tier if tier and NAME_PATTERN.match(tier) else None)


class CopyState(enum.Enum):
    """What a child makes of an index answer (a page, a repodata or shard index) by how its parent labelled it."""

    FRESH = "fresh"  # the parent's copy is within its time-to-live (or the answer is not a pkgcache's)
    # Past the parent's time-to-live while the parent revalidates it: kept, but as already expired, so that the
    # child's next request revalidates it (by then the parent usually has it fresh).
    EXPIRED = "expired"
    # The parent's offline view (only what it holds), or its last good copy served because its upstreams failed:
    # not the index. The child asks its next upstream for it; when none has it, it serves this answer and keeps
    # it as already expired, as above.
    NOT_AUTHORITATIVE = "not-authoritative"


def refusal_headers(message: str) -> dict[str, str]:
    """The headers of a policy refusal's 403: not to be cached, marked as the policy's, with its message."""
    line = " ".join(message.split())[:MAX_REFUSAL_REASON_CHARS]
    return {
        "Cache-Control": "no-store",
        REFUSAL_HEADER: POLICY_REFUSAL,
        REFUSAL_REASON_HEADER: quote(line, _REASON_SAFE),
    }


def refusal_reason(headers: Mapping[str, str]) -> str | None:
    """The message a policy refusal's headers carry (REFUSAL_REASON_HEADER), if any."""
    value = unquote(headers.get(REFUSAL_REASON_HEADER, "")).strip()
    return value[:MAX_REFUSAL_REASON_CHARS] or None


def copy_state(headers: Mapping[str, str]) -> CopyState:
    """How far a child may believe an index answer with these headers (see CopyState)."""
    if NodeIdentity.from_headers(headers) is None:
        return CopyState.FRESH
    state = headers.get(CACHE_STATE_HEADER, "").strip().lower()
    if state == "offline" or (state == "stale" and headers.get(STALE_REASON_HEADER)):
        return CopyState.NOT_AUTHORITATIVE
    if state == "stale":
        return CopyState.EXPIRED
    return CopyState.FRESH


def relays_its_upstream(headers: Mapping[str, str]) -> bool:
    """Whether an answer is a pkgcache's miss: a body the node sends as it fetches it from its own upstream (a file
    being downloaded, an index being fetched), so that a cut of it is most likely that upstream's fault, not the
    node's. Once its headers are out, a node whose upstream cuts the file, or whose upstream's bytes fail their
    check, can only cut its own answer (it holds back the file's last byte until the file is checked, then cuts).
    A child does not rest the node for such a cut (upstream/pool.py: `RelayCut`)."""
    if NodeIdentity.from_headers(headers) is None:
        return False
    return headers.get(CACHE_STATE_HEADER, "").strip().lower() == "miss"


def chain_of(user_agent: str) -> tuple[str, ...]:
    """The loop marks a pkgcache's upstream request carries in its User-Agent, its sender's first; () for any other
    client's."""
    if "(+" not in user_agent:
        return ()
    match = _CHAIN_PATTERN.search(user_agent)
    if match is None:
        return ()
    return (match.group(1), *(match.group(2) or "").split())


def with_chain(user_agent: str, chain: tuple[str, ...]) -> str:
    """A pkgcache's User-Agent (its own mark in it) for a request sent on behalf of one that came through `chain`."""
    return f"{user_agent} (via {' '.join(chain[:MAX_CHAIN])})" if chain else user_agent


def host_node_name() -> str:
    """This machine's host name, made fit for a header and a label (the default node name)."""
    name = _OUTSIDE_PATTERN.sub("-", socket.gethostname()).strip("-._")[:63]
    return name or "pkgcache"
