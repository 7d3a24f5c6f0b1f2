"""The queue the database drives (PostgreSQL): several workers on one database.

Each "worker" is a LeasedQueue with its own worker_id and its own connection pool, as separate
processes would have; a worker "dies" by having its tasks cancelled with nothing recorded
(what ``kill -9`` leaves: rows ``running``, leases no longer renewed).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bot import store
from bot.jobs import Job, NewJob, make_queue
from bot.jobs.leases import LeasedQueue
from bot.quota import Quota, QuotaRules
from bot.settings import Settings
from tests import pg
from tests.test_jobs import eventually, ledger, rows

pg_server = pg.pg_server
PLENTY = QuotaRules(user_daily=1000)
FLASH = "gemini-3.1-flash-image-preview"


def settings(data_dir: Path, **over: Any) -> Settings:
    base: dict[str, Any] = dict(
        discord_token="", data_dir=data_dir, relay=None, max_concurrent_jobs=3, max_jobs_per_guild=2, max_jobs_per_user=1
    )
    base.update(over)
    return Settings(**base)


def new(user: int, guild: int = 1, **request: Any) -> NewJob:
    return NewJob(user_id=user, guild_id=guild, channel_id=10, request=request, model=FLASH, size="1K")


@pytest.fixture
async def url(pg_server: pg.PgServer) -> str:
    return await pg_server.fresh_database()


class Worker:
    """One process's queue: its own pool, its own worker id, a runner that waits to be released."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.running: set[int] = set()
        self.ran: list[int] = []
        self.release = asyncio.Event()
        self.interrupted: list[int] = []
        self.queue: LeasedQueue

    async def open(self, url: str, data_dir: Path, **over: Any) -> Worker:
        self.db = await store.connect(url)

        async def runner(job: Job) -> None:
            self.running.add(job.id)
            self.ran.append(job.id)
            try:
                await self.release.wait()
            finally:
                self.running.discard(job.id)

        async def on_interrupted(job: Job) -> None:
            self.interrupted.append(job.id)

        queue = make_queue(self.db, Quota(self.db), settings(data_dir, **over), runner, on_interrupted=on_interrupted, worker_id=self.name)
        assert isinstance(queue, LeasedQueue)
        queue.lease_s, queue.heartbeat_s, queue.poll_s = 1.0, 0.2, 0.05
        self.queue = queue
        return self

    async def close(self) -> None:
        await self.queue.stop()
        await self.db.close()


@pytest.fixture
async def workers(url: str, data_dir: Path):
    opened: list[Worker] = []

    async def make(name: str, **over: Any) -> Worker:
        worker = await Worker(name).open(url, data_dir, **over)
        opened.append(worker)
        return worker

    yield make
    for worker in opened:
        await worker.close()


async def test_caps_and_round_robin_hold_across_two_workers(workers: Any) -> None:
    a, b = await workers("a"), await workers("b")
    await a.queue.start()
    await b.queue.start()
    # Server 1: members 1..4 with two jobs each; server 2: member 9 with three. Caps: 3 in all,
    # 2 per server, 1 per member, counted over both workers.
    for user, guild in [(1, 1), (1, 1), (2, 1), (2, 1), (3, 1), (4, 1), (9, 2), (9, 2), (9, 2)]:
        await (a if user % 2 else b).queue.submit(new(user, guild), credits=1, rules=PLENTY)
    peak: dict[str, int] = {"all": 0}
    for _ in range(20):
        await asyncio.sleep(0.05)
        peak["all"] = max(peak["all"], len(a.running) + len(b.running))
    assert peak["all"] == 3
    running = await rows(a.db, "SELECT guild_id, user_id FROM jobs WHERE status = 'running'")
    assert sorted(g for g, _ in running) == [1, 1, 2]  # server 2 got its slot, server 1 not a third
    assert len({u for _, u in running}) == 3  # one per member
    a.release.set()
    b.release.set()
    await a.queue.join()
    assert sorted(a.ran + b.ran) == list(range(1, 10))  # each job ran once, in one worker
    assert set((await ledger(a.db)).values()) == {"committed"}


