"""/imagine, the "Edit image" context menu, the result buttons, and delivering finished jobs.

Flow: cheap checks (options against the model, attachments, access, quota) answer
ephemerally before anything is queued; then a public progress message acks the interaction,
inputs are downloaded and stored by hash, and a job row is queued. The job queue calls
:meth:`Imagine.run_job`, which asks the studio for a picture and posts it with the *bot*
token (interaction tokens die after 15 minutes; big jobs take longer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.app_commands import locale_str as _
from discord.ext import commands

from bot.i18n import normalize_locale, t
from bot.imaging import fit_for_upload_async
from bot.relay.catalogue import MODELS, display_size, resolve_model
from bot.relay.images import MAX_INPUT_BYTES
from bot.relay.types import InvalidRequest, RelayError
from bot.services import progress_message_id
from bot.studio import UPSCALE_PROMPT, JobRequest, continue_from
from cogs import render
from cogs.buttons import DYNAMIC_ITEMS, CancelButton, EditModal, RetryButton, result_view, single_button_view

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
PROGRESS_EDIT_INTERVAL = 1.5  # seconds between progress edits (Discord rate limits message edits)
TOKEN_LIFETIME = 14 * 60  # use an interaction token only while it is safely alive
UPLOAD_RETRIES = 4
RETRY_MEMORY = 10_000  # Retry claims remembered (the oldest are forgotten first)
THREAD_LOCKED = 50083  # Discord's code for "Thread is locked" (a 400)


class UserFacingError(Exception):
    """A failure with a translation key (not a relay error): shown to the user, not logged as a bug."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


def _k(key: str, text: str) -> app_commands.locale_str:
    return _(text, key=key)


