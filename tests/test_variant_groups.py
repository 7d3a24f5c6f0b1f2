"""The variant-group store on SQLite and on a throw-away PostgreSQL: the group survives its
connection (a restart), and of variants ending at once on separate connections (processes)
exactly one is told to post the message, with every slot."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.store import write
from bot.variant_groups import KEEP_S, SlotRecord, VariantGroupStore
from tests import pg

backend, db_target, pg_server, open_db = pg.backend, pg.db_target, pg.pg_server, pg.open_db

GROUP = 1_577_000_000_000_000_001  # a Discord snowflake: BIGINT on PostgreSQL


async def test_a_group_outlives_its_connection_and_the_last_slot_gets_every_slot(open_db: Any) -> None:
    first = VariantGroupStore(await open_db())
    await first.expect(GROUP, [11, 12, 13])
    picture = SlotRecord(1, 11, turn_id=5, shown={"width": 64, "model": "m", "text": "是"}, elapsed=1.5, relay_name="main")
    assert await first.done(GROUP, picture, 3) is None
    assert await first.done(GROUP, SlotRecord(2, 12, error={"key": "error.no_image.blocked", "params": {}}), 3) is None
    await first.db.close()

    again = VariantGroupStore(await open_db())  # "after the restart"
    assert await again.job_ids(GROUP) == [11, 12, 13] and await again.ended(GROUP) == 2
    assert await again.done(GROUP, SlotRecord(2, 12), 3) is None  # a slot recorded twice counts once
    slots = await again.done(GROUP, SlotRecord(3, 13, turn_id=7), 3)
    assert slots is not None and [s.index for s in slots] == [1, 2, 3]
    assert slots[0] == picture and slots[1].error == {"key": "error.no_image.blocked", "params": {}} and slots[2].turn_id == 7
    assert await again.done(GROUP, SlotRecord(2, 12), 3) is None  # claimed by 13: nobody else posts
    # 13's process died while posting; the job, found interrupted, ends again: it posts after all.
    assert await again.done(GROUP, SlotRecord(3, 13, turn_id=7), 3) is not None
    await again.posted(GROUP, 99)
    assert await again.message_id(GROUP) == 99 and await again.ended(GROUP) == 0
    assert await again.done(GROUP, SlotRecord(3, 13, turn_id=7), 3) is None  # posted: never twice


async def test_of_variants_ending_at_once_in_separate_processes_one_posts(open_db: Any) -> None:
    stores = [VariantGroupStore(await open_db()) for _ in range(4)]
    await stores[0].expect(GROUP, [1, 2, 3, 4])
    results = await asyncio.gather(*(s.done(GROUP, SlotRecord(i + 1, i + 1, turn_id=i), 4) for i, s in enumerate(stores)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and [s.index for s in winners[0]] == [1, 2, 3, 4]


async def test_a_cancelled_group_is_forgotten_and_says_which_slots_had_ended(open_db: Any) -> None:
    groups = VariantGroupStore(await open_db())
    await groups.expect(GROUP, [1, 2])
    await groups.done(GROUP, SlotRecord(1, 1, turn_id=1), 2)
    assert [r.job_id for r in await groups.forget(GROUP)] == [1]  # its picture is to be refunded
    assert await groups.job_ids(GROUP) == [] and await groups.ended(GROUP) == 0


async def test_groups_older_than_a_week_are_dropped_when_a_new_one_starts(open_db: Any) -> None:
    now = [1_800_000_000.0]
    groups = VariantGroupStore(await open_db(), clock=lambda: now[0])
    await groups.expect(GROUP, [1, 2])
    await groups.done(GROUP, SlotRecord(1, 1, turn_id=1), 2)
    now[0] += KEEP_S + 60
    await groups.expect(GROUP + 1, [3])
    assert await groups.job_ids(GROUP) == [] and await groups.ended(GROUP) == 0 and await groups.job_ids(GROUP + 1) == [3]


async def test_a_restart_mid_group_still_posts_one_message_with_every_picture(tmp_path: Any) -> None:
    """Four variants, one at a time (the member's one running job): two end before the bot
    stops, two run after it starts again; the second bot posts one message with all four."""
    import json as _json

    from tests import e2e
    from tests.doubles.discord_double import DiscordDouble
    from tests.doubles.relay_double import Behaviour, RelayDouble
    from tests.test_creative_e2e import API_KEY, World, custom_ids, variants_posted

    with RelayDouble(api_key=API_KEY) as relay:
        relay.enqueue(
            Behaviour("image", signature="sig-1"),
            Behaviour("slow", delay=0.5, signature="sig-2"),
            Behaviour("image", signature="sig-3"),
            Behaviour("image", signature="sig-4"),
        )
        async with DiscordDouble() as dd:
            first = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            w = World(dd, relay, first)
            mark = dd.mark()
            async with dd.running(first):
                await w.imagine(prompt="four paper boats", count=4)
                for _ in range(200):
                    if len(relay.requests) >= 2:
                        break
                    await asyncio.sleep(0.02)
                # Stop between jobs, as a graceful restart does: variant 2 (in flight) ends, 3 and 4 stay queued.
                await first.services.jobs.stop(grace=10)
            assert len(relay.requests) == 2
            assert not dd.find("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark)  # nothing posted yet

            second = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            w.bot = second
            async with dd.running(second):
                post = await variants_posted(w, mark, 4)
                assert len(relay.requests) == 4 and sorted(f.data for f in post.files) == sorted(relay.images_served)
                assert sum(i.startswith("nb:edit:") for i in custom_ids(post.json)) == 4
                labels = [e["image"]["url"] for e in post.json["embeds"]]
                assert len(labels) == 4 and "failed" not in _json.dumps(post.json["embeds"][0])
                await asyncio.sleep(0.3)
                assert len(dd.find("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark)) == 1  # one message
                totals = await second.services.quota.totals()
                assert totals["committed"] == 4 and totals["refunded"] == 0


async def test_a_variant_cut_by_a_restart_is_explained_and_the_others_still_come_together(tmp_path: Any) -> None:
    from tests import e2e
    from tests.doubles.discord_double import DiscordDouble
    from tests.doubles.relay_double import Behaviour, RelayDouble
    from tests.test_creative_e2e import API_KEY, World, variants_posted

    with RelayDouble(api_key=API_KEY) as relay:
        relay.enqueue(Behaviour("image"), Behaviour("slow", delay=5), Behaviour("image"), Behaviour("image"))
        async with DiscordDouble() as dd:
            first = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            w = World(dd, relay, first)
            mark = dd.mark()
            async with dd.running(first):
                await w.imagine(prompt="three paper boats and a lost one", count=4)
                for _ in range(200):
                    if len(relay.requests) >= 2:
                        break
                    await asyncio.sleep(0.02)
            # Closed with variant 2 in flight: it is interrupted (refunded) at the next start.
            second = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            w.bot = second
            async with dd.running(second):
                post = await variants_posted(w, mark, 3)
                assert len(post.files) == 3
                assert "Variant 2 failed: the bot restarted while it was being made." in post.json["embeds"][0]["description"]
                await asyncio.sleep(0.3)
                totals = await second.services.quota.totals()
                assert totals["committed"] == 3 and totals["refunded"] == 1

                # The cut variant offers Retry in the group's message (the delivered ones do not).
                message = dd.messages[int(post.response["id"])]
                buttons = {c["custom_id"]: c["label"] for row in message["components"] for c in row["components"]}
                (retry,) = [i for i in buttons if i.startswith("nb:retry:")]
                assert buttons[retry] == "2 · Retry"
                cut = await second.services.get_job(int(retry.split(":")[2]))
                assert cut is not None and cut.status == "interrupted" and cut.request["variant"] == 2
                asked = len(relay.requests)
                mark = dd.mark()
                await dd.interact(dd.component_interaction(message, retry, user=w.alice))
                redone = await w.dd.wait_for(
                    "POST", r"^/channels/\d+/messages$", since=mark, predicate=lambda c: len(c.files) == 1 and c.status < 300, timeout=20
                )
                assert len(relay.requests) == asked + 1 and redone.files[0].data == relay.images_served[-1]
                left = {c["custom_id"] for row in dd.messages[int(post.response["id"])]["components"] for c in row["components"]}
                assert retry not in left and sum(i.startswith("nb:edit:") for i in left) == 3  # only Retry went
                edit = sorted(i for i in left if i.startswith("nb:edit:"))[0]
                opened = await dd.interact(dd.component_interaction(dd.messages[int(post.response["id"])], edit, user=w.alice))
                answer = await dd.wait_for("POST", rf"^/interactions/{opened['id']}/", timeout=10)
                assert answer.json["type"] == 9  # the other buttons still work: Edit opens its form
                await asyncio.sleep(0.3)
                assert len(relay.requests) == asked + 1  # one click, one job
                assert (await second.services.quota.totals())["committed"] == 4


async def test_a_sibling_cancelled_alone_still_lets_the_others_post(open_db: Any) -> None:
    """Cancel takes the group one job after another; its process died after the first."""
    db = await open_db()
    ids = []
    for _ in range(3):
        rows = await write(db, "INSERT INTO jobs (guild_id, user_id, request, model, created_at) VALUES (1, 1, '{}', 'm', 0) RETURNING id")
        ids.append(int(rows[0][0]))
    groups = VariantGroupStore(db)
    await groups.expect(GROUP, ids)
    await write(db, "UPDATE jobs SET status = 'cancelled' WHERE id = ?", (ids[2],))
    assert await groups.done(GROUP, SlotRecord(1, ids[0], turn_id=1), 3) is None  # the second is still drawing
    slots = await groups.done(GROUP, SlotRecord(2, ids[1], turn_id=2), 3)
    assert slots is not None and [s.job_id for s in slots] == ids[:2]  # posted: the cancelled one is no slot
