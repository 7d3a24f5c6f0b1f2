"""A server's usage for a period, counted from its jobs and their credits.

A report counts jobs *created* in ``[start, end)`` (so a job belongs to the day it was asked
for, like its credits): images delivered, credits committed, estimated spend (the server's
price table, see bot.pricing), top members, failures by reason and each relay's latency
p50/p95 (nearest-rank percentiles over delivered jobs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import pricing
from ..guild_config import GuildSettings
from ..quota import day_start, month_start, next_day, next_month
from ..store import Connection

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


def day_label(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


async def usage_report(
    db: Connection,
    guild_id: int | None,
    start: float,
    end: float,
    *,
    settings: GuildSettings | None = None,
    top: int = 5,
) -> UsageReport:
    async with db.execute(
        "SELECT j.user_id, j.status, j.model, j.size, j.relay_name, j.latency_ms, j.error_code, j.created_at,"
        " COALESCE(q.credits, 0), q.state"
        " FROM jobs j LEFT JOIN quota_ledger q ON q.job_id = j.id"
        " WHERE j.guild_id IS ? AND j.created_at >= ? AND j.created_at < ?",
        (guild_id, start, end),
    ) as cur:
        rows = await cur.fetchall()
    tally = _Tally(UsageReport(guild_id=guild_id, start=start, end=end), (settings or GuildSettings()).prices)
    for row in rows:
        tally.add(*row)
    return tally.finish(top)


class _Tally:
    """Adds up one report from job rows, then sorts what it found."""

    def __init__(self, report: UsageReport, prices: Any) -> None:
        self.report = report
        self.prices = prices
        self.days: dict[str, list[int]] = {}  # day -> [images, failures, credits]
        self.day_models: dict[str, dict[str, int]] = {}
        self.users: dict[int, list[int]] = {}  # member -> [images, credits]
        self.latencies: dict[str, list[int]] = {}
        day = day_start(report.start)
        while day < report.end:  # every day of the period, so quiet days show as empty bars
            self.days[day_label(day)] = [0, 0, 0]
            day += 86400

    def add(
        self,
        user_id: int,
        status: str,
        model: str,
        size: str | None,
        relay: str | None,
        latency: int | None,
        error: str | None,
        created: float,
        credits: int,
        state: str | None,
    ) -> None:
        report = self.report
        bucket = self.days.setdefault(day_label(created), [0, 0, 0])
        committed = credits if state == "committed" else 0
        report.credits += committed
        bucket[2] += committed
        if status == "done":
            report.images += 1
            bucket[0] += 1
            report.spend_usd += pricing.price(self.prices, model, size)
            report.by_model[model] = report.by_model.get(model, 0) + 1
            per_model = self.day_models.setdefault(day_label(created), {})
            per_model[model] = per_model.get(model, 0) + 1
            mine = self.users.setdefault(user_id, [0, 0])
            mine[0] += 1
            mine[1] += committed
            if relay and latency is not None:
                self.latencies.setdefault(relay, []).append(int(latency))
        elif status in ("failed", "interrupted"):
            report.failures += 1
            bucket[1] += 1
            reason = error or status
            report.failure_reasons[reason] = report.failure_reasons.get(reason, 0) + 1
        elif status == "cancelled":
            report.cancelled += 1

    def finish(self, top: int) -> UsageReport:
        report = self.report
        report.spend_usd = round(report.spend_usd, 4)
        report.by_day = [DayUsage(d, v[0], v[1], v[2], models=self.day_models.get(d, {})) for d, v in sorted(self.days.items())]
        report.by_model = dict(sorted(report.by_model.items(), key=lambda kv: (-kv[1], kv[0])))
        ranked = sorted(self.users.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:top]
        report.top_users = [UserUsage(uid, images, credits) for uid, (images, credits) in ranked]
        report.failure_reasons = dict(sorted(report.failure_reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        report.latency = sorted(
            (RelayLatency(name, len(v), percentile(v, 50), percentile(v, 95)) for name, v in self.latencies.items()),
            key=lambda r: (-r.count, r.relay),
        )
        return report
