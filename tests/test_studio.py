"""The studio: a job's request -> a picture and a recorded turn, through the real relay client."""

from __future__ import annotations

from pathlib import Path

import httpx

from bot import store
from bot.conversations import Conversations
from bot.image_store import ImageStore
from bot.relay.client import RelayClient
from bot.relays.pool import RelayPool
from bot.relays.store import RelayStore
from bot.secrets import load_keyring
from bot.settings import load_settings
from bot.studio import JobRequest, Studio, continue_from
from tests.doubles.relay_double import Behaviour, RelayDouble


async def open_studio(relay: RelayDouble, data_dir: Path, history_budget: int):
    settings = load_settings(
        {"NB_ENV_FILE": "/dev/null", "NB_DATA_DIR": str(data_dir), "NB_RELAY_URL": relay.url, "NB_API_KEY": "k-123456"},
        require_token=False,
    )
    db = await store.connect(settings.db_path)
    http = httpx.AsyncClient()
    images = ImageStore(db, settings.images_dir)
    conversations = Conversations(db, images)
    pool = RelayPool(RelayClient(http, backoff_base=0.01), RelayStore(db, load_keyring(None, data_dir)), settings)
    return Studio(pool, images, conversations, history_budget=history_budget), db, http


async def test_a_turn_too_big_to_replay_is_sent_as_the_input_picture_instead(data_dir: Path) -> None:
    with RelayDouble(api_key="k-123456") as relay:
        studio, db, http = await open_studio(relay, data_dir, history_budget=200_000)
        try:
            relay.enqueue(Behaviour("image", width=640, height=640, signature="sig-small"))
            first = await studio.generate(
                guild_id=1, channel_id=2, user_id=3, req=JobRequest(prompt="a small fox", model="gemini-3-pro-image-preview")
            )
            relay.enqueue(Behaviour("image", width=640, height=640))
            await studio.generate(
                guild_id=1,
                channel_id=2,
                user_id=3,
                req=JobRequest(prompt="make it blue", model="gemini-3-pro-image-preview", parent_turn_id=first.turn.id),
            )
            small = relay.requests[-1].json["contents"]
            assert [c["role"] for c in small] == ["user", "model", "user"]  # fits: replayed with its signature

            big_picture = noise_png(400, 400)  # ~480 KB: noise does not compress
            relay.enqueue(Behaviour("raw", status=200, content_type="application/json", body=_answer(big_picture)))
            big = await studio.generate(
                guild_id=1, channel_id=2, user_id=3, req=JobRequest(prompt="a big fox", model="gemini-3-pro-image-preview")
            )
            assert len(big.result.image) > 200_000
            relay.enqueue(Behaviour("image", width=640, height=640))
            edited = await studio.generate(
                guild_id=1,
                channel_id=2,
                user_id=3,
                req=JobRequest(prompt="make it red", model="gemini-3-pro-image-preview", parent_turn_id=big.turn.id),
            )
            sent = relay.requests[-1].json["contents"]
            assert [c["role"] for c in sent] == ["user"]  # no history: the picture itself is the input
            assert any("inlineData" in p for p in sent[0]["parts"]) and sent[0]["parts"][0]["text"] == "make it red"
            assert edited.turn.parent_id == big.turn.id  # still recorded as an edit of that picture
        finally:
            await http.aclose()
            await db.close()


def _answer(image: bytes) -> str:
    import base64
    import json

    return json.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {
                                "inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()},
                                "thoughtSignature": "sig-big",
                            }
                        ],
                    },
                    "finishReason": "STOP",
                }
            ]
        }
    )


def noise_png(width: int, height: int) -> bytes:
    import io
    import os

    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buf, "PNG")
    return buf.getvalue()


async def test_a_paid_picture_comes_back_even_when_the_disk_is_full(data_dir: Path) -> None:
    from tests.test_delivery_e2e import full_disk

    with RelayDouble(api_key="k-123456") as relay:
        studio, db, http = await open_studio(relay, data_dir, history_budget=200_000)
        try:
            with full_disk(data_dir / "images"):
                generated = await studio.generate(
                    guild_id=1, channel_id=2, user_id=3, req=JobRequest(prompt="a lighthouse", model="gemini-3.1-flash-image-preview")
                )
            assert generated.result.image == relay.images_served[-1]  # the picture, to deliver
            assert generated.turn is None  # not recorded: nothing to edit later
        finally:
            await http.aclose()
            await db.close()


async def test_a_thread_edit_keeps_grounding_and_thinking(data_dir: Path) -> None:
    with RelayDouble(api_key="k-123456") as relay:
        studio, db, http = await open_studio(relay, data_dir, history_budget=15_000_000)
        try:
            flash = "gemini-3.1-flash-image-preview"
            relay.enqueue(Behaviour("image", width=640, height=640))
            first = await studio.generate(
                guild_id=1,
                channel_id=2,
                user_id=3,
                req=JobRequest(prompt="today's weather in Paris", model=flash, grounding=True, thinking="high"),
            )
            assert first.turn is not None
            edit = continue_from(
                first.turn, flash, "as a poster", post_channel_id=2, upload_limit=10 * 2**20, locale="en", guild_locale="en"
            )
            relay.enqueue(Behaviour("image", width=640, height=640))
            await studio.generate(guild_id=1, channel_id=2, user_id=3, req=edit)
            sent = relay.requests[-1].json
            assert sent["tools"] == [{"googleSearch": {}}]
            assert sent["generationConfig"]["thinkingConfig"]["thinkingLevel"].lower() == "high"
        finally:
            await http.aclose()
            await db.close()
