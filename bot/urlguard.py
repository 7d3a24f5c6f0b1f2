"""Refuse relay URLs that would make the bot reach into its own network (SSRF).

Server admins type relay URLs; without a guard, "https://169.254.169.254/" or
"http://127.0.0.1:6379/" turns the bot into a proxy into the operator's machine or cloud
account. :func:`check_url` is called when a URL is entered and again before every request
to an untrusted relay (the relay client takes it as ``url_guard``), and for every image URL
such a relay hands back.

Refused unless the operator sets ``NB_ALLOW_PRIVATE_RELAYS=1`` (``allow_private=True``):
- any scheme but ``https``;
- hosts resolving to loopback, private (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10),
  link-local (169.254/16), multicast, unspecified, reserved or otherwise non-global addresses,
  IPv6 ::1, fc00::/7, fe80::/10, and IPv6 forms that embed such an IPv4 address
  (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64 ``64:ff9b::/96``);
- names that resolve to *any* such address (one bad address among good ones is enough).

Always refused, even when lifted: URLs with ``user:password@`` and cloud-metadata endpoints
(``metadata.google.internal``, ``169.254.169.254``, ``fd00:ec2::254``, …). A LAN relay is a
reasonable thing for an operator to allow; the metadata service never is.

DNS rebinding: a name with a zero TTL can answer a public address to the check and
127.0.0.1 to the HTTP client's own lookup a moment later. So the check and the connection
share one lookup: :class:`Guard` remembers the addresses it vetted for each host (for
:data:`PIN_TTL_S`), and the relay client's transport (``bot.relay.transport``) dials one of
those addresses - never the name - while TLS still sends the name (SNI) and verifies the
certificate against it. A host the guard has not seen is resolved and vetted right there,
at connect time. Redirects are followed by hand, each hop checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from .relay.types import InvalidRequest

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.oraclecloud.com",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task credentials
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "169.254.170.23",  # EKS Pod Identity agent
        "fd00:ec2::23",  # EKS Pod Identity agent over IPv6
        "168.63.129.16",  # Azure WireServer (platform agent, health probes)
    )
)

_BLOCKED_V4 = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.ip_network(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",  # deprecated IPv4-compatible addresses
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use NAT64
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated


class UnsafeURL(InvalidRequest):
    """A relay or image URL the bot will not connect to. ``reason`` is a machine code:
    ``scheme``, ``credentials``, ``no_host``, ``metadata``, ``private_address``, ``unresolvable``."""

    def __init__(self, reason: str, *, host: str = "", address: str = "") -> None:
        detail = f" ({host}" + (f" -> {address}" if address else "") + ")" if host else ""
        super().__init__(f"unsafe relay URL: {reason}{detail}", key=f"admin.urlguard.{reason}", host=host, address=address)
        self.reason = reason
        self.host = host
        self.address = address


def embedded_ipv4s(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may stand for (the tunnelling and translation forms).

    For the local-use NAT64 prefix both places an IPv4 address may sit are returned: RFC 6052
    puts it in bits 48-63 and 72-87 under a /48, and deployments also use a /96 inside it."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _TRANSLATED or ip in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _NAT64_LOCAL:
        packed = ip.packed
        return [ipaddress.IPv4Address(packed[6:8] + packed[9:11]), ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return [ip.teredo[1]]  # the client address; the server half is the relay's business
    return []


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the tunnelling forms."""
    found = embedded_ipv4s(ip)
    return found[0] if found else None


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4s(ip)
        if inner:
            return all(is_public(v4) for v4 in inner)
        if any(ip in net for net in _BLOCKED_V6):
            return False
    elif any(ip in net for net in _BLOCKED_V4):
        return False
    # The explicit lists above do not depend on the Python version's idea of is_private;
    # is_global then catches whatever registry-special range they miss.
    return ip.is_global and not ip.is_multicast


