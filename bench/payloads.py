"""Realistic answer pictures: smooth colour fields plus grain, so PNG compresses them about as
badly as it does photos (a 4096x4096 PNG of ~26.6 MB, ~35.5 MB as a Gemini JSON answer) and
JPEG about as well (~2.7 MB at quality 92). Pure noise would make the fitting step look far
worse than it is; flat colours would make the answers far smaller than real ones.

Encoding a 4K PNG at the default level takes seconds, so payloads are cached on disk.
"""

from __future__ import annotations

import hashlib
import io
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

SIZES = {"1K": (1024, 1024), "4K": (4096, 4096)}
_VERSION = 1  # bump when the generator changes, so stale cached files are not reused


@dataclass(frozen=True)
class Payload:
    name: str  # "1K" / "4K"
    width: int
    height: int
    path: Path
    length: int
    sha256: str

    @property
    def json_bytes(self) -> int:
        """About the size of a Gemini answer carrying it (base64 is 4/3 of the bytes)."""
        return 4 * ((self.length + 2) // 3)


def cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "nano-banana-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def photo_like(width: int, height: int, seed: int = 1, grain: float = 3.0) -> Image.Image:
    rng = random.Random(seed)
    coarse = Image.frombytes("RGB", (12, 12), rng.randbytes(12 * 12 * 3)).resize((width, height), Image.Resampling.BICUBIC)
    detail = Image.frombytes("RGB", (96, 96), rng.randbytes(96 * 96 * 3)).resize((width, height), Image.Resampling.BICUBIC)
    scene = Image.blend(coarse, detail, 0.35)
    noise = Image.merge("RGB", [Image.effect_noise((width, height), grain) for _ in range(3)])
    return ImageChops.add(scene, noise, scale=1.0, offset=-128)


def payload(name: str) -> Payload:
    width, height = SIZES[name]
    path = cache_dir() / f"photo-{width}x{height}-v{_VERSION}.png"
    if not path.exists():
        buf = io.BytesIO()
        photo_like(width, height).save(buf, "PNG")  # default level, like real encoders
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
    data = path.read_bytes()
    return Payload(name, width, height, path, len(data), hashlib.sha256(data).hexdigest())
