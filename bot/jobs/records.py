"""Writing a job's rows: its creation, its end (the outcome row and its ledger step in one
transaction, retried while the database refuses the write), and the repairs a restart makes.
Used by both queues."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ..quota import Quota, QuotaRules
from ..relay.types import RelayError
from ..store import Connection, DatabaseError, write
from .model import ACTIVE_SQL, Job, NewJob, classify

log = logging.getLogger(__name__)

# Waits before trying again to record a job's end when the database refuses the write (disk
# full, locked beyond busy_timeout): about a minute in all, during which the job keeps its slot.
SETTLE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SETTLE_BACKGROUND_S = 60.0  # then, slot given back, every this often until the write lands

_END = (
    "UPDATE jobs SET status = ?, finished_at = ?, error_code = ?, error_detail = ?, relay_name = ?,"
    " latency_ms = ?, result_message_id = COALESCE(?, result_message_id) WHERE id = ?"
)


async def insert(db: Connection, new: NewJob, credits: int, now: float) -> Job:
    """Inside a transaction: the queued job's row (its credits are the caller's to hold)."""
    cur = await db.execute(
        "INSERT INTO jobs (guild_id, channel_id, user_id, kind, status, request, model, size, cost, locale,"
        " conversation_id, parent_turn_id, progress_message_id, created_at)"
        " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.guild_id,
            new.channel_id,
            new.user_id,
            new.kind,
            json.dumps(new.request),
            new.model,
            new.size,
            credits,
            new.locale,
            new.conversation_id,
            new.parent_turn_id,
            new.progress_message_id,
            now,
        ),
    )
    assert cur.lastrowid is not None  # an INSERT always has one
    return Job(
        id=cur.lastrowid,
        guild_id=new.guild_id,
        channel_id=new.channel_id,
        user_id=new.user_id,
        kind=new.kind,
        status="queued",
        request=new.request,
        model=new.model,
        size=new.size,
        cost=credits,
        locale=new.locale,
        conversation_id=new.conversation_id,
        parent_turn_id=new.parent_turn_id,
        progress_message_id=new.progress_message_id,
        created_at=now,
    )


async def insert_reserved(
    db: Connection, quota: Quota, news: Sequence[tuple[NewJob, int]], *, rules: QuotaRules, role_ids: Iterable[int], now: float
) -> list[Job]:
    """Inside a transaction: one member's jobs, each with its credits reserved, or
    :class:`~bot.quota.QuotaExceeded` for their total (checked first: it only reads, so a
    refusal commits an empty transaction, no rollback)."""
    first = news[0][0]
    total = sum(credits for _new, credits in news)
    await quota.check_in(db, guild_id=first.guild_id, user_id=first.user_id, credits=total, rules=rules, role_ids=role_ids, now=now)
    jobs = []
    for new, credits in news:
        job = await insert(db, new, credits, now)
        await quota.hold_in(db, job_id=job.id, guild_id=new.guild_id, user_id=new.user_id, credits=credits, now=now)
        jobs.append(job)
    return jobs


async def record_end(
    db: Connection,
    quota: Quota,
    job: Job,
    status: str,
    ledger: str,
    error: tuple[str, str] | None,
    now: float,
    *,
    worker_id: str | None = None,
) -> bool:
    """Inside a transaction: the job's final status and its ledger step. With ``worker_id``
    the write is fenced (only while that worker still holds the job); False if it did not."""
    code, detail = error or (None, None)
    sql = _END
    params: list[object] = [status, now, code, detail, job.relay_name, job.latency_ms, job.result_message_id, job.id]
    if worker_id is not None:
        sql += f" AND status IN {ACTIVE_SQL} AND worker_id = ?"
        params.append(worker_id)
    cur = await db.execute(sql, params)
    if worker_id is not None and cur.rowcount == 0:
        return False
    await quota.settle_in(db, job.id, ledger, now)
    job.status, job.finished_at, job.error_code, job.error_detail = status, now, code, detail
    return True


# Discord checks a message's nonce for uniqueness "in the past few minutes" (its documentation
# gives no figure): a stored picture is posted again under the same nonce only this soon after
# its first post began, when a post that had landed is returned instead of made twice.
REDELIVER_WINDOW_S = 120.0
MAX_REDELIVERIES = 2  # a picture whose post kills its process every time is refunded at last


def redeliverable(job: Job, now: float) -> bool:
    """Whether a lost job's stored picture is posted again rather than refunded."""
    mark = job.redeliver
    return (
        job.status == "delivering"
        and mark is not None
        and job.redeliveries < MAX_REDELIVERIES
        and now - float(mark.get("at") or 0.0) <= REDELIVER_WINDOW_S
    )


