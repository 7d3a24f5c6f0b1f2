"""``/admin relay add`` without a format: the relay is probed from its URL and key alone
(bot/relay/probe.py: model lists and empty POSTs only, nothing generated or billed, the URL
guard obeyed, the key never in a result), the admin is shown what was found and why, and a
found relay is stored. When nothing useful answers, the admin is told to choose the format
and nothing is stored."""

from __future__ import annotations

import logging

from bot.i18n import t
from bot.relay.probe import probe_relay
from bot.relay.probe_result import ProbeResult
from bot.relays.store import RelayInfo
from bot.services import Services
from cogs.admin.relay_form import AUTH_LABELS, DIALECT_LABELS
from cogs.render import model_label

log = logging.getLogger(__name__)


def probe_text(result: ProbeResult, locale: str) -> str:
    """The verdict and the reasons behind it, in the admin's language (nothing of the key)."""
    verdict = t(
        result.message_key,
        locale,
        dialect=t(DIALECT_LABELS.get(result.dialect or "", "admin.choice.format.gemini"), locale),
        auth=t(AUTH_LABELS.get(result.auth or "", "admin.choice.auth.query"), locale),
        candidates=", ".join(t(DIALECT_LABELS[c], locale) for c in result.candidates if c in DIALECT_LABELS) or "-",
    )
    lines = [verdict, *(f"- {t(d.key, locale, **d.params)}" for d in result.decisions)]
    if result.found and result.models.served:
        named = (model_label(m) + (f" = `{result.models.aliases[m]}`" if m in result.models.aliases else "") for m in result.models.served)
        lines.append(t("toolkit.probe.models", locale, models=", ".join(named)))
    return "\n".join(lines)


async def probe_and_store(
    svc: Services, guild_id: int, *, name: str, url: str, api_key: str, aliases: dict[str, str], locale: str
) -> tuple[RelayInfo | None, str]:
    """Probe, then store what was found (the names the admin typed win over the probed ones).
    Returns the stored relay (None: nothing stored) and the answer to show."""
    result = await probe_relay(svc.relay_client, url, api_key, trusted=False)
    log.info("guild %s: relay probe: %s", guild_id, result.summary())
    found = probe_text(result, locale)
    if not result.found:
        return None, found + "\n" + t("probe.outcome.not_found", locale)
    info = await svc.relays.add_probed(guild_id, name, result, api_key, aliases=aliases)
    stored = t("toolkit.probe.stored", locale, name=info.name, hint=info.key_hint, position=info.position + 1)
    return info, stored + "\n" + found
