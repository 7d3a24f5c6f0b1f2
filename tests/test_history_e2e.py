"""/history end to end: the real bot against the Discord and relay doubles; pictures made
with /imagine, then listed with links to the real result messages, paged with buttons that
work after a restart, filtered by model, private to whoever opened the panel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import NanoBananaBot
from tests import e2e
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import RelayDouble

API_KEY = "history-relay-key-123456"
PRO = "gemini-3-pro-image-preview"


class World:
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, data_dir: Path) -> None:
        self.dd, self.relay, self.data_dir = dd, relay, data_dir
        self.guild = dd.add_guild("Gallery Lab")
        self.channel = dd.text_channels(self.guild)[0]
        self.alice = dd.add_member(self.guild, username="alice")
        self.bob = dd.add_member(self.guild, username="bob")

    async def picture(self, bot: NanoBananaBot, user: Any, prompt: str, **options: Any) -> dict[str, Any]:
        """One /imagine to delivery; returns the result message as Discord stored it."""
        mark = self.dd.mark()
        await self.dd.interact(self.dd.slash_interaction("imagine", channel=self.channel, user=user, options={"prompt": prompt, **options}))
        post = await self.dd.wait_for(
            "POST",
            rf"^/channels/{self.channel['id']}/messages$",
            since=mark,
            predicate=lambda c: bool(c.files) and c.status < 300,
            timeout=20,
        )
        uid = int(user["user"]["id"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the job records its result message just after posting it
            jobs = await bot.services.db.execute_fetchall(
                "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND result_message_id = ?", (uid, int(post.response["id"]))
            )
            if list(jobs)[0][0]:
                return post.response
            await asyncio.sleep(0.05)
        raise AssertionError("the job never recorded its result message")

    async def history(self, user: Any, **options: Any) -> dict[str, Any]:
        inter = await self.dd.interact(self.dd.slash_interaction("history", channel=self.channel, user=user, options=options))
        await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        return inter

    async def click(self, message: dict[str, Any], custom_id: str, user: Any, **kw: Any) -> dict[str, Any]:
        inter = await self.dd.interact(self.dd.component_interaction(message, custom_id, user=user, **kw))
        await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        return inter


@contextlib.asynccontextmanager
async def doubles(tmp_path: Path) -> AsyncIterator[World]:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            yield World(dd, relay, tmp_path / "data")


@contextlib.asynccontextmanager
async def bot_on(w: World) -> AsyncIterator[NanoBananaBot]:
    bot = e2e.new_bot(w.relay, w.data_dir, API_KEY)
    async with w.dd.running(bot):
        yield bot


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[tuple[World, NanoBananaBot]]:
    async with doubles(tmp_path) as w, bot_on(w) as bot:
        yield w, bot


def custom_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"] if "custom_id" in c]


async def test_history_links_to_the_real_result_and_its_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        result = await w.picture(bot, w.alice, "a lantern festival at night")
        inter = await w.history(w.alice)
        assert w.dd.response_type(inter) == 4
        panel = w.dd.original_message(inter)
        assert panel is not None and w.dd.is_ephemeral(panel)
        embed = panel["embeds"][0]
        assert embed["title"] == "Your pictures"
        assert "a lantern festival at night" in embed["description"]
        link = f"https://discord.com/channels/{w.guild['id']}/{w.channel['id']}/{result['id']}"
        assert f"[Result]({link})" in embed["description"]
        thread = next(c for c in w.dd.calls if c.method == "POST" and c.path.endswith(f"/messages/{result['id']}/threads"))
        assert f"[Thread](https://discord.com/channels/{w.guild['id']}/{thread.response['id']})" in embed["description"]
        assert embed["footer"]["text"] == "Page 1 of 1 · 1 picture"


async def test_pages_turn_with_buttons_a_filter_narrows_and_nobody_else_can_use_the_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path) as (w, bot):
        # load_extension executes the module afresh: patch the one the bot runs.
        monkeypatch.setattr(sys.modules["cogs.history"], "PER_PAGE", 1)
        await w.picture(bot, w.alice, "first flash picture")
        await w.picture(bot, w.alice, "a pro picture", model=PRO)
        await w.picture(bot, w.bob, "bob's own")
        panel = w.dd.original_message(await w.history(w.alice))
        assert panel is not None
        assert "a pro picture" in panel["embeds"][0]["description"]  # newest first
        uid = w.alice["user"]["id"]
        nxt = f"nb:hist:{uid}:m:2:all:n"
        assert nxt in custom_ids(panel)

        click = await w.click(panel, nxt, w.alice)
        assert w.dd.response_type(click) == 7  # the panel itself is updated
        page2 = w.dd.response_data(click)
        assert "first flash picture" in page2["embeds"][0]["description"]
        assert page2["embeds"][0]["footer"]["text"] == "Page 2 of 2 · 2 pictures"

        stranger = await w.click(panel, nxt, w.bob)
        data = w.dd.response_data(stranger)
        assert data["flags"] & 64 and "belongs to someone else" in json.dumps(data)

        picked = await w.click(panel, f"nb:histf:{uid}:m", w.alice, component_type=3, values=[PRO])
        only = w.dd.response_data(picked)["embeds"][0]
        assert "a pro picture" in only["description"] and only["footer"]["text"] == "Page 1 of 1 · 1 picture"


async def test_the_server_view_needs_manage_server_and_shows_everyone(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        await w.picture(bot, w.alice, "alice's")
        await w.picture(bot, w.bob, "bob's")
        refused = w.dd.response_data(await w.history(w.bob, server=True))
        assert refused["flags"] & 64 and "Manage Server" in json.dumps(refused)
        assert "someone else" not in json.dumps(refused)  # it is bob's own panel: the permission is why
        inter = await w.dd.interact(
            w.dd.slash_interaction("history", channel=w.channel, user=w.alice, options={"server": True}, member_permissions=1 << 5)
        )
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        embed = w.dd.original_message(inter)["embeds"][0]  # type: ignore[index]
        assert embed["title"] == "Pictures made in this server"
        assert "alice's" in embed["description"] and "bob's" in embed["description"]


async def test_a_panel_opened_before_a_restart_still_turns_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with doubles(tmp_path) as w:
        async with bot_on(w) as first:
            monkeypatch.setattr(sys.modules["cogs.history"], "PER_PAGE", 1)
            await w.picture(first, w.alice, "before the restart, older")
            await w.picture(first, w.alice, "before the restart, newer")
            panel = w.dd.original_message(await w.history(w.alice))
        assert panel is not None
        async with bot_on(w):
            monkeypatch.setattr(sys.modules["cogs.history"], "PER_PAGE", 1)
            click = await w.click(panel, f"nb:hist:{w.alice['user']['id']}:m:2:all:n", w.alice)
            assert "before the restart, older" in w.dd.response_data(click)["embeds"][0]["description"]
