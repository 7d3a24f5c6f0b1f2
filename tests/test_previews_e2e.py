"""Live previews and image-search grounding end to end: the real bot against the Discord
double, the relay double streaming the model's thoughts."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.relay import gemini
from tests.doubles.relay_double import Behaviour
from tests.test_bot_e2e import world

FLASH31 = "gemini-3.1-flash-image-preview"


async def test_progress_shows_the_drafts_then_the_picture_replaces_them(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        # Trickled over 8 s, so the two drafts arrive seconds apart, as a thinking model sends them.
        w.relay.enqueue(Behaviour("slow", trickle=8.0, width=256, height=192))
        mark = w.dd.mark()
        await w.imagine(prompt="a banana astronaut", model=FLASH31, preview=True)
        post = await w.result_post(since=mark, timeout=40)
        sent = w.relay.requests[-1]
        assert sent.path.endswith(":streamGenerateContent") and sent.json["generationConfig"]["thinkingConfig"]["includeThoughts"]
        edits = [c for c in w.dd.find("PATCH", r"/messages/@original$", since=mark) if c.index < post.index]
        drafts = [c for c in edits if c.files]
        assert drafts, "no draft was shown on the progress message"
        titles = [c.json["embeds"][0]["title"] for c in drafts]
        assert titles[0] == "Draft 1 · not the final picture" and titles == sorted(titles)
        first = drafts[0]
        assert first.json["embeds"][0]["thumbnail"]["url"] == "attachment://draft.jpg"
        assert first.json["embeds"][0]["description"].startswith("💭 Thinking: ")
        with Image.open(io.BytesIO(first.files[0].data)) as img:
            assert max(img.size) <= 256 and img.format == "JPEG"
        # The result is its own message with the full picture; the drafts' message goes.
        with Image.open(io.BytesIO(post.files[0].data)) as img:
            assert img.size == (256, 192)
        assert post.files[0].data == w.relay.images_served[-1]
        await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)


async def test_without_preview_nothing_streams(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        await w.imagine(prompt="a banana astronaut", model=FLASH31)
        await w.result_post(since=mark)
        assert w.relay.requests[-1].path.endswith(":generateContent")
        assert not [c for c in w.dd.find("PATCH", r"/messages/@original$", since=mark) if c.files]


async def test_image_search_result_lists_its_queries_and_source_pages(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        w.relay.enqueue(Behaviour("image", grounding=[{"uri": "https://butterflies.example/timareta", "title": "Timareta"}]))
        mark = w.dd.mark()
        await w.imagine(prompt="a timareta butterfly", model=FLASH31, search="images")
        post = await w.result_post(since=mark)
        tools = w.relay.requests[-1].json["tools"]
        assert tools == [{"googleSearch": {"searchTypes": {"webSearch": {}, "imageSearch": {}}}}]
        fields = {f["name"]: f["value"] for f in post.json["embeds"][0]["fields"]}
        assert fields["Image searches"] == "`a timareta butterfly`"
        assert fields["Sources"] == "[Timareta](https://butterflies.example/timareta) · [picture](https://images.example.org/0.jpg)"


async def test_web_search_on_flash_sends_the_plain_tool(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        mark = w.dd.mark()
        await w.imagine(prompt="the weather", model=FLASH31, search="web")
        post = await w.result_post(since=mark)
        assert w.relay.requests[-1].json["tools"] == [{"googleSearch": {}}]
        assert "Image searches" not in {f["name"] for f in post.json["embeds"][0]["fields"]}


async def test_a_streamed_turn_is_stored_as_the_plain_one_would_be(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        stored = []
        for preview in (False, True):
            w.relay.enqueue(Behaviour("image", width=64, height=48, signature="c2lnLWZpbmFs"))
            mark = w.dd.mark()
            await w.imagine(prompt="a banana astronaut", model=FLASH31, preview=preview)
            post = await w.result_post(since=mark)
            await w.dd.wait_for("DELETE", r"/messages/@original$", since=mark)  # the job's result recorded
            turn = await bot.services.conversations.turn_by_message(int(post.response["id"]))
            assert turn is not None
            stored.append(await bot.services.conversations.history(turn.id))
        assert w.relay.requests[-1].path.endswith(":streamGenerateContent")
        plain, streamed = (gemini.materialize(list(h)) for h in stored)
        assert streamed == plain  # the drafts are not kept; the signature is, as sent
        assert plain[1]["parts"][-1]["thoughtSignature"] == "c2lnLWZpbmFs"
