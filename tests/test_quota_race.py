from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot import rules as access_rules
from bot import store
from bot.guild_config import GuildConfigStore, GuildSettings
from bot.i18n import t
from bot.jobs import Job, JobQueue, NewJob, make_queue
from bot.quota import Quota, QuotaExceeded, QuotaRules, next_day, next_month
from bot.relay.types import NoImage, RelayFailed
from bot.settings import Settings
from tests import pg

# The fixtures that run each database test on SQLite and on a throw-away PostgreSQL server.
backend, db_target, pg_server, db = pg.backend, pg.db_target, pg.pg_server, pg.db

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
FLASH = "gemini-3.1-flash-image-preview"


class Clock:
    """Unix time that moves forward a millisecond per reading: every reading is distinct, so
    the ledger's timestamps give the order in which transactions really happened."""

    def __init__(self, start: float = NOON) -> None:
        self.now = start
        self._tick = itertools.count()

    def __call__(self) -> float:
        return self.now + next(self._tick) * 0.001


def make_settings(data_dir: Path, **over: Any) -> Settings:
    base: dict[str, Any] = dict(
        discord_token="", data_dir=data_dir, relay=None, max_concurrent_jobs=8, max_jobs_per_guild=8, max_jobs_per_user=2
    )
    base.update(over)
    return Settings(**base)


async def insert_job(db: aiosqlite.Connection, user: int, guild: int | None, cost: int) -> int:
    cur = await db.execute(
        "INSERT INTO jobs (guild_id, user_id, request, model, cost) VALUES (?, ?, '{}', ?, ?)", (guild, user, FLASH, cost)
    )
    return int(cur.lastrowid)


# --- the race --------------------------------------------------------------------------------

GUILD_A, GUILD_B = 1001, 1002
BONUS_ROLE, EXEMPT_ROLE = 7, 9
RULES = {
    GUILD_A: QuotaRules(user_daily=3, guild_daily=45, role_extra={BONUS_ROLE: 2}),
    GUILD_B: QuotaRules(user_daily=4, guild_monthly=30, exempt_roles=frozenset({EXEMPT_ROLE})),
}


def roles_of(user: int) -> tuple[int, ...]:
    if user % 10 == 3:
        return (BONUS_ROLE,)
    if user % 10 == 7:
        return (EXEMPT_ROLE,)
    return ()


def guild_of(user: int) -> int:
    return GUILD_A if user < 30 else GUILD_B


@pytest.fixture
async def four_connections(db_target: str | Path):
    """Four connections to one database (a SQLite file, or four pools on one PostgreSQL
    database), as four bot processes would have."""
    conns = [await store.connect(db_target)]
    conns += [await store.connect(db_target) for _ in range(3)]
    yield conns
    for conn in conns:
        await conn.close()


async def test_200_concurrent_generations_never_overspend(data_dir: Path, four_connections: list[aiosqlite.Connection]) -> None:
    conns = four_connections
    for guild, rules in RULES.items():
        await GuildConfigStore(conns[0]).save(guild, GuildSettings(quota=rules))
    clock = Clock()
    rng = random.Random(4)
    outcomes = {}

    async def runner(job: Job) -> None:
        # Interleave: yield to the loop a few times, as a real request would.
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        fate = outcomes[job.id] = rng.choice(["ok", "ok", "ok", "503", "blocked"])
        if fate == "503":
            raise RelayFailed("HTTP 503: overloaded", status=503, retryable=True)
        if fate == "blocked":
            raise NoImage("blocked", reason="safety")

    queues = [
        make_queue(conn, Quota(conn, clock=clock), make_settings(data_dir), runner, config=GuildConfigStore(conn), clock=clock)
        for conn in conns
    ]
    for queue in queues:
        await queue.start()
    try:
        await race(queues, conns, outcomes)
    finally:
        for queue in queues:
            await queue.stop()


