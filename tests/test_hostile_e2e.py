"""Hostile relay answers through the whole bot (Discord double + relay double, in process):
the loop keeps serving every member, memory stays bounded, nothing leaks.

The loop-lag probe runs on the bot's own loop (the bot runs in this process), so its worst
gap is the worst stall any other member's command would have met."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.doubles import _hostile
from tests.doubles.relay_double import Behaviour
from tests.test_bot_e2e import API_KEY, world
from tests.test_hostile_relay import LoopLag

STALL_LIMIT = 0.05
RSS_LIMIT_MB = 700


@pytest.mark.parametrize(
    "attack,words",
    [
        ("junk_list", "refused"),
        ("million_parts", "refused"),
        ("deep_nesting", "refused"),
        ("stacked_gzip_bomb", "gzip, gzip"),
        ("gzip_bomb", "too large"),
    ],
)
async def test_a_hostile_answer_is_explained_refunded_and_never_stalls_the_bot(tmp_path: Path, attack: str, words: str) -> None:
    _hostile.build(attack, API_KEY)  # built before anything is measured
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("hostile", attack=attack))  # one: a retry would get a picture
        mark = w.dd.mark()
        async with LoopLag() as lag:
            await w.imagine(prompt="a lighthouse")
            bystander = await w.imagine(user=w.bob, prompt="a cat")  # another member, meanwhile
            failed = await w.dd.wait_for(
                "PATCH",
                r"/messages/@original$",
                since=mark,
                timeout=60,
                predicate=lambda c: words in json.dumps((c.json or {}).get("embeds") or []),
            )
        ack = await w.dd.wait_for("POST", rf"^/interactions/{bystander['id']}/", since=mark)
        text = failed.json["embeds"][0]["description"]
        assert "Traceback" not in text and API_KEY not in json.dumps(failed.json)
        assert ack.status < 300
        grown = lag.rss_growth
        print(f"\n{attack}: worst loop stall {lag.worst * 1000:.1f} ms, peak RSS growth {grown:.0f} MB")
        assert lag.worst < STALL_LIMIT, f"the loop stalled {lag.worst * 1000:.1f} ms"
        assert grown < RSS_LIMIT_MB
        hostile_requests = [r for r in w.relay.requests if r.behaviour and r.behaviour.kind == "hostile"]
        assert len(hostile_requests) == 1  # refused: not asked again
        await w.result_post(since=mark)  # the bystander's picture still arrives
        for _ in range(50):  # the bystander's credits are committed just after its post
            totals = await bot.services.quota.totals()
            if totals["reserved"] == 0:
                break
            await asyncio.sleep(0.1)
        assert totals["refunded"] == 1 and totals["reserved"] == 0 and totals["committed"] == 1


async def test_the_key_in_a_successful_answers_text_never_reaches_the_result(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("hostile", attack="key_in_text"))
        mark = w.dd.mark()
        await w.imagine(prompt="a lighthouse")
        post = await w.result_post(since=mark)
        shown = json.dumps(post.json, ensure_ascii=False)
        assert "Here is your picture" in shown  # the model's words are shown...
        assert API_KEY not in shown and API_KEY[:8] not in shown and "***" in shown  # ...not the key
