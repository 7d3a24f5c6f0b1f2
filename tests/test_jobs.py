from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot import store
from bot.guild_config import GuildConfigStore, GuildSettings
from bot.jobs import Job, JobQueue, NewJob, QueueClosed, make_queue
from bot.quota import Quota, QuotaExceeded, QuotaRules
from bot.relay.types import NoImage, RelayFailed
from bot.settings import Settings
from tests import pg

# The fixtures that run each database test on SQLite and on a throw-away PostgreSQL server.
backend, db_target, pg_server, db = pg.backend, pg.db_target, pg.pg_server, pg.db

REPO = Path(__file__).resolve().parent.parent
FLASH = "gemini-3.1-flash-image-preview"
PLENTY = QuotaRules(user_daily=1000)


def make_settings(data_dir: Path, **over: Any) -> Settings:
    base: dict[str, Any] = dict(
        discord_token="", data_dir=data_dir, relay=None, max_concurrent_jobs=1, max_jobs_per_guild=1, max_jobs_per_user=1
    )
    base.update(over)
    return Settings(**base)


def new(user: int, guild: int | None = 1, **request: Any) -> NewJob:
    return NewJob(user_id=user, guild_id=guild, channel_id=10, request=request, model=FLASH, size="1K")


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Wait (not time) until ``check`` holds; ``limit`` only stops a hung test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


async def rows(db: aiosqlite.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.execute(sql, params) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def ledger(db: aiosqlite.Connection) -> dict[int, str]:
    return {job: state for job, state in await rows(db, "SELECT job_id, state FROM quota_ledger")}


@pytest.fixture
async def sqlite_db(data_dir: Path):
    """For the tests that lock the SQLite file itself."""
    conn = await store.connect(data_dir / "bot.sqlite3")
    yield conn
    await conn.close()


# --- outcomes ----------------------------------------------------------------------------


async def test_delivery_commits_failures_refund_and_are_recorded(db: aiosqlite.Connection, data_dir: Path) -> None:
    async def runner(job: Job) -> None:
        what = job.request["do"]
        if what == "ok":
            job.relay_name, job.latency_ms = "main", 1234
        elif what == "503":
            exc = RelayFailed("HTTP 503: busy", status=503, retryable=True)
            exc.relay_name = "backup"  # type: ignore[attr-defined]
            raise exc
        elif what == "blocked":
            raise NoImage("blocked by safety filters", reason="safety", model_text="I can't draw that")
        elif what == "bug":
            raise KeyError("oops")

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    await queue.start()
    jobs = [await queue.submit(new(1, do=d), credits=1, rules=PLENTY) for d in ("ok", "503", "blocked", "bug")]
    await queue.join()
    await queue.stop()
    found = {r[0]: r[1:] for r in await rows(db, "SELECT id, status, error_code, relay_name, latency_ms FROM jobs")}
    assert found[jobs[0].id] == ("done", None, "main", 1234)
    assert found[jobs[1].id] == ("failed", "http_503", "backup", None)
    assert found[jobs[2].id] == ("failed", "no_image:safety", None, None)
    assert found[jobs[3].id] == ("failed", "internal", None, None)
    states = await ledger(db)
    assert [states[j.id] for j in jobs] == ["committed", "refunded", "refunded", "refunded"]


async def test_over_limit_request_leaves_nothing_behind(db: aiosqlite.Connection, data_dir: Path) -> None:
    ran: list[int] = []

    async def runner(job: Job) -> None:
        ran.append(job.id)

    config = GuildConfigStore(db)
    await config.save(1, GuildSettings(quota=QuotaRules(user_daily=1)))
    queue = make_queue(db, Quota(db), make_settings(data_dir), runner, config=config)
    await queue.start()
    guild = await config.get(1)
    ok = await queue.submit(new(1), credits=guild.cost(FLASH, "1K"), rules=guild.quota)
    assert ok.cost == 1  # 1K Flash from the server's (default) cost table
    with pytest.raises(QuotaExceeded):
        await queue.submit(new(1), credits=guild.cost(FLASH, "1K"), rules=guild.quota)
    await queue.join()
    await queue.stop()
    assert ran == [ok.id]
    assert await rows(db, "SELECT id FROM jobs") == [(ok.id,)]
    with pytest.raises(QueueClosed):
        await queue.submit(new(2), credits=1, rules=PLENTY)


# --- fairness and positions ----------------------------------------------------------------


async def test_round_robin_by_member_and_positions_kept_current(db: aiosqlite.Connection, data_dir: Path) -> None:
    gate = asyncio.Event()
    order: list[tuple[int, int]] = []
    reported: dict[int, int] = {}
    history: list[tuple[int, int]] = []

    async def runner(job: Job) -> None:
        order.append((job.user_id, job.request["n"]))
        if job.request["n"] == 1:
            await gate.wait()

    async def on_position(job: Job, position: int) -> None:
        reported[job.id] = position
        history.append((job.id, position))

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner, on_position=on_position)
    await queue.start()
    a = [await queue.submit(new(100, n=n), credits=1, rules=PLENTY) for n in (1, 2, 3, 4)]  # a burst of four
    b = await queue.submit(new(200, n=1), credits=1, rules=PLENTY)
    c = await queue.submit(new(300, n=1), credits=1, rules=PLENTY)
    await eventually(lambda: len(order) == 1, "the first job starts")

    # A's first job runs; B and C have not been served yet, so they go before A's second.
    expected = {b.id: 1, c.id: 2, a[1].id: 3, a[2].id: 4, a[3].id: 5}
    assert queue.positions() == expected
    assert queue.position(a[0].id) is None  # running, not in line
    await eventually(
        lambda: reported == {**reported, **expected} and all(reported[j] == p for j, p in expected.items()), "positions reported"
    )

    gate.set()
    await queue.join()
    assert order == [(100, 1), (200, 1), (300, 1), (100, 2), (100, 3), (100, 4)]
    # A's last job was told 3, then pushed back as B and C arrived (they had not been served),
    # then moved up as the line moved, until it was next.
    told = [p for j, p in history if j == a[3].id]
    assert told[0] == 3 and max(told) == 5 and told[-1] == 1
    after_peak = told[told.index(5) :]
    assert after_peak == sorted(after_peak, reverse=True)  # never pushed back again
    await queue.stop()