async def test_a_dead_workers_job_is_interrupted_refunded_and_its_late_end_is_fenced(workers: Any) -> None:
    a, b = await workers("a"), await workers("b")
    await a.queue.start()
    job = await a.queue.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: job.id in a.running, "a runs the job")
    # a dies: its tasks stop, nothing is recorded, its lease is no longer renewed.
    for task in a.queue._tasks:
        task.cancel()
    await b.queue.start()
    await eventually(lambda: job.id in b.interrupted, "b notices the expired lease", limit=10)
    assert dict(await rows(b.db, "SELECT id, status FROM jobs")) == {job.id: "interrupted"}
    assert await ledger(b.db) == {job.id: "refunded"}
    # a was only stalled, not dead, and now finishes: the fence keeps the outcome single.
    a.release.set()
    await eventually(lambda: not a.running, "a's runner returns")
    await asyncio.sleep(0.1)
    assert dict(await rows(b.db, "SELECT id, status FROM jobs")) == {job.id: "interrupted"}
    assert await ledger(b.db) == {job.id: "refunded"}


async def test_cancel_reaches_the_worker_running_the_job(workers: Any) -> None:
    a, b = await workers("a"), await workers("b")
    await a.queue.start()
    job = await a.queue.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: job.id in a.running, "a runs the job")
    assert await b.queue.cancel(job.id, by_user=2) == "not_owner"
    assert await b.queue.cancel(job.id, by_user=1) == "cancelled"  # b only asks; a cancels it
    assert not a.running
    assert dict(await rows(b.db, "SELECT id, status FROM jobs")) == {job.id: "cancelled"}
    assert await ledger(b.db) == {job.id: "refunded"}


async def test_a_clean_stop_and_restart_touch_only_their_own_jobs(workers: Any) -> None:
    # Either worker claims any job; a, allowed one at a time, leaves the second job to b.
    a, b = await workers("a", max_concurrent_jobs=1), await workers("b")
    await a.queue.start()
    mine = await a.queue.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: mine.id in a.running, "a runs its job")
    await b.queue.start()
    theirs = await b.queue.submit(new(2), credits=1, rules=PLENTY)
    await eventually(lambda: theirs.id in b.running, "b runs its job")
    await a.queue.stop()  # a clean stop: a's job is left as a crash would leave it
    again = await workers("a", max_concurrent_jobs=1)  # the same worker, restarted
    interrupted = await again.queue.start()
    assert [j.id for j in interrupted] == [mine.id]
    assert dict(await rows(b.db, "SELECT id, status FROM jobs ORDER BY id")) == {mine.id: "interrupted", theirs.id: "running"}
    b.release.set()
    await eventually(lambda: not b.running, "b finishes")
    await b.queue.join()
    assert await ledger(b.db) == {mine.id: "refunded", theirs.id: "committed"}


async def test_a_dead_workers_picture_being_posted_is_posted_again_by_another_worker_and_charged_once(workers: Any) -> None:
    """Its stored picture was being posted (``begin_delivery`` with what a second post needs):
    the reaper queues it again, still reserved; another worker's run posts it and the job is
    charged once. A Cancel meanwhile is too late (the picture may be up already)."""
    a, b = await workers("a"), await workers("b")
    marks: dict[str, Any] = {}
    base_a = a.queue.runner

    async def posting(job: Job) -> None:
        await a.queue.begin_delivery(job, {"at": time.time(), "turn_id": 7})
        await base_a(job)

    a.queue.runner = posting
    await a.queue.start()
    job = await a.queue.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: job.id in a.running, "a posts the picture")
    for task in a.queue._tasks:  # a dies while posting
        task.cancel()

    async def again(job: Job) -> None:
        marks[job.id] = (job.redeliver, job.redeliveries, await b.queue.cancel(job.id, by_user=1))

    b.queue.runner = again
    await b.queue.start()
    await eventually(lambda: job.id in marks, "b runs it again", limit=10)
    mark, count, cancel = marks[job.id]
    assert mark is not None and mark["turn_id"] == 7 and count == 1
    assert cancel == "delivering"
    await b.queue.join()
    assert dict(await rows(b.db, "SELECT id, status FROM jobs")) == {job.id: "done"}
    assert await ledger(b.db) == {job.id: "committed"}
    assert b.interrupted == []  # nobody was told of an interruption
    a.release.set()  # a was only stalled: its late end is fenced
    await asyncio.sleep(0.1)
    assert await ledger(b.db) == {job.id: "committed"}
