"""How a picture reaches its member through the interaction that asked for it, rather than
with the bot's own token: "results only to me" (an ephemeral followup), places the bot cannot
post in (a group DM, a server it is not in, its own DM: a followup), and the direct message
that carries a picture once the interaction's token has died (Discord's 15 minutes).

The token comes from the interaction held in this process, else from the job (a worker:
bot/jobs/replies.py), through :meth:`Progress.webhook`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bot.i18n import t
from bot.jobs import Job
from bot.studio import JobRequest
from cogs.failures import UserFacingError

from .progress import Progress
from .upload import Upload

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)


class Reach:
    def __init__(self, bot: NanoBananaBot, progress: Progress) -> None:
        self.bot = bot
        self.progress = progress

    async def hook(self, job: Job) -> discord.Webhook | None:
        """The job's interaction webhook while its token lives: the interaction held in this
        process, else the token stored with the job (a worker)."""
        interaction = self.progress.live_interaction(job)
        return interaction.followup if interaction is not None else await self.progress.webhook(job)

    async def followup(self, hook: discord.Webhook, job: Job, upload: Upload) -> discord.Message:
        return await hook.send(
            content=f"<@{job.user_id}>",
            embeds=upload.embeds,
            files=upload.files(),
            view=upload.view or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
            wait=True,
        )

    async def privately(self, job: Job, upload: Upload) -> discord.Message:
        """ "Results only to me": an ephemeral followup while the interaction's token lives
        (Discord's 15 minutes), else a direct message; a member whose DMs are closed is told
        on the progress message, and refunded, by the failure path."""
        hook = await self.hook(job)
        if hook is not None:
            try:
                return await hook.send(
                    embeds=upload.embeds, files=upload.files(), view=upload.view or discord.utils.MISSING, ephemeral=True, wait=True
                )
            except discord.HTTPException as exc:
                if exc.status != 401:
                    raise
                self.progress.token_died(job)
                # The token died before our clock said so: a direct message, as after 15 minutes.
        try:
            dm = await self.bot.create_dm(discord.Object(job.user_id))
            return await dm.send(embeds=upload.embeds, files=upload.files(), view=upload.view or discord.utils.MISSING)
        except discord.Forbidden as exc:
            raise UserFacingError("private.dm_closed") from exc

    async def through_interaction(self, job: Job, req: JobRequest, upload: Upload) -> discord.Message:
        """Where the bot cannot post: a followup of the interaction while its token lives; after
        (the picture took longer than Discord's 15 minutes), a direct message saying where it
        was asked for. DMs closed too: refused, so the job fails and is refunded."""
        hook = await self.hook(job)
        if hook is not None:
            try:
                return await self.followup(hook, job, upload)
            except discord.HTTPException as exc:
                if exc.status != 401:
                    raise
                self.progress.token_died(job)
                log.info("job %s: the interaction token died early; sending the picture by direct message", job.id)
        locale = req.locale  # a direct message: the member's own language
        try:
            dm = await self.bot.create_dm(discord.Object(job.user_id))
            return await dm.send(
                content=t("install.late_dm", locale),
                embeds=upload.embeds,
                files=upload.files(),
                view=upload.view or discord.utils.MISSING,
            )
        except discord.Forbidden as exc:
            raise UserFacingError("install.dm_closed") from exc
