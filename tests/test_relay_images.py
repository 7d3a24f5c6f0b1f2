"""Input pictures are identified by their bytes, converted or refused; bodies are kept under budget."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from bot.relay import images
from bot.relay.types import InputImage, InvalidRequest
from tests.conftest import make_image


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _noise(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """Incompressible pictures: what makes real photos large."""
    rng = random.Random(width * 31 + height)
    img = Image.frombytes(mode, (width, height), rng.randbytes(width * height * len(mode)))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_accepted_types_pass_through_byte_for_byte(fmt: str, mime: str) -> None:
    data = make_image(80, 60, fmt)
    prepared = images.prepare(data, "photo")
    assert prepared.mime_type == mime
    assert prepared.data == data


def test_type_comes_from_the_bytes_not_the_name() -> None:
    # A PNG whose "name" says JPEG, and a JPEG whose name says text: names are ignored.
    png = make_image(30, 20, "PNG")
    assert images.prepare(png, "holiday.jpg").mime_type == "image/png"
    jpeg = make_image(30, 20, "JPEG")
    assert images.prepare(jpeg, "notes.txt").mime_type == "image/jpeg"


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    box = struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands
    return box + b"\x00\x00\x00\x08mdat" + b"\x00" * 64


@pytest.mark.parametrize(
    ("major", "compatible", "mime"),
    [
        (b"heic", (b"mif1", b"heic"), "image/heic"),
        (b"mif1", (b"mif1", b"heic"), "image/heic"),
        (b"mif1", (b"mif1",), "image/heif"),
        (b"heix", (b"mif1",), "image/heic"),
    ],
)
def test_heic_and_heif_are_recognised_by_their_ftyp_box(major: bytes, compatible: tuple[bytes, ...], mime: str) -> None:
    data = _ftyp(major, *compatible)
    prepared = images.prepare(data, "phone photo")
    assert prepared.mime_type == mime
    assert prepared.data == data


def test_avif_is_not_mistaken_for_heif_and_is_converted() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "AVIF")
    data = buf.getvalue()
    assert images.sniff(data) is None
    prepared = images.prepare(data, "a.avif")
    assert prepared.mime_type == "image/png"
    assert _decode(prepared.data).size == (40, 30)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM", "TGA"])
def test_other_picture_types_become_png(fmt: str) -> None:
    size = (48, 48) if fmt == "ICO" else (48, 32)  # icons hold square sizes
    img = Image.new("RGB", size, (200, 30, 90))
    buf = io.BytesIO()
    img.save(buf, fmt)
    prepared = images.prepare(buf.getvalue(), f"file.{fmt.lower()}")
    assert prepared.mime_type == "image/png"
    out = _decode(prepared.data)
    assert out.format == "PNG"
    assert out.size == size
    assert out.convert("RGB").getpixel((5, 5)) == (200, 30, 90)


def test_animated_gif_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = images.prepare(buf.getvalue(), "anim.gif")
    assert prepared.mime_type == "image/png"
    assert _decode(prepared.data).convert("RGB").getpixel((10, 10)) == (255, 0, 0)


def test_transparent_gif_keeps_transparency() -> None:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    buf = io.BytesIO()
    img.save(buf, "GIF", transparency=0)
    out = _decode(images.prepare(buf.getvalue()).data)
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0
    assert out.getpixel((1, 1))[3] == 255


def test_cmyk_and_16_bit_tiffs_convert_to_viewable_png() -> None:
    cmyk = io.BytesIO()
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(cmyk, "TIFF")
    out = _decode(images.prepare(cmyk.getvalue()).data).convert("RGB")
    assert out.getpixel((0, 0))[0] > 200 and out.getpixel((0, 0))[1] < 50  # red stays red

    grey = Image.new("I;16", (10, 10))
    grey.putpixel((0, 0), 65535)
    grey.putpixel((1, 0), 32768)
    buf = io.BytesIO()
    grey.save(buf, "TIFF")
    out = _decode(images.prepare(buf.getvalue()).data)
    assert out.getpixel((0, 0)) == 255
    assert 120 <= out.getpixel((1, 0)) <= 135  # scaled, not clipped to white


@pytest.mark.parametrize(
    "data", [b"hello, I am a text file\n", b"%PDF-1.7\n...", b"\x00" * 100, b"<svg xmlns='http://www.w3.org/2000/svg'/>"]
)
def test_non_images_are_refused_with_a_translated_key(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        images.prepare(data, "notes.txt")
    assert info.value.key == "invalid.not_image"
    assert "notes.txt" in str(info.value)


def test_empty_file_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        images.prepare(b"", "empty.png")
    assert info.value.key == "invalid.not_image"


def test_truncated_jpeg_is_refused_as_damaged() -> None:
    data = _noise(200, 200, "JPEG")
    with pytest.raises(InvalidRequest) as info:
        images.prepare(data[: len(data) // 2], "half.jpg")
    assert info.value.key == "invalid.image_damaged"


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's shape."""
    small = make_image(8, 8, "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = small[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return patched + small[8 + 8 + 13 + 4 :]


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidRequest) as info:
        images.prepare(_png_claiming(30_000, 30_000), "bomb.png")
    assert info.value.key == "invalid.image_too_many_pixels"
    assert "80 megapixels" in str(info.value)


