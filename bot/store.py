"""The store: SQLite (one aiosqlite connection in WAL mode, the default) or PostgreSQL
(``NB_DATABASE_URL``, an asyncpg pool: bot/db/postgres.py), and numbered SQL migrations.

The interface the services use is aiosqlite's subset on both (:data:`Connection`):
``await db.execute(sql, params)`` or ``async with db.execute(...) as cur`` (``fetchone``,
``fetchall``, ``rowcount``, ``lastrowid``), ``db.execute_fetchall``, :func:`transaction` around
writes; :data:`IntegrityError` and :data:`DatabaseError` catch either driver's errors. SQL is
written once, SQLite-style (``?``, ``IS ?``); the PostgreSQL side translates those.

Migrations are ``migrations/NNNN_name.sql`` (SQLite) and ``migrations/postgres/NNNN_name.sql``
(the same numbers and names, in PostgreSQL's types), applied in order at start-up, each inside
one transaction together with its ``schema_migrations`` row, so a migration either lands whole
or not at all and never runs twice. On PostgreSQL a session advisory lock makes processes
starting together migrate one after the other.

The top-level ``migrations/`` folder is shipped inside the package as ``bot.migrations``
(pyproject maps it with setuptools' ``package-dir``), so an installed wheel finds its SQL
through ``importlib.resources`` whatever the working directory. A database that records a
migration this release does not have comes from a newer release: the bot refuses to open it
rather than fail at the first query that meets a changed table.
"""

from __future__ import annotations

import importlib.resources
import re
import sqlite3
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from .db.postgres import PgConnection
from .db.postgres import connect as connect_postgres
from .db.writers import URGENT, WriterLock

