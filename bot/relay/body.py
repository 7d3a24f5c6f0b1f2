"""Request bodies: one prepared request reused by every attempt, and JSON written piece by piece.

A conversation's history may hold :class:`~.stream.Blob` objects (a model turn reused as is,
a replayed conversation): they are written as the base64 they stand for, slice by slice, and
a big body is sent in pieces (see :class:`Body`) so that no step holds the GIL for long.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pybase64

from .blob import Blob

# One multipart file field as httpx takes it: (field name, (file name, bytes, content type)).
FormFile = tuple[str, tuple[str, bytes, str]]


@dataclass
class Sent:
    """One prepared HTTP request, reusable across attempts."""

    method: str
    url: str
    content: bytes | Body | None = None
    data: dict[str, str] | None = None
    files: list[FormFile] | None = None
    headers: dict[str, str] | None = None


def approx_json_size(value: Any) -> int:
    """About how many bytes ``value`` takes as JSON (without serialising 20 MB to find out)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, Blob):  # the base64 it stands for
        return 2 + sum(len(link.prefix) + 4 * ((len(link.data) + 2) // 3) + len(link.own_suffix) for link in value.links())
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + 4 + approx_json_size(v) for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(approx_json_size(v) + 1 for v in value)
    return len(str(value)) + 1


JSON_HEADERS = {"Content-Type": "application/json"}


def _dump(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Strings longer than this many characters, and every Blob, are written into the body slice
# by slice, each slice its own piece (Blob data: _B64_PIECE bytes, i.e. _PIECE base64 chars).
_PIECE = 2**19
_B64_PIECE = 3 * 2**17
# The bytes json.dumps(ensure_ascii=False) writes unchanged: all but '"', '\\' and controls.
_NO_ESCAPE = bytes(range(0x20, 0x100)).replace(b'"', b"").replace(b"\\", b"")


class Body:
    """A JSON request body in pieces of at most ~0.5 MB, sent with its Content-Length.

    Why pieces: a 4K picture in the history makes a 35 MB body. Building it in one go
    (``json.dumps`` + ``encode``) held the GIL for ~120 ms, and joining it alone takes ~20 ms
    (one C call, page faults included); then asyncio's transport copies whatever the socket
    does not take at once - most of it - in one more call. Piece by piece, each step is under
    a millisecond. Iterating it again starts over, so every attempt can resend it.
    """

    __slots__ = ("pieces", "length")

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.length = sum(len(piece) for piece in pieces)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def json_body(body: Any) -> bytes | Body:
    """``body`` as the JSON ``_dump`` writes, byte for byte, with each :class:`Blob` written as
    the string it stands for. Small bodies come back as bytes; a body holding big strings or
    Blobs as a :class:`Body`, made slice by slice so that, run in a worker thread, it lets
    the event loop take the GIL between slices."""
    bigs: list[str | Blob] = []
    marker = f"\ue000{secrets.token_hex(8)}:"
    head = _dump(_swap_big(body, bigs, marker))
    if not bigs:
        return head
    holes = re.compile(b'"' + re.escape(marker.encode()) + rb"(\d+)" + re.escape("\ue001".encode()) + b'"')
    pieces: list[bytes] = []
    for i, text in enumerate(holes.split(head)):
        if i % 2 == 0:
            if text:
                pieces.append(text)
            continue
        big = bigs[int(text)]
        pieces.append(b'"')
        if isinstance(big, Blob):
            for link in big.links():
                _str_pieces(link.prefix, pieces)
                view = memoryview(link.data)
                pieces += (pybase64.b64encode(view[at : at + _B64_PIECE]) for at in range(0, len(view), _B64_PIECE))
                _str_pieces(link.own_suffix, pieces)  # the link's own text (the next link's is its prefix)
        else:
            _str_pieces(big, pieces)
        pieces.append(b'"')
    return Body(pieces)


def _swap_big(value: Any, bigs: list[str | Blob], marker: str) -> Any:
    """A copy of ``value`` with every Blob and big string replaced by a numbered marker."""
    if isinstance(value, Blob) or (isinstance(value, str) and len(value) > _PIECE):
        bigs.append(value)
        return f"{marker}{len(bigs) - 1}\ue001"
    if isinstance(value, dict):
        return {k: _swap_big(v, bigs, marker) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_swap_big(v, bigs, marker) for v in value]
    return value


def _str_pieces(text: str, out: list[bytes]) -> None:
    """The inside of ``text``'s JSON string, as json.dumps writes it, in slices."""
    for at in range(0, len(text), _PIECE):
        part = text[at : at + _PIECE]
        raw = part.encode("utf-8")
        if raw.translate(None, _NO_ESCAPE):  # a quote, backslash or control char: json escapes it
            raw = json.dumps(part, ensure_ascii=False)[1:-1].encode("utf-8")
        out.append(raw)


async def post_json(url: str, body: Any) -> Sent:
    content = await asyncio.to_thread(json_body, body)
    headers = dict(JSON_HEADERS)
    if isinstance(content, Body):
        headers["Content-Length"] = str(content.length)  # else httpx would send it chunked
    return Sent("POST", url, content=content, headers=headers)
