"""The incremental answer decoder must give exactly what json.loads + b64decode would give,
however the body is cut into chunks."""

from __future__ import annotations

import base64
import io
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.relay.blob import Blob, DecodeError, b64_bytes, data_urls, plain_text
from bot.relay.stream import StreamDecoder

# Small knobs so short bodies take the streaming path (the defaults are 64 KiB / 32 KiB).
SMALL = {"threshold": 24, "min_run": 12}


def noise_png(width: int, height: int, seed: int = 1) -> bytes:
    """A real PNG that does not compress (so its base64 is long)."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(body: bytes, cuts: list[int] | None = None, size: int | None = None, **knobs: int) -> Any:
    dec = StreamDecoder(**knobs)
    if size:
        cuts = list(range(size, len(body), size))
    start = 0
    for cut in sorted(set(cuts or [])) + [len(body)]:
        dec.feed(body[start:cut])
        start = cut
    return dec.close()


def materialize(value: Any) -> Any:
    """Blobs back to the strings they stand for, to compare with json.loads."""
    if isinstance(value, Blob):
        return value.text()
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


def gemini_body(images: list[bytes], *, casing: str = "camel", thoughts: int = 0, text: str | None = None) -> bytes:
    inline, mime = ("inlineData", "mimeType") if casing == "camel" else ("inline_data", "mime_type")
    parts: list[dict[str, Any]] = []
    for n in range(thoughts):
        parts.append({"text": f'**Thinking {n}** about the "scene"…', "thought": True})
        parts.append({inline: {mime: "image/png", "data": b64(noise_png(40, 30, seed=100 + n))}, "thought": True})
    if text:
        parts.append({"text": text})
    for n, image in enumerate(images):
        part: dict[str, Any] = {inline: {mime: "image/png", "data": b64(image)}}
        part["thoughtSignature" if casing == "camel" else "thought_signature"] = f"sig{n}/+=="
        parts.append(part)
    answer = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
        "modelVersion": "gemini-3-pro-image-preview",
    }
    return json.dumps(answer).encode()


def final_images(parsed: dict[str, Any]) -> list[bytes]:
    """What the relay client keeps: non-thought image parts, in order."""
    out = []
    for part in parsed["candidates"][0]["content"]["parts"]:
        inline = part.get("inlineData") or part.get("inline_data")
        if inline and not part.get("thought"):
            out.append(b64_bytes(inline["data"]))
    return out


# -- whole images, byte for byte ---------------------------------------------------------


@pytest.mark.parametrize("casing", ["camel", "snake"])
def test_gemini_image_comes_back_byte_exact_in_both_casings(casing: str) -> None:
    image = noise_png(200, 150)
    body = gemini_body([image], casing=casing, text="Here is your cat.")
    parsed = decode(body, size=65536)
    inline = parsed["candidates"][0]["content"]["parts"][-1]["inlineData" if casing == "camel" else "inline_data"]
    assert isinstance(inline["data"], Blob)  # the large field took the streaming path
    assert b64_bytes(inline["data"]) == image
    assert Image.open(io.BytesIO(b64_bytes(inline["data"]))).size == (200, 150)
    assert materialize(parsed) == json.loads(body)


def test_escaped_slashes_in_base64_decode_to_the_same_image() -> None:
    image = noise_png(200, 150, seed=7)
    body = json.dumps({"created": 1, "data": [{"b64_json": b64(image)}]}).replace("/", "\\/").encode()
    assert b"\\/" in body
    for size in (4096, 65536, 1000003):
        parsed = decode(body, size=size)
        assert b64_bytes(parsed["data"][0]["b64_json"]) == image
        assert materialize(parsed) == json.loads(body)


def test_several_image_parts_each_decode_to_their_own_image() -> None:
    images = [noise_png(120, 100, seed=s) for s in (1, 2, 3)]
    body = gemini_body(images)
    parsed = decode(body, size=8192)
    assert final_images(parsed) == images
    assert materialize(parsed) == json.loads(body)


def test_thought_parts_are_kept_and_the_client_can_skip_them() -> None:
    image = noise_png(200, 150, seed=4)
    body = gemini_body([image], thoughts=2, text="Done")
    parsed = decode(body, size=65536)
    assert materialize(parsed) == json.loads(body)
    parts = parsed["candidates"][0]["content"]["parts"]
    assert [bool(p.get("thought")) for p in parts] == [True, True, True, True, False, False]
    assert final_images(parsed) == [image]
    assert parts[-1]["thoughtSignature"] == "sig0/+=="


def test_markdown_data_url_in_chat_content() -> None:
    image = noise_png(200, 150, seed=5)
    content = f"Here you go ![image](data:image/png;base64,{b64(image)}) — enjoy 🍌"
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()
    parsed = decode(body, size=65536)
    got = parsed["choices"][0]["message"]["content"]
    assert isinstance(got, Blob)
    assert got.mime_type == "image/png"
    assert data_urls(got) == [("image/png", image)]
    assert plain_text(got) == plain_text(content) == "Here you go  — enjoy 🍌"
    assert materialize(parsed) == json.loads(body)


def test_two_data_urls_in_one_content_both_come_out() -> None:
    first, second = noise_png(200, 150, seed=8), noise_png(150, 200, seed=9)
    content = f"A ![a](data:image/png;base64,{b64(first)}) and B ![b](data:image/png;base64,{b64(second)})."
    body = json.dumps({"choices": [{"message": {"content": content}}]}, ensure_ascii=False).encode()
    got = decode(body, size=30000)["choices"][0]["message"]["content"]
    assert data_urls(got) == data_urls(content) == [("image/png", first), ("image/png", second)]
    assert plain_text(got) == plain_text(content) == "A  and B ."
    assert got.text() == content
    assert got.prefix + b64(got.data) + got.suffix == content


def test_bare_data_url_field() -> None:
    image = noise_png(200, 150, seed=6)
    body = json.dumps({"images": [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(image)}"}}]}).encode()
    url = decode(body, size=65536)["images"][0]["image_url"]["url"]
    assert data_urls(url) == [("image/jpeg", image)]
    assert plain_text(url) == ""


def test_unicode_and_escapes_in_small_strings_survive() -> None:
    answer = {
        "text": 'Chinese 中文, emoji 🍌, quote ", backslash \\, tab \t, newline \n, nul \u0000, lone \ud800',
        'keys "é"': ["\u2028", "/path/", "\\/not an escape"],
        "n": [1, -2.5e-3, True, False, None],
    }
    for ascii_only in (True, False):
        body = json.dumps(answer, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        assert decode(body, size=3) == json.loads(body)
        assert decode(body, size=3, **SMALL) == json.loads(body)


async def test_afeed_gives_the_same_answer_as_feed() -> None:
    image = noise_png(300, 200, seed=12)
    body = gemini_body([image], thoughts=1).replace(b"/", b"\\/")
    dec = StreamDecoder()
    for start in range(0, len(body), 200_000):  # chunks larger than afeed's slices
        await dec.afeed(body[start : start + 200_000])
    parsed = dec.close()
    assert final_images(parsed) == [image]
    assert parsed == decode(body, size=65536)


# -- strings that only look like base64 come back as the exact str ---------------------


def test_long_text_that_is_not_base64_stays_a_string() -> None:
    words = " ".join(f"word{n}" for n in range(30000))
    alnum_then_text = "A" * 100_000 + " and then words"
    body = json.dumps({"a": words, "b": alnum_then_text}).encode()
    parsed = decode(body, size=65536)
    assert parsed == json.loads(body)
    assert isinstance(parsed["a"], str) and isinstance(parsed["b"], str)


@pytest.mark.parametrize(
    "value",
    [
        "QUJD" * 30000 + "QR==",  # non-canonical last group
        "QUJD" * 30000 + "QQ",  # missing padding
        "QUJD" * 30000 + "Q",  # a lone character
        "QUJD" * 30000 + "=",  # padding after a whole group
        "QUJD" * 30000 + "QQ==QUJD",  # data after padding
        "prefix text " + "QUJD" * 30000,  # text before, not a data URL
    ],
)
def test_base64_lookalikes_come_back_exact(value: str) -> None:
    body = json.dumps({"data": value}).encode()
    parsed = decode(body, size=65536)
    assert parsed == {"data": value}
    assert type(parsed["data"]) is str


@pytest.mark.parametrize(
    "value",
    [
        "QUJD" * 30000 + "\n" + "QUJD" * 10,  # one line break
        "\n".join(["QUJD" * 19] * 2000) + "\n",  # MIME: 76-character lines, trailing break
        "\r\n".join(["QUJD" * 19] * 2000),  # CRLF lines
        "\n".join(["QUJD" * 19] * 2000) + "QQ==",  # padded last group after a break
    ],
)
def test_line_wrapped_base64_is_decoded_and_its_text_kept_exact(value: str) -> None:
    body = json.dumps({"data": value}).encode()
    parsed = decode(body, size=65536)
    data = parsed["data"]
    assert b64_bytes(data) == base64.b64decode(value)
    assert (data.text() if isinstance(data, Blob) else data) == value


def test_bad_padding_is_a_decode_error_when_the_image_is_read() -> None:
    body = json.dumps({"data": "QUJD" * 30000 + "QQ"}).encode()
    with pytest.raises(DecodeError):
        b64_bytes(decode(body, size=65536)["data"])


def test_padded_field_decodes_exactly() -> None:
    for cut in (1, 2):
        image = noise_png(200, 150)[:-cut]  # lengths that need "=" and "=="
        body = json.dumps({"data": b64(image)}).encode()
        for size in (65536, len(body) - 1, len(body) - 2):
            parsed = decode(body, size=size)
            assert isinstance(parsed["data"], Blob)
            assert b64_bytes(parsed["data"]) == image


# -- every way of cutting the stream -----------------------------------------------------


def small_gemini_body() -> bytes:
    image = noise_png(6, 4, seed=11)  # about 140 bytes of PNG
    content = f"see ![i](data:image/png;base64,{b64(image[:40])}) ok"
    answer = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": '思考 "x"\\n', "thought": True},
                        {"inlineData": {"mimeType": "image/png", "data": b64(image)}, "thoughtSignature": "c2ln"},
                        {"text": content},
                    ]
                }
            }
        ]
    }
    return json.dumps(answer, ensure_ascii=False).encode()


@pytest.mark.parametrize("escaped", [False, True])
def test_split_at_every_byte(escaped: bool) -> None:
    body = small_gemini_body()
    if escaped:
        body = body.replace(b"/", b"\\/")
    expected = json.loads(body)
    whole = decode(body, **SMALL)
    assert isinstance(whole["candidates"][0]["content"]["parts"][1]["inlineData"]["data"], Blob)
    assert isinstance(whole["candidates"][0]["content"]["parts"][2]["text"], Blob)
    assert materialize(whole) == expected
    for cut in range(1, len(body)):
        assert decode(body, [cut], **SMALL) == whole, cut
    assert decode(body, size=1, **SMALL) == whole


LOOKALIKES = [
    "QUJD" * 12 + "QR==",
    "QUJD" * 10 + "Q",
    "A" * 50 + " b",
    "QUJD" * 9 + "=",
    "QUJD" * 9 + "QQ==QUJD",
    "data:image/png;base64," + "QUJD" * 9 + "QQ",
    "see data:image/png;base64," + "QUJD" * 9 + "QQ==) and data:image/gif;base64," + "QUJD" * 8 + "QUI= end",
    "x/" * 30 + "QUJD" * 9,
    "\\" * 5 + "/QUJD" * 9 + '"\\u00e9' + "QUJD" * 9 + "\n",
]


@pytest.mark.parametrize("escaped", [False, True])
def test_lookalikes_split_at_every_byte(escaped: bool) -> None:
    body = json.dumps(LOOKALIKES).encode()
    if escaped:
        body = body.replace(b"/", b"\\/")
    expected = json.loads(body)
    whole = decode(body, **SMALL)
    assert materialize(whole) == expected
    assert any(isinstance(v, Blob) for v in whole) and any(isinstance(v, str) for v in whole)
    for cut in range(1, len(body)):
        assert decode(body, [cut], **SMALL) == whole, cut
        assert decode(body, [cut, cut + 3, cut + 5], **SMALL) == whole, cut


def test_every_truncation_is_a_decode_error() -> None:
    body = small_gemini_body().replace(b"/", b"\\/")
    for cut in range(len(body)):
        with pytest.raises(DecodeError):
            decode(body[:cut], size=7, **SMALL)
        with pytest.raises(DecodeError):
            decode(body[:cut])


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"a": 1,}', b'{"a": "\\x"}', b'{"a": "tab\there"}', b"[1 2]", b'{"a": "\xff\xfe"}', b'"unterminated'],
)
def test_invalid_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(body, size=2, **SMALL)


def test_invalid_bytes_inside_a_streamed_string_are_a_decode_error() -> None:
    run = b"QUJD" * 40
    for bad in (b"\xff", b"\n", b"\\x", b"\\u12G4"):
        body = b'{"data": "' + run + bad + run + b'"}'
        with pytest.raises(DecodeError):
            decode(body, size=5, **SMALL)


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.text(max_size=30),
    st.binary(min_size=0, max_size=120).map(b64),
    st.builds(
        lambda raw, words: f"{words} ![x](data:image/png;base64,{b64(raw)}) {words}",
        st.binary(min_size=1, max_size=90),
        st.text(max_size=8),
    ),
    st.sampled_from(
        ["QUJD" * 12 + "QR==", "QUJD" * 10 + "Q", "A" * 50 + " b", "QUJD" * 9 + "=", "data:image/png;base64," + "QUJD" * 9 + "QQ"]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=json_value, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12), escaped=st.booleans(), ascii_only=st.booleans()
)
def test_any_answer_cut_anywhere_matches_json_loads(value: Any, cuts: list[int], escaped: bool, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if escaped:
        body = body.replace(b"/", b"\\/")
    cuts = [c % (len(body) + 1) for c in cuts]
    whole = decode(body, **SMALL)
    assert materialize(whole) == json.loads(body)
    assert decode(body, cuts, **SMALL) == whole
    assert materialize(decode(body, cuts)) == json.loads(body)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=50_000, max_value=120_000),
    seed=st.integers(min_value=0, max_value=2**32),
    cuts=st.lists(st.integers(min_value=0, max_value=170_000), max_size=25),
    escaped=st.booleans(),
    markdown=st.booleans(),
)
def test_large_images_cut_anywhere_decode_byte_exact(size: int, seed: int, cuts: list[int], escaped: bool, markdown: bool) -> None:
    image = random.Random(seed).randbytes(size)
    if markdown:
        answer: dict[str, Any] = {"choices": [{"message": {"content": f"ok ![image](data:image/webp;base64,{b64(image)})"}}]}
    else:
        answer = {"candidates": [{"content": {"parts": [{"inline_data": {"mime_type": "image/png", "data": b64(image)}}]}}]}
    body = json.dumps(answer).encode()
    if escaped:
        body = body.replace(b"/", b"\\/")
    parsed = decode(body, [c % (len(body) + 1) for c in cuts])
    if markdown:
        assert data_urls(parsed["choices"][0]["message"]["content"]) == [("image/webp", image)]
    else:
        assert b64_bytes(parsed["candidates"][0]["content"]["parts"][0]["inline_data"]["data"]) == image
    assert materialize(parsed) == json.loads(body)
