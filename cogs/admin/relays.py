"""/admin relay: add, edit, list, test, remove and order this server's relays.

Relays are added and edited through a form (name, base URL, API key, model names); the format
and auth style are slash-command choices, because a choice list is what they are and the form
stays plain text inputs. The form checks Manage Server again when it is submitted.
"""

from __future__ import annotations

import logging
import time

import discord
from discord import app_commands

from bot.guild_config import ConfigError
from bot.i18n import t
from bot.relay.redact import redact
from bot.relay.types import RelayFailed, default_auth
from bot.relays.store import MAX_RELAYS_PER_GUILD, RelayInfo
from cogs import render
from cogs.admin.common import AdminBase, AdminRefusal, locale_of, may_administer, refuse, send
from cogs.admin.log import log_summary
from cogs.admin.relay_form import (
    AUTH_CHOICES,
    AUTH_LABELS,
    DIALECT_CHOICES,
    DIALECT_LABELS,
    RelayForm,
    balance_text,
    check_relay_url,
    parse_aliases,
    relay_line,
)
from cogs.admin.relay_probe import probe_and_store
from cogs.bot_types import Interaction
from cogs.failures import is_user_facing
from cogs.texts import command_text as _k

log = logging.getLogger(__name__)


def added_text(info: RelayInfo, locale: str) -> str:
    return t(
        "admin.relay.added",
        locale,
        name=info.name,
        dialect=t(DIALECT_LABELS[info.dialect], locale),
        auth=t(AUTH_LABELS[info.auth], locale),
        hint=info.key_hint,
        position=info.position + 1,
    )