RESOLVE_TIMEOUT_S = 10.0


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, looked up in the default executor (off the loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    except TimeoutError:
        raise OSError(f"resolving {host} took longer than {RESOLVE_TIMEOUT_S:.0f} s") from None
    return [str(info[4][0]) for info in infos]


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0] if "%" in text else text)
    except ValueError:
        pass
    if text.replace(".", "").replace("x", "").replace("X", "").isalnum() and not text.endswith("."):
        # Legacy IPv4 spellings the C resolver accepts ("2130706433", "0x7f.1", "127.1"):
        # read them the way the HTTP client's getaddrinfo will, whatever resolver we use.
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def vet(host: str, addresses: list[IPAddress], *, allow_private: bool) -> None:
    """Raise :class:`UnsafeURL` unless every address ``host`` resolved to may be reached.
    Metadata addresses are refused whatever ``allow_private`` says."""
    for ip in addresses:
        inner = embedded_ipv4s(ip) if isinstance(ip, ipaddress.IPv6Address) else []
        if ip in METADATA_ADDRESSES or any(v4 in METADATA_ADDRESSES for v4 in inner):
            raise UnsafeURL("metadata", host=host, address=str(ip))
        if not allow_private and not is_public(ip):
            raise UnsafeURL("private_address", host=host, address=str(ip))


async def resolve_vetted(host: str, port: int, *, allow_private: bool, resolver: Resolver | None = None) -> list[IPAddress]:
    """The addresses ``host`` resolves to, all vetted; raises :class:`UnsafeURL` otherwise."""
    host = host.rstrip(".").lower()
    if host in METADATA_HOSTS:
        raise UnsafeURL("metadata", host=host)
    literal = _parse_ip(host.strip("[]"))
    if literal is not None:
        addresses = [literal]
    else:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise UnsafeURL("private_address", host=host, address="localhost")
        try:
            found = await (resolver or system_resolver)(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeURL("unresolvable", host=host) from exc
        addresses = [ip for ip in (_parse_ip(a) for a in found) if ip is not None]
        if not addresses:
            raise UnsafeURL("unresolvable", host=host)
    vet(host, addresses, allow_private=allow_private)
    return addresses


async def check_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> list[IPAddress]:
    """Raise :class:`UnsafeURL` unless ``url`` may be fetched; else the vetted addresses."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UnsafeURL("no_host") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not allow_private):
        raise UnsafeURL("scheme", host=parts.hostname or "")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeURL("no_host")
    return await resolve_vetted(host, port or (443 if scheme == "https" else 80), allow_private=allow_private, resolver=resolver)


# How long the addresses vetted for a host are dialled without looking the name up again.
PIN_TTL_S = 60.0


class Guard:
    """The relay client's ``url_guard``: checks a URL (``await guard(url)``) and pins the host
    to the addresses it vetted, which :meth:`addresses_for` hands to the transport at connect
    time (see the module docstring)."""

    def __init__(self, allow_private: bool, resolver: Resolver | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._clock = clock
        self._pins: dict[str, tuple[float, list[IPAddress]]] = {}

    async def __call__(self, url: str) -> None:
        addresses = await check_url(url, allow_private=self.allow_private, resolver=self.resolver)
        host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
        self._pin(host, addresses)

    def _pin(self, host: str, addresses: list[IPAddress]) -> None:
        now = self._clock()
        if len(self._pins) > 4096:  # forget the stale ones; the map stays small
            self._pins = {h: p for h, p in self._pins.items() if p[0] > now}
        self._pins[host] = (now + PIN_TTL_S, addresses)

    async def addresses_for(self, host: str, port: int) -> list[str]:
        """The addresses to dial for ``host``, in the resolver's order: the ones the guard
        vetted, never a fresh unvetted answer."""
        host = host.rstrip(".").lower()
        pinned = self._pins.get(host)
        if pinned is not None and pinned[0] > self._clock():
            addresses = pinned[1]
            vet(host, addresses, allow_private=self.allow_private)  # (the policy may not have changed; cheap)
        else:
            addresses = await resolve_vetted(host, port, allow_private=self.allow_private, resolver=self.resolver)
            self._pin(host, addresses)
        return [str(ip) for ip in addresses]


def make_guard(allow_private: bool, resolver: Resolver | None = None) -> Guard:
    """The ``url_guard`` for the relay client, bound to the operator's setting."""
    return Guard(allow_private, resolver)
