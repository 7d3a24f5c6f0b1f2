"""The relay form (name, base URL, API key, model names) and what keeps its key out of logs.

The API key travels once, from the form into :class:`~bot.relays.store.RelayStore`
(encrypted). It is never put into a reply, a form default or a log line; discord.py's own
DEBUG log of every gateway event would print the submitted form, so a log filter masks the
relay form's values there (:class:`RelayFormLogFilter`).
"""

from __future__ import annotations

import copy
import logging
import secrets
import traceback
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import discord
from discord import app_commands, ui

from bot.guild_config import ConfigError
from bot.i18n import t
from bot.relay.balance import Balance
from bot.relay.catalogue import normalize_size, resolve_model
from bot.relay.redact import redact
from bot.relay.types import SIZE_SEP, InvalidRequest
from bot.relays.store import RelayInfo
from cogs import render
from cogs.admin.common import locale_of, send
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k

log = logging.getLogger(__name__)

RELAY_FORM_PREFIX = "nb:relayform:"
FIELD_NAME = "nb:relay:name"
FIELD_URL = "nb:relay:url"
FIELD_KEY = "nb:relay:key"
FIELD_ALIASES = "nb:relay:aliases"

DIALECT_LABELS = {
    "gemini": "admin.choice.format.gemini",
    "openai-images": "admin.choice.format.openai-images",
    "openai-chat": "admin.choice.format.openai-chat",
}
AUTH_LABELS = {
    "query": "admin.choice.auth.query",
    "bearer": "admin.choice.auth.bearer",
    "x-goog-api-key": "admin.choice.auth.x-goog-api-key",
}


def relay_health(info: RelayInfo, now: float, locale: str) -> str:
    if info.resting(now):
        text = t("admin.relay.health_resting", locale, until=int(info.skip_until), fails=info.fail_count)
    elif info.fail_count:
        text = t("admin.relay.health_recovering", locale, fails=info.fail_count)
    else:
        text = t("admin.relay.health_ok", locale)
    if info.fail_count and info.last_error:
        text += " · " + t("admin.relay.last_error", locale, error=render.shorten(redact(info.last_error), 160))
    return text


def balance_text(balance: Balance | None, locale: str) -> str:
    """A relay's balance for admins ("" when the relay exposes none)."""
    if balance is None:
        return ""
    if balance.unlimited:
        return t("toolkit.balance.unlimited", locale)
    amount = f"{balance.remaining:,.2f}" if balance.unit == "USD" else f"{balance.remaining:,.0f}"
    unit = "USD" if balance.unit == "USD" else t("toolkit.balance.quota_unit", locale)
    return t("toolkit.balance.empty" if balance.empty else "toolkit.balance.left", locale, amount=amount, unit=unit)


def relay_line(info: RelayInfo, now: float, locale: str) -> str:
    return t(
        "admin.relay.list_entry",
        locale,
        position=info.position + 1,
        name=info.name,
        url=redact(info.base_url),
        dialect=t(DIALECT_LABELS.get(info.dialect, "admin.choice.format.gemini"), locale),
        auth=t(AUTH_LABELS.get(info.auth, "admin.choice.auth.query"), locale),
        hint=info.key_hint,
        health=relay_health(info, now, locale),
    )


def parse_aliases(text: str) -> dict[str, str]:
    """``model=name`` lines (the relay's own names for catalogue models); ``model@4K=name``
    for a relay's per-size name (the form shows the probed ones that way)."""
    aliases: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        model, sep, name = (part.strip() for part in line.partition("="))
        if not sep or not model or not name or any(c.isspace() for c in name):
            raise ConfigError("bad aliases", key="admin.relay.bad_aliases")
        base, at, size = model.partition(SIZE_SEP)
        canonical = normalize_size(size) if at else None
        try:
            ours = resolve_model(base).id
        except InvalidRequest:
            raise ConfigError("bad aliases", key="admin.relay.bad_aliases") from None
        if at and canonical is None:
            raise ConfigError("bad aliases", key="admin.relay.bad_aliases")
        aliases[f"{ours}{SIZE_SEP}{canonical}" if at else ours] = name
    return aliases


def check_relay_url(url: str) -> None:
    """A base URL has no query or fragment; refusing them keeps keys out of URLs (and so out
    of lists, modal defaults and logs), since some admins paste ``…?key=SECRET``."""
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment or url.strip().endswith("?"):
        raise ConfigError("query in relay URL", key="admin.relay.url_has_query")


