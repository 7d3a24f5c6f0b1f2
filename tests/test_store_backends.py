"""The store interface, the same on SQLite and PostgreSQL: what the services rely on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from bot import store
from bot.guild_config import GuildConfigStore, GuildSettings
from tests import pg

# The fixtures that run each test on SQLite and on a throw-away PostgreSQL server.
backend, db_target, pg_server, db, open_db = pg.backend, pg.db_target, pg.pg_server, pg.db, pg.open_db

JOB = "INSERT INTO jobs (guild_id, user_id, request, model, created_at) VALUES (?, ?, '{}', 'm', ?)"


async def test_lastrowid_rowcount_and_null_safe_comparison(db: store.Connection) -> None:
    async with store.transaction(db) as tx:
        first = (await tx.execute(JOB, (None, 5, 1.5))).lastrowid
        second = (await tx.execute(JOB, (7, 5, 2.5))).lastrowid
    assert (first, second) == (1, 2)
    # "IS ?" matches NULL with NULL (a DM job has no server) and a number with itself.
    assert [r[0] for r in await db.execute_fetchall("SELECT id FROM jobs WHERE guild_id IS ?", (None,))] == [1]
    assert [r[0] for r in await db.execute_fetchall("SELECT id FROM jobs WHERE guild_id IS ?", (7,))] == [2]
    async with store.transaction(db) as tx:
        assert (await tx.execute("UPDATE jobs SET status = 'done' WHERE user_id = ?", (5,))).rowcount == 2
        assert (await tx.execute("DELETE FROM jobs WHERE id = ?", (99,))).rowcount == 0
    async with db.execute("SELECT id, status, created_at FROM jobs ORDER BY created_at DESC") as cur:
        row = await cur.fetchone()
    assert row is not None and (row["id"], row["status"], row["created_at"]) == (2, "done", 2.5)


async def test_snowflakes_and_timestamps_keep_their_precision(db: store.Connection) -> None:
    snowflake = 1_234_567_890_123_456_789  # above 2**53 and 2**31: BIGINT, not REAL or INTEGER
    now = 1_790_000_000.123456  # microseconds apart must still order
    await store.write(db, JOB, (snowflake, snowflake, now))
    await store.write(db, JOB, (snowflake, snowflake, now + 1e-6))
    rows = await db.execute_fetchall("SELECT guild_id, created_at FROM jobs ORDER BY created_at")
    assert [tuple(r) for r in rows] == [(snowflake, now), (snowflake, now + 1e-6)]


async def test_a_failed_transaction_leaves_nothing_and_integrity_errors_are_one_type(db: store.Connection) -> None:
    await store.write(db, JOB, (1, 1, 1.0))
    with pytest.raises(store.IntegrityError):
        async with store.transaction(db) as tx:
            await tx.execute(JOB, (1, 2, 2.0))
            # quota_ledger.job_id is unique: the second reservation for job 1 is refused.
            for _ in range(2):
                await tx.execute(
                    "INSERT INTO quota_ledger (job_id, guild_id, user_id, credits, state, created_at, updated_at)"
                    " VALUES (1, 1, 1, 1, 'reserved', 0, 0)"
                )
    assert [r[0] for r in await db.execute_fetchall("SELECT id FROM jobs")] == [1]  # the whole transaction went
    assert await db.execute_fetchall("SELECT * FROM quota_ledger") == []


async def test_write_transactions_run_one_at_a_time_across_connections(db_target: str | Path, db: store.Connection) -> None:
    """Read-then-write inside a transaction (how a quota reservation checks its sum) is never
    interleaved with another connection's: 40 increments from 4 connections land as 40."""
    others = [await store.connect(db_target) for _ in range(3)]
    await store.write(db, JOB, (1, 1, 0.0))
    try:

        async def bump(conn: store.Connection) -> None:
            async with store.transaction(conn) as tx:
                (row,) = await tx.execute_fetchall("SELECT cost FROM jobs WHERE id = 1")
                await asyncio.sleep(0.001)
                await tx.execute("UPDATE jobs SET cost = ? WHERE id = 1", (row[0] + 1,))

        await asyncio.gather(*(bump(conn) for conn in [db, *others] for _ in range(10)))
    finally:
        for conn in others:
            await conn.close()
    assert (await db.execute_fetchall("SELECT cost FROM jobs"))[0][0] == 40


async def test_migrations_run_once_and_a_newer_database_is_refused(db_target: str | Path, db: store.Connection) -> None:
    again = await store.connect(db_target)  # a second start: nothing left to apply
    await again.close()
    versions = [r[0] for r in await db.execute_fetchall("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _, _ in store.discover()]
    await store.write(db, "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (9999, "from_the_future"))
    with pytest.raises(store.MigrationError, match="newer release"):
        await store.connect(db_target)


def test_both_backends_have_the_same_migrations() -> None:
    """A migration added for SQLite needs its PostgreSQL twin (same number and name)."""
    sqlite = [(v, name) for v, name, _ in store.discover()]
    postgres = [(v, name) for v, name, _ in store.discover(store.migrations_dir() / "postgres")]
    assert sqlite == postgres


async def test_another_process_sees_an_admins_change_within_max_age(open_db: Callable[[], object]) -> None:
    """The gateway that took the admin's command saves; a worker on the same database (SQLite
    file or PostgreSQL) reads its cached copy until it is ``max_age`` old, then the new one."""
    now = [1000.0]
    gateway = GuildConfigStore(await open_db())  # type: ignore[arg-type]
    worker = GuildConfigStore(await open_db(), max_age=10.0, clock=lambda: now[0])  # type: ignore[arg-type]
    await gateway.save(42, GuildSettings(default_model="gemini-3-pro-image-preview"))
    assert (await worker.get(42)).default_model == "gemini-3-pro-image-preview"
    await gateway.save(42, GuildSettings(default_model="gemini-2.5-flash-image"))
    now[0] += 9.0
    assert (await worker.get(42)).default_model == "gemini-3-pro-image-preview"  # cached, still young
    now[0] += 1.5
    assert (await worker.get(42)).default_model == "gemini-2.5-flash-image"
    assert (await gateway.get(42)).default_model == "gemini-2.5-flash-image"  # its own write


async def test_a_task_cancelled_while_begin_waits_for_the_write_lock_leaves_the_connection_usable(tmp_path: Path) -> None:
    """Cancel (a member's Cancel button, a shutdown) can land while BEGIN IMMEDIATE waits for
    SQLite's write lock; the BEGIN still runs later on aiosqlite's thread. The connection must
    not stay inside that transaction, or every later write fails."""
    import sqlite3

    path = tmp_path / "bot.sqlite3"
    db = await store.connect(path)
    try:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        async def write() -> None:
            async with store.transaction(db) as tx:
                await tx.execute(JOB, (1, 2, 0.0))

        task = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # waiting in BEGIN (busy_timeout)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other.execute("ROLLBACK")
        other.close()
        async with store.transaction(db) as tx:  # "cannot start a transaction within a transaction" before the fix
            await tx.execute(JOB, (1, 3, 0.0))
        assert [tuple(r) for r in await db.execute_fetchall("SELECT user_id FROM jobs")] == [(3,)]
    finally:
        await db.close()
