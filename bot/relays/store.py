"""A server's relays in failover order, their keys encrypted at rest.

Keys are encrypted with the :class:`~bot.secrets.Keyring` and never leave this module except
inside the :class:`~bot.relay.types.RelayConfig` of a :class:`RelayEntry` for the relay client;
admins see a :class:`RelayInfo` with the key's hint. Every key read or stored is registered
with bot.relay.redact, so no log line or message shows it. The health columns (fail count,
rest period, last error) are written by :class:`~bot.relays.health.StoredHealth`.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..guild_config import ConfigError
from ..relay import redact as _redact
from ..relay.probe_result import ProbeResult
from ..relay.types import AUTH_STYLES, DIALECTS, RelayConfig, default_auth
from ..secrets import Keyring, mask
from ..store import Connection, transaction
from ..urlguard import Resolver, check_url
from .health import StoredHealth

MAX_RELAYS_PER_GUILD = 10
MAX_RELAY_NAME = 32


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


class RelayStore:
    def __init__(
        self,
        db: Connection,
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
        self.health = StoredHealth(db, clock)
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

    async def add_probed(
        self, guild_id: int, name: str, result: ProbeResult, api_key: str, *, aliases: Mapping[str, str] | None = None
    ) -> RelayInfo:
        """Store what a probe found (``aliases`` the admin typed win over the probed names); a
        result that found no format is refused (``probe.outcome.not_found``), nothing stored."""
        if not result.found or result.dialect is None or result.auth is None:
            raise ConfigError("the probe found no format to store", key="probe.outcome.not_found")
        return await self.add(
            guild_id,
            name=name,
            base_url=result.base_url,
            api_key=api_key,
            dialect=result.dialect,
            auth=result.auth,
            model_aliases={**result.models.wire_names(), **(aliases or {})},
        )

    async def add(
        self,
        guild_id: int,
        *,
        name: str,
        base_url: str,
        api_key: str,
        dialect: str = "gemini",
        auth: str | None = None,
        model_aliases: Mapping[str, str] | None = None,
    ) -> RelayInfo:
        name, base_url, api_key = name.strip(), self._clean_url(base_url), api_key.strip()
        auth = auth or default_auth(dialect)
        if not api_key:
            raise ConfigError("empty key", key="admin.relay.empty_key")
        await self._check(name, base_url, dialect, auth)
        ciphertext = self.keyring.encrypt(api_key)
        async with transaction(self.db) as db:
            async with db.execute(
                "SELECT COUNT(*), COALESCE(MAX(position), -1), SUM(CASE WHEN name = ? THEN 1 ELSE 0 END) FROM relays WHERE guild_id = ?",
                (name, guild_id),
            ) as cur:
                row = await cur.fetchone()
            assert row is not None  # an aggregate always returns one row
            count, last, taken = row
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
        assert relay_id is not None  # set by the INSERT
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
                if removed and current is not None:  # SQLite may hand the id to the next relay added
                    await db.execute("DELETE FROM relay_balances WHERE guild_id = ? AND relay_id = ?", (guild_id, current.id))
        finally:
            self._changes += 1
            self._has.pop(guild_id, None)  # asked again next time (it may have been the last)
        return removed

    async def reorder(self, guild_id: int, names: builtins.list[str]) -> builtins.list[RelayInfo]:
        """Put ``names`` first, in that order; relays not named keep their order after them."""
        existing = {r.name for r in await self.list(guild_id)}
        unknown = [n for n in names if n not in existing]
        if unknown:
            raise ConfigError("no such relay", key="admin.relay.not_found", name=", ".join(unknown))
        async with transaction(self.db) as db:
            await self._renumber(db, guild_id, names)
        return await self.list(guild_id)

    async def _renumber(self, db: Connection, guild_id: int, first: builtins.list[str]) -> None:
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

    async def entries(self, guild_id: int) -> builtins.list[RelayEntry]:
        """The guild's relays in failover order with decrypted configs (``trusted=False``)."""
        async with self.db.execute(
            f"SELECT {_RELAY_COLUMNS}, key_ciphertext FROM relays WHERE guild_id = ? ORDER BY position, id", (guild_id,)
        ) as cur:
            rows = await cur.fetchall()
        out: builtins.list[RelayEntry] = []
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
