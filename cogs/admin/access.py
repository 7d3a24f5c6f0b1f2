"""/admin access: where the bot works, who may use it, and who may continue a result's thread
(no channels or roles listed: everywhere, everyone)."""

from __future__ import annotations

from collections.abc import Callable

import discord
from discord import app_commands

from bot.guild_config import GuildSettings
from bot.i18n import t
from cogs.admin.common import THREAD_MODE_CHOICES, AdminBase, access_summary, locale_of, send, toggled
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k


class AccessCommands(AdminBase):
    access = app_commands.Group(
        name=_k("admin.cmd.access", "access"),
        description=_k("admin.cmd.access.desc", "Where the bot works, who may use it, and who may continue a thread"),
    )

    @access.command(
        name=_k("admin.cmd.access_channel", "channel"),
        description=_k("admin.cmd.access_channel.desc", "Allow the bot in a channel, or stop allowing it (none listed: everywhere)"),
    )
    @app_commands.rename(channel=_k("admin.opt.channel", "channel"), allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(channel=_k("admin.opt.channel.desc", "A channel"), allow=_k("admin.opt.allow.desc", "Add (on) or remove (off)"))
    async def access_channel(self, interaction: Interaction, channel: discord.TextChannel, allow: bool) -> None:
        await self._save_access(interaction, lambda g: g.with_access(channels=toggled(g.allowed_channels, channel.id, allow)))

    @access.command(
        name=_k("admin.cmd.access_role", "role"),
        description=_k("admin.cmd.access_role.desc", "Let a role use the bot, or stop letting it (none listed: everyone)"),
    )
    @app_commands.rename(role=_k("admin.opt.role", "role"), allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(role=_k("admin.opt.role.desc", "A role"), allow=_k("admin.opt.allow.desc", "Add (on) or remove (off)"))
    async def access_role(self, interaction: Interaction, role: discord.Role, allow: bool) -> None:
        await self._save_access(interaction, lambda g: g.with_access(roles=toggled(g.allowed_roles, role.id, allow)))

    @access.command(
        name=_k("admin.cmd.access_threads", "threads"),
        description=_k("admin.cmd.access_threads.desc", "Open a thread on each result, and who may continue it"),
    )
    @app_commands.rename(threads=_k("admin.opt.threads", "threads"), thread_mode=_k("admin.opt.thread_mode", "thread_mode"))
    @app_commands.describe(
        threads=_k("admin.opt.threads.desc", "Open a thread on each result"),
        thread_mode=_k("admin.opt.thread_mode.desc", "Who may continue a picture in its thread"),
    )
    @app_commands.choices(thread_mode=THREAD_MODE_CHOICES)
    async def access_threads(self, interaction: Interaction, threads: bool | None = None, thread_mode: str | None = None) -> None:
        await self._save_access(interaction, lambda g: g.with_access(threads=threads, thread_mode=thread_mode))

    @access.command(
        name=_k("install.admin.cmd.user_installs", "user_installs"),
        description=_k("install.admin.cmd.user_installs.desc", "Let members use their own install of the bot here, or only the server's"),
    )
    @app_commands.rename(allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(allow=_k("install.admin.opt.allow.desc", "On: members' own installs work here; off: refused"))
    async def access_user_installs(self, interaction: Interaction, allow: bool) -> None:
        g = await self._update(interaction, lambda g: g.with_access(user_installs=allow))
        if g is not None:
            await send(interaction, t("install.admin.saved.on" if g.user_installs else "install.admin.saved.off", locale_of(interaction)))

    async def _save_access(self, interaction: Interaction, change: Callable[[GuildSettings], GuildSettings]) -> None:
        """Apply an access change and answer with the access rules as they now stand."""
        g = await self._update(interaction, change)
        if g is not None:
            await send(interaction, access_summary(g, locale_of(interaction)))
