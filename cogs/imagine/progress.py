"""A job's progress message: queue position, "drawing…", errors and Retry, kept current under
Discord's rate limit on message edits.

An interaction token edits the message for its first 15 minutes (Discord's token lifetime),
the bot token afterwards. The token is stored with the job (bot/jobs/replies.py), so a worker
process, which never saw the interaction, edits through the interaction's webhook too. Discord
may refuse a bot-token edit of an interaction's response; news the member must see (a failure,
Retry after a restart) is then posted as a new message — in a direct message where the bot
cannot post (a group DM, a server it is not in).

Live previews: while the model thinks, each of its draft pictures is shown small (a thumbnail,
titled as a draft) with its latest thought in one line, at most one edit per
:data:`PROGRESS_EDIT_INTERVAL`; the newest draft wins when several arrive in between. The
result is posted as its own message and this one removed, so the picture replaces the drafts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image

from bot.i18n import t
from bot.jobs import Job
from bot.jobs.replies import Reply
from bot.relay.previews import Preview, PreviewSink
from bot.services import Services, progress_message_id
from cogs import render

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

PROGRESS_EDIT_INTERVAL = 1.5  # seconds between progress edits (Discord rate limits message edits)
TOKEN_LIFETIME = 14 * 60  # use an interaction token only while it is safely alive
DRAFT_PIXELS = 256  # a draft is shown at most this wide and high: small, and quick to upload
DRAFT_MAX_PIXELS = 64 * 2**20  # a draft claiming more pixels is not decoded (a decompression bomb)
LATE_NOTICE_S = 60  # how long before the stored token stops being used the member is told


def small_draft(data: bytes) -> bytes | None:
    """The draft as a small JPEG, or None when it is no picture Pillow reads. Run in a thread."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > DRAFT_MAX_PIXELS:
                return None
            img.draft("RGB", (DRAFT_PIXELS, DRAFT_PIXELS))  # JPEG: decode at a fraction of the size
            img.thumbnail((DRAFT_PIXELS, DRAFT_PIXELS))
            out = io.BytesIO()
            img.convert("RGB").save(out, "JPEG", quality=80)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def job_locale(job: Job) -> str:
    return str((job.request or {}).get("locale") or "en")


