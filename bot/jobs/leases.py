"""The job queue the database drives (PostgreSQL): any number of processes submit and run jobs.

The same :class:`~bot.jobs.queue.JobQueue` surface and the same fairness rule
(bot/jobs/fairness.py), with the state that several processes share kept in the database:

- **Claims** run inside :func:`bot.store.transaction`, which on PostgreSQL holds one advisory
  lock: one claim at a time across all processes, so the caps (global, per server, per member)
  are counted over every process's running jobs and cannot be overshot by two claims at once.
  (``SKIP LOCKED`` alone cannot: it hides rows, it does not count them.)
- **Round-robin** across processes: ``fair_turns`` records when each member was last served.
- **Leases** on the database clock: a claimed job carries ``worker_id`` and ``lease_until``;
  each worker renews its own every :attr:`LeasedQueue.heartbeat_s`. A worker that dies stops
  renewing; whoever notices the lease expired (every worker looks) marks the job
  ``interrupted``, refunds it and calls ``on_interrupted`` (the bot offers Retry).
- **Fenced completion:** a job's end is written ``WHERE status = 'running' AND worker_id = me``;
  a worker whose lease was reaped meanwhile changes nothing (no double outcome, no double charge).
- **Cancel** reaches whichever process runs the job: a queued job is cancelled in the database;
  a running one elsewhere gets ``cancel_requested``, which its worker sees at its next poll.
  ``delivering`` (its runner began posting the picture) is a state in the database, set only
  while no cancel was asked (``begin_delivery``): any process then answers Cancel "being
  delivered" at once and refunds nothing, and a cancel asked first stops the post.
- **Start and stop** touch only this worker's jobs: :meth:`start` recovers the jobs its own
  ``worker_id`` left running (a restart of the same worker), a clean stop leaves them as a
  crash would, and other workers' jobs are left to their leases.
- Other processes' submissions and freed slots are seen by polling every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from typing import Any

from ..store import Connection, DatabaseError, transaction
from .fairness import Snapshot, choose, take
from .model import ACTIVE_SQL, TERMINAL, Job, redeliver_json
from .queue import JobQueue, too_late
from .records import interrupt, log_lost, record_end

log = logging.getLogger(__name__)

DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"
# How many of each member's oldest queued jobs a claim looks at: the rule serves a member's
# first job that may run, and only a chained job (waiting for another) is ever passed over.
CLAIM_DEPTH = 4


def default_worker_id() -> str:
    return os.environ.get("NB_WORKER_ID", "").strip() or f"{socket.gethostname()}:main"


class LeasedQueue(JobQueue):
    lease_s = 30.0
    heartbeat_s = 5.0
    poll_s = 0.25

    def __init__(self, *args: Any, worker_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker_id = worker_id or default_worker_id()
        # Renewed at least three times per lease, so one late heartbeat never loses a job.
        self.lease_s = float(self.settings.job_lease_s)
        self.heartbeat_s = min(self.heartbeat_s, self.lease_s / 3)
        self._mine: set[int] = set()  # jobs submitted here: this process tells their places
        self._all_running: list[Job] = []
        self._generation = 0  # submissions here, so a refresh can tell it read too early

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> list[Job]:
        now = self.clock()
        async with transaction(self.db) as db:
            mine = await _jobs(db, f"status IN {ACTIVE_SQL} AND worker_id = ?", (self.worker_id,))
            interrupted = [await interrupt(db, self.quota, job, now) for job in mine]
        interrupted += await self._reap()
        self._started = True
        self._tasks = [
            asyncio.create_task(self._scheduler(), name="jobs-scheduler"),
            asyncio.create_task(self._notifier(), name="jobs-positions"),
            asyncio.create_task(self._heartbeat(), name="jobs-heartbeat"),
            asyncio.create_task(self._poller(), name="jobs-poll"),
        ]
        self._wake.set()
        log_lost(interrupted, "had lost their worker")
        await self._tell_interrupted(interrupted)
        return interrupted

    async def join(self) -> None:
        """Wait until nothing is queued or running, in any process."""
        while await self.db.execute_fetchall("SELECT 1 FROM jobs WHERE status IN ('queued', 'running', 'delivering') LIMIT 1"):
            await asyncio.sleep(self.poll_s / 5)

    def _submitted(self, job: Job) -> None:
        self._mine.add(job.id)
        self._generation += 1
        super()._submitted(job)

    def _tells(self, job: Job) -> bool:
        return job.id in self._mine

    def _snapshot(self) -> Snapshot:
        return Snapshot(self._queued, self._served, list(self._all_running))

    # --- claiming --------------------------------------------------------------------------

    async def submit_many(self, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = await super().submit_many(*args, **kwargs)
        if self._started:  # a free slot takes the job before submit returns, as in-process
            try:
                await self._dispatch()
            except DatabaseError:
                # The jobs are queued and reserved (committed above): the caller must not hear
                # of a failure and tell the member so. The next poll claims them.
                log.warning("could not claim right after queueing; the next poll will", exc_info=True)
        return jobs

    async def _dispatch(self) -> None:
        if self.settings.role == "gateway":
            return  # a gateway takes commands and submits; workers claim and run
        started = False
        while not self._closing and len(self._running) < self.settings.max_concurrent_jobs:
            job = await self._claim()
            if job is None:
                break
            job.status = "running"
            self._forget(job.id)
            self._all_running.append(job)
            self._running[job.id] = (job, asyncio.create_task(self._run(job), name=f"job-{job.id}"))
            started = True
        if started:
            self._positions_dirty.set()

    async def _claim(self) -> Job | None:
        async with transaction(self.db) as db:
            snap = await _snapshot(db)
            caps = {g: await self._caps(g) for g in {j.guild_id for q in snap.queued.values() for j in q}}
            job = choose(snap, caps, self.settings.max_concurrent_jobs)
            if job is None:
                return None
            (seq,) = list(await db.execute_fetchall("SELECT COALESCE(MAX(served), 0) + 1 FROM fair_turns"))[0]
            take(snap, job, int(seq))
            now = self.clock()
            await db.execute(
                f"UPDATE jobs SET status = 'running', started_at = ?, worker_id = ?, lease_until = {DB_NOW} + ?"
                " WHERE id = ? AND status = 'queued'",
                (now, self.worker_id, self.lease_s, job.id),
            )
            await db.execute(
                "INSERT INTO fair_turns (user_id, served) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET served = excluded.served",
                (job.user_id, int(seq)),
            )
        job.started_at = now
        self._served[job.user_id] = int(seq)  # the local picture follows at once (positions())
        return job

    async def _refresh(self) -> None:
        """The local picture of the shared queue, for places in line (:meth:`positions`)."""
        while True:
            seen = self._generation
            snap = await _snapshot(self.db, depth=None)
            if seen == self._generation:
                break  # else a job was submitted here meanwhile: read again, or it would vanish
        before = self.positions()
        self._queued.clear()
        self._queued.update(snap.queued)
        self._served.clear()
        self._served.update(snap.served)
        self._all_running = snap.running
        if self.positions() != before:
            self._positions_dirty.set()

    async def _poller(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self._wake.set()
            try:
                await self._refresh()  # other processes' submissions, claims and ends
            except Exception:
                log.exception("reading the shared queue failed")
            if self._running:
                try:
                    await self._cancel_asked()
                except Exception:
                    log.exception("checking for cancelled jobs failed")

    async def _cancel_asked(self) -> None:
        """Cancel the local jobs another process asked to cancel."""
        rows = await self.db.execute_fetchall(
            "SELECT id FROM jobs WHERE worker_id = ? AND status = 'running' AND cancel_requested = 1", (self.worker_id,)
        )
        for job_id in (int(r[0]) for r in rows):
            live = self._running.get(job_id)
            if live and live[0].status != "delivering" and job_id not in self._delivered and job_id not in self._cancel_requested:
                self._cancel_requested.add(job_id)
                self._running[job_id][1].cancel()

    # --- leases ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._renew()
                await self._tell_interrupted(await self._reap())
            except Exception:
                log.exception("job lease heartbeat failed")

    async def _renew(self) -> None:
        ids = list(self._running)
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        await self.db.execute(
            f"UPDATE jobs SET lease_until = {DB_NOW} + ? WHERE worker_id = ? AND status IN {ACTIVE_SQL} AND id IN ({marks})",
            (self.lease_s, self.worker_id, *ids),
        )

    async def _reap(self) -> list[Job]:
        """Jobs whose worker stopped renewing: interrupted and refunded, once, by whoever sees it."""
        now = self.clock()
        async with transaction(self.db) as db:
            expired = await _jobs(db, f"status IN {ACTIVE_SQL} AND lease_until < {DB_NOW}", ())
            return [await interrupt(db, self.quota, job, now) for job in expired]

    # --- ending and cancelling ------------------------------------------------------------

    async def _finish(self, job: Job, status: str, ledger: str, *, error: tuple[str, str] | None = None) -> None:
        async with transaction(self.db) as db:
            if not await record_end(db, self.quota, job, status, ledger, error, self.clock(), worker_id=self.worker_id):
                # Fenced: this worker's lease was reaped (the job is interrupted and refunded).
                log.warning("job %d: its lease had expired; its end (%s) is not recorded", job.id, status)
                return
        self._all_running = [j for j in self._all_running if j.id != job.id]

    async def cancel(self, job_id: int, *, by_user: int | None) -> str:
        self._forget(job_id)  # the local picture may lag: the database decides below
        if job_id in self._running:
            return await super().cancel(job_id, by_user=by_user)
        job = await self.get(job_id)
        if job is None:
            return "not_found"
        if by_user is not None and by_user != job.user_id:
            return "not_owner"
        if job.redeliver is not None and job.status not in TERMINAL:
            return "delivering"  # run again to post its picture: perhaps up already
        if job.status == "queued":
            if await self._cancel_queued(job):
                self._changed()
                return "cancelled"
            job = await self.get(job_id)  # claimed in between: now running somewhere
            if job is None:
                return "not_found"
        if job.status == "running" and job.worker_id == self.worker_id:
            for _ in range(100):  # claimed here a moment ago: its task is being created
                await asyncio.sleep(0)
                if job_id in self._running:
                    return await super().cancel(job_id, by_user=by_user)
        if job.status == "running":
            cur = await self.db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
            if cur.rowcount == 0:  # it began delivering (or ended) meanwhile
                job = await self.get(job_id)
            else:
                # Its worker looks every poll_s; from here on it can no longer begin delivering.
                for _ in range(int(max(10.0, 20 * self.poll_s) / 0.05)):
                    await asyncio.sleep(0.05)
                    job = await self.get(job_id)
                    if job is None or job.status != "running":
                        break
            if job is not None and job.status == "cancelled":
                return "cancelled"
        return too_late(job)

    async def _mark_delivering(self, job: Job) -> bool:
        # One statement decides between a Cancel from another process and the delivery: the
        # later of the two finds the row changed. Not this worker's any more (reaped): no post.
        cur = await self.db.execute(
            "UPDATE jobs SET status = 'delivering', redeliver = ?"
            " WHERE id = ? AND status = 'running' AND worker_id = ? AND cancel_requested = 0",
            (redeliver_json(job), job.id, self.worker_id),
        )
        return bool(cur.rowcount)

    async def _cancel_queued(self, job: Job) -> bool:
        async with transaction(self.db) as db:
            now = self.clock()
            cur = await db.execute(
                "UPDATE jobs SET status = 'cancelled', error_code = 'cancelled', error_detail = '', finished_at = ?"
                " WHERE id = ? AND status = 'queued'",
                (now, job.id),
            )
            if cur.rowcount == 0:
                return False  # claimed or cancelled meanwhile
            await self.quota.settle_in(db, job.id, "refunded", now)
        return True

    def _forget(self, job_id: int) -> None:
        for user_id, q in list(self._queued.items()):
            for job in [j for j in q if j.id == job_id]:
                q.remove(job)
            if not q:
                del self._queued[user_id]


async def _jobs(db: Connection, where: str, params: tuple[Any, ...]) -> list[Job]:
    return [Job.from_row(r) for r in await db.execute_fetchall(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params)]


async def _snapshot(db: Connection, depth: int | None = CLAIM_DEPTH) -> Snapshot:
    """The shared queue as the fairness rule sees it: each member's oldest ``depth`` queued jobs
    (all when None), every process's running jobs, and ``fair_turns``."""
    rows = await db.execute_fetchall(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at, id) AS turn"
        " FROM jobs WHERE status = 'queued') q WHERE turn <= ? ORDER BY created_at, id",
        (depth if depth is not None else 2**31 - 1,),
    )
    snap = Snapshot()
    for row in rows:
        job = Job.from_row(row)
        snap.queued.setdefault(job.user_id, deque()).append(job)
    snap.running = await _jobs(db, f"status IN {ACTIVE_SQL}", ())
    users = list(snap.queued)
    if users:
        marks = ", ".join("?" * len(users))
        served = await db.execute_fetchall(f"SELECT user_id, served FROM fair_turns WHERE user_id IN ({marks})", users)
        snap.served = {int(r[0]): int(r[1]) for r in served}
    return snap
