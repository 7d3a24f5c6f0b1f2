"""Variants of one /imagine: N jobs (each its own relay call, reservation and refund) whose
pictures are posted together, in one message, once every one of them has ended.

The jobs run whenever the queue gives this member a turn, in any order, perhaps in different
processes (the worker roles) and across a restart, so no job waits for its siblings: each
records how it ended in the database (bot/variant_groups.py) and the one whose record
completes the group posts them all (variants.py). A slot that ended in another process (or
before a restart) is rebuilt from what was stored: its turn, its picture in the image store,
and what its result shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.jobs import Job
from bot.services import Services
from bot.stored_result import jsonable, load, shown_of
from bot.studio import Generated
from bot.variant_groups import SlotRecord, VariantGroupStore
from cogs.failures import UserFacingError, offers_retry

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

LOCAL_MEMORY = 1_000  # groups whose ended slots this process remembers (for Cancel's quick check)


@dataclass
class Slot:
    """How one variant ended: its picture, or why it has none."""

    index: int
    job: Job
    generated: Generated | None = None
    error: BaseException | None = None
    elapsed: float = 0.0


class StoredFailure(UserFacingError):
    """A slot's failure as recorded by whichever process ran it: its key and parameters, and
    whether it offers Retry."""

    def __init__(self, key: str, *, retry: bool = False, **params: Any) -> None:
        super().__init__(key, **params)
        self.retry = retry


def record_of(slot: Slot) -> SlotRecord:
    """What is stored of a slot: enough for another process to show it."""
    record = SlotRecord(slot.index, slot.job.id, elapsed=slot.elapsed)
    generated = slot.generated
    if generated is None:
        key = getattr(slot.error, "key", None)
        params = getattr(slot.error, "params", None) or {}
        record.error = {
            "key": key if isinstance(key, str) else "cmd_error.unexpected",
            "params": jsonable(dict(params)),
            "retry": offers_retry(slot.error),
        }
        return record
    record.turn_id = generated.turn.id if generated.turn is not None else None
    record.relay_name = generated.relay_name
    record.shown = shown_of(generated.result)
    return record


class VariantGroups:
    """The variant groups, kept in the database; this process also keeps the slots it ended
    itself (their pictures are at hand, even one that could not be stored)."""

    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self._local: dict[int, dict[int, Slot]] = {}

    @property
    def services(self) -> Services:
        return self.bot.services

    @property
    def store(self) -> VariantGroupStore:
        return VariantGroupStore(self.services.db)

    async def siblings(self, group: int | None) -> list[int]:
        return await self.store.job_ids(group) if group else []

    def any_ended(self, group: int | None) -> bool:
        """Whether a slot of the group ended in this process (no await: Cancel checks it
        between reading the job and cancelling it)."""
        return bool(self._local.get(group or 0))

    async def ended_anywhere(self, group: int | None) -> bool:
        """Whether a slot of the group ended in any process (a worker's are in the database)."""
        return self.any_ended(group) or (bool(group) and await self.store.ended(group or 0) > 0)

    async def forget(self, group: int | None) -> None:
        """The group was cancelled. A variant that had already ended with a picture (in
        another process: this one's Cancel refuses then) was charged for a picture now never
        shown: refunded."""
        self._local.pop(group or 0, None)
        if group:
            for record in await self.store.forget(group):
                if record.error is None:
                    await self.services.quota.refund_delivered(record.job_id)

    async def posted(self, group: int | None, message_id: int) -> None:
        self._local.pop(group or 0, None)
        if group:
            await self.store.posted(group, message_id)

    async def done(self, group: int | None, slot: Slot, count: int) -> list[Slot] | None:
        """Record one variant's end; every slot, in order, when it completed the group (this
        caller then posts them), else None."""
        local = self._local.setdefault(group or 0, {})
        local[slot.index] = slot
        while len(self._local) > LOCAL_MEMORY:
            self._local.pop(next(iter(self._local)))
        records = await self.store.done(group or slot.job.id, record_of(slot), count)
        if records is None:
            return None
        self._local.pop(group or 0, None)
        # A slot's first record stands (a second one is ignored): a variant whose picture was
        # stored, then interrupted while its process posted the group, is shown with its
        # picture, not as the interruption this process has just told it of.
        return [
            mine
            if (mine := local.get(r.index)) is not None and (mine.generated is None) == (r.error is not None)
            else await self._rebuilt(r)
            for r in records
        ]

    async def _rebuilt(self, record: SlotRecord) -> Slot:
        """A slot another process (or this one before a restart) ended, from what was stored."""
        svc = self.services
        job = await svc.get_job(record.job_id)
        if job is None:
            raise LookupError(f"variant job {record.job_id} is gone")
        if record.error is not None:
            error = record.error
            failure = StoredFailure(str(error.get("key")), retry=bool(error.get("retry")), **dict(error.get("params") or {}))
            return Slot(record.index, job, error=failure, elapsed=record.elapsed)
        try:
            generated = await load(
                svc.conversations, svc.images, record.turn_id, record.shown, relay_name=record.relay_name, model=job.model
            )
        except Exception as exc:  # noqa: BLE001 - a picture that cannot be loaded is a failed slot, refunded
            log.warning("variant job %s: its picture could not be loaded (%s); refunding it", job.id, exc)
            await svc.quota.refund_delivered(job.id)
            return Slot(record.index, job, error=UserFacingError("variants.lost"), elapsed=record.elapsed)
        return Slot(record.index, job, generated=generated, elapsed=record.elapsed)