async def race(queues: list[JobQueue], conns: list[aiosqlite.Connection], outcomes: dict[int, str]) -> None:
    refused: list[QuotaExceeded] = []

    async def generate(n: int) -> Job | None:
        user = n % 50
        queue = queues[n % len(queues)]  # tasks spread over four connections
        size = "2K" if n % 3 == 0 else "1K"  # 2 or 1 credits
        await asyncio.sleep(0)
        try:
            assert queue.config is not None
            guild = await queue.config.get(guild_of(user))
            return await queue.submit(
                NewJob(user_id=user, guild_id=guild_of(user), channel_id=5, request={"prompt": f"p{n}"}, model=FLASH, size=size),
                role_ids=roles_of(user),
                credits=guild.cost(FLASH, size),
                rules=guild.quota,
            )
        except QuotaExceeded as exc:
            refused.append(exc)
            return None

    jobs = await asyncio.gather(*(generate(n) for n in range(200)))
    for queue in queues:
        await queue.join()

    db = conns[0]
    submitted = [j for j in jobs if j is not None]
    assert len(submitted) + len(refused) == 200
    assert refused, "the limits are small: some requests must have been refused"

    async with db.execute(
        "SELECT j.id, j.status, j.user_id, j.guild_id, q.credits, q.state, q.created_at, q.updated_at FROM jobs j LEFT JOIN quota_ledger q ON q.job_id = j.id"
    ) as cur:
        rows = [tuple(r) for r in await cur.fetchall()]
    assert len(rows) == len(submitted)  # a refused request left no job row

    # Every job is settled one way: delivered <-> committed, anything else <-> refunded.
    for job_id, status, *_rest in rows:
        state = _rest[3]
        assert (status, state) in (("done", "committed"), ("failed", "refunded")), (job_id, status, state)
        assert (outcomes[job_id] == "ok") == (status == "done")
    totals = await Quota(db).totals()
    assert totals["reserved"] == 0
    async with db.execute("SELECT SUM(credits) FROM quota_ledger") as cur:
        reserved_ever = (await cur.fetchone())[0]
    assert reserved_ever == totals["committed"] + totals["refunded"]
    assert totals["committed"] > 0 and totals["refunded"] > 0  # a real mix of outcomes

    # Replay the ledger in transaction order: at no moment did held credits (reserved or
    # committed, not refunded) exceed any limit, not even by one.
    events: list[tuple[float, int, int, int]] = []
    for _id, _status, user, guild, credits, state, created, updated in rows:
        events.append((created, user, guild, credits))
        if state == "refunded":
            events.append((updated, user, guild, -credits))
    events.sort()
    held_user: dict[int, int] = {}
    held_guild: dict[int, int] = {}
    peak_user: dict[int, int] = {}
    for _ts, user, guild, delta in events:
        held_user[user] = held_user.get(user, 0) + delta
        held_guild[guild] = held_guild.get(guild, 0) + delta
        peak_user[user] = max(peak_user.get(user, 0), held_user[user])
        limit = RULES[guild].user_limit(roles_of(user))
        if limit is not None:
            assert held_user[user] <= limit, (user, held_user[user], limit)
        guild_limit = RULES[guild].guild_daily or RULES[guild].guild_monthly
        assert held_guild[guild] <= guild_limit, (guild, held_guild[guild])

    # The limits really bound (so the test could have caught an overspend): members and both
    # servers were refused, and members ran right up to their limit.
    assert {e.scope for e in refused} == {"user_day", "guild_day", "guild_month"}
    assert held_guild[GUILD_B] <= 30 and any(e.scope == "guild_month" for e in refused)
    assert any(peak_user[u] == RULES[guild_of(u)].user_limit(roles_of(u)) for u in peak_user if roles_of(u) != (EXEMPT_ROLE,))


# --- the rules, one at a time --------------------------------------------------------------


