"""What a conversation, a turn and a replayed history are, and how their rows read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .parts import image_refs


@dataclass(frozen=True)
class Conversation:
    id: int
    guild_id: int | None
    channel_id: int
    thread_id: int | None
    owner_id: int
    model: str
    created_at: float


@dataclass(frozen=True)
class Turn:
    """One exchange. ``user_parts``/``model_parts`` are the stored form (images as sha256 refs)."""

    id: int
    conversation_id: int
    parent_id: int | None
    user_parts: list[dict[str, Any]]
    model_parts: list[dict[str, Any]]
    image_sha256: str | None
    message_id: int | None
    job_id: int | None
    prompt: str
    settings: dict[str, Any]
    created_at: float

    def image_refs(self) -> list[str]:
        """Hashes of every image this exchange refers to, user side first, in part order."""
        return [*image_refs(self.user_parts), *image_refs(self.model_parts)]


class History(list[dict[str, Any]]):
    """Gemini ``contents`` (user, model, user, model, …) plus what trimming left out.

    ``dropped``: exchanges (pairs) left out from the start of the path; ``expired``: True
    when at least one of them was left out because its images were pruned (not for size).
    Big images are :class:`~bot.relay.stream.Blob` objects, not strings (see ``history``).
    """

    dropped: int = 0
    expired: bool = False


TURN_COLUMNS = "id, conversation_id, parent_id, user_parts, model_parts, image_sha256, message_id, job_id, prompt, settings, created_at"
TURN_COLUMNS_T = ", ".join("t." + c.strip() for c in TURN_COLUMNS.split(","))
CONV_COLUMNS = "id, guild_id, channel_id, thread_id, owner_id, model, created_at"


def turn_from_row(row: Any) -> Turn:
    return Turn(
        id=row[0],
        conversation_id=row[1],
        parent_id=row[2],
        user_parts=json.loads(row[3]),
        model_parts=json.loads(row[4]),
        image_sha256=row[5],
        message_id=row[6],
        job_id=row[7],
        prompt=row[8],
        settings=json.loads(row[9] or "{}"),
        created_at=float(row[10]),
    )


def conversation_from_row(row: Any) -> Conversation:
    return Conversation(row[0], row[1], row[2], row[3], row[4], row[5], float(row[6]))
