"""/admin usage (the report and its chart) and /admin settings (everything on one page)."""

from __future__ import annotations

import io
import time

import discord
from discord import app_commands

from bot.i18n import t
from bot.relays.usage import RelayStats, relay_stats
from bot.usage import period_bounds, render_chart_async, summary_text, usage_report
from cogs import render
from cogs.admin.common import (
    PERIOD_CHOICES,
    AdminBase,
    access_summary,
    defaults_summary,
    locale_of,
    mentions,
    models_summary,
    plain,
    quota_summary,
    send,
)
from cogs.admin.log import log_summary
from cogs.admin.relay_form import relay_line
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k


def relays_text(stats: list[RelayStats], locale: str) -> str:
    """Each relay's jobs, failure rate and latency ("" when no job reached a relay)."""
    lines = [
        t(
            "toolkit.usage.relay",
            locale,
            relay=s.relay,
            jobs=s.jobs,
            failed=s.failed,
            rate=round(100 * s.failure_rate),
            p50=f"{s.p50_ms / 1000:.1f}" if s.p50_ms is not None else "-",
            p95=f"{s.p95_ms / 1000:.1f}" if s.p95_ms is not None else "-",
        )
        for s in stats
    ]
    return "\n" + t("toolkit.usage.relays", locale) + "\n" + "\n".join(lines) if lines else ""


class OverviewCommands(AdminBase):
    @app_commands.command(
        name=_k("admin.cmd.usage", "usage"),
        description=_k("admin.cmd.usage.desc", "Pictures, credits, estimated spend, failures and relay speed"),
    )
    @app_commands.rename(period=_k("admin.opt.period", "period"))
    @app_commands.describe(period=_k("admin.opt.period.desc", "Which period"))
    @app_commands.choices(period=PERIOD_CHOICES)
    async def usage(self, interaction: Interaction, period: str = "30d") -> None:
        locale = locale_of(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        g = await self.services.guild(interaction.guild_id)
        start, end = period_bounds(period, time.time())
        report = await usage_report(self.services.db, interaction.guild_id, start, end, settings=g)
        chart = await render_chart_async(report, locale)
        text = summary_text(report, locale)
        if report.images:
            text += "\n-# " + t("usage.summary.spend_note", locale)
        text += relays_text(await relay_stats(self.services.db, interaction.guild_id, start, end, report), locale)
        text += "\n" + log_summary(g, locale)  # where each picture can be reviewed
        await send(interaction, text, file=discord.File(io.BytesIO(chart), filename=f"usage-{period}.png"))

    @app_commands.command(
        name=_k("admin.cmd.settings", "settings"), description=_k("admin.cmd.settings.desc", "Show all of this server's bot settings")
    )
    async def settings_show(self, interaction: Interaction) -> None:
        assert interaction.guild_id is not None
        locale = locale_of(interaction)
        g = await self.services.guild(interaction.guild_id)
        relays = await self.services.relays.list(interaction.guild_id)
        embed = discord.Embed(colour=render.BRAND, title=t("admin.settings.title", locale))
        embed.add_field(
            name=t("admin.settings.defaults", locale),
            value=(plain(defaults_summary(g, locale)) + "\n" + plain(models_summary(g, locale)))[:1024],
            inline=False,
        )
        embed.add_field(name=t("admin.settings.access", locale), value=plain(access_summary(g, locale))[:1024], inline=False)
        quota_lines = [plain(quota_summary(g, locale))]
        if g.quota.role_extra:
            bonuses = ", ".join(f"<@&{r}> +{n}" for r, n in sorted(g.quota.role_extra.items()))
            quota_lines.append(t("admin.settings.role_bonuses", locale, roles=bonuses))
        if g.quota.exempt_roles:
            quota_lines.append(t("admin.settings.exempt_roles", locale, roles=mentions(g.quota.exempt_roles, "@&")))
        embed.add_field(name=t("admin.settings.quota", locale), value="\n".join(quota_lines)[:1024], inline=False)
        if relays:
            now = time.time()
            relay_text = "\n".join(relay_line(r, now, locale) for r in relays)
        else:
            settings = self.bot.settings
            shared = settings.relay is not None and settings.share_default_relay
            relay_text = t("admin.relay.list_empty_shared" if shared else "admin.relay.list_empty", locale)
        embed.add_field(name=t("admin.settings.relays", locale), value=relay_text[:1024], inline=False)
        await send(interaction, embed=embed)
