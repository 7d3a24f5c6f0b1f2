"""Personal settings per member, and what they come to within the server's rules.

A member may keep a default model, aspect ratio, size, variant count, style, a language
override and "results only to me". They are stored per server (``member_preferences``, guild
0 for direct messages) and merged with the server's defaults and limits by the pure
:func:`effective`: what the server allows wins, and a stored value that is no longer valid
(a model the server has since disallowed, a ratio the new model lacks) falls back to the
server's default instead of failing the member's next request. The merge says which of the
member's values it could not honour, so the member can be told.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace
from typing import Protocol

from . import rules
from .i18n import SUPPORTED
from .refusal import Refusal
from .relay.catalogue import MODELS, ModelSpec, normalize_ratio, normalize_size
from .store import Connection, write

MAX_VARIANTS = 4
SIZE_ORDER = ("512", "1K", "2K", "4K")
DM_GUILD = 0  # member_preferences.guild_id for direct messages


class PreferenceError(Refusal):
    """A setting a member tried that cannot be kept."""


@dataclass(frozen=True)
class Preferences:
    """A member's own choices; None/False means "the server's default"."""

    model: str | None = None
    aspect_ratio: str | None = None
    size: str | None = None
    variants: int | None = None
    style: str | None = None
    locale: str | None = None
    private: bool = False

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps({k: v for k, v in data.items() if v not in (None, False)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> Preferences:
        """Leniently: a malformed document or value is dropped, never raised."""
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def word(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) and value else None

        variants = data.get("variants")
        return cls(
            model=word("model"),
            aspect_ratio=word("aspect_ratio"),
            size=word("size"),
            variants=variants if isinstance(variants, int) and not isinstance(variants, bool) else None,
            style=word("style"),
            locale=word("locale"),
            private=data.get("private") is True,
        )

    def with_value(self, name: str, value: str | int | bool | None) -> Preferences:
        """This member's preferences with one value set from a component (None clears it).
        Checked against the catalogue only; the server's rules apply at :func:`effective`."""
        if value is None or value == "":
            return replace(self, private=False) if name == "private" else self._cleared(name)
        if name == "model":
            if str(value) not in MODELS:
                raise PreferenceError(f"unknown model {value!r}", key="prefs.bad_model", value=str(value))
            return replace(self, model=str(value))
        if name == "aspect_ratio":
            return replace(self, aspect_ratio=_checked(normalize_ratio(str(value)), "prefs.bad_ratio", value))
        if name == "size":
            return replace(self, size=_checked(normalize_size(str(value)), "prefs.bad_size", value))
        if name == "variants":
            count = int(value) if str(value).isdigit() else 0
            if not 1 <= count <= MAX_VARIANTS:
                raise PreferenceError(f"bad variant count {value!r}", key="prefs.bad_variants", value=str(value), maximum=MAX_VARIANTS)
            return replace(self, variants=count)
        if name == "locale":
            return replace(self, locale=_checked(str(value) if str(value) in SUPPORTED else None, "prefs.bad_locale", value))
        if name == "style":
            return replace(self, style=str(value))
        if name == "private":
            return replace(self, private=bool(value))
        raise PreferenceError(f"no preference {name!r}", key="prefs.unknown", name=name)

    def _cleared(self, name: str) -> Preferences:
        if name not in _CLEARABLE:
            raise PreferenceError(f"no preference {name!r}", key="prefs.unknown", name=name)
        cleared: dict[str, None] = {name: None}
        return replace(self, **cleared)  # type: ignore[arg-type]  # every name in _CLEARABLE is Optional


_CLEARABLE = ("model", "aspect_ratio", "size", "variants", "style", "locale")


def _checked(canonical: str | None, key: str, value: object) -> str:
    if canonical is None:
        raise PreferenceError(f"invalid value {value!r}", key=key, value=str(value))
    return canonical


@dataclass(frozen=True)
class ServerCreative:
    """What a server allows of the creative features (``guild_creative``)."""

    variants_default: int = 1
    variants_max: int = MAX_VARIANTS
    max_size: str | None = None  # the largest size a member's preference may ask for

    def to_json(self) -> str:
        return json.dumps({"variants_default": self.variants_default, "variants_max": self.variants_max, "max_size": self.max_size})

    @classmethod
    def from_json(cls, text: str | None) -> ServerCreative:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        maximum = _count(data.get("variants_max"), MAX_VARIANTS)
        size = data.get("max_size")
        return cls(
            variants_default=min(_count(data.get("variants_default"), 1), maximum),
            variants_max=maximum,
            max_size=size if size in SIZE_ORDER else None,
        )

    def checked(self) -> ServerCreative:
        """Raise for what an admin may not set (the lenient reader repairs stored rows)."""
        if not 1 <= self.variants_max <= MAX_VARIANTS or not 1 <= self.variants_default <= self.variants_max:
            raise PreferenceError("bad variant limits", key="prefs.bad_server_variants", maximum=MAX_VARIANTS)
        if self.max_size is not None and self.max_size not in SIZE_ORDER:
            raise PreferenceError("bad size limit", key="prefs.bad_size", value=self.max_size)
        return self


def _count(value: object, default: int) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_VARIANTS
    return value if ok else default  # type: ignore[return-value]


class ServerDefaults(Protocol):
    """What :func:`effective` reads of a server's settings (bot.guild_config.GuildSettings)."""

    @property
    def default_model(self) -> str: ...
    @property
    def default_ratio(self) -> str | None: ...
    @property
    def default_size(self) -> str | None: ...
    @property
    def allowed_models(self) -> Collection[str]: ...


@dataclass(frozen=True)
class Effective:
    """What a member's next request uses. ``dropped`` names each preference that could not be
    honoured (``model``, ``aspect_ratio``, ``size``, ``variants``, ``locale``) for a notice."""

    model: str
    aspect_ratio: str | None
    size: str | None
    variants: int
    style: str | None
    locale: str | None
    private: bool
    dropped: tuple[str, ...] = ()


def effective(prefs: Preferences, server: ServerDefaults, creative: ServerCreative) -> Effective:
    """Merge ``prefs`` with the server's defaults and limits; never raises."""
    dropped: list[str] = []
    model = server.default_model
    if prefs.model is not None:
        if prefs.model in MODELS and rules.model_allowed(server.allowed_models, prefs.model):
            model = prefs.model
        else:
            dropped.append("model")
    spec = MODELS.get(model)
    ratio = _pick(prefs.aspect_ratio, server.default_ratio, lambda r: _ratio_ok(spec, r), "aspect_ratio", dropped)
    size = _pick(prefs.size, server.default_size, lambda s: _size_ok(spec, s, creative.max_size), "size", dropped)
    if _size_ok(spec, prefs.size or "", None) and creative.max_size and _size_ok(spec, creative.max_size, None):
        if not _size_ok(spec, prefs.size or "", creative.max_size):
            size = creative.max_size  # asked for more than the server allows: its largest, not its default
    variants = creative.variants_default
    if prefs.variants is not None:
        variants = min(max(prefs.variants, 1), creative.variants_max)
        if variants != prefs.variants:
            dropped.append("variants")
    locale = prefs.locale if prefs.locale in SUPPORTED else None
    if prefs.locale is not None and locale is None:
        dropped.append("locale")
    return Effective(model, ratio, size, variants, prefs.style, locale, prefs.private, tuple(dropped))


def for_request(
    prefs: Preferences,
    server: ServerDefaults,
    creative: ServerCreative,
    *,
    model: str | None = None,
    aspect_ratio: str | None = None,
    size: str | None = None,
    variants: int | None = None,
) -> Effective:
    """What one request uses: an option the member typed wins over their preference (and is
    checked later, like any typed option); ``dropped`` names only preferences that were not
    honoured and not overridden. The server's default size belongs to its default model: a
    member who picks another model, with no size of their own, gets that model's default."""
    typed = {"model": model, "aspect_ratio": aspect_ratio, "size": size, "variants": variants}
    eff = effective(replace(prefs, **{k: v for k, v in typed.items() if v is not None}), server, creative)  # type: ignore[arg-type]
    if size is None and prefs.size is None:
        eff = replace(eff, size=rules.requested_size(None, model, default_model=server.default_model, default_size=eff.size))
    return replace(
        eff,
        model=model or eff.model,
        aspect_ratio=aspect_ratio or eff.aspect_ratio,
        size=size or eff.size,
        variants=variants if variants is not None else eff.variants,
        dropped=tuple(name for name in eff.dropped if typed.get(name) is None),
    )


def _pick(mine: str | None, server: str | None, ok: Callable[[str], bool], name: str, dropped: list[str]) -> str | None:
    if mine is not None:
        if ok(mine):
            return mine
        dropped.append(name)
    return server if server is not None and ok(server) else None


def _ratio_ok(spec: ModelSpec | None, ratio: str) -> bool:
    return spec is not None and normalize_ratio(ratio) in spec.aspect_ratios


def _size_ok(spec: ModelSpec | None, size: str, max_size: str | None) -> bool:
    canonical = normalize_size(size)
    if spec is None or canonical not in spec.sizes:
        return False
    return max_size is None or SIZE_ORDER.index(canonical) <= SIZE_ORDER.index(max_size)


class PreferenceStore:
    """Members' preferences and servers' creative limits, one row each."""

    def __init__(self, db: Connection, *, reader: Connection | None = None) -> None:
        self.db = db
        # The read-only second connection (bot.store.connect_reader), when there is one: the
        # reads an acknowledgement waits on go there instead of queueing behind job writes on
        # the shared connection. In WAL mode it sees every committed write (a member's /settings
        # change included) and never waits for the writer.
        self.reader = reader

    async def get(self, guild_id: int | None, user_id: int) -> Preferences:
        return await self._get(self.reader or self.db, guild_id, user_id)

    async def _get(self, db: Connection, guild_id: int | None, user_id: int) -> Preferences:
        rows = list(
            await db.execute_fetchall(
                "SELECT data FROM member_preferences WHERE guild_id = ? AND user_id = ?", (guild_id or DM_GUILD, user_id)
            )
        )
        return Preferences.from_json(rows[0][0] if rows else None)

    async def for_request(self, guild_id: int | None, user_id: int) -> tuple[Preferences, ServerCreative]:
        """The member's preferences and the server's creative limits in one round trip (what
        /imagine needs before its acknowledgement)."""
        rows = list(
            await (self.reader or self.db).execute_fetchall(
                "SELECT (SELECT data FROM member_preferences WHERE guild_id = ? AND user_id = ?),"
                " (SELECT data FROM guild_creative WHERE guild_id = ?)",
                (guild_id or DM_GUILD, user_id, guild_id or DM_GUILD),
            )
        )
        mine, creative = (rows[0][0], rows[0][1]) if rows else (None, None)
        return Preferences.from_json(mine), ServerCreative.from_json(creative if guild_id else None)

    async def save(self, guild_id: int | None, user_id: int, prefs: Preferences) -> None:
        await write(
            self.db,
            "INSERT INTO member_preferences (guild_id, user_id, data, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (guild_id, user_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (guild_id or DM_GUILD, user_id, prefs.to_json(), time.time()),
        )

    async def set(self, guild_id: int | None, user_id: int, name: str, value: str | int | bool | None) -> Preferences:
        """Set one preference (checked) and store it; returns the new preferences."""
        # (read where it is written: a read-modify-write sees the writer's own latest state)
        prefs = (await self._get(self.db, guild_id, user_id)).with_value(name, value)
        await self.save(guild_id, user_id, prefs)
        return prefs

    async def reset(self, guild_id: int | None, user_id: int) -> None:
        await write(self.db, "DELETE FROM member_preferences WHERE guild_id = ? AND user_id = ?", (guild_id or DM_GUILD, user_id))

    async def server(self, guild_id: int | None) -> ServerCreative:
        if not guild_id:
            return ServerCreative()
        rows = list(await (self.reader or self.db).execute_fetchall("SELECT data FROM guild_creative WHERE guild_id = ?", (guild_id,)))
        return ServerCreative.from_json(rows[0][0] if rows else None)

    async def save_server(self, guild_id: int, creative: ServerCreative) -> None:
        await write(
            self.db,
            "INSERT INTO guild_creative (guild_id, data, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (guild_id, creative.checked().to_json(), time.time()),
        )

    async def effective(self, guild_id: int | None, user_id: int, server: ServerDefaults) -> Effective:
        """The member's preferences merged with ``server`` (their GuildSettings)."""
        return effective(await self.get(guild_id, user_id), server, await self.server(guild_id))


def as_fields(prefs: Preferences) -> Mapping[str, str | int | bool | None]:
    """The stored values by name, for a settings panel."""
    return {f.name: getattr(prefs, f.name) for f in fields(prefs)}
