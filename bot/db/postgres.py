"""PostgreSQL behind the same small interface the services use on SQLite (asyncpg).

The services were written against aiosqlite: ``await db.execute(sql, params)`` (or ``async with``
it) gives a cursor with ``fetchone`` / ``fetchall`` / ``rowcount`` / ``lastrowid``;
``db.execute_fetchall``; :func:`bot.store.transaction` around writes. :class:`PgConnection`
answers the same calls on an asyncpg pool, so a service's code is the same on both backends and
only its SQL has to mean the same on both. What it translates, once per statement text:

- ``?`` placeholders become ``$1, $2, …`` (outside quoted strings);
- ``IS ?`` / ``IS NOT ?`` (SQLite's null-safe comparison) become ``IS [NOT] DISTINCT FROM``;
- an ``INSERT INTO`` a table with an ``id`` identity column and no ``RETURNING`` gets
  ``RETURNING id``, which is how ``cursor.lastrowid`` is answered.

A transaction holds one pooled connection and first takes a transaction-scoped advisory lock
(:data:`WRITE_LOCK`): writers then run one at a time, as SQLite's ``BEGIN IMMEDIATE`` makes
them, so a read-then-write inside (the quota check before its reservation) cannot be
invalidated by another process. Statements outside a transaction run on any pooled connection
in autocommit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from types import TracebackType
from typing import Any

import asyncpg

# pg_advisory_xact_lock key for "one writer at a time" (any 64-bit number no other lock uses).
WRITE_LOCK = 0x6E62_0001
# Tables whose rows get an ``id`` from an identity column (see migrations/postgres/).
_IDENTITY_TABLES = frozenset({"relays", "jobs", "quota_ledger", "conversations", "turns"})
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_IS_NOT = re.compile(r"\bIS\s+NOT\s+\?", re.IGNORECASE)
_IS = re.compile(r"\bIS\s+\?", re.IGNORECASE)


@lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, bool]:
    """``(postgres_sql, returns_id)`` for one SQLite-style statement; ``returns_id`` when
    ``RETURNING id`` was added to answer ``lastrowid``."""
    sql = _IS.sub("IS NOT DISTINCT FROM ?", _IS_NOT.sub("IS DISTINCT FROM ?", sql))
    out: list[str] = []
    n = 0
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    text = "".join(out)
    insert = _INSERT.match(text)
    returns_id = bool(insert and insert.group(1).lower() in _IDENTITY_TABLES and "RETURNING" not in text.upper())
    if returns_id:
        text = text.rstrip().rstrip(";") + " RETURNING id"
    return text, returns_id


def _rowcount(status: str | None) -> int:
    """asyncpg's command tag (``UPDATE 3``, ``INSERT 0 1``) -> rows affected."""
    last = (status or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class PgCursor:
    """One statement's outcome, awaitable and an async context manager like aiosqlite's."""

    def __init__(self, owner: PgConnection, sql: str, params: Sequence[Any]) -> None:
        self._owner = owner
        self._sql = sql
        self._params = params
        self._rows: list[asyncpg.Record] = []
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def _run(self) -> PgCursor:
        text, returns_id = translate(self._sql)
        async with self._owner.acquire() as conn:
            stmt = await conn.prepare(text)
            rows = await stmt.fetch(*self._params)
            self.rowcount = _rowcount(stmt.get_statusmsg())
        if returns_id:
            self.lastrowid = int(rows[0][0]) if rows else None
        else:
            self._rows = list(rows)
        return self

    def __await__(self) -> Generator[Any, None, PgCursor]:
        return self._run().__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._run()

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def fetchall(self) -> list[asyncpg.Record]:
        return self._rows

    async def fetchone(self) -> asyncpg.Record | None:
        return self._rows[0] if self._rows else None


class PgConnection:
    """An asyncpg pool (or, inside :meth:`transaction`, the one connection holding it)."""

    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection | None = None) -> None:
        self.pool = pool
        self._conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        if self._conn is not None:
            yield self._conn
            return
        async with self.pool.acquire() as conn:
            yield conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> PgCursor:
        return PgCursor(self, sql, tuple(params))

    async def execute_fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[asyncpg.Record]:
        return await (await self.execute(sql, params)).fetchall()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConnection]:
        if self._conn is not None:  # already inside one: the same connection, one transaction
            yield self
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            yield PgConnection(self.pool, conn)

    async def close(self) -> None:
        await self.pool.close()


async def connect(url: str, *, min_size: int = 1, max_size: int = 10) -> PgConnection:
    """A pool on ``url`` (``postgresql://user:pass@host:port/db``)."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
    return PgConnection(pool)
