"""The creative features wired into /imagine, end to end: the real bot against the Discord
double and the relay double (a real SQLite file). A member's /settings shape their next
picture within the server's limits; "results only to me" keeps everything ephemeral."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import NanoBananaBot
from bot.preferences import ServerCreative
from bot.relay.types import InputImage
from bot.relays.pool import DEFAULT_NAME
from bot.variant_groups import SlotRecord
from tests import e2e
from tests.conftest import make_image
from tests.doubles.discord_double import DiscordDouble, Perm
from tests.doubles.relay_double import Behaviour, RelayDouble
from tests.test_bot_e2e import modal_ids

API_KEY = "creative-relay-key-123456"
PRO = "gemini-3-pro-image-preview"
FLASH31 = "gemini-3.1-flash-image-preview"


class World:
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, bot: NanoBananaBot) -> None:
        self.dd, self.relay, self.bot = dd, relay, bot
        self.guild = dd.add_guild("Creative Lab")
        self.gid = int(self.guild["id"])
        self.channel = dd.text_channels(self.guild)[0]
        self.alice = dd.add_member(self.guild, username="alice")
        self.uid = int(self.alice["user"]["id"])

    async def imagine(self, locale: str = "en-US", **options: Any) -> dict[str, Any]:
        payload = self.dd.slash_interaction("imagine", channel=self.channel, user=self.alice, options=options, locale=locale)
        return await self.dd.interact(payload)

    async def result_post(self, since: int) -> Any:
        return await self.dd.wait_for(
            "POST", rf"^/channels/{self.channel['id']}/messages$", since=since, predicate=lambda c: bool(c.files) and c.status < 300
        )

    def image_config(self) -> dict[str, Any]:
        return dict(self.relay.requests[-1].json["generationConfig"].get("imageConfig") or {})

    async def prefer(self, **values: Any) -> None:
        for name, value in values.items():
            await self.bot.services.preferences.set(self.gid, self.uid, name, value)


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: str) -> AsyncIterator[World]:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            bot = e2e.new_bot(relay, tmp_path / "data", API_KEY, **extra)
            w = World(dd, relay, bot)
            async with dd.running(bot):
                yield w


def embed_fields(post: Any) -> dict[str, str]:
    return {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}


async def test_settings_defaults_shape_the_next_imagine_and_typed_options_win(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.prefer(model=FLASH31, aspect_ratio="16:9", size="2K")
        mark = w.dd.mark()
        await w.imagine(prompt="a lighthouse in fog")
        post = await w.result_post(mark)
        sent = w.relay.requests[-1]
        assert sent.model == FLASH31
        assert w.image_config() == {"aspectRatio": "16:9", "imageSize": "2K"}
        assert embed_fields(post)["Shape"].startswith("16:9 · 2K")

        mark = w.dd.mark()
        await w.imagine(prompt="a lighthouse at noon", aspect_ratio="1:1")  # typed: wins over the preference
        await w.result_post(mark)
        assert w.relay.requests[-1].model == FLASH31
        assert w.image_config() == {"aspectRatio": "1:1", "imageSize": "2K"}


async def test_settings_stop_at_the_servers_limits_and_the_member_is_told(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.prefer(model=FLASH31, size="4K")
        await w.bot.services.preferences.save_server(w.gid, ServerCreative(max_size="1K"))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a glass city")
        await w.result_post(mark)
        assert w.image_config().get("imageSize") == "1K"  # the server's largest, not the 4K asked for
        notice = next(m for m in w.dd.followup_messages(inter) if "⚠️" in m["content"])
        assert w.dd.is_ephemeral(notice)
        assert "Your default size is not available here" in notice["content"]

        # A model the server no longer allows: the server's default model, said in Chinese.
        await w.bot.services.guilds.update(w.gid, lambda g: g.with_allowed_models([PRO]))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="一座玻璃城市", locale="zh-CN")
        await w.result_post(mark)
        assert w.relay.requests[-1].model == PRO
        said = " ".join(m["content"] for m in w.dd.followup_messages(inter))
        assert "本服务器已不再允许你的默认模型" in said

        # The same, with the model typed: the member chose; nothing to tell about the model.
        mark = w.dd.mark()
        inter = await w.imagine(prompt="一座玻璃城市", locale="zh-CN", model=PRO)
        await w.result_post(mark)
        assert "默认模型" not in " ".join(m["content"] for m in w.dd.followup_messages(inter))


async def test_a_language_override_answers_in_that_language(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.prefer(locale="zh-CN")
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a quiet harbour", locale="en-US", model="gemini-2.5-flash-image", size="4K")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        text = json.dumps(ack.json["data"], ensure_ascii=False)
        assert ack.json["data"]["flags"] & 64 and "分辨率" in text  # the refusal in Chinese, not English
        assert w.relay.requests == []


async def test_results_only_to_me_are_ephemeral_with_no_thread(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.prefer(private=True)
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a secret garden")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 4 and ack.json["data"]["flags"] & 64  # the progress message too
        delivered = await w.dd.wait_for(
            "POST", rf"^/webhooks/\d+/{inter['token']}$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300
        )
        assert delivered.json["flags"] & 64
        assert delivered.files[0].data == w.relay.images_served[-1]
        assert "a secret garden" in delivered.json["embeds"][0]["description"]
        assert not [m for m in w.dd.channel_messages(w.channel) if m.get("attachments")]  # nothing public
        assert not w.dd.find("POST", r"/threads$", since=mark)


async def _past_the_token(w: Any, started: Any) -> None:
    """Start the request with a slow relay and move the Discord double's clock past the
    interaction token's 15 minutes while the picture is being drawn."""
    w.relay.enqueue(Behaviour("slow", delay=0.8))
    asked = len(w.relay.requests)
    await started
    for _ in range(500):
        if len(w.relay.requests) > asked:
            break
        await asyncio.sleep(0.01)
    w.dd.advance(16 * 60)


