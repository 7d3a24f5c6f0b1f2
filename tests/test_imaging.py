"""Fitting result pictures under the upload limit, with real Pillow images."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageChops

from bot.imaging import MAX_PIXELS, FittedImage, ImageError, fit_for_upload, fit_for_upload_async
from tests.conftest import make_image


def photo_like(width: int, height: int, mode: str = "RGB", seed: int = 3) -> Image.Image:
    """Smooth colour fields plus grain: compresses like a photo (PNG large, JPEG small)."""
    rng = random.Random(seed)
    base = Image.frombytes("RGB", (8, 8), rng.randbytes(8 * 8 * 3)).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.merge("RGB", [Image.effect_noise((width, height), 6) for _ in range(3)])
    img = ImageChops.add(base, grain, scale=1.0, offset=-128)
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize((width, height))
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    return img


def encoded(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def opened(fitted: FittedImage) -> Image.Image:
    img = Image.open(io.BytesIO(fitted.data))
    img.load()
    return img


def test_a_picture_that_fits_is_sent_unchanged() -> None:
    data = make_image(640, 480, "PNG")
    fitted = fit_for_upload(data, "image/png", 10 * 2**20)
    assert fitted.how == "original"
    assert fitted.data is data
    assert (fitted.mime_type, fitted.extension, fitted.width, fitted.height) == ("image/png", ".png", 640, 480)
    assert fitted.filename("result") == "result.png"


def test_the_bytes_decide_the_type_not_the_claim() -> None:
    data = make_image(320, 200, "JPEG")
    fitted = fit_for_upload(data, "image/png", 10 * 2**20)
    assert (fitted.how, fitted.mime_type, fitted.extension) == ("original", "image/jpeg", ".jpg")


def test_too_large_png_is_reencoded_at_full_resolution() -> None:
    png = encoded(photo_like(800, 600))
    limit = len(png) // 3
    fitted = fit_for_upload(png, "image/png", limit)
    assert fitted.how == "reencoded"
    assert len(fitted.data) <= limit
    assert (fitted.mime_type, fitted.extension) == ("image/jpeg", ".jpg")
    img = opened(fitted)
    assert img.format == "JPEG" and img.size == (800, 600) == (fitted.width, fitted.height)
    # Still the same picture: compare a heavily smoothed version of both.
    original = Image.open(io.BytesIO(png)).convert("RGB").resize((40, 30), Image.Resampling.BOX)
    again = img.convert("RGB").resize((40, 30), Image.Resampling.BOX)
    worst = max(abs(a - b) for a, b in zip(original.tobytes(), again.tobytes(), strict=True))
    assert worst <= 8


def test_lower_quality_before_fewer_pixels() -> None:
    png = encoded(photo_like(800, 600))
    at_92 = len(encoded(Image.open(io.BytesIO(png)), "JPEG", quality=92))
    fitted = fit_for_upload(png, "image/png", int(at_92 * 0.8))
    assert fitted.how == "reencoded"
    assert opened(fitted).size == (800, 600)
    assert len(fitted.data) <= at_92 * 0.8


def test_a_tiny_limit_downscales_as_a_last_resort() -> None:
    png = encoded(photo_like(1024, 768))
    fitted = fit_for_upload(png, "image/png", 20_000)
    assert fitted.how == "downscaled"
    assert len(fitted.data) <= 20_000
    img = opened(fitted)
    assert img.size == (fitted.width, fitted.height)
    assert img.width < 1024 and img.height < 768
    assert abs(img.width / img.height - 1024 / 768) < 0.02  # same shape


def test_transparency_survives_as_webp() -> None:
    png = encoded(photo_like(600, 400, mode="RGBA"))
    fitted = fit_for_upload(png, "image/png", len(png) // 3)
    assert (fitted.how, fitted.mime_type, fitted.extension) == ("reencoded", "image/webp", ".webp")
    img = opened(fitted)
    assert img.mode == "RGBA" and img.size == (600, 400)
    assert img.getchannel("A").getextrema()[0] < 50  # the transparent side is still transparent


def test_an_alpha_channel_with_nothing_in_it_becomes_jpeg() -> None:
    img = photo_like(600, 400)
    img.putalpha(255)
    png = encoded(img)
    fitted = fit_for_upload(png, "image/png", len(png) // 3)
    assert (fitted.how, fitted.mime_type) == ("reencoded", "image/jpeg")


def test_palette_and_greyscale_pictures_are_reencoded() -> None:
    for img in (photo_like(600, 400, mode="P"), photo_like(600, 400, mode="L")):
        png = encoded(img)
        fitted = fit_for_upload(png, "image/png", len(png) // 2)
        assert fitted.how == "reencoded" and len(fitted.data) <= len(png) // 2
        assert opened(fitted).size == (600, 400)


def test_impossible_limit_is_an_error() -> None:
    with pytest.raises(ImageError):
        fit_for_upload(encoded(photo_like(200, 150)), "image/png", 100)


def test_not_a_picture_is_an_error() -> None:
    with pytest.raises(ImageError):
        fit_for_upload(b"<html>not an image</html>", "image/png", 10)
    truncated = encoded(photo_like(400, 300))[:5000]
    with pytest.raises(ImageError):
        fit_for_upload(truncated, "image/png", 1000)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size; its pixels are never there (what a decompression bomb looks like)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(9500, 9000), (30000, 30000)])
def test_decompression_bombs_are_refused_before_decoding(size: tuple[int, int]) -> None:
    assert size[0] * size[1] > MAX_PIXELS
    with pytest.raises(ImageError):
        fit_for_upload(png_header_only(*size), "image/png", 1000)


async def test_async_version_gives_the_same_result() -> None:
    png = encoded(photo_like(640, 480))
    fitted = await fit_for_upload_async(png, "image/png", len(png) // 3)
    assert fitted == fit_for_upload(png, "image/png", len(png) // 3)
    assert fitted.how == "reencoded"


async def test_fitting_many_results_at_once_uses_a_few_background_threads() -> None:
    """Eight results finished together are fitted by at most one thread per CPU, each at a
    lower scheduling priority than the event loop (which answers members meanwhile), and
    every one comes out right."""
    import asyncio
    import os
    import threading

    from bot import imaging

    data = encoded(photo_like(900, 700))
    limit = len(data) // 3
    seen: dict[int, int] = {}

    def watch() -> None:
        for thread in threading.enumerate():
            if thread.name.startswith("fit") and thread.native_id is not None:
                seen[thread.native_id] = os.getpriority(os.PRIO_PROCESS, thread.native_id)

    async def sample() -> None:
        while True:
            watch()
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(*(fit_for_upload_async(data, "image/png", limit) for _ in range(8)))
    finally:
        sampler.cancel()
    watch()
    assert all(r.how == "reencoded" and (r.width, r.height) == (900, 700) and len(r.data) <= limit for r in results)
    assert 1 <= len(seen) <= imaging.FIT_WORKERS
    lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + imaging.WORKER_NICENESS)  # 19 is the lowest
    assert set(seen.values()) == {lowered}
