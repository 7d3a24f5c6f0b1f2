"""What each model takes: ratios, sizes, input-image limits, options.

Every request is checked here before anything is sent, so a relay never bills a request the
model would refuse, and the user hears what *is* allowed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .types import GenerationRequest, InvalidRequest

BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTREME_RATIOS = ("1:4", "4:1", "1:8", "8:1")
MAX_PROMPT_CHARS = 30_000


@dataclass(frozen=True)
class ModelSpec:
    id: str
    label: str
    aspect_ratios: tuple[str, ...]
    sizes: tuple[str, ...]  # canonical sizes ("512", "1K", "2K", "4K"); empty: fixed ~1 MP
    max_images: int
    grounding: bool = False
    image_search: bool = False
    thinking_levels: tuple[str, ...] = ()  # empty: not controllable
    aliases: tuple[str, ...] = ()

    @property
    def default_size(self) -> str | None:
        return "1K" if "1K" in self.sizes else None


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="gemini-2.5-flash-image",
            label="Nano Banana (2.5 Flash)",
            aspect_ratios=BASE_RATIOS,
            sizes=(),
            max_images=3,
            aliases=("nano-banana", "gemini-2.5-flash-image-preview"),
        ),
        ModelSpec(
            id="gemini-3-pro-image-preview",
            label="Nano Banana Pro (3 Pro)",
            aspect_ratios=BASE_RATIOS,
            sizes=("1K", "2K", "4K"),
            max_images=14,
            grounding=True,
            aliases=("nano-banana-pro",),
        ),
        ModelSpec(
            id="gemini-3.1-flash-image-preview",
            label="Nano Banana 2 (3.1 Flash)",
            aspect_ratios=BASE_RATIOS + EXTREME_RATIOS,
            sizes=("512", "1K", "2K", "4K"),
            max_images=14,
            grounding=True,
            image_search=True,
            thinking_levels=("minimal", "high"),
            aliases=("nano-banana-2",),
        ),
    )
}
DEFAULT_MODEL = "gemini-3.1-flash-image-preview"

_SIZE = re.compile(r"^\s*(?:(512)\s*(?:px)?|0\.5\s*k|([124])\s*k)\s*$", re.IGNORECASE)
_RATIO = re.compile(r"^\s*(\d{1,2})\s*[:x/]\s*(\d{1,2})\s*$")


def resolve_model(name: str) -> ModelSpec:
    """A catalogue model by id or alias (case-insensitive)."""
    wanted = name.strip().lower()
    for spec in MODELS.values():
        if wanted == spec.id or wanted in spec.aliases:
            return spec
    raise InvalidRequest(
        f"unknown model {name!r}; available: {', '.join(MODELS)}",
        key="invalid.model",
        model=name,
        allowed=", ".join(MODELS),
    )


def normalize_size(size: str) -> str | None:
    """``2k``/``2K``/``512px``/``0.5K`` -> canonical ``2K``/``512``; None if unrecognisable."""
    match = _SIZE.match(size)
    if not match:
        return None
    return "512" if match.group(1) or not match.group(2) else f"{match.group(2)}K"


def normalize_ratio(ratio: str) -> str | None:
    match = _RATIO.match(ratio)
    return f"{int(match.group(1))}:{int(match.group(2))}" if match else None


def checked_ratio(spec: ModelSpec, ratio: str) -> str:
    """``ratio`` in canonical form if ``spec`` takes it, else InvalidRequest saying what it takes."""
    canonical = normalize_ratio(ratio)
    if canonical not in spec.aspect_ratios:
        raise InvalidRequest(
            f"{spec.id} does not take aspect ratio {ratio!r}; allowed: {', '.join(spec.aspect_ratios)}",
            key="invalid.ratio",
            model=spec.id,
            value=ratio,
            allowed=", ".join(spec.aspect_ratios),
        )
    return canonical


def checked_size(spec: ModelSpec, size: str) -> str:
    """``size`` in canonical form if ``spec`` takes it, else InvalidRequest saying what it takes."""
    if not spec.sizes:
        raise InvalidRequest(
            f"{spec.id} has a fixed output size (about 1 megapixel); drop the size option or pick another model",
            key="invalid.size_fixed",
            model=spec.id,
            value=size,
        )
    canonical = normalize_size(size)
    if canonical not in spec.sizes:
        raise InvalidRequest(
            f"{spec.id} does not take size {size!r}; allowed: {', '.join(display_size(s) for s in spec.sizes)}",
            key="invalid.size",
            model=spec.id,
            value=size,
            allowed=", ".join(display_size(s) for s in spec.sizes),
        )
    return canonical


def validate(request: GenerationRequest) -> GenerationRequest:
    """Return a copy with model, ratio and size in canonical form, or raise InvalidRequest."""
    prompt = request.prompt.strip()
    if not prompt:
        raise InvalidRequest("the prompt is empty; describe the picture you want", key="invalid.empty_prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"the prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            key="invalid.prompt_too_long",
            length=len(prompt),
            limit=MAX_PROMPT_CHARS,
        )
    spec = resolve_model(request.model)

    ratio = checked_ratio(spec, request.aspect_ratio) if request.aspect_ratio else None
    size = checked_size(spec, request.size) if request.size else None

    if len(request.images) > spec.max_images:
        raise InvalidRequest(
            f"{spec.id} takes at most {spec.max_images} input images; got {len(request.images)}",
            key="invalid.too_many_images",
            model=spec.id,
            count=len(request.images),
            limit=spec.max_images,
        )
    if request.grounding and not spec.grounding:
        raise InvalidRequest(
            f"{spec.id} cannot use search grounding; models that can: "
            + ", ".join(m.id for m in MODELS.values() if m.grounding),
            key="invalid.grounding",
            model=spec.id,
            allowed=", ".join(m.id for m in MODELS.values() if m.grounding),
        )
    thinking = request.thinking.strip().lower() if request.thinking else None
    if thinking and thinking not in spec.thinking_levels:
        if not spec.thinking_levels:
            raise InvalidRequest(
                f"{spec.id} has no thinking option",
                key="invalid.thinking_unsupported",
                model=spec.id,
            )
        raise InvalidRequest(
            f"{spec.id} takes thinking level {', '.join(spec.thinking_levels)}; got {request.thinking!r}",
            key="invalid.thinking",
            model=spec.id,
            value=request.thinking,
            allowed=", ".join(spec.thinking_levels),
        )
    return dataclasses.replace(request, prompt=prompt, model=spec.id, aspect_ratio=ratio, size=size, thinking=thinking)


def display_size(size: str) -> str:
    return "512px" if size == "512" else size


# Output pixel dimensions by (size, ratio) for the 3.x models; 2.5 Flash is about 1 MP.
def expected_long_side(size: str | None) -> int:
    return {"512": 512, "1K": 1400, "2K": 2800, "4K": 5600}.get(size or "1K", 1400)


def timeout_for(size: str | None) -> float:
    """Seconds to wait for an answer; relays recommend 3-6 min at 1K, up to 20 min at 4K."""
    return {"512": 240.0, "1K": 360.0, "2K": 600.0, "4K": 1200.0}.get(size or "1K", 360.0)