def test_picture_just_over_the_pixel_limit_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        images.prepare(_png_claiming(10_000, 8_001), "big.png")
    assert info.value.key == "invalid.image_too_many_pixels"
    assert "10000x8001" in str(info.value)


def test_oversized_file_is_refused() -> None:
    data = make_image(8, 8, "PNG") + b"\x00" * (images.MAX_INPUT_BYTES + 1)
    with pytest.raises(InvalidRequest) as info:
        images.prepare(data, "huge.png")
    assert info.value.key == "invalid.image_too_large"


def test_fit_budget_leaves_small_requests_alone() -> None:
    inputs = [InputImage(make_image(64, 64, "PNG"), "image/png")]
    assert images.fit_budget(inputs, 20_000_000) == inputs


def test_fit_budget_shrinks_the_largest_inputs_until_the_body_fits() -> None:
    big = InputImage(_noise(1400, 1000), "image/png")  # ~4.2 MB of noise
    small = InputImage(make_image(64, 64, "PNG"), "image/png")
    budget = 3_000_000
    assert images.b64_size(len(big.data)) > budget
    out = images.fit_budget([big, small], budget, fixed=50_000)
    assert sum(images.b64_size(len(i.data)) for i in out) + 50_000 <= budget
    assert out[1] == small  # only what had to shrink did
    assert out[0].mime_type == "image/jpeg"
    shrunk = _decode(out[0].data)
    assert shrunk.size[0] / shrunk.size[1] == pytest.approx(1.4, rel=0.02)  # shape kept


def test_fit_budget_keeps_transparency_with_webp() -> None:
    big = InputImage(_noise(900, 900, "PNG", "RGBA"), "image/png")
    out = images.fit_budget([big], 1_000_000)
    assert out[0].mime_type == "image/webp"
    assert _decode(out[0].data).mode == "RGBA"


def test_fit_budget_refuses_when_nothing_can_fit() -> None:
    inputs = [InputImage(make_image(64, 64, "PNG"), "image/png")]
    with pytest.raises(InvalidRequest) as info:
        images.fit_budget(inputs, 1_000, fixed=5_000)
    assert info.value.key == "invalid.body_too_large"


def test_identify_reads_the_bytes_not_the_claim() -> None:
    info = images.identify(make_image(33, 17, "JPEG"))
    assert (info.mime_type, info.width, info.height) == ("image/jpeg", 33, 17)
    with pytest.raises(ValueError):
        images.identify(b"<html>not a picture</html>")
