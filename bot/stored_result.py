"""A picture that was made, as any process can post it later: its turn (whose picture is in the
image store) and what its result shows, kept as JSON. A variant's slot is stored so (its group
may be posted by another process), and so is a picture whose post was cut by its process's
death (it is posted again: bot/jobs/records.py ``interrupt``)."""

from __future__ import annotations

import json
import time
from typing import Any

from .conversations import Conversations
from .image_store import ImageStore
from .jobs import Job
from .relay.types import GenerationResult, GroundingSource, Note
from .studio import Generated


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as JSON would give them back (a value JSON cannot hold becomes its text)."""
    return json.loads(json.dumps(params, default=str))


def shown_of(result: GenerationResult) -> dict[str, Any]:
    """What a result shows besides its picture, JSON-able."""
    return {
        "mime_type": result.mime_type,
        "width": result.width,
        "height": result.height,
        "model": result.model,
        "text": result.text,
        "sources": [[s.title, s.uri, s.image_uri] for s in result.sources],
        "image_queries": list(result.image_queries),
        "notes": [[n.key, n.text, jsonable(n.params)] for n in result.notes],
    }


async def load(
    conversations: Conversations, images: ImageStore, turn_id: int | None, shown: dict[str, Any], *, relay_name: str, model: str
) -> Generated:
    """The made picture back from its turn and the image store; LookupError when either is gone."""
    turn = await conversations.get_turn(turn_id) if turn_id is not None else None
    if turn is None or turn.image_sha256 is None:
        raise LookupError("no stored picture")
    data, mime = await images.get(turn.image_sha256)
    result = GenerationResult(
        image=data,
        mime_type=str(shown.get("mime_type") or mime),
        width=int(shown.get("width") or 0),
        height=int(shown.get("height") or 0),
        model=str(shown.get("model") or model),
        text=str(shown.get("text") or ""),
        sources=[GroundingSource(*s) for s in shown.get("sources", [])],
        image_queries=list(shown.get("image_queries", [])),
        notes=[Note(*n) for n in shown.get("notes", [])],
        relay_name=relay_name,
    )
    return Generated(turn=turn, result=result, relay_name=relay_name, conversation_id=turn.conversation_id)


def redelivery(job: Job, generated: Generated, started: float) -> dict[str, Any] | None:
    """What posting this stored picture again needs should its process die before the post is
    recorded (``Job.redeliver``); None when nothing was stored to post."""
    if job.redeliver is not None:
        return job.redeliver  # posted again already: the first post's time bounds the nonce's window
    turn = generated.turn
    if turn is None or turn.image_sha256 is None:
        return None
    return {
        "at": time.time(),
        "started": started,
        "turn_id": turn.id,
        "relay_name": generated.relay_name,
        "shown": shown_of(generated.result),
    }


async def load_redelivery(conversations: Conversations, images: ImageStore, job: Job) -> Generated:
    """The picture ``job.redeliver`` describes; LookupError/KeyError/ValueError when it cannot be had."""
    mark = job.redeliver or {}
    shown, relay_name = dict(mark.get("shown") or {}), str(mark.get("relay_name") or "")
    return await load(conversations, images, int(mark["turn_id"]), shown, relay_name=relay_name, model=job.model)
