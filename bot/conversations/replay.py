"""Replaying a conversation: the root→turn path as Gemini ``contents``, images back in place.

Trimming and expiry
    :func:`history` returns the root→turn path, trimmed to a byte budget by leaving out the
    oldest exchanges first, whole user+model pairs only; the chosen turn's own exchange is
    always kept. An older exchange whose images were pruned is left out the same way (the
    history still starts at a clean pair boundary). Only when the chosen turn's own exchange
    has lost an image does it raise ``ImagePruned`` — then there is nothing left to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot import rules
from bot.image_store import ImageInfo, ImagePruned, ImageStore
from bot.relay.client import HISTORY_BUDGET
from bot.relay.gemini import b64_text
from bot.relay.stream import Blob

from .parts import b64len, dumps, image_refs, with_key_replaced
from .records import History, Turn

DEFAULT_BUDGET_BYTES = HISTORY_BUDGET
# Images at least this big are replayed as Blobs, not base64 strings. Measured with a 4K
# picture (26.6 MB): building its 35 MB base64 string took ~20 ms in one C call (the final
# join, page faults included) and stalled the loop 25 ms even from a worker thread. The
# relay client writes a Blob into the request body slice by slice instead.
BLOB_BYTES = 1 << 20


@dataclass
class _Pair:
    turn: Turn
    user: list[dict[str, Any]]
    model: list[dict[str, Any]]
    cost: int = 0
    available: bool = True
    refs: list[str] = field(default_factory=list)


async def history(
    path: list[Turn], images: ImageStore, budget_bytes: int = DEFAULT_BUDGET_BYTES, *, include_thoughts: bool = True
) -> History:
    """``path`` (root first) as Gemini ``contents``, images back in place, ready to send.

    Each image is back at its ``inlineData.data`` position: as its base64 string, or, from
    :data:`BLOB_BYTES` up, as a :class:`~bot.relay.stream.Blob` holding its bytes (the relay
    client writes it as that base64; ``bot.relay.gemini.materialize`` makes plain JSON).

    Signatures and part order are exactly as stored. The size counted is the JSON the
    contents serialize to; the new user message is not part of it, so pass a budget that
    leaves room for it. Oldest exchanges are left out first, whole pairs only; the chosen
    turn's exchange is always there even if it alone exceeds the budget. ``ImagePruned``
    if the chosen turn's own images are gone.
    """
    pairs = [_pair(t, include_thoughts) for t in path]
    infos = await images.infos([s for p in pairs for s in p.refs])
    for p in pairs:
        _count(p, infos)
    last = pairs[-1]
    if not last.available:
        missing = next(s for s in last.refs if s not in infos or infos[s].pruned)
        raise ImagePruned(missing)
    start, expired = _fitting_start(pairs, budget_bytes)
    cache: dict[str, str | Blob] = {}
    hydrated, start, lost = await _hydrate_newest_first(pairs, start, images, cache)
    await images.touch(list(cache))
    out = History()
    for user, model in reversed(hydrated):
        out.append({"role": "user", "parts": user})
        out.append({"role": "model", "parts": model})
    out.dropped = start
    out.expired = expired or lost
    return out


def _pair(turn: Turn, include_thoughts: bool) -> _Pair:
    model = turn.model_parts
    if not include_thoughts:
        model = [p for p in model if not (isinstance(p, dict) and p.get("thought") is True and "thoughtSignature" not in p)]
    return _Pair(turn, turn.user_parts, model, refs=[*image_refs(turn.user_parts), *image_refs(model)])


def _count(p: _Pair, infos: dict[str, ImageInfo]) -> None:
    """The pair's size as JSON, and whether all its images still exist."""
    # Each ref's 64-hex "sha256" becomes the base64 "data": counting both over-estimates by
    # ~76 bytes per image, which keeps us on the safe side of the budget.
    p.cost = len(dumps({"role": "user", "parts": p.user}).encode()) + len(dumps({"role": "model", "parts": p.model}).encode()) + 2
    for sha in p.refs:
        info = infos.get(sha)
        if info is None or info.pruned:
            p.available = False
        else:
            p.cost += b64len(info.byte_size)


def _fitting_start(pairs: list[_Pair], budget_bytes: int) -> tuple[int, bool]:
    """The first pair of the longest suffix that fits and whose images all still exist (never
    mid-pair, since pairs are the unit), and whether a pair was left out because its images
    were pruned."""
    first = len(pairs) - 1
    while first > 0 and pairs[first - 1].available:
        first -= 1
    start = first + rules.oldest_left_out([p.cost for p in pairs[first:]], budget_bytes)
    return start, first > 0 and start == first


async def _hydrate_newest_first(
    pairs: list[_Pair], start: int, images: ImageStore, cache: dict[str, str | Blob]
) -> tuple[list[tuple[list[dict[str, Any]], list[dict[str, Any]]]], int, bool]:
    """The pairs from ``start`` on with their images back, newest first: if a file vanished
    since the lookup (a concurrent prune), the older pairs are left out like an expired pair
    (the start moves, and True says so); only the chosen turn's loss is fatal."""
    hydrated: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    for i in range(len(pairs) - 1, start - 1, -1):
        p = pairs[i]
        try:
            user = await _hydrate(p.user, images, cache)
            model = await _hydrate(p.model, images, cache)
        except ImagePruned:
            if i == len(pairs) - 1:
                raise
            return hydrated, i + 1, True
        hydrated.append((user, model))
    return hydrated, start, False


async def _hydrate(parts: list[Any], images: ImageStore, cache: dict[str, str | Blob]) -> list[Any]:
    out: list[Any] = []
    for part in parts:
        inline = part.get("inlineData") if isinstance(part, dict) else None
        if isinstance(inline, dict) and isinstance(inline.get("sha256"), str):
            sha = inline["sha256"]
            if sha not in cache:
                try:
                    data, _mime = await images.get(sha, touch=False)
                except KeyError:
                    raise ImagePruned(sha) from None
                cache[sha] = Blob(data) if len(data) >= BLOB_BYTES else b64_text(data)
            part = with_key_replaced(part, "inlineData", "inlineData", with_key_replaced(inline, "sha256", "data", cache[sha]))
        out.append(part)
    return out
