"""OpenAI Chat Completions dialect: ``POST /v1/chat/completions``.

The request is one user message whose content parts are the prompt and the input pictures as
``data:`` URLs; ``stream`` is false. The dialect has no size or ratio field of its own (relays
make 1:1, or follow the input's ratio when editing), so a top-level ``imageConfig``
(``aspectRatio``/``imageSize``, Gemini's names) carries them: LiteLLM passes it on as
``generationConfig.imageConfig``; a relay that refuses it by name gets one resend without it,
and the client's result check tells the member when the shape came back otherwise. No thought
signatures, so there is no multi-turn: history becomes "latest picture + new instruction".

The picture comes back in ``message.content`` as a markdown data URL, as content parts
(``image_url``), in ``message.images[]`` (some gateways), as a hosted picture link, or - as
some relays do when nothing else is there - as a bare base64 run in the text. ``finish_reason: content_filter`` and
``message.refusal`` are refusals.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

from .answer import (
    AnswerError,
    BrokenAnswer,
    Parsed,
    envelope_error,
    error_info,
    finish_to_reason,
    hosted_images,
    no_image,
    openai_usage,
    strip_hosted_images,
)
from .blob import Blob, DecodeError, RefusedAnswer, b64_bytes, check_text, data_urls, plain_text
from .catalogue import image_config
from .images import sniff
from .types import GenerationRequest, InputImage

PATH = "/chat/completions"
# Starting only where a run starts, taken whole: linear (a run of 99 repeated was quadratic).
# As many content parts as a message may hold (text and pictures); past it, refused.
MAX_PARTS = 64
_BARE_B64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{100,}+={0,2}")


def build(request: GenerationRequest, relay_model: str, images: list[InputImage], drop: Sequence[str] = ()) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
    for image in images:
        url = f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"
        content.append({"type": "image_url", "image_url": {"url": url}})
    body: dict[str, Any] = {
        "model": relay_model,
        "stream": False,
        "messages": [{"role": "user", "content": content}],
    }
    config = image_config(request)
    if config and "imageConfig" not in drop:
        body["imageConfig"] = config
    return body


def merge_chunks(chunks: list[Any]) -> dict[str, Any]:
    """SSE ``chat.completion.chunk`` events as one completion (for relays that stream anyway)."""
    text: list[Any] = []
    images: list[Any] = []
    finish = None
    usage = None
    refusal: list[str] = []
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            return chunk
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices[:1] if isinstance(choices, list) else []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), (str, Blob)):
                text.append(delta["content"])
            elif isinstance(delta.get("content"), list):
                images.extend(delta["content"])
            if isinstance(delta.get("images"), list):
                images.extend(delta["images"])
            if isinstance(delta.get("refusal"), str):
                refusal.append(delta["refusal"])
            finish = choice.get("finish_reason") or finish
    joined: Any
    if all(isinstance(t, str) for t in text):
        joined = "".join(text)
    else:  # a Blob among the pieces: keep them as parts so none is flattened
        images = [{"type": "text", "text": t} for t in text] + images
        joined = None
    message: dict[str, Any] = {"role": "assistant", "content": joined}
    if images:
        message["images"] = images
    if refusal:
        message["refusal"] = "".join(refusal)
    out: dict[str, Any] = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage:
        out["usage"] = usage
    return out


def _image_from_part(part: Any) -> tuple[str, Any] | None:
    """('data', (mime, bytes)) or ('url', address) from an image content part."""
    if isinstance(part, (str, Blob)):
        target: Any = part
    elif isinstance(part, dict):
        inner = part.get("image_url") if part.get("image_url") is not None else part.get("url")
        if isinstance(inner, dict):
            inner = inner.get("url")
        if inner is None and isinstance(part.get("b64_json"), (str, Blob)):
            return ("data", (None, b64_bytes(part["b64_json"])))
        if inner is None and isinstance(part.get("data"), (str, Blob)):
            return ("data", (part.get("mime_type") or part.get("mimeType"), b64_bytes(part["data"])))
        target = inner
    else:
        return None
    if isinstance(target, Blob) or (isinstance(target, str) and target.startswith("data:")):
        found = data_urls(target)
        return ("data", found[-1]) if found else None
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return ("url", target)
    return None


def _bare_base64(text: str) -> tuple[str, bytes] | None:
    for match in reversed(list(_BARE_B64.finditer(text))):
        try:
            raw = base64.b64decode(match.group(0) + "=" * (-len(match.group(0)) % 4), validate=True)
        except ValueError:
            continue
        mime = sniff(raw) or ("image/gif" if raw.startswith(b"GIF8") else None)
        if mime:
            return mime, raw
    return None


def parse(data: Any) -> Parsed:
    data, message, finish = _message(data)
    try:
        found, texts = _read_message(message)
    except DecodeError as exc:
        raise BrokenAnswer(str(exc)) from None

    text = "\n".join(texts).strip()
    usage = openai_usage(data)
    if found:
        kind, value = found[-1]
        if kind == "url":
            return Parsed(image_url=value, text=text, usage=usage, finish_reason=finish)
        mime, raw = value
        return Parsed(image=raw, mime_type=mime, text=text, usage=usage, finish_reason=finish)
    refusal = message.get("refusal")
    if finish.lower() == "content_filter" or refusal:
        words = (str(refusal) if refusal else "") or text
        raise no_image("safety" if finish.lower() == "content_filter" else "blocked", finish or "refusal", words)
    raise no_image(finish_to_reason(finish, bool(text)), finish, text)


def _message(data: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The answer (a streamed one merged), its first choice's message and finish reason; an
    error envelope or an answer without choices raised."""
    if isinstance(data, list):
        data = merge_chunks(data)
    if not isinstance(data, dict):
        raise BrokenAnswer("the answer is not a JSON object")
    if data.get("error"):
        raise envelope_error(data)
    choices = data.get("choices")
    if not isinstance(choices, list):
        info = error_info(data)
        if info:
            raise AnswerError(info)
        raise BrokenAnswer("the answer has no choices")
    if not choices:
        raise no_image("no_image", "no choices")
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or choice.get("delta") or {}
    if not isinstance(message, dict):
        raise BrokenAnswer("the answer's message is not an object")
    return data, message, str(choice.get("finish_reason") or "")