async def test_a_member_resubmitting_at_once_does_not_jump_the_line(db: aiosqlite.Connection, data_dir: Path) -> None:
    order: list[int] = []
    queue: JobQueue

    async def runner(job: Job) -> None:
        order.append(job.user_id)
        # B asks again the moment each of its pictures is done.
        if job.user_id == 2 and order.count(2) < 3:
            await queue.submit(new(2), credits=1, rules=PLENTY)

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    for _ in range(3):
        await queue.submit(new(1), credits=1, rules=PLENTY)
    await queue.submit(new(2), credits=1, rules=PLENTY)
    await queue.start()
    await queue.join()
    await queue.stop()
    assert order == [1, 2, 1, 2, 1, 2]


async def test_concurrency_caps_global_per_server_per_member(db: aiosqlite.Connection, data_dir: Path) -> None:
    running: list[Job] = []
    peak = {"all": 0}
    peak_guild: dict[int, int] = {}
    peak_user: dict[int, int] = {}
    release = asyncio.Event()

    async def runner(job: Job) -> None:
        running.append(job)
        peak["all"] = max(peak["all"], len(running))
        for g in {j.guild_id for j in running}:
            peak_guild[g] = max(peak_guild.get(g, 0), sum(1 for j in running if j.guild_id == g))
        for u in {j.user_id for j in running}:
            peak_user[u] = max(peak_user.get(u, 0), sum(1 for j in running if j.user_id == u))
        await release.wait()
        running.remove(job)

    config = GuildConfigStore(db)
    await config.save(3, GuildSettings().with_limits(max_jobs=1, max_jobs_per_user=None))  # server 3 lowers its cap
    await config.save(4, GuildSettings().with_limits(max_jobs=9, max_jobs_per_user=9))  # ...and 4 cannot raise it
    settings = make_settings(data_dir, max_concurrent_jobs=5, max_jobs_per_guild=2, max_jobs_per_user=1)
    queue = make_queue(db, Quota(db), settings, runner, config=config)
    for user, guild in [(1, 1), (1, 1), (2, 1), (3, 1), (4, 3), (5, 3), (6, 4), (7, 4), (8, 4), (9, 2), (9, 2)]:
        await queue.submit(new(user, guild), credits=1, rules=PLENTY)
    await queue.start()
    await eventually(lambda: len(running) == 5, "five jobs running")
    # Every waiting server gets a slot before any gets a second (server 2, which asked last,
    # included); the fifth goes to the first server in the rotation. Server 3 never gets two.
    assert sorted(j.guild_id for j in running) == [1, 1, 2, 3, 4]
    release.set()
    await queue.join()
    await queue.stop()
    assert peak["all"] == 5
    # Server 3 lowered its cap to 1; nobody exceeds the operator's 2 (server 4 cannot raise it).
    assert peak_guild[3] == 1 and peak_guild[1] == 2 and max(peak_guild.values()) == 2
    assert max(peak_user.values()) == 1


