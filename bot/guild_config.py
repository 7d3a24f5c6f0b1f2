"""Per-server settings: typed (JSON in ``guild_settings.data``), validated, cached.

- :class:`GuildSettings` — defaults (model, ratio, size), allowed models, channels and roles,
  threads, quota rules and credit costs, estimated prices, concurrency caps, locale.
  Unknown or malformed fields in stored JSON fall back to defaults, so an old row never
  breaks start-up; setters validate and raise :class:`ConfigError` with a translation key.
- :class:`GuildConfigStore` — load (cached) and save settings.

What a picture costs is bot.pricing; who may do what is bot.rules; a server's relays are
bot.relays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import pricing, rules
from .config_error import ConfigError as ConfigError  # where every caller has imported it from
from .quota import QuotaRules
from .relay.catalogue import DEFAULT_MODEL, MODELS, ModelSpec, checked_ratio, checked_size, normalize_ratio, normalize_size, resolve_model
from .relay.types import InvalidRequest
from .safety.policy import SafetyPolicy
from .store import Connection, transaction

log = logging.getLogger(__name__)


def _known_model(name: str) -> ModelSpec:
    """The catalogue's model by any of its names, or the admin's ConfigError."""
    try:
        return resolve_model(name)
    except InvalidRequest:
        raise ConfigError(f"unknown model {name}", key="admin.config.unknown_model", model=name) from None


def _checked(check: Callable[[ModelSpec, str], str | None], spec: ModelSpec, value: str, key: str, allowed: Iterable[str]) -> str | None:
    """``value`` as the model spells it (``check`` is catalogue.checked_ratio/_size), or the
    admin's ConfigError naming what the model does take."""
    try:
        return check(spec, value)
    except InvalidRequest:
        raise ConfigError(
            f"{spec.id} does not take {value}",
            key=key,
            model=spec.id,
            value=value,
            allowed=", ".join(allowed) or "-",
        ) from None