async def interrupt(db: Connection, quota: Quota, job: Job, now: float) -> Job:
    """Inside a transaction: a job whose process was lost becomes ``interrupted``, refunded; one
    whose picture was already posted (its message id is saved only once the post returned) is
    ``done`` and charged, as if its process had lived the few statements more: the member has it.
    One whose stored picture was being posted (:func:`redeliverable`) is queued again, still
    reserved: its next run posts that picture under the same nonce, so it lands once."""
    if job.result_message_id is not None:
        await db.execute(f"UPDATE jobs SET status = 'done', finished_at = ? WHERE id = ? AND status IN {ACTIVE_SQL}", (now, job.id))
        await quota.settle_in(db, job.id, "committed", now)
        job.status, job.finished_at = "done", now
        return job
    if redeliverable(job, now):
        await db.execute(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, lease_until = NULL, cancel_requested = 0,"
            f" redeliveries = redeliveries + 1 WHERE id = ? AND status IN {ACTIVE_SQL}",
            (job.id,),
        )
        job.status, job.worker_id, job.redeliveries = "queued", None, job.redeliveries + 1
        return job
    await db.execute(
        f"UPDATE jobs SET status = 'interrupted', error_code = 'interrupted', finished_at = ? WHERE id = ? AND status IN {ACTIVE_SQL}",
        (now, job.id),
    )
    await quota.settle_in(db, job.id, "refunded", now)
    job.status, job.error_code, job.finished_at = "interrupted", "interrupted", now
    return job


async def claim_retry(db: Connection, job_id: int) -> bool:
    """True for the one Retry of ``job_id`` that runs it again; false for any other click."""
    return bool(await write(db, "UPDATE jobs SET retried = 1 WHERE id = ? AND retried = 0 RETURNING id", (job_id,)))


async def release_retry(db: Connection, job_id: int) -> None:
    """The Retry was refused (e.g. no credits left): it may be clicked again later."""
    await write(db, "UPDATE jobs SET retried = 0 WHERE id = ?", (job_id,))


def failed(job: Job, exc: Exception) -> tuple[str, str]:
    """A runner's failure, logged (a traceback only for what is neither the relay's nor the
    member's doing) and classified for the job's row; the relay that failed goes on the job."""
    code, detail = classify(exc)
    if not isinstance(exc, RelayError) and code == "internal":
        log.error("job %d failed", job.id, exc_info=exc)
    else:
        log.info("job %d failed: %s", job.id, code)
    if isinstance(exc, RelayError) and exc.relay_name and not job.relay_name:
        job.relay_name = exc.relay_name
    return code, detail


def log_lost(jobs: list[Job], how: str) -> None:
    """One line for the operator about jobs found without a live process (see :func:`interrupt`)."""
    refunded = sum(job.status == "interrupted" for job in jobs)
    again = sum(job.status == "queued" for job in jobs)
    if refunded:
        log.warning("%d job(s) %s; marked interrupted and refunded", refunded, how)
    if again:
        log.info("%d job(s) %s while posting their stored picture; queued to post it again", again, how)
    if len(jobs) - refunded - again:
        log.info("%d job(s) %s after their picture was posted; recorded as done", len(jobs) - refunded - again, how)


async def repair_ledger(db: Connection, now: float) -> None:
    """Inside a transaction: a reservation never outlives its job (e.g. a row older code wrote)."""
    await db.execute(
        "UPDATE quota_ledger SET state = 'committed', updated_at = ? WHERE state = 'reserved'"
        " AND job_id IN (SELECT id FROM jobs WHERE status = 'done')",
        (now,),
    )
    await db.execute(
        "UPDATE quota_ledger SET state = 'refunded', updated_at = ? WHERE state = 'reserved'"
        " AND job_id IN (SELECT id FROM jobs WHERE status IN ('failed', 'cancelled', 'interrupted'))",
        (now,),
    )


async def settle(finish: Callable[[], Awaitable[None]], job: Job, status: str, background: list[asyncio.Task[None]]) -> None:
    """``finish()``, tried again while the database refuses the write, so a failed final commit
    leaves no job ``running`` and no credits ``reserved``. Past about a minute the slot is given
    back and the write is retried in the background (the task goes into ``background``); if the
    process stops first, the row is still ``running`` and the next start refunds it like any job
    the process lost (a delivered picture is then given away, never charged twice)."""
    for delay in (*SETTLE_RETRY_DELAYS, None):
        try:
            await finish()
            return
        except DatabaseError as exc:
            if delay is None:
                log.error("job %d: could not record it as %s (%s); trying every %.0f s meanwhile", job.id, status, exc, SETTLE_BACKGROUND_S)
                background.append(asyncio.create_task(_settle_later(finish, job, status), name=f"job-{job.id}-settle"))
                return
            log.warning("job %d: could not record it as %s (%s); trying again in %.1f s", job.id, status, exc, delay)
            await asyncio.sleep(delay)


async def _settle_later(finish: Callable[[], Awaitable[None]], job: Job, status: str) -> None:
    while True:
        await asyncio.sleep(SETTLE_BACKGROUND_S)
        try:
            await finish()
        except DatabaseError as exc:
            log.warning("job %d: still cannot record it as %s (%s)", job.id, status, exc)
            continue
        log.info("job %d: recorded as %s at last", job.id, status)
        return
