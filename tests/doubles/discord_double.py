"""A Discord double at the wire level: REST API + gateway + attachment CDN on 127.0.0.1.

The real discord.py client talks to it unmodified: point ``discord.http.Route.BASE`` at
``dd.api_base`` and the gateway at ``dd.gateway_url`` (``dd.patched()`` does both and restores
them; an ``AutoShardedBot`` finds the gateway itself through ``GET /gateway/bot``, but a plain
``Bot`` in discord.py 2.7 always dials ``DiscordWebSocket.DEFAULT_GATEWAY``).

It keeps a small world (users, guilds with roles and members, channels, threads, messages,
application commands, interactions) so that what the bot creates can be fetched back, and it
behaves like Discord where a bot can get it wrong:

- every REST call is recorded (``dd.calls``) with headers, JSON or multipart parts (exact bytes);
- gateway events honour the intents sent in IDENTIFY (no MESSAGE_CREATE without GUILD_MESSAGES,
  message content blanked without MESSAGE_CONTENT unless the bot is mentioned), and privileged
  intents not enabled "in the portal" close the socket with 4014;
- permissions are computed from roles and overwrites, and REST calls that need one answer 403 50013;
- interaction tokens: one callback per interaction (40060), followups only after the ack (10015),
  401 50027 once a token has expired;
- payload limits (content 2000, embeds, components, 10 files, modal title 45, 25 choices,
  command names/locales) answer 400 50035; files above the upload limit answer 413 40005;
- faults can be injected per route (``dd.fail``), including 429 with ``retry_after``;
- installation contexts: a command is dispatched only where its synced ``integration_types``
  and ``contexts`` allow it (:class:`CommandUnavailable` otherwise, as Discord would not show it);
  interactions carry ``context`` 0/1/2 and ``authorizing_integration_owners`` {"0": guild} or
  {"1": user}; the bot's DM, group DMs (type 3, the bot not a recipient) and guilds the bot is
  not in (``add_guild(bot_member=False)``: no GUILD_CREATE, no access) are modelled, and
  bot-token requests to channels the bot cannot see answer 403 50001;
- a clock tests move (``dd.advance(seconds)``) instead of sleeping: interaction tokens die
  15 minutes after dispatch by it.

Builders return Discord's own JSON (string snowflakes), ready for ``await dd.dispatch(...)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as _dt
import enum
import hashlib
import io
import json
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

__all__ = [
    "Call",
    "CommandUnavailable",
    "DiscordDouble",
    "Fault",
    "Intent",
    "Perm",
    "Upload",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
]

DISCORD_EPOCH_MS = 1420070400000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
_TIER_UPLOAD_LIMIT = {0: DEFAULT_UPLOAD_LIMIT, 1: DEFAULT_UPLOAD_LIMIT, 2: 50 * 1024 * 1024, 3: 100 * 1024 * 1024}


class Perm(enum.IntFlag):
    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38


ALL_PERMISSIONS = (1 << 53) - 1
DEFAULT_EVERYONE_PERMISSIONS = int(
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.CREATE_PRIVATE_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
)
DEFAULT_BOT_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
)
_DM_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
)


class Intent(enum.IntFlag):
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15


_PRIVILEGED = {"members": Intent.GUILD_MEMBERS, "presences": Intent.GUILD_PRESENCES, "message_content": Intent.MESSAGE_CONTENT}

# Locales Discord accepts in name_localizations / description_localizations.
VALID_LOCALES = frozenset(
    "id da de en-GB en-US es-ES es-419 fr hr it lt hu nl no pl pt-BR ro fi sv-SE vi tr cs el bg ru uk hi th zh-CN ja zh-TW ko".split()
)
# Chat-input command/option names: lowercase where the script has case, no spaces, 1-32 chars.
_COMMAND_NAME = re.compile(r"^[-_'\w\u0900-\u097F\u0E00-\u0E7F]{1,32}$")

_THREAD_TYPES = (10, 11, 12)
_MESSAGE_FLAG_EPHEMERAL = 64
_MESSAGE_FLAG_LOADING = 128
_MESSAGE_FLAG_COMPONENTS_V2 = 1 << 15


# --------------------------------------------------------------------------- records


@dataclass
class Upload:
    """One file part of a multipart request, exactly as received."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Call:
    """One REST request the bot made, and what the double answered."""

    method: str
    path: str  # relative to the API base, e.g. "/channels/1/messages"
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # the JSON body, or the parsed ``payload_json`` part of a multipart body
    files: list[Upload]
    form: dict[str, str]  # other non-file multipart fields
    multipart: bool
    status: int = 0
    response: Any = None
    index: int = 0

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def __repr__(self) -> str:  # short, for assertion messages
        return f"<Call #{self.index} {self.method} {self.path} -> {self.status}>"


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int | None
    headers: dict[str, str]
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method == "*" or self.method == method) and self.pattern.search(path) is not None


class CommandUnavailable(ValueError):
    """The command is not offered here (its integration types or contexts leave this place out)."""


# What Discord grants an app in a place it has no bot member (DMs, group DMs, guilds it is not
# in): enough for interaction responses with embeds and files.
_INTERACTION_ONLY_PERMISSIONS = int(Perm.ATTACH_FILES | Perm.EMBED_LINKS | Perm.MENTION_EVERYONE | Perm.USE_EXTERNAL_EMOJIS)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Any = None, headers: dict[str, str] | None = None):
        body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            body["errors"] = errors
        super().__init__(f"{status} {code} {message}")
        self.status, self.body, self.headers = status, body, headers or {}


def _form_error(path: Sequence[str | int], err_code: str, message: str) -> ApiError:
    """Discord's "Invalid Form Body" with the nested errors object."""
    node: dict[str, Any] = {"_errors": [{"code": err_code, "message": message}]}
    for key in reversed(list(path)):
        node = {str(key): node}
    return ApiError(400, 50035, "Invalid Form Body", node)


_DEFAULT_FAULT_BODIES = {
    400: {"message": "Invalid Form Body", "code": 50035},
    401: {"message": "401: Unauthorized", "code": 0},
    403: {"message": "Missing Permissions", "code": 50013},
    404: {"message": "404: Not Found", "code": 0},
    413: {"message": "Request entity too large", "code": 40005},
    500: {"message": "500: Internal Server Error", "code": 0},
    502: {"message": "502: Bad Gateway", "code": 0},
    503: {"message": "503: Service Unavailable", "code": 0},
}


# --------------------------------------------------------------------------- helpers


def _id(obj: Any) -> int:
    """A snowflake from a payload dict, a member dict (its user), a discord.py object or an int/str."""
    if isinstance(obj, Mapping):
        if "id" in obj:
            return int(obj["id"])
        if "user" in obj:
            return int(obj["user"]["id"])
        raise ValueError(f"no id in {obj!r}")
    if hasattr(obj, "id"):
        return int(obj.id)
    return int(obj)


def _perm_value(p: Any) -> int:
    return int(getattr(p, "value", p))


def _iso(ts: float | None = None) -> str:
    return _dt.datetime.fromtimestamp(time.time() if ts is None else ts, _dt.UTC).isoformat()


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


def _walk_components(components: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for c in components or ():
        if not isinstance(c, dict):
            continue
        yield c
        yield from _walk_components(c.get("components") or ())
        if isinstance(c.get("component"), dict):
            yield from _walk_components([c["component"]])
        if isinstance(c.get("accessory"), dict):
            yield from _walk_components([c["accessory"]])


class _Snowflakes:
    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22 | (1 << 17)
        self._last = max(now, self._last + 1)
        return self._last


# --------------------------------------------------------------------------- gateway state


class _Conn:
    """One websocket; a writer task keeps events in the order they were queued."""

    def __init__(self, ws: web.WebSocketResponse, zlib_stream: bool) -> None:
        self.ws = ws
        self._zlib = zlib.compressobj() if zlib_stream else None
        self.queue: asyncio.Queue[tuple[str, asyncio.Future[None] | None]] = asyncio.Queue()
        self.session: _Session | None = None
        self.writer = asyncio.create_task(self._write())

    def put(self, payload: dict[str, Any], done: asyncio.Future[None] | None = None) -> None:
        self.queue.put_nowait((json.dumps(payload), done))

    async def _write(self) -> None:
        while True:
            text, done = await self.queue.get()
            try:
                if not self.ws.closed:
                    if self._zlib is not None:
                        # zlib-stream: one shared context, each message ends with a sync flush.
                        await self.ws.send_bytes(self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))
                    else:
                        await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass
            finally:
                if done is not None and not done.done():
                    done.set_result(None)


@dataclass
class _Session:
    id: str
    intents: int
    shard: tuple[int, int] | None
    seq: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    conn: _Conn | None = None
    alive: bool = True

    def owns_guild(self, guild_id: int | None) -> bool:
        if guild_id is None or self.shard is None:
            return True
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    channel_id: int | None
    guild_id: int | None
    user: dict[str, Any]
    name: str | None
    message_id: int | None  # the message a component / modal came from
    dispatched_at: float | None = None
    response_type: int | None = None
    original_id: int | None = None
    followups: list[int] = field(default_factory=list)
    expired: bool = False
    response_data: Any = None
    owners: dict[str, str] = field(default_factory=dict)  # authorizing_integration_owners


# --------------------------------------------------------------------------- the double


