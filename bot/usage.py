"""Usage for a period: numbers, a PNG chart (Pillow) and a short translated summary.

A report counts jobs *created* in ``[start, end)`` (so a job belongs to the day it was asked
for, like its credits): images delivered, credits committed, estimated spend (the server's
price table, see ``GuildSettings.price``), top members, failures by reason and each relay's
latency p50/p95 (nearest-rank percentiles over delivered jobs).

Chart text goes through the translation layer; if no font with CJK glyphs is installed, a
zh-CN chart falls back to English labels rather than drawing empty boxes (the text summary
stays Chinese either way).
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosqlite
from PIL import Image, ImageDraw, ImageFont

from .guild_config import GuildSettings
from .i18n import normalize_locale, t
from .quota import day_start, month_start, next_day, next_month

PERIODS = ("day", "week", "month", "30d")


@dataclass(frozen=True)
class UserUsage:
    user_id: int
    images: int
    credits: int


@dataclass(frozen=True)
class RelayLatency:
    relay: str
    count: int
    p50_ms: int
    p95_ms: int


@dataclass(frozen=True)
class DayUsage:
    day: str  # YYYY-MM-DD (UTC)
    images: int
    failures: int
    credits: int


@dataclass
class UsageReport:
    guild_id: int | None
    start: float
    end: float
    images: int = 0
    failures: int = 0
    cancelled: int = 0
    credits: int = 0
    spend_usd: float = 0.0
    by_day: list[DayUsage] = field(default_factory=list)
    top_users: list[UserUsage] = field(default_factory=list)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    latency: list[RelayLatency] = field(default_factory=list)
    by_model: dict[str, int] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        attempted = self.images + self.failures
        return self.failures / attempted if attempted else 0.0


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """``day``: today (UTC); ``week``: the last 7 days including today; ``month``: this
    calendar month; ``30d``: the last 30 days including today."""
    if period == "day":
        return day_start(now), next_day(now)
    if period == "week":
        return next_day(now) - 7 * 86400, next_day(now)
    if period == "month":
        return month_start(now), next_month(now)
    if period == "30d":
        return next_day(now) - 30 * 86400, next_day(now)
    raise ValueError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")


def percentile(values: list[int], p: float) -> int:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


async def usage_report(
    db: aiosqlite.Connection,
    guild_id: int | None,
    start: float,
    end: float,
    *,
    settings: GuildSettings | None = None,
    top: int = 5,
) -> UsageReport:
    prices = settings or GuildSettings()
    report = UsageReport(guild_id=guild_id, start=start, end=end)
    async with db.execute(
        "SELECT j.user_id, j.status, j.model, j.size, j.relay_name, j.latency_ms, j.error_code, j.created_at,"
        " COALESCE(q.credits, 0), q.state"
        " FROM jobs j LEFT JOIN quota_ledger q ON q.job_id = j.id"
        " WHERE j.guild_id IS ? AND j.created_at >= ? AND j.created_at < ?",
        (guild_id, start, end),
    ) as cur:
        rows = await cur.fetchall()

    days: dict[str, list[int]] = {}
    day = day_start(start)
    while day < end:  # every day of the period, so quiet days show as empty bars
        days[_day(day)] = [0, 0, 0]
        day += 86400
    users: dict[int, list[int]] = {}
    latencies: dict[str, list[int]] = {}
    for user_id, status, model, size, relay, latency, error, created, credits, state in rows:
        bucket = days.setdefault(_day(created), [0, 0, 0])
        committed = credits if state == "committed" else 0
        report.credits += committed
        bucket[2] += committed
        if status == "done":
            report.images += 1
            bucket[0] += 1
            report.spend_usd += prices.price(model, size)
            report.by_model[model] = report.by_model.get(model, 0) + 1
            mine = users.setdefault(user_id, [0, 0])
            mine[0] += 1
            mine[1] += committed
            if relay and latency is not None:
                latencies.setdefault(relay, []).append(int(latency))
        elif status in ("failed", "interrupted"):
            report.failures += 1
            bucket[1] += 1
            reason = error or status
            report.failure_reasons[reason] = report.failure_reasons.get(reason, 0) + 1
        elif status == "cancelled":
            report.cancelled += 1
    report.spend_usd = round(report.spend_usd, 4)
    report.by_day = [DayUsage(d, *v) for d, v in sorted(days.items())]
    report.top_users = [
        UserUsage(uid, images, credits)
        for uid, (images, credits) in sorted(users.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:top]
    ]
    report.failure_reasons = dict(sorted(report.failure_reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    report.latency = sorted(
        (RelayLatency(name, len(v), percentile(v, 50), percentile(v, 95)) for name, v in latencies.items()),
        key=lambda r: (-r.count, r.relay),
    )
    return report


# --- text ---------------------------------------------------------------------------------


def reason_label(code: str, locale: object) -> str:
    """A failure code (``http_503``, ``no_image:safety``, ``timeout``…) in words."""
    if code.startswith("http_"):
        return t("usage.reason.http", locale, status=code[5:])
    if code.startswith("no_image:"):
        return t("usage.reason.no_image", locale, reason=code.split(":", 1)[1])
    key = f"usage.reason.{code}"
    text = t(key, locale)
    return code if text == key else text


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f}"


def summary_text(report: UsageReport, locale: object) -> str:
    """A few lines for the admin's reply (Discord markdown and timestamps)."""
    lines = [t("usage.summary.title", locale, start=int(report.start), end=int(report.end) - 1)]
    if report.images == 0 and report.failures == 0 and report.cancelled == 0:
        lines.append(t("usage.summary.empty", locale))
        return "\n".join(lines)
    lines.append(
        t(
            "usage.summary.totals",
            locale,
            images=report.images,
            credits=report.credits,
            spend=f"{report.spend_usd:.2f}",
            failures=report.failures,
            rate=f"{report.failure_rate * 100:.0f}",
        )
    )
    if report.top_users:
        users = ", ".join(t("usage.summary.user", locale, user=u.user_id, images=u.images, credits=u.credits) for u in report.top_users)
        lines.append(t("usage.summary.top", locale, users=users))
    if report.failure_reasons:
        reasons = ", ".join(f"{reason_label(code, locale)} × {n}" for code, n in list(report.failure_reasons.items())[:5])
        lines.append(t("usage.summary.failures", locale, reasons=reasons))
    if report.latency:
        relays = ", ".join(
            t("usage.summary.relay", locale, relay=r.relay, p50=_seconds(r.p50_ms), p95=_seconds(r.p95_ms), count=r.count)
            for r in report.latency[:5]
        )
        lines.append(t("usage.summary.latency", locale, relays=relays))
    return "\n".join(lines)


