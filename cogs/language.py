"""The language a member is answered in: the one they chose in /settings (for that server, or
for their DMs), else their Discord client's. Every answer to a member asks here, so a chosen
language holds everywhere, not only on /imagine's progress and results.

Read once per interaction (kept in ``interaction.extras``); a preference that cannot be read
leaves the client's language: the language is never why an answer fails.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.i18n import SUPPORTED, normalize_locale
from cogs.install import scope_id

log = logging.getLogger(__name__)

KEY = "nb.locale"


async def member_locale(interaction: discord.Interaction[Any]) -> str:
    known = interaction.extras.get(KEY)
    if known is None:
        known = normalize_locale(interaction.locale)
        try:
            mine = await interaction.client.services.preferences.get(scope_id(interaction), interaction.user.id)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            log.warning("could not read a member's language preference: %s", exc)
        else:
            if mine.locale in SUPPORTED:
                known = mine.locale
        interaction.extras[KEY] = known
    return str(known)


def chose(interaction: discord.Interaction[Any], locale: str | None) -> None:
    """The member just chose ``locale`` (None: their client's) in this interaction."""
    interaction.extras[KEY] = locale if locale in SUPPORTED else normalize_locale(interaction.locale)