async def test_a_server_alone_uses_its_cap_and_cannot_raise_it(db: aiosqlite.Connection, data_dir: Path) -> None:
    running: list[Job] = []
    release = asyncio.Event()

    async def runner(job: Job) -> None:
        running.append(job)
        await release.wait()

    config = GuildConfigStore(db)
    await config.save(4, GuildSettings().with_limits(max_jobs=9, max_jobs_per_user=9))
    queue = make_queue(
        db, Quota(db), make_settings(data_dir, max_concurrent_jobs=5, max_jobs_per_guild=2, max_jobs_per_user=1), runner, config=config
    )
    for user in (6, 7, 8):
        await queue.submit(new(user, 4), credits=1, rules=PLENTY)
    await queue.start()
    await eventually(lambda: len(running) == 2, "two jobs running")
    await asyncio.sleep(0.1)
    assert len(running) == 2  # free slots stay free: the operator's per-server cap is 2
    release.set()
    await queue.join()
    await queue.stop()


async def test_no_server_gets_a_second_slot_while_another_servers_job_waits(db: aiosqlite.Connection, data_dir: Path) -> None:
    """NB_MAX_JOBS=4, server A's members asked first and in numbers: every later server still
    gets a slot before A gets a second, and the first freed slot goes to the server with none."""
    running: list[Job] = []
    gates: dict[int, asyncio.Event] = {}

    async def runner(job: Job) -> None:
        running.append(job)
        gates[job.id] = asyncio.Event()
        await gates[job.id].wait()
        running.remove(job)

    settings = make_settings(data_dir, max_concurrent_jobs=4, max_jobs_per_guild=4, max_jobs_per_user=1)
    queue = make_queue(db, Quota(db), settings, runner)
    a_jobs = [await queue.submit(new(user, 1), credits=1, rules=PLENTY) for user in range(10, 16)]  # six members of A
    await queue.submit(new(20, 2), credits=1, rules=PLENTY)
    await queue.submit(new(30, 3), credits=1, rules=PLENTY)
    await queue.start()
    await eventually(lambda: len(running) == 4, "four running")
    assert sorted(j.guild_id for j in running) == [1, 1, 2, 3]
    # Positions follow the rule too: A's waiting members are next, in their order.
    assert [queue.position(j.id) for j in a_jobs[2:]] == [1, 2, 3, 4]
    d = await queue.submit(new(40, 4), credits=1, rules=PLENTY)
    assert queue.position(d.id) == 1  # server 4 holds nothing: it goes before A's third
    first_a = next(j for j in running if j.guild_id == 1)
    gates[first_a.id].set()
    await eventually(lambda: any(j.guild_id == 4 for j in running), "server 4 started")
    assert sorted(j.guild_id for j in running) == [1, 2, 3, 4]
    for gate in gates.values():
        gate.set()
    while queue.positions() or queue.running_count:
        for gate in list(gates.values()):
            gate.set()
        await asyncio.sleep(0.01)
    await queue.stop()


# --- cancelling -----------------------------------------------------------------------------


