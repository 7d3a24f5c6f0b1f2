"""A fake image relay on 127.0.0.1 that speaks the three dialects the bot uses.

Gemini native (``/v1beta/models/{model}:generateContent``), OpenAI Images
(``/v1/images/generations``, ``/v1/images/edits``) and OpenAI Chat Completions
(``/v1/chat/completions``), with every auth style relays use. It records each request and
answers with whatever :class:`Behaviour` is queued (or ``default``): images, refusals,
errors and transport faults (truncated bodies, slow or hung answers, dropped connections).

It runs in a background thread (usable from sync code, async tests, SDKs and subprocesses) or
as its own process::

    python -m tests.doubles.relay_double --port 0     # prints "READY http://127.0.0.1:PORT"

The agreed interface is in notes/RELAY_DOUBLE_API.md. Beyond it (extensions):

- ``/v1/models/{model}:generateContent`` is served like ``/v1beta/...`` (google-genai defaults to
  api_version "v1"); ``:streamGenerateContent`` (``?alt=sse`` or a JSON array) and chat
  ``"stream": true`` (SSE) split the same answer into chunks, one part per event. A request
  with ``thinkingConfig.includeThoughts: true`` gets the model's thoughts too (two in words,
  two draft pictures, all ``"thought": true``) unless the behaviour sets ``thoughts``;
  ``RelayDouble(streaming=False)`` is a relay without the stream endpoint (404).
- ``Behaviour("raw", status=, body=, content_type=, headers=)`` sends a body verbatim (e.g. one
  pre-built with :func:`gemini_answer_body`).
- Options: ``casing="mixed"`` (snake_case inside parts, camelCase around them, as seed 000),
  ``pretty`` (Gemini answers are indented like Google's unless ``pretty=False``),
  ``truncated(fraction=0.5)``, ``slow(headers_first=True)``; ``grounding`` may be a list of
  ``{"uri", "title"}``; left unset it follows whether the request asked for Google Search.
- ``Recorded.body/.model/.uploads/.behaviour/.size/.at``; ``relay.pending``,
  ``relay.wait_for_requests(n)``; ``GET /__double/images``; ``RelayDouble(record_bodies=False)``
  / ``--no-record-bodies`` and ``--prebuild-huge`` for long benchmarks.
"""

from __future__ import annotations

import argparse
import base64
import collections
import email.message
import email.utils
import gzip
import hashlib
import hmac
import json
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import _hostile
from . import _wire as wire
from ._images import (
    FLASH_25,
    HUGE_SIZE,
    RATIOS,
    SIZES,
    Picture,
    dimensions,
    huge_picture,
    is_flash_25,
    nearest_ratio,
    picture,
    sniff_b64_size,
    sniff_size,
)
from ._wire import chat_answer_body, gemini_answer_body, openai_images_answer_body

__all__ = [
    "Behaviour",
    "Recorded",
    "Upload",
    "RelayDouble",
    "SeedRelayDouble",
    "gemini_answer_body",
    "openai_images_answer_body",
    "chat_answer_body",
    "picture",
    "huge_picture",
]

# ---------------------------------------------------------------------------------------------
# behaviours

_IMAGE_OPTIONS = frozenset(
    {
        "width",
        "height",
        "mime",
        "casing",
        "thoughts",
        "text",
        "signature",
        "grounding",
        "markdown",
        "chat_images_field",
        "escaped_slashes",
        "huge",
        "url",
        "pretty",
    }
)
_ANSWER_OPTIONS = frozenset({"casing", "escaped_slashes", "pretty"})
KINDS: dict[str, frozenset[str]] = {
    "image": _IMAGE_OPTIONS,
    "blocked": _ANSWER_OPTIONS | {"reason", "message"},
    "finish": _ANSWER_OPTIONS | {"reason", "message"},
    "text_only": _ANSWER_OPTIONS | {"text", "signature"},
    "error": frozenset({"status", "body", "message", "retry_after"}),
    "truncated": _IMAGE_OPTIONS | {"fraction"},
    "slow": _IMAGE_OPTIONS | {"delay", "trickle", "headers_first"},
    "hang": frozenset(),
    "disconnect": frozenset(),
    "raw": frozenset({"status", "body", "content_type", "headers"}),  # (extension)
    # (extension) what a hostile relay sends: see tests/doubles/_hostile.py for the attacks
    "hostile": frozenset({"attack"}),
}


