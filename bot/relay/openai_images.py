"""OpenAI Images dialect: ``/v1/images/generations`` and ``/v1/images/edits``.

Wire decisions:
- Text only goes to ``generations`` as JSON; with input pictures to ``edits`` as
  multipart/form-data. One picture is sent as the field ``image`` (what every server reads),
  several as repeated ``image[]`` (what the official openai SDK sends for a list, and what
  new-api-style relays read when ``image`` is absent). Mixing the two would make those relays
  keep only the ``image`` field. A relay that refuses the form with a message about the body
  format (JSON, content type, missing image) gets the edit once more as JSON with data-URL
  pictures in ``image`` - the form such relays take instead.
- ``size``: for 2.5 Flash it carries the aspect ratio (``"16:9"``) and ``aspect_ratio`` is not
  sent; for 3 Pro / 3.1 Flash it is the relay's lowercase ``1k``/``2k``/``4k`` (``512`` for
  the smallest, unverified on any relay) with ``aspect_ratio`` beside it. A relay model
  whose name carries the size (``nano-banana-pro-2k``) gets the ratio in ``size`` instead.
- ``imageConfig`` (``{"aspectRatio", "imageSize"}``, Gemini's own names) goes beside them:
  LiteLLM's images route takes exactly that object (JSON in a generation, a JSON string in an
  edit's form) and ignores ``aspect_ratio`` and a ``2k`` size, so without it the ratio and
  size would be lost there. Relays that do not know the field ignore it.
- ``response_format`` is ``b64_json``; relays that answer with a ``url`` anyway are
  downloaded at once (those URLs live only hours). LiteLLM refuses the field for Gemini
  unless its ``drop_params`` is set: ``drop`` names fields a relay refused, left out of the
  one resend the client makes (an answer is then read as ``b64_json`` or ``url`` alike).
- Several pictures in ``data[]`` for our ``n: 1``: the thought drafts came along (LiteLLM's
  images route lists every inline picture of the Gemini answer in order, drafts first,
  unmarked), so the last one is the picture.
- No multi-turn: the caller's history becomes "latest picture + new instruction".
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

from .answer import AnswerError, BrokenAnswer, Parsed, envelope_error, error_info, no_image, openai_usage
from .blob import Blob, DecodeError, b64_bytes, data_urls
from .capabilities import DIALECT_MAX_IMAGES
from .catalogue import MODELS, image_config
from .types import GenerationRequest, InputImage

GENERATIONS = "/images/generations"
EDITS = "/images/edits"
# OpenAI-style relays document edits as taking one to six pictures (the catalogue's table).
MAX_EDIT_IMAGES = DIALECT_MAX_IMAGES["openai-images"]
_SIZED_ALIAS = re.compile(r"-(?:0\.5|1|2|4)k$", re.IGNORECASE)


def size_fields(model_id: str, relay_model: str, ratio: str | None, size: str | None) -> dict[str, str]:
    spec = MODELS[model_id]
    fields: dict[str, str] = {}
    if not spec.sizes or _SIZED_ALIAS.search(relay_model):
        if ratio:
            fields["size"] = ratio
        return fields
    if size:
        fields["size"] = size.lower()
    if ratio:
        fields["aspect_ratio"] = ratio
    return fields


def build_generation(request: GenerationRequest, relay_model: str, drop: Sequence[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": relay_model,
        "prompt": request.prompt,
        "n": 1,
        "response_format": "b64_json",
    }
    body.update(size_fields(request.model, relay_model, request.aspect_ratio, request.size))
    if config := image_config(request):
        body["imageConfig"] = config
    return {k: v for k, v in body.items() if k not in drop}


def build_edit(
    request: GenerationRequest, relay_model: str, images: list[InputImage], drop: Sequence[str] = ()
) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    fields: dict[str, str] = {
        "model": relay_model,
        "prompt": request.prompt,
        "n": "1",
        "response_format": "b64_json",
    }
    fields.update(size_fields(request.model, relay_model, request.aspect_ratio, request.size))
    if config := image_config(request):
        fields["imageConfig"] = json.dumps(config, separators=(",", ":"))
    fields = {k: v for k, v in fields.items() if k not in drop}
    name = "image" if len(images) == 1 else "image[]"
    ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/heic": "heic", "image/heif": "heif"}
    files = [(name, (f"image-{i + 1}.{ext.get(img.mime_type, 'png')}", img.data, img.mime_type)) for i, img in enumerate(images)]
    return fields, files


def build_edit_json(request: GenerationRequest, relay_model: str, images: list[InputImage], drop: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON form of an edit some relays take instead of multipart: ``image`` holds the
    pictures as data URLs (one string for one picture, a list for several, like the form)."""
    urls = [f"data:{img.mime_type};base64,{base64.b64encode(img.data).decode('ascii')}" for img in images]
    body = build_generation(request, relay_model, drop)
    body["image"] = urls[0] if len(urls) == 1 else urls
    return body


def parse(data: Any) -> Parsed:
    if not isinstance(data, dict):
        info = error_info(data)
        if info:
            raise AnswerError(info)
        raise BrokenAnswer("the answer is not a JSON object")
    if data.get("error"):
        raise envelope_error(data)
    items = data.get("data")
    if items is None:
        info = error_info(data)
        if info:
            raise AnswerError(info)
        raise BrokenAnswer("the answer has no data field")
    if not isinstance(items, list) or not items:
        raise no_image("no_image", "empty data", str(data.get("message") or ""))
    usage = openai_usage(data, images_api=True)
    # The last picture: drafts (thought images) come first when a gateway lists them all.
    item = next((i for i in reversed(items) if isinstance(i, dict) and isinstance(i.get("b64_json") or i.get("url"), (str, Blob))), None)
    if item is None:
        raise no_image(
            "no_image", "no picture in the answer", str(items[0].get("revised_prompt") or "") if isinstance(items[0], dict) else ""
        )
    text = str(item.get("revised_prompt") or "")
    try:
        b64 = item.get("b64_json")
        if b64:
            # Some relays put a whole data URL into b64_json.
            embedded = data_urls(b64) if isinstance(b64, Blob) or (isinstance(b64, str) and b64.startswith("data:")) else []
            if embedded:
                mime, raw = embedded[-1]
                return Parsed(image=raw, mime_type=mime, text=text, usage=usage)
            return Parsed(image=b64_bytes(b64), mime_type=None, text=text, usage=usage)
        url = item["url"]
        if isinstance(url, (str, Blob)):
            embedded = data_urls(url) if isinstance(url, Blob) or url.startswith("data:") else []
            if embedded:
                mime, raw = embedded[-1]
                return Parsed(image=raw, mime_type=mime, text=text, usage=usage)
            # Relative paths ("/files/abc") are resolved against the relay by the client.
            if isinstance(url, str) and url.startswith(("http://", "https://", "/")):
                return Parsed(image_url=url, text=text, usage=usage)
        raise BrokenAnswer("the answer's url is not a web address")
    except DecodeError as exc:
        raise BrokenAnswer(str(exc)) from None
