"""``python -m bot run``: settings, the data dir, logging, the Discord REST base, then the bot.

Order matters to an operator: every setting is checked, and the data dir proven writable,
before anything is opened or connected, so each mistake is one line and exit status 2 even
when Discord is down.

Stopping: SIGTERM (``docker stop``) and SIGINT (Ctrl-C) set one event; the bot then closes in
a fixed order within :data:`STOP_BUDGET_S` (jobs cancelled — their rows stay ``running``,
exactly as after a crash, so the next start takes the one recovery path: interrupted, refunded,
Retry offered — then the gateway, then the HTTP client and the database). A watchdog thread
ends the process with status 0 at :data:`HARD_EXIT_S` if anything still holds it (a thread
stuck in a C call, say), because ``docker stop`` would SIGKILL it at 10 s anyway and SQLite's
WAL survives a kill. Exit statuses: 0 stopped, 2 configuration, 3 database, 4 Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from .secrets import SecretError, load_keyring
from .settings import Settings, SettingsError, check_data_dir, load_settings
from .store import MigrationError

log = logging.getLogger("bot")

STOP_BUDGET_S = 4.0
HARD_EXIT_S = 4.8


def _say(line: str) -> None:
    print(f"nano-banana-bot: {line}", file=sys.stderr, flush=True)


def _arm_watchdog() -> None:
    def hard_exit() -> None:
        _say("shutdown did not finish in time; exiting (running jobs are recovered at the next start)")
        os._exit(0)

    timer = threading.Timer(HARD_EXIT_S, hard_exit)
    timer.daemon = True  # never itself the thing that keeps the process alive
    timer.start()


async def _serve(settings: Settings) -> None:
    from .app import NanoBananaBot
    from .services import Services

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows' proactor loop
            loop.add_signal_handler(sig, stop.set)

    # The database first (migrated, or refused in one line) — before any Discord connection.
    services = await Services.open(settings)
    try:
        bot = NanoBananaBot(settings, services)
    except BaseException:
        await services.close()
        raise
    # A worker holds no gateway connection: it logs in (REST, setup_hook: cogs and the job
    # queue) and delivers through REST; gateways and `all` connect their shards.
    serve = _login_only(bot, settings.discord_token) if settings.role == "worker" else bot.start(settings.discord_token)
    running = asyncio.create_task(serve, name="discord")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if stop.is_set():
            log.info("stop requested; closing")
            _arm_watchdog()
        # Whatever ended first (a signal, a start-up failure, a fatal gateway error), close
        # what was opened — bounded, so a hung piece cannot keep the process alive.
        try:
            await asyncio.wait_for(bot.close(), timeout=STOP_BUDGET_S)
        except TimeoutError:
            log.warning("closing took longer than %.0f s; leaving the rest to the process exit", STOP_BUDGET_S)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    if not stop.is_set() and running.done() and not running.cancelled() and running.exception():
        raise running.exception()  # type: ignore[misc]


async def _login_only(bot: Any, token: str) -> None:
    await bot.login(token)
    await asyncio.Event().wait()  # until the runner's stop closes the bot


def _role(argv: list[str]) -> str:
    """``--role gateway`` / ``--role=worker``; default ``all``."""
    for i, arg in enumerate(argv):
        if arg == "--role":
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("--role="):
            return arg.split("=", 1)[1]
    return "all"


def _discord_errors() -> dict[type[BaseException], Any]:
    """Start-up failures that are Discord's (or the network's), each one line and a status."""
    import aiohttp
    import discord

    return {
        discord.LoginFailure: (2, lambda s, e: "Discord refused the token (DISCORD_TOKEN); check it in the developer portal"),
        discord.PrivilegedIntentsRequired: (
            2,
            lambda s, e: "NB_MESSAGE_CONTENT_INTENT=1 but the Message Content intent is off in the developer portal",
        ),
        discord.HTTPException: (4, lambda s, e: f"Discord answered {e.status} at start-up: {e.text or e}"),
        # aiohttp's connection errors: no route, DNS, refused, TLS.
        aiohttp.ClientConnectionError: (4, lambda s, e: f"cannot reach Discord at {s.discord_api_base}: {e}"),
        asyncio.TimeoutError: (4, lambda s, e: f"Discord at {s.discord_api_base} did not answer in time"),
        discord.GatewayNotFound: (4, lambda s, e: f"Discord's gateway could not be found through {s.discord_api_base}"),
    }


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: python -m bot run [--role all|gateway|worker]   (configuration comes from the environment / .env; see README)\n"
            "  all      the default: one process does everything\n"
            "  gateway  holds Discord gateway shards (NB_SHARD_COUNT, NB_SHARD_IDS) and takes commands; needs NB_DATABASE_URL\n"
            "  worker   runs queued jobs and delivers results through Discord's REST API; needs NB_DATABASE_URL"
        )
        return 0
    try:
        settings = load_settings(role=_role(argv))
        check_data_dir(settings)
        # The master key too (NB_SECRET_KEY, or data/secret.key: generated here if absent),
        # so an unusable one is reported before the Discord login rather than after it.
        load_keyring(settings.secret_key, settings.data_dir)
    except (SettingsError, SecretError) as exc:
        _say(str(exc))
        return 2

    from .logs import setup_logging

    setup_logging(settings.log_level)

    from discord import http as discord_http

    # Every REST route is built from this class attribute, so one assignment points the whole
    # client at a rate-limit proxy (or a test double); the gateway URL still comes from that API.
    discord_http.Route.BASE = settings.discord_api_base

    try:
        asyncio.run(_serve(settings))
    except MigrationError as exc:
        _say(f"database not opened, not starting: {exc}")
        return 3
    except (SettingsError, SecretError) as exc:  # e.g. a secret.key in the data dir that holds no key
        _say(str(exc))
        return 2
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        for kind, (status, describe) in _discord_errors().items():
            if isinstance(exc, kind):
                _say(describe(settings, exc))
                return status
        if isinstance(exc, OSError):  # the disk, not Discord: full, read-only, vanished
            _say(f"start-up failed: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}")
            return 3
        log.debug("start-up failed", exc_info=True)
        _say(f"start-up failed: {exc.__class__.__name__}: {exc} (run with NB_LOG_LEVEL=DEBUG for details)")
        return 1
    return 0
