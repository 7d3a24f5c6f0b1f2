"""The moderation log as a service: entries collected per log channel and handed out in batches
at a bounded rate, so a burst of jobs cannot trip Discord's limits (no Discord import here;
cogs/modlog.py renders and posts).

Discord allows 10 embeds per message and about 5 messages per 5 s per channel (the route's
bucket). One batch of at most :data:`MAX_EMBEDS` entries per channel goes out at most every
``interval`` seconds (1 s), so 50 pictures at once become 5 messages over ~5 s instead of 50
messages and a 429. A channel's backlog is bounded (:data:`MAX_PENDING`): past it the oldest
entries are dropped with a warning rather than growing without end while Discord refuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

MAX_EMBEDS = 10  # Discord's limit per message
MAX_PENDING = 1000  # entries waiting per channel
PROMPT_CHARS = 200  # a log entry shows this much of the prompt


def shorten(text: str, limit: int = PROMPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class LogEntry:
    """One generation (``picture``) or one request the blocklist refused (``refusal``)."""

    kind: Literal["picture", "refusal"]
    guild_id: int
    user_id: int
    prompt: str
    channel_id: int | None = None  # where it was asked / posted
    model: str | None = None
    size: str | None = None  # as shown: "2K", or the picture's pixels
    credits: int = 0
    message_id: int | None = None  # the result message (pictures)
    turn_id: int | None = None  # the result's stored turn (pictures), for removal
    thumbnail_url: str | None = None
    rule_id: str | None = None  # the blocklist rule's id (refusals; never the word itself)
    at: float = field(default_factory=time.time)


Poster = Callable[[int, list[LogEntry]], Awaitable[None]]  # log channel id, 1..MAX_EMBEDS entries


class ModLog:
    def __init__(self, *, interval: float = 1.0, per_message: int = MAX_EMBEDS) -> None:
        self.interval = interval
        self.per_message = min(per_message, MAX_EMBEDS)
        self._pending: dict[int, deque[LogEntry]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, log_channel_id: int | None, entry: LogEntry) -> None:
        """Queue ``entry`` for ``log_channel_id`` (None: the server has no log; nothing)."""
        if log_channel_id is None:
            return
        queue = self._pending.setdefault(log_channel_id, deque())
        if len(queue) >= MAX_PENDING:
            queue.popleft()
            log.warning("moderation log %s: backlog full, oldest entry dropped", log_channel_id)
        queue.append(entry)
        self._wake.set()

    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def start(self, post: Poster) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(post), name="modlog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, post: Poster) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Let a burst gather: one interval's entries go out together.
            await asyncio.sleep(self.interval)
            while self._pending:
                await self._flush_once(post)
                if self._pending:
                    await asyncio.sleep(self.interval)

    async def _flush_once(self, post: Poster) -> None:
        """One message per channel with entries waiting (at most ``per_message`` of them)."""
        for channel_id in list(self._pending):
            queue = self._pending[channel_id]
            batch = [queue.popleft() for _ in range(min(self.per_message, len(queue)))]
            if not queue:
                del self._pending[channel_id]
            try:
                await post(channel_id, batch)
            except Exception as exc:  # noqa: BLE001 - the log must never stop the bot; the entries are lost, said once
                log.warning("moderation log %s: %d entr(y/ies) not posted (%s)", channel_id, len(batch), type(exc).__name__)
