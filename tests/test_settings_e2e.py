"""/settings end to end: the real bot against the Discord double; a member changes their own
defaults with menus and buttons (no typed options), within what the server allows."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app import NanoBananaBot
from bot.preferences import Preferences, ServerCreative
from tests import e2e
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import RelayDouble

API_KEY = "settings-relay-key-123456"


class World:
    def __init__(self, dd: DiscordDouble, bot: NanoBananaBot) -> None:
        self.dd, self.bot = dd, bot
        self.guild = dd.add_guild("Settings Lab")
        self.gid = int(self.guild["id"])
        self.channel = dd.text_channels(self.guild)[0]
        self.alice = dd.add_member(self.guild, username="alice")
        self.bob = dd.add_member(self.guild, username="bob")
        self.uid = int(self.alice["user"]["id"])

    async def answered(self, payload: dict[str, Any]) -> dict[str, Any]:
        inter = await self.dd.interact(payload)
        await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        return self.dd.response_data(inter)

    async def open(self, user: Any = None, locale: str = "en-US") -> dict[str, Any]:
        inter = await self.dd.interact(self.dd.slash_interaction("settings", channel=self.channel, user=user or self.alice, locale=locale))
        await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        panel = self.dd.original_message(inter)
        assert panel is not None and self.dd.is_ephemeral(panel)
        return panel

    async def pick(self, panel: dict[str, Any], custom_id: str, value: str, user: Any = None) -> dict[str, Any]:
        return await self.answered(
            self.dd.component_interaction(panel, custom_id, user=user or self.alice, component_type=3, values=[value])
        )


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            bot = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            w = World(dd, bot)
            async with dd.running(bot):
                yield w


def fields(data: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}


def menu_options(data: dict[str, Any], custom_id: str) -> list[str]:
    for row in data["components"]:
        for c in row["components"]:
            if c.get("custom_id") == custom_id:
                return [o["value"] for o in c["options"]]
    raise AssertionError(f"no {custom_id} in {data['components']}")


async def test_variants_are_offered_only_up_to_the_servers_maximum_and_kept(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.bot.services.preferences.save_server(w.gid, ServerCreative(variants_default=1, variants_max=2))
        panel = await w.open()
        assert "prefs." not in json.dumps(panel, ensure_ascii=False)  # every label translated
        assert fields(panel)["Variants"] == "1 (server default)"
        chosen = await w.pick(panel, f"nb:set:f:{w.uid}", "variants")
        assert menu_options(chosen, f"nb:set:v:{w.uid}:variants") == ["-", "1", "2"]
        panel["components"] = chosen["components"]  # the panel as Discord now shows it
        saved = await w.pick(panel, f"nb:set:v:{w.uid}:variants", "2")
        assert fields(saved)["Variants"] == "2"
        assert await w.bot.services.preferences.get(w.gid, w.uid) == Preferences(variants=2)

        # The server lowers its maximum: the stored 2 is capped, and the member is told.
        await w.bot.services.preferences.save_server(w.gid, ServerCreative(variants_default=1, variants_max=1))
        again = await w.open()
        assert fields(again)["Variants"] == "1 (server default)"
        assert "at most 1 variant at once" in again["embeds"][0]["description"]


async def test_private_results_toggle_reset_and_strangers(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        panel = await w.open(locale="zh-CN")
        assert fields(panel)["结果仅自己可见"].startswith("关")
        on = await w.answered(w.dd.component_interaction(panel, f"nb:set:private:{w.uid}", user=w.alice, locale="zh-CN"))
        assert fields(on)["结果仅自己可见"].startswith("开")
        refused = await w.answered(w.dd.component_interaction(panel, f"nb:set:reset:{w.uid}", user=w.bob))
        assert refused["flags"] & 64 and "belongs to someone else" in json.dumps(refused)
        assert (await w.bot.services.preferences.get(w.gid, w.uid)).private is True
        await w.answered(w.dd.component_interaction(panel, f"nb:set:reset:{w.uid}", user=w.alice))
        assert await w.bot.services.preferences.get(w.gid, w.uid) == Preferences()


async def test_a_style_removed_before_it_is_picked_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        styles = w.bot.services.styles
        await styles.save(w.gid, "Ink", "{prompt}, ink wash", created_by=1)
        await styles.save(w.gid, "ink", "{prompt}, my ink", created_by=w.uid, owner_id=w.uid)
        await styles.save(w.gid, "Ink", "{prompt}, bob's ink", created_by=2, owner_id=2)
        panel = await w.open()
        chosen = await w.pick(panel, f"nb:set:f:{w.uid}", "style")
        assert menu_options(chosen, f"nb:set:v:{w.uid}:style") == ["-", "ink"]  # hers hides the server's; bob's unseen
        await styles.remove(w.gid, "ink", owner_id=w.uid)
        panel = await w.open()
        chosen = await w.pick(panel, f"nb:set:f:{w.uid}", "style")
        assert menu_options(chosen, f"nb:set:v:{w.uid}:style") == ["-", "Ink"]
        panel["components"] = chosen["components"]
        await w.bot.services.styles.remove(w.gid, "Ink")
        refused = await w.pick(panel, f"nb:set:v:{w.uid}:style", "Ink")
        assert refused["flags"] & 64 and "no longer exists" in json.dumps(refused, ensure_ascii=False)
        assert await w.bot.services.preferences.get(w.gid, w.uid) == Preferences()


async def test_a_language_chosen_in_settings_answers_every_command_not_only_imagine(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        panel = await w.open()  # the member's Discord client speaks English
        chosen = await w.pick(panel, f"nb:set:f:{w.uid}", "locale")
        panel["components"] = chosen["components"]
        saved = await w.pick(panel, f"nb:set:v:{w.uid}:locale", "zh-CN")
        assert saved["embeds"][0]["title"] == "你在本服务器的设置"  # the panel itself switches at once
        again = await w.open()
        assert again["embeds"][0]["title"] == "你在本服务器的设置"
        for command, title in (("quota", "你的积分"), ("history", "你的图片")):
            inter = await w.dd.interact(w.dd.slash_interaction(command, channel=w.channel, user=w.alice, locale="en-US"))
            await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
            assert title in json.dumps(w.dd.response_data(inter), ensure_ascii=False), command
        # Someone else in the same server still gets their own client's language.
        inter = await w.dd.interact(w.dd.slash_interaction("quota", channel=w.channel, user=w.bob, locale="en-US"))
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        assert "Your credits" in json.dumps(w.dd.response_data(inter))