class Behaviour:
    """What the double does with one request: ``Behaviour("error", status=503, retry_after=1)``.

    Unknown kinds or options raise at once, so a typo cannot silently turn into the default.
    """

    def __init__(self, kind: str, **options: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown behaviour kind {kind!r}; known: {', '.join(KINDS)}")
        unknown = set(options) - KINDS[kind]
        if unknown:
            raise TypeError(
                f"behaviour {kind!r} takes no option(s) {', '.join(sorted(unknown))}; it takes {', '.join(sorted(KINDS[kind])) or 'none'}"
            )
        if kind == "hostile" and options.get("attack") not in _hostile.ATTACKS:
            raise ValueError(f"hostile attack must be one of {', '.join(sorted(_hostile.ATTACKS))}")
        if kind == "error" and options.get("body", "google") not in ("google", "google_list", "openai", "html", None):
            raise ValueError("error body must be google, google_list, openai or html")
        if options.get("casing", "camel") not in ("camel", "snake", "mixed"):
            raise ValueError("casing must be camel, snake or mixed")
        self.kind = kind
        self.options = options

    def get(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name)
        return default if value is None else value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        data = dict(data)
        kind = data.pop("kind", None)
        if kind is None:
            raise ValueError("a behaviour needs a 'kind'")
        return cls(kind, **data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Behaviour) and (self.kind, self.options) == (other.kind, other.options)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Behaviour({self.kind!r}{opts})"


# ---------------------------------------------------------------------------------------------
# recorded requests


@dataclass
class Upload:
    """A file part of a multipart request (extension)."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes = field(repr=False)


@dataclass(repr=False)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, list[str | bytes]] | None = None
    auth_style: str | None = None
    key_ok: bool = False
    dialect: str | None = None
    # (extensions)
    body: bytes = b""
    model: str | None = None
    uploads: list[Upload] = field(default_factory=list)
    behaviour: Behaviour | None = None  # the behaviour this request consumed (None: refused)
    at: float = 0.0
    size: int = 0  # body length in bytes, kept even when bodies are not recorded

    def __repr__(self) -> str:
        return (
            f"Recorded({self.method} {self.path} dialect={self.dialect} model={self.model} "
            f"auth={self.auth_style} key_ok={self.key_ok} body={self.size} bytes "
            f"behaviour={self.behaviour!r})"
        )

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """JSON-safe form for ``GET /__double/requests``; long strings and bytes are summarised
        unless ``full`` (a 35 MB body has no business crossing the control channel twice)."""
        shrink = (lambda v: _jsonable(v)) if full else _summarise
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": shrink(self.json),
            "form": shrink(self.form),
            "auth_style": self.auth_style,
            "key_ok": self.key_ok,
            "dialect": self.dialect,
            "model": self.model,
            "body_bytes": self.size,
            "uploads": [
                {"name": u.name, "filename": u.filename, "content_type": u.content_type, "bytes": len(u.data), "sha256": _sha(u.data)}
                for u in self.uploads
            ],
            "behaviour": self.behaviour.to_dict() if self.behaviour else None,
        }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _summarise(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 512:
        return f"<{len(value)} chars sha256={_sha(value.encode())[:16]}>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes sha256={_sha(bytes(value))[:16]}>"
    if isinstance(value, dict):
        return {k: _summarise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_summarise(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# request analysis


class _Invalid(Exception):
    """The request itself is wrong: answered 400 in the dialect's error shape."""


@dataclass
class _Input:
    mime: str | None
    data: bytes | None = None  # raw bytes (multipart)
    b64: str | None = None  # base64 text (JSON bodies)

    def shape(self) -> tuple[int, int] | None:
        if self.data is not None:
            return sniff_size(self.data)
        if self.b64 is not None:
            return sniff_b64_size(self.b64)
        return None


@dataclass
class _Ask:
    """What a request asks for, whatever its dialect."""

    model: str
    prompt: str = ""
    ratio: str | None = None
    size: str | None = None  # canonical "512"/"1K"/"2K"/"4K"
    exact: tuple[int, int] | None = None  # OpenAI "WxH" sizes
    inputs: list[_Input] = field(default_factory=list)
    search: bool = False
    image_search: bool = False
    include_thoughts: bool = False  # thinkingConfig.includeThoughts: the drafts are sent too
    url_format: bool = False
    stream: bool = False
    sse: bool = False

    def prompt_tokens(self) -> int:
        return max(1, len(self.prompt) // 4) + 258 * len(self.inputs)

    def dims(self) -> tuple[int, int]:
        if self.exact:
            return self.exact
        ratio = self.ratio
        if ratio is None and self.inputs:
            # Without an explicit ratio the models follow the (last) input picture's shape.
            shape = self.inputs[-1].shape()
            if shape:
                allowed = tuple(FLASH_25) if is_flash_25(self.model) else RATIOS
                ratio = nearest_ratio(*shape, allowed=allowed)
        return dimensions(self.model, ratio, self.size)


_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.S)
_WXH = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,2})\s*:\s*(\d{1,2})\s*$")
_TIER = re.compile(r"^\s*([124])\s*k\s*$", re.I)
KNOWN_MODELS = (
    "gemini-2.5-flash-image",
    "gemini-2.5-flash-image-preview",
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image-preview",
    "nano-banana",
    "nano-banana-2",
    "nano-banana-pro",
    "nano-banana-pro-2k",
    "nano-banana-pro-4k",
)


def _model_ok(model: str) -> bool:
    name = model.lower()
    return "image" in name or name.startswith("nano-banana")


