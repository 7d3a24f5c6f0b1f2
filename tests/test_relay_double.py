"""The relay double is only useful if it is faithful: the official SDKs must read its answers
the way they read a real relay's, and every fault must look on the wire like the real thing."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from google import genai
from google.genai import types as gtypes
from openai import BadRequestError, OpenAI
from PIL import Image

from tests.conftest import make_image
from tests.doubles.relay_double import (
    Behaviour,
    RelayDouble,
    chat_answer_body,
    gemini_answer_body,
    openai_images_answer_body,
)

KEY = "test-key"
PRO = "gemini-3-pro-image-preview"
GEN = f"/v1beta/models/{PRO}:generateContent"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def relay():
    with RelayDouble(api_key=KEY) as double:
        yield double


@pytest.fixture
def gclient(relay):
    return genai.Client(api_key=KEY, http_options={"base_url": relay.url})


@pytest.fixture
def oclient(relay):
    return OpenAI(base_url=relay.url + "/v1", api_key=KEY, max_retries=0)


def pixels(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as img:
        return img.format, img.size


def post_gemini(relay: RelayDouble, body: dict | None = None, **kw) -> httpx.Response:
    body = body or {"contents": [{"parts": [{"text": "a cat"}]}]}
    return httpx.post(relay.url + GEN, params={"key": KEY}, json=body, timeout=kw.pop("timeout", 10), **kw)


def final_image_part(parts):
    return [p for p in parts if p.inline_data is not None and not p.thought][-1]


# ---------------------------------------------------------------------------------------------
# google-genai SDK


def test_genai_sdk_reads_image_thoughts_signature_and_usage(relay, gclient):
    signature = base64.b64encode(b"opaque-signature-bytes").decode()
    relay.enqueue(Behaviour("image", thoughts=3, text="Here is your picture.", signature=signature))
    response = gclient.models.generate_content(
        model=PRO,
        contents=["draw a pig"],
        config=gtypes.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=gtypes.ImageConfig(aspect_ratio="16:9", image_size="2K"),
        ),
    )
    candidate = response.candidates[0]
    parts = candidate.content.parts
    assert [bool(p.thought) for p in parts] == [True, True, True, False, False]
    assert parts[0].text and parts[1].inline_data is not None  # thought text, then a draft picture
    final = final_image_part(parts)
    assert final.inline_data.data == relay.images_served[-1]
    assert parts[1].inline_data.data != final.inline_data.data  # the draft is not the deliverable
    assert pixels(final.inline_data.data) == ("PNG", (2752, 1536))
    assert final.inline_data.mime_type == "image/png"
    assert final.thought_signature == b"opaque-signature-bytes"
    assert parts[3].text == "Here is your picture." and parts[3].thought_signature  # leading text signed too
    assert candidate.finish_reason == gtypes.FinishReason.STOP
    usage = response.usage_metadata
    assert usage.candidates_token_count == 1210 and usage.thoughts_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    assert response.model_version == PRO and response.response_id

    sent = relay.requests[-1]
    assert sent.dialect == "gemini" and sent.model == PRO and sent.method == "POST"
    assert sent.auth_style == "x-goog-api-key" and sent.key_ok
    assert sent.headers["x-goog-api-key"] == KEY and "key" not in sent.query
    config = sent.json["generationConfig"]  # camelCase on the wire
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert "generation_config" not in sent.json


@pytest.mark.parametrize(
    "reason", ["IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_OTHER", "RECITATION"]
)
def test_genai_sdk_surfaces_finish_reasons_without_parts(relay, gclient, reason):
    relay.enqueue(Behaviour("finish", reason=reason, message="no picture for you"))
    response = gclient.models.generate_content(model=PRO, contents=["x"])
    candidate = response.candidates[0]
    assert candidate.finish_reason.value == reason
    assert candidate.content is None
    # The SDK does not map finishMessage for the Gemini API; it is on the wire all the same.
    relay.enqueue(Behaviour("finish", reason=reason, message="no picture for you"))
    raw = post_gemini(relay).json()["candidates"][0]
    assert raw == {"finishReason": reason, "finishMessage": "no picture for you", "index": 0}
    assert relay.images_served == []


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT", "OTHER"])
def test_genai_sdk_surfaces_block_reason(relay, gclient, reason):
    relay.enqueue(Behaviour("blocked", reason=reason))
    response = gclient.models.generate_content(model=PRO, contents=["x"])
    assert response.candidates is None
    assert response.prompt_feedback.block_reason.value == reason
    assert response.usage_metadata.prompt_token_count > 0


def test_genai_sdk_reads_grounding_when_search_was_asked(relay, gclient):
    response = gclient.models.generate_content(
        model=PRO,
        contents=["weather in San Francisco as a chart"],
        config=gtypes.GenerateContentConfig(tools=[gtypes.Tool(google_search=gtypes.GoogleSearch())]),
    )
    meta = response.candidates[0].grounding_metadata
    assert meta.web_search_queries == ["weather in San Francisco as a chart"]
    assert [c.web.title for c in meta.grounding_chunks] == ["weather.gov", "example.org"]
    assert all(c.web.uri.startswith("https://") for c in meta.grounding_chunks)
    assert "googleSearch" in relay.requests[-1].json["tools"][0]

    relay.enqueue(Behaviour("image", grounding=[{"uri": "https://a.example/page", "title": "A page"}]))
    response = gclient.models.generate_content(model=PRO, contents=["x"])
    assert response.candidates[0].grounding_metadata.grounding_chunks[0].web.uri == "https://a.example/page"
    # Not asked, not forced: no grounding.
    response = gclient.models.generate_content(model=PRO, contents=["x"])
    assert response.candidates[0].grounding_metadata is None


def test_genai_sdk_reads_text_only_answer(relay, gclient):
    relay.enqueue(Behaviour("text_only", text="I would rather describe it."))
    response = gclient.models.generate_content(model=PRO, contents=["x"])
    assert response.text == "I would rather describe it."
    assert all(p.inline_data is None for p in response.candidates[0].content.parts)
    assert response.candidates[0].content.parts[0].thought_signature


def test_genai_sdk_stream_delivers_thoughts_then_the_image(relay, gclient):
    relay.enqueue(Behaviour("image", thoughts=2))
    chunks = list(gclient.models.generate_content_stream(model=PRO, contents=["x"]))
    assert relay.requests[-1].path.endswith(":streamGenerateContent") and relay.requests[-1].query["alt"] == "sse"
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert [bool(p.thought) for p in parts] == [True, True, False]
    assert parts[-1].inline_data.data == relay.images_served[-1]
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count > 0


def test_genai_sdk_chat_sends_the_model_turn_back_with_its_signature(relay, gclient):
    signature = base64.b64encode(b"turn-one-signature").decode()
    relay.enqueue(Behaviour("image", signature=signature))
    chat = gclient.chats.create(model=PRO, config=gtypes.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]))
    chat.send_message("draw a cat")
    first_image = relay.images_served[-1]
    chat.send_message("now give it a hat")
    contents = relay.requests[-1].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model_part = contents[1]["parts"][-1]
    # (The SDK re-encodes the picture it sends back, so compare what it shows, not its bytes.)
    assert pixels(base64.b64decode(model_part["inlineData"]["data"])) == pixels(first_image)
    assert model_part["thoughtSignature"] == signature


@pytest.mark.parametrize("casing", ["snake", "mixed"])
def test_snake_and_mixed_casing(relay, gclient, casing):
    relay.enqueue(Behaviour("image", casing=casing, mime="image/jpeg", width=64, height=48))
    raw = post_gemini(relay).json()
    part = raw["candidates"][0]["content"]["parts"][-1]
    assert set(part) == {"inline_data", "thought_signature"}
    assert part["inline_data"]["mime_type"] == "image/jpeg"
    assert pixels(base64.b64decode(part["inline_data"]["data"])) == ("JPEG", (64, 48))
    top = "usage_metadata" if casing == "snake" else "usageMetadata"
    assert top in raw and ("finish_reason" if casing == "snake" else "finishReason") in raw["candidates"][0]

    # The SDK reads snake_case parts too (it validates parts by field name or alias).
    relay.enqueue(Behaviour("image", casing=casing))
    response = gclient.models.generate_content(model=PRO, contents=["x"])
    assert final_image_part(response.candidates[0].content.parts).inline_data.data == relay.images_served[-1]


def test_markdown_image_inside_a_text_part(relay):
    relay.enqueue(Behaviour("image", markdown=True, text="Done!"))
    part = post_gemini(relay).json()["candidates"][0]["content"]["parts"][-1]
    assert set(part) == {"text"}
    assert part["text"].startswith("Done!\n\n![image](data:image/png;base64,")
    b64 = part["text"].split("base64,", 1)[1].rstrip(")")
    assert base64.b64decode(b64) == relay.images_served[-1]


def test_escaped_slashes_are_valid_json_with_the_same_content(relay, gclient):
    relay.enqueue(Behaviour("image", escaped_slashes=True))
    response = post_gemini(relay)
    assert b"\\/" in response.content and b"image\\/png" in response.content
    data = response.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"]
    assert base64.b64decode(data) == relay.images_served[-1]
    relay.enqueue(Behaviour("image", escaped_slashes=True))
    answer = gclient.models.generate_content(model=PRO, contents=["x"])
    assert final_image_part(answer.candidates[0].content.parts).inline_data.data == relay.images_served[-1]


def test_image_size_follows_the_request_or_the_behaviour(relay):
    cases = [
        ({"aspectRatio": "9:16", "imageSize": "4K"}, PRO, (3072, 5504)),
        ({"aspectRatio": "21:9", "image_size": "1K"}, PRO, (1584, 672)),  # snake_case image_size, as some relays send it
        ({"aspectRatio": "1:8", "imageSize": "512px"}, "gemini-3.1-flash-image-preview", (192, 1536)),
        ({"aspectRatio": "16:9", "imageSize": "4K"}, "gemini-2.5-flash-image", (1344, 768)),  # fixed ~1 MP
        ({}, PRO, (1024, 1024)),
    ]
    for image_config, model, expected in cases:
        body = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": image_config}}
        response = httpx.post(f"{relay.url}/v1beta/models/{model}:generateContent", params={"key": KEY}, json=body)
        assert response.status_code == 200, response.text
        assert pixels(relay.images_served[-1])[1] == expected, image_config

    # An edit without a ratio follows the input picture's shape.
    edit = {
        "contents": [
            {"parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(make_image(300, 400)).decode()}}]}
        ]
    }
    post_gemini(relay, edit)
    assert pixels(relay.images_served[-1])[1] == (896, 1200)  # 3:4

    relay.enqueue(Behaviour("image", width=100, height=30, mime="image/jpeg"))
    post_gemini(relay, {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"aspectRatio": "1:1"}}})
    assert pixels(relay.images_served[-1]) == ("JPEG", (100, 30))


def test_bad_requests_are_refused_like_the_api(relay):
    lower = post_gemini(relay, {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"imageSize": "1k"}}})
    assert lower.status_code == 400 and lower.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert post_gemini(relay, {"contents": []}).status_code == 400
    bad_json = httpx.post(relay.url + GEN, params={"key": KEY}, content=b"{not json")
    assert bad_json.status_code == 400
    # A trailing-slash or wrong-prefix URL is a 404, not a silent success.
    assert httpx.post(relay.url + "//v1beta/models/x:generateContent", params={"key": KEY}).status_code == 404
    assert (
        httpx.post(
            relay.url + "/v1beta/models/gpt-4o:generateContent", params={"key": KEY}, json={"contents": [{"parts": [{"text": "x"}]}]}
        ).status_code
        == 404
    )
    assert relay.images_served == []
    with pytest.raises(TypeError):
        Behaviour("image", colour="red")
    with pytest.raises(ValueError):
        Behaviour("explode")


def test_model_lists(relay):
    gemini = httpx.get(relay.url + "/v1beta/models", headers={"x-goog-api-key": KEY}).json()
    assert f"models/{PRO}" in [m["name"] for m in gemini["models"]]
    openai = httpx.get(relay.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert "nano-banana-pro" in [m["id"] for m in openai["data"]]


# ---------------------------------------------------------------------------------------------
# openai SDK


def test_openai_images_generate_b64(relay, oclient):
    answer = oclient.images.generate(
        model="nano-banana-pro", prompt="a cat", size="2k", response_format="b64_json", extra_body={"aspect_ratio": "16:9"}
    )
    data = base64.b64decode(answer.data[0].b64_json)
    assert data == relay.images_served[-1]
    assert pixels(data) == ("PNG", (2752, 1536))
    assert answer.created > 0 and answer.usage.output_tokens > 0
    sent = relay.requests[-1]
    assert sent.dialect == "openai-images" and sent.auth_style == "bearer" and sent.key_ok
    assert sent.json["aspect_ratio"] == "16:9" and sent.json["size"] == "2k"


def test_openai_images_generate_url_serves_the_file(relay, oclient):
    answer = oclient.images.generate(model="nano-banana", prompt="a cat", size="2:3", response_format="url")
    assert answer.data[0].b64_json is None
    download = httpx.get(answer.data[0].url)
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert download.content == relay.images_served[-1]
    assert pixels(download.content)[1] == (832, 1248)
    # The behaviour can force a url answer even when b64 was asked.
    relay.enqueue(Behaviour("image", url=True, mime="image/jpeg"))
    answer = oclient.images.generate(model="nano-banana", prompt="a cat", response_format="b64_json")
    assert httpx.get(answer.data[0].url).headers["content-type"] == "image/jpeg"
    assert httpx.get(relay.url + "/files/unknown.png").status_code == 404


def test_openai_images_edit_multipart(relay, oclient):
    first, second = make_image(300, 200), make_image(40, 40, "JPEG")
    answer = oclient.images.edit(
        model="nano-banana-pro", prompt="give it a hat", image=[("a.png", first, "image/png"), ("b.jpg", second, "image/jpeg")]
    )
    assert base64.b64decode(answer.data[0].b64_json) == relay.images_served[-1]
    sent = relay.requests[-1]
    assert sent.form["prompt"] == ["give it a hat"] and sent.form["model"] == ["nano-banana-pro"]
    assert sent.form["image[]"] == [first, second]
    assert [(u.filename, u.content_type) for u in sent.uploads] == [("a.png", "image/png"), ("b.jpg", "image/jpeg")]
    assert pixels(relay.images_served[-1])[1] == (1024, 1024)  # follows the last input (1:1)


def test_openai_images_edit_json_data_url(relay):
    url = "data:image/png;base64," + base64.b64encode(make_image(160, 90)).decode()
    response = httpx.post(
        relay.url + "/v1/images/edits",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "nano-banana-pro", "prompt": "x", "image": [url]},
    )
    assert base64.b64decode(response.json()["data"][0]["b64_json"]) == relay.images_served[-1]
    assert pixels(relay.images_served[-1])[1] == (1376, 768)
    missing = httpx.post(
        relay.url + "/v1/images/edits", headers={"Authorization": f"Bearer {KEY}"}, json={"model": "m-image", "prompt": "x"}
    )
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"


def test_openai_images_blocked_is_a_content_policy_error(relay, oclient):
    relay.enqueue(Behaviour("blocked"))
    with pytest.raises(BadRequestError) as caught:
        oclient.images.generate(model="nano-banana", prompt="x")
    assert caught.value.code == "content_policy_violation"
    relay.enqueue(Behaviour("finish", reason="NO_IMAGE"))
    assert oclient.images.generate(model="nano-banana", prompt="x").data == []


def test_openai_chat_markdown_image(relay, oclient):
    portrait = "data:image/png;base64," + base64.b64encode(make_image(90, 160)).decode()
    answer = oclient.chat.completions.create(
        model=PRO,
        messages=[{"role": "user", "content": [{"type": "text", "text": "redraw"}, {"type": "image_url", "image_url": {"url": portrait}}]}],
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content.startswith("![image](data:image/png;base64,")
    data = base64.b64decode(choice.message.content.split("base64,", 1)[1].rstrip(")"))
    assert data == relay.images_served[-1] and pixels(data)[1] == (768, 1376)  # follows the input's 9:16
    assert answer.usage.prompt_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert relay.requests[-1].dialect == "openai-chat"


def test_openai_chat_images_field_refusal_and_stream(relay, oclient):
    relay.enqueue(Behaviour("image", chat_images_field=True, text="Here you go"))
    message = oclient.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "draw"}]).choices[0].message
    assert message.content == "Here you go"
    url = message.images[0]["image_url"]["url"]
    assert base64.b64decode(url.split("base64,", 1)[1]) == relay.images_served[-1]

    relay.enqueue(Behaviour("blocked"))
    choice = oclient.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "x"}]).choices[0]
    assert choice.finish_reason == "content_filter" and "can't" in choice.message.content

    relay.enqueue(Behaviour("image"))
    chunks = list(oclient.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "x"}], stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert base64.b64decode(content.split("base64,", 1)[1].rstrip(")")) == relay.images_served[-1]
    assert chunks[-1].choices[0].finish_reason == "stop"


# ---------------------------------------------------------------------------------------------
# faults, straight on the wire


def test_429_with_retry_after(relay):
    relay.enqueue(Behaviour("error", status=429, retry_after=7))
    response = post_gemini(relay)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    error = response.json()["error"]
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED" and error["message"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in error["details"]
    assert post_gemini(relay).status_code == 200  # consumed: the next request gets the default


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_in_each_body_style(relay, status):
    relay.enqueue(
        Behaviour("error", status=status, message="upstream sad"),
        Behaviour("error", status=status, body="google_list"),
        Behaviour("error", status=status, body="openai"),
        Behaviour("error", status=status, body="html"),
    )
    google = post_gemini(relay)
    assert google.status_code == status and google.json()["error"]["message"] == "upstream sad"
    assert set(google.json()["error"]) == {"code", "message", "status", "details"}
    wrapped = post_gemini(relay)
    assert isinstance(wrapped.json(), list) and wrapped.json()[0]["error"]["code"] == status
    openai = post_gemini(relay)
    assert set(openai.json()["error"]) == {"message", "type", "code", "param"}
    html = post_gemini(relay)
    assert html.status_code == status and html.headers["content-type"].startswith("text/html")
    assert html.text.startswith("<html>") and str(status) in html.text
    assert relay.pending == 0


def test_truncated_body_is_a_read_error(relay):
    relay.enqueue(Behaviour("truncated"))
    with (
        httpx.Client() as client,
        client.stream("POST", relay.url + GEN, params={"key": KEY}, json={"contents": [{"parts": [{"text": "x"}]}]}) as response,
    ):
        announced = int(response.headers["content-length"])
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    assert len(received) == announced // 2
    assert relay.images_served == []  # never fully delivered
    assert post_gemini(relay).status_code == 200


def test_disconnect_without_a_response(relay):
    relay.enqueue(Behaviour("disconnect"))
    with pytest.raises(httpx.RemoteProtocolError):
        post_gemini(relay)
    assert post_gemini(relay).status_code == 200


def test_hang_never_answers_and_frees_up_when_the_client_leaves(relay):
    relay.enqueue(Behaviour("hang"))
    with pytest.raises(httpx.ReadTimeout):
        post_gemini(relay, timeout=httpx.Timeout(5, read=0.3))
    assert post_gemini(relay).status_code == 200
    assert [r.behaviour.kind for r in relay.requests] == ["hang", "image"]


def test_slow_answers(relay):
    relay.enqueue(Behaviour("slow", delay=2))
    with pytest.raises(httpx.ReadTimeout):
        post_gemini(relay, timeout=httpx.Timeout(5, read=0.2))

    # headers_first: the status arrives, then the body is late.
    relay.enqueue(Behaviour("slow", delay=2, headers_first=True))
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as client:
        with client.stream("POST", relay.url + GEN, params={"key": KEY}, json={"contents": [{"parts": [{"text": "x"}]}]}) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                response.read()

    # trickle: the whole body arrives, in many pieces.
    relay.enqueue(Behaviour("slow", delay=0.05, trickle=0.4, width=300, height=300, mime="image/jpeg"))  # ~10 KB: 10 pieces
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", relay.url + GEN, params={"key": KEY}, json={"contents": [{"parts": [{"text": "x"}]}]}) as response,
    ):
        pieces = list(response.iter_raw())
    assert len(pieces) > 3
    body = json.loads(b"".join(pieces))
    assert base64.b64decode(body["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"]) == relay.images_served[-1]


# ---------------------------------------------------------------------------------------------
# auth


@pytest.mark.parametrize(
    ("style", "params", "headers"),
    [
        ("query", {"key": KEY}, {}),
        ("bearer", {}, {"Authorization": f"Bearer {KEY}"}),
        ("x-goog-api-key", {}, {"x-goog-api-key": KEY}),
        ("bearer", {}, {"Authorization": f"Bearer sk-{KEY}"}),  # an sk- prefix is tolerated
    ],
)
def test_each_auth_style_is_accepted(relay, style, params, headers):
    response = httpx.post(relay.url + GEN, params=params, headers=headers, json={"contents": [{"parts": [{"text": "x"}]}]})
    assert response.status_code == 200
    assert (relay.requests[-1].auth_style, relay.requests[-1].key_ok) == (style, True)


def test_wrong_or_missing_key_is_refused_in_each_dialect(relay):
    relay.enqueue(Behaviour("error", status=503))
    for params, headers in (({"key": "wrong-key"}, {}), ({}, {})):
        gemini = httpx.post(relay.url + GEN, params=params, headers=headers, json={"contents": [{"parts": [{"text": "x"}]}]})
        assert gemini.status_code == 400
        error = gemini.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and error["details"][0]["reason"] == "API_KEY_INVALID"
        assert "wrong-key" not in gemini.text
    for path, body in (
        ("/v1/images/generations", {"model": "nano-banana", "prompt": "x"}),
        ("/v1/chat/completions", {"model": PRO, "messages": []}),
    ):
        refused = httpx.post(relay.url + path, headers={"Authorization": "Bearer wrong-key"}, json=body)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert "wrong-key" not in refused.text
    assert [r.key_ok for r in relay.requests] == [False] * 4
    assert relay.requests[1].auth_style is None
    assert relay.pending == 1  # refused requests consume no behaviour


# ---------------------------------------------------------------------------------------------
# prebuilt bodies, huge pictures, concurrency, async, control, CLI


def test_prebuilt_bodies_parse_with_the_sdks(relay, gclient, oclient):
    image = make_image(80, 60)
    relay.enqueue(Behaviour("raw", body=gemini_answer_body(image, "image/png", thoughts=2, escaped_slashes=True)))
    parts = gclient.models.generate_content(model=PRO, contents=["x"]).candidates[0].content.parts
    assert [bool(p.thought) for p in parts] == [True, True, False]
    assert parts[-1].inline_data.data == image and parts[-1].thought_signature

    snake = json.loads(gemini_answer_body(image, "image/png", casing="snake"))
    assert base64.b64decode(snake["candidates"][0]["content"]["parts"][0]["inline_data"]["data"]) == image

    relay.enqueue(Behaviour("raw", body=openai_images_answer_body(image)))
    assert base64.b64decode(oclient.images.generate(model="nano-banana", prompt="x").data[0].b64_json) == image
    relay.enqueue(Behaviour("raw", body=chat_answer_body(image, "image/png")))
    content = oclient.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "x"}]).choices[0].message.content
    assert base64.b64decode(content.split("base64,", 1)[1].rstrip(")")) == image


def test_huge_answer_is_a_noisy_4k_png(relay):
    relay.enqueue(Behaviour("image", huge=True))
    response = post_gemini(relay, timeout=60)
    data = base64.b64decode(response.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"])
    assert data == relay.images_served[-1]
    assert pixels(data) == ("PNG", (4096, 4096))
    assert len(data) > 15_000_000  # noise: it does not compress away


def test_concurrent_requests_with_large_bodies(relay):
    payload = base64.b64encode(make_image(64, 64) + bytes(2_000_000)).decode()  # ~2.7 MB of base64
    body = {"contents": [{"parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": payload}}]}]}
    results: list[int] = []

    def one() -> None:
        results.append(post_gemini(relay, body, timeout=30).status_code)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 16
    assert len(relay.requests) == 16
    assert all(r.json["contents"][0]["parts"][1]["inlineData"]["data"] == payload for r in relay.requests)


async def test_works_inside_async_tests():
    async with RelayDouble(api_key=KEY) as relay:
        relay.enqueue(Behaviour("image", width=32, height=32))
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(relay.url + GEN, headers={"x-goog-api-key": KEY}, json={"contents": [{"parts": [{"text": "x"}]}]})
        assert response.status_code == 200
        assert pixels(relay.images_served[-1])[1] == (32, 32)


def test_http_control_endpoints(relay):
    enqueued = httpx.post(relay.url + "/__double/enqueue", json=[{"kind": "error", "status": 503}, {"kind": "blocked"}])
    assert enqueued.json() == {"queued": 2}
    httpx.post(relay.url + "/__double/default", json={"kind": "text_only", "text": "words"})
    assert post_gemini(relay).status_code == 503
    assert "promptFeedback" in post_gemini(relay).json()
    assert post_gemini(relay).json()["candidates"][0]["content"]["parts"][0]["text"] == "words"
    listed = httpx.get(relay.url + "/__double/requests").json()
    assert [r["behaviour"]["kind"] for r in listed] == ["error", "blocked", "text_only"]
    assert listed[0]["json"]["contents"][0]["parts"][0]["text"] == "a cat" and listed[0]["auth_style"] == "query"
    assert httpx.post(relay.url + "/__double/enqueue", json={"kind": "nope"}).status_code == 400
    httpx.post(relay.url + "/__double/reset")
    assert relay.requests == [] and relay.default == Behaviour("image")


def test_runs_as_its_own_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.relay_double", "--port", "0", "--api-key", "cli-key"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split(" ", 1)[1]
        httpx.post(url + "/__double/enqueue", json={"kind": "image", "width": 20, "height": 10})
        response = httpx.post(url + GEN, params={"key": "cli-key"}, json={"contents": [{"parts": [{"text": "x"}]}]})
        data = base64.b64decode(response.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"])
        assert pixels(data)[1] == (20, 10)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
