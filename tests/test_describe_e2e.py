"""/describe and "Describe image" end to end: the real bot against the Discord double and the
relay double (Gemini format, answering text): the picture reaches the relay in a text-only
request and the prompt comes back privately; refusals are translated and send nothing."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests import e2e
from tests.conftest import make_image
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble

API_KEY = "describe-relay-key-123456"


class World:
    def __init__(self, dd: DiscordDouble, relay: RelayDouble) -> None:
        self.dd, self.relay = dd, relay
        self.guild = dd.add_guild("Describe Lab")
        self.channel = dd.text_channels(self.guild)[0]
        self.alice = dd.add_member(self.guild, username="alice")

    async def answered(self, payload: dict[str, Any]) -> str:
        """Everything the bot said back to this interaction (callback and follow-ups), as JSON."""
        mark = self.dd.mark()
        inter = await self.dd.interact(payload)
        await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark, timeout=10)
        if self.dd.response_type(inter) == 5:  # deferred ("thinking"): the answer is a follow-up
            await self.dd.wait_for("POST", rf"/webhooks/\d+/{re.escape(inter['token'])}", since=mark, timeout=10)
        said = [c.json for c in self.dd.calls[mark:] if inter["token"] in c.path]
        return json.dumps(said, ensure_ascii=False)


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with RelayDouble(api_key=API_KEY) as relay:
        relay.default = Behaviour("text_only", text="A paper boat on a rain puddle, macro, soft overcast light.")
        async with DiscordDouble() as dd:
            w = World(dd, relay)
            bot = e2e.new_bot(relay, tmp_path / "data", API_KEY)
            async with dd.running(bot):
                yield w


async def test_describe_sends_the_picture_for_text_and_answers_privately_with_the_prompt(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        photo = make_image(80, 60)
        att = w.dd.add_attachment(photo, "boat.png", "image/png")
        said = await w.answered(w.dd.slash_interaction("describe", channel=w.channel, user=w.alice, options={"image": att}))
        assert "A paper boat on a rain puddle" in said and "A prompt for this picture" in said
        (sent,) = w.relay.requests
        assert sent.json["generationConfig"]["responseModalities"] == ["TEXT"]
        assert base64.b64decode(sent.json["contents"][0]["parts"][1]["inlineData"]["data"]) == photo

        # At once again: held back, in the member's language, nothing sent.
        again = w.dd.add_attachment(photo, "boat2.png", "image/png")
        said = await w.answered(
            w.dd.slash_interaction("describe", channel=w.channel, user=w.alice, options={"image": again}, locale="zh-CN")
        )
        assert "秒后再描述" in said
        assert len(w.relay.requests) == 1


async def test_the_message_menu_describes_a_posted_picture_and_refuses_a_message_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(tmp_path) as w:
        monkeypatch.setattr(sys.modules["cogs.describe"], "COOLDOWN_S", 0.0)
        text_only = await w.dd.post_message(w.channel, w.alice, "no picture here")
        said = await w.answered(w.dd.message_command_interaction("Describe image", text_only, user=w.alice))
        assert "no picture to describe" in said and w.relay.requests == []

        att = w.dd.add_attachment(make_image(50, 50, "JPEG"), "cat.jpg", "image/jpeg")
        msg = await w.dd.post_message(w.channel, w.alice, "look", attachments=[att])
        said = await w.answered(w.dd.message_command_interaction("Describe image", msg, user=w.alice))
        assert "A paper boat" in said and len(w.relay.requests) == 1


async def test_a_blocked_picture_is_explained_and_never_a_traceback(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("blocked", reason="PROHIBITED_CONTENT"))
        att = w.dd.add_attachment(make_image(40, 40), "x.png", "image/png")
        said = await w.answered(w.dd.slash_interaction("describe", channel=w.channel, user=w.alice, options={"image": att}))
        assert "would not describe this picture (PROHIBITED_CONTENT)" in said
        assert "Traceback" not in said
