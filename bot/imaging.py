"""Pictures in and out: vetting members' inputs at intake (:func:`intake`), and fitting a result
picture under an upload limit (Discord: 10 MiB unless the server is boosted).

Intake (members' uploads, before anything is queued)
    A small file can be a huge picture: an 8944×8944 PNG of 322 KB is 240 MB once decoded.
    So the size is read from the header first (``Image.open`` reads only the header) and a
    picture over ``MAX_INPUT_PIXELS`` is refused before any decode; a PNG whose chunks stop
    before ``IEND`` is refused as cut off without decoding it; and the decodes that remain
    (verifying the data, converting, shrinking) run at most ``INTAKE_DECODES`` at a time in
    this process, so six members uploading such pictures at once cost one decode's memory,
    not six. Inputs above ``INTAKE_MAX_PIXELS`` (a 4096×4096 area, more than the models'
    largest output) are shrunk once here, so every later use of the stored input (each job's
    request, each replay) decodes at most that many pixels.

Fitting results

The order matters for what members see: the original file if it fits; else the same pixels
re-encoded as a high-quality JPEG (a 4K PNG of 25 MB is ~2.5 MB as JPEG at quality 92, in
~40 ms with libjpeg-turbo; a PNG or WebP re-encode takes 0.6-2 s); lower JPEG qualities next;
and only when nothing at full resolution fits, fewer pixels.

All of it is Pillow work. Run it with :func:`fit_for_upload_async`: Pillow releases the GIL
while decoding and encoding, so a thread keeps the event loop free. Those threads are few (one
per CPU the process may use) and run at a lower scheduling priority, so under load the event
loop (acks, gateway, streaming answers in) gets a CPU the moment it is ready instead of waiting
behind PNG inflates; see ``_FIT_POOL``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import io
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, UnidentifiedImageError

from bot.relay import gate
from bot.relay.images import MAX_INPUT_PIXELS, prepare, sniff
from bot.relay.types import InputImage, InvalidRequest

# More pixels than any model output (4K is ~17-19 MP) with room to spare, and below Pillow's
# own decompression-bomb warning (89 MP): anything larger is refused before it is decoded.
MAX_PIXELS = 80_000_000
# Full-resolution attempts, best first. 4:2:0 chroma (Pillow's default) keeps encoding fast;
# at 92 the loss is not visible in generated pictures.
JPEG_QUALITIES = (92, 85, 75, 65)
WEBP_QUALITIES = (90, 80, 70)
DOWNSCALE_QUALITY = 85
# Aim a little under the limit when downscaling: encoded size is not exactly proportional
# to the pixel count.
_DOWNSCALE_MARGIN = 0.92

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}

How = Literal["original", "reencoded", "downscaled"]

# Niceness added to the Pillow worker threads. Linux applies setpriority() to the one thread
# whose id it is given, and any process may lower its own threads' priority. 10 is enough for
# the scheduler to prefer a ready event-loop thread by far (weight 1024 vs 110) while the
# workers still use every idle cycle; nothing else in the process is affected.
WORKER_NICENESS = 10


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux/Unix, or refused: only the scheduling differs
        pass


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# Result fitting (decode ~0.25 s and a 50 MB buffer per 4K PNG) runs here: as many threads as
# CPUs, so pictures are fitted as fast as the machine can, but 16 finished jobs cost at most
# that many decoded pictures in memory, not one per thread of the default executor.
FIT_WORKERS = _cpus()
_FIT_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=FIT_WORKERS, thread_name_prefix="fit", initializer=_lower_priority)

# Input decodes at once in this process (each may take a few hundred MB for a big picture).
INTAKE_DECODES = 1
# Inputs above this are shrunk at intake (see the module docstring).
INTAKE_MAX_PIXELS = 4096 * 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The decodes run in their own worker threads, INTAKE_DECODES of them: the executor's queue
# is the bound (and it serves every event loop). Always the same threads, because glibc
# gives each thread its own malloc arena and keeps freed memory there: big decodes spread
# over the default pool's threads left ~300 MB behind in each.
_INTAKE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=INTAKE_DECODES, thread_name_prefix="intake", initializer=_lower_priority)
_malloc_trim: Callable[[int], int] | None
try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: nothing to give back by hand
    _malloc_trim = None


async def intake(data: bytes, label: str = "") -> InputImage:
    """A member's input picture vetted (and shrunk if huge) for storing: see the module
    docstring. Raises a translated :class:`InvalidRequest`."""
    return await asyncio.get_running_loop().run_in_executor(_INTAKE_POOL, _intake_and_trim, data, label)


def _intake_and_trim(data: bytes, label: str) -> InputImage:
    try:
        return intake_sync(data, label)
    finally:
        if _malloc_trim is not None:
            _malloc_trim(0)  # a decoded picture's memory goes back to the system at once


def intake_sync(data: bytes, label: str = "") -> InputImage:
    name = label or "the input image"
    if data.startswith(_PNG_SIGNATURE) and not png_complete(data):
        raise InvalidRequest(f"{name} is cut off", key="fair.image_truncated", name=name)
    mime = sniff(data)
    if mime in ("image/heic", "image/heif"):
        return prepare(data, label)  # passed through as is (Pillow cannot decode them here)
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return prepare(data, label)  # prepare words the refusal
    if width * height <= INTAKE_MAX_PIXELS or width * height > MAX_INPUT_PIXELS:
        return prepare(data, label)  # verified by one decode, or refused from the header
    return prepare(_shrunk(data, mime or "", width, height, name), label)


def png_complete(data: bytes) -> bool:
    """True when the PNG's chunks run, by their lengths, up to an ``IEND`` chunk (no decode)."""
    pos = len(_PNG_SIGNATURE)
    end = len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos <= end
    return False


