"""The persistent buttons on progress messages and results.

Each button is a DynamicItem: its custom_id carries the turn or job it acts on, so a click
works after a restart (the state comes from SQLite, never from a View kept in memory). Each
one parses its custom_id, checks who may press it and acts, in its own class; what they share
(how a button is built and parsed, how a failure is answered) is :class:`PersistentButton`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Self, cast

import discord
from discord import ui

from bot import rules
from bot.i18n import t
from bot.jobs import records
from bot.relay.catalogue import MODELS
from bot.relay.types import InputImage
from bot.services import progress_message_id
from bot.studio import UPSCALE_PROMPT, JobRequest
from bot.styles import MAX_NAME as STYLE_NAME_MAX
from bot.variations import vary_prompt
from cogs import install, render
from cogs.bot_types import Interaction
from cogs.failures import report_failure
from cogs.install import scope_id
from cogs.intake import upload_limit
from cogs.language import member_locale

from .progress import job_locale
from .start import Starter

log = logging.getLogger(__name__)

# What the edit form does with its instructions and extra pictures.
SubmitHandler = Callable[[Interaction, str, list[discord.Attachment]], Awaitable[None]]


def starter(interaction: Interaction) -> Starter:
    """The Imagine feature's job starter (buttons are registered by the Imagine cog)."""
    found = getattr(interaction.client.get_cog("Imagine"), "starter", None)
    assert isinstance(found, Starter), "the Imagine cog is not loaded"
    return found


class PersistentButton(ui.DynamicItem[ui.Button[ui.View]], template=r"(?!)"):
    """A button whose custom_id is ``<prefix>:<id>[:<part>…]``; subclasses give the template,
    the look and :meth:`act`. The base template matches nothing: it is never registered."""

    prefix: ClassVar[str]
    emoji: ClassVar[str]
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init__(self, target: int, *parts: str, locale: str = "en") -> None:
        custom_id = ":".join((self.prefix, str(target), *parts))
        super().__init__(ui.Button(label=self.label(locale, *parts), emoji=self.emoji, style=self.style, custom_id=custom_id))
        self.target = target
        self.parts = parts

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction[Any], item: ui.Item[Any], match: re.Match[str], /) -> Self:
        target, *parts = match.groups()
        return cls(int(target), *(p for p in parts if p is not None))  # an optional part left out

    def label(self, locale: str, *parts: str) -> str:
        raise NotImplementedError

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # discord.py types item callbacks over any client; this bot is the only one.
        try:
            if await install.refused(cast(Interaction, interaction)):
                return  # a user-installed click the operator or this server does not allow
            await self.act(cast(Interaction, interaction))
        except Exception as exc:  # noqa: BLE001 - every failure gets an answer
            await report_failure(interaction, exc)

    async def act(self, interaction: Interaction) -> None:
        raise NotImplementedError


async def _say(interaction: Interaction, key: str) -> None:
    await interaction.response.send_message(t(key, await member_locale(interaction)), ephemeral=True)


