"""Per-server configuration: typed settings (JSON in ``guild_settings.data``) and relays.

- :class:`GuildSettings` — defaults (model, ratio, size), allowed models, channels and roles,
  threads, quota rules and credit costs, estimated prices, concurrency caps, locale.
  Unknown or malformed fields in stored JSON fall back to defaults, so an old row never
  breaks start-up; setters validate and raise :class:`ConfigError` with a translation key.
- :class:`GuildConfigStore` — load (cached) and save settings.
- :class:`RelayStore` — a server's relays in failover order, keys encrypted with the
  :class:`~bot.secrets.Keyring`, and their health (consecutive failures -> rest period).
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

import aiosqlite

from . import pricing, rules
from .quota import QuotaRules, transaction
from .relay import redact as _redact
from .relay.catalogue import DEFAULT_MODEL, MODELS, checked_ratio, checked_size, normalize_ratio, normalize_size, resolve_model
from .relay.types import InvalidRequest, RelayConfig
from .secrets import Keyring, mask
from .urlguard import Resolver, check_url

log = logging.getLogger(__name__)

DIALECTS = ("gemini", "openai-images", "openai-chat")
AUTH_STYLES = ("query", "bearer", "x-goog-api-key")
MAX_RELAYS_PER_GUILD = 10
MAX_RELAY_NAME = 32


class ConfigError(Exception):
    """A setting an admin tried that is not allowed. ``key``/``params`` for translation."""

    def __init__(self, message: str, *, key: str, **params: Any) -> None:
        super().__init__(message)
        self.key = key
        self.params = params


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
    thread_mode: str = "requester"  # who may continue a result's thread: requester | anyone
    # Lower the operator's concurrency caps for this server (None: the operator's value).
    max_jobs: int | None = None
    max_jobs_per_user: int | None = None
    quota: QuotaRules = field(default_factory=QuotaRules)
    costs: Mapping[str, int] = field(default_factory=dict)  # "model|size" -> credits (overrides)
    prices: Mapping[str, float] = field(default_factory=dict)  # "model|size" -> USD (overrides)

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

    def may_continue_thread(self, user_id: int, owner_id: int) -> bool:
        return rules.may_continue_thread(self.thread_mode, user_id, owner_id)

    # --- validated changes (each returns a new object) ------------------------------------

    def with_defaults(self, *, model: str | None = None, ratio: str | None = None, size: str | None = None) -> GuildSettings:
        try:
            spec = resolve_model(model or self.default_model)
        except InvalidRequest as exc:
            raise ConfigError(str(exc), key="admin.config.unknown_model", model=model or "") from None
        canonical_ratio = self.default_ratio if ratio is None else None
        if ratio:
            try:
                canonical_ratio = checked_ratio(spec, ratio)
            except InvalidRequest:
                raise ConfigError(
                    f"{spec.id} does not take ratio {ratio}",
                    key="admin.config.bad_ratio",
                    model=spec.id,
                    value=ratio,
                    allowed=", ".join(spec.aspect_ratios),
                ) from None
        if canonical_ratio and canonical_ratio not in spec.aspect_ratios:
            canonical_ratio = None  # the old default does not fit the new model
        canonical = self.default_size if size is None else None
        if size:
            try:
                canonical = checked_size(spec, size)
            except InvalidRequest:
                raise ConfigError(
                    f"{spec.id} does not take size {size}",
                    key="admin.config.bad_size",
                    model=spec.id,
                    value=size,
                    allowed=", ".join(spec.sizes) or "-",
                ) from None
        if canonical and canonical not in spec.sizes:
            canonical = None
        if self.allowed_models and spec.id not in self.allowed_models:
            raise ConfigError(f"{spec.id} is not an allowed model", key="admin.config.default_not_allowed", model=spec.id)
        return dataclasses.replace(self, default_model=spec.id, default_ratio=canonical_ratio, default_size=canonical)

    def with_allowed_models(self, models: Iterable[str]) -> GuildSettings:
        ids: list[str] = []
        for name in models:
            try:
                spec = resolve_model(name)
            except InvalidRequest:
                raise ConfigError(f"unknown model {name}", key="admin.config.unknown_model", model=name) from None
            if spec.id not in ids:
                ids.append(spec.id)
        if ids and self.default_model not in ids:
            # The default must stay usable: move it to the first allowed model.
            return dataclasses.replace(self, allowed_models=tuple(ids), default_model=ids[0], default_ratio=None, default_size=None)
        return dataclasses.replace(self, allowed_models=tuple(ids))

    def with_cost(self, model: str, size: str | None, credits: int | None) -> GuildSettings:
        """Set (or with ``None`` reset to the default) the credits for model x size."""
        try:
            spec = resolve_model(model)
        except InvalidRequest:
            raise ConfigError(f"unknown model {model}", key="admin.config.unknown_model", model=model) from None
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
        try:
            spec = resolve_model(model)
        except InvalidRequest:
            raise ConfigError(f"unknown model {model}", key="admin.config.unknown_model", model=model) from None
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
    ) -> GuildSettings:
        if thread_mode is not None and thread_mode not in rules.THREAD_MODES:
            raise ConfigError("bad thread mode", key="admin.config.bad_thread_mode", value=thread_mode)
        return dataclasses.replace(
            self,
            allowed_channels=self.allowed_channels if channels is None else frozenset(int(c) for c in channels),
            allowed_roles=self.allowed_roles if roles is None else frozenset(int(r) for r in roles),
            thread_mode=self.thread_mode if thread_mode is None else thread_mode,
            threads=self.threads if threads is None else threads,
        )

    def with_limits(self, *, max_jobs: int | None, max_jobs_per_user: int | None) -> GuildSettings:
        for value in (max_jobs, max_jobs_per_user):
            if value is not None and value < 1:
                raise ConfigError("a concurrency cap must be at least 1", key="admin.config.bad_limit", value=value)
        return dataclasses.replace(self, max_jobs=max_jobs, max_jobs_per_user=max_jobs_per_user)

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
                "thread_mode": self.thread_mode,
                "max_jobs": self.max_jobs,
                "max_jobs_per_user": self.max_jobs_per_user,
                "quota": self.quota.to_dict(),
                "costs": dict(self.costs),
                "prices": dict(self.prices),
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
                except (TypeError, ValueError, KeyError, AttributeError, InvalidRequest):
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
        take("thread_mode", lambda v: v if v in rules.THREAD_MODES else base.thread_mode)
        take("max_jobs", optional_int)
        take("max_jobs_per_user", optional_int)
        take("quota", QuotaRules.from_dict)
        take("costs", lambda v: {str(k): int(c) for k, c in dict(v).items()})
        take("prices", lambda v: {str(k): float(c) for k, c in dict(v).items()})
        try:
            return dataclasses.replace(base, **values)
        except (TypeError, ValueError):
            return base


class GuildConfigStore:
    """Loads and saves :class:`GuildSettings`, cached in memory (one process owns a guild)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._cache: dict[int, GuildSettings] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return GuildSettings()  # direct messages: operator defaults
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        async with self.db.execute("SELECT data FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        settings = GuildSettings.from_json(row[0] if row else None)
        self._cache[guild_id] = settings
        return settings

    async def save(self, guild_id: int, settings: GuildSettings) -> None:
        async with transaction(self.db) as db:
            await db.execute(
                "INSERT INTO guild_settings (guild_id, data, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (guild_id, settings.to_json(), time.time()),
            )
        self._cache[guild_id] = settings

    async def update(self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]) -> GuildSettings:
        """Apply ``change`` to the current settings and save; ConfigError leaves them as they were.
        Two admins changing different settings at once both keep their change."""
        async with self._locks.setdefault(guild_id, asyncio.Lock()):
            new = change(await self.get(guild_id))
            await self.save(guild_id, new)
        return new


