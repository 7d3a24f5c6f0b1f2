"""End to end: the app installed on a member's own account (Discord's user install).

Through the Discord double (installs, contexts, the bot's DM, group DMs, a server the bot is
not in, interaction tokens that die after 15 minutes on its clock) and the relay double.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.pricing import credits as picture_credits
from bot.relay.catalogue import DEFAULT_MODEL
from tests import e2e
from tests.doubles.discord_double import Call, CommandUnavailable, DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble

API_KEY = "relay-secret-key-user-install"
ONE = picture_credits({}, DEFAULT_MODEL, None)  # what a default picture costs


@dataclass
class World:
    dd: DiscordDouble
    relay: RelayDouble
    bot: Any
    guild: dict[str, Any]  # a server the bot is in
    channel: dict[str, Any]
    owner: dict[str, Any]
    alice: dict[str, Any]
    foreign: dict[str, Any]  # a server the bot is not in; alice is a member
    foreign_channel: dict[str, Any]
    dm: dict[str, Any]  # alice's DM with the bot
    group: dict[str, Any]  # a group DM of alice and bob, the bot not in it

    def hook_path(self) -> str:
        return rf"^/webhooks/{self.dd.application_id}/[^/]+"

    async def picture_followup(self, since: int, timeout: float = 20) -> Call:
        return await self.dd.wait_for(
            "POST", self.hook_path() + r"$", since=since, predicate=lambda c: bool(c.files) and c.status < 300, timeout=timeout
        )


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: str) -> AsyncIterator[World]:
    with RelayDouble(api_key=API_KEY) as relay:
        relay.default = Behaviour("image", width=96, height=64)
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Banana Lab")
            channel = dd.text_channels(guild)[0]
            owner = dd.users[int(guild["owner_id"])]
            alice = dd.add_member(guild, username="alice")
            bob = dd.add_user("bob")
            foreign = dd.add_guild("Elsewhere", bot_member=False)
            dd.add_member(foreign, alice["user"])
            bot = e2e.new_bot(relay, tmp_path / "data", API_KEY, **extra)
            async with dd.running(bot):
                yield World(
                    dd=dd,
                    relay=relay,
                    bot=bot,
                    guild=guild,
                    channel=channel,
                    owner=owner,
                    alice=alice["user"],
                    foreign=foreign,
                    foreign_channel=dd.text_channels(foreign)[0],
                    dm=dd.add_dm_channel(alice["user"]),
                    group=dd.add_group_dm(alice["user"], bob),
                )


async def ledger(bot: Any) -> list[tuple[Any, ...]]:
    async with bot.services.db.execute(
        "SELECT j.guild_id, j.status, q.state, q.credits FROM jobs j JOIN quota_ledger q ON q.job_id = j.id ORDER BY j.id"
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


def bot_posts(dd: DiscordDouble, channel: dict[str, Any], since: int = 0) -> list[Call]:
    return dd.find("POST", rf"^/channels/{channel['id']}/messages$", since=since)


async def answer(dd: DiscordDouble, payload: dict[str, Any], timeout: float = 10) -> Any:
    """The bot's answer to an interaction: its callback data once it has responded."""
    deadline = time.monotonic() + timeout
    while dd.response_type(payload) is None:
        assert time.monotonic() < deadline, "the bot did not answer"
        await asyncio.sleep(0.02)
    return dd.response_data(payload)


# ---------------------------------------------------------------- registration


async def test_commands_are_offered_to_both_installs_and_admin_stays_a_server_command(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        synced = {c["name"]: c for c in w.dd.synced_commands()}
        for name in ("imagine", "settings", "quota", "history", "describe"):
            assert synced[name]["integration_types"] == [0, 1], name
            assert sorted(synced[name]["contexts"]) == [0, 1, 2], name
        menus = [c for c in synced.values() if c["type"] == 3]
        assert menus and all(c["integration_types"] == [0, 1] for c in menus)
        assert synced["admin"]["integration_types"] == [0] and synced["admin"]["contexts"] == [0]
        with pytest.raises(CommandUnavailable):  # Discord would not offer /admin in a DM
            await w.dd.interact(w.dd.slash_interaction("admin", group="access", subcommand="threads", channel=w.dm, user=w.alice))


# ---------------------------------------------------------------- delivery through the interaction


async def test_imagine_in_the_bots_dm_delivers_through_the_interaction(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mark = w.dd.mark()
        payload = await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.dm, user=w.alice, options={"prompt": "a lighthouse"}))
        assert payload["context"] == 1 and payload["authorizing_integration_owners"] == {"1": w.alice["id"]}
        post = await w.picture_followup(mark)
        assert post.files[0].data == w.relay.images_served[-1]
        assert post.path.split("/")[3] == payload["token"]  # this interaction's followup
        await w.bot.services.jobs.join()
        assert not [c for c in bot_posts(w.dd, w.dm, mark) if c.files]  # not posted with the bot token
        assert await ledger(w.bot) == [(None, "done", "committed", ONE)]  # the personal scope
        # The token went with the job: nothing of it is left in the database.
        async with w.bot.services.db.execute("SELECT COUNT(*) FROM job_replies") as cur:
            assert (await cur.fetchone())[0] == 0