# What the services hold: either backend answers the same calls (see the module docstring).
Connection = aiosqlite.Connection | PgConnection
IntegrityError = (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)
# A refused statement (disk full, locked, connection lost) on either backend.
DatabaseError = (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
MIGRATE_LOCK = 0x6E62_0002  # pg_advisory_lock key held while migrating

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """A migration failed, none were found, or the database is newer than this release;
    the database is as it was before. ``str()`` is one line."""


def migrations_dir() -> Traversable:
    """The shipped migrations: the ``bot.migrations`` package data of an installed wheel or an
    editable install; in a bare source checkout (nothing installed) the top-level folder."""
    try:
        return importlib.resources.files("bot.migrations")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "migrations"


def discover(directory: Traversable | None = None) -> list[tuple[int, str, Traversable]]:
    directory = migrations_dir() if directory is None else directory
    found: list[tuple[int, str, Traversable]] = []
    entries = sorted(directory.iterdir(), key=lambda e: e.name) if directory.is_dir() else []
    for path in entries:
        if not path.name.endswith(".sql"):
            continue
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        found.append((int(match.group(1)), match.group(2), path))
    if not found:
        raise MigrationError(f"no database migrations found in {directory}; the installation is incomplete (reinstall the package)")
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {directory}")
    return found


def _statements(sql: str) -> list[str]:
    """Split a script on ``;`` at statement ends (sqlite3.complete_statement knows quoting)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _pending(known: list[tuple[int, str, Traversable]], done: set[int]) -> list[tuple[int, str, Traversable]]:
    unknown = sorted(done - {v for v, _, _ in known})
    if unknown:
        raise MigrationError(
            f"the database was migrated by a newer release (migration {', '.join(map(str, unknown))} is unknown to this one); "
            "run the newer release or restore a backup"
        )
    return [m for m in known if m[0] not in done]


async def migrate(db: aiosqlite.Connection, directory: Traversable | None = None) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    known = discover(directory)
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    await db.commit()
    async with db.execute("SELECT version FROM schema_migrations") as cur:
        done = {row[0] for row in await cur.fetchall()}
    applied: list[int] = []
    for version, name, path in _pending(known, done):
        try:
            # executescript would commit on its own; statements one by one keep them in ours.
            await db.execute("BEGIN IMMEDIATE")
            for statement in _statements(path.read_text(encoding="utf-8")):
                await db.execute(statement)
            await db.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))
            await db.commit()
        except Exception as exc:
            await db.rollback()
            raise MigrationError(f"migration {path.name} failed and was rolled back: {exc}") from exc
        applied.append(version)
    return applied


async def migrate_postgres(db: PgConnection, directory: Traversable | None = None) -> list[int]:
    """:func:`migrate` for PostgreSQL, from ``migrations/postgres/``."""
    known = discover(migrations_dir() / "postgres" if directory is None else directory)
    applied: list[int] = []
    async with db.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL DEFAULT (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))"
            )
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, path in _pending(known, done):
                try:
                    async with conn.transaction():
                        await conn.execute(path.read_text(encoding="utf-8"))  # a script: asyncpg runs it whole
                        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration postgres/{path.name} failed and was rolled back: {exc}") from exc
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)
    return applied


def is_postgres(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def connect(target: Path | str, *, migrations: Traversable | None = None) -> Connection:
    """Open and migrate the database: a ``postgresql://`` URL, else a SQLite file path."""
    if not is_postgres(target):
        return await connect_sqlite(target, migrations=migrations)
    try:
        db = await connect_postgres(str(target))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # asyncpg's messages name host, port and user, never the password.
        raise MigrationError(f"cannot open the PostgreSQL database (NB_DATABASE_URL): {exc}") from exc
    try:
        await migrate_postgres(db, migrations)
    except BaseException:
        await db.close()
        raise
    return db


async def connect_sqlite(path: Path | str, *, migrations: Traversable | None = None) -> aiosqlite.Connection:
    """Open the database (creating its folder), switch on WAL and foreign keys, migrate."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        db.row_factory = aiosqlite.Row
        try:
            await db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise MigrationError(f"cannot open the database {path}: {exc}") from exc
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA synchronous=NORMAL")
        await migrate(db, migrations)
    except BaseException:
        await db.close()
        raise
    return db


async def connect_reader(path: Path | str) -> aiosqlite.Connection | None:
    """A second, read-only connection to a database :func:`connect` opened (None for
    ``:memory:``, which another connection cannot see, and for PostgreSQL, whose pool
    already reads beside the writer).

    Its own aiosqlite thread: reads on it never queue behind the statements on the main
    connection. In WAL mode (set by :func:`connect`) it sees every committed transaction and
    neither blocks nor waits for the writer; ``mode=ro`` and ``query_only`` make sure it
    cannot write.
    """
    if str(path) == ":memory:" or is_postgres(path):
        return None
    db = await aiosqlite.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA query_only=ON")
        await db.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        await db.close()
        raise
    return db


# One lock per connection: every write on the shared connection goes through it, so a
# statement of one task can never land inside (or be committed by) another task's transaction.
_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, WriterLock] = weakref.WeakKeyDictionary()


def _writers(db: aiosqlite.Connection) -> WriterLock:
    lock = _locks.get(db)
    if lock is None:
        lock = _locks[db] = WriterLock()
    return lock


@asynccontextmanager
async def transaction(db: Connection) -> AsyncIterator[Connection]:
    """A write transaction on either backend (PostgreSQL: :meth:`PgConnection.transaction`).

    SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), one at a time per connection.

    IMMEDIATE takes SQLite's write lock at BEGIN, so read-then-write logic inside cannot be
    invalidated by another connection or process; they wait (``busy_timeout``) instead. A
    COMMIT that fails is rolled back too: a connection must never be left inside a
    transaction, or every later BEGIN on it fails.
    """
    if isinstance(db, PgConnection):
        async with db.transaction() as tx:
            yield tx
        return
    async with _writers(db).turn():
        try:
            # Inside the try: a task cancelled while BEGIN waits for SQLite's write lock has
            # still queued it, and aiosqlite's thread runs it later; only the ROLLBACK below,
            # queued after it, keeps the connection from staying inside that transaction.
            await db.execute("BEGIN IMMEDIATE")
            yield db
            await db.execute("COMMIT")
        except BaseException:
            # aiosqlite runs queued statements in order on its thread even if this await is
            # cancelled, so the rollback lands before any later BEGIN on this connection.
            try:
                await db.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass  # SQLite already rolled back (some errors do that themselves)
            raise


async def write(db: Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    """Run one write statement in its own transaction; returns its rows (``RETURNING``) fully read."""
    async with transaction(db) as tx:
        return list(await tx.execute_fetchall(sql, tuple(params)))


async def write_alone(db: Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    """:func:`write` for one statement whose effect reads nothing another writer could change
    (an upsert by key), on an acknowledgement's path: it commits by itself (autocommit), so no
    writers' lock on PostgreSQL (it waits for no claim or ledger write in any process) and one
    round trip on SQLite, where it takes the shared connection's next turn, before the
    transactions queued for it (bot/db/writers.py)."""
    if isinstance(db, PgConnection):
        return list(await db.execute_fetchall(sql, tuple(params)))
    async with _writers(db).turn(URGENT):
        return list(await db.execute_fetchall(sql, tuple(params)))