@dataclass(frozen=True)
class GuildSettings:
    locale: str = "en"
    default_model: str = DEFAULT_MODEL
    default_ratio: str | None = None
    default_size: str | None = None
    allowed_models: tuple[str, ...] = ()  # empty: every catalogue model
    allowed_channels: frozenset[int] = frozenset()  # empty: everywhere
    allowed_roles: frozenset[int] = frozenset()  # empty: everyone
    threads: bool = True
    # Members may use their own install of the app here (False: only the server's install).
    user_installs: bool = True
    # Live previews (the model's drafts while it draws) unless a member's option says otherwise.
    previews: bool = False
    thread_mode: str = "requester"  # who may continue a result's thread: requester | anyone
    # Lower the operator's concurrency caps for this server (None: the operator's value).
    max_jobs: int | None = None
    max_jobs_per_user: int | None = None
    quota: QuotaRules = field(default_factory=QuotaRules)
    costs: Mapping[str, int] = field(default_factory=dict)  # "model|size" -> credits (overrides)
    prices: Mapping[str, float] = field(default_factory=dict)  # "model|size" -> USD (overrides)
    log_channel: int | None = None  # the moderation log (/admin log); None: no log
    balance_warn_below: float | None = None  # warn in the log below this relay balance (None: only when empty)
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)  # blocklist, NSFW-only models, spoilers, Gemini thresholds

    # --- questions the bot asks ----------------------------------------------------------

    def cost(self, model: str, size: str | None) -> int:
        """Credits one image of ``model`` at ``size`` costs in this server (bot.pricing)."""
        return pricing.credits(self.costs, model, size)

    def price(self, model: str, size: str | None) -> float:
        """Estimated USD one image costs upstream (bot.pricing)."""
        return pricing.price(self.prices, model, size)

    def cost_table(self) -> dict[tuple[str, str | None], int]:
        """Every model x size and its credits, for the admin view."""
        return pricing.cost_table(self.costs)

    # --- validated changes (each returns a new object) ------------------------------------

    def with_defaults(self, *, model: str | None = None, ratio: str | None = None, size: str | None = None) -> GuildSettings:
        try:
            spec = resolve_model(model or self.default_model)
        except InvalidRequest as exc:
            raise ConfigError(str(exc), key="admin.config.unknown_model", model=model or "") from None
        canonical_ratio = self.default_ratio if ratio is None else None
        if ratio:
            canonical_ratio = _checked(checked_ratio, spec, ratio, "admin.config.bad_ratio", spec.aspect_ratios)
        if canonical_ratio and canonical_ratio not in spec.aspect_ratios:
            canonical_ratio = None  # the old default does not fit the new model
        canonical = self.default_size if size is None else None
        if size:
            canonical = _checked(checked_size, spec, size, "admin.config.bad_size", spec.sizes)
        if canonical and canonical not in spec.sizes:
            canonical = None
        if self.allowed_models and spec.id not in self.allowed_models:
            raise ConfigError(f"{spec.id} is not an allowed model", key="admin.config.default_not_allowed", model=spec.id)
        return dataclasses.replace(self, default_model=spec.id, default_ratio=canonical_ratio, default_size=canonical)

    def with_allowed_models(self, models: Iterable[str]) -> GuildSettings:
        ids: list[str] = []
        for name in models:
            spec = _known_model(name)
            if spec.id not in ids:
                ids.append(spec.id)
        if ids and self.default_model not in ids:
            # The default must stay usable: move it to the first allowed model.
            return dataclasses.replace(self, allowed_models=tuple(ids), default_model=ids[0], default_ratio=None, default_size=None)
        return dataclasses.replace(self, allowed_models=tuple(ids))

    def with_cost(self, model: str, size: str | None, credits: int | None) -> GuildSettings:
        """Set (or with ``None`` reset to the default) the credits for model x size."""
        spec = _known_model(model)
        canonical = pricing.canonical_size(spec.id, size)
        if size and spec.sizes and normalize_size(size) not in spec.sizes:
            raise ConfigError(
                f"{spec.id} has no size {size}", key="admin.config.bad_size", model=spec.id, value=size, allowed=", ".join(spec.sizes)
            )
        if credits is not None and not 0 <= credits <= 1000:
            raise ConfigError("cost out of range", key="admin.config.bad_cost", value=credits)
        costs = dict(self.costs)
        if credits is None:
            costs.pop(pricing.table_key(spec.id, canonical), None)
        else:
            costs[pricing.table_key(spec.id, canonical)] = credits
        return dataclasses.replace(self, costs=costs)

    def with_price(self, model: str, size: str | None, usd: float | None) -> GuildSettings:
        spec = _known_model(model)
        canonical = pricing.canonical_size(spec.id, size)
        prices = dict(self.prices)
        if usd is None:
            prices.pop(pricing.table_key(spec.id, canonical), None)
        elif not 0 <= usd <= 100:
            raise ConfigError("price out of range", key="admin.config.bad_price", value=usd)
        else:
            prices[pricing.table_key(spec.id, canonical)] = float(usd)
        return dataclasses.replace(self, prices=prices)

    def with_quota(self, **changes: Any) -> GuildSettings:
        """Change quota limits: user_daily, guild_daily, guild_monthly (None = unlimited),
        role_extra (mapping), exempt_roles (iterable)."""
        for name in ("user_daily", "guild_daily", "guild_monthly"):
            value = changes.get(name)
            if value is not None and not 0 <= int(value) <= 1_000_000:
                raise ConfigError("limit out of range", key="admin.config.bad_limit", value=value)
        if "role_extra" in changes:
            extra = {int(k): int(v) for k, v in dict(changes["role_extra"]).items()}
            if any(not 0 <= v <= 1_000_000 for v in extra.values()):
                raise ConfigError("bonus out of range", key="admin.config.bad_limit", value=max(extra.values()))
            changes["role_extra"] = {k: v for k, v in extra.items() if v > 0}
        if "exempt_roles" in changes:
            changes["exempt_roles"] = frozenset(int(r) for r in changes["exempt_roles"])
        return dataclasses.replace(self, quota=dataclasses.replace(self.quota, **changes))

    def with_access(
        self,
        *,
        channels: Iterable[int] | None = None,
        roles: Iterable[int] | None = None,
        thread_mode: str | None = None,
        threads: bool | None = None,
        user_installs: bool | None = None,
    ) -> GuildSettings:
        if thread_mode is not None and thread_mode not in rules.THREAD_MODES:
            raise ConfigError("bad thread mode", key="admin.config.bad_thread_mode", value=thread_mode)
        return dataclasses.replace(
            self,
            allowed_channels=self.allowed_channels if channels is None else frozenset(int(c) for c in channels),
            allowed_roles=self.allowed_roles if roles is None else frozenset(int(r) for r in roles),
            thread_mode=self.thread_mode if thread_mode is None else thread_mode,
            threads=self.threads if threads is None else threads,
            user_installs=self.user_installs if user_installs is None else user_installs,
        )

    def with_previews(self, on: bool) -> GuildSettings:
        return dataclasses.replace(self, previews=on)

    def with_limits(self, *, max_jobs: int | None, max_jobs_per_user: int | None) -> GuildSettings:
        for value in (max_jobs, max_jobs_per_user):
            if value is not None and value < 1:
                raise ConfigError("a concurrency cap must be at least 1", key="admin.config.bad_limit", value=value)
        return dataclasses.replace(self, max_jobs=max_jobs, max_jobs_per_user=max_jobs_per_user)

    def with_safety(self, safety: SafetyPolicy) -> GuildSettings:
        return dataclasses.replace(self, safety=safety)

    def with_log_channel(self, channel_id: int | None) -> GuildSettings:
        return dataclasses.replace(self, log_channel=channel_id)

    def with_balance_warning(self, below: float | None) -> GuildSettings:
        if below is not None and not 0 <= below <= 1_000_000:
            raise ConfigError("threshold out of range", key="admin.config.bad_limit", value=below)
        return dataclasses.replace(self, balance_warn_below=below)

    def with_nsfw_model(self, model: str, nsfw_only: bool) -> GuildSettings:
        """Keep ``model`` (any of its names) to NSFW channels, or stop keeping it there."""
        return self.with_safety(self.safety.with_nsfw_model(_known_model(model).id, nsfw_only))

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "locale": self.locale,
                "default_model": self.default_model,
                "default_ratio": self.default_ratio,
                "default_size": self.default_size,
                "allowed_models": list(self.allowed_models),
                "allowed_channels": sorted(self.allowed_channels),
                "allowed_roles": sorted(self.allowed_roles),
                "threads": self.threads,
                "user_installs": self.user_installs,
                "previews": self.previews,
                "thread_mode": self.thread_mode,
                "max_jobs": self.max_jobs,
                "max_jobs_per_user": self.max_jobs_per_user,
                "quota": self.quota.to_dict(),
                "costs": dict(self.costs),
                "prices": dict(self.prices),
                "safety": self.safety.to_json(),
                "log_channel": self.log_channel,
                "balance_warn_below": self.balance_warn_below,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> GuildSettings:
        try:
            data = json.loads(text or "{}")
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("unreadable guild settings, using defaults")
            return cls()
        base = cls()
        values: dict[str, Any] = {}

        def take(name: str, convert: Callable[[Any], Any]) -> None:
            if name in data:
                try:
                    values[name] = convert(data[name])
                except (TypeError, ValueError, KeyError, AttributeError, InvalidRequest, ConfigError):
                    log.warning("ignoring malformed guild setting %s", name)

        def optional_int(v: Any) -> int | None:
            return None if v is None else int(v)

        take("locale", str)
        take("default_model", lambda v: resolve_model(str(v)).id if str(v) else base.default_model)
        take("default_ratio", lambda v: normalize_ratio(v) if v else None)
        take("default_size", lambda v: normalize_size(v) if v else None)
        take("allowed_models", lambda v: tuple(m for m in (str(x) for x in v) if m in MODELS))
        take("allowed_channels", lambda v: frozenset(int(x) for x in v))
        take("allowed_roles", lambda v: frozenset(int(x) for x in v))
        take("threads", bool)
        take("user_installs", bool)
        take("previews", bool)
        take("thread_mode", lambda v: v if v in rules.THREAD_MODES else base.thread_mode)
        take("max_jobs", optional_int)
        take("max_jobs_per_user", optional_int)
        take("quota", QuotaRules.from_dict)
        take("costs", lambda v: {str(k): int(c) for k, c in dict(v).items()})
        take("prices", lambda v: {str(k): float(c) for k, c in dict(v).items()})
        take("log_channel", optional_int)
        take("balance_warn_below", lambda v: None if v is None else float(v))
        take("safety", lambda v: SafetyPolicy.from_json(dict(v)))
        try:
            return dataclasses.replace(base, **values)
        except (TypeError, ValueError):
            return base


