"""Answers a hostile (or broken) relay sends, for ``Behaviour("hostile", attack=...)``.

Each builder returns ``(status, body, headers)``; the big ones are built once per process.
``key`` is the key the client presented (echoed back by the attacks that leak it).
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import zlib

from ._images import picture

ATTACKS = frozenset(
    {"junk_list", "million_parts", "gzip_bomb", "stacked_gzip_bomb", "key_echo", "key_in_text", "many_images", "deep_nesting"}
)


@functools.cache
def junk_list(size: int = 8 * 2**20) -> bytes:
    """200 with ``[{},{},...]``: 8 MiB of the cheapest JSON values there are."""
    return b"[" + b",".join([b"{}"] * (size // 3)) + b"]"


@functools.cache
def million_parts(count: int = 1_000_000) -> bytes:
    parts = b",".join([b'{"text":"a"}'] * count)
    return b'{"candidates":[{"content":{"role":"model","parts":[' + parts + b']},"finishReason":"STOP"}]}'


@functools.cache
def gzip_bomb(inflated: int = 512 * 2**20) -> bytes:
    """One layer of gzip (~2.3 MB) that inflates to ``inflated`` bytes: a Gemini answer whose
    inlineData is a run of "A" (valid base64 for zero bytes)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [c.compress(b'{"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":"')]
    block = b"A" * 2**22
    for _ in range(inflated // len(block)):
        out.append(c.compress(block))
    out += [c.compress(b'"}}]},"finishReason":"STOP"}]}'), c.flush()]
    return b"".join(out)


@functools.cache
def stacked_gzip_bomb() -> bytes:
    """``Content-Encoding: gzip, gzip``: the one-layer bomb gzipped again (a few KB)."""
    return gzip.compress(gzip_bomb(), 9)


def _gemini(parts: list[dict]) -> bytes:
    return json.dumps({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}).encode()


def build(attack: str, key: str) -> tuple[int, bytes, dict[str, str]]:
    json_type = {"Content-Type": "application/json"}
    if attack == "junk_list":
        return 200, junk_list(), json_type
    if attack == "million_parts":
        return 200, million_parts(), json_type
    if attack == "gzip_bomb":
        return 200, gzip_bomb(), {**json_type, "Content-Encoding": "gzip"}
    if attack == "stacked_gzip_bomb":
        return 200, stacked_gzip_bomb(), {**json_type, "Content-Encoding": "gzip, gzip"}
    if attack == "deep_nesting":
        return 200, b"[" * 500_000 + b"]" * 500_000, json_type
    png = picture(64, 64).data
    inline = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}
    if attack == "key_echo":
        # An error whose message reaches the key only after ~450 characters of text.
        message = ("The upstream refused this request because the account is not allowed to use it. " * 6)[:450]
        body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"{message} (key {key})"}}
        return 400, json.dumps(body).encode(), json_type
    if attack == "key_in_text":
        return 200, _gemini([{"text": f"Here is your picture. Debug: api_key={key} token {key}"}, inline]), json_type
    if attack == "many_images":
        return 200, _gemini([inline] * 61), json_type
    raise ValueError(f"unknown attack {attack!r}")
