"""``delivering``: once a job's runner begins posting its picture, Cancel from any process is
too late and refunds nothing (a state in the database, not in one process's memory); and places
in line told by several submitting processes follow the order jobs are claimed in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot import store
from bot.db.postgres import PgConnection
from bot.jobs import CancelledBeforeDelivery, Job, LeasedQueue, make_queue, shown_position
from bot.quota import Quota
from tests import pg
from tests.test_jobs import PLENTY, eventually, ledger, make_settings, new, rows

backend, db_target, pg_server, db = pg.backend, pg.db_target, pg.pg_server, pg.db


class Runner:
    """A job runner in the bot's shape: make the picture, begin delivery, post it."""

    def __init__(self) -> None:
        self.made = asyncio.Event()  # set by the test: the relay answered
        self.posting: set[int] = set()  # began delivery, upload under way
        self.posted: list[int] = []
        self.upload_done = asyncio.Event()
        self.queue: Any = None

    async def __call__(self, job: Job) -> None:
        await self.made.wait()
        await self.queue.begin_delivery(job)
        self.posting.add(job.id)
        await self.upload_done.wait()
        self.posted.append(job.id)


async def open_queue(db: Any, data_dir: Path, runner: Any, *, worker_id: str = "w", **over: Any) -> Any:
    extra = {"worker_id": worker_id} if isinstance(db, PgConnection) else {}  # one process on SQLite
    queue = make_queue(db, Quota(db), make_settings(data_dir, **over), runner, **extra)
    if isinstance(queue, LeasedQueue):
        queue.lease_s, queue.heartbeat_s, queue.poll_s = 2.0, 0.3, 0.05
    runner.queue = queue
    return queue


async def test_cancel_while_the_picture_is_being_posted_is_too_late_and_charges(db: aiosqlite.Connection, data_dir: Path) -> None:
    runner = Runner()
    queue = await open_queue(db, data_dir, runner)
    await queue.start()
    job = await queue.submit(new(1), credits=1, rules=PLENTY)
    runner.made.set()
    await eventually(lambda: job.id in runner.posting, "the upload began")
    assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "delivering"}  # every process can see it
    assert await queue.cancel(job.id, by_user=1) == "delivering"
    assert await ledger(db) == {job.id: "reserved"}  # nothing refunded
    runner.upload_done.set()
    await queue.join()
    assert runner.posted == [job.id]
    assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "done"}
    assert await ledger(db) == {job.id: "committed"}
    assert await queue.cancel(job.id, by_user=1) == "too_late"
    await queue.stop()


async def test_a_job_that_stopped_while_delivering_is_interrupted_and_refunded_at_restart(db: aiosqlite.Connection, data_dir: Path) -> None:
    queue, job = await uploading(db, data_dir)
    await queue.stop()  # as a crash leaves it: the row stays 'delivering'
    assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "delivering"}
    again, told = await restarted(db, data_dir)
    assert [j.id for j in await again.start()] == [job.id]
    assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "interrupted"}
    assert await ledger(db) == {job.id: "refunded"}  # maybe posted, never charged twice
    assert told == [job.id]  # the bot offers Retry
    # Cancel clicked on its old progress message: not "already finished", but what happened.
    assert await again.cancel(job.id, by_user=1) == "interrupted"
    await again.stop()


async def uploading(db: Any, data_dir: Path) -> tuple[Any, Job]:
    """Worker w1 started, one job made and its upload under way."""
    runner = Runner()
    queue = await open_queue(db, data_dir, runner, worker_id="w1")
    await queue.start()
    job = await queue.submit(new(1), credits=1, rules=PLENTY)
    runner.made.set()
    await eventually(lambda: job.id in runner.posting, "the upload began")
    return queue, job


async def restarted(db: Any, data_dir: Path) -> tuple[Any, list[int]]:
    """The same worker started again, noting which jobs it tells the bot were interrupted."""
    told: list[int] = []

    async def on_interrupted(job: Job) -> None:
        told.append(job.id)

    again = await open_queue(db, data_dir, Runner(), worker_id="w1")
    again.on_interrupted = on_interrupted
    return again, told


async def test_a_job_stopped_after_its_picture_was_posted_is_done_and_charged_at_restart(db: aiosqlite.Connection, data_dir: Path) -> None:
    queue, job = await uploading(db, data_dir)
    await queue.update(job.id, result_message_id=4242)  # the post returned and its id was saved...
    await queue.stop()  # ...then the process died before recording the end
    again, told = await restarted(db, data_dir)
    await again.start()
    assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "done"}
    assert await ledger(db) == {job.id: "committed"}  # the member has the picture: charged once
    assert told == []  # no Retry under a picture that was delivered
    await again.stop()


# --- across processes (PostgreSQL) ----------------------------------------------------------


@pytest.fixture
async def url(pg_server: pg.PgServer) -> str:
    return await pg_server.fresh_database()