async def reserve(
    quota: Quota, db: aiosqlite.Connection, user: int, credits: int, rules: QuotaRules, roles: tuple[int, ...] = (), guild: int | None = 1
) -> int:
    job_id = await insert_job(db, user, guild, credits)
    await quota.reserve(job_id, guild_id=guild, user_id=user, credits=credits, rules=rules, role_ids=roles)
    return job_id


async def test_daily_limit_refuses_with_reset_time_and_refund_frees_credits(db: aiosqlite.Connection) -> None:
    clock = Clock()
    quota = Quota(db, clock=clock)
    rules = QuotaRules(user_daily=5)
    first = await reserve(quota, db, 42, 3, rules)
    with pytest.raises(QuotaExceeded) as info:
        await reserve(quota, db, 42, 3, rules)
    exc = info.value
    assert (exc.scope, exc.limit, exc.used, exc.credits) == ("user_day", 5, 3, 3)
    assert exc.resets_at == datetime(2026, 3, 11, tzinfo=UTC).timestamp()
    # The member reads it in their language, with a Discord timestamp for the reset.
    assert "<t:1773187200:R>" in t(exc.key, "en", **exc.params)
    assert "你今天的 5 积分已用掉 3" in t(exc.key, "zh-CN", **exc.params)

    assert await quota.refund(first) is True
    assert await quota.refund(first) is False  # settling twice does nothing
    assert await quota.commit(first) is False  # a refunded reservation cannot be committed
    await reserve(quota, db, 42, 5, rules)  # the refunded credits are usable again


async def test_limits_reset_at_utc_midnight_and_first_of_month(db: aiosqlite.Connection) -> None:
    clock = Clock(datetime(2026, 3, 31, 23, 59, tzinfo=UTC).timestamp())
    quota = Quota(db, clock=clock)
    rules = QuotaRules(user_daily=2, guild_monthly=3)
    job = await reserve(quota, db, 1, 2, rules)
    await quota.commit(job)
    with pytest.raises(QuotaExceeded) as info:
        await reserve(quota, db, 1, 1, rules)
    assert info.value.scope == "user_day"
    clock.now = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC).timestamp()  # new day, new month
    await reserve(quota, db, 1, 2, rules)
    assert next_month(clock.now) == datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    assert next_day(datetime(2026, 12, 31, 18, tzinfo=UTC).timestamp()) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


async def test_the_limit_that_resets_last_is_reported(db: aiosqlite.Connection) -> None:
    quota = Quota(db, clock=Clock())
    rules = QuotaRules(user_daily=2, guild_daily=2, guild_monthly=2)
    await reserve(quota, db, 1, 2, rules)
    with pytest.raises(QuotaExceeded) as info:
        await reserve(quota, db, 1, 1, rules)
    assert info.value.scope == "guild_month"  # waiting for tomorrow would not help
    assert info.value.resets_at == datetime(2026, 4, 1, tzinfo=UTC).timestamp()


async def test_server_limit_binds_across_members_and_servers_are_separate(db: aiosqlite.Connection) -> None:
    quota = Quota(db, clock=Clock())
    rules = QuotaRules(user_daily=None, guild_daily=4)
    await reserve(quota, db, 1, 2, rules, guild=1)
    await reserve(quota, db, 2, 2, rules, guild=1)
    with pytest.raises(QuotaExceeded) as info:
        await reserve(quota, db, 3, 1, rules, guild=1)
    assert info.value.scope == "guild_day" and info.value.key == "quota.exceeded.guild_day"
    await reserve(quota, db, 3, 4, rules, guild=2)  # another server has its own budget


