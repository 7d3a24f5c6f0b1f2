"""/admin style add · remove · list (the server's styles) and /admin variants (how many
pictures one /imagine makes by default, and at most)."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.i18n import t
from bot.preferences import ServerCreative
from bot.refusal import Refusal
from bot.relay.catalogue import display_size
from bot.relay.types import InputImage
from bot.styles import SERVER
from cogs.admin.common import AdminBase, _ratio_choices, _size_choices, locale_of, plain, refuse, send
from cogs.bot_types import Interaction
from cogs.intake import read_attachment
from cogs.texts import command_text as _k


class StyleCommands(AdminBase):
    style = app_commands.Group(name=_k("admin.cmd.style", "style"), description=_k("admin.cmd.style.desc", "The server's styles"))

    @style.command(name=_k("admin.cmd.style_add", "add"), description=_k("admin.cmd.style_add.desc", "Add or replace a server style"))
    @app_commands.rename(
        name=_k("admin.opt.style_name", "name"),
        template=_k("admin.opt.template", "template"),
        image1=_k("opt.image1", "image1"),
        image2=_k("opt.image2", "image2"),
        aspect_ratio=_k("admin.opt.aspect_ratio", "aspect_ratio"),
        size=_k("admin.opt.size", "size"),
    )
    @app_commands.describe(
        name=_k("admin.opt.style_name.desc", "The style's name, as members pick it"),
        template=_k("admin.opt.template.desc", "The prompt template; it must hold the member's prompt placeholder once"),
        image1=_k("admin.opt.style_image.desc", "A reference picture every use of the style sends"),
        image2=_k("admin.opt.style_image.desc", "A reference picture every use of the style sends"),
        aspect_ratio=_k("admin.opt.style_ratio.desc", "The style's shape, unless the member picks one"),
        size=_k("admin.opt.style_size.desc", "The style's resolution, unless the member picks one"),
    )
    @app_commands.choices(aspect_ratio=_ratio_choices(), size=_size_choices(auto=False))
    async def style_add(
        self,
        interaction: Interaction,
        name: str,
        template: str,
        image1: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        aspect_ratio: str | None = None,
        size: str | None = None,
    ) -> None:
        assert interaction.guild_id is not None  # /admin is guild-only
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            images = [await self._picture(a) for a in (image1, image2) if a is not None]
            saved = await self.services.styles.save(
                interaction.guild_id, name, template, created_by=interaction.user.id, images=images, aspect_ratio=aspect_ratio, size=size
            )
        except Refusal as exc:
            await refuse(interaction, exc)
            return
        await send(interaction, t("style.saved", locale_of(interaction), name=plain(saved.name)))

    async def _picture(self, attachment: discord.Attachment) -> InputImage:
        return await self.services.identify_image(await read_attachment(attachment), attachment.filename)

    @style.command(name=_k("admin.cmd.style_remove", "remove"), description=_k("admin.cmd.style_remove.desc", "Remove a server style"))
    @app_commands.rename(name=_k("admin.opt.style_name", "name"))
    @app_commands.describe(name=_k("admin.opt.style_name.desc", "The style's name, as members pick it"))
    async def style_remove(self, interaction: Interaction, name: str) -> None:
        assert interaction.guild_id is not None
        locale = locale_of(interaction)
        if await self.services.styles.remove(interaction.guild_id, name):
            await send(interaction, t("style.removed", locale, name=plain(name)))
        else:
            await send(interaction, t("style.gone", locale, name=plain(name)))

    @style_remove.autocomplete("name")
    async def server_style_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        found = await self.services.styles.autocomplete(interaction.guild_id, SERVER, current)
        return [app_commands.Choice(name=s.name, value=s.name) for s in found if not s.personal]

    @style.command(name=_k("admin.cmd.style_list", "list"), description=_k("admin.cmd.style_list.desc", "The server's styles"))
    async def style_list(self, interaction: Interaction) -> None:
        locale = locale_of(interaction)
        found = [s for s in await self.services.styles.visible(interaction.guild_id, SERVER) if not s.personal]
        lines = [
            t(
                "admin.style.line",
                locale,
                name=plain(s.name),
                template=plain(s.template),
                images=len(s.images),
                shape=" · ".join(x for x in (s.aspect_ratio, display_size(s.size) if s.size else None) if x) or "—",
            )
            for s in found
        ]
        await send(interaction, "\n".join(lines) or t("admin.style.none", locale))

    @app_commands.command(
        name=_k("admin.cmd.variants", "variants"),
        description=_k("admin.cmd.variants.desc", "How many pictures one /imagine makes by default, and at most"),
    )
    @app_commands.rename(default=_k("admin.opt.variants_default", "default"), maximum=_k("admin.opt.variants_max", "maximum"))
    @app_commands.describe(
        default=_k("admin.opt.variants_default.desc", "Pictures per /imagine when the member asks no count"),
        maximum=_k("admin.opt.variants_max.desc", "The most a member may ask for (each is charged)"),
    )
    async def variants(
        self, interaction: Interaction, default: app_commands.Range[int, 1, 4], maximum: app_commands.Range[int, 1, 4]
    ) -> None:
        assert interaction.guild_id is not None
        prefs = self.services.preferences
        current = await prefs.server(interaction.guild_id)
        wanted = ServerCreative(variants_default=default, variants_max=maximum, max_size=current.max_size)
        try:
            await prefs.save_server(interaction.guild_id, wanted)
        except Refusal as exc:
            await refuse(interaction, exc)
            return
        await send(interaction, t("admin.variants.saved", locale_of(interaction), default=default, maximum=maximum))
