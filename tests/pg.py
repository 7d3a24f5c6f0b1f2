"""A throw-away PostgreSQL server for the tests, and the ``backend`` parametrisation.

:func:`pg_server` (session-scoped) runs ``initdb`` and ``pg_ctl`` into a temp folder, on a
free loopback port, with ``fsync=off``: about a second, once per test session. The binaries
are looked for in ``NB_PG_BIN``, ``/usr/lib/postgresql/*/bin`` and ``PATH`` (``.ci/run``
installs Debian's ``postgresql``). Without them, every PostgreSQL case is *skipped with the
reason* (``pytest -ra`` lists it), never silently passed. PostgreSQL refuses to run as root,
so as root the cluster belongs to the ``postgres`` user and its commands run through ``runuser``.

Each test gets its own database (``CREATE DATABASE``), so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from bot import store

BACKENDS = ("sqlite", "postgres")
_counter = itertools.count(1)


def pg_bin() -> Path | None:
    candidates = [os.environ.get("NB_PG_BIN", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A running cluster; :meth:`url` names a database on it."""

    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def fresh_database(self) -> str:
        name = f"t{os.getpid()}_{next(_counter)}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


@contextlib.contextmanager
def running_cluster(bindir: Path) -> Iterator[PgServer]:
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="nb-pg-"))
    data = base / "data"
    if as_root:
        shutil.chown(base, user="postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    port = _free_port()
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -k {base}"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(base / "log"), "start")
        try:
            yield PgServer(port)
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: the PostgreSQL cases did not run (apt-get install postgresql)")
    try:
        with running_cluster(bindir) as server:
            yield server
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"a throw-away PostgreSQL could not be started: {exc.stderr.decode(errors='replace').strip()[:300]}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_target(backend: str, request: pytest.FixtureRequest, data_dir: Path) -> str | Path:
    """What :func:`bot.store.connect` opens for this backend: a SQLite file or a fresh database."""
    if backend == "sqlite":
        return data_dir / "bot.sqlite3"
    server: PgServer = request.getfixturevalue("pg_server")
    return await server.fresh_database()


@pytest.fixture
async def db(db_target: str | Path) -> AsyncIterator[store.Connection]:
    """A migrated connection on this test's database (SQLite file or PostgreSQL)."""
    conn = await store.connect(db_target)
    yield conn
    await conn.close()


@pytest.fixture
async def open_db(db_target: str | Path) -> AsyncIterator[Callable[[], object]]:
    """``await open_db()`` -> a migrated connection on this test's database; all closed after."""
    opened: list[store.Connection] = []

    async def opener() -> store.Connection:
        conn = await store.connect(db_target)
        opened.append(conn)
        return conn

    yield opener
    for conn in opened:
        await conn.close()
