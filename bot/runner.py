"""``python -m bot run``: settings, logging, the Discord REST base, then the bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from .settings import SettingsError, load_settings
from .store import MigrationError

log = logging.getLogger("bot")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m bot run   (configuration comes from the environment / .env; see README)")
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"nano-banana-bot: {exc}", file=sys.stderr)
        return 2

    from .logs import setup_logging

    setup_logging(settings.log_level)

    import discord
    from discord import http as discord_http

    from .app import NanoBananaBot

    # Every REST route is built from this class attribute, so one assignment points the whole
    # client at a rate-limit proxy (or a test double); the gateway URL still comes from that API.
    discord_http.Route.BASE = settings.discord_api_base

    async def run() -> None:
        async with NanoBananaBot(settings) as bot:
            # `docker stop` sends SIGTERM: close cleanly (jobs stop, database closes) as on Ctrl-C.
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(bot.close()))
            await bot.start(settings.discord_token)

    try:
        asyncio.run(run())
    except MigrationError as exc:
        print(f"nano-banana-bot: database migration failed, not starting: {exc}", file=sys.stderr)
        return 3
    except discord.LoginFailure:
        print("nano-banana-bot: Discord refused the token (DISCORD_TOKEN); check it in the developer portal", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print(
            "nano-banana-bot: NB_MESSAGE_CONTENT_INTENT=1 but the Message Content intent is off in the developer portal",
            file=sys.stderr,
        )
        return 2
    except discord.HTTPException as exc:
        print(f"nano-banana-bot: Discord answered {exc.status} at start-up: {exc.text or exc}", file=sys.stderr)
        return 4
    except OSError as exc:  # aiohttp's connection errors are OSErrors: no route, DNS, refused
        print(f"nano-banana-bot: cannot reach Discord at {settings.discord_api_base}: {exc}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        pass
    return 0