class RelayCommands(AdminBase):
    relay = app_commands.Group(
        name=_k("admin.cmd.relay", "relay"), description=_k("admin.cmd.relay.desc", "The relays this server's pictures are made through")
    )

    @relay.command(
        name=_k("admin.cmd.relay_add", "add"), description=_k("admin.cmd.relay_add.desc", "Add a relay (name, URL and API key in a form)")
    )
    @app_commands.rename(dialect=_k("admin.opt.format", "format"), auth=_k("admin.opt.auth", "auth"))
    @app_commands.describe(
        dialect=_k("toolkit.opt.format_add.desc", "The API the relay speaks (empty: worked out from the URL and key)"),
        auth=_k("admin.opt.auth.desc", "How the relay wants the API key"),
    )
    @app_commands.choices(dialect=DIALECT_CHOICES, auth=AUTH_CHOICES)
    async def relay_add(self, interaction: Interaction, dialect: str | None = None, auth: str | None = None) -> None:
        assert interaction.guild_id is not None
        if len(await self.services.relays.list(interaction.guild_id)) >= MAX_RELAYS_PER_GUILD:
            # Say so now, not after the admin has typed a whole form.
            await refuse(interaction, ConfigError("too many relays", key="admin.relay.too_many", limit=MAX_RELAYS_PER_GUILD))
            return
        # Neither given: the relay is probed when the form is sent (relay_probe.py). Otherwise the
        # dialect's usual auth style (bot.relay.types.default_auth).
        if dialect is not None or auth is not None:
            dialect = dialect or "gemini"
            auth = auth or default_auth(dialect)
        await interaction.response.send_modal(RelayForm(self.save_relay, locale_of(interaction), dialect=dialect, auth=auth, current=None))

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
    async def relay_edit(self, interaction: Interaction, name: str, dialect: str | None = None, auth: str | None = None) -> None:
        assert interaction.guild_id is not None
        current = await self.services.relays.get(interaction.guild_id, name)
        if current is None:
            await refuse(interaction, ConfigError("no such relay", key="admin.relay.not_found", name=name))
            return
        await interaction.response.send_modal(
            RelayForm(self.save_relay, locale_of(interaction), dialect=dialect, auth=auth, current=current)
        )

    async def save_relay(self, interaction: Interaction, form: RelayForm) -> None:
        """The relay form was submitted: validate, store (key encrypted), answer with the hint."""
        locale = locale_of(interaction)
        key = (form.key_input.value or "").strip()
        # (The key is registered for redaction by the relay store once it is stored; until
        # then the messages about it are redacted with it explicitly.)
        if not may_administer(interaction):
            await refuse(interaction, AdminRefusal("admin.not_allowed"))
            return
        assert interaction.guild_id is not None
        # Checking the URL resolves its host name: that can take longer than Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        name = (form.name_input.value or "").strip()
        url = (form.url_input.value or "").strip()
        try:
            aliases = parse_aliases(form.aliases_input.value or "")
            check_relay_url(url)
            if form.current is None and form.dialect is None:
                stored, text = await probe_and_store(
                    self.services, interaction.guild_id, name=name, url=url, api_key=key, aliases=aliases, locale=locale
                )
                if stored is None:
                    await send(interaction, text)
                    return
                info = stored
            elif form.current is None:
                info = await self.services.relays.add(
                    interaction.guild_id,
                    name=name,
                    base_url=url,
                    api_key=key,
                    dialect=form.dialect or "gemini",
                    auth=form.auth or default_auth(form.dialect or "gemini"),
                    model_aliases=aliases,
                )
                text = added_text(info, locale)
            else:
                info = await self.services.relays.edit(
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
            await refuse(interaction, exc)
            return
        log.info("guild %s: relay %r saved (%s, %s)", interaction.guild_id, info.name, info.dialect, info.auth)
        await send(interaction, text)

    @relay.command(
        name=_k("admin.cmd.relay_list", "list"), description=_k("admin.cmd.relay_list.desc", "Show this server's relays, in failover order")
    )
    async def relay_list(self, interaction: Interaction) -> None:
        assert interaction.guild_id is not None
        locale = locale_of(interaction)
        relays = await self.services.relays.list(interaction.guild_id)
        if not relays:
            settings = self.bot.settings
            shared = settings.relay is not None and settings.share_default_relay
            await send(interaction, t("admin.relay.list_empty_shared" if shared else "admin.relay.list_empty", locale))
            return
        # Balances are read live (one bounded call or two per relay): that can outlast Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        balances = {b.relay_id: b.balance for b in await self.services.balances.read(interaction.guild_id)}
        now = time.time()
        embed = discord.Embed(colour=render.BRAND, title=t("admin.relay.list_title", locale))
        lines = (relay_line(r, now, locale) + balance_text(balances.get(r.id), locale) for r in relays)
        embed.description = "\n".join(lines)[:4096]
        await send(interaction, embed=embed)

    @relay.command(
        name=_k("toolkit.cmd.relay_low_balance", "low-balance"),
        description=_k("toolkit.cmd.relay_low_balance.desc", "Warn in the moderation log when a relay's balance falls below this"),
    )
    @app_commands.rename(below=_k("toolkit.opt.below", "below"))
    @app_commands.describe(below=_k("toolkit.opt.below.desc", "An amount in the relay's unit (empty: warn only when it runs out)"))
    async def relay_low_balance(self, interaction: Interaction, below: float | None = None) -> None:
        g = await self._update(interaction, lambda g: g.with_balance_warning(below))
        if g is None:
            return
        locale = locale_of(interaction)
        key = "toolkit.balance.warn_set" if below is not None else "toolkit.balance.warn_empty_only"
        await send(interaction, t(key, locale, amount=f"{below:g}" if below is not None else "") + "\n" + log_summary(g, locale))

    @relay.command(
        name=_k("admin.cmd.relay_test", "test"),
        description=_k("admin.cmd.relay_test.desc", "Make one cheap real call to a relay and report how it went"),
    )
    @app_commands.rename(name=_k("admin.opt.name", "name"))
    @app_commands.describe(name=_k("admin.opt.name.desc", "The relay's name"))
    async def relay_test(self, interaction: Interaction, name: str) -> None:
        assert interaction.guild_id is not None
        locale = locale_of(interaction)
        if await self.services.relays.get(interaction.guild_id, name) is None:
            await refuse(interaction, ConfigError("no such relay", key="admin.relay.not_found", name=name))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            latency = await self.services.pool.probe(interaction.guild_id, name)
        except RelayFailed as exc:
            message = render.shorten(redact(exc.relay_message or str(exc)), 500)
            if exc.status:
                text = t("admin.relay.test_failed_status", locale, name=name, status=exc.status, message=message)
            else:
                text = t("admin.relay.test_failed", locale, name=name, message=message)
            await send(interaction, text)
            return
        except Exception as exc:  # noqa: BLE001
            if not is_user_facing(exc):
                raise
            await refuse(interaction, exc)
            return
        await send(interaction, t("admin.relay.test_ok", locale, name=name, ms=round(latency * 1000)))

    @relay.command(
        name=_k("admin.cmd.relay_remove", "remove"), description=_k("admin.cmd.relay_remove.desc", "Remove a relay and its stored key")
    )
    @app_commands.rename(name=_k("admin.opt.name", "name"))
    @app_commands.describe(name=_k("admin.opt.name.desc", "The relay's name"))
    async def relay_remove(self, interaction: Interaction, name: str) -> None:
        assert interaction.guild_id is not None
        locale = locale_of(interaction)
        if not await self.services.relays.remove(interaction.guild_id, name):
            await refuse(interaction, ConfigError("no such relay", key="admin.relay.not_found", name=name))
            return
        log.info("guild %s: relay %r removed", interaction.guild_id, name)
        await send(interaction, t("admin.relay.removed", locale, name=name))

    @relay.command(name=_k("admin.cmd.relay_order", "order"), description=_k("admin.cmd.relay_order.desc", "Set the failover order"))
    @app_commands.rename(order=_k("admin.opt.order", "order"))
    @app_commands.describe(order=_k("admin.opt.order.desc", "Relay names, first to last, separated by commas"))
    async def relay_order(self, interaction: Interaction, order: str) -> None:
        assert interaction.guild_id is not None
        locale = locale_of(interaction)
        names = [n.strip() for n in order.replace("，", ",").split(",") if n.strip()]
        if not names:
            await refuse(interaction, ConfigError("empty order", key="admin.relay.order_empty"))
            return
        try:
            relays = await self.services.relays.reorder(interaction.guild_id, names)
        except ConfigError as exc:
            await refuse(interaction, exc)
            return
        await send(interaction, t("admin.relay.order_saved", locale, names=" → ".join(f"**{r.name}**" for r in relays)))

    @relay_edit.autocomplete("name")
    @relay_test.autocomplete("name")
    @relay_remove.autocomplete("name")
    async def relay_name_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        # Autocomplete skips interaction_check: relay names are for admins only.
        if interaction.guild_id is None or not may_administer(interaction):
            return []
        wanted = current.strip().lower()
        relays = await self.services.relays.list(interaction.guild_id)
        return [app_commands.Choice(name=r.name, value=r.name) for r in relays if wanted in r.name.lower()][:25]

    @relay_order.autocomplete("order")
    async def relay_order_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None or not may_administer(interaction):
            return []
        relays = await self.services.relays.list(interaction.guild_id)
        if not relays:
            return []
        now = ", ".join(r.name for r in relays)[:100]
        typed = current.strip()
        return [app_commands.Choice(name=text, value=text) for text in dict.fromkeys(x for x in (typed[:100], now) if x)]
