"""Past one process, for real: gateway and worker processes on one PostgreSQL, the Discord
double and the relay double. A worker holds no gateway connection and delivers through REST."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg

from tests import pg
from tests.cluster import Cluster, cluster_env
from tests.doubles.discord_double import Call, DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble

pg_server = pg.pg_server
API_KEY = "relay-secret-key-123456"
START_S = 90.0  # a cold interpreter importing discord.py on 2 busy cores


async def until(cluster: Cluster, check: Callable[[], bool], what: str, timeout: float = START_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}\n{cluster.logs()}")
        await asyncio.sleep(0.05)


def picture_posts(dd: DiscordDouble, channel_id: str) -> list[Call]:
    return [c for c in dd.find("POST", rf"^/channels/{channel_id}/messages$") if c.files and c.status < 300]


@contextlib.asynccontextmanager
async def cluster_of(tmp_path: Path, dd: DiscordDouble, relay: RelayDouble, url: str, **extra: str) -> AsyncIterator[Cluster]:
    env = cluster_env(database_url=url, api_base=dd.api_base, relay_url=relay.url, api_key=API_KEY, **extra)
    cluster = Cluster(tmp_path, env)
    try:
        yield cluster
    finally:
        await cluster.close()


async def rows(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


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
                assert "Traceback" not in cluster.logs()
