"""More reference pictures than /imagine's four attachment slots, up to the model's limit (14 on
3 Pro and 3.1 Flash): two ways in, both ending in one /imagine request.

- ``/imagine … more_images:true`` answers with a form holding one file upload for the rest
  (Discord's upload component takes up to 10 files; the four slots plus 10 make 14).
- The message command **Imagine with these images** takes every picture of a message (a
  Discord message carries up to 10), asks for the prompt, and offers an upload for more.

The form says how many pictures the model takes and its guidance (how many objects it keeps
with high fidelity, how many people consistent). Too many pictures in all is refused by the
usual checks (cogs/intake.py) before anything is charged, with that guidance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord
from discord import ui

from bot.i18n import t
from bot.preferences import Preferences
from bot.relay.catalogue import ModelSpec, resolve_model
from bot.relay.types import InvalidRequest
from bot.studio import JobRequest
from cogs.bot_types import Interaction
from cogs.failures import report_failure
from cogs.language import member_locale

from .buttons import MAX_UPLOAD
from .start import Notice, Starter

Submitted = Callable[[Interaction, str, list[discord.Attachment]], Awaitable[None]]
# Builds the /imagine request for a prompt (the member's settings, the server's defaults).
Requester = Callable[[Interaction, str], Awaitable[tuple[JobRequest, list[Notice], int, Preferences]]]


def guidance(spec: ModelSpec, locale: str) -> str:
    """How many pictures ``spec`` takes, and what it keeps faithfully (one line, form-sized)."""
    if spec.max_people:
        return t("refs.guidance", locale, model=spec.label, limit=spec.max_images, objects=spec.max_objects, people=spec.max_people)
    return t("refs.guidance_plain", locale, model=spec.label, limit=spec.max_images)


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    return [a for a in message.attachments if (a.content_type or "").startswith("image/")]


class ReferencesModal(ui.Modal):
    """The rest of the reference pictures (and the prompt, when it was not typed already)."""

    def __init__(self, locale: str, spec: ModelSpec, room: int, on_submit: Submitted, *, ask_prompt: bool) -> None:
        super().__init__(title=t("refs.modal_title", locale)[:45], timeout=900)
        self._on_submit = on_submit
        self.prompt: ui.TextInput[ui.Modal] | None = None
        if ask_prompt:
            self.prompt = ui.TextInput(
                style=discord.TextStyle.paragraph, max_length=4000, required=True, placeholder=t("refs.prompt_placeholder", locale)[:100]
            )
            self.add_item(ui.Label(text=t("refs.prompt_label", locale)[:45], component=self.prompt))
        self.files: ui.FileUpload[ui.Modal] = ui.FileUpload(
            required=not ask_prompt, min_values=0 if ask_prompt else 1, max_values=max(1, min(MAX_UPLOAD, room))
        )
        label = t("refs.files_label", locale, count=max(1, min(MAX_UPLOAD, room)))
        self.add_item(ui.Label(text=label[:45], description=guidance(spec, locale)[:100], component=self.files))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        text = self.prompt.value if self.prompt is not None else ""
        await self._on_submit(interaction, text, list(self.files.values))

    # discord.py 2.7 types Modal.on_error without the item its base class View passes.
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_failure(interaction, error)


def _room(req: JobRequest, given: int) -> tuple[ModelSpec, int] | None:
    """The model and how many more pictures it takes; None when the model is unknown (the
    usual checks then refuse the request in the member's language)."""
    try:
        spec = resolve_model(req.model)
    except InvalidRequest:
        return None
    return spec, spec.max_images - len(req.images) - given


class References:
    """The two ways to give more references; both hand the pictures to the Starter."""

    def __init__(self, starter: Starter, requester: Requester) -> None:
        self.starter = starter
        self.requester = requester

    async def ask_more(
        self, interaction: Interaction, req: JobRequest, attachments: Sequence[discord.Attachment], notices: list[Notice], count: int
    ) -> None:
        """/imagine with ``more_images``: the form for the rest, then the job as usual. With no
        room left (the slots and the style fill the model's limit) the job starts at once."""
        found = _room(req, len(attachments))
        if found is None or found[1] <= 0:
            await self.starter.start(interaction, req, attachments=attachments, kind="imagine", notices=notices, count=count)
            return
        spec, room = found

        async def submitted(modal_interaction: Interaction, _text: str, extra: list[discord.Attachment]) -> None:
            await self.starter.start(
                modal_interaction, req, attachments=[*attachments, *extra], kind="imagine", notices=notices, count=count
            )

        locale = await member_locale(interaction)
        await interaction.response.send_modal(ReferencesModal(locale, spec, room, submitted, ask_prompt=False))

    async def from_message(self, interaction: Interaction, message: discord.Message) -> None:
        """**Imagine with these images**: the message's pictures as references, the prompt
        (and any further pictures) from a form."""
        locale = await member_locale(interaction)
        images = image_attachments(message)
        if not images:
            await interaction.response.send_message(t("edit.no_image_in_message", locale), ephemeral=True)
            return
        probe, _notices, _count, _mine = await self.requester(interaction, "-")  # the model and style this member would use
        found = _room(probe, len(images))
        if found is None or found[1] < 0:
            # Already more than the model takes: said now, not after the member typed a prompt.
            await self.starter.services.studio.check(probe, image_count=len(probe.images) + len(images))
        spec, room = found if found is not None else (resolve_model(probe.model), 0)

        async def submitted(modal_interaction: Interaction, text: str, extra: list[discord.Attachment]) -> None:
            req, notices, count, mine = await self.requester(modal_interaction, text)
            await self.starter.start(
                modal_interaction, req, attachments=[*images, *extra], kind="imagine", notices=notices, count=count, prefs=mine
            )

        await interaction.response.send_modal(ReferencesModal(locale, spec, max(room, 1), submitted, ask_prompt=True))
