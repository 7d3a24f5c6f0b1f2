"""What a picture costs: credits per model x size, a server's overrides, the operator's limits.

- Credits (what a member's quota is charged) come from :data:`DEFAULT_COSTS`, overridden per
  server by ``GuildSettings.costs``; a model x size missing from both costs its size factor.
- Prices (estimated USD, for the usage report only) come from :data:`DEFAULT_PRICES`,
  overridden per server by ``GuildSettings.prices``.
- While a server uses the operator's shared relay, the operator's limits (NB_SHARED_*)
  tighten the server's quota rules (:func:`shared_relay_rules`).

The job queue is given the credits and the rules; it never works them out itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .quota import QuotaRules
from .relay.catalogue import MODELS, normalize_size

# Credits per image by model x size. Roughly proportional to what the image costs upstream
# (see DEFAULT_PRICES), rounded so that a plain 1K Flash picture is 1 credit.
DEFAULT_COSTS: dict[tuple[str, str | None], int] = {
    ("gemini-2.5-flash-image", None): 1,
    ("gemini-3.1-flash-image-preview", "512"): 1,
    ("gemini-3.1-flash-image-preview", "1K"): 1,
    ("gemini-3.1-flash-image-preview", "2K"): 2,
    ("gemini-3.1-flash-image-preview", "4K"): 4,
    ("gemini-3-pro-image-preview", "1K"): 3,
    ("gemini-3-pro-image-preview", "2K"): 4,
    ("gemini-3-pro-image-preview", "4K"): 6,
}
# Estimated USD per image: Google's list prices for the Gemini API (late 2025/2026). Relays
# charge their own prices, so each server can override these for its usage report.
DEFAULT_PRICES: dict[tuple[str, str | None], float] = {
    ("gemini-2.5-flash-image", None): 0.039,
    ("gemini-3.1-flash-image-preview", "512"): 0.045,
    ("gemini-3.1-flash-image-preview", "1K"): 0.067,
    ("gemini-3.1-flash-image-preview", "2K"): 0.101,
    ("gemini-3.1-flash-image-preview", "4K"): 0.151,
    ("gemini-3-pro-image-preview", "1K"): 0.134,
    ("gemini-3-pro-image-preview", "2K"): 0.134,
    ("gemini-3-pro-image-preview", "4K"): 0.24,
}
SIZE_FACTOR = {"512": 1, "1K": 1, "2K": 2, "4K": 4}


def table_key(model: str, size: str | None) -> str:
    """The key of a model x size in a server's ``costs``/``prices`` overrides (JSON object keys)."""
    return f"{model}|{size or '-'}"


def canonical_size(model: str, size: str | None) -> str | None:
    """The size a request for ``model`` really gets: its default when none is given."""
    spec = MODELS.get(model)
    if spec is None:
        return normalize_size(size) if size else None
    if not spec.sizes:
        return None
    if size:
        return normalize_size(size) or spec.default_size
    return spec.default_size


def credits(overrides: Mapping[str, int], model: str, size: str | None) -> int:
    """Credits one picture of ``model`` at ``size`` costs, given a server's overrides."""
    size = canonical_size(model, size)
    key = table_key(model, size)
    if key in overrides:
        return int(overrides[key])
    if (model, size) in DEFAULT_COSTS:
        return DEFAULT_COSTS[(model, size)]
    return SIZE_FACTOR.get(size or "1K", 1)


def price(overrides: Mapping[str, float], model: str, size: str | None) -> float:
    """Estimated USD one picture costs upstream, given a server's overrides."""
    size = canonical_size(model, size)
    key = table_key(model, size)
    if key in overrides:
        return float(overrides[key])
    return DEFAULT_PRICES.get((model, size), 0.0)


def cost_table(overrides: Mapping[str, int]) -> dict[tuple[str, str | None], int]:
    """Every catalogue model x size and its credits, for the admin view."""
    return {(spec.id, size): credits(overrides, spec.id, size) for spec in MODELS.values() for size in spec.sizes or (None,)}


def _tighter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def shared_relay_rules(rules: QuotaRules, *, user_daily: int | None, guild_daily: int | None, guild_monthly: int | None) -> QuotaRules:
    """A server's quota rules while it uses the operator's shared relay: each limit is the
    tighter of the server's and the operator's (``None`` = no limit)."""
    if (user_daily, guild_daily, guild_monthly) == (None, None, None):
        return rules
    return dataclasses.replace(
        rules,
        user_daily=_tighter(rules.user_daily, user_daily),
        guild_daily=_tighter(rules.guild_daily, guild_daily),
        guild_monthly=_tighter(rules.guild_monthly, guild_monthly),
        # The operator's per-member cap is the operator's: a server role cannot lift it.
        exempt_roles=frozenset() if user_daily is not None else rules.exempt_roles,
    )
