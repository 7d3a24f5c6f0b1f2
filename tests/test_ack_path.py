"""The checks an acknowledgement waits for (settings, access, relay, quota) do not queue behind
job writes on the main database connection; and what they answer stays right."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from bot import store
from bot.quota import Quota, QuotaExceeded, QuotaRules
from bot.services import Services
from bot.settings import load_settings
from tests.test_quota_race import insert_job


def _settings(tmp_path: Path):
    return load_settings(
        {
            "NB_ENV_FILE": str(tmp_path / "none"),
            "NB_DATA_DIR": str(tmp_path / "data"),
            "NB_RELAY_URL": "http://127.0.0.1:9/",
            "NB_API_KEY": "ack-path-key-1234",
            "NB_ALLOW_PRIVATE_RELAYS": "1",
        },
        require_token=False,
    )


async def _hold_main_connection(db, seconds: float, started: asyncio.Event) -> None:
    """A job write that keeps the main connection's worker thread busy for ``seconds`` (as a
    big write or a slow disk does): a statement calling a function that sleeps in SQLite."""
    await db.create_function("stall", 1, lambda s: time.sleep(s) or 1)
    async with store.transaction(db) as tx:
        started.set()
        await tx.execute_fetchall("SELECT stall(?)", (seconds,))


async def test_ack_checks_answer_while_the_main_connection_is_busy(tmp_path: Path) -> None:
    services = await Services.open(_settings(tmp_path))
    try:
        assert services.reader is not None
        guild, user = 1, 42
        # First sight of the guild reads its settings and relays once (then they are cached).
        await services.authorize(guild, 5, user, [], "gemini-3-pro-image-preview")
        started = asyncio.Event()
        busy = asyncio.create_task(_hold_main_connection(services.db, 2.0, started))
        await started.wait()
        await asyncio.sleep(0.05)  # the stall is running on the connection's thread
        began = time.monotonic()
        defaults = await services.defaults(guild)
        await services.authorize(guild, 5, user, [], defaults.model)
        await services.precheck_quota(guild, user, [], defaults.model, defaults.size)
        took = time.monotonic() - began
        assert not busy.done()
        # The held transaction takes >2 s; the checks must not have waited for it.
        assert took < 1.0, f"the ack checks waited {took:.2f} s behind the main connection"
        await busy
    finally:
        await services.close()


async def test_quota_precheck_on_the_reader_sees_committed_credits(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    db = await store.connect(path)
    reader = await store.connect_reader(path)
    assert reader is not None
    try:
        quota = Quota(db, reader=reader)
        rules = QuotaRules(user_daily=3, guild_daily=5)
        first = await insert_job(db, 1, 7, 2)
        await quota.reserve(first, guild_id=7, user_id=1, credits=2, rules=rules)
        await quota.reserve(await insert_job(db, 2, 7, 2), guild_id=7, user_id=2, credits=2, rules=rules)
        await quota.check(guild_id=7, user_id=1, credits=1, rules=rules)  # 2 + 1 <= 3
        with pytest.raises(QuotaExceeded) as user_full:
            await quota.check(guild_id=7, user_id=1, credits=2, rules=rules)
        assert user_full.value.scope == "user_day"
        with pytest.raises(QuotaExceeded) as guild_full:
            await quota.check(guild_id=7, user_id=3, credits=2, rules=rules)  # guild: 4 + 2 > 5
        assert guild_full.value.scope == "guild_day"
        await quota.refund(first)  # refunded credits no longer count
        await quota.check(guild_id=7, user_id=1, credits=3, rules=rules)
        with pytest.raises(sqlite3.OperationalError):  # the reader cannot write
            await reader.execute("DELETE FROM quota_ledger")
    finally:
        await reader.close()
        await db.close()


async def test_a_server_that_adds_or_removes_its_relay_is_seen_at_once(tmp_path: Path) -> None:
    services = await Services.open(_settings(tmp_path))
    try:
        assert await services.pool.uses_default(3)  # asked once, then cached
        await services.relays.add(3, name="own", base_url="http://127.0.0.1:9/", api_key="own-key-12345678")
        assert not await services.pool.uses_default(3)
        assert await services.relays.remove(3, "own")
        assert await services.pool.uses_default(3)
    finally:
        await services.close()
