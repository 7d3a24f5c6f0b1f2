"""Command names, descriptions and choices, declared with their catalogue key.

discord.py's ``locale_str`` carries extra data to the translator (bot.app's ``Translator``),
which looks the key up in bot/locales/<lang>/*.json; the English text is what Discord shows
when no translation exists. Each cog imports this as ``_k`` so decorator stacks stay short.
"""

from __future__ import annotations

from discord.app_commands import locale_str


def command_text(key: str, text: str) -> locale_str:
    return locale_str(text, key=key)