# --- chart --------------------------------------------------------------------------------

_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
_LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)

W, H = 960, 540
BG = (30, 31, 34)
PANEL = (43, 45, 49)
FG = (230, 231, 233)
MUTED = (150, 153, 160)
GOOD = (87, 242, 135)
BAD = (237, 66, 69)
ACCENT = (254, 231, 92)
BLUE = (88, 101, 242)


@lru_cache(maxsize=None)
def _font_path(cjk: bool) -> str | None:
    for path in _CJK_FONTS if cjk else _LATIN_FONTS:
        if Path(path).is_file():
            return path
    return None


@lru_cache(maxsize=32)
def _font(size: int, cjk: bool) -> Any:
    path = _font_path(cjk)
    if path:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def chart_locale(locale: object) -> str:
    """The locale chart labels are drawn in: Chinese only if a CJK font is available."""
    loc = normalize_locale(locale)
    if loc == "zh-CN" and _font_path(True) is None:
        return "en"
    return loc


def render_chart(report: UsageReport, locale: object) -> bytes:
    """The report as a PNG. CPU-bound: call through :func:`render_chart_async` on the loop."""
    loc = chart_locale(locale)
    cjk = loc == "zh-CN"
    img = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(img)
    title_font, font, small = _font(24, cjk), _font(16, cjk), _font(13, cjk)

    draw.text((24, 16), t("usage.chart.title", loc, start=_day(report.start), end=_day(report.end - 1)), font=title_font, fill=FG)

    # Cards: images, credits, spend, failures.
    cards = [
        (t("usage.chart.images", loc), str(report.images), GOOD),
        (t("usage.chart.credits", loc), str(report.credits), ACCENT),
        (t("usage.chart.spend", loc), f"${report.spend_usd:.2f}", BLUE),
        (t("usage.chart.failures", loc), f"{report.failures} ({report.failure_rate * 100:.0f}%)", BAD),
    ]
    card_w = (W - 48 - 3 * 12) // 4
    for i, (label, value, colour) in enumerate(cards):
        x = 24 + i * (card_w + 12)
        draw.rounded_rectangle((x, 56, x + card_w, 120), radius=8, fill=PANEL)
        draw.text((x + 12, 62), label, font=small, fill=MUTED)
        draw.text((x + 12, 82), value, font=_font(26, cjk), fill=colour)

    _daily_panel(draw, report, loc, (24, 136, 580, H - 20), font, small)
    _bars_panel(
        draw,
        (596, 136, W - 24, 330),
        t("usage.chart.latency", loc),
        [(r.relay, r.p50_ms, r.p95_ms) for r in report.latency[:4]],
        lambda v: f"{v / 1000:.1f}s",
        font,
        small,
        loc,
        two=True,
    )
    _bars_panel(
        draw,
        (596, 340, W - 24, H - 20),
        t("usage.chart.reasons", loc),
        [(reason_label(code, loc), n, 0) for code, n in list(report.failure_reasons.items())[:4]],
        str,
        font,
        small,
        loc,
        two=False,
    )
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def _daily_panel(draw: ImageDraw.ImageDraw, report: UsageReport, loc: str, box: tuple[int, int, int, int], font: Any, small: Any) -> None:
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=8, fill=PANEL)
    draw.text((x0 + 12, y0 + 8), t("usage.chart.daily", loc), font=font, fill=FG)
    days = report.by_day[-31:]
    top = max([d.images + d.failures for d in days] + [1])
    left, right, bottom, height = x0 + 40, x1 - 12, y1 - 28, (y1 - 28) - (y0 + 44)
    draw.line((left, bottom, right, bottom), fill=MUTED)
    draw.text((x0 + 10, bottom - height - 8), str(top), font=small, fill=MUTED)
    draw.text((x0 + 10, bottom - 8), "0", font=small, fill=MUTED)
    if not days:
        return
    slot = (right - left) / len(days)
    bar = max(2.0, slot * 0.7)
    label_every = max(1, math.ceil(len(days) / 8))
    for i, d in enumerate(days):
        bx = left + i * slot + (slot - bar) / 2
        good_h = height * d.images / top
        bad_h = height * d.failures / top
        if good_h:
            draw.rectangle((bx, bottom - good_h, bx + bar, bottom - 1), fill=GOOD)
        if bad_h:
            draw.rectangle((bx, bottom - good_h - bad_h, bx + bar, bottom - good_h - 1), fill=BAD)
        if i % label_every == 0:
            draw.text((bx, bottom + 6), d.day[5:], font=small, fill=MUTED)


