"""/admin safety: the prompt blocklist, models kept to age-restricted (NSFW) channels,
spoilered results and the Gemini safety thresholds (bot/safety/). Checked before any job is
queued (cogs/intake.py); the thresholds are sent on Gemini relays (bot/relays/pool.py)."""

from __future__ import annotations

from collections.abc import Callable

from discord import app_commands

from bot.guild_config import GuildSettings
from bot.i18n import t
from bot.safety import CATEGORIES, THRESHOLDS
from bot.safety.policy import SafetyPolicy
from cogs.admin.common import MODEL_CHOICES, AdminBase, locale_of, model_name, send
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k

DEFAULT = "default"  # "back to the relay's own default" in the threshold choices
# Short names the choices carry (bot.safety.gemini takes them), in the API's category order,
# with their labels' keys written whole (the translation scan finds every key used).
CATEGORY_LABELS = {
    "harassment": ("toolkit.choice.category.harassment", "Harassment"),
    "hate": ("toolkit.choice.category.hate", "Hate speech"),
    "sexual": ("toolkit.choice.category.sexual", "Sexually explicit"),
    "dangerous": ("toolkit.choice.category.dangerous", "Dangerous content"),
    "civic": ("toolkit.choice.category.civic", "Civic integrity"),
}
THRESHOLD_LABELS = {
    "low": ("toolkit.choice.threshold.low", "Block low likelihood and above"),
    "medium": ("toolkit.choice.threshold.medium", "Block medium likelihood and above"),
    "high": ("toolkit.choice.threshold.high", "Block only high likelihood"),
    "none": ("toolkit.choice.threshold.none", "Block nothing (ratings kept)"),
    "off": ("toolkit.choice.threshold.off", "Filter off"),
    DEFAULT: ("toolkit.choice.threshold.default", "The relay's default"),
}
CATEGORY_OF = dict(zip(CATEGORIES, CATEGORY_LABELS, strict=True))  # HARM_CATEGORY_... -> short name
THRESHOLD_OF = dict(zip(THRESHOLDS, THRESHOLD_LABELS, strict=False))  # BLOCK_... -> short name

CATEGORY_CHOICES = [app_commands.Choice(name=_k(key, text), value=name) for name, (key, text) in CATEGORY_LABELS.items()]
THRESHOLD_CHOICES = [app_commands.Choice(name=_k(key, text), value=name) for name, (key, text) in THRESHOLD_LABELS.items()]


def safety_summary(policy: SafetyPolicy, locale: str) -> str:
    """Every safety setting of a server, for the admin (the rules themselves included)."""
    rules = ", ".join(f"`{r}`" for r in policy.blocklist) or t("toolkit.safety.none", locale)
    nsfw = ", ".join(model_name(m) for m in policy.nsfw_models) or t("toolkit.safety.none", locale)
    thresholds = " · ".join(
        t(CATEGORY_LABELS[CATEGORY_OF[c]][0], locale)
        + ": "
        + t(THRESHOLD_LABELS[THRESHOLD_OF.get(policy.gemini.thresholds.get(c, ""), DEFAULT)][0], locale)
        for c in CATEGORIES
    )
    return t(
        "toolkit.safety.summary",
        locale,
        count=len(policy.blocklist),
        rules=rules[:1200],
        nsfw_models=nsfw,
        spoiler=t("toolkit.safety.on" if policy.spoiler else "toolkit.safety.off", locale),
        thresholds=thresholds,
    )


