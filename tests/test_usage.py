from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot import store
from bot.guild_config import GuildConfigStore, GuildSettings
from bot.jobs import Job, NewJob, make_queue
from bot.quota import Quota, QuotaRules
from bot.relay.types import NoImage, RelayFailed
from bot.settings import Settings
from bot.usage import (
    RelayLatency,
    UsageReport,
    UserUsage,
    chart_locale,
    percentile,
    period_bounds,
    render_chart,
    render_chart_async,
    summary_text,
    usage_report,
)

FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
MAR9 = datetime(2026, 3, 9, 15, 0, tzinfo=UTC).timestamp()
MAR10 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


async def runner(job: Job) -> None:
    what = job.request["do"]
    if what == "ok":
        job.relay_name, job.latency_ms = job.request["relay"], job.request["ms"]
    elif what == "503":
        raise RelayFailed("HTTP 503", status=503, retryable=True)
    elif what == "blocked":
        raise NoImage("blocked", reason="safety")


@pytest.fixture
async def history(data_dir: Path) -> Any:
    """A server's week, made through the real job queue and ledger."""
    db = await store.connect(data_dir / "bot.sqlite3")
    clock = Clock(MAR9)
    config = GuildConfigStore(db)
    guild = GuildSettings(quota=QuotaRules(user_daily=None)).with_price(FLASH, "1K", 0.05)
    await config.save(1, guild)
    settings = Settings(discord_token="", data_dir=data_dir, relay=None)
    queue = make_queue(db, Quota(db, clock=clock), settings, runner, config=config, clock=clock)

    async def ask(user: int, model: str, size: str, guild_id: int = 1, **request: Any) -> Job:
        rules = await config.get(guild_id)
        return await queue.submit(
            NewJob(user_id=user, guild_id=guild_id, channel_id=5, request=request, model=model, size=size),
            credits=rules.cost(model, size),
            rules=rules.quota,
        )

    await ask(1, FLASH, "1K", do="ok", relay="main", ms=1000)
    await ask(1, FLASH, "1K", do="ok", relay="main", ms=3000)
    await ask(2, FLASH, "1K", do="503")
    clock.now = MAR10
    await ask(1, PRO, "4K", do="ok", relay="backup", ms=20000)
    await ask(2, FLASH, "1K", do="ok", relay="main", ms=2000)
    await ask(2, FLASH, "1K", do="ok", relay="main", ms=4000)
    await ask(3, FLASH, "1K", do="blocked")
    dropped = await ask(3, FLASH, "2K", do="ok", relay="main", ms=1)
    await ask(9, PRO, "1K", guild_id=2, do="ok", relay="elsewhere", ms=5)  # another server
    assert await queue.cancel(dropped.id, by_user=3) == "cancelled"
    await queue.start()
    await queue.join()
    await queue.stop()
    yield db, guild
    await db.close()


async def test_report_numbers(history: Any) -> None:
    db, guild = history
    start, end = period_bounds("week", MAR10)
    report = await usage_report(db, 1, start, end, settings=guild)
    assert (report.images, report.failures, report.cancelled) == (5, 2, 1)
    assert report.credits == 1 + 1 + 6 + 1 + 1  # committed only: failed and cancelled were refunded
    assert report.spend_usd == pytest.approx(4 * 0.05 + 0.24)  # the server's own Flash price, list price for Pro 4K
    assert report.top_users == [UserUsage(1, 3, 8), UserUsage(2, 2, 2)]
    assert report.failure_reasons == {"http_503": 1, "no_image:safety": 1}
    assert report.latency == [RelayLatency("main", 4, 2000, 4000), RelayLatency("backup", 1, 20000, 20000)]
    assert report.by_model == {FLASH: 4, PRO: 1}
    assert len(report.by_day) == 7 and report.by_day[0].day == "2026-03-04"
    assert [(d.day, d.images, d.failures, d.credits) for d in report.by_day[-2:]] == [
        ("2026-03-09", 2, 1, 2),
        ("2026-03-10", 3, 1, 8),
    ]

    today = await usage_report(db, 1, *period_bounds("day", MAR10), settings=guild)
    assert (today.images, today.credits) == (3, 8)


async def test_summary_in_both_languages(history: Any) -> None:
    db, guild = history
    report = await usage_report(db, 1, *period_bounds("week", MAR10), settings=guild)
    en = summary_text(report, "en-US")
    assert "5 pictures" in en and "10 credits" in en and "$0.44" in en and "2 failed (29%)" in en
    assert "<@1> (3 pictures, 8 credits)" in en
    assert "HTTP 503 × 1" in en and "withheld by the safety filter × 1" in en
    assert "main median 2.0 s, p95 4.0 s (4 pictures)" in en
    zh = summary_text(report, "zh-CN")
    assert "5 张图" in zh and "10 积分" in zh and "约 0.44 美元" in zh and "中位数 2.0 秒" in zh

    empty = await usage_report(db, 1, *period_bounds("day", datetime(2026, 2, 1, tzinfo=UTC).timestamp()))
    assert "No pictures were requested" in summary_text(empty, "en")


async def test_chart_is_a_real_png(history: Any) -> None:
    db, guild = history
    report = await usage_report(db, 1, *period_bounds("30d", MAR10), settings=guild)
    for locale in ("en", "zh-CN"):
        png = await render_chart_async(report, locale)
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.size == (1200, 720)
        # Something was drawn in the daily panel where the bars for the last two days are.
        assert len(img.crop((560, 400, 720, 680)).getcolors(maxcolors=100_000) or []) > 2
    # Without a CJK font the Chinese chart uses English labels instead of empty boxes.
    assert chart_locale("zh-CN") in ("zh-CN", "en")
    assert chart_locale("en-GB") == "en"


def test_chart_of_an_empty_period() -> None:
    start, end = period_bounds("month", MAR10)
    png = render_chart(UsageReport(guild_id=1, start=start, end=end), "en")
    assert Image.open(io.BytesIO(png)).size == (1200, 720)


def test_percentiles_and_periods() -> None:
    assert percentile([5], 95) == 5
    assert percentile(list(range(1, 101)), 50) == 50
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([30, 10, 20], 50) == 20
    start, end = period_bounds("month", MAR10)
    assert (start, end) == (datetime(2026, 3, 1, tzinfo=UTC).timestamp(), datetime(2026, 4, 1, tzinfo=UTC).timestamp())
    with pytest.raises(ValueError):
        period_bounds("fortnight", MAR10)
