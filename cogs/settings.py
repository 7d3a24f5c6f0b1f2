"""/settings: a member's own defaults in this server, shown and changed with components.

One ephemeral panel: a menu picks the setting, a second menu offers that setting's values
(only what this server allows and the chosen model takes), buttons toggle "results only to
me" and reset everything. Each component is a ``DynamicItem`` carrying the member (and the
setting), so a panel keeps working after a restart; the values live in SQLite.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands, ui
from discord.ext import commands

from bot import rules
from bot.i18n import t
from bot.preferences import Effective, Preferences
from bot.refusal import Refusal
from bot.relay.catalogue import MODELS, display_size
from cogs import render
from cogs.failures import report_failure
from cogs.install import scope_id
from cogs.language import chose, member_locale
from cogs.texts import command_text as _k

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

FIELDS = ("model", "aspect_ratio", "size", "variants", "style", "locale")
DEFAULT = "-"  # the "server default" choice (no model, ratio or size is spelled like it)
LABELS = {f: f"prefs.field.{f}" for f in FIELDS}
PLACEHOLDERS = {f: f"prefs.placeholder.{f}" for f in FIELDS}
DROPPED = {f: f"prefs.dropped.{f}" for f in FIELDS if f != "style"}
LANGUAGES = {"en": "prefs.locale.en", "zh-CN": "prefs.locale.zh-CN"}


def _shown(name: str, value: object, locale: str) -> str:
    if value is None:
        return "—"
    if name == "model":
        return render.model_label(str(value))
    if name == "size":
        return display_size(str(value))
    if name == "locale":
        return t(LANGUAGES.get(str(value), "prefs.locale.discord"), locale)
    return str(value)


def panel_embed(prefs: Preferences, eff: Effective, locale: str) -> discord.Embed:
    embed = discord.Embed(colour=render.BRAND, title=t("prefs.title", locale))
    for name in FIELDS:
        mine = getattr(prefs, name)
        used = _shown(name, getattr(eff, name), locale)
        value = used if mine is not None and name not in eff.dropped else f"{used} ({t('prefs.server_default', locale)})"
        embed.add_field(name=t(LABELS[name], locale), value=value, inline=True)
    private = t("prefs.private.on" if prefs.private else "prefs.private.off", locale)
    embed.add_field(name=t("prefs.field.private", locale), value=private, inline=False)
    notes = [t(DROPPED[name], locale, maximum=eff.variants) for name in eff.dropped if name in DROPPED]
    if notes:
        embed.description = "\n".join(f"⚠️ {n}" for n in notes)
    return embed


async def _choices(interaction: discord.Interaction[Any], name: str, eff: Effective, locale: str) -> list[tuple[str, str]]:
    """(value, label) pairs a member may pick for ``name`` here, the server default first."""
    svc = interaction.client.services
    out = [(DEFAULT, t("prefs.locale.discord" if name == "locale" else "prefs.server_default", locale))]
    spec = MODELS.get(eff.model)
    if name == "model":
        g = await svc.guild(scope_id(interaction))
        out += [(m, render.model_label(m)) for m in MODELS if rules.model_allowed(g.allowed_models, m)]
    elif name == "aspect_ratio" and spec is not None:
        out += [(r, r) for r in spec.aspect_ratios]
    elif name == "size" and spec is not None:
        out += [(s, display_size(s)) for s in spec.sizes]
    elif name == "variants":
        creative = await svc.preferences.server(scope_id(interaction))
        out += [(str(n), str(n)) for n in range(1, creative.variants_max + 1)]
    elif name == "style":
        # One option per name (a member's own style hides the server's of that name, as when
        # it is used): Discord refuses a menu whose options share a value.
        styles = await svc.styles.autocomplete(scope_id(interaction), interaction.user.id, "", limit=24)
        out += [(s.name, f"{s.name} ({t('style.personal' if s.personal else 'style.server', locale)})") for s in styles]
    elif name == "locale":
        out += [(code, t(key, locale)) for code, key in LANGUAGES.items()]
    return out[:25]  # Discord's limit per menu


class FieldMenu(ui.DynamicItem[ui.Select], template=r"nb:set:f:(?P<user>\d+)"):
    def __init__(self, user_id: int, options: list[discord.SelectOption] | None = None, placeholder: str = "") -> None:
        opts = options or [discord.SelectOption(label=f, value=f) for f in FIELDS]
        super().__init__(ui.Select(custom_id=f"nb:set:f:{user_id}", options=opts, placeholder=placeholder))
        self.user_id = user_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> FieldMenu:
        return cls(int(match["user"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> Any:
        await show(interaction, self.user_id, field=self.item.values[0] if self.item.values else None, edit=True)


class ValueMenu(ui.DynamicItem[ui.Select], template=r"nb:set:v:(?P<user>\d+):(?P<field>[a-z_]+)"):
    def __init__(self, user_id: int, field: str, options: list[discord.SelectOption] | None = None, placeholder: str = "") -> None:
        opts = options or [discord.SelectOption(label=DEFAULT, value=DEFAULT)]
        super().__init__(ui.Select(custom_id=f"nb:set:v:{user_id}:{field}", options=opts, placeholder=placeholder))
        self.user_id, self.field = user_id, field

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> ValueMenu:
        return cls(int(match["user"]), match["field"])

    async def callback(self, interaction: discord.Interaction[Any]) -> Any:
        value = self.item.values[0] if self.item.values else DEFAULT
        await show(interaction, self.user_id, field=self.field, change=(self.field, None if value == DEFAULT else value), edit=True)


class ActionButton(ui.DynamicItem[ui.Button], template=r"nb:set:(?P<action>private|reset):(?P<user>\d+)"):
    def __init__(self, user_id: int, action: str, label: str = "", style: discord.ButtonStyle = discord.ButtonStyle.secondary) -> None:
        super().__init__(ui.Button(label=label or action, style=style, custom_id=f"nb:set:{action}:{user_id}"))
        self.user_id, self.action = user_id, action

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> ActionButton:
        return cls(int(match["user"]), match["action"])

    async def callback(self, interaction: discord.Interaction[Any]) -> Any:
        await show(interaction, self.user_id, change=(self.action, None), edit=True)


async def _apply(interaction: discord.Interaction[Any], change: tuple[str, str | None]) -> None:
    prefs = interaction.client.services.preferences
    name, value = change
    if name == "reset":
        await prefs.reset(scope_id(interaction), interaction.user.id)
    elif name == "private":
        mine = await prefs.get(scope_id(interaction), interaction.user.id)
        await prefs.set(scope_id(interaction), interaction.user.id, "private", not mine.private)
    elif name == "style" and value is not None:
        style = await interaction.client.services.styles.resolve(scope_id(interaction), interaction.user.id, value)
        await prefs.set(scope_id(interaction), interaction.user.id, "style", style.name)
    else:
        await prefs.set(scope_id(interaction), interaction.user.id, name, value)


def _view(user_id: int, field: str | None, choices: list[tuple[str, str]], current: object, locale: str, private: bool) -> ui.View:
    view = ui.View(timeout=None)
    fields = [discord.SelectOption(label=t(LABELS[f], locale), value=f, default=f == field) for f in FIELDS]
    view.add_item(FieldMenu(user_id, fields, placeholder=t("prefs.placeholder.field", locale)))
    if field is not None:
        shown = DEFAULT if current is None else str(current)
        options = [discord.SelectOption(label=label[:100], value=value, default=value == shown) for value, label in choices]
        view.add_item(ValueMenu(user_id, field, options, placeholder=t(PLACEHOLDERS[field], locale)))
    on = discord.ButtonStyle.success if private else discord.ButtonStyle.secondary
    view.add_item(ActionButton(user_id, "private", t("prefs.button.private", locale), on))
    view.add_item(ActionButton(user_id, "reset", t("prefs.button.reset", locale), discord.ButtonStyle.danger))
    return view


async def show(
    interaction: discord.Interaction[Any],
    user_id: int,
    *,
    field: str | None = None,
    change: tuple[str, str | None] | None = None,
    edit: bool,
) -> None:
    """Apply ``change`` (if any) and answer with the panel (new, or the clicked one edited)."""
    svc = interaction.client.services
    try:
        if interaction.user.id != user_id:
            raise Refusal("not this member's panel", key="prefs.not_yours")
        if change is not None:
            await _apply(interaction, change)
        prefs = await svc.preferences.get(scope_id(interaction), user_id)
        chose(interaction, prefs.locale)  # a language chosen just now shows on this very panel
        locale = await member_locale(interaction)
        eff = await svc.preferences.effective(scope_id(interaction), user_id, await svc.guild(scope_id(interaction)))
        choices = await _choices(interaction, field, eff, locale) if field in FIELDS else []
    except Exception as exc:  # noqa: BLE001 - every failure gets a translated answer
        await report_failure(interaction, exc)
        return
    field = field if field in FIELDS else None
    embed = panel_embed(prefs, eff, locale)
    view = _view(user_id, field, choices, getattr(prefs, field) if field else None, locale, prefs.private)
    if edit:
        await interaction.response.edit_message(embed=embed, view=view)
    else:
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True)


class Settings(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(FieldMenu, ValueMenu, ActionButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(FieldMenu, ValueMenu, ActionButton)

    @app_commands.command(
        name=_k("creative.cmd.settings", "settings"),
        description=_k("creative.cmd.settings.desc", "Your own defaults: model, shape, size, variants, style, language, private results"),
    )
    async def settings(self, interaction: discord.Interaction[NanoBananaBot]) -> None:
        await show(interaction, interaction.user.id, edit=False)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Settings(bot))
