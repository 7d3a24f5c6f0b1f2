"""Image -> prompt: a text-mode request to a Gemini-native relay, and reading its answer.

The relay client's ``generate`` is image-only; describing needs one small JSON call whose
answer is text, so the body and the parser are pure functions over JSON here, and
:func:`describe` sends them with ``RelayClient.call_json`` (one attempt, a bounded answer, the
key redacted from every error). Only the ``gemini`` dialect is used: the OpenAI Images dialect
has no text answers, and an image model behind a chat route may answer with a picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .refusal import Refusal
from .relay import gemini
from .relay.redact import cut
from .relay.types import InputImage, RelayConfig, RelayFailed

MAX_PROMPT = 1000  # what the answer is cut to: an /imagine prompt a member can still read
MAX_OUTPUT_TOKENS = 600
DESCRIBE_TIMEOUT = 60.0
# Sent to the model, not shown: it follows English instructions best; the language of the
# prompt it writes is asked for separately.
INSTRUCTION = (
    "Describe this image as a single prompt for an image-generation model, in {language}. "
    "Cover the subject, setting, composition, camera or viewpoint, lighting, colours, medium and style. "
    "Answer with the prompt only: no preamble, no quotes, no markdown, at most 120 words."
)
LANGUAGES = {"en": "English", "zh-CN": "Simplified Chinese"}


class DescribeError(Refusal):
    """The picture could not be described (translated key)."""


def build_request(image: InputImage, *, locale: str = "en") -> dict[str, Any]:
    """The ``generateContent`` body asking for text only about ``image``."""
    turn = gemini.user_turn(INSTRUCTION.format(language=LANGUAGES.get(locale, "English")), [image])
    return {
        "contents": [turn],
        "generationConfig": {"responseModalities": ["TEXT"], "maxOutputTokens": MAX_OUTPUT_TOKENS, "temperature": 0.4},
    }


def _get(value: Any, key: str) -> Any:
    """A field by its camelCase or snake_case name (relays answer in either)."""
    if not isinstance(value, dict):
        return None
    snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
    return value.get(key, value.get(snake))


def _merged_candidates(data: Any) -> tuple[Any, list[Any]]:
    """The answer object and its candidates; a streamed answer (a list of chunks) is joined."""
    if isinstance(data, list):
        parts: list[Any] = []
        feedback = None
        for chunk in data:
            feedback = feedback or _get(chunk, "promptFeedback")
            for cand in _get(chunk, "candidates") or []:
                parts += _get(_get(cand, "content"), "parts") or []
        return {"promptFeedback": feedback}, [{"content": {"parts": parts}}] if parts else []
    candidates = _get(data, "candidates")
    return data, candidates if isinstance(candidates, list) else []


def parse_answer(data: Any, *, secrets: tuple[str, ...] = ()) -> str:
    """The prompt in a Gemini answer: its non-thought text parts joined, tidied and cut to
    :data:`MAX_PROMPT` (``secrets`` redacted first). Raises DescribeError with a key:
    ``describe.blocked`` (with ``reason``), ``describe.failed``, ``describe.empty``."""
    if isinstance(data, dict) and "error" in data:
        raise DescribeError("the relay answered with an error", key="describe.failed")
    answer, candidates = _merged_candidates(data)
    if not isinstance(answer, dict):
        raise DescribeError("the answer is not a JSON object", key="describe.failed")
    block = _get(_get(answer, "promptFeedback"), "blockReason")
    if block:
        raise DescribeError(f"blocked: {block}", key="describe.blocked", reason=cut(str(block), 60))
    texts: list[str] = []
    for cand in candidates[:1]:
        for part in _get(_get(cand, "content"), "parts") or []:
            if isinstance(part, dict) and part.get("thought") is not True and isinstance(part.get("text"), str):
                texts.append(part["text"])
    text = _tidy("".join(texts))
    if not text:
        raise DescribeError("no text in the answer", key="describe.empty")
    return cut(text, MAX_PROMPT, secrets)


def _tidy(text: str) -> str:
    """One paragraph without the wrapping models like to add (fences, quotes, a "Prompt:" label)."""
    text = text.strip().strip("`").strip()
    for label in ("prompt:", "Prompt:", "PROMPT:", "提示词：", "提示词:"):
        if text.startswith(label):
            text = text[len(label) :]
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return "".join(c for c in text if c.isprintable())


class CallsJson(Protocol):
    async def call_json(self, relay: RelayConfig, path: str, *, body: Any = None, timeout: float = ...) -> Any: ...


async def describe(client: CallsJson, relay: RelayConfig, model: str, image: InputImage, *, locale: str = "en") -> str:
    """Ask ``relay`` (Gemini dialect) to describe ``image`` with ``model``; the prompt text.
    ``describe.dialect`` for a relay of another dialect (nothing is sent). Relay failures
    propagate as the relay client raises them (translated RelayError keys)."""
    if relay.dialect != "gemini":
        raise DescribeError("describe needs a Gemini-format relay", key="describe.dialect", relay=relay.name)
    wire_model = relay.model_aliases.get(model, model)
    body = build_request(image, locale=locale)
    data = await client.call_json(relay, gemini.path(wire_model), body=body, timeout=DESCRIBE_TIMEOUT)
    return parse_answer(data, secrets=(relay.api_key,) if relay.api_key else ())


async def describe_with(client: CallsJson, relays: Sequence[RelayConfig], model: str, image: InputImage, *, locale: str = "en") -> str:
    """:func:`describe` through a server's relays in their failover order, Gemini-format ones
    only (``describe.dialect`` naming the first relay when there is none); a relay failure
    moves on to the next such relay, and the last failure is raised."""
    gemini_relays = [r for r in relays if r.dialect == "gemini"]
    if not gemini_relays:
        name = relays[0].name if relays else "-"
        raise DescribeError("no Gemini-format relay", key="describe.dialect", relay=name)
    for relay in gemini_relays[:-1]:
        try:
            return await describe(client, relay, model, image, locale=locale)
        except RelayFailed:
            continue
    return await describe(client, gemini_relays[-1], model, image, locale=locale)