async def test_imagine_in_a_server_the_bot_is_not_in_and_in_a_group_dm(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        for place in (w.foreign_channel, w.group):
            mark = w.dd.mark()
            payload = await w.dd.interact(w.dd.slash_interaction("imagine", channel=place, user=w.alice, options={"prompt": "a kite"}))
            post = await w.picture_followup(mark)
            assert post.files[0].data == w.relay.images_served[-1]
            msg = w.dd.messages[int(post.response["id"])] if isinstance(post.response, dict) else None
            assert msg is None or msg["channel_id"] == place["id"]
            await w.bot.services.jobs.join()
            # The bot never tried its own token there (no thread, no post, nothing refused).
            assert not w.dd.find("*", rf"^/channels/{place['id']}/", since=mark)
            assert payload["context"] == (0 if place is w.foreign_channel else 2)
        assert [row[:3] for row in await ledger(w.bot)] == [(None, "done", "committed")] * 2
        # The double refuses the bot's token where it cannot see, as Discord does.
        with pytest.raises(Exception) as refused:
            await w.bot.http.send_message(int(w.group["id"]), params=_text_params("hello"))
        assert getattr(refused.value, "code", None) == 50001


def _text_params(content: str) -> Any:
    from discord.http import handle_message_parameters

    return handle_message_parameters(content=content)


async def test_a_result_after_the_token_window_reaches_the_member_by_dm(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("slow", delay=1.0))
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.foreign_channel, user=w.alice, options={"prompt": "slow tide"}))
        deadline = time.monotonic() + 10
        while not w.relay.requests:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        w.dd.advance(16 * 60)  # the picture is still being drawn when the token dies
        post = await w.dd.wait_for(
            "POST", rf"^/channels/{w.dm['id']}/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300, timeout=20
        )
        assert post.files[0].data == w.relay.images_served[-1]
        assert "15 minutes" in post.json["content"]
        # The token was tried (a progress edit or the followup) and Discord refused it as dead.
        expired = w.dd.find("*", w.hook_path(), since=mark, status=401)
        assert expired and expired[0].response["code"] == 50027
        await w.bot.services.jobs.join()
        assert [row[1:3] for row in await ledger(w.bot)] == [("done", "committed")]


async def test_a_late_result_whose_dm_is_closed_is_refunded(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("slow", delay=1.0))
        w.dd.fail(
            "POST", rf"^/channels/{w.dm['id']}/messages$", 403, {"message": "Cannot send messages to this user", "code": 50007}, times=None
        )
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.group, user=w.alice, options={"prompt": "closed door"}))
        deadline = time.monotonic() + 10
        while not w.relay.requests:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        w.dd.advance(16 * 60)
        await asyncio.sleep(1.5)
        await w.bot.services.jobs.join()
        assert [row[1:3] for row in await ledger(w.bot)] == [("failed", "refunded")]


# ---------------------------------------------------------------- the personal quota


async def test_the_personal_quota_refuses_the_next_picture_and_charges_nothing(tmp_path: Path) -> None:
    async with world(tmp_path, NB_USER_DAILY=str(2 * ONE)) as w:
        for n in range(2):
            mark = w.dd.mark()
            await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.dm, user=w.alice, options={"prompt": f"picture {n}"}))
            await w.picture_followup(mark)
            await w.bot.services.jobs.join()
        asked = len(w.relay.requests)
        third = await w.dd.interact(
            w.dd.slash_interaction("imagine", channel=w.foreign_channel, user=w.alice, options={"prompt": "one more"})
        )
        data = await answer(w.dd, third)
        text = str(data)
        assert "You've used 2" in text or f"used {2 * ONE}" in text, text
        assert data["flags"] & 64  # only the member sees it
        await w.bot.services.jobs.join()
        assert len(w.relay.requests) == asked  # nothing sent to the relay
        assert [row[2] for row in await ledger(w.bot)] == ["committed", "committed"]  # nothing reserved for it
        # /quota shows the personal quota, used up.
        shown = await w.dd.interact(w.dd.slash_interaction("quota", channel=w.dm, user=w.alice))
        embed = (await answer(w.dd, shown))["embeds"][0]
        assert "Personal credits" in embed["description"]
        assert f"**0** of {2 * ONE}" in embed["description"]


