"""Choosing a relay for a server's job: its relays in order, failover, and rest periods.

- A server's relays are tried in the admin's order. On a ``RelayFailed`` with ``retryable``
  (429, 5xx, network, timeout, and this relay's own key/account trouble, as the relay client
  decides) the next relay is tried. Anything else — ``NoImage`` (the model refused: another
  relay would run the same model on the same prompt), ``InvalidRequest``, a non-retryable
  failure — goes straight back to the caller.
- A relay that failed is rested: skipped until ``skip_until`` (60 s, doubling per consecutive
  failure, at most 15 min; see ``guild_config.rest_period``), then tried again; one success
  clears its record. One failure is enough, because what reaches the pool has already been
  retried by the relay client.
- If *every* relay of a server is resting, the one whose rest ends first is tried anyway: a
  job should not fail without a single attempt, and one attempt is cheap next to hammering.
- A server without relays of its own uses the operator's relay (``NB_RELAY_URL``) only when
  ``settings.share_default_relay`` is on; otherwise :class:`NoRelay` (``admin.relay.none``).
  That relay is trusted (operator-configured) and its health is kept in memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from .guild_config import RelayStore, rest_period
from .relay.types import GenerationRequest, GenerationResult, RelayConfig, RelayError, RelayFailed
from .settings import Settings

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"


class Client(Protocol):
    async def generate(self, relay: RelayConfig, request: GenerationRequest) -> GenerationResult: ...

    async def probe(self, relay: RelayConfig) -> float: ...


class NoRelay(RelayError):
    """The server has no relay and may not use the operator's."""

    key = "admin.relay.none"
    exit_code = 4


@dataclass
class _Candidate:
    config: RelayConfig
    relay_id: int | None  # None: the operator's relay
    skip_until: float


class RelayPool:
    def __init__(self, client: Client, store: RelayStore, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.clock = clock
        self._default_fails = 0
        self._default_skip_until = 0.0

    def default_relay(self) -> RelayConfig | None:
        relay = self.settings.relay
        if relay is None:
            return None
        return RelayConfig(
            base_url=relay.url,
            dialect=relay.dialect,  # type: ignore[arg-type]
            auth=relay.auth,  # type: ignore[arg-type]
            api_key=relay.api_key,
            model_aliases=dict(relay.model_aliases),
            name=DEFAULT_NAME,
            trusted=True,
        )

    async def uses_default(self, guild_id: int | None) -> bool:
        """True when this server's jobs would go to the operator's relay."""
        return not await self.store.has_relays(guild_id)

    async def _candidates(self, guild_id: int | None) -> list[_Candidate]:
        if guild_id is not None:
            entries = await self.store.entries(guild_id)
            if entries:
                return [_Candidate(e.config, e.info.id, e.info.skip_until) for e in entries]
        default = self.default_relay()
        if default is None or not self.settings.share_default_relay:
            raise NoRelay("this server has no relay configured", key=NoRelay.key)
        return [_Candidate(default, None, self._default_skip_until)]

    def _order(self, candidates: list[_Candidate]) -> list[_Candidate]:
        now = self.clock()
        ready = [c for c in candidates if c.skip_until <= now]
        if ready:
            return ready
        return [min(candidates, key=lambda c: c.skip_until)]

    async def generate(self, guild_id: int | None, request: GenerationRequest) -> tuple[GenerationResult, str]:
        """The picture and the name of the relay that made it. A failure raised from here
        carries ``relay_name`` (the last relay tried) for the job record."""
        candidates = self._order(await self._candidates(guild_id))
        last: RelayFailed | None = None
        for candidate in candidates:
            name = candidate.config.name
            try:
                result = await self.client.generate(candidate.config, request)
            except RelayFailed as exc:
                exc.relay_name = name  # type: ignore[attr-defined]
                if not exc.retryable:
                    raise
                until = await self._failed(candidate, exc)
                log.warning("relay %s failed (%s); resting it for %.0f s", name, exc, until - self.clock())
                last = exc
                continue
            except RelayError as exc:
                exc.relay_name = name  # type: ignore[attr-defined]
                raise
            await self._succeeded(candidate)
            return result, name
        assert last is not None
        raise last

    async def probe(self, guild_id: int | None, name: str) -> float:
        """The admin's "test" button: one cheap real call; latency in seconds, or the relay's
        own error as RelayFailed. A success clears the relay's failure record."""
        candidate = next((c for c in await self._candidates(guild_id) if c.config.name == name), None)
        if candidate is None:
            raise NoRelay(f"no relay named {name!r}", key="admin.relay.not_found", name=name)
        latency = await self.client.probe(candidate.config)
        await self._succeeded(candidate, force=True)
        return latency

    async def _failed(self, candidate: _Candidate, exc: RelayFailed) -> float:
        if candidate.relay_id is None:
            self._default_fails += 1
            self._default_skip_until = self.clock() + rest_period(self._default_fails)
            return self._default_skip_until
        return await self.store.record_failure(candidate.relay_id, str(exc), api_key=candidate.config.api_key)

    async def _succeeded(self, candidate: _Candidate, *, force: bool = False) -> None:
        if candidate.relay_id is None:
            self._default_fails, self._default_skip_until = 0, 0.0
            return
        # Only write when there is a record to clear (or the admin asked): a healthy relay
        # costs no database write per job.
        if force or candidate.skip_until > 0:
            await self.store.record_success(candidate.relay_id)
