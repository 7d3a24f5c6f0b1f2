"""Variants shown together across processes, for real: a gateway and two workers on one
PostgreSQL (tests/cluster.py), the Discord and relay doubles. The worker that made variant 1 is
killed while making variant 2; the other worker interrupts variant 2 (refunded), makes variant 3
and, ending the group, posts the one message, with worker 1's picture in it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests import pg
from tests.cluster import Cluster, cluster_env, rows, until
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble
from tests.test_multiprocess import API_KEY, picture_posts

pg_server = pg.pg_server


async def test_the_last_variant_on_another_worker_posts_the_group_with_the_first_workers_picture(
    pg_server: pg.PgServer, tmp_path: Path
) -> None:
    url = await pg_server.fresh_database()
    shared = tmp_path / "shared-images"  # stored pictures in one folder, as "Running past one process" says
    shared.mkdir()
    for name in ("worker1", "worker2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "images").symlink_to(shared, target_is_directory=True)
    with RelayDouble(api_key=API_KEY) as relay:
        relay.enqueue(Behaviour("image", width=96, height=64), Behaviour("slow", delay=20, width=96, height=64))
        relay.default = Behaviour("image", width=96, height=64)
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Banana Lab")
            channel = dd.text_channels(guild)[0]
            alice = dd.add_member(guild, username="alice")
            env = cluster_env(database_url=url, api_base=dd.api_base, relay_url=relay.url, api_key=API_KEY, NB_JOB_LEASE_S="3")
            cluster = Cluster(tmp_path, env)
            try:
                cluster.spawn("gateway")
                await until(cluster, lambda: bool(dd.synced_commands()) and bool(dd._live_sessions()), "the gateway is connected")
                first = cluster.spawn("worker")
                await dd.interact(
                    dd.slash_interaction("imagine", channel=channel, user=alice, options={"prompt": "three pears", "count": 3})
                )
                deadline = time.monotonic() + 90
                while len(relay.requests) < 2 or not (await rows(url, "SELECT slot FROM variant_slots")):
                    cluster.check_alive()
                    assert time.monotonic() < deadline, cluster.logs()
                    await asyncio.sleep(0.05)
                cluster.kill(first)  # variant 1 recorded, variant 2 in flight
                second = cluster.spawn("worker")
                await until(cluster, lambda: bool(picture_posts(dd, channel["id"])), "the group is posted", timeout=90)
                await asyncio.sleep(1.0)  # a second post would have landed by now
                posts = picture_posts(dd, channel["id"])
                assert len(posts) == 1 and len(posts[0].files) == 2
                # Variant 2's answer never left the relay (its connection died with worker 1).
                assert len(relay.images_served) == 2 and sorted(f.data for f in posts[0].files) == sorted(relay.images_served)
                description = posts[0].json["embeds"][0]["description"]
                assert "Variant 2 failed: the bot restarted while it was being made." in description
                jobs = await rows(
                    url,
                    "SELECT j.status, j.worker_id, j.result_message_id, q.state FROM jobs j JOIN quota_ledger q ON q.job_id = j.id"
                    " ORDER BY j.id",
                )
                message = int(posts[0].response["id"])
                assert [tuple(r) for r in jobs] == [
                    ("done", first.name, message, "committed"),
                    ("interrupted", first.name, None, "refunded"),
                    ("done", second.name, message, "committed"),
                ]
                assert "Traceback" not in cluster.logs()
            finally:
                await cluster.close()
