"""What the /admin commands share: the permission check, ephemeral answers, the one-line
summaries of each setting, the option choices, and :class:`AdminBase` (settings changes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.guild_config import ConfigError, GuildSettings
from bot.i18n import normalize_locale, t
from bot.relay.catalogue import BASE_RATIOS, EXTREME_RATIOS, MODELS, display_size
from bot.services import Services
from bot.usage import PERIODS
from cogs import render
from cogs.bot_types import Interaction, NanoBananaBot
from cogs.texts import command_text as _k

log = logging.getLogger(__name__)

AUTO = "auto"  # "back to the model's own default" in the defaults choices
NO_MENTIONS = discord.AllowedMentions.none()

THREAD_MODE_LABELS = {
    "requester": "admin.access.thread_mode.requester",
    "anyone": "admin.access.thread_mode.anyone",
}


class AdminRefusal(app_commands.CheckFailure):
    """Not allowed to run an admin command; shown translated by the error handler."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
        self.params: dict[str, Any] = {}


def may_administer(interaction: discord.Interaction[Any]) -> bool:
    perms = interaction.permissions
    return interaction.guild_id is not None and (perms.manage_guild or perms.administrator)


def locale_of(interaction: discord.Interaction[Any]) -> str:
    return normalize_locale(interaction.locale)


async def send(
    interaction: discord.Interaction[Any],
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    file: discord.File | None = None,
) -> None:
    """An ephemeral answer, whether or not the interaction was deferred."""
    kwargs: dict[str, Any] = {"ephemeral": True, "allowed_mentions": NO_MENTIONS}
    if content is not None:
        kwargs["content"] = content[:2000]
    if embed is not None:
        kwargs["embed"] = embed
    if file is not None:
        kwargs["file"] = file
    if interaction.response.is_done():
        await interaction.followup.send(**kwargs)
    else:
        await interaction.response.send_message(**kwargs)


async def refuse(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    await send(interaction, embed=render.error_embed(exc, locale_of(interaction)))


# --- text helpers ----------------------------------------------------------------------------------


def model_name(model: str) -> str:
    return render.model_label(model)


def size_name(model: str, size: str | None, locale: str) -> str:
    if size:
        return display_size(size)
    if MODELS.get(model) is not None and not MODELS[model].sizes:
        return t("admin.quota.fixed_size", locale)
    return t("admin.defaults.model_default", locale)


def limit_text(value: int | None, locale: str) -> str:
    return t("admin.quota.unlimited", locale) if value is None else t("admin.quota.credits", locale, credits=value)


def mentions(ids: Iterable[int], kind: str) -> str:
    return ", ".join(f"<{kind}{i}>" for i in sorted(ids))


def access_summary(g: GuildSettings, locale: str) -> str:
    return t(
        "admin.access.saved",
        locale,
        channels=mentions(g.allowed_channels, "#") or t("admin.access.everywhere", locale),
        roles=mentions(g.allowed_roles, "@&") or t("admin.access.everyone", locale),
        threads=t("admin.access.on", locale) if g.threads else t("admin.access.off", locale),
        thread_mode=t(THREAD_MODE_LABELS.get(g.thread_mode, "admin.access.thread_mode.requester"), locale),
    )


def defaults_summary(g: GuildSettings, locale: str) -> str:
    return t(
        "admin.defaults.saved",
        locale,
        model=model_name(g.default_model),
        ratio=g.default_ratio or t("admin.defaults.model_default", locale),
        size=size_name(g.default_model, g.default_size, locale),
    )


def models_summary(g: GuildSettings, locale: str) -> str:
    names = ", ".join(model_name(m) for m in g.allowed_models) or t("admin.models.all", locale)
    return t("admin.models.saved", locale, models=names)


def quota_summary(g: GuildSettings, locale: str) -> str:
    q = g.quota
    return t(
        "admin.quota.saved",
        locale,
        user_daily=limit_text(q.user_daily, locale),
        guild_daily=limit_text(q.guild_daily, locale),
        guild_monthly=limit_text(q.guild_monthly, locale),
    )


def plain(text: str) -> str:
    """A "saved" confirmation reused as an overview line: without its check mark."""
    return text.removeprefix("✅").lstrip()


def _ratio_choices() -> list[app_commands.Choice[str]]:
    choices = [app_commands.Choice(name=_k("admin.defaults.model_default", "the model's default"), value=AUTO)]
    choices += [app_commands.Choice(name=r, value=r) for r in BASE_RATIOS + EXTREME_RATIOS]
    return choices


def _size_choices(*, auto: bool) -> list[app_commands.Choice[str]]:
    choices = [app_commands.Choice(name=_k("admin.defaults.model_default", "the model's default"), value=AUTO)] if auto else []
    choices += [app_commands.Choice(name=display_size(s), value=s) for s in ("512", "1K", "2K", "4K")]
    return choices


MODEL_CHOICES = [app_commands.Choice(name=spec.label, value=spec.id) for spec in MODELS.values()]
THREAD_MODE_CHOICES = [
    app_commands.Choice(name=_k("admin.choice.thread_mode.requester", "Only the person who asked"), value="requester"),
    app_commands.Choice(name=_k("admin.choice.thread_mode.anyone", "Anyone in the thread"), value="anyone"),
]
PERIOD_CHOICES = [
    app_commands.Choice(name=_k("admin.choice.period.day", "Today"), value="day"),
    app_commands.Choice(name=_k("admin.choice.period.week", "Last 7 days"), value="week"),
    app_commands.Choice(name=_k("admin.choice.period.month", "This month"), value="month"),
    app_commands.Choice(name=_k("admin.choice.period.30d", "Last 30 days"), value="30d"),
]
assert {c.value for c in PERIOD_CHOICES} == set(PERIODS)


def toggled(ids: Iterable[int], item: int, allow: bool) -> set[int]:
    """``ids`` with ``item`` added (allow) or removed: every allow/deny option of /admin."""
    out = set(ids)
    (out.add if allow else out.discard)(item)
    return out


class AdminBase(commands.Cog):
    """What every /admin command group reaches: the bot's services and a settings change.

    Each group of /admin is a subclass; :class:`cogs.admin.Admin` joins them into one GroupCog
    (discord.py collects a cog's commands from all its base classes)."""

    bot: NanoBananaBot

    @property
    def services(self) -> Services:
        return self.bot.services

    async def _update(self, interaction: Interaction, change: Callable[[GuildSettings], GuildSettings]) -> GuildSettings | None:
        """Apply a settings change; a ConfigError becomes a translated refusal (None)."""
        assert interaction.guild_id is not None
        try:
            return await self.services.guilds.update(interaction.guild_id, change)
        except ConfigError as exc:
            await refuse(interaction, exc)
            return None
