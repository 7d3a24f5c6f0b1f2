"""Choosing a relay for a server's job: its relays in order, failover, and rest periods.

- **Only relays that can honour the request** are candidates (``capabilities.unhonoured``: a
  ratio or size never goes to an OpenAI Chat relay, Google Search or a thinking level never to
  an OpenAI one, more pictures than an OpenAI Images edit takes never there), so neither the
  first choice nor a failover drops an option silently; the cogs refused before anything was
  charged when none could. History is the exception: an OpenAI relay edits the latest
  picture instead, and the result says so (``capabilities.history_note``).
- A server's relays are tried in the admin's order. On a ``RelayFailed`` with ``retryable``
  (429, 5xx, network, timeout, and this relay's own key/account trouble, as the relay client
  decides) the next relay is tried. Anything else — ``NoImage`` (the model refused: another
  relay would run the same model on the same prompt), ``InvalidRequest``, a non-retryable
  failure — goes straight back to the caller.
- A relay that failed is rested: skipped until ``skip_until`` (60 s, doubling per consecutive
  failure, at most 15 min; see ``bot.relays.health``), then tried again; one success
  clears its record. One failure is enough, because what reaches the pool has already been
  retried by the relay client.
- If *every* relay of a server is resting, the one whose rest ends first is tried anyway: a
  job should not fail without a single attempt, and one attempt is cheap next to hammering.
- **One deadline per job** (:func:`job_deadline`: twice the per-attempt allowance of the
  size, i.e. one full allowance for the first relay and one for a failover) bounds the whole
  call, the relay client's retries and every relay tried included: the client gives each
  attempt at most the time left (one timer, so the attempt ends and closes its connection
  in order), and the job fails with ``fair.deadline``; a scope a little past the deadline
  cancels anything else still running. It is also the longest any job holds a global slot ("one slot time").
- **After a read timeout, at most one more relay** is tried: a relay that accepted the request
  and went silent may still be generating (and billing) it, and five silent relays must not
  cost a job five allowances.
- **A per-server breaker** (bot/relays/breaker.py) rests a server whose relays keep timing out:
  its jobs then fail at once (refunded) instead of each holding a slot for a deadline.
- A server without relays of its own uses the operator's relay (``NB_RELAY_URL``) only when
  ``settings.share_default_relay`` is on; otherwise :class:`NoRelay` (``admin.relay.none``).
  That relay is trusted (operator-configured) and its health is kept in memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..relay.capabilities import history_note, unhonoured
from ..relay.catalogue import timeout_for
from ..relay.types import GenerationRequest, GenerationResult, InvalidRequest, NoImage, RelayConfig, RelayError, RelayFailed, RelayTimeout
from ..settings import Settings
from .breaker import ServerBreaker
from .health import MemoryHealth
from .store import RelayStore

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"

# Relays tried after the first read timeout of a job (see the module docstring).
FAILOVER_AFTER_TIMEOUT = 1
# Past the deadline, how long anything else (not a relay attempt) may still run before the
# call is cancelled outright.
DEADLINE_BACKSTOP_S = 2.0


class DeadlinePassed(RelayTimeout):
    """The job's deadline ended the call (not retried: the job's time is up)."""

    key = "fair.deadline"

    def __init__(self, seconds: int) -> None:
        super().__init__(f"no picture within {seconds} s, retries and failover included", relay_message=f"no picture within {seconds} s")
        self.params["seconds"] = seconds


def job_deadline(size: str | None, attempt_timeout: float | None = None) -> float:
    """Seconds one job may take in all: room for one full attempt and one failover attempt.
    ``attempt_timeout`` is the relay client's override (``RelayClient.timeout``), if any."""
    per_attempt = attempt_timeout if attempt_timeout is not None else timeout_for(size)
    return 2.0 * per_attempt


class Client(Protocol):
    async def generate(self, relay: RelayConfig, request: GenerationRequest, *, deadline: float | None = None) -> GenerationResult: ...

    async def probe(self, relay: RelayConfig) -> float: ...


class Unroutable(InvalidRequest):
    """Every relay of the server would drop an option the job asks for."""

    key = "capability.gone"


class NoRelay(RelayError):
    """The server has no relay and may not use the operator's."""

    key = "admin.relay.none"
    exit_code = 4


@dataclass
class _Candidate:
    config: RelayConfig
    relay_id: int | None  # None: the operator's relay
    skip_until: float


@dataclass
class _Call:
    """One job's way through its relays, under one deadline."""

    guild_id: int | None
    deadline: float  # time.monotonic() at which the job's time is up
    allowance: float  # seconds, for the message
    in_flight: _Candidate | None = None
    last: RelayFailed | None = None
    timeouts: int = 0


