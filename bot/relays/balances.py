"""Servers' relays' balances, checked on a schedule: a warning when a relay drops below the
server's threshold or runs out, and which relays failover skips for having no credit.

A relay that exposes no balance (Gemini-native relays, Google) is never warned about and
never skipped. The levels live in memory (bot.relay.balance.BalanceWatch): after a restart the
first check sets them again and warns once more for relays still low, which an admin who
missed the first warning wants. Failover skips a relay while the *last check* said it had no
credit; the next check that sees credit lets it back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..relay.balance import Balance, BalanceChange, BalanceWatch, read_balance
from ..relay.client import RelayClient
from .store import RelayStore

log = logging.getLogger(__name__)

CHECK_EVERY_S = 15 * 60.0  # balances change with use; a quarter hour keeps the calls rare
READ_TIMEOUT_S = 10.0


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
        for found in await self.read(guild_id):
            change = self.watch.update(watch_key(guild_id, found.relay_id), found.balance, warn_below)
            if change is not None:
                changes.append(BalanceChange(found.name, change.before, change.after, change.balance))
        return changes

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
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), timeout=self.every)
            self._nudge.clear()
            await self.check_all(warn_below, tell)
