"""A request acknowledged ("Getting ready…") whose process died before its job was queued is
told, by whichever process finds it, in the member's language, and nothing is charged; fetching
the inputs is bounded in time, so a request still starting is never mistaken for a lost one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bot.jobs import make_queue, replies
from bot.jobs.replies import ORPHAN_S, ReplyStore
from bot.quota import Quota
from bot.secrets import Keyring
from cogs import intake
from tests import pg
from tests.conftest import make_image
from tests.test_bot_e2e import World, new_bot
from tests.test_bot_e2e import world as e2e_world
from tests.test_jobs import PLENTY, make_settings, new

backend, db_target, pg_server, db = pg.backend, pg.db_target, pg.pg_server, pg.db
API_KEY = "relay-secret-key-123456"


async def test_a_stored_token_without_a_job_is_handed_out_once_after_orphan_s(db: Any, data_dir: Path) -> None:
    store_ = ReplyStore(db, Keyring([Fernet(Fernet.generate_key())]))
    acked = time.time()
    await store_.put(111, application_id=9, token="tok-lost", acked_at=acked, channel_post=True, locale="zh-CN")
    await store_.put(222, application_id=9, token="tok-queued", acked_at=acked, channel_post=True)
    queue = make_queue(db, Quota(db), make_settings(data_dir), lambda job: asyncio.sleep(0))
    queued = new(1)
    queued.progress_message_id = 222  # stored with the job's row, in the same statement
    await queue.submit(queued, credits=1, rules=PLENTY)

    assert await store_.orphans(now=acked + ORPHAN_S - 5) == []  # may still be fetching its inputs
    found = await store_.orphans(now=acked + ORPHAN_S + 1)
    assert [(mid, r.token, r.locale) for mid, r in found] == [(111, "tok-lost", "zh-CN")]
    assert await store_.orphans(now=acked + ORPHAN_S + 2) == []  # one process tells the member, once
    assert (await store_.get(222)) is not None  # the queued one's token stays for its runner


def lost_notices(w: World, since: int) -> list[Any]:
    return [c for c in w.dd.find("PATCH", r"^/webhooks/\d+/[^/]+/messages/(@original|\d+)$", since=since) if c.status < 300]


@contextlib.asynccontextmanager
async def told_after_a_restart(w: World, progress: dict[str, Any]) -> AsyncIterator[Any]:
    """A new bot on the same data: it tells the member, once and in Chinese, that the request
    whose progress message this is was lost, and nothing was charged."""
    mark = w.dd.mark()
    second = new_bot(w.relay, w.data_dir)
    async with w.dd.running(second):
        for _ in range(250):
            if lost_notices(w, mark):
                break
            await asyncio.sleep(0.02)
        (notice,) = lost_notices(w, mark)
        assert notice.path.endswith("/messages/@original")
        assert "请求丢失" in notice.json["content"] and "没有扣除积分" in notice.json["content"]
        assert "⏳" not in w.dd.messages[int(progress["id"])]["content"]
        assert await second.services.quota.totals() == {"reserved": 0, "committed": 0, "refunded": 0}
        yield second


async def test_a_request_lost_while_fetching_its_images_is_told_in_chinese_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with e2e_world(tmp_path) as (w, first):
        w.dd.cdn_delay = 3.0  # the reference image is slow to arrive...
        att = w.dd.add_attachment(make_image(64, 64), "cat.png", "image/png")
        inter = await w.imagine(prompt="一只猫", image1=att, locale="zh-CN")
        for _ in range(250):
            if w.dd.downloads:
                break
            await asyncio.sleep(0.02)
        assert w.dd.downloads, "the bot began fetching the image"
        # ...and the process stops then: acknowledged, never queued (a kill -9 leaves the same rows).
        await first.close()
        progress = w.dd.original_message(inter)
        assert progress is not None and "⏳" in progress["content"]
        monkeypatch.setattr(replies, "ORPHAN_S", 0.0)  # instead of waiting 3 minutes
        async with told_after_a_restart(w, progress) as second:
            assert await second.get_cog("Imagine").lost.sweep() == 0  # told once  # type: ignore[union-attr]


async def test_a_request_whose_process_died_right_after_the_acknowledgement_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrowest window: Discord took the acknowledgement (the member sees "Getting
    ready…") and the process stopped before it heard back, so before it knew the progress
    message. The token was stored before the acknowledgement: another process tells the member."""
    async with e2e_world(tmp_path) as (w, first):
        w.dd.callback_delay = 3.0
        inter = await w.imagine(prompt="一只猫", locale="zh-CN")
        for _ in range(250):
            if w.dd.original_message(inter) is not None:
                break
            await asyncio.sleep(0.02)
        progress = w.dd.original_message(inter)
        assert progress is not None and "⏳" in progress["content"]
        await first.close()  # before the callback's answer came back
        w.dd.callback_delay = 0.0
        monkeypatch.setattr(replies, "ORPHAN_S", 0.0)
        async with told_after_a_restart(w, progress):
            assert not w.relay.requests


async def test_a_refused_request_leaves_no_token_behind(tmp_path: Path) -> None:
    """The token is stored once the checks passed; a request they refuse (answered privately,
    nothing charged) stores none, so no sweep ever edits a message about it."""
    async with e2e_world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="four castles", model="gemini-3-pro-image-preview", size="4K", count=4)  # over 20 credits
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64 and "credits" in json.dumps(ack.json)
        for _ in range(100):
            if not await bot.services.db.execute_fetchall("SELECT 1 FROM job_replies"):
                break
            await asyncio.sleep(0.02)
        assert not await bot.services.db.execute_fetchall("SELECT 1 FROM job_replies")
        assert not w.relay.requests


async def test_images_that_never_arrive_are_refused_in_time_and_charge_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "INTAKE_TIMEOUT_S", 0.5)
    async with e2e_world(tmp_path) as (w, bot):
        w.dd.cdn_delay = 5.0
        att = w.dd.add_attachment(make_image(64, 64), "cat.png", "image/png")
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a cat", image1=att)
        call = await w.dd.wait_for(
            "PATCH", r"/messages/@original$", since=mark, predicate=lambda c: "too long" in json.dumps(c.json), timeout=10
        )
        assert "nothing was started or charged" in json.dumps(call.json)
        assert w.dd.original_message(inter) is not None
        assert await bot.services.quota.totals() == {"reserved": 0, "committed": 0, "refunded": 0}
        assert not w.relay.requests
