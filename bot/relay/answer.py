"""What the three dialect parsers share: the parsed answer, no-image reasons, error envelopes.

A parser turns a decoded JSON answer into :class:`Parsed` (an image or a URL to fetch, plus
text, usage, sources) or raises :class:`NoImage` (the relay answered without a picture),
:class:`AnswerError` (the body is an error envelope) or :class:`BrokenAnswer` (the body is
not what any relay sends: worth another attempt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .blob import Blob
from .redact import cut
from .types import GroundingSource, NoImage, Usage


class BrokenAnswer(Exception):
    """The answer is malformed (bad JSON shape, undecodable image): retried like a broken body."""


@dataclass
class ErrorInfo:
    message: str = ""
    status_text: str = ""  # Google's "INVALID_ARGUMENT", OpenAI's error type
    reason: str = ""  # Google's details[].reason, e.g. API_KEY_INVALID; OpenAI's error code
    code: int | None = None  # a numeric code inside the envelope
    retry_delay: float | None = None  # Google's RetryInfo.retryDelay ("5s"), when there is no header


class AnswerError(Exception):
    """A 2xx answer whose body is an error envelope."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


@dataclass
class Parsed:
    image: bytes | None = None
    mime_type: str | None = None
    image_url: str | None = None  # a hosted picture to download at once
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    sources: list[GroundingSource] = field(default_factory=list)
    image_queries: list[str] = field(default_factory=list)
    model_turn: dict[str, Any] | None = None
    finish_reason: str = ""


def get(obj: Any, camel: str, default: Any = None) -> Any:
    """``obj[camel]`` or its snake_case twin: relays answer in either casing."""
    if not isinstance(obj, dict):
        return default
    if camel in obj:
        return obj[camel]
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()
    return obj.get(snake, default)


# --- no-image answers -------------------------------------------------------------------

SAFETY_REASONS = {
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "CONTENT_FILTER",
}
RECITATION_REASONS = {"RECITATION", "IMAGE_RECITATION"}

_REASON_TEXT = {
    "blocked": "the prompt was blocked",
    "safety": "the picture was withheld by the safety filter",
    "recitation": "the picture was withheld because it resembled protected content",
    "no_image": "the model made no picture",
    "text_only": "the model answered with text only",
}


# The model's own words shown to people (a result's "the model says", a refusal's reason):
# redacted, then cut to this many characters.
MODEL_TEXT_CAP = 1000


def no_image(reason: str, detail: str = "", model_text: str = "") -> NoImage:
    detail = cut(detail or "", 300)
    model_text = cut((model_text or "").strip(), MODEL_TEXT_CAP).strip()
    message = _REASON_TEXT.get(reason, "the model made no picture")
    if detail:
        message += f" ({detail})"
    if model_text:
        message += f"; the model said: {model_text}"
    return NoImage(message, reason=reason, model_text=model_text, detail=detail, key=f"error.no_image.{reason}")


def finish_to_reason(finish: str | None, has_text: bool) -> str:
    value = (finish or "").upper()
    if value in SAFETY_REASONS:
        return "safety"
    if value in RECITATION_REASONS:
        return "recitation"
    if value in ("", "STOP", "FINISH_REASON_UNSPECIFIED", "END_TURN", "LENGTH") and has_text:
        return "text_only"
    return "no_image"


# --- error envelopes ----------------------------------------------------------------------

_POLICY_WORDS = (
    "content_policy",
    "content policy",
    "safety",
    "moderation",
    "content_filter",
    "prohibited",
    "policy_violation",
    "image_generation_user_error",
    "blocked",
)


def envelope_error(data: dict[str, Any]) -> AnswerError:
    """The AnswerError of an answer that has an ``error`` member, whatever its shape."""
    return AnswerError(error_info(data) or ErrorInfo(message=str(data["error"])))


