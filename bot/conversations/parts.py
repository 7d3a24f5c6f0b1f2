"""The stored form of a turn's parts, and which parts of a model turn are kept.

Stored form
    ``user_parts``/``model_parts`` are the ``parts`` lists exactly as exchanged (camelCase),
    with one change: every ``inlineData.data`` (base64) is moved into the ImageStore and
    replaced, at the same key position, by ``inlineData.sha256``. Every other key
    (``thoughtSignature``, ``thought``, ``text``…) and the part order are kept as they were.
    Replaying puts the base64 back at that position, so the JSON sent is the JSON received.
    A model turn from the relay client may hold a :class:`~bot.relay.stream.Blob` where the
    base64 string was (a big picture, decoded while it streamed in): its bytes are stored as
    they are, with no base64 round trip. Older callers' base64 strings are decoded as before.
    The only rewrite: snake_case keys some relays answer with (``inline_data``, ``mime_type``,
    ``thought_signature``…) become camelCase, because relays re-serialize requests and can
    silently drop snake_case signatures (a relay that re-serializes drops the keys it does not know).

Thought parts (decision)
    Unsigned thought parts (``"thought": true``: the model's words and draft pictures while it
    thinks) never reach a stored turn: the relay layer drops them from every Gemini answer,
    streamed or plain (bot.relay.send), so a conversation replays the same turn whichever way
    the answer came, and a relay that sends drafts unasked does not make every later edit
    carry them. A thought part that carries a ``thoughtSignature`` is kept byte for byte: the
    API checks signatures, never unsigned parts. ``history(..., include_thoughts=False)`` still
    drops unsigned thought parts of turns stored before this rule.

What is stored of a model turn (decision: "what a later turn needs")
    A relay may answer with any number of parts (61 ``inlineData`` parts were tried: 61 files,
    60 MiB kept for 30 days). A later turn replays the path as stored, and the API checks the
    ``thoughtSignature`` of the parts it sent; an unsigned part is never checked, and the
    picture being edited is the delivered one. So :func:`needed_parts` keeps: the delivered
    picture (the last non-thought image, as ``gemini.parse`` picks it), every part that
    carries a ``thoughtSignature`` (byte for byte, image or text), unsigned text parts up to
    ``MAX_TURN_TEXT`` characters in all, and unsigned draft images (``"thought": true``,
    replayed as received, see "Thought parts") while the turn stays within
    ``MAX_TURN_IMAGES`` images and ``MAX_TURN_IMAGE_BYTES``. Unsigned non-thought images other
    than the delivered one (extra outputs) are never stored. A turn whose delivered and
    signed images alone exceed the caps (signed parts are kept whole or not at all) is
    stored as the delivered picture alone: the next edit replays that picture unsigned, as
    for dialects without history.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterator
from typing import Any

import pybase64

from bot.relay.stream import Blob

# Per-turn storage caps (see "What is stored of a model turn").
MAX_TURN_IMAGES = 4
MAX_TURN_IMAGE_BYTES = 64 * 2**20
MAX_TURN_TEXT = 32_000
# Relays may answer in the proto's snake_case; requests must be camelCase.
_CAMEL = {
    "inline_data": "inlineData",
    "mime_type": "mimeType",
    "thought_signature": "thoughtSignature",
    "file_data": "fileData",
    "file_uri": "fileUri",
    "display_name": "displayName",
    "video_metadata": "videoMetadata",
    "executable_code": "executableCode",
    "code_execution_result": "codeExecutionResult",
    "function_call": "functionCall",
    "function_response": "functionResponse",
}
_URLSAFE = str.maketrans("-_", "+/")
# Base64 is decoded in a worker thread, in slices: the decoder holds the GIL for a whole call,
# so one 20 MB call would stall the event loop; between ~1 MB slices the loop gets its turn.
_B64_SLICE = 4 * 3 * 65536  # a multiple of 4


def _decode_slices(s: str) -> bytes:
    return b"".join(pybase64.b64decode(s[i : i + _B64_SLICE], validate=True) for i in range(0, len(s), _B64_SLICE))


def b64decode(text: str) -> bytes:
    try:
        return _decode_slices(text)
    except binascii.Error:
        pass
    # Rare slow path: line breaks, URL-safe alphabet or missing padding from some relay.
    s = "".join(text.split()).translate(_URLSAFE).rstrip("=")
    s += "=" * (-len(s) % 4)
    try:
        return _decode_slices(s)
    except binascii.Error as exc:
        raise ValueError(f"inlineData.data is not valid base64: {exc}") from None


def has_blob(value: Any) -> bool:
    if isinstance(value, Blob):
        return True
    if isinstance(value, dict):
        return any(has_blob(v) for v in value.values())
    if isinstance(value, list):
        return any(has_blob(v) for v in value)
    return False


def b64len(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _inline_data(part: Any) -> Any:
    inline = part.get("inlineData") if isinstance(part, dict) else None
    return inline.get("data") if isinstance(inline, dict) else None


def _data_size(value: Any) -> int:
    if isinstance(value, Blob):
        return len(value.data)
    return len(value) * 3 // 4 if isinstance(value, str) else 0


def needed_parts(parts: list[Any], mime: str) -> list[Any]:
    """The parts of a model turn worth storing (camelCase already): see "What is stored of a
    model turn" above.
    Never modifies the caller's dicts; may return a one-part synthetic turn."""
    images = {i for i, p in enumerate(parts) if isinstance(_inline_data(p), (str, Blob))}
    delivered = next((i for i in sorted(images, reverse=True) if parts[i].get("thought") is not True), None)
    keep: set[int] = set()
    image_count = image_bytes = 0
    text_left = MAX_TURN_TEXT
    for i, part in enumerate(parts):
        signed = isinstance(part, dict) and "thoughtSignature" in part
        if i in images:
            if i == delivered or signed:
                keep.add(i)
                image_count += 1
                image_bytes += _data_size(_inline_data(part))
        elif isinstance(part, dict) and isinstance(part.get("text"), str) and not signed:
            if len(part["text"]) <= text_left:
                keep.add(i)
                text_left -= len(part["text"])
        else:
            keep.add(i)
    if image_count > MAX_TURN_IMAGES or image_bytes > MAX_TURN_IMAGE_BYTES:
        if delivered is None:
            return []
        only = parts[delivered]["inlineData"]
        return [{"inlineData": {"mimeType": only.get("mimeType") or mime, "data": only["data"]}}]
    # Unsigned drafts (thought images) are replayed when kept (as received), while room is left.
    for i in sorted(images - keep):
        part = parts[i]
        size = _data_size(_inline_data(part))
        if part.get("thought") is True and image_count < MAX_TURN_IMAGES and image_bytes + size <= MAX_TURN_IMAGE_BYTES:
            keep.add(i)
            image_count += 1
            image_bytes += size
    return [part for i, part in enumerate(parts) if i in keep]