def _shrunk(data: bytes, mime: str, width: int, height: int, name: str) -> bytes:
    # An integer box reduction: one pass, a fraction of a second and factor² less memory
    # for its result (LANCZOS on 80 MP takes ~9 s and another 200 MB); the models see far
    # fewer pixels than are left anyway.
    factor = math.ceil(math.sqrt(width * height / INTAKE_MAX_PIXELS))
    try:
        with Image.open(io.BytesIO(data)) as img:
            if mime == "image/jpeg":
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: a fraction of the memory.
                img.draft(img.mode, (width // factor, height // factor))
            img.load()
            factor = math.ceil(math.sqrt(img.width * img.height / INTAKE_MAX_PIXELS))
            full: Image.Image = img
            if full.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):  # e.g. a GIF's palette
                full = full.convert("RGBA" if full.mode in ("PA", "P") and "transparency" in full.info else "RGB")
            small = full.reduce(factor) if factor > 1 else full.copy()
    except Exception:
        raise InvalidRequest(f"{name} is damaged", key="invalid.image_damaged", name=name) from None
    out = io.BytesIO()
    if mime == "image/jpeg" and small.mode in ("RGB", "L", "CMYK"):
        small.save(out, "JPEG", quality=92)
    else:
        small.save(out, "PNG", compress_level=1)  # fast; the file is stored, not sent as is
    return out.getvalue()


class ImageError(ValueError):
    """The data is not a picture we can read, is too large to decode, or cannot fit at all."""


@dataclass(frozen=True)
class FittedImage:
    data: bytes = field(repr=False)
    mime_type: str
    extension: str  # with the dot: ".jpg"
    width: int
    height: int
    how: How

    def filename(self, stem: str = "image") -> str:
        return stem + self.extension

    def __repr__(self) -> str:
        return f"FittedImage({self.mime_type}, {self.width}x{self.height}, {len(self.data)} bytes, {self.how})"


def fit_for_upload(data: bytes, mime: str, limit: int) -> FittedImage:
    """``data`` as a picture of at most ``limit`` bytes, at full resolution whenever possible.

    ``mime`` is what the relay claimed; the bytes decide (relays mislabel JPEG as PNG).
    Raises :class:`ImageError` for non-images, decompression bombs, or a limit so small that
    not even a thumbnail fits.
    """
    img = _open(data)
    actual = FORMATS.get(img.format or "", mime)
    if len(data) <= limit and actual in EXTENSIONS:
        return FittedImage(data, actual, EXTENSIONS[actual], img.width, img.height, "original")
    try:
        img.load()
    except Exception as exc:  # truncated or corrupt picture data
        raise ImageError(f"the picture could not be decoded ({exc.__class__.__name__})") from None
    img = _flatten(img)
    alpha = img.mode in ("RGBA", "LA")
    icc = img.info.get("icc_profile")

    sizes: dict[int, int] = {}
    for quality in WEBP_QUALITIES if alpha else JPEG_QUALITIES:
        out = _encode(img, alpha, quality, icc)
        if out is not None and len(out) <= limit:
            return _fitted(out, alpha, img.size, "reencoded")
        if out is not None:
            sizes[quality] = len(out)

    # Last resort: fewer pixels. Encoded size grows about with the pixel count, so scale the
    # sides by the square root of how far over the full-resolution attempt was.
    size = sizes.get(DOWNSCALE_QUALITY) or max(sizes.values(), default=len(data))
    scale = math.sqrt(limit / size) * _DOWNSCALE_MARGIN
    width, height = img.size
    for _ in range(12):
        scale = min(scale, 0.95)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = img.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = _encode(small, alpha, DOWNSCALE_QUALITY, icc)
        if out is not None and len(out) <= limit:
            return _fitted(out, alpha, target, "downscaled")
        if target == (1, 1):
            break
        scale *= math.sqrt(limit / len(out)) * _DOWNSCALE_MARGIN if out else 0.7
    raise ImageError(f"the picture cannot be made to fit in {limit} bytes")


async def fit_for_upload_async(data: bytes, mime: str, limit: int) -> FittedImage:
    """:func:`fit_for_upload` in one of the fitting threads (Pillow's codecs release the GIL).
    Then the job's answer-gate slot is free (bot/relay/gate.py): the next big answer may be read."""
    try:
        return await asyncio.get_running_loop().run_in_executor(_FIT_POOL, fit_for_upload, data, mime, limit)
    finally:
        gate.picture_fitted()


def _open(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError("the picture has too many pixels to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError("the data is not a picture in a format we can read") from None
    if img.width * img.height > MAX_PIXELS:
        raise ImageError(f"the picture has {img.width}x{img.height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels")
    return img


def _flatten(img: Image.Image) -> Image.Image:
    """A mode JPEG or WebP can store; alpha kept only when some pixel is not opaque."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    elif img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit greyscale: scale to 8 bits instead of clipping to white.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode not in ("RGB", "L", "RGBA", "LA", "CMYK"):
        img = img.convert("RGB")
    if img.mode in ("RGBA", "LA") and img.getchannel("A").getextrema() == (255, 255):
        img = img.convert("RGB" if img.mode == "RGBA" else "L")  # an alpha channel with nothing in it
    return img


def _encode(img: Image.Image, alpha: bool, quality: int, icc: bytes | None) -> bytes | None:
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    try:
        if alpha:
            img.save(buf, "WEBP", quality=quality, method=2, **extra)
        else:
            img.save(buf, "JPEG", quality=quality, **extra)
    except (OSError, ValueError):  # e.g. WebP's 16383-pixel limit or its partition overflow
        return None
    return buf.getvalue()


def _fitted(data: bytes, alpha: bool, size: tuple[int, int], how: How) -> FittedImage:
    mime = "image/webp" if alpha else "image/jpeg"
    return FittedImage(data, mime, EXTENSIONS[mime], size[0], size[1], how)
