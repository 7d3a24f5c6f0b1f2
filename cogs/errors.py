"""One tree-level error handler (users see a short translated reason, logs keep the detail)
and the owner-only command sync."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import normalize_locale, t
from cogs import install, render
from cogs.failures import is_user_facing
from cogs.language import member_locale

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)


def reason_for(error: app_commands.AppCommandError, locale: str) -> str:
    original = getattr(error, "original", error)
    if isinstance(error, app_commands.MissingPermissions):
        return t("cmd_error.missing_permissions", locale, permissions=", ".join(error.missing_permissions))
    if isinstance(error, app_commands.BotMissingPermissions):
        return t("cmd_error.bot_missing_permissions", locale, permissions=", ".join(error.missing_permissions))
    if isinstance(error, app_commands.NoPrivateMessage):
        return t("cmd_error.guild_only", locale)
    if isinstance(error, app_commands.CommandOnCooldown):
        return t("cmd_error.cooldown", locale, seconds=f"{error.retry_after:.0f}")
    if is_user_facing(original):
        return render.error_text(original, locale)
    if isinstance(error, app_commands.CheckFailure):
        return t("cmd_error.not_allowed", locale)
    if isinstance(original, discord.Forbidden):
        return t("cmd_error.discord_forbidden", locale)
    if isinstance(original, discord.HTTPException):
        return t("cmd_error.discord_failed", locale)
    return t("cmd_error.unexpected", locale)


class Errors(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error
        bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]
        self._previous_check = bot.tree.interaction_check
        bot.tree.interaction_check = self.install_check  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous  # type: ignore[method-assign]
        self.bot.tree.interaction_check = self._previous_check  # type: ignore[method-assign]

    async def install_check(self, interaction: discord.Interaction[NanoBananaBot]) -> bool:
        """Every command: a user-installed use the operator or the server does not allow is
        refused here, translated, before the command runs (so nothing is charged)."""
        return not await install.refused(interaction)

    async def on_app_command_error(self, interaction: discord.Interaction[NanoBananaBot], error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if not is_user_facing(original) and not isinstance(error, (app_commands.CheckFailure, app_commands.CommandOnCooldown)):
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("command %s failed", command, exc_info=original)
        locale = await member_locale(interaction)
        embed = discord.Embed(colour=render.ERROR, description="⚠️ " + reason_for(error, locale))
        await render.reply_privately(interaction, embed)

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context[NanoBananaBot], error: commands.CommandError) -> None:
        # Mentioning the bot is how members talk to it in threads, so a "command" that does not
        # exist is just a message for the conversation cog, not an error.
        if isinstance(error, (commands.CommandNotFound, commands.NotOwner, commands.CheckFailure)):
            return
        log.error("prefix command %s failed", ctx.command, exc_info=error)

    @commands.command(name="sync", hidden=True)
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[NanoBananaBot]) -> None:
        """@bot sync — re-sync application commands even if unchanged (owner only)."""
        await self.bot.sync_commands_if_changed(force=True)
        locale = normalize_locale(ctx.guild.preferred_locale if ctx.guild else None)
        await ctx.reply(t("owner.synced", locale), mention_author=False)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Errors(bot))
