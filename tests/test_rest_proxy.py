"""The README's REST proxy (``@discordjs/proxy`` behind a few lines of node) outlives its clients.

Every bot process shares it, so one process killed mid-request must not take the others' REST
traffic down: stock ``createServer(proxyRequests(rest))`` exits on ERR_STREAM_PREMATURE_CLOSE.
The upstream here is a small real HTTP server that answers after a pause, long enough to hang up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests import rest_proxy

PATH = "/api/v10/channels/1/messages"


@pytest.fixture
async def slow_upstream() -> AsyncIterator[tuple[str, asyncio.Server]]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        await asyncio.sleep(0.5)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"id": "7"}')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/api", server


async def hang_up_mid_request(proxy_port: int, body: bytes, declared: int, path: str = PATH) -> None:
    """What a bot process does when it is killed: the socket closes, the answer is never read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n".encode() + body)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()


async def test_the_proxy_serves_others_after_a_client_dies_mid_request(slow_upstream: tuple[str, asyncio.Server]) -> None:
    upstream, _ = slow_upstream
    with rest_proxy.running_proxy(upstream) as api_base:
        port = httpx.URL(api_base).port
        assert port is not None
        await hang_up_mid_request(port, b"{}", 2)  # waiting for the upstream's answer
        await hang_up_mid_request(port, b'{"content":', 40)  # halfway through its own body
        await asyncio.sleep(1.0)  # the upstream answers the first one to a closed socket by now
        async with httpx.AsyncClient() as client:
            answer = await client.post(api_base + "/channels/1/messages", json={"content": "still here"}, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"id": "7"}


async def test_an_unreachable_upstream_is_a_502_not_an_empty_200(slow_upstream: tuple[str, asyncio.Server]) -> None:
    upstream, server = slow_upstream
    server.close()
    await server.wait_closed()
    with rest_proxy.running_proxy(upstream) as api_base:
        async with httpx.AsyncClient() as client:
            answer = await client.post(api_base + "/channels/1/messages", json={"content": "x"}, timeout=20)
        assert answer.status_code == 502


async def test_what_the_proxy_logs_of_a_lost_request_holds_no_interaction_token(slow_upstream: tuple[str, asyncio.Server]) -> None:
    upstream, _ = slow_upstream
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldA-token"  # lets anyone edit that member's replies for 15 min
    printed: list[str] = []
    with rest_proxy.running_proxy(upstream, printed) as api_base:
        port = httpx.URL(api_base).port
        assert port is not None
        await hang_up_mid_request(port, b"{}", 2, path=f"/api/v10/webhooks/42/{token}/messages/@original")
        await hang_up_mid_request(port, b"{}", 2, path=f"/api/v10/interactions/43/{token}/callback")
        await asyncio.sleep(1.0)
    logged = printed[0]
    assert "/webhooks/42/:token/messages/@original" in logged and "/interactions/43/:token/callback" in logged
    assert token not in logged


async def test_an_idle_connection_is_kept_longer_than_the_bots_pool_keeps_it(slow_upstream: tuple[str, asyncio.Server]) -> None:
    """aiohttp (discord.py's client) reuses an idle connection for 15 s; node closes one after
    5 s by default, so a reuse in between raced the close and failed with ECONNRESET."""
    upstream, _ = slow_upstream
    with rest_proxy.running_proxy(upstream) as api_base:
        port = httpx.URL(api_base).port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ask = f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}".encode()
        for _ in range(2):
            writer.write(ask)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            await asyncio.sleep(6.5)  # idle past node's default keep-alive of 5 s
        writer.close()
