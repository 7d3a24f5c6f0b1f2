"""The in-process job queue: rows first, slots by the fairness rule, recovery after a restart.

See bot/jobs/__init__.py for the life of a job. This queue keeps the waiting jobs in memory
(the database holds them too, so a restart resumes them); one process owns a SQLite database's
queue. On PostgreSQL, bot/jobs/leases.py lets the database drive it across processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ..guild_config import GuildConfigStore, GuildSettings
from ..quota import Quota, QuotaRules
from ..rules import job_caps
from ..settings import Settings
from ..store import Connection, DatabaseError, transaction
from .fairness import Snapshot, choose, positions, take
from .model import (
    ACTIVE_SQL,
    UPDATABLE,
    CancelledBeforeDelivery,
    Job,
    JobCallback,
    NewJob,
    PositionCallback,
    QueueClosed,
    Runner,
    redeliver_json,
    shown_position,
    too_late,
)
from .records import failed, insert_reserved, interrupt, log_lost, record_end, repair_ledger, settle

log = logging.getLogger(__name__)


class JobQueue:
    """The in-process queue for SQLite: one process owns the queue and keeps its waiting jobs in
    memory (faster; the same tests hold). :func:`bot.jobs.make_queue` picks it, or
    :class:`~bot.jobs.leases.LeasedQueue` on PostgreSQL, where the database drives the queue
    and any number of processes share it."""

    def __init__(
        self,
        db: Connection,
        quota: Quota,
        settings: Settings,
        runner: Runner,
        *,
        config: GuildConfigStore | None = None,
        on_position: PositionCallback | None = None,
        on_interrupted: JobCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.quota = quota
        self.settings = settings
        self.runner = runner
        self.config = config
        self.on_position = on_position
        self.on_interrupted = on_interrupted
        self.clock = clock
        # user id -> that user's queued jobs, oldest first.
        self._queued: dict[int, deque[Job]] = {}
        # user id -> dispatch number of their last job: whoever was served longest ago (or never)
        # goes first, so a member who resubmits the moment a job ends cannot jump the line.
        self._served: dict[int, int] = {}
        self._seq = 0
        self._running: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._cancel_requested: set[int] = set()
        self._delivered: set[int] = set()  # runner returned: too late to cancel
        self._wake = asyncio.Event()
        self._positions_dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._notified: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> list[Job]:
        """Recover after a restart and start dispatching. Returns the jobs found interrupted."""
        now = self.clock()
        async with transaction(self.db) as db:
            # A job left 'delivering' without its message id may or may not have been posted:
            # refunded (never charged twice). With the id it was posted: done (see interrupt).
            async with db.execute(f"SELECT * FROM jobs WHERE status IN {ACTIVE_SQL} ORDER BY id") as cur:
                interrupted = [Job.from_row(r) for r in await cur.fetchall()]
            for job in interrupted:
                await interrupt(db, self.quota, job, now)
            await repair_ledger(db, now)
            async with db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created_at, id") as cur:
                queued = [Job.from_row(r) for r in await cur.fetchall()]
        # The database is the truth: jobs submitted before start() are among these rows.
        self._queued.clear()
        for job in queued:
            self._enqueue(job)
        log_lost(interrupted, "were running when the bot stopped")
        if queued:
            log.info("resuming %d queued job(s)", len(queued))
        self._started = True
        self._tasks = [
            asyncio.create_task(self._scheduler(), name="jobs-scheduler"),
            asyncio.create_task(self._notifier(), name="jobs-positions"),
        ]
        self._wake.set()
        self._positions_dirty.set()
        await self._tell_interrupted(interrupted)
        return interrupted

    async def _tell_interrupted(self, jobs: list[Job]) -> None:
        """``on_interrupted`` for each job lost with its process, not those found delivered (done)."""
        for job in jobs:
            if self.on_interrupted and job.status == "interrupted":
                try:
                    await self.on_interrupted(job)
                except Exception:
                    log.exception("on_interrupted failed for job %d", job.id)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop taking jobs; give running ones ``grace`` seconds, then cancel them. Jobs cancelled
        here stay ``running`` in the database and are recovered by the next :meth:`start`."""
        self._closing = True
        running = [task for _, task in self._running.values()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        for task in self._tasks + [t for t in running if not t.done()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)
        self._tasks = []

    async def join(self) -> None:
        """Wait until nothing is queued or running."""
        await self._idle.wait()

    # --- submitting ----------------------------------------------------------------------

    async def submit(self, new: NewJob, *, credits: int, rules: QuotaRules, role_ids: Iterable[int] = ()) -> Job:
        """Create the job and reserve its ``credits`` under ``rules``, or raise
        :class:`~bot.quota.QuotaExceeded` (nothing written). The caller prices the job and
        passes ``new.size`` as it is to be stored."""
        return (await self.submit_many([(new, credits)], rules=rules, role_ids=role_ids))[0]

    async def submit_many(
        self,
        news: Sequence[tuple[NewJob, int]],
        *,
        rules: QuotaRules,
        role_ids: Iterable[int] = (),
        also: Callable[[Connection, list[Job]], Awaitable[None]] | None = None,
    ) -> list[Job]:
        """One member's jobs (each with its credits) in one transaction, with what ``also`` writes
        there (a variant group): all queued and reserved, or none, even if the process dies."""
        if self._closing:
            raise QueueClosed("the bot is shutting down")
        if not news:
            return []
        async with transaction(self.db) as db:
            jobs = await insert_reserved(db, self.quota, news, rules=rules, role_ids=role_ids, now=self.clock())
            if also is not None:
                await also(db, jobs)
        for job in jobs:
            self._submitted(job)
        return jobs

    def _submitted(self, job: Job) -> None:
        self._enqueue(job)
        self._wake.set()
        self._positions_dirty.set()

    # --- reading and updating -----------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        running = self._running.get(job_id)
        if running:
            return running[0]
        async with self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return Job.from_row(row) if row else None

    async def update(self, job_id: int, **fields: Any) -> None:
        """Record what the bot learned about a job (e.g. ``progress_message_id``)."""
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        for job in self._live(job_id):
            for name, value in fields.items():
                setattr(job, name, value)
        if fields:
            async with transaction(self.db) as db:
                assignments = ", ".join(f"{name} = ?" for name in fields)
                await db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def _live(self, job_id: int) -> list[Job]:
        found = [job for q in self._queued.values() for job in q if job.id == job_id]
        if job_id in self._running:
            found.append(self._running[job_id][0])
        return found

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _snapshot(self) -> Snapshot:
        return Snapshot(self._queued, self._served, [job for job, _ in self._running.values()])

    def positions(self) -> dict[int, int]:
        """Job id -> 1-based place in line (see :func:`bot.jobs.fairness.positions`)."""
        return positions(self._snapshot())

    def position(self, job_id: int) -> int | None:
        return self.positions().get(job_id)

    # --- cancelling ----------------------------------------------------------------------

    async def cancel(self, job_id: int, *, by_user: int | None) -> str:
        """Cancel a job. ``by_user`` must be the requester; None skips that check (moderators).

        Returns ``cancelled``, ``not_found``, ``not_owner``, ``delivering`` (its picture is
        being posted: too late), ``interrupted`` (its process was lost: already refunded) or
        ``too_late`` (already finished).
        """
        for user_id, q in list(self._queued.items()):
            for job in q:
                if job.id != job_id:
                    continue
                if by_user is not None and by_user != job.user_id:
                    return "not_owner"
                if job.redeliver is not None:
                    return "delivering"  # as below
                q.remove(job)
                if not q:
                    del self._queued[user_id]
                await self._finish(job, "cancelled", "refunded", error=("cancelled", ""))
                self._changed()
                return "cancelled"
        running = self._running.get(job_id)
        if running:
            job, task = running
            if by_user is not None and by_user != job.user_id:
                return "not_owner"
            if job.status == "delivering" or job.redeliver is not None:
                return "delivering"  # (or run again to post its picture: perhaps up already)
            if job_id in self._delivered:
                return "too_late"
            self._cancel_requested.add(job_id)
            task.cancel()
            if task is asyncio.current_task():
                return "cancelled"  # the runner cancelling its own job: it unwinds after this
            # Wait for the task to record the cancellation, so the caller can report it as done.
            await asyncio.wait([task])
            if self._running.get(job_id, (None, None))[1] is task:
                # Cancelled before its first step: the coroutine never ran, so neither did its
                # handlers. Settle it here, or it would hold its slot and credits for ever.
                self._running.pop(job_id, None)
                self._cancel_requested.discard(job_id)
                await self._finish(job, "cancelled", "refunded", error=("cancelled", ""))
                self._changed()
            return "cancelled" if job.status == "cancelled" else "too_late"
        found = await self.get(job_id)
        if found is None:
            return "not_found"
        if by_user is not None and by_user != found.user_id:
            return "not_owner"
        return too_late(found)

    async def begin_delivery(self, job: Job, redeliver: dict[str, Any] | None = None) -> None:
        """The runner is about to post ``job``'s picture (an upload may land even if it is then
        interrupted): from now on Cancel answers ``delivering`` and refunds nothing. Raises
        :class:`CancelledBeforeDelivery` if a Cancel came first; the queue then records the job
        cancelled and refunded, and the runner must not post. ``redeliver``: what posting the
        stored picture again needs, should this process die before the post is recorded."""
        if job.id in self._cancel_requested:
            raise CancelledBeforeDelivery(job.id)
        # Set before any await: a Cancel in this process sees it at once.
        job.status, job.redeliver = "delivering", redeliver
        try:
            marked = await self._mark_delivering(job)
        except DatabaseError as exc:
            # This process's answer to Cancel is right already (job.status), and a cancel asked
            # elsewhere waits for the job's end and refunds nothing: the picture goes out.
            log.warning("job %d: could not record that its picture is being posted (%s)", job.id, exc)
            marked = True
        if not marked:
            job.status = "running"
            self._cancel_requested.add(job.id)
            raise CancelledBeforeDelivery(job.id)

    async def _mark_delivering(self, job: Job) -> bool:
        """The state in the database, for every process; False when a Cancel came first."""
        await self.db.execute(
            "UPDATE jobs SET status = 'delivering', redeliver = ? WHERE id = ? AND status = 'running'", (redeliver_json(job), job.id)
        )
        return True  # one process: a Cancel here saw job.status first

    # --- internals -----------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        self._queued.setdefault(job.user_id, deque()).append(job)
        self._idle.clear()

    def _changed(self) -> None:
        self._wake.set()
        self._positions_dirty.set()
        if not self._queued and not self._running:
            self._idle.set()

    def _tells(self, job: Job) -> bool:
        """Whether this process tells ``job``'s member their place in line (every job here)."""
        return True

    async def _guild(self, guild_id: int | None) -> GuildSettings:
        if self.config is None:
            return GuildSettings()
        return await self.config.get(guild_id)

    async def _caps(self, guild_id: int | None) -> tuple[int, int]:
        guild = await self._guild(guild_id)
        s = self.settings
        return job_caps(s.max_jobs_per_guild, s.max_jobs_per_user, guild.max_jobs, guild.max_jobs_per_user)

    async def _scheduler(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception:
                log.exception("job dispatch failed")

    async def _dispatch(self) -> None:
        if self._closing:
            return
        caps: dict[int | None, tuple[int, int]] = {}
        for guild_id in {job.guild_id for q in list(self._queued.values()) for job in q}:
            caps[guild_id] = await self._caps(guild_id)
        # No awaits from here on: the queue cannot change under the loop.
        snap = self._snapshot()
        started = False
        while (chosen := choose(snap, caps, self.settings.max_concurrent_jobs)) is not None:
            self._seq += 1
            take(snap, chosen, self._seq)
            chosen.status = "running"
            task = asyncio.create_task(self._run(chosen), name=f"job-{chosen.id}")
            self._running[chosen.id] = (chosen, task)
            started = True
        if started:
            self._positions_dirty.set()
        if len(self._served) > 50_000:
            # Forget the members served longest ago: they now count as never served, which
            # puts them first in line, where their old number had nearly put them anyway.
            keep = sorted(self._served.items(), key=lambda kv: kv[1])[-25_000:]
            self._served = dict(keep)

    async def _run(self, job: Job) -> None:
        try:
            try:
                async with transaction(self.db) as db:
                    now = self.clock()
                    await db.execute("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'", (now, job.id))
                job.started_at = now
                await self.runner(job)
            except asyncio.CancelledError:
                if job.id in self._cancel_requested:
                    await asyncio.shield(self._settle(job, "cancelled", "refunded", error=("cancelled", "")))
                    return
                raise  # shutdown: the row stays 'running'; the next start recovers it
            except Exception as exc:
                await asyncio.shield(self._settle(job, "failed", "refunded", error=failed(job, exc)))
            else:
                self._delivered.add(job.id)
                await asyncio.shield(self._settle(job, "done", "committed"))
        finally:
            self._running.pop(job.id, None)
            self._cancel_requested.discard(job.id)
            self._delivered.discard(job.id)
            self._changed()

    async def _settle(self, job: Job, status: str, ledger: str, *, error: tuple[str, str] | None = None) -> None:
        await settle(lambda: self._finish(job, status, ledger, error=error), job, status, self._tasks)

    async def _finish(self, job: Job, status: str, ledger: str, *, error: tuple[str, str] | None = None) -> None:
        async with transaction(self.db) as db:
            # The clock is read inside: timestamps then follow the order writes really happened.
            await record_end(db, self.quota, job, status, ledger, error, self.clock())

    async def _notifier(self) -> None:
        while True:
            await self._positions_dirty.wait()
            self._positions_dirty.clear()
            current = {job_id: shown_position(p) for job_id, p in self.positions().items()}
            jobs = {job.id: job for q in self._queued.values() for job in q}
            changed = [(jobs[i], p) for i, p in current.items() if self._notified.get(i) != p]
            self._notified = current
            if self.on_position is None:
                continue
            for job, position in changed:
                if job.status != "queued" or not self._tells(job):
                    continue
                try:
                    await self.on_position(job, position)
                except Exception:
                    log.exception("on_position failed for job %d", job.id)
