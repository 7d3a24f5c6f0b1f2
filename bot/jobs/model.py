"""What a job is: its row as a dataclass, what a member asks for, how a failure is recorded,
and the place in line a member is shown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..relay.types import InvalidRequest, NoImage, RelayError, RelayFailed, RelayTimeout

TERMINAL = ("done", "failed", "cancelled", "interrupted")
# A job holding a slot: ``running``, or ``delivering`` once its runner began posting the picture
# (from then on Cancel is too late, in every process: see JobQueue.begin_delivery).
ACTIVE = ("running", "delivering")
ACTIVE_SQL = "('running', 'delivering')"

# Places in line shown exactly; beyond it a member sees "within the first N" (N from
# POSITION_BUCKETS, then powers of ten), which changes only when a bucket boundary is crossed.
EXACT_POSITIONS = 10
POSITION_BUCKETS = (20, 50, 100, 200, 500, 1000)


def shown_position(position: int) -> int:
    """The place in line a member is told: exact up to EXACT_POSITIONS, else the smallest
    bucket bound at or above it. Each job crosses each bound at most once while the queue
    drains, so updates per job are EXACT_POSITIONS + O(log N)."""
    if position <= EXACT_POSITIONS:
        return position
    for bound in POSITION_BUCKETS:
        if position <= bound:
            return bound
    bound = POSITION_BUCKETS[-1]
    while bound < position:
        bound *= 10
    return bound


class Row(Protocol):
    """A result row of either backend (aiosqlite.Row, asyncpg.Record)."""

    def keys(self) -> Iterable[str]: ...
    def __getitem__(self, key: str) -> Any: ...


@dataclass
class NewJob:
    """What the bot knows when a member asks for a picture."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    request: dict[str, Any]  # JSON-able: prompt, model, ratio, size, options, image hashes
    model: str
    size: str | None = None
    kind: str = "imagine"  # imagine | edit | reroll | upscale | retry
    locale: str = "en"
    conversation_id: int | None = None
    parent_turn_id: int | None = None
    # In the same row as it is created: a stored interaction token without a job that refers to
    # it means the request was lost before queueing (bot.jobs.replies.ReplyStore.orphans).
    progress_message_id: int | None = None


@dataclass
class Job:
    id: int
    guild_id: int | None
    channel_id: int | None
    user_id: int
    kind: str
    status: str
    request: dict[str, Any]
    model: str
    size: str | None
    cost: int
    locale: str
    conversation_id: int | None = None
    parent_turn_id: int | None = None
    result_turn_id: int | None = None
    progress_message_id: int | None = None
    result_message_id: int | None = None
    relay_name: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    latency_ms: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None  # the process running it (PostgreSQL; see bot/jobs/leases.py)
    # Its picture, stored and being posted when its process died: posted again (records.interrupt).
    redeliver: dict[str, Any] | None = None
    redeliveries: int = 0

    @classmethod
    def from_row(cls, row: Row) -> Job:
        data = {k: row[k] for k in row.keys() if k in JOB_FIELDS}
        try:
            data["request"] = json.loads(data.get("request") or "{}")
        except ValueError:
            data["request"] = {}
        try:
            data["redeliver"] = json.loads(data["redeliver"]) if data.get("redeliver") else None
        except ValueError:
            data["redeliver"] = None  # unreadable: the job is refunded as any interrupted one
        return cls(**data)


def redeliver_json(job: Job) -> str | None:
    return json.dumps(job.redeliver, ensure_ascii=False) if job.redeliver is not None else None


JOB_FIELDS = {f.name for f in dataclasses.fields(Job)}
# Fields the bot may set on a job after creation (progress message, links to turns...).
UPDATABLE = {"progress_message_id", "result_message_id", "result_turn_id", "conversation_id", "parent_turn_id", "relay_name", "latency_ms"}

Runner = Callable[[Job], Awaitable[None]]
PositionCallback = Callable[[Job, int], Awaitable[None]]
JobCallback = Callable[[Job], Awaitable[None]]


class QueueClosed(RuntimeError):
    key = "jobs.closed"


class CancelledBeforeDelivery(asyncio.CancelledError):
    """Raised by :meth:`JobQueue.begin_delivery` when a Cancel reached the job first: the
    runner unwinds as on any cancellation, and the queue records it cancelled and refunded."""


def classify(exc: BaseException) -> tuple[str, str]:
    """``(error_code, detail)`` stored on a failed job; codes group failures in usage reports."""
    detail = str(exc)[:500]
    if isinstance(exc, NoImage):
        return f"no_image:{exc.reason}", detail
    if isinstance(exc, RelayTimeout):
        return "timeout", detail
    if isinstance(exc, RelayFailed):
        return (f"http_{exc.status}" if exc.status else "network"), detail
    if isinstance(exc, InvalidRequest):
        return "invalid", detail
    if isinstance(exc, RelayError):
        return exc.key, detail
    key = getattr(exc, "key", None)
    if isinstance(key, str):
        return key, detail
    return "internal", type(exc).__name__


def too_late(job: Job | None) -> str:
    """Why a job that is no longer queued or running here cannot be cancelled."""
    if job is not None and job.status in ("delivering", "interrupted"):
        return job.status
    return "too_late"
