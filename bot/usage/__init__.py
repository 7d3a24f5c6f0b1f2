"""Usage for a period: numbers (report), a short translated summary (summary) and a PNG
chart (chart), for ``/admin usage``."""

from .chart import chart_locale, nice_ticks, reason_rows, render_chart, render_chart_async, wrap
from .report import PERIODS, DayUsage, RelayLatency, UsageReport, UserUsage, percentile, period_bounds, usage_report
from .summary import reason_label, summary_text

__all__ = [
    "PERIODS",
    "DayUsage",
    "RelayLatency",
    "UsageReport",
    "UserUsage",
    "chart_locale",
    "nice_ticks",
    "percentile",
    "period_bounds",
    "reason_label",
    "reason_rows",
    "render_chart",
    "render_chart_async",
    "summary_text",
    "usage_report",
    "wrap",
]
