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
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiosqlite
from PIL import Image, ImageDraw

from . import fonts
from .guild_config import GuildSettings
from .i18n import normalize_locale, t
from .quota import day_start, month_start, next_day, next_month
from .relay.catalogue import MODELS

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
    models: dict[str, int] = field(default_factory=dict)  # pictures delivered per model


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
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


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
    day_models: dict[str, dict[str, int]] = {}
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
            per_model = day_models.setdefault(_day(created), {})
            per_model[model] = per_model.get(model, 0) + 1
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
    report.by_day = [DayUsage(d, *v, models=day_models.get(d, {})) for d, v in sorted(days.items())]
    report.by_model = dict(sorted(report.by_model.items(), key=lambda kv: (-kv[1], kv[0])))
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


def _known(key: str, locale: object) -> str | None:
    text = t(key, locale)
    return None if text == key else text


def reason_label(code: str, locale: object) -> str:
    """A failure code (``http_503``, ``no_image:safety``, ``timeout``…) in words."""
    if code.startswith("http_"):
        return t("usage.reason.http", locale, status=code[5:])
    if code.startswith("no_image:"):
        reason = code.split(":", 1)[1]
        return _known(f"usage.reason.no_image.{reason}", locale) or t("usage.reason.no_image", locale, reason=reason)
    return _known(f"usage.reason.{code}", locale) or code


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

W, H = 1200, 720
BG = (30, 31, 34)
PANEL = (43, 45, 49)
GRID = (62, 64, 70)
FG = (230, 231, 233)
MUTED = (150, 153, 160)
GOOD = (87, 242, 135)
BAD = (237, 66, 69)
ACCENT = (254, 231, 92)
ACCENT_DIM = (128, 112, 52)
BLUE = (88, 101, 242)
# One colour per model in the daily bars (most used first); failures are always BAD.
MODEL_COLOURS = (BLUE, GOOD, (235, 69, 158), (69, 200, 235), (250, 166, 26))
REASON_ROWS = 4  # named failure reasons; the rest are summed in one "other" row
LABEL_W = 150  # px for a bar's label (relay or reason), wrapped onto as many lines as it needs


def chart_locale(locale: object) -> str:
    """The locale chart labels are drawn in: Chinese only if a CJK font is available."""
    loc = normalize_locale(locale)
    if loc == "zh-CN" and fonts.find(True) is None:
        return "en"
    return loc


def nice_ticks(top: float, count: int = 4, *, whole: bool = False) -> list[float]:
    """Axis ticks from 0 to at least ``top`` in steps of 1, 2 or 5 × 10ⁿ (about ``count`` of
    them); ``whole``: counts, so never a step below 1."""
    if top <= 0:
        return [0, 1]
    raw = max(top / count, 1) if whole else top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(ticks[-1] + step)
    return ticks


def wrap(text: str, font: Any, width: float) -> list[str]:
    """``text`` in lines no wider than ``width``: broken after spaces, hyphens, underscores,
    slashes and dots (relay names are often ``my-relay-name``), and anywhere inside a word (or
    Chinese text, which has no spaces) that alone is too wide. Nothing is cut off."""
    lines: list[str] = []
    line = ""
    for word in re.split(r"(?<=[ \-_/.])", text):
        if font.getlength(line + word) <= width:
            line += word
            continue
        if line.strip():
            lines.append(line.rstrip())
            line = ""
        for ch in word:
            if line and font.getlength(line + ch) > width:
                lines.append(line.rstrip())
                line = ch.lstrip()
            else:
                line += ch
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return lines


def _model_label(model: str) -> str:
    spec = MODELS.get(model)
    return spec.label if spec else model


