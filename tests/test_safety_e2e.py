"""/admin safety end to end: the real bot against the Discord double and a relay double, a real
SQLite file. A blocklisted prompt is refused before anything is queued (nothing sent, nothing
charged, the word not repeated); an NSFW-only model works only in an age-restricted channel;
results are spoilered when set; the Gemini thresholds reach the relay."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app import NanoBananaBot
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import RelayDouble
from tests.test_admin_e2e import OPERATOR_KEY, World, finished, is_ephemeral, new_bot, text_of
from tests.test_bot_e2e import modal_ids

PRO = "gemini-3-pro-image-preview"


class SafetyWorld(World):
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, data_dir: Path) -> None:
        super().__init__(dd, relay, data_dir)
        self.nsfw_channel = dd.add_text_channel(self.guild, "after-dark", nsfw=True)

    async def imagine_in(self, channel: dict[str, Any], user: Any, **options: Any) -> tuple[dict[str, Any], int]:
        mark = self.dd.mark()
        payload = self.dd.slash_interaction("imagine", channel=channel, user=user, options=options)
        return await self.dd.interact(payload), mark

    def generations(self) -> list[Any]:
        return [r for r in self.relay.requests if ":generateContent" in r.path or ":streamGenerateContent" in r.path]


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[tuple[SafetyWorld, NanoBananaBot]]:
    with RelayDouble(api_key=OPERATOR_KEY) as relay:
        async with DiscordDouble() as dd:
            w = SafetyWorld(dd, relay, tmp_path / "data")
            bot = new_bot(relay, w.data_dir, NB_ALLOW_PRIVATE_RELAYS="1")
            async with dd.running(bot):
                yield w, bot


async def credits_left(w: World, user: Any) -> str:
    mark = w.dd.mark()
    inter = await w.command("quota", user=user)
    return text_of(await w.answer(inter, mark))


async def test_a_blocklisted_prompt_is_refused_before_anything_is_sent_or_charged(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="cogs.intake")
    async with world(tmp_path) as (w, bot):
        added = await w.ask("safety", "block", rule="nude")
        assert "`nude`" in text_of(added) and "Blocklist** (1 rule)" in text_of(added)
        assert "色情" in text_of(await w.ask("safety", "block", rule="色情"))
        before = await credits_left(w, w.alice)
        assert "**20** of 20 credits left today" in before

        for prompt in ("a NUDE statue", "ａ ｎｕｄｅ statue", "a nUdE figure at dawn", "这是一张色情图片", "猫咪 nude 画像"):
            inter, mark = await w.imagine(w.alice, prompt=prompt)
            refusal = await w.answer(inter, mark)
            text = text_of(refusal)
            assert is_ephemeral(refusal) and "does not allow" in text, (prompt, text)
            assert "nude" not in text.lower() and "色情" not in text and "ｎｕｄｅ" not in text, text  # the word is not repeated
        assert w.generations() == []  # nothing sent
        assert await credits_left(w, w.alice) == before  # nothing charged
        assert sum("refused (safety.blocked" in r.getMessage() for r in caplog.records) == 5  # logged, without the prompt
        assert not any("statue" in r.getMessage() for r in caplog.records)

        # A word that only contains the rule is not refused; an unblocked rule no longer refuses.
        inter, mark = await w.imagine(w.alice, prompt="a nudelholz on a table")
        await w.result_post(since=mark)
        await finished(bot)
        removed = await w.ask("safety", "unblock", rule="NUDE")
        assert "off the blocklist" in text_of(removed) and "Blocklist** (1 rule)" in text_of(removed)
        inter, mark = await w.imagine(w.alice, prompt="a nude statue")
        await w.result_post(since=mark)
        await finished(bot)
        assert len(w.generations()) == 2


async def test_the_refusal_is_in_chinese_for_a_chinese_member(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        await w.ask("safety", "block", rule="色情", locale="zh-CN")
        mark = w.dd.mark()
        payload = w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options={"prompt": "色情"}, locale="zh-CN")
        inter = await w.dd.interact(payload)
        text = text_of(await w.answer(inter, mark))
        assert "本服务器不允许" in text and "色情" not in text
        listed = text_of(await w.ask("safety", "list", locale="zh-CN"))
        assert "屏蔽词" in listed and "（1 条）" in listed
        assert w.generations() == []


async def test_an_nsfw_only_model_is_refused_in_a_normal_channel_and_allowed_in_an_nsfw_one(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        kept = await w.ask("safety", "nsfw-model", model=PRO, nsfw_only=True)
        assert "Only in NSFW channels:** Nano Banana Pro" in text_of(kept), text_of(kept)

        inter, mark = await w.imagine(w.alice, prompt="a lighthouse", model=PRO)
        refusal = await w.answer(inter, mark)
        assert is_ephemeral(refusal) and "only be used in age-restricted (NSFW) channels" in text_of(refusal)
        assert w.generations() == []

        inter, mark = await w.imagine_in(w.nsfw_channel, w.alice, prompt="a lighthouse", model=PRO)
        await w.dd.wait_for(
            "POST",
            rf"^/channels/{w.nsfw_channel['id']}/messages$",
            since=mark,
            predicate=lambda c: bool(c.files) and c.status < 300,
            timeout=20,
        )
        await finished(bot)
        assert [r.model for r in w.generations()] == [PRO]

        # Other models still work in the normal channel; lifting the rule frees the model.
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)
        await w.ask("safety", "nsfw-model", model=PRO, nsfw_only=False)
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse", model=PRO)
        await w.result_post(since=mark)
        assert len(w.generations()) == 3


async def test_results_are_spoilered_when_the_server_says_so(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        plain = await w.result_post(since=mark)
        await finished(bot)
        assert not plain.files[0].filename.startswith("SPOILER_")
        assert "attachment://" in json.dumps(plain.json)

        on = await w.ask("safety", "spoiler", on=True)
        assert "Spoiler results:** on" in text_of(on)
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        post = await w.result_post(since=mark)
        assert post.files[0].filename.startswith("SPOILER_nano-banana-")
        assert "attachment://" not in json.dumps(post.json)  # the embed does not show it uncovered


async def test_gemini_safety_thresholds_are_sent_safe_by_default_and_as_the_admin_sets_them(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)
        sent = {s["category"]: s["threshold"] for s in w.generations()[0].json["safetySettings"]}
        assert sent["HARM_CATEGORY_SEXUALLY_EXPLICIT"] == "BLOCK_LOW_AND_ABOVE"
        assert sent["HARM_CATEGORY_HARASSMENT"] == "BLOCK_MEDIUM_AND_ABOVE"
        assert "HARM_CATEGORY_CIVIC_INTEGRITY" not in sent  # deprecated by Google: not sent by default

        changed = await w.ask("safety", "threshold", category="dangerous", threshold="high")
        assert "Dangerous content: Block only high likelihood" in text_of(changed)
        await w.ask("safety", "threshold", category="hate", threshold="default")
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)
        sent = {s["category"]: s["threshold"] for s in w.generations()[1].json["safetySettings"]}
        assert sent["HARM_CATEGORY_DANGEROUS_CONTENT"] == "BLOCK_ONLY_HIGH"
        assert "HARM_CATEGORY_HATE_SPEECH" not in sent  # the relay's own default applies
        # Kept across a restart: stored in the server's settings.
        bot.services.guilds._cache.clear()
        assert (await bot.services.guild(int(w.guild["id"]))).safety.gemini.thresholds[
            "HARM_CATEGORY_DANGEROUS_CONTENT"
        ] == "BLOCK_ONLY_HIGH"


async def test_a_thread_edit_and_the_edit_form_are_checked_against_the_blocklist_too(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        inter, mark = await w.imagine(w.alice, prompt="a red fox in snow")
        root = (await w.result_post(since=mark)).response
        thread_call = await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages/\d+/threads$", since=mark)
        thread = w.dd.channels[int(thread_call.response["id"])]
        await finished(bot)
        await w.ask("safety", "block", rule="nude")
        sent = len(w.generations())

        # A message in the result's thread (mentioning the bot: no Message Content intent).
        mark = w.dd.mark()
        assert bot.user is not None
        await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> make the fox NUDE")
        answer = await w.dd.wait_for("POST", rf"^/channels/{thread['id']}/messages$", since=mark, timeout=10)
        assert "does not allow" in json.dumps(answer.json) and "nude" not in json.dumps(answer.json).lower()

        # The Edit button's form.
        edit_id = next(c["custom_id"] for row in root["components"] for c in row["components"] if c["custom_id"].startswith("nb:edit:"))
        mark = w.dd.mark()
        inter = await w.dd.interact(w.dd.component_interaction(root, edit_id, user=w.alice))
        await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        modal = w.dd.last_modal()
        submit = w.dd.modal_submit_interaction(
            modal["custom_id"], {modal_ids(modal)[4]: "make it ｎｕｄｅ"}, channel=w.channel, user=w.alice, modal=modal
        )
        await w.dd.interact(submit)
        refusal = await w.answer(submit, mark)
        assert is_ephemeral(refusal) and "does not allow" in text_of(refusal)
        assert len(w.generations()) == sent  # nothing sent for either
