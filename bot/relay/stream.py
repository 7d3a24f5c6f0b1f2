"""Decoding relay answers. (Interim version: buffers then json.loads; issue 5 replaces the
internals with an incremental decoder. The interface below stays.)

Interface:
- ``StreamDecoder().feed(chunk)`` for each body chunk, then ``.close()`` -> the parsed JSON.
  Large JSON strings holding base64 may come back as :class:`Blob` instead of ``str``.
- ``b64_bytes(value)``: bytes of a base64 field, whether it is a ``str`` or a ``Blob``.
- ``data_urls(value)``: the ``data:image/...;base64,`` images inside a text or ``Blob``.
- ``plain_text(value)``: the text of a field with any data-URL images cut out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any


class DecodeError(ValueError):
    """The body is not complete, valid JSON (e.g. truncated)."""


@dataclass
class Blob:
    """A large JSON string decoded on the fly: ``prefix`` + base64(``data``) + ``suffix``.

    For a plain base64 field, prefix and suffix are empty. For a markdown data URL
    (``![image](data:image/png;base64,....)``), prefix holds the text up to the comma.
    """

    data: bytes = field(repr=False)
    prefix: str = ""
    suffix: str = ""

    @property
    def mime_type(self) -> str | None:
        match = re.search(r"data:([\w.+-]+/[\w.+-]+);base64,$", self.prefix)
        return match.group(1) if match else None


class StreamDecoder:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self._parts.append(chunk)

    def close(self) -> Any:
        body = b"".join(self._parts)
        self._parts.clear()
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"answer is not valid JSON ({exc.__class__.__name__}: {exc})") from None


_DATA_URL = re.compile(r"data:(image/[\w.+-]+);base64,([A-Za-z0-9+/=\s]+)")


def b64_bytes(value: str | Blob) -> bytes:
    if isinstance(value, Blob):
        return value.data
    try:
        return base64.b64decode(value, validate=False)
    except binascii.Error as exc:
        raise DecodeError(f"invalid base64 image data: {exc}") from None


def data_urls(value: str | Blob | None) -> list[tuple[str, bytes]]:
    """Images embedded as ``data:`` URLs, as (mime type, bytes)."""
    if value is None:
        return []
    if isinstance(value, Blob):
        mime = value.mime_type
        return [(mime, value.data)] if mime else []
    return [(m.group(1), b64_bytes(m.group(2))) for m in _DATA_URL.finditer(value)]


def plain_text(value: str | Blob | None) -> str:
    """Text with data-URL images (and their markdown wrappers) removed."""
    if value is None:
        return ""
    if isinstance(value, Blob):
        before = re.sub(r"!?\[[^\]]*\]\(\s*data:[\w/.+-]+;base64,$|data:[\w/.+-]+;base64,$", "", value.prefix)
        after = value.suffix[1:] if value.suffix.startswith(")") else value.suffix
        return (before.strip() + " " + after.strip()).strip()
    return re.sub(r"!?\[[^\]]*\]\(data:image/[^)]*\)|data:image/[\w.+-]+;base64,[A-Za-z0-9+/=\s]+", "", value).strip()
