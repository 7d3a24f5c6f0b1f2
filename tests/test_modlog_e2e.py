"""The moderation log end to end: the real bot against the Discord double and a relay double.
An entry per generation (member, prompt, model/size, credits, jump link, thumbnail) and per
blocklist refusal; a moderator's Remove button deletes the result and its stored picture; a
burst of 50 pictures becomes a few batched messages at a bounded rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app import NanoBananaBot
from bot.modlog import MAX_EMBEDS
from tests.doubles.discord_double import Call, DiscordDouble, Perm
from tests.doubles.relay_double import RelayDouble
from tests.test_admin_e2e import OPERATOR_KEY, World, finished, is_ephemeral, new_bot, text_of


class LogWorld(World):
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, data_dir: Path) -> None:
        super().__init__(dd, relay, data_dir)
        self.log_channel = dd.add_text_channel(self.guild, "mod-log")
        self.helpers = dd.add_role(self.guild, "Helpers", Perm.MANAGE_MESSAGES)
        self.mod = dd.add_member(self.guild, username="moe", roles=[self.helpers])  # may manage messages, not the server

    def log_posts(self, since: int = 0) -> list[Call]:
        return [c for c in self.dd.find("POST", rf"^/channels/{self.log_channel['id']}/messages$", since=since) if c.status < 300]

    async def log_post(self, since: int, timeout: float = 10.0) -> Call:
        return await self.dd.wait_for("POST", rf"^/channels/{self.log_channel['id']}/messages$", since=since, timeout=timeout)


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: str) -> AsyncIterator[tuple[LogWorld, NanoBananaBot]]:
    with RelayDouble(api_key=OPERATOR_KEY) as relay:
        async with DiscordDouble() as dd:
            w = LogWorld(dd, relay, tmp_path / "data")
            bot = new_bot(relay, w.data_dir, NB_ALLOW_PRIVATE_RELAYS="1", **extra)
            async with dd.running(bot):
                yield w, bot


def remove_button(log_message: dict[str, Any], number: int = 1) -> str:
    ids = [c["custom_id"] for row in log_message["components"] for c in row["components"] if c["custom_id"].startswith("nb:modrm:")]
    return ids[number - 1]


async def test_each_picture_is_logged_with_a_jump_link_and_a_moderator_removes_it_with_its_images(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        answer = await w.ask(None, "log", channel=w.log_channel)
        assert f"Moderation log: <#{w.log_channel['id']}>" in text_of(answer)

        inter, mark = await w.imagine(w.alice, prompt="a lighthouse at dusk, " + "very " * 80 + "detailed")
        result = await w.result_post(since=mark)
        await finished(bot)
        entry = (await w.log_post(since=mark)).response
        embed = entry["embeds"][0]
        message_id = result.response["id"]
        jump = f"https://discord.com/channels/{w.guild['id']}/{w.channel['id']}/{message_id}"
        assert f"<@{w.alice['user']['id']}>" in embed["description"] and jump in embed["description"]
        assert "Nano Banana" in embed["description"] and "1 credit ·" in embed["description"]
        assert "a lighthouse at dusk" in embed["description"] and len(embed["description"]) < 500  # shortened
        assert embed["thumbnail"]["url"] == result.response["attachments"][0]["url"]
        assert "1024×1024" in embed["description"] or "1K" in embed["description"], embed["description"]
        assert not entry["mentions"]  # a log entry pings no one

        # The jump link leads to the result: the double holds that message in that channel.
        assert w.dd.messages[int(message_id)]["channel_id"] == w.channel["id"]
        turn = await bot.services.conversations.turn_by_message(int(message_id))
        assert turn is not None and turn.image_sha256
        stored = bot.services.images.path_for(turn.image_sha256)
        assert stored.exists()

        # A member without Manage Messages is refused; nothing is deleted.
        button = remove_button(entry)
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(entry, button, user=w.alice))
        refusal = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert refusal.json["data"]["flags"] & 64 and "manage messages" in refusal.json["data"]["content"]
        assert stored.exists() and not w.dd.find("DELETE", rf"/messages/{message_id}$")

        # A moderator: the result message is deleted and its picture gone from the store.
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(entry, button, user=w.mod))
        await w.dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{message_id}$", since=mark)
        done = await w.answer(inter, mark)
        assert is_ephemeral(done) and "Removed the picture" in text_of(done)
        assert not stored.exists()
        with contextlib.suppress(Exception):
            await bot.services.images.get(turn.image_sha256)
            raise AssertionError("the removed picture can still be read")

        # /admin usage links to the log.
        usage = await w.ask(None, "usage", period="day")
        assert f"<#{w.log_channel['id']}>" in text_of(usage)


async def test_a_blocklist_refusal_is_logged_without_a_remove_button(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        await w.ask(None, "log", channel=w.log_channel)
        await w.ask("safety", "block", rule="forbidden")
        inter, mark = await w.imagine(w.alice, prompt="a FORBIDDEN castle")
        assert "does not allow" in text_of(await w.answer(inter, mark))
        entry = (await w.log_post(since=mark)).response
        text = entry["embeds"][0]["description"]
        assert "refused by the blocklist" in text and f"<@{w.alice['user']['id']}>" in text and "FORBIDDEN castle" in text
        assert not entry.get("components")
        assert [r for r in w.relay.requests if "generateContent" in r.path] == []


async def test_without_a_log_channel_nothing_is_logged_and_the_log_can_be_turned_off(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)
        await w.ask(None, "log", channel=w.log_channel)
        off = await w.ask(None, "log")
        assert "No moderation log" in text_of(off)
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)
        await asyncio.sleep(1.5)  # longer than a batch interval
        assert w.log_posts() == []


async def test_a_burst_of_50_pictures_is_logged_in_a_few_batched_messages_at_a_bounded_rate(tmp_path: Path) -> None:
    async with world(tmp_path, NB_MAX_JOBS="8", NB_MAX_JOBS_PER_GUILD="8", NB_MAX_JOBS_PER_USER="8") as (w, bot):
        await w.ask(None, "log", channel=w.log_channel)
        await bot.services.guilds.update(int(w.guild["id"]), lambda g: g.with_quota(user_daily=None))
        members = [w.dd.add_member(w.guild, username=f"m{i}") for i in range(10)]
        mark = w.dd.mark()
        for i in range(50):
            await w.command("imagine", user=members[i % 10], prompt=f"picture number {i}")
        deadline = time.monotonic() + 90
        seen: list[float] = []
        while sum(len(c.json["embeds"]) for c in w.log_posts(mark)) < 50 and time.monotonic() < deadline:
            posts = w.log_posts(mark)
            seen += [time.monotonic()] * (len(posts) - len(seen))
            await asyncio.sleep(0.05)
        posts = w.log_posts(mark)
        seen += [time.monotonic()] * (len(posts) - len(seen))
        embeds = [len(c.json["embeds"]) for c in posts]
        assert sum(embeds) == 50, embeds  # every picture logged once
        assert max(embeds) <= MAX_EMBEDS and len(posts) <= 12, embeds
        assert not w.dd.find("POST", rf"^/channels/{w.log_channel['id']}/messages$", since=mark, status=429)
        # At most one log message per second: within Discord's 5 messages per 5 s per channel.
        gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
        assert all(g >= 0.9 for g in gaps), gaps
        print(f"50 pictures -> {len(posts)} log messages, embeds per message {embeds}, gaps {[round(g, 2) for g in gaps]} s")
        prompts = "|".join(e["description"] for c in posts for e in c.json["embeds"]) + "|"
        assert all(f"> picture number {i}|" in prompts for i in range(50)), prompts


async def test_the_remove_button_works_on_a_new_bot_instance(tmp_path: Path) -> None:
    with RelayDouble(api_key=OPERATOR_KEY) as relay:
        async with DiscordDouble() as dd:
            w = LogWorld(dd, relay, tmp_path / "data")
            first = new_bot(relay, w.data_dir, NB_ALLOW_PRIVATE_RELAYS="1")
            async with dd.running(first):
                await w.ask(None, "log", channel=w.log_channel)
                inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
                result = await w.result_post(since=mark)
                await finished(first)
                entry = (await w.log_post(since=mark)).response
            second = new_bot(relay, w.data_dir, NB_ALLOW_PRIVATE_RELAYS="1")
            async with dd.running(second):
                mark = dd.mark()
                inter = await dd.interact(dd.component_interaction(entry, remove_button(entry), user=w.mod))
                await dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{result.response['id']}$", since=mark)
                assert "Removed the picture and 1 stored image" in text_of(await w.answer(inter, mark))
