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


def thread_id_of(call: Any) -> int:
    return int(call.response["id"])


async def start_picture(w: World, signature: str, **options: Any) -> tuple[dict[str, Any], int]:
    """/imagine; returns the result message JSON and the id of the thread opened on it."""
    w.relay.enqueue(Behaviour("image", signature=signature))
    mark = w.dd.mark()
    await w.imagine(prompt=options.pop("prompt", "a red fox in snow"), **options)
    post = await w.result_post(since=mark)
    thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
    # The job is over once its progress message is removed.
    await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)
    return post.response, thread_id_of(thread_call)


async def say_in_thread(w: World, bot: NanoBananaBot, thread_id: int, text: str, signature: str, *, reply_to: Any = None) -> Any:
    w.relay.enqueue(Behaviour("image", signature=signature))
    mark = w.dd.mark()
    thread = w.dd.channels[thread_id]
    # No Message Content intent: the bot reads text that mentions it (or replies that ping it).
    await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> {text}", reply_to=reply_to)
    return await w.result_post(channel=thread, since=mark)


def model_signatures(contents: list[dict[str, Any]]) -> list[str]:
    return [p["thoughtSignature"] for c in contents if c.get("role") == "model" for p in c["parts"] if "thoughtSignature" in p and "inlineData" in p]


async def test_thread_message_edits_with_history_and_reply_branches(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        second = await say_in_thread(w, bot, thread_id, "make it night time", "sig-second")
        sent = w.relay.requests[-1].json
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
        assert model_signatures(sent["contents"]) == ["sig-root"]  # the earlier model turn, signature kept
        assert sent["contents"][-1]["parts"][0]["text"] == "make it night time"

        await say_in_thread(w, bot, thread_id, "add a moon", "sig-third")
        latest_path = w.relay.requests[-1].json["contents"]
        assert model_signatures(latest_path) == ["sig-root", "sig-second"]

        # A reply to the *second* picture branches from it, not from the latest (third).
        await say_in_thread(w, bot, thread_id, "make it snow instead", "sig-branch", reply_to=second.response)
        branch_path = w.relay.requests[-1].json["contents"]
        assert model_signatures(branch_path) == ["sig-root", "sig-second"]
        assert branch_path[-1]["parts"][0]["text"] == "make it snow instead"
        assert branch_path != latest_path


async def test_reply_to_a_result_in_the_channel_continues_in_its_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        w.relay.enqueue(Behaviour("image", signature="sig-reply"))
        mark = w.dd.mark()
        await w.dd.post_message(w.channel, w.alice, "turn the fox blue", reply_to=root)  # a reply pings the bot
        post = await w.result_post(channel=w.dd.channels[thread_id], since=mark)
        assert post.files
        assert model_signatures(w.relay.requests[-1].json["contents"]) == ["sig-root"]


async def test_buttons_work_on_a_new_bot_instance_over_the_same_database(tmp_path: Path) -> None:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            first = new_bot(relay, w.data_dir)
            async with dd.running(first):
                root, _ = await start_picture(w, "sig-root")
            assert first.is_closed()

            second = new_bot(relay, w.data_dir)
            async with dd.running(second):
                reroll = next(c["custom_id"] for row in root["components"] for c in row["components"] if c["custom_id"].startswith("nb:reroll:"))
                before = len(relay.requests)
                mark = dd.mark()
                await dd.interact(dd.component_interaction(root, reroll, user=w.alice))
                post = await w.result_post(since=mark)
                assert post.files and len(relay.requests) == before + 1
                assert relay.requests[-1].json["contents"][0]["parts"][0]["text"] == "a red fox in snow"

                delete = next(c["custom_id"] for row in post.response["components"] for c in row["components"] if c["custom_id"].startswith("nb:del:"))
                mark = dd.mark()
                # bob is neither the requester nor a moderator: refused, ephemerally
                inter = await dd.interact(dd.component_interaction(post.response, delete, user=w.bob))
                refusal = await dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
                assert refusal.json["data"]["flags"] & 64
                await dd.interact(dd.component_interaction(post.response, delete, user=w.alice))
                await dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}$", since=mark)


async def test_result_after_the_interaction_token_expired_is_still_delivered(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("slow", delay=1.0))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a slow, detailed castle")
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        w.dd.expire_interaction_tokens()  # as if 15 minutes had passed
        post = await w.result_post(since=mark)
        assert post.authorization == f"Bot {w.dd.token}"
        assert post.files[0].data == w.relay.images_served[-1]
        # the progress message is still cleaned up, through the bot token
        progress_id = w.dd.original_message(inter)["id"]
        await w.dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{progress_id}$", since=mark)


async def test_a_413_is_retried_smaller_and_still_delivered(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("image", width=1024, height=1024))
        w.dd.fail("POST", rf"^/channels/{w.channel['id']}/messages$", 413, {"message": "Request entity too large", "code": 40005})
        mark = w.dd.mark()
        await w.imagine(prompt="a detailed map")
        post = await w.result_post(since=mark)
        attempts = w.dd.find("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark)
        refused = [c for c in attempts if c.status == 413]
        assert refused and refused[0].files
        assert len(post.files[0].data) < len(refused[0].files[0].data)
        assert Image.open(io.BytesIO(post.files[0].data)).size == (1024, 1024) or "Scaled down" in json.dumps(post.json)


async def test_missing_thread_permission_still_delivers_the_result_with_a_note(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.dd.set_overwrite(w.channel, "bot", deny=Perm.CREATE_PUBLIC_THREADS)
        mark = w.dd.mark()
        await w.imagine(prompt="a quiet lake")
        post = await w.result_post(since=mark)
        assert post.files
        thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        assert thread_call.status == 403
        edit = await w.dd.wait_for("PATCH", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}$", since=mark)
        assert "Create Public Threads" in json.dumps(edit.json)
