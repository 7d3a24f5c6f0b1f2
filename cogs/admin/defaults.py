"""/admin defaults: the model, aspect ratio and size /imagine starts from, and which models
members may use."""

from __future__ import annotations

from discord import app_commands

from bot.i18n import t
from bot.relay.catalogue import MODELS
from cogs.admin.common import (
    AUTO,
    MODEL_CHOICES,
    AdminBase,
    _ratio_choices,
    _size_choices,
    defaults_summary,
    locale_of,
    models_summary,
    send,
)
from cogs.bot_types import Interaction
from cogs.texts import command_text as _k


class DefaultsCommands(AdminBase):
    defaults = app_commands.Group(
        name=_k("admin.cmd.defaults", "defaults"), description=_k("admin.cmd.defaults.desc", "Default model, aspect ratio and size")
    )

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
        interaction: Interaction,
        model: str | None = None,
        aspect_ratio: str | None = None,
        size: str | None = None,
    ) -> None:
        ratio = "" if aspect_ratio == AUTO else aspect_ratio
        chosen_size = "" if size == AUTO else size
        g = await self._update(interaction, lambda g: g.with_defaults(model=model, ratio=ratio, size=chosen_size))
        if g is not None:
            await send(interaction, defaults_summary(g, locale_of(interaction)))

    @defaults.command(
        name=_k("install.admin.cmd.previews", "previews"),
        description=_k("install.admin.cmd.previews.desc", "Show the model's drafts while it draws, unless a member says otherwise"),
    )
    @app_commands.rename(on=_k("install.admin.opt.on", "on"))
    @app_commands.describe(on=_k("install.admin.opt.on.desc", "On: live previews by default; off: only when a member asks"))
    async def defaults_previews(self, interaction: Interaction, on: bool) -> None:
        g = await self._update(interaction, lambda g: g.with_previews(on))
        if g is not None:
            await send(interaction, t("install.admin.previews.on" if g.previews else "install.admin.previews.off", locale_of(interaction)))

    @defaults.command(name=_k("admin.cmd.models", "models"), description=_k("admin.cmd.models.desc", "Which models members may use"))
    @app_commands.rename(models=_k("admin.opt.models", "models"))
    @app_commands.describe(models=_k("admin.opt.models.desc", "Allowed models, separated by commas (empty: all)"))
    async def defaults_models(self, interaction: Interaction, models: str | None = None) -> None:
        names = [m.strip() for m in (models or "").replace("，", ",").split(",") if m.strip()]
        g = await self._update(interaction, lambda g: g.with_allowed_models(names))
        if g is not None:
            locale = locale_of(interaction)
            await send(interaction, models_summary(g, locale) + "\n" + defaults_summary(g, locale))

    @defaults_models.autocomplete("models")
    async def models_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
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
