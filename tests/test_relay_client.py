"""The relay client against a real relay double on 127.0.0.1: every dialect x auth style,
every answer variant, every fault, every bad input."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import io
import json
import logging
import socket
import traceback
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.i18n import catalog, t
from bot.relay import gemini as _gemini
from bot.relay import openai_chat as _chat
from bot.relay import openai_images as _images
from bot.relay.answer import AnswerError, BrokenAnswer
from bot.relay.blob import Blob, DecodeError
from bot.relay.client import RelayClient
from bot.relay.gateway_errors import retry_after_seconds
from bot.relay.sse import EventStream
from bot.relay.stream import THRESHOLD
from bot.relay.types import (
    AUTH_STYLES,
    DIALECTS,
    GenerationRequest,
    InputImage,
    InvalidRequest,
    NoImage,
    RelayConfig,
    RelayError,
    RelayFailed,
    RelayTimeout,
)
from tests.conftest import make_image
from tests.doubles.relay_double import Behaviour, RelayDouble, gemini_answer_body, huge_picture

KEY = "sk-test-relay-key-0123456789abcdef"
PRO = "gemini-3-pro-image-preview"
FLASH31 = "gemini-3.1-flash-image-preview"
FLASH25 = "gemini-2.5-flash-image"
SMALL = {"width": 64, "height": 48}


@pytest.fixture
async def client():
    c = RelayClient(backoff_base=0.01, max_backoff=0.05, timeout=20)
    yield c
    await c.aclose()


def cfg(double: RelayDouble, dialect: str = "gemini", auth: str = "query", key: str = KEY, **kw: Any) -> RelayConfig:
    return RelayConfig(double.url, dialect, auth, key, **kw)  # type: ignore[arg-type]


def png(width: int = 40, height: int = 30, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    return make_image(width, height, "PNG", color)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_data_url(url: str) -> tuple[str, bytes]:
    head, _, data = url.partition(",")
    return head[5:].split(";")[0], base64.b64decode(data)


# --- dialect x auth -------------------------------------------------------------------------

AUTHS = AUTH_STYLES


@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_every_dialect_and_auth_style_delivers_the_relays_picture(double, client, dialect, auth) -> None:
    result = await client.generate(cfg(double, dialect, auth), GenerationRequest("a red fox", model=PRO))
    seen = double.requests[-1]
    assert (seen.dialect, seen.auth_style, seen.key_ok) == (dialect, auth, True)
    assert result.image == double.images_served[-1]
    assert (result.mime_type, result.width, result.height) == ("image/png", 64, 48)
    assert result.model == PRO
    assert result.usage.total_tokens and result.usage.total_tokens > 0
    # The key travels only where the auth style says.
    if auth != "query":
        assert "key" not in seen.query
    if auth != "bearer":
        assert "authorization" not in seen.headers


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_wrong_key_is_an_auth_failure_that_is_not_retried(double, client, dialect) -> None:
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double, dialect, "bearer", key="sk-wrong-key-000000000000"), GenerationRequest("a fox", model=PRO))
    err = info.value
    assert err.key == "error.auth"
    assert err.status == (400 if dialect == "gemini" else 401)
    assert ("API key not valid" if dialect == "gemini" else "Incorrect API key") in err.relay_message
    assert err.retryable  # another relay, with its own key, may work
    assert len(double.requests) == 1


# --- Gemini request shape -------------------------------------------------------------------


async def test_gemini_request_is_camel_case_with_image_config(double, client) -> None:
    await client.generate(
        cfg(double), GenerationRequest("a fox", model=PRO, aspect_ratio="16:9", size="2k", images=[InputImage(png(), "image/png")])
    )
    body = double.requests[-1].json
    assert body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
    }
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a fox"}, {"inlineData": {"mimeType": "image/png", "data": b64(png())}}]}
    ]
    assert "tools" not in body


async def test_gemini_31_flash_options_512_thinking_grounding(double, client) -> None:
    await client.generate(
        cfg(double), GenerationRequest("a fox", model=FLASH31, aspect_ratio="1:8", size="512px", thinking="High", grounding=True)
    )
    body = double.requests[-1].json
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:8", "imageSize": "512"}
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH", "includeThoughts": False}
    assert body["tools"] == [{"googleSearch": {}}]


async def test_gemini_25_flash_sends_no_size(double, client) -> None:
    await client.generate(cfg(double), GenerationRequest("a fox", model=FLASH25, aspect_ratio="4:3"))
    assert double.requests[-1].json["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3"}
    assert double.requests[-1].path == f"/v1beta/models/{FLASH25}:generateContent"


async def test_512_refused_by_a_relay_is_resent_as_512px_once(double, client) -> None:
    double.enqueue(Behaviour("error", status=400, message="Invalid value at 'generation_config.image_config.image_size' (\"512\")"))
    result = await client.generate(cfg(double), GenerationRequest("an icon", model=FLASH31, size="512"))
    sizes = [r.json["generationConfig"]["imageConfig"]["imageSize"] for r in double.requests]
    assert sizes == ["512", "512px"]
    assert result.image == double.images_served[-1]


async def test_512_refused_with_a_generic_message_is_resent_too(double, client) -> None:
    double.enqueue(Behaviour("error", status=400), Behaviour("error", status=400))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("an icon", model=FLASH31, size="512"))
    assert info.value.status == 400
    sizes = [r.json["generationConfig"]["imageConfig"]["imageSize"] for r in double.requests]
    assert sizes == ["512", "512px"]  # once, not more


async def test_other_400s_are_not_resent(double, client) -> None:
    double.enqueue(Behaviour("error", status=400, message="Request contains an invalid argument."))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("an icon", model=PRO, size="1K"))
    assert (info.value.status, info.value.retryable) == (400, False)
    assert "invalid argument" in info.value.relay_message
    assert len(double.requests) == 1


async def test_model_aliases_and_a_base_url_that_already_has_the_version(double, client) -> None:
    relay = RelayConfig(double.url + "/v1beta/", "gemini", "query", KEY, model_aliases={PRO: "nano-banana-pro"})
    result = await client.generate(relay, GenerationRequest("a fox", model="nano-banana-pro"))
    assert double.requests[-1].path == "/v1beta/models/nano-banana-pro:generateContent"
    assert result.model == PRO


# --- Gemini answers -------------------------------------------------------------------------


@pytest.mark.parametrize("casing", ["camel", "snake", "mixed"])
@pytest.mark.parametrize("thoughts", [0, 3])
async def test_gemini_answers_in_any_casing_deliver_the_final_non_thought_picture(double, client, casing, thoughts) -> None:
    double.enqueue(Behaviour("image", casing=casing, thoughts=thoughts, **SMALL))
    result = await client.generate(cfg(double), GenerationRequest("a fox", model=PRO))
    assert result.image == double.images_served[-1]
    assert result.text == ""  # thought texts are never the model's words


@pytest.mark.parametrize(
    "options",
    [
        {"markdown": True},
        {"markdown": True, "text": "Here is your fox."},
        {"escaped_slashes": True},
        {"escaped_slashes": True, "markdown": True},
        {"mime": "image/jpeg"},
        {"pretty": False},
    ],
)
async def test_gemini_answer_variants(double, client, options) -> None:
    double.enqueue(Behaviour("image", **SMALL, **options))
    result = await client.generate(cfg(double), GenerationRequest("a fox", model=PRO))
    assert result.image == double.images_served[-1]
    assert result.mime_type == options.get("mime", "image/png")
    assert result.text == options.get("text", "")
    assert "base64" not in result.text


BIG = {"huge": True, "width": 420, "height": 420}  # ~0.5 MB of noise: decoded as a Blob, not a str


@pytest.mark.parametrize(
    ("dialect", "options"),
    [
        ("gemini", {}),
        ("gemini", {"casing": "snake", "thoughts": 3}),
        ("gemini", {"markdown": True, "text": "Here."}),
        ("gemini", {"markdown": True, "escaped_slashes": True}),
        ("openai-images", {}),
        ("openai-chat", {"text": "Here."}),
        ("openai-chat", {"chat_images_field": True}),
    ],
)
async def test_large_pictures_in_every_answer_position(double, client, dialect, options) -> None:
    double.enqueue(Behaviour("image", **BIG, **options))
    result = await client.generate(cfg(double, dialect, "bearer"), GenerationRequest("a fox", model=PRO))
    assert result.image == double.images_served[-1]
    assert result.text == options.get("text", "")
    if dialect == "gemini":
        # Once materialized, the model turn is plain JSON holding the very same picture.
        stored = json.loads(json.dumps(_gemini.materialize(result.model_turn)))
        last = stored["parts"][-1]
        embedded = last["inlineData"]["data"] if "inlineData" in last else last["text"].split("base64,")[1].rstrip(")")
        assert base64.b64decode(embedded) == result.image


async def test_gemini_text_beside_the_picture_and_grounding_sources(double, client) -> None:
    double.enqueue(Behaviour("image", text="A fox in the snow.", grounding=True, **SMALL))
    result = await client.generate(cfg(double), GenerationRequest("today's weather as a fox", model=PRO, grounding=True))
    assert result.text == "A fox in the snow."
    assert [s.title for s in result.sources] == ["weather.gov", "example.org"]
    assert all(s.uri.startswith("https://") for s in result.sources)


async def test_image_search_sources_link_to_their_pages(double, client) -> None:
    picture = png()
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(picture)}, "thoughtSignature": "c2ln"}],
                },
                "finishReason": "STOP",
                "groundingMetadata": {
                    "imageSearchQueries": ["timareta butterfly"],
                    "groundingChunks": [
                        {
                            "image": {
                                "sourceUri": "https://butterflies.example/timareta",
                                "imageUri": "https://img.example/1.jpg",
                                "title": "Timareta",
                            }
                        },
                        {"web": {"uri": "https://wiki.example/Timareta", "title": "Wiki"}},
                    ],
                },
            }
        ]
    }
    double.enqueue(Behaviour("raw", body=json.dumps(body)))
    result = await client.generate(cfg(double), GenerationRequest("a timareta butterfly", model=FLASH31, grounding=True))
    assert [(s.title, s.uri) for s in result.sources] == [
        ("Timareta", "https://butterflies.example/timareta"),
        ("Wiki", "https://wiki.example/Timareta"),
    ]


async def test_huge_4k_class_answer(double) -> None:
    double.enqueue(Behaviour("image", huge=True, width=2600, height=2600))
    async with RelayClient(backoff_base=0.01, timeout=60) as client:
        result = await client.generate(cfg(double), GenerationRequest("a detailed fox", model=PRO, size="4K"))
    assert len(result.image) * 4 / 3 > 10 * 2**20  # its base64 alone is over 10 MB
    assert result.image == double.images_served[-1]
    assert (result.width, result.height) == (2600, 2600)


async def test_stated_mime_type_loses_to_the_bytes(double, client) -> None:
    jpeg = make_image(20, 10, "JPEG")
    body = {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(jpeg)}}]}, "finishReason": "STOP"}]}
    double.enqueue(Behaviour("raw", body=json.dumps(body)))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (result.mime_type, result.width, result.height) == ("image/jpeg", 20, 10)


async def test_streamed_gemini_answers_are_merged(double, client) -> None:
    picture = png()
    events = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Here ", "thoughtSignature": "dA=="}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "it is."}]}}]},
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(picture)}, "thoughtSignature": "aQ=="}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1120, "totalTokenCount": 1123},
        },
    ]
    sse = "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events)
    double.enqueue(Behaviour("raw", body=sse, content_type="text/event-stream"))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == picture
    assert result.text == "Here it is."
    assert result.usage.total_tokens == 1123
    # ...and as a JSON array (streamGenerateContent without alt=sse), without a content type.
    double.enqueue(Behaviour("raw", body=json.dumps(events), content_type="application/json"))
    assert (await client.generate(cfg(double), GenerationRequest("x", model=PRO))).image == picture


def mime_wrapped(data: bytes, newline: str = "\n") -> str:
    """Base64 broken into 76-character lines, as MIME encoders (and some relays) write it."""
    return base64.encodebytes(data).decode().replace("\n", newline)


# Found against an independent relay double: a data URL whose base64 is MIME-wrapped was read
# only up to its first line break, and the 57-byte stump passed as a picture (exit 0).
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_line_wrapped_data_url_images_are_read_whole(double, client, newline) -> None:
    picture = png(90, 70)
    url = f"data:image/png;base64,{mime_wrapped(picture, newline)}"
    gemini_body = {"candidates": [{"content": {"parts": [{"text": f"Here: ![image]({url})"}]}, "finishReason": "STOP"}]}
    double.enqueue(Behaviour("raw", body=json.dumps(gemini_body)))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (picture, "Here:")
    chat_body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"好的\n\n![image]({url})"}, "finish_reason": "stop"}]
    }
    double.enqueue(Behaviour("raw", body=json.dumps(chat_body)))
    result = await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (picture, "好的")


# Large MIME-wrapped pictures take the streaming decoder's path (runs past 64 KiB), where the
# escaped line breaks must be skipped inside the run, not end it (a real 1K picture is ~1.5 MB).
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_large_line_wrapped_pictures_are_streamed_whole(double, client, newline) -> None:
    import io
    import os

    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3)).save(buf, "PNG")
    picture = buf.getvalue()
    assert len(picture) > 1_000_000
    wrapped = mime_wrapped(picture, newline)
    part = {"inlineData": {"mimeType": "image/png", "data": wrapped}}
    double.enqueue(Behaviour("raw", body=json.dumps({"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]})))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == picture
    url = f"data:image/png;base64,{wrapped}"
    chat_body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"好的\n\n![image]({url})"}, "finish_reason": "stop"}]
    }
    double.enqueue(Behaviour("raw", body=json.dumps(chat_body)))
    result = await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (picture, "好的")


# A picture cut short inside a well-formed answer (its header intact) is a broken answer:
# retried, never written as if it were whole.
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_a_picture_cut_short_inside_a_valid_answer_is_retried(double, client, fmt) -> None:
    whole = make_image(120, 90, fmt)
    cut = {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(whole[: len(whole) // 2])}}]}}]}
    double.enqueue(Behaviour("raw", body=json.dumps(cut)), Behaviour("raw", body=json.dumps(cut)))
    double.enqueue(
        Behaviour(
            "raw",
            body=json.dumps({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(whole)}}]}}]}),
        )
    )
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == whole and len(double.requests) == 3
    double.enqueue(*[Behaviour("raw", body=json.dumps(cut))] * 4)
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert info.value.key == "error.broken_answer" and "cut short" in str(info.value)


async def test_url_safe_base64_pictures_are_decoded(double, client) -> None:
    picture = make_image(97, 61, "PNG", (250, 251, 252))
    safe = base64.urlsafe_b64encode(picture).decode()
    assert "-" in safe or "_" in safe
    double.enqueue(
        Behaviour(
            "raw", body=json.dumps({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": safe}}]}}]})
        )
    )
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == picture
    assert result.model_turn["parts"][0]["inlineData"]["data"] == b64(picture)


# The model turn goes back to relays as history: a strict one refuses line-wrapped base64
# ("Base64 decoding failed"), so the turn holds the same bytes in plain base64.
async def test_model_turn_from_a_line_wrapped_answer_goes_back_as_plain_base64(double, client) -> None:
    picture = png(80, 60)
    part = {"inline_data": {"mime_type": "image/png", "data": mime_wrapped(picture)}, "thoughtSignature": "c2ln"}
    double.enqueue(Behaviour("raw", body=json.dumps({"candidates": [{"content": {"parts": [part], "role": "model"}}]})))
    first = await client.generate(cfg(double), GenerationRequest("a fox", model=PRO))
    assert first.image == picture
    expected = {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(picture)}, "thoughtSignature": "c2ln"}]}
    assert first.model_turn == expected
    await client.generate(cfg(double), GenerationRequest("make it blue", model=PRO, history=[first.user_turn, first.model_turn]))
    assert double.requests[-1].json["contents"][1] == expected


async def test_openai_images_edits_take_at_most_six_pictures_and_nothing_is_sent(double, client) -> None:
    seven = [InputImage(png(), "image/png")] * 7
    with pytest.raises(InvalidRequest) as info:
        await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("merge", model=PRO, images=seven))
    assert info.value.key == "invalid.too_many_images_dialect" and info.value.params["limit"] == 6
    assert double.requests == []
    await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("merge", model=PRO, images=seven[:6]))
    assert len(double.requests[-1].uploads) == 6


async def test_data_url_inside_inline_data_and_a_v1_base_url(double, client) -> None:
    picture = png()
    body = {
        "candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": f"data:image/png;base64,{b64(picture)}"}}]}}]
    }
    double.enqueue(Behaviour("raw", body=json.dumps(body)))
    relay = RelayConfig(double.url + "/v1", "gemini", "query", KEY)  # an OpenAI-style base pasted in
    result = await client.generate(relay, GenerationRequest("x", model=PRO))
    assert result.image == picture
    assert double.requests[-1].path == f"/v1beta/models/{PRO}:generateContent"


# --- Gemini: no picture ---------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "message"), [("SAFETY", None), ("PROHIBITED_CONTENT", "This prompt is not allowed."), ("OTHER", None)])
async def test_blocked_prompt(double, client, reason, message) -> None:
    double.enqueue(Behaviour("blocked", reason=reason, **({"message": message} if message else {})))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double), GenerationRequest("something bad", model=PRO))
    err = info.value
    assert (err.reason, err.detail, err.key) == ("blocked", reason, "error.no_image.blocked")
    assert err.model_text == (message or "")
    assert err.exit_code == 3
    assert len(double.requests) == 1


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("IMAGE_SAFETY", "safety"),
        ("PROHIBITED_CONTENT", "safety"),
        ("IMAGE_PROHIBITED_CONTENT", "safety"),
        ("NO_IMAGE", "no_image"),
        ("IMAGE_OTHER", "no_image"),
        ("RECITATION", "recitation"),
        ("IMAGE_RECITATION", "recitation"),
    ],
)
async def test_finish_reasons_without_a_picture(double, client, finish, reason) -> None:
    double.enqueue(Behaviour("finish", reason=finish, message=f"The model says {finish.lower()}."))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (info.value.reason, info.value.detail) == (reason, finish)
    assert info.value.model_text == f"The model says {finish.lower()}."
    assert finish in str(info.value) or reason in ("no_image",)


async def test_text_only_refusal_carries_the_models_words(double, client) -> None:
    double.enqueue(Behaviour("text_only", text="I can't draw real people in that situation."))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert info.value.reason == "text_only"
    assert info.value.model_text == "I can't draw real people in that situation."
    assert "I can't draw real people" in str(info.value)


# --- multi-turn -----------------------------------------------------------------------------


async def test_model_turn_is_sent_back_exactly_in_camel_case(double, client) -> None:
    double.enqueue(Behaviour("image", thoughts=3, text="Here is the fox.", signature="U0lHLWZpbmFs", casing="snake", **SMALL))
    relay = cfg(double)
    first = await client.generate(relay, GenerationRequest("a red fox", model=PRO))
    turn = first.model_turn
    assert turn is not None and turn["role"] == "model"
    kinds = [("thought" in p, "inlineData" if "inlineData" in p else "text") for p in turn["parts"]]
    # The three unsigned thought parts (sent though not asked for) are not kept, as in a
    # streamed answer; the rest is the relay's turn, in order, signatures and all.
    assert kinds == [(False, "text"), (False, "inlineData")]
    assert turn["parts"][-1]["thoughtSignature"] == "U0lHLWZpbmFs"
    assert base64.b64decode(turn["parts"][-1]["inlineData"]["data"]) == double.images_served[-1]
    assert "thought_signature" not in json.dumps(turn) and "inline_data" not in json.dumps(turn)
    assert first.user_turn == double.requests[-1].json["contents"][-1]

    second = await client.generate(relay, GenerationRequest("make it blue", model=PRO, history=[first.user_turn, turn]))
    contents = double.requests[-1].json["contents"]
    assert contents[0] == first.user_turn
    assert contents[1] == turn  # parts in order, every signature untouched
    assert contents[2] == {"role": "user", "parts": [{"text": "make it blue"}]}
    assert second.user_turn == contents[2]


def _big_picture() -> bytes:
    picture = huge_picture(420, 420).data  # noise: ~0.5 MB as PNG
    assert len(b64(picture)) > THRESHOLD  # so the decoder hands it over as a Blob
    return picture


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("casing", ["camel", "snake", "mixed"])
async def test_big_picture_model_turn_is_the_relays_json_and_goes_back_byte_exact(double, client, casing) -> None:
    picture = _big_picture()
    answer = dict(thoughts=2, text="Here is the fox.", signature="U0lHLWZpbmFs")
    double.enqueue(Behaviour("raw", body=gemini_answer_body(picture, casing=casing, **answer).decode()))
    first = await client.generate(cfg(double), GenerationRequest("a red fox", model=PRO))
    assert first.image == picture
    # The same answer as the relay writes it in camelCase: what the turn must be once materialized.
    sent = json.loads(gemini_answer_body(picture, casing="camel", **answer))["candidates"][0]["content"]
    sent["parts"] = [p for p in sent["parts"] if not (p.get("thought") is True and "thoughtSignature" not in p)]  # drafts: not kept
    assert len(sent["parts"]) >= 2
    turn = first.model_turn
    assert turn is not None
    final = turn["parts"][-1]["inlineData"]["data"]
    assert isinstance(final, Blob) and final.data is first.image  # one copy of the picture, not two
    assert _text(_gemini.materialize(turn)) == _text(sent)  # keys, key order, parts, signatures, base64

    # Sent back as is (Blobs and all): the relay gets exactly what it sent.
    await client.generate(cfg(double), GenerationRequest("make it blue", model=PRO, history=[first.user_turn, turn]))
    seen = double.requests[-1]
    assert _text(seen.json["contents"][1]) == _text(sent)
    assert b'"data":"' + b64(picture).encode() + b'"' in seen.body
    assert seen.json["contents"][2] == {"role": "user", "parts": [{"text": "make it blue"}]}


async def test_big_history_strings_are_sent_exactly(double, client) -> None:
    picture = _big_picture()
    text = 'He said "hi"\\ \n\t\x01 ünïcødé ' * 40_000  # long and full of things JSON escapes
    history = [
        {"role": "user", "parts": [{"text": text}]},
        {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(picture)}, "thoughtSignature": "c2ln"}]},
    ]
    await client.generate(cfg(double), GenerationRequest("bluer", model=PRO, history=history))
    seen = double.requests[-1]
    assert seen.json["contents"][:2] == history
    assert seen.body.startswith(json.dumps({"contents": history}, ensure_ascii=False, separators=(",", ":")).encode()[:-2])


async def test_streamed_gemini_answer_with_a_big_picture(double, client) -> None:
    picture = _big_picture()
    final = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(picture)}, "thoughtSignature": "aQ=="}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1120, "totalTokenCount": 1123},
    }
    sse = (
        ": keep-alive\r\n\r\n"
        'event: message\r\ndata: {"candidates": [{"content": {"role": "model", "parts": [{"text": "Here ", "thoughtSignature": "dA=="}]}}]}\r\n\r\n'
        'data:{"candidates": [{"content": {"role": "model", "parts": [{"text": "it is."}]}}]}\n\n'
        # One event over several data lines (joined with "\n"), the picture on one of them.
        + "".join(f"data: {line}\r\n" for line in json.dumps(final, indent=1).splitlines())
        + "\r\ndata: [DONE]\r\n\r\n"
    )
    double.enqueue(Behaviour("raw", body=sse, content_type="text/event-stream"))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == picture
    assert result.text == "Here it is."
    assert result.usage.total_tokens == 1123
    turn = _gemini.materialize(result.model_turn)
    assert turn["parts"][-1] == {"inlineData": {"mimeType": "image/png", "data": b64(picture)}, "thoughtSignature": "aQ=="}


def _sse_body() -> tuple[bytes, list[Any], list[int]]:
    """An event stream exercising every framing rule, the events it carries, and the offsets
    where framing happens (the interesting places to cut it)."""
    picture = make_image(1, 1) + bytes(range(256)) * 200  # 51 KB: a Blob once base64 (68 KB)
    big = {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(picture)}}]}}]}
    small = {"choices": [{"delta": {"content": "hi"}}]}
    pieces = [
        b": comment\n",
        b"retry: 10\r\n",
        b"data: " + json.dumps(small).encode() + b"\r\n\r\n",
        b"event: chunk\n",
        b"data:" + json.dumps(big).encode() + b"\r\r\n",  # "\r"s before the newline are dropped
        b"\n",
        b"data: [1,\n",
        b"data:   2]\n",  # spaces after "data:" skipped; lines joined with "\n"
        b"id: 7\n",
        b"\r\n",
        b"data:  [DONE] \r\n\r\n",
        b"dat\n",  # not a field we read
        b"data: " + json.dumps(small).encode(),  # the last event ends with the stream
    ]
    marks: list[int] = []
    at = 0
    for piece in pieces:
        for i, byte in enumerate(piece):
            if byte in b"\r\n:" or i < 8:
                marks.append(at + i)
        at += len(piece)
    return b"".join(pieces), [small, big, [1, 2], small], marks


_SSE_BODY, _SSE_EVENTS, _SSE_MARKS = _sse_body()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_SSE_MARKS), st.integers(0, len(_SSE_BODY))), max_size=12))
async def test_event_stream_split_anywhere_gives_the_same_events(cuts) -> None:
    edges = [0, *sorted(set(cuts)), len(_SSE_BODY)]
    sse = EventStream()
    for start, end in zip(edges, edges[1:], strict=False):
        await sse.feed(_SSE_BODY[start:end])
    events = sse.close()
    assert isinstance(events[1]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"], Blob)
    assert _gemini.materialize(events) == _SSE_EVENTS


async def test_snake_case_history_from_a_caller_is_sent_camel_case(double, client) -> None:
    history = [
        {"role": "user", "parts": [{"text": "a fox"}]},
        {"role": "model", "parts": [{"inline_data": {"mime_type": "image/png", "data": b64(png())}, "thought_signature": "c2lnLTE="}]},
    ]
    await client.generate(cfg(double), GenerationRequest("bluer", model=PRO, history=history))
    sent = double.requests[-1].json["contents"][1]
    assert sent == {
        "role": "model",
        "parts": [{"inlineData": {"mimeType": "image/png", "data": b64(png())}, "thoughtSignature": "c2lnLTE="}],
    }


def _history_with_draft() -> tuple[list[dict[str, Any]], bytes]:
    draft, final = png(30, 30, (255, 0, 0)), png(30, 30, (0, 0, 255))
    history = [
        {"role": "user", "parts": [{"text": "a fox"}]},
        {
            "role": "model",
            "parts": [
                {"inlineData": {"mimeType": "image/png", "data": b64(draft)}, "thought": True},
                {"text": "Done."},
                {"inlineData": {"mimeType": "image/png", "data": b64(final)}, "thoughtSignature": "c2ln"},
            ],
        },
    ]
    return history, final


async def test_chat_dialect_falls_back_to_latest_picture_plus_instruction(double, client) -> None:
    history, final = _history_with_draft()
    await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("make it night", model=PRO, history=history))
    body = double.requests[-1].json
    assert len(body["messages"]) == 1
    content = body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "make it night"}
    assert [decode_data_url(p["image_url"]["url"]) for p in content[1:]] == [("image/png", final)]


async def test_images_dialect_falls_back_to_latest_picture_plus_instruction(double, client) -> None:
    history, final = _history_with_draft()
    await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("make it night", model=PRO, history=history))
    seen = double.requests[-1]
    assert seen.path == "/v1/images/edits"
    assert [(u.name, u.data) for u in seen.uploads] == [("image", final)]


async def test_fallback_keeps_explicit_images(double, client) -> None:
    history, final = _history_with_draft()
    mine = png(12, 12, (0, 255, 0))
    await client.generate(
        cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO, history=history, images=[InputImage(mine, "image/png")])
    )
    content = double.requests[-1].json["messages"][0]["content"]
    assert [decode_data_url(p["image_url"]["url"])[1] for p in content[1:]] == [mine]


# --- OpenAI Images --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "ratio", "size", "fields"),
    [
        (FLASH25, "16:9", None, {"size": "16:9"}),
        (FLASH25, None, None, {}),
        (PRO, "2:3", "4K", {"size": "4k", "aspect_ratio": "2:3"}),
        (PRO, None, "2k", {"size": "2k"}),
        (FLASH31, "1:1", "1K", {"size": "1k", "aspect_ratio": "1:1"}),
    ],
)
async def test_openai_images_size_fields(double, client, model, ratio, size, fields) -> None:
    await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("a fox", model=model, aspect_ratio=ratio, size=size))
    body = double.requests[-1].json
    assert double.requests[-1].path == "/v1/images/generations"
    assert {k: v for k, v in body.items() if k in ("size", "aspect_ratio")} == fields
    assert (body["model"], body["prompt"], body["response_format"]) == (model, "a fox", "b64_json")


async def test_openai_images_sized_alias_takes_the_ratio_in_size(double, client) -> None:
    relay = cfg(double, "openai-images", "bearer", model_aliases={PRO: "nano-banana-pro-2k"})
    await client.generate(relay, GenerationRequest("a fox", model=PRO, aspect_ratio="2:3", size="2K"))
    body = double.requests[-1].json
    assert (body["model"], body["size"], "aspect_ratio" in body) == ("nano-banana-pro-2k", "2:3", False)


async def test_openai_images_edit_with_one_picture_uses_image_field(double, client) -> None:
    picture = png()
    await client.generate(
        cfg(double, "openai-images", "bearer"), GenerationRequest("add a hat", model=PRO, images=[InputImage(picture, "image/png")])
    )
    seen = double.requests[-1]
    assert seen.path == "/v1/images/edits"
    assert [(u.name, u.content_type, u.data) for u in seen.uploads] == [("image", "image/png", picture)]
    assert seen.form["prompt"] == ["add a hat"] and seen.form["response_format"] == ["b64_json"] and seen.form["model"] == [PRO]


async def test_openai_images_edit_with_several_pictures_uses_image_array(double, client) -> None:
    pictures = [png(20, 20, (i * 40, 0, 0)) for i in range(3)]
    await client.generate(
        cfg(double, "openai-images", "bearer"), GenerationRequest("merge", model=PRO, images=[InputImage(p, "image/png") for p in pictures])
    )
    assert [(u.name, u.data) for u in double.requests[-1].uploads] == [("image[]", p) for p in pictures]


async def test_openai_images_edit_falls_back_to_json_when_the_form_is_refused(double, client) -> None:
    pictures = [png(20, 20, (i * 60, 0, 0)) for i in range(2)]
    double.enqueue(Behaviour("error", status=400, body="openai", message="Invalid request: body must be JSON"))
    result = await client.generate(
        cfg(double, "openai-images", "bearer"), GenerationRequest("merge", model=PRO, images=[InputImage(p, "image/png") for p in pictures])
    )
    assert result.image == double.images_served[-1]
    first, second = double.requests
    assert first.uploads and second.json is not None
    assert [decode_data_url(u) for u in second.json["image"]] == [("image/png", p) for p in pictures]
    assert (second.json["model"], second.json["prompt"], second.json["response_format"]) == (PRO, "merge", "b64_json")


async def test_openai_images_url_answer_is_downloaded_at_once(double, client) -> None:
    double.enqueue(Behaviour("image", url=True, **SMALL))
    result = await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("a fox", model=PRO))
    assert result.image == double.images_served[-1]
    assert double.requests[-1].method == "GET" and double.requests[-1].path.startswith("/files/")


async def test_openai_images_refusal_is_no_image(double, client) -> None:
    double.enqueue(Behaviour("blocked"))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("x", model=PRO))
    assert info.value.reason == "blocked"
    assert "safety system" in info.value.model_text
    assert len(double.requests) == 1


@pytest.mark.parametrize("kind", ["finish", "text_only"])
async def test_openai_images_empty_answer_is_no_image(double, client, kind) -> None:
    double.enqueue(Behaviour(kind))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("x", model=PRO))
    assert info.value.reason == "no_image"


# --- OpenAI Chat ----------------------------------------------------------------------------


async def test_chat_request_shape(double, client) -> None:
    picture = png()
    await client.generate(
        cfg(double, "openai-chat", "bearer"), GenerationRequest("add a hat", model=PRO, images=[InputImage(picture, "image/png")])
    )
    body = double.requests[-1].json
    assert body["model"] == PRO and body["stream"] is False
    content = body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "add a hat"}
    assert decode_data_url(content[1]["image_url"]["url"]) == ("image/png", picture)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"text": "Here you go."},
        {"chat_images_field": True},
        {"chat_images_field": True, "text": "Done."},
        {"escaped_slashes": True},
        {"mime": "image/jpeg"},
    ],
)
async def test_chat_answer_variants(double, client, options) -> None:
    double.enqueue(Behaviour("image", **SMALL, **options))
    result = await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("a fox", model=PRO))
    assert result.image == double.images_served[-1]
    assert result.text == options.get("text", "")
    assert result.model_turn is None


async def test_chat_streamed_answer_and_bare_base64(double, client) -> None:
    picture = png()
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Sure! "}}]},
        {"choices": [{"index": 0, "delta": {"content": f"![image](data:image/png;base64,{b64(picture)})"}, "finish_reason": "stop"}]},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    double.enqueue(Behaviour("raw", body=sse, content_type="text/event-stream"))
    result = await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (picture, "Sure!")
    # Some chat relays put the picture as a bare base64 run inside the text, with no data: URI.
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"Result:\n{b64(picture)}"}, "finish_reason": "stop"}]}
    double.enqueue(Behaviour("raw", body=json.dumps(answer)))
    result = await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (picture, "Result:")


@pytest.mark.parametrize(("kind", "reason"), [("blocked", "safety"), ("finish", "safety"), ("text_only", "text_only")])
async def test_chat_refusals(double, client, kind, reason) -> None:
    double.enqueue(Behaviour(kind))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert info.value.reason == reason
    assert info.value.model_text  # the model's own words


async def test_bare_hosted_picture_link_in_chat_text(double, client) -> None:
    double.enqueue(Behaviour("image", url=True, **SMALL))
    await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("x", model=PRO))
    link = double.url + double.requests[-1].path
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"Your picture: {link}"}, "finish_reason": "stop"}]}
    double.enqueue(Behaviour("raw", body=json.dumps(answer)))
    result = await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (double.images_served[-1], "Your picture:")
    # A link to a web page is only text.
    answer["choices"][0]["message"]["content"] = "See https://example.org/about for why I can't."
    double.enqueue(Behaviour("raw", body=json.dumps(answer)))
    with pytest.raises(NoImage) as info:
        await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert info.value.reason == "text_only"


async def test_hosted_picture_links_are_downloaded(double, client) -> None:
    # Register a hosted file with the double, then answer with a markdown link to it.
    double.enqueue(Behaviour("image", url=True, **SMALL))
    await client.generate(cfg(double, "openai-images", "bearer"), GenerationRequest("x", model=PRO))
    link = double.url + double.requests[-1].path
    served = double.images_served[-1]
    body = {"candidates": [{"content": {"parts": [{"text": f"Done! ![image]({link})"}]}, "finishReason": "STOP"}]}
    double.enqueue(Behaviour("raw", body=json.dumps(body)))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (result.image, result.text) == (served, "Done!")


# --- faults and retries ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(double, client, status) -> None:
    double.enqueue(Behaviour("error", status=status))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == double.images_served[-1]
    assert len(double.requests) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409, 413, 422])
async def test_other_4xx_are_never_retried(double, client, status) -> None:
    double.enqueue(Behaviour("error", status=status, body="openai", message=f"nope {status}"))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double, "openai-chat", "bearer"), GenerationRequest("x", model=PRO))
    assert info.value.status == status
    assert f"nope {status}" in info.value.relay_message
    assert len(double.requests) == 1


async def test_retries_give_up_after_max_attempts(double, client) -> None:
    for _ in range(4):
        double.enqueue(Behaviour("error", status=503, body="google_list", message="The model is overloaded."))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    err = info.value
    assert (err.status, err.retryable, err.key) == (503, True, "error.relay_http")
    assert err.relay_message == "The model is overloaded."
    assert err.params["attempts"] == 4 and "after 4 attempts" in str(err)
    assert len(double.requests) == 4


async def test_html_error_pages_are_summarised(double, client) -> None:
    for _ in range(4):
        double.enqueue(Behaviour("error", status=502, body="html"))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (info.value.status, info.value.relay_message) == (502, "502 Bad Gateway")


async def test_retry_after_is_honoured(double, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bot.relay")
    double.enqueue(Behaviour("error", status=429, retry_after=1))
    async with RelayClient(backoff_base=0.01, max_backoff=30) as client:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert "retrying in 1.00 s" in caplog.text


async def test_google_retry_delay_is_honoured_without_a_header(double, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bot.relay")
    envelope = {
        "error": {
            "code": 429,
            "message": "Quota exceeded",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.3s"}],
        }
    }
    double.enqueue(Behaviour("raw", status=429, body=json.dumps(envelope)))
    async with RelayClient(backoff_base=0.01, max_backoff=30) as client:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert "retrying in 0.30 s" in caplog.text


async def test_retry_after_is_capped_by_max_backoff(double, client, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bot.relay")
    double.enqueue(Behaviour("error", status=503, retry_after=3600))
    await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert "retrying in 0.05 s" in caplog.text


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    date = email.utils.format_datetime(dt.datetime.fromtimestamp(now + 30, tz=dt.UTC), usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"Retry-After": "7"}) == 7
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_truncated_body_is_retried(double, client) -> None:
    double.enqueue(Behaviour("truncated", **SMALL))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == double.images_served[-1]
    assert len(double.requests) == 2


async def test_always_truncated_bodies_fail_as_broken(double, client) -> None:
    double.default = Behaviour("truncated", **SMALL)
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (info.value.key, info.value.retryable) == ("error.broken_answer", True)
    assert len(double.requests) == 4


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>upstream error</body></html>",
        '{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "aGVsbG8gd29ybGQ="}}]}}]}',
        '{"candidates": [',
    ],
)
async def test_broken_bodies_are_retried(double, client, body) -> None:
    double.enqueue(Behaviour("raw", status=200, body=body, content_type="application/json"))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == double.images_served[-1]
    assert len(double.requests) == 2


async def test_error_envelope_inside_a_200(double, client) -> None:
    overloaded = {"error": {"code": 503, "message": "upstream overloaded", "status": "UNAVAILABLE"}}
    double.enqueue(Behaviour("raw", body=json.dumps(overloaded)))
    await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert len(double.requests) == 2
    double.reset()
    double.default = Behaviour("image", **SMALL)
    bad = [{"error": {"code": 400, "message": "Unsupported MIME type", "status": "INVALID_ARGUMENT"}}]
    double.enqueue(Behaviour("raw", body=json.dumps(bad)))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (info.value.status, info.value.relay_message) == (400, "Unsupported MIME type")
    assert len(double.requests) == 1


async def test_dropped_connections_are_retried(double, client) -> None:
    double.enqueue(Behaviour("disconnect"), Behaviour("disconnect"))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == double.images_served[-1]
    assert len(double.requests) == 3


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def test_unreachable_relay_is_a_retryable_network_failure(client) -> None:
    relay = RelayConfig(f"http://127.0.0.1:{_closed_port()}", "gemini", "query", KEY)
    with pytest.raises(RelayFailed) as info:
        await client.generate(relay, GenerationRequest("x", model=PRO))
    assert (info.value.key, info.value.retryable, info.value.status) == ("error.network", True, None)
    assert info.value.params["attempts"] == 4


async def test_slow_answer_within_the_timeout_arrives(double, client) -> None:
    double.enqueue(Behaviour("slow", delay=0.3, trickle=0.3, **SMALL))
    result = await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert result.image == double.images_served[-1]


@pytest.mark.parametrize("behaviour", [Behaviour("hang"), Behaviour("slow", delay=5, **SMALL)])
async def test_timeouts_are_not_retried(double, behaviour) -> None:
    double.enqueue(behaviour)
    async with RelayClient(backoff_base=0.01, timeout=0.5) as client:
        with pytest.raises(RelayTimeout) as info:
            await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (info.value.key, info.value.retryable) == ("error.timeout", True)
    assert len(double.requests) == 1


async def test_answer_size_is_capped(double) -> None:
    double.enqueue(Behaviour("image", width=600, height=600))
    async with RelayClient(backoff_base=0.01, max_answer_bytes=4096) as client:
        with pytest.raises(RelayFailed) as info:
            await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert info.value.key == "error.answer_too_large"
    assert len(double.requests) == 1


async def test_redirects_are_reported_not_followed(double, client) -> None:
    double.enqueue(Behaviour("raw", status=301, body="", headers={"Location": "https://relay.example/v1beta"}))
    with pytest.raises(RelayFailed) as info:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO))
    assert (info.value.key, info.value.status) == ("error.redirect", 301)
    assert "https://relay.example/v1beta" in str(info.value)
    assert len(double.requests) == 1


# --- URL guard ------------------------------------------------------------------------------


async def test_untrusted_relays_pass_every_url_through_the_guard(double) -> None:
    seen: list[str] = []

    async def guard(url: str) -> None:
        seen.append(url)

    double.enqueue(Behaviour("image", url=True, **SMALL))
    async with RelayClient(url_guard=guard) as client:
        await client.generate(cfg(double, "openai-images", "bearer", trusted=False), GenerationRequest("x", model=PRO))
        assert seen == [double.url + "/v1/images/generations", double.url + double.requests[-1].path]
        seen.clear()
        await client.generate(cfg(double, "openai-images", "bearer", trusted=True), GenerationRequest("x", model=PRO))
        assert seen == []


async def test_guard_refusal_sends_nothing(double) -> None:
    async def guard(url: str) -> None:
        raise PermissionError("127.0.0.1 is a loopback address")

    async with RelayClient(url_guard=guard) as client:
        with pytest.raises(RelayFailed) as info:
            await client.generate(cfg(double, trusted=False), GenerationRequest("x", model=PRO))
    assert info.value.key == "error.url_refused"
    assert "loopback" in info.value.relay_message
    assert double.requests == []


# --- bad input: refused before anything is sent ---------------------------------------------


@pytest.mark.parametrize(
    ("request_kwargs", "key"),
    [
        ({"prompt": "   "}, "invalid.empty_prompt"),
        ({"prompt": "x" * 30_001}, "invalid.prompt_too_long"),
        ({"model": "dall-e-3"}, "invalid.model"),
        ({"aspect_ratio": "1:8"}, "invalid.ratio"),
        ({"aspect_ratio": "banana"}, "invalid.ratio"),
        ({"model": FLASH25, "size": "2K"}, "invalid.size_fixed"),
        ({"size": "512px"}, "invalid.size"),
        ({"size": "8K"}, "invalid.size"),
        ({"model": FLASH25, "images": [InputImage(b"x", "image/png")] * 4}, "invalid.too_many_images"),
        ({"model": FLASH25, "grounding": True}, "invalid.grounding"),
        ({"thinking": "high"}, "invalid.thinking_unsupported"),
        ({"model": FLASH31, "thinking": "extreme"}, "invalid.thinking"),
        ({"images": [InputImage(b"just some text", "image/png")]}, "invalid.not_image"),
        ({"images": [InputImage(b"", "image/png")]}, "invalid.not_image"),
    ],
)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_invalid_requests_send_nothing(double, client, request_kwargs, key, dialect) -> None:
    kwargs = {"prompt": "a fox", "model": PRO, **request_kwargs}
    with pytest.raises(InvalidRequest) as info:
        await client.generate(cfg(double, dialect, "bearer"), GenerationRequest(**kwargs))
    assert info.value.key == key
    assert info.value.exit_code == 2
    assert double.requests == []


async def test_inputs_are_identified_and_converted_before_sending(double, client) -> None:
    bmp = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(bmp, "BMP")
    jpeg = make_image(24, 24, "JPEG")
    request = GenerationRequest("x", model=PRO, images=[InputImage(bmp.getvalue(), "image/png"), InputImage(jpeg, "image/png")])
    await client.generate(cfg(double), request)
    parts = double.requests[-1].json["contents"][-1]["parts"]
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(parts[1]["inlineData"]["data"]))).size == (30, 20)
    assert parts[2]["inlineData"] == {"mimeType": "image/jpeg", "data": b64(jpeg)}  # the claim was wrong


async def test_large_inputs_are_shrunk_to_fit_the_body_budget(double) -> None:
    import random

    rng = random.Random(7)
    noisy = Image.frombytes("RGB", (1200, 900), rng.randbytes(1200 * 900 * 3))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    assert len(buf.getvalue()) > 3_000_000
    async with RelayClient(body_budget=1_500_000) as client:
        await client.generate(cfg(double), GenerationRequest("x", model=PRO, images=[InputImage(buf.getvalue(), "image/png")]))
    seen = double.requests[-1]
    assert len(seen.body) <= 1_500_000
    inline = seen.json["contents"][-1]["parts"][1]["inlineData"]
    assert inline["mimeType"] == "image/jpeg"
    shrunk = Image.open(io.BytesIO(base64.b64decode(inline["data"])))
    assert shrunk.size[0] / shrunk.size[1] == pytest.approx(1200 / 900, rel=0.02)


# --- probe ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "auth"), [("gemini", "query"), ("gemini", "x-goog-api-key"), ("openai-images", "bearer"), ("openai-chat", "bearer")]
)
async def test_probe_is_a_real_model_list_call(double, client, dialect, auth) -> None:
    latency = await client.probe(cfg(double, dialect, auth))
    assert latency >= 0
    seen = double.requests[-1]
    assert (seen.method, seen.path, seen.key_ok) == ("GET", "/v1beta/models" if dialect == "gemini" else "/v1/models", True)


async def test_probe_reports_the_relays_own_message(double, client) -> None:
    with pytest.raises(RelayFailed) as info:
        await client.probe(cfg(double, "gemini", "query", key="wrong-key-123456"))
    assert "API key not valid" in info.value.relay_message
    with pytest.raises(RelayFailed) as info:
        await client.probe(cfg(double, "openai-chat", "bearer", key="sk-wrong-key-12345678901234"))
    assert info.value.status == 401 and "Incorrect API key" in info.value.relay_message


# --- the key never leaks --------------------------------------------------------------------


def _chain_texts(exc: BaseException) -> str:
    texts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        texts.append(repr(current))
        texts.extend(str(v) for v in getattr(current, "params", {}).values())
        current = current.__cause__ or current.__context__
    texts.append("".join(traceback.format_exception(exc)))
    return "\n".join(texts)


async def test_the_key_appears_in_no_log_record_or_exception_text(double, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    leaks: list[str] = []
    async with RelayClient(backoff_base=0.001, max_backoff=0.002, timeout=0.5) as client:
        scenarios = [
            (RelayConfig(f"http://127.0.0.1:{_closed_port()}", "gemini", "query", KEY), None),
            (cfg(double), [Behaviour("error", status=503)] * 4),
            (cfg(double), [Behaviour("error", status=400, message=f"key {KEY} is not allowed here")]),
            (cfg(double, "openai-chat", "bearer"), [Behaviour("error", status=400, body="openai", message=f"bad token Bearer {KEY}")]),
            (cfg(double), [Behaviour("hang")]),
            (cfg(double), [Behaviour("truncated", **SMALL)] * 4),
            (cfg(double, key=KEY + "-wrong"), None),
            (RelayConfig(double.url, "openai-images", "query", KEY), [Behaviour("disconnect")] * 4),
        ]
        for relay, behaviours in scenarios:
            double.enqueue(*(behaviours or []))
            with pytest.raises(RelayFailed) as info:
                await client.generate(relay, GenerationRequest("x", model=PRO))
            leaks.append(_chain_texts(info.value))
            leaks.append(info.value.relay_message)
    everything = "\n".join(leaks) + caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "key=" in caplog.text  # the query-auth requests were logged, redacted
    assert KEY not in everything
    assert KEY[3:] not in everything  # relays that strip the sk- prefix echo the rest


def test_every_error_key_has_english_and_chinese_text() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "bot"
    used = set()
    for path in list((root / "relay").glob("*.py")) + list((root / "cli").glob("*.py")):
        used |= set(re.findall(r'key="((?:invalid|error)\.[a-z_.]+)"', path.read_text()))
    used |= {f"error.no_image.{r}" for r in ("blocked", "safety", "recitation", "no_image", "text_only")}
    used |= {"error.relay", "error.invalid", "error.no_image", "error.relay_failed", "error.relay_answer"}
    en, zh = catalog("en"), catalog("zh-CN")
    assert not used - set(en), used - set(en)
    assert not used - set(zh), used - set(zh)
    # Chinese texts really are Chinese, and fill in the same fields.
    for key in used:
        assert re.search(r"[\u4e00-\u9fff]", zh[key]), key
        assert set(re.findall(r"{(\w+)}", en[key])) == set(re.findall(r"{(\w+)}", zh[key])), key
    assert "HTTP 503" in t("error.relay_http", "en", status=503, relay_message="busy")
    assert "503" in t("error.relay_http", "zh-CN", status=503, relay_message="busy")


# --- odd answers never crash the parsers ----------------------------------------------------

_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=12),
    st.sampled_from(["data:image/png;base64,AAAA", "https://x.example/y.png", "IMAGE_SAFETY", "STOP", "content_filter", "aGVsbG8="]),
)
_KEYS = st.sampled_from(
    [
        "candidates",
        "content",
        "parts",
        "inlineData",
        "inline_data",
        "data",
        "mimeType",
        "text",
        "thought",
        "finishReason",
        "promptFeedback",
        "blockReason",
        "error",
        "choices",
        "message",
        "images",
        "image_url",
        "url",
        "b64_json",
        "usage",
        "usageMetadata",
        "groundingMetadata",
        "groundingChunks",
        "web",
        "uri",
        "title",
        "delta",
        "finish_reason",
        "refusal",
        "type",
        "code",
        "details",
        "retryDelay",
        "fileData",
        "fileUri",
    ]
)
_SHAPES = st.recursive(
    _LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)), max_leaves=30
)


@settings(max_examples=400, deadline=None)
@given(_SHAPES)
def test_odd_answer_shapes_raise_only_relay_errors(answer: Any) -> None:
    # Whatever a relay sends, the user sees a relay error (or a picture), never a crash.
    for parse in (_gemini.parse, _chat.parse, _images.parse):
        try:
            parse(answer)
        except (RelayError, BrokenAnswer, AnswerError, DecodeError):
            pass
