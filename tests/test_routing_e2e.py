"""Honest capabilities with routing, end to end (the real bot, the Discord and relay doubles, a
real SQLite file): an option the first relay's format cannot carry sends the job to a later
relay that can; only when none can is the member refused, before any credit is reserved; a
failover never lands on a relay that would drop an option; per-size model names follow the
size asked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bot.relay.types import SIZE_SEP
from tests.doubles.relay_double import Behaviour
from tests.test_creative_e2e import PRO, World, world

RELAY_ENV = {"NB_ALLOW_PRIVATE_RELAYS": "1", "NB_RETRY_ATTEMPTS": "1"}
KEY = "creative-relay-key-123456"  # the relay double's key (tests.test_creative_e2e.API_KEY)


async def add_relays(w: World, *dialects: str, aliases: dict[str, str] | None = None) -> None:
    """This server's own relays, in this failover order, all served by the one relay double
    (it answers every dialect on its own paths)."""
    for i, dialect in enumerate(dialects):
        auth = "x-goog-api-key" if dialect == "gemini" else "bearer"
        await w.bot.services.relays.add(
            w.gid, name=f"r{i + 1}-{dialect}", base_url=w.relay.url, api_key=KEY, dialect=dialect, auth=auth, model_aliases=aliases
        )


async def refusal(w: World, **options: object) -> str:
    mark = w.dd.mark()
    inter = await w.imagine(**options)
    ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
    assert ack.json["data"]["flags"] & 64  # ephemeral
    return json.dumps(ack.json, ensure_ascii=False)


async def test_a_ratio_skips_the_chat_relay_first_in_line_and_goes_to_the_gemini_one(tmp_path: Path) -> None:
    async with world(tmp_path, **RELAY_ENV) as w:
        await add_relays(w, "openai-chat", "gemini")
        mark = w.dd.mark()
        await w.imagine(prompt="a wide valley", aspect_ratio="16:9")
        post = await w.result_post(mark)
        assert [r.dialect for r in w.relay.requests] == ["gemini"] and w.image_config()["aspectRatio"] == "16:9"
        assert "16:9" in json.dumps(post.json["embeds"][0])

        mark = w.dd.mark()
        await w.imagine(prompt="a narrow valley")  # nothing the chat relay lacks: the admin's order holds
        await w.result_post(mark)
        assert w.relay.requests[-1].dialect == "openai-chat"


async def test_refused_before_any_credit_only_when_no_relay_can(tmp_path: Path) -> None:
    async with world(tmp_path, **RELAY_ENV) as w:
        await add_relays(w, "openai-chat", "openai-images")
        said = await refusal(w, prompt="today's news as a poster", model=PRO, search="web", locale="zh-CN")
        assert "本服务器的中转站都无法满足Google 搜索" in said and "未扣除积分" in said
        said = await refusal(w, prompt="a tall tower", aspect_ratio="9:16", model=PRO, search="web")
        assert "None of this server's relays can honour Google Search" in said  # what none can, not what one lacks
        await asyncio.sleep(0.2)
        assert w.relay.requests == [] and (await w.bot.services.quota.totals())["reserved"] == 0

        # The ratio alone: the images relay carries it, so the job goes there.
        mark = w.dd.mark()
        await w.imagine(prompt="a tall tower", aspect_ratio="9:16")
        await w.result_post(mark)
        assert w.relay.requests[-1].dialect == "openai-images" and w.relay.requests[-1].json["aspect_ratio"] == "9:16"


async def test_a_failover_skips_a_relay_that_would_drop_the_ratio(tmp_path: Path) -> None:
    async with world(tmp_path, **RELAY_ENV) as w:
        await add_relays(w, "gemini", "openai-chat", "gemini")
        w.relay.enqueue(Behaviour("error", status=503))  # the first relay fails, retryable
        mark = w.dd.mark()
        await w.imagine(prompt="a wide valley", aspect_ratio="21:9")
        post = await w.result_post(mark)
        assert [r.dialect for r in w.relay.requests] == ["gemini", "gemini"]  # never the chat relay
        jobs = [j for j in [await w.bot.services.get_job(1)] if j]
        for _ in range(50):
            if jobs[0].relay_name:
                break
            await asyncio.sleep(0.05)
            jobs = [j for j in [await w.bot.services.get_job(1)] if j]
        assert jobs[0].relay_name == "r3-gemini" and "21:9" in json.dumps(post.json["embeds"][0])


async def test_a_thread_edit_failing_over_to_an_openai_relay_says_the_conversation_was_not_sent(tmp_path: Path) -> None:
    async with world(tmp_path, **RELAY_ENV) as w:
        await add_relays(w, "gemini", "openai-images")
        mark = w.dd.mark()
        await w.imagine(prompt="a red kite")
        await w.result_post(mark)
        thread = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        channel = w.dd.channels[int(thread.response["id"])]
        # The bot's hint in the thread comes once the thread is bound to the picture's conversation.
        await w.dd.wait_for("POST", rf"^/channels/{channel['id']}/messages$", since=mark)
        w.relay.enqueue(Behaviour("error", status=503))
        mark = w.dd.mark()
        await w.dd.post_message(channel, w.alice, f"<@{w.bot.user.id}> make it blue")
        edited = await w.dd.wait_for(
            "POST", rf"^/channels/{channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300
        )
        assert [r.dialect for r in w.relay.requests[-2:]] == ["gemini", "openai-images"]
        assert len(w.relay.requests[-1].uploads) == 1  # the latest picture, as an input
        assert "cannot carry the conversation" in json.dumps(edited.json["embeds"][0], ensure_ascii=False)


async def test_per_size_model_names_follow_the_size_asked(tmp_path: Path) -> None:
    aliases = {PRO: "nano-banana-pro", f"{PRO}{SIZE_SEP}2K": "nano-banana-pro-2k", f"{PRO}{SIZE_SEP}4K": "nano-banana-pro-4k"}
    async with world(tmp_path, **RELAY_ENV) as w:
        await add_relays(w, "openai-images", aliases=aliases)
        sent = []
        for size in ("1K", "2K", "4K"):
            mark = w.dd.mark()
            await w.imagine(prompt=f"a lighthouse at {size}", model=PRO, size=size)
            await w.result_post(mark)
            sent.append(w.relay.requests[-1].json["model"])
        assert sent == ["nano-banana-pro", "nano-banana-pro-2k", "nano-banana-pro-4k"]
