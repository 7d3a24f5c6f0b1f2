"""Editing by talking: messages in a result's thread edit the latest picture; a Discord reply
to an earlier picture branches from that picture; a reply to a result in the channel edits it
and continues in its thread.

Without the privileged Message Content intent Discord sends message text only when the
message mentions the bot or replies to it, so those always work; plain thread messages need
the intent (README says how to switch it on).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.i18n import normalize_locale, t
from bot.studio import continue_from
from cogs import render
from cogs.imagine import is_user_facing, read_attachment, vet

if TYPE_CHECKING:
    from bot.app import NanoBananaBot
    from cogs.imagine import Imagine

log = logging.getLogger(__name__)


class Conversation(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        # Per thread: messages are taken one at a time, and the newest job continuing the
        # thread's latest picture, so the next quick message chains after it.
        self._thread_locks: dict[int, asyncio.Lock] = {}
        self._last_job: dict[int, int] = {}

    def _strip_mention(self, content: str) -> str:
        me = self.bot.user
        if me is None:
            return content.strip()
        return re.sub(rf"<@!?{me.id}>", "", content).strip()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or message.webhook_id:
            return
        svc = self.bot.services
        conversations = svc.conversations
        turn = None
        if message.reference and message.reference.message_id:
            turn = await conversations.turn_by_message(message.reference.message_id)
        replied_to_picture = turn is not None
        if turn is None:
            # Any channel bound to a conversation is a result's thread, cached or not (after a
            # restart discord.py may know the thread only by id).
            turn = await conversations.latest_turn(message.channel.id)
        if turn is None:
            return
        conversation = await conversations.get_conversation(turn.conversation_id)
        if conversation is None:
            return

        text = self._strip_mention(message.content)
        if text.startswith(tuple(p for p in (self.bot.command_prefix if isinstance(self.bot.command_prefix, str) else ()))):
            return
        if not text:
            # Without the intent an unmentioned message arrives empty: nothing to act on.
            return

        defaults = await svc.defaults(message.guild.id)
        locale = normalize_locale(message.guild.preferred_locale)
        if message.author.id != conversation.owner_id and not defaults.thread_anyone:
            # Only answer people who spoke to the bot; others may just be chatting in the thread.
            if replied_to_picture or (self.bot.user is not None and self.bot.user in message.mentions):
                await self._reply(message, t("conversation.owner_only", locale), delete_after=15)
            return

        lock = self._thread_locks.setdefault(message.channel.id, asyncio.Lock())
        async with lock:
            await self._start_edit(message, turn, conversation, text, locale, chain=not replied_to_picture)
        if not lock.locked() and len(self._thread_locks) > 10_000:
            self._thread_locks.pop(message.channel.id, None)

    async def _start_edit(self, message: discord.Message, turn: Any, conversation: Any, text: str, locale: str, *, chain: bool) -> None:
        svc = self.bot.services
        post_channel = conversation.thread_id or message.channel.id
        req = continue_from(
            turn,
            conversation.model,
            text,
            post_channel_id=post_channel,
            # In the thread the result answers the instruction; from the channel it lands in the thread.
            reply_to_message_id=message.id if post_channel == message.channel.id else None,
            upload_limit=message.guild.filesize_limit,
            locale=locale,
            guild_locale=locale,
        )
        role_ids = [r.id for r in getattr(message.author, "roles", [])]
        try:
            await vet(
                svc,
                req,
                message.attachments,
                guild_id=message.guild.id,
                channel=message.channel,
                channel_id=message.channel.id,
                user_id=message.author.id,
                role_ids=role_ids,
            )
            for attachment in message.attachments:
                image = await svc.identify_image(await read_attachment(attachment), attachment.filename)
                req.images.append(await svc.images.put(image.data, image.mime_type))
            if chain:
                prior = self._last_job.get(message.channel.id)
                prior_job = await svc.get_job(prior) if prior is not None else None
                if prior_job is not None and prior_job.status in ("queued", "running"):
                    req.after_job_id = prior_job.id
        except Exception as exc:  # noqa: BLE001
            if not is_user_facing(exc):
                log.exception("could not start an edit from message %s", message.id)
            await self._reply(message, render.error_text(exc, locale))
            return

        progress = await self._reply(message, render.progress_text("preparing", locale))
        if progress is None:
            return
        try:
            job = await svc.submit_job(
                guild_id=message.guild.id,
                channel_id=progress.channel.id,
                user_id=message.author.id,
                role_ids=role_ids,
                kind="edit",
                req=req,
                progress_message_id=progress.id,
            )
        except Exception as exc:  # noqa: BLE001
            if not is_user_facing(exc):
                log.exception("could not queue an edit")
            await progress.edit(content=render.error_text(exc, locale))
            return
        if chain:
            self._last_job[message.channel.id] = job.id
            if len(self._last_job) > 10_000:
                self._last_job.pop(next(iter(self._last_job)))
        imagine: Imagine | None = self.bot.get_cog("Imagine")  # type: ignore[assignment]
        if imagine is not None:
            position = await svc.queue_position(job.id)
            if position is not None:  # None: already running, and its runner shows that
                await imagine._edit_progress(
                    job, render.progress_text("queued", locale, position=position, since=time.time()), force=True, cancel=True
                )

    async def _reply(self, message: discord.Message, content: str, *, delete_after: float | None = None) -> discord.Message | None:
        try:
            # The text may echo the member's words or file names: it pings nobody.
            return await message.reply(
                content, mention_author=False, delete_after=delete_after, allowed_mentions=discord.AllowedMentions.none()
            )
        except discord.HTTPException as exc:
            log.info("could not answer message %s: %s", message.id, exc.status)
            return None


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Conversation(bot))