class SafetyCommands(AdminBase):
    safety = app_commands.Group(
        name=_k("toolkit.cmd.safety", "safety"),
        description=_k("toolkit.cmd.safety.desc", "Blocked words, NSFW-only models, spoilers and the model's safety filter"),
    )

    @safety.command(
        name=_k("toolkit.cmd.safety_block", "block"),
        description=_k("toolkit.cmd.safety_block.desc", "Refuse prompts containing a word, phrase or pattern"),
    )
    @app_commands.rename(rule=_k("toolkit.opt.rule", "rule"))
    @app_commands.describe(rule=_k("toolkit.opt.rule.desc", "A word or phrase, nud* for a wildcard, or /pattern/"))
    async def safety_block(self, interaction: Interaction, rule: str) -> None:
        await self._save(
            interaction, lambda g: g.with_safety(g.safety.with_blocked(rule)), "toolkit.safety.blocked_added", rule=rule.strip()
        )

    @safety.command(
        name=_k("toolkit.cmd.safety_unblock", "unblock"), description=_k("toolkit.cmd.safety_unblock.desc", "Take a rule off the blocklist")
    )
    @app_commands.rename(rule=_k("toolkit.opt.rule", "rule"))
    @app_commands.describe(rule=_k("toolkit.opt.rule.desc", "A word or phrase, nud* for a wildcard, or /pattern/"))
    async def safety_unblock(self, interaction: Interaction, rule: str) -> None:
        await self._save(
            interaction, lambda g: g.with_safety(g.safety.without_blocked(rule)), "toolkit.safety.blocked_removed", rule=rule.strip()
        )

    @safety.command(
        name=_k("toolkit.cmd.safety_list", "list"),
        description=_k("toolkit.cmd.safety_list.desc", "The blocklist and every other safety setting"),
    )
    async def safety_list(self, interaction: Interaction) -> None:
        g = await self.services.guild(interaction.guild_id)
        await send(interaction, safety_summary(g.safety, locale_of(interaction)))

    @safety.command(
        name=_k("toolkit.cmd.safety_nsfw", "nsfw-model"),
        description=_k("toolkit.cmd.safety_nsfw.desc", "Allow a model only in age-restricted (NSFW) channels"),
    )
    @app_commands.rename(model=_k("admin.opt.model", "model"), nsfw_only=_k("toolkit.opt.nsfw_only", "nsfw_only"))
    @app_commands.describe(
        model=_k("admin.opt.model.desc", "A model"),
        nsfw_only=_k("toolkit.opt.nsfw_only.desc", "Only in NSFW channels (on) or everywhere (off)"),
    )
    @app_commands.choices(model=MODEL_CHOICES)
    async def safety_nsfw(self, interaction: Interaction, model: str, nsfw_only: bool) -> None:
        await self._save(interaction, lambda g: g.with_nsfw_model(model, nsfw_only), None)

    @safety.command(
        name=_k("toolkit.cmd.safety_spoiler", "spoiler"),
        description=_k("toolkit.cmd.safety_spoiler.desc", "Post every result as a spoiler"),
    )
    @app_commands.rename(on=_k("toolkit.opt.on", "on"))
    @app_commands.describe(on=_k("toolkit.opt.on.desc", "Spoiler results (on) or not (off)"))
    async def safety_spoiler(self, interaction: Interaction, on: bool) -> None:
        await self._save(interaction, lambda g: g.with_safety(g.safety.with_spoiler(on)), None)

    @safety.command(
        name=_k("toolkit.cmd.safety_threshold", "threshold"),
        description=_k("toolkit.cmd.safety_threshold.desc", "How strictly a Gemini relay's model filters one category"),
    )
    @app_commands.rename(category=_k("toolkit.opt.category", "category"), threshold=_k("toolkit.opt.threshold", "threshold"))
    @app_commands.describe(
        category=_k("toolkit.opt.category.desc", "A harm category"),
        threshold=_k("toolkit.opt.threshold.desc", "Block from this likelihood up"),
    )
    @app_commands.choices(category=CATEGORY_CHOICES, threshold=THRESHOLD_CHOICES)
    async def safety_threshold(self, interaction: Interaction, category: str, threshold: str) -> None:
        chosen = None if threshold == DEFAULT else threshold
        await self._save(interaction, lambda g: g.with_safety(g.safety.with_threshold(category, chosen)), None)

    async def _save(
        self, interaction: Interaction, change: Callable[[GuildSettings], GuildSettings], key: str | None, **params: str
    ) -> None:
        """Apply a safety change; answer with what changed (``key``) and the rules as they now stand."""
        g = await self._update(interaction, change)
        if g is None:
            return
        locale = locale_of(interaction)
        head = t(key, locale, **params) + "\n" if key else ""
        await send(interaction, head + safety_summary(g.safety, locale))
