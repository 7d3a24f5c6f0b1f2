"""How long a failing relay rests, and its health record.

Rest period after the n-th consecutive failure: 60 s, 2 min, 4 min... capped at 15 min. One
failure is enough to rest a relay: what reaches the pool has already survived the relay
client's own retries. One success clears the record. A server's relays keep their record in
the ``relays`` table (it survives a restart); the operator's relay keeps it in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..relay.redact import cut
from ..secrets import mask
from ..store import Connection, transaction

REST_BASE_S = 60.0
REST_MAX_S = 900.0
# Characters of a relay's last error kept for the admin's relay list.
LAST_ERROR_CHARS = 300


def rest_period(fail_count: int) -> float:
    return min(REST_MAX_S, REST_BASE_S * 2 ** max(0, fail_count - 1))


def _last_error(error: str, api_key: str) -> str:
    """What the admin's relay list shows: relays echo keys, so this relay's key is named by its
    hint (the admin sees which key was refused) and every other key is masked by ``cut``."""
    named = error.replace(api_key, mask(api_key)) if api_key else error
    return cut(named, LAST_ERROR_CHARS, [api_key])


class StoredHealth:
    """The health of a server's relays, in their rows."""

    def __init__(self, db: Connection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def record_failure(self, relay_id: int, error: str, *, api_key: str = "") -> float:
        """Count a failure and rest the relay; returns the time until which it is skipped."""
        now = self.clock()
        async with transaction(self.db) as db:
            async with db.execute("SELECT fail_count FROM relays WHERE id = ?", (relay_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return 0.0
            fails = int(row[0]) + 1
            until = now + rest_period(fails)
            await db.execute(
                "UPDATE relays SET fail_count = ?, skip_until = ?, last_error = ?, last_failure_at = ? WHERE id = ?",
                (fails, until, _last_error(error, api_key), now, relay_id),
            )
        return until

    async def record_success(self, relay_id: int) -> None:
        async with transaction(self.db) as db:
            await db.execute(
                "UPDATE relays SET fail_count = 0, skip_until = 0, last_success_at = ? WHERE id = ?",
                (self.clock(), relay_id),
            )


class MemoryHealth:
    """The operator's relay: the same rest periods, kept per process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.fails = 0
        self.skip_until = 0.0

    def record_failure(self) -> float:
        self.fails += 1
        self.skip_until = self.clock() + rest_period(self.fails)
        return self.skip_until

    def record_success(self) -> None:
        self.fails, self.skip_until = 0, 0.0
