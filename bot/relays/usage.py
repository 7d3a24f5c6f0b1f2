"""How each of a server's relays did over a period: jobs that reached it, how many failed, and
its delivery latency (p50/p95), for ``/admin usage``. A job's row names the relay that made
its picture, or the last relay tried when it failed (bot.relays.pool sets ``relay_name``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..store import Connection
from ..usage import UsageReport


@dataclass(frozen=True)
class RelayStats:
    relay: str
    jobs: int  # delivered + failed
    failed: int
    p50_ms: int | None = None
    p95_ms: int | None = None

    @property
    def failure_rate(self) -> float:
        return self.failed / self.jobs if self.jobs else 0.0


async def relay_stats(db: Connection, guild_id: int | None, start: float, end: float, report: UsageReport) -> list[RelayStats]:
    """Per relay, most used first; latency from ``report`` (the same period's usage report)."""
    rows = await db.execute_fetchall(
        "SELECT relay_name, COUNT(*), SUM(CASE WHEN status = 'done' THEN 0 ELSE 1 END) FROM jobs"
        " WHERE guild_id IS ? AND created_at >= ? AND created_at < ? AND relay_name IS NOT NULL"
        " AND status IN ('done', 'failed', 'interrupted') GROUP BY relay_name ORDER BY COUNT(*) DESC, relay_name",
        (guild_id, start, end),
    )
    latency = {r.relay: r for r in report.latency}
    out = []
    for name, jobs, failed in rows:
        timing = latency.get(str(name))
        out.append(RelayStats(str(name), int(jobs), int(failed or 0), timing.p50_ms if timing else None, timing.p95_ms if timing else None))
    return out