def _bars_panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    rows: list[tuple[str, int, int]],
    fmt: Any,
    font: Any,
    small: Any,
    loc: str,
    *,
    two: bool,
) -> None:
    """Horizontal bars: (label, value, second value drawn behind it when ``two``)."""
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=8, fill=PANEL)
    draw.text((x0 + 12, y0 + 8), title, font=font, fill=FG)
    if not rows:
        draw.text((x0 + 12, y0 + 40), t("usage.chart.none", loc), font=small, fill=MUTED)
        return
    top = max(max(a, b) for _, a, b in rows) or 1
    label_w = 110
    area = (x1 - 12) - (x0 + 12 + label_w) - (92 if two else 40)  # room for the value after the bar
    row_h = min(34, ((y1 - 8) - (y0 + 40)) // len(rows))
    for i, (label, a, b) in enumerate(rows):
        y = y0 + 40 + i * row_h
        shown = label if len(label) <= 14 else label[:13] + "…"
        draw.text((x0 + 12, y + 2), shown, font=small, fill=FG)
        bx = x0 + 12 + label_w
        if two and b:
            draw.rectangle((bx, y + 4, bx + area * b / top, y + row_h - 8), fill=(120, 90, 40))
        draw.rectangle((bx, y + 4, bx + max(2, area * a / top), y + row_h - 8), fill=ACCENT if two else BAD)
        value = f"{fmt(a)}/{fmt(b)}" if two else fmt(a)
        draw.text((bx + area * max(a, b) / top + 6, y + 2), value, font=small, fill=MUTED)


async def render_chart_async(report: UsageReport, locale: object) -> bytes:
    """:func:`render_chart` in a thread (Pillow releases the GIL while it draws and encodes)."""
    return await asyncio.to_thread(render_chart, report, locale)
