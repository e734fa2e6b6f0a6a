"""The guard against private addresses (upstream/address_guard.py): which addresses are public, which targets a
request may have, and what the resolver lets through. Its effect on the service: tests/test_private_links.py."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from pkgcache.config import ConfigError, load_settings
from pkgcache.upstream.address_guard import (
    GuardedResolver,
    RefusedAddress,
    TrustedHosts,
    check_target,
    is_private_name,
    is_public_address,
)

PRIVATE = [
    # IPv4: this network, loopback, the LAN ranges (and their edges), link-local (cloud metadata), shared (CGNAT),
    # documentation, benchmarking, multicast, reserved, broadcast.
    "0.0.0.0",
    "0.1.2.3",
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.10",
    "169.254.169.254",
    "100.64.0.1",
    "192.0.2.7",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6: loopback, unspecified, link-local (with a zone), unique local, site-local, multicast, documentation.
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    # IPv6 forms of private IPv4 addresses: mapped, NAT64 (well-known and local prefixes), 6to4, IPv4-compatible.
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::808:808",
    "2002:7f00:1::1",
    "2002:c0a8:101::1",
    "::127.0.0.1",
    "::8.8.8.8",
    # Teredo: a tunnel, never a mirror's address.
    "2001::1",
    # Not addresses at all (aiohttp would still connect to some of these as numbers).
    "127.1",
    "2130706433",
    "localhost",
    "",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "93.184.216.34",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", PRIVATE)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(address)


TRUSTED = TrustedHosts([("127.0.0.1", 8080), ("mirror.lan", None), ("fd00::5", 3141)])


def test_configured_hosts_pass_whatever_their_address() -> None:
    check_target(TRUSTED, "127.0.0.1", 8080, proxied=False)
    check_target(TRUSTED, "MIRROR.lan.", 1234, proxied=True)  # a host without a port: every port
    check_target(TRUSTED, "fd00:0:0::5", 3141, proxied=False)  # an address in another spelling is the same one


def test_a_private_literal_address_is_refused_on_another_port_or_behind_a_proxy() -> None:
    with pytest.raises(RefusedAddress, match=r"refused: 127\.0\.0\.1:8081 is not a public address; add it to"):
        check_target(TRUSTED, "127.0.0.1", 8081, proxied=False)
    with pytest.raises(RefusedAddress, match=r"refused: \[::1\]:80 "):
        check_target(TRUSTED, "::1", 80, proxied=True)
    with pytest.raises(RefusedAddress, match=r"169\.254\.169\.254:80"):
        check_target(TRUSTED, "169.254.169.254", 80, proxied=False)
    check_target(TRUSTED, "8.8.8.8", 80, proxied=False)
    check_target(TRUSTED, "2001:4860:4860::8888", 443, proxied=True)


def test_a_name_is_left_to_the_resolver_unless_a_proxy_resolves_it() -> None:
    check_target(TRUSTED, "localhost", 80, proxied=False)  # GuardedResolver judges what it resolves to
    for name in ("localhost", "metadata.google.internal", "nas.local", "router.home.arpa", "gitlab", "0x7f.1"):
        assert is_private_name(name), name
        with pytest.raises(RefusedAddress, match="is a name only a private network has"):
            check_target(TRUSTED, name, 80, proxied=True)
    with pytest.raises(RefusedAddress, match="is not a public address"):
        check_target(TRUSTED, "127.1", 80, proxied=True)  # a number: aiohttp would take it for an address
    for name in ("files.example.org", "mirrors.example.edu.cn", "pkgs.example.com."):
        assert not is_private_name(name), name
        check_target(TRUSTED, name, 443, proxied=True)


class _FixedResolver(AbstractResolver):
    """Answers every name with the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


def _resolve(resolver: AbstractResolver, host: str, port: int) -> list[str]:
    return [result["host"] for result in asyncio.run(resolver.resolve(host, port))]


def test_the_resolver_refuses_a_name_with_any_private_address() -> None:
    """Every address counts: a name resolving to one public and one private address could be connected to either."""
    mixed = GuardedResolver(TRUSTED, _FixedResolver("93.184.216.34", "10.0.0.7"))
    with pytest.raises(RefusedAddress, match=r"refused: files\.example\.org:80 resolves to a private address \(10"):
        _resolve(mixed, "files.example.org", 80)
    public = GuardedResolver(TRUSTED, _FixedResolver("93.184.216.34", "2606:4700:4700::1111"))
    assert _resolve(public, "files.example.org", 80) == ["93.184.216.34", "2606:4700:4700::1111"]
    lan = GuardedResolver(TRUSTED, _FixedResolver("10.0.0.7"))
    assert _resolve(lan, "mirror.lan", 8443) == ["10.0.0.7"]  # configured: its address does not matter


def test_the_system_resolver_is_judged_too() -> None:
    """localhost comes from /etc/hosts: no network needed."""

    async def resolve() -> None:
        await GuardedResolver(TrustedHosts([])).resolve("localhost", 80)

    with pytest.raises(RefusedAddress, match="localhost:80 resolves to a private address"):
        asyncio.run(resolve())


def test_allowed_hosts_are_read_from_the_file_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(None, upstream={"allowed_hosts": ["Files.Intranet:8080", "10.1.2.3", "[FD00::5]:81"]})
    assert settings.upstream.allowed_hosts == ["files.intranet:8080", "10.1.2.3", "[fd00::5]:81"]
    trusted = settings.trusted_upstream_hosts()
    assert {("files.intranet", 8080), ("10.1.2.3", None), ("fd00::5", 81)} <= trusted
    monkeypatch.setenv("PKGCACHE_UPSTREAM__ALLOWED_HOSTS", "files.intranet:8080, fd00::5")
    assert load_settings().upstream.allowed_hosts == ["files.intranet:8080", "fd00::5"]


def test_the_configured_upstreams_and_proxy_are_trusted() -> None:
    settings = load_settings(
        None,
        pypi={"upstreams": [{"name": "lan", "url": "http://10.0.0.5:3141/simple/", "files_url": "http://files.lan/"}]},
        conda={"upstreams": ["https://conda.lan:8443/anaconda/"]},
        upstream={"proxy": "http://proxy.lan:3128"},
    )
    assert settings.trusted_upstream_hosts() == {
        ("10.0.0.5", 3141),
        ("files.lan", 80),
        ("conda.lan", 8443),
        ("proxy.lan", 3128),
    }


@pytest.mark.parametrize("entry", ["http://files.intranet/", "files.intranet:http", "user@host", "a b", ""])
def test_an_allowed_host_that_is_no_host_is_a_clear_error(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.allowed_hosts.*is not a host or host:port"):
        load_settings(None, upstream={"allowed_hosts": [entry]})
