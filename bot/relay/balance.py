"""A relay's remaining balance, where the relay exposes one.

Relays built on the new-api / one-api gateways answer, with the same Bearer key as generation
(facts from new-api's source: router/dashboard.go, controller/billing.go, controller/token.go):

- ``GET /v1/dashboard/billing/subscription`` -> ``{"hard_limit_usd": total, ...}``, where
  total = remaining + used, in the site's display unit (USD by default; a site may be set to
  show CNY or raw tokens, and the field keeps its ``_usd`` name). An unlimited key reports
  100000000.
- ``GET /v1/dashboard/billing/usage`` -> ``{"total_usage": used * 100}`` (hundredths, the
  OpenAI convention).
- ``GET /api/usage/token`` -> ``{"code": true, "data": {"total_available", "total_used",
  "total_granted", "unlimited_quota", "expires_at"}}`` in raw quota units (new-api's default
  is 500000 units per US dollar; sites can change it, so it is reported as ``quota``).

Read in that order: billing first (a currency amount the admin recognises), token info when
billing is absent. A relay with neither (Gemini-native relays, Google itself) has no balance:
:func:`read_balance` returns None. Every call goes through :meth:`RelayClient.call_json`: the
same HTTP client and URL guard as generation, tried once, bounded in time and size, the key only
sent to the relay's own origin and masked in every message.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from .client import RelayClient
from .redact import redact
from .types import RelayConfig, RelayError

log = logging.getLogger("bot.relay.balance")

STEP_TIMEOUT_S = 15.0
UNLIMITED_AT = 100_000_000.0  # what new-api reports for an unlimited key

Source = Literal["billing", "token_usage"]


@dataclass(frozen=True)
class Balance:
    remaining: float  # in ``unit``; 0 when used up (never negative)
    unit: str  # "USD" (as the billing endpoint names it) or "quota" (raw gateway units)
    source: Source
    unlimited: bool = False
    used: float | None = None
    total: float | None = None

    @property
    def empty(self) -> bool:
        """No credit left: a relay like this fails every job until topped up."""
        return not self.unlimited and self.remaining <= 0

    def below(self, threshold: float) -> bool:
        """Below an admin's warning threshold (in the same unit)."""
        return not self.unlimited and self.remaining < threshold


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


async def read_balance(client: RelayClient, relay: RelayConfig, *, timeout: float = STEP_TIMEOUT_S) -> Balance | None:
    """The relay's balance, or None when it exposes none (or answers nothing readable).

    The calls use Bearer auth whatever ``relay.auth`` is (the gateways' billing routes take
    only ``Authorization: Bearer``) and the OpenAI ``/v1`` prefix. Never raises for what the
    relay does; a refused URL (the guard) also gives None, logged."""
    openai = replace(relay, dialect="openai-chat", auth="bearer")
    balance = await _billing(client, openai, timeout)
    if balance is None:
        balance = await _token_usage(client, openai, timeout)
    return balance


async def _get(client: RelayClient, relay: RelayConfig, path: str, timeout: float, *, versioned: bool = True) -> Any:
    try:
        return await client.call_json(relay, path, versioned=versioned, timeout=timeout)
    except RelayError as exc:
        log.info("relay %s: no balance from %s (%s)", relay.name, path, redact(exc, [relay.api_key]))
        return None


async def _billing(client: RelayClient, relay: RelayConfig, timeout: float) -> Balance | None:
    subscription = await _get(client, relay, "/dashboard/billing/subscription", timeout)
    total = _number(subscription.get("hard_limit_usd")) if isinstance(subscription, dict) else None
    if total is None:
        return None
    if total >= UNLIMITED_AT:
        return Balance(remaining=total, unit="USD", source="billing", unlimited=True, total=total)
    usage = await _get(client, relay, "/dashboard/billing/usage", timeout)
    hundredths = _number(usage.get("total_usage")) if isinstance(usage, dict) else None
    if hundredths is None:
        return None  # a total without what was used says nothing about what is left
    used = hundredths / 100
    return Balance(remaining=max(0.0, round(total - used, 6)), unit="USD", source="billing", used=used, total=total)


async def _token_usage(client: RelayClient, relay: RelayConfig, timeout: float) -> Balance | None:
    answer = await _get(client, relay, "/api/usage/token", timeout, versioned=False)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        return None
    if data.get("unlimited_quota") is True:
        return Balance(remaining=UNLIMITED_AT, unit="quota", source="token_usage", unlimited=True)
    available = _number(data.get("total_available"))
    if available is None:
        return None
    return Balance(
        remaining=max(0.0, available),
        unit="quota",
        source="token_usage",
        used=_number(data.get("total_used")),
        total=_number(data.get("total_granted")),
    )


# --- watching balances ----------------------------------------------------------------------

Level = Literal["unknown", "ok", "low", "empty"]
_RANK: dict[str, int] = {"unknown": 0, "ok": 0, "low": 1, "empty": 2}


def level(balance: Balance | None, warn_below: float | None = None) -> Level:
    """``empty`` (no credit), ``low`` (below the admin's threshold), ``ok``, or ``unknown``
    (no balance readable)."""
    if balance is None:
        return "unknown"
    if balance.empty:
        return "empty"
    if warn_below is not None and balance.below(warn_below):
        return "low"
    return "ok"


@dataclass(frozen=True)
class BalanceChange:
    relay: str
    before: Level
    after: Level
    balance: Balance | None

    @property
    def warn(self) -> bool:
        """Worse than before (ok -> low, low -> empty, ok -> empty): tell the admins."""
        return _RANK[self.after] > _RANK[self.before]

    @property
    def recovered(self) -> bool:
        """Was low or empty, has enough again."""
        return self.before in ("low", "empty") and self.after == "ok"


class BalanceWatch:
    """Each relay's last balance level, so a scheduled check warns once per drop (not on every
    run) and failover can skip a relay that reported no credit until a later check sees some.

    Keys are whatever identifies a relay to the caller (e.g. ``f"{guild_id}:{name}"``). The
    watch itself is memory; bot.relays.balances keeps its levels in the database, so a restart
    does not warn twice about one drop and every process skips the same empty relays."""

    def __init__(self) -> None:
        self._levels: dict[str, Level] = {}

    @property
    def levels(self) -> dict[str, Level]:
        return dict(self._levels)

    def restore(self, levels: dict[str, Level]) -> None:
        """Take the levels another process (or this one, before a restart) recorded."""
        self._levels = dict(levels)

    def update(self, relay: str, balance: Balance | None, warn_below: float | None = None) -> BalanceChange | None:
        """Record a check; the change worth telling admins about (warn or recovered), else None."""
        before = self._levels.get(relay, "unknown")
        after = level(balance, warn_below)
        self._levels[relay] = after
        change = BalanceChange(relay, before, after, balance)
        return change if change.warn or change.recovered else None

    def out_of_credit(self, relay: str) -> bool:
        """True while the last check said the relay has no credit (skip it in failover)."""
        return self._levels.get(relay) == "empty"

    def forget(self, relay: str) -> None:
        self._levels.pop(relay, None)
