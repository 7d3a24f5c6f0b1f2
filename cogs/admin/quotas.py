"""/admin quota: credit limits, the cost of a picture by model and size, role bonuses and
exempt roles."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.guild_config import GuildSettings
from bot.i18n import t
from bot.pricing import canonical_size
from cogs.admin.common import (
    MODEL_CHOICES,
    AdminBase,
    _size_choices,
    locale_of,
    model_name,
    quota_summary,
    send,
    size_name,
    toggled,
)
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k


class QuotaCommands(AdminBase):
    quota = app_commands.Group(
        name=_k("admin.cmd.quota", "quota"), description=_k("admin.cmd.quota.desc", "Credit limits per member and for the whole server")
    )

    @quota.command(
        name=_k("admin.cmd.quota_limits", "limits"),
        description=_k("admin.cmd.quota_limits.desc", "Credits per member per day, and for the whole server per day and per month"),
    )
    @app_commands.rename(
        user_daily=_k("admin.opt.user_daily", "per_member_daily"),
        guild_daily=_k("admin.opt.guild_daily", "server_daily"),
        guild_monthly=_k("admin.opt.guild_monthly", "server_monthly"),
        max_jobs=_k("admin.opt.max_jobs", "max_jobs"),
    )
    @app_commands.describe(
        user_daily=_k("admin.opt.user_daily.desc", "Credits per member per day (0 = nothing, empty = keep, -1 = no limit)"),
        guild_daily=_k("admin.opt.guild_daily.desc", "Credits for the whole server per day (-1 = no limit)"),
        guild_monthly=_k("admin.opt.guild_monthly.desc", "Credits for the whole server per month (-1 = no limit)"),
        max_jobs=_k("admin.opt.max_jobs.desc", "Pictures this server may have in the making at once"),
    )
    async def quota_limits(
        self,
        interaction: Interaction,
        user_daily: app_commands.Range[int, -1, 1_000_000] | None = None,
        guild_daily: app_commands.Range[int, -1, 1_000_000] | None = None,
        guild_monthly: app_commands.Range[int, -1, 1_000_000] | None = None,
        max_jobs: app_commands.Range[int, -1, 100] | None = None,
    ) -> None:
        # Omitted: keep; -1: no limit.
        changes = {
            name: (None if value == -1 else value)
            for name, value in (("user_daily", user_daily), ("guild_daily", guild_daily), ("guild_monthly", guild_monthly))
            if value is not None
        }

        def change(g: GuildSettings) -> GuildSettings:
            if changes:
                g = g.with_quota(**changes)
            if max_jobs is not None:
                g = g.with_limits(max_jobs=None if max_jobs == -1 else max_jobs, max_jobs_per_user=g.max_jobs_per_user)
            return g

        g = await self._update(interaction, change)
        if g is None:
            return
        locale = locale_of(interaction)
        operator = self.bot.settings.max_jobs_per_guild
        lines = [
            quota_summary(g, locale),
            t("admin.limits.saved", locale, max_jobs=min(g.max_jobs or operator, operator)),
            t("admin.quota.resets_note", locale),
        ]
        await send(interaction, "\n".join(lines))

    @quota.command(
        name=_k("admin.cmd.cost", "cost"), description=_k("admin.cmd.cost.desc", "How many credits a picture costs, by model and size")
    )
    @app_commands.rename(
        model=_k("admin.opt.model", "model"),
        size=_k("admin.opt.size", "size"),
        credits=_k("admin.opt.credits", "credits"),
        price=_k("admin.opt.price", "price_usd"),
    )
    @app_commands.describe(
        model=_k("admin.opt.model.desc", "A model"),
        size=_k("admin.opt.size.desc", "Default resolution: 512px, 1K, 2K or 4K"),
        credits=_k("admin.opt.credits.desc", "Credits (-1 = back to the default)"),
        price=_k("admin.opt.price.desc", "Estimated price per picture in US dollars, for the usage report"),
    )
    @app_commands.choices(model=MODEL_CHOICES, size=_size_choices(auto=False))
    async def quota_cost(
        self,
        interaction: Interaction,
        model: str | None = None,
        size: str | None = None,
        credits: app_commands.Range[int, -1, 1000] | None = None,
        price: app_commands.Range[float, -1.0, 100.0] | None = None,
    ) -> None:
        locale = locale_of(interaction)
        if model is None or (credits is None and price is None):
            await self._show_costs(interaction)  # nothing to change: show the table
            return

        def change(g: GuildSettings) -> GuildSettings:
            if credits is not None:
                g = g.with_cost(model, size, None if credits == -1 else credits)
            if price is not None:
                g = g.with_price(model, size, None if price < 0 else price)
            return g

        g = await self._update(interaction, change)
        if g is None:
            return
        shown = canonical_size(model, size)
        lines = []
        if credits is not None:
            key = "admin.quota.cost_reset" if credits == -1 else "admin.quota.cost_saved"
            lines.append(t(key, locale, model=model_name(model), size=size_name(model, shown, locale), credits=g.cost(model, shown)))
        if price is not None:
            lines.append(
                t(
                    "admin.quota.price_saved",
                    locale,
                    model=model_name(model),
                    size=size_name(model, shown, locale),
                    price=f"{g.price(model, shown):.3f}",
                )
            )
        await send(interaction, "\n".join(lines))

    async def _show_costs(self, interaction: Interaction) -> None:
        locale = locale_of(interaction)
        g = await self.services.guild(interaction.guild_id)
        lines = [f"**{t('admin.quota.costs_title', locale)}**"]
        for (m, s), n in g.cost_table().items():
            lines.append(t("admin.quota.cost_entry", locale, model=model_name(m), size=size_name(m, s, locale), credits=n))
        await send(interaction, "\n".join(lines))

    @quota.command(
        name=_k("admin.cmd.role_bonus", "role-bonus"),
        description=_k("admin.cmd.role_bonus.desc", "Extra daily credits for members with a role"),
    )
    @app_commands.rename(role=_k("admin.opt.role", "role"), credits=_k("admin.opt.credits", "credits"))
    @app_commands.describe(
        role=_k("admin.opt.role.desc", "A role"), credits=_k("admin.opt.credits.desc", "Credits (-1 = back to the default)")
    )
    async def quota_role_bonus(self, interaction: Interaction, role: discord.Role, credits: app_commands.Range[int, -1, 1_000_000]) -> None:
        def change(g: GuildSettings) -> GuildSettings:
            extra = dict(g.quota.role_extra)
            if credits > 0:
                extra[role.id] = credits
            else:
                extra.pop(role.id, None)
            return g.with_quota(role_extra=extra)

        g = await self._update(interaction, change)
        if g is None:
            return
        locale = locale_of(interaction)
        if credits > 0:
            await send(interaction, t("admin.quota.role_bonus_saved", locale, role=role.mention, credits=credits))
        else:
            await send(interaction, t("admin.quota.role_bonus_removed", locale, role=role.mention))

    @quota.command(
        name=_k("admin.cmd.exempt", "exempt"),
        description=_k("admin.cmd.exempt.desc", "Free a role from the per-member limit (the server limits still apply)"),
    )
    @app_commands.rename(role=_k("admin.opt.role", "role"), allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(role=_k("admin.opt.role.desc", "A role"), allow=_k("admin.opt.allow.desc", "Add (on) or remove (off)"))
    async def quota_exempt(self, interaction: Interaction, role: discord.Role, allow: bool) -> None:
        g = await self._update(interaction, lambda g: g.with_quota(exempt_roles=toggled(g.quota.exempt_roles, role.id, allow)))
        if g is None:
            return
        key = "admin.quota.exempt_added" if allow else "admin.quota.exempt_removed"
        await send(interaction, t(key, locale_of(interaction), role=role.mention))
