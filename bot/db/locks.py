"""Advisory locks on PostgreSQL for what several processes must do one at a time or once.

- :func:`hold_for`: wait for a lock, then keep it a fixed time (a gateway's IDENTIFY: Discord
  lets ``max_concurrency`` shards identify per 5 s, so each bucket ``shard_id % max_concurrency``
  is one lock held 5 s after its identify, whichever process the shard runs in).
- :func:`only_one`: run a duty only if no other process is running it now (command sync,
  pruning, balance checks): the others skip it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .postgres import PgConnection

if TYPE_CHECKING:
    from ..store import Connection

IDENTIFY_LOCK = 0x6E62_1000  # + bucket number
DUTY_LOCK = 0x6E62_2000  # + duty number
SYNC_DUTY, PRUNE_DUTY, BALANCE_DUTY = 1, 2, 3
_held: set[asyncio.Task[None]] = set()  # strong references to the pending releases


async def hold_for(db: PgConnection, key: int, seconds: float) -> None:
    """Return once the lock ``key`` is ours; it is released ``seconds`` later, in the background."""
    conn = await db.pool.acquire()
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
    except BaseException:
        await db.pool.release(conn)
        raise

    async def release() -> None:
        try:
            await asyncio.sleep(seconds)
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
        finally:
            await db.pool.release(conn)  # a closed session drops its locks anyway

    task = asyncio.create_task(release(), name=f"advisory-lock-{key}")
    _held.add(task)
    task.add_done_callback(_held.discard)


@asynccontextmanager
async def only_one(db: PgConnection, duty: int) -> AsyncIterator[bool]:
    """``async with only_one(db, n) as mine:`` — ``mine`` is False while another process holds it."""
    async with db.pool.acquire() as conn:
        mine = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", DUTY_LOCK + duty))
        try:
            yield mine
        finally:
            if mine:
                await conn.execute("SELECT pg_advisory_unlock($1)", DUTY_LOCK + duty)


@asynccontextmanager
async def duty(db: Connection, number: int) -> AsyncIterator[bool]:
    """:func:`only_one` on PostgreSQL; on SQLite one process owns the database: always ours."""
    if not isinstance(db, PgConnection):
        yield True
        return
    async with only_one(db, number) as mine:
        yield mine