# --- relays ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayInfo:
    """A relay as admins see it: never the key, only its hint."""

    id: int
    guild_id: int
    name: str
    position: int
    base_url: str
    dialect: str
    auth: str
    key_hint: str
    model_aliases: Mapping[str, str]
    fail_count: int
    skip_until: float
    last_error: str
    last_failure_at: float | None
    last_success_at: float | None

    def resting(self, now: float) -> bool:
        return self.skip_until > now


@dataclass(frozen=True)
class RelayEntry:
    """A relay ready to use: its admin view plus the decrypted config for the relay client."""

    info: RelayInfo
    config: RelayConfig = field(repr=False)


_RELAY_COLUMNS = (
    "id, guild_id, name, position, base_url, dialect, auth, key_hint, model_aliases,"
    " fail_count, skip_until, last_error, last_failure_at, last_success_at"
)


def _info(row: Any) -> RelayInfo:
    values = list(tuple(row))
    try:
        aliases = {str(k): str(v) for k, v in json.loads(values[8] or "{}").items()}
    except (ValueError, AttributeError):
        aliases = {}
    values[8] = aliases
    return RelayInfo(*values)


def _stored(key: str) -> str:
    """A stored relay key, registered for log redaction as it is read (idempotent)."""
    _redact.register_secret(key)
    return key


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by its hint (relays echo keys)."""
    if not secret:
        return text
    return text.replace(secret, mask(secret))


# Rest period after the n-th consecutive failure: 60 s, 2 min, 4 min... capped at 15 min. One
# failure is enough to rest a relay: what reaches the pool has already survived the relay
# client's own retries.
REST_BASE_S = 60.0
REST_MAX_S = 900.0


def rest_period(fail_count: int) -> float:
    return min(REST_MAX_S, REST_BASE_S * 2 ** max(0, fail_count - 1))


class RelayStore:
    def __init__(
        self,
        db: aiosqlite.Connection,
        keyring: Keyring,
        *,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.allow_private = allow_private
        self.resolver = resolver
        self.clock = clock
        # guild id -> whether it has relays, for has_relays() on every command's ack path.
        # Only add() and remove() change the answer (edit/reorder/health keep the rows), and
        # one process owns a guild's settings (as GuildConfigStore's cache assumes).
        self._has: dict[int, bool] = {}
        self._changes = 0  # bumped by add/remove: a lookup in flight meanwhile is not cached

    def __repr__(self) -> str:
        return f"RelayStore(allow_private={self.allow_private})"

    # --- validation ---

    async def _check(self, name: str | None, base_url: str | None, dialect: str | None, auth: str | None) -> None:
        if name is not None and not (0 < len(name.strip()) <= MAX_RELAY_NAME):
            raise ConfigError("bad relay name", key="admin.relay.bad_name", limit=MAX_RELAY_NAME)
        if dialect is not None and dialect not in DIALECTS:
            raise ConfigError("bad dialect", key="admin.relay.bad_dialect", value=dialect, allowed=", ".join(DIALECTS))
        if auth is not None and auth not in AUTH_STYLES:
            raise ConfigError("bad auth style", key="admin.relay.bad_auth", value=auth, allowed=", ".join(AUTH_STYLES))
        if base_url is not None:
            # UnsafeURL carries its own key (admin.urlguard.*) for the admin's message.
            await check_url(base_url, allow_private=self.allow_private, resolver=self.resolver)

    @staticmethod
    def _clean_url(url: str) -> str:
        return url.strip().rstrip("/")

    # --- admin operations ---

    async def add(
        self,
        guild_id: int,
        *,
        name: str,
        base_url: str,
        api_key: str,
        dialect: str = "gemini",
        auth: str = "query",
        model_aliases: Mapping[str, str] | None = None,
    ) -> RelayInfo:
        name, base_url, api_key = name.strip(), self._clean_url(base_url), api_key.strip()
        if not api_key:
            raise ConfigError("empty key", key="admin.relay.empty_key")
        await self._check(name, base_url, dialect, auth)
        ciphertext = self.keyring.encrypt(api_key)
        async with transaction(self.db) as db:
            async with db.execute(
                "SELECT COUNT(*), COALESCE(MAX(position), -1), SUM(name = ?) FROM relays WHERE guild_id = ?", (name, guild_id)
            ) as cur:
                count, last, taken = await cur.fetchone()
            if taken:
                raise ConfigError("name taken", key="admin.relay.name_taken", name=name)
            if count >= MAX_RELAYS_PER_GUILD:
                raise ConfigError("too many relays", key="admin.relay.too_many", limit=MAX_RELAYS_PER_GUILD)
            cur = await db.execute(
                "INSERT INTO relays (guild_id, name, position, base_url, dialect, auth, key_ciphertext, key_hint, model_aliases, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    guild_id,
                    name,
                    last + 1,
                    base_url,
                    dialect,
                    auth,
                    ciphertext,
                    mask(api_key),
                    json.dumps(dict(model_aliases or {})),
                    self.clock(),
                ),
            )
            relay_id = cur.lastrowid
        self._changes += 1
        self._has[guild_id] = True
        _redact.register_secret(api_key)  # stored: from now on log lines mask it
        info = await self._get_by_id(relay_id)
        assert info is not None
        return info

    async def edit(
        self,
        guild_id: int,
        name: str,
        *,
        new_name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        dialect: str | None = None,
        auth: str | None = None,
        model_aliases: Mapping[str, str] | None = None,
    ) -> RelayInfo:
        """Change a relay; ``None`` (or an empty key) keeps a field as it is. Health is reset,
        since the admin has presumably fixed what was wrong."""
        current = await self.get(guild_id, name)
        if current is None:
            raise ConfigError("no such relay", key="admin.relay.not_found", name=name)
        if new_name is not None:
            new_name = new_name.strip()
        if base_url is not None:
            base_url = self._clean_url(base_url)
        await self._check(new_name, base_url, dialect, auth)
        fields: dict[str, Any] = {"fail_count": 0, "skip_until": 0, "last_error": ""}
        if new_name and new_name != current.name:
            fields["name"] = new_name
        if base_url:
            fields["base_url"] = base_url
        if dialect:
            fields["dialect"] = dialect
        if auth:
            fields["auth"] = auth
        if model_aliases is not None:
            fields["model_aliases"] = json.dumps(dict(model_aliases))
        old_key = ""
        if api_key and api_key.strip():
            old_key = await self._key_of(current.id)
            fields["key_ciphertext"] = self.keyring.encrypt(api_key.strip())
            fields["key_hint"] = mask(api_key.strip())
        async with transaction(self.db) as db:
            if "name" in fields:
                async with db.execute("SELECT 1 FROM relays WHERE guild_id = ? AND name = ?", (guild_id, fields["name"])) as cur:
                    if await cur.fetchone():
                        raise ConfigError("name taken", key="admin.relay.name_taken", name=fields["name"])
            assignments = ", ".join(f"{column} = ?" for column in fields)
            await db.execute(f"UPDATE relays SET {assignments} WHERE id = ?", (*fields.values(), current.id))
        if old_key:  # the replaced key is no longer looked for; the new one is
            _redact.forget_secret(old_key)
            _redact.register_secret(api_key)
        info = await self._get_by_id(current.id)
        assert info is not None
        return info

    async def _key_of(self, relay_id: int) -> str:
        async with self.db.execute("SELECT key_ciphertext FROM relays WHERE id = ?", (relay_id,)) as cur:
            row = await cur.fetchone()
        return self.keyring.decrypt(row[0]) if row is not None else ""

    async def remove(self, guild_id: int, name: str) -> bool:
        current = await self.get(guild_id, name)
        if current is not None:
            _redact.forget_secret(await self._key_of(current.id))
        try:
            async with transaction(self.db) as db:
                cur = await db.execute("DELETE FROM relays WHERE guild_id = ? AND name = ?", (guild_id, name))
                removed = cur.rowcount > 0
                if removed:
                    await self._renumber(db, guild_id, [])
        finally:
            self._changes += 1
            self._has.pop(guild_id, None)  # asked again next time (it may have been the last)
        return removed

    async def reorder(self, guild_id: int, names: list[str]) -> list[RelayInfo]:
        """Put ``names`` first, in that order; relays not named keep their order after them."""
        existing = {r.name for r in await self.list(guild_id)}
        unknown = [n for n in names if n not in existing]
        if unknown:
            raise ConfigError("no such relay", key="admin.relay.not_found", name=", ".join(unknown))
        async with transaction(self.db) as db:
            await self._renumber(db, guild_id, names)
        return await self.list(guild_id)

    async def _renumber(self, db: aiosqlite.Connection, guild_id: int, first: list[str]) -> None:
        async with db.execute("SELECT name FROM relays WHERE guild_id = ? ORDER BY position, id", (guild_id,)) as cur:
            current = [row[0] for row in await cur.fetchall()]
        wanted = list(dict.fromkeys(first)) + [n for n in current if n not in first]
        for position, name in enumerate(wanted):
            await db.execute("UPDATE relays SET position = ? WHERE guild_id = ? AND name = ?", (position, guild_id, name))

    # --- reading ---

    async def list(self, guild_id: int) -> list[RelayInfo]:
        async with self.db.execute(f"SELECT {_RELAY_COLUMNS} FROM relays WHERE guild_id = ? ORDER BY position, id", (guild_id,)) as cur:
            return [_info(row) for row in await cur.fetchall()]

    async def get(self, guild_id: int, name: str) -> RelayInfo | None:
        async with self.db.execute(f"SELECT {_RELAY_COLUMNS} FROM relays WHERE guild_id = ? AND name = ?", (guild_id, name)) as cur:
            row = await cur.fetchone()
        return _info(row) if row else None

    async def _get_by_id(self, relay_id: int) -> RelayInfo | None:
        async with self.db.execute(f"SELECT {_RELAY_COLUMNS} FROM relays WHERE id = ?", (relay_id,)) as cur:
            row = await cur.fetchone()
        return _info(row) if row else None

    async def has_relays(self, guild_id: int | None) -> bool:
        if guild_id is None:
            return False
        cached = self._has.get(guild_id)
        if cached is not None:
            return cached
        changes = self._changes
        rows = await self.db.execute_fetchall("SELECT 1 FROM relays WHERE guild_id = ? LIMIT 1", (guild_id,))
        if changes == self._changes:
            self._has[guild_id] = bool(rows)
        return bool(rows)

    async def entries(self, guild_id: int) -> list[RelayEntry]:
        """The guild's relays in failover order with decrypted configs (``trusted=False``)."""
        async with self.db.execute(
            f"SELECT {_RELAY_COLUMNS}, key_ciphertext FROM relays WHERE guild_id = ? ORDER BY position, id", (guild_id,)
        ) as cur:
            rows = await cur.fetchall()
        out: list[RelayEntry] = []
        for row in rows:
            info = _info(tuple(row)[:-1])
            config = RelayConfig(
                base_url=info.base_url,
                dialect=info.dialect,  # type: ignore[arg-type]
                auth=info.auth,  # type: ignore[arg-type]
                api_key=_stored(self.keyring.decrypt(row["key_ciphertext"])),
                name=info.name,
                model_aliases=dict(info.model_aliases),
                trusted=False,
            )
            out.append(RelayEntry(info, config))
        return out

    # --- health ---

    async def record_failure(self, relay_id: int, error: str, *, api_key: str = "") -> float:
        """Count a failure and rest the relay; returns the time until which it is skipped."""
        now = self.clock()
        async with transaction(self.db) as db:
            async with db.execute("SELECT fail_count FROM relays WHERE id = ?", (relay_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return 0.0
            fails = int(row[0]) + 1
            until = now + rest_period(fails)
            await db.execute(
                "UPDATE relays SET fail_count = ?, skip_until = ?, last_error = ?, last_failure_at = ? WHERE id = ?",
                (fails, until, _redact.cut(redact(error, api_key), 300, [api_key]), now, relay_id),
            )
        return until

    async def record_success(self, relay_id: int) -> None:
        async with transaction(self.db) as db:
            await db.execute(
                "UPDATE relays SET fail_count = 0, skip_until = 0, last_success_at = ? WHERE id = ?",
                (self.clock(), relay_id),
            )
