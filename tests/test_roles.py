"""Running past one process: roles, shard ranges, and the duties done once (PostgreSQL locks)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot import store
from bot.db import locks
from bot.jobs import Job, JobQueue, NewJob, make_queue
from bot.quota import Quota, QuotaRules
from bot.settings import SettingsError, load_settings
from tests import pg
from tests.test_jobs import eventually

pg_server = pg.pg_server
REPO = Path(__file__).resolve().parent.parent
URL = "postgresql://bot:secret@db.example:5432/bot"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"NB_ENV_FILE": os.devnull, "NB_DATA_DIR": str(tmp_path), **extra}


def test_shard_ranges_and_roles_are_checked_in_one_line(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path, NB_SHARD_COUNT="4", NB_SHARD_IDS="2-3", NB_DATABASE_URL=URL), require_token=False, role="gateway")
    assert (s.role, s.shard_count, s.shard_ids, s.database) == ("gateway", 4, (2, 3), URL)
    assert "secret" not in repr(s)  # the URL's password stays out of logs
    assert load_settings(env(tmp_path, NB_JOB_LEASE_S="3"), require_token=False).job_lease_s == 3
    bad = [
        ({"NB_SHARD_IDS": "0"}, "all", "needs NB_SHARD_COUNT"),
        ({"NB_SHARD_COUNT": "2", "NB_SHARD_IDS": "1,2"}, "all", "below NB_SHARD_COUNT=2"),
        ({"NB_SHARD_COUNT": "2", "NB_SHARD_IDS": "a"}, "all", "shard numbers or ranges"),
        ({}, "worker", "needs NB_DATABASE_URL"),
        ({"NB_DATABASE_URL": URL}, "boss", "--role must be one of"),
        ({"NB_DATABASE_URL": "mysql://u:secret@h/db"}, "all", "must be a postgresql://"),
        ({"NB_JOB_LEASE_S": "1"}, "all", "NB_JOB_LEASE_S"),
    ]
    for extra, role, fragment in bad:
        with pytest.raises(SettingsError, match=fragment) as info:
            load_settings(env(tmp_path, **extra), require_token=False, role=role)
        assert "secret" not in str(info.value)


def test_a_worker_without_a_shared_database_stops_at_once_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--role", "worker"],
        cwd=REPO,
        env={**os.environ, **env(tmp_path, DISCORD_TOKEN="x")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "nano-banana-bot: --role worker needs NB_DATABASE_URL (a PostgreSQL server the processes share)"
    ]


async def test_identify_buckets_are_paced_across_processes(pg_server: pg.PgServer) -> None:
    url = await pg_server.fresh_database()
    one, two = await store.connect(url), await store.connect(url)
    try:
        assert isinstance(one, store.PgConnection) and isinstance(two, store.PgConnection)
        started = time.monotonic()
        await locks.hold_for(one, locks.IDENTIFY_LOCK, 0.6)  # shard 0 identifies in process one
        await locks.hold_for(two, locks.IDENTIFY_LOCK + 1, 0.6)  # another bucket: no wait
        assert time.monotonic() - started < 0.3
        await locks.hold_for(two, locks.IDENTIFY_LOCK, 0.1)  # same bucket in process two: waits
        assert time.monotonic() - started >= 0.55
        async with locks.only_one(one, 1) as mine, locks.only_one(two, 1) as theirs:
            assert (mine, theirs) == (True, False)  # a one-off duty runs in one process only
    finally:
        await asyncio.sleep(0.2)
        await one.close()
        await two.close()


async def test_a_gateway_submits_and_a_worker_runs(pg_server: pg.PgServer, data_dir: Path) -> None:
    url = await pg_server.fresh_database()
    base = load_settings(env(data_dir, NB_DATABASE_URL=url), require_token=False)
    ran: list[tuple[str, int]] = []

    def queue(db: store.Connection, role: str) -> JobQueue:
        async def runner(job: Job) -> None:
            ran.append((role, job.id))

        q = make_queue(db, Quota(db), dataclasses.replace(base, role=role), runner, worker_id=role)
        q.poll_s = 0.05  # type: ignore[attr-defined]
        return q

    gdb, wdb = await store.connect(url), await store.connect(url)
    gateway, worker = queue(gdb, "gateway"), queue(wdb, "worker")
    try:
        await gateway.start()
        job = await gateway.submit(
            NewJob(user_id=1, guild_id=1, channel_id=1, request={}, model="m"), credits=1, rules=QuotaRules(user_daily=5)
        )
        await asyncio.sleep(0.3)
        assert ran == [] and (await gateway.get(job.id)).status == "queued"  # type: ignore[union-attr]
        await worker.start()
        await eventually(lambda: ran == [("worker", job.id)], "the worker runs the gateway's job")
        await worker.join()
        assert (await gateway.get(job.id)).status == "done"  # type: ignore[union-attr]
    finally:
        await gateway.stop()
        await worker.stop()
        await gdb.close()
        await wdb.close()