# ---------------------------------------------------------------- a server's say


async def test_a_server_that_forbids_user_installs_refuses_them_and_charges_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        admin = await w.dd.interact(
            w.dd.slash_interaction(
                "admin", group="access", subcommand="user_installs", channel=w.channel, user=w.owner, options={"allow": False}
            )
        )
        assert "refused" in str(await answer(w.dd, admin))
        refused = await w.dd.interact(
            w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options={"prompt": "sneaky"}, installed_by="user")
        )
        data = await answer(w.dd, refused)
        assert "doesn't allow" in data["content"] and data["flags"] & 64
        # The server's own install still works there, and the server's quota applies to it.
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options={"prompt": "fine"}))
        await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files), timeout=20)
        await w.bot.services.jobs.join()
        assert [row[:3] for row in await ledger(w.bot)] == [(int(w.guild["id"]), "done", "committed")]
        assert len(w.relay.requests) == 1


async def test_user_installed_use_in_a_server_the_bot_is_in_keeps_its_access_rules(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        other = w.dd.add_text_channel(w.guild, "art")
        await w.bot.services.guilds.update(int(w.guild["id"]), lambda g: g.with_access(channels=[int(other["id"])]))
        refused = await w.dd.interact(
            w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options={"prompt": "here?"}, installed_by="user")
        )
        data = await answer(w.dd, refused)
        assert data["flags"] & 64 and "embeds" in data
        await w.bot.services.jobs.join()
        assert await ledger(w.bot) == [] and not w.relay.requests


# ---------------------------------------------------------------- the operator's switch


async def test_user_install_off_registers_server_install_only_and_refuses(tmp_path: Path) -> None:
    async with world(tmp_path, NB_USER_INSTALL="off") as w:
        synced = {c["name"]: c for c in w.dd.synced_commands()}
        assert all(c["integration_types"] == [0] and c["contexts"] == [0] for c in synced.values())
        with pytest.raises(CommandUnavailable):
            await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.dm, user=w.alice, options={"prompt": "dm"}))
        # A command Discord still had registered from before (it takes a while to update):
        # refused, translated, charging nothing.
        stale = w.dd.slash_interaction("imagine", channel=w.foreign_channel, user=w.alice, options={"prompt": "x"}, locale="zh-CN")
        await w.dd.dispatch("INTERACTION_CREATE", stale)
        data = await answer(w.dd, stale)
        assert "用户安装" in data["content"] and data["flags"] & 64
        await w.bot.services.jobs.join()
        assert await ledger(w.bot) == [] and not w.relay.requests


# ---------------------------------------------------------------- the token with the job


async def test_progress_is_edited_through_the_stored_token_without_the_interaction(tmp_path: Path) -> None:
    """What a worker process does: it never saw the interaction, only the job and its token."""
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("slow", delay=0.8))
        mark = w.dd.mark()
        payload = await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options={"prompt": "worker"}))
        await answer(w.dd, payload)
        progress = w.bot.get_cog("Imagine").progress
        original = w.dd.original_message(payload)
        progress.release(int(original["id"]))  # as in a worker: no interaction object held
        await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files), timeout=20)
        await w.bot.services.jobs.join()
        token = payload["token"]
        by_hook = w.dd.find("*", rf"^/webhooks/{w.dd.application_id}/{token}/messages/{original['id']}$", since=mark)
        assert by_hook and all(c.status < 300 for c in by_hook)  # edited (and removed) through the webhook
        assert not w.dd.find("PATCH", rf"^/channels/{w.channel['id']}/messages/{original['id']}$", since=mark)
        assert int(original["id"]) not in w.dd.messages  # the progress message went when the picture came


