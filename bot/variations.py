"""Variations of a result and variant fan-out — pure, no database, no Discord.

Vary (subtle) and Vary (strong) make a new picture from an existing one with a prompt the
member does not write; the original prompt goes along so the model keeps the subject. Variants
are N independent requests for the same prompt (a relay call makes one picture), so each can
fail, be refunded, continued or varied on its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from .preferences import MAX_VARIANTS, ServerCreative
from .refusal import Refusal
from .relay.catalogue import MAX_PROMPT_CHARS
from .studio import JobRequest

Strength = Literal["subtle", "strong"]
STRENGTHS: tuple[Strength, ...] = ("subtle", "strong")

# Sent to the model with the result's picture as input, not shown to members.
_VARY = {
    "subtle": (
        "Make a subtle variation of this image: keep the subject, composition, framing, palette and style; "
        "change only small details (pose, expression, texture, minor background elements)."
    ),
    "strong": (
        "Make a strong variation of this image: keep the subject and the overall idea, but reinterpret "
        "the composition, camera angle, lighting and setting freely."
    ),
}
_ORIGINAL = "\n\nThe image was made from this prompt: "


class VariantError(Refusal):
    """A variant count or a variation the bot cannot do."""


def vary_prompt(strength: str, original_prompt: str = "") -> str:
    """The model-facing prompt for Vary (``subtle`` or ``strong``) of a picture made from
    ``original_prompt`` (cut so the whole stays under the model's prompt limit)."""
    if strength not in _VARY:
        raise VariantError(f"unknown strength {strength!r}", key="vary.bad_strength", value=strength)
    base = _VARY[strength]
    original = " ".join(original_prompt.split())
    if not original:
        return base
    room = MAX_PROMPT_CHARS - len(base) - len(_ORIGINAL)
    return base + _ORIGINAL + (original if len(original) <= room else original[: room - 1] + "…")


def variant_count(requested: int | None, creative: ServerCreative) -> int:
    """How many variants a request makes: the asked count (1 to the server's maximum; more is
    refused, not silently cut, since the member typed it), else the server's default."""
    if requested is None:
        return min(creative.variants_default, creative.variants_max)
    if not 1 <= requested <= MAX_VARIANTS:
        raise VariantError(f"bad count {requested}", key="variants.bad_count", maximum=MAX_VARIANTS)
    if requested > creative.variants_max:
        raise VariantError(
            f"count {requested} over the server maximum", key="variants.over_max", count=requested, maximum=creative.variants_max
        )
    return requested


@dataclass(frozen=True)
class Variant:
    index: int  # 1-based, as members see it ("variant 2")
    of: int
    request: JobRequest


def fan_out(request: JobRequest, count: int) -> list[Variant]:
    """``count`` independent copies of ``request`` (each its own job, reserve and refund).
    Mutable fields are copied, so changing one variant's request never changes another's."""
    if not 1 <= count <= MAX_VARIANTS:
        raise VariantError(f"bad count {count}", key="variants.bad_count", maximum=MAX_VARIANTS)
    return [Variant(i, count, dataclasses.replace(request, images=list(request.images))) for i in range(1, count + 1)]


def total_cost(cost_each: int, count: int) -> int:
    """Credits reserved at once for ``count`` variants of one price."""
    return cost_each * count
