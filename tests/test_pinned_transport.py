"""No DNS rebinding: the connection goes to the address the guard vetted, TLS still checks
the name. Loopback only: the "public" answers below are never dialled (a recording backend
stands in for the network and refuses anything but loopback)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.relay.client import RelayClient
from bot.relay.transport import PinnedTransport
from bot.relay.types import GenerationRequest, RelayConfig, RelayFailed
from bot.urlguard import Guard, UnsafeURL, check_url, embedded_ipv4s, is_public
from tests.doubles.relay_double import Behaviour, RelayDouble

PUBLIC = "93.184.216.34"  # a public address: vetted, recorded, never dialled


class Recorder(httpcore.AsyncNetworkBackend):
    """The network as the transport sees it: records every address dialled; only loopback is
    really connected."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, int]] = []
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        self.dialled.append((host, port))
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"test network: {host} is not dialled")
        return await self.real.connect_tcp(host, port, timeout=timeout, local_address=local_address, socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Rebinding:
    """A resolver whose name answers ``first`` once, then ``then`` (zero TTL)."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first]
        self.then = then
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.answers.pop(0) if self.answers else self.then]


async def _listener() -> tuple[asyncio.Server, list[int]]:
    seen: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, seen


async def test_a_name_that_rebinds_to_loopback_is_dialled_at_the_address_that_was_checked() -> None:
    server, seen = await _listener()
    port = server.sockets[0].getsockname()[1]
    resolver = Rebinding(PUBLIC, "127.0.0.1")
    guard = Guard(allow_private=False, resolver=resolver)
    recorder = Recorder()
    url = f"https://rebind.example:{port}/v1beta/models"
    async with httpx.AsyncClient(transport=PinnedTransport(guard, inner=recorder)) as http:
        await guard(url)  # the check: a public address
        with pytest.raises(httpx.ConnectError):
            await http.get(url)  # the connection: the same address, not the name
    server.close()
    assert recorder.dialled == [(PUBLIC, port)]
    assert seen == []  # the loopback listener the name rebinds to never saw a connection
    assert resolver.calls == 1  # one lookup served both the check and the connection


async def test_an_unvetted_host_is_resolved_and_vetted_at_connect_time() -> None:
    recorder = Recorder()
    guard = Guard(allow_private=False, resolver=Rebinding("127.0.0.1", "127.0.0.1"))
    async with httpx.AsyncClient(transport=PinnedTransport(guard, inner=recorder)) as http:
        with pytest.raises(httpx.ConnectError, match="private_address"):
            await http.get("https://never-checked.example/")
    assert recorder.dialled == []


async def test_through_the_relay_client_the_request_reaches_the_vetted_address_and_a_rebind_to_metadata_is_refused() -> None:
    with RelayDouble(api_key="k" * 20) as double:
        port = int(double.url.rsplit(":", 1)[1].split("/")[0])
        guard = Guard(allow_private=True, resolver=Rebinding("127.0.0.1", "169.254.169.254"))
        relay = RelayConfig(base_url=f"http://relay.invalid:{port}", api_key="k" * 20, trusted=False, name="r")
        async with RelayClient(url_guard=guard, max_attempts=1) as client:
            result = await client.generate(relay, GenerationRequest(prompt="a cat"))
            with pytest.raises(RelayFailed) as caught:  # the name now answers the metadata address
                await client.generate(relay, GenerationRequest(prompt="a cat"))
        assert result.image and caught.value.key == "error.url_refused"
        # The name was never resolved by httpx (relay.invalid cannot resolve): the connection
        # went to the vetted 127.0.0.1 with the URL's own Host header.
        assert [r.headers["host"] for r in double.requests] == [f"relay.invalid:{port}"]


@pytest.mark.parametrize(
    "link", ["http://metadata.attacker.example/x.png", "http://[::ffff:169.254.169.254]/x.png", "http://168.63.129.16/x.png"]
)
async def test_a_picture_url_on_a_metadata_address_is_refused_even_with_private_relays_allowed(link: str) -> None:
    # Found on main: with private relays allowed, a returned image URL reached 169.254.169.254.
    names = {"relay.invalid": "127.0.0.1", "metadata.attacker.example": "169.254.169.254"}

    async def resolver(host: str, port: int) -> list[str]:
        return [names[host]]

    answer = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"fileData": {"mimeType": "image/png", "fileUri": link}}]}, "finishReason": "STOP"}
        ]
    }
    with RelayDouble(api_key="k" * 20) as double:
        port = int(double.url.rsplit(":", 1)[1].split("/")[0])
        double.enqueue(Behaviour("raw", body=json.dumps(answer)))
        relay = RelayConfig(base_url=f"http://relay.invalid:{port}", api_key="k" * 20, trusted=False, name="r")
        async with RelayClient(url_guard=Guard(allow_private=True, resolver=resolver), max_attempts=1) as client:
            with pytest.raises(RelayFailed) as caught:
                await client.generate(relay, GenerationRequest(prompt="a cat"))
    assert caught.value.key == "error.url_refused" and "metadata" in str(caught.value)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.170.23",
        "fd00:ec2::23",
        "168.63.129.16",
        "::ffff:169.254.169.254",
        "::ffff:0:169.254.169.254",  # IPv4-translated (RFC 2765)
        str(
            ipaddress.IPv6Address(ipaddress.IPv6Address("64:ff9b:1::").packed[:6] + bytes([169, 254, 0, 169, 254]) + bytes(5))
        ),  # RFC 6052 /48
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64, /96 layout
    ],
)
async def test_metadata_addresses_are_refused_even_when_private_relays_are_allowed(address: str) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return [address]

    with pytest.raises(UnsafeURL) as caught:
        await check_url("http://relay.example/", allow_private=True, resolver=resolver)
    assert caught.value.reason == "metadata"


@pytest.mark.parametrize("address", ["::ffff:0:127.0.0.1", "64:ff9b:1::7f00:1", "64:ff9b:1::a00:1", "::ffff:0:10.0.0.1"])
def test_embedded_private_ipv4_is_not_public(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert embedded_ipv4s(ip) and not is_public(ip)


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_still_sends_and_verifies_the_host_name(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "relay.example")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    names = {"relay.example": "127.0.0.1", "other.example": "127.0.0.1"}

    async def resolver(host: str, port: int) -> list[str]:
        return [names[host]]

    guard = Guard(allow_private=True, resolver=resolver)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    transport = PinnedTransport(guard)
    transport._pool._ssl_context = client_ctx  # trust the test certificate (verification stays on)
    async with httpx.AsyncClient(transport=transport) as http:
        ok = await http.get(f"https://relay.example:{port}/")
        assert ok.text == "ok"
        with pytest.raises(httpx.ConnectError):  # same IP, another name: the certificate does not match
            await http.get(f"https://other.example:{port}/")
    server.close()
    assert sni[0] == "relay.example"


async def test_every_vetted_address_is_tried_in_order_until_one_answers() -> None:
    # As the system's own connect does: an unreachable first address (often IPv6) is no failure.
    with RelayDouble(api_key="k" * 20) as double:
        port = int(double.url.rsplit(":", 1)[1].split("/")[0])

        async def resolver(host: str, port: int) -> list[str]:
            return ["192.0.2.1", "127.0.0.1"]

        recorder = Recorder()
        guard = Guard(allow_private=True, resolver=resolver)
        async with httpx.AsyncClient(transport=PinnedTransport(guard, inner=recorder)) as http:
            answer = await http.get(f"http://two.invalid:{port}/v1beta/models")
        assert answer.status_code and double.requests[-1].headers["host"] == f"two.invalid:{port}"  # the double answered
        assert recorder.dialled == [("192.0.2.1", port), ("127.0.0.1", port)]
