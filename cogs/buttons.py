"""Persistent buttons: each custom_id carries the turn or job it acts on, so a click works after
a restart (state comes from SQLite, never from a View object kept in memory)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import ui

from bot.i18n import normalize_locale, t
from bot.relay.catalogue import MODELS
from cogs import render

if TYPE_CHECKING:
    from bot.app import NanoBananaBot
    from cogs.imagine import Imagine


log = logging.getLogger(__name__)


def _cog(interaction: discord.Interaction[NanoBananaBot]) -> Imagine:
    cog = interaction.client.get_cog("Imagine")
    assert cog is not None
    return cog  # type: ignore[return-value]


async def report_failure(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Answer a failed button or form with a short translated reason. discord.py only logs
    errors of dynamic items and modals (the tree handler never sees them), so without this
    the member would get Discord's bare "This interaction failed"."""
    if not isinstance(getattr(error, "key", None), str):
        log.error("a button or form failed", exc_info=error)
    embed = render.error_embed(error, normalize_locale(interaction.locale))
    await render.reply_privately(interaction, embed)


async def _guarded(interaction: discord.Interaction[Any], action: Callable[[], Awaitable[Any]]) -> None:
    try:
        await action()
    except Exception as exc:  # noqa: BLE001 - every failure gets an answer
        await report_failure(interaction, exc)


class RerollButton(ui.DynamicItem[ui.Button], template=r"nb:reroll:(?P<turn>\d+)"):
    def __init__(self, turn_id: int, locale: str = "en") -> None:
        super().__init__(
            ui.Button(label=t("button.reroll", locale), emoji="🎲", style=discord.ButtonStyle.secondary, custom_id=f"nb:reroll:{turn_id}")
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str], /) -> RerollButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[NanoBananaBot]) -> Any:
        await _guarded(interaction, lambda: _cog(interaction).reroll(interaction, self.turn_id))


class EditButton(ui.DynamicItem[ui.Button], template=r"nb:edit:(?P<turn>\d+)"):
    def __init__(self, turn_id: int, locale: str = "en") -> None:
        super().__init__(
            ui.Button(label=t("button.edit", locale), emoji="✏️", style=discord.ButtonStyle.primary, custom_id=f"nb:edit:{turn_id}")
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str], /) -> EditButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[NanoBananaBot]) -> Any:
        await _guarded(interaction, lambda: _cog(interaction).open_edit_modal(interaction, self.turn_id))


class UpscaleButton(ui.DynamicItem[ui.Button], template=r"nb:up:(?P<turn>\d+):(?P<size>2K|4K)"):
    def __init__(self, turn_id: int, size: str, locale: str = "en") -> None:
        super().__init__(
            ui.Button(
                label=t("button.upscale", locale, size=size),
                emoji="🔍",
                style=discord.ButtonStyle.secondary,
                custom_id=f"nb:up:{turn_id}:{size}",
            )
        )
        self.turn_id = turn_id
        self.size = size

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str], /) -> UpscaleButton:
        return cls(int(match["turn"]), match["size"])

    async def callback(self, interaction: discord.Interaction[NanoBananaBot]) -> Any:
        await _guarded(interaction, lambda: _cog(interaction).upscale(interaction, self.turn_id, self.size))


class DeleteButton(ui.DynamicItem[ui.Button], template=r"nb:del:(?P<turn>\d+)"):
    def __init__(self, turn_id: int, locale: str = "en") -> None:
        super().__init__(
            ui.Button(label=t("button.delete", locale), emoji="🗑️", style=discord.ButtonStyle.danger, custom_id=f"nb:del:{turn_id}")
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str], /) -> DeleteButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[NanoBananaBot]) -> Any:
        await _guarded(interaction, lambda: _cog(interaction).delete_result(interaction, self.turn_id))


class CancelButton(ui.DynamicItem[ui.Button], template=r"nb:cancel:(?P<job>\d+)"):
    def __init__(self, job_id: int, locale: str = "en") -> None:
        super().__init__(
            ui.Button(label=t("button.cancel", locale), emoji="✖️", style=discord.ButtonStyle.secondary, custom_id=f"nb:cancel:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str], /) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[NanoBananaBot]) -> Any:
        await _guarded(interaction, lambda: _cog(interaction).cancel(interaction, self.job_id))


class RetryButton(ui.DynamicItem[ui.Button], template=r"nb:retry:(?P<job>\d+)"):
    def __init__(self, job_id: int, locale: str = "en") -> None:
        super().__init__(
            ui.Button(label=t("button.retry", locale), emoji="🔁", style=discord.ButtonStyle.primary, custom_id=f"nb:retry:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Button, match: re.Match[str], /) -> RetryButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[NanoBananaBot]) -> Any:
        await _guarded(interaction, lambda: _cog(interaction).retry(interaction, self.job_id))


DYNAMIC_ITEMS = (RerollButton, EditButton, UpscaleButton, DeleteButton, CancelButton, RetryButton)


def result_view(turn_id: int, model: str, size: str | None, locale: str) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(RerollButton(turn_id, locale))
    view.add_item(EditButton(turn_id, locale))
    spec = MODELS.get(model)
    if spec:
        order = list(spec.sizes)
        current = order.index(size) if size in order else (order.index("1K") if "1K" in order else -1)
        for bigger in ("2K", "4K"):
            if bigger in order and order.index(bigger) > current:
                view.add_item(UpscaleButton(turn_id, bigger, locale))
    view.add_item(DeleteButton(turn_id, locale))
    return view


def single_button_view(item: ui.Item[Any]) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(item)
    return view


class EditModal(ui.Modal):
    """Instructions plus optional extra images (discord.py 2.7 file upload in modals)."""

    def __init__(self, locale: str, on_submit: Any, *, allow_files: bool = True) -> None:
        super().__init__(title=t("modal.edit_title", locale)[:45], timeout=900)
        self._on_submit = on_submit
        self.instructions = ui.TextInput(
            style=discord.TextStyle.paragraph, max_length=4000, required=True, placeholder=t("modal.edit_placeholder", locale)[:100]
        )
        self.add_item(ui.Label(text=t("modal.edit_label", locale)[:45], component=self.instructions))
        self.files: ui.FileUpload | None = None
        if allow_files:
            self.files = ui.FileUpload(required=False, min_values=0, max_values=4)
            self.add_item(ui.Label(text=t("modal.edit_files", locale)[:45], component=self.files))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        attachments = list(self.files.values) if self.files is not None else []
        await self._on_submit(interaction, self.instructions.value, attachments)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        await report_failure(interaction, error)
