"""The job queue: every generation is a job row before it is a request.

Life of a job::

    submit ──► queued ──► running ──► done          (runner returned: credits committed)
      │          │           ├──────► failed        (runner raised, NoImage included: refunded)
      │          └───────────┴──────► cancelled     (requester cancelled: refunded)
      │                      └──────► interrupted   (process died while running: refunded at
      ▼                                              the next start, ``on_interrupted`` called)
    QuotaExceeded: no row, nothing queued, nothing sent

- **Reservation** happens in the same transaction that inserts the job row (see bot/quota.py
  for why at creation): a refused request leaves no trace and a queued job holds its credits.
- **Limits:** at most ``settings.max_concurrent_jobs`` running in all, ``max_jobs_per_guild``
  per server and ``max_jobs_per_user`` per member; a server may lower its own caps
  (``GuildSettings.max_jobs`` / ``max_jobs_per_user``), never raise them.
- **Fairness:** by server first, then round-robin by member. Each free slot goes to a job of
  the server holding the fewest running jobs (so with ``NB_MAX_JOBS=4`` and three servers
  waiting, no server starts a second job while another server's job waits); among servers
  with as many, members form a rotation: the first member in the rotation with a job that may
  run now is served, then moves to the back. One member's burst of ten waits behind everyone
  else's first job, and one server's hundred members wait behind another server's first job.
  Slots already taken are not pre-empted: a server's jobs hold them at most one job deadline
  (see bot/relay_pool.py), which bounds every other server's wait.
  Positions shown to users follow the same rule (see :meth:`JobQueue.positions`); they are
  exact up to :data:`EXACT_POSITIONS` and coarse after it (:func:`shown_position`), so a queue
  of N jobs costs O(N log N) position updates while it drains, not N².
- **Runner:** ``async runner(job) -> None``, supplied by the bot. Returning means "delivered"
  (commit); raising means "failed" (refund). It may set ``job.relay_name``,
  ``job.latency_ms`` and ``job.result_message_id``; they are saved with the final status.
- **Chains:** a job whose ``request["after_job_id"]`` names a queued or running job waits
  until that one has finished (the second of two quick messages in a thread builds on the
  first one's result; the runner resolves which turn that is).
- **Recording the end** (:meth:`JobQueue._settle`): a final write the database refuses (disk
  full, locked past busy_timeout) is tried again for about a minute, holding the slot, so a
  job is not left ``running`` with credits ``reserved`` until a restart.
- **Cancel:** the requester (or a moderator, ``by_user=None``) cancels a queued job (dropped
  and refunded) or a running one (its task is cancelled, then refunded). A job whose runner has
  already returned can no longer be cancelled: the picture is out.
- **Restart:** :meth:`JobQueue.start` turns jobs left ``running`` by a crash into
  ``interrupted``, refunds them and calls ``on_interrupted(job)`` so the bot can offer Retry;
  queued jobs resume in their old order. :meth:`JobQueue.stop` leaves jobs it had to cancel as
  ``running`` on purpose, so a clean stop and a crash take the same recovery path.
- One process owns a database's queue (with several processes, each would need its own
  database or a shard filter here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from .guild_config import GuildConfigStore, GuildSettings
from .pricing import canonical_size
from .quota import Quota, QuotaRules, transaction
from .relay.types import InvalidRequest, NoImage, RelayError, RelayFailed, RelayTimeout
from .rules import job_caps
from .settings import Settings

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled", "interrupted")
# Waits before trying again to record a job's end when the database refuses the write (disk
# full, locked beyond busy_timeout): about a minute in all, during which the job keeps its slot.
SETTLE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SETTLE_BACKGROUND_S = 60.0  # then, slot given back, every this often until the write lands

# Places in line shown exactly; beyond it a member sees "within the first N" (N from
# POSITION_BUCKETS, then powers of ten), which changes only when a bucket boundary is crossed.
EXACT_POSITIONS = 10
POSITION_BUCKETS = (20, 50, 100, 200, 500, 1000)


def shown_position(position: int) -> int:
    """The place in line a member is told: exact up to EXACT_POSITIONS, else the smallest
    bucket bound at or above it. Each job crosses each bound at most once while the queue
    drains, so updates per job are EXACT_POSITIONS + O(log N)."""
    if position <= EXACT_POSITIONS:
        return position
    for bound in POSITION_BUCKETS:
        if position <= bound:
            return bound
    bound = POSITION_BUCKETS[-1]
    while bound < position:
        bound *= 10
    return bound


@dataclass
class NewJob:
    """What the bot knows when a member asks for a picture."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    request: dict[str, Any]  # JSON-able: prompt, model, ratio, size, options, image hashes
    model: str
    size: str | None = None
    kind: str = "imagine"  # imagine | edit | reroll | upscale | retry
    locale: str = "en"
    conversation_id: int | None = None
    parent_turn_id: int | None = None