class RelayPool:
    def __init__(
        self,
        client: Client,
        store: RelayStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        breaker: ServerBreaker | None = None,
        safety: Callable[[int | None], Awaitable[list[dict[str, str]]]] | None = None,
        out_of_credit: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.clock = clock
        self.breaker = breaker or ServerBreaker(clock=clock)
        self._default_health = MemoryHealth(clock)
        # The server's Gemini safetySettings (bot.safety); only the Gemini dialect sends them.
        self.safety = safety
        # (guild id, relay id) -> the last balance check said no credit (bot.relays.balances).
        self.out_of_credit = out_of_credit

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
        # Personal use (no server, bot.quota's personal scope) runs on the operator's relay.
        if default is None or not (self.settings.share_default_relay or guild_id is None):
            raise NoRelay("this server has no relay configured", key=NoRelay.key)
        return [_Candidate(default, None, self._default_health.skip_until)]

    def _with_credit(self, guild_id: int | None, candidates: list[_Candidate]) -> list[_Candidate]:
        """Without the relays that reported no credit at the last balance check. If that is
        every relay, all are kept: credit may have been added since, and a job gets an attempt."""
        if self.out_of_credit is None or guild_id is None:
            return candidates
        check = self.out_of_credit
        left = [c for c in candidates if c.relay_id is None or not check(guild_id, c.relay_id)]
        return left or candidates

    def _capable(self, candidates: list[_Candidate], request: GenerationRequest) -> list[_Candidate]:
        """Only the relays whose dialect carries every option the request asks for (a ratio
        never goes to an OpenAI Chat relay, Google Search never to an OpenAI one), so neither
        the first choice nor a failover drops one silently. The cogs refused before anything
        was charged when no relay could; none left here (the relays changed since) fails the
        job, refunded."""
        capable = [c for c in candidates if not unhonoured(c.config.dialect, request)]
        if not capable:
            raise Unroutable("no relay of this server can honour every option asked")
        return capable

    def _order(self, candidates: list[_Candidate]) -> list[_Candidate]:
        now = self.clock()
        ready = [c for c in candidates if c.skip_until <= now]
        if ready:
            return ready
        return [min(candidates, key=lambda c: c.skip_until)]

    async def generate(self, guild_id: int | None, request: GenerationRequest) -> tuple[GenerationResult, str]:
        """The picture and the name of the relay that made it, within :func:`job_deadline`.
        A failure raised from here carries ``relay_name`` (the last relay tried) for the job
        record."""
        self.breaker.check(guild_id)
        if self.safety is not None and request.safety_settings is None:
            request = dataclasses.replace(request, safety_settings=await self.safety(guild_id) or None)
        allowance = job_deadline(request.size, getattr(self.client, "timeout", None))
        candidates = self._order(self._with_credit(guild_id, self._capable(await self._candidates(guild_id), request)))
        call = _Call(guild_id, time.monotonic() + allowance, allowance)
        # The client ends its attempts at the deadline itself; this scope is the backstop for
        # anything else that would run past it.
        scope = asyncio.timeout(allowance + DEADLINE_BACKSTOP_S)
        try:
            async with scope:
                for candidate in candidates:
                    if call.timeouts > FAILOVER_AFTER_TIMEOUT:
                        break
                    result = await self._attempt(call, candidate, request)
                    if result is not None:
                        note = history_note(request, candidate.config.dialect)
                        if note is not None:  # e.g. a failover to an OpenAI relay: said on the result
                            result.notes.append(note)
                        return result, candidate.config.name
        except TimeoutError:
            if not scope.expired():
                raise
            raise await self._deadline_passed(call) from None
        finally:
            self.breaker.released(guild_id)
        assert call.last is not None
        raise call.last

    async def _attempt(self, call: _Call, candidate: _Candidate, request: GenerationRequest) -> GenerationResult | None:
        """One relay's try: its picture, or ``None`` after a failure worth failing over (the
        relay is rested); anything else is raised with ``relay_name`` set."""
        name = candidate.config.name
        call.in_flight = candidate
        try:
            result = await self.client.generate(candidate.config, request, deadline=call.deadline)
        except RelayFailed as exc:
            call.in_flight = None
            exc.relay_name = name
            if isinstance(exc, RelayTimeout):
                call.timeouts += 1
                self.breaker.timed_out(call.guild_id)
            elif not exc.retryable:
                self.breaker.answered(call.guild_id)
                raise
            until = await self._failed(candidate, exc)
            log.warning("relay %s failed (%s); resting it for %.0f s", name, exc, until - self.clock())
            call.last = exc
            if time.monotonic() >= call.deadline:
                passed = DeadlinePassed(round(call.allowance))
                passed.relay_name = name
                raise passed from None
            return None
        except NoImage as exc:
            self.breaker.answered(call.guild_id)  # the relay answered; the model refused
            exc.relay_name = name
            raise
        except RelayError as exc:
            exc.relay_name = name
            raise
        call.in_flight = None
        self.breaker.answered(call.guild_id)
        await self._succeeded(candidate)
        return result

    async def _deadline_passed(self, call: _Call) -> DeadlinePassed:
        """The deadline cancelled the call: the attempt in flight (its connection is closed by
        now) counts as a timeout of its relay."""
        passed = DeadlinePassed(round(call.allowance))
        if call.in_flight is not None:
            passed.relay_name = call.in_flight.config.name
            self.breaker.timed_out(call.guild_id)
            await self._failed(call.in_flight, passed)
        elif call.last is not None:
            passed.relay_name = call.last.relay_name
        return passed

    async def probe(self, guild_id: int | None, name: str) -> float:
        """The admin's "test" button: one cheap real call; latency in seconds, or the relay's
        own error as RelayFailed. A success clears the relay's failure record."""
        candidate = next((c for c in await self._candidates(guild_id) if c.config.name == name), None)
        if candidate is None:
            raise NoRelay(f"no relay named {name!r}", key="admin.relay.not_found", name=name)
        latency = await self.client.probe(candidate.config)
        await self._succeeded(candidate, force=True)
        self.breaker.answered(guild_id)  # the admin checked: the server's jobs may run again
        return latency

    async def _failed(self, candidate: _Candidate, exc: RelayFailed) -> float:
        if candidate.relay_id is None:
            return self._default_health.record_failure()
        return await self.store.health.record_failure(candidate.relay_id, str(exc), api_key=candidate.config.api_key)

    async def _succeeded(self, candidate: _Candidate, *, force: bool = False) -> None:
        if candidate.relay_id is None:
            self._default_health.record_success()
            return
        # Only write when there is a record to clear (or the admin asked): a healthy relay
        # costs no database write per job.
        if force or candidate.skip_until > 0:
            await self.store.health.record_success(candidate.relay_id)
