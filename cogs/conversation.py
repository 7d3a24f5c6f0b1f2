"""Editing by talking: messages in a result's thread edit the latest picture; a Discord reply
to an earlier picture branches from that picture; a reply to a result in the channel edits it
and continues in its thread.

Without the privileged Message Content intent Discord sends message text only when the
message mentions the bot or replies to it, so those always work; plain thread messages need
the intent (README says how to switch it on).

The job is queued here; the Imagine feature runs it like any other (its progress message, its
picture, its buttons), told through the ``job_queued`` event.

In the bot's DM (a member's own install of the app, cogs/install.py) a reply to a personal
result continues it there, under the personal quota: the bot sees its DMs and may post in them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import rules
from bot.conversations import Conversation as Thread
from bot.conversations import Turn
from bot.i18n import normalize_locale, t
from bot.services import Services
from bot.studio import JobRequest, continue_from
from cogs import render
from cogs.failures import log_unless_user_facing
from cogs.intake import DEFAULT_UPLOAD_LIMIT, channel_is_nsfw, role_ids, store_inputs, vet

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

MEMORY = 10_000  # threads whose lock and last job are kept (the oldest are forgotten first)


@dataclass(frozen=True)
class Place:
    """Where the message was written: its server (None: the bot's DM), the upload limit there,
    and the language answers use (the server's; in a DM the member's, as they last asked)."""

    guild_id: int | None
    upload_limit: int
    locale: str


class Conversation(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        # Per thread: messages are taken one at a time, and the newest job continuing the
        # thread's latest picture, so the next quick message chains after it.
        self._thread_locks: dict[int, asyncio.Lock] = {}
        self._last_job: dict[int, int] = {}

    @property
    def services(self) -> Services:
        return self.bot.services

    def _strip_mention(self, content: str) -> str:
        me = self.bot.user
        if me is None:
            return content.strip()
        return re.sub(rf"<@!?{me.id}>", "", content).strip()

    def _instruction(self, message: discord.Message) -> str:
        """The text to act on; empty for a prefix command, or a message that arrived without
        its text (no Message Content intent and no mention)."""
        text = self._strip_mention(message.content)
        prefix = self.bot.command_prefix
        if isinstance(prefix, str) and text.startswith(prefix):
            return ""
        return text

    async def _picture_for(self, message: discord.Message) -> tuple[Turn, Thread, bool] | None:
        """The turn a message continues, its conversation, and whether it was a reply to it."""
        conversations = self.services.conversations
        turn = None
        if message.reference and message.reference.message_id:
            turn = await conversations.turn_by_message(message.reference.message_id)
        replied_to_picture = turn is not None
        if turn is None:
            # Any channel bound to a conversation is a result's thread, cached or not (after a
            # restart discord.py may know the thread only by id).
            turn = await conversations.latest_turn(message.channel.id)
        if turn is None:
            return None
        conversation = await conversations.get_conversation(turn.conversation_id)
        return None if conversation is None else (turn, conversation, replied_to_picture)

    async def _place(self, message: discord.Message, turn: Turn) -> Place:
        guild = message.guild
        if guild is not None:
            return Place(guild.id, guild.filesize_limit, normalize_locale(guild.preferred_locale))
        job = await self.services.job_for_turn(turn.id)
        locale = str((job.request or {}).get("locale") or "en") if job is not None else "en"
        return Place(None, DEFAULT_UPLOAD_LIMIT, normalize_locale(locale))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        guild = message.guild
        if message.author.bot or message.webhook_id:
            return
        in_dm = guild is None and isinstance(message.channel, discord.DMChannel)
        if guild is None and not (in_dm and self.bot.settings.user_install):
            return
        found = await self._picture_for(message)
        if found is None:
            return
        turn, conversation, replied_to_picture = found
        if in_dm and (not replied_to_picture or conversation.guild_id is not None):
            return  # in the DM only a reply to a personal result continues it (a server's stays in the server)
        text = self._instruction(message)
        if not text:
            return
        place = await self._place(message, turn)
        locale = place.locale
        defaults = await self.services.defaults(place.guild_id)
        if not rules.may_continue_thread(defaults.thread_mode, message.author.id, conversation.owner_id):
            # Only answer people who spoke to the bot; others may just be chatting in the thread.
            if replied_to_picture or (self.bot.user is not None and self.bot.user in message.mentions):
                await self._reply(message, t("conversation.owner_only", locale), delete_after=15)
            return
        lock = self._thread_locks.setdefault(message.channel.id, asyncio.Lock())
        async with lock:
            await self._start_edit(message, place, turn, conversation, text, chain=not replied_to_picture)
        if not lock.locked() and len(self._thread_locks) > MEMORY:
            self._thread_locks.pop(message.channel.id, None)

    def _request(self, message: discord.Message, place: Place, turn: Turn, conversation: Thread, text: str) -> JobRequest:
        post_channel = conversation.thread_id or message.channel.id
        return continue_from(
            turn,
            conversation.model,
            text,
            post_channel_id=post_channel,
            # In the thread the result answers the instruction; from the channel it lands in the thread.
            reply_to_message_id=message.id if post_channel == message.channel.id else None,
            upload_limit=place.upload_limit,
            locale=place.locale,
            guild_locale=place.locale,
        )

    async def _prepare(self, message: discord.Message, place: Place, req: JobRequest, *, chain: bool) -> None:
        """Vet the request, store its pictures and chain it after the thread's running job."""
        svc = self.services
        await vet(
            svc,
            req,
            message.attachments,
            guild_id=place.guild_id,
            parent_channel_id=getattr(message.channel, "parent_id", None),
            channel_id=message.channel.id,
            user_id=message.author.id,
            role_ids=role_ids(message.author),
            channel_nsfw=channel_is_nsfw(message.channel),
        )
        await store_inputs(svc, req, message.attachments)
        if chain:
            prior = self._last_job.get(message.channel.id)
            prior_job = await svc.get_job(prior) if prior is not None else None
            if prior_job is not None and prior_job.status in ("queued", "running", "delivering"):
                req.after_job_id = prior_job.id

    async def _start_edit(
        self, message: discord.Message, place: Place, turn: Turn, conversation: Thread, text: str, *, chain: bool
    ) -> None:
        locale = place.locale
        req = self._request(message, place, turn, conversation, text)
        try:
            await self._prepare(message, place, req, chain=chain)
        except Exception as exc:  # noqa: BLE001 - every failure is answered in the thread
            log_unless_user_facing(exc, log, "could not start an edit from message %s", message.id)
            await self._reply(message, render.error_text(exc, locale))
            return
        progress = await self._reply(message, render.progress_text("preparing", locale))
        if progress is None:
            return
        try:
            (job,) = await self.services.submit_jobs(
                guild_id=place.guild_id,
                channel_id=progress.channel.id,
                user_id=message.author.id,
                role_ids=role_ids(message.author),
                kind="edit",
                requests=[req],
                progress_message_id=progress.id,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is answered on the progress message
            log_unless_user_facing(exc, log, "could not queue an edit")
            await progress.edit(content=render.error_text(exc, locale))
            return
        if chain:
            self._last_job[message.channel.id] = job.id
            if len(self._last_job) > MEMORY:
                self._last_job.pop(next(iter(self._last_job)))
        self.bot.dispatch("job_queued", job)

    async def _reply(self, message: discord.Message, content: str, *, delete_after: float | None = None) -> discord.Message | None:
        try:
            # The text may echo the member's words or file names: it pings nobody.
            return await message.reply(
                content,
                mention_author=False,
                delete_after=delete_after,  # type: ignore[arg-type]  # discord.py's stubs leave None out; it means "keep"
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException as exc:
            log.info("could not answer message %s: %s", message.id, exc.status)
            return None


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Conversation(bot))
