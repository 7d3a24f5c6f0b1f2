"""The CLI's ``--session`` file: the conversation kept between runs, and how a new prompt
continues it (Gemini: the exact previous turns; otherwise the latest picture as an input)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import rules
from ..relay.catalogue import resolve_model
from ..relay.client import HISTORY_BUDGET, approx_json_size
from ..relay.gemini import history_image, materialize
from ..relay.types import GenerationResult, InputImage, InvalidRequest, RelayConfig
from .files import atomic_write

SESSION_FORMAT = "nano-banana-bot/session"
SESSION_VERSION = 1


def same_model(a: Any, b: str) -> bool:
    try:
        return isinstance(a, str) and resolve_model(a).id == resolve_model(b).id
    except InvalidRequest:
        return False


def load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    if path.is_dir():
        raise ValueError("it is a directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a readable session file ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
        raise ValueError("not a session file written by this program")
    turns = data.get("turns")
    if not isinstance(turns, list) or not all(isinstance(x, dict) for x in turns):
        raise ValueError("its turns are damaged")
    return data


def trim(turns: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The most recent whole exchanges that fit ``budget`` bytes (oldest dropped first), or none.

    Whole user+model pairs only: a history must start with a user turn, and a model turn
    must travel with its thought signatures exactly as received."""
    pairs = [turns[i : i + 2] for i in range(0, len(turns), 2)]
    # As approx_json_size counts a list: 2 for the brackets, each item and its comma.
    costs = [sum(approx_json_size(turn) + 1 for turn in pair) for pair in pairs]
    if not pairs or 2 + costs[-1] > budget:
        return []
    kept = [turn for pair in pairs[rules.oldest_left_out(costs, budget - 2) :] for turn in pair]
    while kept and kept[0].get("role") != "user":
        kept = kept[1:]
    return kept


def save(
    path: Path,
    session: dict[str, Any] | None,
    relay: RelayConfig,
    result: GenerationResult,
    history: list[dict[str, Any]],
    continuing: bool,
    *,
    aspect_ratio: str | None = None,
    size: str | None = None,
) -> None:
    user_turn = result.user_turn or {"role": "user", "parts": []}
    if relay.dialect == "gemini" and result.model_turn is not None:
        # The model turn may hold Blobs (big pictures, decoded as they streamed in): JSON
        # needs them back as the base64 strings the relay sent.
        turns = materialize(history + [user_turn, result.model_turn])
    else:
        # Without multi-turn, only what the fallback needs: the latest exchange and picture.
        parts: list[dict[str, Any]] = []
        if result.text:
            parts.append({"text": result.text})
        parts.append({"inlineData": {"mimeType": result.mime_type, "data": base64.b64encode(result.image).decode("ascii")}})
        turns = [user_turn, {"role": "model", "parts": parts}]
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data = {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "dialect": relay.dialect,
        "model": result.model,
        "aspect_ratio": aspect_ratio,
        "size": size,
        "created": (session or {}).get("created", now),
        "updated": now,
        "turns": turns,
    }
    atomic_write(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))


@dataclass(frozen=True)
class Continuation:
    """How a new prompt continues a session: ``history`` goes back when ``continuing``;
    otherwise ``inputs`` may be the session's latest picture (``from_picture``)."""

    history: list[dict[str, Any]]
    inputs: list[InputImage]
    continuing: bool
    from_picture: bool
    # Set when the history was there but too large: (its size in MB, the limit in MB).
    too_large_mb: tuple[int, int] | None = None


def continuation(session: dict[str, Any] | None, dialect: str, model: str, inputs: list[InputImage]) -> Continuation:
    """The conversation itself goes back (turns, signatures) when it can. When it cannot
    (another format or model, or not even the latest exchange fits one request), the latest
    picture is sent as a fresh input instead: "continued" is then false."""
    if not session or not session.get("turns"):
        return Continuation([], inputs, False, False)
    turns = session["turns"]
    multi_turn = dialect == "gemini" and session.get("dialect") == "gemini" and same_model(session.get("model"), model)
    history = trim(turns, budget=HISTORY_BUDGET) if multi_turn else []
    if history or inputs:
        return Continuation(history, inputs, bool(history), False)
    latest = history_image(turns)
    if latest is None:
        return Continuation([], inputs, False, False)
    too_large = (round(approx_json_size(turns[-2:]) / 1e6), round(HISTORY_BUDGET / 1e6)) if multi_turn else None
    return Continuation([], [latest], False, True, too_large)