def camel(value: Any) -> Any:
    """Rename snake_case wire keys to camelCase, keeping key order. Only the part itself and its
    inline/file data are renamed; free-form values (function args, text) stay as they are."""
    if isinstance(value, dict):
        return {_CAMEL.get(k, k): camel(v) if k in ("inline_data", "inlineData", "file_data", "fileData") else v for k, v in value.items()}
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def image_refs(parts: list[dict[str, Any]]) -> Iterator[str]:
    for part in parts:
        inline = part.get("inlineData") if isinstance(part, dict) else None
        if isinstance(inline, dict) and isinstance(inline.get("sha256"), str):
            yield inline["sha256"]


def refs_by_guild(rows: list[tuple[Any, ...]]) -> dict[Any, set[str]]:
    per_guild: dict[Any, set[str]] = {}
    for guild_id, picture, user_parts, model_parts in rows:
        refs = per_guild.setdefault(guild_id, set())
        if picture:
            refs.add(picture)
        for raw in (user_parts, model_parts):
            try:
                refs.update(image_refs(json.loads(raw)))
            except (TypeError, ValueError, AttributeError):
                continue
    return per_guild


def with_key_replaced(d: dict[str, Any], old: str, new: str, value: Any) -> dict[str, Any]:
    """``d`` with ``old`` swapped for ``new`` at the same position (JSON key order matters to us)."""
    return {(new if k == old else k): (value if k == old else v) for k, v in d.items()}