class RerollButton(PersistentButton, template=r"nb:reroll:(?P<turn>\d+)(?::(?P<count>[2-4]))?"):
    """The same request again: a new root (with its own thread), or a new turn beside this one;
    on a variants message (``count``), as many variants again (within the server's maximum now)."""

    prefix, emoji = "nb:reroll", "🎲"

    def label(self, locale: str, *parts: str) -> str:
        return t("button.reroll", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        jobs = starter(interaction)
        job = await jobs.services.job_for_turn(self.target)
        if job is None:
            await _say(interaction, "conversation.unknown_turn")
            return
        req = JobRequest.from_json(job.request)
        req.upload_limit = upload_limit(interaction)
        req.locale = await member_locale(interaction)
        req.reply_to_message_id = None
        if req.parent_turn_id is None:
            req.conversation_id = None  # a fresh root: a new result with its own thread
        elif not await jobs.may_continue(interaction, req.conversation_id, refuse=True):
            return  # a turn in someone else's thread
        count = 1
        if self.parts:
            _mine, creative = await jobs.services.preferences.for_request(scope_id(interaction), interaction.user.id)
            count = min(int(self.parts[0]), creative.variants_max)
        await jobs.start(interaction, req, attachments=[], kind="reroll", count=count)


class EditButton(PersistentButton, template=r"nb:edit:(?P<turn>\d+)"):
    """A form for instructions (and more pictures) that continue from this result."""

    prefix, emoji, style = "nb:edit", "✏️", discord.ButtonStyle.primary

    def label(self, locale: str, *parts: str) -> str:
        return t("button.edit", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        jobs = starter(interaction)
        turn = await jobs.services.conversations.get_turn(self.target)
        if turn is None:
            await _say(interaction, "conversation.unknown_turn")
            return
        # Asked before the form opens, not after the member has typed into it.
        if not await jobs.may_continue(interaction, turn.conversation_id, refuse=True):
            return
        turn_id = self.target

        async def submitted(modal_interaction: Interaction, text: str, extra: list[discord.Attachment]) -> None:
            await jobs.continue_turn(modal_interaction, turn_id, text, extra)

        model = turn.settings.get("model") or (await jobs.services.defaults(scope_id(interaction))).model
        await interaction.response.send_modal(EditModal(await member_locale(interaction), submitted, model=model))


class UpscaleButton(PersistentButton, template=r"nb:up:(?P<turn>\d+):(?P<size>2K|4K)"):
    """This picture again at a larger size (a turn under it)."""

    prefix, emoji = "nb:up", "🔍"

    def label(self, locale: str, *parts: str) -> str:
        return t("button.upscale", locale, size=parts[0])[:80]

    async def act(self, interaction: Interaction) -> None:
        jobs = starter(interaction)
        size = self.parts[0]
        req = await jobs.request_from_turn(interaction, self.target, UPSCALE_PROMPT, size=size)
        if req is not None:
            shown = t("upscale.prompt", req.guild_locale, size=size)
            await jobs.start(interaction, req, attachments=[], kind="upscale", display_prompt=shown)


class VaryButton(PersistentButton, template=r"nb:vary:(?P<turn>\d+):(?P<strength>subtle|strong)"):
    """A new picture from this one, a little or a lot different (a turn under it), with a
    prompt the member does not write; the result shows the original prompt."""

    prefix, emoji = "nb:vary", "🌀"

    def label(self, locale: str, *parts: str) -> str:
        return t("button.vary_strong" if parts[0] == "strong" else "button.vary_subtle", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        jobs = starter(interaction)
        source = await jobs.services.job_for_turn(self.target)
        original = ""
        if source is not None:
            asked = JobRequest.from_json(source.request)
            original = asked.display_prompt or asked.prompt
        req = await jobs.request_from_turn(interaction, self.target, vary_prompt(self.parts[0], original))
        if req is not None:
            req.variation = self.parts[0]  # said on the result: two variations of one prompt told apart
            await jobs.start(interaction, req, attachments=[], kind="vary", display_prompt=original or None)


class SaveStyleButton(PersistentButton, template=r"nb:style:(?P<turn>\d+)"):
    """Saves this result as one of the clicker's own styles: its prompt as the template, its
    picture as the reference; a form asks the name."""

    prefix, emoji = "nb:style", "💾"

    def label(self, locale: str, *parts: str) -> str:
        return t("button.save_style", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        svc = starter(interaction).services
        if scope_id(interaction) is None:
            await _say(interaction, "install.no_styles")  # styles belong to a server (bot/styles.py)
            return
        turn = await svc.conversations.get_turn(self.target)
        if turn is None or not turn.image_sha256:
            await _say(interaction, "conversation.unknown_turn")
            return
        job = await svc.job_for_turn(self.target)
        asked = JobRequest.from_json(job.request) if job is not None else None
        prompt, ratio = turn.prompt, None
        if asked is not None:
            # Made with a style: its template's words, which made the look, go into the new one
            # (a variation's prompt is an instruction to the model: the member's prompt instead).
            prompt = asked.prompt if asked.style and not asked.variation else (asked.display_prompt or asked.prompt)
            ratio = asked.aspect_ratio  # the shape goes with the look; the size (a price) does not
        await interaction.response.send_modal(StyleNameModal(await member_locale(interaction), prompt, turn.image_sha256, ratio))


class StyleNameModal(ui.Modal):
    def __init__(self, locale: str, prompt: str, image_sha256: str, aspect_ratio: str | None = None) -> None:
        super().__init__(title=t("button.save_style", locale)[:45], timeout=900)
        self.prompt, self.image_sha256, self.aspect_ratio = prompt, image_sha256, aspect_ratio
        self.name: ui.TextInput[ui.Modal] = ui.TextInput(max_length=STYLE_NAME_MAX, required=True)
        self.add_item(ui.Label(text=t("modal.style_name", locale)[:45], component=self.name))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        svc = cast(Interaction, interaction).client.services
        data, mime = await svc.images.get(self.image_sha256)
        saved = await svc.styles.save_from_result(
            scope_id(interaction) or 0, interaction.user.id, self.name.value, self.prompt, InputImage(data, mime), self.aspect_ratio
        )
        await interaction.response.send_message(t("style.saved", await member_locale(interaction), name=saved.name), ephemeral=True)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_failure(interaction, error)


class DeleteButton(PersistentButton, template=r"nb:del:(?P<turn>\d+)"):
    """Deletes the result message: its requester, or anyone who may manage messages here."""

    prefix, emoji, style = "nb:del", "🗑️", discord.ButtonStyle.danger

    def label(self, locale: str, *parts: str) -> str:
        return t("button.delete", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        job = await starter(interaction).services.job_for_turn(self.target)
        requester = job.user_id if job is not None else None
        if not rules.may_delete_result(requester, interaction.user.id, manage_messages=interaction.permissions.manage_messages):
            await _say(interaction, "delete.not_allowed")
            return
        await interaction.response.defer()
        try:
            if interaction.message is not None:
                await interaction.message.delete()
        except discord.HTTPException:
            await interaction.followup.send(t("delete.failed", await member_locale(interaction)), ephemeral=True)


class CancelButton(PersistentButton, template=r"nb:cancel:(?P<job>\d+)"):
    """Cancels the requester's queued or running job, until its picture is being posted."""

    prefix, emoji = "nb:cancel", "✖️"

    def label(self, locale: str, *parts: str) -> str:
        return t("button.cancel", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        jobs = starter(interaction)
        job = await jobs.services.get_job(self.target)
        if job is None or job.user_id != interaction.user.id:
            await _say(interaction, "cancel.not_yours")
            return
        # Answered first: on PostgreSQL the cancel may wait for the worker running the job (in
        # another process), longer than the 3 s Discord allows before an answer.
        await interaction.response.defer()
        # A variant group with a picture already made (by any process) is past cancelling: it is
        # posted with the rest. A variant ending after this read is refunded by the cancel.
        group = (job.request or {}).get("variant_group")
        made = await jobs.variants.ended_anywhere(group)
        # No await between this check and the cancel: the runner cannot slip into delivery.
        if job.id in jobs.progress.delivering:
            outcome = "delivering"
        elif made or jobs.variants.any_ended(group):
            outcome = "too_late"
        else:
            outcome = await jobs.services.cancel_job(job.id, interaction.user.id)  # "delivering" from any process
        if outcome == "cancelled":
            await jobs.cancel_siblings(job)
        else:
            key = f"cancel.{outcome}" if outcome in ("delivering", "interrupted") else "cancel.too_late"
            await interaction.followup.send(t(key, await member_locale(interaction)), ephemeral=True)
            return
        jobs.progress.release(progress_message_id(job))
        await interaction.edit_original_response(content=render.progress_text("cancelled", job_locale(job)), view=None, embed=None)
        await jobs.services.replies.drop(progress_message_id(job))  # a queued job never reaches its runner's cleanup


class RetryButton(PersistentButton, template=r"nb:retry:(?P<job>\d+)"):
    """Runs an interrupted or failed job again, once: one click makes one job."""

    prefix, emoji, style = "nb:retry", "🔁", discord.ButtonStyle.primary

    def label(self, locale: str, *parts: str) -> str:
        return t("button.retry", locale)[:80]

    async def act(self, interaction: Interaction) -> None:
        jobs = starter(interaction)
        job = await jobs.services.get_job(self.target)
        if job is None or job.user_id != interaction.user.id:
            await _say(interaction, "cancel.not_yours")
            return
        # Claimed in the database, one UPDATE deciding: of a double click (two interactions a few
        # ms apart), a click answered by another process, or one on a stale copy of the notice
        # after a restart, only the first makes a job; the others are told so.
        if not await records.claim_retry(jobs.services.db, job.id):
            await _say(interaction, "fair.retry_once")
            return
        req = JobRequest.from_json(job.request)
        req.locale = await member_locale(interaction)
        started = None
        try:
            started = await jobs.start(interaction, req, attachments=[], kind="retry")
        finally:
            if started is None:  # refused (e.g. no credits left) or failed: may be tried later
                await records.release_retry(jobs.services.db, job.id)
        if interaction.message is not None:
            # One retry per button: it goes (a variant's from its group's message, the others
            # stay), so a second click cannot even be tried; the claim above decided already.
            view = ui.View.from_message(interaction.message, timeout=None)
            for item in [i for i in view.children if getattr(i, "custom_id", None) == self.custom_id]:
                view.remove_item(item)
            # Only its look is sent: the buttons are dynamic items, dispatched by their custom_id,
            # so this copy of plain buttons must not be kept as a live view (a stopped one is not).
            view.stop()
            try:
                await interaction.message.edit(view=view if view.children else None)
            except discord.HTTPException:
                pass  # where the bot cannot edit (a server it is not in): the claim still holds


DYNAMIC_ITEMS = (RerollButton, EditButton, UpscaleButton, VaryButton, SaveStyleButton, DeleteButton, CancelButton, RetryButton)


def result_view(turn_id: int, model: str, size: str | None, locale: str) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(RerollButton(turn_id, locale=locale))
    view.add_item(EditButton(turn_id, locale=locale))
    spec = MODELS.get(model)
    for bigger in rules.upscale_sizes(spec.sizes if spec else (), size):
        view.add_item(UpscaleButton(turn_id, bigger, locale=locale))
    view.add_item(VaryButton(turn_id, "subtle", locale=locale))
    view.add_item(VaryButton(turn_id, "strong", locale=locale))
    view.add_item(SaveStyleButton(turn_id, locale=locale))
    view.add_item(DeleteButton(turn_id, locale=locale))
    return view


def single_button_view(item: ui.Item[Any]) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(item)
    return view


MAX_UPLOAD = 10  # files one upload component of a Discord form takes


def edit_room(model: str | None) -> int:
    """Extra pictures an edit may add: the model's references (14 on 3 Pro / 3.1 Flash, 3 on
    2.5 Flash) less the picture being edited, within one upload component; 4 for a model the
    catalogue does not know (the vetting before the job still applies the relay's limit)."""
    spec = MODELS.get(model or "")
    return max(1, min(MAX_UPLOAD, spec.max_images - 1 if spec else 4))


class EditModal(ui.Modal):
    """Instructions plus optional extra images (discord.py 2.7 file upload in modals)."""

    def __init__(self, locale: str, on_submit: SubmitHandler, *, model: str | None = None, allow_files: bool = True) -> None:
        super().__init__(title=t("modal.edit_title", locale)[:45], timeout=900)
        self._on_submit = on_submit
        self.instructions: ui.TextInput[ui.Modal] = ui.TextInput(
            style=discord.TextStyle.paragraph, max_length=4000, required=True, placeholder=t("modal.edit_placeholder", locale)[:100]
        )
        self.add_item(ui.Label(text=t("modal.edit_label", locale)[:45], component=self.instructions))
        self.files: ui.FileUpload[ui.Modal] | None = None
        if allow_files:
            room = edit_room(model)
            self.files = ui.FileUpload(required=False, min_values=0, max_values=room)
            self.add_item(ui.Label(text=t("modal.edit_files", locale, count=room)[:45], component=self.files))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        attachments = list(self.files.values) if self.files is not None else []
        await self._on_submit(cast(Interaction, interaction), self.instructions.value, attachments)

    # discord.py 2.7 types Modal.on_error without the item its base class View passes.
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_failure(interaction, error)
