"""Pictures the relay double answers with: real Pillow images at the sizes the models produce.

Everything is cached by (width, height, mime, variant/huge): tests and benchmarks ask for the
same few pictures over and over, and encoding a 4K PNG costs a second or more.
"""

from __future__ import annotations

import base64
import io
import os
import re
import threading
import zlib
from dataclasses import dataclass, field
from functools import cached_property

from PIL import Image, ImageDraw

MIMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}

# Ratio -> size tier -> pixels, from the relay docs (seeds 001/004). The 3.x table is the
# 3.1 Flash one; 3 Pro documents the same numbers for the ratios it shares.
FLASH_25: dict[str, tuple[int, int]] = {
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
GEMINI_3: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"512": (512, 512), "1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)},
    "1:4": {"512": (256, 1024), "1K": (512, 2048), "2K": (1024, 4096), "4K": (2048, 8192)},
    "1:8": {"512": (192, 1536), "1K": (384, 3072), "2K": (768, 6144), "4K": (1536, 12288)},
    "2:3": {"512": (424, 632), "1K": (848, 1264), "2K": (1696, 2528), "4K": (3392, 5056)},
    "3:2": {"512": (632, 424), "1K": (1264, 848), "2K": (2528, 1696), "4K": (5056, 3392)},
    "3:4": {"512": (448, 600), "1K": (896, 1200), "2K": (1792, 2400), "4K": (3584, 4800)},
    "4:1": {"512": (1024, 256), "1K": (2048, 512), "2K": (4096, 1024), "4K": (8192, 2048)},
    "4:3": {"512": (600, 448), "1K": (1200, 896), "2K": (2400, 1792), "4K": (4800, 3584)},
    "4:5": {"512": (464, 576), "1K": (928, 1152), "2K": (1856, 2304), "4K": (3712, 4608)},
    "5:4": {"512": (576, 464), "1K": (1152, 928), "2K": (2304, 1856), "4K": (4608, 3712)},
    "8:1": {"512": (1536, 192), "1K": (3072, 384), "2K": (6144, 768), "4K": (12288, 1536)},
    "9:16": {"512": (384, 688), "1K": (768, 1376), "2K": (1536, 2752), "4K": (3072, 5504)},
    "16:9": {"512": (688, 384), "1K": (1376, 768), "2K": (2752, 1536), "4K": (5504, 3072)},
    "21:9": {"512": (792, 168), "1K": (1584, 672), "2K": (3168, 1344), "4K": (6336, 2688)},
}
RATIOS = tuple(GEMINI_3)
SIZES = ("512", "1K", "2K", "4K")
HUGE_SIZE = (4096, 4096)
_TIER_PIXELS = {"512": 512 * 512, "1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
_RATIO = re.compile(r"^(\d{1,2}):(\d{1,2})$")


def is_flash_25(model: str | None) -> bool:
    name = (model or "").lower()
    return "2.5" in name or name in ("nano-banana", "nano-banana-1")


def dimensions(model: str | None, ratio: str | None, size: str | None) -> tuple[int, int]:
    """Output pixels for a model, ratio ("16:9") and canonical size ("512"/"1K"/"2K"/"4K")."""
    ratio = ratio or "1:1"
    size = size or "1K"
    if is_flash_25(model):
        if ratio in FLASH_25:
            return FLASH_25[ratio]
        return _approximate(ratio, "1K")
    if ratio in GEMINI_3 and size in GEMINI_3[ratio]:
        return GEMINI_3[ratio][size]
    return _approximate(ratio, size)


def _approximate(ratio: str, size: str) -> tuple[int, int]:
    match = _RATIO.match(ratio)
    rw, rh = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
    pixels = _TIER_PIXELS.get(size, _TIER_PIXELS["1K"])
    height = (pixels * rh / rw) ** 0.5
    width = height * rw / rh
    return max(16, int(round(width / 16)) * 16), max(16, int(round(height / 16)) * 16)


def nearest_ratio(width: int, height: int, allowed: tuple[str, ...] = RATIOS) -> str:
    """The listed ratio closest to width:height (how edits follow the input's shape)."""
    target = width / max(1, height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(int(w) / int(h) - target)

    return min(allowed, key=distance)


@dataclass(frozen=True, eq=False)
class Picture:
    data: bytes = field(repr=False)
    mime: str
    width: int
    height: int

    @cached_property
    def b64(self) -> bytes:
        return base64.b64encode(self.data)

    @cached_property
    def b64_escaped(self) -> bytes:
        """base64 with ``/`` written as ``\\/`` (how PHP-ish relays serialise JSON)."""
        return self.b64.replace(b"/", b"\\/")

    def __repr__(self) -> str:
        return f"Picture({self.mime}, {self.width}x{self.height}, {len(self.data)} bytes)"


_cache: dict[tuple[int, int, str, str], Picture] = {}
_lock = threading.Lock()  # one generator at a time: 16 threads must not all build the same 4K PNG


def picture(width: int, height: int, mime: str = "image/png", variant: str = "final") -> Picture:
    """A smooth, cheap-to-encode picture; ``variant`` changes colours (drafts vs final)."""
    return _cached((width, height, mime, variant), lambda: _encode(_draw(width, height, variant), mime))


def huge_picture(width: int | None = None, height: int | None = None, mime: str = "image/png") -> Picture:
    """A 4K-class picture full of noise, so it compresses poorly (~28 MB as PNG at 4096x4096)."""
    width, height = width or HUGE_SIZE[0], height or HUGE_SIZE[1]
    return _cached((width, height, mime, "huge"), lambda: _encode(_noise(width, height), mime))


def preload(data: bytes, width: int, height: int, mime: str = "image/png", *, huge: bool = True) -> Picture:
    """Put a ready-made picture in the cache (e.g. a benchmark's huge PNG read from disk), so
    ``Behaviour("image", huge=True, width=width, height=height)`` answers with exactly it."""
    pic = Picture(data, mime, width, height)
    pic.b64  # noqa: B018 - pay for base64 now, not during the first answer
    with _lock:
        _cache[(width, height, mime, "huge" if huge else "final")] = pic
    return pic


def _cached(key: tuple[int, int, str, str], build) -> Picture:
    width, height, mime, _ = key
    if mime not in MIMES:
        raise ValueError(f"unsupported mime {mime!r}; use one of {', '.join(MIMES)}")
    if not (1 <= width <= 16384 and 1 <= height <= 16384):
        raise ValueError(f"unreasonable picture size {width}x{height}")
    found = _cache.get(key)
    if found is not None:
        return found
    with _lock:
        found = _cache.get(key)
        if found is None:
            data = build()
            found = _cache[key] = Picture(data, mime, width, height)
            found.b64  # noqa: B018 - pay for base64 once, under the lock
    return found


def _draw(width: int, height: int, variant: str) -> Image.Image:
    seed = zlib.crc32(variant.encode())
    # Gradients are made small and scaled up: drawing 16 M pixels one by one would take seconds.
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height), Image.Resampling.BILINEAR)
    vertical = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    flat = Image.new("L", (width, height), seed % 200 + 30)
    channels = [horizontal, vertical, flat]
    shift = seed % 3
    img = Image.merge("RGB", channels[shift:] + channels[:shift])
    draw = ImageDraw.Draw(img)
    colour = ((seed >> 8) % 256, (seed >> 16) % 256, (seed >> 24) % 256)
    draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=colour)
    draw.rectangle((0, 0, max(1, width // 10), max(1, height // 10)), fill=(255 - colour[0], 40, 200))
    return img


def _noise(width: int, height: int) -> Image.Image:
    # 8 levels per channel (3 bits of entropy per byte): poor compression, but not so poor that
    # a 4096x4096 PNG reaches 50 MB (it lands near 28 MB, ~37 MB as base64).
    table = bytes((i % 8) * 32 + 12 for i in range(256))
    raw = os.urandom(width * height * 3).translate(table)
    return Image.frombytes("RGB", (width, height), raw)


def _encode(img: Image.Image, mime: str) -> bytes:
    buf = io.BytesIO()
    fmt = MIMES[mime]
    if fmt == "PNG":
        # Level 1: large pictures encode in ~1 s instead of ~15 s; the size barely changes.
        img.save(buf, fmt, compress_level=1 if img.width * img.height > 2_000_000 else 6)
    elif fmt == "JPEG":
        img.save(buf, fmt, quality=90)
    else:
        img.save(buf, fmt, quality=85)
    return buf.getvalue()


def sniff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header (works on a truncated prefix too)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable input just means "unknown shape"
        return None


def sniff_b64_size(b64: str | bytes) -> tuple[int, int] | None:
    """Like sniff_size for base64 text, decoding only the first 96 KB (inputs can be 35 MB)."""
    head = b64[: 96 * 1024]
    head = head[: len(head) - len(head) % 4]
    try:
        return sniff_size(base64.b64decode(head))
    except (ValueError, TypeError):
        return None
