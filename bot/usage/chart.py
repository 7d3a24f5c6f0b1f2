"""The usage report as a PNG chart (Pillow): pictures and failures per day, each relay's
latency, failures by reason.

Chart text goes through the translation layer; if no font with CJK glyphs is installed, a
zh-CN chart falls back to English labels rather than drawing empty boxes (the text summary
stays Chinese either way).
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from typing import Any

from PIL import Image, ImageDraw

from .. import fonts
from ..i18n import normalize_locale, t
from ..relay.catalogue import MODELS
from .report import UsageReport, day_label
from .summary import reason_label

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

    draw.text((28, 18), t("usage.chart.title", loc, start=day_label(report.start), end=day_label(report.end - 1)), font=title_font, fill=FG)

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
