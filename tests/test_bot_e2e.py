"""The real bot, end to end: discord.py against the Discord double (REST + gateway at the wire
level), the relay double as the operator's relay, a real SQLite file in a temp data dir."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from PIL import Image

from bot.app import NanoBananaBot
from bot.settings import load_settings
from tests.conftest import make_image
from tests.doubles.discord_double import DiscordDouble, Perm
from tests.doubles.relay_double import Behaviour, RelayDouble

API_KEY = "relay-secret-key-123456"


def settings_for(relay: RelayDouble, data_dir: Path, **extra: str):
    env = {
        "NB_ENV_FILE": "/dev/null",
        "DISCORD_TOKEN": "test-bot-token",
        "NB_DATA_DIR": str(data_dir),
        "NB_RELAY_URL": relay.url,
        "NB_RELAY_FORMAT": "gemini",
        "NB_RELAY_AUTH": "x-goog-api-key",
        "NB_API_KEY": API_KEY,
        **extra,
    }
    return load_settings(env)


def new_bot(relay: RelayDouble, data_dir: Path, **extra: str) -> NanoBananaBot:
    bot = NanoBananaBot(settings_for(relay, data_dir, **extra))
    # discord.py waits this long after the last GUILD_CREATE before "ready"; tests need not.
    bot._connection.guild_ready_timeout = 0.05
    return bot


class World:
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, data_dir: Path) -> None:
        self.dd = dd
        self.relay = relay
        self.data_dir = data_dir
        self.guild = dd.add_guild("Banana Lab")
        self.channel = dd.text_channels(self.guild)[0]
        self.alice = dd.add_member(self.guild, username="alice")
        self.bob = dd.add_member(self.guild, username="bob")

    async def imagine(self, user: Any = None, locale: str = "en-US", **options: Any) -> dict[str, Any]:
        payload = self.dd.slash_interaction("imagine", channel=self.channel, user=user or self.alice, options=options, locale=locale)
        return await self.dd.interact(payload)

    async def result_post(self, channel: dict[str, Any] | None = None, since: int = 0, timeout: float = 20.0):
        channel = channel or self.channel
        return await self.dd.wait_for(
            "POST", rf"^/channels/{channel['id']}/messages$", since=since, predicate=lambda c: bool(c.files) and c.status < 300, timeout=timeout
        )


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: str) -> AsyncIterator[tuple[World, NanoBananaBot]]:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            bot = new_bot(relay, w.data_dir, **extra)
            async with dd.running(bot):
                yield w, bot


def user_id(member: dict[str, Any]) -> int:
    return int(member["user"]["id"] if "user" in member else member["id"])


async def test_imagine_acks_shows_progress_uploads_the_image_and_opens_a_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a banana astronaut", aspect_ratio="16:9")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4  # answered at once with the (public) progress message
        assert "Getting ready" in ack.json["data"]["content"] or "Queued" in ack.json["data"]["content"]

        post = await w.result_post(since=mark)
        assert post.authorization == f"Bot {w.dd.token}"  # bot token, not the interaction token
        image = post.files[0].data
        assert image == w.relay.images_served[-1]  # delivered as the relay made it (it fits)
        assert Image.open(io.BytesIO(image)).size[0] > Image.open(io.BytesIO(image)).size[1]  # 16:9
        embed = post.json["embeds"][0]
        assert "banana astronaut" in embed["description"]
        custom_ids = [c["custom_id"] for row in post.json["components"] for c in row["components"]]
        assert any(cid.startswith("nb:reroll:") for cid in custom_ids)
        assert any(cid.startswith("nb:edit:") for cid in custom_ids)
        assert any(cid.startswith("nb:del:") for cid in custom_ids)

        # Progress was shown (queued / drawing) by editing the original response.
        edits = w.dd.find("PATCH", r"/messages/@original$", since=mark)
        texts = " ".join((c.json or {}).get("content") or "" for c in edits)
        assert "Drawing with" in texts or "Queued" in texts

        thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        assert thread_call.status == 201 or thread_call.status == 200

        sent = w.relay.requests[-1]
        assert sent.dialect == "gemini" and sent.auth_style == "x-goog-api-key"
        assert sent.json["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


async def test_bad_option_combination_is_refused_ephemerally_and_nothing_is_sent(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a cat", model="gemini-2.5-flash-image", size="4K")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4
        assert ack.json["data"]["flags"] & 64  # ephemeral
        text = json.dumps(ack.json["data"], ensure_ascii=False)
        assert "leave the size out" in text.lower()
        await asyncio.sleep(0.3)
        assert w.relay.requests == []


async def test_zh_cn_invocation_answers_in_chinese(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="一只猫", model="gemini-2.5-flash-image", size="2K", locale="zh-CN")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        text = ack.json["data"]["embeds"][0]["description"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text), text
        # and the command itself is localized for zh-CN clients
        synced = {c["name"]: c for c in w.dd.synced_commands()}
        assert synced["imagine"]["name_localizations"]["zh-CN"] == "画图"
