"""The Bot subclass: ``setup_hook`` opens the shared resources and loads one cog per feature.

Shared resources live on the bot (one aiosqlite connection, one httpx client, the services);
cogs reach them through ``interaction.client``. Commands are synced only when their
translated definitions changed since the last sync (a hash in the data dir), because
Discord rate-limits command syncs and a restart should not spend them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import discord
import yarl  # discord.py's own URL type (its dependency, through aiohttp)
from discord import app_commands
from discord.ext import commands

from . import health, i18n
from .db import locks
from .db.postgres import PgConnection
from .settings import Settings

if TYPE_CHECKING:
    from .services import Services

log = logging.getLogger(__name__)

COGS = (
    "cogs.errors",
    "cogs.imagine",
    "cogs.conversation",
    "cogs.admin",
    "cogs.members",
    "cogs.history",
    "cogs.settings",
    "cogs.describe",
    "cogs.modlog",
    "cogs.install",  # last: sets every command's installs and contexts (NB_USER_INSTALL)
)


class CatalogTranslator(app_commands.Translator):
    """Command names, descriptions and choices from the same catalogs as every other string.

    A ``locale_str`` carries its catalog key in ``extras["key"]``; strings without one stay
    as written (English).
    """

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        key = string.extras.get("key")
        if not key or not str(locale.value).startswith("zh"):
            return None
        text = i18n.catalog("zh-CN").get(key)
        return text or None


async def _bounded(step: Awaitable[Any], seconds: float, what: str) -> None:
    """One shutdown step that may not take longer than ``seconds`` nor stop the next one."""
    try:
        await asyncio.wait_for(step, timeout=seconds)
    except TimeoutError:
        log.warning("%s took longer than %.1f s; going on", what, seconds)
    except Exception:
        log.warning("%s failed; going on", what, exc_info=log.isEnabledFor(logging.DEBUG))


class NanoBananaBot(commands.AutoShardedBot):
    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        # The bot has no voice: discord.py's "PyNaCl/davey is not installed" warnings at every
        # start would only worry operators. Both are class flags read once in Client.__init__.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        # Privileged: without it, thread messages are read only when they mention the bot or reply.
        intents.message_content = settings.message_content_intent
        # A gateway process's own range (NB_SHARD_COUNT / NB_SHARD_IDS); else discord.py's.
        shards: dict[str, Any] = {}
        if settings.shard_count:
            shards["shard_count"] = settings.shard_count
        if settings.shard_ids:
            shards["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            # Nobody is pinged unless a send names whom (results ping their requester only):
            # many texts echo members' words, file names or a model's answer.
            allowed_mentions=discord.AllowedMentions.none(),
            owner_ids=set(settings.owner_ids) or None,
            # discord.py dispatches `ready` only after this long without a further GUILD_CREATE
            # (default 2 s). Discord sends a shard's GUILD_CREATEs in one burst after READY; no
            # code here waits for `ready` (interactions are served from the first gateway event,
            # and with the members intent off nothing is chunked), and a guild that arrives later
            # is still cached (discord.py then dispatches guild_available, which nothing here
            # listens to). What `ready` still gates is only the health file's "connected" (and
            # discord.py's is_ready()), so 0.1 s: Discord's burst has gaps of milliseconds, and a
            # guild after a longer gap is served all the same. Measured start -> ready: see
            # bench/results/2026-12-02-speed.md.
            guild_ready_timeout=0.1,
            **shards,
        )
        self.settings = settings
        # bot.services.Services: opened by the runner before the login (so a database problem
        # is reported even when Discord is down), or here in setup_hook when not given.
        self._services = services
        self._heartbeat: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._max_concurrency = 1  # shards identifying per 5 s (GET /gateway/bot)

    @property
    def services(self) -> Services:
        """The bot's services: open before any cog loads (the runner or setup_hook opens them)."""
        if self._services is None:
            raise RuntimeError("the services are opened by setup_hook, before any cog loads")
        return self._services

    async def launch_shards(self) -> None:
        """With an explicit shard count discord.py skips ``GET /gateway/bot`` and dials its
        built-in gateway address: ask once anyway, for the URL (which follows
        ``DISCORD_API_BASE``) and ``max_concurrency``, then start this process's shards."""
        if self.settings.shard_count is None:
            await super().launch_shards()
            return
        _, url, limit = await self.http.get_bot_gateway()
        self._max_concurrency = max(1, int(limit.get("max_concurrency", 1)))
        self._connection.shard_count = self.shard_count
        shard_ids = self.shard_ids or list(range(self.settings.shard_count))
        self._connection.shard_ids = shard_ids
        for shard_id in shard_ids:
            await self.launch_shard(yarl.URL(url), shard_id, initial=shard_id == shard_ids[0])

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Discord allows ``max_concurrency`` identifies per 5 s across *all* processes;
        discord.py paces only its own. On PostgreSQL each bucket is an advisory lock held 5 s."""
        db = self._services.db if self._services is not None else None
        if not isinstance(db, PgConnection):
            await super().before_identify_hook(shard_id, initial=initial)
            return
        await locks.hold_for(db, locks.IDENTIFY_LOCK + (shard_id or 0) % self._max_concurrency, 5.0)

    async def setup_hook(self) -> None:
        from .services import Services

        if self._services is None:
            self._services = await Services.open(self.settings)
        await self.tree.set_translator(CatalogTranslator())
        for name in COGS:
            await self.load_extension(name)
        try:
            await self._sync_once()
        except discord.HTTPException as exc:
            # Commands synced earlier still work; a failed sync must not keep the bot offline.
            log.error("could not sync application commands (%s %s); continuing with what Discord has", exc.status, exc.text)
        except (KeyError, TypeError, ValueError) as exc:
            # The commands were sent, but discord.py could not read the answer (an API proxy or
            # double that echoes the request without e.g. a context menu's "description").
            log.error("could not read Discord's answer to the command sync (%r); continuing", exc)
        await self.services.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")

    async def _sync_once(self) -> None:
        """Command sync is a gateway's duty, run by one process at a time (workers skip it)."""
        if self.settings.role == "worker":
            return
        async with locks.duty(self.services.db, locks.SYNC_DUTY) as mine:
            if mine:
                await self.sync_commands_if_changed()

    def connected(self) -> bool:
        """Logged in and every shard's gateway socket open with a measured heartbeat (a worker
        holds no shard: logged in and not closed)."""
        if self.settings.role == "worker":
            return self.user is not None and not self.is_closed()
        shards = list(self.shards.values())
        return (
            self.is_ready()
            and not self.is_closed()
            and bool(shards)
            and all(not s.is_closed() and math.isfinite(s.latency) for s in shards)
        )

    async def _beat(self) -> None:
        # Written every BEAT_S seconds whatever happens, so `python -m bot health` also notices
        # a stuck event loop (the file goes stale), not only a dropped gateway.
        while True:
            try:
                health.write(self.settings.data_dir, self.connected())
            except OSError as exc:
                log.warning("cannot write the heartbeat file: %s", exc)
            await asyncio.sleep(health.BEAT_S)

    async def on_ready(self) -> None:
        with contextlib.suppress(OSError):
            health.write(self.settings.data_dir, True)

    async def command_payload_hash(self) -> str:
        translator = self.tree.translator
        payload = []
        for command in sorted(self.tree.get_commands(), key=lambda c: (c.name, type(c).__name__)):
            payload.append(await command.get_translated_payload(self.tree, translator) if translator else command.to_dict(self.tree))
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    async def sync_commands_if_changed(self, *, force: bool = False) -> bool:
        stamp = self.settings.data_dir / "commands.sha256"
        digest = await self.command_payload_hash()
        if not force and stamp.is_file() and stamp.read_text().strip() == digest:
            log.info("application commands unchanged; not syncing")
            return False
        synced = await self.tree.sync()
        stamp.write_text(digest)
        log.info("synced %d application commands", len(synced))
        return True

    async def close(self) -> None:
        # One shutdown however many callers ask (the runner, discord.py on a fatal error).
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._close_in_order())
        await asyncio.shield(self._shutdown)

    async def _close_in_order(self) -> None:
        # Jobs first (cancelled; their rows stay 'running' as after a crash), then the gateway
        # and Discord HTTP session, then the httpx client and the database last: events still
        # in flight during close() may read it. Each step is bounded so the next always runs;
        # together they fit the runner's stop budget.
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._services is not None:
            await _bounded(self._services.stop_jobs(), 1.5, "stopping jobs")
        await _bounded(super().close(), 1.5, "closing the Discord connection")
        if self._services is not None:
            await _bounded(self._services.close(), 0.8, "closing the database")
        with contextlib.suppress(OSError):
            if (self.settings.data_dir / health.FILE).exists():
                health.write(self.settings.data_dir, False)
