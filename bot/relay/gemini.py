"""Gemini-native dialect: ``POST {base}/v1beta/models/{model}:generateContent``.

Requests are always camelCase: relays re-serialise what they receive, and a snake_case
``thought_signature`` or ``generation_config`` can be dropped silently on the way. Answers are
read in either casing.

Wire decisions:
- ``imageSize`` is sent as ``1K``/``2K``/``4K`` and, for 3.1 Flash's smallest size, ``512``:
  the value Google's API documents ("1K default, also 2K, 4K and 512 (0.5K)"). Some relays'
  docs write ``512px``; a relay that only takes that spelling answers 400, so the client resends
  once with ``512px`` when a 512 request gets a plain 400 (not a key error; see ``send.py``). A 400 costs nothing, and relays often answer Google's
  generic "Request contains an invalid argument." without naming the field.
- ``responseModalities`` is ``["TEXT", "IMAGE"]``: the model's words are part of the result
  (they explain refusals), and it is the API's default anyway.
- ``thinkingConfig`` is sent only when a thinking level was asked for (3.1 Flash), with
  ``includeThoughts: false`` unless previews are wanted: leaving thought parts out of the
  answer saves up to two draft pictures of transfer.
- Grounding is ``tools: [{"googleSearch": {}}]``, the form every relay passes through;
  image search names its search types (see :mod:`.grounding`).
- Previews (:mod:`.previews`) ask ``includeThoughts: true`` and stream the answer.
"""

from __future__ import annotations

from typing import Any

import pybase64

from .answer import (
    AnswerError,
    BrokenAnswer,
    Parsed,
    envelope_error,
    error_info,
    finish_to_reason,
    get,
    hosted_images,
    no_image,
    strip_hosted_images,
)
from .blob import Blob, DecodeError, RefusedAnswer, b64_bytes, check_text, data_urls, plain_text
from .grounding import image_queries, search_tool, sources
from .types import GenerationRequest, InputImage, Usage


def camel(key: str) -> str:
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def materialize(value: Any) -> Any:
    """A JSON-serialisable copy of a value that may hold :class:`Blob` objects (a model turn,
    a history). Each Blob becomes the exact string the relay sent; that costs about 80 ms of
    GIL per 4K picture, so do it only where JSON text is really needed (e.g. a session file),
    never on the way to a relay: the client serialises Blobs itself, in slices."""
    if isinstance(value, Blob):
        return value.text()  # the exact string json.loads would have produced
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


def camelize(value: Any) -> Any:
    """Keys to camelCase, recursively; values (thoughtSignature, base64 data, Blobs) untouched.

    A Blob stays a Blob: turning a 4K picture back into its 35 MB base64 string would hold
    the GIL for ~80 ms and keep a second copy of the picture alive."""
    if isinstance(value, dict):
        return {camel(k) if isinstance(k, str) else k: camelize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camelize(v) for v in value]
    return value


def path(model: str) -> str:
    return f"/models/{model}:generateContent"


def stream_path(model: str) -> str:
    """The same call answered as server-sent events, one per part as the model makes it."""
    return f"/models/{model}:streamGenerateContent?alt=sse"


# Base64 is made in slices this big (a multiple of 3): one encoder call holds the GIL, so
# slices let the event loop run between them when this runs in a worker thread.
_B64_SLICE = 3 * 2**18


def b64_text(data: bytes) -> str:
    """``base64.b64encode(data).decode()``, in slices (call it off the event loop for big data)."""
    if len(data) <= _B64_SLICE:
        return pybase64.b64encode(data).decode("ascii")
    view = memoryview(data)
    return "".join(pybase64.b64encode(view[i : i + _B64_SLICE]).decode("ascii") for i in range(0, len(data), _B64_SLICE))


def user_turn(prompt: str, images: list[InputImage]) -> dict[str, Any]:
    """The user turn for ``prompt`` and ``images`` (base64 made here: call it in a thread when
    the pictures are big)."""
    parts: list[dict[str, Any]] = [{"text": prompt}]
    for image in images:
        parts.append({"inlineData": {"mimeType": image.mime_type, "data": b64_text(image.data)}})
    return {"role": "user", "parts": parts}


