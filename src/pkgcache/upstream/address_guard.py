"""Where pkgcache may send a request: never, on a mirror's word alone, to an address inside its own network.

A mirror is not trusted. Its pages and indexes name the hosts pkgcache fetches from (a page's absolute file links,
a shard index's `shards_base_url`) and it may redirect anywhere; pkgcache sits inside an intranet, so without a
guard a hostile mirror could have it send requests to 127.0.0.1, the LAN or a cloud's metadata service.

The rule, for every request of the one client session (`pool.make_client_session`), each hop of a redirect too:
- a host:port the configuration names (an upstream's URLs, the proxy, `[upstream] allowed_hosts`) is allowed
  whatever it resolves to: private mirrors live on the LAN, and the tests' fakes on loopback;
- any other host is allowed only if every address it resolves to is public (`is_public_address`).

aiohttp resolves a name only when it connects to it directly, so two checks make the rule:
- `GuardedResolver` wraps the resolver: it judges the very addresses that are then connected to (no lookup of its
  own, so no window in which a name could resolve elsewhere), once per name and DNS-cache period (`ttl_dns_cache`);
- `guard_middleware` sees each request before it is sent: a literal IP address, which aiohttp connects to without
  resolving, and, behind a proxy, the target's name, which only the proxy resolves.
A refusal is a `RefusedAddress`, which the pool turns into an UpstreamError: the next mirror is asked.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from pkgcache.config import HostPort, format_host_entry, normalise_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges that carry an IPv4 address the packet ends up at (through a NAT64 gateway or a 6to4 relay): judged by
# that address, so that 64:ff9b::7f00:1 is as private as 127.0.0.1.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Never a mirror's: NAT64 prefixes of a local network (RFC 8215), deprecated IPv4-compatible addresses (::a.b.c.d,
# routed nowhere predictably) and Teredo tunnels (2001::/32), which older Pythons count as global.
_NEVER_PUBLIC_V6 = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("2001::/32"),
)
# Names no public host has (RFC 6761, 6762, 8375, ICANN's private-use .internal, and suffixes that stay out of the
# root by practice); only judged behind a proxy, where the name is all pkgcache sees.
_PRIVATE_SUFFIXES = (
    "localhost",
    "local",
    "internal",
    "home.arpa",
    "localdomain",
    "lan",
    "home",
    "corp",
    "intranet",
    "private",
    "test",
    "invalid",
)


class RefusedAddress(aiohttp.ClientConnectionError):
    """A request to a host on a private network that the configuration does not name: not sent."""

    def __init__(self, host: str, port: int | None, why: str) -> None:
        self.entry = format_host_entry(normalise_host(host), port)
        super().__init__(f"refused: {self.entry} {why}; add it to upstream.allowed_hosts if it is yours")


class TrustedHosts:
    """The host:port pairs (or hosts, any port) allowed whatever they resolve to."""

    def __init__(self, entries: Iterable[HostPort]) -> None:
        self._entries = frozenset(entries)

    def allows(self, host: str, port: int | None) -> bool:
        key = _host_key(host)
        return (key, port) in self._entries or (key, None) in self._entries


@functools.lru_cache(maxsize=4096)
def _host_key(host: str) -> str:
    # Asked on every request: the few hosts a cache talks to are normalised once.
    return normalise_host(host)


@functools.lru_cache(maxsize=4096)
def is_public_address(text: str) -> bool:
    """Whether an IP address (text, an IPv6 zone allowed) is globally routable: not loopback, private, link-local,
    shared, multicast, reserved, unspecified or documentation, nor an IPv6 form of one. Not an address: False."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    return _is_public(address)


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _is_public(embedded)
        if address.is_site_local or any(address in network for network in _NEVER_PUBLIC_V6):
            return False
    # is_global alone is not enough: it counts multicast as global, and its tables differ between Python releases.
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: ::ffff:a.b.c.d, NAT64's 64:ff9b::a.b.c.d, 6to4's 2002:AABB:CCDD::."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def looks_like_address(host: str) -> bool:
    """What aiohttp takes for an IP address and connects to without resolving (its own test, kept in step): a host
    with a colon, or only digits and dots. Such a host must then read as a public address."""
    return ":" in host or host.replace(".", "").isdigit()


def is_private_name(host: str) -> bool:
    """A name that no public host has: one label, a reserved or private-use suffix, or a number in disguise."""
    name = host.rstrip(".").lower()
    labels = name.split(".")
    if len(labels) < 2:
        return True
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return True  # 127.1, 0x7f.0.0.1...: resolvers read these as addresses; no top-level domain is a number
    return any(name == suffix or name.endswith("." + suffix) for suffix in _PRIVATE_SUFFIXES)


def check_target(trusted: TrustedHosts, host: str, port: int | None, *, proxied: bool) -> None:
    """Raise RefusedAddress for a request that must not be sent, as far as can be told before connecting.

    A name reached directly is left to `GuardedResolver`, which sees what it resolves to. Behind a proxy the proxy
    resolves the name, and pkgcache does not resolve it too: that answer may differ from the proxy's (another DNS,
    split horizon), a host behind a proxy often has no outside DNS at all (so a failed lookup could not refuse),
    and it would cost a lookup on the hot path. A proxied name is judged by itself; the proxy's own rules must do
    the rest."""
    if trusted.allows(host, port):
        return
    if looks_like_address(host):
        if not is_public_address(host):
            raise RefusedAddress(host, port, "is not a public address")
    elif proxied and is_private_name(host):
        raise RefusedAddress(host, port, "is a name only a private network has")


def guard_middleware(trusted: TrustedHosts) -> aiohttp.ClientMiddlewareType:
    """A client middleware checking each request (each hop of a redirect) before it is sent."""

    async def guard(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        check_target(trusted, request.url.raw_host or "", request.url.port, proxied=request.proxy is not None)
        return await handler(request)

    return guard


class GuardedResolver(AbstractResolver):
    """The system's resolver (as every program on the host: /etc/hosts, nsswitch), refusing a name that the
    configuration does not name when any address it has is not public."""

    def __init__(self, trusted: TrustedHosts, inner: AbstractResolver | None = None) -> None:
        self._trusted = trusted
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not self._trusted.allows(host, port):
            # Every address, not only the first: the connection may go to any of them.
            private = next((result["host"] for result in found if not is_public_address(result["host"])), None)
            if private is not None:
                raise RefusedAddress(host, port, f"resolves to a private address ({private})")
        return found

    async def close(self) -> None:
        await self._inner.close()