class GuildConfigStore:
    """Loads and saves :class:`GuildSettings`, cached in memory.

    A server's settings change only through its admins' commands, which Discord delivers to
    the one gateway process holding the server's shard, so that process's cache is current.
    Other processes on the same database (workers, other gateways, the CLI) read the settings
    too — safety, spoilers, caps — so with ``max_age`` set (services do on PostgreSQL, where
    several processes are possible) a cached entry is read again once it is that many seconds
    old: a change reaches every process within ``max_age``."""

    def __init__(self, db: Connection, *, max_age: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.max_age = max_age
        self.clock = clock
        self._cache: dict[int, tuple[float, GuildSettings]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return GuildSettings()  # direct messages: operator defaults
        cached = self._cache.get(guild_id)
        if cached is not None and (self.max_age is None or self.clock() - cached[0] < self.max_age):
            return cached[1]
        async with self.db.execute("SELECT data FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        settings = GuildSettings.from_json(row[0] if row else None)
        self._cache[guild_id] = (self.clock(), settings)
        return settings

    async def save(self, guild_id: int, settings: GuildSettings) -> None:
        async with transaction(self.db) as db:
            await db.execute(
                "INSERT INTO guild_settings (guild_id, data, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (guild_id, settings.to_json(), time.time()),
            )
        self._cache[guild_id] = (self.clock(), settings)

    async def update(self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]) -> GuildSettings:
        """Apply ``change`` to the current settings and save; ConfigError leaves them as they were.
        Two admins changing different settings at once both keep their change."""
        async with self._locks.setdefault(guild_id, asyncio.Lock()):
            new = change(await self.get(guild_id))
            await self.save(guild_id, new)
        return new