def _read_message(message: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Every picture in the message in order, as ('data', (mime, bytes)) or ('url', address),
    and its words. A picture written into the text as bare base64 counts only when there is
    no other."""
    content = message.get("content")
    found: list[tuple[str, Any]] = []
    texts: list[str] = []
    pieces = content if isinstance(content, list) else [content] if content is not None else []
    extra = message.get("images")
    if len(pieces) > MAX_PARTS or (isinstance(extra, list) and len(extra) > MAX_PARTS):
        raise RefusedAnswer(f"the answer holds more than {MAX_PARTS} parts")
    for piece in pieces:
        if isinstance(piece, dict) and piece.get("type") in (None, "text", "output_text") and "text" in piece:
            piece = piece["text"]
        if isinstance(piece, (str, Blob)):
            check_text(piece)
            for mime, raw in data_urls(piece):
                found.append(("data", (mime, raw)))
            words = plain_text(piece)
            for link in hosted_images(words):
                found.append(("url", link))
            words = strip_hosted_images(words)
            if words:
                texts.append(words)
        else:
            item = _image_from_part(piece)
            if item:
                found.append(item)
    for part in extra if isinstance(extra, list) else []:
        item = _image_from_part(part)
        if item:
            found.append(item)
    if not found and texts:
        bare = _bare_base64("\n".join(texts))
        if bare:
            found.append(("data", bare))
            texts = [_BARE_B64.sub("", t).strip() for t in texts]
            texts = [t for t in texts if t]
    return found, texts