class Progress:
    """Every job's progress message, for the whole bot (one instance, owned by the Imagine cog)."""

    def __init__(self, bot: NanoBananaBot, cancel_view: Callable[[Job], discord.ui.View]) -> None:
        self.bot = bot
        self._cancel_view = cancel_view  # the Cancel button, for a job still cancellable
        # Jobs whose picture is made and being posted: too late to cancel (the picture is out).
        self.delivering: set[int] = set()
        # progress message id -> (interaction, acked at): lets progress edits use the token while
        # it lives. Keyed by message, not job, so it is known before the job row exists (a job
        # can start, and edit its progress, before submit returns).
        self._interactions: dict[int, tuple[discord.Interaction[NanoBananaBot], float]] = {}
        self._last_edit: dict[int, float] = {}
        # job id -> newest progress text held back by the edit rate limit, and its sender.
        self._pending: dict[int, tuple[str | None, bool]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        # job id -> the newest preview not shown yet, the task showing them, and the jobs whose
        # message holds a draft picture (a later embed replaces it, the attachment goes too).
        self._drafts: dict[int, tuple[Preview, str]] = {}
        self._draft_tasks: dict[int, asyncio.Task[None]] = {}
        self._drafted: set[int] = set()
        # Where only the interaction reaches the member: a note shown under the progress once
        # the token is about to die (the picture will come by DM), and the task that adds it.
        self._notes: dict[int, str] = {}
        self._late: dict[int, asyncio.Task[None]] = {}
        self._dead: set[int] = set()  # jobs whose token Discord already refused (401): not tried again
        # Progress messages showing "drawing": the variants of one /imagine share one message,
        # and a sibling still queued (the member's cap) must not turn it back to "queued".
        self._drawing: set[int] = set()  # 0: a job without a progress message (never asked)

    @property
    def services(self) -> Services:
        return self.bot.services

    def hold(self, message_id: int, interaction: discord.Interaction[NanoBananaBot], acked: float) -> None:
        """The interaction whose response is this progress message, acknowledged at ``acked``."""
        self._interactions[message_id] = (interaction, acked)

    def release(self, message_id: int | None) -> None:
        self._interactions.pop(message_id or 0, None)

    def live_interaction(self, job: Job) -> discord.Interaction[NanoBananaBot] | None:
        """The job's interaction while its token is safely alive, else None."""
        held = self._interactions.get(progress_message_id(job) or 0)
        if held and time.monotonic() - held[1] < TOKEN_LIFETIME:
            return held[0]
        return None

    async def reply(self, job: Job) -> Reply | None:
        """The interaction the job answers through, as stored with it (any process)."""
        return await self.services.replies.get(progress_message_id(job))

    async def channel_post(self, job: Job) -> bool:
        """The bot's own token may post where the member asked (not a group DM, nor a server
        the bot is not in). A job without a stored reply came from a message: it may."""
        reply = await self.reply(job)
        return reply is None or reply.channel_post

    async def webhook(self, job: Job) -> discord.Webhook | None:
        """The job's interaction webhook while its token is safely alive, else None."""
        reply = await self.reply(job)
        if reply is None or not reply.alive() or job.id in self._dead:
            return None
        return interaction_webhook(self.bot, reply)

    def token_died(self, job: Job) -> None:
        """Discord refused the job's interaction token (401: it died before our clock said so):
        neither the interaction held here nor the stored token is tried again."""
        self.release(progress_message_id(job))
        self._dead.add(job.id)

    def drawing(self, job: Job) -> None:
        """The job's picture is being made: its message shows that from now on."""
        self._drawing.add(progress_message_id(job) or 0)

    def shows_drawing(self, job: Job) -> bool:
        return (progress_message_id(job) or 0) in self._drawing

    def forget(self, job: Job) -> None:
        """The job is over: drop its interaction, rate-limit and preview state."""
        if int((job.request or {}).get("variants") or 1) == 1:  # siblings may still be drawn on it
            self._drawing.discard(progress_message_id(job) or 0)
        self._stop_drafts(job)
        self._drafted.discard(job.id)
        self.release(progress_message_id(job))
        self._last_edit.pop(job.id, None)
        self._notes.pop(job.id, None)
        self._dead.discard(job.id)
        late = self._late.pop(job.id, None)
        if late is not None and late is not asyncio.current_task():
            late.cancel()

    async def warn_before_expiry(self, job: Job, locale: str, generating: str) -> None:
        """Where only the interaction reaches the member, say on the progress message shortly
        before its token dies that the picture will come by direct message — the last moment
        anything can be said there (cogs/imagine/delivery.py sends the late picture)."""
        reply = await self.reply(job)
        if reply is None or reply.channel_post:
            return
        delay = reply.expires_at - LATE_NOTICE_S - time.time()
        if delay > 0 and job.id not in self._late:
            self._late[job.id] = asyncio.create_task(self._late_notice(job, locale, generating, delay))

    async def _late_notice(self, job: Job, locale: str, generating: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            if job.id in self.delivering:
                return  # the picture is on its way through the interaction
            self._notes[job.id] = t("install.late_notice", locale)
            # As a draft edit: live previews go on, each carrying the note (see edit()).
            await self.edit(job, generating, force=True, cancel=True, draft=True)
        finally:
            self._late.pop(job.id, None)

    async def edit(
        self,
        job: Job,
        content: str | None,
        *,
        force: bool = False,
        cancel: bool = False,
        must_show: bool = False,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        attachments: list[discord.File] | None = None,
        draft: bool = False,
    ) -> None:
        """Edit the job's progress message; ``force`` skips the rate limit, ``cancel`` adds the
        Cancel button, ``must_show`` posts a new message when the edit is refused. ``draft``:
        a preview (see :meth:`previews`); any other forced edit ends the previews, so a late
        draft never covers news such as a failure or "cancelled"."""
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
        if not draft:
            self._stop_drafts(job)
        flusher = self._flushers.pop(job.id, None)
        if flusher is not None and flusher is not asyncio.current_task():
            flusher.cancel()
        self._last_edit[job.id] = now
        note = self._notes.get(job.id)
        if note is not None and content is not None and note not in content:
            content = f"{content}\n{note}"
        if cancel:
            view = self._cancel_view(job)
        extra: dict[str, Any] = {}
        if attachments is not None:
            extra["attachments"] = attachments
        elif embed is not None and job.id in self._drafted and not draft:
            extra["attachments"] = []  # a draft's picture goes with the draft
            self._drafted.discard(job.id)
        try:
            await self._send_edit(job, message_id, content=content, embed=embed, view=view, **extra)
        except discord.HTTPException as exc:
            log.info("progress edit for job %s failed: %s", job.id, exc.status)
            if must_show and exc.status in (403, 404):
                await self._post_instead(job, message_id, content=content, embed=embed, view=view)

    async def _send_edit(self, job: Job, message_id: int, **fields: Any) -> None:
        interaction = self.live_interaction(job)
        try:
            if interaction is not None:
                await interaction.edit_original_response(**fields)
                return
            hook = await self.webhook(job)  # a worker: the token stored with the job
            if hook is not None:
                await hook.edit_message(message_id, **fields)
                return
        except discord.HTTPException as exc:
            if exc.status not in (401, 404):
                raise
            # The token died early (Discord's clock, not ours): the bot token still works.
            self.token_died(job)
        await self._channel(job).get_partial_message(message_id).edit(**fields)

    async def _post_instead(
        self, job: Job, message_id: int, *, content: str | None, embed: discord.Embed | None, view: discord.ui.View | None
    ) -> None:
        if not await self.channel_post(job):
            await self._tell_directly(job, content=content, embed=embed, view=view)
            return
        channel = self._channel(job)
        try:
            reference = discord.MessageReference(message_id=message_id, channel_id=job.channel_id or 0, fail_if_not_exists=False)
            posted = await channel.send(
                content=f"<@{job.user_id}> {content or ''}".strip(),
                embed=embed or discord.utils.MISSING,
                view=view or discord.utils.MISSING,
                reference=reference,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)], replied_user=False),
            )
        except discord.HTTPException as again:
            log.warning("could not tell the requester of job %s either: %s", job.id, again.status)
            return
        await self.services.jobs.update(job.id, progress_message_id=posted.id)
        # The old progress message would go on saying "Drawing…" with a live Cancel button.
        try:
            await channel.get_partial_message(message_id).delete()
        except discord.HTTPException:
            pass

    async def _tell_directly(self, job: Job, *, content: str | None, embed: discord.Embed | None, view: discord.ui.View | None) -> None:
        """News the member must see, where the bot cannot post and the token has died: a DM."""
        try:
            dm = await self.bot.create_dm(discord.Object(job.user_id))
            await dm.send(content=content, embed=embed or discord.utils.MISSING, view=view or discord.utils.MISSING)
        except discord.HTTPException as again:
            log.warning("could not tell the requester of job %s in a direct message either: %s", job.id, again.status)

    async def _flush_later(self, job: Job, delay: float) -> None:
        await asyncio.sleep(delay)
        pending = self._pending.pop(job.id, None)
        if pending is not None:
            content, cancel = pending
            await self.edit(job, content, force=True, cancel=cancel)
        self._flushers.pop(job.id, None)

    # ---------------------------------------------------------------- live previews

    def previews(self, job: Job, locale: str, generating: str) -> PreviewSink:
        """A sink for the job's previews (see bot.relay.previews); ``generating`` is the
        progress text shown above them."""

        def sink(preview: Preview) -> None:
            waiting = self._drafts.get(job.id)
            if waiting is not None and waiting[0].image is not None and preview.image is None:
                # Newer words, but the draft picture waiting for its turn is still the newest one.
                preview = dataclasses.replace(waiting[0], summary=preview.summary)
            self._drafts[job.id] = (preview, generating)
            if job.id not in self._draft_tasks:
                self._draft_tasks[job.id] = asyncio.create_task(self._show_drafts(job, locale))

        return sink

    async def _show_drafts(self, job: Job, locale: str) -> None:
        try:
            while job.id in self._drafts and job.id not in self.delivering:
                wait = PROGRESS_EDIT_INTERVAL - (time.monotonic() - self._last_edit.get(job.id, 0.0))
                if wait > 0:
                    await asyncio.sleep(wait)  # the newest preview is taken after the wait
                if job.id in self.delivering:
                    break  # the picture is out: a draft must not cover "uploading"
                waiting = self._drafts.pop(job.id, None)
                if waiting is None:
                    break
                preview, generating = waiting
                await self._show_draft(job, locale, preview, generating)
        except Exception as exc:  # a preview is a nicety: it never fails the job, nor logs a traceback
            log.warning("previews of job %s stopped: %s: %s", job.id, type(exc).__name__, exc)
        finally:
            self._draft_tasks.pop(job.id, None)
            self._drafts.pop(job.id, None)

    async def _show_draft(self, job: Job, locale: str, preview: Preview, generating: str) -> None:
        small = await asyncio.to_thread(small_draft, preview.image) if preview.image else None
        # Words only: the last draft picture (if any) stays on screen, its attachment kept.
        files = [discord.File(io.BytesIO(small), filename=render.DRAFT_FILENAME)] if small is not None else None
        embed = render.draft_embed(locale, preview, with_picture=small is not None or job.id in self._drafted)
        await self.edit(job, generating, force=True, cancel=True, embed=embed, attachments=files, draft=True)
        if small is not None:
            self._drafted.add(job.id)

    def _stop_drafts(self, job: Job) -> None:
        self._drafts.pop(job.id, None)
        task = self._draft_tasks.pop(job.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def drop(self, job: Job) -> None:
        """The result is posted: the progress message goes."""
        message_id = progress_message_id(job)
        interaction = self.live_interaction(job)
        self.forget(job)
        self._drawing.discard(message_id or 0)  # a variant group's message too: it is gone now
        self._pending.pop(job.id, None)
        flusher = self._flushers.pop(job.id, None)
        if flusher is not None:
            flusher.cancel()
        if not message_id:
            return
        try:
            try:
                if interaction is not None:
                    await interaction.delete_original_response()
                    return
                hook = await self.webhook(job)
                if hook is not None:
                    await hook.delete_message(message_id)
                    return
            except discord.HTTPException as exc:
                if exc.status not in (401, 404):
                    raise
            await self._channel(job).get_partial_message(message_id).delete()
        except discord.HTTPException as exc:
            log.info("could not remove the progress message of job %s: %s", job.id, exc.status)

    def _channel(self, job: Job) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(job.channel_id or 0, guild_id=job.guild_id)


def interaction_webhook(bot: NanoBananaBot, reply: Reply) -> discord.Webhook:
    """The webhook of a stored interaction token, built as discord.py builds
    ``Interaction.followup``: an application webhook with the bot's state, so its messages may
    carry the bot's persistent buttons."""
    data = {"id": reply.application_id, "type": 3, "token": reply.token}
    return discord.Webhook.from_state(data=data, state=bot._connection)  # type: ignore[arg-type]
