"""Hostile relays against the relay client, through the relay double on loopback: every
answer is bounded in loop time, memory and what it may say (README "Security and limits")."""

from __future__ import annotations

import asyncio
import gzip
import resource
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.relay import inflate
from bot.relay.blob import RefusedAnswer
from bot.relay.client import RelayClient
from bot.relay.stream import Budget, StreamDecoder
from bot.relay.types import GenerationRequest, RelayConfig, RelayFailed
from tests.doubles import _hostile
from tests.doubles.relay_double import Behaviour, RelayDouble

KEY = "hostile-test-key-0123456789abcdef"


def rss_mb() -> float:
    """The process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class LoopLag:
    """The longest time the loop went without running a 1 ms ticker (the worst stall), and
    the highest resident memory seen meanwhile (sampled each tick)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.start_rss = rss_mb()
        self.peak_rss = self.start_rss
        self._task: asyncio.Task[None] | None = None

    @property
    def rss_growth(self) -> float:
        return self.peak_rss - self.start_rss

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.001)
            self.peak_rss = max(self.peak_rss, rss_mb())
            last = now

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def _relay(double: RelayDouble) -> RelayConfig:
    return RelayConfig(base_url=double.url, dialect="gemini", auth="query", api_key=KEY, name="hostile")


@pytest.fixture
def double() -> Any:
    with RelayDouble(api_key=KEY) as relay:
        yield relay


async def _refused(double: RelayDouble, attack: str) -> tuple[RelayFailed, LoopLag]:
    double.enqueue(Behaviour("hostile", attack=attack), Behaviour("hostile", attack=attack))
    async with RelayClient(backoff_base=0.01, timeout=60) as client:
        async with LoopLag() as lag:
            with pytest.raises(RelayFailed) as caught:
                await client.generate(_relay(double), GenerationRequest(prompt="a cat"))
    return caught.value, lag


@pytest.mark.parametrize("attack", ["junk_list", "million_parts", "deep_nesting"])
async def test_a_junk_answer_is_refused_in_bounded_loop_time_and_not_retried(double: RelayDouble, attack: str) -> None:
    # Found on main: 8 MiB of [{},{},...] stalled the loop 13.9 s; a million parts 7.3 s.
    _hostile.junk_list(), _hostile.million_parts()  # built before timing
    error, lag = await _refused(double, attack)
    worst = lag.worst
    assert error.key == "error.answer_refused", error
    assert error.retryable  # another relay may do better...
    assert len(double.requests) == 1  # ...but this one is not asked again
    assert worst < 0.05, f"the loop stalled {worst * 1000:.1f} ms"


async def test_stacked_gzip_is_refused_without_inflating_anything(double: RelayDouble) -> None:
    _hostile.stacked_gzip_bomb()
    error, lag = await _refused(double, "stacked_gzip_bomb")
    assert error.key == "error.answer_refused" and "gzip, gzip" in str(error)
    assert lag.rss_growth < 50
    assert lag.worst < 0.05
    assert len(double.requests) == 1


async def test_a_one_layer_gzip_bomb_stops_at_the_byte_budget(double: RelayDouble) -> None:
    _hostile.gzip_bomb()
    double.enqueue(Behaviour("hostile", attack="gzip_bomb"))
    async with RelayClient(backoff_base=0.01, timeout=60, max_answer_bytes=64 * 2**20) as client:
        async with LoopLag() as lag:
            with pytest.raises(RelayFailed) as caught:
                await client.generate(_relay(double), GenerationRequest(prompt="a cat"))
    assert caught.value.key == "error.answer_too_large"
    assert lag.rss_growth < 120  # 64 MiB of base64 -> 48 MB decoded; 512 MiB inflated would be far more
    assert lag.worst < 0.05
    assert len(double.requests) == 1


