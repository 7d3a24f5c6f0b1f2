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

DNS rebinding — what is and isn't covered:
- Covered: names that *statically* point inside (``10.0.0.5.nip.io``, an A record to
  127.0.0.1), numeric tricks (``2130706433``, ``0x7f.1``, ``127.1`` resolve through the same
  getaddrinfo the HTTP client uses), and names that change their answer *between* requests:
  the guard runs again before each request, not only when the URL was saved.
- Not covered: a name with a zero TTL answering a public address to our lookup and a private
  one to the HTTP client's own lookup a few milliseconds later. Closing that gap needs the
  connection pinned to the vetted address (a transport that dials the checked IP while keeping
  SNI/Host); the relay client does not do that today. Redirects are another way round the
  guard: the relay client must not follow them for untrusted relays (or check every hop).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Awaitable, Callable
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


class UnsafeURL(InvalidRequest):
    """A relay or image URL the bot will not connect to. ``reason`` is a machine code:
    ``scheme``, ``credentials``, ``no_host``, ``metadata``, ``private_address``, ``unresolvable``."""

    def __init__(self, reason: str, *, host: str = "", address: str = "") -> None:
        detail = f" ({host}" + (f" -> {address}" if address else "") + ")" if host else ""
        super().__init__(f"unsafe relay URL: {reason}{detail}", key=f"admin.urlguard.{reason}", host=host, address=address)
        self.reason = reason
        self.host = host
        self.address = address


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the tunnelling forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client address; the server half is the relay's business
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
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
    except asyncio.TimeoutError:
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


async def check_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Raise :class:`UnsafeURL` unless ``url`` may be fetched. Returns None when it may."""
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
    if host in METADATA_HOSTS:
        raise UnsafeURL("metadata", host=host)

    literal = _parse_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise UnsafeURL("private_address", host=host, address="localhost")
        try:
            found = await (resolver or system_resolver)(host, port or (443 if scheme == "https" else 80))
        except (OSError, UnicodeError) as exc:
            raise UnsafeURL("unresolvable", host=host) from exc
        addresses = [ip for ip in (_parse_ip(a) for a in found) if ip is not None]
        if not addresses:
            raise UnsafeURL("unresolvable", host=host)

    for ip in addresses:
        inner = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if ip in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
            raise UnsafeURL("metadata", host=host, address=str(ip))
        if not allow_private and not is_public(ip):
            raise UnsafeURL("private_address", host=host, address=str(ip))


def make_guard(allow_private: bool, resolver: Resolver | None = None) -> Callable[[str], Awaitable[None]]:
    """The ``url_guard`` callable for the relay client, bound to the operator's setting."""

    async def guard(url: str) -> None:
        await check_url(url, allow_private=allow_private, resolver=resolver)

    return guard
