"""The Discord double proves itself against the real discord.py client.

A tiny bot defined here (not ours) connects through the double, syncs commands, answers
slash commands, buttons, autocomplete, a context menu with a modal and thread messages; the
double's failures must reach the bot as discord.py's own exceptions.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.conftest import make_image
from tests.doubles.discord_double import DiscordDouble, Intent, Perm

# ---------------------------------------------------------------- the tiny bot under test


class Again(discord.ui.DynamicItem[discord.ui.Button], template=r"again:(?P<n>\d+)"):
    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label="Again", custom_id=f"again:{n}", style=discord.ButtonStyle.primary))
        self.n = n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any) -> Again:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"again {self.n} by {interaction.user.name}")


class EditModal(discord.ui.Modal):
    instructions = discord.ui.TextInput(label="Instructions", custom_id="instructions")

    def __init__(self, filename: str) -> None:
        super().__init__(title="Edit image", custom_id="edit-modal")
        self.filename = filename

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"{self.filename}: {self.instructions.value}")


def make_bot(base: type[commands.Bot] = commands.Bot, *, message_content: bool = False) -> commands.Bot:
    class TinyBot(base):  # type: ignore[valid-type,misc]
        async def setup_hook(self) -> None:
            self.add_dynamic_items(Again)

    intents = discord.Intents.default()
    intents.message_content = message_content
    # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE before on_ready
    bot = TinyBot(command_prefix=commands.when_mentioned, intents=intents, help_command=None, guild_ready_timeout=0.05)
    bot.seen = asyncio.Queue()  # type: ignore[attr-defined]
    bot.captured = {}  # type: ignore[attr-defined]

    @bot.tree.command(name="draw", description="Draw a picture")
    async def draw(interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None, size: str = "1K") -> None:
        await interaction.response.defer(thinking=True)
        bot.captured["draw"] = interaction  # type: ignore[attr-defined]
        data = await image.read() if image is not None else make_image()
        view = discord.ui.View(timeout=None)
        view.add_item(Again(7))
        await interaction.followup.send(f"{prompt} ({size})", file=discord.File(io.BytesIO(data), "result.png"), view=view)

    @draw.autocomplete("size")
    async def size_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=s, value=s) for s in ("1K", "2K", "4K") if s.lower().startswith(current.lower())]

    settings = app_commands.Group(name="settings", description="Settings")
    relay = app_commands.Group(name="relay", description="Relays", parent=settings)

    @relay.command(name="add", description="Add a relay")
    async def relay_add(interaction: discord.Interaction, name: str) -> None:
        assert interaction.guild_locale is not None
        await interaction.response.send_message(f"{interaction.locale.value}|{interaction.guild_locale.value}|{name}", ephemeral=True)

    bot.tree.add_command(settings)

    @bot.tree.context_menu(name="Edit image")
    async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_modal(EditModal(message.attachments[0].filename if message.attachments else "none"))

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        await bot.seen.put(message)  # type: ignore[attr-defined]
        if isinstance(message.channel, discord.Thread) and bot.user in message.mentions:
            await message.reply(f"seen: {message.content}")

    return bot


@pytest.fixture
async def dd() -> Any:
    async with DiscordDouble() as double:
        yield double
        # every route the bots used is one the double implements
        assert double.unhandled == []


@pytest.fixture
def world(dd: DiscordDouble) -> dict[str, Any]:
    guild = dd.add_guild("Banana Lab", preferred_locale="zh-CN")
    channel = dd.text_channels(guild)[0]
    alice = dd.add_member(guild, username="alice")
    return {"guild": guild, "channel": channel, "alice": alice}


# ---------------------------------------------------------------- connection


@pytest.mark.parametrize("base", [commands.Bot, commands.AutoShardedBot], ids=["Bot", "AutoShardedBot"])
async def test_bot_connects_receives_guilds_and_identifies_with_its_intents(
    dd: DiscordDouble, world: dict[str, Any], base: type[commands.Bot]
) -> None:
    default_base = discord.http.Route.BASE
    bot = make_bot(base)
    async with dd.running(bot):
        guild = bot.get_guild(int(world["guild"]["id"]))
        assert guild is not None and guild.name == "Banana Lab"
        assert guild.preferred_locale == discord.Locale.chinese
        channel = guild.get_channel(int(world["channel"]["id"]))
        assert isinstance(channel, discord.TextChannel)
        assert guild.me.id == bot.user.id == dd.application_id
        assert channel.permissions_for(guild.me).create_public_threads
        assert not channel.permissions_for(guild.me).manage_messages
        assert dd.intents == bot.intents.value
        assert not dd.intents & Intent.MESSAGE_CONTENT
        me = dd.find("GET", r"^/users/@me$")
        assert me and me[0].authorization == f"Bot {dd.token}"
        # discord.py asked for zlib-stream and decoded our compressed frames
        assert "compress=zlib-stream" in dd.gateway_urls[0]
        if base is commands.AutoShardedBot:
            assert dd.find("GET", r"^/gateway/bot$")
            assert dd.identifies[-1]["shard"] == [0, 1]
    assert bot.is_closed()
    assert discord.http.Route.BASE == default_base


async def test_guild_joined_while_connected_arrives_as_guild_create(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        joined: asyncio.Future[discord.Guild] = asyncio.get_running_loop().create_future()

        async def on_guild_join(guild: discord.Guild) -> None:
            if not joined.done():
                joined.set_result(guild)

        bot.add_listener(on_guild_join)
        new = dd.add_guild("Second")
        guild = await asyncio.wait_for(joined, 5)
        assert guild.id == int(new["id"]) and bot.get_guild(guild.id) is guild


async def test_privileged_intent_not_enabled_in_portal_is_refused() -> None:
    async with DiscordDouble(privileged_intents=()) as dd:
        dd.add_guild()
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with dd.running(make_bot(message_content=True)):
                pass


async def test_wrong_token_is_a_login_failure(dd: DiscordDouble) -> None:
    bot = make_bot()
    with dd.patched(), pytest.raises(discord.LoginFailure):
        await bot.login("not-the-token")
    await bot.close()


# ---------------------------------------------------------------- commands and interactions


async def test_slash_command_sync_defer_and_followup_with_file(dd: DiscordDouble, world: dict[str, Any]) -> None:
    picture = make_image(80, 60)
    bot = make_bot()
    async with dd.running(bot):
        synced = await bot.tree.sync()
        assert {c.name for c in synced} == {"draw", "settings", "Edit image"}
        put = dd.find("PUT", rf"^/applications/{dd.application_id}/commands$")
        assert len(put) == 1 and {c["name"] for c in put[0].json} == {"draw", "settings", "Edit image"}

        att = dd.add_attachment(picture, "cat.png", "image/png")
        inter = dd.slash_interaction("draw", channel=world["channel"], user=world["alice"], options={"prompt": "a cat", "image": att})
        assert inter["data"]["options"][1] == {"type": 11, "name": "image", "value": att["id"]}
        mark = dd.mark()
        await dd.interact(inter)

        ack = await dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 5 and ack.query["with_response"] == "1"
        upload = await dd.wait_for("POST", rf"^/webhooks/{dd.application_id}/", since=mark)
        assert upload.status == 200 and upload.multipart
        assert [(f.filename, f.data) for f in upload.files] == [("result.png", picture)]  # the bot re-sent what it downloaded
        assert upload.json["content"] == "a cat (1K)"
        assert any(p.endswith("/cat.png") for p in dd.downloads)

        # The first followup after a "thinking" defer becomes the original response.
        original = dd.original_message(inter)
        assert original is not None and original["content"] == "a cat (1K)"
        assert original["flags"] & 128 == 0
        assert original["components"][0]["components"][0]["custom_id"] == "again:7"
        async with aiohttp.ClientSession() as http:
            async with http.get(original["attachments"][0]["url"]) as resp:
                assert resp.status == 200 and await resp.read() == picture
        fetched = await bot.get_channel(int(world["channel"]["id"])).fetch_message(int(original["id"]))
        assert fetched.attachments[0].width == 80 and await fetched.attachments[0].read() == picture


async def test_button_click_on_the_result_runs_the_dynamic_item(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        await bot.tree.sync()
        inter = await dd.interact(dd.slash_interaction("draw", channel=world["channel"], user=world["alice"], options={"prompt": "x"}))
        await dd.wait_for("POST", r"^/webhooks/")
        result = dd.original_message(inter)
        click = await dd.interact(dd.component_interaction(result, "again:7", user=world["alice"]))
        call = await dd.wait_for("POST", rf"^/interactions/{click['id']}/")
        assert call.json["type"] == 7
        assert dd.messages[int(result["id"])]["content"] == "again 7 by alice"
        with pytest.raises(ValueError):
            dd.component_interaction(result, "no-such-button", user=world["alice"])


async def test_subcommand_group_with_locale_gets_an_ephemeral_reply(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        await bot.tree.sync()
        inter = dd.slash_interaction(
            "settings",
            group="relay",
            subcommand="add",
            options={"name": "main"},
            channel=world["channel"],
            user=world["alice"],
            locale="zh-CN",
        )
        assert inter["data"]["options"] == [
            {"type": 2, "name": "relay", "options": [{"type": 1, "name": "add", "options": [{"type": 3, "name": "name", "value": "main"}]}]}
        ]
        await dd.interact(inter)
        await dd.wait_for("POST", rf"^/interactions/{inter['id']}/")
        reply = dd.original_message(inter)
        assert reply["content"] == "zh-CN|zh-CN|main"
        assert dd.is_ephemeral(reply) and reply["flags"] & 64
        assert dd.channel_messages(world["channel"]) == []  # ephemeral: not in the channel
        with pytest.raises(ValueError, match="no option"):
            dd.slash_interaction(
                "settings", group="relay", subcommand="add", options={"nome": "x"}, channel=world["channel"], user=world["alice"]
            )


async def test_autocomplete_returns_choices(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        await bot.tree.sync()
        inter = await dd.interact(
            dd.autocomplete_interaction(
                "draw", focused="size", options={"prompt": "x", "size": "2"}, channel=world["channel"], user=world["alice"]
            )
        )
        await dd.wait_for("POST", rf"^/interactions/{inter['id']}/")
        assert dd.response_type(inter) == 8
        assert dd.response_data(inter) == {"choices": [{"name": "2K", "value": "2K"}]}


async def test_message_context_menu_opens_a_modal_and_its_submit_is_handled(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        await bot.tree.sync()
        att = dd.add_attachment(make_image(), "dog.png", channel=world["channel"])
        target = await dd.post_message(world["channel"], world["alice"], "my dog", attachments=[att])
        menu = dd.message_command_interaction("Edit image", target, user=world["alice"])
        assert menu["data"]["resolved"]["messages"][target["id"]]["attachments"][0]["filename"] == "dog.png"
        await dd.interact(menu)
        await dd.wait_for("POST", rf"^/interactions/{menu['id']}/")
        modal = dd.last_modal()
        assert modal is not None and modal["title"] == "Edit image"
        submit = await dd.interact(
            dd.modal_submit_interaction(
                "edit-modal", {"instructions": "make it blue"}, channel=world["channel"], user=world["alice"], modal=modal
            )
        )
        await dd.wait_for("POST", rf"^/interactions/{submit['id']}/")
        assert dd.original_message(submit)["content"] == "dog.png: make it blue"


async def test_invalid_localized_command_name_is_rejected_by_sync(dd: DiscordDouble) -> None:
    class BadTranslator(app_commands.Translator):
        async def translate(self, string: app_commands.locale_str, locale: discord.Locale, context: Any) -> str | None:
            return (
                "画 图"
                if locale is discord.Locale.chinese and context.location is app_commands.TranslationContextLocation.command_name
                else None
            )

    dd.add_guild()
    bot = make_bot()
    async with dd.running(bot):
        await bot.tree.set_translator(BadTranslator())
        with pytest.raises(discord.HTTPException) as err:
            await bot.tree.sync()
        assert err.value.status == 400 and err.value.code == 50035
        assert dd.synced_commands() == []


# ---------------------------------------------------------------- messages and threads


async def test_thread_messages_follow_the_message_content_intent(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot(message_content=False)
    async with dd.running(bot):
        starter = await dd.post_message(world["channel"], world["alice"], "start")
        thread = dd.add_thread(world["channel"], "pictures", starter_message=starter, owner=world["alice"])
        await dd.post_message(thread, world["alice"], "plain words")
        await dd.post_message(thread, world["alice"], f"<@{dd.application_id}> make it blue")

        seen = [await asyncio.wait_for(bot.seen.get(), 5) for _ in range(3)]  # type: ignore[attr-defined]
        assert [m.channel.id for m in seen] == [int(world["channel"]["id"]), int(thread["id"]), int(thread["id"])]
        assert isinstance(seen[1].channel, discord.Thread)
        # Without the Message Content intent, text arrives only when the bot is mentioned.
        assert [m.content for m in seen] == ["", "", f"<@{dd.application_id}> make it blue"]

        reply = await dd.wait_for("POST", rf"^/channels/{thread['id']}/messages$")
        assert reply.json["content"] == f"seen: <@{dd.application_id}> make it blue"
        assert reply.json["message_reference"]["message_id"] == int(seen[2].id)
        stored = dd.channel_messages(thread)[-1]
        assert stored["type"] == 19 and stored["referenced_message"]["author"]["id"] == world["alice"]["user"]["id"]


async def test_bot_creates_a_thread_on_its_message(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        channel = bot.get_channel(int(world["channel"]["id"]))
        message = await channel.send("result")
        thread = await message.create_thread(name="Edits")
        assert thread.id == message.id and thread.parent_id == channel.id
        assert dd.channels[thread.id]["type"] == 11
        for _ in range(100):  # THREAD_CREATE reaches the cache through the gateway
            if bot.get_channel(thread.id) is not None:
                break
            await asyncio.sleep(0.01)
        assert isinstance(bot.get_channel(thread.id), discord.Thread)
        await thread.send("in thread")
        assert dd.channel_messages(thread)[-1]["content"] == "in thread"


async def test_a_new_bot_instance_takes_over_and_old_buttons_still_work(dd: DiscordDouble, world: dict[str, Any]) -> None:
    first = make_bot()
    async with dd.running(first):
        await first.tree.sync()
        inter = await dd.interact(dd.slash_interaction("draw", channel=world["channel"], user=world["alice"], options={"prompt": "x"}))
        await dd.wait_for("POST", r"^/webhooks/")
    result = dd.original_message(inter)

    second = make_bot()
    async with dd.running(second):
        assert second.get_guild(int(world["guild"]["id"])) is not None
        click = await dd.interact(dd.component_interaction(result, "again:7", user=world["alice"]))
        await dd.wait_for("POST", rf"^/interactions/{click['id']}/")
        assert dd.messages[int(result["id"])]["content"] == "again 7 by alice"
    assert len(dd.identifies) == 2


async def test_events_need_their_intent(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
    async with dd.running(bot):
        msg = dd.add_message(world["channel"], world["alice"], "hello")
        assert await dd.dispatch("MESSAGE_CREATE", dd.message_event(msg)) is False
        assert await dd.dispatch("MESSAGE_CREATE", dd.message_event(msg), exact=True) is True


async def test_message_routes_round_trip(dd: DiscordDouble, world: dict[str, Any]) -> None:
    first, second = make_image(10, 10), make_image(20, 10)
    bot = make_bot()
    async with dd.running(bot):
        channel = bot.get_channel(int(world["channel"]["id"]))
        msg = await channel.send("progress 1", file=discord.File(io.BytesIO(first), "a.png"))
        edited = await msg.edit(content="done", attachments=[discord.File(io.BytesIO(second), "b.png")])
        assert edited.content == "done" and [a.filename for a in edited.attachments] == ["b.png"]
        assert await edited.attachments[0].read() == second
        await msg.add_reaction("\N{BANANA}")
        assert dd.messages[msg.id]["reactions"][0]["emoji"]["name"] == "\N{BANANA}"
        assert [m.id async for m in channel.history(limit=10)] == [msg.id]
        assert (await bot.fetch_channel(channel.id)).name == "general"
        member = await channel.guild.fetch_member(int(world["alice"]["user"]["id"]))
        assert member.name == "alice"

        theirs = await dd.post_message(world["channel"], world["alice"], "hi")
        with pytest.raises(discord.Forbidden):
            await channel.get_partial_message(int(theirs["id"])).delete()
        await msg.delete()
        assert msg.id not in dd.messages
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(msg.id)


# ---------------------------------------------------------------- failures as discord.py sees them


async def test_upload_over_the_limit_is_413_40005(dd: DiscordDouble, world: dict[str, Any]) -> None:
    dd.upload_limit = 1000
    bot = make_bot()
    async with dd.running(bot):
        channel = bot.get_channel(int(world["channel"]["id"]))
        with pytest.raises(discord.HTTPException) as err:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 1001), "big.png"))
        assert (err.value.status, err.value.code) == (413, 40005)
        small = await channel.send(file=discord.File(io.BytesIO(b"x" * 1000), "ok.png"))
        assert small.attachments[0].size == 1000
        # A proxy's HTML 413 reaches discord.py with status 413 but no Discord error code.
        dd.fail("POST", r"/messages$", 413, "<html><body>413 Request Entity Too Large</body></html>")
        with pytest.raises(discord.HTTPException) as err:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 10), "ok.png"))
        assert (err.value.status, err.value.code) == (413, 0)


async def test_missing_thread_permission_is_forbidden_50013(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        channel = bot.get_channel(int(world["channel"]["id"]))
        message = await channel.send("result")
        dd.set_overwrite(world["channel"], "bot", deny=Perm.CREATE_PUBLIC_THREADS)
        with pytest.raises(discord.Forbidden) as err:
            await message.create_thread(name="Edits")
        assert (err.value.status, err.value.code) == (403, 50013)
        for _ in range(100):  # CHANNEL_UPDATE keeps discord.py's permission view in step
            if not channel.permissions_for(channel.guild.me).create_public_threads:
                break
            await asyncio.sleep(0.01)
        assert not channel.permissions_for(channel.guild.me).create_public_threads

        dd.set_overwrite(world["channel"], "bot")  # restored, but an injected fault still refuses once
        dd.fail("POST", r"/threads$", 403)
        with pytest.raises(discord.Forbidden):
            await message.create_thread(name="Edits")
        assert (await message.create_thread(name="Edits")).id == message.id


async def test_expired_interaction_token_is_401_50027_but_the_bot_token_still_posts(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        await bot.tree.sync()
        inter = await dd.interact(dd.slash_interaction("draw", channel=world["channel"], user=world["alice"], options={"prompt": "x"}))
        await dd.wait_for("POST", r"^/webhooks/")
        captured: discord.Interaction = bot.captured["draw"]  # type: ignore[attr-defined]
        dd.expire_interaction_tokens()
        with pytest.raises(discord.HTTPException) as err:
            await captured.followup.send("late")
        assert (err.value.status, err.value.code) == (401, 50027)
        with pytest.raises(discord.HTTPException) as err:
            await captured.edit_original_response(content="late")
        assert err.value.code == 50027
        late = await captured.channel.send("delivered with the bot token")
        assert dd.messages[late.id]["content"] == "delivered with the bot token"
        assert dd.original_message(inter)["content"] == "x (1K)"


async def test_rate_limit_is_retried_and_bad_payloads_are_400(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot()
    async with dd.running(bot):
        channel = bot.get_channel(int(world["channel"]["id"]))
        dd.fail("POST", r"/messages$", 429, retry_after=0.01)
        mark = dd.mark()
        sent = await channel.send("after a 429")
        attempts = dd.find("POST", r"/messages$", since=mark)
        assert [c.status for c in attempts] == [429, 200]
        assert attempts[1].response["id"] == str(sent.id)

        with pytest.raises(discord.HTTPException) as err:
            await channel.send("x" * 2001)
        assert (err.value.status, err.value.code) == (400, 50035)
        assert "2000" in str(err.value)


async def test_events_sent_during_a_reconnect_arrive_after_resume(dd: DiscordDouble, world: dict[str, Any]) -> None:
    bot = make_bot(message_content=True)
    async with dd.running(bot):
        resumed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def on_resumed() -> None:
            if not resumed.done():
                resumed.set_result(True)

        bot.add_listener(on_resumed)
        await dd.request_reconnect()
        await dd.post_message(world["channel"], world["alice"], "while away")
        await asyncio.wait_for(resumed, 5)
        seen = await asyncio.wait_for(bot.seen.get(), 5)  # type: ignore[attr-defined]
        assert seen.content == "while away"
        assert [p["op"] for p in dd.gateway_received if p["op"] in (2, 6)] == [2, 6]