DIALECT_CHOICES = [
    app_commands.Choice(name=_k("admin.choice.format.gemini", "Gemini native (generateContent)"), value="gemini"),
    app_commands.Choice(name=_k("admin.choice.format.openai-images", "OpenAI Images (/v1/images)"), value="openai-images"),
    app_commands.Choice(name=_k("admin.choice.format.openai-chat", "OpenAI Chat (/v1/chat/completions)"), value="openai-chat"),
]
AUTH_CHOICES = [
    app_commands.Choice(name=_k("admin.choice.auth.query", "?key= in the URL"), value="query"),
    app_commands.Choice(name=_k("admin.choice.auth.bearer", "Authorization: Bearer header"), value="bearer"),
    app_commands.Choice(name=_k("admin.choice.auth.x-goog-api-key", "x-goog-api-key header"), value="x-goog-api-key"),
]


def _is_relay_form(payload: Any) -> bool:
    if not isinstance(payload, dict) or payload.get("t") != "INTERACTION_CREATE":
        return False
    d = payload.get("d")
    if not isinstance(d, dict) or d.get("type") != 5:
        return False
    data = d.get("data")
    return isinstance(data, dict) and str(data.get("custom_id", "")).startswith(RELAY_FORM_PREFIX)


def _masked_values(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("***" if k == "value" else _masked_values(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_masked_values(v) for v in node]
    return node


class RelayFormLogFilter(logging.Filter):
    """Masks what was typed into the relay form in discord.py's DEBUG gateway log.

    discord.gateway logs each received event, the form submission (API key included) among
    them, before any of our code runs. The payload is copied, never changed in place: the
    same dict is then dispatched to the bot.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_relay_form(a) for a in args):
            scrubbed: list[object] = []
            for a in args:
                if isinstance(a, dict) and _is_relay_form(a):
                    a = copy.copy(a)
                    a["d"] = _masked_values(a["d"])
                scrubbed.append(a)
            record.args = tuple(scrubbed)
        return True


GATEWAY_LOGGERS = ("discord.gateway",)


# What the form does once submitted (the relay commands store it).
SaveHandler = Callable[[Interaction, "RelayForm"], Awaitable[None]]


class RelayForm(ui.Modal):
    """Name, base URL, API key and model names of a relay (new, or ``current`` to edit)."""

    def __init__(self, on_save: SaveHandler, locale: str, *, dialect: str | None, auth: str | None, current: RelayInfo | None) -> None:
        title = t("admin.relay.modal_edit", locale, name=current.name)[:45] if current else t("admin.relay.modal_add", locale)[:45]
        super().__init__(title=title, timeout=900, custom_id=RELAY_FORM_PREFIX + secrets.token_hex(8))
        self._on_save = on_save
        self.dialect = dialect
        self.auth = auth
        self.current = current
        self.name_input: ui.TextInput[Any] = ui.TextInput(
            custom_id=FIELD_NAME,
            max_length=32,
            default=current.name if current else None,
            placeholder=t("admin.relay.field_name_hint", locale)[:100],
        )
        self.url_input: ui.TextInput[Any] = ui.TextInput(
            custom_id=FIELD_URL,
            max_length=300,
            default=current.base_url if current else None,
            placeholder=t("admin.relay.field_url_hint", locale)[:100],
        )
        # Never a default: the stored key does not leave the database, not even into the form.
        self.key_input: ui.TextInput[Any] = ui.TextInput(custom_id=FIELD_KEY, max_length=1000, required=current is None)
        aliases = "\n".join(f"{m}={n}" for m, n in (current.model_aliases if current else {}).items())
        self.aliases_input: ui.TextInput[Any] = ui.TextInput(
            custom_id=FIELD_ALIASES,
            style=discord.TextStyle.paragraph,
            max_length=1000,
            required=False,
            default=aliases or None,
            placeholder=t("admin.relay.field_aliases_hint", locale)[:100],
        )
        key_note = t("admin.relay.field_key_keep", locale) if current else t("admin.relay.field_key_hint", locale)
        self.add_item(ui.Label(text=t("admin.relay.field_name", locale)[:45], component=self.name_input))
        self.add_item(ui.Label(text=t("admin.relay.field_url", locale)[:45], component=self.url_input))
        self.add_item(ui.Label(text=t("admin.relay.field_key", locale)[:45], description=key_note[:100], component=self.key_input))
        self.add_item(ui.Label(text=t("admin.relay.field_aliases", locale)[:45], component=self.aliases_input))

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        await self._on_save(interaction, self)

    # discord.py 2.7 types Modal.on_error without the item its base class View passes.
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        # Not discord.py's default (which logs the form object): a redacted traceback only.
        key = self.key_input.value or ""
        log.error("the relay form failed: %s", redact("".join(traceback.format_exception(error)), [key]))
        try:
            await send(interaction, embed=render.error_embed(error, locale_of(interaction)))
        except discord.HTTPException:
            pass
