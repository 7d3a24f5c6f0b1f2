"""/quota for members: credits left, when they come back, and their recent pictures.

Reset times are Discord timestamps (``<t:…:R>``), so each reader sees them in their own time
zone and counting down, without the bot editing anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t
from bot.pricing import canonical_size
from bot.quota import QuotaStatus
from bot.relay.catalogue import display_size
from cogs import render
from cogs.install import scope_id
from cogs.intake import role_ids
from cogs.language import member_locale
from cogs.texts import command_text as _k

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

STATUS_LABELS = {
    "queued": "quota.status.queued",
    "running": "quota.status.running",
    "delivering": "quota.status.running",
    "done": "quota.status.done",
    "failed": "quota.status.failed",
    "cancelled": "quota.status.cancelled",
    "interrupted": "quota.status.interrupted",
}
RECENT_JOBS = 5


# Limits over everyone's use: a server's, or (without a server) all personal use together.
SCOPE_LINES = {
    "guild_day": "quota.server_day",
    "guild_month": "quota.server_month",
    "personal_day": "install.quota.personal_day",
    "personal_month": "install.quota.personal_month",
}


def quota_lines(status: QuotaStatus, locale: str, *, personal: bool = False) -> list[str]:
    """What is left and when it resets, tightest limit last-but-one, reset line last.
    ``personal``: the quota of requests without a server (the app installed on the account)."""
    lines: list[str] = [t("install.quota.personal", locale)] if personal else []
    by_scope = {a.scope: a for a in status.allowances}
    mine = by_scope.get("user_day")
    if mine is not None:
        lines.append(t("quota.left", locale, left=mine.left, limit=mine.limit))
    elif status.exempt:
        lines.append(t("quota.exempt", locale))
    else:
        lines.append(t("quota.unlimited", locale))
    for scope, key in SCOPE_LINES.items():
        if (found := by_scope.get(scope)) is not None:
            lines.append(t(key, locale, used=found.used, limit=found.limit))
    if status.resets_at is not None:
        lines.append(t("quota.resets", locale, resets_at=int(status.resets_at)))
    if status.held:
        lines.append(t("quota.held", locale, held=status.held))
    return lines


def recent_lines(status: QuotaStatus, locale: str) -> list[str]:
    if not status.recent:
        return [t("quota.recent_none", locale)]
    out = []
    for job in status.recent:
        label = STATUS_LABELS.get(job.status)
        out.append(
            t(
                "quota.recent_entry",
                locale,
                id=job.id,
                status=t(label, locale) if label else job.status,
                model=render.model_label(job.model),
                size=display_size(job.size) if job.size else "",
                cost=job.cost,
                created=int(job.created_at),
            )
        )
    return out


class Members(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot

    @app_commands.command(
        name=_k("quota.cmd", "quota"), description=_k("quota.cmd.desc", "Your credits left, when they reset, and your recent pictures")
    )
    async def quota(self, interaction: discord.Interaction[NanoBananaBot]) -> None:
        svc = self.bot.services
        locale = await member_locale(interaction)
        g = await svc.guild(scope_id(interaction))
        roles = role_ids(interaction.user)
        status = await svc.quota.status(
            guild_id=scope_id(interaction),
            user_id=interaction.user.id,
            rules=await svc.quota_rules(scope_id(interaction), g),
            role_ids=roles,
            recent=RECENT_JOBS,
        )
        embed = discord.Embed(colour=render.BRAND, title=t("quota.title", locale))
        embed.description = "\n".join(quota_lines(status, locale, personal=scope_id(interaction) is None))
        size = canonical_size(g.default_model, g.default_size)
        cost = g.cost(g.default_model, size)
        shown = display_size(size) if size else "~1 MP"
        embed.description += "\n" + t("quota.cost_hint", locale, model=render.model_label(g.default_model), size=shown, cost=cost)
        embed.add_field(name=t("quota.recent_title", locale), value="\n".join(recent_lines(status, locale))[:1024], inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Members(bot))
