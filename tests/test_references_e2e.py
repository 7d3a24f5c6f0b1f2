"""More references, end to end (the real bot, the Discord double's forms with file uploads, the
relay double): /imagine's four slots plus a form for ten more reach the relay as 14 inline
pictures in order, byte for byte; the message command "Imagine with these images" takes a
message's pictures; too many is refused with the model's guidance before anything is charged;
the OpenAI formats carry them too (Images edits up to six, else the job goes to a relay that
takes more)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from tests.conftest import make_image
from tests.test_bot_e2e import modal_ids
from tests.test_creative_e2e import PRO, World, custom_ids, world
from tests.test_routing_e2e import RELAY_ENV, add_relays


def pictures(w: World, count: int, start: int = 0) -> list[tuple[bytes, dict[str, Any]]]:
    """``count`` distinct small PNGs, each stored as a Discord attachment."""
    out = []
    for i in range(start, start + count):
        data = make_image(24 + i, 20 + i, "PNG", color=(10 * i, 200 - 5 * i, 40))
        out.append((data, w.dd.add_attachment(data, f"ref{i + 1}.png", "image/png")))
    return out


def gemini_inputs(w: World) -> list[bytes]:
    parts = w.relay.requests[-1].json["contents"][-1]["parts"]
    return [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]


async def open_form(w: World, inter: dict[str, Any]) -> dict[str, Any]:
    await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
    modal = w.dd.last_modal()
    assert modal is not None
    return modal


async def submit(w: World, modal: dict[str, Any], files: list[dict[str, Any]], text: str | None = None) -> dict[str, Any]:
    ids = modal_ids(modal)
    values: dict[str, Any] = {ids[19]: files}
    if text is not None:
        values[ids[4]] = text
    payload = w.dd.modal_submit_interaction(modal["custom_id"], values, channel=w.channel, user=w.alice, modal=modal)
    return await w.dd.interact(payload)


async def test_four_slots_and_ten_from_the_form_reach_the_relay_as_fourteen_in_order(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        refs = pictures(w, 14)
        slots = {f"image{i + 1}": att for i, (_data, att) in enumerate(refs[:4])}
        inter = await w.imagine(prompt="all of these friends at one table", model=PRO, more_images=True, **slots)
        modal = await open_form(w, inter)
        said = json.dumps(modal, ensure_ascii=False)
        assert "14 in all" in said and "6 objects" in said and "5 people" in said  # the model's guidance on the form
        assert any(c.get("max_values") == 10 for c in _components(modal))
        mark = w.dd.mark()
        await submit(w, modal, [att for _data, att in refs[4:]])
        post = await w.result_post(mark)
        assert gemini_inputs(w) == [data for data, _att in refs]  # 14, in order, byte-exact
        assert "keeps up to 5 people consistent" in json.dumps(post.json["embeds"][0])
        await asyncio.sleep(0.3)
        assert (await w.bot.services.quota.totals())["committed"] == 3  # one Pro picture

        # Re-roll sends the same fourteen again; a message in the result's thread replays them as history.
        message = w.dd.messages[int(post.response["id"])]
        reroll = next(i for i in custom_ids(message) if i.startswith("nb:reroll:"))
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(message, reroll, user=w.alice))
        await w.result_post(mark)
        assert gemini_inputs(w) == [data for data, _att in refs]
        thread = w.dd.find("POST", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}/threads$")[0]
        channel = w.dd.channels[int(thread.response["id"])]
        # The bot's hint in the thread comes once the thread is bound to the picture's conversation.
        await w.dd.wait_for("POST", rf"^/channels/{channel['id']}/messages$")
        mark = w.dd.mark()
        await w.dd.post_message(channel, w.alice, f"<@{w.bot.user.id}> now at night")
        await w.dd.wait_for(
            "POST", rf"^/channels/{channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300
        )
        contents = w.relay.requests[-1].json["contents"]
        first_turn = [base64.b64decode(p["inlineData"]["data"]) for p in contents[0]["parts"] if "inlineData" in p]
        assert first_turn == [data for data, _att in refs] and contents[-1]["parts"][0]["text"].endswith("now at night")


async def test_more_than_the_model_takes_is_refused_with_its_guidance_and_nothing_is_charged(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        refs = pictures(w, 15)
        slots = {f"image{i + 1}": att for i, (_data, att) in enumerate(refs[:4])}
        inter = await w.imagine(prompt="too many friends", model=PRO, more_images=True, locale="zh-CN", **slots)
        modal = await open_form(w, inter)
        mark = w.dd.mark()
        answer = await submit(w, modal, [att for _data, att in refs[4:]])
        ack = await w.dd.wait_for("POST", rf"^/interactions/{answer['id']}/", since=mark)
        said = json.dumps(ack.json, ensure_ascii=False)
        assert ack.json["data"]["flags"] & 64 and "你提供了 15 张" in said and "5 张人物" in said and "未扣除积分" in said
        await asyncio.sleep(0.2)
        assert w.relay.requests == [] and (await w.bot.services.quota.totals())["reserved"] == 0


async def test_imagine_with_these_images_takes_the_messages_pictures_and_more_from_the_form(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        refs = pictures(w, 5)
        message = await w.dd.post_message(w.channel, w.alice, "my cats", attachments=[att for _d, att in refs[:3]])
        inter = await w.dd.interact(w.dd.message_command_interaction("Imagine with these images", message, user=w.alice))
        modal = await open_form(w, inter)
        mark = w.dd.mark()
        await submit(w, modal, [att for _d, att in refs[3:]], text="these cats as a band")
        post = await w.result_post(mark)
        assert gemini_inputs(w) == [data for data, _att in refs]
        assert w.relay.requests[-1].json["contents"][-1]["parts"][0]["text"] == "these cats as a band"
        assert "these cats as a band" in post.json["embeds"][0]["description"]

        # A message with more pictures than the member's model takes is refused at once.
        await w.bot.services.preferences.set(w.gid, w.uid, "model", "gemini-2.5-flash-image")
        message = await w.dd.post_message(w.channel, w.alice, "many", attachments=[att for _d, att in refs[:4]])
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.message_command_interaction("Imagine with these images", message, user=w.alice))
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4 and ack.json["data"]["flags"] & 64 and "at most 3" in json.dumps(ack.json)


async def test_the_openai_formats_carry_many_references_and_images_edits_route_past_six(tmp_path: Path) -> None:
    async with world(tmp_path, **RELAY_ENV) as w:
        await add_relays(w, "openai-images", "openai-chat")
        refs = pictures(w, 10)
        slots = {f"image{i + 1}": att for i, (_data, att) in enumerate(refs[:4])}
        # Six: the Images edits endpoint takes them, as repeated image[] fields, in order.
        inter = await w.imagine(prompt="six things", model=PRO, more_images=True, **slots)
        mark = w.dd.mark()
        await submit(w, await open_form(w, inter), [att for _d, att in refs[4:6]])
        await w.result_post(mark)
        sent = w.relay.requests[-1]
        assert sent.dialect == "openai-images" and [u.name for u in sent.uploads] == ["image[]"] * 6
        assert [u.data for u in sent.uploads] == [data for data, _att in refs[:6]]
        # Ten: more than an edit takes, so the chat relay (which takes every picture) makes it.
        inter = await w.imagine(prompt="ten things", model=PRO, more_images=True, **slots)
        mark = w.dd.mark()
        await submit(w, await open_form(w, inter), [att for _d, att in refs[4:]])
        await w.result_post(mark)
        sent = w.relay.requests[-1]
        urls = [p["image_url"]["url"] for p in sent.json["messages"][-1]["content"] if p.get("type") == "image_url"]
        assert sent.dialect == "openai-chat" and [base64.b64decode(u.split(",", 1)[1]) for u in urls] == [d for d, _a in refs]


def _components(modal: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(modal.get("components", []))
    return found
