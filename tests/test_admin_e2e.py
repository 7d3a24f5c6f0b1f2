"""/admin and /quota end to end: the real bot against the Discord double (REST + gateway), relay
doubles on 127.0.0.1 (allowed by NB_ALLOW_PRIVATE_RELAYS=1 unless a test says otherwise) and a
real SQLite file in a temp data dir."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from PIL import Image

from bot.app import NanoBananaBot
from bot.quota import next_day
from cogs.admin.relay_form import FIELD_ALIASES, FIELD_KEY, FIELD_NAME, FIELD_URL
from tests import e2e
from tests.doubles.discord_double import Call, DiscordDouble, Perm
from tests.doubles.relay_double import Behaviour, RelayDouble

OPERATOR_KEY = "operator-relay-key-123456"
# What a server admin types into the relay form. The distinctive middle part is what the leak
# checks look for (the masked hint legitimately shows "sk-" and the last four characters).
SECRET_PART = "guildSECRETkey7f3a9c"
GUILD_KEY = f"sk-{SECRET_PART}0123456789abcdef"
REFUSAL = "Manage Server"
EPHEMERAL = 64


def new_bot(relay: RelayDouble, data_dir: Path, **extra: str) -> NanoBananaBot:
    return e2e.new_bot(relay, data_dir, OPERATOR_KEY, **extra)


def text_of(call: Call) -> str:
    """Everything a member would read in an answer: content, embeds (callback or followup)."""
    body = call.json or {}
    data = body.get("data", body) if "type" in body and "data" in body else body
    return json.dumps({k: data.get(k) for k in ("content", "embeds")}, ensure_ascii=False)


def is_ephemeral(call: Call) -> bool:
    body = call.json or {}
    data = body.get("data", body) if "type" in body and "data" in body else body
    return bool((data.get("flags") or 0) & EPHEMERAL)


class World:
    def __init__(self, dd: DiscordDouble, relay: RelayDouble, data_dir: Path) -> None:
        self.dd = dd
        self.relay = relay
        self.data_dir = data_dir
        self.guild = dd.add_guild("Banana Lab")
        self.channel = dd.text_channels(self.guild)[0]
        self.mods = dd.add_role(self.guild, "Mods", Perm.MANAGE_GUILD)
        self.ada = dd.add_member(self.guild, username="ada", roles=[self.mods])  # may manage the server
        self.alice = dd.add_member(self.guild, username="alice")  # an ordinary member

    async def command(
        self, command: str, /, *, user: Any, group: str | None = None, sub: str | None = None, locale: str = "en-US", **options: Any
    ) -> dict[str, Any]:
        payload = self.dd.slash_interaction(
            command, channel=self.channel, user=user, group=group, subcommand=sub, options=options, locale=locale
        )
        return await self.dd.interact(payload)

    async def admin(self, group: str | None, sub: str, /, *, user: Any = None, locale: str = "en-US", **options: Any) -> dict[str, Any]:
        return await self.command("admin", user=user or self.ada, group=group, sub=sub, locale=locale, **options)

    async def answer(self, inter: dict[str, Any], since: int, timeout: float = 10.0) -> Call:
        """The bot's answer: its callback, or (after a defer) its first followup."""
        ack = await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=since, timeout=timeout)
        if ack.json["type"] != 5:
            return ack
        token = re.escape(inter["token"])
        return await self.dd.wait_for("POST", rf"^/webhooks/\d+/{token}$", since=since, timeout=timeout)

    async def ask(self, group: str | None, sub: str, /, **kwargs: Any) -> Call:
        mark = self.dd.mark()
        inter = await self.admin(group, sub, **kwargs)
        return await self.answer(inter, mark)

    async def submit_relay_form(
        self,
        fields: dict[str, str],
        *,
        user: Any = None,
        locale: str = "en-US",
        member_permissions: Any = None,
        dialect: str = "gemini",
        auth: str = "query",
        edit: str | None = None,
    ) -> Call:
        user = user or self.ada
        mark = self.dd.mark()
        if edit:
            inter = await self.admin("relay", "edit", user=user, locale=locale, name=edit)
        else:
            inter = await self.admin("relay", "add", user=user, locale=locale, format=dialect, auth=auth)
        ack = await self.dd.wait_for("POST", rf"^/interactions/{inter['id']}/", since=mark)
        assert ack.json["type"] == 9, text_of(ack)  # the form
        modal = ack.json["data"]
        submit = self.dd.modal_submit_interaction(
            modal["custom_id"], fields, channel=self.channel, user=user, modal=modal, locale=locale, member_permissions=member_permissions
        )
        await self.dd.interact(submit)
        return await self.answer(submit, mark)

    async def add_relay(self, name: str, url: str, key: str, **kwargs: Any) -> Call:
        return await self.submit_relay_form({FIELD_NAME: name, FIELD_URL: url, FIELD_KEY: key}, **kwargs)

    async def imagine(self, user: Any, **options: Any) -> tuple[dict[str, Any], int]:
        mark = self.dd.mark()
        inter = await self.command("imagine", user=user, **options)
        return inter, mark

    async def result_post(self, since: int, timeout: float = 20.0) -> Call:
        return await self.dd.wait_for(
            "POST",
            rf"^/channels/{self.channel['id']}/messages$",
            since=since,
            predicate=lambda c: bool(c.files) and c.status < 300,
            timeout=timeout,
        )


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: str) -> AsyncIterator[tuple[World, NanoBananaBot]]:
    extra.setdefault("NB_ALLOW_PRIVATE_RELAYS", "1")
    with RelayDouble(api_key=OPERATOR_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            bot = new_bot(relay, w.data_dir, **extra)
            async with dd.running(bot):
                yield w, bot


async def finished(bot: NanoBananaBot) -> None:
    """Until the job queue is idle: the last job's row says done and its credits are settled
    (admin writes then cannot overlap the job's own)."""
    await asyncio.wait_for(bot.services.jobs.join(), timeout=20)


def admin_subcommands(dd: DiscordDouble) -> Iterator[tuple[str | None, str, list[dict[str, Any]]]]:
    """(group, subcommand, option definitions) of every /admin subcommand, as synced."""
    admin = next(c for c in dd.synced_commands() if c["name"] == "admin")
    for option in admin["options"]:
        if option["type"] == 2:
            for sub in option["options"]:
                assert sub["type"] == 1
                yield option["name"], sub["name"], sub.get("options", [])
        else:
            assert option["type"] == 1
            yield None, option["name"], option.get("options", [])


def required_values(w: World, defs: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for d in defs:
        if not d.get("required"):
            continue
        if d.get("choices"):
            values[d["name"]] = d["choices"][0]["value"]
        else:
            values[d["name"]] = {3: "main", 4: 1, 5: True, 7: w.channel, 8: w.mods, 10: 1.0}[d["type"]]
    return values


# --------------------------------------------------------------------------- permissions


async def test_a_non_admin_is_refused_every_admin_subcommand_and_an_admin_is_not(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        synced = {c["name"]: c for c in w.dd.synced_commands()}
        admin = synced["admin"]
        assert int(admin["default_member_permissions"]) == Perm.MANAGE_GUILD  # hidden from members by default...
        assert admin.get("contexts") == [0] or admin.get("dm_permission") is False  # ...and server-only

        subcommands = list(admin_subcommands(w.dd))
        names = {f"{g} {s}" if g else s for g, s, _ in subcommands}
        assert names == {
            "relay add",
            "relay edit",
            "relay list",
            "relay test",
            "relay remove",
            "relay order",
            "relay low-balance",
            "defaults set",
            "defaults models",
            "defaults previews",
            "access channel",
            "access role",
            "access threads",
            "access user_installs",
            "safety block",
            "safety unblock",
            "safety list",
            "safety nsfw-model",
            "safety spoiler",
            "safety threshold",
            "quota limits",
            "quota cost",
            "quota role-bonus",
            "quota exempt",
            "usage",
            "settings",
            "log",
            "style add",
            "style remove",
            "style list",
            "variants",
        }
        before = (await bot.services.guild(int(w.guild["id"]))).to_json()

        # ...but a server owner can hand the command to anyone: the bot checks for itself.
        for group, sub, defs in subcommands:
            mark = w.dd.mark()
            inter = await w.admin(group, sub, user=w.alice, **required_values(w, defs))
            answer = await w.answer(inter, mark)
            assert answer.json["type"] == 4, f"/admin {group} {sub}: {text_of(answer)}"  # no form, no defer
            assert is_ephemeral(answer), f"/admin {group} {sub}"
            assert REFUSAL in text_of(answer), f"/admin {group} {sub}: {text_of(answer)}"
        assert (await bot.services.guild(int(w.guild["id"]))).to_json() == before
        assert await bot.services.relays.list(int(w.guild["id"])) == []

        # The same subcommands for a member whose role has Manage Server: none refused, none broken.
        for group, sub, defs in subcommands:
            mark = w.dd.mark()
            inter = await w.admin(group, sub, user=w.ada, **required_values(w, defs))
            answer = await w.answer(inter, mark)
            text = text_of(answer)
            assert REFUSAL not in text and "Something went wrong" not in text, f"/admin {group} {sub}: {text}"
            if (group, sub) == ("relay", "add"):
                assert answer.json["type"] == 9  # the relay form


async def test_the_relay_form_checks_manage_server_again_when_submitted(tmp_path: Path) -> None:
    with RelayDouble(api_key=GUILD_KEY) as guild_relay:
        async with world(tmp_path) as (w, bot):
            # The form was opened with Manage Server; by the time it is sent the role is gone.
            answer = await w.add_relay("main", guild_relay.url, GUILD_KEY, member_permissions=int(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES))
            assert is_ephemeral(answer) and REFUSAL in text_of(answer)
            assert await bot.services.relays.list(int(w.guild["id"])) == []


# --------------------------------------------------------------------------- keys are secrets


def _leaks(blob: str | bytes) -> bool:
    forms = {GUILD_KEY, SECRET_PART, quote(GUILD_KEY, safe=""), quote_plus(GUILD_KEY)}
    if isinstance(blob, bytes):
        return any(f.encode() in blob for f in forms)
    return any(f in blob for f in forms)


async def test_a_key_typed_into_the_form_is_stored_encrypted_and_never_sent_or_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with RelayDouble(api_key=GUILD_KEY) as guild_relay:
        async with world(tmp_path) as (w, bot):
            gid = int(w.guild["id"])
            added = await w.add_relay("main", guild_relay.url, GUILD_KEY, auth="query")
            assert is_ephemeral(added)
            assert "main" in text_of(added) and "sk-…cdef" in text_of(added)  # only the masked hint

            listed = await w.ask("relay", "list")
            assert "sk-…cdef" in text_of(listed) and guild_relay.url in text_of(listed)

            # The edit form is prefilled with everything but the key.
            mark = w.dd.mark()
            inter = await w.admin("relay", "edit", name="main")
            form = (await w.answer(inter, mark)).json["data"]
            assert guild_relay.url in json.dumps(form)
            submit = w.dd.modal_submit_interaction(
                form["custom_id"],
                {FIELD_NAME: "main", FIELD_URL: guild_relay.url, FIELD_KEY: "", FIELD_ALIASES: ""},
                channel=w.channel,
                user=w.ada,
                modal=form,
            )
            await w.dd.interact(submit)
            assert "Relay **main** updated" in text_of(await w.answer(submit, mark))  # an empty key field keeps the key

            # A picture through it (the key goes in ?key=, the form httpx logs at INFO)...
            inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
            await w.result_post(since=mark)
            await finished(bot)
            # ...and a failing relay test whose error comes back to the admin.
            guild_relay.enqueue(Behaviour("error", status=503, message="upstream overloaded"))
            failed = await w.ask("relay", "test", name="main")
            assert "upstream overloaded" in text_of(failed)

            sent = [r for r in guild_relay.requests if ":generateContent" in r.path]
            assert sent and sent[-1].query.get("key") == GUILD_KEY and sent[-1].key_ok  # the key kept working

            # Outgoing: every REST call (path, query, headers, JSON, form fields, file bytes)...
            assert w.dd.calls
            for call in w.dd.calls:
                blob = json.dumps([call.path, call.query, call.json, call.form], ensure_ascii=False, default=str)
                assert not _leaks(blob), f"{call!r} carries the key"
                assert not any(_leaks(f.data) for f in call.files), f"{call!r} uploads the key"
            # ...and every gateway message the bot sent.
            assert w.dd.gateway_received
            assert not _leaks(json.dumps(w.dd.gateway_received, default=str))

            # At rest: encrypted, also in the raw database file and its WAL.
            async with bot.services.db.execute("SELECT key_ciphertext, key_hint FROM relays WHERE guild_id = ?", (gid,)) as cur:
                ciphertext, hint = await cur.fetchone()
            assert not _leaks(bytes(ciphertext)) and hint == "sk-…cdef"
            for path in w.data_dir.glob("bot.sqlite3*"):
                assert not _leaks(path.read_bytes()), path.name

    # Logs, at DEBUG, of the whole flow. discord.py logs each gateway event at DEBUG, the form
    # submission included: make sure that record was there to be checked, masked.
    form_records = [r for r in caplog.records if r.name == "discord.gateway" and "nb:relayform:" in r.getMessage()]
    assert form_records and all("***" in r.getMessage() for r in form_records)
    for record in caplog.records:
        assert not _leaks(record.getMessage()), f"{record.name}: {record.getMessage()[:300]}"
        assert not _leaks(record.exc_text or ""), record.name
    assert not _leaks(caplog.text)


# --------------------------------------------------------------------------- relays


async def test_relay_test_reports_latency_or_the_relays_own_error(tmp_path: Path) -> None:
    with RelayDouble(api_key=GUILD_KEY) as guild_relay:
        async with world(tmp_path) as (w, bot):
            await w.add_relay("good", guild_relay.url, GUILD_KEY, auth="x-goog-api-key")
            await w.add_relay("wrongkey", guild_relay.url, "sk-not-the-right-key-000000000000", auth="x-goog-api-key")

            ok = await w.ask("relay", "test", name="good")
            assert re.search(r"answered in \d+ ms", text_of(ok)), text_of(ok)
            assert guild_relay.requests[-1].path == "/v1beta/models"  # a real, cheap call

            # A relay refusing the key: its own words (Google-style 400 API_KEY_INVALID).
            refused = await w.ask("relay", "test", name="wrongkey")
            assert is_ephemeral(refused)
            assert "HTTP 400" in text_of(refused) and "API key not valid" in text_of(refused)

            # A relay that is down: status and message.
            guild_relay.enqueue(Behaviour("error", status=503, message="The model is overloaded. Please try again later."))
            down = await w.ask("relay", "test", name="good")
            assert "HTTP 503" in text_of(down) and "The model is overloaded" in text_of(down)

            unknown = await w.ask("relay", "test", name="nope")
            assert "no relay called **nope**" in text_of(unknown)


async def test_a_relay_added_through_the_form_is_used_by_imagine_in_the_order_set(tmp_path: Path) -> None:
    with RelayDouble(api_key=GUILD_KEY) as first, RelayDouble(api_key="sk-second-relay-key-0000000000") as second:
        async with world(tmp_path) as (w, bot):
            await w.add_relay("first", first.url, GUILD_KEY, auth="bearer")
            added = await w.submit_relay_form(
                {
                    FIELD_NAME: "second",
                    FIELD_URL: second.url,
                    FIELD_KEY: "sk-second-relay-key-0000000000",
                    FIELD_ALIASES: "gemini-3.1-flash-image-preview=nano-banana-2",
                },
                dialect="gemini",
                auth="x-goog-api-key",
            )
            assert "number 2 in the failover order" in text_of(added)

            inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
            await w.result_post(since=mark)
            generated = [r for r in first.requests if ":generateContent" in r.path]
            assert len(generated) == 1 and generated[0].auth_style == "bearer" and generated[0].key_ok
            assert not [r for r in w.relay.requests if ":generateContent" in r.path]  # not the operator's relay
            await finished(bot)

            ordered = await w.ask("relay", "order", order="second, first")
            assert "**second** → **first**" in text_of(ordered)
            inter, mark = await w.imagine(w.alice, prompt="a windmill")
            await w.result_post(since=mark)
            generated = [r for r in second.requests if ":generateContent" in r.path]
            assert len(generated) == 1 and generated[0].auth_style == "x-goog-api-key" and generated[0].key_ok
            assert generated[0].model == "nano-banana-2"  # the relay's model name typed into the form
            assert len([r for r in first.requests if ":generateContent" in r.path]) == 1
            await finished(bot)

            removed = await w.ask("relay", "remove", name="second")
            assert "removed" in text_of(removed)
            assert [r.name for r in await bot.services.relays.list(int(w.guild["id"]))] == ["first"]


async def test_without_the_operator_flag_loopback_and_http_relays_are_refused(tmp_path: Path) -> None:
    with RelayDouble(api_key=GUILD_KEY) as guild_relay:
        async with world(tmp_path, NB_ALLOW_PRIVATE_RELAYS="0") as (w, bot):
            port = guild_relay.url.rsplit(":", 1)[1]
            plain = await w.add_relay("main", guild_relay.url, GUILD_KEY)
            assert is_ephemeral(plain) and "must start with `https://`" in text_of(plain)

            loopback = await w.add_relay("main", f"https://127.0.0.1:{port}", GUILD_KEY)
            assert "127.0.0.1 points to a private or local address" in text_of(loopback)

            metadata = await w.add_relay("main", "https://169.254.169.254/", GUILD_KEY)
            assert "cloud metadata service" in text_of(metadata)

            chinese = await w.add_relay("main", f"https://[::1]:{port}", GUILD_KEY, locale="zh-CN")
            assert "私有或本地地址" in text_of(chinese)

            in_url = await w.add_relay("main", f"https://relay.example.com/?key={GUILD_KEY}", GUILD_KEY)
            assert "API key field" in text_of(in_url) and not _leaks(text_of(in_url))

            assert await bot.services.relays.list(int(w.guild["id"])) == []
            assert guild_relay.requests == []


# --------------------------------------------------------------------------- quota and usage


async def test_quota_shows_what_is_left_and_an_over_limit_member_is_refused_before_any_request(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        limits = await w.ask("quota", "limits", per_member_daily=1, server_monthly=100)
        assert "1 credit per member per day" in text_of(limits) and "100 credits for the server per month" in text_of(limits)

        mark = w.dd.mark()
        inter = await w.command("quota", user=w.alice)
        status = await w.answer(inter, mark)
        assert is_ephemeral(status)
        assert "**1** of 1 credit left today" in text_of(status)
        assert "No pictures yet" in text_of(status)

        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)
        sent = len(w.relay.requests)

        mark = w.dd.mark()
        inter = await w.command("quota", user=w.alice)
        text = text_of(await w.answer(inter, mark))
        reset = int(next_day(time.time()))
        assert "**0** of 1 credit left today" in text
        assert f"<t:{reset}:R>" in text
        assert "delivered" in text and "1 credit ·" in text

        inter, mark = await w.imagine(w.alice, prompt="another lighthouse")
        refusal = await w.answer(inter, mark)
        assert is_ephemeral(refusal)
        assert "You've used 1 of your 1 credit for today" in text_of(refusal)
        assert f"<t:{reset}:R>" in text_of(refusal)
        assert len(w.relay.requests) == sent  # nothing sent

        # A role bonus lifts the member's limit; the refusal above cost nothing.
        bonus = await w.ask("quota", "role-bonus", role=w.mods, credits=2)
        assert "2 extra credits" in text_of(bonus)
        mark = w.dd.mark()
        inter = await w.command("quota", user=w.ada)
        assert "**3** of 3 credits left today" in text_of(await w.answer(inter, mark))


async def test_usage_answers_with_a_png_chart_and_a_summary(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
        await w.result_post(since=mark)
        await finished(bot)

        answer = await w.ask(None, "usage", period="day")
        assert is_ephemeral(answer)
        assert answer.files, text_of(answer)
        png = answer.files[0].data
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        chart = Image.open(io.BytesIO(png))
        assert chart.format == "PNG" and chart.size[0] > chart.size[1] > 100
        text = text_of(answer)
        assert "🖼️ 1 picture ·" in text and f"<@{w.alice['user']['id']}>" in text


# --------------------------------------------------------------------------- language


async def test_admin_commands_answer_in_chinese_for_zh_cn_and_are_localized(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        answer = await w.ask("quota", "limits", per_member_daily=5, locale="zh-CN")
        text = text_of(answer)
        assert "每位成员每天" in text and "5 积分" in text, text

        listed = await w.ask("relay", "list", locale="zh-CN")
        assert "还没有中转站" in text_of(listed)

        admin = next(c for c in w.dd.synced_commands() if c["name"] == "admin")
        assert admin["name_localizations"]["zh-CN"] == "管理"
        relay = next(o for o in admin["options"] if o["name"] == "relay")
        assert relay["name_localizations"]["zh-CN"] == "中转站"
        quota = next(c for c in w.dd.synced_commands() if c["name"] == "quota")
        assert quota["name_localizations"]["zh-CN"] == "积分"