def error_info(body: Any) -> ErrorInfo | None:
    """The error inside a decoded body: ``{"error":{...}}``, a list-wrapped one, a bare
    ``{"message":...}``/``{"detail":...}``; None when the body carries no error."""
    if isinstance(body, list):
        for item in body:
            found = error_info(item)
            if found:
                return found
        return None
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, str):
        return ErrorInfo(message=err, status_text=str(body.get("type") or ""), reason=str(body.get("code") or ""))
    if isinstance(err, dict):
        info = ErrorInfo(
            message=_text(err.get("message") or err.get("msg") or err.get("detail") or ""),
            status_text=_text(err.get("status") or err.get("type") or ""),
        )
        code = err.get("code")
        if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
            info.code = int(code)
        elif isinstance(code, str):
            info.reason = code
        details = err.get("details")
        for detail in details if isinstance(details, list) else []:
            if not isinstance(detail, dict):
                continue
            if detail.get("reason") and not info.reason:
                info.reason = str(detail["reason"])
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and re.fullmatch(r"\d+(?:\.\d+)?s", delay.strip()):
                info.retry_delay = float(delay.strip()[:-1])
        if not info.message:
            info.message = _text(err)
        return info
    if err not in (None, False, "", [], {}):
        return ErrorInfo(message=_text(err))
    if "candidates" in body or "choices" in body or "data" in body:
        return None
    for name in ("message", "detail", "msg", "error_msg", "errorMessage"):
        if isinstance(body.get(name), (str, dict, list)) and body.get(name):
            return ErrorInfo(message=_text(body[name]), status_text=str(body.get("type") or body.get("status") or ""))
    return None


def _text(value: Any) -> str:
    if isinstance(value, Blob):
        return "(binary data)"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    if isinstance(value, dict):
        inner = value.get("msg") or value.get("message")
        return _text(inner) if inner else str(value)
    return str(value)


def is_policy_refusal(info: ErrorInfo) -> bool:
    """An error that is really a refusal of the content (OpenAI Images answers those with 400)."""
    haystack = " ".join((info.message, info.status_text, info.reason)).lower()
    return any(word in haystack for word in _POLICY_WORDS)


def text_of_html(body: str) -> str:
    """A one-line gist of an HTML error page (its title or first heading)."""
    # str.find, not a lazy ".*?": on "<title>" repeated without its end tag that was quadratic.
    lowered = body.lower()
    for tag in ("title", "h1"):
        start = lowered.find("<" + tag)
        close = lowered.find(">", start) if start >= 0 else -1
        end = lowered.find(f"</{tag}>", close) if close >= 0 else -1
        if end >= 0:
            return re.sub(r"\s+", " ", re.sub(r"<[^<>]*+>", "", body[close + 1 : end])).strip()
    return re.sub(r"\s+", " ", re.sub(r"<[^<>]*+>", " ", body)).strip()


# Links to hosted pictures, as some relays put in text answers: markdown images, or bare
# addresses that end like a picture file (a bare link to a web page is just text).
# Linear on any text: no quantifier crosses the "[" / "(" that could start another match or
# gives back what it took (text made of "![" or "http://" repeated once took minutes).
HOSTED_IMAGE = re.compile(r"!\[[^\[\]]*+\]\((https?://[^()\s]++)\)")
# A bare address: the whole address first (possessive), then whether it ends like a picture.
_BARE_LINK = re.compile(r"(?<![(\w])https?://[^\s)\]\"'<>]++")
_PICTURE_END = re.compile(r"\.(?:png|jpe?g|webp)(?:\?[^\s)\]\"'<>]*+)?(?=[.,;]|$)", re.IGNORECASE)


def _bare_image_links(text: str) -> list[tuple[int, int]]:
    """(start, end) of each bare link to a picture file; a trailing "." "," ";" is not part
    of it, and neither is anything after the first picture-like ending."""
    spans = []
    for match in _BARE_LINK.finditer(text):
        address = match.group(0)
        end = _PICTURE_END.search(address)
        if end is not None:
            spans.append((match.start(), match.start() + end.end()))
    return spans


def hosted_images(text: str) -> list[str]:
    found = HOSTED_IMAGE.findall(text)
    return found or [text[a:b] for a, b in _bare_image_links(text)]


def strip_hosted_images(text: str) -> str:
    if HOSTED_IMAGE.search(text):
        return HOSTED_IMAGE.sub("", text).strip()
    pieces, at = [], 0
    for a, b in _bare_image_links(text):
        pieces.append(text[at:a])
        at = b
    pieces.append(text[at:])
    return "".join(pieces).strip()


def openai_usage(data: Any, *, images_api: bool = False) -> Usage:
    """``usage`` of an OpenAI-style answer. The Images API counts ``input_tokens``/
    ``output_tokens``, Chat ``prompt_tokens``/``completion_tokens``; relays mix them up, so
    both are read, the endpoint's own names first."""
    raw = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        return Usage()

    def num(*names: str) -> int | None:
        for name in names:
            if isinstance(raw.get(name), (int, float)):
                return int(raw[name])
        return None

    prompt, output = ("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")
    if not images_api:
        prompt, output = prompt[::-1], output[::-1]
    return Usage(prompt_tokens=num(*prompt), output_tokens=num(*output), total_tokens=num("total_tokens"), raw=raw)
