"""The writers' turn on one shared SQLite connection: one at a time, the urgent first.

Every task's writes go through one aiosqlite connection (one thread, statements in order), so
writers take turns: a statement of one task must never land inside another task's
transaction. With a plain FIFO lock a write on an interaction's acknowledgement path (the
token stored before the acknowledgement) waits behind every job's bookkeeping queued before
it; Discord gives an acknowledgement 3 s and members feel tens of milliseconds. An urgent
writer here waits only for the transaction in progress.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

URGENT, NORMAL = 0, 1


class WriterLock:
    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, arrival, handed the turn)
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def turn(self, priority: int = NORMAL) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if not self._held and not self._waiting:
            self._held = True
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), handed))
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self._release()  # handed the turn as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        # The turn passes straight to the first writer still waiting (the lock stays held), so
        # nobody arriving meanwhile can slip in ahead of it; cancelled waiters are skipped.
        while self._waiting:
            _priority, _arrival, handed = heapq.heappop(self._waiting)
            if not handed.done():
                handed.set_result(None)
                return
        self._held = False
