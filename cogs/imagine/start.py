"""Starting a job from an interaction: the cheap checks answer ephemerally before anything is
queued; then a public progress message acknowledges the interaction, the inputs are downloaded
and stored by hash, and the job row is queued (the job queue then runs it: delivery.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot import rules
from bot.conversations import Conversation
from bot.i18n import SUPPORTED, normalize_locale, t
from bot.jobs import Job
from bot.preferences import Preferences
from bot.relay.capabilities import DIALECT_MAX_IMAGES
from bot.services import Services
from bot.studio import JobRequest, continue_from, unroutable
from bot.variations import fan_out, total_cost
from cogs import install, render
from cogs.bot_types import Interaction
from cogs.failures import UserFacingError, is_user_facing, log_unless_user_facing
from cogs.install import bot_can_post, scope_id
from cogs.intake import channel_is_nsfw, check_can_post, role_ids, store_inputs, upload_limit, vet
from cogs.language import chose, member_locale

from .groups import VariantGroups
from .progress import Progress, job_locale

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

Notice = tuple[str, dict[str, object]]  # a translation key and its parameters

OPTION_KEYS = {  # how a refusal names an option a relay cannot honour
    "aspect_ratio": "capability.option.aspect_ratio",
    "size": "capability.option.size",
    "grounding": "capability.option.grounding",
    "thinking": "capability.option.thinking",
    "images": "capability.option.images",
}


class Starter:
    """Turns a member's request into a queued job and shows its place in the queue."""

    def __init__(self, bot: NanoBananaBot, progress: Progress, variants: VariantGroups) -> None:
        self.bot = bot
        self.progress = progress
        self.variants = variants

    @property
    def services(self) -> Services:
        return self.bot.services

    async def may_continue(self, interaction: Interaction, conversation: Conversation | int | None, *, refuse: bool = False) -> bool:
        """The server's thread rule (requester / anyone) for buttons and forms that add a turn to
        a conversation, as for messages in its thread. ``conversation``: object or id."""
        svc = self.services
        if isinstance(conversation, int):
            conversation = await svc.conversations.get_conversation(conversation)
        if conversation is None:
            return True  # nothing to protect; the caller reports an unknown picture
        g = await svc.guild(scope_id(interaction))
        if rules.may_continue_thread(g.thread_mode, interaction.user.id, conversation.owner_id):
            return True
        if refuse:
            await interaction.response.send_message(t("conversation.owner_only", await member_locale(interaction)), ephemeral=True)
        return False

    async def request_from_turn(self, interaction: Interaction, turn_id: int, prompt: str, *, size: str | None = None) -> JobRequest | None:
        """A request continuing from ``turn_id``, or None after telling the member why not."""
        svc = self.services
        locale = await member_locale(interaction)
        turn = await svc.conversations.get_turn(turn_id)
        conversation = await svc.conversations.get_conversation(turn.conversation_id) if turn else None
        if turn is None or conversation is None:
            await interaction.response.send_message(t("conversation.unknown_turn", locale), ephemeral=True)
            return None
        if not await self.may_continue(interaction, conversation, refuse=True):
            return None
        return continue_from(
            turn,
            conversation.model,
            prompt,
            size=size,
            conversation_thread_id=conversation.thread_id,
            post_channel_id=interaction.channel_id,
            upload_limit=upload_limit(interaction),
            locale=locale,
            guild_locale=normalize_locale(interaction.guild_locale or interaction.locale),
        )

    async def continue_turn(self, interaction: Interaction, turn_id: int, text: str, extra: Sequence[discord.Attachment]) -> None:
        """Edit from a turn (the form on a result): a new turn under it, posted in its thread."""
        req = await self.request_from_turn(interaction, turn_id, text)
        if req is not None:
            await self.start(interaction, req, attachments=list(extra), kind="edit")

    async def start(
        self,
        interaction: Interaction,
        req: JobRequest,
        *,
        attachments: Sequence[discord.Attachment],
        kind: str,
        display_prompt: str | None = None,
        notices: Sequence[Notice] = (),
        count: int = 1,
        prefs: Preferences | None = None,
    ) -> Job | None:
        """Vet, acknowledge, store the inputs and queue the job; the Job, or None when it was
        refused (the member has been told why); with ``count`` > 1, the first of its variants
        (every variant's credits are checked, as one total, before anything is sent). ``notices``: (key, params) said to the member
        privately once the job is queued (e.g. a preference this request could not honour).
        ``prefs``: the member's preferences when the caller has just read them (else read here)."""
        svc = self.services
        if await install.refused(interaction):
            return None  # every way to a job (commands, buttons, forms) passes here: nothing charged
        req.post_channel_id = req.post_channel_id or interaction.channel_id
        await self._personal(interaction, req, prefs)
        if not await self._vetted(interaction, req, attachments, count):
            return None
        progress_text = render.progress_text("preparing", req.locale)
        # The token is stored before the acknowledgement: a process that dies right after it
        # (tens of ms before the job could be queued) still leaves it for another process to
        # tell the member (lost.py), instead of "Getting ready…" for ever. After the checks, so
        # a refusal writes nothing; not beside them (tried: a task writing while they read
        # measured ack p50 10 ms against 6.6 ms in sequence; bench/results/2026-12-02-acks.md).
        await svc.replies.put(
            interaction.id,
            application_id=interaction.application_id,
            token=interaction.token,
            acked_at=time.time(),
            channel_post=bot_can_post(interaction),
            locale=req.locale,
        )
        try:
            callback = await interaction.response.send_message(progress_text, ephemeral=req.private)
        except (discord.NotFound, discord.InteractionResponded):
            # The interaction expired (never acknowledged), or was answered before (its original
            # response is another message, which no lost-request notice may overwrite): nobody
            # to tell. Any other failure (a 5xx, a shutdown, a connection cut) may follow an
            # acknowledgement that landed: the token stays, and the sweep tells the member.
            await svc.replies.drop(interaction.id)
            raise
        acked = time.monotonic()
        # The callback answer carries the message: no second round trip on a token that may expire.
        resource = callback.resource
        progress = resource if isinstance(resource, discord.InteractionMessage) else await interaction.original_response()
        self.progress.hold(progress.id, interaction, acked)
        try:
            # Found by the progress message before the job is queued, so whoever runs it (a
            # worker) edits progress and answers through this interaction from its first step.
            await svc.replies.rekey(interaction.id, progress.id)
            await store_inputs(svc, req, attachments)
            jobs = await self._submit(interaction, req, kind, progress.id, display_prompt, count)
        except Exception as exc:  # noqa: BLE001 - every failure is answered on the progress message
            if self.bot.is_closed():
                # Cut short by a shutdown (the download's connection closed under it): nothing
                # can be sent now; the stored token lets the next start tell the member (lost.py).
                log.info("a %s request was cut short by the shutdown; the next start tells its member", kind)
                return None
            log_unless_user_facing(exc, log, "could not queue a %s job", kind)
            self.progress.release(progress.id)
            await svc.replies.drop(interaction.id)  # the rekey may not have happened
            await svc.replies.drop(progress.id)
            await progress.edit(content=None, embed=render.error_embed(exc, req.locale), view=None)
            return None
        await self.show_queued(jobs[0])
        if notices:
            await self._tell(interaction, "\n".join(f"⚠️ {t(key, req.locale, **params)}" for key, params in notices))
        return jobs[0]

    async def _submit(
        self, interaction: Interaction, req: JobRequest, kind: str, progress_id: int, display_prompt: str | None, count: int
    ) -> list[Job]:
        """Queue the job, or ``count`` variants of it: N jobs of this member (so fair queueing
        counts N), sharing one progress message, queued with their group in one transaction (a
        quota race after the early check of the total refuses them all; a process dying midway
        queues none, and the lost-request sweep tells the member)."""
        requests = [req] if count == 1 else [v.request for v in fan_out(req, count)]
        for index, each in enumerate(requests, start=1):
            # One picture is never a variant, even when its request was copied from one (a
            # Retry or Re-roll of a variant's job): it would wait for a group that never completes.
            each.variant, each.variants, each.variant_group = (index, count, progress_id) if count > 1 else (0, 1, None)
        return await self.services.submit_jobs(
            guild_id=scope_id(interaction),
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
            role_ids=role_ids(interaction.user),
            kind=kind,
            requests=requests,
            progress_message_id=progress_id,
            display_prompt=display_prompt,
            variant_group=progress_id if count > 1 else None,
        )

    async def cancel_siblings(self, job: Job) -> None:
        """Cancel on one variant cancels its whole group (they share one progress message);
        a variant already being posted is left to finish."""
        group = (job.request or {}).get("variant_group")
        for sibling in await self.variants.siblings(group):
            if sibling != job.id and sibling not in self.progress.delivering:
                await self.services.jobs.cancel(sibling, by_user=None)
        await self.variants.forget(group)

    async def _personal(self, interaction: Interaction, req: JobRequest, mine: Preferences | None = None) -> None:
        """The member's own settings that hold for every request of theirs: "results only to
        me" and a language override (the server's language still goes on public posts)."""
        if mine is None:
            mine = await self.services.preferences.get(scope_id(interaction), interaction.user.id)
        req.private = req.private or mine.private
        chose(interaction, mine.locale)  # read once: every answer of this interaction uses it
        if mine.locale is not None and mine.locale in SUPPORTED:
            req.locale = mine.locale

    async def _tell(self, interaction: Interaction, text: str) -> None:
        try:
            await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.info("could not send a notice: %s", exc.status)

    async def _vetted(self, interaction: Interaction, req: JobRequest, attachments: Sequence[discord.Attachment], count: int = 1) -> bool:
        """Every check that sends nothing; a refusal is answered ephemerally (False)."""
        channel = interaction.channel
        try:
            # Where the bot cannot post, the result goes through the interaction (no channel post).
            if req.post_channel_id == interaction.channel_id and bot_can_post(interaction):
                check_can_post(interaction.app_permissions, in_thread=isinstance(channel, discord.Thread))
            await vet(
                self.services,
                req,
                attachments,
                guild_id=scope_id(interaction),
                parent_channel_id=getattr(channel, "parent_id", None),
                channel_id=interaction.channel_id,
                user_id=interaction.user.id,
                role_ids=role_ids(interaction.user),
                channel_nsfw=channel_is_nsfw(channel),
            )
            await self._honest(scope_id(interaction), req, len(req.images) + len(attachments))
            if count > 1:  # the whole fan-out, at once: never some variants queued and the rest refused
                credits, limits = await self.services.charge(scope_id(interaction), req.model, req.size)
                await self.services.quota.check(
                    guild_id=scope_id(interaction),
                    user_id=interaction.user.id,
                    credits=total_cost(credits, count),
                    rules=limits,
                    role_ids=role_ids(interaction.user),
                )
        except Exception as exc:  # noqa: BLE001 - every refusal becomes a translated ephemeral reply
            if not is_user_facing(exc):
                raise
            await interaction.response.send_message(embed=render.error_embed(exc, req.locale), ephemeral=True)
            return False
        return True

    async def _honest(self, guild_id: int | None, req: JobRequest, image_count: int) -> None:
        """Refuse, before anything is charged, an option no relay of this server can honour
        (a ratio when every relay speaks OpenAI Chat, Google Search with only OpenAI relays)
        rather than make a picture that silently ignores it; when a later relay in the
        failover order can, the pool sends the job there (bot/relays/pool.py)."""
        order = await self.services.relay_order(guild_id)
        dropped = unroutable(order, await self.services.studio.check(req, image_count=image_count))
        if dropped:
            joiner = "、" if req.locale.startswith("zh") else ", "
            limit = min((DIALECT_MAX_IMAGES[r.dialect] for r in order if r.dialect in DIALECT_MAX_IMAGES), default=0)
            options = joiner.join(t(OPTION_KEYS[name], req.locale, limit=limit) for name in dropped)
            if len(order) == 1:
                raise UserFacingError("capability.dropped", relay=order[0].name, options=options)
            raise UserFacingError("capability.none", options=options)

    async def show_queued(self, job: Job) -> None:
        """The job's place in the queue, with Cancel, on its progress message."""
        position = await self.services.queue_position(job.id)
        if position is None:
            return  # already running (or over), and its runner shows that
        # A worker (another process) may have claimed it and even failed it by now: its notice
        # must not be covered by "Queued" from this process's older picture of the queue.
        current = await self.services.get_job(job.id)
        if current is not None and current.status == "queued":
            text = render.progress_text("queued", job_locale(job), position=position, since=time.time())
            await self.progress.edit(job, text, force=True, cancel=True)
