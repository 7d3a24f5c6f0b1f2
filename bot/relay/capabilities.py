"""What each relay dialect can carry of a request, and what a result says when something was
left out: the catalogue says what a *model* takes; this, what a *format* can send it.

The cogs ask before anything is charged (``unhonoured``), the relay pool routes around relays
that would drop an option, and the client notes on the result what could not be sent.
"""

from __future__ import annotations

from .catalogue import MODELS
from .types import Dialect, GenerationRequest, Note

# What each dialect has no field for: the OpenAI Chat format carries no ratio or size (the
# ``imageConfig`` it sends beside the messages is read by LiteLLM only), and neither OpenAI
# format carries Google Search or a thinking level. Names as in GenerationRequest.
UNCARRIED: dict[str, tuple[str, ...]] = {
    "openai-chat": ("aspect_ratio", "size", "grounding", "thinking"),
    "openai-images": ("grounding", "thinking"),
}
# Input pictures a dialect takes, where tighter than the models' own limit: OpenAI-style
# relays document their edits endpoint as taking one to six pictures ("支持传入1~6张图").
DIALECT_MAX_IMAGES: dict[str, int] = {"openai-images": 6}


def unhonoured(dialect: str, request: GenerationRequest) -> list[str]:
    """What ``request`` asks for that a relay of ``dialect`` would drop or refuse: option
    names as in GenerationRequest, and ``images`` for more input pictures than the dialect
    takes. A relay with any of these is no place for the request (bot/relays/pool.py skips it;
    the cogs refuse before anything is charged when every relay would). History is not among
    them: an OpenAI relay edits the latest picture instead, and says so (``history_note``)."""
    dropped = [name for name in UNCARRIED.get(dialect, ()) if getattr(request, name)]
    limit = DIALECT_MAX_IMAGES.get(dialect)
    if limit is not None and len(request.images) > limit:
        dropped.append("images")
    return dropped


def reference_note(model: str, count: int) -> Note | None:
    """The model's guidance on many references, said on a result made from ``count`` pictures,
    more than ``model`` keeps people consistent (it cannot tell which pictures show people;
    the member can)."""
    spec = MODELS.get(model)
    if spec is None or not spec.max_people or count <= spec.max_people:
        return None
    return Note(
        "note.references",
        f"{spec.label} keeps up to {spec.max_people} people consistent and up to {spec.max_objects} objects "
        f"with high fidelity; {count} pictures were given",
        {"model": spec.label, "people": spec.max_people, "objects": spec.max_objects, "count": count},
    )


def history_note(request: GenerationRequest, dialect: str) -> Note | None:
    """Said on a result whose conversation could not be sent: an OpenAI-format relay (a
    failover, say) has no multi-turn, so it edited the latest picture with the new instruction."""
    if not request.history or dialect == "gemini":
        return None
    return Note(
        "note.history_dropped",
        f"the {dialect} relay format cannot carry the conversation; the latest picture was edited with your words alone",
        {"dialect": dialect},
    )


def dialect_notes(request: GenerationRequest, dialect: Dialect) -> list[Note]:
    """Controls the OpenAI-style formats have no field for, so the picture is made without
    them (said rather than dropped silently). Gemini's format carries them all."""
    if dialect == "gemini":
        return []
    notes: list[Note] = []
    if request.grounding:
        notes.append(
            Note(
                "note.grounding_dropped",
                f"Google Search grounding cannot be sent through the {dialect} format; the picture was made without it",
                {"dialect": dialect},
            )
        )
    if request.thinking:
        notes.append(
            Note(
                "note.thinking_dropped",
                f"the thinking level cannot be sent through the {dialect} format; the model used its default",
                {"dialect": dialect},
            )
        )
    return notes
