"""A process killed after Discord took its picture's post but before it heard back: the next
process must not post that picture a second time, nor refund a picture the member has.

The Discord double keeps the post's answer back (``post_delay``) after the message exists; the
bot is closed then, as a kill would leave it (the job row still ``delivering``). A second bot on
the same data plays the restart. Discord's ``enforce_nonce`` (the double does the same) returns
the message a nonce already made instead of making another."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any

import pytest

from bot.app import NanoBananaBot
from bot.jobs import records
from tests.test_bot_e2e import World, new_bot, world


def pictures(w: World) -> list[dict[str, Any]]:
    """The messages with pictures in the world's channel, as the members see it."""
    return [m for m in w.dd.messages.values() if m["channel_id"] == w.channel["id"] and m["attachments"]]


async def until(check: Any, what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def jobs(bot: NanoBananaBot) -> list[tuple[int, str, int | None, int]]:
    rows = await bot.services.db.execute_fetchall("SELECT id, status, result_message_id, redeliveries FROM jobs ORDER BY id")
    return [(int(r[0]), str(r[1]), r[2], int(r[3])) for r in rows]


def jobs_on_disk(w: World) -> list[tuple[int, str, int | None, int]]:
    """The jobs as a stopped bot left them in its SQLite file."""
    with contextlib.closing(sqlite3.connect(w.data_dir / "bot.sqlite3")) as db:
        rows = db.execute("SELECT id, status, result_message_id, redeliveries FROM jobs ORDER BY id").fetchall()
    return [(int(r[0]), str(r[1]), r[2], int(r[3])) for r in rows]


async def killed_after_the_post_landed(w: World, first: NanoBananaBot, count: int = 1) -> None:
    w.dd.post_delay = 3.0  # the message exists at once; the bot hears so 3 s later
    await w.imagine(prompt="a lighthouse at dusk", **({"count": count} if count > 1 else {}))

    async def posted() -> bool:
        return bool(pictures(w))

    await until(posted, "the picture's message")
    await first.close()  # before the post's answer came back: what a kill -9 leaves
    w.dd.post_delay = 0.0


async def test_a_picture_posted_as_its_process_died_is_shown_once_and_charged_once(tmp_path: Any) -> None:
    async with world(tmp_path) as (w, first):
        await killed_after_the_post_landed(w, first)
        (landed,) = pictures(w)
        [(job_id, status, message_id, _)] = jobs_on_disk(w)
        assert (status, message_id) == ("delivering", None)  # the process never heard back
        relay_calls = len(w.relay.requests)

        second = new_bot(w.relay, w.data_dir)
        async with w.dd.running(second):

            async def over() -> bool:
                return (await jobs(second))[0][1] not in ("queued", "running", "delivering")

            await until(over, "the job's end")
            assert await jobs(second) == [(job_id, "done", int(landed["id"]), 1)]
            assert pictures(w) == [landed]  # not posted a second time
            assert len(w.relay.requests) == relay_calls  # the stored picture, not a new one
            assert await second.services.quota.totals() == {"reserved": 0, "committed": 1, "refunded": 0}
            progress = [m for m in w.dd.messages.values() if "Uploading" in m["content"] or "⏳" in m["content"]]
            assert progress == []  # the progress message was cleared, as after any delivery
            turn = await second.services.conversations.turn_by_message(int(landed["id"]))
            assert turn is not None  # a reply to the picture continues from it
            # Its thread opened once, on the picture, and the conversation knows it.
            assert int(landed["id"]) in w.dd.channels
            conversation = await second.services.conversations.get_conversation(turn.conversation_id)
            assert conversation is not None and conversation.thread_id == int(landed["id"])


async def test_a_post_that_never_landed_is_made_from_the_stored_picture(tmp_path: Any) -> None:
    """The process died before Discord took the post (its request never arrived): the next
    process posts the stored picture, charged once, without asking the relay again."""
    async with world(tmp_path) as (w, first):
        w.dd.post_delay = 3.0
        await w.imagine(prompt="a lighthouse at dusk")

        async def delivering() -> bool:
            return bool(await jobs(first)) and (await jobs(first))[0][1] == "delivering"

        await until(delivering, "the job's post")
        await first.close()
        w.dd.post_delay = 0.0
        landed = pictures(w)
        assert len(landed) == 1
        # Forget the message, as if the post had been cut before Discord made it.
        w.dd.messages.pop(int(landed[0]["id"]))
        second = new_bot(w.relay, w.data_dir)
        async with w.dd.running(second):

            async def over() -> bool:
                return (await jobs(second))[0][1] == "done"

            await until(over, "the job's end")
            (made,) = pictures(w)
            assert made["id"] != landed[0]["id"]
            assert await second.services.quota.totals() == {"reserved": 0, "committed": 1, "refunded": 0}
            assert len(w.relay.requests) == 1


async def test_a_picture_lost_with_its_process_past_the_nonce_window_is_refunded(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past Discord's few minutes a second post could not be told from the first: refunded,
    with Retry, as before."""
    monkeypatch.setattr(records, "REDELIVER_WINDOW_S", 0.0)
    async with world(tmp_path) as (w, first):
        await killed_after_the_post_landed(w, first)
        second = new_bot(w.relay, w.data_dir)
        async with w.dd.running(second):

            async def over() -> bool:
                return (await jobs(second))[0][1] == "interrupted"

            await until(over, "the job's end")
            assert len(pictures(w)) == 1
            assert await second.services.quota.totals() == {"reserved": 0, "committed": 0, "refunded": 1}


async def test_a_variant_group_posted_as_its_poster_died_is_shown_once(tmp_path: Any) -> None:
    async with world(tmp_path) as (w, first):
        await killed_after_the_post_landed(w, first, count=2)
        (landed,) = pictures(w)
        assert len(landed["attachments"]) == 2
        second = new_bot(w.relay, w.data_dir)
        async with w.dd.running(second):

            async def over() -> bool:
                return all(s in ("done", "interrupted") for _i, s, _m, _r in await jobs(second))

            await until(over, "the group's end")
            await asyncio.sleep(0.5)  # a second post would come now
            assert pictures(w) == [landed]
            totals = await second.services.quota.totals()
            assert totals["reserved"] == 0 and totals["committed"] + totals["refunded"] == 2
