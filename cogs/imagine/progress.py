"""A job's progress message: queue position, "drawing…", errors and Retry, kept current under
Discord's rate limit on message edits.

An interaction token edits the message for its first 15 minutes (Discord's token lifetime),
the bot token afterwards. Discord may refuse a bot-token edit of an interaction's response;
news the member must see (a failure, Retry after a restart) is then posted as a new message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.jobs import Job
from bot.services import Services, progress_message_id

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

PROGRESS_EDIT_INTERVAL = 1.5  # seconds between progress edits (Discord rate limits message edits)
TOKEN_LIFETIME = 14 * 60  # use an interaction token only while it is safely alive


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

    def forget(self, job: Job) -> None:
        """The job is over: drop its interaction and rate-limit state."""
        self.release(progress_message_id(job))
        self._last_edit.pop(job.id, None)

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
    ) -> None:
        """Edit the job's progress message; ``force`` skips the rate limit, ``cancel`` adds the
        Cancel button, ``must_show`` posts a new message when the edit is refused."""
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
            view = self._cancel_view(job)
        try:
            await self._send_edit(job, message_id, content=content, embed=embed, view=view)
        except discord.HTTPException as exc:
            log.info("progress edit for job %s failed: %s", job.id, exc.status)
            if must_show and exc.status in (403, 404):
                await self._post_instead(job, message_id, content=content, embed=embed, view=view)

    async def _send_edit(self, job: Job, message_id: int, **fields: Any) -> None:
        interaction = self.live_interaction(job)
        if interaction is not None:
            try:
                await interaction.edit_original_response(**fields)
                return
            except discord.HTTPException as exc:
                if exc.status not in (401, 404):
                    raise
                # The token died early (Discord's clock, not ours): the bot token still works.
                self.release(message_id)
        await self._channel(job).get_partial_message(message_id).edit(**fields)

    async def _post_instead(
        self, job: Job, message_id: int, *, content: str | None, embed: discord.Embed | None, view: discord.ui.View | None
    ) -> None:
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

    async def _flush_later(self, job: Job, delay: float) -> None:
        await asyncio.sleep(delay)
        pending = self._pending.pop(job.id, None)
        if pending is not None:
            content, cancel = pending
            await self.edit(job, content, force=True, cancel=cancel)
        self._flushers.pop(job.id, None)

    async def drop(self, job: Job) -> None:
        """The result is posted: the progress message goes."""
        message_id = progress_message_id(job)
        interaction = self.live_interaction(job)
        self.forget(job)
        self._pending.pop(job.id, None)
        flusher = self._flushers.pop(job.id, None)
        if flusher is not None:
            flusher.cancel()
        if not message_id:
            return
        try:
            if interaction is not None:
                try:
                    await interaction.delete_original_response()
                    return
                except discord.HTTPException as exc:
                    if exc.status not in (401, 404):
                        raise
            await self._channel(job).get_partial_message(message_id).delete()
        except discord.HTTPException as exc:
            log.info("could not remove the progress message of job %s: %s", job.id, exc.status)

    def _channel(self, job: Job) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(job.channel_id or 0, guild_id=job.guild_id)