def _gemini_ask(model: str, body: Any, *, stream: bool, sse: bool) -> _Ask:
    if not isinstance(body, dict):
        raise _Invalid("Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Invalid("* GenerateContentRequest.contents: contents is not specified")
    ask = _Ask(model=model, stream=stream, sse=sse)
    # camelCase only at the struct level: relays re-serialise requests with their own structs
    # and silently drop `generation_config` / `image_config` (as Google's API does).
    config = body.get("generationConfig")
    image_config = config.get("imageConfig") if isinstance(config, dict) else None
    if isinstance(image_config, dict):
        ratio = image_config.get("aspectRatio", image_config.get("aspect_ratio"))
        size = image_config.get("imageSize", image_config.get("image_size"))
        if ratio is not None:
            if ratio not in RATIOS:
                raise _Invalid(f"Unsupported aspect ratio {ratio!r}. Supported: {', '.join(RATIOS)}.")
            ask.ratio = ratio
        if size is not None:
            size = "512" if size == "512px" else size
            if size not in SIZES:
                raise _Invalid(
                    f"Invalid value at 'generation_config.image_config.image_size' ({size!r}): use 1K, 2K or 4K (uppercase K), or 512."
                )
            ask.size = size
    thinking = config.get("thinkingConfig", config.get("thinking_config")) if isinstance(config, dict) else None
    if isinstance(thinking, dict):
        ask.include_thoughts = thinking.get("includeThoughts", thinking.get("include_thoughts")) is True
    texts: list[str] = []
    for content in contents:
        if not isinstance(content, dict):
            raise _Invalid("* GenerateContentRequest.contents[]: each content must be an object")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _Invalid("* GenerateContentRequest.contents.parts: contents.parts must not be empty.")
        user = content.get("role", "user") != "model"
        for part in parts:
            if not isinstance(part, dict):
                continue
            if user and isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = part.get("inlineData", part.get("inline_data"))
            if isinstance(inline, dict) and user:
                ask.inputs.append(_Input(inline.get("mimeType", inline.get("mime_type")), b64=inline.get("data") or ""))
    ask.prompt = "\n".join(texts)
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            search = tool.get("googleSearch", tool.get("google_search"))
            if search is not None:
                ask.search = True
                types = (search or {}).get("searchTypes", (search or {}).get("search_types")) if isinstance(search, dict) else None
                if isinstance(types, dict) and ("imageSearch" in types or "image_search" in types):
                    ask.image_search = True
    return ask


def _openai_size(ask: _Ask, size: Any, aspect_ratio: Any) -> None:
    name = ask.model.lower()
    if name.endswith("-2k"):
        ask.size = "2K"
    elif name.endswith("-4k"):
        ask.size = "4K"
    if isinstance(size, str) and size and size != "auto":
        if m := _WXH.match(size):
            ask.exact = (int(m.group(1)), int(m.group(2)))
        elif m := _RATIO.match(size):
            ask.ratio = f"{int(m.group(1))}:{int(m.group(2))}"
        elif m := _TIER.match(size):
            ask.size = f"{m.group(1)}K"
        else:
            raise _Invalid(f"Invalid size {size!r}: use a ratio such as 2:3, WxH such as 1024x1024, or 1k/2k/4k.")
    if isinstance(aspect_ratio, str) and aspect_ratio:
        if not _RATIO.match(aspect_ratio):
            raise _Invalid(f"Invalid aspect_ratio {aspect_ratio!r}.")
        ask.ratio = aspect_ratio.strip()
    if ask.ratio and ask.ratio not in RATIOS:
        raise _Invalid(f"Unsupported aspect ratio {ask.ratio!r}.")


def _data_url_input(value: Any) -> _Input | None:
    if isinstance(value, dict):  # {"url": ...} or {"image_url": {"url": ...}}
        inner = value.get("image_url", value)
        value = inner.get("url") if isinstance(inner, dict) else inner
    if isinstance(value, str):
        if m := _DATA_URL.match(value):
            return _Input(m.group(1), b64=m.group(2))
        return _Input(None)  # a remote URL: counted, never fetched
    return None


def _images_ask(body: Any, form: dict[str, list[Any]] | None, uploads: list[Upload], *, edit: bool) -> _Ask:
    if form is not None:
        fields = {k: v[-1] for k, v in form.items() if v and isinstance(v[-1], str)}
    elif isinstance(body, dict):
        fields = body
    else:
        raise _Invalid("We could not parse the JSON body of your request.")
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise _Invalid("you must provide a model parameter")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Invalid("prompt is required")
    ask = _Ask(model=model, prompt=prompt, url_format=fields.get("response_format") == "url")
    _openai_size(ask, fields.get("size"), fields.get("aspect_ratio"))
    if edit:
        if form is not None:
            ask.inputs = [_Input(u.content_type, data=u.data) for u in uploads if u.name in ("image", "image[]")]
        else:
            images = fields.get("image", fields.get("images"))
            for value in images if isinstance(images, list) else [images]:
                if (inp := _data_url_input(value)) is not None:
                    ask.inputs.append(inp)
        if not ask.inputs:
            raise _Invalid("image is required: send 1-6 pictures as multipart `image`/`image[]` or data URLs")
    return ask


def _chat_ask(body: Any) -> _Ask:
    if not isinstance(body, dict):
        raise _Invalid("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Invalid("you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages is required and must be a non-empty array")
    ask = _Ask(model=model, stream=bool(body.get("stream")), sse=bool(body.get("stream")))
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if (inp := _data_url_input(url)) is not None:
                        ask.inputs.append(inp)
    ask.prompt = "\n".join(texts)
    return ask


# ---------------------------------------------------------------------------------------------
# request bodies


class _BodyError(Exception):
    pass


def _read_body(handler: BaseHTTPRequestHandler, headers: dict[str, str]) -> bytes:
    rfile = handler.rfile
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            line = rfile.readline(1024)
            if not line:
                raise _BodyError("connection closed inside a chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(rfile.read(size))
            rfile.readline(8)
        body = b"".join(chunks)
    else:
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            raise _BodyError("bad Content-Length") from None
        body = rfile.read(length) if length > 0 else b""
        if len(body) != length:
            raise _BodyError(f"body ended after {len(body)} of {length} bytes")
    if headers.get("content-encoding", "").lower() == "gzip":
        body = gzip.decompress(body)
    return body


def _header_param(value: str, header: str, param: str) -> str | None:
    msg = email.message.Message()
    msg[header] = value
    got = msg.get_param(param, header=header)
    if isinstance(got, tuple):  # RFC 2231 encoded
        got = email.utils.collapse_rfc2231_value(got)
    return got


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, list[str | bytes]], list[Upload]]:
    """multipart/form-data -> ({name: [str for fields, bytes for files]}, uploads)."""
    boundary = _header_param(content_type, "content-type", "boundary")
    if not boundary:
        raise _Invalid("multipart body without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    form: dict[str, list[str | bytes]] = {}
    uploads: list[Upload] = []
    pieces = body.split(delimiter)
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        if piece.startswith(b"\r\n"):
            piece = piece[2:]
        head, sep, data = piece.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        part_headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            part_headers[name.strip().lower()] = value.strip()
        disposition = part_headers.get("content-disposition", "")
        name = _header_param(disposition, "content-disposition", "name") or ""
        filename = _header_param(disposition, "content-disposition", "filename")
        if filename is not None:
            form.setdefault(name, []).append(data)
            uploads.append(Upload(name, filename, part_headers.get("content-type"), data))
        else:
            form.setdefault(name, []).append(data.decode("utf-8", "replace"))
    return form, uploads


# ---------------------------------------------------------------------------------------------
# routing

# /v1/models/... too: google-genai >= 2 defaults to api_version "v1", and relays (new-api) route both.
_GEMINI_GENERATE = re.compile(r"^/v1(?:beta)?/models/([^/:]+):(generateContent|streamGenerateContent)$")


@dataclass
class _Parsed:
    """The request as parsed, kept apart from the (possibly summarised) record."""

    json: Any
    form: dict[str, list[str | bytes]] | None
    uploads: list[Upload]
    query: dict[str, str]


@dataclass
class _Route:
    dialect: str | None
    endpoint: str  # gemini | gemini-models | images | edits | chat | openai-models | file | unknown
    model: str | None = None
    method: str = "POST"
    stream: bool = False


def _route(path: str) -> _Route:
    if m := _GEMINI_GENERATE.match(path):
        return _Route("gemini", "gemini", m.group(1), stream=m.group(2) == "streamGenerateContent")
    if path == "/v1beta/models":
        return _Route("gemini", "gemini-models", method="GET")
    if path == "/v1/images/generations":
        return _Route("openai-images", "images")
    if path == "/v1/images/edits":
        return _Route("openai-images", "edits")
    if path == "/v1/chat/completions":
        return _Route("openai-chat", "chat")
    if path == "/v1/models":
        return _Route("openai-chat", "openai-models", method="GET")
    if path.startswith("/files/"):
        return _Route("openai-images", "file", method="GET")
    return _Route("gemini" if path.startswith("/v1beta") else None, "unknown", method="*")


def _key_matches(presented: str, expected: str) -> bool:
    def bare(key: str) -> str:
        return key[3:] if key.startswith("sk-") else key

    return hmac.compare_digest(bare(presented.strip()).encode(), bare(expected).encode())


# ---------------------------------------------------------------------------------------------
# replies


@dataclass
class _Reply:
    status: int
    segments: list[bytes]
    content_type: str = "application/json; charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    served: list[Picture] = field(default_factory=list)  # final pictures, for images_served

    @classmethod
    def json(cls, status: int, obj: Any, **kw: Any) -> _Reply:
        return cls(status, wire.render(obj), **kw)

    @property
    def length(self) -> int:
        return sum(len(s) for s in self.segments)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 16+ clients connecting at once must not see refused connections
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], double: RelayDouble) -> None:
        self.double = double
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return  # clients going away mid-answer is part of the job
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "relay-double/1.0"
    sys_version = ""
    timeout = 300  # idle keep-alive connections eventually let their thread go

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.double._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.double._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.double.verbose:
            sys.stderr.write("relay-double: " + (format % args) + "\n")

    def _dispatch(self) -> None:
        try:
            self.server.double._serve(self)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


