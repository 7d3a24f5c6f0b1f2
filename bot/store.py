"""The SQLite store: one aiosqlite connection in WAL mode, and numbered SQL migrations.

Migrations are ``migrations/NNNN_name.sql``, applied in order at start-up, each inside one
transaction together with its ``schema_migrations`` row, so a migration either lands whole
or not at all and never runs twice.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import aiosqlite

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """A migration failed; the database is as it was before that migration."""


def discover(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    found: list[tuple[int, str, Path]] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        found.append((int(match.group(1)), match.group(2), path))
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


async def migrate(db: aiosqlite.Connection, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    await db.commit()
    async with db.execute("SELECT version FROM schema_migrations") as cur:
        done = {row[0] for row in await cur.fetchall()}
    applied: list[int] = []
    for version, name, path in discover(directory):
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


async def connect(path: Path | str, *, migrations: Path = MIGRATIONS_DIR) -> aiosqlite.Connection:
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