class Imagine(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        # progress message id -> (interaction, acked at): lets progress edits use the token while
        # it lives. Keyed by message, not job, so it is known before the job row exists (a job
        # can start, and edit its progress, before submit returns).
        self._interactions: dict[int, tuple[discord.Interaction, float]] = {}
        self._last_edit: dict[int, float] = {}
        # job id -> newest progress text held back by the edit rate limit, and its sender.
        self._pending: dict[int, tuple[str | None, bool]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        # Jobs whose picture is made and being posted: too late to cancel (the picture is out).
        self._delivering: set[int] = set()
        self._retried: dict[int, None] = {}  # job ids whose Retry was taken (insertion-ordered)
        # Guild-only like /imagine: in a DM no server's access rules or quota would apply.
        self.edit_menu = app_commands.ContextMenu(
            name=_k("cmd.edit_image", "Edit image"),
            callback=self.edit_image_menu,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )
        self.edit_menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)
        self.bot.tree.add_command(self.edit_menu)
        jobs = self.bot.services
        jobs.set_handlers(runner=self.run_job, on_position=self.on_position, on_interrupted=self.on_interrupted)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    # ---------------------------------------------------------------- /imagine

    @app_commands.command(
        name=_k("cmd.imagine", "imagine"), description=_k("cmd.imagine.desc", "Make a picture from a prompt and optional reference images")
    )
    @app_commands.guild_only()
    @app_commands.rename(
        prompt=_k("opt.prompt", "prompt"),
        image1=_k("opt.image1", "image1"),
        image2=_k("opt.image2", "image2"),
        image3=_k("opt.image3", "image3"),
        image4=_k("opt.image4", "image4"),
        model=_k("opt.model", "model"),
        aspect_ratio=_k("opt.aspect_ratio", "aspect_ratio"),
        size=_k("opt.size", "size"),
        search=_k("opt.search", "search"),
        thinking=_k("opt.thinking", "thinking"),
    )
    @app_commands.describe(
        prompt=_k("opt.prompt.desc", "What to draw, or how to change the reference images"),
        image1=_k("opt.image.desc", "A reference image"),
        image2=_k("opt.image.desc", "A reference image"),
        image3=_k("opt.image.desc", "A reference image"),
        image4=_k("opt.image.desc", "A reference image"),
        model=_k("opt.model.desc", "Which Nano Banana model"),
        aspect_ratio=_k("opt.aspect_ratio.desc", "Shape of the picture, e.g. 16:9"),
        size=_k("opt.size.desc", "Resolution: 512px, 1K, 2K or 4K (depends on the model)"),
        search=_k("opt.search.desc", "Ground the picture in Google Search results"),
        thinking=_k("opt.thinking.desc", "How hard the model thinks first (3.1 Flash)"),
    )
    @app_commands.choices(
        model=[app_commands.Choice(name=spec.label, value=spec.id) for spec in MODELS.values()],
        thinking=[
            app_commands.Choice(name=_k("choice.thinking.minimal", "minimal (fast)"), value="minimal"),
            app_commands.Choice(name=_k("choice.thinking.high", "high (better for complex prompts)"), value="high"),
        ],
    )
    async def imagine(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        prompt: app_commands.Range[str, 1, 4000],
        image1: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        model: str | None = None,
        aspect_ratio: str | None = None,
        size: str | None = None,
        search: bool = False,
        thinking: str | None = None,
    ) -> None:
        attachments = [a for a in (image1, image2, image3, image4) if a is not None]
        svc = self.bot.services
        defaults = await svc.defaults(interaction.guild_id)
        req = JobRequest(
            prompt=prompt,
            model=model or defaults.model,
            aspect_ratio=aspect_ratio or defaults.aspect_ratio,
            size=size or (defaults.size if not model or model == defaults.model else None),
            grounding=search,
            thinking=thinking,
            upload_limit=self._upload_limit(interaction),
            locale=normalize_locale(interaction.locale),
            guild_locale=normalize_locale(interaction.guild_locale or interaction.locale),
        )
        await self.start(interaction, req, attachments=attachments, kind="imagine")

    @imagine.autocomplete("aspect_ratio")
    async def ratio_autocomplete(self, interaction: discord.Interaction[NanoBananaBot], current: str) -> list[app_commands.Choice[str]]:
        spec = await self._spec_for(interaction)
        wanted = current.strip().replace(" ", "")
        # What starts with the typed text first ("16" -> 16:9 before 9:16).
        matches = sorted((r for r in spec.aspect_ratios if wanted in r), key=lambda r: not r.startswith(wanted))
        return [app_commands.Choice(name=r, value=r) for r in matches][:25]

    @imagine.autocomplete("size")
    async def size_autocomplete(self, interaction: discord.Interaction[NanoBananaBot], current: str) -> list[app_commands.Choice[str]]:
        spec = await self._spec_for(interaction)
        if not spec.sizes:
            locale = normalize_locale(interaction.locale)
            return [app_commands.Choice(name=t("size.fixed", locale)[:100], value="")]
        wanted = current.strip().lower()
        return [app_commands.Choice(name=display_size(s), value=s) for s in spec.sizes if wanted in display_size(s).lower()][:25]

    async def _spec_for(self, interaction: discord.Interaction[NanoBananaBot]):
        chosen = getattr(interaction.namespace, "model", None)
        if not chosen:
            chosen = (await self.bot.services.defaults(interaction.guild_id)).model
        try:
            return resolve_model(chosen)
        except InvalidRequest:
            return next(iter(MODELS.values()))

    # ---------------------------------------------------------------- context menu

    async def edit_image_menu(self, interaction: discord.Interaction[NanoBananaBot], message: discord.Message) -> None:
        locale = normalize_locale(interaction.locale)
        if interaction.guild_id is None:
            await interaction.response.send_message(t("cmd_error.guild_only", locale), ephemeral=True)
            return
        images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        if not images:
            await interaction.response.send_message(t("edit.no_image_in_message", locale), ephemeral=True)
            return
        turn = await self.bot.services.conversations.turn_by_message(message.id)
        if turn is not None and not await self._may_continue(interaction, turn.conversation_id):
            turn = None  # someone else's thread: a new picture from this one, not a turn in theirs

        async def submitted(modal_interaction: discord.Interaction[NanoBananaBot], text: str, extra: list[discord.Attachment]) -> None:
            defaults = await self.bot.services.defaults(modal_interaction.guild_id)
            if turn is not None:
                await self._continue(modal_interaction, turn.id, text, extra, reply_to=None)
                return
            req = JobRequest(
                prompt=text,
                model=defaults.model,
                upload_limit=self._upload_limit(modal_interaction),
                locale=normalize_locale(modal_interaction.locale),
                guild_locale=normalize_locale(modal_interaction.guild_locale or modal_interaction.locale),
            )
            await self.start(modal_interaction, req, attachments=[*images[:1], *extra], kind="edit")

        await interaction.response.send_modal(EditModal(locale, submitted))

    # ---------------------------------------------------------------- buttons

    async def reroll(self, interaction: discord.Interaction[NanoBananaBot], turn_id: int) -> None:
        svc = self.bot.services
        locale = normalize_locale(interaction.locale)
        job = await svc.job_for_turn(turn_id)
        if job is None:
            await interaction.response.send_message(t("conversation.unknown_turn", locale), ephemeral=True)
            return
        req = JobRequest.from_json(job.request)
        req.upload_limit = self._upload_limit(interaction)
        req.locale = locale
        req.reply_to_message_id = None
        if req.parent_turn_id is None:
            req.conversation_id = None  # a fresh root: a new result with its own thread
        elif not await self._may_continue(interaction, req.conversation_id, refuse=True):
            return  # a turn in someone else's thread
        await self.start(interaction, req, attachments=[], kind="reroll")

    async def upscale(self, interaction: discord.Interaction[NanoBananaBot], turn_id: int, size: str) -> None:
        req = await self._request_from_turn(interaction, turn_id, UPSCALE_PROMPT, size=size)
        if req is not None:
            await self.start(
                interaction, req, attachments=[], kind="upscale", display_prompt=t("upscale.prompt", req.guild_locale, size=size)
            )

    async def open_edit_modal(self, interaction: discord.Interaction[NanoBananaBot], turn_id: int) -> None:
        locale = normalize_locale(interaction.locale)
        turn = await self.bot.services.conversations.get_turn(turn_id)
        if turn is None:
            await interaction.response.send_message(t("conversation.unknown_turn", locale), ephemeral=True)
            return
        # Asked before the form opens, not after the member has typed into it.
        if not await self._may_continue(interaction, turn.conversation_id, refuse=True):
            return

        async def submitted(modal_interaction: discord.Interaction[NanoBananaBot], text: str, extra: list[discord.Attachment]) -> None:
            await self._continue(modal_interaction, turn_id, text, extra, reply_to=None)

        await interaction.response.send_modal(EditModal(locale, submitted))

    async def _may_continue(self, interaction: discord.Interaction[NanoBananaBot], conversation: Any, *, refuse: bool = False) -> bool:
        """The server's thread rule (requester / anyone) for buttons and forms that add a turn to
        a conversation, as for messages in its thread. ``conversation``: object or id."""
        svc = self.bot.services
        if isinstance(conversation, int):
            conversation = await svc.conversations.get_conversation(conversation)
        if conversation is None:
            return True  # nothing to protect; the caller reports an unknown picture
        g = await svc.guild(interaction.guild_id)
        if g.may_continue_thread(interaction.user.id, conversation.owner_id):
            return True
        if refuse:
            await interaction.response.send_message(t("conversation.owner_only", normalize_locale(interaction.locale)), ephemeral=True)
        return False

    async def delete_result(self, interaction: discord.Interaction[NanoBananaBot], turn_id: int) -> None:
        locale = normalize_locale(interaction.locale)
        svc = self.bot.services
        job = await svc.job_for_turn(turn_id)
        perms = interaction.permissions
        allowed = (job is not None and job.user_id == interaction.user.id) or perms.manage_messages
        if not allowed:
            await interaction.response.send_message(t("delete.not_allowed", locale), ephemeral=True)
            return
        await interaction.response.defer()
        try:
            if interaction.message is not None:
                await interaction.message.delete()
        except discord.HTTPException:
            await interaction.followup.send(t("delete.failed", locale), ephemeral=True)

    async def cancel(self, interaction: discord.Interaction[NanoBananaBot], job_id: int) -> None:
        locale = normalize_locale(interaction.locale)
        svc = self.bot.services
        job = await svc.get_job(job_id)
        if job is None or job.user_id != interaction.user.id:
            await interaction.response.send_message(t("cancel.not_yours", locale), ephemeral=True)
            return
        # No await between this check and the cancel: the runner cannot slip into delivery.
        cancelled = job_id not in self._delivering and await svc.cancel_job(job_id, interaction.user.id)
        if not cancelled:
            await interaction.response.send_message(t("cancel.too_late", locale), ephemeral=True)
            return
        self._interactions.pop(progress_message_id(job) or 0, None)
        await interaction.response.edit_message(content=render.progress_text("cancelled", job_locale(job)), view=None, embed=None)

    async def retry(self, interaction: discord.Interaction[NanoBananaBot], job_id: int) -> None:
        locale = normalize_locale(interaction.locale)
        # Claimed before the first await: a double click (two interactions a few ms apart)
        # makes one job; the second is told so. The button is removed below as well, and
        # the claim is kept (bounded) so a click on a stale copy of the message is refused too.
        if job_id in self._retried:
            await interaction.response.send_message(t("fair.retry_once", locale), ephemeral=True)
            return
        self._retried[job_id] = None
        while len(self._retried) > RETRY_MEMORY:
            self._retried.pop(next(iter(self._retried)))
        svc = self.bot.services
        job = await svc.get_job(job_id)
        if job is None or job.user_id != interaction.user.id:
            self._retried.pop(job_id, None)
            await interaction.response.send_message(t("cancel.not_yours", locale), ephemeral=True)
            return
        req = JobRequest.from_json(job.request)
        req.locale = locale
        if await self.start(interaction, req, attachments=[], kind="retry") is None:
            self._retried.pop(job_id, None)  # refused (e.g. no credits left): may be tried later
        if interaction.message is not None:
            # One retry per notice: the button goes, so a second click cannot charge again.
            try:
                await interaction.message.edit(view=None)
            except discord.HTTPException:
                pass

    # ---------------------------------------------------------------- starting jobs

    async def _continue(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        turn_id: int,
        text: str,
        extra: Sequence[discord.Attachment],
        *,
        reply_to: int | None,
    ) -> None:
        """Edit from a turn (modal on a result): a new turn under it, posted in its thread."""
        req = await self._request_from_turn(interaction, turn_id, text, reply_to=reply_to)
        if req is not None:
            await self.start(interaction, req, attachments=list(extra), kind="edit")

    async def _request_from_turn(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        turn_id: int,
        prompt: str,
        *,
        size: str | None = None,
        reply_to: int | None = None,
    ) -> JobRequest | None:
        """A request continuing from ``turn_id``, or None after telling the member why not."""
        svc = self.bot.services
        locale = normalize_locale(interaction.locale)
        turn = await svc.conversations.get_turn(turn_id)
        conversation = await svc.conversations.get_conversation(turn.conversation_id) if turn else None
        if turn is None or conversation is None:
            await interaction.response.send_message(t("conversation.unknown_turn", locale), ephemeral=True)
            return None
        if not await self._may_continue(interaction, conversation, refuse=True):
            return None
        return continue_from(
            turn,
            conversation.model,
            prompt,
            size=size,
            conversation_thread_id=conversation.thread_id,
            post_channel_id=interaction.channel_id,
            reply_to_message_id=reply_to,
            upload_limit=self._upload_limit(interaction),
            locale=locale,
            guild_locale=normalize_locale(interaction.guild_locale or interaction.locale),
        )

    async def start(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        req: JobRequest,
        *,
        attachments: Sequence[discord.Attachment],
        kind: str,
        display_prompt: str | None = None,
    ) -> Any:
        """Vet, acknowledge, store the inputs and queue the job; the Job, or None when it was
        refused (the member has been told why)."""
        svc = self.bot.services
        locale = req.locale
        member = interaction.user
        role_ids = [r.id for r in getattr(member, "roles", [])]
        req.post_channel_id = req.post_channel_id or interaction.channel_id
        try:
            if req.post_channel_id == interaction.channel_id:
                check_can_post(interaction.app_permissions, in_thread=isinstance(interaction.channel, discord.Thread))
            await vet(
                svc,
                req,
                attachments,
                guild_id=interaction.guild_id,
                channel=interaction.channel,
                channel_id=interaction.channel_id,
                user_id=member.id,
                role_ids=role_ids,
            )
        except Exception as exc:  # noqa: BLE001 - every refusal becomes a translated ephemeral reply
            if not is_user_facing(exc):
                raise
            await interaction.response.send_message(embed=render.error_embed(exc, locale), ephemeral=True)
            return None

        callback = await interaction.response.send_message(render.progress_text("preparing", locale))
        acked = time.monotonic()
        # The callback answer carries the message: no second round trip on a token that may expire.
        progress = callback.resource if isinstance(callback.resource, discord.InteractionMessage) else await interaction.original_response()
        self._interactions[progress.id] = (interaction, acked)
        try:
            for attachment in attachments:
                image = await svc.identify_image(await read_attachment(attachment), attachment.filename)
                req.images.append(await svc.images.put(image.data, image.mime_type))
            job = await svc.submit_job(
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                user_id=member.id,
                role_ids=role_ids,
                kind=kind,
                req=req,
                progress_message_id=progress.id,
                display_prompt=display_prompt,
            )
        except Exception as exc:  # noqa: BLE001
            if not is_user_facing(exc):
                log.exception("could not queue a %s job", kind)
            self._interactions.pop(progress.id, None)
            await progress.edit(content=None, embed=render.error_embed(exc, locale), view=None)
            return None
        position = await svc.queue_position(job.id)
        if position is not None:  # None: already running (or over), and its runner shows that
            await self._edit_progress(
                job, render.progress_text("queued", locale, position=position, since=time.time()), force=True, cancel=True
            )
        return job

    def _upload_limit(self, interaction: discord.Interaction[NanoBananaBot]) -> int:
        limit = getattr(interaction, "filesize_limit", None)
        if not limit and interaction.guild is not None:
            limit = interaction.guild.filesize_limit
        return int(limit or DEFAULT_UPLOAD_LIMIT)

    # ---------------------------------------------------------------- progress

    async def _edit_progress(
        self,
        job: Any,
        content: str | None,
        *,
        force: bool = False,
        cancel: bool = False,
        must_show: bool = False,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
    ) -> None:
        """Edit the job's progress message: with the interaction token while it lives, else the
        bot token. Discord may refuse bot-token edits of an interaction's response; news the
        user must see (a failure, Retry after a restart) is then posted as a new message."""
        message_id = progress_message_id(job)
        if not message_id:
            return
        now = time.monotonic()
        wait = PROGRESS_EDIT_INTERVAL - (now - self._last_edit.get(job.id, 0.0))
        if not force and wait > 0:
            # Too soon after the last edit: keep the newest text and send it when allowed, so
            # a queue position that changed meanwhile is never left stale on screen.
            self._pending[job.id] = (content, cancel)
            if job.id not in self._flushers:
                self._flushers[job.id] = asyncio.create_task(self._flush_later(job, wait))
            return
        # This edit supersedes anything waiting (e.g. "queued" must not overwrite "drawing").
        self._pending.pop(job.id, None)
        flusher = self._flushers.pop(job.id, None)
        if flusher is not None and flusher is not asyncio.current_task():
            flusher.cancel()
        self._last_edit[job.id] = now
        if cancel:
            view = single_button_view(CancelButton(job.id, job_locale(job)))
        kwargs: dict[str, Any] = {"content": content, "embed": embed, "view": view}
        held = self._interactions.get(message_id)
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            if held and now - held[1] < TOKEN_LIFETIME:
                try:
                    await held[0].edit_original_response(**kwargs)
                    return
                except discord.HTTPException as exc:
                    if exc.status not in (401, 404):
                        raise
                    # The token died early (Discord's clock, not ours): the bot token still works.
                    self._interactions.pop(message_id, None)
            await channel.get_partial_message(message_id).edit(**kwargs)
        except discord.HTTPException as exc:
            log.info("progress edit for job %s failed: %s", job.id, exc.status)
            if not must_show or exc.status not in (403, 404):
                return
            try:
                reference = discord.MessageReference(message_id=message_id, channel_id=job.channel_id, fail_if_not_exists=False)
                posted = await channel.send(
                    content=f"<@{job.user_id}> {content or ''}".strip(),
                    embed=embed,
                    view=view or discord.utils.MISSING,
                    reference=reference,  # type: ignore[arg-type]
                    allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)], replied_user=False),
                )
            except discord.HTTPException as again:
                log.warning("could not tell the requester of job %s either: %s", job.id, again.status)
                return
            await self.bot.services.jobs.update(job.id, progress_message_id=posted.id)
            # The old progress message would go on saying "Drawing…" with a live Cancel button.
            try:
                await channel.get_partial_message(message_id).delete()
            except discord.HTTPException:
                pass

    async def _flush_later(self, job: Any, delay: float) -> None:
        await asyncio.sleep(delay)
        pending = self._pending.pop(job.id, None)
        if pending is not None:
            content, cancel = pending
            await self._edit_progress(job, content, force=True, cancel=cancel)
        self._flushers.pop(job.id, None)

    async def _drop_progress(self, job: Any) -> None:
        message_id = progress_message_id(job)
        held = self._interactions.pop(message_id or 0, None)
        self._last_edit.pop(job.id, None)
        self._pending.pop(job.id, None)
        flusher = self._flushers.pop(job.id, None)
        if flusher is not None:
            flusher.cancel()
        if not message_id:
            return
        try:
            if held and time.monotonic() - held[1] < TOKEN_LIFETIME:
                try:
                    await held[0].delete_original_response()
                    return
                except discord.HTTPException as exc:
                    if exc.status not in (401, 404):
                        raise
            channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            await channel.get_partial_message(message_id).delete()
        except discord.HTTPException as exc:
            log.info("could not remove the progress message of job %s: %s", job.id, exc.status)

    async def on_position(self, job: Any, position: int) -> None:
        await self._edit_progress(
            job, render.progress_text("queued", job_locale(job), position=position, since=job.created_at), cancel=True
        )

    async def on_interrupted(self, job: Any) -> None:
        locale = job_locale(job)
        embed = discord.Embed(colour=render.ERROR, description=t("job.interrupted", locale))
        await self._edit_progress(job, None, force=True, must_show=True, embed=embed, view=single_button_view(RetryButton(job.id, locale)))

    # ---------------------------------------------------------------- running a job

    async def run_job(self, job: Any) -> None:
        """Called by the job queue. Returns when the picture is delivered; raises otherwise."""
        svc = self.bot.services
        try:
            req = JobRequest.from_json(job.request)
        except (TypeError, ValueError, AttributeError):
            req = JobRequest(prompt="", model="")  # refused below, with the user told and refunded
        started = time.time()
        await self._edit_progress(
            job, render.progress_text("generating", req.locale, since=started, model=req.model), force=True, cancel=True
        )
        try:
            try:
                if not req.prompt or not req.model:
                    raise UserFacingError("job.unreadable")
                if req.after_job_id is not None:
                    # Chained after a message sent just before this one: edit its result (the
                    # queue started this job only once that one was over). No result (it
                    # failed or was cancelled): edit the picture both were sent to.
                    prior = await svc.get_job(req.after_job_id)
                    if prior is not None and prior.result_turn_id is not None:
                        req.parent_turn_id = prior.result_turn_id
                generated = await svc.studio.generate(
                    guild_id=job.guild_id, channel_id=job.channel_id, user_id=job.user_id, req=req, job_id=job.id
                )
                # The picture exists and goes out now (the upload may land even if interrupted):
                # a Cancel click from here on is too late, or it would refund a posted picture.
                self._delivering.add(job.id)
                await self._edit_progress(job, render.progress_text("uploading", req.locale, since=started), force=True)
                message = await self._deliver(job, req, generated, elapsed=time.time() - started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                discord_refused = isinstance(exc, discord.HTTPException)
                if discord_refused:
                    # Discord's answer says it all; the job record gets a reason, not a traceback.
                    log.warning("job %s: Discord refused the result (%s %s)", job.id, exc.status, exc.code)
                elif not is_user_facing(exc):
                    log.exception("job %s failed", job.id)
                await self._edit_progress(job, None, force=True, must_show=True, embed=render.error_embed(exc, req.locale), view=None)
                self._interactions.pop(progress_message_id(job) or 0, None)
                self._last_edit.pop(job.id, None)
                if discord_refused:
                    raise UserFacingError("deliver.discord_refused", status=exc.status) from exc
                raise
            # The picture is out: bookkeeping trouble from here on must not refund it.
            try:
                await svc.record_result(
                    job,
                    turn_id=generated.turn.id if generated.turn else None,
                    message_id=message.id,
                    relay_name=generated.relay_name,
                    latency_ms=int((time.time() - started) * 1000),
                )
            except Exception:
                log.exception("job %s was delivered but its result could not be recorded", job.id)
            await self._drop_progress(job)
        finally:
            # Held until the runner returns: the queue then marks the job delivered itself.
            self._delivering.discard(job.id)

    async def _deliver(self, job: Any, req: JobRequest, generated: Any, *, elapsed: float) -> discord.Message:
        svc = self.bot.services
        result = generated.result
        locale = req.guild_locale
        channel_id = req.post_channel_id or job.channel_id
        channel = self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id)
        limit = req.upload_limit
        turn = generated.turn
        # Not stored (disk full): delivered without the buttons that would need the turn.
        view = result_view(turn.id, result.model, req.size, locale) if turn is not None else discord.utils.MISSING
        note = None if turn is not None else t("fair.store_failed", locale)
        display_prompt = req.display_prompt or req.prompt
        message: discord.Message | None = None
        tried_channels: set[int] = set()
        for _attempt in range(UPLOAD_RETRIES):
            fitted = await fit_for_upload_async(result.image, result.mime_type, limit)
            filename = fitted.filename(f"nano-banana-{turn.id}" if turn is not None else f"nano-banana-job{job.id}")
            embed = render.result_embed(
                locale=locale,
                prompt=display_prompt,
                model=result.model,
                aspect_ratio=req.aspect_ratio,
                size=req.size,
                elapsed_s=elapsed,
                credits=job.cost,
                filename=filename,
                sources=result.sources,
                width=result.width,
                height=result.height,
                # The relay layer's notes (another shape than asked, controls the format lost) join the fit note.
                fit_note="\n".join(
                    x
                    for x in (
                        render.fit_note(
                            fitted.how, locale, width=fitted.width, height=fitted.height, original=(result.width, result.height)
                        ),
                        note,
                        *(t(n.key, locale, **n.params) for n in result.notes),
                    )
                    if x
                )
                or None,
                model_text=result.text,
            )
            reference = None
            if req.reply_to_message_id:
                reference = discord.MessageReference(message_id=req.reply_to_message_id, channel_id=channel_id, fail_if_not_exists=False)
            try:
                message = await channel.send(
                    content=f"<@{job.user_id}>",
                    embed=embed,
                    file=discord.File(fp=_bytes_io(fitted.data), filename=filename),
                    view=view,
                    reference=reference,  # type: ignore[arg-type]
                    allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)], replied_user=False),
                )
                break
            except discord.HTTPException as exc:
                if exc.status == 413 or exc.code == 40005:
                    limit = int(min(limit, len(fitted.data)) * 0.7)
                    log.info("upload of job %s refused as too large (%d bytes); retrying under %d", job.id, len(fitted.data), limit)
                    continue
                if exc.status in (403, 404) or exc.code == THREAD_LOCKED:
                    # The thread was deleted, locked or closed to the bot: the picture goes to
                    # the channel the member asked from, else the conversation's own channel,
                    # rather than being lost.
                    tried_channels.add(channel_id)
                    fallback = await self._fallback_channel(job, req, tried=tried_channels)
                    if fallback is not None:
                        log.info("job %s cannot post in %s (%s %s); posting in %s", job.id, channel_id, exc.status, exc.code, fallback)
                        channel_id = fallback
                        channel = self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id)
                        req.reply_to_message_id = None
                        continue
                held = self._interactions.get(progress_message_id(job) or 0)
                if exc.status == 403 and held and time.monotonic() - held[1] < TOKEN_LIFETIME:
                    # The bot cannot post here with its own token (e.g. the server added only
                    # the app's commands): the interaction's followup still can, for 15 minutes.
                    log.info("job %s: channel post refused (%s); answering through the interaction", job.id, exc.code)
                    message = await held[0].followup.send(
                        content=f"<@{job.user_id}>",
                        embed=embed,
                        file=discord.File(fp=_bytes_io(fitted.data), filename=filename),
                        view=view,
                        allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
                        wait=True,
                    )
                    break
                raise
        if message is None:
            raise UserFacingError("deliver.too_large")
        # Known before the thread opens, so a quick reply to the picture already finds its turn.
        if turn is None:
            return message
        try:
            await svc.conversations.set_message(turn.id, message.id)
        except Exception:  # noqa: BLE001 - the picture is out; bookkeeping must not undo that
            log.warning("job %s: delivered, but its message could not be recorded", job.id)
            return message
        if req.parent_turn_id is None and req.conversation_id is None:
            await self._open_thread(job, req, generated, message, embed)
        return message

    async def _fallback_channel(self, job: Any, req: JobRequest, *, tried: set[int]) -> int | None:
        candidates = [job.channel_id]
        if req.conversation_id:
            conversation = await self.bot.services.conversations.get_conversation(req.conversation_id)
            if conversation is not None:
                candidates.append(conversation.channel_id)
        for candidate in candidates:
            if candidate and candidate not in tried:
                return candidate
        return None

    async def _open_thread(self, job: Any, req: JobRequest, generated: Any, message: discord.Message, embed: discord.Embed) -> None:
        svc = self.bot.services
        locale = req.guild_locale
        if not (await svc.defaults(job.guild_id)).threads:
            return
        try:
            thread = await message.create_thread(name=render.shorten(req.prompt, 90) or "nano-banana", auto_archive_duration=1440)
        except ValueError:
            return  # posted through the interaction (no channel post allowed): no thread either
        except discord.HTTPException as exc:
            log.info("no thread for job %s (%s %s)", job.id, exc.status, exc.code)
            if exc.status != 403:
                return  # e.g. posted inside a thread already: no thread to open, nothing missing
            # Added to, not replacing, a note that the picture was shrunk to fit.
            embed.set_footer(text="\n".join(x for x in (embed.footer.text, t("thread.missing_permission", locale)) if x))
            try:
                await message.edit(embed=embed)
            except discord.HTTPException:
                pass
            return
        await svc.conversations.bind_thread(generated.conversation_id, thread.id)
        try:
            await thread.send(t("thread.hint", locale))
        except discord.HTTPException:
            pass


