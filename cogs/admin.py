"""/admin: a server's relays, defaults, access rules, credit quotas and usage report.

Command tree (English names; zh-CN clients see the catalog's translations)::

    /admin relay    add · edit · list · test · remove · order
    /admin defaults set · models
    /admin access   channel · role · threads
    /admin quota    limits · cost · role-bonus · exempt
    /admin usage
    /admin settings

Decisions:

- ``default_permissions(manage_guild)`` only hides the command; a server owner can hand it to
  anyone in the integration settings. So :meth:`Admin.interaction_check` checks Manage Server
  on every subcommand, and the relay form checks again when it is submitted.
- Relays are added and edited through a modal (name, base URL, API key, model names); the
  format and auth style are slash-command choices, because a choice list is what they are and
  the form stays plain text inputs.
- The API key travels once, from the modal into :class:`~bot.guild_config.RelayStore`
  (encrypted). It is never put into a reply, a modal default or a log line; discord.py's own
  DEBUG log of every gateway event would print the submitted form, so a log filter masks the
  relay form's values there (:class:`RelayFormLogFilter`).
- Every reply is ephemeral and in the invoking member's language (``interaction.locale``).
"""

from __future__ import annotations

import copy
import io
import logging
import secrets
import time
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import discord
from discord import app_commands, ui
from discord.app_commands import locale_str as _
from discord.ext import commands

from bot.guild_config import ConfigError, GuildSettings
from bot.i18n import normalize_locale, t
from bot.pricing import canonical_size
from bot.relay.catalogue import BASE_RATIOS, EXTREME_RATIOS, MODELS, display_size, resolve_model
from bot.relay.redact import redact
from bot.relay.types import InvalidRequest, RelayFailed
from bot.relays.store import MAX_RELAYS_PER_GUILD, RelayInfo
from bot.usage import PERIODS, period_bounds, render_chart_async, summary_text, usage_report
from cogs import render
from cogs.imagine import is_user_facing

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)

RELAY_FORM_PREFIX = "nb:relayform:"
FIELD_NAME = "nb:relay:name"
FIELD_URL = "nb:relay:url"
FIELD_KEY = "nb:relay:key"
FIELD_ALIASES = "nb:relay:aliases"
AUTO = "auto"  # "back to the model's own default" in the defaults choices
NO_MENTIONS = discord.AllowedMentions.none()

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
THREAD_MODE_LABELS = {
    "requester": "admin.access.thread_mode.requester",
    "anyone": "admin.access.thread_mode.anyone",
}


def _k(key: str, text: str) -> app_commands.locale_str:
    return _(text, key=key)


