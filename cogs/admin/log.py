"""/admin log: the channel that receives the moderation log (cogs/modlog.py): an entry per
generation and per blocklist refusal. No channel: the log is off."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.guild_config import GuildSettings
from bot.i18n import t
from cogs.admin.common import AdminBase, locale_of, send
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k


def log_summary(g: GuildSettings, locale: str) -> str:
    if g.log_channel is None:
        return t("toolkit.log.off", locale)
    return t("toolkit.log.on", locale, channel=f"<#{g.log_channel}>")


class LogCommands(AdminBase):
    @app_commands.command(
        name=_k("toolkit.cmd.log", "log"), description=_k("toolkit.cmd.log.desc", "Where the moderation log goes (empty: no log)")
    )
    @app_commands.rename(channel=_k("admin.opt.channel", "channel"))
    @app_commands.describe(channel=_k("toolkit.opt.log_channel.desc", "A channel for moderators; leave empty to turn the log off"))
    async def log_channel(self, interaction: Interaction, channel: discord.TextChannel | None = None) -> None:
        if channel is not None:
            perms = channel.permissions_for(channel.guild.me)
            if not (perms.send_messages and perms.embed_links):
                await send(interaction, t("toolkit.log.cannot_post", locale_of(interaction), channel=channel.mention))
                return
        g = await self._update(interaction, lambda g: g.with_log_channel(channel.id if channel is not None else None))
        if g is not None:
            await send(interaction, "✅ " + log_summary(g, locale_of(interaction)))
