"""Requests lost between their acknowledgement and the queue.

``/imagine`` answers "Getting ready…" first (Discord allows 3 s), then fetches the inputs and
queues the job. A process that dies in between leaves that message for ever, and no job row
for the restart to refund (none was charged: credits are reserved with the job). The stored
interaction token outlives the process, so any process finds it with no job after
:data:`bot.jobs.replies.ORPHAN_S` and edits the message to say so, in the member's language.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import discord

from bot.i18n import t

from .progress import interaction_webhook

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

SWEEP_S = 60.0  # how often each process looks; a lost request is told within ORPHAN_S + this


class LostRequests:
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="lost-requests")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - a database hiccup waits for the next round
                log.exception("could not look for lost requests")
            await asyncio.sleep(SWEEP_S)

    async def sweep(self) -> int:
        """Tell the member of each lost request; how many were found."""
        lost = await self.bot.services.replies.orphans()
        for _key, reply in lost:
            try:
                # "@original": the row may still be keyed by the interaction (its process died
                # right after the acknowledgement); every request's progress message is its original.
                webhook = interaction_webhook(self.bot, reply)
                lost_text = t("progress.lost", reply.locale)
                # discord.py puts the id in the path as given (typed int, the path takes "@original").
                await webhook.edit_message("@original", content=lost_text, embed=None, view=None, attachments=[])  # type: ignore[call-overload]
            except discord.HTTPException as exc:  # deleted, or the token died early: nobody to tell
                log.info("could not tell a lost request's member: %s", exc.status)
        if lost:
            log.warning("%d request(s) were lost before they were queued (their process stopped); members told", len(lost))
        return len(lost)
