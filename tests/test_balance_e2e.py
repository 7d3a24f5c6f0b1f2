"""Relay balances end to end: /admin relay list shows them where a relay exposes one; the
scheduled check warns in the moderation log when a relay drops below the server's threshold
and when it runs out; a relay with no credit is skipped in failover until it has some again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import NanoBananaBot
from tests.doubles.discord_double import Call
from tests.doubles.relay_double import Behaviour, RelayDouble, SeedRelayDouble
from tests.test_admin_e2e import GUILD_KEY, World, _leaks, finished, text_of, world

BACKUP_KEY = "sk-backup-relay-key-00000000000"
MODEL = "gemini-2.5-flash-image"  # listed by both relays


def generations(relay: RelayDouble) -> int:
    return len([r for r in relay.requests if r.path.endswith((":generateContent", ":streamGenerateContent", "/chat/completions"))])


async def log_says(w: World, channel: dict[str, str], since: int, words: str, timeout: float = 10.0) -> Call:
    return await w.dd.wait_for(
        "POST",
        rf"^/channels/{channel['id']}/messages$",
        since=since,
        predicate=lambda c: words in str(c.json.get("embeds")),
        timeout=timeout,
    )


async def imagine_once(w: World, bot: NanoBananaBot) -> None:
    inter, mark = await w.imagine(w.alice, prompt="a lighthouse", model=MODEL)
    await w.result_post(since=mark)
    await finished(bot)


async def test_a_relay_whose_balance_goes_to_zero_is_warned_about_then_skipped_until_topped_up(tmp_path: Path) -> None:
    with SeedRelayDouble("openai-chat", api_key=GUILD_KEY) as metered, RelayDouble(api_key=BACKUP_KEY) as backup:
        async with world(tmp_path) as (w, bot):
            log_channel = w.dd.add_text_channel(w.guild, "mod-log")
            await w.add_relay("metered", metered.url, GUILD_KEY, dialect="openai-chat", auth="bearer")
            await w.add_relay("backup", backup.url, BACKUP_KEY, dialect="gemini", auth="x-goog-api-key")
            metered.set_balance(5.0, used=15.0)
            await w.ask(None, "log", channel=log_channel)
            threshold = await w.ask("relay", "low-balance", below=2.0)
            assert "less than 2 left" in text_of(threshold)

            listed = text_of(await w.ask("relay", "list"))
            assert "5.00 USD left" in listed and listed.count("💰") == 1, listed  # the Gemini relay exposes none
            assert not _leaks(listed)

            checks = bot.services.balances
            checks.every = 0.2
            checks.nudge()
            mark = w.dd.mark()
            await asyncio.sleep(0.6)
            assert not w.dd.find("POST", rf"^/channels/{log_channel['id']}/messages$", since=mark)  # above the threshold: quiet
            assert "Relay **metered**" not in str([c.json for c in w.dd.find("POST", rf"^/channels/{log_channel['id']}/messages$")])

            metered.set_balance(1.0, used=19.0)
            low = await log_says(w, log_channel, mark, "running low")
            assert "1.00 USD left" in str(low.json["embeds"])
            await imagine_once(w, bot)
            assert generations(metered) == 1 and generations(backup) == 0  # low is not empty: still first

            mark = w.dd.mark()
            metered.set_balance(0.0, used=20.0)
            await log_says(w, log_channel, mark, "run out of credit")
            await asyncio.sleep(0.5)
            posts = w.dd.find("POST", rf"^/channels/{log_channel['id']}/messages$", since=mark)
            assert sum("Relay **metered**" in str(c.json.get("embeds")) for c in posts) == 1  # warned once, not every check
            assert "out of credit" in text_of(await w.ask("relay", "list"))
            await imagine_once(w, bot)
            await imagine_once(w, bot)
            assert generations(metered) == 1 and generations(backup) == 2  # skipped in failover

            mark = w.dd.mark()
            metered.set_balance(10.0, used=20.0)
            await log_says(w, log_channel, mark, "has credit again")
            await imagine_once(w, bot)
            assert generations(metered) == 2 and generations(backup) == 2  # back first in the order


async def test_balance_commands_answer_in_chinese(tmp_path: Path) -> None:
    with SeedRelayDouble("openai-chat", api_key=GUILD_KEY) as metered:
        async with world(tmp_path) as (w, bot):
            await w.add_relay("metered", metered.url, GUILD_KEY, dialect="openai-chat", auth="bearer")
            metered.set_balance(0.0, used=20.0)
            assert "余额已用完" in text_of(await w.ask("relay", "list", locale="zh-CN"))
            assert "审核日志" in text_of(await w.ask("relay", "low-balance", below=3.0, locale="zh-CN"))


async def test_usage_shows_each_relays_failure_rate_and_latency(tmp_path: Path) -> None:
    with RelayDouble(api_key=BACKUP_KEY) as relay:
        async with world(tmp_path) as (w, bot):
            await w.add_relay("main", relay.url, BACKUP_KEY, dialect="gemini", auth="x-goog-api-key")
            relay.enqueue(Behaviour("error", status=400))
            inter, mark = await w.imagine(w.alice, prompt="a lighthouse")
            await w.dd.wait_for("PATCH", r"/messages/", since=mark, predicate=lambda c: "400" in str(c.json), timeout=20)
            await finished(bot)
            await imagine_once(w, bot)
            text = text_of(await w.ask(None, "usage", period="day"))
            assert "**main**: 2 jobs, 1 failed (50%) · p50 " in text, text
            chinese = text_of(await w.ask(None, "usage", period="day", locale="zh-CN"))
            assert "**main**：2 个任务，失败 1 个（50%）" in chinese, chinese
