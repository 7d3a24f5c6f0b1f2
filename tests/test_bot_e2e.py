"""The real bot, end to end: discord.py against the Discord double (REST + gateway at the wire
level), the relay double as the operator's relay, a real SQLite file in a temp data dir."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import NanoBananaBot
from bot.quota import transaction
from tests import e2e
from tests.conftest import make_image
from tests.doubles.discord_double import DiscordDouble, Perm
from tests.doubles.relay_double import Behaviour, RelayDouble

API_KEY = "relay-secret-key-123456"
ALL_APP_PERMISSIONS = (1 << 53) - 1


def new_bot(relay: RelayDouble, data_dir: Path, **extra: str) -> NanoBananaBot:
    return e2e.new_bot(relay, data_dir, API_KEY, **extra)


class World:
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, data_dir: Path) -> None:
        self.dd = dd
        self.relay = relay
        self.data_dir = data_dir
        self.guild = dd.add_guild("Banana Lab")
        self.channel = dd.text_channels(self.guild)[0]
        self.alice = dd.add_member(self.guild, username="alice")
        self.bob = dd.add_member(self.guild, username="bob")

    async def imagine(self, user: Any = None, locale: str = "en-US", **options: Any) -> dict[str, Any]:
        payload = self.dd.slash_interaction("imagine", channel=self.channel, user=user or self.alice, options=options, locale=locale)
        return await self.dd.interact(payload)

    async def result_post(self, channel: dict[str, Any] | None = None, since: int = 0, timeout: float = 20.0):
        channel = channel or self.channel
        return await self.dd.wait_for(
            "POST",
            rf"^/channels/{channel['id']}/messages$",
            since=since,
            predicate=lambda c: bool(c.files) and c.status < 300,
            timeout=timeout,
        )


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: str) -> AsyncIterator[tuple[World, NanoBananaBot]]:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            bot = new_bot(relay, w.data_dir, **extra)
            async with dd.running(bot):
                yield w, bot


def user_id(member: dict[str, Any]) -> int:
    return int(member["user"]["id"] if "user" in member else member["id"])


async def test_imagine_acks_shows_progress_uploads_the_image_and_opens_a_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a banana astronaut", aspect_ratio="16:9")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4  # answered at once with the (public) progress message
        assert "Getting ready" in ack.json["data"]["content"] or "Queued" in ack.json["data"]["content"]

        post = await w.result_post(since=mark)
        assert post.authorization == f"Bot {w.dd.token}"  # bot token, not the interaction token
        image = post.files[0].data
        assert image == w.relay.images_served[-1]  # delivered as the relay made it (it fits)
        assert Image.open(io.BytesIO(image)).size[0] > Image.open(io.BytesIO(image)).size[1]  # 16:9
        embed = post.json["embeds"][0]
        assert "banana astronaut" in embed["description"]
        width, height = Image.open(io.BytesIO(image)).size
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Shape"] == f"16:9 · 1K · {width}×{height}"  # what came out, in pixels too
        custom_ids = [c["custom_id"] for row in post.json["components"] for c in row["components"]]
        assert any(cid.startswith("nb:reroll:") for cid in custom_ids)
        assert any(cid.startswith("nb:edit:") for cid in custom_ids)
        assert any(cid.startswith("nb:del:") for cid in custom_ids)

        # Progress was shown (queued / drawing) by editing the original response.
        edits = w.dd.find("PATCH", r"/messages/@original$", since=mark)
        texts = " ".join((c.json or {}).get("content") or "" for c in edits)
        assert "Drawing with" in texts or "Queued" in texts

        thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        assert thread_call.status == 201 or thread_call.status == 200

        sent = w.relay.requests[-1]
        assert sent.dialect == "gemini" and sent.auth_style == "x-goog-api-key"
        assert sent.json["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


async def test_a_result_with_no_ratio_asked_shows_the_shape_that_came_out(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        await w.imagine(prompt="a quiet harbour")
        post = await w.result_post(since=mark)
        width, height = Image.open(io.BytesIO(post.files[0].data)).size
        fields = {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}
        assert "default" not in fields["Shape"] and fields["Shape"].endswith(f"{width}×{height}")
        assert fields["Shape"].startswith("1:1 · ")


async def test_bad_option_combination_is_refused_ephemerally_and_nothing_is_sent(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a cat", model="gemini-2.5-flash-image", size="4K")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4
        assert ack.json["data"]["flags"] & 64  # ephemeral
        text = json.dumps(ack.json["data"], ensure_ascii=False)
        assert "leave the size out" in text.lower()
        await asyncio.sleep(0.3)
        assert w.relay.requests == []


async def test_zh_cn_invocation_answers_in_chinese(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="一只猫", model="gemini-2.5-flash-image", size="2K", locale="zh-CN")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        text = ack.json["data"]["embeds"][0]["description"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text), text
        # and the command itself is localized for zh-CN clients
        synced = {c["name"]: c for c in w.dd.synced_commands()}
        assert synced["imagine"]["name_localizations"]["zh-CN"] == "画图"


def thread_id_of(call: Any) -> int:
    return int(call.response["id"])


async def start_picture(w: World, signature: str, **options: Any) -> tuple[dict[str, Any], int]:
    """/imagine; returns the result message JSON and the id of the thread opened on it."""
    w.relay.enqueue(Behaviour("image", signature=signature))
    mark = w.dd.mark()
    await w.imagine(prompt=options.pop("prompt", "a red fox in snow"), **options)
    post = await w.result_post(since=mark)
    thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
    # The job is over once its progress message is removed.
    await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)
    return post.response, thread_id_of(thread_call)


async def say_in_thread(w: World, bot: NanoBananaBot, thread_id: int, text: str, signature: str, *, reply_to: Any = None) -> Any:
    w.relay.enqueue(Behaviour("image", signature=signature))
    mark = w.dd.mark()
    thread = w.dd.channels[thread_id]
    # No Message Content intent: the bot reads text that mentions it (or replies that ping it).
    await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> {text}", reply_to=reply_to)
    return await w.result_post(channel=thread, since=mark)


def model_signatures(contents: list[dict[str, Any]]) -> list[str]:
    return [
        p["thoughtSignature"]
        for c in contents
        if c.get("role") == "model"
        for p in c["parts"]
        if "thoughtSignature" in p and "inlineData" in p
    ]


async def test_thread_message_edits_with_history_and_reply_branches(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        second = await say_in_thread(w, bot, thread_id, "make it night time", "sig-second")
        sent = w.relay.requests[-1].json
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
        assert model_signatures(sent["contents"]) == ["sig-root"]  # the earlier model turn, signature kept
        assert sent["contents"][-1]["parts"][0]["text"] == "make it night time"

        await say_in_thread(w, bot, thread_id, "add a moon", "sig-third")
        latest_path = w.relay.requests[-1].json["contents"]
        assert model_signatures(latest_path) == ["sig-root", "sig-second"]

        # A reply to the *second* picture branches from it, not from the latest (third).
        await say_in_thread(w, bot, thread_id, "make it snow instead", "sig-branch", reply_to=second.response)
        branch_path = w.relay.requests[-1].json["contents"]
        assert model_signatures(branch_path) == ["sig-root", "sig-second"]
        assert branch_path[-1]["parts"][0]["text"] == "make it snow instead"
        assert branch_path != latest_path


async def test_reply_to_a_result_in_the_channel_continues_in_its_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        w.relay.enqueue(Behaviour("image", signature="sig-reply"))
        mark = w.dd.mark()
        await w.dd.post_message(w.channel, w.alice, "turn the fox blue", reply_to=root)  # a reply pings the bot
        post = await w.result_post(channel=w.dd.channels[thread_id], since=mark)
        assert post.files
        assert model_signatures(w.relay.requests[-1].json["contents"]) == ["sig-root"]


async def test_buttons_work_on_a_new_bot_instance_over_the_same_database(tmp_path: Path) -> None:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            first = new_bot(relay, w.data_dir)
            async with dd.running(first):
                root, _ = await start_picture(w, "sig-root")
            assert first.is_closed()

            second = new_bot(relay, w.data_dir)
            restart_mark = dd.mark()
            async with dd.running(second):
                # Same command definitions as last time: no sync (Discord rate-limits syncs).
                assert dd.find("PUT", r"^/applications/\d+/commands$", since=restart_mark) == []
                assert dd.find("PUT", r"^/applications/\d+/commands$")  # the first start did sync
                reroll = next(
                    c["custom_id"] for row in root["components"] for c in row["components"] if c["custom_id"].startswith("nb:reroll:")
                )
                before = len(relay.requests)
                mark = dd.mark()
                await dd.interact(dd.component_interaction(root, reroll, user=w.alice))
                post = await w.result_post(since=mark)
                assert post.files and len(relay.requests) == before + 1
                assert relay.requests[-1].json["contents"][0]["parts"][0]["text"] == "a red fox in snow"

                delete = next(
                    c["custom_id"] for row in post.response["components"] for c in row["components"] if c["custom_id"].startswith("nb:del:")
                )
                mark = dd.mark()
                # bob is neither the requester nor a moderator: refused, ephemerally
                inter = await dd.interact(dd.component_interaction(post.response, delete, user=w.bob))
                refusal = await dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
                assert refusal.json["data"]["flags"] & 64
                await dd.interact(dd.component_interaction(post.response, delete, user=w.alice))
                await dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}$", since=mark)


async def test_result_after_the_interaction_token_expired_is_still_delivered(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("slow", delay=1.0))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a slow, detailed castle")
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        w.dd.expire_interaction_tokens()  # as if 15 minutes had passed
        post = await w.result_post(since=mark)
        assert post.authorization == f"Bot {w.dd.token}"
        assert post.files[0].data == w.relay.images_served[-1]
        # the progress message is still cleaned up, through the bot token
        progress_id = w.dd.original_message(inter)["id"]
        await w.dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{progress_id}$", since=mark)


async def test_a_413_is_retried_smaller_and_still_delivered(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("image", width=1024, height=1024))
        w.dd.fail("POST", rf"^/channels/{w.channel['id']}/messages$", 413, {"message": "Request entity too large", "code": 40005})
        mark = w.dd.mark()
        await w.imagine(prompt="a detailed map")
        post = await w.result_post(since=mark)
        attempts = w.dd.find("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark)
        refused = [c for c in attempts if c.status == 413]
        assert refused and refused[0].files
        assert len(post.files[0].data) < len(refused[0].files[0].data)
        assert Image.open(io.BytesIO(post.files[0].data)).size == (1024, 1024) or "Scaled down" in json.dumps(post.json)


async def test_missing_thread_permission_still_delivers_the_result_with_a_note(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.dd.set_overwrite(w.channel, "bot", deny=Perm.CREATE_PUBLIC_THREADS)
        mark = w.dd.mark()
        await w.imagine(prompt="a quiet lake")
        post = await w.result_post(since=mark)
        assert post.files
        thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        assert thread_call.status == 403
        edit = await w.dd.wait_for("PATCH", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}$", since=mark)
        assert "Create Public Threads" in json.dumps(edit.json)


def modal_ids(modal: dict[str, Any]) -> dict[int, str]:
    """Component type -> custom_id in a modal (4: text input, 19: file upload)."""
    found: dict[int, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "custom_id" in node and "type" in node:
                found.setdefault(int(node["type"]), node["custom_id"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(modal.get("components", []))
    return found


async def test_edit_button_opens_a_modal_whose_instructions_edit_that_picture_in_its_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        edit_id = next(c["custom_id"] for row in root["components"] for c in row["components"] if c["custom_id"].startswith("nb:edit:"))
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(root, edit_id, user=w.alice))
        opened = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert opened.json["type"] == 9  # a modal
        modal = w.dd.last_modal()
        ids = modal_ids(modal)
        extra = w.dd.add_attachment(make_image(40, 40, "JPEG"), "hat.jpg", "image/jpeg")
        w.relay.enqueue(Behaviour("image", signature="sig-edit"))
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {ids[4]: "give the fox a hat", ids[19]: [extra]}, channel=w.channel, user=w.alice, modal=modal
            )
        )
        post = await w.result_post(channel=w.dd.channels[thread_id], since=mark)
        assert post.files
        sent = w.relay.requests[-1].json["contents"]
        assert model_signatures(sent) == ["sig-root"]
        last = sent[-1]["parts"]
        assert last[0]["text"] == "give the fox a hat"
        assert any(p.get("inlineData", {}).get("mimeType") == "image/jpeg" for p in last)  # the extra image went along


async def test_edit_image_context_menu_starts_from_any_messages_picture(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        photo = make_image(96, 64)
        att = w.dd.add_attachment(photo, "holiday.png", "image/png")
        msg = await w.dd.post_message(w.channel, w.bob, "look at this", attachments=[att])
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.message_command_interaction("Edit image", msg, user=w.alice))
        opened = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert opened.json["type"] == 9
        modal = w.dd.last_modal()
        ids = modal_ids(modal)
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {ids[4]: "make it a watercolour", ids[19]: []}, channel=w.channel, user=w.alice, modal=modal
            )
        )
        post = await w.result_post(since=mark)
        assert post.files
        parts = w.relay.requests[-1].json["contents"][-1]["parts"]
        import base64

        assert any(base64.b64decode(p["inlineData"]["data"]) == photo for p in parts if "inlineData" in p)


async def test_an_edit_on_a_pruned_picture_says_its_images_expired(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        import time as _time

        removed = await bot.services.images.prune(30, now=_time.time() + 31 * 86400)
        assert removed >= 1
        before = len(w.relay.requests)
        mark = w.dd.mark()
        thread = w.dd.channels[thread_id]
        await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> make it blue")
        call = await w.dd.wait_for(
            "PATCH", rf"^/channels/{thread_id}/messages/\d+$", since=mark, predicate=lambda c: "too old" in json.dumps(c.json), timeout=10
        )
        assert "/imagine" in json.dumps(call.json)
        assert len(w.relay.requests) == before  # nothing was sent


async def test_cancel_refunds_and_the_relay_answer_is_not_posted(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("slow", delay=3.0))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a very slow picture")
        progress = await w.dd.wait_for(
            "PATCH", r"/messages/@original$", since=mark, predicate=lambda c: "nb:cancel:" in json.dumps(c.json), timeout=10
        )
        cancel_id = next(c["custom_id"] for row in progress.json["components"] for c in row["components"])
        message = w.dd.original_message(inter)
        click = await w.dd.interact(w.dd.component_interaction(message, cancel_id, user=w.alice))
        answered = await w.dd.wait_for("POST", rf"^/interactions/{click['id']}/", since=mark)
        assert answered.json["type"] == 6  # answered at once (deferred), then the message says so
        edited = await w.dd.wait_for("PATCH", rf"^/webhooks/\d+/{click['token']}/messages/@original$", since=mark)
        assert "refunded" in edited.json["content"] and edited.json["components"] == []
        assert w.dd.messages[int(message["id"])]["content"] == edited.json["content"]
        totals = await bot.services.quota.totals()
        assert totals["reserved"] == 0 and totals["refunded"] >= 1
        await asyncio.sleep(3.5)
        assert not w.dd.find("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark)


async def test_autocomplete_offers_only_what_the_chosen_model_takes(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):

        async def choices(focused: str, **options: Any) -> list[str]:
            mark = w.dd.mark()
            inter = await w.dd.interact(
                w.dd.autocomplete_interaction(
                    "imagine", focused=focused, channel=w.channel, user=w.alice, options={"prompt": "x", **options}
                )
            )
            call = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
            assert call.json["type"] == 8
            return [c["value"] for c in call.json["data"]["choices"]]

        assert await choices("size", model="gemini-3-pro-image-preview") == ["1K", "2K", "4K"]
        assert "512" in await choices("size", model="gemini-3.1-flash-image-preview")
        assert await choices("size", model="gemini-2.5-flash-image") == [""]  # "fixed size" hint, nothing to pick
        flash_ratios = await choices("aspect_ratio", model="gemini-3.1-flash-image-preview")
        pro_ratios = await choices("aspect_ratio", model="gemini-3-pro-image-preview")
        assert "8:1" in flash_ratios and "8:1" not in pro_ratios
        assert await choices("aspect_ratio", model="gemini-3-pro-image-preview", aspect_ratio="16") == ["16:9", "9:16"]


async def test_grounded_result_links_its_sources_and_upscale_asks_for_a_bigger_size(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("image", grounding=[{"uri": "https://weather.example/sf", "title": "SF forecast"}]))
        mark = w.dd.mark()
        await w.imagine(prompt="today's weather in San Francisco as a chart", model="gemini-3-pro-image-preview", search="web", size="1K")
        post = await w.result_post(since=mark)
        assert w.relay.requests[-1].json["tools"] == [{"googleSearch": {}}]
        fields = {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}
        assert "[SF forecast](https://weather.example/sf)" in fields["Sources"]
        await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)

        upscale = [c["custom_id"] for row in post.json["components"] for c in row["components"] if c["custom_id"].startswith("nb:up:")]
        assert [u.rsplit(":", 1)[1] for u in upscale] == ["2K", "4K"]
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(post.response, upscale[-1], user=w.alice))
        thread_id = int(w.dd.find("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$")[-1].response["id"])
        up = await w.result_post(channel=w.dd.channels[thread_id], since=mark)
        sent = w.relay.requests[-1].json
        assert sent["generationConfig"]["imageConfig"]["imageSize"] == "4K"
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]  # the picture itself is the input
        assert "Upscale to 4K" in up.json["embeds"][0]["description"]


async def test_a_safety_block_is_explained_with_the_models_words_and_refunded(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("finish", reason="IMAGE_SAFETY", message="I can't draw that person."))
        mark = w.dd.mark()
        await w.imagine(prompt="a famous person doing something odd")
        call = await w.dd.wait_for(
            "PATCH",
            r"/messages/@original$",
            since=mark,
            predicate=lambda c: "safety" in json.dumps((c.json or {}).get("embeds")),
            timeout=15,
        )
        text = call.json["embeds"][0]["description"]
        assert "safety filter" in text and "Traceback" not in text
        assert call.json["components"] == []  # no Cancel left on a finished job
        await asyncio.sleep(0.2)
        totals = await bot.services.quota.totals()
        assert totals["reserved"] == 0 and totals["committed"] == 0 and totals["refunded"] == 1
        assert not w.dd.find("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark)


async def test_a_relay_that_stays_down_is_reported_in_chinese_refunded_and_retry_delivers_later(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.default = Behaviour("error", status=503, message="upstream overloaded")
        mark = w.dd.mark()
        inter = await w.imagine(prompt="一座灯塔", locale="zh-CN")
        call = await w.dd.wait_for(
            "PATCH", r"/messages/@original$", since=mark, predicate=lambda c: bool((c.json or {}).get("embeds")), timeout=60
        )
        text = call.json["embeds"][0]["description"]
        assert "503" in text and any("\u4e00" <= ch <= "\u9fff" for ch in text), text
        assert API_KEY not in json.dumps(call.json)
        await asyncio.sleep(0.2)
        assert (await bot.services.quota.totals())["refunded"] == 1
        # A failure that may not repeat offers Retry (a block does not: see the safety test).
        (retry,) = [c for row in call.json["components"] for c in row["components"]]
        assert retry["custom_id"].startswith("nb:retry:") and retry["label"] == "重试"
        w.relay.default = Behaviour("image")  # the relay is back
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(w.dd.original_message(inter), retry["custom_id"], user=w.alice, locale="zh-CN"))
        post = await w.result_post(since=mark)
        assert post.files
        assert w.relay.requests[-1].json["contents"][-1]["parts"][0]["text"] == "一座灯塔"
        await asyncio.wait_for(bot.services.jobs.join(), 10)  # the delivered job is recorded
        totals = await bot.services.quota.totals()
        assert totals["committed"] >= 1 and totals["reserved"] == 0


async def test_operator_limits_apply_to_servers_on_the_shared_relay(tmp_path: Path) -> None:
    async with world(tmp_path, NB_SHARED_USER_DAILY="1") as (w, bot):
        mark = w.dd.mark()
        await w.imagine(prompt="first picture")
        await w.result_post(since=mark)
        await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)
        mark = w.dd.mark()
        before = len(w.relay.requests)
        inter = await w.imagine(prompt="second picture")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64
        assert "<t:" in json.dumps(ack.json["data"])  # when the credits come back
        assert len(w.relay.requests) == before


async def test_a_restart_interrupts_the_running_job_refunds_it_and_offers_retry(tmp_path: Path) -> None:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            relay.enqueue(Behaviour("hang"))
            first = new_bot(relay, w.data_dir)
            async with dd.running(first):
                mark = dd.mark()
                inter = await w.imagine(prompt="a picture interrupted by a restart")
                for _ in range(500):  # until the relay is working on it
                    if relay.requests:
                        break
                    await asyncio.sleep(0.02)
                assert relay.requests
            # The bot stopped mid-job (same path as a crash: the row stays 'running').
            progress = dd.original_message(inter)

            second = new_bot(relay, w.data_dir)
            async with dd.running(second):
                # Told on the progress message through the interaction's token (kept across the
                # stop); where that is gone and Discord refuses a bot-token edit of an
                # interaction's response (this double does), as a new message replying to it.
                def offers_retry(c: Any) -> bool:
                    return c.status < 300 and "nb:retry:" in json.dumps(c.json)

                notice = await dd.wait_for("*", e2e.notice_paths(w.channel), since=mark, predicate=offers_retry, timeout=15)
                assert "restarted" in json.dumps(notice.json)
                assert notice.method == "POST" or int(notice.response["id"]) == int(progress["id"])
                if notice.method == "POST":  # a new notice: the stale "Drawing…" + Cancel message goes
                    await dd.wait_for("DELETE", rf"^/channels/{w.channel['id']}/messages/{progress['id']}$", since=mark)
                totals = await second.services.quota.totals()
                assert totals == {"reserved": 0, "committed": 0, "refunded": totals["refunded"]} and totals["refunded"] >= 1

                retry_id = next(c["custom_id"] for row in notice.json["components"] for c in row["components"])
                shown = dd.messages[int(notice.response["id"])]
                # A second member client still showing the button: its click, made now, sent later.
                stale_click = dd.component_interaction(shown, retry_id, user=w.alice)
                mark = dd.mark()
                await dd.interact(dd.component_interaction(shown, retry_id, user=w.alice))
                post = await w.result_post(since=mark)
                assert post.files
                assert relay.requests[-1].json["contents"][-1]["parts"][0]["text"] == "a picture interrupted by a restart"

            # Restarted again: a click on a stale copy of that notice (its button was taken) makes
            # no second job; the claim is in the database, not in the process that answered.
            third = new_bot(relay, w.data_dir)
            async with dd.running(third):
                asked = len(relay.requests)
                stale = await dd.interact(stale_click)
                await dd.wait_for("POST", rf"^/interactions/{stale['id']}/", timeout=10)
                assert "already retried" in json.dumps(dd.response_data(stale))
                await asyncio.sleep(0.5)
                assert len(relay.requests) == asked and len(await third.services.jobs.db.execute_fetchall("SELECT id FROM jobs")) == 2


# ---------------------------------------------------------------- review regressions


def button_id(message: dict[str, Any], prefix: str) -> str:
    return next(c["custom_id"] for row in message["components"] for c in row["components"] if c["custom_id"].startswith(prefix))


async def test_a_job_that_starts_at_once_shows_drawing_not_a_stale_queued_place(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("slow", delay=1.0))
        mark = w.dd.mark()
        await w.imagine(prompt="a lighthouse at dusk")
        await w.result_post(since=mark)
        # What the member saw on the progress message, in order, up to the upload.
        shown = [
            (c.json or {}).get("content") or ""
            for c in w.dd.find("PATCH", r"/messages/@original$", since=mark)
            if c.status < 300 and (c.json or {}).get("content")
        ]
        before_upload = shown[: next(i for i, s in enumerate(shown) if "Uploading" in s)]
        assert before_upload and "Drawing with" in before_upload[-1], shown
        drawing = next(i for i, s in enumerate(before_upload) if "Drawing with" in s)
        assert not any("Queued" in s for s in before_upload[drawing:]), shown


async def test_cancel_clicked_after_the_picture_was_posted_is_too_late_and_the_job_is_charged(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("slow", delay=1.0))
        # Discord keeps the thread creation waiting a moment (rate limited): the picture is out.
        w.dd.fail("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", 429, retry_after=1.5)
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a picture nearly done")
        progress = await w.dd.wait_for(
            "PATCH",
            r"/messages/@original$",
            since=mark,
            predicate=lambda c: c.status < 300 and "nb:cancel:" in json.dumps(c.json),
            timeout=10,
        )
        cancel_id = button_id(progress.json, "nb:cancel:")
        # Clicked while the button was still shown; it reaches the bot once the picture is posted.
        click = w.dd.component_interaction(w.dd.original_message(inter), cancel_id, user=w.alice)
        post = await w.result_post(since=mark)
        await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark, predicate=lambda c: c.status == 429)
        await w.dd.interact(click)
        answered = await w.dd.wait_for("POST", rf"^/interactions/{click['id']}/", since=mark)
        assert answered.json["type"] == 6  # deferred: nothing said yet
        said = await w.dd.wait_for("POST", rf"^/webhooks/\d+/{click['token']}$", since=mark)
        assert said.json["flags"] & 64 and said.json["content"] == "Too late to cancel: that picture is already being posted."
        # The job finishes normally: thread opened, progress removed, credits committed.
        await w.dd.wait_for(
            "POST", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}/threads$", since=mark, predicate=lambda c: c.status < 300
        )
        await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)
        await bot.services.jobs.join()
        totals = await bot.services.quota.totals()
        assert totals["committed"] == 1 and totals["refunded"] == 0 and totals["reserved"] == 0


async def test_requester_only_threads_also_bind_the_edit_upscale_and_reroll_buttons(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        second = await say_in_thread(w, bot, thread_id, "make it night time", "sig-second")
        await bot.services.jobs.join()
        before = len(w.relay.requests)
        for message, prefix in ((root, "nb:edit:"), (root, "nb:up:"), (second.response, "nb:reroll:")):
            mark = w.dd.mark()
            inter = await w.dd.interact(w.dd.component_interaction(message, button_id(message, prefix), user=w.bob))
            answer = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
            assert answer.json["type"] == 4 and answer.json["data"]["flags"] & 64, (prefix, answer.json)
            assert "Only the person who started this picture" in json.dumps(answer.json), prefix
        await asyncio.sleep(0.3)
        assert len(w.relay.requests) == before
        # Re-rolling the first picture is a new picture of bob's own, not a turn in alice's thread.
        mark = w.dd.mark()
        w.relay.enqueue(Behaviour("image", signature="sig-bob"))
        await w.dd.interact(w.dd.component_interaction(root, button_id(root, "nb:reroll:"), user=w.bob))
        post = await w.result_post(since=mark)
        assert f"<@{user_id(w.bob)}>" in post.json["content"]

        # When the server lets anyone continue a thread, bob's Edit opens the form.
        await bot.services.guilds.update(int(w.guild["id"]), lambda g: g.with_access(thread_mode="anyone"))
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(root, button_id(root, "nb:edit:"), user=w.bob))
        opened = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert opened.json["type"] == 9


async def test_edit_image_on_someone_elses_result_starts_a_new_picture_when_threads_are_requester_only(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.message_command_interaction("Edit image", root, user=w.bob))
        opened = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert opened.json["type"] == 9
        modal = w.dd.last_modal()
        ids = modal_ids(modal)
        w.relay.enqueue(Behaviour("image", signature="sig-bob"))
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {ids[4]: "paint it like Monet", ids[19]: []}, channel=w.channel, user=w.bob, modal=modal
            )
        )
        post = await w.result_post(since=mark)  # in the channel, not in alice's thread
        assert f"<@{user_id(w.bob)}>" in post.json["content"]
        sent = w.relay.requests[-1].json["contents"]
        assert [c["role"] for c in sent] == ["user"] and model_signatures(sent) == []  # alice's history is not replayed
        assert not w.dd.find("POST", rf"^/channels/{thread_id}/messages$", since=mark)


async def test_edit_image_works_in_the_bots_dm_through_a_members_own_install(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        synced = {c["name"]: c for c in w.dd.synced_commands()}
        assert sorted(synced["Edit image"]["contexts"]) == [0, 1, 2] == sorted(synced["imagine"]["contexts"])
        dm = w.dd.add_dm_channel(w.alice)
        att = w.dd.add_attachment(make_image(64, 64), "dm.png", "image/png", channel=dm)
        msg = await w.dd.post_message(dm, w.alice, "mine", attachments=[att])
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.message_command_interaction("Edit image", msg, user=w.alice))
        answer = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert answer.json["type"] == 9  # the edit form opens (tests/test_user_install_e2e.py: the rest)


async def test_a_button_that_fails_unexpectedly_still_answers_the_member(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, _ = await start_picture(w, "sig-root")
        await bot.services.jobs.join()
        # A job row whose request this version cannot read (e.g. written by older code).
        async with transaction(bot.services.db) as db:
            await db.execute("UPDATE jobs SET request = '{}'")
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(root, button_id(root, "nb:reroll:"), user=w.alice))
        answer = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert answer.json["type"] == 4 and answer.json["data"]["flags"] & 64
        assert "Something went wrong" in json.dumps(answer.json) and "Traceback" not in json.dumps(answer.json)


async def test_an_edit_whose_thread_was_locked_is_delivered_in_the_channel(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        w.dd.archive_thread(w.dd.channels[thread_id], locked=True)  # a moderator locked it
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(root, button_id(root, "nb:edit:"), user=w.alice))
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        modal = w.dd.last_modal()
        ids = modal_ids(modal)
        w.relay.enqueue(Behaviour("image", signature="sig-edit"))
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {ids[4]: "add a scarf", ids[19]: []}, channel=w.channel, user=w.alice, modal=modal
            )
        )
        post = await w.result_post(since=mark)
        assert post.files
        await bot.services.jobs.join()
        assert (await bot.services.quota.totals())["committed"] == 2


async def test_a_discord_permission_failure_on_delivery_is_explained_and_refunded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with world(tmp_path) as (w, bot):
        w.dd.set_overwrite(w.channel, "bot", deny=Perm.ATTACH_FILES)
        mark = w.dd.mark()
        # The interaction said the bot may post (the permission was taken away while it drew),
        # and the drawing outlived the interaction token, so no followup can carry it either.
        w.relay.enqueue(Behaviour("slow", delay=0.5))
        payload = w.dd.slash_interaction(
            "imagine",
            channel=w.channel,
            user=w.alice,
            options={"prompt": "a picture that cannot be attached"},
            app_permissions=ALL_APP_PERMISSIONS,
        )
        inter = await w.dd.interact(payload)
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        w.dd.expire_interaction_tokens()
        call = await w.dd.wait_for(
            "*", r"/messages", since=mark, predicate=lambda c: c.status < 300 and "missing a permission" in json.dumps(c.json), timeout=15
        )
        assert "missing a permission" in json.dumps(call.json)
        await bot.services.jobs.join()
        totals = await bot.services.quota.totals()
        assert totals["refunded"] == 1 and totals["committed"] == 0
        async with bot.services.db.execute("SELECT error_code FROM jobs") as cur:
            assert [r[0] for r in await cur.fetchall()] == ["deliver.discord_refused"]  # a reason for /admin usage
        assert not [r for r in caplog.records if r.exc_info], "a Discord refusal is a reason, not a traceback"


async def test_imagine_where_the_bot_cannot_attach_files_is_refused_at_once_and_nothing_is_sent(tmp_path: Path) -> None:
    # Discord tells the bot its channel permissions in each interaction (app_permissions): a
    # picture it could not post is refused before the relay is paid and the member waits.
    async with world(tmp_path) as (w, bot):
        w.dd.set_overwrite(w.channel, "bot", deny=Perm.ATTACH_FILES)
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a picture that cannot be attached")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4 and ack.json["data"]["flags"] & 64
        assert "attach_files" in json.dumps(ack.json["data"])
        await asyncio.sleep(0.3)
        assert w.relay.requests == []
        assert (await bot.services.quota.totals())["committed"] == 0


async def test_result_files_are_named_with_a_single_dot(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        await w.imagine(prompt="a lemon")
        post = await w.result_post(since=mark)
        name = post.files[0].filename
        assert re.fullmatch(r"nano-banana-\d+\.png", name), name  # not "nano-banana-1..png"
        assert post.json["embeds"][0]["image"]["url"] == f"attachment://{name}"


async def test_the_no_thread_note_keeps_the_upload_limit_note(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.dd.set_overwrite(w.channel, "bot", deny=Perm.CREATE_PUBLIC_THREADS)
        w.relay.enqueue(Behaviour("image", width=1024, height=1024))
        w.dd.fail("POST", rf"^/channels/{w.channel['id']}/messages$", 413, {"message": "Request entity too large", "code": 40005})
        mark = w.dd.mark()
        await w.imagine(prompt="a detailed map")
        post = await w.result_post(since=mark)
        assert "upload limit" in post.json["embeds"][0]["footer"]["text"]
        edit = await w.dd.wait_for("PATCH", rf"^/channels/{w.channel['id']}/messages/{post.response['id']}$", since=mark)
        footer = edit.json["embeds"][0]["footer"]["text"]
        assert "Create Public Threads" in footer and "upload limit" in footer


async def test_imagine_inside_a_thread_does_not_claim_a_missing_permission(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        thread = w.dd.add_thread(w.channel, "chat", owner=w.alice)
        mark = w.dd.mark()
        payload = w.dd.slash_interaction("imagine", channel=thread, user=w.alice, options={"prompt": "a teapot"})
        await w.dd.interact(payload)
        post = await w.result_post(channel=thread, since=mark)
        await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)
        await bot.services.jobs.join()
        notes = w.dd.find("PATCH", rf"^/channels/{thread['id']}/messages/{post.response['id']}$", since=mark)
        assert not any("Create Public Threads" in json.dumps(c.json) for c in notes)


async def test_queue_positions_stay_current_even_when_edits_are_rate_limited(tmp_path: Path) -> None:
    """Three members, one job at a time: the last one's message must end on 'position 1'
    before its turn, even though positions change faster than progress edits are allowed."""
    async with world(tmp_path, NB_MAX_JOBS="1") as (w, bot):
        carol = w.dd.add_member(w.guild, username="carol")
        # alice's picture is quick, bob's slow: carol moves from 2nd to 1st place within the
        # edit rate limit of her first "queued" message.
        w.relay.enqueue(Behaviour("slow", delay=0.6), Behaviour("slow", delay=4.0), Behaviour("slow", delay=0.1))
        mark = w.dd.mark()
        first = await w.imagine(user=w.alice, prompt="first")
        await w.dd.wait_for("POST", rf"^/interactions/{first['id']}/", since=mark)
        second = await w.imagine(user=w.bob, prompt="second")
        await w.dd.wait_for("POST", rf"^/interactions/{second['id']}/", since=mark)
        third = await w.imagine(user=carol, prompt="third")
        token = third["token"]

        def third_says(position: int):
            return lambda c: token in c.path and f"position {position}" in json.dumps(c.json)

        await w.dd.wait_for("PATCH", r"/messages/@original$", since=mark, predicate=third_says(2), timeout=10)
        await w.dd.wait_for("PATCH", r"/messages/@original$", since=mark, predicate=third_says(1), timeout=3.5)


async def test_a_failed_command_sync_does_not_keep_the_bot_offline(tmp_path: Path) -> None:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            dd.fail("PUT", r"^/applications/\d+/commands$", 403, {"message": "Missing Access", "code": 50001}, times=None)
            bot = new_bot(relay, w.data_dir)
            async with dd.running(bot):
                assert bot.is_ready()
                assert not (w.data_dir / "commands.sha256").exists()  # it will try again next start


async def test_an_unreadable_command_sync_answer_does_not_keep_the_bot_offline(tmp_path: Path) -> None:
    # An API in front of Discord that echoes the commands back: the context menu has no
    # "description", which discord.py needs to read the answer (it raised KeyError at start-up).
    echo = [{"id": "1", "application_id": "1", "version": "1", "type": 3, "name": "Edit image", "default_member_permissions": None}]
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            dd.fail("PUT", r"^/applications/\d+/commands$", 200, echo, times=None)
            bot = new_bot(relay, w.data_dir)
            async with dd.running(bot):
                assert bot.is_ready()
                mark = dd.mark()
                await w.imagine(prompt="still works")
                assert (await w.result_post(since=mark)).files


async def test_with_the_content_intent_plain_thread_messages_edit_and_bystanders_are_left_alone(tmp_path: Path) -> None:
    async with world(tmp_path, NB_MESSAGE_CONTENT_INTENT="1") as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        thread = w.dd.channels[thread_id]
        before = len(w.relay.requests)
        mark = w.dd.mark()
        await w.dd.post_message(thread, w.bob, "nice fox!")  # a bystander chatting, no mention
        await asyncio.sleep(0.5)
        assert len(w.relay.requests) == before
        assert not w.dd.find("POST", rf"^/channels/{thread_id}/messages$", since=mark)  # no scolding either

        w.relay.enqueue(Behaviour("image", signature="sig-plain"))
        await w.dd.post_message(thread, w.alice, "make the sky purple")  # the owner, no mention
        post = await w.result_post(channel=thread, since=mark)
        assert post.files
        assert model_signatures(w.relay.requests[-1].json["contents"]) == ["sig-root"]


async def test_when_the_bot_token_may_not_post_the_result_arrives_through_the_interaction(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        # As in a server that added only the app's commands: the bot's own posts are refused.
        w.dd.fail("POST", rf"^/channels/{w.channel['id']}/messages$", 403, {"message": "Missing Access", "code": 50001}, times=None)
        mark = w.dd.mark()
        await w.imagine(prompt="a lantern")
        post = await w.dd.wait_for("POST", r"^/webhooks/\d+/[^/]+$", since=mark, predicate=lambda c: bool(c.files), timeout=15)
        assert post.files[0].data == w.relay.images_served[-1]
        await bot.services.jobs.join()
        assert (await bot.services.quota.totals())["committed"] == 1


async def test_an_edit_whose_thread_vanished_while_drawing_lands_in_the_pictures_channel(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        root, thread_id = await start_picture(w, "sig-root")
        thread = w.dd.channels[thread_id]
        w.relay.enqueue(Behaviour("slow", delay=0.8))
        mark = w.dd.mark()
        await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> add snow")
        await w.dd.wait_for("POST", rf"^/channels/{thread_id}/messages$", since=mark)  # the progress reply
        # Deleted by a moderator while the picture was being drawn.
        w.dd.fail("*", rf"^/channels/{thread_id}/", 404, {"message": "Unknown Channel", "code": 10003}, times=None)
        post = await w.result_post(channel=w.channel, since=mark)
        assert post.files
        await bot.services.jobs.join()
        assert (await bot.services.quota.totals())["committed"] == 2


async def test_a_server_without_a_relay_is_told_at_once_when_the_default_relay_is_not_shared(tmp_path: Path) -> None:
    async with world(tmp_path, NB_SHARE_DEFAULT_RELAY="0") as (w, bot):
        mark = w.dd.mark()
        inter = await w.imagine(prompt="anything")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64
        assert "/admin relay add" in json.dumps(ack.json["data"])
        await asyncio.sleep(0.2)
        assert w.relay.requests == []
        assert await bot.services.quota.totals() == {"reserved": 0, "committed": 0, "refunded": 0}
