"""An httpx transport that dials the address the URL guard vetted, not the name.

httpx resolves a host name itself when it connects, a moment after the guard resolved and
vetted it: a name with a zero TTL can answer a public address to the guard and 127.0.0.1 to
httpx (DNS rebinding). Here the connection asks the guard which address to dial
(``Guard.addresses_for``: the addresses it vetted for that host, or a fresh lookup vetted on
the spot), and connects to those IPs, one after the other until one answers (as the system's
own connect would, e.g. an unreachable IPv6 address first).

What still uses the name: httpcore passes the URL's host to ``start_tls`` as
``server_hostname``, so TLS sends it as SNI and verifies the certificate against it, and the
``Host`` header is the URL's. Only the TCP connect sees the IP.

httpx's ``AsyncHTTPTransport`` takes no network backend, so this builds the same
``httpcore.AsyncConnectionPool`` it would, plus ``network_backend``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import httpcore
import httpx

from ..urlguard import UnsafeURL

# httpx's own defaults, named once (a call in the signature would be evaluated at import anyway).
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class AddressSource(Protocol):
    async def addresses_for(self, host: str, port: int) -> list[str]: ...


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to ``source.addresses_for(host)`` instead of ``host``; refuses Unix sockets."""

    def __init__(self, source: AddressSource, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.source = source
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.source.addresses_for(host, port)
        except UnsafeURL as exc:
            # httpx maps httpcore's ConnectError to its own; the text says why.
            raise httpcore.ConnectError(f"refused to connect: {exc}") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses_for never returns an empty list
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("refused to connect: Unix sockets are not relays")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through :class:`PinnedBackend`.
    No proxies from the environment: a proxy would do its own lookup of the name."""

    def __init__(
        self,
        source: AddressSource,
        *,
        inner: httpcore.AsyncNetworkBackend | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        ssl_context = self._pool._ssl_context  # the context httpx made (certifi, verification on)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(source, inner),
        )
