"""Running a job and posting its picture. The job queue calls :meth:`Delivery.run_job`, which
asks the studio for a picture and posts it with the *bot* token (interaction tokens die after 15
minutes; big jobs take longer).

Where the bot cannot post (a group DM, a server it is not in: a member's own install of the
app) the picture goes as a followup of the interaction that asked, through the token stored
with the job. A picture ready after the token has died (Discord's 15 minutes) is sent to the
member in a direct message, saying where it was asked for; when their DMs are closed too, the
job fails and is refunded (nothing was delivered).

Discord's upload limit: a picture is fitted under the limit Discord gave for the channel; when
Discord still answers 413 (or its code 40005, "request entity too large"), it is fitted again
under 0.7× the size that was refused, up to :data:`UPLOAD_RETRIES` times. (A relay's own 413
is a relay error, handled by the relay layer, never here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.i18n import t
from bot.imaging import FittedImage, fit_for_upload_async
from bot.jobs import Job
from bot.relay import previews
from bot.services import Services, progress_message_id
from bot.stored_result import load_redelivery, redelivery
from bot.studio import Generated, JobRequest
from cogs import render
from cogs.failures import Interrupted, UserFacingError, is_user_facing, offers_retry

from .buttons import RetryButton, result_view, single_button_view
from .groups import Slot, VariantGroups
from .progress import Progress
from .reach import Reach
from .upload import Posted, Target, Upload, post_in_channel
from .variants import failure_notes, gallery_embeds, gallery_view

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

UPLOAD_RETRIES = 4
UPLOAD_SHRINK = 0.7  # after a 413, fit under this share of the refused size
THREAD_LOCKED = 50083  # Discord's code for "Thread is locked" (a 400)
TOO_LARGE = 40005  # Discord's code for "Request entity too large"
THREAD_EXISTS = 160004  # Discord's code for "A thread has already been created for this message"


class Delivery:
    def __init__(self, bot: NanoBananaBot, progress: Progress, groups: VariantGroups) -> None:
        self.bot = bot
        self.progress = progress
        self.groups = groups
        self.reach = Reach(bot, progress)  # followups, ephemeral results, the late DM

    @property
    def services(self) -> Services:
        return self.bot.services

    async def run_job(self, job: Job) -> None:
        """Called by the job queue. Returns when the picture is delivered; raises otherwise."""
        try:
            req = JobRequest.from_json(job.request)
        except (TypeError, ValueError, AttributeError):
            req = JobRequest(prompt="", model="")  # refused below, with the user told and refunded
        again = job.redeliver if req.variants <= 1 else None  # its stored picture, posted again
        started = float(again.get("started") or time.time()) if again is not None else time.time()
        generating = render.progress_text("generating", req.locale, since=started, model=req.model)
        self.progress.drawing(job)
        if again is None:
            await self.progress.edit(job, generating, force=True, cancel=True)
            await self.progress.warn_before_expiry(job, req.locale, generating)
        ended = True
        try:
            if req.variants > 1:
                await self._run_variant(job, req, started)
                return
            generated, message = await self._make_and_post(job, req, started)
            await self._recorded(job, generated, message, time.time() - started, link=False)  # _deliver linked the turn
            self.bot.dispatch("picture_delivered", job, req, generated, message)  # the moderation log (cogs/modlog.py)
            await self.progress.drop(job)
        except asyncio.CancelledError:
            # A Cancel click drops the token itself; a shutdown leaves the job to the next start,
            # which needs the token to tell the member (or to clear the message after posting).
            ended = False
            raise
        finally:
            # Held until the runner returns: the queue then marks the job delivered itself.
            self.progress.delivering.discard(job.id)
            if ended and req.variants <= 1:  # variants share the token: it goes when their group is posted
                await self.services.replies.drop(progress_message_id(job))  # the token goes with the job

    async def _make_and_post(self, job: Job, req: JobRequest, started: float) -> tuple[Generated, discord.Message]:
        """The picture, posted; on failure the progress message says why, then it raises."""
        try:
            if not req.prompt or not req.model:
                raise UserFacingError("job.unreadable")
            generated = await self._generate(job, req, started) if job.redeliver is None else await self._stored(job)
            # The picture exists and goes out now (the upload may land even if interrupted):
            # a Cancel click from here on is too late, or it would refund a posted picture.
            # In the database, for every process, with what posting it again would need.
            # Posting again is for a post with the bot's own token: Discord returns a landed message
            # for its nonce there (an interaction's followups take no nonce).
            again = not req.private and await self.progress.channel_post(job)
            await self.services.jobs.begin_delivery(job, redelivery(job, generated, started) if again else None)
            self.progress.delivering.add(job.id)
            await self.progress.edit(job, render.progress_text("uploading", req.locale, since=started), force=True)
            return generated, await self._deliver(job, req, generated, elapsed=time.time() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(job, req, exc)
            if isinstance(exc, discord.HTTPException):
                raise UserFacingError("deliver.discord_refused", status=exc.status) from exc
            raise

    async def _stored(self, job: Job) -> Generated:
        """The picture a process that died while posting it had stored (bot/jobs/records.py)."""
        try:
            return await load_redelivery(self.services.conversations, self.services.images, job)
        except Exception as exc:  # noqa: BLE001 - refunded like any interrupted job, with Retry
            log.warning("job %s: its stored picture could not be loaded to post again (%s)", job.id, exc)
            raise Interrupted("job.interrupted") from exc

    async def _generate(self, job: Job, req: JobRequest, started: float) -> Generated:
        if req.after_job_id is not None:
            # Chained after a message sent just before this one: edit its result (the
            # queue started this job only once that one was over). No result (it
            # failed or was cancelled): edit the picture both were sent to.
            prior = await self.services.get_job(req.after_job_id)
            if prior is not None and prior.result_turn_id is not None:
                req.parent_turn_id = prior.result_turn_id
        # Live previews (the model's drafts on the progress message) when the member asked.
        generating = render.progress_text("generating", req.locale, since=started, model=req.model)
        sink = self.progress.previews(job, req.locale, generating)
        with previews.receiving(sink) if req.preview else contextlib.nullcontext():
            return await self.services.studio.generate(
                guild_id=job.guild_id, channel_id=job.channel_id or 0, user_id=job.user_id, req=req, job_id=job.id
            )

    async def _run_variant(self, job: Job, req: JobRequest, started: float) -> None:
        """One of N variants: its picture (or its failure) joins the group; the last to end
        posts them all. A failed variant still raises, so the queue refunds it."""
        try:
            if not req.prompt or not req.model:
                raise UserFacingError("job.unreadable")
            slot = Slot(req.variant, job, await self._generate(job, req, started), elapsed=time.time() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_user_facing(exc):
                log.error("variant job %s failed", job.id, exc_info=exc)
            await self._slot_ended(job, req, Slot(req.variant, job, error=exc))
            raise
        await self._slot_ended(job, req, slot)

    async def _slot_ended(self, job: Job, req: JobRequest, slot: Slot) -> None:
        """Record the slot (groups.py); the variant whose record completes the group posts it."""
        slots = await self.groups.done(req.variant_group, slot, req.variants)
        if slots is not None:
            await self._post_variants(job, req, slots)

    async def variant_interrupted(self, job: Job) -> bool:
        """A variant cut by a restart (refunded by the queue) ends its slot, so the group is
        still posted, with every picture its other variants made; True if it was a variant."""
        if int((job.request or {}).get("variants") or 1) <= 1:
            return False
        req = JobRequest.from_json(job.request)
        try:
            await self._slot_ended(job, req, Slot(req.variant, job, error=Interrupted("variants.interrupted")))
        except Exception as exc:  # noqa: BLE001 - told on the progress message; nothing is left to refund here
            log.warning("variants of job %s could not be posted after a restart: %s", job.id, exc)
        return True

    async def _post_variants(self, job: Job, req: JobRequest, slots: list[Slot]) -> None:
        """Every delivered variant in one message, each failed slot explained; each variant's
        result recorded (its own turn, all pointing at this message)."""
        locale = req.locale if req.private else req.guild_locale
        notes = "\n".join(f"⚠️ {n}" for n in failure_notes(slots, locale))
        made = [(s, s.generated) for s in slots if s.generated is not None]
        if not made:
            embed = discord.Embed(colour=render.ERROR, description=notes)
            await self.progress.edit(job, None, force=True, must_show=True, embed=embed, view=gallery_view(slots, locale))
            self.progress.forget(job)
            await self.services.replies.drop(progress_message_id(job))
            return

        async def make(limit: int) -> Upload:
            uploads: list[Upload] = []
            for slot, generated in made:
                result = generated.result
                fitted = await fit_for_upload_async(result.image, result.mime_type, limit // len(made))
                shown = dataclasses.replace(slot.job, cost=sum(s.job.cost for s, _g in made)) if not uploads else slot.job
                uploads.append(self._upload(shown, req, generated, fitted, slot.elapsed))
            first = uploads[0].embed
            first.description = "\n\n".join(x for x in (first.description, notes) if x)
            pictures = [u.pictures[0] for u in uploads]
            embeds = gallery_embeds(first, [name for _data, name in pictures], req.variant_group or job.id)
            # One nonce per group: a second post (its poster died before hearing back) is the first.
            return Upload(embeds=embeds, pictures=pictures, view=gallery_view(slots, locale), nonce=f"nb-g{req.variant_group or job.id}")

        try:
            posted = await self._post_upload(job, req, make)
        except Exception as exc:
            # The member is told; every variant made is refunded: the earlier ones ended as
            # delivered already, this one is refunded by the queue when this raises.
            log.warning("variants of job %s could not be posted: %s", job.id, exc)
            for slot, _generated in made:
                if slot.job.id != job.id:
                    await self.services.quota.refund_delivered(slot.job.id)
            await self._fail(job, req, exc)
            if isinstance(exc, discord.HTTPException):
                raise UserFacingError("deliver.discord_refused", status=exc.status) from exc
            raise
        await self.groups.posted(req.variant_group, posted.message.id)
        for slot, generated in made:
            await self._recorded(slot.job, generated, posted.message, slot.elapsed)
            self.bot.dispatch("picture_delivered", slot.job, req, generated, posted.message)  # the moderation log
        await self.progress.drop(job)
        await self.services.replies.drop(progress_message_id(job))

    async def _recorded(self, job: Job, generated: Generated, message: discord.Message, elapsed: float, *, link: bool = True) -> None:
        """The picture is out: bookkeeping trouble from here on must not refund it. ``link``: the
        turn learns its message here too (a variant's, in its group's message)."""
        try:
            if link and generated.turn is not None:
                await self.services.conversations.set_message(generated.turn.id, message.id)
            await self.services.record_result(
                job,
                turn_id=generated.turn.id if generated.turn else None,  # None: the picture could not be stored
                message_id=message.id,
                relay_name=generated.relay_name,
                latency_ms=int(elapsed * 1000),
            )
        except Exception:
            log.exception("job %s was delivered but its result could not be recorded", job.id)

    async def _fail(self, job: Job, req: JobRequest, exc: Exception) -> None:
        if isinstance(exc, discord.HTTPException):
            # Discord's answer says it all; the job record gets a reason, not a traceback.
            log.warning("job %s: Discord refused the result (%s %s)", job.id, exc.status, exc.code)
        elif not is_user_facing(exc):
            log.error("job %s failed", job.id, exc_info=exc)
        view = None
        # One picture asked for, and a failure another try may well not repeat: Retry (refunded
        # already; a click is a new job, charged again). Variants' failures are notes in their
        # group's message, with a Retry each (variants.py).
        if req.variants <= 1 and offers_retry(exc):
            view = single_button_view(RetryButton(job.id, locale=req.locale))
        await self.progress.edit(job, None, force=True, must_show=True, embed=render.error_embed(exc, req.locale), view=view)
        self.progress.forget(job)

    async def _deliver(self, job: Job, req: JobRequest, generated: Generated, *, elapsed: float) -> discord.Message:
        posted = await self._post(job, req, generated, elapsed=elapsed)
        turn = generated.turn
        if turn is None:
            return posted.message
        # Known before the thread opens, so a quick reply to the picture already finds its turn.
        try:
            await self.services.conversations.set_message(turn.id, posted.message.id)
        except Exception:  # noqa: BLE001 - the picture is out; bookkeeping must not undo that
            log.warning("job %s: delivered, but its message could not be recorded", job.id)
            return posted.message
        # A new conversation, or one that never had a thread (a variant shown in its group's
        # message, continued from there): its result opens one, so talking on works from here.
        ongoing = await self.services.conversations.get_conversation(req.conversation_id) if req.conversation_id else None
        threadless = req.conversation_id is None or (ongoing is not None and ongoing.thread_id is None)
        if threadless and not req.private:
            await self._open_thread(job, req, generated, posted)
        return posted.message

    async def _post(self, job: Job, req: JobRequest, generated: Generated, *, elapsed: float) -> Posted:
        result = generated.result

        async def make(limit: int) -> Upload:
            return self._upload(job, req, generated, await fit_for_upload_async(result.image, result.mime_type, limit), elapsed)

        return await self._post_upload(job, req, make)

    async def _post_upload(self, job: Job, req: JobRequest, make: Callable[[int], Awaitable[Upload]]) -> Posted:
        """Upload the pictures ``make`` fits under a byte limit: smaller after a 413, elsewhere
        when this channel refuses them."""
        target = Target(channel_id=req.post_channel_id or job.channel_id or 0, reply_to=req.reply_to_message_id)
        limit = req.upload_limit
        spoiler = (await self.services.guild(job.guild_id)).safety.spoiler  # /admin safety spoiler
        channel_post = await self.progress.channel_post(job)
        for _attempt in range(UPLOAD_RETRIES):
            upload = await make(limit)
            if spoiler:
                upload.spoil()
            try:
                if req.private:
                    sent = self.reach.privately(job, upload)
                elif not channel_post:
                    sent = self.reach.through_interaction(job, req, upload)
                else:
                    sent = post_in_channel(self.bot, job, target, upload)
                return Posted(await sent, upload.embed)
            except discord.HTTPException as exc:
                if exc.status == 413 or exc.code == TOO_LARGE:
                    limit = int(min(limit, upload.size) * UPLOAD_SHRINK)
                    log.info("upload of job %s refused as too large (%d bytes); retrying under %d", job.id, upload.size, limit)
                    continue
                if req.private:
                    raise  # never posted in the channel instead: the member asked for results only to them
                if (exc.status in (403, 404) or exc.code == THREAD_LOCKED) and await self._move(job, req, target, exc):
                    continue
                hook = await self.reach.hook(job)
                if exc.status != 403 or hook is None:
                    raise
                # The bot cannot post here with its own token (e.g. the server added only
                # the app's commands): the interaction's followup still can, for 15 minutes.
                log.info("job %s: channel post refused (%s); answering through the interaction", job.id, exc.code)
                try:
                    return Posted(await self.reach.followup(hook, job, upload), upload.embed)
                except discord.HTTPException as again:
                    if again.status != 401:
                        raise
                    self.progress.token_died(job)
                    raise exc from None  # the channel's refusal is what the member is told
        raise UserFacingError("deliver.too_large")

    async def _move(self, job: Job, req: JobRequest, target: Target, exc: discord.HTTPException) -> bool:
        """The thread was deleted, locked or closed to the bot: the picture goes to the channel
        the member asked from, else the conversation's own channel, rather than being lost."""
        target.tried.add(target.channel_id)
        candidates = [job.channel_id]
        if req.conversation_id:
            conversation = await self.services.conversations.get_conversation(req.conversation_id)
            if conversation is not None:
                candidates.append(conversation.channel_id)
        fallback = next((c for c in candidates if c and c not in target.tried), None)
        if fallback is None:
            return False
        log.info("job %s cannot post in %s (%s %s); posting in %s", job.id, target.channel_id, exc.status, exc.code, fallback)
        target.channel_id = fallback
        target.reply_to = None
        return True

    def _upload(self, job: Job, req: JobRequest, generated: Generated, fitted: FittedImage, elapsed: float) -> Upload:
        result, turn = generated.result, generated.turn
        locale = req.locale if req.private else req.guild_locale  # only the member sees a private result
        # Not stored (disk full): delivered without the buttons that would need the turn.
        view = result_view(turn.id, result.model, req.size, locale) if turn is not None else None
        filename = fitted.filename(f"nano-banana-{turn.id}" if turn is not None else f"nano-banana-job{job.id}")
        # The relay layer's notes (another shape than asked, controls the format lost) join the fit note.
        notes = (
            render.fit_note(fitted.how, locale, width=fitted.width, height=fitted.height, original=(result.width, result.height)),
            t("fair.store_failed", locale) if turn is None else None,
            *(t(n.key, locale, **n.params) for n in result.notes),
        )
        embed = render.result_embed(
            locale=locale,
            prompt=req.display_prompt or req.prompt,
            made_as=render.made_as(req.variation, req.style, locale),
            model=result.model,
            aspect_ratio=req.aspect_ratio,
            size=req.size,
            elapsed_s=elapsed,
            credits=job.cost,
            filename=filename,
            sources=result.sources,
            image_queries=result.image_queries,
            width=result.width,
            height=result.height,
            fit_note="\n".join(x for x in notes if x) or None,
            model_text=result.text,
        )
        return Upload(embeds=[embed], pictures=[(fitted.data, filename)], view=view, nonce=f"nb-j{job.id}")

    async def _open_thread(self, job: Job, req: JobRequest, generated: Generated, posted: Posted) -> None:
        if not (await self.services.defaults(job.guild_id)).threads:
            return
        locale = req.guild_locale
        message, embed = posted.message, posted.embed
        try:
            thread = await self._create_thread(job, message, render.shorten(req.prompt, 90) or "nano-banana")
        except ValueError:
            return  # posted through the interaction (no channel post allowed): no thread either
        except discord.HTTPException as exc:
            log.info("no thread for job %s (%s %s)", job.id, exc.status, exc.code)
            if exc.code == THREAD_EXISTS and generated.conversation_id is not None:
                # Posted again after its process died: that process had opened the thread, whose
                # id is the message's (Discord gives a thread started from a message its id).
                await self.services.conversations.bind_thread(generated.conversation_id, message.id)
                return
            if exc.status != 403:
                return  # e.g. posted inside a thread already: no thread to open, nothing missing
            # Added to, not replacing, a note that the picture was shrunk to fit.
            embed.set_footer(text="\n".join(x for x in (embed.footer.text, t("thread.missing_permission", locale)) if x))
            try:
                await message.edit(embed=embed)
            except discord.HTTPException:
                pass
            return
        if generated.conversation_id is not None:
            await self.services.conversations.bind_thread(generated.conversation_id, thread.id)
        try:
            await thread.send(t("thread.hint", locale))
        except discord.HTTPException:
            pass

    async def _create_thread(self, job: Job, message: discord.Message, name: str) -> discord.PartialMessageable:
        """The result's thread. A worker process has no gateway cache, so its messages carry no
        guild and discord.py's ``Message.create_thread`` refuses them: the same REST call, made
        with the job's guild. A message posted through an interaction's webhook gets none."""
        if message.guild is not None:
            thread = await message.create_thread(name=name, auto_archive_duration=1440)
            return self.bot.get_partial_messageable(thread.id, guild_id=job.guild_id)
        if job.guild_id is None or message.webhook_id is not None:
            raise ValueError("no guild to open a thread in")
        data = await self.bot.http.start_thread_with_message(message.channel.id, message.id, name=name, auto_archive_duration=1440)
        return self.bot.get_partial_messageable(int(data["id"]), guild_id=job.guild_id)
