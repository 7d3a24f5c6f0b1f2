"""/admin: a server's relays, defaults, access rules, credit quotas and usage report.

Command tree (English names; zh-CN clients see the catalog's translations)::

    /admin relay    add · edit · list · test · remove · order      relays.py (the form: relay_form.py)
    /admin defaults set · models                                    defaults.py
    /admin access   channel · role · threads                        access.py
    /admin safety   block · unblock · list · nsfw-model · spoiler · threshold   safety.py
    /admin quota    limits · cost · role-bonus · exempt             quotas.py
    /admin usage · /admin settings                                  overview.py
    /admin log                                                      log.py (the log itself: cogs/modlog.py)

``default_permissions(manage_guild)`` only hides the command; a server owner can hand it to
anyone in the integration settings. So :meth:`Admin.interaction_check` checks Manage Server on
every subcommand. Every reply is ephemeral and in the invoking member's language.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs.admin.access import AccessCommands
from cogs.admin.common import AdminRefusal, may_administer
from cogs.admin.defaults import DefaultsCommands
from cogs.admin.log import LogCommands
from cogs.admin.overview import OverviewCommands
from cogs.admin.quotas import QuotaCommands
from cogs.admin.relay_form import GATEWAY_LOGGERS, RelayFormLogFilter
from cogs.admin.relays import RelayCommands
from cogs.admin.safety import SafetyCommands
from cogs.admin.styles import StyleCommands
from cogs.bot_types import NanoBananaBot
from cogs.texts import command_text as _k

__all__ = ["Admin", "setup"]


# discord.py collects a cog's commands base class first (its reversed MRO): the groups are
# listed in the order /admin shows them, the last base first.
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(
    LogCommands,
    StyleCommands,
    OverviewCommands,
    QuotaCommands,
    SafetyCommands,
    AccessCommands,
    DefaultsCommands,
    RelayCommands,
    commands.GroupCog,
    group_name=_k("admin.cmd.admin", "admin"),
    group_description=_k("admin.cmd.admin.desc", "Set up the bot for this server"),
):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self.log_filter = RelayFormLogFilter()
        super().__init__()

    async def cog_load(self) -> None:
        for name in GATEWAY_LOGGERS:
            logging.getLogger(name).addFilter(self.log_filter)

    async def cog_unload(self) -> None:
        for name in GATEWAY_LOGGERS:
            logging.getLogger(name).removeFilter(self.log_filter)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.guild_id is None:
            raise AdminRefusal("admin.guild_only")
        if not may_administer(interaction):
            raise AdminRefusal("admin.not_allowed")
        return True


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Admin(bot))