@pytest.fixture
async def pools(url: str):
    opened: list[Any] = []

    async def connect() -> Any:
        conn = await store.connect(url)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()


async def test_cancel_from_another_process_during_the_upload_answers_at_once_and_refunds_nothing(pools: Any, data_dir: Path) -> None:
    runner = Runner()
    worker = await open_queue(await pools(), data_dir, runner, worker_id="worker")
    gateway = await open_queue(await pools(), data_dir, Runner(), worker_id="gateway", role="gateway")
    await worker.start()
    await gateway.start()
    job = await gateway.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: job.id in worker._running, "the worker claims it")
    runner.made.set()
    await eventually(lambda: job.id in runner.posting, "the upload began")
    started = time.monotonic()
    assert await gateway.cancel(job.id, by_user=1) == "delivering"
    assert time.monotonic() - started < 1.0  # no wait for the worker: the database says it
    await asyncio.sleep(0.3)  # several of the worker's polls: it must not cancel the upload
    assert job.id in runner.posting and worker.running_count == 1
    runner.upload_done.set()
    await gateway.join()
    assert runner.posted == [job.id]
    assert await ledger(worker.db) == {job.id: "committed"}
    await gateway.stop()
    await worker.stop()


async def test_a_cancel_asked_before_the_upload_stops_it(pools: Any, data_dir: Path) -> None:
    runner = Runner()
    worker = await open_queue(await pools(), data_dir, runner, worker_id="worker")
    gateway = await open_queue(await pools(), data_dir, Runner(), worker_id="gateway", role="gateway")
    await worker.start()
    job = await gateway.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: job.id in worker._running, "the worker claims it")
    # The Cancel's write lands, and the worker's runner reaches delivery before its next poll.
    worker.poll_s = 60.0
    await asyncio.sleep(0.1)
    await gateway.db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job.id,))
    runner.made.set()
    await eventually(lambda: worker.running_count == 0, "the job ends")
    assert runner.posting == set() and runner.posted == []  # nothing was posted
    assert dict(await rows(worker.db, "SELECT id, status FROM jobs")) == {job.id: "cancelled"}
    assert await ledger(worker.db) == {job.id: "refunded"}
    await worker.stop()
    await gateway.stop()


def test_the_cancel_before_delivery_unwinds_like_a_cancellation() -> None:
    # The runner's `except Exception` handlers (the failure message) must not catch it.
    assert issubclass(CancelledBeforeDelivery, asyncio.CancelledError) and not issubclass(CancelledBeforeDelivery, Exception)


async def test_places_told_by_two_submitting_processes_follow_the_claim_order(pools: Any, data_dir: Path) -> None:
    told: dict[int, int] = {}  # job id -> the last place its member was told (by either process)

    async def tell(job: Job, place: int) -> None:
        told[job.id] = place

    gateways = []
    for name in ("gw1", "gw2"):
        gw = await open_queue(await pools(), data_dir, Runner(), worker_id=name, role="gateway")
        gw.on_position = tell
        await gw.start()
        gateways.append(gw)
    # Five members of one server; bursts of different sizes, each member through either process.
    plan = [1, 1, 1, 2, 3, 3, 4, 2, 5, 5, 1, 4]
    jobs = [await gateways[i % 2].submit(new(user), credits=1, rules=PLENTY) for i, user in enumerate(plan)]
    everyone = {j.id for j in jobs}

    claimed: list[int] = []
    release: dict[int, asyncio.Event] = {j.id: asyncio.Event() for j in jobs}

    async def run(job: Job) -> None:
        claimed.append(job.id)
        await release[job.id].wait()

    # One slot (make_settings: one job at a time), so each claim is the next in line.
    worker = await open_queue(await pools(), data_dir, run, worker_id="worker")

    def places(waiting: set[int]) -> bool:
        """Every waiting job told its own place (exact up to 10, then "within the first 20")."""
        return set(told) >= waiting and sorted(told[j] for j in waiting) == [shown_position(n) for n in range(1, len(waiting) + 1)]

    await eventually(lambda: places(everyone), "both processes told every member a distinct place")
    first = dict(told)
    await worker.start()
    for step in range(1, len(jobs) + 1):
        await eventually(lambda n=step: len(claimed) == n, f"claim {step}")
        waiting = everyone - set(claimed)
        nxt = None
        if waiting:  # while the claimed job runs, both processes update the places left
            await eventually(lambda w=waiting: places(w), f"the places after claim {step}")
            nxt = min(waiting, key=lambda j: told[j])  # the job told "1st"
        release[claimed[-1]].set()
        if nxt is not None:
            await eventually(lambda n=step: len(claimed) == n + 1, f"claim {step + 1}")
            assert claimed[-1] == nxt, f"job {nxt} was told it is next, job {claimed[-1]} was claimed"
    # The places told before anything ran were the claim order (exact ones; the last two "≤ 20").
    assert [first[j] for j in claimed] == [*range(1, 11), 20, 20]
    await worker.stop()
    for gw in gateways:
        await gw.stop()
