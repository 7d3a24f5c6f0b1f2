"""Servers' relays' balances, checked on a schedule: a warning when a relay drops below the
server's threshold or runs out, and which relays failover skips for having no credit.

A relay that exposes no balance (Gemini-native relays, Google) is never warned about and
never skipped. The check runs in one process at a time (a duty lock: several gateways would
otherwise each post the same warning) and records each relay's level in ``relay_balances``;
every process reads those levels back every :data:`REFRESH_S`, so failover anywhere skips a
relay while the *last check* said it had no credit, and a restart does not warn again about a
drop it already told. The next check that sees credit lets the relay back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from ..db import locks
from ..relay.balance import Balance, BalanceChange, BalanceWatch, Level, read_balance
from ..relay.client import RelayClient
from ..store import transaction
from .store import RelayStore

log = logging.getLogger(__name__)

CHECK_EVERY_S = 15 * 60.0  # balances change with use; a quarter hour keeps the calls rare
READ_TIMEOUT_S = 10.0
REFRESH_S = 60.0  # how stale another process's view of an empty relay may get


@dataclass(frozen=True)
class RelayBalance:
    guild_id: int
    relay_id: int
    name: str
    balance: Balance | None  # None: the relay exposes none


def watch_key(guild_id: int, relay_id: int) -> str:
    return f"{guild_id}:{relay_id}"


class BalanceChecker:
    def __init__(self, client: RelayClient, store: RelayStore, *, timeout: float = READ_TIMEOUT_S) -> None:
        self.client = client
        self.store = store
        self.timeout = timeout
        self.watch = BalanceWatch()
        self.every = CHECK_EVERY_S
        self.refresh = REFRESH_S
        self.clock = time.time
        self._nudge = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def out_of_credit(self, guild_id: int, relay_id: int) -> bool:
        """The last check said this relay has no credit (failover skips it)."""
        return self.watch.out_of_credit(watch_key(guild_id, relay_id))

    async def read(self, guild_id: int) -> list[RelayBalance]:
        """Every relay's balance now, in failover order (the watch is not changed)."""
        out = []
        for entry in await self.store.entries(guild_id):
            balance = await read_balance(self.client, entry.config, timeout=self.timeout)
            out.append(RelayBalance(guild_id, entry.info.id, entry.info.name, balance))
        return out

    async def check(self, guild_id: int, warn_below: float | None) -> list[BalanceChange]:
        """Read and record every relay of the server; the changes worth telling its admins
        (dropped below ``warn_below`` or to nothing; recovered)."""
        changes = []
        found = await self.read(guild_id)
        for relay in found:
            change = self.watch.update(watch_key(guild_id, relay.relay_id), relay.balance, warn_below)
            if change is not None:
                changes.append(BalanceChange(relay.name, change.before, change.after, change.balance))
        await self._save(guild_id, found)
        return changes

    async def _save(self, guild_id: int, found: list[RelayBalance]) -> None:
        now, levels = self.clock(), self.watch.levels  # one copy of the levels, not one per relay
        async with transaction(self.store.db) as db:
            for relay in found:
                await db.execute(
                    "INSERT INTO relay_balances (guild_id, relay_id, level, checked_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (guild_id, relay_id) DO UPDATE SET level = excluded.level, checked_at = excluded.checked_at",
                    (guild_id, relay.relay_id, levels.get(watch_key(guild_id, relay.relay_id), "unknown"), now),
                )

    async def load(self) -> None:
        """Take the levels the last check recorded, whichever process ran it."""
        rows = await self.store.db.execute_fetchall("SELECT guild_id, relay_id, level FROM relay_balances")
        self.watch.restore({watch_key(int(g), int(r)): cast(Level, str(level)) for g, r, level in rows})

    async def last_checked(self) -> float | None:
        rows = list(await self.store.db.execute_fetchall("SELECT MAX(checked_at) FROM relay_balances"))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def guilds_with_relays(self) -> list[int]:
        rows = await self.store.db.execute_fetchall("SELECT DISTINCT guild_id FROM relays ORDER BY guild_id")
        return [int(row[0]) for row in rows]

    async def check_all(
        self, warn_below: Callable[[int], Awaitable[float | None]], tell: Callable[[int, list[BalanceChange]], Awaitable[None]]
    ) -> None:
        """One scheduled round: every server with relays; ``tell`` gets each server's changes."""
        for guild_id in await self.guilds_with_relays():
            try:
                changes = await self.check(guild_id, await warn_below(guild_id))
                if changes:
                    await tell(guild_id, changes)
            except Exception:  # noqa: BLE001 - one server's trouble must not stop the round
                log.exception("balance check of guild %s failed", guild_id)

    # --- the schedule -------------------------------------------------------------------------

    def start(
        self, warn_below: Callable[[int], Awaitable[float | None]], tell: Callable[[int, list[BalanceChange]], Awaitable[None]]
    ) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(warn_below, tell), name="balance-checks")

    def nudge(self) -> None:
        """Check now rather than at the end of the current wait."""
        self._nudge.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(
        self, warn_below: Callable[[int], Awaitable[float | None]], tell: Callable[[int, list[BalanceChange]], Awaitable[None]]
    ) -> None:
        nudged, started = False, self.clock()

        async def due() -> bool:
            last = await self.last_checked()
            return nudged or self.clock() - (started if last is None else last) >= self.every

        while True:
            try:
                await self.load()  # what another process (or this one before a restart) saw
                if await due():
                    async with locks.duty(self.store.db, locks.BALANCE_DUTY) as mine:
                        # Read again under the lock: a process that checked while we waited
                        # has recorded its levels, and warning from ours would repeat its news.
                        if mine and await due():
                            await self.load()
                            await self.check_all(warn_below, tell)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the schedule
                log.exception("balance round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), timeout=min(self.every, self.refresh))
            nudged = self._nudge.is_set()
            self._nudge.clear()
