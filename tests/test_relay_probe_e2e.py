"""/admin relay add with only a URL and a key, end to end: the real bot probes one relay double
per seed relay style, shows what it found, stores it, and /imagine then works through it; a
relay that answers nothing useful is not stored and the admin is told to choose the format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import NanoBananaBot
from cogs.admin.relay_form import FIELD_KEY, FIELD_NAME, FIELD_URL
from tests.doubles.discord_double import Call
from tests.doubles.relay_double import SeedRelayDouble
from tests.test_admin_e2e import GUILD_KEY, World, _leaks, finished, is_ephemeral, text_of, world


async def add_by_probe(w: World, name: str, url: str, key: str, *, locale: str = "en-US") -> Call:
    """/admin relay add with no format and no auth: the form, then only name, URL and key."""
    mark = w.dd.mark()
    inter = await w.admin("relay", "add", locale=locale)
    ack = await w.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
    assert ack.json["type"] == 9, text_of(ack)
    modal = ack.json["data"]
    fields = {FIELD_NAME: name, FIELD_URL: url, FIELD_KEY: key}
    submit = w.dd.modal_submit_interaction(modal["custom_id"], fields, channel=w.channel, user=w.ada, modal=modal, locale=locale)
    await w.dd.interact(submit)
    return await w.answer(submit, mark, timeout=60)


async def imagine_through(w: World, bot: NanoBananaBot, relay: SeedRelayDouble, model: str) -> Any:
    inter, mark = await w.imagine(w.alice, prompt="a lighthouse", model=model)
    await w.result_post(since=mark)
    await finished(bot)
    made = [r for r in relay.requests if r.path.endswith((":generateContent", ":streamGenerateContent", "/generations", "/completions"))]
    made = [r for r in made if r.json and ("contents" in r.json or "prompt" in r.json or "messages" in r.json)]
    assert len(made) == 1, [r.path for r in relay.requests]
    return made[0]


@pytest.mark.parametrize(
    "style, dialect, auth, model, sent_as, label",
    [
        ("gemini-query", "gemini", "query", "gemini-3-pro-image-preview", "gemini-3-pro-image-preview", "?key= in the URL"),
        ("gemini-bearer", "gemini", "bearer", "gemini-3-pro-image-preview", "gemini-3-pro-image-preview", "Bearer"),
        ("openai-images", "openai-images", "bearer", "gemini-3-pro-image-preview", None, "OpenAI Images"),
        ("openai-chat", "openai-chat", "bearer", "gemini-2.5-flash-image", "gemini-2.5-flash-image", "OpenAI Chat"),
    ],
)
async def test_a_relay_added_with_only_url_and_key_is_worked_out_stored_and_used(
    tmp_path: Path, style: str, dialect: str, auth: str, model: str, sent_as: str | None, label: str
) -> None:
    with SeedRelayDouble(style, api_key=GUILD_KEY) as relay:
        async with world(tmp_path) as (w, bot):
            answer = await add_by_probe(w, "auto", relay.url, GUILD_KEY)
            text = text_of(answer)
            assert is_ephemeral(answer) and "Relay **auto** added" in text and "Found it" in text, text
            assert label in text and "Models:" in text, text
            assert not _leaks(text)
            [info] = await bot.services.relays.list(int(w.guild["id"]))
            assert (info.dialect, info.auth) == (dialect, auth)
            sent = await imagine_through(w, bot, relay, model)
            assert sent.key_ok and sent.auth_style == auth
            if sent_as is not None:
                assert sent.model == sent_as
            else:  # OpenAI Images relays name the Pro model nano-banana-pro*
                assert sent.model and sent.model.startswith(("nano-banana-pro", "gemini-3-pro")), sent.model


async def test_a_relay_that_answers_nothing_useful_is_not_stored_and_the_admin_chooses_the_format(tmp_path: Path) -> None:
    with SeedRelayDouble("useless", api_key=GUILD_KEY) as relay:
        async with world(tmp_path) as (w, bot):
            answer = await add_by_probe(w, "auto", relay.url, GUILD_KEY)
            text = text_of(answer)
            assert is_ephemeral(answer) and "Choose the format by hand" in text and "nothing was saved" in text, text
            assert not _leaks(text)
            assert await bot.services.relays.list(int(w.guild["id"])) == []
            assert all(r.method == "GET" for r in relay.requests)  # cheap calls only

            chinese = text_of(await add_by_probe(w, "auto", relay.url, GUILD_KEY, locale="zh-CN"))
            assert "接口格式" in chinese or "格式" in chinese, chinese


async def test_the_probe_obeys_the_url_guard(tmp_path: Path) -> None:
    with SeedRelayDouble("gemini-query", api_key=GUILD_KEY) as relay:
        async with world(tmp_path, NB_ALLOW_PRIVATE_RELAYS="0") as (w, bot):
            port = relay.url.rsplit(":", 1)[1]
            answer = await add_by_probe(w, "auto", f"https://127.0.0.1:{port}", GUILD_KEY)
            assert not _leaks(text_of(answer)) and "Relay **auto** added" not in text_of(answer), text_of(answer)
            assert relay.requests == [] and await bot.services.relays.list(int(w.guild["id"])) == []