@dataclass
class Job:
    id: int
    guild_id: int | None
    channel_id: int | None
    user_id: int
    kind: str
    status: str
    request: dict[str, Any]
    model: str
    size: str | None
    cost: int
    locale: str
    conversation_id: int | None = None
    parent_turn_id: int | None = None
    result_turn_id: int | None = None
    progress_message_id: int | None = None
    result_message_id: int | None = None
    relay_name: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    latency_ms: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Job:
        data = {k: row[k] for k in row.keys() if k in _JOB_FIELDS}
        try:
            data["request"] = json.loads(data.get("request") or "{}")
        except ValueError:
            data["request"] = {}
        return cls(**data)


_JOB_FIELDS = {f.name for f in dataclasses.fields(Job)}
# Fields the bot may set on a job after creation (progress message, links to turns...).
_UPDATABLE = {"progress_message_id", "result_message_id", "result_turn_id", "conversation_id", "parent_turn_id", "relay_name", "latency_ms"}

Runner = Callable[[Job], Awaitable[None]]
PositionCallback = Callable[[Job, int], Awaitable[None]]
JobCallback = Callable[[Job], Awaitable[None]]


class QueueClosed(RuntimeError):
    key = "jobs.closed"


def classify(exc: BaseException) -> tuple[str, str]:
    """``(error_code, detail)`` stored on a failed job; codes group failures in usage reports."""
    detail = str(exc)[:500]
    if isinstance(exc, NoImage):
        return f"no_image:{exc.reason}", detail
    if isinstance(exc, RelayTimeout):
        return "timeout", detail
    if isinstance(exc, RelayFailed):
        return (f"http_{exc.status}" if exc.status else "network"), detail
    if isinstance(exc, InvalidRequest):
        return "invalid", detail
    if isinstance(exc, RelayError):
        return exc.key, detail
    key = getattr(exc, "key", None)
    if isinstance(key, str):
        return key, detail
    return "internal", type(exc).__name__


