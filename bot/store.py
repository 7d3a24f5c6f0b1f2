"""The SQLite store: one aiosqlite connection in WAL mode, and numbered SQL migrations.

Migrations are ``migrations/NNNN_name.sql``, applied in order at start-up, each inside one
transaction together with its ``schema_migrations`` row, so a migration either lands whole
or not at all and never runs twice.

The top-level ``migrations/`` folder is shipped inside the package as ``bot.migrations``
(pyproject maps it with setuptools' ``package-dir``), so an installed wheel finds its SQL
through ``importlib.resources`` whatever the working directory. A database that records a
migration this release does not have comes from a newer release: the bot refuses to open it
rather than fail at the first query that meets a changed table.
"""

from __future__ import annotations

import asyncio
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
    unknown = sorted(done - {v for v, _, _ in known})
    if unknown:
        raise MigrationError(
            f"the database was migrated by a newer release (migration {', '.join(map(str, unknown))} is unknown to this one); "
            "run the newer release or restore a backup"
        )
    applied: list[int] = []
    for version, name, path in known:
        if version in done:
            continue
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


async def connect(path: Path | str, *, migrations: Traversable | None = None) -> aiosqlite.Connection:
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
    ``:memory:``, which another connection cannot see).

    Its own aiosqlite thread: reads on it never queue behind the statements on the main
    connection. In WAL mode (set by :func:`connect`) it sees every committed transaction and
    neither blocks nor waits for the writer; ``mode=ro`` and ``query_only`` make sure it
    cannot write.
    """
    if str(path) == ":memory:":
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
_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), one at a time per connection.

    IMMEDIATE takes SQLite's write lock at BEGIN, so read-then-write logic inside cannot be
    invalidated by another connection or process; they wait (``busy_timeout``) instead. A
    COMMIT that fails is rolled back too: a connection must never be left inside a
    transaction, or every later BEGIN on it fails.
    """
    lock = _locks.get(db)
    if lock is None:
        lock = _locks[db] = asyncio.Lock()
    async with lock:
        await db.execute("BEGIN IMMEDIATE")
        try:
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


async def write(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    """Run one write statement in its own transaction; returns its rows (``RETURNING``) fully read."""
    async with transaction(db) as tx:
        return list(await tx.execute_fetchall(sql, tuple(params)))
