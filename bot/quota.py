"""The credit ledger: reserve when a job is created, commit on delivery, refund otherwise.

Decisions (and why):

- **Reserve at job creation, not when it starts running.** An over-limit request is refused at
  once, before it waits in the queue, and nothing is sent to a relay. A queued job holds its
  credits, so a burst of queued jobs cannot all pass the check and overspend later; cancelling
  a queued job refunds it. (For the member the job starts when they press Enter, and this is
  the only point where "nothing sent" can hold.)
- **One ledger row per job** (``quota_ledger.job_id`` is unique): ``reserved`` ->
  ``committed`` | ``refunded``, each step only from ``reserved``, so settling is idempotent and
  a credit can never be both committed and refunded.
- **Atomic across tasks, connections and processes.** The check ("used + cost <= limit") and
  the insert run in one ``BEGIN IMMEDIATE`` transaction: SQLite lets one writer hold it at a
  time, so two reservations cannot both read the same "used". Tasks sharing one aiosqlite
  connection also take a per-connection lock (:func:`transaction`), because a connection has
  only one transaction at a time.
- **What counts as used:** reserved + committed credits, by reservation time. A job reserved at
  23:59 UTC and delivered at 00:01 counts toward the day it was requested.
- **Reset times:** daily limits reset at 00:00 UTC; the monthly limit at 00:00 UTC on the first
  of the month. UTC because a server's members live in many time zones and a limit must have one
  clock; Discord shows ``<t:…>`` timestamps in each reader's local time anyway.
- **Limits:** per user per day (within a server), per server per day, per server per month.
  ``None`` means no limit. A member with several bonus roles gets the *largest* bonus (admins
  who want stacking set the higher role's bonus to the sum). Exempt roles lift the per-user
  limit only: their use still counts toward, and is bounded by, the server's budget, because
  that budget is what protects whoever pays the relay.
- When several limits would be broken, the one that resets last is reported: waiting for the
  daily reset does not help when the month is used up.
- **Personal scope** (a request without a server: the bot's DM, a group DM, a server the bot is
  not in, through a member's own install): the ledger's rows with no ``guild_id``, under the same
  rules shape — :func:`personal_rules` from the operator's ``NB_USER_DAILY`` (per member per day)
  and ``NB_PERSONAL_DAILY`` / ``_MONTHLY`` (all personal use together, which the operator's relay
  pays for). Its limits are reported as ``personal_day`` / ``personal_month``, not as a server's.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .store import Connection, transaction

__all__ = ["Quota", "QuotaExceeded", "QuotaRules", "QuotaStatus", "personal_rules", "transaction"]

Clock = Callable[[], float]

# --- time windows -------------------------------------------------------------------------


def day_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC)
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def next_day(ts: float) -> float:
    return day_start(ts) + 86400.0


def month_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


def next_month(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaRules:
    """A server's credit limits. ``None`` = unlimited."""

    user_daily: int | None = 20
    guild_daily: int | None = None
    guild_monthly: int | None = None
    role_extra: Mapping[int, int] = field(default_factory=dict)  # role id -> extra daily credits
    exempt_roles: frozenset[int] = frozenset()

    def exempt(self, role_ids: Iterable[int]) -> bool:
        return bool(self.exempt_roles.intersection(role_ids))

    def user_limit(self, role_ids: Iterable[int] = ()) -> int | None:
        """The member's daily limit: base + their largest role bonus; None if unlimited/exempt."""
        roles = set(role_ids)
        if self.user_daily is None or self.exempt(roles):
            return None
        bonus = max((extra for role, extra in self.role_extra.items() if role in roles), default=0)
        return self.user_daily + max(0, bonus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_daily": self.user_daily,
            "guild_daily": self.guild_daily,
            "guild_monthly": self.guild_monthly,
            "role_extra": {str(k): v for k, v in self.role_extra.items()},
            "exempt_roles": sorted(self.exempt_roles),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuotaRules:
        def limit(name: str, default: int | None) -> int | None:
            value = data.get(name, default)
            if value is None:
                return None
            return max(0, int(value))

        return cls(
            user_daily=limit("user_daily", cls.user_daily),
            guild_daily=limit("guild_daily", None),
            guild_monthly=limit("guild_monthly", None),
            role_extra={int(k): max(0, int(v)) for k, v in dict(data.get("role_extra") or {}).items()},
            exempt_roles=frozenset(int(r) for r in data.get("exempt_roles") or ()),
        )


def personal_rules(*, user_daily: int | None, daily: int | None, monthly: int | None) -> QuotaRules:
    """The rules for requests without a server (the ``guild_id IS NULL`` rows): no roles, so
    no bonus or exemption; ``daily`` / ``monthly`` bound all members' personal use together."""
    return QuotaRules(user_daily=user_daily, guild_daily=daily, guild_monthly=monthly)


# How a scope-wide limit is named without a server: it is the operator's budget, not a server's.
_PERSONAL_SCOPES = {"guild_day": "personal_day", "guild_month": "personal_month"}


class QuotaExceeded(Exception):
    """A reservation would break a limit. ``scope``: ``user_day`` | ``guild_day`` | ``guild_month``
    (without a server: ``user_day`` | ``personal_day`` | ``personal_month``).

    ``key``/``params`` feed the translation layer (``resets_at`` is unix seconds, for a Discord
    ``<t:…>`` timestamp).
    """

    def __init__(self, scope: str, *, limit: int, used: int, resets_at: float, credits: int) -> None:
        super().__init__(
            f"quota {scope} exceeded: {used} of {limit} credits used, this needs {credits}; resets at "
            + datetime.fromtimestamp(resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        )
        self.scope = scope
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        self.credits = credits
        self.key = f"quota.exceeded.{scope}"
        self.params = {
            "limit": limit,
            "used": used,
            "left": max(0, limit - used),
            "credits": credits,
            "resets_at": int(resets_at),
        }


# --- status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecentJob:
    id: int
    status: str
    kind: str
    model: str
    size: str | None
    cost: int
    created_at: float
    error_code: str | None


@dataclass(frozen=True)
class Allowance:
    scope: str
    limit: int
    used: int
    resets_at: float

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class QuotaStatus:
    """What ``/quota`` shows a member."""

    exempt: bool
    allowances: list[Allowance]  # the limits that apply, tightest first
    held: int  # credits reserved by this member's queued/running jobs
    recent: list[RecentJob]

    @property
    def credits_left(self) -> int | None:
        """What the member can still spend now (the tightest limit); None = unlimited."""
        return min((a.left for a in self.allowances), default=None)

    @property
    def resets_at(self) -> float | None:
        """When the tightest limit resets."""
        if not self.allowances:
            return None
        return self.allowances[0].resets_at


# --- the ledger -----------------------------------------------------------------------------


class Quota:
    def __init__(self, db: Connection, *, clock: Clock = time.time, reader: Connection | None = None) -> None:
        self.db = db
        self.clock = clock
        # check() (an acknowledgement waits for it) reads here when given: a connection of its
        # own, so it is not queued behind job writes on ``db``'s one worker thread. In WAL
        # mode a reader sees every committed write and never blocks or waits for the writer.
        self.reader = reader

    async def _allowances(
        self,
        db: Connection,
        guild_id: int | None,
        user_id: int,
        rules: QuotaRules,
        role_ids: Iterable[int],
        now: float,
    ) -> list[Allowance]:
        today, month = day_start(now), month_start(now)
        user_limit = rules.user_limit(role_ids)
        # Every limit's sum from one statement: each execute, fetch and close is a trip to
        # aiosqlite's thread, queued behind whatever else uses the connection.
        columns: list[str] = []
        params: list[Any] = []
        if user_limit is not None:
            columns.append("SUM(CASE WHEN user_id = ? AND created_at >= ? THEN credits ELSE 0 END)")
            params += [user_id, today]
        if rules.guild_daily is not None:
            columns.append("SUM(CASE WHEN created_at >= ? THEN credits ELSE 0 END)")
            params.append(today)
        if rules.guild_monthly is not None:
            columns.append("SUM(credits)")
        if not columns:
            return []
        # Only the rows the widest window needs (a member's alone when only theirs counts).
        where = "guild_id IS ? AND created_at >= ?"
        params += [guild_id, month if rules.guild_monthly is not None else today]
        if len(columns) == 1 and user_limit is not None:
            where += " AND user_id = ?"
            params.append(user_id)
        sql = f"SELECT {', '.join(columns)} FROM quota_ledger WHERE state != 'refunded' AND {where}"
        (row,) = await db.execute_fetchall(sql, params)
        sums = iter(int(value or 0) for value in row)  # SUM over no rows is NULL
        found: list[Allowance] = []
        scope = (lambda name: _PERSONAL_SCOPES[name]) if guild_id is None else (lambda name: name)
        if user_limit is not None:
            found.append(Allowance("user_day", user_limit, next(sums), next_day(now)))
        if rules.guild_daily is not None:
            found.append(Allowance(scope("guild_day"), rules.guild_daily, next(sums), next_day(now)))
        if rules.guild_monthly is not None:
            found.append(Allowance(scope("guild_month"), rules.guild_monthly, next(sums), next_month(now)))
        return found

    async def check_in(
        self,
        db: Connection,
        *,
        guild_id: int | None,
        user_id: int,
        credits: int,
        rules: QuotaRules,
        role_ids: Iterable[int] = (),
        now: float,
    ) -> None:
        """Raise :class:`QuotaExceeded` if ``credits`` more would break a limit.

        Call inside :func:`transaction` and follow with :meth:`hold_in` in the same one.
        It only reads, so a refusal needs no rollback.
        """
        broken = [a for a in await self._allowances(db, guild_id, user_id, rules, list(role_ids), now) if a.used + credits > a.limit]
        if broken:
            worst = max(broken, key=lambda a: a.resets_at)
            raise QuotaExceeded(worst.scope, limit=worst.limit, used=worst.used, resets_at=worst.resets_at, credits=credits)

    async def check(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        credits: int,
        rules: QuotaRules,
        role_ids: Iterable[int] = (),
    ) -> None:
        """An early, read-only answer (before downloading inputs, say). Not a promise: the
        reservation at job creation checks again, atomically."""
        await self.check_in(
            self.reader or self.db, guild_id=guild_id, user_id=user_id, credits=credits, rules=rules, role_ids=role_ids, now=self.clock()
        )

    async def hold_in(self, db: Connection, *, job_id: int, guild_id: int | None, user_id: int, credits: int, now: float) -> None:
        """Write the reservation row (inside the transaction that ran :meth:`check_in`)."""
        await db.execute(
            "INSERT INTO quota_ledger (job_id, guild_id, user_id, credits, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
            (job_id, guild_id, user_id, credits, now, now),
        )

    async def reserve(
        self,
        job_id: int,
        *,
        guild_id: int | None,
        user_id: int,
        credits: int,
        rules: QuotaRules,
        role_ids: Iterable[int] = (),
    ) -> None:
        """Check and reserve in one transaction, for a job row that already exists."""
        async with transaction(self.db) as db:
            now = self.clock()
            await self.check_in(db, guild_id=guild_id, user_id=user_id, credits=credits, rules=rules, role_ids=role_ids, now=now)
            await self.hold_in(db, job_id=job_id, guild_id=guild_id, user_id=user_id, credits=credits, now=now)

    async def settle_in(self, db: Connection, job_id: int, state: str, now: float) -> bool:
        """``reserved`` -> ``committed``/``refunded``; False if not reserved (already settled)."""
        if state not in ("committed", "refunded"):
            raise ValueError(state)
        cur = await db.execute(
            "UPDATE quota_ledger SET state = ?, updated_at = ? WHERE job_id = ? AND state = 'reserved'",
            (state, now, job_id),
        )
        return cur.rowcount > 0

    async def commit(self, job_id: int) -> bool:
        async with transaction(self.db) as db:
            return await self.settle_in(db, job_id, "committed", self.clock())

    async def refund(self, job_id: int) -> bool:
        async with transaction(self.db) as db:
            return await self.settle_in(db, job_id, "refunded", self.clock())

    async def refund_delivered(self, job_id: int) -> bool:
        """``committed`` -> ``refunded``: a job that ended as delivered whose picture then never
        reached the member (variants are posted together, after the earlier ones have ended)."""
        async with transaction(self.db) as db:
            cur = await db.execute(
                "UPDATE quota_ledger SET state = 'refunded', updated_at = ? WHERE job_id = ? AND state = 'committed'",
                (self.clock(), job_id),
            )
            return cur.rowcount > 0

    async def status(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        rules: QuotaRules,
        role_ids: Iterable[int] = (),
        recent: int = 5,
    ) -> QuotaStatus:
        roles = list(role_ids)
        now = self.clock()
        allowances = await self._allowances(self.db, guild_id, user_id, rules, roles, now)
        allowances.sort(key=lambda a: (a.left, -a.resets_at))
        async with self.db.execute(
            "SELECT COALESCE(SUM(credits), 0) FROM quota_ledger WHERE guild_id IS ? AND user_id = ? AND state = 'reserved'",
            (guild_id, user_id),
        ) as cur:
            row = await cur.fetchone()
        held = int(row[0]) if row else 0
        async with self.db.execute(
            "SELECT id, status, kind, model, size, cost, created_at, error_code FROM jobs"
            " WHERE guild_id IS ? AND user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (guild_id, user_id, recent),
        ) as cur:
            rows = await cur.fetchall()
        return QuotaStatus(
            exempt=rules.exempt(roles),
            allowances=allowances,
            held=held,
            recent=[RecentJob(*tuple(r)) for r in rows],
        )

    async def totals(self, guild_id: int | None = None) -> dict[str, int]:
        """Credits by ledger state (all guilds when ``guild_id`` is None): for audits and tests."""
        sql = "SELECT state, COALESCE(SUM(credits), 0) FROM quota_ledger"
        params: tuple[Any, ...] = ()
        if guild_id is not None:
            sql += " WHERE guild_id = ?"
            params = (guild_id,)
        sql += " GROUP BY state"
        out = {"reserved": 0, "committed": 0, "refunded": 0}
        async with self.db.execute(sql, params) as cur:
            for state, credits in await cur.fetchall():
                out[state] = int(credits)
        return out