def render_chart(report: UsageReport, locale: object) -> bytes:
    """The report as a PNG. CPU-bound: call through :func:`render_chart_async` on the loop."""
    loc = chart_locale(locale)
    img = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(img)
    # A CJK font (when there is one) for English too: relay names may be Chinese in any chart.
    title_font, font, small = fonts.load(26), fonts.load(17), fonts.load(14)

    draw.text((28, 18), t("usage.chart.title", loc, start=_day(report.start), end=_day(report.end - 1)), font=title_font, fill=FG)

    # Cards: images, credits, spend, failures.
    cards = [
        (t("usage.chart.images", loc), str(report.images), GOOD),
        (t("usage.chart.credits", loc), str(report.credits), ACCENT),
        (t("usage.chart.spend", loc), f"${report.spend_usd:.2f}", BLUE),
        (t("usage.chart.failures", loc), f"{report.failures} ({report.failure_rate * 100:.0f}%)", BAD),
    ]
    card_w = (W - 48 - 3 * 14) // 4
    for i, (label, value, colour) in enumerate(cards):
        x = 24 + i * (card_w + 14)
        draw.rounded_rectangle((x, 64, x + card_w, 136), radius=8, fill=PANEL)
        draw.text((x + 14, 72), label, font=small, fill=MUTED)
        draw.text((x + 14, 94), value, font=fonts.load(28), fill=colour)

    _daily_panel(draw, report, loc, (24, 152, 724, H - 20), font, small)
    _latency_panel(draw, report, loc, (740, 152, W - 24, 412), font, small)
    _reasons_panel(draw, report, loc, (740, 428, W - 24, H - 20), font, small)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def _flow_legend(
    draw: ImageDraw.ImageDraw, x0: float, y: float, x_max: float, items: list[tuple[tuple[int, int, int], str]], small: Any
) -> float:
    """Colour swatches with labels, flowing onto more lines as needed; returns the y below."""
    line_h = 20
    x = x0
    for colour, label in items:
        w = 18 + small.getlength(label) + 16
        if x + w > x_max and x > x0:
            x, y = x0, y + line_h
        draw.rectangle((x, y + 4, x + 12, y + 16), fill=colour)
        draw.text((x + 18, y + 1), label, font=small, fill=FG)
        x += w
    return y + line_h


def _daily_panel(draw: ImageDraw.ImageDraw, report: UsageReport, loc: str, box: tuple[int, int, int, int], font: Any, small: Any) -> None:
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=8, fill=PANEL)
    draw.text((x0 + 14, y0 + 10), t("usage.chart.daily", loc), font=font, fill=FG)
    models = list(report.by_model)[: len(MODEL_COLOURS)]
    colour = {m: MODEL_COLOURS[i] for i, m in enumerate(models)}
    items = [(colour[m], f"{_model_label(m)}: {report.by_model[m]}") for m in models]
    items.append((BAD, t("usage.chart.legend.failed", loc, count=report.failures)))
    legend_bottom = _flow_legend(draw, x0 + 14, y0 + 38, x1 - 14, items, small)

    days = report.by_day[-31:]
    ticks = nice_ticks(max([d.images + d.failures for d in days] + [1]), whole=True)
    top = ticks[-1]
    left, right, bottom, plot_top = x0 + 52, x1 - 16, y1 - 34, legend_bottom + 14
    height = bottom - plot_top
    for value in ticks:
        y = bottom - height * value / top
        draw.line((left, y, right, y), fill=GRID if value else MUTED)
        label = f"{value:g}"
        draw.text((left - 8 - small.getlength(label), y - 8), label, font=small, fill=MUTED)
    if not days:
        return
    slot = (right - left) / len(days)
    bar = max(2.0, slot * 0.7)
    label_every = max(1, math.ceil(len(days) * 46 / (right - left)))  # a date label needs ~46 px
    for i, d in enumerate(days):
        bx = left + i * slot + (slot - bar) / 2
        y = bottom
        # Stacked: each model's pictures of the day (colours as in the legend), failures on top.
        segments = [(d.models.get(m, 0), colour[m]) for m in models]
        others = d.images - sum(n for n, _ in segments)
        segments += [(others, MUTED), (d.failures, BAD)]
        for count, fill in segments:
            if count <= 0:
                continue
            h = height * count / top
            draw.rectangle((bx, y - h, bx + bar, y - 1), fill=fill)
            y -= h
        if i % label_every == 0:
            cx = bx + bar / 2
            draw.line((cx, bottom, cx, bottom + 4), fill=MUTED)
            label = d.day[5:]
            draw.text((cx - small.getlength(label) / 2, bottom + 8), label, font=small, fill=MUTED)


def _rows(
    draw: ImageDraw.ImageDraw,
    rows: list[tuple[str, float, float]],
    box: tuple[float, float, float, float],
    small: Any,
    value_text: Any,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]],
    unit: Any,
    *,
    whole: bool,
) -> None:
    """Horizontal bars with wrapped labels, a value axis with gridlines below them.
    Each row is (label, value, value behind it: drawn longer and dimmer, 0 for none)."""
    x0, y0, x1, y1 = box
    label_w = LABEL_W
    value_w = max(small.getlength(value_text(a, b)) for _, a, b in rows) + 10
    bx, bar_right = x0 + label_w + 10, x1 - value_w
    ticks = nice_ticks(max(max(a, b) for _, a, b in rows) or 1, 3, whole=whole)
    top = ticks[-1]
    line_h = _line_h(small)
    layout = [(wrap(label, small, label_w), a, b) for label, a, b in rows]
    axis_y = y1 - 20
    for value in ticks:
        x = bx + (bar_right - bx) * value / top
        draw.line((x, y0, x, axis_y), fill=GRID if value else MUTED)
        text = unit(value)
        draw.text((x - small.getlength(text) / 2, axis_y + 3), text, font=small, fill=MUTED)
    y = y0
    for lines, a, b in layout:
        row_h = _row_height(lines, small) - 4
        for j, line in enumerate(lines):
            draw.text((x0, y + 3 + j * line_h), line, font=small, fill=FG)
        mid = y + row_h / 2
        if b:
            draw.rectangle((bx, mid - 9, bx + (bar_right - bx) * b / top, mid + 9), fill=colours[1])
        draw.rectangle((bx, mid - 9, bx + max(2, (bar_right - bx) * a / top), mid + 9), fill=colours[0])
        text = value_text(a, b)
        draw.text((bx + (bar_right - bx) * max(a, b) / top + 6, mid - 9), text, font=small, fill=FG)
        y += row_h + 4


