"""Past one process, for real: gateway and worker processes on one PostgreSQL, the Discord
double and the relay double. A worker holds no gateway connection and delivers through REST."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import health
from tests import pg, rest_proxy
from tests.cluster import BotProcess, Cluster, cluster_env, rows, until
from tests.doubles.discord_double import Call, DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble

pg_server = pg.pg_server
API_KEY = "relay-secret-key-123456"


def picture_posts(dd: DiscordDouble, channel_id: str) -> list[Call]:
    return [c for c in dd.find("POST", rf"^/channels/{channel_id}/messages$") if c.files and c.status < 300]


@contextlib.asynccontextmanager
async def cluster_of(
    tmp_path: Path, dd: DiscordDouble, relay: RelayDouble, url: str, api_base: str | None = None, **extra: str
) -> AsyncIterator[Cluster]:
    env = cluster_env(database_url=url, api_base=api_base or dd.api_base, relay_url=relay.url, api_key=API_KEY, **extra)
    cluster = Cluster(tmp_path, env)
    try:
        yield cluster
    finally:
        await cluster.close()


async def test_a_gateway_takes_imagine_and_a_worker_delivers_it_through_rest(pg_server: pg.PgServer, tmp_path: Path) -> None:
    url = await pg_server.fresh_database()
    with RelayDouble(api_key=API_KEY) as relay:
        relay.default = Behaviour("slow", delay=1.0, width=96, height=64)
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Banana Lab")
            channel = dd.text_channels(guild)[0]
            alice = dd.add_member(guild, username="alice")
            async with cluster_of(tmp_path, dd, relay, url) as cluster:
                gateway = cluster.spawn("gateway")
                await until(cluster, lambda: bool(dd.synced_commands()) and bool(dd._live_sessions()), "the gateway is connected")
                worker = cluster.spawn("worker")
                await until(cluster, lambda: bool(dd.find("GET", r"^/users/@me$")), "the worker logged in")
                interaction = dd.slash_interaction("imagine", channel=channel, user=alice, options={"prompt": "a lighthouse"})
                await dd.interact(interaction)
                await until(cluster, lambda: bool(picture_posts(dd, channel["id"])), "the picture is posted", timeout=60)
                post = picture_posts(dd, channel["id"])[0]
                message_id = post.response["id"]
                await until(
                    cluster, lambda: bool(dd.find("POST", rf"^/channels/{channel['id']}/messages/{message_id}/threads$")), "a thread opens"
                )
                await asyncio.sleep(1.5)  # anything posted twice would be by now
                assert len(picture_posts(dd, channel["id"])) == 1
                components = [c for row in post.json.get("components", []) for c in row.get("components", [])]
                assert {"Re-roll", "Edit", "Delete"} <= {c.get("label") for c in components}
                assert f"<@{alice['user']['id']}>" in post.json["content"]
                thread = dd.find("POST", rf"^/channels/{channel['id']}/messages/{message_id}/threads$")[0].response["id"]
                await until(cluster, lambda: bool(dd.find("POST", rf"^/channels/{thread}/messages$")), "the thread's hint is posted")
                assert dd.response_type(interaction) is not None  # the gateway acknowledged the command
                jobs = await rows(url, "SELECT j.status, j.worker_id, q.state FROM jobs j JOIN quota_ledger q ON q.job_id = j.id")
                assert [tuple(r) for r in jobs] == [("done", worker.name, "committed")]
                assert gateway.proc.poll() is None and worker.proc.poll() is None
                # `python -m bot health` (Docker's HEALTHCHECK) passes for both roles.
                assert health.status(worker.data_dir)[0] and health.status(gateway.data_dir)[0]
                assert "Traceback" not in cluster.logs()
                # The worker never saw the interaction: it edited the progress message through the
                # token stored with the job (encrypted), which no log line shows.
                token = interaction["token"]
                hooked = dd.find("PATCH", rf"^/webhooks/{dd.application_id}/{token}/messages/\d+$")
                assert hooked and all(c.status < 300 for c in hooked), hooked
                assert token not in cluster.logs()
                assert await rows(url, "SELECT message_id FROM job_replies") == []  # dropped with the job


# --- two shards, two gateways, two workers, one worker killed mid-job -------------------------

RUNS = int(os.environ.get("NB_CLUSTER_RUNS", "2"))  # NB_CLUSTER_RUNS=10 runs every seed
SEEDS = [
    pytest.param(seed, marks=pytest.mark.skipif(seed >= RUNS, reason=f"seed {seed}: NB_CLUSTER_RUNS={RUNS}; set 10 to run all"))
    for seed in range(10)
]
CAPS = {"NB_MAX_JOBS": "3", "NB_MAX_JOBS_PER_GUILD": "2", "NB_MAX_JOBS_PER_USER": "1"}
MEMBERS, EACH = 3, 2  # per guild; /imagine runs per member


def guilds_on_both_shards(dd: DiscordDouble) -> list[dict[str, Any]]:
    """One guild per shard: Discord routes a guild to shard ``(guild_id >> 22) % 2``."""
    by_shard: dict[int, dict[str, Any]] = {}
    while len(by_shard) < 2:
        guild = dd.add_guild(f"Guild {len(dd.guilds)}")
        by_shard.setdefault((int(guild["id"]) >> 22) % 2, guild)
        time.sleep(0.002)  # the next snowflake's millisecond, hence maybe the other shard
    return [by_shard[0], by_shard[1]]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at t closes before a start at t)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def rounds_are_round_robin(users_in_start_order: list[int]) -> bool:
    """Every member's n-th job starts before anyone's (n+1)-th (all were queued at once)."""
    seen: dict[int, int] = {}
    turns = []
    for user in users_in_start_order:
        seen[user] = seen.get(user, 0) + 1
        turns.append(seen[user])
    return turns == sorted(turns)


def calls_offering_retry(dd: DiscordDouble, job_id: int) -> list[Call]:
    return [c for c in dd.calls if c.status < 300 and f'"nb:retry:{job_id}"' in json.dumps(c.json)]


async def submit_all(dd: DiscordDouble, guilds: list[dict[str, Any]]) -> int:
    """Every member on both shards runs /imagine EACH times, members interleaved."""
    members = [(g, dd.text_channels(g)[0], [dd.add_member(g, username=f"m{g['id']}{i}") for i in range(MEMBERS)]) for g in guilds]
    n = 0
    for round_ in range(EACH):
        for _, channel, people in members:
            for person in people:
                await dd.interact(dd.slash_interaction("imagine", channel=channel, user=person, options={"prompt": f"pear {round_}"}))
                n += 1
    return n


@pytest.mark.parametrize("seed", SEEDS)
async def test_two_shards_two_gateways_two_workers_one_killed(pg_server: pg.PgServer, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    url = await pg_server.fresh_database()
    with RelayDouble(api_key=API_KEY) as relay:
        relay.default = Behaviour("slow", delay=1.5, width=96, height=64)
        async with DiscordDouble() as dd:
            guilds = guilds_on_both_shards(dd)
            with rest_proxy.running_proxy(dd.api_base.rsplit("/v10", 1)[0]) as proxy:
                extra = {**CAPS, "NB_SHARD_COUNT": "2", "NB_JOB_LEASE_S": "3"}
                async with cluster_of(tmp_path, dd, relay, url, api_base=proxy, **extra) as cluster:
                    cluster.spawn("gateway", NB_SHARD_IDS="0")
                    cluster.spawn("gateway", NB_SHARD_IDS="1")
                    shards = lambda: {s.shard for s in dd._live_sessions()}  # noqa: E731
                    await until(cluster, lambda: shards() == {(0, 2), (1, 2)} and bool(dd.synced_commands()), "both shards are up")
                    submitted = await submit_all(dd, guilds)
                    count = "SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'"
                    deadline = time.monotonic() + 60
                    while (await rows(url, count))[0]["n"] < submitted:
                        assert time.monotonic() < deadline, cluster.logs()
                        await asyncio.sleep(0.1)
                    workers = [cluster.spawn("worker"), cluster.spawn("worker")]
                    victim = await kill_mid_job(cluster, url, workers, rng)
                    open_sql = "SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')"
                    deadline = time.monotonic() + 120
                    while (await rows(url, open_sql))[0]["n"]:
                        assert time.monotonic() < deadline, cluster.logs()
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(1.5)  # late messages (a Retry offer, a duplicate) land by now
                    await check_outcome(dd, url, guilds, victim, submitted, cluster)


async def kill_mid_job(cluster: Cluster, url: str, workers: list[BotProcess], rng: random.Random) -> str:
    """``kill -9`` a worker 0.1-1.2 s into a job (the seed picks when, and which of the workers
    running jobs then: the first worker up may have taken every slot). Returns its name."""
    sql = "SELECT DISTINCT worker_id FROM jobs WHERE status = 'running'"
    deadline = time.monotonic() + 90
    while not (busy := sorted(r["worker_id"] for r in await rows(url, sql))):
        cluster.check_alive()
        assert time.monotonic() < deadline, cluster.logs()
        await asyncio.sleep(0.05)
    victim = next(w for w in workers if w.name == busy[rng.randrange(len(busy))])
    await asyncio.sleep(rng.uniform(0.1, 1.2))
    cluster.kill(victim)
    return victim.name


async def check_outcome(dd: DiscordDouble, url: str, guilds: list[dict[str, Any]], victim: str, submitted: int, cluster: Cluster) -> None:
    jobs = await rows(
        url,
        "SELECT j.id, j.status, j.worker_id, j.user_id, j.guild_id, j.started_at, j.finished_at, j.result_message_id,"
        " (SELECT array_agg(q.state) FROM quota_ledger q WHERE q.job_id = j.id) AS ledger FROM jobs j ORDER BY j.id",
    )
    assert len(jobs) == submitted
    for job in jobs:
        assert job["status"] in ("done", "failed", "interrupted"), dict(job)
        assert list(job["ledger"]) == ["committed" if job["status"] == "done" else "refunded"], dict(job)
    # The killed worker's unfinished jobs, and only those, were interrupted (by the survivor).
    interrupted = [j["id"] for j in jobs if j["status"] == "interrupted"]
    killed = [j["id"] for j in jobs if j["worker_id"] == victim and j["status"] != "done"]
    assert killed and interrupted == killed, [dict(j) for j in jobs]
    for job_id in killed:
        assert calls_offering_retry(dd, job_id), f"job {job_id}'s message offers no Retry\n{cluster.logs()}"
    # No job delivered twice: one picture post per delivered job, none for the others.
    posts = [c for c in dd.find("POST", r"^/channels/\d+/messages$") if c.files and c.status < 300]
    done = [j for j in jobs if j["status"] == "done"]
    assert sorted(int(c.response["id"]) for c in posts) == sorted(j["result_message_id"] for j in done)
    spans = [(j["started_at"], j["finished_at"]) for j in jobs if j["started_at"] is not None]
    assert most_at_once(spans) <= int(CAPS["NB_MAX_JOBS"])
    for guild in guilds:
        mine = [j for j in jobs if j["guild_id"] == int(guild["id"])]
        assert most_at_once([(j["started_at"], j["finished_at"]) for j in mine]) <= int(CAPS["NB_MAX_JOBS_PER_GUILD"])
        for user in {j["user_id"] for j in mine}:
            theirs = [(j["started_at"], j["finished_at"]) for j in mine if j["user_id"] == user]
            assert most_at_once(theirs) <= 1
        in_order = sorted((j for j in mine if j["started_at"] is not None), key=lambda j: j["started_at"])
        assert rounds_are_round_robin([j["user_id"] for j in in_order]), [(j["user_id"], j["started_at"]) for j in in_order]
    # Every REST call went through the shared proxy (discord.js's REST client sent it on).
    assert all("discord.js" in c.headers.get("User-Agent", "") for c in dd.calls), {c.headers.get("User-Agent") for c in dd.calls}
    assert "Traceback" not in cluster.logs()
