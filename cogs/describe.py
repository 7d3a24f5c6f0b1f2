"""/describe and the "Describe image" message menu: a picture becomes a prompt, through the
server's first Gemini-format relay in text mode (bot/describe.py).

Describing costs no credits (one short text answer), so it is held to one request per member
every ``COOLDOWN_S`` seconds instead; access rules apply as for /imagine.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.describe import DescribeError, describe_with
from bot.i18n import normalize_locale, t
from bot.refusal import Refusal
from bot.relay.types import RelayConfig
from cogs import render
from cogs.failures import report_failure
from cogs.intake import check_attachments, read_attachment, role_ids
from cogs.texts import command_text as _k

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)
COOLDOWN_S = 15.0


async def _relays(svc: Any, guild_id: int | None) -> list[RelayConfig]:
    """The server's relays in failover order, else the operator's shared relay."""
    entries = await svc.relays.entries(guild_id) if guild_id else []
    if entries:
        return [e.config for e in entries]
    default = svc.pool.default_relay()
    return [default] if default is not None and svc.settings.share_default_relay else []


class Describe(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(
            name=_k("creative.menu.describe_image", "Describe image"),
            callback=self.describe_message,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )
        self.menu.guild_only = True
        self._last: dict[int, float] = {}  # member -> when their last describe started (monotonic)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(
        name=_k("creative.cmd.describe", "describe"),
        description=_k("creative.cmd.describe.desc", "Turn a picture into a prompt you can imagine again"),
    )
    @app_commands.rename(image=_k("creative.opt.image", "image"))
    @app_commands.describe(image=_k("creative.opt.image.desc", "The picture to describe"))
    @app_commands.guild_only()
    async def describe(self, interaction: discord.Interaction[NanoBananaBot], image: discord.Attachment) -> None:
        await self.run(interaction, image)

    async def describe_message(self, interaction: discord.Interaction[NanoBananaBot], message: discord.Message) -> None:
        pictures = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        if not pictures:
            await report_failure(interaction, DescribeError("no picture", key="describe.no_image"))
            return
        await self.run(interaction, pictures[0])

    def _hold(self, user_id: int) -> None:
        """One describe per member every COOLDOWN_S seconds (the slash command and the menu alike)."""
        now = time.monotonic()
        wait = self._last.get(user_id, -COOLDOWN_S) + COOLDOWN_S - now
        if wait > 0:
            raise Refusal("describing too often", key="describe.cooldown", seconds=math.ceil(wait))
        self._last = {u: at for u, at in self._last.items() if now - at < COOLDOWN_S}  # stays small
        self._last[user_id] = now

    async def run(self, interaction: discord.Interaction[Any], attachment: discord.Attachment) -> None:
        svc = interaction.client.services
        locale = normalize_locale(interaction.locale)
        try:
            self._hold(interaction.user.id)
            check_attachments([attachment])
            g = await svc.guild(interaction.guild_id)
            roles = role_ids(interaction.user)
            await svc.authorize(interaction.guild_id, interaction.channel_id, interaction.user.id, roles, g.default_model)
            await interaction.response.defer(ephemeral=True, thinking=True)
            image = await svc.identify_image(await read_attachment(attachment), attachment.filename)
            prompt = await describe_with(svc.relay_client, await _relays(svc, interaction.guild_id), g.default_model, image, locale=locale)
        except Exception as exc:  # noqa: BLE001 - every failure gets a translated answer
            await report_failure(interaction, exc)
            return
        embed = discord.Embed(colour=render.BRAND, title=t("describe.title", locale), description=f"```\n{prompt.replace('`', 'ˋ')}\n```")
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Describe(bot))