async def test_a_private_result_after_the_token_expired_goes_by_direct_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(tmp_path) as w:
        await w.prefer(private=True)
        # The job runs past Discord's 15 minutes for the interaction's token (the double's
        # clock), so neither the interaction held in memory nor the token stored with the job works.
        # (load_extension runs the package afresh: patch the module the bot runs.)
        monkeypatch.setattr(sys.modules["cogs.imagine.progress"], "TOKEN_LIFETIME", -1)
        mark = w.dd.mark()
        await _past_the_token(w, w.imagine(prompt="a letter by post"))
        opened = await w.dd.wait_for("POST", r"^/users/@me/channels$", since=mark)
        dm = opened.response["id"]
        post = await w.dd.wait_for("POST", rf"^/channels/{dm}/messages$", since=mark, predicate=lambda c: bool(c.files))
        assert post.files[0].data == w.relay.images_served[-1]
        assert not [m for m in w.dd.channel_messages(w.channel) if m.get("attachments")]


async def test_a_private_result_with_direct_messages_closed_is_refunded_and_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path) as w:
        await w.prefer(private=True)
        monkeypatch.setattr(sys.modules["cogs.imagine.progress"], "TOKEN_LIFETIME", -1)
        w.dd.fail("POST", r"^/channels/\d+/messages$", 403, {"message": "Cannot send messages to this user", "code": 50007})
        mark = w.dd.mark()
        await _past_the_token(w, w.imagine(prompt="a letter nobody reads"))
        told = await w.dd.wait_for(
            "POST",
            rf"^/channels/{w.channel['id']}/messages$",
            since=mark,
            predicate=lambda c: bool((c.json or {}).get("embeds")),
            timeout=15,
        )
        assert "direct messages are closed" in told.json["embeds"][0]["description"]
        assert not told.files  # the picture itself never goes public
        await asyncio.sleep(0.2)
        assert (await w.bot.services.quota.totals())["refunded"] == 1


def custom_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"] if "custom_id" in c]


async def variants_posted(w: World, mark: int, count: int) -> Any:
    """The one message carrying every delivered variant (posted when the last has ended)."""
    return await w.dd.wait_for(
        "POST", rf"^/channels/{w.channel['id']}/messages$", since=mark, predicate=lambda c: len(c.files) >= count and c.status < 300
    )


async def recorded(w: World, count: int, of: int | None = None) -> list[Any]:
    """Jobs 1..``of``, once ``count`` of them have their result recorded (just after the post)."""
    for _ in range(100):
        jobs = [j for j in [await w.bot.services.get_job(i) for i in range(1, (of or count) + 1)] if j]
        if sum(j.result_turn_id is not None for j in jobs) >= count:
            return jobs
        await asyncio.sleep(0.05)
    raise AssertionError("results not recorded")


