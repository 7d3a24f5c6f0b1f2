"""What the end-to-end tests share: the real bot configured against the doubles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.app import NanoBananaBot
from bot.settings import Settings, load_settings
from tests.doubles.relay_double import RelayDouble


def settings_for(relay: RelayDouble, data_dir: Path, api_key: str, **extra: str) -> Settings:
    env = {
        "NB_ENV_FILE": "/dev/null",
        "DISCORD_TOKEN": "test-bot-token",
        "NB_DATA_DIR": str(data_dir),
        "NB_RELAY_URL": relay.url,
        "NB_RELAY_FORMAT": "gemini",
        "NB_RELAY_AUTH": "x-goog-api-key",
        "NB_API_KEY": api_key,
        **extra,
    }
    return load_settings(env)


def new_bot(relay: RelayDouble, data_dir: Path, api_key: str, **extra: str) -> NanoBananaBot:
    bot = NanoBananaBot(settings_for(relay, data_dir, api_key, **extra))
    # discord.py waits this long after the last GUILD_CREATE before "ready"; tests need not.
    bot._connection.guild_ready_timeout = 0.05
    return bot


def notice_paths(channel: dict[str, Any]) -> str:
    """Where a job's notice lands: its progress message, through the interaction's stored token
    (kept across a stop for this), or a message of the bot's own in the channel."""
    return rf"^(/channels/{channel['id']}/messages(/\d+)?|/webhooks/\d+/[^/]+/messages/(\d+|@original))$"
