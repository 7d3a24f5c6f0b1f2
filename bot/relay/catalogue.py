"""What each model takes: ratios, sizes, input-image limits, options.

Every request is checked here before anything is sent, so a relay never bills a request the
model would refuse, and the user hears what *is* allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .types import GenerationRequest, InvalidRequest, Note

BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTREME_RATIOS = ("1:4", "4:1", "1:8", "8:1")
ALL_RATIOS = BASE_RATIOS + EXTREME_RATIOS
MAX_PROMPT_CHARS = 30_000


@dataclass(frozen=True)
class ModelSpec:
    id: str
    label: str
    aspect_ratios: tuple[str, ...]
    sizes: tuple[str, ...]  # canonical sizes ("512", "1K", "2K", "4K"); empty: fixed ~1 MP
    max_images: int
    grounding: bool = False
    image_search: bool = False  # Google Image Search grounding (googleSearch.searchTypes.imageSearch)
    # Thinks before it draws and can return its interim thought images (thinkingConfig.includeThoughts).
    thoughts: bool = False
    thinking_levels: tuple[str, ...] = ()  # empty: not controllable
    aliases: tuple[str, ...] = ()
    # Of ``max_images`` references, how many objects it keeps with high fidelity and how many
    # people it keeps consistent (Google's figures; 0: no such guidance for the model).
    max_objects: int = 0
    max_people: int = 0

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
            max_objects=6,
            max_people=5,
            grounding=True,
            thoughts=True,
            aliases=("nano-banana-pro",),
        ),
        ModelSpec(
            id="gemini-3.1-flash-image-preview",
            label="Nano Banana 2 (3.1 Flash)",
            aspect_ratios=BASE_RATIOS + EXTREME_RATIOS,
            sizes=("512", "1K", "2K", "4K"),
            max_images=14,
            max_objects=10,
            max_people=4,
            grounding=True,
            image_search=True,
            thoughts=True,
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


def check_image_count(spec: ModelSpec, count: int) -> None:
    """InvalidRequest when ``count`` input pictures are more than ``spec`` takes, with the
    model's guidance (objects kept faithful, people kept consistent) where it has one."""
    if count > spec.max_images and spec.max_people:
        raise InvalidRequest(
            f"{spec.id} takes at most {spec.max_images} input images (up to {spec.max_objects} objects "
            f"with high fidelity, up to {spec.max_people} people kept consistent); got {count}",
            key="invalid.too_many_images_guided",
            model=spec.label,
            count=count,
            limit=spec.max_images,
            objects=spec.max_objects,
            people=spec.max_people,
        )
    if count > spec.max_images:
        raise InvalidRequest(
            f"{spec.id} takes at most {spec.max_images} input images; got {count}",
            key="invalid.too_many_images",
            model=spec.label,
            count=count,
            limit=spec.max_images,
        )


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

    check_image_count(spec, len(request.images))
    if request.grounding and not spec.grounding:
        raise InvalidRequest(
            f"{spec.id} cannot use search grounding; models that can: " + ", ".join(m.id for m in MODELS.values() if m.grounding),
            key="invalid.grounding",
            model=spec.id,
            allowed=", ".join(m.id for m in MODELS.values() if m.grounding),
        )
    if request.image_search and not spec.image_search:
        # (written out like the one above: the translation check reads each key's parameters here)
        allowed = ", ".join(m.id for m in MODELS.values() if m.image_search)
        raise InvalidRequest(
            f"{spec.id} cannot search Google Images; models that can: {allowed}", key="invalid.image_search", model=spec.id, allowed=allowed
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


# Output pixels by ratio and size, as Google's image-generation docs tabulate them ("Aspect
# ratios and image size"); LiteLLM's images route maps a ``WxH`` size back through the same
# table (exact entries first, else the nearest ratio and the size by sqrt(W*H): <768 -> 512,
# <1536 -> 1K, <3072 -> 2K, else 4K). 2.5 Flash has one size (about 1 MP) per ratio.
PIXELS_25: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
_SIZES = ("512", "1K", "2K", "4K")
PIXELS_3: dict[str, tuple[tuple[int, int], ...]] = {  # ratio -> (512, 1K, 2K, 4K)
    "1:1": ((512, 512), (1024, 1024), (2048, 2048), (4096, 4096)),
    "1:4": ((256, 1024), (512, 2048), (1024, 4096), (2048, 8192)),
    "1:8": ((192, 1536), (384, 3072), (768, 6144), (1536, 12288)),
    "2:3": ((424, 632), (848, 1264), (1696, 2528), (3392, 5056)),
    "3:2": ((632, 424), (1264, 848), (2528, 1696), (5056, 3392)),
    "3:4": ((448, 600), (896, 1200), (1792, 2400), (3584, 4800)),
    "4:1": ((1024, 256), (2048, 512), (4096, 1024), (8192, 2048)),
    "4:3": ((600, 448), (1200, 896), (2400, 1792), (4800, 3584)),
    "4:5": ((464, 576), (928, 1152), (1856, 2304), (3712, 4608)),
    "5:4": ((576, 464), (1152, 928), (2304, 1856), (4608, 3712)),
    "8:1": ((1536, 192), (3072, 384), (6144, 768), (12288, 1536)),
    "9:16": ((384, 688), (768, 1376), (1536, 2752), (3072, 5504)),
    "16:9": ((688, 384), (1376, 768), (2752, 1536), (5504, 3072)),
    "21:9": ((792, 336), (1584, 672), (3168, 1344), (6336, 2688)),
}


def pixel_size(model: str, ratio: str | None, size: str | None) -> tuple[int, int]:
    """The ``(width, height)`` the model makes for a canonical ratio and size (defaults 1:1, 1K)."""
    ratio = ratio or "1:1"
    if not MODELS[model].sizes:
        return PIXELS_25[ratio]
    return PIXELS_3[ratio][_SIZES.index(size or "1K")]


def size_of(width: int, height: int) -> str:
    """The size a picture is, by its area: sqrt(W*H) below 768 is 512, below 1536 1K, below
    3072 2K, else 4K (the bands LiteLLM maps a ``WxH`` size with; the tables above fall in them)."""
    side = math.sqrt(width * height)
    return "512" if side < 768 else "1K" if side < 1536 else "2K" if side < 3072 else "4K"


def ratio_of(width: int, height: int) -> str:
    """The catalogue's aspect ratio nearest to a picture's shape (log distance)."""
    return min(ALL_RATIOS, key=lambda r: abs(math.log((int(r.split(":")[0]) / int(r.split(":")[1])) / (width / max(1, height)))))


def shape_notes(request: GenerationRequest, width: int, height: int) -> list[Note]:
    """Notes for a picture whose shape is not what ``request`` (validated) asked for: another
    aspect ratio (more than 3% off), or another size. Nothing is said about what was not asked."""
    notes: list[Note] = []
    if request.aspect_ratio and width and height:
        rw, rh = (int(x) for x in request.aspect_ratio.split(":"))
        if abs(math.log((width / height) / (rw / rh))) > 0.03:
            notes.append(
                Note(
                    "note.ratio_differs",
                    f"asked for aspect ratio {request.aspect_ratio}; the relay made {width}×{height} "
                    f"(about {ratio_of(width, height)}): it did not pass the ratio on",
                    {"asked": request.aspect_ratio, "width": width, "height": height, "got": ratio_of(width, height)},
                )
            )
    if request.size and MODELS[request.model].sizes and width and height and size_of(width, height) != request.size:
        got = size_of(width, height)
        notes.append(
            Note(
                "note.size_differs",
                f"asked for size {display_size(request.size)}; the relay made {width}×{height} "
                f"(size {display_size(got)}): it did not pass the size on",
                {"asked": display_size(request.size), "width": width, "height": height, "got": display_size(got)},
            )
        )
    return notes


def image_config(request: GenerationRequest) -> dict[str, str]:
    """Gemini's ``imageConfig`` for a validated request's ratio and size, for the OpenAI-style
    formats to carry (empty when neither is asked; no ``imageSize`` for a model without sizes).
    The size is canonical, i.e. Google's own spelling (512, 1K, 2K, 4K)."""
    config: dict[str, str] = {}
    if request.aspect_ratio:
        config["aspectRatio"] = request.aspect_ratio
    if request.size and MODELS[request.model].sizes:
        config["imageSize"] = request.size
    return config


def timeout_for(size: str | None) -> float:
    """Seconds to wait for an answer; relays recommend 3-6 min at 1K, up to 20 min at 4K."""
    return {"512": 240.0, "1K": 360.0, "2K": 600.0, "4K": 1200.0}.get(size or "1K", 360.0)