async def test_cancel_queued_and_running_jobs_refunds(db: aiosqlite.Connection, data_dir: Path) -> None:
    started: list[int] = []
    cancelled_inside: list[int] = []

    async def runner(job: Job) -> None:
        started.append(job.id)
        try:
            await asyncio.Event().wait()  # a relay that takes forever
        except asyncio.CancelledError:
            cancelled_inside.append(job.id)
            raise

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    await queue.start()
    running = await queue.submit(new(1), credits=1, rules=PLENTY)
    queued = await queue.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: started == [running.id], "first job running")

    assert await queue.cancel(queued.id, by_user=2) == "not_owner"
    assert await queue.cancel(queued.id, by_user=1) == "cancelled"
    assert await queue.cancel(running.id, by_user=2) == "not_owner"
    assert await queue.cancel(running.id, by_user=1) == "cancelled"
    assert cancelled_inside == [running.id]  # the relay call itself was stopped
    await queue.join()
    assert started == [running.id]  # the cancelled queued job never ran
    assert await queue.cancel(running.id, by_user=1) == "too_late"
    assert await queue.cancel(999, by_user=1) == "not_found"

    status = dict(await rows(db, "SELECT id, status FROM jobs"))
    assert status == {running.id: "cancelled", queued.id: "cancelled"}
    assert await ledger(db) == {running.id: "refunded", queued.id: "refunded"}
    await queue.stop()


async def test_cancel_in_the_instant_a_job_is_dispatched_still_refunds_and_frees_the_slot(db: aiosqlite.Connection, data_dir: Path) -> None:
    """A click can land after dispatch created the job's task but before that task first ran:
    its handlers never run then, so cancel() itself must settle the job."""
    ran: list[int] = []

    async def runner(job: Job) -> None:
        ran.append(job.id)

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    job = await queue.submit(new(1), credits=1, rules=PLENTY)  # not started: nothing dispatches by itself
    await queue._dispatch()  # the task exists now, and has not run a single step
    assert await queue.cancel(job.id, by_user=1) == "cancelled"
    assert ran == [] and queue.running_count == 0
    assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "cancelled"}
    assert await ledger(db) == {job.id: "refunded"}
    await queue.stop()


async def test_a_moderator_may_cancel_anyones_job(db: aiosqlite.Connection, data_dir: Path) -> None:
    async def runner(job: Job) -> None:
        await asyncio.Event().wait()

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    await queue.start()
    job = await queue.submit(new(1), credits=1, rules=PLENTY)
    assert await queue.cancel(job.id, by_user=None) == "cancelled"
    await queue.stop()


# --- restarts --------------------------------------------------------------------------------

