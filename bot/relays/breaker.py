"""A per-server breaker: rest a server whose relays keep timing out, so its jobs stop holding
global job slots for a whole deadline each while other servers wait.

- Counts *timeouts* only (a relay that accepted the request and did not answer within the
  allowance), consecutive across the server's relays and jobs. Fast failures (HTTP errors,
  refused connections) already move on at once and are rested per relay by the pool.
- After ``threshold`` timeouts in a row the server is open: its jobs fail at once with a
  translated reason (``fair.server_resting``) and are refunded, for ``rest_period(n)`` (60 s,
  doubling per opening, at most 15 min). When the rest ends one job is let through (half-open);
  a success closes the breaker, another timeout opens it again for twice as long.
- In memory, per process, on purpose: a restart already interrupts every running job, and
  the per-relay rest periods (``relays.skip_until``) are persisted and still apply; a
  persisted breaker would mostly keep a server paused after its admin fixed the relay and
  restarted the bot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..relay.types import RelayError
from .health import rest_period

BREAKER_THRESHOLD = 2


class ServerResting(RelayError):
    """The server's breaker is open: nothing is sent; the job fails and is refunded."""

    key = "fair.server_resting"
    exit_code = 4


@dataclass
class _State:
    timeouts: int = 0  # consecutive, since the last success
    openings: int = 0
    open_until: float = 0.0
    trial: bool = False  # half-open: one job is being tried


class ServerBreaker:
    def __init__(self, *, threshold: int = BREAKER_THRESHOLD, clock: Callable[[], float] = time.time) -> None:
        self.threshold = max(1, threshold)
        self.clock = clock
        self._states: dict[int | None, _State] = {}

    def check(self, guild_id: int | None) -> None:
        """Raise :class:`ServerResting` while the server is resting."""
        state = self._states.get(guild_id)
        if state is None or state.openings == 0:
            return
        now = self.clock()
        if now < state.open_until or state.trial:
            left = max(state.open_until - now, 60.0 if state.trial else 0.0)
            minutes = max(1, round(left / 60))
            raise ServerResting(
                f"this server's relays timed out {state.timeouts} times in a row; resting for {minutes} min",
                key=ServerResting.key,
                failures=state.timeouts,
                minutes=minutes,
            )
        state.trial = True  # the rest is over: this job is the trial

    def timed_out(self, guild_id: int | None) -> None:
        state = self._states.setdefault(guild_id, _State())
        state.timeouts += 1
        if state.openings and self.clock() < state.open_until:
            return  # already resting (e.g. the failover of the same job): not twice as long
        if state.trial or state.timeouts >= self.threshold:
            state.openings += 1
            state.open_until = self.clock() + rest_period(state.openings)
            state.trial = False

    def answered(self, guild_id: int | None) -> None:
        """The relay answered (a picture, or an answer the pool passes on): not hung."""
        self._states.pop(guild_id, None)

    def released(self, guild_id: int | None) -> None:
        """A trial job ended without telling (e.g. a fast failure): let the next one try."""
        state = self._states.get(guild_id)
        if state is not None:
            state.trial = False

    def resting(self, guild_id: int | None) -> bool:
        state = self._states.get(guild_id)
        return bool(state and state.openings and self.clock() < state.open_until)
