"""The admin's refused setting, in a module of its own so that every settings model (server
settings, relays, safety rules) can raise it without importing the others."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A setting an admin tried that is not allowed. ``key``/``params`` for translation."""

    def __init__(self, message: str, *, key: str, **params: Any) -> None:
        super().__init__(message)
        self.key = key
        self.params = params