class JobQueue:
    def __init__(
        self,
        db: aiosqlite.Connection,
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
            async with db.execute("SELECT * FROM jobs WHERE status = 'running' ORDER BY id") as cur:
                interrupted = [Job.from_row(r) for r in await cur.fetchall()]
            for job in interrupted:
                await db.execute(
                    "UPDATE jobs SET status = 'interrupted', error_code = 'interrupted', finished_at = ? WHERE id = ?",
                    (now, job.id),
                )
                await self.quota.settle_in(db, job.id, "refunded", now)
                job.status, job.error_code, job.finished_at = "interrupted", "interrupted", now
            # Repair: a reservation must never outlive its job (e.g. a row written by older code).
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
            async with db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created_at, id") as cur:
                queued = [Job.from_row(r) for r in await cur.fetchall()]
        # The database is the truth: jobs submitted before start() are among these rows.
        self._queued.clear()
        for job in queued:
            self._enqueue(job)
        if interrupted:
            log.warning("%d job(s) were running when the bot stopped; marked interrupted and refunded", len(interrupted))
        if queued:
            log.info("resuming %d queued job(s)", len(queued))
        self._started = True
        self._tasks = [
            asyncio.create_task(self._scheduler(), name="jobs-scheduler"),
            asyncio.create_task(self._notifier(), name="jobs-positions"),
        ]
        self._wake.set()
        self._positions_dirty.set()
        if self.on_interrupted:
            for job in interrupted:
                try:
                    await self.on_interrupted(job)
                except Exception:
                    log.exception("on_interrupted failed for job %d", job.id)
        return interrupted

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

    async def submit(
        self,
        new: NewJob,
        *,
        role_ids: Iterable[int] = (),
        cost: int | None = None,
        rules: QuotaRules | None = None,
    ) -> Job:
        """Create the job and reserve its credits, or raise :class:`~bot.quota.QuotaExceeded`
        (nothing written). ``cost``/``rules`` default to the server's settings."""
        if self._closing:
            raise QueueClosed("the bot is shutting down")
        guild = await self._guild(new.guild_id)
        size = canonical_size(new.model, new.size)
        credits = guild.cost(new.model, size) if cost is None else cost
        limits = guild.quota if rules is None else rules
        async with transaction(self.db) as db:
            now = self.clock()
            # Check first (reads only), so a refusal commits an empty transaction, no rollback.
            await self.quota.check_in(
                db, guild_id=new.guild_id, user_id=new.user_id, credits=credits, rules=limits, role_ids=role_ids, now=now
            )
            cur = await db.execute(
                "INSERT INTO jobs (guild_id, channel_id, user_id, kind, status, request, model, size, cost, locale,"
                " conversation_id, parent_turn_id, created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.guild_id,
                    new.channel_id,
                    new.user_id,
                    new.kind,
                    json.dumps(new.request),
                    new.model,
                    size,
                    credits,
                    new.locale,
                    new.conversation_id,
                    new.parent_turn_id,
                    now,
                ),
            )
            job_id = int(cur.lastrowid)
            await self.quota.hold_in(db, job_id=job_id, guild_id=new.guild_id, user_id=new.user_id, credits=credits, now=now)
        job = Job(
            id=job_id,
            guild_id=new.guild_id,
            channel_id=new.channel_id,
            user_id=new.user_id,
            kind=new.kind,
            status="queued",
            request=new.request,
            model=new.model,
            size=size,
            cost=credits,
            locale=new.locale,
            conversation_id=new.conversation_id,
            parent_turn_id=new.parent_turn_id,
            created_at=now,
        )
        self._enqueue(job)
        self._wake.set()
        self._positions_dirty.set()
        return job

    async def retry(self, job_id: int, *, by_user: int, role_ids: Iterable[int] = ()) -> Job:
        """A new job with the request of a failed/interrupted/cancelled one (the Retry button)."""
        old = await self.get(job_id)
        if old is None:
            raise LookupError(job_id)
        return await self.submit(
            NewJob(
                user_id=by_user,
                guild_id=old.guild_id,
                channel_id=old.channel_id,
                request=old.request,
                model=old.model,
                size=old.size,
                kind="retry",
                locale=old.locale,
                conversation_id=old.conversation_id,
                parent_turn_id=old.parent_turn_id,
            ),
            role_ids=role_ids,
        )

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
        bad = set(fields) - _UPDATABLE
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
    def queued_count(self) -> int:
        return sum(len(q) for q in self._queued.values())

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _rotation(self) -> list[int]:
        """Members with queued jobs, next to be served first."""
        return sorted(
            self._queued,
            key=lambda u: (self._served.get(u, 0), self._queued[u][0].created_at, self._queued[u][0].id),
        )

    def positions(self) -> dict[int, int]:
        """Job id -> 1-based place in line, by the dispatch rule without the caps: a server's
        i-th queued job (its jobs ordered round-robin by member, members in rotation order)
        comes in round ``running(server) + i``; within a round, servers go in the order of
        their first member in the rotation. (Caps can let a later job start earlier; the
        number is what the member is told, kept current.) O(N log N) in the queue."""
        running: dict[int | None, int] = {}
        for job, _ in self._running.values():
            running[job.guild_id] = running.get(job.guild_id, 0) + 1
        per_guild: dict[int | None, list[deque[Job]]] = {}
        for user_id in self._rotation():
            q = self._queued[user_id]
            per_guild.setdefault(q[0].guild_id, []).append(q)
        keyed: list[tuple[int, int, int]] = []  # (round, server order, job id)
        for order, (guild_id, queues) in enumerate(per_guild.items()):
            # A member's jobs may name other servers (DMs, several servers): each job counts
            # in the server its member's first job is in, an approximation the caps ignore too.
            i = running.get(guild_id, 0)
            depth = 0
            while True:
                served = False
                for q in queues:
                    if depth < len(q):
                        keyed.append((i, order, q[depth].id))
                        i += 1
                        served = True
                if not served:
                    break
                depth += 1
        keyed.sort()
        return {job_id: n for n, (_, _, job_id) in enumerate(keyed, start=1)}

    def position(self, job_id: int) -> int | None:
        return self.positions().get(job_id)

    # --- cancelling ----------------------------------------------------------------------

    async def cancel(self, job_id: int, *, by_user: int | None) -> str:
        """Cancel a job. ``by_user`` must be the requester; None skips that check (moderators).

        Returns ``cancelled``, ``not_found``, ``not_owner`` or ``too_late`` (already finished or
        delivered).
        """
        for user_id, q in list(self._queued.items()):
            for job in q:
                if job.id != job_id:
                    continue
                if by_user is not None and by_user != job.user_id:
                    return "not_owner"
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
        job = await self.get(job_id)
        if job is None:
            return "not_found"
        if by_user is not None and by_user != job.user_id:
            return "not_owner"
        return "too_late"

    # --- internals -----------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        self._queued.setdefault(job.user_id, deque()).append(job)
        self._idle.clear()

    def _changed(self) -> None:
        self._wake.set()
        self._positions_dirty.set()
        if not self._queued and not self._running:
            self._idle.set()

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
        started = False
        # A job chained after another (``request["after_job_id"]``: the second of two quick
        # messages in a thread) waits until that one has finished, so it can build on its result.
        waiting = {job.id for q in self._queued.values() for job in q}
        while len(self._running) < self.settings.max_concurrent_jobs:
            by_guild: dict[int | None, int] = {}
            by_user: dict[int, int] = {}
            for job, _ in self._running.values():
                by_guild[job.guild_id] = by_guild.get(job.guild_id, 0) + 1
                by_user[job.user_id] = by_user.get(job.user_id, 0) + 1
            chosen: Job | None = None
            fewest = 0
            for user_id in self._rotation():
                for job in self._queued[user_id]:
                    if job.guild_id not in caps:
                        continue  # arrived during this dispatch; the next wake-up takes it
                    after = job.request.get("after_job_id") if isinstance(job.request, dict) else None
                    if after is not None and (after in waiting or after in self._running):
                        continue
                    guild_cap, user_cap = caps[job.guild_id]
                    held = by_guild.get(job.guild_id, 0)
                    if held < guild_cap and by_user.get(user_id, 0) < user_cap:
                        # The server holding the fewest slots wins; the rotation breaks ties.
                        if chosen is None or held < fewest:
                            chosen, fewest = job, held
                        break
                if chosen is not None and fewest == 0:
                    break  # nobody can hold fewer than none
            if chosen is None:
                break
            q = self._queued[chosen.user_id]
            q.remove(chosen)
            if not q:
                del self._queued[chosen.user_id]
            self._seq += 1
            self._served[chosen.user_id] = self._seq
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
                code, detail = classify(exc)
                if not isinstance(exc, (RelayError,)) and code == "internal":
                    log.exception("job %d failed", job.id)
                else:
                    log.info("job %d failed: %s", job.id, code)
                relay = getattr(exc, "relay_name", None)
                if relay and not job.relay_name:
                    job.relay_name = relay
                await asyncio.shield(self._settle(job, "failed", "refunded", error=(code, detail)))
            else:
                self._delivered.add(job.id)
                await asyncio.shield(self._settle(job, "done", "committed"))
        finally:
            self._running.pop(job.id, None)
            self._cancel_requested.discard(job.id)
            self._delivered.discard(job.id)
            self._changed()

    async def _settle(self, job: Job, status: str, ledger: str, *, error: tuple[str, str] | None = None) -> None:
        """:meth:`_finish`, tried again while the database refuses the write, so a failed
        final commit leaves no job ``running`` and no credits ``reserved``. Past about a minute
        the slot is given back and the write is retried in the background; if the process
        stops first, the row is still ``running`` and the next :meth:`start` refunds it like
        any job the process lost (a delivered picture is then given away, never charged
        twice)."""
        for delay in (*SETTLE_RETRY_DELAYS, None):
            try:
                await self._finish(job, status, ledger, error=error)
                return
            except (sqlite3.Error, OSError) as exc:
                if delay is None:
                    # The slot is given back; the write goes on being tried in the background.
                    log.error(
                        "job %d: could not record it as %s (%s); trying every %.0f s meanwhile", job.id, status, exc, SETTLE_BACKGROUND_S
                    )
                    task = asyncio.create_task(self._settle_later(job, status, ledger, error), name=f"job-{job.id}-settle")
                    self._tasks.append(task)
                    return
                log.warning("job %d: could not record it as %s (%s); trying again in %.1f s", job.id, status, exc, delay)
                await asyncio.sleep(delay)

    async def _settle_later(self, job: Job, status: str, ledger: str, error: tuple[str, str] | None) -> None:
        while True:
            await asyncio.sleep(SETTLE_BACKGROUND_S)
            try:
                await self._finish(job, status, ledger, error=error)
            except (sqlite3.Error, OSError) as exc:
                log.warning("job %d: still cannot record it as %s (%s)", job.id, status, exc)
                continue
            log.info("job %d: recorded as %s at last", job.id, status)
            return

    async def _finish(self, job: Job, status: str, ledger: str, *, error: tuple[str, str] | None = None) -> None:
        code, detail = error or (None, None)
        async with transaction(self.db) as db:
            now = self.clock()  # inside: timestamps then follow the order writes really happened
            await db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_code = ?, error_detail = ?, relay_name = ?,"
                " latency_ms = ?, result_message_id = COALESCE(?, result_message_id) WHERE id = ?",
                (status, now, code, detail, job.relay_name, job.latency_ms, job.result_message_id, job.id),
            )
            await self.quota.settle_in(db, job.id, ledger, now)
        job.status, job.finished_at, job.error_code, job.error_detail = status, now, code, detail

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
                if job.status != "queued":
                    continue
                try:
                    await self.on_position(job, position)
                except Exception:
                    log.exception("on_position failed for job %d", job.id)
