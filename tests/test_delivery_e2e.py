"""End to end: failures after the relay was paid lose nothing, and small delivery rules
(Retry once, no pings from echoed text, a reference Discord no longer serves)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests import e2e
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble
from tests.e2e import notice_paths

API_KEY = "relay-secret-key-123456"


@contextlib.contextmanager
def full_disk(path: Path) -> Any:
    """``path`` on a real file system with no space left: a 1 MiB tmpfs, filled (as root);
    otherwise a folder this user may not write to (a real EACCES from the file system)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        if mounted:
            with open(path / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        else:
            assert os.geteuid() != 0, "root but tmpfs could not be mounted"
            path.chmod(0o500)
        yield "ENOSPC" if mounted else "EACCES"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        else:
            path.chmod(0o700)


@contextlib.asynccontextmanager
async def bot_world(tmp_path: Path, **extra: str) -> AsyncIterator[tuple[DiscordDouble, RelayDouble, Any, dict[str, Any], dict[str, Any]]]:
    with RelayDouble(api_key=API_KEY) as relay:
        relay.default = Behaviour("image", width=96, height=64)
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Banana Lab")
            channel = dd.text_channels(guild)[0]
            alice = dd.add_member(guild, username="alice")
            bot = e2e.new_bot(relay, tmp_path / "data", API_KEY, **extra)
            async with dd.running(bot):
                yield dd, relay, bot, channel, alice


async def job_rows(bot: Any) -> list[tuple[Any, ...]]:
    async with bot.services.db.execute(
        "SELECT j.id, j.status, q.state FROM jobs j JOIN quota_ledger q ON q.job_id = j.id ORDER BY j.id"
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def test_a_paid_picture_is_delivered_when_the_disk_is_full(tmp_path: Path) -> None:
    async with bot_world(tmp_path) as (dd, relay, bot, channel, alice):
        with full_disk(tmp_path / "data" / "images") as how:
            mark = dd.mark()
            await dd.interact(dd.slash_interaction("imagine", channel=channel, user=alice, options={"prompt": "a lighthouse"}))
            post = await dd.wait_for(
                "POST",
                rf"^/channels/{channel['id']}/messages$",
                since=mark,
                predicate=lambda c: bool(c.files) and c.status < 300,
                timeout=20,
            )
            assert post.files[0].data == relay.images_served[-1]  # the picture the relay made
            footer = json.dumps(post.json["embeds"][0].get("footer") or {})
            assert "could not be saved" in footer, (how, footer)
            assert not post.json.get("components")  # no buttons that would need the lost turn
            await dd.wait_for("DELETE", r"/messages/@original$", since=mark)
            await bot.services.jobs.join()
            # Delivered, so charged once; nothing left running or reserved.
            assert [(s, q) for _, s, q in await job_rows(bot)] == [("done", "committed")]


# ---------------------------------------------------------------- small delivery rules

from tests.conftest import make_image  # noqa: E402
from tests.test_bot_e2e import World, model_signatures, new_bot, start_picture, world  # noqa: E402


async def test_two_quick_messages_in_a_thread_chain_the_second_edits_the_firsts_result(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        _, thread_id = await start_picture(w, "sig-root")
        thread = w.dd.channels[thread_id]
        w.relay.enqueue(Behaviour("slow", delay=0.5, signature="sig-first"), Behaviour("image", signature="sig-second"))
        mark = w.dd.mark()
        # Sent back to back: the second arrives while the first is still drawing.
        await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> make it night time")
        await w.dd.post_message(thread, w.alice, f"<@{bot.user.id}> and add a moon")
        for _ in range(2):
            await w.result_post(channel=thread, since=mark)
            mark_posts = [c for c in w.dd.find("POST", rf"^/channels/{thread_id}/messages$", since=mark) if c.files]
            if len(mark_posts) == 2:
                break
        await bot.services.jobs.join()
        first, second = w.relay.requests[-2].json["contents"], w.relay.requests[-1].json["contents"]
        assert first[-1]["parts"][0]["text"] == "make it night time"
        assert second[-1]["parts"][0]["text"] == "and add a moon"
        assert model_signatures(first) == ["sig-root"]
        assert model_signatures(second) == ["sig-root", "sig-first"]  # it edits the first's result


async def test_text_echoed_back_pings_nobody_but_the_requester(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, bot):
        _, thread_id = await start_picture(w, "sig-root")
        thread = w.dd.channels[thread_id]
        mark = w.dd.mark()
        w.relay.enqueue(Behaviour("image", signature="sig-x"))
        await w.dd.post_message(
            thread, w.alice, f"<@{bot.user.id}> put <@{w.bob['user']['id'] if 'user' in w.bob else w.bob['id']}> and @everyone on it"
        )
        await w.result_post(channel=thread, since=mark)
        await bot.services.jobs.join()
        alice_id = str(w.alice["user"]["id"] if "user" in w.alice else w.alice["id"])
        sent = [c for c in w.dd.find("POST", rf"^/channels/{thread_id}/messages$", since=mark) if c.status < 300]
        assert sent
        for call in sent:
            allowed = call.json.get("allowed_mentions")
            assert allowed is not None and allowed.get("parse") == [], call.json
            assert {str(u) for u in allowed.get("users") or []} <= {alice_id}
            assert not allowed.get("replied_user")


async def test_a_reference_image_discord_no_longer_serves_is_explained_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with world(tmp_path) as (w, bot):
        att = w.dd.add_attachment(make_image(64, 64), "old.png", "image/png")
        w.dd.expire_attachment_urls()  # the CDN now answers 404
        mark = w.dd.mark()
        inter = await w.imagine(prompt="use this", image1=att)
        edit = await w.dd.wait_for(
            "PATCH", r"/messages/@original$", since=mark, predicate=lambda c: "could not be fetched" in json.dumps(c.json), timeout=10
        )
        assert inter["token"] in edit.path
        await asyncio.sleep(0.2)
        assert w.relay.requests == []  # nothing sent, nothing charged
        assert not any(r.exc_info for r in caplog.records)
        async with bot.services.db.execute("SELECT COUNT(*) FROM jobs") as cur:
            assert (await cur.fetchone())[0] == 0


async def test_a_double_click_on_retry_makes_one_job(tmp_path: Path) -> None:
    with RelayDouble(api_key=API_KEY) as relay:
        async with DiscordDouble() as dd:
            w = World(dd, relay, tmp_path / "data")
            relay.enqueue(Behaviour("hang"))  # the first bot stops while this job is drawing
            mark = dd.mark()
            async with dd.running(new_bot(relay, w.data_dir)):
                inter = await w.imagine(prompt="a picture to retry")
                await asyncio.to_thread(relay.wait_for_requests, 1)
            progress = dd.original_message(inter)
            second = new_bot(relay, w.data_dir)
            async with dd.running(second):
                notice = await dd.wait_for(
                    "*",
                    notice_paths(w.channel),
                    since=mark,
                    predicate=lambda c: c.status < 300 and "nb:retry:" in json.dumps(c.json),
                    timeout=15,
                )
                retry_id = next(c["custom_id"] for row in notice.json["components"] for c in row["components"])
                shown = dd.messages[int(notice.response["id"])]
                assert progress is not None and shown["id"] == progress["id"]  # told on the progress message
                before = len(relay.requests)
                mark = dd.mark()
                clicks = [dd.component_interaction(shown, retry_id, user=w.alice) for _ in range(2)]
                await asyncio.gather(*(dd.interact(c) for c in clicks))
                await w.result_post(since=mark)
                await second.services.jobs.join()
                await asyncio.sleep(0.3)
                assert len(relay.requests) - before == 1
                async with second.services.db.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'retry'") as cur:
                    assert (await cur.fetchone())[0] == 1
                told = [c for c in dd.find("POST", r"^/interactions/", since=mark) if "already retried" in json.dumps(c.json)]
                assert len(told) == 1 and told[0].json["data"]["flags"] & 64