async def test_role_bonus_takes_the_largest_and_exempt_roles_skip_only_the_member_limit(db: aiosqlite.Connection) -> None:
    quota = Quota(db, clock=Clock())
    rules = QuotaRules(user_daily=2, guild_daily=20, role_extra={10: 3, 11: 5}, exempt_roles=frozenset({99}))
    assert rules.user_limit(()) == 2
    assert rules.user_limit((10, 11)) == 7  # the largest bonus, not the sum
    await reserve(quota, db, 1, 7, rules, roles=(10, 11))
    with pytest.raises(QuotaExceeded):
        await reserve(quota, db, 1, 1, rules, roles=(10, 11))
    await reserve(quota, db, 2, 13, rules, roles=(99,))  # exempt: only the server budget counts
    with pytest.raises(QuotaExceeded) as info:
        await reserve(quota, db, 2, 1, rules, roles=(99,))
    assert info.value.scope == "guild_day"


async def test_status_for_the_quota_command(db: aiosqlite.Connection, data_dir: Path) -> None:
    clock = Clock()
    quota = Quota(db, clock=clock)
    settings = GuildSettings(quota=QuotaRules(user_daily=10, guild_monthly=100))
    config = GuildConfigStore(db)
    await config.save(1, settings)

    gate = asyncio.Event()

    async def runner(job: Job) -> None:
        if job.request.get("fail"):
            raise RelayFailed("down", status=502, retryable=True)
        await gate.wait()

    queue = make_queue(db, quota, make_settings(data_dir, max_jobs_per_user=1), runner, config=config, clock=clock)
    await queue.start()
    failed = await queue.submit(
        NewJob(user_id=5, guild_id=1, channel_id=2, request={"fail": True}, model=FLASH, size="2K"),
        credits=settings.cost(FLASH, "2K"),
        rules=settings.quota,
    )
    while (await queue.get(failed.id)).status != "failed":
        await asyncio.sleep(0.01)
    running = await queue.submit(
        NewJob(user_id=5, guild_id=1, channel_id=2, request={}, model=FLASH, size="2K"),
        credits=settings.cost(FLASH, "2K"),
        rules=settings.quota,
    )
    await queue.submit(
        NewJob(user_id=5, guild_id=1, channel_id=2, request={}, model="gemini-3-pro-image-preview", size="4K"),
        credits=settings.cost("gemini-3-pro-image-preview", "4K"),
        rules=settings.quota,
    )

    status = await quota.status(guild_id=1, user_id=5, rules=settings.quota)
    # 2 (running, 2K) + 6 (queued Pro 4K) held; the failed job's 2 came back.
    assert status.held == 8
    assert status.credits_left == 2
    assert status.allowances[0].scope == "user_day"
    assert status.resets_at == datetime(2026, 3, 11, tzinfo=UTC).timestamp()
    assert [j.status for j in status.recent] == ["queued", "running", "failed"]
    assert status.recent[2].error_code == "http_502"
    assert not status.exempt
    gate.set()
    await queue.join()
    await queue.stop()
    assert running.id in [j.id for j in status.recent]


async def test_early_check_refuses_without_writing(db: aiosqlite.Connection) -> None:
    quota = Quota(db, clock=Clock())
    rules = QuotaRules(user_daily=1)
    await reserve(quota, db, 1, 1, rules)
    with pytest.raises(QuotaExceeded):
        await quota.check(guild_id=1, user_id=1, credits=1, rules=rules)
    await quota.check(guild_id=1, user_id=2, credits=1, rules=rules)
    assert (await quota.totals())["reserved"] == 1


# --- the server's settings behind the rules -----------------------------------------------------