CRASHING_BOT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from bot import store
    from bot.jobs import NewJob, make_queue
    from bot.quota import Quota, QuotaRules
    from bot.settings import Settings

    async def main(path):
        db = await store.connect(path)
        settings = Settings(discord_token="", data_dir=Path(path).parent, relay=None,
                            max_concurrent_jobs=2, max_jobs_per_guild=2, max_jobs_per_user=1)
        started = []

        async def runner(job):
            started.append(job.id)
            await asyncio.Event().wait()  # mid-job when the process dies

        queue = make_queue(db, Quota(db), settings, runner)
        await queue.start()
        for n in range(6):
            await queue.submit(
                NewJob(user_id=n % 3 + 1, guild_id=1, channel_id=10, request={"n": n},
                       model="gemini-3.1-flash-image-preview", size="2K"),
                credits=2, rules=QuotaRules(user_daily=100),
            )
        while len(started) < 2:
            await asyncio.sleep(0.01)
        print("READY", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_restart_after_a_crash_resumes_queued_and_refunds_interrupted(data_dir: Path) -> None:
    path = data_dir / "bot.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_BOT, str(path), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
        assert line.strip() == b"READY", (line, await proc.stderr.read())  # type: ignore[union-attr]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no goodbye: a crash
        await proc.wait()

    db = await store.connect(path)
    try:
        before = dict(await rows(db, "SELECT id, status FROM jobs"))
        assert sorted(before.values()) == ["queued"] * 4 + ["running"] * 2
        assert set((await ledger(db)).values()) == {"reserved"}
        was_running = sorted(j for j, s in before.items() if s == "running")
        was_queued = sorted(j for j, s in before.items() if s == "queued")

        ran: list[int] = []
        told: list[int] = []

        async def runner(job: Job) -> None:
            ran.append(job.id)

        async def on_interrupted(job: Job) -> None:
            told.append(job.id)
            assert job.status == "interrupted"

        queue = make_queue(
            db, Quota(db), make_settings(data_dir, max_concurrent_jobs=2, max_jobs_per_guild=2), runner, on_interrupted=on_interrupted
        )
        interrupted = await queue.start()
        assert sorted(j.id for j in interrupted) == was_running
        assert sorted(told) == was_running  # the bot can now offer Retry on their messages
        await queue.join()

        assert sorted(ran) == was_queued  # every queued job completed, none ran twice
        after = dict(await rows(db, "SELECT id, status FROM jobs"))
        assert after == {**{j: "interrupted" for j in was_running}, **{j: "done" for j in was_queued}}  # nothing lost
        states = await ledger(db)
        assert {j: states[j] for j in was_running} == {j: "refunded" for j in was_running}
        assert {j: states[j] for j in was_queued} == {j: "committed" for j in was_queued}

        # Retry makes a new job with the same request, which runs and is charged.
        old = await queue.get(was_running[0])
        retry = NewJob(
            user_id=old.user_id,
            guild_id=old.guild_id,
            channel_id=old.channel_id,
            request=old.request,
            model=old.model,
            size=old.size,
            kind="retry",
            locale=old.locale,
        )
        retried = await queue.submit(retry, credits=old.cost, rules=PLENTY)
        await queue.join()
        assert retried.kind == "retry" and retried.request == old.request
        assert (await queue.get(retried.id)).status == "done"
        assert (await ledger(db))[retried.id] == "committed"
        await queue.stop()
    finally:
        await db.close()


async def test_clean_stop_takes_the_same_recovery_path(data_dir: Path) -> None:
    path = data_dir / "bot.sqlite3"
    db = await store.connect(path)

    async def hang(job: Job) -> None:
        await asyncio.Event().wait()

    queue = make_queue(db, Quota(db), make_settings(data_dir), hang)
    await queue.start()
    job = await queue.submit(new(1), credits=1, rules=PLENTY)
    await eventually(lambda: queue.running_count == 1, "job running")
    await queue.stop(grace=0)
    await db.close()

    db = await store.connect(path)
    try:

        async def done(job: Job) -> None:
            return None

        again = make_queue(db, Quota(db), make_settings(data_dir), done)
        assert [j.id for j in await again.start()] == [job.id]
        assert (await ledger(db))[job.id] == "refunded"
        await again.stop()
    finally:
        await db.close()


async def test_a_thousand_job_queue_drains_with_linear_position_updates(db: aiosqlite.Connection, data_dir: Path) -> None:
    """Every dispatch moves every waiting job up one place; telling each of them every move is
    ~N²/2 callbacks (500k for 1,000 jobs, each a possible Discord edit). Exact places up to 10,
    buckets after: each job hears about its place at most 10 + a handful of bucket times."""
    calls: list[tuple[int, int]] = []
    release = asyncio.Event()

    async def runner(job: Job) -> None:
        await release.wait()

    async def on_position(job: Job, position: int) -> None:
        calls.append((job.id, position))

    queue = make_queue(db, Quota(db), make_settings(data_dir, max_concurrent_jobs=1), runner, on_position=on_position)
    await queue.start()
    n = 1000
    for i in range(n):
        await queue.submit(new(1000 + i, 1), credits=1, rules=QuotaRules(user_daily=10))
    release.set()
    await queue.join()
    await asyncio.sleep(0.05)  # the notifier's last round
    await queue.stop()
    per_job: dict[int, list[int]] = {}
    for job_id, position in calls:
        per_job.setdefault(job_id, []).append(position)
    print(f"position callbacks for a {n}-job queue: {len(calls)}")
    assert len(calls) <= n * (10 + 6), len(calls)
    # Shown places only ever go down, exact at the front, bucket bounds further back.
    last = per_job[max(per_job)]
    assert last == sorted(last, reverse=True) and last[-1] == 1
    assert set(last) - set(range(1, 11)) <= {20, 50, 100, 200, 500, 1000}


async def test_a_final_commit_refused_by_a_locked_database_is_retried_until_it_lands(
    sqlite_db: aiosqlite.Connection, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = sqlite_db
    """Another writer holds the database past busy_timeout exactly when the job ends: the
    job must not stay 'running' with its credits 'reserved' until a restart."""
    import sqlite3

    await db.execute("PRAGMA busy_timeout=50")
    blocker = sqlite3.connect(str(data_dir / "bot.sqlite3"), isolation_level=None, check_same_thread=False)

    async def runner(job: Job) -> None:
        blocker.execute("BEGIN EXCLUSIVE")  # a real lock; every write of the queue now fails

        async def release() -> None:
            await asyncio.sleep(0.8)
            blocker.execute("COMMIT")

        asyncio.get_running_loop().create_task(release())

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    await queue.start()
    job = await queue.submit(new(1), credits=1, rules=PLENTY)
    await queue.join()
    try:
        assert dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "done"}
        assert (await ledger(db)) == {job.id: "committed"}
        assert any("trying again" in r.getMessage() for r in caplog.records)
        # The slot is free again: the next job runs.
        nxt = await queue.submit(new(2), credits=1, rules=PLENTY)
        await queue.join()
        assert (await queue.get(nxt.id)).status == "done"
    finally:
        await queue.stop()
        blocker.close()


def test_far_places_in_line_are_shown_as_buckets_in_both_languages() -> None:
    from bot.jobs import shown_position
    from cogs.render import progress_text

    assert [shown_position(p) for p in (1, 10, 11, 20, 21, 999, 1001, 12_345)] == [1, 10, 20, 20, 50, 1000, 10_000, 100_000]
    assert "position 7" in progress_text("queued", "en", position=7)
    assert "within the first 50" in progress_text("queued", "en", position=37)
    assert "前 50 位以内" in progress_text("queued", "zh-CN", position=37)


async def test_a_chained_job_waits_for_the_job_it_follows_even_with_free_slots(db: aiosqlite.Connection, data_dir: Path) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def runner(job: Job) -> None:
        order.append(f"start {job.request['name']}")
        if job.request["name"] == "first":
            await gate.wait()
        order.append(f"end {job.request['name']}")

    queue = make_queue(db, Quota(db), make_settings(data_dir, max_concurrent_jobs=4, max_jobs_per_guild=4, max_jobs_per_user=4), runner)
    await queue.start()
    first = await queue.submit(new(1, name="first"), credits=1, rules=PLENTY)
    await queue.submit(new(2, name="second", after_job_id=first.id), credits=1, rules=PLENTY)
    await queue.submit(new(3, name="other"), credits=1, rules=PLENTY)
    await eventually(lambda: "end other" in order, "an unrelated job runs meanwhile")
    assert "start second" not in order  # held back, though slots are free
    gate.set()
    await queue.join()
    await queue.stop()
    assert order.index("start second") > order.index("end first")


async def test_a_final_commit_refused_for_long_gives_the_slot_back_and_lands_later(
    sqlite_db: aiosqlite.Connection, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = sqlite_db
    import sqlite3

    import bot.jobs.records as jobs_module

    monkeypatch.setattr(jobs_module, "SETTLE_RETRY_DELAYS", (0.05, 0.05))
    monkeypatch.setattr(jobs_module, "SETTLE_BACKGROUND_S", 0.3)
    await db.execute("PRAGMA busy_timeout=20")
    blocker = sqlite3.connect(str(data_dir / "bot.sqlite3"), isolation_level=None, check_same_thread=False)

    async def runner(job: Job) -> None:
        blocker.execute("BEGIN EXCLUSIVE")

    queue = make_queue(db, Quota(db), make_settings(data_dir), runner)
    await queue.start()
    try:
        job = await queue.submit(new(1), credits=1, rules=PLENTY)
        await eventually(lambda: queue.running_count == 0 and not queue.positions(), "slot given back")
        blocker.execute("COMMIT")  # the database takes writes again

        async def recorded() -> bool:
            return dict(await rows(db, "SELECT id, status FROM jobs")) == {job.id: "done"}

        await eventually(recorded, "the end recorded in the background", limit=5)
        assert (await ledger(db)) == {job.id: "committed"}
    finally:
        await queue.stop()
        blocker.close()
