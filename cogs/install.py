"""Where an interaction comes from, for a bot that members may also install on their own account.

Discord offers an app's commands through two installs: the server's (integration type 0) and
a member's own (type 1, "user install"), in three contexts: a server (0), the bot's DM (1) and
other private channels such as group DMs (2). A user-installed command also works in servers
the bot is not a member of. This module answers, for every cog:

- :func:`scope_id`: whose rules, quota and relay apply — the server's when the bot is in it,
  else None, the personal scope (bot.quota: the operator's relay, ``NB_USER_DAILY``);
- :func:`bot_can_post`: whether results are posted with the bot's own token (a server it is
  in), else only through the interaction's responses and followups (then by DM, after 15 min);
- :func:`refusal`: a user-installed request the operator (``NB_USER_INSTALL=off``) or the
  server (``/admin access user_installs``) does not allow, answered before anything is charged;
- :func:`configure`: each command's registered installs and contexts (``/admin`` stays a
  server-install command in servers only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import rules
from bot.i18n import t

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

# Commands kept to a server, through its install, whatever the operator allows.
SERVER_ONLY = frozenset({"admin"})


def user_installed(interaction: discord.Interaction[Any]) -> bool:
    """Authorized only by the member's own install (not the server's, nor the bot's DM
    through the server install, whose owner id Discord gives as 0)."""
    owners = getattr(interaction, "_integration_owners", {}) or {}
    return 1 in owners and 0 not in owners


def in_server(interaction: discord.Interaction[Any]) -> bool:
    """The interaction comes from a server the bot is a member of. A server the bot is not in
    is known only from the interaction (no gateway cache): discord.py's ``interaction.guild``
    is then a stand-in built from the payload, so the client's cache is asked."""
    return interaction.guild_id is not None and interaction.client.get_guild(interaction.guild_id) is not None


def scope_id(interaction: discord.Interaction[Any]) -> int | None:
    """The server whose settings, quota and relays apply; None: the personal scope."""
    return interaction.guild_id if in_server(interaction) else None


def bot_can_post(interaction: discord.Interaction[Any]) -> bool:
    """Results are posted with the bot's own token: only in a server the bot is in. In a group
    DM or a server it is not in Discord answers a bot post 403 50001, so results go through
    the interaction there; in the bot's own DM too, so the result answers the command in place
    (the DM is where a result goes once the interaction's token has died)."""
    return in_server(interaction)


async def refusal(interaction: discord.Interaction[NanoBananaBot]) -> str | None:
    """The translation key refusing this user-installed request, or None (bot.rules decides)."""
    if not user_installed(interaction):
        return None
    bot = interaction.client
    server = in_server(interaction)
    allows = (await bot.services.guild(interaction.guild_id)).user_installs if server else True
    return rules.install_refusal(user_install_on=bot.settings.user_install, user_installed=True, in_server=server, server_allows=allows)


async def refused(interaction: discord.Interaction[NanoBananaBot]) -> bool:
    """Answer a refused user-installed request privately (True); nothing has been charged."""
    key = await refusal(interaction)
    if key is None:
        return False
    from cogs.language import member_locale  # here: language.py asks this module for scope_id

    text = t(key, await member_locale(interaction))
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)
    return True


def configure(tree: app_commands.CommandTree[Any], *, user_install: bool) -> None:
    """Every command's installs and contexts, before the sync (the sync hash covers them).
    With user installs on, member commands are offered through both installs in servers, the
    bot's DM and private channels; off, through the server's install in servers only, as
    before user installs existed."""
    for command in tree.get_commands():
        everywhere = user_install and command.name not in SERVER_ONLY
        command.allowed_installs = app_commands.AppInstallationType(guild=True, user=everywhere)
        command.allowed_contexts = app_commands.AppCommandContext(guild=True, dm_channel=everywhere, private_channel=everywhere)
        command.guild_only = not everywhere  # discord.py sends it as dm_permission


async def setup(bot: NanoBananaBot) -> None:
    """Loaded after every feature (bot.app.COGS): their commands exist by now."""
    configure(bot.tree, user_install=bot.settings.user_install)