async def test_four_variants_one_fails_three_delivered_together_one_refunded(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(
            Behaviour("image", signature="sig-1"),
            Behaviour("blocked"),
            Behaviour("image", signature="sig-3"),
            Behaviour("image", signature="sig-4"),
        )
        mark = w.dd.mark()
        await w.imagine(prompt="four paper cranes", count=4)
        post = await variants_posted(w, mark, 3)
        assert len(post.files) == 3 and len(w.relay.requests) == 4  # one relay call per variant
        assert sorted(f.data for f in post.files) == sorted(w.relay.images_served)  # each original kept
        embeds = post.json["embeds"]
        assert len(embeds) == 3 and len({e["url"] for e in embeds}) == 1  # one grid
        assert [e["image"]["url"] for e in embeds] == [f"attachment://{f.filename}" for f in post.files]
        assert "Variant 2 failed" in embeds[0]["description"] and "refunded" in embeds[0]["description"]
        assert re.search(r"[.。] Its credits were refunded\.", embeds[0]["description"])  # two sentences, not one run-on
        ids = custom_ids(post.json)
        assert sum(i.startswith("nb:edit:") for i in ids) == 3 and sum(i.startswith("nb:vary:") for i in ids) == 6
        assert not [i for i in ids if i.startswith("nb:retry:")]  # a block is no luck: the same prompt is blocked again
        await asyncio.sleep(0.3)
        totals = await w.bot.services.quota.totals()
        assert totals["refunded"] == 1 and totals["committed"] == 3
        assert not w.dd.find("POST", r"/threads$", since=mark)  # each variant continues on its own instead
        # /history links every delivered variant to the message that shows it.
        jobs = await recorded(w, 3, of=4)
        assert sorted(j.result_message_id or 0 for j in jobs) == [0, *[int(post.response["id"])] * 3]

        # Re-roll on the grid: the whole request again, four variants, in a message of their own.
        (reroll,) = [i for i in ids if i.startswith("nb:reroll:")]
        assert reroll.endswith(":4")
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(w.dd.messages[int(post.response["id"])], reroll, user=w.alice))
        again = await variants_posted(w, mark, 4)
        assert len(again.files) == 4 and len(w.relay.requests) == 8
        assert all("four paper cranes" in r.json["contents"][-1]["parts"][0]["text"] for r in w.relay.requests[4:])


async def test_variants_that_all_fail_for_a_passing_reason_each_offer_retry(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("text_only", text="Here are two kites!"), Behaviour("text_only", text="Kites!"))  # luck, not a rule
        inter = await w.imagine(prompt="two kites", count=2)
        for _ in range(250):
            shown = w.dd.original_message(inter)
            if shown is not None and "nb:retry:" in json.dumps(shown.get("components")):
                break
            await asyncio.sleep(0.02)
        assert shown is not None and "Variant 1 failed" in json.dumps(shown["embeds"]) and "Variant 2 failed" in json.dumps(shown["embeds"])
        labels = {c["custom_id"]: c["label"] for row in shown["components"] for c in row["components"]}
        assert sorted(labels.values()) == ["1 · Retry", "2 · Retry"] and all(i.startswith("nb:retry:") for i in labels)
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(shown, min(labels, key=labels.__getitem__), user=w.alice))
        post = await w.result_post(since=mark)
        assert len(post.files) == 1 and len(w.relay.requests) == 3
        # The progress message is the interaction's response, which the bot's token cannot edit:
        # the button stays, and the database's claim answers a second click.
        first, second = sorted(labels, key=labels.__getitem__)
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(shown, first, user=w.alice))
        told = await w.dd.wait_for("POST", r"^/interactions/\d+/[^/]+/callback", since=mark)
        assert "already" in json.dumps(told.json) and len(w.relay.requests) == 3
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(shown, second, user=w.alice))
        assert len((await w.result_post(since=mark)).files) == 1 and len(w.relay.requests) == 4