def _line_h(font: Any) -> int:
    return int(getattr(font, "size", 14)) + 4


def _row_height(lines: list[str], font: Any) -> int:
    """Height of one bar row with its label's ``lines``, plus the gap below it."""
    return max(24, len(lines) * _line_h(font) + 6) + 4


def _fit(rows: list[tuple[str, float, float]], small: Any, space: float) -> int:
    """How many of ``rows`` fit in ``space`` pixels, with their labels wrapped."""
    used, n = 0.0, 0
    for label, _, _ in rows:
        used += _row_height(wrap(label, small, LABEL_W), small)
        if used > space:
            break
        n += 1
    return n


def _latency_panel(draw: ImageDraw.ImageDraw, report: UsageReport, loc: str, box: tuple[int, int, int, int], font: Any, small: Any) -> None:
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=8, fill=PANEL)
    draw.text((x0 + 14, y0 + 10), t("usage.chart.latency", loc), font=font, fill=FG)
    legend_bottom = _flow_legend(
        draw, x0 + 14, y0 + 38, x1 - 14, [(ACCENT, t("usage.chart.legend.p50", loc)), (ACCENT_DIM, t("usage.chart.legend.p95", loc))], small
    )
    if not report.latency:
        draw.text((x0 + 14, legend_bottom + 8), t("usage.chart.none", loc), font=small, fill=MUTED)
        return
    area = (x0 + 14, legend_bottom + 8, x1 - 14, y1 - 8)
    rows = [(r.relay, r.p50_ms / 1000, r.p95_ms / 1000) for r in report.latency]
    rows = rows[: max(1, _fit(rows, small, area[3] - area[1] - 24))]
    _rows(
        draw,
        rows,
        area,
        small,
        lambda a, b: t("usage.chart.p50_p95", loc, p50=f"{a:.1f}", p95=f"{b:.1f}"),
        (ACCENT, ACCENT_DIM),
        lambda v: t("usage.chart.seconds", loc, value=f"{v:g}"),
        whole=False,
    )


def reason_rows(report: UsageReport, loc: str, font: Any, space: float) -> list[tuple[str, float, float]]:
    """Failure rows, most frequent first: up to :data:`REASON_ROWS` named (fewer when long
    labels wrap onto more lines than ``space`` holds), the rest summed in one "other" row."""
    named = [(reason_label(code, loc), float(n), 0.0) for code, n in report.failure_reasons.items()]

    def with_other(k: int) -> list[tuple[str, float, float]]:
        rest = named[k:]
        if len(rest) < 2:  # one reason is shown by name, never as "1 other"
            return named
        return named[:k] + [(t("usage.chart.other", loc, count=len(rest)), sum(n for _, n, _ in rest), 0.0)]

    keep = min(REASON_ROWS, len(named))
    while keep > 1 and _fit(with_other(keep), font, space) < len(with_other(keep)):
        keep -= 1
    return with_other(keep)


def _reasons_panel(draw: ImageDraw.ImageDraw, report: UsageReport, loc: str, box: tuple[int, int, int, int], font: Any, small: Any) -> None:
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=8, fill=PANEL)
    draw.text((x0 + 14, y0 + 10), t("usage.chart.reasons", loc), font=font, fill=FG)
    if not report.failure_reasons:
        draw.text((x0 + 14, y0 + 44), t("usage.chart.none", loc), font=small, fill=MUTED)
        return
    area = (x0 + 14, y0 + 42, x1 - 14, y1 - 8)
    rows = reason_rows(report, loc, small, area[3] - area[1] - 24)
    total = report.failures or 1
    _rows(
        draw,
        rows,
        area,
        small,
        lambda a, b: f"{a:g} ({a / total * 100:.0f}%)",
        (BAD, BAD),
        lambda v: f"{v:g}",
        whole=True,
    )


async def render_chart_async(report: UsageReport, locale: object) -> bytes:
    """:func:`render_chart` in a thread (Pillow releases the GIL while it draws and encodes)."""
    return await asyncio.to_thread(render_chart, report, locale)