class AdminRefusal(app_commands.CheckFailure):
    """Not allowed to run an admin command; shown translated by the error handler."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
        self.params: dict[str, Any] = {}


def may_administer(interaction: discord.Interaction[Any]) -> bool:
    perms = interaction.permissions
    return interaction.guild_id is not None and (perms.manage_guild or perms.administrator)


def _locale(interaction: discord.Interaction[Any]) -> str:
    return normalize_locale(interaction.locale)


async def _send(
    interaction: discord.Interaction[Any],
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    file: discord.File | None = None,
) -> None:
    """An ephemeral answer, whether or not the interaction was deferred."""
    kwargs: dict[str, Any] = {"ephemeral": True, "allowed_mentions": NO_MENTIONS}
    if content is not None:
        kwargs["content"] = content[:2000]
    if embed is not None:
        kwargs["embed"] = embed
    if file is not None:
        kwargs["file"] = file
    if interaction.response.is_done():
        await interaction.followup.send(**kwargs)
    else:
        await interaction.response.send_message(**kwargs)


async def _refuse(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    await _send(interaction, embed=render.error_embed(exc, _locale(interaction)))


# --- text helpers ----------------------------------------------------------------------------------


def _model(model: str) -> str:
    return render.model_label(model)


def _size(model: str, size: str | None, locale: str) -> str:
    if size:
        return display_size(size)
    if MODELS.get(model) is not None and not MODELS[model].sizes:
        return t("admin.quota.fixed_size", locale)
    return t("admin.defaults.model_default", locale)


def _limit(value: int | None, locale: str) -> str:
    return t("admin.quota.unlimited", locale) if value is None else t("admin.quota.credits", locale, credits=value)


def _mentions(ids: Iterable[int], kind: str) -> str:
    return ", ".join(f"<{kind}{i}>" for i in sorted(ids))


def access_summary(g: GuildSettings, locale: str) -> str:
    return t(
        "admin.access.saved",
        locale,
        channels=_mentions(g.allowed_channels, "#") or t("admin.access.everywhere", locale),
        roles=_mentions(g.allowed_roles, "@&") or t("admin.access.everyone", locale),
        threads=t("admin.access.on", locale) if g.threads else t("admin.access.off", locale),
        thread_mode=t(THREAD_MODE_LABELS.get(g.thread_mode, "admin.access.thread_mode.requester"), locale),
    )


def defaults_summary(g: GuildSettings, locale: str) -> str:
    return t(
        "admin.defaults.saved",
        locale,
        model=_model(g.default_model),
        ratio=g.default_ratio or t("admin.defaults.model_default", locale),
        size=_size(g.default_model, g.default_size, locale),
    )


def models_summary(g: GuildSettings, locale: str) -> str:
    names = ", ".join(_model(m) for m in g.allowed_models) or t("admin.models.all", locale)
    return t("admin.models.saved", locale, models=names)


def quota_summary(g: GuildSettings, locale: str) -> str:
    q = g.quota
    return t(
        "admin.quota.saved",
        locale,
        user_daily=_limit(q.user_daily, locale),
        guild_daily=_limit(q.guild_daily, locale),
        guild_monthly=_limit(q.guild_monthly, locale),
    )


def _plain(text: str) -> str:
    """A "saved" confirmation reused as an overview line: without its check mark."""
    return text.removeprefix("✅").lstrip()


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
    """``model=name`` lines (the relay's own names for catalogue models)."""
    aliases: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        model, sep, name = (part.strip() for part in line.partition("="))
        if not sep or not model or not name or any(c.isspace() for c in name):
            raise ConfigError("bad aliases", key="admin.relay.bad_aliases")
        try:
            aliases[resolve_model(model).id] = name
        except InvalidRequest:
            raise ConfigError("bad aliases", key="admin.relay.bad_aliases") from None
    return aliases


def check_relay_url(url: str) -> None:
    """A base URL has no query or fragment; refusing them keeps keys out of URLs (and so out
    of lists, modal defaults and logs), since some admins paste ``…?key=SECRET``."""
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment or url.strip().endswith("?"):
        raise ConfigError("query in relay URL", key="admin.relay.url_has_query")


def _ratio_choices() -> list[app_commands.Choice[str]]:
    choices = [app_commands.Choice(name=_k("admin.defaults.model_default", "the model's default"), value=AUTO)]
    choices += [app_commands.Choice(name=r, value=r) for r in BASE_RATIOS + EXTREME_RATIOS]
    return choices


def _size_choices(*, auto: bool) -> list[app_commands.Choice[str]]:
    choices = [app_commands.Choice(name=_k("admin.defaults.model_default", "the model's default"), value=AUTO)] if auto else []
    choices += [app_commands.Choice(name=display_size(s), value=s) for s in ("512", "1K", "2K", "4K")]
    return choices


MODEL_CHOICES = [app_commands.Choice(name=spec.label, value=spec.id) for spec in MODELS.values()]
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
THREAD_MODE_CHOICES = [
    app_commands.Choice(name=_k("admin.choice.thread_mode.requester", "Only the person who asked"), value="requester"),
    app_commands.Choice(name=_k("admin.choice.thread_mode.anyone", "Anyone in the thread"), value="anyone"),
]
PERIOD_CHOICES = [
    app_commands.Choice(name=_k("admin.choice.period.day", "Today"), value="day"),
    app_commands.Choice(name=_k("admin.choice.period.week", "Last 7 days"), value="week"),
    app_commands.Choice(name=_k("admin.choice.period.month", "This month"), value="month"),
    app_commands.Choice(name=_k("admin.choice.period.30d", "Last 30 days"), value="30d"),
]
assert {c.value for c in PERIOD_CHOICES} == set(PERIODS)


# --- the relay form --------------------------------------------------------------------------------


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
            scrubbed = []
            for a in args:
                if _is_relay_form(a):
                    a = copy.copy(a)
                    a["d"] = _masked_values(a["d"])
                scrubbed.append(a)
            record.args = tuple(scrubbed)
        return True


GATEWAY_LOGGERS = ("discord.gateway",)


class RelayForm(ui.Modal):
    """Name, base URL, API key and model names of a relay (new, or ``current`` to edit)."""

    def __init__(self, cog: Admin, locale: str, *, dialect: str | None, auth: str | None, current: RelayInfo | None) -> None:
        title = t("admin.relay.modal_edit", locale, name=current.name)[:45] if current else t("admin.relay.modal_add", locale)[:45]
        super().__init__(title=title, timeout=900, custom_id=RELAY_FORM_PREFIX + secrets.token_hex(8))
        self.cog = cog
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

    async def on_submit(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await self.cog.save_relay(interaction, self)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        # Not discord.py's default (which logs the form object): a redacted traceback only.
        key = self.key_input.value or ""
        log.error("the relay form failed: %s", redact("".join(traceback.format_exception(error)), [key]))
        try:
            await _send(interaction, embed=render.error_embed(error, _locale(interaction)))
        except discord.HTTPException:
            pass


# --- the cog ---------------------------------------------------------------------------------------


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(
    commands.GroupCog,
    group_name=_k("admin.cmd.admin", "admin"),
    group_description=_k("admin.cmd.admin.desc", "Set up the bot for this server"),
):
    relay = app_commands.Group(
        name=_k("admin.cmd.relay", "relay"), description=_k("admin.cmd.relay.desc", "The relays this server's pictures are made through")
    )
    defaults = app_commands.Group(
        name=_k("admin.cmd.defaults", "defaults"), description=_k("admin.cmd.defaults.desc", "Default model, aspect ratio and size")
    )
    access = app_commands.Group(
        name=_k("admin.cmd.access", "access"),
        description=_k("admin.cmd.access.desc", "Where the bot works, who may use it, and who may continue a thread"),
    )
    quota = app_commands.Group(
        name=_k("admin.cmd.quota", "quota"), description=_k("admin.cmd.quota.desc", "Credit limits per member and for the whole server")
    )

    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self.log_filter = RelayFormLogFilter()
        super().__init__()

    async def cog_load(self) -> None:
        for name in GATEWAY_LOGGERS:
            logging.getLogger(name).addFilter(self.log_filter)

    async def cog_unload(self) -> None:
        for name in GATEWAY_LOGGERS:
            logging.getLogger(name).removeFilter(self.log_filter)

    async def interaction_check(self, interaction: discord.Interaction[NanoBananaBot]) -> bool:  # type: ignore[override]
        if interaction.guild_id is None:
            raise AdminRefusal("admin.guild_only")
        if not may_administer(interaction):
            raise AdminRefusal("admin.not_allowed")
        return True

    @property
    def svc(self) -> Any:
        return self.bot.services

    async def _update(self, interaction: discord.Interaction[NanoBananaBot], change: Any) -> GuildSettings | None:
        """Apply a settings change; a ConfigError becomes a translated refusal (None)."""
        assert interaction.guild_id is not None
        try:
            return await self.svc.guilds.update(interaction.guild_id, change)
        except ConfigError as exc:
            await _refuse(interaction, exc)
            return None

    # ------------------------------------------------------------------ relays

    @relay.command(
        name=_k("admin.cmd.relay_add", "add"), description=_k("admin.cmd.relay_add.desc", "Add a relay (name, URL and API key in a form)")
    )
    @app_commands.rename(dialect=_k("admin.opt.format", "format"), auth=_k("admin.opt.auth", "auth"))
    @app_commands.describe(
        dialect=_k("admin.opt.format.desc", "The API the relay speaks"), auth=_k("admin.opt.auth.desc", "How the relay wants the API key")
    )
    @app_commands.choices(dialect=DIALECT_CHOICES, auth=AUTH_CHOICES)
    async def relay_add(self, interaction: discord.Interaction[NanoBananaBot], dialect: str = "gemini", auth: str | None = None) -> None:
        assert interaction.guild_id is not None
        if len(await self.svc.relays.list(interaction.guild_id)) >= MAX_RELAYS_PER_GUILD:
            # Say so now, not after the admin has typed a whole form.
            await _refuse(interaction, ConfigError("too many relays", key="admin.relay.too_many", limit=MAX_RELAYS_PER_GUILD))
            return
        # The operator's convention (bot/settings.py): Gemini relays take ?key=, the others Bearer.
        auth = auth or ("query" if dialect == "gemini" else "bearer")
        await interaction.response.send_modal(RelayForm(self, _locale(interaction), dialect=dialect, auth=auth, current=None))

    @relay.command(
        name=_k("admin.cmd.relay_edit", "edit"),
        description=_k("admin.cmd.relay_edit.desc", "Change a relay's name, URL, key, format or auth style"),
    )
    @app_commands.rename(name=_k("admin.opt.name", "name"), dialect=_k("admin.opt.format", "format"), auth=_k("admin.opt.auth", "auth"))
    @app_commands.describe(
        name=_k("admin.opt.name.desc", "The relay's name"),
        dialect=_k("admin.opt.format.desc", "The API the relay speaks"),
        auth=_k("admin.opt.auth.desc", "How the relay wants the API key"),
    )
    @app_commands.choices(dialect=DIALECT_CHOICES, auth=AUTH_CHOICES)
    async def relay_edit(
        self, interaction: discord.Interaction[NanoBananaBot], name: str, dialect: str | None = None, auth: str | None = None
    ) -> None:
        assert interaction.guild_id is not None
        current = await self.svc.relays.get(interaction.guild_id, name)
        if current is None:
            await _refuse(interaction, ConfigError("no such relay", key="admin.relay.not_found", name=name))
            return
        await interaction.response.send_modal(RelayForm(self, _locale(interaction), dialect=dialect, auth=auth, current=current))

    async def save_relay(self, interaction: discord.Interaction[NanoBananaBot], form: RelayForm) -> None:
        """The relay form was submitted: validate, store (key encrypted), answer with the hint."""
        locale = _locale(interaction)
        key = (form.key_input.value or "").strip()
        # (The key is registered for redaction by the relay store once it is stored; until
        # then the messages about it are redacted with it explicitly.)
        if not may_administer(interaction):
            await _refuse(interaction, AdminRefusal("admin.not_allowed"))
            return
        assert interaction.guild_id is not None
        # Checking the URL resolves its host name: that can take longer than Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        name = (form.name_input.value or "").strip()
        url = (form.url_input.value or "").strip()
        try:
            aliases = parse_aliases(form.aliases_input.value or "")
            check_relay_url(url)
            if form.current is None:
                info = await self.svc.relays.add(
                    interaction.guild_id,
                    name=name,
                    base_url=url,
                    api_key=key,
                    dialect=form.dialect or "gemini",
                    auth=form.auth or "query",
                    model_aliases=aliases,
                )
                text = t(
                    "admin.relay.added",
                    locale,
                    name=info.name,
                    dialect=t(DIALECT_LABELS[info.dialect], locale),
                    auth=t(AUTH_LABELS[info.auth], locale),
                    hint=info.key_hint,
                    position=info.position + 1,
                )
            else:
                info = await self.svc.relays.edit(
                    interaction.guild_id,
                    form.current.name,
                    new_name=name or None,
                    base_url=url or None,
                    api_key=key or None,
                    dialect=form.dialect,
                    auth=form.auth,
                    model_aliases=aliases,
                )
                text = t("admin.relay.updated", locale, name=info.name)
        except Exception as exc:  # noqa: BLE001 - refusals are answered, anything else is a bug
            if not is_user_facing(exc):
                raise
            await _refuse(interaction, exc)
            return
        log.info("guild %s: relay %r saved (%s, %s)", interaction.guild_id, info.name, info.dialect, info.auth)
        await _send(interaction, text)

    @relay.command(
        name=_k("admin.cmd.relay_list", "list"), description=_k("admin.cmd.relay_list.desc", "Show this server's relays, in failover order")
    )
    async def relay_list(self, interaction: discord.Interaction[NanoBananaBot]) -> None:
        assert interaction.guild_id is not None
        locale = _locale(interaction)
        relays = await self.svc.relays.list(interaction.guild_id)
        if not relays:
            settings = self.bot.settings
            shared = settings.relay is not None and settings.share_default_relay
            await _send(interaction, t("admin.relay.list_empty_shared" if shared else "admin.relay.list_empty", locale))
            return
        now = time.time()
        embed = discord.Embed(colour=render.BRAND, title=t("admin.relay.list_title", locale))
        embed.description = "\n".join(relay_line(r, now, locale) for r in relays)[:4096]
        await _send(interaction, embed=embed)

    @relay.command(
        name=_k("admin.cmd.relay_test", "test"),
        description=_k("admin.cmd.relay_test.desc", "Make one cheap real call to a relay and report how it went"),
    )
    @app_commands.rename(name=_k("admin.opt.name", "name"))
    @app_commands.describe(name=_k("admin.opt.name.desc", "The relay's name"))
    async def relay_test(self, interaction: discord.Interaction[NanoBananaBot], name: str) -> None:
        assert interaction.guild_id is not None
        locale = _locale(interaction)
        if await self.svc.relays.get(interaction.guild_id, name) is None:
            await _refuse(interaction, ConfigError("no such relay", key="admin.relay.not_found", name=name))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            latency = await self.svc.pool.probe(interaction.guild_id, name)
        except RelayFailed as exc:
            message = render.shorten(redact(exc.relay_message or str(exc)), 500)
            if exc.status:
                text = t("admin.relay.test_failed_status", locale, name=name, status=exc.status, message=message)
            else:
                text = t("admin.relay.test_failed", locale, name=name, message=message)
            await _send(interaction, text)
            return
        except Exception as exc:  # noqa: BLE001
            if not is_user_facing(exc):
                raise
            await _refuse(interaction, exc)
            return
        await _send(interaction, t("admin.relay.test_ok", locale, name=name, ms=round(latency * 1000)))

    @relay.command(
        name=_k("admin.cmd.relay_remove", "remove"), description=_k("admin.cmd.relay_remove.desc", "Remove a relay and its stored key")
    )
    @app_commands.rename(name=_k("admin.opt.name", "name"))
    @app_commands.describe(name=_k("admin.opt.name.desc", "The relay's name"))
    async def relay_remove(self, interaction: discord.Interaction[NanoBananaBot], name: str) -> None:
        assert interaction.guild_id is not None
        locale = _locale(interaction)
        if not await self.svc.relays.remove(interaction.guild_id, name):
            await _refuse(interaction, ConfigError("no such relay", key="admin.relay.not_found", name=name))
            return
        log.info("guild %s: relay %r removed", interaction.guild_id, name)
        await _send(interaction, t("admin.relay.removed", locale, name=name))

    @relay.command(name=_k("admin.cmd.relay_order", "order"), description=_k("admin.cmd.relay_order.desc", "Set the failover order"))
    @app_commands.rename(order=_k("admin.opt.order", "order"))
    @app_commands.describe(order=_k("admin.opt.order.desc", "Relay names, first to last, separated by commas"))
    async def relay_order(self, interaction: discord.Interaction[NanoBananaBot], order: str) -> None:
        assert interaction.guild_id is not None
        locale = _locale(interaction)
        names = [n.strip() for n in order.replace("，", ",").split(",") if n.strip()]
        if not names:
            await _refuse(interaction, ConfigError("empty order", key="admin.relay.order_empty"))
            return
        try:
            relays = await self.svc.relays.reorder(interaction.guild_id, names)
        except ConfigError as exc:
            await _refuse(interaction, exc)
            return
        await _send(interaction, t("admin.relay.order_saved", locale, names=" → ".join(f"**{r.name}**" for r in relays)))

    @relay_edit.autocomplete("name")
    @relay_test.autocomplete("name")
    @relay_remove.autocomplete("name")
    async def relay_name_autocomplete(
        self, interaction: discord.Interaction[NanoBananaBot], current: str
    ) -> list[app_commands.Choice[str]]:
        # Autocomplete skips interaction_check: relay names are for admins only.
        if not may_administer(interaction):
            return []
        wanted = current.strip().lower()
        relays = await self.svc.relays.list(interaction.guild_id)
        return [app_commands.Choice(name=r.name, value=r.name) for r in relays if wanted in r.name.lower()][:25]

    @relay_order.autocomplete("order")
    async def relay_order_autocomplete(
        self, interaction: discord.Interaction[NanoBananaBot], current: str
    ) -> list[app_commands.Choice[str]]:
        if not may_administer(interaction):
            return []
        relays = await self.svc.relays.list(interaction.guild_id)
        if not relays:
            return []
        now = ", ".join(r.name for r in relays)[:100]
        typed = current.strip()
        return [app_commands.Choice(name=text, value=text) for text in dict.fromkeys(x for x in (typed[:100], now) if x)]

    # ------------------------------------------------------------------ defaults

    @defaults.command(
        name=_k("admin.cmd.defaults_set", "set"),
        description=_k("admin.cmd.defaults_set.desc", "Set the default model, aspect ratio and size"),
    )
    @app_commands.rename(
        model=_k("admin.opt.model", "model"), aspect_ratio=_k("admin.opt.aspect_ratio", "aspect_ratio"), size=_k("admin.opt.size", "size")
    )
    @app_commands.describe(
        model=_k("admin.opt.model.desc", "A model"),
        aspect_ratio=_k("admin.opt.aspect_ratio.desc", "Default shape, e.g. 16:9"),
        size=_k("admin.opt.size.desc", "Default resolution: 512px, 1K, 2K or 4K"),
    )
    @app_commands.choices(model=MODEL_CHOICES, aspect_ratio=_ratio_choices(), size=_size_choices(auto=True))
    async def defaults_set(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        model: str | None = None,
        aspect_ratio: str | None = None,
        size: str | None = None,
    ) -> None:
        ratio = "" if aspect_ratio == AUTO else aspect_ratio
        chosen_size = "" if size == AUTO else size
        g = await self._update(interaction, lambda g: g.with_defaults(model=model, ratio=ratio, size=chosen_size))
        if g is not None:
            await _send(interaction, defaults_summary(g, _locale(interaction)))

    @defaults.command(name=_k("admin.cmd.models", "models"), description=_k("admin.cmd.models.desc", "Which models members may use"))
    @app_commands.rename(models=_k("admin.opt.models", "models"))
    @app_commands.describe(models=_k("admin.opt.models.desc", "Allowed models, separated by commas (empty: all)"))
    async def defaults_models(self, interaction: discord.Interaction[NanoBananaBot], models: str | None = None) -> None:
        names = [m.strip() for m in (models or "").replace("，", ",").split(",") if m.strip()]
        g = await self._update(interaction, lambda g: g.with_allowed_models(names))
        if g is not None:
            locale = _locale(interaction)
            await _send(interaction, models_summary(g, locale) + "\n" + defaults_summary(g, locale))

    @defaults_models.autocomplete("models")
    async def models_autocomplete(self, interaction: discord.Interaction[NanoBananaBot], current: str) -> list[app_commands.Choice[str]]:
        # Comma-separated: complete the last item, keep what was typed before it.
        done, _, last = current.rpartition(",")
        prefix = (done.strip() + ", ") if done.strip() else ""
        wanted = last.strip().lower()
        out = []
        for spec in MODELS.values():
            if wanted in spec.id or wanted in spec.label.lower():
                value = (prefix + spec.id)[:100]
                out.append(app_commands.Choice(name=(prefix + spec.label)[:100], value=value))
        return out[:25]

    # ------------------------------------------------------------------ access

    @access.command(
        name=_k("admin.cmd.access_channel", "channel"),
        description=_k("admin.cmd.access_channel.desc", "Allow the bot in a channel, or stop allowing it (none listed: everywhere)"),
    )
    @app_commands.rename(channel=_k("admin.opt.channel", "channel"), allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(channel=_k("admin.opt.channel.desc", "A channel"), allow=_k("admin.opt.allow.desc", "Add (on) or remove (off)"))
    async def access_channel(self, interaction: discord.Interaction[NanoBananaBot], channel: discord.TextChannel, allow: bool) -> None:
        def change(g: GuildSettings) -> GuildSettings:
            channels = set(g.allowed_channels)
            (channels.add if allow else channels.discard)(channel.id)
            return g.with_access(channels=channels)

        g = await self._update(interaction, change)
        if g is not None:
            await _send(interaction, access_summary(g, _locale(interaction)))

    @access.command(
        name=_k("admin.cmd.access_role", "role"),
        description=_k("admin.cmd.access_role.desc", "Let a role use the bot, or stop letting it (none listed: everyone)"),
    )
    @app_commands.rename(role=_k("admin.opt.role", "role"), allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(role=_k("admin.opt.role.desc", "A role"), allow=_k("admin.opt.allow.desc", "Add (on) or remove (off)"))
    async def access_role(self, interaction: discord.Interaction[NanoBananaBot], role: discord.Role, allow: bool) -> None:
        def change(g: GuildSettings) -> GuildSettings:
            roles = set(g.allowed_roles)
            (roles.add if allow else roles.discard)(role.id)
            return g.with_access(roles=roles)

        g = await self._update(interaction, change)
        if g is not None:
            await _send(interaction, access_summary(g, _locale(interaction)))

    @access.command(
        name=_k("admin.cmd.access_threads", "threads"),
        description=_k("admin.cmd.access_threads.desc", "Open a thread on each result, and who may continue it"),
    )
    @app_commands.rename(threads=_k("admin.opt.threads", "threads"), thread_mode=_k("admin.opt.thread_mode", "thread_mode"))
    @app_commands.describe(
        threads=_k("admin.opt.threads.desc", "Open a thread on each result"),
        thread_mode=_k("admin.opt.thread_mode.desc", "Who may continue a picture in its thread"),
    )
    @app_commands.choices(thread_mode=THREAD_MODE_CHOICES)
    async def access_threads(
        self, interaction: discord.Interaction[NanoBananaBot], threads: bool | None = None, thread_mode: str | None = None
    ) -> None:
        g = await self._update(interaction, lambda g: g.with_access(threads=threads, thread_mode=thread_mode))
        if g is not None:
            await _send(interaction, access_summary(g, _locale(interaction)))

    # ------------------------------------------------------------------ quota

    @quota.command(
        name=_k("admin.cmd.quota_limits", "limits"),
        description=_k("admin.cmd.quota_limits.desc", "Credits per member per day, and for the whole server per day and per month"),
    )
    @app_commands.rename(
        user_daily=_k("admin.opt.user_daily", "per_member_daily"),
        guild_daily=_k("admin.opt.guild_daily", "server_daily"),
        guild_monthly=_k("admin.opt.guild_monthly", "server_monthly"),
        max_jobs=_k("admin.opt.max_jobs", "max_jobs"),
    )
    @app_commands.describe(
        user_daily=_k("admin.opt.user_daily.desc", "Credits per member per day (0 = nothing, empty = keep, -1 = no limit)"),
        guild_daily=_k("admin.opt.guild_daily.desc", "Credits for the whole server per day (-1 = no limit)"),
        guild_monthly=_k("admin.opt.guild_monthly.desc", "Credits for the whole server per month (-1 = no limit)"),
        max_jobs=_k("admin.opt.max_jobs.desc", "Pictures this server may have in the making at once"),
    )
    async def quota_limits(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        user_daily: app_commands.Range[int, -1, 1_000_000] | None = None,
        guild_daily: app_commands.Range[int, -1, 1_000_000] | None = None,
        guild_monthly: app_commands.Range[int, -1, 1_000_000] | None = None,
        max_jobs: app_commands.Range[int, -1, 100] | None = None,
    ) -> None:
        # Omitted: keep; -1: no limit.
        changes = {
            name: (None if value == -1 else value)
            for name, value in (("user_daily", user_daily), ("guild_daily", guild_daily), ("guild_monthly", guild_monthly))
            if value is not None
        }

        def change(g: GuildSettings) -> GuildSettings:
            if changes:
                g = g.with_quota(**changes)
            if max_jobs is not None:
                g = g.with_limits(max_jobs=None if max_jobs == -1 else max_jobs, max_jobs_per_user=g.max_jobs_per_user)
            return g

        g = await self._update(interaction, change)
        if g is None:
            return
        locale = _locale(interaction)
        operator = self.bot.settings.max_jobs_per_guild
        lines = [
            quota_summary(g, locale),
            t("admin.limits.saved", locale, max_jobs=min(g.max_jobs or operator, operator)),
            t("admin.quota.resets_note", locale),
        ]
        await _send(interaction, "\n".join(lines))

    @quota.command(
        name=_k("admin.cmd.cost", "cost"), description=_k("admin.cmd.cost.desc", "How many credits a picture costs, by model and size")
    )
    @app_commands.rename(
        model=_k("admin.opt.model", "model"),
        size=_k("admin.opt.size", "size"),
        credits=_k("admin.opt.credits", "credits"),
        price=_k("admin.opt.price", "price_usd"),
    )
    @app_commands.describe(
        model=_k("admin.opt.model.desc", "A model"),
        size=_k("admin.opt.size.desc", "Default resolution: 512px, 1K, 2K or 4K"),
        credits=_k("admin.opt.credits.desc", "Credits (-1 = back to the default)"),
        price=_k("admin.opt.price.desc", "Estimated price per picture in US dollars, for the usage report"),
    )
    @app_commands.choices(model=MODEL_CHOICES, size=_size_choices(auto=False))
    async def quota_cost(
        self,
        interaction: discord.Interaction[NanoBananaBot],
        model: str | None = None,
        size: str | None = None,
        credits: app_commands.Range[int, -1, 1000] | None = None,
        price: app_commands.Range[float, -1.0, 100.0] | None = None,
    ) -> None:
        locale = _locale(interaction)
        if model is None or (credits is None and price is None):
            # Nothing to change: show the table.
            g = await self.svc.guild(interaction.guild_id)
            lines = [f"**{t('admin.quota.costs_title', locale)}**"]
            for (m, s), n in g.cost_table().items():
                lines.append(t("admin.quota.cost_entry", locale, model=_model(m), size=_size(m, s, locale), credits=n))
            await _send(interaction, "\n".join(lines))
            return

        def change(g: GuildSettings) -> GuildSettings:
            if credits is not None:
                g = g.with_cost(model, size, None if credits == -1 else credits)
            if price is not None:
                g = g.with_price(model, size, None if price < 0 else price)
            return g

        g = await self._update(interaction, change)
        if g is None:
            return
        shown = canonical_size(model, size)
        lines = []
        if credits is not None:
            key = "admin.quota.cost_reset" if credits == -1 else "admin.quota.cost_saved"
            lines.append(t(key, locale, model=_model(model), size=_size(model, shown, locale), credits=g.cost(model, shown)))
        if price is not None:
            lines.append(
                t(
                    "admin.quota.price_saved",
                    locale,
                    model=_model(model),
                    size=_size(model, shown, locale),
                    price=f"{g.price(model, shown):.3f}",
                )
            )
        await _send(interaction, "\n".join(lines))

    @quota.command(
        name=_k("admin.cmd.role_bonus", "role-bonus"),
        description=_k("admin.cmd.role_bonus.desc", "Extra daily credits for members with a role"),
    )
    @app_commands.rename(role=_k("admin.opt.role", "role"), credits=_k("admin.opt.credits", "credits"))
    @app_commands.describe(
        role=_k("admin.opt.role.desc", "A role"), credits=_k("admin.opt.credits.desc", "Credits (-1 = back to the default)")
    )
    async def quota_role_bonus(
        self, interaction: discord.Interaction[NanoBananaBot], role: discord.Role, credits: app_commands.Range[int, -1, 1_000_000]
    ) -> None:
        def change(g: GuildSettings) -> GuildSettings:
            extra = dict(g.quota.role_extra)
            if credits > 0:
                extra[role.id] = credits
            else:
                extra.pop(role.id, None)
            return g.with_quota(role_extra=extra)

        g = await self._update(interaction, change)
        if g is None:
            return
        locale = _locale(interaction)
        if credits > 0:
            await _send(interaction, t("admin.quota.role_bonus_saved", locale, role=role.mention, credits=credits))
        else:
            await _send(interaction, t("admin.quota.role_bonus_removed", locale, role=role.mention))

    @quota.command(
        name=_k("admin.cmd.exempt", "exempt"),
        description=_k("admin.cmd.exempt.desc", "Free a role from the per-member limit (the server limits still apply)"),
    )
    @app_commands.rename(role=_k("admin.opt.role", "role"), allow=_k("admin.opt.allow", "allow"))
    @app_commands.describe(role=_k("admin.opt.role.desc", "A role"), allow=_k("admin.opt.allow.desc", "Add (on) or remove (off)"))
    async def quota_exempt(self, interaction: discord.Interaction[NanoBananaBot], role: discord.Role, allow: bool) -> None:
        def change(g: GuildSettings) -> GuildSettings:
            roles = set(g.quota.exempt_roles)
            (roles.add if allow else roles.discard)(role.id)
            return g.with_quota(exempt_roles=roles)

        g = await self._update(interaction, change)
        if g is None:
            return
        key = "admin.quota.exempt_added" if allow else "admin.quota.exempt_removed"
        await _send(interaction, t(key, _locale(interaction), role=role.mention))

    # ------------------------------------------------------------------ usage and overview

    @app_commands.command(
        name=_k("admin.cmd.usage", "usage"),
        description=_k("admin.cmd.usage.desc", "Pictures, credits, estimated spend, failures and relay speed"),
    )
    @app_commands.rename(period=_k("admin.opt.period", "period"))
    @app_commands.describe(period=_k("admin.opt.period.desc", "Which period"))
    @app_commands.choices(period=PERIOD_CHOICES)
    async def usage(self, interaction: discord.Interaction[NanoBananaBot], period: str = "30d") -> None:
        locale = _locale(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        g = await self.svc.guild(interaction.guild_id)
        start, end = period_bounds(period, time.time())
        report = await usage_report(self.svc.db, interaction.guild_id, start, end, settings=g)
        chart = await render_chart_async(report, locale)
        text = summary_text(report, locale)
        if report.images:
            text += "\n-# " + t("usage.summary.spend_note", locale)
        await _send(interaction, text, file=discord.File(io.BytesIO(chart), filename=f"usage-{period}.png"))

    @app_commands.command(
        name=_k("admin.cmd.settings", "settings"), description=_k("admin.cmd.settings.desc", "Show all of this server's bot settings")
    )
    async def settings_show(self, interaction: discord.Interaction[NanoBananaBot]) -> None:
        assert interaction.guild_id is not None
        locale = _locale(interaction)
        g = await self.svc.guild(interaction.guild_id)
        relays = await self.svc.relays.list(interaction.guild_id)
        embed = discord.Embed(colour=render.BRAND, title=t("admin.settings.title", locale))
        embed.add_field(
            name=t("admin.settings.defaults", locale),
            value=(_plain(defaults_summary(g, locale)) + "\n" + _plain(models_summary(g, locale)))[:1024],
            inline=False,
        )
        embed.add_field(name=t("admin.settings.access", locale), value=_plain(access_summary(g, locale))[:1024], inline=False)
        quota_lines = [_plain(quota_summary(g, locale))]
        if g.quota.role_extra:
            bonuses = ", ".join(f"<@&{r}> +{n}" for r, n in sorted(g.quota.role_extra.items()))
            quota_lines.append(t("admin.settings.role_bonuses", locale, roles=bonuses))
        if g.quota.exempt_roles:
            quota_lines.append(t("admin.settings.exempt_roles", locale, roles=_mentions(g.quota.exempt_roles, "@&")))
        embed.add_field(name=t("admin.settings.quota", locale), value="\n".join(quota_lines)[:1024], inline=False)
        if relays:
            now = time.time()
            relay_text = "\n".join(relay_line(r, now, locale) for r in relays)
        else:
            settings = self.bot.settings
            shared = settings.relay is not None and settings.share_default_relay
            relay_text = t("admin.relay.list_empty_shared" if shared else "admin.relay.list_empty", locale)
        embed.add_field(name=t("admin.settings.relays", locale), value=relay_text[:1024], inline=False)
        await _send(interaction, embed=embed)


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Admin(bot))
