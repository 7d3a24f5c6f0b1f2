from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

# Tests must never pick up a developer's .env or real relay.
os.environ["NB_ENV_FILE"] = os.devnull
for _name in ("NB_RELAY_URL", "NB_API_KEY", "NB_RELAY_FORMAT", "NB_RELAY_AUTH", "DISCORD_TOKEN"):
    os.environ.pop(_name, None)


def make_image(width: int = 64, height: int = 48, fmt: str = "PNG", color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    """A real picture made with Pillow (a gradient, so encoders have something to do)."""
    img = Image.new("RGB", (width, height), color)
    px = img.load()
    for x in range(0, width, max(1, width // 32)):
        for y in range(0, height, max(1, height // 32)):
            px[x, y] = ((x * 255) // max(1, width), (y * 255) // max(1, height), 90)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, fmt, quality=90)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def shared_double(request: pytest.FixtureRequest):
    """One relay double per test module, with the module's ``KEY`` as its API key."""
    from tests.doubles.relay_double import RelayDouble

    with RelayDouble(api_key=request.module.KEY) as relay:
        yield relay


@pytest.fixture
def double(shared_double):
    """The module's relay double, reset, answering small pictures by default."""
    from tests.doubles.relay_double import Behaviour

    shared_double.reset()
    shared_double.default = Behaviour("image", width=64, height=48)
    return shared_double