async def test_the_stored_token_is_encrypted(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        svc = w.bot.services
        await svc.replies.put(99, application_id=1, token="tok-en-secret", acked_at=time.time(), channel_post=False)
        async with svc.db.execute("SELECT token_cipher FROM job_replies WHERE message_id = 99") as cur:
            (cipher,) = await cur.fetchone()
        assert b"tok-en-secret" not in bytes(cipher)
        svc.replies._cache.clear()
        reply = await svc.replies.get(99)
        assert reply is not None and reply.token == "tok-en-secret" and reply.alive() and "tok-en" not in repr(reply)
        await svc.replies.drop(99)
        assert await svc.replies.get(99) is None


# ---------------------------------------------------------------- the server's live-preview default


async def test_a_servers_preview_default_turns_previews_on_unless_the_member_says_no(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        admin = await w.dd.interact(
            w.dd.slash_interaction("admin", group="defaults", subcommand="previews", channel=w.channel, user=w.owner, options={"on": True})
        )
        assert "on by default" in str(await answer(w.dd, admin))
        for option, expected in ((None, True), (False, False)):
            options: dict[str, Any] = {"prompt": "drafts?"}
            if option is not None:
                options["preview"] = option
            mark = w.dd.mark()
            await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options=options))
            await w.dd.wait_for(
                "POST", rf"^/channels/{w.channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files), timeout=20
            )
            await w.bot.services.jobs.join()
            async with w.bot.services.db.execute("SELECT request FROM jobs ORDER BY id DESC LIMIT 1") as cur:
                (request,) = await cur.fetchone()
            assert ('"preview": true' in request) is expected, request


# ---------------------------------------------------------------- conversations without a server


def _button(message: dict[str, Any], prefix: str) -> str:
    return next(c["custom_id"] for row in message["components"] for c in row["components"] if c["custom_id"].startswith(prefix))


def _signatures(contents: list[dict[str, Any]]) -> list[str]:
    return [p["thoughtSignature"] for c in contents if c.get("role") == "model" for p in c.get("parts", []) if "thoughtSignature" in p]


async def test_reroll_and_the_edit_form_work_in_a_server_the_bot_is_not_in(tmp_path: Path) -> None:
    from tests.test_bot_e2e import modal_ids

    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("image", signature="sig-root"))
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.foreign_channel, user=w.alice, options={"prompt": "a fox"}))
        result = w.dd.messages[int((await w.picture_followup(mark)).response["id"])]
        await w.bot.services.jobs.join()

        mark = w.dd.mark()
        click = await w.dd.interact(w.dd.component_interaction(result, _button(result, "nb:reroll:"), user=w.alice))
        rerolled = await w.picture_followup(mark)
        assert rerolled.path.split("/")[3] == click["token"]  # answered through the click's own interaction
        await w.bot.services.jobs.join()

        mark = w.dd.mark()
        opened = await w.dd.interact(w.dd.component_interaction(result, _button(result, "nb:edit:"), user=w.alice))
        assert (await answer(w.dd, opened)) is not None and w.dd.response_type(opened) == 9  # the form
        modal = w.dd.last_modal()
        assert modal is not None
        ids = modal_ids(modal)
        w.relay.enqueue(Behaviour("image", signature="sig-edit"))
        await w.dd.interact(
            w.dd.modal_submit_interaction(
                modal["custom_id"], {ids[4]: "give the fox a hat", ids[19]: []}, channel=w.foreign_channel, user=w.alice, modal=modal
            )
        )
        edited = await w.picture_followup(mark)
        assert edited.files[0].data == w.relay.images_served[-1]
        await w.bot.services.jobs.join()
        assert _signatures(w.relay.requests[-1].json["contents"]) == ["sig-root"]  # it continued the fox
        assert not w.dd.find("*", rf"^/channels/{w.foreign_channel['id']}/")
        assert [row[:3] for row in await ledger(w.bot)] == [(None, "done", "committed")] * 3


async def test_a_reply_in_the_bots_dm_continues_the_picture(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("image", signature="sig-root"))
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.dm, user=w.alice, options={"prompt": "a quiet harbour"}))
        result = w.dd.messages[int((await w.picture_followup(mark)).response["id"])]
        await w.bot.services.jobs.join()
        w.relay.enqueue(Behaviour("image", signature="sig-night"))
        mark = w.dd.mark()
        await w.dd.post_message(w.dm, w.alice, "make it night time", reply_to=result)
        post = await w.dd.wait_for(
            "POST", rf"^/channels/{w.dm['id']}/messages$", since=mark, predicate=lambda c: bool(c.files) and c.status < 300, timeout=20
        )
        assert post.files[0].data == w.relay.images_served[-1]
        await w.bot.services.jobs.join()
        sent = w.relay.requests[-1].json["contents"]
        assert sent[-1]["parts"][0]["text"] == "make it night time" and _signatures(sent) == ["sig-root"]
        assert [row[:3] for row in await ledger(w.bot)] == [(None, "done", "committed")] * 2
        # A plain message in the DM (no reply to a picture) starts nothing.
        asked = len(w.relay.requests)
        await w.dd.post_message(w.dm, w.alice, "thanks!")
        await asyncio.sleep(0.3)
        assert len(w.relay.requests) == asked