# ---------------------------------------------------------------------------------------------
# the double


class RelayDouble:
    """A relay on 127.0.0.1:<random port>, started on construction, stopped by ``close()``
    (or leaving the ``with`` / ``async with`` block)."""

    def __init__(
        self,
        api_key: str | None = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record_bodies: bool = True,
        verbose: bool = False,
        streaming: bool = True,
    ) -> None:
        self.api_key = api_key  # None: any key (or none) is accepted
        # False: a relay without ``:streamGenerateContent`` (answered 404, consuming no behaviour).
        self.streaming = streaming
        self.record_bodies = record_bodies
        self.verbose = verbose
        self.default = Behaviour("image")
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._requests: list[Recorded] = []
        self._images: list[bytes] = []
        self._files: dict[str, Picture] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._signatures = 0
        self._server = _Server((host, port), self)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"relay-double:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each API request consumes the next one (then ``default``)."""
        for b in behaviours:
            if not isinstance(b, Behaviour):
                raise TypeError(f"enqueue takes Behaviour objects, not {type(b).__name__}")
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def images_served(self) -> list[bytes]:
        with self._lock:
            return list(self._images)

    @property
    def pending(self) -> int:
        """(extension) behaviours still queued."""
        with self._lock:
            return len(self._queue)

    @property
    def open_connections(self) -> int:
        """(extension) Client connections open right now (a ``hang`` holds one until the
        client gives up)."""
        with self._lock:
            return len(self._conns)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._images.clear()
            self._files.clear()
            self.default = Behaviour("image")

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """(extension) Block until ``count`` requests have arrived (e.g. before cancelling a
        client stuck on ``hang``); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._requests)} of {count} requests arrived within {timeout} s")
                self._lock.wait(left)
            return list(self._requests)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # hung answers and idle keep-alive connections end now, not at exit
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> RelayDouble:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> RelayDouble:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RelayDouble({self.url}, {len(self._requests)} requests, {len(self._queue)} queued)"

    # -- plumbing -----------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _signature(self) -> str:
        with self._lock:
            self._signatures += 1
            n = self._signatures
        return base64.b64encode(f"nb-double-signature-{n:06d}".encode()).decode()

    def _serve(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body = _read_body(h, headers)
        except (_BodyError, ValueError, OSError, EOFError) as exc:
            h.close_connection = True
            self._send(h, _Reply(400, [f"bad request body: {exc}".encode()], "text/plain; charset=utf-8"))
            return
        if path.startswith("/__double/"):
            self._control(h, path, query, body)
            return

        route = _route(path)
        record = Recorded(h.command, path, query, headers, dialect=route.dialect, at=time.time(), model=route.model)
        invalid: str | None = None
        ctype = headers.get("content-type", "")
        if body:
            if ctype.lower().startswith("multipart/form-data"):
                try:
                    record.form, record.uploads = parse_multipart(body, ctype)
                except _Invalid as exc:
                    invalid = str(exc)
            else:
                try:
                    record.json = json.loads(body)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    invalid = f"Invalid JSON payload received. {exc}"
        if record.model is None:
            source = record.json if isinstance(record.json, dict) else {k: v[-1] for k, v in (record.form or {}).items() if v}
            model = source.get("model") if isinstance(source, dict) else None
            record.model = model if isinstance(model, str) else None
        record.auth_style, record.key_ok = self._auth(query, headers)
        record.size = len(body)
        parsed = _Parsed(record.json, record.form, record.uploads, query)
        if self.record_bodies:
            record.body = body
        else:
            record.json, record.form = _summarise(record.json), _summarise(record.form)
            record.uploads = [Upload(u.name, u.filename, u.content_type, b"") for u in record.uploads]

        refusal: _Reply | None = self._styled(h.command, path, route, record, query, headers)  # SeedRelayDouble
        if refusal is not None:
            pass
        elif route.endpoint == "file":
            refusal = self._file_reply(path)  # download links need no key, like a CDN's
        elif route.endpoint == "unknown" or (route.stream and not self.streaming):
            refusal = self._error_reply(route.dialect, 404, f"The path {path} is not served by this relay.", code="not_found")
        elif h.command != route.method:
            refusal = self._error_reply(route.dialect, 405, f"Method {h.command} is not allowed on {path}.")
        elif not record.key_ok:
            refusal = self._auth_error(route.dialect)  # refused requests consume no behaviour
        elif invalid:
            refusal = self._error_reply(route.dialect, 400, invalid)
        elif route.model is not None and not _model_ok(route.model):
            refusal = self._error_reply(
                route.dialect, 404, f"models/{route.model} is not found for API version v1beta, or is not supported for generateContent."
            )
        else:
            record.behaviour = self._next_behaviour()
        with self._lock:
            self._requests.append(record)
            self._lock.notify_all()
        if refusal is not None:
            self._send(h, refusal)
        else:
            self._act(h, route, record, parsed, record.behaviour)

    def _styled(
        self, command: str, path: str, route: _Route, record: Recorded, query: dict[str, str], headers: dict[str, str]
    ) -> _Reply | None:
        """A reply that replaces the normal handling (see SeedRelayDouble); None: handle normally."""
        return None

    def _auth(self, query: dict[str, str], headers: dict[str, str]) -> tuple[str | None, bool]:
        presented: list[tuple[str, str]] = []
        if "key" in query:
            presented.append(("query", query["key"]))
        if "x-goog-api-key" in headers:
            presented.append(("x-goog-api-key", headers["x-goog-api-key"]))
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            presented.append(("bearer", auth[7:]))
        if not presented:
            return None, self.api_key is None
        # Like relays: the first credential found (query, then x-goog-api-key, then bearer) decides.
        style, key = presented[0]
        return style, self.api_key is None or _key_matches(key, self.api_key)

    # -- answering ----------------------------------------------------------------------------

    def _act(self, h: _Handler, route: _Route, record: Recorded, parsed: _Parsed, b: Behaviour) -> None:
        kind = b.kind
        if kind == "hang":
            self._hang(h)
            return
        if kind == "disconnect":
            h.close_connection = True
            _shutdown(h.connection)
            return
        if kind == "error":
            self._send(h, self._error_behaviour(route.dialect, b))
            return
        if kind == "hostile":
            status, body, headers = _hostile.build(b.get("attack", ""), self.api_key or "")
            content_type = headers.pop("Content-Type", "application/json")
            self._send(h, _Reply(status, [body], content_type, headers))
            return
        if kind == "raw":
            body = b.get("body", b"")
            body = body.encode() if isinstance(body, str) else bytes(body)
            self._send(h, _Reply(int(b.get("status", 200)), [body], b.get("content_type", "application/json"), dict(b.get("headers", {}))))
            return
        try:
            reply = self._content_reply(route, record, parsed, b)
        except _Invalid as exc:
            reply = self._error_reply(route.dialect, 400, str(exc))
        if kind == "truncated":
            fraction = float(b.get("fraction", 0.5))
            self._send(h, reply, cut=int(reply.length * fraction), record_images=False)
        elif kind == "slow":
            self._send(
                h, reply, delay=float(b.get("delay", 1.0)), trickle=float(b.get("trickle", 0.0)), headers_first=bool(b.get("headers_first"))
            )
        else:
            self._send(h, reply)

    def _content_reply(self, route: _Route, record: Recorded, parsed: _Parsed, b: Behaviour) -> _Reply:
        if route.endpoint == "gemini-models":
            return _Reply.json(
                200,
                {"models": [_gemini_model(m) for m in KNOWN_MODELS if m.startswith("gemini")]},
            )
        if route.endpoint == "openai-models" and record.auth_style in ("query", "x-goog-api-key"):
            # GET /v1/models is also Gemini's v1 model list; a Google-style key says which.
            return _Reply.json(200, {"models": [_gemini_model(m) for m in KNOWN_MODELS if m.startswith("gemini")]})
        if route.endpoint == "openai-models":
            return _Reply.json(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": 1732000000, "owned_by": "google"} for m in KNOWN_MODELS],
                },
            )
        if route.endpoint == "gemini":
            ask = _gemini_ask(route.model or "", parsed.json, stream=route.stream, sse=parsed.query.get("alt") == "sse")
            return self._gemini_reply(ask, b)
        if route.endpoint in ("images", "edits"):
            return self._images_reply(_images_ask(parsed.json, parsed.form, parsed.uploads, edit=route.endpoint == "edits"), b)
        if route.endpoint == "chat":
            return self._chat_reply(_chat_ask(parsed.json), b)
        raise AssertionError(route.endpoint)

    def _final_picture(self, ask: _Ask, b: Behaviour) -> Picture:
        width, height = b.get("width"), b.get("height")
        mime = b.get("mime", "image/png")
        if b.get("huge"):
            if not (width and height):
                width, height = ask.dims() if ask.size == "4K" else HUGE_SIZE
            return huge_picture(int(width), int(height), mime)
        if not (width and height):
            width, height = ask.dims()
        return picture(int(width), int(height), mime)

    def _gemini_reply(self, ask: _Ask, b: Behaviour) -> _Reply:
        casing = b.get("casing", "camel")
        usage = wire.gemini_usage(ask.prompt_tokens(), wire.output_tokens(ask.model, ask.size))
        served: list[Picture] = []
        pictures: list[Picture] = []
        if b.kind == "blocked":
            reason = b.get("reason", "SAFETY")
            feedback: dict[str, Any] = {"blockReason": reason}
            if b.get("message"):
                feedback["blockReasonMessage"] = b.get("message")
            if reason == "SAFETY":
                feedback["safetyRatings"] = [
                    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "HIGH", "blocked": True},
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                ]
            answer = wire.gemini_response(None, model=ask.model, usage=wire.gemini_usage(ask.prompt_tokens(), 0), prompt_feedback=feedback)
        elif b.kind == "finish":
            reason = b.get("reason", "IMAGE_SAFETY")
            answer = wire.gemini_response(
                None,
                model=ask.model,
                usage=wire.gemini_usage(ask.prompt_tokens(), 0),
                finish_reason=reason,
                finish_message=b.get("message", wire.FINISH_MESSAGES.get(reason)),
            )
        elif b.kind == "text_only":
            text = b.get("text", "I can describe it, but I couldn't draw this one. Try asking differently.")
            parts = [{"text": text, "thoughtSignature": b.get("signature") or self._signature()}]
            answer = wire.gemini_response(parts, model=ask.model, usage=wire.gemini_usage(ask.prompt_tokens(), max(1, len(text) // 4)))
        else:  # image, slow, truncated
            final = self._final_picture(ask, b)
            # Unless told: two thoughts in words and two draft pictures when they were asked for.
            thoughts = int(b.get("thoughts", 4 if ask.include_thoughts else 0))
            parts, pictures = wire.gemini_image_parts(
                final,
                wire.drafts_for(final) if thoughts > 1 else [],
                thoughts=thoughts,
                text=b.get("text"),
                text_signature=self._signature(),
                signature=b.get("signature") or self._signature(),
                markdown=bool(b.get("markdown")),
            )
            usage = wire.gemini_usage(ask.prompt_tokens(), wire.output_tokens(ask.model, ask.size), 96 * thoughts)
            grounding = b.options.get("grounding")
            if grounding is None:  # not said: ground exactly when the request asked for search
                grounding = ask.search
            meta = None
            if grounding:
                sources = list(grounding) if isinstance(grounding, (list, tuple)) else list(wire.DEFAULT_SOURCES)
                meta = wire.grounding_metadata(sources, [ask.prompt[:80] or "search"], image_search=ask.image_search)
            answer = wire.gemini_response(parts, model=ask.model, usage=usage, grounding=meta)
            served = [final]
        escaped = bool(b.get("escaped_slashes"))
        indent = 2 if b.get("pretty", True) else None  # Google pretty-prints; pretty=False: compact
        if ask.stream:
            chunks = [wire.recase(c, casing) for c in wire.gemini_stream_chunks(answer)]
            if ask.sse:
                segments: list[bytes] = []
                for chunk in chunks:
                    segments.append(b"data: ")
                    segments += wire.render(chunk, pictures, escaped_slashes=escaped)
                    segments.append(b"\r\n\r\n")
                return _Reply(200, segments, "text/event-stream", served=served)
            segments = [b"["]
            for i, chunk in enumerate(chunks):
                if i:
                    segments.append(b",\r\n")
                segments += wire.render(chunk, pictures, escaped_slashes=escaped, indent=indent)
            segments.append(b"]")
            return _Reply(200, segments, served=served)
        return _Reply(200, wire.render(wire.recase(answer, casing), pictures, escaped_slashes=escaped, indent=indent), served=served)

    def _images_reply(self, ask: _Ask, b: Behaviour) -> _Reply:
        escaped = bool(b.get("escaped_slashes"))
        image_tokens = 258 * len(ask.inputs)
        text_tokens = max(1, len(ask.prompt) // 4)
        if b.kind == "blocked":
            return _Reply.json(
                400,
                wire.openai_error(
                    400,
                    b.get(
                        "message",
                        "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                    ),
                    code="content_policy_violation",
                ),
            )
        if b.kind in ("finish", "text_only"):
            # Relays that convert a Gemini answer without a picture send an empty data list.
            answer = wire.openai_images_response([], prompt_tokens=text_tokens, image_tokens=image_tokens, out_tokens=0)
            return _Reply(200, wire.render(answer, escaped_slashes=escaped))
        final = self._final_picture(ask, b)
        if b.get("url") or ask.url_format:
            file_id = uuid.uuid4().hex
            ext = final.mime.split("/")[1].replace("jpeg", "jpg")
            with self._lock:
                self._files[f"{file_id}.{ext}"] = final
            item: dict[str, Any] = {"url": f"{self.url}/files/{file_id}.{ext}"}
            pictures: list[Picture] = []
        else:
            item = {"b64_json": wire.token(0)}
            pictures = [final]
        answer = wire.openai_images_response(
            [item], prompt_tokens=text_tokens, image_tokens=image_tokens, out_tokens=wire.output_tokens(ask.model, ask.size)
        )
        return _Reply(200, wire.render(answer, pictures, escaped_slashes=escaped), served=[final])

    def _chat_reply(self, ask: _Ask, b: Behaviour) -> _Reply:
        escaped = bool(b.get("escaped_slashes"))
        prompt_tokens = ask.prompt_tokens()
        pictures: list[Picture] = []
        served: list[Picture] = []
        if b.kind == "blocked":
            answer = wire.chat_response(
                model=ask.model, content=b.get("message", wire.REFUSAL_TEXT), finish_reason="content_filter", prompt_tokens=prompt_tokens
            )
        elif b.kind == "finish":
            reason = b.get("reason", "IMAGE_SAFETY")
            answer = wire.chat_response(
                model=ask.model,
                content=b.get("message", wire.FINISH_MESSAGES.get(reason, "")),
                finish_reason="content_filter",
                prompt_tokens=prompt_tokens,
            )
        elif b.kind == "text_only":
            text = b.get("text", "I can describe it, but I couldn't draw this one. Try asking differently.")
            answer = wire.chat_response(
                model=ask.model, content=text, prompt_tokens=prompt_tokens, completion_tokens=max(1, len(text) // 4)
            )
        else:
            final = self._final_picture(ask, b)
            content, images = wire.chat_image_message(final, b.get("text"), bool(b.get("chat_images_field")))
            answer = wire.chat_response(
                model=ask.model,
                content=content,
                images=images,
                prompt_tokens=prompt_tokens,
                completion_tokens=wire.output_tokens(ask.model, ask.size),
            )
            pictures = served = [final]
        if ask.stream:
            segments: list[bytes] = []
            for chunk in wire.chat_stream_chunks(answer):
                segments.append(b"data: ")
                segments += wire.render(chunk, pictures, escaped_slashes=escaped)
                segments.append(b"\n\n")
            segments.append(b"data: [DONE]\n\n")
            return _Reply(200, segments, "text/event-stream", served=served)
        return _Reply(200, wire.render(answer, pictures, escaped_slashes=escaped), served=served)

    def _file_reply(self, path: str) -> _Reply:
        with self._lock:
            pic = self._files.get(path[len("/files/") :])
        if pic is None:
            return _Reply(404, [wire.html_page(404)], "text/html")
        return _Reply(200, [pic.data], pic.mime)

    # -- errors -------------------------------------------------------------------------------

    def _error_reply(self, dialect: str | None, status: int, message: str, *, code: str | None = None) -> _Reply:
        if dialect == "gemini":
            return _Reply.json(status, wire.google_error(status, message))
        return _Reply.json(status, wire.openai_error(status, message, code=code))

    def _auth_error(self, dialect: str | None) -> _Reply:
        if dialect == "gemini":
            return _Reply.json(400, wire.google_error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"))
        # Never echo the key back, not even masked: the bot must never see it in an error.
        return _Reply.json(
            401,
            wire.openai_error(401, "Incorrect API key provided. You can find your API key in the relay's console.", code="invalid_api_key"),
        )

    def _error_behaviour(self, dialect: str | None, b: Behaviour) -> _Reply:
        status = int(b.get("status", 500))
        style = b.get("body") or ("google" if dialect == "gemini" else "openai")
        retry_after = b.get("retry_after")
        headers = {"Retry-After": wire.retry_after_header(retry_after)} if retry_after is not None else {}
        message = b.get("message")
        if style == "html":
            return _Reply(status, [wire.html_page(status)], "text/html", headers)
        if style == "openai":
            return _Reply.json(status, wire.openai_error(status, message), headers=headers)
        numeric_retry = retry_after if isinstance(retry_after, (int, float)) else None
        envelope = wire.google_error(status, message, retry_after=numeric_retry)
        return _Reply.json(status, [envelope] if style == "google_list" else envelope, headers=headers)

    # -- the wire -----------------------------------------------------------------------------

    def _send(
        self,
        h: _Handler,
        reply: _Reply,
        *,
        cut: int | None = None,
        delay: float = 0.0,
        trickle: float = 0.0,
        headers_first: bool = False,
        record_images: bool = True,
    ) -> None:
        if delay and not headers_first and not self._wait(h, delay):
            h.close_connection = True
            return
        h.send_response(reply.status)
        h.send_header("Content-Type", reply.content_type)
        h.send_header("Content-Length", str(reply.length))
        for name, value in reply.headers.items():
            h.send_header(name, value)
        if cut is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        if delay and headers_first and not self._wait(h, delay):
            h.close_connection = True
            _shutdown(h.connection)
            return
        if record_images and reply.served:
            with self._lock:
                self._images.extend(p.data for p in reply.served)
        out = h.wfile
        if cut is not None:
            left = cut
            for seg in reply.segments:
                if left <= 0:
                    break
                out.write(seg[:left])
                left -= len(seg)
            h.close_connection = True
            _shutdown(h.connection)
            return
        if trickle > 0:
            chunks = list(_pieces(reply.segments, max(1024, reply.length // 50)))
            pause = trickle / max(1, len(chunks))
            for chunk in chunks:
                out.write(chunk)
                if self._stop.wait(pause):
                    h.close_connection = True
                    _shutdown(h.connection)
                    return
            return
        for seg in reply.segments:
            out.write(seg)

    def _hang(self, h: _Handler) -> None:
        """Never answer; give the thread back when the client gives up or the double closes."""
        h.close_connection = True
        self._wait(h, None)
        _shutdown(h.connection)

    def _wait(self, h: _Handler, seconds: float | None) -> bool:
        """Sleep ``seconds`` (None: for ever); False as soon as the client hangs up or the
        double closes, so an abandoned slow answer does not hold its thread."""
        sock = h.connection
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._stop.is_set():
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return True
            try:
                readable, _, _ = select.select([sock], [], [], left)
                if readable:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return False  # client closed
                    time.sleep(left)  # it sent something more (pipelining): keep waiting
            except (OSError, ValueError):
                return False
        return False

    # -- HTTP control -------------------------------------------------------------------------

    def _control(self, h: _Handler, path: str, query: dict[str, str], body: bytes) -> None:
        action = path[len("/__double/") :]
        try:
            payload = json.loads(body) if body else None
            if action == "enqueue" and h.command == "POST":
                items = payload if isinstance(payload, list) else [payload]
                self.enqueue(*(Behaviour.from_dict(i) for i in items))
                result: Any = {"queued": self.pending}
            elif action == "default" and h.command == "POST":
                self.default = Behaviour.from_dict(payload)
                result = {"default": self.default.to_dict()}
            elif action == "requests" and h.command == "GET":
                full = query.get("full") in ("1", "true")
                result = [r.to_dict(full=full) for r in self.requests]
            elif action == "images" and h.command == "GET":
                result = [{"bytes": len(i), "sha256": _sha(i)} for i in self.images_served]
            elif action == "reset" and h.command == "POST":
                self.reset()
                result = {"reset": True}
            else:
                self._send(h, _Reply.json(404, {"error": f"no control action {h.command} {path}"}))
                return
        except (ValueError, TypeError) as exc:
            self._send(h, _Reply.json(400, {"error": str(exc)}))
            return
        self._send(h, _Reply.json(200, result))


def _gemini_model(model_id: str) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "description": "Image generation model (relay double).",
        "inputTokenLimit": 65536,
        "outputTokenLimit": 32768,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def _pieces(segments: Iterable[bytes], size: int) -> Iterable[bytes]:
    for seg in segments:
        view = memoryview(seg)
        for start in range(0, len(view), size):
            yield view[start : start + size]


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# python -m tests.doubles.relay_double


# ---------------------------------------------------------------------------------------------
# seed relay styles and a balance endpoint (relay probe and balance tests)
#
# ``SeedRelayDouble(style=...)`` serves only what one seed relay's docs describe: its routes,
# its one auth style and its model names; everything else answers 404 like that relay would.
# ``style="useless"`` answers an HTML 404 page to everything. ``echo_key=True`` makes auth
# errors echo the presented key (the probe must still never show it). ``set_balance(x)``
# turns on new-api's balance endpoints with ``x`` USD left (``None``: no balance endpoints).


@dataclass(frozen=True)
class SeedStyle:
    routes: frozenset[str]  # _Route.endpoint values served
    auth: str | None  # the one auth style accepted (None: the base double's rules)
    models: tuple[str, ...]  # what the model lists show
    html: bool = False  # every path answers an HTML 404 page
    open_models: bool = False  # the model list answers without a key


_GEMINI_ROUTES = frozenset({"gemini", "gemini-models"})
SEED_STYLES: dict[str, SeedStyle] = {
    # Seeds 000/001 (cdn.12ai.org): Gemini native, the key as ?key=.
    "gemini-query": SeedStyle(
        _GEMINI_ROUTES, "query", ("gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview")
    ),
    # Seeds 003/004 (api.ikuncode.cc, api.apiyi.com native mode): Gemini native, Bearer.
    "gemini-bearer": SeedStyle(_GEMINI_ROUTES, "bearer", ("gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview")),
    # Seed 002 (api.gpt.ge): OpenAI Images (and Chat), Bearer, nano-banana* per-size names.
    "openai-images": SeedStyle(
        frozenset({"images", "edits", "chat", "openai-models", "file"}),
        "bearer",
        (
            "nano-banana",
            "nano-banana-pro",
            "nano-banana-pro-2k",
            "nano-banana-pro-4k",
            "gemini-3-pro-image-preview",
            "gemini-2.5-flash-image",
            "gpt-4o-mini",
        ),
    ),
    # Seed 004's OpenAI-compatible mode alone: /v1/chat/completions, Bearer, Google's names.
    "openai-chat": SeedStyle(
        frozenset({"chat", "openai-models"}), "bearer", ("gemini-2.5-flash-image", "gpt-4o-mini", "text-embedding-3-small")
    ),
    # Google's own API: Gemini native, the key in x-goog-api-key.
    "gemini-goog": SeedStyle(_GEMINI_ROUTES, "x-goog-api-key", ("gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-2.5-pro")),
    # A web server that is no relay (a wrong URL, a parked domain).
    "useless": SeedStyle(frozenset(), None, (), html=True),
}

# new-api's balance routes (router/dashboard.go, router/api-router.go).
BALANCE_PATHS = frozenset(
    {
        "/v1/dashboard/billing/subscription",
        "/dashboard/billing/subscription",
        "/v1/dashboard/billing/usage",
        "/dashboard/billing/usage",
        "/api/usage/token",
    }
)
QUOTA_PER_USD = 500_000  # new-api's default QuotaPerUnit: raw quota units per US dollar


class SeedRelayDouble(RelayDouble):
    def __init__(self, style: str | None = None, *, echo_key: bool = False, open_models: bool = False, **kwargs: Any) -> None:
        if style is not None and style not in SEED_STYLES:
            raise ValueError(f"unknown seed style {style!r}; known: {', '.join(SEED_STYLES)}")
        self.style = SEED_STYLES[style] if style else None
        if self.style is not None and open_models:
            self.style = SeedStyle(self.style.routes, self.style.auth, self.style.models, self.style.html, open_models=True)
        self.echo_key = echo_key
        self._balance: tuple[float, float, bool] | None = None  # (remaining USD, used USD, unlimited)
        self._billing = True
        super().__init__(**kwargs)

    def set_balance(self, remaining: float | None, *, used: float = 0.0, unlimited: bool = False, billing: bool = True) -> None:
        """Turn the balance endpoints on with ``remaining`` USD left (None: off, 404).
        ``billing=False``: only new-api's token-info endpoint answers."""
        with self._lock:
            self._balance = None if remaining is None else (float(remaining), float(used), unlimited)
            self._billing = billing

    def _presented_key(self, query: dict[str, str], headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "")
        return query.get("key") or headers.get("x-goog-api-key") or (auth[7:] if auth[:7].lower() == "bearer " else "")

    def _styled(
        self, command: str, path: str, route: _Route, record: Recorded, query: dict[str, str], headers: dict[str, str]
    ) -> _Reply | None:
        if path.rstrip("/") in BALANCE_PATHS:
            return self._balance_reply(path.rstrip("/"), record, query, headers)
        style = self.style
        if style is None:
            return None
        if style.html:
            return _Reply(404, [wire.html_page(404)], "text/html")
        if route.endpoint not in style.routes:
            return self._error_reply(route.dialect, 404, f"Invalid URL ({command} {path})", code="not_found")
        if route.endpoint == "file":
            return None  # download links need no key (the base double serves them)
        listing = route.endpoint in ("gemini-models", "openai-models")
        if style.auth is not None and not (listing and style.open_models and record.auth_style is None):
            if record.auth_style != style.auth or not record.key_ok:
                return self._styled_auth_error(route, query, headers)
        if route.endpoint == "gemini-models":
            return _Reply.json(200, {"models": [_gemini_model(m) for m in style.models]})
        if route.endpoint == "openai-models":
            return _Reply.json(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": 1732000000, "owned_by": "relay"} for m in style.models],
                },
            )
        return None

    def _styled_auth_error(self, route: _Route, query: dict[str, str], headers: dict[str, str]) -> _Reply:
        if not self.echo_key:
            return self._auth_error(route.dialect)
        # Some relays echo what they got: the probe must mask it everywhere.
        presented = self._presented_key(query, headers)
        if route.dialect == "gemini":
            return _Reply.json(400, wire.google_error(400, f"API key not valid: {presented}", reason="API_KEY_INVALID"))
        return _Reply.json(401, wire.openai_error(401, f"Incorrect API key provided: {presented}", code="invalid_api_key"))

    def _balance_reply(self, path: str, record: Recorded, query: dict[str, str], headers: dict[str, str]) -> _Reply:
        with self._lock:
            balance = self._balance
        if balance is None or (not self._billing and "/billing/" in path):
            return _Reply(404, [wire.html_page(404)], "text/html")
        if record.auth_style != "bearer" or not record.key_ok:  # new-api's TokenAuth: Bearer
            return self._styled_auth_error(_Route("openai-chat", "balance"), query, headers)
        remaining, used, unlimited = balance
        if path.endswith("/subscription"):
            total = 100_000_000.0 if unlimited else remaining + used  # new-api: unlimited = 1e8
            return _Reply.json(
                200,
                {
                    "object": "billing_subscription",
                    "has_payment_method": True,
                    "soft_limit_usd": total,
                    "hard_limit_usd": total,
                    "system_hard_limit_usd": total,
                    "access_until": 0,
                },
            )
        if path.endswith("/usage"):
            return _Reply.json(200, {"object": "list", "total_usage": used * 100})  # cents
        quota_left, quota_used = int(remaining * QUOTA_PER_USD), int(used * QUOTA_PER_USD)
        return _Reply.json(
            200,
            {
                "code": True,
                "message": "ok",
                "data": {
                    "object": "token_usage",
                    "name": "probe",
                    "total_granted": quota_left + quota_used,
                    "total_used": quota_used,
                    "total_available": quota_left,
                    "unlimited_quota": unlimited,
                    "expires_at": 0,
                },
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.doubles.relay_double", description="Run the relay double until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="test-key", help="the key clients must present; '' accepts any")
    parser.add_argument("--no-record-bodies", action="store_true", help="keep only summaries of request bodies (long benchmarks)")
    parser.add_argument("--prebuild-huge", action="store_true", help="build the 4K noisy PNG before printing READY")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.prebuild_huge:
        huge_picture()
    relay = RelayDouble(args.api_key or None, host=args.host, port=args.port, record_bodies=not args.no_record_bodies, verbose=args.verbose)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"READY {relay.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        relay.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
