"""The interaction every cog handles: discord.py's, bound to this bot (so ``interaction.client``
is a :class:`~bot.app.NanoBananaBot`, with its services and settings)."""

from __future__ import annotations

import discord

from bot.app import NanoBananaBot

Interaction = discord.Interaction[NanoBananaBot]

__all__ = ["Interaction", "NanoBananaBot"]
