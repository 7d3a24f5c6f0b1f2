"""The moderation log in Discord: one compact embed per generation and per blocklist refusal,
posted in batches by bot.modlog (at most 10 embeds per message, at a bounded rate), each
picture with a **Remove** button for moderators.

The entry for a picture comes from the ``picture_delivered`` event the delivery dispatches
(job, request, generated result, posted message); a refusal is queued by cogs/intake.py.
The Remove button is a DynamicItem (its custom_id names the result message and its stored
turn), so it works after a restart; it is refused to anyone without Manage Messages.
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any, Self, cast

import discord
from discord import ui
from discord.ext import commands

from bot.i18n import t
from bot.jobs import Job
from bot.modlog import LogEntry, shorten
from bot.relay.balance import BalanceChange
from bot.relay.catalogue import display_size
from bot.studio import Generated, JobRequest
from cogs import render
from cogs.admin.relay_form import balance_text
from cogs.bot_types import Interaction, NanoBananaBot
from cogs.failures import report_failure
from cogs.language import member_locale

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
REFUSED_COLOUR = discord.Colour.red()
BALANCE_KEYS = {"low": "toolkit.balance.warn_low", "empty": "toolkit.balance.warn_out", "ok": "toolkit.balance.recovered"}


def jump_url(guild_id: int, channel_id: int | None, message_id: int | None) -> str | None:
    if channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def entry_embed(entry: LogEntry, locale: str, number: int) -> discord.Embed:
    """One entry: who, what (shortened), model/size, credits, where (a jump link), a thumbnail;
    ``number`` is the one its Remove button shows."""
    if entry.kind == "refusal":
        text = t("toolkit.log.refusal", locale, user=f"<@{entry.user_id}>", channel=f"<#{entry.channel_id}>", rule=entry.rule_id or "-")
        embed = discord.Embed(colour=REFUSED_COLOUR, description=text + "\n> " + shorten(entry.prompt))
    else:
        url = jump_url(entry.guild_id, entry.channel_id, entry.message_id)
        text = t(
            "toolkit.log.picture",
            locale,
            user=f"<@{entry.user_id}>",
            model=render.model_label(entry.model or ""),
            size=entry.size or "-",
            credits=entry.credits,
            url=url or "",
            n=number,
        )
        embed = discord.Embed(colour=render.BRAND, description=text + "\n> " + shorten(entry.prompt))
        if entry.thumbnail_url:
            embed.set_thumbnail(url=entry.thumbnail_url)
    embed.timestamp = datetime.datetime.fromtimestamp(entry.at, tz=datetime.UTC)
    return embed


class RemoveButton(ui.DynamicItem[ui.Button[ui.View]], template=r"nb:modrm:(?P<channel>\d+):(?P<message>\d+):(?P<turn>\d+)"):
    """Deletes a logged result message and its stored picture (Manage Messages only)."""

    def __init__(self, channel_id: int, message_id: int, turn_id: int, *, number: int = 1, locale: str = "en") -> None:
        label = t("toolkit.log.remove", locale, n=number)[:80]
        custom_id = f"nb:modrm:{channel_id}:{message_id}:{turn_id}"
        super().__init__(ui.Button(label=label, emoji="🗑️", style=discord.ButtonStyle.danger, custom_id=custom_id))
        self.channel_id, self.message_id, self.turn_id = channel_id, message_id, turn_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> Self:
        return cls(int(match["channel"]), int(match["message"]), int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self._remove(cast(Interaction, interaction))
        except Exception as exc:  # noqa: BLE001 - every failure gets an answer
            await report_failure(interaction, exc)

    async def _remove(self, interaction: Interaction) -> None:
        locale = await member_locale(interaction)
        if not interaction.permissions.manage_messages:
            await interaction.response.send_message(t("toolkit.log.not_allowed", locale), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        bot = interaction.client
        try:
            await bot.get_partial_messageable(self.channel_id, guild_id=interaction.guild_id).get_partial_message(self.message_id).delete()
        except discord.NotFound:
            pass  # already gone: its pictures still go below
        removed = await remove_stored(bot, self.turn_id)
        log.info("moderator %s removed result message %s (%d stored image(s))", interaction.user.id, self.message_id, removed)
        await interaction.followup.send(t("toolkit.log.removed", locale, n=removed), ephemeral=True)


async def remove_stored(bot: NanoBananaBot, turn_id: int) -> int:
    """Prune the result picture of ``turn_id`` (and any picture in the model's answer) from the store."""
    svc = bot.services
    turn = await svc.conversations.get_turn(turn_id) if turn_id else None
    if turn is None:
        return 0
    shas = [s for s in (turn.image_sha256, *turn.image_refs()) if s]
    return await svc.images.prune_these(sorted(set(shas)))


class ModLogCog(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(RemoveButton)
        self.bot.services.modlog.start(self.post)
        self.bot.services.balances.start(self._warn_below, self.post_balance)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(RemoveButton)
        await self.bot.services.modlog.stop()
        await self.bot.services.balances.stop()

    @commands.Cog.listener()
    async def on_picture_delivered(self, job: Job, req: JobRequest, generated: Generated, message: discord.Message) -> None:
        if job.guild_id is None:
            return
        g = await self.bot.services.guild(job.guild_id)
        entry = LogEntry(
            kind="picture",
            guild_id=job.guild_id,
            user_id=job.user_id,
            prompt=req.display_prompt or req.prompt,
            channel_id=message.channel.id,
            model=generated.result.model,
            size=display_size(req.size) if req.size else f"{generated.result.width}×{generated.result.height}",
            credits=job.cost,
            message_id=message.id,
            turn_id=generated.turn.id if generated.turn is not None else None,
            thumbnail_url=message.attachments[0].url if message.attachments else None,
        )
        self.bot.services.modlog.add(g.log_channel, entry)

    async def post(self, channel_id: int, entries: list[LogEntry]) -> None:
        """One log message: an embed per entry, a Remove button per picture still stored."""
        locale = (await self.bot.services.guild(entries[0].guild_id)).locale
        view = ui.View(timeout=None)
        for number, entry in enumerate(entries, start=1):
            if entry.kind == "picture" and entry.channel_id and entry.message_id:
                view.add_item(RemoveButton(entry.channel_id, entry.message_id, entry.turn_id or 0, number=number, locale=locale))
        channel = self.bot.get_partial_messageable(channel_id, guild_id=entries[0].guild_id)
        await channel.send(
            embeds=[entry_embed(e, locale, n) for n, e in enumerate(entries, start=1)],
            view=view if view.children else discord.utils.MISSING,
            allowed_mentions=NO_MENTIONS,
        )

    async def _warn_below(self, guild_id: int) -> float | None:
        return (await self.bot.services.guild(guild_id)).balance_warn_below

    async def post_balance(self, guild_id: int, changes: list[BalanceChange]) -> None:
        """A scheduled balance check found relays low, empty or recovered: say so in the log."""
        g = await self.bot.services.guild(guild_id)
        if g.log_channel is None:
            log.warning(
                "guild %s: relay balance %s, and no log channel to say so", guild_id, ", ".join(f"{c.relay} {c.after}" for c in changes)
            )
            return
        lines = [t(BALANCE_KEYS[c.after], g.locale, relay=c.relay) + balance_text(c.balance, g.locale) for c in changes]
        embed = discord.Embed(colour=discord.Colour.orange(), description="\n".join(lines)[:4096])
        channel = self.bot.get_partial_messageable(g.log_channel, guild_id=guild_id)
        await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(ModLogCog(bot))
