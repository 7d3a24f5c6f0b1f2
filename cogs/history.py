"""/history: a member's recent pictures (or, for admins, the server's), paged with buttons and
filtered by model, each line linking to its result message and its thread.

Every component is a ``DynamicItem`` whose custom_id carries the viewer, the scope, the page
and the model filter, so the panel keeps working after a restart (nothing is held in memory).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands, ui
from discord.ext import commands

from bot.gallery import PAGE_SIZE, Page
from bot.i18n import t
from bot.refusal import Refusal
from bot.relay.catalogue import display_size
from cogs import render
from cogs.failures import report_failure
from cogs.imagine.buttons import EditButton
from cogs.install import scope_id
from cogs.language import member_locale
from cogs.texts import command_text as _k

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

PER_PAGE = PAGE_SIZE  # one place to read it (tests page through fewer pictures)
ALL = "all"  # the model filter's "every model" value (no model id is spelled like it)


def _may_see_server(interaction: discord.Interaction[Any]) -> bool:
    perms = interaction.permissions
    return scope_id(interaction) is not None and (perms.manage_guild or perms.administrator)


def _item_line(n: int, item: Any, locale: str) -> str:
    meta = t(
        "history.item",
        locale,
        date=f"<t:{int(item.finished_at)}:d>",
        model=render.model_label(item.model),
        size=display_size(item.size) if item.size else "~1 MP",
    )
    links = " · ".join(
        f"[{t(key, locale)}]({url})" for key, url in (("history.jump", item.message_url), ("history.thread", item.thread_url)) if url
    )
    return f"**{n}.** {render.shorten(item.prompt, 120) or '—'}\n{meta}" + (f" · {links}" if links else "")


def page_embed(page: Page, *, server: bool, locale: str) -> discord.Embed:
    embed = discord.Embed(colour=render.BRAND, title=t("history.title_server" if server else "history.title", locale))
    if not page.items:
        embed.description = t("history.empty", locale)
        return embed
    # Numbered per page (1. to 5.): the footer says which page, and Reopen buttons can use the number.
    embed.description = "\n\n".join(_item_line(i, item, locale) for i, item in enumerate(page.items, 1))[:4096]
    embed.set_footer(text=t("history.page", locale, page=page.page, pages=page.pages, total=page.total))
    return embed


class PageButton(
    ui.DynamicItem[ui.Button], template=r"nb:hist:(?P<user>\d+):(?P<scope>[ms]):(?P<page>\d+):(?P<model>[a-z0-9.\-]+):(?P<way>[pn])"
):
    # ``way`` (p/n) keeps Previous and Next distinct when both point at the same page (page 1
    # of 1): Discord refuses a message whose components share a custom_id.
    def __init__(self, user_id: int, scope: str, page: int, model: str, way: str, *, label: str = "", disabled: bool = False) -> None:
        super().__init__(
            ui.Button(
                label=label,
                style=discord.ButtonStyle.secondary,
                disabled=disabled,
                custom_id=f"nb:hist:{user_id}:{scope}:{page}:{model}:{way}",
            )
        )
        self.user_id, self.scope, self.page, self.model = user_id, scope, page, model

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> PageButton:
        return cls(int(match["user"]), match["scope"], int(match["page"]), match["model"], match["way"])

    async def callback(self, interaction: discord.Interaction[Any]) -> Any:
        await show(interaction, self.user_id, self.scope, self.page, self.model, edit=True)


class ModelFilter(ui.DynamicItem[ui.Select], template=r"nb:histf:(?P<user>\d+):(?P<scope>[ms])"):
    def __init__(self, user_id: int, scope: str, options: list[discord.SelectOption] | None = None, placeholder: str = "") -> None:
        super().__init__(
            ui.Select(
                custom_id=f"nb:histf:{user_id}:{scope}", options=options or [discord.SelectOption(label=ALL)], placeholder=placeholder
            )
        )
        self.user_id, self.scope = user_id, scope

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> ModelFilter:
        return cls(int(match["user"]), match["scope"])

    async def callback(self, interaction: discord.Interaction[Any]) -> Any:
        # discord.py refreshes the select's state from the click before calling back.
        values = self.item.values or [ALL]
        await show(interaction, self.user_id, self.scope, 1, values[0], edit=True)


async def show(interaction: discord.Interaction[Any], user_id: int, scope: str, page: int, model: str, *, edit: bool) -> None:
    """Answer with page ``page`` of the history (a new ephemeral message, or the panel edited)."""
    locale = await member_locale(interaction)
    try:
        if interaction.user.id != user_id:
            raise Refusal("not this member's panel", key="history.not_yours")
        if scope == "s" and not _may_see_server(interaction):
            raise Refusal("the server's pictures need Manage Server", key="history.server_only_admins")
        gallery = interaction.client.services.gallery
        viewer = None if scope == "s" else user_id
        found = await gallery.page(
            scope_id(interaction), user_id=viewer, page=page, model=None if model == ALL else model, per_page=PER_PAGE
        )
        models = await gallery.models(scope_id(interaction), user_id=viewer)
    except Exception as exc:  # noqa: BLE001 - every failure gets a translated answer
        await report_failure(interaction, exc)
        return
    embed = page_embed(found, server=scope == "s", locale=locale)
    view = ui.View(timeout=None)
    pages = max(found.pages, 1)
    view.add_item(PageButton(user_id, scope, max(page - 1, 1), model, "p", label=t("history.prev", locale), disabled=page <= 1))
    view.add_item(PageButton(user_id, scope, min(page + 1, pages), model, "n", label=t("history.next", locale), disabled=page >= pages))
    if len(models) > 1 or model != ALL:
        options = [discord.SelectOption(label=t("history.all_models", locale), value=ALL, default=model == ALL)]
        options += [discord.SelectOption(label=render.model_label(m), value=m, default=m == model) for m in models[:24]]
        view.add_item(ModelFilter(user_id, scope, options, placeholder=t("history.filter", locale)))
    for n, item in enumerate(found.items[:5], 1):
        # "Reopen n": the result's own Edit form, so the same thread rule and conversation apply.
        reopen = EditButton(item.turn_id, locale=locale)
        reopen.item.label, reopen.item.emoji, reopen.row = t("history.reopen", locale, index=n)[:80], None, 2
        view.add_item(reopen)
    if edit:
        await interaction.response.edit_message(embed=embed, view=view)
    else:
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True)


class History(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PageButton, ModelFilter)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PageButton, ModelFilter)

    @app_commands.command(
        name=_k("creative.cmd.history", "history"),
        description=_k("creative.cmd.history.desc", "Your recent pictures, with links back to each result"),
    )
    @app_commands.rename(server=_k("creative.opt.server", "server"))
    @app_commands.describe(server=_k("creative.opt.server.desc", "The whole server's pictures (needs Manage Server)"))
    async def history(self, interaction: discord.Interaction[NanoBananaBot], server: bool = False) -> None:
        await show(interaction, interaction.user.id, "s" if server else "m", 1, ALL, edit=False)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(History(bot))
