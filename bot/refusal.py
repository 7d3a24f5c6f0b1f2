"""One exception for the creative services' refusals: a translation key and its parameters.

The services (preferences, styles, variations, gallery, describe) never talk to Discord; a
cog catches :class:`Refusal` and answers ``t(exc.key, locale, **exc.params)`` ephemerally,
before anything is charged.
"""

from __future__ import annotations


class Refusal(Exception):
    """Bad input a member can fix. ``key``/``params`` feed ``bot.i18n.t``."""

    def __init__(self, message: str, *, key: str, **params: object) -> None:
        super().__init__(message)
        self.key = key
        self.params = params
