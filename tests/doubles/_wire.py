"""Answer bodies in the three relay dialects, shaped like what real relays send.

Bodies are built as a list of byte segments: the small JSON frame is rendered with
``json.dumps`` and the (cached) base64 of each picture is spliced in where a placeholder sits,
so a 35 MB answer costs one list, not a 35 MB string being escaped and copied again.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from ._images import Picture, is_flash_25, picture, sniff_size

Segments = list[bytes]

_TOKEN = "@@NB-B64-{}@@"
_TOKEN_RE = re.compile(rb"@@NB-B64-(\d+)@@")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")

THOUGHT_TEXTS = (
    "**Planning the composition**\n\nI'm working out where the subject sits and how the light falls.",
    "**Refining the details**\n\nThe first draft is close; I'm sharpening the edges and fixing the colours.",
    "**Checking the request**\n\nMaking sure every element the prompt asks for is present.",
)
DEFAULT_SOURCES = (
    {"uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AUZIYQ-double-1", "title": "weather.gov"},
    {"uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AUZIYQ-double-2", "title": "example.org"},
)
FINISH_MESSAGES = {
    "IMAGE_SAFETY": "Unable to show the generated image. The image was filtered out because it violated "
    "Google's Generative AI Prohibited Use policy. You will not be charged for blocked images. "
    "Try rephrasing the prompt.",
    "IMAGE_PROHIBITED_CONTENT": "Unable to show the generated image: it may contain prohibited content.",
    "PROHIBITED_CONTENT": "The request was blocked because it may contain prohibited content.",
    "NO_IMAGE": "Unable to generate an image for this prompt. Try rephrasing it.",
    "IMAGE_OTHER": "Unable to generate the image for an unspecified reason.",
    "IMAGE_RECITATION": "Unable to show the generated image because it may recite existing content.",
    "RECITATION": "The answer was stopped because it may recite existing content.",
}
REFUSAL_TEXT = "I'm sorry, but I can't create that image because it may violate the content policy."
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GOOGLE_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    502: "Bad gateway: the upstream channel failed.",
    503: "The model is overloaded. Please try again later.",
    504: "The service is currently unavailable. Deadline exceeded.",
}
HTML_TITLES = {
    400: "400 Bad Request",
    401: "401 Authorization Required",
    403: "403 Forbidden",
    404: "404 Not Found",
    413: "413 Request Entity Too Large",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


# ---------------------------------------------------------------------------------------------
# rendering


def render(obj: Any, pictures: list[Picture] = (), *, escaped_slashes: bool = False, indent: int | None = None) -> Segments:
    """JSON with each ``_TOKEN`` placeholder replaced by the base64 of ``pictures[i]``."""
    if indent:
        text = json.dumps(obj, ensure_ascii=False, indent=indent)
    else:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    raw = text.encode("utf-8")
    if escaped_slashes:
        raw = raw.replace(b"/", b"\\/")
    segments: Segments = []
    pos = 0
    for match in _TOKEN_RE.finditer(raw):
        segments.append(raw[pos : match.start()])
        pic = pictures[int(match.group(1))]
        segments.append(pic.b64_escaped if escaped_slashes else pic.b64)
        pos = match.end()
    segments.append(raw[pos:])
    return segments


def recase(obj: Any, casing: str) -> Any:
    """camelCase keys -> snake_case ("snake": everywhere; "mixed": only inside content.parts,
    as the seed-000 relay does: ``inline_data``/``mime_type`` beside ``finishReason``)."""
    if casing == "camel":
        return obj
    if casing == "snake":
        return _snake_all(obj)
    if casing == "mixed":
        out = dict(obj) if isinstance(obj, dict) else obj
        for cand in (out.get("candidates") or []) if isinstance(out, dict) else []:
            content = cand.get("content")
            if isinstance(content, dict) and "parts" in content:
                content["parts"] = _snake_all(content["parts"])
        return out
    raise ValueError(f"casing must be camel, snake or mixed, not {casing!r}")


def _snake_all(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {_CAMEL.sub(r"_\1", k).lower() if not k.startswith("@") else k: _snake_all(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snake_all(v) for v in obj]
    return obj


def token(index: int) -> str:
    return _TOKEN.format(index)


def new_response_id() -> str:
    return uuid.uuid4().hex[:22]


# ---------------------------------------------------------------------------------------------
# Gemini native


def output_tokens(model: str | None, size: str | None) -> int:
    if is_flash_25(model):
        return 1290
    if size == "4K":
        return 2000
    if size == "512":
        return 747
    return 1120 if "3.1" in (model or "") else 1210


def gemini_usage(prompt_tokens: int, out_tokens: int, thoughts_tokens: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": out_tokens,
        "totalTokenCount": prompt_tokens + out_tokens + thoughts_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": out_tokens}],
    }
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return usage


def grounding_metadata(sources: list[dict[str, str]], queries: list[str], image_search: bool = False) -> dict[str, Any]:
    chips = "".join(f'<a class="chip" href="{s["uri"]}">{s["title"]}</a>' for s in sources)
    meta: dict[str, Any] = {
        "webSearchQueries": queries,
        "searchEntryPoint": {
            "renderedContent": "<style>.container{display:flex}.chip{padding:4px 8px}</style>"
            f'<div class="container"><div class="carousel">{chips}</div></div>'
        },
        "groundingChunks": [{"web": {"uri": s["uri"], "title": s["title"]}} for s in sources],
    }
    if image_search:
        meta["imageSearchQueries"] = queries
        meta["groundingChunks"] += [
            {
                "image": {
                    "sourceUri": s["uri"],
                    "imageUri": f"https://images.example.org/{i}.jpg",
                    "title": s["title"],
                    "domain": s["title"],
                }
            }
            for i, s in enumerate(sources)
        ]
    return meta


def gemini_image_parts(
    final: Picture,
    drafts: list[Picture],
    *,
    thoughts: int = 0,
    text: str | None = None,
    signature: str,
    text_signature: str,
    markdown: bool = False,
) -> tuple[list[dict[str, Any]], list[Picture]]:
    """Thought parts (text, draft image, ...) then an optional leading text, then the image.

    Returns the camelCase parts and the pictures their placeholders refer to.
    """
    pictures: list[Picture] = []
    parts: list[dict[str, Any]] = []
    for i in range(thoughts):
        if i % 2 == 0:
            parts.append({"text": THOUGHT_TEXTS[(i // 2) % len(THOUGHT_TEXTS)], "thought": True})
        else:
            draft = drafts[(i // 2) % len(drafts)]
            pictures.append(draft)
            parts.append({"inlineData": {"mimeType": draft.mime, "data": token(len(pictures) - 1)}, "thought": True})
    pictures.append(final)
    final_token = token(len(pictures) - 1)
    if markdown:
        # Relays that flatten answers to text put the picture in a markdown data URL; the
        # signature does not survive that conversion.
        md = f"![image](data:{final.mime};base64,{final_token})"
        parts.append({"text": f"{text}\n\n{md}" if text else md})
    else:
        if text:
            parts.append({"text": text, "thoughtSignature": text_signature})
        parts.append({"inlineData": {"mimeType": final.mime, "data": final_token}, "thoughtSignature": signature})
    return parts, pictures


def gemini_response(
    parts: list[dict[str, Any]] | None,
    *,
    model: str,
    usage: dict[str, Any],
    finish_reason: str | None = "STOP",
    finish_message: str | None = None,
    grounding: dict[str, Any] | None = None,
    prompt_feedback: dict[str, Any] | None = None,
    response_id: str | None = None,
) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    if prompt_feedback is None:
        candidate: dict[str, Any] = {}
        if parts is not None:
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish_reason:
            candidate["finishReason"] = finish_reason
        if finish_message:
            candidate["finishMessage"] = finish_message
        candidate["index"] = 0
        if grounding:
            candidate["groundingMetadata"] = grounding
        answer["candidates"] = [candidate]
    else:
        answer["promptFeedback"] = prompt_feedback
    answer["usageMetadata"] = usage
    answer["modelVersion"] = model
    answer["responseId"] = response_id or new_response_id()
    return answer


def gemini_stream_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Split a whole answer the way streamGenerateContent sends it: one part per chunk, the
    finish reason, grounding and usage on the last one."""
    candidates = answer.get("candidates")
    parts = ((candidates or [{}])[0].get("content") or {}).get("parts") if candidates else None
    if not parts or len(parts) == 1:
        return [answer]
    base = {k: v for k, v in answer.items() if k not in ("candidates", "usageMetadata")}
    chunks: list[dict[str, Any]] = []
    for part in parts[:-1]:
        chunks.append({"candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}], **base})
    last_candidate = dict(candidates[0])
    last_candidate["content"] = {"parts": [parts[-1]], "role": "model"}
    last = dict(answer)
    last["candidates"] = [last_candidate]
    chunks.append(last)
    return chunks


def drafts_for(final: Picture, count: int = 2) -> list[Picture]:
    return [
        picture(final.width, final.height, final.mime if final.mime != "image/webp" else "image/png", f"draft-{i}") for i in range(count)
    ]


def gemini_answer_body(
    image: bytes,
    mime: str = "image/png",
    *,
    casing: str = "camel",
    thoughts: int = 0,
    escaped_slashes: bool = False,
    text: str | None = None,
    signature: str = "bmItZG91YmxlLXNpZ25hdHVyZQ==",
    grounding: bool = False,
    markdown: bool = False,
    model: str = "gemini-3-pro-image-preview",
    indent: int | None = 2,
) -> bytes:
    """A complete generateContent answer carrying ``image`` as the final picture."""
    size = sniff_size(image) or (64, 64)
    final = Picture(image, mime, size[0], size[1])
    parts, pictures = gemini_image_parts(
        final,
        drafts_for(final) if thoughts > 1 else [],
        thoughts=thoughts,
        text=text,
        signature=signature,
        text_signature="bmItZG91YmxlLXRleHQtc2lnbmF0dXJl",
        markdown=markdown,
    )
    answer = gemini_response(
        parts,
        model=model,
        usage=gemini_usage(12, output_tokens(model, None), 96 * thoughts),
        grounding=grounding_metadata(list(DEFAULT_SOURCES), ["double grounding query"]) if grounding else None,
    )
    return b"".join(render(recase(answer, casing), pictures, escaped_slashes=escaped_slashes, indent=indent))


# ---------------------------------------------------------------------------------------------
# OpenAI Images


def openai_images_response(items: list[dict[str, Any]], *, prompt_tokens: int, image_tokens: int, out_tokens: int) -> dict[str, Any]:
    return {
        "created": int(time.time()),
        "data": items,
        "usage": {
            "input_tokens": prompt_tokens + image_tokens,
            "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": prompt_tokens},
            "output_tokens": out_tokens,
            "total_tokens": prompt_tokens + image_tokens + out_tokens,
        },
    }


def openai_images_answer_body(image: bytes | None = None, *, url: str | None = None, escaped_slashes: bool = False) -> bytes:
    """An images/generations (or edits) answer: ``b64_json`` of ``image``, or a ``url`` item."""
    if (image is None) == (url is None):
        raise ValueError("give exactly one of image or url")
    pictures: list[Picture] = []
    if image is not None:
        size = sniff_size(image) or (64, 64)
        pictures.append(Picture(image, "image/png", size[0], size[1]))
        item = {"b64_json": token(0)}
    else:
        item = {"url": url}
    answer = openai_images_response([item], prompt_tokens=12, image_tokens=0, out_tokens=1290)
    return b"".join(render(answer, pictures, escaped_slashes=escaped_slashes))


# ---------------------------------------------------------------------------------------------
# OpenAI Chat Completions


def chat_response(
    *,
    model: str,
    content: str | None,
    finish_reason: str = "stop",
    images: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 12,
    completion_tokens: int = 0,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if images is not None:
        message["images"] = images
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_image_message(final: Picture, text: str | None, images_field: bool) -> tuple[str, list[dict[str, Any]] | None]:
    """(content, images) for an image answer: markdown in content, or OpenRouter-style images[]."""
    data_url = f"data:{final.mime};base64,{token(0)}"
    if images_field:
        return text or "", [{"type": "image_url", "image_url": {"url": data_url}, "index": 0}]
    md = f"![image]({data_url})"
    return (f"{text}\n\n{md}" if text else md), None


def chat_stream_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat.completion as chat.completion.chunk events: role+content, then finish+usage."""
    choice = answer["choices"][0]
    message = choice["message"]
    base = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"], "model": answer["model"]}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("images") is not None:
        delta["images"] = message["images"]
    return [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}], "usage": answer["usage"]},
    ]


def chat_answer_body(
    image: bytes,
    mime: str = "image/png",
    *,
    images_field: bool = False,
    text: str | None = None,
    escaped_slashes: bool = False,
    model: str = "gemini-3-pro-image-preview",
) -> bytes:
    """A chat.completion whose message carries ``image`` as a markdown data URL (or images[])."""
    size = sniff_size(image) or (64, 64)
    final = Picture(image, mime, size[0], size[1])
    content, images = chat_image_message(final, text, images_field)
    answer = chat_response(model=model, content=content, images=images, completion_tokens=output_tokens(model, None))
    return b"".join(render(answer, [final], escaped_slashes=escaped_slashes))


# ---------------------------------------------------------------------------------------------
# errors


def google_error(status: int, message: str | None = None, *, reason: str | None = None, retry_after: float | None = None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if reason:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
    if retry_after is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{_num(retry_after)}s"})
    return {
        "error": {
            "code": status,
            "message": message or GOOGLE_MESSAGES.get(status, "The request failed."),
            "status": GOOGLE_STATUS.get(status, "UNKNOWN"),
            "details": details,
        }
    }


def openai_error(status: int, message: str | None = None, *, code: str | None = None, type_: str | None = None) -> dict[str, Any]:
    if type_ is None:
        type_ = "invalid_request_error" if status < 429 else ("rate_limit_error" if status == 429 else "server_error")
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    default = {
        400: "Invalid request.",
        401: "Incorrect API key provided.",
        404: "The requested resource was not found.",
        429: "Rate limit reached for requests. Please try again later.",
        500: "The server had an error while processing your request.",
        502: "Bad gateway: upstream request failed.",
        503: "The upstream model is overloaded (no available channel). Please try again later.",
        504: "Upstream request timed out.",
    }
    return {"error": {"message": message or default.get(status, "The request failed."), "type": type_, "param": None, "code": code}}


def html_page(status: int) -> bytes:
    title = HTML_TITLES.get(status, f"{status} Error")
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def retry_after_header(value: float | str) -> str:
    return value if isinstance(value, str) else _num(value)
