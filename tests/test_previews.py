"""Live previews (streamed thoughts) and image-search grounding, through the relay double."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.relay import gemini, previews
from bot.relay.client import RelayClient
from bot.relay.send import checked
from bot.relay.sse import EventStream
from bot.relay.types import GenerationRequest, RelayConfig, RelayFailed
from tests.doubles.relay_double import Behaviour, RelayDouble

KEY = "sk-test-preview-key-0123456789abcdef"
PRO = "gemini-3-pro-image-preview"
FLASH31 = "gemini-3.1-flash-image-preview"
FLASH25 = "gemini-2.5-flash-image"
IMAGE = {"width": 64, "height": 48, "signature": "c2lnLWZpbmFs"}


@pytest.fixture
async def client():
    c = RelayClient(backoff_base=0.01, max_backoff=0.05, timeout=20)
    yield c
    await c.aclose()


def cfg(double: RelayDouble) -> RelayConfig:
    return RelayConfig(double.url, "gemini", "query", KEY)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


async def plain_and_streamed(double: RelayDouble, client: RelayClient, model: str = FLASH31) -> tuple[Any, Any, list[previews.Preview]]:
    request = GenerationRequest("a banana astronaut", model=model)
    double.enqueue(Behaviour("image", **IMAGE), Behaviour("image", **IMAGE))
    plain = await client.generate(cfg(double), request)
    seen: list[previews.Preview] = []
    with previews.receiving(seen.append):
        streamed = await client.generate(cfg(double), request)
    return plain, streamed, seen


async def test_streamed_drafts_arrive_in_order_and_the_history_is_the_plain_one(double, client) -> None:
    plain, streamed, seen = await plain_and_streamed(double, client)
    first, second = double.requests[-2:]
    assert first.path.endswith(":generateContent")
    assert second.path.endswith(":streamGenerateContent") and second.query["alt"] == "sse"
    assert second.json["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}
    assert "thinkingConfig" not in first.json["generationConfig"]
    drafts = [p for p in seen if p.image is not None]
    assert [p.draft for p in drafts] == [1, 2]
    assert drafts[0].image != drafts[1].image and all(size_of(p.image or b"") == (64, 48) for p in drafts)
    assert [p.summary for p in seen] == [
        "Planning the composition",
        "Planning the composition",
        "Refining the details",
        "Refining the details",
    ]
    assert streamed.image == double.images_served[-1] == plain.image
    assert gemini.materialize(streamed.model_turn) == gemini.materialize(plain.model_turn)
    assert all(p.get("thought") is not True for p in streamed.model_turn["parts"])


async def test_3_pro_streams_too_but_2_5_flash_does_not(double, client) -> None:
    _, _, seen = await plain_and_streamed(double, client, model=PRO)
    assert len([p for p in seen if p.image]) == 2
    seen.clear()
    with previews.receiving(seen.append):
        await client.generate(cfg(double), GenerationRequest("a fox", model=FLASH25))
    assert double.requests[-1].path.endswith(":generateContent") and seen == []


async def sse_body(double: RelayDouble) -> bytes:
    """The SSE answer exactly as the relay sends it, thoughts included."""
    body = gemini.build(GenerationRequest("a banana astronaut", model=FLASH31), [], None, thoughts=True)[0]
    double.enqueue(Behaviour("image", **IMAGE))
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{double.url}/v1beta/models/{FLASH31}:streamGenerateContent?alt=sse&key={KEY}", json=body)
    assert answer.headers["content-type"].startswith("text/event-stream")
    return answer.content


async def read_split(body: bytes, cuts: list[int]) -> tuple[Any, list[previews.Preview]]:
    seen: list[previews.Preview] = []
    stream = EventStream(on_event=previews.ThoughtReader(seen.append))
    bounds = [0, *cuts, len(body)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        await stream.feed(body[start:end])
    parsed = checked(gemini.parse)(stream.close())
    parsed.model_turn = previews.without_thoughts(parsed.model_turn)
    return parsed, seen


async def test_every_byte_boundary_of_a_draft_event_gives_the_same_answer(double, client) -> None:
    plain, _, _ = await plain_and_streamed(double, client)
    body = await sse_body(double)
    events = body.split(b"\r\n\r\n")
    # The second event is the first draft picture: cut it at every byte, and the stream once
    # more anywhere in each other event.
    start = len(events[0]) + 4
    end = start + len(events[1]) + 4
    assert b'"thought":true' in events[1] and b"inlineData" in events[1]
    expected_drafts: list[bytes] | None = None
    for cut in range(start, end + 1):
        others = [len(events[0]) // 2, end + len(events[2]) // 2, len(body) - 3]
        parsed, seen = await read_split(body, sorted({cut, *others}))
        drafts = [p.image for p in seen if p.image is not None]
        assert [p.draft for p in seen if p.image is not None] == [1, 2], cut
        expected_drafts = expected_drafts or drafts
        assert drafts == expected_drafts, cut
        assert parsed.image == plain.image, cut
        assert gemini.materialize(parsed.model_turn) == gemini.materialize(plain.model_turn), cut


async def test_a_relay_without_streaming_gets_one_plain_call(client) -> None:
    with RelayDouble(api_key=KEY, streaming=False) as double:
        double.default = Behaviour("image", **IMAGE)
        seen: list[previews.Preview] = []
        with previews.receiving(seen.append):
            result = await client.generate(cfg(double), GenerationRequest("a banana astronaut", model=FLASH31))
        refused, plain = double.requests
        assert refused.path.endswith(":streamGenerateContent") and refused.behaviour is None
        assert plain.path.endswith(":generateContent") and "thinkingConfig" not in plain.json["generationConfig"]
        # One picture made and paid for: the refusal consumed nothing.
        assert [r.behaviour for r in double.requests if r.behaviour is not None] == [Behaviour("image", **IMAGE)]
        assert result.image == double.images_served[-1] and seen == []


async def test_a_stream_endpoint_error_falls_back_but_a_bad_key_does_not(double, client) -> None:
    double.enqueue(Behaviour("error", status=400, message="streaming is not supported"), Behaviour("image", **IMAGE))
    with previews.receiving(lambda p: None):
        result = await client.generate(cfg(double), GenerationRequest("a fox", model=FLASH31))
    assert [r.path.rsplit(":", 1)[1] for r in double.requests] == ["streamGenerateContent", "generateContent"]
    assert result.image == double.images_served[-1]
    double.reset()
    with previews.receiving(lambda p: None), pytest.raises(RelayFailed) as caught:
        await client.generate(RelayConfig(double.url, "gemini", "query", "wrong-key"), GenerationRequest("a fox", model=FLASH31))
    assert caught.value.key == "error.auth" and len(double.requests) == 1


async def test_a_failing_preview_sink_costs_nothing(double, client) -> None:
    def broken(preview: previews.Preview) -> None:
        raise RuntimeError("the progress message is gone")

    double.enqueue(Behaviour("image", **IMAGE))
    with previews.receiving(broken):
        result = await client.generate(cfg(double), GenerationRequest("a fox", model=FLASH31))
    assert result.image == double.images_served[-1]


def test_thought_summary_is_one_line() -> None:
    assert previews.summarise("**Planning the composition**\n\nI'm working it out.") == "Planning the composition"
    assert previews.summarise("just thinking\nmore") == "just thinking"
    assert previews.summarise("**Composing** thinking about the light") == "Composing thinking about the light"
    assert len(previews.summarise("x" * 500)) == previews.SUMMARY_CHARS


# ---------------------------------------------------------------- image search


async def test_image_search_asks_both_search_types_and_reads_queries_and_pages(double, client) -> None:
    request = GenerationRequest("a timareta butterfly", model=FLASH31, grounding=True, image_search=True)
    result = await client.generate(cfg(double), request)
    tools = double.requests[-1].json["tools"]
    assert tools == [{"googleSearch": {"searchTypes": {"webSearch": {}, "imageSearch": {}}}}]
    assert result.image_queries == ["a timareta butterfly"]
    assert result.sources and all(s.uri.startswith("https://") and s.image_uri.startswith("https://images.") for s in result.sources)


async def test_web_search_alone_sends_the_plain_tool(double, client) -> None:
    result = await client.generate(cfg(double), GenerationRequest("weather", model=FLASH31, grounding=True))
    assert double.requests[-1].json["tools"] == [{"googleSearch": {}}]
    assert result.image_queries == [] and all(not s.image_uri for s in result.sources)


async def test_image_search_on_a_model_without_it_is_refused_before_sending(double, client) -> None:
    with pytest.raises(Exception) as caught:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO, grounding=True, image_search=True))
    assert getattr(caught.value, "key", "") == "invalid.image_search" and double.requests == []


def test_image_sources_keep_their_page_and_picture() -> None:
    candidate = json.loads(
        '{"groundingMetadata": {"imageSearchQueries": ["fox", 3, ""], "groundingChunks": ['
        '{"web": {"uri": "https://a.example/p", "title": "A"}},'
        '{"image": {"sourceUri": "https://a.example/p", "imageUri": "https://img.example/1.jpg"}},'
        '{"image": {"uri": "https://b.example/q", "imageUri": "javascript:alert(1)", "title": "B"}}]}}'
    )
    from bot.relay.grounding import image_queries, sources

    assert image_queries(candidate) == ["fox"]
    assert [(s.title, s.uri, s.image_uri) for s in sources(candidate)] == [
        ("A", "https://a.example/p", "https://img.example/1.jpg"),
        ("B", "https://b.example/q", ""),
    ]