def build(
    request: GenerationRequest,
    images: list[InputImage],
    size_wire: str | None,
    *,
    turn: dict[str, Any] | None = None,
    thoughts: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body and the user turn it ends with (for the conversation record).

    ``turn``: the user turn already made by :func:`user_turn` for ``images`` (saves encoding
    them again). ``request.history`` may hold :class:`Blob` objects in place of base64 strings
    (a ``model_turn`` reused as is, or a replayed conversation): they stay Blobs in the body,
    which only a serialiser that knows them (``body.json_body``) turns into JSON.
    """
    if turn is None:
        turn = user_turn(request.prompt, images)
    contents = [camelize(entry) for entry in request.history] + [turn]
    generation: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    image_config: dict[str, Any] = {}
    if request.aspect_ratio:
        image_config["aspectRatio"] = request.aspect_ratio
    if size_wire:
        image_config["imageSize"] = size_wire
    if image_config:
        generation["imageConfig"] = image_config
    if request.thinking or thoughts:
        thinking: dict[str, Any] = {"thinkingLevel": request.thinking.upper()} if request.thinking else {}
        generation["thinkingConfig"] = {**thinking, "includeThoughts": thoughts}
    body: dict[str, Any] = {"contents": contents, "generationConfig": generation}
    if request.grounding:
        body["tools"] = [search_tool(request.image_search)]
    if request.safety_settings:
        body["safetySettings"] = [dict(entry) for entry in request.safety_settings]
    return body, turn


# More parts than any model turn holds (thoughts, up to two drafts, the picture, some text):
# an answer past it is refused rather than walked part by part.
MAX_PARTS = 64


def _too_many_parts() -> RefusedAnswer:
    return RefusedAnswer(f"the answer holds more than {MAX_PARTS} parts")


def merge_chunks(chunks: list[Any]) -> dict[str, Any]:
    """A streamed answer (JSON array or SSE events of partial responses) as one response."""
    merged: dict[str, Any] = {}
    parts: list[dict[str, Any]] = []
    # The text pieces of parts[-1] while a streamed text part is being joined: joined once at
    # the end, as `+=` on a str held in a dict copies it each time (quadratic in the text).
    pending: list[str] = []
    candidate: dict[str, Any] = {}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            return chunk
        for key in ("promptFeedback", "prompt_feedback"):
            if key in chunk and "promptFeedback" not in merged:
                merged["promptFeedback"] = chunk[key]
        usage = get(chunk, "usageMetadata")
        if usage:
            merged["usageMetadata"] = usage
        candidates = get(chunk, "candidates")
        for cand in candidates[:1] if isinstance(candidates, list) else []:
            if not isinstance(cand, dict):
                continue
            content = get(cand, "content") or {}
            parts_in = get(content, "parts")
            for part in parts_in if isinstance(parts_in, list) else []:
                if not isinstance(part, dict):
                    continue
                prev = parts[-1] if parts else None
                # Streaming splits one text part into many: join them back.
                if (
                    prev is not None
                    and isinstance(part.get("text"), str)
                    and isinstance(prev.get("text"), str)
                    and bool(part.get("thought")) == bool(prev.get("thought"))
                    and not get(part, "thoughtSignature")
                ):
                    pending.append(part["text"])
                    continue
                if pending:
                    assert prev is not None  # pending text is always prev's
                    prev["text"] = "".join([prev["text"], *pending])
                    pending = []
                if len(parts) == MAX_PARTS:
                    raise _too_many_parts()
                parts.append(dict(part))
            for key in ("finishReason", "groundingMetadata", "finishMessage"):
                value = get(cand, key)
                if value:
                    candidate[key] = value
            if get(content, "role"):
                candidate["role"] = get(content, "role")
    if pending:
        parts[-1]["text"] = "".join([parts[-1]["text"], *pending])
    if parts or candidate:
        role = candidate.pop("role", "model")
        merged["candidates"] = [{"content": {"role": role, "parts": parts}, **candidate}]
    return merged


def _usage(data: dict[str, Any]) -> Usage:
    meta = get(data, "usageMetadata")
    if not isinstance(meta, dict):
        return Usage()

    def num(name: str) -> int | None:
        value = get(meta, name)
        return int(value) if isinstance(value, (int, float)) else None

    return Usage(
        prompt_tokens=num("promptTokenCount"),
        output_tokens=num("candidatesTokenCount"),
        total_tokens=num("totalTokenCount"),
        raw=camelize(meta),
    )


def parse(data: Any) -> Parsed:
    data = _answer_object(data)
    candidate = _first_candidate(data)
    content = get(candidate, "content") or {}
    parts = get(content, "parts") or []
    if isinstance(parts, list) and len(parts) > MAX_PARTS:
        raise _too_many_parts()
    finish = str(get(candidate, "finishReason") or "")
    try:
        image, hosted, texts = _read_parts(parts if isinstance(parts, list) else [])
    except DecodeError as exc:
        raise BrokenAnswer(str(exc)) from None

    text = "\n".join(texts).strip()
    turn = camelize(content) if isinstance(content, dict) else {"parts": []}
    turn.setdefault("role", "model")
    _canonical_base64(turn)
    parsed = Parsed(
        text=text,
        usage=_usage(data),
        sources=sources(candidate),
        image_queries=image_queries(candidate),
        model_turn=turn,
        finish_reason=finish,
    )
    if image is not None:
        parsed.image, parsed.mime_type = image
        return parsed
    if hosted is not None:
        parsed.image_url = hosted
        return parsed
    model_text = text or str(get(candidate, "finishMessage") or "")
    raise no_image(finish_to_reason(finish, bool(text)), finish, model_text)


def _answer_object(data: Any) -> dict[str, Any]:
    """The answer as one response object (a streamed one merged); an error envelope raised."""
    if isinstance(data, list):
        info = error_info(data)
        if info:
            raise AnswerError(info)
        data = merge_chunks(data)
    if not isinstance(data, dict):
        raise BrokenAnswer("the answer is not a JSON object")
    if "error" in data:
        raise envelope_error(data)
    return data


def _first_candidate(data: dict[str, Any]) -> dict[str, Any]:
    """The answer's first candidate; a blocked prompt or an answer without any raised."""
    feedback = get(data, "promptFeedback")
    candidates = get(data, "candidates") or []
    if not isinstance(candidates, list) or not candidates:
        block = get(feedback, "blockReason")
        if block:
            raise no_image("blocked", str(block), str(get(feedback, "blockReasonMessage") or ""))
        if "candidates" not in data and "promptFeedback" not in data and "prompt_feedback" not in data:
            info = error_info(data)
            if info:
                raise AnswerError(info)
            raise BrokenAnswer("the answer has no candidates")
        raise no_image("no_image", "no candidates")
    return candidates[0] if isinstance(candidates[0], dict) else {}


_Picture = tuple[bytes, str]  # (bytes, the mime type the relay claimed)


def _read_parts(parts: list[Any]) -> tuple[_Picture | None, str | None, list[str]]:
    """The last picture (inline, or the URL of a hosted one) and the model's words. Thought
    parts (the model's drafts) are skipped."""
    image: _Picture | None = None
    hosted: str | None = None
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        thought = part.get("thought") is True
        inline = get(part, "inlineData")
        file_data = get(part, "fileData")
        if isinstance(inline, dict):
            mime = str(get(inline, "mimeType") or "")
            raw = inline.get("data")
            if not thought and isinstance(raw, (str, Blob)) and (mime.startswith("image/") or not mime):
                # Some relays put a whole data URL where the bare base64 belongs.
                embedded = data_urls(raw) if isinstance(raw, str) and raw.startswith("data:") else []
                image, hosted = (embedded[-1][1], embedded[-1][0]) if embedded else (b64_bytes(raw), mime), None
        elif isinstance(file_data, dict):
            uri = get(file_data, "fileUri")
            mime = str(get(file_data, "mimeType") or "")
            if not thought and isinstance(uri, str) and uri.startswith(("http://", "https://")) and (mime.startswith("image/") or not mime):
                hosted, image = uri, None
        elif part.get("text") is not None and not thought:
            image, hosted = _read_text(part["text"], image, hosted, texts)
    return image, hosted, texts


def _read_text(text: Any, image: _Picture | None, hosted: str | None, texts: list[str]) -> tuple[_Picture | None, str | None]:
    """A text part: pictures embedded in it (data URLs, links to hosted ones) replace the
    ones found so far; its words go to ``texts``."""
    if isinstance(text, (str, Blob)):
        check_text(text)
    embedded = data_urls(text)
    if embedded:
        mime, raw_bytes = embedded[-1]
        image, hosted = (raw_bytes, mime), None
    words = plain_text(text)
    links = hosted_images(words)
    if links:
        hosted, image = links[-1], None
        words = strip_hosted_images(words)
    if words:
        texts.append(words)
    return image, hosted


def _canonical_base64(turn: dict[str, Any]) -> None:
    """Pictures in a model turn as standard, unbroken base64 (in place).

    The turn goes back to relays as history; some answer with MIME-wrapped lines or the
    URL-safe alphabet, which a strict relay refuses on the way in ("Base64 decoding failed").
    Same bytes, only the spelling changes. Blobs are canonical already."""
    parts = turn.get("parts")
    for part in parts if isinstance(parts, list) else []:
        inline = part.get("inlineData") if isinstance(part, dict) else None
        if not isinstance(inline, dict):
            continue
        data = inline.get("data")
        if not isinstance(data, str) or data.startswith("data:"):
            continue
        if any(c in data for c in "\n\r\t -_"):
            inline["data"] = "".join(data.split()).translate(_URLSAFE)


_URLSAFE = str.maketrans("-_", "+/")


def history_image(history: list[dict[str, Any]]) -> InputImage | None:
    """The latest non-thought picture the model made in ``history`` (for dialects without
    multi-turn: "latest image + new instruction")."""
    for entry in reversed(history):
        if not isinstance(entry, dict) or get(entry, "role") != "model":
            continue
        found: InputImage | None = None
        for part in get(entry, "parts") or []:
            if not isinstance(part, dict) or part.get("thought") is True:
                continue
            inline = get(part, "inlineData")
            if isinstance(inline, dict) and isinstance(inline.get("data"), (str, Blob)):
                try:
                    found = InputImage(data=b64_bytes(inline["data"]), mime_type=str(get(inline, "mimeType") or "image/png"))
                except DecodeError:
                    continue
            elif isinstance(part.get("text"), (str, Blob)):
                embedded = data_urls(part["text"])
                if embedded:
                    found = InputImage(data=embedded[-1][1], mime_type=embedded[-1][0])
        if found is not None:
            return found
    return None