class _Raw(httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for at in range(0, len(self.body), 65536):
            yield self.body[at : at + 65536]


async def _served(body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A response as httpx hands it over, body not yet read (raw bytes in 64 KiB chunks)."""
    return httpx.Response(200, headers=headers, stream=_Raw(body))


async def test_inflate_keeps_every_piece_small_and_the_total_under_budget() -> None:
    bomb = zlib.compress(b"\0" * (32 * 2**20), 1)
    response = await _served(bomb, {"Content-Encoding": "deflate"})
    sizes = []
    with pytest.raises(inflate.TooBig):
        async for piece in inflate.body_pieces(response, 4 * 2**20):
            sizes.append(len(piece))
    assert max(sizes) <= inflate.PIECE and sum(sizes) <= 4 * 2**20


@pytest.mark.parametrize("encoding", ["gzip, gzip", "br", "zstd", "gzip, deflate", "compress"])
async def test_inflate_refuses_encodings_we_did_not_ask_for(encoding: str) -> None:
    response = await _served(b"{}", {"Content-Encoding": encoding})
    with pytest.raises(inflate.RefusedEncoding):
        async for _ in inflate.body_pieces(response, 2**20):
            pass


@pytest.mark.parametrize(
    "encoding,packed",
    [
        ("gzip", gzip.compress(b'{"ok":1}' * 1000)),
        ("deflate", zlib.compress(b'{"ok":1}' * 1000)),
        ("deflate", zlib.compress(b'{"ok":1}' * 1000)[2:-4]),  # raw deflate, as some servers send
        ("gzip", gzip.compress(b'{"ok":1}' * 500) + gzip.compress(b'{"ok":1}' * 500)),  # two members
        ("identity", b'{"ok":1}' * 1000),
    ],
)
async def test_inflate_reads_what_relays_really_send(encoding: str, packed: bytes) -> None:
    response = await _served(packed, {"Content-Encoding": encoding})
    assert b"".join([p async for p in inflate.body_pieces(response, 2**20)]) == b'{"ok":1}' * 1000


async def test_an_error_body_is_read_only_up_to_its_cap_even_gzipped() -> None:
    response = await _served(gzip.compress(b"x" * (50 * 2**20)), {"Content-Encoding": "gzip"})
    assert await inflate.read_capped(response, 4096) == b"x" * 4096


def test_the_decoder_budget_counts_values_and_text_across_decoders() -> None:
    budget = Budget(max_skeleton=10_000, max_tokens=100)
    StreamDecoder(budget=budget).feed(b"[" + b",".join([b"{}"] * 40) + b"]")
    with pytest.raises(RefusedAnswer):
        StreamDecoder(budget=budget).feed(b"[" + b",".join([b"{}"] * 40) + b"]")  # the same answer's next event
    with pytest.raises(RefusedAnswer):
        StreamDecoder(budget=Budget(max_skeleton=1000)).feed(b'{"a":"' + b"x " * 1000 + b'"}')
    # Picture base64 is not counted: a 1 MB picture passes a 10 KB skeleton budget.
    decoder = StreamDecoder(budget=Budget(max_skeleton=10_000))
    decoder.feed(b'{"data":"' + b"QUFB" * 2**18 + b'"}')
    assert len(decoder.close()["data"].data) == 3 * 2**18


async def test_an_event_stream_of_countless_tiny_events_is_refused_in_bounded_loop_time(double: RelayDouble) -> None:
    body = b"data: {}\n\n" * 400_000 + b": keepalive\n" * 400_000
    double.enqueue(Behaviour("raw", body=body, content_type="text/event-stream"))
    async with RelayClient(max_attempts=1) as client:
        async with LoopLag() as lag:
            with pytest.raises(RelayFailed) as caught:
                await client.generate(_relay(double), GenerationRequest(prompt="a cat"))
    assert caught.value.key == "error.answer_refused"
    assert lag.worst < 0.05, f"the loop stalled {lag.worst * 1000:.1f} ms"
