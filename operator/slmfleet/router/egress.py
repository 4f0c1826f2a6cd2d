"""Egress allow-list for external tiers, enforced where the connection is made.

A tenant writes an external tier's ``baseUrl``; without a policy, the router would call
whatever it names: cloud metadata (169.254.169.254), the API server, other teams'
in-cluster Services, over plain http. The policy (chart values ``router.egress``):

* the URL's scheme is https, unless ``allowHttp``;
* its host is on the allow-list (exact names, ``*.example.com`` for subdomains) or an
  IP literal inside an allowed CIDR; an empty allow-list allows nothing;
* every address the name resolves to is checked *at connect time*, and the connection
  goes to the checked address (no second lookup a DNS answer could change): loopback,
  link-local, private, shared, reserved, multicast and cluster-internal addresses are
  refused unless an allowed CIDR contains them or ``allowPrivate`` is set.

Proxies from the environment are ignored (a proxy would make the check meaningless) and
redirects are not followed. The reasons given never contain the URL: callers see
"destination not allowed", operators see the tier and policy in the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressDenied(Exception):
    """The destination is not allowed; the message never contains the URL."""


def _address(text: str) -> Address | None:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


@dataclass(frozen=True)
class EgressPolicy:
    allow_hosts: tuple[str, ...] = ()
    """Host names (case-insensitive) or ``*.suffix`` wildcards an external tier may use."""
    allow_cidrs: tuple[Network, ...] = ()
    """Address ranges that may be connected to, private ones included."""
    allow_http: bool = False
    """Allow plain http (credentials would cross the network in clear)."""
    allow_private: bool = False
    """Allow non-public addresses for allowed hosts (in-cluster gateways)."""
    cluster_cidrs: tuple[Network, ...] = ()
    """The cluster's Pod and Service ranges: refused unless an allowed CIDR has them."""

    @classmethod
    def parse(
        cls,
        hosts: Iterable[str] = (),
        cidrs: Iterable[str] = (),
        *,
        allow_http: bool = False,
        allow_private: bool = False,
        cluster_cidrs: Iterable[str] = (),
    ) -> EgressPolicy:
        return cls(
            tuple(h.strip().lower().rstrip(".") for h in hosts if h.strip()),
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()),
            allow_http,
            allow_private,
            tuple(
                ipaddress.ip_network(c.strip(), strict=False) for c in cluster_cidrs if c.strip()
            ),
        )

    def _host_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for allowed in self.allow_hosts:
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]) and len(host) > len(allowed) - 1:
                    return True
            elif host == allowed:
                return True
        return False

    def _in(self, addr: Address, networks: tuple[Network, ...]) -> bool:
        return any(addr.version == n.version and addr in n for n in networks)

    def check_url(self, url: str) -> tuple[str, int]:
        """(host, port) of an allowed URL; EgressDenied otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http"):
            raise EgressDenied("only https URLs are allowed")
        if parts.scheme == "http" and not self.allow_http:
            raise EgressDenied("plain http is not allowed (https only)")
        if parts.username is not None or parts.password is not None:
            raise EgressDenied("credentials in URLs are not allowed")
        host = parts.hostname or ""
        literal = _address(host)
        if not (self._host_listed(host) or (literal and self._in(literal, self.allow_cidrs))):
            raise EgressDenied("the destination is not on the egress allow-list")
        if literal is not None:
            self.check_address(literal)
        return host, parts.port or (443 if parts.scheme == "https" else 80)

    def check_address(self, addr: Address) -> None:
        """EgressDenied unless a connection to ``addr`` is allowed."""
        if self._in(addr, self.allow_cidrs):
            return
        if self._in(addr, self.cluster_cidrs):
            raise EgressDenied("cluster-internal addresses are not allowed")
        if addr.is_unspecified or addr.is_multicast:
            raise EgressDenied("the destination address is not allowed")
        if not addr.is_global and not self.allow_private:
            raise EgressDenied("loopback, link-local and private addresses are not allowed")


@dataclass
class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend: resolve, check every address, connect to a checked one."""

    policy: EgressPolicy
    inner: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def _addresses(self, host: str, port: int) -> list[Address]:
        literal = _address(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError("name resolution failed") from exc
        seen: list[Address] = []
        for info in infos:
            addr = _address(str(info[4][0]))
            if addr is not None and addr not in seen:
                seen.append(addr)
        return seen

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port)
        denied: EgressDenied | None = None
        for addr in addresses:
            try:
                self.policy.check_address(addr)
            except EgressDenied as exc:
                denied = exc
                continue
            return await self.inner.connect_tcp(
                str(addr), port, timeout, local_address, socket_options
            )
        raise httpcore.ConnectError(str(denied or EgressDenied("no usable address")))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)


class EgressTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection is checked.

    TLS still verifies the certificate against the URL's host name (httpcore passes it
    as server_hostname), whatever address the connection went to.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        limits: httpx.Limits = LIMITS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(policy),
        )


def client(policy: EgressPolicy) -> httpx.AsyncClient:
    """An httpx client for external tiers: checked connections, no environment proxies,
    no redirects."""
    return httpx.AsyncClient(
        transport=EgressTransport(policy), trust_env=False, follow_redirects=False
    )