async def test_cancel_after_a_variant_ended_in_another_process_is_too_late_and_refunds_nothing(tmp_path: Path) -> None:
    """The Cancel click reaches a gateway; variant 1 ended in a worker (its slot is only in the
    database): the group is past cancelling there too, as it would be in the worker."""
    async with world(tmp_path) as w:
        w.relay.default = Behaviour("hang")
        inter = await w.imagine(prompt="two kites", count=2)
        jobs = await two_variants_one_drawing(w)
        group = int(w.dd.original_message(inter)["id"])  # type: ignore[index]
        variants = w.bot.get_cog("Imagine").variants  # type: ignore[union-attr]
        assert await variants.store.done(group, SlotRecord(1, jobs[0].id, error={"key": "error.no_image.blocked", "params": {}}), 2) is None
        assert not variants.any_ended(group)  # nothing ended in this process
        mark = w.dd.mark()
        progress = w.dd.original_message(inter)
        cancel = next(i for i in custom_ids(progress) if i.startswith("nb:cancel:"))  # type: ignore[arg-type]
        await w.dd.interact(w.dd.component_interaction(progress, cancel, user=w.alice))
        told = await w.dd.wait_for("POST", r"^/webhooks/\d+/[^/]+$", since=mark, timeout=10)
        assert "already finished" in json.dumps(told.json)
        assert [j.status for j in [await w.bot.services.get_job(j.id) for j in jobs]] == ["running", "queued"]  # type: ignore[union-attr]
        assert (await w.bot.services.quota.totals())["refunded"] == 0


async def two_variants_one_drawing(w: World) -> list[Any]:
    """Jobs 1 and 2, once the first is drawing (a member runs one job at a time)."""
    for _ in range(250):
        found = [await w.bot.services.get_job(i) for i in (1, 2)]
        if found[0] is not None and found[0].status == "running" and found[1] is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("the jobs did not start")


async def test_variants_waiting_for_the_members_cap_never_turn_drawing_back_into_queued(tmp_path: Path) -> None:
    """Three variants, one at a time (a member runs one job at once): the shared progress
    message goes queued -> drawing and stays drawing until the pictures come."""
    async with world(tmp_path) as w:
        w.relay.default = Behaviour("slow", delay=0.6)
        mark = w.dd.mark()
        await w.imagine(prompt="three paper boats", count=3)
        await variants_posted(w, mark, 3)
        texts = [str(c.json.get("content") or "") for c in w.dd.find("PATCH", r"^/webhooks/", since=mark) if c.json]
        shown = [("drawing" if "Drawing" in x else "queued") for x in texts if "Drawing" in x or "Queued" in x]
        assert "drawing" in shown, texts
        assert "queued" not in shown[shown.index("drawing") :], texts


async def test_variants_are_reserved_as_one_total_and_refused_over_quota_or_the_maximum(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.bot.services.preferences.save_server(w.gid, ServerCreative(variants_default=1, variants_max=2))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="too many cranes", count=3, locale="zh-CN")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64 and "最多生成 2 个变体" in json.dumps(ack.json, ensure_ascii=False)

        # One picture fits the member's 3 credits a day; four at 1 credit each do not.
        await w.bot.services.preferences.save_server(w.gid, ServerCreative())
        await w.bot.services.guilds.update(w.gid, lambda g: g.with_quota(user_daily=3))
        mark = w.dd.mark()
        inter = await w.imagine(prompt="four small cranes", count=4)
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64 and "4" in json.dumps(ack.json)  # refused before anything is sent
        await asyncio.sleep(0.3)
        assert w.relay.requests == [] and (await w.bot.services.quota.totals())["reserved"] == 0


async def test_continuing_variant_two_sends_its_own_turn_and_signature(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("image", signature="sig-a"), Behaviour("image", signature="sig-b"))
        mark = w.dd.mark()
        await w.imagine(prompt="two foxes", count=2)
        post = await variants_posted(w, mark, 2)
        message = w.dd.messages[int(post.response["id"])]
        jobs = await recorded(w, 2)
        turn2 = next(j.result_turn_id for j in jobs if j.request["variant"] == 2)
        mine = (await w.bot.services.conversations.get_turn(turn2)).model_parts
        signature = next(p["thoughtSignature"] for p in mine if "thoughtSignature" in p)
        edit = f"nb:edit:{turn2}"
        assert edit in custom_ids(message)
        label = next(c["label"] for row in message["components"] for c in row["components"] if c.get("custom_id") == edit)
        assert label.startswith("2 · ")
        opened = await w.dd.interact(w.dd.component_interaction(message, edit, user=w.alice))
        await w.dd.wait_for("POST", rf"^/interactions/{opened['id']}/", timeout=10)
        modal = w.dd.last_modal()
        assert modal is not None
        ids = modal_ids(modal)
        mark = w.dd.mark()
        submit = w.dd.modal_submit_interaction(
            modal["custom_id"], {ids[4]: "give it a hat", ids[19]: []}, channel=w.channel, user=w.alice, modal=modal
        )
        await w.dd.interact(submit)
        result = await w.result_post(mark)
        contents = w.relay.requests[-1].json["contents"]
        sent = [p.get("thoughtSignature") for c in contents if c.get("role") == "model" for p in c["parts"] if "inlineData" in p]
        assert sent == [signature] and contents[-1]["parts"][0]["text"] == "give it a hat"
        # The variant had no thread of its own (it was shown in the group's message): its
        # continued result opens one, bound to variant 2's conversation, so talking on works.
        thread = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/{result.response['id']}/threads$", since=mark)
        await w.dd.wait_for("POST", rf"^/channels/{thread.response['id']}/messages$", since=mark)  # its hint: bound by now
        latest = await w.bot.services.conversations.latest_turn(int(thread.response["id"]))
        assert latest is not None and latest.conversation_id == (await w.bot.services.conversations.get_turn(turn2)).conversation_id


