"""Describe: a picture becomes a prompt through a Gemini-format relay in text mode — the real
request against the relay double (which answers text), the parser against recorded answers."""

from __future__ import annotations

import base64

import pytest

from bot.describe import MAX_PROMPT, DescribeError, build_request, describe, describe_with, parse_answer
from bot.i18n import t
from bot.relay.client import RelayClient
from bot.relay.types import InputImage, RelayConfig, RelayFailed
from tests.conftest import make_image
from tests.doubles.relay_double import Behaviour, RelayDouble

KEY = "describe-test-key-0123456789"
MODEL = "gemini-3.1-flash-image-preview"
IMAGE = InputImage(make_image(64, 48), "image/png")


@pytest.fixture
async def client():
    async with RelayClient(backoff_base=0.01, max_backoff=0.05, timeout=20) as c:
        yield c


def relay(double: RelayDouble, dialect: str = "gemini", **kw: object) -> RelayConfig:
    return RelayConfig(double.url, dialect, "query" if dialect == "gemini" else "bearer", KEY, **kw)  # type: ignore[arg-type]


def answer(*parts: dict[str, object], **extra: object) -> dict[str, object]:
    return {"candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP"}], **extra}


async def test_the_relay_is_asked_for_text_about_the_picture_and_its_words_come_back(double: RelayDouble, client: RelayClient) -> None:
    double.enqueue(Behaviour("text_only", text="A red fox curled up in fresh snow, soft morning light, telephoto."))
    prompt = await describe(client, relay(double), MODEL, IMAGE, locale="zh-CN")
    assert prompt == "A red fox curled up in fresh snow, soft morning light, telephoto."
    (sent,) = double.requests
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent" and sent.key_ok
    body = sent.json
    assert body["generationConfig"]["responseModalities"] == ["TEXT"]
    (turn,) = body["contents"]
    assert "Simplified Chinese" in turn["parts"][0]["text"]
    assert base64.b64decode(turn["parts"][1]["inlineData"]["data"]) == IMAGE.data


async def test_the_relays_name_for_the_model_is_used(double: RelayDouble, client: RelayClient) -> None:
    double.enqueue(Behaviour("text_only", text="a lighthouse"))
    await describe(client, relay(double, model_aliases={MODEL: "nano-banana-2"}), MODEL, IMAGE)
    assert double.requests[0].path == "/v1beta/models/nano-banana-2:generateContent"


async def test_a_relay_of_another_dialect_is_refused_before_anything_is_sent(double: RelayDouble, client: RelayClient) -> None:
    for dialect in ("openai-images", "openai-chat"):
        with pytest.raises(DescribeError) as caught:
            await describe(client, relay(double, dialect, name="cheap"), MODEL, IMAGE)
        assert caught.value.key == "describe.dialect"
        assert "“cheap”" in t(caught.value.key, "zh-CN", **caught.value.params)
    assert double.requests == []


async def test_a_relay_failure_is_the_relay_clients_translated_error_with_no_key(double: RelayDouble, client: RelayClient) -> None:
    double.enqueue(Behaviour("error", status=500, message=f"upstream broke, key {KEY}"))
    with pytest.raises(RelayFailed) as caught:
        await describe(client, relay(double), MODEL, IMAGE)
    assert KEY not in str(caught.value)
    assert len(double.requests) == 1  # one attempt: a member waits on this


async def test_a_blocked_picture_says_why() -> None:
    with pytest.raises(DescribeError) as caught:
        parse_answer({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert caught.value.key == "describe.blocked"
    assert "PROHIBITED_CONTENT" in t(caught.value.key, "en", **caught.value.params)


@pytest.mark.parametrize(
    "data",
    [
        {"candidates": []},
        answer({"text": "thinking about it", "thought": True}),
        answer({"inlineData": {"mimeType": "image/png", "data": "AAAA"}}),
        answer({"text": "   "}),
    ],
)
def test_an_answer_without_words_is_empty_not_a_crash(data: object) -> None:
    with pytest.raises(DescribeError) as caught:
        parse_answer(data)
    assert caught.value.key == "describe.empty"


@pytest.mark.parametrize("data", [{"error": {"code": 500, "message": "x"}}, "a string", 7])
def test_a_broken_answer_is_a_failure(data: object) -> None:
    with pytest.raises(DescribeError) as caught:
        parse_answer(data)
    assert caught.value.key in ("describe.failed", "describe.empty")


def test_the_wrapping_models_add_is_taken_off_and_thoughts_skipped() -> None:
    data = answer(
        {"text": "Let me look.", "thought": True},
        {"text": '```\nPrompt: "a misty pine forest,\n  volumetric light"\n```', "thoughtSignature": "sig"},
    )
    assert parse_answer(data) == "a misty pine forest, volumetric light"


def test_a_streamed_answer_is_joined_snake_case_too() -> None:
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "a paper "}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "boat"}]}, "finish_reason": "STOP"}]},
    ]
    assert parse_answer(chunks) == "a paper boat"
    assert parse_answer({"candidates": [{"content": {"parts": [{"text": "snake"}]}}], "prompt_feedback": {}}) == "snake"


def test_a_long_or_key_bearing_answer_is_cut_and_redacted() -> None:
    text = parse_answer(answer({"text": f"{KEY} " + "word " * 400}), secrets=(KEY,))
    assert KEY not in text
    assert len(text) <= MAX_PROMPT and text.endswith("…")


def test_the_request_is_text_only_with_the_picture_inline() -> None:
    body = build_request(IMAGE)
    assert body["generationConfig"]["responseModalities"] == ["TEXT"]
    assert "English" in body["contents"][0]["parts"][0]["text"]
    assert body["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "image/png"


async def test_a_servers_relays_are_tried_in_order_gemini_ones_only(double: RelayDouble, client: RelayClient) -> None:
    double.enqueue(Behaviour("error", status=503, message="busy"), Behaviour("text_only", text="a tram in fog"))
    relays = [relay(double, "openai-chat", name="chat"), relay(double, name="first"), relay(double, name="second")]
    assert await describe_with(client, relays, MODEL, IMAGE) == "a tram in fog"
    assert [r.dialect for r in double.requests] == ["gemini", "gemini"]
    with pytest.raises(DescribeError) as caught:
        await describe_with(client, relays[:1], MODEL, IMAGE)
    assert caught.value.params == {"relay": "chat"}