def job_locale(job: Any) -> str:
    return str((job.request or {}).get("locale") or "en")


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


def check_can_post(perms: discord.Permissions, *, in_thread: bool) -> None:
    """Refuse before the relay is paid when Discord says the bot could not post the result here
    (``app_permissions`` of the interaction); otherwise the member waits for a picture that is
    then lost at upload. 0 means Discord did not say: the upload path still explains a refusal."""
    if not perms.value:
        return
    needed = ("send_messages_in_threads" if in_thread else "send_messages", "attach_files", "embed_links")
    missing = [name for name in needed if not getattr(perms, name)]
    if missing:
        raise UserFacingError("cmd_error.bot_missing_permissions", permissions=", ".join(missing))


def check_attachments(attachments: Sequence[discord.Attachment]) -> None:
    """Refuse what we can see without downloading: declared non-images and oversized files."""
    for attachment in attachments:
        content_type = (attachment.content_type or "").split(";")[0].strip()
        if content_type and not content_type.startswith("image/"):
            raise InvalidRequest("not an image", key="invalid.not_image", name=attachment.filename)
        if attachment.size > MAX_INPUT_BYTES:
            raise InvalidRequest(
                "file too large",
                key="invalid.image_too_large",
                name=attachment.filename,
                size_mb=round(attachment.size / 2**20, 1),
                limit_mb=MAX_INPUT_BYTES // 2**20,
            )


async def vet(
    svc: Any,
    req: JobRequest,
    attachments: Sequence[discord.Attachment],
    *,
    guild_id: int | None,
    channel: Any,
    channel_id: int | None,
    user_id: int,
    role_ids: list[int],
) -> None:
    """Every check that needs no download and sends nothing: options against the model,
    attachments, access rules, quota. Raises a translated refusal."""
    check_attachments(attachments)
    await svc.studio.check(req, image_count=len(req.images) + len(attachments))
    await svc.authorize(guild_id, channel_id, user_id, role_ids, req.model, parent_channel_id=getattr(channel, "parent_id", None))
    await svc.precheck_quota(guild_id, user_id, role_ids, req.model, req.size)


async def read_attachment(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes. A file Discord no longer serves (deleted, or its link expired:
    404/403/410) is the member's to upload again, said in their language, not a bug."""
    try:
        return await attachment.read()
    except discord.HTTPException as exc:
        log.info("attachment %s could not be fetched: HTTP %s", attachment.id, exc.status)
        raise UserFacingError("fair.reference_gone") from None


def is_user_facing(exc: BaseException) -> bool:
    return isinstance(exc, (RelayError, UserFacingError)) or isinstance(getattr(exc, "key", None), str)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Imagine(bot))