def sent_parts(w: World) -> list[dict[str, Any]]:
    return list(w.relay.requests[-1].json["contents"][-1]["parts"])


async def test_a_style_brings_its_template_reference_picture_and_shape_to_the_relay(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        ink = make_image(48, 48, "PNG", color=(10, 10, 10))
        await w.bot.services.styles.save(
            w.gid, "Ink wash", "{prompt}, in ink wash", created_by=1, images=[InputImage(ink, "image/png")], aspect_ratio="3:4"
        )
        mark = w.dd.mark()
        await w.imagine(prompt="a heron", style="Ink wash")
        post = await w.result_post(mark)
        parts = sent_parts(w)
        assert parts[0]["text"] == "a heron, in ink wash"
        assert any(base64.b64decode(p["inlineData"]["data"]) == ink for p in parts if "inlineData" in p)
        assert w.image_config()["aspectRatio"] == "3:4"
        shown = post.json["embeds"][0]["description"]
        assert "a heron" in shown and ", in ink wash" not in shown  # the member's words, not the template
        assert "Style: Ink wash" in shown  # and which style made it


async def test_a_style_that_no_longer_exists_is_refused_and_nothing_is_charged(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.bot.services.styles.save(w.gid, "Neon", "{prompt}, neon", created_by=1)
        await w.prefer(style="Neon")
        await w.bot.services.styles.remove(w.gid, "Neon")
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a street", style="Neon", locale="zh-CN")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64 and "风格“Neon”已不存在" in json.dumps(ack.json, ensure_ascii=False)
        await asyncio.sleep(0.2)
        assert w.relay.requests == [] and (await w.bot.services.quota.totals())["reserved"] == 0

        # Only the member's default (not typed): the picture is made without it, and they are told.
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a street")
        await w.result_post(mark)
        assert sent_parts(w)[0]["text"] == "a street"
        assert any("Neon" in m["content"] for m in w.dd.followup_messages(inter))


async def test_style_autocomplete_offers_the_members_and_the_servers(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.bot.services.styles.save(w.gid, "Ink wash", "{prompt}, ink", created_by=1)
        await w.bot.services.styles.save(w.gid, "Inky mine", "{prompt}, mine", created_by=w.uid, owner_id=w.uid)
        payload = w.dd.autocomplete_interaction(
            "imagine", focused="style", channel=w.channel, user=w.alice, options={"prompt": "x", "style": "ink"}
        )
        inter = await w.dd.interact(payload)
        answer = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/")
        assert [c["value"] for c in answer.json["data"]["choices"]] == ["Inky mine", "Ink wash"]


async def test_vary_strong_makes_a_new_turn_from_that_picture_with_the_original_prompt_shown(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("image", signature="sig-root"))
        mark = w.dd.mark()
        await w.imagine(prompt="a tin robot")
        post = await w.result_post(mark)
        message = w.dd.messages[int(post.response["id"])]
        vary = next(i for i in custom_ids(message) if i.startswith("nb:vary:") and i.endswith(":strong"))
        mark = w.dd.mark()
        await w.dd.interact(w.dd.component_interaction(message, vary, user=w.alice))
        varied = await w.dd.wait_for("POST", r"^/channels/\d+/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300)
        contents = w.relay.requests[-1].json["contents"]
        assert contents[-1]["parts"][0]["text"].startswith("Make a strong variation of this image")
        assert "a tin robot" in contents[-1]["parts"][0]["text"]
        assert [p.get("thoughtSignature") for c in contents if c.get("role") == "model" for p in c["parts"] if "inlineData" in p] == [
            "sig-root"
        ]
        shown = varied.json["embeds"][0]["description"]
        assert "a tin robot" in shown and "Make a strong variation" not in shown  # not the model-facing instruction
        assert "Strong variation" in shown and "Subtle" not in shown  # told apart from the original and a subtle one


async def admin(w: World, group: str | None, sub: str, **options: Any) -> str:
    """Run an /admin subcommand as a member with Manage Server; its (ephemeral) answer text."""
    mods = w.dd.add_role(w.guild, "Mods", Perm.MANAGE_GUILD)
    ada = w.dd.add_member(w.guild, username="ada", roles=[mods])
    mark = w.dd.mark()
    payload = w.dd.slash_interaction("admin", channel=w.channel, user=ada, group=group, subcommand=sub, options=options)
    inter = await w.dd.interact(payload)
    ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
    if ack.json["type"] == 5:
        ack = await w.dd.wait_for("POST", rf"^/webhooks/\d+/{inter['token']}$", since=mark)
        return json.dumps(ack.json, ensure_ascii=False)
    assert ack.json["data"]["flags"] & 64
    return json.dumps(ack.json["data"], ensure_ascii=False)


async def test_an_admin_defines_a_style_with_a_picture_and_the_variant_default(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        paper = make_image(40, 40, "PNG", color=(240, 230, 200))
        picture = w.dd.add_attachment(paper, "paper.png", "image/png")
        said = await admin(w, "style", "add", name="Paper", template="{prompt}, cut from paper", image1=picture)
        assert "Style “Paper” saved" in said
        assert "Paper" in await admin(w, "style", "list")
        assert "makes 2 pictures by default and at most 3 at once" in await admin(w, None, "variants", default=2, maximum=3)

        mark = w.dd.mark()
        await w.imagine(prompt="a fox", style="Paper")  # no count: the server's default of 2
        post = await variants_posted(w, mark, 2)
        assert len(post.files) == 2 and len(w.relay.requests) == 2
        for request in w.relay.requests:
            parts = request.json["contents"][-1]["parts"]
            assert parts[0]["text"] == "a fox, cut from paper"
            assert any(base64.b64decode(p["inlineData"]["data"]) == paper for p in parts if "inlineData" in p)

        assert "Style “Paper” removed" in await admin(w, "style", "remove", name="Paper")
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a fox", style="Paper")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["data"]["flags"] & 64 and "no longer exists" in json.dumps(ack.json)


def text_input(modal: dict[str, Any]) -> dict[str, Any]:
    found = [c for row in modal["components"] for c in ([row["component"]] if "component" in row else row.get("components", []))]
    return next(c for c in found if c.get("type") == 4)


async def test_describe_offers_imagine_this_which_makes_the_picture_from_that_prompt(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("text_only", text="A paper boat on a rain puddle, macro."))
        att = w.dd.add_attachment(make_image(80, 60), "boat.png", "image/png")
        inter = await w.dd.interact(w.dd.slash_interaction("describe", channel=w.channel, user=w.alice, options={"image": att}))
        answer = await w.dd.wait_for("POST", rf"^/webhooks/\d+/{inter['token']}$", timeout=10)
        message = w.dd.messages[int(answer.response["id"])]
        button = f"nb:imagine-this:{w.uid}"
        assert button in custom_ids(message)
        opened = await w.dd.interact(w.dd.component_interaction(message, button, user=w.alice))
        await w.dd.wait_for("POST", rf"^/interactions/{opened['id']}/", timeout=10)
        modal = w.dd.last_modal()
        assert modal is not None
        field = text_input(modal)
        assert field["value"] == "A paper boat on a rain puddle, macro."
        mark = w.dd.mark()
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {field["custom_id"]: "A paper boat, at night"}, channel=w.channel, user=w.alice, modal=modal
            )
        )
        post = await w.result_post(mark)
        assert sent_parts(w)[0]["text"] == "A paper boat, at night"
        assert "A paper boat, at night" in post.json["embeds"][0]["description"]


async def test_history_reopen_continues_that_picture(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("image", signature="sig-old"))
        mark = w.dd.mark()
        await w.imagine(prompt="an old map")
        post = await w.result_post(mark)
        (job,) = await recorded(w, 1)
        inter = await w.dd.interact(w.dd.slash_interaction("history", channel=w.channel, user=w.alice))
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", timeout=10)
        panel = w.dd.original_message(inter)
        assert panel is not None
        link = f"https://discord.com/channels/{w.gid}/{w.channel['id']}/{post.response['id']}"
        assert link in panel["embeds"][0]["description"]  # the jump link is the real result message
        reopen = f"nb:edit:{job.result_turn_id}"
        label = next(c["label"] for row in panel["components"] for c in row["components"] if c.get("custom_id") == reopen)
        assert label == "Reopen 1"
        opened = await w.dd.interact(w.dd.component_interaction(panel, reopen, user=w.alice))
        await w.dd.wait_for("POST", rf"^/interactions/{opened['id']}/", timeout=10)
        modal = w.dd.last_modal()
        assert modal is not None
        ids = modal_ids(modal)
        mark = w.dd.mark()
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {ids[4]: "add a compass", ids[19]: []}, channel=w.channel, user=w.alice, modal=modal
            )
        )
        await w.dd.wait_for("POST", r"^/channels/\d+/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300)
        contents = w.relay.requests[-1].json["contents"]
        assert [p.get("thoughtSignature") for c in contents if c.get("role") == "model" for p in c["parts"] if "inlineData" in p] == [
            "sig-old"
        ]


async def test_save_as_style_keeps_the_prompt_and_picture_and_the_style_works_next_time(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mark = w.dd.mark()
        await w.imagine(prompt="a moss garden", aspect_ratio="16:9")
        post = await w.result_post(mark)
        picture = post.files[0].data
        message = w.dd.messages[int(post.response["id"])]
        save = next(i for i in custom_ids(message) if i.startswith("nb:style:"))
        opened = await w.dd.interact(w.dd.component_interaction(message, save, user=w.alice, locale="zh-CN"))
        await w.dd.wait_for("POST", rf"^/interactions/{opened['id']}/", timeout=10)
        modal = w.dd.last_modal()
        assert modal is not None and modal["title"] == "保存为风格"
        submit = w.dd.modal_submit_interaction(
            modal["custom_id"], {modal_ids(modal)[4]: "Moss"}, channel=w.channel, user=w.alice, modal=modal, locale="zh-CN"
        )
        done = await w.dd.interact(submit)
        ack = await w.dd.wait_for("POST", rf"^/interactions/{done['id']}/", timeout=10)
        assert ack.json["data"]["flags"] & 64 and "风格“Moss”已保存" in json.dumps(ack.json, ensure_ascii=False)

        mark = w.dd.mark()
        await w.imagine(prompt="a tea house", style="Moss")
        await w.result_post(mark)
        parts = sent_parts(w)
        assert parts[0]["text"].startswith("a tea house") and "a moss garden" in parts[0]["text"]
        assert any(base64.b64decode(p["inlineData"]["data"]) == picture for p in parts if "inlineData" in p)
        assert w.image_config()["aspectRatio"] == "16:9"  # the saved result's shape, not the default

        # Saved from a result made with that style: the style's words carry over into the new one.
        post = await w.result_post(mark)
        message = w.dd.messages[int(post.response["id"])]
        opened = await w.dd.interact(
            w.dd.component_interaction(message, next(i for i in custom_ids(message) if i.startswith("nb:style:")), user=w.alice)
        )
        await w.dd.wait_for("POST", rf"^/interactions/{opened['id']}/", timeout=10)
        modal = w.dd.last_modal()
        assert modal is not None
        submit = w.dd.modal_submit_interaction(
            modal["custom_id"], {modal_ids(modal)[4]: "Tea"}, channel=w.channel, user=w.alice, modal=modal
        )
        await w.dd.wait_for("POST", rf"^/interactions/{(await w.dd.interact(submit))['id']}/", timeout=10)
        mark = w.dd.mark()
        await w.imagine(prompt="a bridge", style="Tea")
        await w.result_post(mark)
        text = sent_parts(w)[0]["text"]
        assert text.startswith("a bridge") and "a tea house" in text and "a moss garden" in text


async def test_a_chat_relay_first_refuses_a_ratio_before_any_credit_is_reserved(tmp_path: Path) -> None:
    async with world(tmp_path, NB_RELAY_FORMAT="openai-chat", NB_RELAY_AUTH="bearer") as w:
        mark = w.dd.mark()
        inter = await w.imagine(prompt="a wide valley", aspect_ratio="16:9", locale="zh-CN")
        ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        said = json.dumps(ack.json, ensure_ascii=False)
        assert ack.json["data"]["flags"] & 64 and f"“{DEFAULT_NAME}”" in said and "画面比例" in said and "未扣除积分" in said
        await asyncio.sleep(0.2)
        assert w.relay.requests == [] and (await w.bot.services.quota.totals())["reserved"] == 0

        mark = w.dd.mark()
        await w.imagine(prompt="a wide valley")  # nothing the relay cannot do: made
        await w.result_post(mark)
        assert w.relay.requests[-1].dialect == "openai-chat"


async def test_a_message_in_the_thread_of_a_grounded_picture_is_grounded_too(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mark = w.dd.mark()
        await w.imagine(prompt="today's weather in Oslo as a poster", model=PRO, search="web")
        await w.result_post(mark)
        assert w.relay.requests[-1].json["tools"] == [{"googleSearch": {}}]
        thread = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        channel = w.dd.channels[int(thread.response["id"])]
        # The bot's hint in the thread comes once the thread is bound to the picture's conversation.
        await w.dd.wait_for("POST", rf"^/channels/{channel['id']}/messages$")
        mark = w.dd.mark()
        await w.dd.post_message(channel, w.alice, f"<@{w.bot.user.id}> now for tomorrow")  # the bot reads what mentions it
        await w.dd.wait_for(
            "POST", rf"^/channels/{channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300
        )
        sent = w.relay.requests[-1].json
        assert sent["contents"][-1]["parts"][0]["text"].endswith("now for tomorrow")
        assert sent["tools"] == [{"googleSearch": {}}]


async def test_a_message_in_the_thread_of_a_previewed_picture_streams_its_drafts_too(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mark = w.dd.mark()
        await w.imagine(prompt="a glass teapot", model=FLASH31, preview=True)
        await w.result_post(mark)
        assert w.relay.requests[-1].path.endswith(":streamGenerateContent")
        thread = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        channel = w.dd.channels[int(thread.response["id"])]
        await w.dd.wait_for("POST", rf"^/channels/{channel['id']}/messages$")  # the hint: the thread is bound
        mark = w.dd.mark()
        await w.dd.post_message(channel, w.alice, f"<@{w.bot.user.id}> fill it with tea")
        await w.dd.wait_for(
            "POST", rf"^/channels/{channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300
        )
        sent = w.relay.requests[-1]
        assert sent.path.endswith(":streamGenerateContent") and sent.json["generationConfig"]["thinkingConfig"]["includeThoughts"]


async def test_vary_on_a_result_posted_before_a_restart_still_works(tmp_path: Path) -> None:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            first = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            w = World(dd, relay, first)
            async with dd.running(first):
                mark = dd.mark()
                await w.imagine(prompt="a paper lantern")
                post = await w.result_post(mark)
                await recorded(w, 1)
            message = dd.messages[int(post.response["id"])]
            vary = next(i for i in custom_ids(message) if i.startswith("nb:vary:") and i.endswith(":subtle"))
            second = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            async with dd.running(second):
                mark = dd.mark()
                await dd.interact(dd.component_interaction(message, vary, user=w.alice))
                varied = await dd.wait_for(
                    "POST", r"^/channels/\d+/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300
                )
                assert relay.requests[-1].json["contents"][-1]["parts"][0]["text"].startswith("Make a subtle variation")
                assert "a paper lantern" in varied.json["embeds"][0]["description"]


async def test_variants_discord_refuses_to_post_are_all_refunded_and_explained(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.dd.fail("POST", rf"^/channels/{w.channel['id']}/messages$", 400, {"message": "Invalid Form Body", "code": 50035}, times=None)
        mark = w.dd.mark()
        await w.imagine(prompt="three lost kites", count=3)
        told = await w.dd.wait_for(
            "PATCH", r"/messages/@original$", since=mark, predicate=lambda c: bool((c.json or {}).get("embeds")), timeout=20
        )
        assert "⚠️" in told.json["embeds"][0]["description"]
        await asyncio.sleep(0.3)
        totals = await w.bot.services.quota.totals()
        assert len(w.relay.requests) == 3 and totals["refunded"] == 3 and totals["committed"] == 0
