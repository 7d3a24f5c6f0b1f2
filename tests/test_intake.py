"""Members' input pictures at intake: header-only refusals, cut-off PNGs, shrinking, and the
memory six decompression-bomb-sized PNGs cost when they arrive at once."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.imaging import INTAKE_MAX_PIXELS, intake, png_complete
from bot.relay.types import InvalidRequest
from tests.conftest import make_image

REPO = Path(__file__).resolve().parent.parent


def flat_png(width: int, height: int) -> bytes:
    """A one-colour RGB PNG written row by row (so making it costs no big buffer): the shape
    of a 322 KB 8944×8944 PNG (80 megapixels that compress to almost nothing)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x80\x40\x20" * width
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


async def test_a_cut_off_png_is_refused_as_cut_off_without_decoding() -> None:
    whole = make_image(800, 600)
    assert png_complete(whole)
    with pytest.raises(InvalidRequest) as caught:
        await intake(whole[: len(whole) // 2], "photo.png")
    assert caught.value.key == "fair.image_truncated" and caught.value.params["name"] == "photo.png"


async def test_too_many_pixels_is_refused_from_the_header_alone() -> None:
    bomb = flat_png(9000, 9000)  # 81 MP, 0.3 MB on disk
    started = time.perf_counter()
    with pytest.raises(InvalidRequest) as caught:
        await intake(bomb, "bomb.png")
    assert caught.value.key == "invalid.image_too_many_pixels"
    assert time.perf_counter() - started < 0.2  # no decode happened (one takes seconds)


async def test_a_huge_input_is_stored_shrunk_with_its_shape() -> None:
    big = flat_png(6000, 3000)  # 18 MP: above the intake bound
    image = await intake(big, "wide.png")
    with Image.open(io.BytesIO(image.data)) as img:
        w, h = img.size
        assert w * h <= INTAKE_MAX_PIXELS and abs(w / h - 2.0) < 0.01
        assert img.getpixel((10, 10)) == (0x80, 0x40, 0x20)
    small = make_image(640, 480)
    assert (await intake(small, "small.png")).data == small  # small inputs pass byte for byte


SIX_BOMBS = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from bot.imaging import intake

    def vm(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) // 1024
        return 0

    data = Path(sys.argv[1]).read_bytes()
    async def main():
        base = vm("VmRSS")
        images = await asyncio.gather(*(intake(data, f"bomb{i}.png") for i in range(6)))
        print(base, vm("VmHWM"), max(len(i.data) for i in images), flush=True)
    asyncio.run(main())
    """
)


def test_six_8944_pngs_at_once_cost_one_decode_of_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(flat_png(8944, 8944))
    assert path.stat().st_size < 600_000
    out = subprocess.run([sys.executable, "-c", SIX_BOMBS, str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    base, peak, _ = (int(x) for x in out.stdout.split())
    print(f"six 8944x8944 PNGs at intake: RSS {base} MB before, VmHWM {peak} MB")
    # One decode is 8944*8944*3 bytes = 229 MiB; six at once used to be ~1.8 GB.
    assert peak - base <= 400, (base, peak)


BOT_SIX_BOMBS = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tests import e2e
    from tests.doubles.discord_double import DiscordDouble
    from tests.doubles.relay_double import Behaviour, RelayDouble

    KEY = "relay-secret-key-123456"

    def vm(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) // 1024
        return 0

    async def main(png, data_dir):
        data = Path(png).read_bytes()
        with RelayDouble(api_key=KEY) as relay:
            relay.default = Behaviour("image", width=64, height=64)
            async with DiscordDouble() as dd:
                guild = dd.add_guild("Banana Lab")
                channel = dd.text_channels(guild)[0]
                members = [dd.add_member(guild, username=f"m{i}") for i in range(6)]
                bot = e2e.new_bot(relay, Path(data_dir), KEY)
                async with dd.running(bot):
                    payloads = []
                    for i, member in enumerate(members):
                        att = dd.add_attachment(data, f"bomb{i}.png", "image/png")
                        payloads.append(dd.slash_interaction("imagine", channel=channel, user=member, options={"prompt": f"picture {i}", "image1": att}))
                    base = vm("VmRSS")
                    mark = dd.mark()
                    await asyncio.gather(*(dd.interact(p) for p in payloads))
                    for _ in range(1200):
                        posts = [c for c in dd.find("POST", rf"^/channels/{channel['id']}/messages$", since=mark) if c.files and c.status < 300]
                        if len(posts) == 6:
                            break
                        await asyncio.sleep(0.05)
                    await bot.services.jobs.join()
                    print(base, vm("VmHWM"), len(posts), len(relay.requests), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_six_8944_pngs_through_the_bot_at_once_stay_under_the_memory_budget(tmp_path: Path) -> None:
    """The whole path: six members attach such a PNG to /imagine at the same moment (Discord
    double, relay double, real bot, one process). Each picture is vetted at intake, stored
    shrunk, sent to the relay and the result posted."""
    path = tmp_path / "bomb.png"
    path.write_bytes(flat_png(8944, 8944))
    out = subprocess.run(
        [sys.executable, "-c", BOT_SIX_BOMBS, str(path), str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    base, peak, posts, sent = (int(x) for x in out.stdout.split())
    print(f"six 8944x8944 PNGs through the bot: RSS {base} MB before, VmHWM {peak} MB, {posts} results")
    assert posts == 6 and sent == 6
    assert peak <= 700, (base, peak)


async def test_a_huge_picture_in_another_format_is_shrunk_too() -> None:
    img = Image.new("P", (6000, 3500), 3)
    img.putpalette([i % 256 for i in range(768)])
    buf = io.BytesIO()
    img.save(buf, "GIF")
    image = await intake(buf.getvalue(), "big.gif")
    assert image.mime_type == "image/png"
    with Image.open(io.BytesIO(image.data)) as out:
        assert out.width * out.height <= INTAKE_MAX_PIXELS and out.width > out.height
