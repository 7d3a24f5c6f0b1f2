"""The Bot subclass: ``setup_hook`` opens the shared resources and loads one cog per feature.

Shared resources live on the bot (one aiosqlite connection, one httpx client, the services);
cogs reach them through ``interaction.client``. Commands are synced only when their
translated definitions changed since the last sync (a hash in the data dir), because
Discord rate-limits command syncs and a restart should not spend them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from . import i18n
from .settings import Settings

log = logging.getLogger(__name__)

COGS = ("cogs.errors", "cogs.imagine", "cogs.conversation", "cogs.admin", "cogs.members")


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


class NanoBananaBot(commands.AutoShardedBot):
    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.default()
        # Privileged: without it, thread messages are read only when they mention the bot or reply.
        intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False),
            owner_ids=set(settings.owner_ids) or None,
            # discord.py dispatches `ready` only after this long without a further GUILD_CREATE
            # (default 2 s). Discord sends a shard's GUILD_CREATEs in one burst after READY; no
            # code here waits for `ready` (interactions are served from the first gateway event,
            # and with the members intent off nothing is chunked), and a guild that arrives later
            # is still cached (discord.py then dispatches guild_available). So 0.5 s suffices.
            guild_ready_timeout=0.5,
        )
        self.settings = settings
        self.services: Any = None  # bot.services.Services, opened in setup_hook

    async def setup_hook(self) -> None:
        from .services import Services

        self.services = await Services.open(self.settings)
        await self.tree.set_translator(CatalogTranslator())
        for name in COGS:
            await self.load_extension(name)
        try:
            await self.sync_commands_if_changed()
        except discord.HTTPException as exc:
            # Commands synced earlier still work; a failed sync must not keep the bot offline.
            log.error("could not sync application commands (%s %s); continuing with what Discord has", exc.status, exc.text)
        except (KeyError, TypeError, ValueError) as exc:
            # The commands were sent, but discord.py could not read the answer (an API proxy or
            # double that echoes the request without e.g. a context menu's "description").
            log.error("could not read Discord's answer to the command sync (%r); continuing", exc)
        await self.services.start()

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
        # Jobs first (they post to Discord), then the gateway and HTTP session, then the
        # database last: events still in flight during close() may read it.
        if self.services is not None:
            await self.services.stop_jobs()
        await super().close()
        if self.services is not None:
            await self.services.close()
