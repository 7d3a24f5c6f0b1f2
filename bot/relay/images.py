"""Input pictures: identified by their bytes, converted when the API would refuse them,
shrunk when the request body would grow past the relay's limit. And output pictures:
what they really are (mime type and size), whatever the answer claims.

Everything here is synchronous Pillow work; the client runs it in a thread (Pillow releases
the GIL while decoding/encoding, so the event loop keeps going).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from .types import InputImage, InvalidRequest

# Types the Gemini API takes inline; everything else is converted to PNG.
ACCEPTED = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
# A phone photo is 12-50 MP; 80 MP leaves room for panoramas while refusing decompression
# bombs (a tiny file that expands to gigabytes of pixels).
MAX_INPUT_PIXELS = 80_000_000
MAX_INPUT_BYTES = 50 * 2**20
# Past this, an output image is not a picture the models make: refuse rather than decode it.
MAX_OUTPUT_PIXELS = 120_000_000
# Downscaling never goes below this long side: below it the model cannot see the picture well
# enough to edit it, and the request should be refused instead.
MIN_LONG_SIDE = 256

_PILLOW_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # multi-picture JPEG from cameras: a JPEG to every decoder
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "ICO": "image/x-icon",
    "AVIF": "image/avif",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"heif"}
_AVIF_BRANDS = {b"avif", b"avis"}


def b64_size(n: int) -> int:
    """Length of the base64 text for ``n`` bytes."""
    return 4 * ((n + 2) // 3)


def sniff(data: bytes) -> str | None:
    """The mime type of an accepted kind, by magic bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        # ISO-BMFF: the major brand, then the compatible brands up to the box end.
        box = int.from_bytes(data[:4], "big")
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(box, len(data), 64), 4)}
        if brands & _AVIF_BRANDS:
            return None  # AVIF shares the container; the API does not take it
        if brands & _HEIF_BRANDS:
            return "image/heic" if brands & {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"} else "image/heif"
    return None


def _label(label: str) -> str:
    return label or "the input image"


def _open(data: bytes, label: str) -> Image.Image:
    """Open by content (header only), refusing non-images and decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(label, None) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidRequest(
            f"{_label(label)} is not a picture (its contents are not an image format we can read)",
            key="invalid.not_image",
            name=_label(label),
        ) from None
    width, height = img.size
    if width * height > MAX_INPUT_PIXELS:
        raise _too_many_pixels(label, (width, height))
    return img


def _too_many_pixels(label: str, size: tuple[int, int] | None) -> InvalidRequest:
    dims = f"{size[0]}x{size[1]}" if size else "too many"
    return InvalidRequest(
        f"{_label(label)} has {dims} pixels; the limit is {MAX_INPUT_PIXELS // 1_000_000} megapixels",
        key="invalid.image_too_many_pixels",
        name=_label(label),
        dims=dims,
        limit_mp=MAX_INPUT_PIXELS // 1_000_000,
    )


def prepare(data: bytes, label: str = "") -> InputImage:
    """Identify ``data`` by its bytes and return an image the API takes.

    PNG, JPEG and WebP pass through byte for byte (so a picture is never degraded for
    nothing); HEIC/HEIF pass through too (recognised by their ftyp box; Pillow cannot decode
    them here). Other pictures (BMP, GIF's first frame, TIFF, ICO, AVIF...) become PNG.
    Non-images, oversized files and decompression bombs raise :class:`InvalidRequest`.
    """
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidRequest(
            f"{_label(label)} is {len(data) / 2**20:.1f} MB; the limit is {MAX_INPUT_BYTES // 2**20} MB",
            key="invalid.image_too_large",
            name=_label(label),
            size_mb=round(len(data) / 2**20, 1),
            limit_mb=MAX_INPUT_BYTES // 2**20,
        )
    if not data:
        raise InvalidRequest(f"{_label(label)} is empty", key="invalid.not_image", name=_label(label))
    mime = sniff(data)
    if mime in ("image/heic", "image/heif"):
        return InputImage(data=data, mime_type=mime)
    img = _open(data, label)
    if mime in ("image/png", "image/jpeg", "image/webp"):
        # Read the whole picture once: a truncated or corrupt file fails here, not at the relay.
        # (JPEGs decode at 1/8 scale: libjpeg still reads every byte, at a fraction of the cost.)
        try:
            if mime == "image/jpeg":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        except Exception:
            raise InvalidRequest(
                f"{_label(label)} is damaged (the picture data is incomplete or corrupt)",
                key="invalid.image_damaged",
                name=_label(label),
            ) from None
        return InputImage(data=data, mime_type=mime)
    return InputImage(data=_to_png(img, label), mime_type="image/png")


def _flatten_mode(img: Image.Image) -> Image.Image:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if img.mode in ("RGB", "RGBA", "L", "LA"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (TIFF scans): scale to 8 bits instead of clipping to white.
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return img.convert("RGBA" if has_alpha else "RGB")


def _to_png(img: Image.Image, label: str) -> bytes:
    try:
        img.seek(0)  # animated GIF/WebP/multi-page TIFF: the first frame
    except (EOFError, AttributeError):
        pass
    try:
        img.load()
        img = ImageOps.exif_transpose(img) or img
        out = io.BytesIO()
        _flatten_mode(img).save(out, "PNG", optimize=False)
    except Exception:
        raise InvalidRequest(
            f"{_label(label)} could not be converted to PNG (the picture data is damaged)",
            key="invalid.image_damaged",
            name=_label(label),
        ) from None
    return out.getvalue()


def shrink(image: InputImage, factor: float, label: str = "") -> InputImage:
    """Scale ``image`` by ``factor`` (< 1) and re-encode compactly.

    Opaque pictures become JPEG (quality 90), pictures with transparency WebP, which keeps
    the alpha channel at a fraction of PNG's size. Both are types the API takes.
    """
    if image.mime_type in ("image/heic", "image/heif"):
        raise InvalidRequest(
            f"{_label(label)} (HEIC) is too large for the request and cannot be shrunk here; convert it to JPEG first",
            key="invalid.heic_too_large",
            name=_label(label),
        )
    img = _open(image.data, label)
    try:
        img.seek(0)
    except (EOFError, AttributeError):
        pass
    img.load()
    img = ImageOps.exif_transpose(img) or img
    width, height = img.size
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    img = _flatten_mode(img)
    has_alpha = img.mode in ("RGBA", "LA")
    img = img.resize(new_size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if has_alpha:
        img.save(out, "WEBP", quality=90, method=4)
        return InputImage(data=out.getvalue(), mime_type="image/webp")
    img.convert("RGB").save(out, "JPEG", quality=90, optimize=True)
    return InputImage(data=out.getvalue(), mime_type="image/jpeg")


def long_side(image: InputImage) -> int | None:
    if image.mime_type in ("image/heic", "image/heif"):
        return None
    try:
        with Image.open(io.BytesIO(image.data)) as img:
            return max(img.size)
    except Exception:
        return None


def fit_budget(images: list[InputImage], budget: int, fixed: int = 0, labels: list[str] | None = None) -> list[InputImage]:
    """Shrink the largest inputs until their base64 plus ``fixed`` bytes fit in ``budget``.

    ``fixed`` is everything else in the body (prompt, history). Raises InvalidRequest when
    even pictures shrunk to MIN_LONG_SIDE would not fit.
    """
    out = list(images)
    names = labels or [f"input image {i + 1}" for i in range(len(out))]

    def total() -> int:
        return fixed + sum(b64_size(len(i.data)) for i in out)

    for _ in range(8 * max(1, len(out))):
        over = total() - budget
        if over <= 0:
            return out
        candidates = [i for i, img in enumerate(out) if img.mime_type not in ("image/heic", "image/heif")]
        if not candidates:
            break
        idx = max(candidates, key=lambda i: len(out[i].data))
        current = b64_size(len(out[idx].data))
        target = max(current - over, current // 8)
        side = long_side(out[idx])
        if side is None or side <= MIN_LONG_SIDE:
            break
        # Encoded size grows roughly with the pixel count, i.e. with the factor squared;
        # aim a little under and repeat if the encoder surprises us.
        factor = min(0.9, math.sqrt(target / current) * 0.9)
        factor = max(factor, MIN_LONG_SIDE / side)
        out[idx] = shrink(out[idx], factor, names[idx])
    if total() <= budget:
        return out
    raise InvalidRequest(
        f"the input images are too large for one request even after shrinking them "
        f"(about {total() / 1e6:.0f} MB; the limit is about {budget / 1e6:.0f} MB); use fewer or smaller images",
        key="invalid.body_too_large",
        size_mb=round(total() / 1e6),
        limit_mb=round(budget / 1e6),
    )


@dataclass(frozen=True)
class Identified:
    mime_type: str
    width: int
    height: int


def identify(data: bytes) -> Identified:
    """What an output picture really is. Raises ValueError for anything that is not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
    except Exception as exc:
        raise ValueError(f"not a readable image ({exc.__class__.__name__})") from None
    if width * height > MAX_OUTPUT_PIXELS:
        raise ValueError(f"image of {width}x{height} pixels is implausibly large")
    mime = _PILLOW_MIME.get(fmt)
    if mime is None:
        raise ValueError(f"unexpected image format {fmt or 'unknown'}")
    if _truncated(data, mime):
        # Opening reads only the header: a picture cut short (a relay's truncated base64, a
        # data URL read only up to a line break) would otherwise pass and be written broken.
        raise ValueError(f"the {mime} data is cut short ({len(data)} bytes)")
    return Identified(mime, width, height)


# The end markers searched for near the end of the data (decoders ignore a little trailing junk).
_TAIL = 4096


def _truncated(data: bytes, mime: str) -> bool:
    """Whether a PNG/JPEG/WebP lacks its end (cheap: no decoding, which would stall the loop
    for a 4K picture)."""
    tail_from = max(0, len(data) - _TAIL)
    if mime == "image/png":
        return data.find(b"IEND", tail_from) < 0
    if mime == "image/jpeg":
        return data.find(b"\xff\xd9", tail_from) < 0
    if mime == "image/webp" and data[:4] == b"RIFF":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    return False


EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
    "image/avif": ".avif",
    "image/x-icon": ".ico",
}


def extension_for(mime: str) -> str:
    return EXTENSIONS.get(mime, ".bin")
