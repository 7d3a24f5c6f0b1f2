"""The variants of one request shown together: which jobs, how each slot ended, the message.

Each variant is its own job: it may run in any process (the worker roles), before or after a
restart, so the group lives in the database, not in a process's memory. A variant that ends
records its slot; the one whose record completes the group (every slot ended) *claims* it and
is the only one to post the message. The claim is made in the same transaction as the count:
on PostgreSQL the group's row is locked first (two variants ending at once in two processes
are serialised; each statement then sees the other's committed slot), on SQLite the whole
write transaction is exclusive.

No Discord here: a slot is stored as what its result shows (bot.studio.Generated is rebuilt
from its turn, whose picture is in the image store).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .store import Connection, transaction

# How long a group is kept: far past any job's deadline and queue wait (a group still
# unposted by then never will be).
KEEP_S = 7 * 24 * 3600.0


@dataclass
class SlotRecord:
    """How one variant ended, as stored: its picture (``turn_id``, ``shown``) or its failure
    (``error``: a translation key and its parameters)."""

    index: int
    job_id: int
    turn_id: int | None = None
    shown: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    elapsed: float = 0.0
    relay_name: str = ""


_SLOT_COLUMNS = "slot, job_id, turn_id, shown, error, elapsed, relay_name"


def _slot(row: Any) -> SlotRecord:
    return SlotRecord(
        index=int(row[0]),
        job_id=int(row[1]),
        turn_id=int(row[2]) if row[2] is not None else None,
        shown=json.loads(row[3] or "{}"),
        error=json.loads(row[4]) if row[4] else None,
        elapsed=float(row[5] or 0.0),
        relay_name=str(row[6] or ""),
    )


async def _cancelled(tx: Connection, group_id: int, ended: set[int]) -> int:
    """The group's jobs cancelled without a slot of their own. Cancel takes a whole group, one
    job after another; a process that dies midway leaves the rest to run, and the last of them
    must still post what they made, so a cancelled sibling counts as ended."""
    rows = list(await tx.execute_fetchall("SELECT job_ids FROM variant_groups WHERE group_id = ?", (group_id,)))
    waiting = [int(i) for i in json.loads(rows[0][0] or "[]")] if rows else []
    waiting = [i for i in waiting if i not in ended]
    if not waiting:
        return 0
    marks = ", ".join("?" * len(waiting))
    found = list(await tx.execute_fetchall(f"SELECT COUNT(*) FROM jobs WHERE status = 'cancelled' AND id IN ({marks})", tuple(waiting)))
    return int(found[0][0])


class VariantGroupStore:
    def __init__(self, db: Connection, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def expect(self, group_id: int, job_ids: list[int]) -> None:
        """A new group of these jobs (in variant order), before any of them can end."""
        async with transaction(self.db) as tx:
            await self.expect_in(tx, group_id, job_ids)

    async def expect_in(self, tx: Connection, group_id: int, job_ids: list[int]) -> None:
        """:meth:`expect` inside the caller's transaction: the one that queues the jobs, so the
        group and its jobs exist together or not at all. Groups older than :data:`KEEP_S` go
        (posted long ago, or cut short): no job waits that long."""
        now = self.clock()
        old = "SELECT group_id FROM variant_groups WHERE created_at < ?"
        await tx.execute_fetchall(f"DELETE FROM variant_slots WHERE group_id IN ({old})", (now - KEEP_S,))
        await tx.execute_fetchall("DELETE FROM variant_groups WHERE created_at < ?", (now - KEEP_S,))
        await tx.execute_fetchall(
            "INSERT INTO variant_groups (group_id, job_ids, variants, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (group_id) DO UPDATE SET job_ids = excluded.job_ids, variants = excluded.variants",
            (group_id, json.dumps(job_ids), len(job_ids), now),
        )

    async def job_ids(self, group_id: int) -> list[int]:
        rows = list(await self.db.execute_fetchall("SELECT job_ids FROM variant_groups WHERE group_id = ?", (group_id,)))
        return [int(i) for i in json.loads(rows[0][0])] if rows else []

    async def ended(self, group_id: int) -> int:
        """How many of the group's slots have ended."""
        rows = list(await self.db.execute_fetchall("SELECT COUNT(*) FROM variant_slots WHERE group_id = ?", (group_id,)))
        return int(rows[0][0]) if rows else 0

    async def message_id(self, group_id: int) -> int | None:
        rows = list(await self.db.execute_fetchall("SELECT message_id FROM variant_groups WHERE group_id = ?", (group_id,)))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def done(self, group_id: int, slot: SlotRecord, variants: int) -> list[SlotRecord] | None:
        """Record one slot's end (a second record of the same slot is ignored). Every slot, in
        order, to the one caller whose record completed the group; None to everyone else."""
        async with transaction(self.db) as tx:
            # The row lock (PostgreSQL) that serialises the group's writers; the row itself is
            # made here if the group was never announced (a job queued by an older release).
            await tx.execute_fetchall(
                "INSERT INTO variant_groups (group_id, variants, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (group_id) DO UPDATE SET variants = variant_groups.variants",
                (group_id, variants, self.clock()),
            )
            await tx.execute_fetchall(
                f"INSERT INTO variant_slots (group_id, {_SLOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (group_id, slot) DO NOTHING",
                (
                    group_id,
                    slot.index,
                    slot.job_id,
                    slot.turn_id,
                    json.dumps(slot.shown, ensure_ascii=False),
                    json.dumps(slot.error, ensure_ascii=False) if slot.error is not None else None,
                    slot.elapsed,
                    slot.relay_name,
                ),
            )
            rows = list(
                await tx.execute_fetchall(f"SELECT {_SLOT_COLUMNS} FROM variant_slots WHERE group_id = ? ORDER BY slot", (group_id,))
            )
            if len(rows) + await _cancelled(tx, group_id, {int(r[1]) for r in rows}) < variants:
                return None
            # ``claimed`` holds the posting job's id. That job ending again (its process died while
            # posting, and the job was found interrupted) claims it again: the group is posted by
            # whoever handles that, rather than never (at worst twice, if the post had landed).
            claimed = list(
                await tx.execute_fetchall(
                    "UPDATE variant_groups SET claimed = ? WHERE group_id = ?"
                    " AND (claimed = 0 OR (claimed = ? AND message_id IS NULL)) RETURNING group_id",
                    (slot.job_id, group_id, slot.job_id),
                )
            )
        return [_slot(r) for r in rows] if claimed else None

    async def posted(self, group_id: int, message_id: int) -> None:
        """The group's message is out: remember it; the slots are no longer needed (each job
        records its own result)."""
        async with transaction(self.db) as tx:
            await tx.execute_fetchall("UPDATE variant_groups SET message_id = ? WHERE group_id = ?", (message_id, group_id))
            await tx.execute_fetchall("DELETE FROM variant_slots WHERE group_id = ?", (group_id,))

    async def forget(self, group_id: int) -> list[SlotRecord]:
        """The group was cancelled: nothing is to be posted for it. Returns the slots that had
        ended (a picture among them was made but will never be shown: the caller refunds it)."""
        async with transaction(self.db) as tx:
            rows = list(
                await tx.execute_fetchall(f"SELECT {_SLOT_COLUMNS} FROM variant_slots WHERE group_id = ? ORDER BY slot", (group_id,))
            )
            await tx.execute_fetchall("DELETE FROM variant_slots WHERE group_id = ?", (group_id,))
            await tx.execute_fetchall("DELETE FROM variant_groups WHERE group_id = ?", (group_id,))
        return [_slot(r) for r in rows]
