"""Turning a job's stored request into a picture and a recorded turn — no Discord here.

A job's ``request`` JSON (see :class:`JobRequest`) names input images by SHA-256 and the turn
it continues from; the studio rehydrates them, asks the relay pool, and records the exchange
in the conversation tree so the next edit can replay it (thought signatures included).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import store
from .conversations import Conversations, Turn
from .image_store import ImageStore
from .relay.capabilities import reference_note, unhonoured
from .relay.catalogue import validate
from .relay.client import HISTORY_BUDGET, approx_json_size
from .relay.types import GenerationRequest, GenerationResult, InputImage, InvalidRequest, RelayConfig

log = logging.getLogger(__name__)

# Sent to the model, not shown to users: the model understands English instructions best.
UPSCALE_PROMPT = (
    "Recreate this exact image at a higher resolution. Keep the composition, subjects, colours, "
    "text and style identical; only add fine detail and sharpness."
)


class GeneratesImages(Protocol):
    async def generate(self, guild_id: int | None, request: GenerationRequest) -> tuple[GenerationResult, str]: ...


@dataclass
class JobRequest:
    """What a job asks for, as stored in ``jobs.request``."""

    prompt: str
    model: str
    aspect_ratio: str | None = None
    size: str | None = None
    grounding: bool = False
    image_search: bool = False  # with grounding: Google Images too (3.1 Flash)
    preview: bool = False  # show the model's drafts while it draws (cogs/imagine/progress.py)
    thinking: str | None = None
    images: list[str] = field(default_factory=list)  # sha256 of new input images
    parent_turn_id: int | None = None  # continue the conversation from this turn
    conversation_id: int | None = None
    post_channel_id: int | None = None  # where the result goes (channel or thread)
    reply_to_message_id: int | None = None
    upload_limit: int = 10 * 1024 * 1024
    locale: str = "en"  # the requester's language (interaction replies)
    guild_locale: str = "en"  # the server's language (channel posts)
    # Known before the job row exists, so the runner can edit it even if it starts at once.
    progress_message_id: int | None = None
    display_prompt: str | None = None  # what the result shows instead of a model-facing prompt
    # A second quick message in a thread edits the first one's result: this job waits for that
    # job (bot.jobs holds it back) and continues from its result turn, if it made one.
    after_job_id: int | None = None
    # "Results only to me": the progress and the result are ephemeral (the interaction's
    # followup while its token lives, a direct message after), and no thread is opened.
    private: bool = False
    # One of ``variants`` pictures of one request (1-based; 0: not a variant), posted together
    # once each has ended; ``variant_group`` is their shared progress message.
    variant: int = 0
    variants: int = 1
    variant_group: int | None = None
    # How the picture was made, said on the result beside the prompt shown: a variation's
    # strength ("subtle"/"strong"), the style applied (its name).
    variation: str | None = None
    style: str | None = None

    def generation(self, images: list[InputImage], history: list[dict[str, Any]] | None = None) -> GenerationRequest:
        """What the relay is asked: this request's options with these inputs and history."""
        return GenerationRequest(
            prompt=self.prompt,
            model=self.model,
            images=images,
            aspect_ratio=self.aspect_ratio,
            size=self.size,
            history=history or [],
            grounding=self.grounding,
            image_search=self.image_search,
            thinking=self.thinking,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def unroutable(order: Sequence[RelayConfig], checked: GenerationRequest) -> list[str]:
    """The options (GenerationRequest names, ``images`` for the count) that stop every relay
    in ``order`` from honouring ``checked``: empty when one of them can, since the pool sends
    the job to the first relay that can. Those no relay can honour come first; else (each
    lacks something else) all of them, in the first relay's order."""
    drops = [unhonoured(relay.dialect, checked) for relay in order]
    if not drops or any(not d for d in drops):
        return []
    common = [name for name in drops[0] if all(name in d for d in drops)]
    return common or list(dict.fromkeys(name for d in drops for name in d))


def continue_from(
    turn: Turn,
    conversation_model: str,
    prompt: str,
    *,
    post_channel_id: int | None,
    upload_limit: int,
    locale: str,
    guild_locale: str,
    conversation_thread_id: int | None = None,
    reply_to_message_id: int | None = None,
    size: str | None = None,
) -> JobRequest:
    """A request that edits ``turn``'s picture: same model, shape, grounding, thinking and live
    previews (a member who asked for Google Search keeps it on the next message), posted in its
    thread."""
    settings = turn.settings or {}
    return JobRequest(
        prompt=prompt,
        model=settings.get("model") or conversation_model,
        aspect_ratio=settings.get("aspect_ratio"),
        size=size or settings.get("size"),
        grounding=bool(settings.get("grounding", False)),
        image_search=bool(settings.get("image_search", False)),
        thinking=settings.get("thinking"),
        preview=bool(settings.get("preview", False)),  # who watched it being drawn watches the edits too
        parent_turn_id=turn.id,
        conversation_id=turn.conversation_id,
        post_channel_id=conversation_thread_id or post_channel_id,
        reply_to_message_id=reply_to_message_id,
        upload_limit=upload_limit,
        locale=locale,
        guild_locale=guild_locale,
    )


@dataclass
class Generated:
    turn: Turn | None  # None: delivered but not recorded (storing failed); not editable
    result: GenerationResult
    relay_name: str
    conversation_id: int | None


class Studio:
    def __init__(
        self, pool: GeneratesImages, images: ImageStore, conversations: Conversations, *, history_budget: int = HISTORY_BUDGET
    ) -> None:
        self.pool = pool
        self.images = images
        self.conversations = conversations
        self.history_budget = history_budget

    async def check(self, req: JobRequest, image_count: int | None = None) -> GenerationRequest:
        """Validate options against the model before anything is queued or sent."""
        placeholder = [InputImage(b"", "image/png")] * (len(req.images) if image_count is None else image_count)
        return validate(req.generation(placeholder))

    async def _replayable(self, parent: Turn) -> list[dict[str, Any]]:
        """The history to send for an edit of ``parent``'s picture, within the budget, or none.
        ImagePruned (translated) propagates: the user hears that turn's pictures expired."""
        history = list(await self.conversations.history(parent.id, budget_bytes=self.history_budget))
        if approx_json_size(history) <= self.history_budget:
            return history
        # The chosen turn alone is too big (a 4K picture is ~35 MB as JSON): drop the unsigned
        # drafts first, then replay no history at all and send the picture as an input instead,
        # which the client shrinks to fit the body budget.
        history = list(await self.conversations.history(parent.id, budget_bytes=self.history_budget, include_thoughts=False))
        return history if approx_json_size(history) <= self.history_budget else []

    async def generate(
        self, *, guild_id: int | None, channel_id: int, user_id: int, req: JobRequest, job_id: int | None = None
    ) -> Generated:
        inputs = [InputImage(*(await self.images.get(sha))) for sha in req.images]
        history: list[dict[str, Any]] = []
        parent: Turn | None = None
        if req.parent_turn_id is not None:
            parent = await self.conversations.get_turn(req.parent_turn_id)
            if parent is None:
                raise InvalidRequest("that picture is no longer known", key="conversation.unknown_turn")
            history = await self._replayable(parent)
            if not history:
                # Nothing replayable (e.g. trimmed away): fall back to "latest image + instruction".
                data, mime = await self.conversations.latest_image(parent.id)
                inputs.insert(0, InputImage(data, mime))
        request = req.generation(inputs, history)
        result, relay_name = await self.pool.generate(guild_id, request)
        guidance = reference_note(result.model, len(req.images))
        if guidance is not None:  # many references: which of them the model keeps faithfully
            result.notes.append(guidance)

        # The relay has been paid and the picture exists: it is delivered even if it cannot be
        # recorded (disk full, database unwritable); it is then simply not editable later.
        conversation_id = req.conversation_id or (parent.conversation_id if parent else None)
        try:
            if conversation_id is None:
                conversation_id = await self.conversations.create(guild_id, channel_id, user_id, result.model)
            user_turn = result.user_turn or {"role": "user", "parts": [{"text": req.prompt}]}
            turn: Turn | None = await self.conversations.add_turn(
                conversation_id,
                parent.id if parent else None,
                user_turn,
                result.model_turn,
                result.image,
                result.mime_type,
                prompt=req.prompt,
                # What a thread edit of this picture inherits (see continue_from).
                settings={
                    "model": result.model,
                    "aspect_ratio": req.aspect_ratio,
                    "size": req.size,
                    "grounding": req.grounding,
                    "image_search": req.image_search,
                    "thinking": req.thinking,
                    "preview": req.preview,
                },
                job_id=job_id,
            )
        except store.DatabaseError as exc:  # OSError among them
            log.warning("job %s: the picture could not be stored (%s: %s); delivering it anyway", job_id, type(exc).__name__, exc)
            turn = None
        return Generated(turn=turn, result=result, relay_name=relay_name, conversation_id=conversation_id)