def test_settings_round_trip_and_tolerate_bad_json() -> None:
    from bot.guild_config import ConfigError

    g = (
        GuildSettings()
        .with_defaults(model="nano-banana-pro", ratio="16x9", size="2k")
        .with_access(channels=[5, 6], roles=[7], thread_mode="anyone", threads=False)
        .with_quota(user_daily=7, guild_monthly=500, role_extra={7: 3}, exempt_roles=[8])
        .with_cost(FLASH, "1K", 2)
        .with_limits(max_jobs=1, max_jobs_per_user=None)
    )
    again = GuildSettings.from_json(g.to_json())
    assert again == g
    assert (again.default_model, again.default_ratio, again.default_size) == ("gemini-3-pro-image-preview", "16:9", "2K")
    assert again.quota.user_limit([7]) == 10 and again.quota.exempt([8])
    assert access_rules.channel_allowed(again.allowed_channels, 99, parent_id=5) and not access_rules.channel_allowed(
        again.allowed_channels, 99
    )
    assert access_rules.member_allowed(again.allowed_roles, [7]) and not access_rules.member_allowed(again.allowed_roles, [1])
    assert access_rules.may_continue_thread(again.thread_mode, 1, owner_id=2)

    # A damaged row never stops the bot: bad fields fall back to their defaults.
    odd = GuildSettings.from_json('{"quota": "lots", "default_model": "dall-e", "threads": false, "allowed_models": ["nope"]}')
    assert odd.quota == QuotaRules() and odd.default_model == GuildSettings().default_model and odd.threads is False
    assert odd.allowed_models == ()
    assert GuildSettings.from_json("not json") == GuildSettings()

    with pytest.raises(ConfigError) as info:
        GuildSettings().with_defaults(model=FLASH, ratio="5:1")
    assert info.value.key == "admin.config.bad_ratio"
    # Allowing only other models moves the default onto an allowed one.
    limited = GuildSettings().with_allowed_models(["nano-banana"])
    assert limited.allowed_models == ("gemini-2.5-flash-image",) and limited.default_model == "gemini-2.5-flash-image"
    assert not access_rules.model_allowed(limited.allowed_models, FLASH)


# --- one request's jobs, all or none ------------------------------------------------------------


async def test_variants_are_queued_with_their_group_all_or_none(db: aiosqlite.Connection, data_dir: Path) -> None:
    """The variants of one /imagine are queued in one transaction with their group: a process
    dying midway (here: the group's write failing after two of three jobs were inserted) leaves
    no job, no reservation and no group waiting for a variant that never comes; a total over the
    limit refuses them all."""
    from bot.variant_groups import VariantGroupStore

    clock = Clock()
    quota = Quota(db, clock=clock)
    rules = QuotaRules(user_daily=6)

    async def runner(job: Job) -> None:
        await asyncio.sleep(3600)

    queue = make_queue(db, quota, make_settings(data_dir, max_concurrent_jobs=0), runner, config=GuildConfigStore(db), clock=clock)
    variants = [(NewJob(user_id=5, guild_id=1, channel_id=2, request={"variant": i}, model=FLASH, size="1K"), 2) for i in (1, 2, 3)]

    async def dies(tx: store.Connection, jobs: list[Job]) -> None:
        assert len(jobs) == 3  # every job was inserted, inside the transaction
        raise ConnectionResetError("the process died here")

    with pytest.raises(ConnectionResetError):
        await queue.submit_many(variants, rules=rules, also=dies)
    counts = [await db.execute_fetchall(f"SELECT COUNT(*) FROM {table}") for table in ("jobs", "quota_ledger", "variant_groups")]
    assert [int(c[0][0]) for c in counts] == [0, 0, 0]
    assert queue.positions() == {}

    with pytest.raises(QuotaExceeded):  # 4 x 2 credits > 6: not three queued and the fourth refused
        await queue.submit_many([*variants, variants[0]], rules=rules)
    assert int((await db.execute_fetchall("SELECT COUNT(*) FROM jobs"))[0][0]) == 0

    groups = VariantGroupStore(db)

    async def group(tx: store.Connection, jobs: list[Job]) -> None:
        await groups.expect_in(tx, 77, [j.id for j in jobs])

    jobs = await queue.submit_many(variants, rules=rules, also=group)
    assert await groups.job_ids(77) == [j.id for j in jobs]
    assert (await quota.totals())["reserved"] == 6
    assert sorted(queue.positions()) == sorted(j.id for j in jobs)
