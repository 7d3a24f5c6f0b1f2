"""Variants of one /imagine: N jobs (each its own relay call, reservation and refund) whose
pictures are posted together, in one message, once every one of them has ended.

The jobs run whenever the queue gives this member a turn, in any order and perhaps one after
another, so no job waits for its siblings: each leaves its picture (or its failure) here and
the last to end posts them all (variants.py). The groups live in this process's memory; a group
cut by a restart is not posted together (its jobs come back as interrupted, each with Retry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.jobs import Job
from bot.studio import Generated


@dataclass
class Slot:
    """How one variant ended: its picture, or why it has none."""

    index: int
    job: Job
    generated: Generated | None = None
    error: BaseException | None = None
    elapsed: float = 0.0


@dataclass
class _Group:
    job_ids: list[int]
    slots: dict[int, Slot] = field(default_factory=dict)


class VariantGroups:
    """The variant groups still running in this process, keyed by their progress message."""

    def __init__(self) -> None:
        self._groups: dict[int, _Group] = {}

    def expect(self, group: int, job_ids: list[int]) -> None:
        self._groups[group] = _Group(job_ids)

    def siblings(self, group: int | None) -> list[int]:
        found = self._groups.get(group or 0)
        return list(found.job_ids) if found else []

    def any_ended(self, group: int | None) -> bool:
        found = self._groups.get(group or 0)
        return bool(found and found.slots)

    def forget(self, group: int | None) -> None:
        self._groups.pop(group or 0, None)

    def done(self, group: int | None, slot: Slot, count: int) -> list[Slot] | None:
        """Record one variant's end; every slot, in order, when it was the last, else None."""
        found = self._groups.setdefault(group or 0, _Group([]))
        found.slots[slot.index] = slot
        if len(found.slots) < count:
            return None
        self._groups.pop(group or 0, None)
        return [found.slots[i] for i in sorted(found.slots)]