async def test_personal_defaults_set_in_the_bots_dm_apply_to_imagine_outside_servers(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        uid = w.alice["id"]
        opened = await w.dd.interact(w.dd.slash_interaction("settings", channel=w.dm, user=w.alice))
        await answer(w.dd, opened)
        panel = w.dd.original_message(opened)
        assert panel is not None
        pro = "gemini-3-pro-image-preview"
        for custom_id, value in ((f"nb:set:f:{uid}", "model"), (f"nb:set:v:{uid}:model", pro)):
            click = await w.dd.interact(w.dd.component_interaction(panel, custom_id, user=w.alice, component_type=3, values=[value]))
            await answer(w.dd, click)
            panel = w.dd.messages[int(panel["id"])]
        # The personal default holds in a group DM too (no server: the same personal settings)...
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.group, user=w.alice, options={"prompt": "a pear"}))
        await w.picture_followup(mark)
        await w.bot.services.jobs.join()
        assert pro in w.relay.requests[-1].path
        # ...but not in a server the bot is in, where the member's settings there apply.
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.channel, user=w.alice, options={"prompt": "a plum"}))
        await w.dd.wait_for("POST", rf"^/channels/{w.channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files), timeout=20)
        await w.bot.services.jobs.join()
        assert pro not in w.relay.requests[-1].path


def test_interaction_tokens_are_masked_in_log_lines() -> None:
    from bot.relay.redact import redact_everywhere

    token = "aW50ZXJhY3Rpb246MTU3NzU4NjM5MTg1MDgxMTM5Mjo8zOFQXPjv64Uf"
    line = f"PATCH https://discord.com/api/v10/webhooks/123/{token}/messages/456 -> 401; POST /interactions/789/{token}/callback"
    cleaned = redact_everywhere(line)
    assert token not in cleaned and "/webhooks/123/***/messages/456" in cleaned and "/interactions/789/***/callback" in cleaned


async def test_the_member_is_told_before_the_token_dies_that_the_picture_will_come_by_dm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.jobs.replies as replies

    # The token is used for 61.5 s instead of 14 minutes: the notice comes 60 s before, at 1.5 s.
    monkeypatch.setattr(replies, "SAFE_LIFETIME_S", 61.5)
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("slow", delay=3.0))
        mark = w.dd.mark()
        payload = await w.dd.interact(
            w.dd.slash_interaction("imagine", channel=w.foreign_channel, user=w.alice, options={"prompt": "long"})
        )
        told = await w.dd.wait_for(
            "PATCH",
            rf"^/webhooks/{w.dd.application_id}/{payload['token']}/messages/",
            since=mark,
            predicate=lambda c: "direct message" in str((c.json or {}).get("content")),
            timeout=10,
        )
        assert told.status < 300
        post = await w.picture_followup(mark)  # still in time: the picture itself goes there
        assert post.index > told.index
        await w.bot.services.jobs.join()


async def test_cancel_in_the_bots_dm_refunds_and_forgets_the_token(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.relay.enqueue(Behaviour("slow", delay=2.0))
        payload = await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.dm, user=w.alice, options={"prompt": "never mind"}))
        await answer(w.dd, payload)
        deadline = time.monotonic() + 10
        while True:
            progress = w.dd.original_message(payload)
            if progress and any(
                c.get("custom_id", "").startswith("nb:cancel:") for r in progress.get("components", []) for c in r["components"]
            ):
                break
            assert time.monotonic() < deadline, progress
            await asyncio.sleep(0.05)
        click = await w.dd.interact(w.dd.component_interaction(progress, _button(progress, "nb:cancel:"), user=w.alice))
        await answer(w.dd, click)
        await w.bot.services.jobs.join()
        assert [row[1:3] for row in await ledger(w.bot)] == [("cancelled", "refunded")]
        async with w.bot.services.db.execute("SELECT COUNT(*) FROM job_replies") as cur:
            assert (await cur.fetchone())[0] == 0


async def test_save_as_style_outside_servers_says_why_it_cannot(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mark = w.dd.mark()
        await w.dd.interact(w.dd.slash_interaction("imagine", channel=w.dm, user=w.alice, options={"prompt": "a teapot"}))
        result = w.dd.messages[int((await w.picture_followup(mark)).response["id"])]
        await w.bot.services.jobs.join()
        click = await w.dd.interact(w.dd.component_interaction(result, _button(result, "nb:style:"), user=w.alice))
        data = await answer(w.dd, click)
        assert "Styles are kept per server" in data["content"] and data["flags"] & 64
