"""One translation layer for every user-facing string (en, zh-CN).

Catalogs are ``bot/locales/<locale>/<area>.json`` files of flat ``key -> text`` maps, merged
per locale, so each feature owns its strings. Texts use ``str.format`` fields:
``t("quota.left", "zh-CN", credits=3)``. A key missing from a catalog falls back to English,
then to the key itself, so a gap shows up as a visible key, never as a crash.

English plurals: a field whose format spec holds ``one|other`` is replaced by the word for
its value — ``"{credits} {credits:credit was|credits were} refunded"`` — ``one`` when the value
is 1, else ``other``. The field name stays the placeholder, so both languages keep the same
fields (Chinese needs no plural forms).
"""

from __future__ import annotations

import json
import logging
import string
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LOCALE = "en"
SUPPORTED = ("en", "zh-CN")


def normalize_locale(locale: object) -> str:
    """Map a Discord locale (``zh-CN``, ``en-US``, ``discord.Locale.chinese``) to a catalog."""
    value = str(getattr(locale, "value", locale) or "").strip()
    if value.lower().startswith("zh"):
        # Traditional Chinese readers still read Simplified better than English.
        return "zh-CN"
    return DEFAULT_LOCALE


@cache
def catalog(locale: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    folder = LOCALES_DIR / locale
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        clash = merged.keys() & data.keys()
        if clash:
            raise ValueError(f"{path}: keys already defined in another {locale} catalog: {sorted(clash)}")
        merged.update(data)
    return merged


class _PluralFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if "|" in format_spec:
            one, _, other = format_spec.partition("|")
            return one if str(value).strip() == "1" else other
        return super().format_field(value, format_spec)


_FORMATTER = _PluralFormatter()


def t(key: str, locale: object = DEFAULT_LOCALE, /, **params: Any) -> str:
    loc = normalize_locale(locale)
    text = catalog(loc).get(key)
    if text is None:
        text = catalog(DEFAULT_LOCALE).get(key)
        if text is None:
            log.warning("missing translation key %r", key)
            return key
    try:
        return _FORMATTER.format(text, **params)
    except (KeyError, IndexError, ValueError):
        log.warning("translation %r (%s) lacks parameters %s", key, loc, sorted(params))
        return text


def has_key(key: str) -> bool:
    return key in catalog(DEFAULT_LOCALE)
