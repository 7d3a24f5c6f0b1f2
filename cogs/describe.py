"""/describe and the "Describe image" message menu: a picture becomes a prompt, through the
server's first Gemini-format relay in text mode (bot/describe.py).

Describing costs no credits (one short text answer), so it is held to one request per member
every ``COOLDOWN_S`` seconds instead; access rules apply as for /imagine.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands, ui
from discord.ext import commands

from bot.describe import DescribeError, describe_with
from bot.i18n import t
from bot.refusal import Refusal
from cogs import render
from cogs.failures import report_failure
from cogs.install import scope_id
from cogs.intake import check_attachments, read_attachment, role_ids
from cogs.language import member_locale
from cogs.texts import command_text as _k

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)
COOLDOWN_S = 15.0


class Describe(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        # Installs and contexts as for every member command (cogs/install.py configures them).
        self.menu = app_commands.ContextMenu(name=_k("creative.menu.describe_image", "Describe image"), callback=self.describe_message)
        self._last: dict[int, float] = {}  # member -> when their last describe started (monotonic)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.add_dynamic_items(ImagineThisButton)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        self.bot.remove_dynamic_items(ImagineThisButton)

    @app_commands.command(
        name=_k("creative.cmd.describe", "describe"),
        description=_k("creative.cmd.describe.desc", "Turn a picture into a prompt you can imagine again"),
    )
    @app_commands.rename(image=_k("creative.opt.image", "image"))
    @app_commands.describe(image=_k("creative.opt.image.desc", "The picture to describe"))
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
        locale = await member_locale(interaction)
        try:
            self._hold(interaction.user.id)
            check_attachments([attachment])
            g = await svc.guild(scope_id(interaction))
            roles = role_ids(interaction.user)
            await svc.authorize(scope_id(interaction), interaction.channel_id, interaction.user.id, roles, g.default_model)
            await interaction.response.defer(ephemeral=True, thinking=True)
            image = await svc.identify_image(await read_attachment(attachment), attachment.filename)
            prompt = await describe_with(
                svc.relay_client, await svc.relay_order(scope_id(interaction)), g.default_model, image, locale=locale
            )
        except Exception as exc:  # noqa: BLE001 - every failure gets a translated answer
            await report_failure(interaction, exc)
            return
        embed = discord.Embed(colour=render.BRAND, title=t("describe.title", locale), description=f"```\n{prompt.replace('`', 'ˋ')}\n```")
        view = ui.View(timeout=None)
        view.add_item(ImagineThisButton(interaction.user.id, label=t("button.imagine_this", locale)))
        await interaction.followup.send(embed=embed, view=view, ephemeral=True)


def described_prompt(message: discord.Message | None) -> str:
    """The prompt a description message shows (in its code block), or ""."""
    text = message.embeds[0].description or "" if message is not None and message.embeds else ""
    return text.strip().removeprefix("```").removesuffix("```").strip()


class PromptModal(ui.Modal):
    """The described prompt, to change before it is imagined."""

    def __init__(self, locale: str, prompt: str) -> None:
        super().__init__(title=t("button.imagine_this", locale)[:45], timeout=900)
        self.prompt: ui.TextInput[PromptModal] = ui.TextInput(
            label=t("describe.title", locale)[:45], style=discord.TextStyle.paragraph, default=prompt[:4000], max_length=4000
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        imagine = interaction.client.get_cog("Imagine")
        if imagine is None:
            await interaction.response.send_message(t("describe.failed", await member_locale(interaction)), ephemeral=True)
            return
        await imagine.imagine_prompt(interaction, self.prompt.value)


class ImagineThisButton(ui.DynamicItem[ui.Button], template=r"nb:imagine-this:(?P<user>\d+)"):
    """Under a description: the prompt in a form, then /imagine with it. The prompt is read
    from the message itself, so the button works after a restart."""

    def __init__(self, user_id: int, *, label: str = "") -> None:
        super().__init__(
            ui.Button(label=label or "Imagine this", emoji="🎨", style=discord.ButtonStyle.primary, custom_id=f"nb:imagine-this:{user_id}")
        )
        self.user_id = user_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> ImagineThisButton:
        return cls(int(match["user"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> Any:
        locale = await member_locale(interaction)
        prompt = described_prompt(interaction.message)
        if not prompt:
            await interaction.response.send_message(t("describe.no_prompt", locale), ephemeral=True)
            return
        await interaction.response.send_modal(PromptModal(locale, prompt))


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Describe(bot))