class DiscordDouble:
    """``async with DiscordDouble() as dd:`` — see the module docstring."""

    def __init__(
        self,
        *,
        token: str = "test-bot-token",
        bot_name: str = "Nano Banana",
        privileged_intents: Iterable[str] = ("members", "presences", "message_content"),
        upload_limit: int | None = None,
        echo_bot_messages: bool = True,
        heartbeat_interval_ms: int = 41250,
    ) -> None:
        self.token = token
        self._sf = _Snowflakes()
        self.application_id = self._sf.next()
        self.bot_user: dict[str, Any] = self._user_json(
            self.application_id, bot_name.lower().replace(" ", "-"), bot=True, global_name=bot_name
        )
        self.owner_user = self._user_json(self._sf.next(), "app-owner")
        self.users: dict[int, dict[str, Any]] = {self.application_id: self.bot_user, _id(self.owner_user): self.owner_user}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.members: dict[tuple[int, int], dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild_id (None: global) -> commands
        self.privileged_intents = frozenset(privileged_intents)
        self.upload_limit = upload_limit
        self.echo_bot_messages = echo_bot_messages
        self.heartbeat_interval_ms = heartbeat_interval_ms
        # Off by default: a 3 s deadline on a loaded 2-core test box would flake.
        self.ack_deadline: float | None = None
        self.interaction_token_ttl: float = 15 * 60
        self._clock_offset = 0.0  # dd.advance(): the double's clock, ahead of time.monotonic()
        self.foreign_guilds: set[int] = set()  # guilds the bot is not in (user installs reach them)
        self._invisible: set[int] = set()  # channels the bot cannot see (group DMs it is not in)

        self.calls: list[Call] = []
        self.unhandled: list[Call] = []  # requests to routes the double does not implement
        self.downloads: list[str] = []  # CDN paths fetched
        self.identifies: list[dict[str, Any]] = []
        self.gateway_received: list[dict[str, Any]] = []  # non-heartbeat payloads from the bot
        self.gateway_urls: list[str] = []  # full URL (with query) of each websocket connect

        self._ephemeral: set[int] = set()
        self._blobs: dict[int, tuple[bytes, str, str]] = {}  # attachment id -> (data, content_type, hm)
        self._interactions: dict[int, _Interaction] = {}
        self._by_token: dict[str, _Interaction] = {}
        self._faults: list[Fault] = []
        self._sessions: dict[str, _Session] = {}
        self._conns: set[_Conn] = set()
        self._call_waiters: list[tuple[Callable[[Call], bool], asyncio.Future[Call]]] = []
        self._session_ready: asyncio.Event | None = None  # created in start() (needs a loop)
        self._quiet: set[int] = set()  # guilds being built: no events before their GUILD_CREATE
        self._attachments_expired_before: int | None = None
        self.cdn_delay = 0.0  # seconds the CDN waits before answering (a slow or stuck download)
        self.callback_delay = 0.0  # seconds an interaction callback's answer takes once it has taken effect
        self.post_delay = 0.0  # seconds a channel message post's answer takes once the message exists
        # Discord: with ``enforce_nonce``, "if another message was created by the same author with
        # the same nonce" in the past few minutes, "that message will be returned".
        self._nonces: dict[tuple[int, str, str], tuple[int, float]] = {}
        self.nonce_window = 300.0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> DiscordDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        self._session_ready = asyncio.Event()
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._api)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get(r"/{kind:attachments|ephemeral-attachments}/{cid:\d+}/{aid:\d+}/{filename}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"double shutting down")
            conn.writer.cancel()
        for conn in list(self._conns):
            with contextlib.suppress(BaseException):
                await conn.writer
        self._conns.clear()
        for _, fut in self._call_waiters:
            fut.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at the double; restore on exit."""
        import discord.gateway
        import discord.http
        import yarl

        old_base, old_gw = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url + "/")
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gw

    @contextlib.asynccontextmanager
    async def running(self, bot: Any, *, ready_timeout: float = 15.0) -> AsyncIterator[Any]:
        """Start ``bot`` against the double (patched), wait until ``bot.is_ready()``, close it on exit."""
        with self.patched():
            task = asyncio.create_task(bot.start(self.token), name="discord-double-bot")
            deadline = time.monotonic() + ready_timeout
            try:
                while not bot.is_ready():
                    if task.done():
                        task.result()  # raise the bot's own error (LoginFailure, PrivilegedIntentsRequired...)
                        raise RuntimeError("bot.start() returned before the bot was ready")
                    if time.monotonic() > deadline:
                        raise TimeoutError("bot did not become ready against the Discord double")
                    await asyncio.sleep(0.01)
                yield bot
            finally:
                if not bot.is_closed():
                    await bot.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=10)

    # ------------------------------------------------------------------ world builders

    def _user_json(self, uid: int, username: str, *, bot: bool = False, global_name: str | None = None) -> dict[str, Any]:
        user = {
            "id": str(uid),
            "username": username,
            "discriminator": "0",
            "global_name": global_name if global_name is not None else (None if bot else username.title()),
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "primary_guild": None,
            "collectibles": None,
        }
        if bot:
            user["bot"] = True
        return user

    def add_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> dict[str, Any]:
        user = self._user_json(self._sf.next(), username, bot=bot, global_name=global_name)
        self.users[_id(user)] = user
        return copy.deepcopy(user)

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        preferred_locale: str = "en-US",
        everyone_permissions: Any = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: Any = DEFAULT_BOT_PERMISSIONS,
        premium_tier: int = 0,
        owner: Any = None,
        with_channel: str | None = "general",
        bot_member: bool = True,
    ) -> dict[str, Any]:
        """A guild the bot is in: @everyone role, the bot's managed role and member, an owner
        member, and (by default) a text channel. If a gateway session is live, a GUILD_CREATE
        is sent at once (the bot "joins"); otherwise it comes after READY.
        ``bot_member=False``: a guild the bot is not in (a member's user install reaches it):
        no gateway events, and the bot's token has no access to its channels."""
        gid = self._sf.next()
        self._quiet.add(gid)
        if not bot_member:
            self.foreign_guilds.add(gid)
        owner_user = self.users[_id(owner)] if owner is not None else self.add_user(f"owner-{len(self.guilds) + 1}")
        guild = {
            "id": str(gid),
            "name": name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": owner_user["id"],
            "region": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": preferred_locale,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_progress_bar_enabled": False,
            "emojis": [],
            "stickers": [],
            "roles": [self._role_json(gid, "@everyone", everyone_permissions, position=0)],
        }
        self.guilds[gid] = guild
        self.add_member(guild, owner_user)
        if bot_member:
            bot_role = self.add_role(guild, self.bot_user["global_name"] or "bot", bot_permissions, _managed_bot=True)
            self.add_member(guild, self.bot_user, roles=[bot_role])
        if with_channel:
            self.add_text_channel(guild, with_channel)
        if bot_member:
            self._quiet.discard(gid)
            self._emit_guild_create(gid)
        return self.guild_json(gid)

    def _role_json(self, gid: int, name: str, permissions: Any, *, position: int, rid: int | None = None) -> dict[str, Any]:
        return {
            "id": str(rid if rid is not None else gid),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(_perm_value(permissions)),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def add_role(self, guild: Any, name: str, permissions: Any = 0, *, _managed_bot: bool = False) -> dict[str, Any]:
        g = self.guilds[_id(guild)]
        role = self._role_json(_id(g), name, permissions, position=len(g["roles"]), rid=self._sf.next())
        if _managed_bot:
            role["managed"] = True
            role["tags"] = {"bot_id": self.bot_user["id"]}
        g["roles"].append(role)
        self._emit("GUILD_ROLE_CREATE", {"guild_id": g["id"], "role": role}, guild_id=_id(g))
        return copy.deepcopy(role)

    def add_member(
        self, guild: Any, user: Any = None, *, username: str | None = None, roles: Iterable[Any] = (), nick: str | None = None
    ) -> dict[str, Any]:
        """Add a user (an existing one, or a new one named ``username``) to a guild."""
        gid = _id(guild)
        if user is None:
            user = self.add_user(username or f"user{len(self.users)}")
        uid = _id(user)
        self.users.setdefault(uid, copy.deepcopy(user if "username" in user else user["user"]))
        member = {
            "user_id": uid,  # internal; rendered as "user"
            "nick": nick,
            "avatar": None,
            "banner": None,
            "roles": [str(_id(r)) for r in roles],
            "joined_at": _iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        self.members[(gid, uid)] = member
        if self._sessions and uid != self.application_id:
            self._emit("GUILD_MEMBER_ADD", {**self.member_json(gid, uid), "guild_id": str(gid)}, guild_id=gid)
        return self.member_json(gid, uid)

    def member_json(self, guild: Any, user: Any, *, with_permissions_in: Any = None) -> dict[str, Any]:
        gid, uid = _id(guild), _id(user)
        m = {k: v for k, v in self.members[(gid, uid)].items() if k != "user_id"}
        m = copy.deepcopy(m)
        m["user"] = copy.deepcopy(self.users[uid])
        if with_permissions_in is not None:
            m["permissions"] = str(self.permissions_in(with_permissions_in, uid))
        return m

    def bot_member(self, guild: Any) -> dict[str, Any]:
        return self.member_json(guild, self.application_id)

    def add_text_channel(
        self, guild: Any, name: str = "general", *, topic: str | None = None, overwrites: Iterable[dict[str, Any]] = (), nsfw: bool = False
    ) -> dict[str, Any]:
        gid = _id(guild)
        cid = self._sf.next()
        position = sum(1 for c in self.channels.values() if c.get("guild_id") == str(gid) and c["type"] == 0)
        channel = {
            "id": str(cid),
            "type": 0,
            "guild_id": str(gid),
            "name": name,
            "position": position,
            "permission_overwrites": list(overwrites),
            "parent_id": None,
            "topic": topic,
            "nsfw": nsfw,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "default_auto_archive_duration": 1440,
            "default_thread_rate_limit_per_user": 0,
            "flags": 0,
            "icon_emoji": None,
            "theme_color": None,
        }
        self.channels[cid] = channel
        self._emit("CHANNEL_CREATE", channel, guild_id=gid)
        return copy.deepcopy(channel)

    def set_overwrite(self, channel: Any, target: Any, *, allow: Any = 0, deny: Any = 0) -> dict[str, Any]:
        """Set a permission overwrite on a channel for a role, a member/user, ``"bot"`` or
        ``"everyone"``. A live session receives CHANNEL_UPDATE (discord.py's cache follows)."""
        ch = self.channels[_id(channel)]
        gid = int(ch["guild_id"])
        if target == "bot":
            tid, kind = self.application_id, 1
        elif target == "everyone":
            tid, kind = gid, 0
        else:
            tid = _id(target)
            kind = 0 if any(int(r["id"]) == tid for r in self.guilds[gid]["roles"]) else 1
        ows = [o for o in ch["permission_overwrites"] if int(o["id"]) != tid]
        ows.append({"id": str(tid), "type": kind, "allow": str(_perm_value(allow)), "deny": str(_perm_value(deny))})
        ch["permission_overwrites"] = ows
        self._emit("CHANNEL_UPDATE", ch, guild_id=gid)
        return copy.deepcopy(ch)

    def add_thread(
        self,
        parent: Any,
        name: str = "thread",
        *,
        owner: Any = None,
        starter_message: Any = None,
        private: bool = False,
        archived: bool = False,
        locked: bool = False,
        auto_archive_duration: int = 1440,
    ) -> dict[str, Any]:
        """A thread under a text channel (from ``starter_message`` if given: same id, like Discord)."""
        p = self.channels[_id(parent)]
        owner_id = _id(owner) if owner is not None else self.application_id
        tid = _id(starter_message) if starter_message is not None else self._sf.next()
        thread = self._thread_json(p, tid, name, owner_id, private=private, auto_archive_duration=auto_archive_duration)
        thread["thread_metadata"].update(archived=archived, locked=locked)
        self.channels[tid] = thread
        if starter_message is not None and tid in self.messages:
            self.messages[tid]["thread"] = copy.deepcopy(thread)
        self._emit("THREAD_CREATE", {**thread, "newly_created": True}, guild_id=int(p["guild_id"]))
        return copy.deepcopy(thread)

    def _thread_json(
        self, parent: dict[str, Any], tid: int, name: str, owner_id: int, *, private: bool, auto_archive_duration: int
    ) -> dict[str, Any]:
        now = _iso()
        return {
            "id": str(tid),
            "type": 12 if private else 11,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "rate_limit_per_user": 0,
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": auto_archive_duration,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
                **({"invitable": True} if private else {}),
            },
        }

    def archive_thread(self, thread: Any, *, locked: bool = False) -> dict[str, Any]:
        t = self.channels[_id(thread)]
        t["thread_metadata"].update(archived=True, locked=locked, archive_timestamp=_iso())
        self._emit("THREAD_UPDATE", t, guild_id=int(t["guild_id"]))
        return copy.deepcopy(t)

    def add_dm_channel(self, user: Any) -> dict[str, Any]:
        """The DM channel between the bot and ``user`` (for DM messages and interactions)."""
        uid = _id(user)
        for ch in self.channels.values():
            if ch["type"] == 1 and ch["recipients"][0]["id"] == str(uid):
                return copy.deepcopy(ch)
        cid = self._sf.next()
        ch = {"id": str(cid), "type": 1, "last_message_id": None, "flags": 0, "recipients": [copy.deepcopy(self.users[uid])]}
        self.channels[cid] = ch
        return copy.deepcopy(ch)

    def add_group_dm(self, owner: Any, *others: Any, name: str | None = None) -> dict[str, Any]:
        """A group DM (channel type 3) among users, the bot not among them: a user-installed
        command works there, but the bot's token cannot see it."""
        cid = self._sf.next()
        users = [owner, *others]
        ch = {
            "id": str(cid),
            "type": 3,
            "name": name,
            "icon": None,
            "owner_id": str(_id(owner)),
            "last_message_id": None,
            "flags": 0,
            "recipients": [copy.deepcopy(self.users[_id(u)]) for u in users],
        }
        self.channels[cid] = ch
        self._invisible.add(cid)
        return copy.deepcopy(ch)

    def _by_guild(self) -> tuple[dict[int, list[int]], dict[str, list[dict[str, Any]]]]:
        """Member ids and channels of every guild, in one pass over each (a burst of GUILD_CREATEs
        for 10,000 guilds would otherwise scan them all once per guild)."""
        members: dict[int, list[int]] = {}
        for gid, uid in self.members:
            members.setdefault(gid, []).append(uid)
        channels: dict[str, list[dict[str, Any]]] = {}
        for c in self.channels.values():
            channels.setdefault(str(c.get("guild_id")), []).append(c)
        return members, channels

    def guild_json(
        self,
        guild: Any,
        *,
        for_gateway: bool = False,
        all_members: bool = False,
        index: tuple[dict[int, list[int]], dict[str, list[dict[str, Any]]]] | None = None,
    ) -> dict[str, Any]:
        gid = _id(guild)
        g = copy.deepcopy(self.guilds[gid])
        if for_gateway:
            by_members, by_channels = index or self._by_guild()
            member_ids = by_members.get(gid, [])
            shown = member_ids if all_members else [self.application_id]
            own = [copy.deepcopy(c) for c in by_channels.get(str(gid), [])]
            g.update(
                joined_at=self.members[(gid, self.application_id)]["joined_at"],
                large=len(member_ids) > 250,
                unavailable=False,
                member_count=len(member_ids),
                members=[self.member_json(gid, uid) for uid in shown],
                channels=[{k: v for k, v in c.items() if k != "guild_id"} for c in own if c["type"] not in _THREAD_TYPES],
                threads=[c for c in own if c["type"] in _THREAD_TYPES and not c["thread_metadata"]["archived"]],
                voice_states=[],
                presences=[],
                stage_instances=[],
                guild_scheduled_events=[],
                soundboard_sounds=[],
            )
        return g

    def text_channels(self, guild: Any) -> list[dict[str, Any]]:
        """The guild's text channels, in creation order."""
        return [c for c in self._guild_channels(_id(guild), threads=False) if c["type"] == 0]

    def _guild_channels(self, gid: int, *, threads: bool) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(c) for c in self.channels.values() if c.get("guild_id") == str(gid) and ((c["type"] in _THREAD_TYPES) == threads)
        ]

    def upload_limit_for(self, guild_id: int | None) -> int:
        if self.upload_limit is not None:
            return self.upload_limit
        if guild_id is None or guild_id not in self.guilds:
            return DEFAULT_UPLOAD_LIMIT
        return _TIER_UPLOAD_LIMIT.get(self.guilds[guild_id]["premium_tier"], DEFAULT_UPLOAD_LIMIT)

    # ------------------------------------------------------------------ permissions

    def permissions_in(self, channel: Any, user: Any) -> int:
        """Discord's permission algorithm: base role permissions, then @everyone, role and member
        overwrites; threads use their parent's; no VIEW_CHANNEL means nothing."""
        ch = self.channels[_id(channel)]
        uid = _id(user)
        if not ch.get("guild_id"):
            return _DM_PERMISSIONS
        gid = int(ch["guild_id"])
        guild = self.guilds[gid]
        if int(guild["owner_id"]) == uid:
            return ALL_PERMISSIONS
        member = self.members.get((gid, uid))
        if member is None:
            return 0
        roles = {r["id"]: r for r in guild["roles"]}
        perms = int(roles[str(gid)]["permissions"])
        for rid in member["roles"]:
            if rid in roles:
                perms |= int(roles[rid]["permissions"])
        if perms & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        source = self.channels[int(ch["parent_id"])] if ch["type"] in _THREAD_TYPES else ch
        ows = {o["id"]: o for o in source.get("permission_overwrites", [])}
        if (ev := ows.get(str(gid))) is not None:
            perms = (perms & ~int(ev["deny"])) | int(ev["allow"])
        allow = deny = 0
        for rid in member["roles"]:
            if (o := ows.get(rid)) is not None:
                allow |= int(o["allow"])
                deny |= int(o["deny"])
        perms = (perms & ~deny) | allow
        if (mo := ows.get(str(uid))) is not None:
            perms = (perms & ~int(mo["deny"])) | int(mo["allow"])
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        return perms

    def _require(self, channel: dict[str, Any], *needed: int) -> None:
        perms = self.permissions_in(channel, self.application_id)
        if not perms & Perm.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        for p in needed:
            if not perms & p:
                raise ApiError(403, 50013, "Missing Permissions")

    # ------------------------------------------------------------------ attachments

    def add_attachment(
        self, data: bytes, filename: str, content_type: str | None = None, *, description: str | None = None, channel: Any = None
    ) -> dict[str, Any]:
        """Store bytes on the double's CDN; returns Discord's attachment object (usable in
        interaction ``resolved.attachments`` and message ``attachments``)."""
        return self._store_attachment(
            data, filename, content_type, channel_id=_id(channel) if channel is not None else 0, description=description
        )

    def _store_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        *,
        channel_id: int,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        aid = self._sf.next()
        ctype = (
            content_type
            if content_type and content_type != "application/octet-stream"
            else (mimetypes.guess_type(filename)[0] or "application/octet-stream")
        )
        hm = hashlib.sha256(f"{aid}:{secrets.token_hex(8)}".encode()).hexdigest()
        self._blobs[aid] = (data, ctype, hm)
        now = int(time.time())
        kind = "ephemeral-attachments" if ephemeral else "attachments"
        safe_name = re.sub(r"[^\w.-]", "_", filename) or "file"
        url = f"{self.base_url}/{kind}/{channel_id}/{aid}/{safe_name}?ex={now + 86400:x}&is={now:x}&hm={hm}&"
        att: dict[str, Any] = {
            "id": str(aid),
            "filename": safe_name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": ctype,
        }
        if description:
            att["description"] = description
        if ephemeral:
            att["ephemeral"] = True
        if ctype.startswith("image/"):
            try:
                from PIL import Image

                with Image.open(io.BytesIO(data)) as img:
                    att["width"], att["height"] = img.size
            except Exception:
                pass
        return att

    def attachment_bytes(self, attachment: Any) -> bytes:
        """The stored bytes behind an attachment object, id or URL."""
        if isinstance(attachment, str) and "/" in attachment:
            aid = int(attachment.split("?")[0].rstrip("/").split("/")[-2])
        else:
            aid = _id(attachment)
        return self._blobs[aid][0]

    def expire_attachment_urls(self) -> None:
        """Signed CDN links handed out so far stop working (404), like Discord's after ~24 h."""
        self._attachments_expired_before = self._sf.next()

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        aid = int(request.match_info["aid"])
        self.downloads.append(request.path)
        if self.cdn_delay:
            await asyncio.sleep(self.cdn_delay)
        blob = self._blobs.get(aid)
        expired = self._attachments_expired_before is not None and aid < self._attachments_expired_before
        if blob is None or expired or request.query.get("hm") != blob[2]:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=blob[0], content_type=blob[1])

    # ------------------------------------------------------------------ messages (world side)

    def add_message(
        self,
        channel: Any,
        author: Any,
        content: str = "",
        *,
        attachments: Sequence[dict[str, Any]] = (),
        embeds: Sequence[dict[str, Any]] = (),
        components: Sequence[dict[str, Any]] = (),
        mentions: Sequence[Any] = (),
        reply_to: Any = None,
        ping_reply: bool = True,
        flags: int = 0,
    ) -> dict[str, Any]:
        """Store a message as if a user sent it (not dispatched; see ``post_message``).
        ``<@id>`` mentions in ``content`` fill ``mentions``; a reply pings its author unless
        ``ping_reply=False`` (then a bot without the content intent sees no text)."""
        ch = self.channels[_id(channel)]
        author_user = self.users[_id(author)]
        ref = self.messages[_id(reply_to)] if reply_to is not None else None
        mention_ids = [_id(m) for m in mentions] + [int(x) for x in re.findall(r"<@!?(\d+)>", content)]
        if ref is not None and ping_reply:
            mention_ids.append(int(ref["author"]["id"]))
        msg = self._new_message(
            ch,
            author_user,
            content=content,
            attachments=[copy.deepcopy(a) for a in attachments],
            embeds=list(embeds),
            components=list(components),
            mention_ids=mention_ids,
            reference=ref,
            flags=flags,
        )
        return copy.deepcopy(msg)

    async def post_message(self, channel: Any, author: Any, content: str = "", **kwargs: Any) -> dict[str, Any]:
        """``add_message`` + MESSAGE_CREATE (subject to intents). Returns the stored message."""
        msg = self.add_message(channel, author, content, **kwargs)
        await self.dispatch("MESSAGE_CREATE", self.message_event(msg))
        return msg

    def _new_message(
        self,
        ch: dict[str, Any],
        author: dict[str, Any],
        *,
        content: str = "",
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
        mention_ids: Iterable[int] = (),
        reference: dict[str, Any] | None = None,
        flags: int = 0,
        msg_type: int | None = None,
        webhook_id: int | None = None,
        interaction: _Interaction | None = None,
        tts: bool = False,
        nonce: Any = None,
        store: bool = True,
    ) -> dict[str, Any]:
        mid = self._sf.next()
        seen: list[int] = []
        for uid in mention_ids:
            if uid in self.users and uid not in seen:
                seen.append(uid)
        gid = int(ch["guild_id"]) if ch.get("guild_id") else None
        mentions = []
        for uid in seen:
            u = copy.deepcopy(self.users[uid])
            if gid is not None and (gid, uid) in self.members:
                u["member"] = {k: v for k, v in self.member_json(gid, uid).items() if k != "user"}
            mentions.append(u)
        msg: dict[str, Any] = {
            "id": str(mid),
            "type": msg_type if msg_type is not None else (19 if reference is not None else 0),
            "channel_id": ch["id"],
            "author": copy.deepcopy(author),
            "content": content,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": self._number_components(components or []),
            "pinned": False,
            "flags": flags,
        }
        if nonce is not None:
            msg["nonce"] = nonce
        if reference is not None:
            msg["message_reference"] = {
                "type": 0,
                "channel_id": reference["channel_id"],
                "message_id": reference["id"],
                **({"guild_id": str(gid)} if gid else {}),
            }
            msg["referenced_message"] = copy.deepcopy({k: v for k, v in reference.items() if k != "referenced_message"})
        if webhook_id is not None:
            msg["webhook_id"] = str(webhook_id)
            msg["application_id"] = str(self.application_id)
        if interaction is not None:
            meta: dict[str, Any] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": copy.deepcopy(interaction.user),
                "authorizing_integration_owners": copy.deepcopy(interaction.owners),
            }
            if interaction.name:
                meta["name"] = interaction.name
            if interaction.original_id is not None and interaction.original_id != mid:
                meta["original_response_message_id"] = str(interaction.original_id)
            if interaction.message_id is not None:
                meta["interacted_message_id"] = str(interaction.message_id)
            msg["interaction_metadata"] = meta
            if interaction.name:
                msg["interaction"] = {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "name": interaction.name,
                    "user": copy.deepcopy(interaction.user),
                }
        if ch["type"] in _THREAD_TYPES:
            ch["message_count"] = ch.get("message_count", 0) + 1
            ch["total_message_sent"] = ch.get("total_message_sent", 0) + 1
            msg["position"] = ch["total_message_sent"]
        if store:
            ch["last_message_id"] = str(mid)
            self.messages[mid] = msg
        return msg

    def _number_components(self, components: list[Any]) -> list[Any]:
        """Discord gives every component a numeric ``id`` when the sender did not."""
        comps = copy.deepcopy(components)
        n = 0
        for c in _walk_components(comps):
            n += 1
            c.setdefault("id", n)
        return comps

    def message_event(self, message: Any) -> dict[str, Any]:
        """A stored message as the gateway sends it (``guild_id`` and the author's ``member``)."""
        msg = copy.deepcopy(self.messages.get(_id(message)) or message)
        ch = self.channels.get(int(msg["channel_id"]))
        if ch is not None and ch.get("guild_id"):
            gid = int(ch["guild_id"])
            msg["guild_id"] = str(gid)
            uid = int(msg["author"]["id"])
            if (gid, uid) in self.members and "webhook_id" not in msg:
                msg["member"] = {k: v for k, v in self.member_json(gid, uid).items() if k != "user"}
        return msg

    def channel_messages(self, channel: Any) -> list[dict[str, Any]]:
        """Non-ephemeral messages in a channel, oldest first."""
        cid = str(_id(channel))
        return [copy.deepcopy(m) for mid, m in sorted(self.messages.items()) if m["channel_id"] == cid and mid not in self._ephemeral]

    # ------------------------------------------------------------------ interactions (builders)

    def _find_command(self, name: str, guild_id: int | None, ctype: int) -> dict[str, Any] | None:
        for scope in (guild_id, None) if guild_id is not None else (None,):
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == ctype:
                    return cmd
        return None

    def _base_interaction(
        self,
        itype: int,
        channel: Any,
        user: Any,
        *,
        locale: str,
        app_permissions: Any,
        member_permissions: Any,
        name: str | None = None,
        message_id: int | None = None,
        installed_by: str | None = None,
    ) -> tuple[dict[str, Any], _Interaction]:
        """``installed_by``: whose install authorizes it, "guild" or "user" (both: "both");
        by default the guild's where the bot is in the guild, else the member's own."""
        ch = self.channels[_id(channel)]
        uid = _id(user)
        if uid not in self.users:
            raise ValueError(f"unknown user {uid}: create it with add_user/add_member first")
        iid = self._sf.next()
        token = "aW50ZXJhY3Rpb246" + base64.urlsafe_b64encode(f"{iid}:".encode()).decode().rstrip("=") + secrets.token_urlsafe(48)
        gid = int(ch["guild_id"]) if ch.get("guild_id") else None
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.upload_limit_for(gid),
            "channel_id": ch["id"],
            "channel": self._partial_channel(ch, uid),
        }
        foreign = gid is not None and gid in self.foreign_guilds
        bot_dm = ch["type"] == 1 and gid is None and _id(ch) not in self._invisible
        by = installed_by or ("user" if foreign or gid is None else "guild")
        if by not in ("guild", "user", "both"):
            raise ValueError(f"installed_by is guild, user or both, not {by!r}")
        if by != "user" and (foreign or (gid is None and not bot_dm)):
            raise ValueError("only a user install reaches a guild the bot is not in or a group DM")
        owners: dict[str, str] = {}
        if by in ("guild", "both"):
            owners["0"] = str(gid) if gid is not None else "0"  # Discord: "0" for the bot's DM
        if by in ("user", "both"):
            owners["1"] = str(uid)
        if gid is not None:
            g = self.guilds[gid]
            if (gid, uid) not in self.members:
                raise ValueError(f"user {uid} is not a member of guild {gid}")
            member = self.member_json(gid, uid, with_permissions_in=ch)
            if member_permissions is not None:
                member["permissions"] = str(_perm_value(member_permissions))
            granted = _INTERACTION_ONLY_PERMISSIONS if foreign else self.permissions_in(ch, self.application_id)
            payload.update(
                guild_id=str(gid),
                guild={"id": str(gid), "locale": g["preferred_locale"], "features": list(g["features"])},
                guild_locale=g["preferred_locale"],
                member=member,
                app_permissions=str(_perm_value(app_permissions) if app_permissions is not None else granted),
                authorizing_integration_owners=owners,
                context=0,
            )
            user_json = member["user"]
        else:
            user_json = copy.deepcopy(self.users[uid])
            granted = _DM_PERMISSIONS if bot_dm else _INTERACTION_ONLY_PERMISSIONS
            payload.update(
                user=user_json,
                app_permissions=str(_perm_value(app_permissions) if app_permissions is not None else granted),
                authorizing_integration_owners=owners,
                context=1 if bot_dm else 2,
            )
        rec = _Interaction(iid, token, itype, _id(ch), gid, user_json, name, message_id, owners=owners)
        self._interactions[iid] = rec
        self._by_token[token] = rec
        return payload, rec

    def _partial_channel(self, ch: dict[str, Any], uid: int) -> dict[str, Any]:
        keys = (
            "id",
            "type",
            "guild_id",
            "name",
            "parent_id",
            "position",
            "topic",
            "nsfw",
            "flags",
            "last_message_id",
            "rate_limit_per_user",
            "thread_metadata",
            "owner_id",
            "member_count",
            "message_count",
            "total_message_sent",
            "recipients",
            "permission_overwrites",
        )
        out = {k: copy.deepcopy(ch[k]) for k in keys if k in ch}
        out["permissions"] = str(self.permissions_in(ch, uid))
        return out

    def slash_interaction(
        self,
        name: str,
        *,
        channel: Any,
        user: Any,
        options: Mapping[str, Any] | None = None,
        group: str | None = None,
        subcommand: str | None = None,
        locale: str = "en-US",
        app_permissions: Any = None,
        member_permissions: Any = None,
        installed_by: str | None = None,
        _focused: str | None = None,
    ) -> dict[str, Any]:
        """A CHAT_INPUT application-command interaction. ``options`` maps option names to
        values: str/int/float/bool, attachment dicts (→ ``resolved.attachments``), user/member
        dicts (→ ``resolved.users/members``), channel dicts, role dicts. When the command was
        synced to the double, names and types are checked against its definition."""
        ch = self.channels[_id(channel)]
        gid = int(ch["guild_id"]) if ch.get("guild_id") else None
        cmd = self._find_command(name, gid, 1)
        itype = 4 if _focused else 2
        payload, rec = self._base_interaction(
            itype,
            channel,
            user,
            locale=locale,
            app_permissions=app_permissions,
            member_permissions=member_permissions,
            name=name,
            installed_by=installed_by,
        )
        resolved: dict[str, dict[str, Any]] = {}
        defs = cmd.get("options", []) if cmd else None
        leaf_defs = defs
        path = [name]
        for level, sub_type in ((group, 2), (subcommand, 1)):
            if level is None:
                continue
            path.append(level)
            if leaf_defs is not None:
                match = next((o for o in leaf_defs if o["name"] == level and o["type"] == sub_type), None)
                if match is None:
                    raise ValueError(f"/{' '.join(path)}: no such {'group' if sub_type == 2 else 'subcommand'} in the synced command")
                leaf_defs = match.get("options", [])
        leaf = self._build_options(options or {}, leaf_defs, resolved, gid, focused=_focused, path=path)
        if subcommand is not None:
            leaf = [{"type": 1, "name": subcommand, "options": leaf}]
        if group is not None:
            leaf = [{"type": 2, "name": group, "options": leaf}]
        data: dict[str, Any] = {"id": cmd["id"] if cmd else str(self._sf.next()), "name": name, "type": 1}
        if leaf:
            data["options"] = leaf
        if resolved:
            data["resolved"] = resolved
        if cmd and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload["data"] = data
        return payload

    def autocomplete_interaction(
        self, name: str, *, focused: str, channel: Any, user: Any, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND_AUTOCOMPLETE interaction; ``focused`` names the option being typed
        (its value in ``options`` is the partial text, "" if absent)."""
        opts = dict(options or {})
        opts.setdefault(focused, "")
        return self.slash_interaction(name, channel=channel, user=user, options=opts, _focused=focused, **kwargs)

    def _build_options(
        self,
        values: Mapping[str, Any],
        defs: list[dict[str, Any]] | None,
        resolved: dict[str, dict[str, Any]],
        gid: int | None,
        *,
        focused: str | None,
        path: list[str],
    ) -> list[dict[str, Any]]:
        out = []
        if defs is not None:
            unknown = [n for n in values if n not in {d["name"] for d in defs}]
            if unknown:
                raise ValueError(f"/{' '.join(path)}: no option {unknown} in the synced command (has {[d['name'] for d in defs]})")
            missing = [d["name"] for d in defs if d.get("required") and d["type"] not in (1, 2) and d["name"] not in values]
            if missing and focused is None:
                raise ValueError(f"/{' '.join(path)}: required options missing: {missing}")
        for opt_name, value in values.items():
            otype = None
            if defs is not None:
                otype = next(d["type"] for d in defs if d["name"] == opt_name)
            otype = otype or self._infer_option_type(value)
            if focused == opt_name:
                out.append({"type": otype, "name": opt_name, "value": str(value), "focused": True})
                continue
            out.append({"type": otype, "name": opt_name, "value": self._option_value(otype, value, resolved, gid, opt_name)})
        return out

    @staticmethod
    def _infer_option_type(value: Any) -> int:
        if isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return 4
        if isinstance(value, float):
            return 10
        if isinstance(value, Mapping):
            if "filename" in value:
                return 11
            if "username" in value or "user" in value:
                return 6
            if "permissions" in value and "type" not in value:
                return 8
            if "type" in value:
                return 7
        return 3

    def _option_value(self, otype: int, value: Any, resolved: dict[str, dict[str, Any]], gid: int | None, name: str) -> Any:
        if otype == 11:
            if not isinstance(value, Mapping) or "filename" not in value:
                raise ValueError(f"option {name!r} is an attachment: pass dd.add_attachment(...)")
            resolved.setdefault("attachments", {})[value["id"]] = copy.deepcopy(dict(value))
            return value["id"]
        if otype in (6, 9) and isinstance(value, Mapping) and ("username" in value or "user" in value):
            uid = _id(value)
            resolved.setdefault("users", {})[str(uid)] = copy.deepcopy(self.users[uid])
            if gid is not None and (gid, uid) in self.members:
                m = self.member_json(gid, uid)
                m.pop("user")
                resolved.setdefault("members", {})[str(uid)] = m
            return str(uid)
        if otype == 7:
            ch = self.channels[_id(value)]
            resolved.setdefault("channels", {})[ch["id"]] = {
                k: copy.deepcopy(ch[k]) for k in ("id", "type", "name", "parent_id", "thread_metadata") if k in ch
            } | {"permissions": str(self.permissions_in(ch, self.application_id))}
            return ch["id"]
        if otype in (8, 9) and isinstance(value, Mapping):
            role = copy.deepcopy(dict(value))
            resolved.setdefault("roles", {})[role["id"]] = role
            return role["id"]
        if otype == 4:
            return int(value)
        if otype == 10:
            return float(value)
        if otype == 5:
            return bool(value)
        return str(value)

    def component_interaction(
        self,
        message: Any,
        custom_id: str,
        *,
        user: Any,
        component_type: int = 2,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
        app_permissions: Any = None,
        member_permissions: Any = None,
        installed_by: str | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_COMPONENT interaction (button: type 2; string select: 3 with ``values``) on a
        stored message — usually one the bot sent. Raises if the message has no such custom_id."""
        msg = self.messages[_id(message)]
        ids = {c.get("custom_id") for c in _walk_components(msg.get("components", []))}
        if custom_id not in ids:
            raise ValueError(f"message {msg['id']} has no component with custom_id {custom_id!r} (has {sorted(i for i in ids if i)})")
        ch = self.channels[int(msg["channel_id"])]
        payload, rec = self._base_interaction(
            3,
            ch,
            user,
            locale=locale,
            app_permissions=app_permissions,
            member_permissions=member_permissions,
            message_id=_id(msg),
            installed_by=installed_by,
        )
        payload["message"] = copy.deepcopy(msg)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None or component_type in (3, 5, 6, 7, 8):
            data["values"] = list(values or [])
        payload["data"] = data
        return payload

    def modal_submit_interaction(
        self,
        custom_id: str,
        fields: Mapping[str, str | Sequence[dict[str, Any]]],
        *,
        channel: Any,
        user: Any,
        message: Any = None,
        modal: Mapping[str, Any] | None = None,
        locale: str = "en-US",
        app_permissions: Any = None,
        member_permissions: Any = None,
        installed_by: str | None = None,
    ) -> dict[str, Any]:
        """A MODAL_SUBMIT interaction. ``fields`` maps component custom_ids to a text value or a
        list of attachment dicts (file upload → ``resolved.attachments``). Pass ``modal`` (the
        data of the bot's type-9 callback, e.g. ``dd.last_modal()``) to mirror its layout
        (action rows vs. labels) and check the ids; otherwise labels are used."""
        ch = self.channels[_id(channel)]
        payload, rec = self._base_interaction(
            5,
            ch,
            user,
            locale=locale,
            app_permissions=app_permissions,
            member_permissions=member_permissions,
            message_id=_id(message) if message is not None else None,
            installed_by=installed_by,
        )
        resolved: dict[str, dict[str, Any]] = {}

        def submitted(cid: str, kind: int | None, num: int = 0) -> dict[str, Any]:
            value = fields[cid]
            if isinstance(value, str):
                return {"type": kind or 4, "id": num, "custom_id": cid, "value": value}
            for att in value:
                resolved.setdefault("attachments", {})[att["id"]] = copy.deepcopy(dict(att))
            return {"type": kind or 19, "id": num, "custom_id": cid, "values": [a["id"] for a in value]}

        comps: list[dict[str, Any]] = []
        if modal is not None:
            if modal.get("custom_id") != custom_id:
                raise ValueError(f"modal custom_id is {modal.get('custom_id')!r}, not {custom_id!r}")
            known = {c.get("custom_id") for c in _walk_components(modal.get("components", []))}
            unknown = set(fields) - known
            if unknown:
                raise ValueError(f"modal has no inputs {sorted(unknown)} (has {sorted(k for k in known if k)})")
            for i, top in enumerate(modal.get("components", []), 1):
                if top.get("type") == 1:
                    inner = [
                        submitted(c["custom_id"], c.get("type"), c.get("id", 0))
                        for c in top.get("components", [])
                        if c.get("custom_id") in fields
                    ]
                    if inner:
                        comps.append({"type": 1, "id": i, "components": inner})
                elif top.get("type") == 18 and top.get("component", {}).get("custom_id") in fields:
                    inner_c = top["component"]
                    comps.append(
                        {
                            "type": 18,
                            "id": top.get("id", i),
                            "component": submitted(inner_c["custom_id"], inner_c.get("type"), inner_c.get("id", 0)),
                        }
                    )
        else:
            for i, cid in enumerate(fields, 1):
                comps.append({"type": 18, "id": i, "component": submitted(cid, None)})
        data: dict[str, Any] = {"custom_id": custom_id, "components": comps}
        if resolved:
            data["resolved"] = resolved
        payload["data"] = data
        if message is not None:
            payload["message"] = copy.deepcopy(self.messages[_id(message)])
        return payload

    def message_command_interaction(
        self,
        name: str,
        target: Any,
        *,
        user: Any,
        locale: str = "en-US",
        app_permissions: Any = None,
        member_permissions: Any = None,
        installed_by: str | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE context-menu command (type 3) on a stored message: ``target_id`` +
        ``resolved.messages`` (content always included, as Discord does for targets)."""
        msg = self.messages[_id(target)]
        ch = self.channels[int(msg["channel_id"])]
        gid = int(ch["guild_id"]) if ch.get("guild_id") else None
        cmd = self._find_command(name, gid, 3)
        payload, rec = self._base_interaction(
            2,
            ch,
            user,
            locale=locale,
            app_permissions=app_permissions,
            member_permissions=member_permissions,
            name=name,
            installed_by=installed_by,
        )
        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self._sf.next()),
            "name": name,
            "type": 3,
            "target_id": msg["id"],
            "resolved": {"messages": {msg["id"]: copy.deepcopy(msg)}},
        }
        if cmd and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload["data"] = data
        return payload

    async def interact(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Dispatch an interaction built above (INTERACTION_CREATE); returns the payload.
        A command its synced definition keeps out of this place raises
        :class:`CommandUnavailable` (Discord would not have offered it)."""
        if payload.get("type") in (2, 4):
            self.check_available(payload)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def check_available(self, payload: Mapping[str, Any]) -> None:
        """Discord offers a command only in the contexts and to the installs it was synced for:
        ``integration_types`` (0 guild install, 1 user install) and ``contexts`` (0 guild,
        1 the bot's DM, 2 group DMs and other DMs). Guild-scoped commands exist only in their
        guild, through its install."""
        data = payload.get("data") or {}
        gid = int(payload["guild_id"]) if payload.get("guild_id") else None
        cmd = self._find_command(str(data.get("name")), gid if gid not in self.foreign_guilds else None, int(data.get("type", 1)))
        if cmd is None:
            return  # not synced (a test building payloads by hand): nothing to check against
        owners = payload.get("authorizing_integration_owners") or {}
        context = int(payload.get("context", 0))
        where = f"/{data.get('name')} in context {context} installed by {sorted(owners)}"
        if cmd.get("guild_id"):
            if "0" not in owners:
                raise CommandUnavailable(f"{where}: a guild command needs the guild's install")
            return
        types = cmd.get("integration_types") or [0]
        if not any(int(k) in types for k in owners):
            raise CommandUnavailable(f"{where}: the command is registered for integration types {types}")
        contexts = cmd.get("contexts")
        if contexts is None:
            contexts = [0, 1, 2] if cmd.get("dm_permission", True) else [0]
        if context not in contexts:
            raise CommandUnavailable(f"{where}: the command is registered for contexts {contexts}")

    # --- interaction inspection

    def _rec(self, interaction: Any) -> _Interaction:
        return self._interactions[_id(interaction)]

    def response_type(self, interaction: Any) -> int | None:
        """The callback type the bot answered with (4 message, 5 defer, 6 deferred update,
        7 update, 8 autocomplete, 9 modal), or None."""
        return self._rec(interaction).response_type

    def response_data(self, interaction: Any) -> Any:
        """The ``data`` of the bot's callback (message payload, modal, autocomplete choices)."""
        return copy.deepcopy(self._rec(interaction).response_data)

    def original_message(self, interaction: Any) -> dict[str, Any] | None:
        rec = self._rec(interaction)
        return copy.deepcopy(self.messages.get(rec.original_id)) if rec.original_id else None

    def followup_messages(self, interaction: Any) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.messages[m]) for m in self._rec(interaction).followups if m in self.messages]

    def is_ephemeral(self, message: Any) -> bool:
        return _id(message) in self._ephemeral

    def last_modal(self) -> dict[str, Any] | None:
        """The data of the most recent modal (type 9 callback) the bot opened."""
        for call in reversed(self.calls):
            if call.status < 300 and call.path.endswith("/callback") and isinstance(call.json, dict) and call.json.get("type") == 9:
                return copy.deepcopy(call.json["data"])
        return None

    def expire_interaction_tokens(self, interaction: Any = None) -> None:
        """From now on, webhook calls with these tokens get 401 50027 (as after 15 minutes),
        and callbacks get 404 10062. Without an argument: every token issued so far."""
        recs = [self._rec(interaction)] if interaction is not None else list(self._interactions.values())
        for rec in recs:
            rec.expired = True

    def _token_expired(self, rec: _Interaction) -> bool:
        if rec.expired:
            return True
        return rec.dispatched_at is not None and self.now() - rec.dispatched_at > self.interaction_token_ttl

    def now(self) -> float:
        """The double's clock (monotonic seconds, moved on by :meth:`advance`)."""
        return time.monotonic() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the double's clock on (e.g. past the 15 minutes an interaction token lives)."""
        self._clock_offset += seconds

    # ------------------------------------------------------------------ command inspection

    def synced_commands(self, guild: Any = None) -> list[dict[str, Any]]:
        return copy.deepcopy(self.commands.get(_id(guild) if guild is not None else None, []))

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        method: str,
        path_regex: str,
        status: int,
        json_body: Any = None,
        *,
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
        retry_after: float = 0.05,
    ) -> Fault:
        """Answer the next ``times`` (None: all) requests matching ``method`` ("*" for any) and
        ``path_regex`` (searched in the path relative to the API base) with ``status``.
        429s carry ``retry_after`` and the ``Via`` header discord.py needs to retry them.
        A ``str`` body is sent as text/html (what a proxy in front of Discord answers)."""
        body = json_body
        hdrs = dict(headers or {})
        if status == 429:
            body = body if body is not None else {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            hdrs.setdefault("Via", "1.1 google")
            hdrs.setdefault("Retry-After", str(max(1, int(retry_after + 0.999))))
            hdrs.setdefault("X-RateLimit-Scope", "user")
        elif body is None:
            body = _DEFAULT_FAULT_BODIES.get(status, {"message": f"{status}", "code": 0})
        fault = Fault(method.upper(), re.compile(path_regex), status, body, times, hdrs)
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    # ------------------------------------------------------------------ call inspection

    def mark(self) -> int:
        """A position in ``calls``; pass it as ``since`` to look only at later calls."""
        return len(self.calls)

    def find(self, method: str, path_regex: str, *, since: int = 0, status: int | None = None) -> list[Call]:
        rx = re.compile(path_regex)
        return [
            c
            for c in self.calls[since:]
            if (method == "*" or c.method == method.upper()) and rx.search(c.path) and (status is None or c.status == status)
        ]

    async def wait_for(
        self, method: str, path_regex: str, *, since: int = 0, predicate: Callable[[Call], bool] | None = None, timeout: float = 5.0
    ) -> Call:
        """The first call (at or after ``since``) matching method/path/predicate, waiting for it."""
        rx = re.compile(path_regex)

        def match(c: Call) -> bool:
            return (
                c.index >= since
                and (method == "*" or c.method == method.upper())
                and rx.search(c.path) is not None
                and (predicate is None or predicate(c))
            )

        for c in self.calls[since:]:
            if match(c):
                return c
        fut: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        entry = (match, fut)
        self._call_waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            seen = "\n  ".join(repr(c) for c in self.calls[since:]) or "(none)"
            raise TimeoutError(f"no {method} {path_regex} within {timeout}s; calls since #{since}:\n  {seen}") from None
        finally:
            if entry in self._call_waiters:
                self._call_waiters.remove(entry)

    def _notify_call(self, call: Call) -> None:
        for match, fut in list(self._call_waiters):
            if not fut.done() and match(call):
                fut.set_result(call)

    # ------------------------------------------------------------------ gateway

    @property
    def intents(self) -> int | None:
        """Intents of the latest IDENTIFY."""
        return self.identifies[-1].get("intents") if self.identifies else None

    async def wait_until_identified(self, timeout: float = 10.0) -> None:
        assert self._session_ready is not None
        await asyncio.wait_for(self._session_ready.wait(), timeout)

    def _live_sessions(self) -> list[_Session]:
        return [s for s in self._sessions.values() if s.alive]

    async def dispatch(self, event: str, data: dict[str, Any], *, exact: bool = False, timeout: float = 5.0) -> bool:
        """Send a DISPATCH event to the bot's gateway session(s) and wait until it is written.
        Applies Discord's rules unless ``exact``: events need their intent (returns False if no
        session may receive it) and message content is blanked without MESSAGE_CONTENT.
        Waits up to ``timeout`` for a session to exist."""
        if event == "INTERACTION_CREATE" and "id" in data and int(data["id"]) in self._interactions:
            self._interactions[int(data["id"])].dispatched_at = self.now()
        if not self._live_sessions():
            assert self._session_ready is not None
            try:
                await asyncio.wait_for(self._session_ready.wait(), timeout)
            except TimeoutError:
                raise RuntimeError(f"no gateway session to dispatch {event} to (is the bot connected?)") from None
        futures = self._emit(event, data, exact=exact, guild_id=_guild_of(data))
        if futures is None:
            return False
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        return True

    def _emit(
        self, event: str, data: dict[str, Any], *, guild_id: int | None = None, exact: bool = False
    ) -> list[asyncio.Future[None]] | None:
        """Queue an event to every session allowed to see it. None if none was."""
        sent = False
        futures: list[asyncio.Future[None]] = []
        if guild_id is not None and guild_id in self._quiet and event != "INTERACTION_CREATE":
            return None
        for s in self._live_sessions():
            if not s.owns_guild(guild_id):
                continue
            payload = data
            if not exact:
                needed = _intent_for(event, data)
                if needed and not s.intents & needed:
                    continue
                if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not s.intents & Intent.MESSAGE_CONTENT:
                    payload = self._without_content(data)
            fut = self._send_dispatch(s, event, payload)
            sent = True
            if fut is not None:
                futures.append(fut)
        return futures if sent else None

    def _send_dispatch(self, s: _Session, event: str, data: Any) -> asyncio.Future[None] | None:
        s.seq += 1
        payload = {"op": 0, "t": event, "s": s.seq, "d": copy.deepcopy(data)}
        s.buffer.append(payload)
        del s.buffer[:-1000]
        if s.conn is None or s.conn.ws.closed:
            return None  # delivered on RESUME
        fut = asyncio.get_running_loop().create_future()
        s.conn.put(payload, fut)
        return fut

    def _without_content(self, msg: dict[str, Any]) -> dict[str, Any]:
        """What a bot without the MESSAGE_CONTENT intent receives: no text, embeds, attachments,
        components or poll, except its own messages, DMs and messages mentioning it."""
        out = dict(msg)
        bot_id = self.bot_user["id"]
        own = out.get("author", {}).get("id") == bot_id
        mentioned = any(u.get("id") == bot_id for u in out.get("mentions", []))
        if not own and not mentioned and out.get("guild_id"):
            out.update(content="", embeds=[], attachments=[], components=[])
            out.pop("poll", None)
        if isinstance(out.get("referenced_message"), dict):
            ref = dict(out["referenced_message"])
            ref.setdefault("guild_id", out.get("guild_id"))
            out["referenced_message"] = self._without_content(ref)
        return out

    def _emit_guild_create(self, gid: int) -> None:
        """The bot joined a guild: GUILD_CREATE without ``unavailable`` (discord.py: on_guild_join)."""
        for s in self._live_sessions():
            if s.owns_guild(gid) and s.intents & Intent.GUILDS:
                payload = self.guild_json(gid, for_gateway=True, all_members=bool(s.intents & Intent.GUILD_PRESENCES))
                payload.pop("unavailable")
                self._send_dispatch(s, "GUILD_CREATE", payload)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: discord.py closes and RESUMEs (events queued meanwhile are replayed)."""
        for s in self._live_sessions():
            if s.conn is not None:
                fut = asyncio.get_running_loop().create_future()
                s.conn.put({"op": 7, "d": None}, fut)
                await fut

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        self.gateway_urls.append(str(request.url))
        conn = _Conn(ws, zlib_stream=request.query.get("compress") == "zlib-stream")
        self._conns.add(conn)
        conn.put({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["discord-double"]}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    data = json.loads(msg.data.decode())
                else:
                    break
                await self._on_gateway(conn, data)
        finally:
            # drain what was queued before the socket went away, then stop the writer
            s = conn.session
            if s is not None:
                if ws.close_code in (1000, 1001):
                    s.alive = False  # a clean close ends the session (Discord will not resume it)
                    self._sessions.pop(s.id, None)
                if s.conn is conn:
                    s.conn = None
            conn.writer.cancel()
            with contextlib.suppress(BaseException):
                await conn.writer
            self._conns.discard(conn)
            if not self._live_sessions() and self._session_ready is not None:
                self._session_ready.clear()
        return ws

    async def _close_ws(self, conn: _Conn, code: int, reason: str) -> None:
        await conn.ws.close(code=code, message=reason.encode())

    async def _on_gateway(self, conn: _Conn, data: dict[str, Any]) -> None:
        op, d = data.get("op"), data.get("d")
        if op == 1:
            conn.put({"op": 11, "s": None, "t": None, "d": None})
            return
        self.gateway_received.append(data)
        if op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif op == 8:
            self._request_members(conn, d or {})
        # op 3 presence, op 4 voice state: recorded above, nothing to answer

    async def _identify(self, conn: _Conn, d: dict[str, Any]) -> None:
        self.identifies.append(d)
        if d.get("token") != self.token:
            await self._close_ws(conn, 4004, "Authentication failed.")
            return
        if "intents" not in d:
            await self._close_ws(conn, 4013, "Invalid intent(s).")
            return
        intents = int(d["intents"])
        allowed = 0
        for name, bit in _PRIVILEGED.items():
            if name in self.privileged_intents:
                allowed |= bit
        if intents & (Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT) & ~allowed:
            await self._close_ws(conn, 4014, "Disallowed intent(s).")
            return
        shard = tuple(d["shard"]) if d.get("shard") else None
        if shard is not None and not (0 <= shard[0] < shard[1]):
            await self._close_ws(conn, 4010, "Invalid shard.")
            return
        s = _Session(id=secrets.token_hex(16), intents=intents, shard=shard)  # type: ignore[arg-type]
        s.conn = conn
        conn.session = s
        self._sessions[s.id] = s
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**copy.deepcopy(self.bot_user), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [
                {"id": str(gid), "unavailable": True} for gid in self.guilds if s.owns_guild(gid) and gid not in self.foreign_guilds
            ],
            "session_id": s.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["discord-double"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        self._send_dispatch(s, "READY", ready)
        index = self._by_guild()
        for gid in list(self.guilds):
            if s.owns_guild(gid) and intents & Intent.GUILDS and gid not in self.foreign_guilds:
                shown = self.guild_json(gid, for_gateway=True, all_members=bool(intents & Intent.GUILD_PRESENCES), index=index)
                self._send_dispatch(s, "GUILD_CREATE", shown)
        assert self._session_ready is not None
        self._session_ready.set()

    async def _resume(self, conn: _Conn, d: dict[str, Any]) -> None:
        s = self._sessions.get(d.get("session_id", ""))
        if d.get("token") != self.token:
            await self._close_ws(conn, 4004, "Authentication failed.")
            return
        if s is None or not s.alive:
            conn.put({"op": 9, "s": None, "t": None, "d": False})
            return
        s.conn = conn
        conn.session = s
        since = d.get("seq") or 0
        for payload in s.buffer:
            if payload["s"] > since:
                conn.put(payload)
        self._send_dispatch(s, "RESUMED", {"_trace": ["discord-double"]})
        assert self._session_ready is not None
        self._session_ready.set()

    def _request_members(self, conn: _Conn, d: dict[str, Any]) -> None:
        s = conn.session
        if s is None:
            return
        gid = int(d["guild_id"])
        uids = [uid for (mg, uid) in self.members if mg == gid]
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            uids = [u for u in uids if u in wanted]
        elif d.get("query"):
            q = str(d["query"]).lower()
            uids = [u for u in uids if self.users[u]["username"].lower().startswith(q)]
        if d.get("limit"):
            uids = uids[: int(d["limit"])]
        chunk = {"guild_id": str(gid), "members": [self.member_json(gid, u) for u in uids], "chunk_index": 0, "chunk_count": 1}
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        self._send_dispatch(s, "GUILD_MEMBERS_CHUNK", chunk)

    def _application_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if "presences" in self.privileged_intents:
            flags |= 1 << 13
        if "members" in self.privileged_intents:
            flags |= 1 << 15
        if "message_content" in self.privileged_intents:
            flags |= 1 << 19
        return flags

    # ------------------------------------------------------------------ REST plumbing

    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        call = await self._record(request, path)
        try:
            status, body, headers = await self._handle(call)
        except ApiError as e:
            status, body, headers = e.status, e.body, e.headers
        call.status, call.response = status, copy.deepcopy(body)
        call.index = len(self.calls)
        self.calls.append(call)
        self._notify_call(call)
        if status == 204 or body is None:
            return web.Response(status=204 if status < 300 else status, headers=headers)
        if isinstance(body, str):  # e.g. Cloudflare's HTML 413 page: discord.py sees code 0
            return web.Response(text=body, status=status, headers=headers, content_type="text/html")
        # Exactly "application/json": discord.py compares the header verbatim (a charset
        # suffix makes it treat the body as text), and that is what Discord sends.
        return web.Response(body=json.dumps(body).encode(), status=status, headers={**headers, "Content-Type": "application/json"})

    async def _record(self, request: web.Request, path: str) -> Call:
        files: list[Upload] = []
        form: dict[str, str] = {}
        body: Any = None
        multipart = request.content_type.startswith("multipart/")
        if multipart:
            reader = await request.multipart()
            async for part in reader:
                if part is None:
                    break
                raw = await part.read(decode=False)  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                filename = part.filename  # type: ignore[union-attr]
                if filename is not None:
                    files.append(Upload(name, filename, part.headers.get("Content-Type"), bytes(raw)))  # type: ignore[union-attr]
                elif name == "payload_json":
                    body = json.loads(bytes(raw).decode())
                else:
                    form[name] = bytes(raw).decode(errors="replace")
        else:
            raw_body = await request.read()
            if raw_body:
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    body = raw_body.decode(errors="replace")
        return Call(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers=dict(request.headers),
            json=body,
            files=files,
            form=form,
            multipart=multipart,
        )

    _ROUTES: list[tuple[str, str, str]] = [
        ("GET", r"/gateway", "_get_gateway"),
        ("GET", r"/gateway/bot", "_get_gateway_bot"),
        ("GET", r"/users/@me", "_get_me"),
        ("GET", r"/users/(?P<uid>\d+)", "_get_user"),
        ("POST", r"/users/@me/channels", "_open_dm"),
        ("GET", r"/(?:oauth2/)?applications/@me", "_get_application"),
        ("GET", r"/applications/(?P<app>\d+)(?:/guilds/(?P<gid>\d+))?/commands", "_get_commands"),
        ("PUT", r"/applications/(?P<app>\d+)(?:/guilds/(?P<gid>\d+))?/commands", "_put_commands"),
        ("POST", r"/applications/(?P<app>\d+)(?:/guilds/(?P<gid>\d+))?/commands", "_post_command"),
        ("GET", r"/applications/(?P<app>\d+)/guilds/(?P<gid>\d+)/commands/permissions", "_get_command_permissions"),
        ("GET", r"/applications/(?P<app>\d+)(?:/guilds/(?P<gid>\d+))?/commands/(?P<cmd>\d+)", "_get_command"),
        ("PATCH", r"/applications/(?P<app>\d+)(?:/guilds/(?P<gid>\d+))?/commands/(?P<cmd>\d+)", "_patch_command"),
        ("DELETE", r"/applications/(?P<app>\d+)(?:/guilds/(?P<gid>\d+))?/commands/(?P<cmd>\d+)", "_delete_command"),
        ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", "_callback"),
        ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", "_webhook_execute"),
        ("GET", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)", "_webhook_get"),
        ("PATCH", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)", "_webhook_edit"),
        ("DELETE", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)", "_webhook_delete"),
        ("GET", r"/channels/(?P<cid>\d+)", "_get_channel"),
        ("PATCH", r"/channels/(?P<cid>\d+)", "_patch_channel"),
        ("DELETE", r"/channels/(?P<cid>\d+)", "_delete_channel"),
        ("GET", r"/channels/(?P<cid>\d+)/messages", "_list_messages"),
        ("POST", r"/channels/(?P<cid>\d+)/messages", "_create_message"),
        ("GET", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", "_get_message"),
        ("PATCH", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", "_edit_message"),
        ("DELETE", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", "_delete_message"),
        ("POST", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/threads", "_thread_from_message"),
        ("POST", r"/channels/(?P<cid>\d+)/threads", "_thread_without_message"),
        ("PUT", r"/channels/(?P<cid>\d+)/thread-members/(?P<uid>@me|\d+)", "_no_content"),
        ("DELETE", r"/channels/(?P<cid>\d+)/thread-members/(?P<uid>@me|\d+)", "_no_content"),
        ("PUT", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions/(?P<emoji>[^/]+)/@me", "_add_reaction"),
        (
            "DELETE",
            r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions(?:/(?P<emoji>[^/]+)(?:/(?P<uid>@me|\d+))?)?",
            "_remove_reaction",
        ),
        ("POST", r"/channels/(?P<cid>\d+)/typing", "_typing"),
        ("GET", r"/guilds/(?P<gid>\d+)", "_get_guild"),
        ("GET", r"/guilds/(?P<gid>\d+)/channels", "_get_guild_channels"),
        ("GET", r"/guilds/(?P<gid>\d+)/roles", "_get_roles"),
        ("GET", r"/guilds/(?P<gid>\d+)/members/(?P<uid>\d+)", "_get_member"),
        ("GET", r"/guilds/(?P<gid>\d+)/threads/active", "_active_threads"),
    ]
    _COMPILED = [(m, re.compile(p + r"/?$"), h) for m, p, h in _ROUTES]

    async def _handle(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        for fault in self._faults:
            if fault.matches(call.method, call.path):
                fault.hits += 1
                return fault.status, copy.deepcopy(fault.body), dict(fault.headers)
        handler = None
        params: dict[str, str] = {}
        for method, rx, name in self._COMPILED:
            m = rx.match(call.path)
            if m and method == call.method:
                handler, params = getattr(self, name), {k: v for k, v in m.groupdict().items() if v is not None}
                break
        if handler is None:
            self.unhandled.append(call)
            raise ApiError(404, 0, "404: Not Found")
        token_routes = call.path.startswith(("/webhooks/", "/interactions/"))
        if not token_routes and call.headers.get("Authorization") != f"Bot {self.token}":
            raise ApiError(401, 0, "401: Unauthorized")
        result = await handler(call, **params)
        if isinstance(result, tuple):
            return result[0], result[1], {}
        return (200, result, {}) if result is not None else (204, None, {})

    # ------------------------------------------------------------------ REST: identity

    async def _get_gateway(self, call: Call) -> Any:
        return {"url": self.gateway_url}

    async def _get_gateway_bot(self, call: Call) -> Any:
        return {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1},
        }

    async def _get_me(self, call: Call) -> Any:
        return {**copy.deepcopy(self.bot_user), "verified": True, "mfa_enabled": False, "locale": "en-US", "email": None, "bio": ""}

    async def _get_user(self, call: Call, uid: str) -> Any:
        user = self.users.get(int(uid))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return copy.deepcopy(user)

    async def _open_dm(self, call: Call) -> Any:
        uid = int((call.json or {}).get("recipient_id", 0))
        if uid not in self.users:
            raise _form_error(["recipient_id"], "NUMBER_TYPE_COERCE", "Value is not a known user.")
        return self.add_dm_channel(uid)

    async def _get_application(self, call: Call) -> Any:
        return {
            "id": str(self.application_id),
            "name": self.bot_user["global_name"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(),
            "owner": copy.deepcopy(self.owner_user),
            "team": None,
            "flags": self._application_flags(),
            "bot": copy.deepcopy(self.bot_user),
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": str(DEFAULT_BOT_PERMISSIONS)},
            "integration_types_config": {"0": {}, "1": {}},
            "approximate_guild_count": len(self.guilds),
            "redirect_uris": [],
            "rpc_origins": [],
        }

    # ------------------------------------------------------------------ REST: commands

    def _check_app(self, app: str) -> None:
        if int(app) != self.application_id:
            raise ApiError(403, 50001, "Missing Access")

    async def _get_commands(self, call: Call, app: str, gid: str | None = None) -> Any:
        self._check_app(app)
        return self.synced_commands(int(gid) if gid else None)

    async def _get_command_permissions(self, call: Call, app: str, gid: str) -> Any:
        return []

    def _normalize_command(
        self, data: dict[str, Any], gid: int | None, existing: list[dict[str, Any]], index: int | None = None
    ) -> dict[str, Any]:
        where: list[str | int] = [index] if index is not None else []
        _validate_command(data, where)
        ctype = data.get("type", 1)
        old = next((c for c in existing if c["name"] == data["name"] and c.get("type", 1) == ctype), None)
        cmd = copy.deepcopy(data)
        cmd.update(
            id=old["id"] if old else str(self._sf.next()),
            application_id=str(self.application_id),
            version=str(self._sf.next()),
            type=ctype,
        )
        cmd.setdefault("description", "")
        cmd.setdefault("default_member_permissions", None)
        cmd.setdefault("nsfw", False)
        if gid is not None:
            cmd["guild_id"] = str(gid)
        else:
            cmd.setdefault("contexts", None)
            cmd.setdefault("integration_types", [0])
            cmd.setdefault("dm_permission", True)
        return cmd

    async def _put_commands(self, call: Call, app: str, gid: str | None = None) -> Any:
        self._check_app(app)
        g = int(gid) if gid else None
        if g is not None and g not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        body = call.json if isinstance(call.json, list) else []
        if len(body) > 100:
            raise _form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        existing = self.commands.get(g, [])
        new = [self._normalize_command(c, g, existing, i) for i, c in enumerate(body)]
        names = [(c["name"], c["type"]) for c in new]
        if len(set(names)) != len(names):
            raise _form_error([], "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique")
        self.commands[g] = new
        return copy.deepcopy(new)

    async def _post_command(self, call: Call, app: str, gid: str | None = None) -> Any:
        self._check_app(app)
        g = int(gid) if gid else None
        existing = self.commands.setdefault(g, [])
        cmd = self._normalize_command(call.json or {}, g, existing)
        existing[:] = [c for c in existing if c["id"] != cmd["id"]] + [cmd]
        return 201, copy.deepcopy(cmd)

    def _command(self, app: str, gid: str | None, cmd: str) -> dict[str, Any]:
        self._check_app(app)
        for c in self.commands.get(int(gid) if gid else None, []):
            if c["id"] == cmd:
                return c
        raise ApiError(404, 10063, "Unknown application command")

    async def _get_command(self, call: Call, app: str, cmd: str, gid: str | None = None) -> Any:
        return copy.deepcopy(self._command(app, gid, cmd))

    async def _patch_command(self, call: Call, app: str, cmd: str, gid: str | None = None) -> Any:
        c = self._command(app, gid, cmd)
        merged = {**c, **(call.json or {})}
        _validate_command(merged, [])
        c.update(merged, version=str(self._sf.next()))
        return copy.deepcopy(c)

    async def _delete_command(self, call: Call, app: str, cmd: str, gid: str | None = None) -> Any:
        c = self._command(app, gid, cmd)
        self.commands[int(gid) if gid else None].remove(c)
        return None

    # ------------------------------------------------------------------ REST: interactions

    async def _callback(self, call: Call, iid: str, token: str) -> Any:
        rec = self._interactions.get(int(iid))
        if rec is None or rec.token != token or self._token_expired(rec):
            raise ApiError(404, 10062, "Unknown interaction")
        if self.ack_deadline is not None and rec.dispatched_at is not None and self.now() - rec.dispatched_at > self.ack_deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        if rec.response_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = call.json or {}
        rtype = body.get("type")
        data = body.get("data") or {}
        allowed = {
            2: {4, 5, 9, 10, 12},
            3: {4, 5, 6, 7, 9, 10, 12},
            4: {8},
            5: {4, 5, 6, 7, 10, 12} if rec.message_id else {4, 5, 10, 12},
        }[rec.type]
        if rtype not in allowed:
            raise _form_error(
                ["type"],
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Interaction response type {rtype} is not valid for interaction type {rec.type}.",
            )
        ch = self.channels.get(rec.channel_id) if rec.channel_id else None
        message: dict[str, Any] | None = None
        if rtype == 4:
            self._check_message_payload(data, call.files, creating=True, guild_id=rec.guild_id)
            message = self._message_from_payload(
                ch, data, call.files, author=self.bot_user, interaction=rec, ephemeral=bool(data.get("flags", 0) & _MESSAGE_FLAG_EPHEMERAL)
            )
            rec.original_id = _id(message)
        elif rtype == 5:
            ephemeral = bool(data.get("flags", 0) & _MESSAGE_FLAG_EPHEMERAL)
            message = self._interaction_message(
                ch,
                rec,
                {"content": "", "flags": _MESSAGE_FLAG_LOADING | (_MESSAGE_FLAG_EPHEMERAL if ephemeral else 0)},
                [],
                ephemeral=ephemeral,
            )
            rec.original_id = _id(message)
        elif rtype in (6, 7):
            rec.original_id = rec.message_id
            if rtype == 7:
                self._check_message_payload(data, call.files, creating=False, guild_id=rec.guild_id)
                message = self._apply_edit(self.messages[rec.message_id], data, call.files)
            else:
                message = copy.deepcopy(self.messages.get(rec.message_id))  # type: ignore[arg-type]
        elif rtype == 8:
            _validate_choices(data.get("choices", []))
        elif rtype == 9:
            _validate_modal(data)
        rec.response_type = rtype
        rec.response_data = copy.deepcopy(data)
        if self.callback_delay:  # acknowledged, the member sees it; the bot hears so later
            await asyncio.sleep(self.callback_delay)
        if not _truthy(call.query.get("with_response")):
            return None
        result: dict[str, Any] = {"interaction": {"id": str(rec.id), "type": rec.type}, "resource": {"type": rtype}}
        if message is not None:
            result["interaction"].update(
                response_message_id=message["id"],
                response_message_loading=bool(message["flags"] & _MESSAGE_FLAG_LOADING),
                response_message_ephemeral=bool(message["flags"] & _MESSAGE_FLAG_EPHEMERAL),
            )
            if rtype in (4, 5, 7):
                result["resource"]["message"] = copy.deepcopy(message)
        return result

    def _interaction_message(
        self, ch: dict[str, Any] | None, rec: _Interaction, payload: dict[str, Any], files: list[Upload], *, ephemeral: bool
    ) -> dict[str, Any]:
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return self._message_from_payload(ch, payload, files, author=self.bot_user, interaction=rec, ephemeral=ephemeral)

    def _token_rec(self, app: str, token: str) -> _Interaction:
        if int(app) != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        rec = self._by_token.get(token)
        if rec is None or self._token_expired(rec):
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return rec

    async def _webhook_execute(self, call: Call, app: str, token: str) -> Any:
        rec = self._token_rec(app, token)
        if rec.response_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")  # Discord: no followups before the ack
        data = call.json or {}
        self._check_message_payload(data, call.files, creating=True, guild_id=rec.guild_id)
        ch = self.channels.get(rec.channel_id) if rec.channel_id else None
        if rec.response_type == 5 and rec.original_id is not None and self.messages[rec.original_id]["flags"] & _MESSAGE_FLAG_LOADING:
            # Discord turns the first followup after a thinking defer into the original response.
            msg = self._apply_edit(self.messages[rec.original_id], data, call.files, clear_loading=True)
        else:
            msg = self._interaction_message(ch, rec, data, call.files, ephemeral=bool(data.get("flags", 0) & _MESSAGE_FLAG_EPHEMERAL))
            rec.followups.append(_id(msg))
        if not _truthy(call.query.get("wait")):
            return None
        return copy.deepcopy(msg)

    def _webhook_message(self, rec: _Interaction, mid: str) -> dict[str, Any]:
        target = rec.original_id if mid == "@original" else int(mid)
        if (
            target is None
            or target not in self.messages
            or (mid != "@original" and target not in rec.followups and target != rec.original_id)
        ):
            raise ApiError(404, 10008, "Unknown Message")
        return self.messages[target]

    async def _webhook_get(self, call: Call, app: str, token: str, mid: str) -> Any:
        rec = self._token_rec(app, token)
        return copy.deepcopy(self._webhook_message(rec, mid))

    async def _webhook_edit(self, call: Call, app: str, token: str, mid: str) -> Any:
        rec = self._token_rec(app, token)
        msg = self._webhook_message(rec, mid)
        data = call.json or {}
        self._check_message_payload(data, call.files, creating=False, guild_id=rec.guild_id)
        return copy.deepcopy(self._apply_edit(msg, data, call.files, clear_loading=True))

    async def _webhook_delete(self, call: Call, app: str, token: str, mid: str) -> Any:
        rec = self._token_rec(app, token)
        msg = self._webhook_message(rec, mid)
        self._remove_message(msg)
        return None

    # ------------------------------------------------------------------ REST: channels & messages

    def _channel(self, cid: str) -> dict[str, Any]:
        ch = self.channels.get(int(cid))
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        if int(cid) in self._invisible or (ch.get("guild_id") and not self.permissions_in(ch, self.application_id) & Perm.VIEW_CHANNEL):
            raise ApiError(403, 50001, "Missing Access")
        return ch

    def _message(self, ch: dict[str, Any], mid: str) -> dict[str, Any]:
        msg = self.messages.get(int(mid))
        if msg is None or msg["channel_id"] != ch["id"] or int(mid) in self._ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _get_channel(self, call: Call, cid: str) -> Any:
        return copy.deepcopy(self._channel(cid))

    async def _patch_channel(self, call: Call, cid: str) -> Any:
        ch = self._channel(cid)
        body = call.json or {}
        if ch["type"] in _THREAD_TYPES:
            meta = ch["thread_metadata"]
            if int(ch["owner_id"]) != self.application_id:
                self._require(ch, Perm.MANAGE_THREADS)
            for k in ("archived", "locked", "auto_archive_duration", "invitable"):
                if k in body:
                    meta[k] = body[k]
            if "archived" in body:
                meta["archive_timestamp"] = _iso()
        else:
            self._require(ch, Perm.MANAGE_CHANNELS)
        for k in ("name", "topic", "rate_limit_per_user", "flags", "applied_tags"):
            if k in body:
                ch[k] = body[k]
        self._emit(
            "THREAD_UPDATE" if ch["type"] in _THREAD_TYPES else "CHANNEL_UPDATE",
            ch,
            guild_id=int(ch["guild_id"]) if ch.get("guild_id") else None,
        )
        return copy.deepcopy(ch)

    async def _delete_channel(self, call: Call, cid: str) -> Any:
        ch = self._channel(cid)
        self._require(ch, Perm.MANAGE_THREADS if ch["type"] in _THREAD_TYPES else Perm.MANAGE_CHANNELS)
        del self.channels[int(cid)]
        if ch["type"] in _THREAD_TYPES:
            self._emit("THREAD_DELETE", {k: ch[k] for k in ("id", "guild_id", "parent_id", "type")}, guild_id=int(ch["guild_id"]))
        return copy.deepcopy(ch)

    async def _list_messages(self, call: Call, cid: str) -> Any:
        ch = self._channel(cid)
        self._require(ch, Perm.READ_MESSAGE_HISTORY)
        msgs = [m for m in self.channel_messages(ch)]
        q = call.query
        if "before" in q:
            msgs = [m for m in msgs if int(m["id"]) < int(q["before"])]
        if "after" in q:
            msgs = [m for m in msgs if int(m["id"]) > int(q["after"])]
        limit = min(int(q.get("limit", 50)), 100)
        if "after" in q:
            msgs = msgs[:limit]
        else:
            msgs = msgs[-limit:]
        return list(reversed(msgs))  # newest first, like Discord

    async def _get_message(self, call: Call, cid: str, mid: str) -> Any:
        ch = self._channel(cid)
        self._require(ch, Perm.READ_MESSAGE_HISTORY)
        return copy.deepcopy(self._message(ch, mid))

    async def _create_message(self, call: Call, cid: str) -> Any:
        ch = self._channel(cid)
        data = call.json or {}
        needed = [Perm.SEND_MESSAGES_IN_THREADS if ch["type"] in _THREAD_TYPES else Perm.SEND_MESSAGES]
        if call.files:
            needed.append(Perm.ATTACH_FILES)
        if data.get("message_reference"):
            needed.append(Perm.READ_MESSAGE_HISTORY)
        if ch.get("guild_id"):
            self._require(ch, *needed)
        if ch["type"] in _THREAD_TYPES:
            meta = ch["thread_metadata"]
            if meta.get("locked") and not self.permissions_in(ch, self.application_id) & Perm.MANAGE_THREADS:
                raise ApiError(400, 50083, "Thread is locked")
            if meta.get("archived"):
                meta.update(archived=False, archive_timestamp=_iso())
                self._emit("THREAD_UPDATE", ch, guild_id=int(ch["guild_id"]))
        self._check_message_payload(data, call.files, creating=True, guild_id=int(ch["guild_id"]) if ch.get("guild_id") else None)
        key = (int(ch["id"]), str(self.bot_user["id"]), str(data.get("nonce")))
        if data.get("enforce_nonce") and data.get("nonce") is not None:
            seen = self._nonces.get(key)
            if seen is not None and time.time() - seen[1] <= self.nonce_window and seen[0] in self.messages:
                return copy.deepcopy(self.messages[seen[0]])  # no new message
        message = self._message_from_payload(ch, data, call.files, author=self.bot_user)
        if data.get("nonce") is not None:
            self._nonces[key] = (int(message["id"]), time.time())
        if self.post_delay:  # posted, the members see it; the bot hears so later
            await asyncio.sleep(self.post_delay)
        return copy.deepcopy(message)

    async def _edit_message(self, call: Call, cid: str, mid: str) -> Any:
        ch = self._channel(cid)
        msg = self._message(ch, mid)
        data = call.json or {}
        if msg["author"]["id"] != self.bot_user["id"] or "webhook_id" in msg:
            if set(data) - {"flags"}:
                raise ApiError(403, 50005, "Cannot edit a message authored by another user")
            self._require(ch, Perm.MANAGE_MESSAGES)
        if call.files and ch.get("guild_id"):
            self._require(ch, Perm.ATTACH_FILES)
        self._check_message_payload(data, call.files, creating=False, guild_id=int(ch["guild_id"]) if ch.get("guild_id") else None)
        return copy.deepcopy(self._apply_edit(msg, data, call.files))

    async def _delete_message(self, call: Call, cid: str, mid: str) -> Any:
        ch = self._channel(cid)
        msg = self._message(ch, mid)
        if msg["author"]["id"] != self.bot_user["id"] and ch.get("guild_id"):
            self._require(ch, Perm.MANAGE_MESSAGES)
        self._remove_message(msg)
        return None

    def _remove_message(self, msg: dict[str, Any]) -> None:
        mid = _id(msg)
        self.messages.pop(mid, None)
        ephemeral = mid in self._ephemeral
        self._ephemeral.discard(mid)
        if not ephemeral:
            ch = self.channels.get(int(msg["channel_id"]))
            gid = int(ch["guild_id"]) if ch and ch.get("guild_id") else None
            event = {"id": msg["id"], "channel_id": msg["channel_id"], **({"guild_id": str(gid)} if gid else {})}
            self._emit("MESSAGE_DELETE", event, guild_id=gid)

    async def _thread_from_message(self, call: Call, cid: str, mid: str) -> Any:
        ch = self._channel(cid)
        if ch["type"] not in (0, 5):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        msg = self._message(ch, mid)
        self._require(ch, Perm.CREATE_PUBLIC_THREADS)
        if int(mid) in self.channels or msg.get("thread"):
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = call.json or {}
        name = str(body.get("name", ""))
        if not 1 <= len(name) <= 100:
            raise _form_error(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        return self._start_thread(ch, int(mid), name, private=False, body=body, starter=msg)

    async def _thread_without_message(self, call: Call, cid: str) -> Any:
        ch = self._channel(cid)
        if ch["type"] not in (0, 5, 15):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body = call.json or {}
        private = body.get("type", 12) == 12
        self._require(ch, Perm.CREATE_PRIVATE_THREADS if private else Perm.CREATE_PUBLIC_THREADS)
        name = str(body.get("name", ""))
        if not 1 <= len(name) <= 100:
            raise _form_error(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        return self._start_thread(ch, self._sf.next(), name, private=private, body=body, starter=None)

    def _start_thread(
        self, ch: dict[str, Any], tid: int, name: str, *, private: bool, body: dict[str, Any], starter: dict[str, Any] | None
    ) -> Any:
        thread = self._thread_json(
            ch,
            tid,
            name,
            self.application_id,
            private=private,
            auto_archive_duration=int(body.get("auto_archive_duration") or ch.get("default_auto_archive_duration") or 1440),
        )
        thread["rate_limit_per_user"] = int(body.get("rate_limit_per_user") or 0)
        self.channels[tid] = thread
        member = {"id": str(tid), "user_id": self.bot_user["id"], "join_timestamp": _iso(), "flags": 1}
        gid = int(ch["guild_id"])
        self._emit("THREAD_CREATE", {**thread, "newly_created": True, "member": member}, guild_id=gid)
        if starter is not None:
            starter["thread"] = copy.deepcopy(thread)
            self._emit("MESSAGE_UPDATE", self.message_event(starter), guild_id=gid)
        return 201, {**copy.deepcopy(thread), "member": member}

    async def _no_content(self, call: Call, **_: str) -> Any:
        return None

    async def _add_reaction(self, call: Call, cid: str, mid: str, emoji: str) -> Any:
        ch = self._channel(cid)
        msg = self._message(ch, mid)
        if ch.get("guild_id"):
            self._require(ch, Perm.READ_MESSAGE_HISTORY, Perm.ADD_REACTIONS)
        name = unquote(emoji)
        reactions = msg.setdefault("reactions", [])
        r = next((r for r in reactions if r["emoji"]["name"] == name), None)
        if r is None:
            reactions.append(
                {
                    "count": 1,
                    "count_details": {"burst": 0, "normal": 1},
                    "me": True,
                    "me_burst": False,
                    "burst_colors": [],
                    "emoji": {"id": None, "name": name},
                }
            )
        elif not r["me"]:
            r["me"] = True
            r["count"] += 1
        return None

    async def _remove_reaction(self, call: Call, cid: str, mid: str, emoji: str | None = None, uid: str | None = None) -> Any:
        ch = self._channel(cid)
        msg = self._message(ch, mid)
        if uid != "@me" and ch.get("guild_id"):
            self._require(ch, Perm.MANAGE_MESSAGES)
        if uid == "@me" and emoji is not None:
            for r in msg.get("reactions", []):
                if r["emoji"]["name"] == unquote(emoji) and r["me"]:
                    r["me"] = False
                    r["count"] -= 1
            msg["reactions"] = [r for r in msg.get("reactions", []) if r["count"] > 0]
        return None

    async def _typing(self, call: Call, cid: str) -> Any:
        self._channel(cid)
        return None

    # ------------------------------------------------------------------ REST: guilds

    def _guild(self, gid: str) -> dict[str, Any]:
        if int(gid) not in self.guilds:
            raise ApiError(404, 10004, "Unknown Guild")
        return self.guilds[int(gid)]

    async def _get_guild(self, call: Call, gid: str) -> Any:
        self._guild(gid)
        g = self.guild_json(int(gid))
        if _truthy(call.query.get("with_counts")):
            g["approximate_member_count"] = sum(1 for (mg, _) in self.members if mg == int(gid))
            g["approximate_presence_count"] = 1
        return g

    async def _get_guild_channels(self, call: Call, gid: str) -> Any:
        self._guild(gid)
        return self._guild_channels(int(gid), threads=False)

    async def _get_roles(self, call: Call, gid: str) -> Any:
        return copy.deepcopy(self._guild(gid)["roles"])

    async def _get_member(self, call: Call, gid: str, uid: str) -> Any:
        self._guild(gid)
        if (int(gid), int(uid)) not in self.members:
            raise ApiError(404, 10007, "Unknown Member")
        return self.member_json(int(gid), int(uid))

    async def _active_threads(self, call: Call, gid: str) -> Any:
        self._guild(gid)
        threads = [t for t in self._guild_channels(int(gid), threads=True) if not t["thread_metadata"]["archived"]]
        return {"threads": threads, "members": []}

    # ------------------------------------------------------------------ message payloads

    def _check_message_payload(self, data: dict[str, Any], files: list[Upload], *, creating: bool, guild_id: int | None) -> None:
        limit = self.upload_limit_for(guild_id)
        for f in files:
            if len(f.data) > limit:
                raise ApiError(413, 40005, "Request entity too large")
        content = data.get("content")
        if content is not None and len(str(content)) > 2000:
            raise _form_error(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        if len(files) > 10:
            raise _form_error(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        embeds = data.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, e in enumerate(embeds):
            for key, cap in (("title", 256), ("description", 4096)):
                if len(e.get(key) or "") > cap:
                    raise _form_error(["embeds", i, key], "BASE_TYPE_MAX_LENGTH", f"Must be {cap} or fewer in length.")
                total += len(e.get(key) or "")
            for sub, key, cap in (("footer", "text", 2048), ("author", "name", 256)):
                val = (e.get(sub) or {}).get(key) or ""
                if len(val) > cap:
                    raise _form_error(["embeds", i, sub, key], "BASE_TYPE_MAX_LENGTH", f"Must be {cap} or fewer in length.")
                total += len(val)
            fields = e.get("fields") or []
            if len(fields) > 25:
                raise _form_error(["embeds", i, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for j, fld in enumerate(fields):
                for key, cap in (("name", 256), ("value", 1024)):
                    val = str(fld.get(key) or "")
                    if not val:
                        raise _form_error(["embeds", i, "fields", j, key], "BASE_TYPE_REQUIRED", "This field is required")
                    if len(val) > cap:
                        raise _form_error(["embeds", i, "fields", j, key], "BASE_TYPE_MAX_LENGTH", f"Must be {cap} or fewer in length.")
                    total += len(val)
        if total > 6000:
            raise _form_error(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        comps = data.get("components") or []
        v2 = bool(int(data.get("flags") or 0) & _MESSAGE_FLAG_COMPONENTS_V2)
        if not v2:
            if len(comps) > 5:
                raise _form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
            for i, row in enumerate(comps):
                if row.get("type") != 1:
                    raise _form_error(
                        ["components", i, "type"], "UNION_TYPE_CHOICES", "Value must be an action row without the IS_COMPONENTS_V2 flag."
                    )
                if len(row.get("components") or []) > 5:
                    raise _form_error(["components", i, "components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        elif content:
            raise _form_error(
                ["content"],
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            )
        seen: set[str] = set()
        for c in _walk_components(comps):
            cid = c.get("custom_id")
            if cid is not None:
                if not 1 <= len(cid) <= 100:
                    raise _form_error(["components", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
                if cid in seen:
                    raise _form_error(
                        ["components", "custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
                    )
                seen.add(cid)
            if c.get("type") == 2 and len(c.get("label") or "") > 80:
                raise _form_error(["components", "label"], "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
        if creating and not (content or embeds or files or comps or data.get("sticker_ids") or data.get("poll") or data.get("attachments")):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def _message_from_payload(
        self,
        ch: dict[str, Any] | None,
        data: dict[str, Any],
        files: list[Upload],
        *,
        author: dict[str, Any],
        interaction: _Interaction | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        ref = None
        mref = data.get("message_reference")
        if mref:
            target = self.messages.get(int(mref.get("message_id", 0)))
            if target is None or int(mref.get("channel_id", ch["id"])) != int(target["channel_id"]):
                if mref.get("fail_if_not_exists", True):
                    raise _form_error(["message_reference"], "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
            else:
                ref = target
        attachments = self._attachments_for(ch, data, files, existing=[], ephemeral=ephemeral)
        mention_ids = self._mention_ids(str(data.get("content") or ""), data.get("allowed_mentions"), ref)
        flags = int(data.get("flags") or 0)
        msg_type = None
        if interaction is not None:
            ctype = interaction.type
            if ctype == 2:
                is_menu = interaction.name is not None and any(
                    c.get("type", 1) != 1 and c["name"] == interaction.name for cs in self.commands.values() for c in cs
                )
                msg_type = 23 if is_menu else 20
        msg = self._new_message(
            ch,
            author,
            content=str(data.get("content") or ""),
            attachments=attachments,
            embeds=copy.deepcopy(data.get("embeds") or []),
            components=data.get("components") or [],
            mention_ids=mention_ids,
            reference=ref,
            flags=flags,
            msg_type=msg_type,
            webhook_id=self.application_id if interaction is not None else None,
            interaction=interaction,
            tts=bool(data.get("tts")),
            nonce=data.get("nonce"),
        )
        if ephemeral:
            self._ephemeral.add(_id(msg))
        elif self.echo_bot_messages:
            self._emit("MESSAGE_CREATE", self.message_event(msg), guild_id=int(ch["guild_id"]) if ch.get("guild_id") else None)
        return msg

    def _attachments_for(
        self, ch: dict[str, Any], data: dict[str, Any], files: list[Upload], *, existing: list[dict[str, Any]], ephemeral: bool
    ) -> list[dict[str, Any]]:
        by_index: dict[int, Upload] = {}
        for n, f in enumerate(files):
            m = re.fullmatch(r"files\[(\d+)\]", f.field)
            by_index[int(m.group(1)) if m else n] = f
        meta = data.get("attachments")
        out: list[dict[str, Any]] = []
        used: set[int] = set()
        if meta is None:
            out = copy.deepcopy(existing)
        else:
            old = {a["id"]: a for a in existing}
            for a in meta:
                aid = str(a.get("id"))
                if aid in old:
                    out.append(copy.deepcopy(old[aid]))
                    continue
                idx = int(a.get("id", -1))
                if idx not in by_index:
                    raise _form_error(["attachments"], "ATTACHMENT_NOT_FOUND", f"Attachment {aid} not found in request")
                f = by_index[idx]
                used.add(idx)
                out.append(
                    self._store_attachment(
                        f.data,
                        a.get("filename") or f.filename or "file",
                        f.content_type,
                        channel_id=_id(ch),
                        description=a.get("description"),
                        ephemeral=ephemeral,
                    )
                )
        for idx in sorted(by_index):
            if idx not in used:
                f = by_index[idx]
                out.append(self._store_attachment(f.data, f.filename or "file", f.content_type, channel_id=_id(ch), ephemeral=ephemeral))
        return out

    def _mention_ids(self, content: str, allowed: dict[str, Any] | None, ref: dict[str, Any] | None) -> list[int]:
        ids = [int(x) for x in re.findall(r"<@!?(\d+)>", content)]
        if allowed is not None:
            parse = allowed.get("parse", [])
            explicit = {int(u) for u in allowed.get("users", [])}
            ids = [i for i in ids if "users" in parse or i in explicit]
        if ref is not None and (allowed is None or allowed.get("replied_user", False)):
            ids.append(int(ref["author"]["id"]))
        return ids

    def _apply_edit(self, msg: dict[str, Any], data: dict[str, Any], files: list[Upload], *, clear_loading: bool = False) -> dict[str, Any]:
        ch = self.channels[int(msg["channel_id"])]
        mid = _id(msg)
        if "content" in data:
            msg["content"] = str(data["content"] or "")
        if "embeds" in data:
            msg["embeds"] = copy.deepcopy(data["embeds"] or [])
        if "components" in data:
            msg["components"] = self._number_components(data["components"] or [])
        if "flags" in data and data["flags"] is not None:
            # ephemerality and the loading state are fixed by the response, not by edits
            fixed = _MESSAGE_FLAG_EPHEMERAL | _MESSAGE_FLAG_LOADING
            msg["flags"] = (int(data["flags"]) & ~fixed) | (msg["flags"] & fixed)
        if files or "attachments" in data:
            msg["attachments"] = self._attachments_for(ch, data, files, existing=msg["attachments"], ephemeral=mid in self._ephemeral)
        if clear_loading:
            msg["flags"] &= ~_MESSAGE_FLAG_LOADING
        msg["edited_timestamp"] = _iso()
        if mid not in self._ephemeral:
            self._emit("MESSAGE_UPDATE", self.message_event(msg), guild_id=int(ch["guild_id"]) if ch.get("guild_id") else None)
        return copy.deepcopy(msg)


# --------------------------------------------------------------------------- module helpers


def _guild_of(data: Mapping[str, Any]) -> int | None:
    gid = data.get("guild_id")
    if gid is None and "roles" in data and "channels" in data:
        gid = data.get("id")  # GUILD_CREATE
    return int(gid) if gid else None


def _intent_for(event: str, data: Mapping[str, Any]) -> int:
    in_guild = bool(data.get("guild_id"))
    if event.startswith(("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_ROLE_", "CHANNEL_", "THREAD_")):
        return Intent.GUILDS
    if event.startswith("GUILD_MEMBER_") and event != "GUILD_MEMBERS_CHUNK":
        return Intent.GUILD_MEMBERS
    if event.startswith("MESSAGE_REACTION_"):
        return Intent.GUILD_MESSAGE_REACTIONS if in_guild else Intent.DIRECT_MESSAGE_REACTIONS
    if event.startswith("MESSAGE_"):
        return Intent.GUILD_MESSAGES if in_guild else Intent.DIRECT_MESSAGES
    if event == "TYPING_START":
        return Intent.GUILD_MESSAGE_TYPING if in_guild else Intent.DIRECT_MESSAGE_TYPING
    if event == "PRESENCE_UPDATE":
        return Intent.GUILD_PRESENCES
    return 0


def _check_name(name: Any, where: list[str | int], *, chat_input: bool) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        raise _form_error(where, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
    if chat_input and (not _COMMAND_NAME.match(name) or name != name.lower()):
        raise _form_error(where, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")


def _check_localizations(mapping: Any, where: list[str | int], *, names: bool, chat_input: bool) -> None:
    for loc, text in (mapping or {}).items():
        if loc not in VALID_LOCALES:
            raise _form_error([*where, loc], "ENUM_TYPE_COERCE", f'Value "{loc}" is not a valid enum value.')
        if names:
            _check_name(text, [*where, loc], chat_input=chat_input)
        elif not 1 <= len(text or "") <= 100:
            raise _form_error([*where, loc], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")


def _validate_command(cmd: dict[str, Any], where: list[str | int]) -> None:
    ctype = cmd.get("type", 1)
    chat = ctype == 1
    _check_name(cmd.get("name"), [*where, "name"], chat_input=chat)
    _check_localizations(cmd.get("name_localizations"), [*where, "name_localizations"], names=True, chat_input=chat)
    if chat:
        if not 1 <= len(cmd.get("description") or "") <= 100:
            raise _form_error([*where, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        _check_localizations(cmd.get("description_localizations"), [*where, "description_localizations"], names=False, chat_input=True)
        _validate_options(cmd.get("options") or [], [*where, "options"])
    elif cmd.get("description"):
        raise _form_error([*where, "description"], "BASE_TYPE_MAX_LENGTH", "Context menu commands cannot have a description.")


def _validate_options(options: list[dict[str, Any]], where: list[str | int]) -> None:
    if len(options) > 25:
        raise _form_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    names: set[str] = set()
    for i, o in enumerate(options):
        w = [*where, i]
        _check_name(o.get("name"), [*w, "name"], chat_input=True)
        if o["name"] in names:
            raise _form_error([*w, "name"], "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option names must be unique")
        names.add(o["name"])
        _check_localizations(o.get("name_localizations"), [*w, "name_localizations"], names=True, chat_input=True)
        if not 1 <= len(o.get("description") or "") <= 100:
            raise _form_error([*w, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        _check_localizations(o.get("description_localizations"), [*w, "description_localizations"], names=False, chat_input=True)
        if o.get("type") in (1, 2):
            _validate_options(o.get("options") or [], [*w, "options"])
            continue
        if o.get("required"):
            if seen_optional:
                raise _form_error(
                    [*w, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = o.get("choices") or []
        if choices and o.get("autocomplete"):
            raise _form_error([*w, "autocomplete"], "AUTOCOMPLETE_AND_CHOICES", "Autocomplete cannot be set with choices")
        _validate_choices(choices, [*w, "choices"])


def _validate_choices(choices: list[dict[str, Any]], where: list[str | int] | None = None) -> None:
    where = where if where is not None else ["choices"]
    if len(choices) > 25:
        raise _form_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for i, c in enumerate(choices):
        if not 1 <= len(str(c.get("name") or "")) <= 100:
            raise _form_error([*where, i, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        _check_localizations(c.get("name_localizations"), [*where, i, "name_localizations"], names=False, chat_input=False)
        if isinstance(c.get("value"), str) and len(c["value"]) > 100:
            raise _form_error([*where, i, "value"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")


def _validate_modal(data: dict[str, Any]) -> None:
    if not 1 <= len(data.get("title") or "") <= 45:
        raise _form_error(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    if not 1 <= len(data.get("custom_id") or "") <= 100:
        raise _form_error(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    comps = data.get("components") or []
    if not 1 <= len(comps) <= 5:
        raise _form_error(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    for c in _walk_components(comps):
        if c.get("type") == 4:
            if c.get("style") not in (1, 2):
                raise _form_error(["data", "components", "style"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
            if len(c.get("label") or "") > 45:
                raise _form_error(["data", "components", "label"], "BASE_TYPE_MAX_LENGTH", "Must be 45 or fewer in length.")
        if c.get("type") == 18 and len(c.get("label") or "") > 45:
            raise _form_error(["data", "components", "label"], "BASE_TYPE_MAX_LENGTH", "Must be 45 or fewer in length.")
