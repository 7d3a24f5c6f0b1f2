"""/imagine and the "Edit image" message command; wires the job queue to this feature.

The feature's parts: buttons.py (the result and progress buttons), start.py (a request becomes
a queued job), progress.py (the progress message), delivery.py (running a job and posting it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import normalize_locale, t
from bot.jobs import Job
from bot.preferences import Preferences, for_request
from bot.refusal import Refusal
from bot.relay.catalogue import MODELS, ModelSpec, display_size, resolve_model
from bot.relay.types import InvalidRequest
from bot.services import progress_message_id
from bot.studio import JobRequest
from bot.variations import variant_count
from cogs import render
from cogs.bot_types import Interaction
from cogs.failures import is_user_facing
from cogs.install import scope_id
from cogs.intake import upload_limit
from cogs.language import member_locale
from cogs.settings import DROPPED
from cogs.texts import command_text as _k

from .buttons import DYNAMIC_ITEMS, CancelButton, EditModal, RetryButton, single_button_view
from .delivery import Delivery
from .groups import VariantGroups
from .lost import LostRequests
from .progress import Progress, job_locale
from .references import References
from .start import Notice, Starter

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

log = logging.getLogger(__name__)


_RENAMED = dict(
    prompt=_k("opt.prompt", "prompt"),
    image1=_k("opt.image1", "image1"),
    image2=_k("opt.image2", "image2"),
    image3=_k("opt.image3", "image3"),
    image4=_k("opt.image4", "image4"),
    model=_k("opt.model", "model"),
    aspect_ratio=_k("opt.aspect_ratio", "aspect_ratio"),
    size=_k("opt.size", "size"),
    search=_k("opt.search", "search"),
    thinking=_k("opt.thinking", "thinking"),
    count=_k("opt.count", "count"),
    style=_k("opt.style", "style"),
    preview=_k("live.opt.preview", "preview"),
    more_images=_k("refs.opt.more_images", "more_images"),
)


_DESCRIBED = dict(
    prompt=_k("opt.prompt.desc", "What to draw, or how to change the reference images"),
    image1=_k("opt.image.desc", "A reference image"),
    image2=_k("opt.image.desc", "A reference image"),
    image3=_k("opt.image.desc", "A reference image"),
    image4=_k("opt.image.desc", "A reference image"),
    model=_k("opt.model.desc", "Which Nano Banana model"),
    aspect_ratio=_k("opt.aspect_ratio.desc", "Shape of the picture, e.g. 16:9"),
    size=_k("opt.size.desc", "Resolution: 512px, 1K, 2K or 4K (depends on the model)"),
    search=_k("live.opt.search.desc", "Ground the picture in Google Search: the web, or the web and Google Images (3.1 Flash)"),
    thinking=_k("opt.thinking.desc", "How hard the model thinks first (3.1 Flash)"),
    count=_k("opt.count.desc", "How many variants to make at once (1-4), each charged"),
    style=_k("opt.style.desc", "A saved style: its prompt template and reference pictures"),
    preview=_k("live.opt.preview.desc", "Show the model's drafts while it draws (3 Pro and 3.1 Flash)"),
    more_images=_k("refs.opt.more_images.desc", "Add more reference images in a form (up to 14 in all on 3 Pro / 3.1 Flash)"),
)


@dataclass(frozen=True)
class Typed:
    """The options a member typed on /imagine (None: not given)."""

    model: str | None = None
    aspect_ratio: str | None = None
    size: str | None = None
    count: int | None = None
    style: str | None = None


def _cancel_view(job: Job) -> discord.ui.View:
    return single_button_view(CancelButton(job.id, locale=job_locale(job)))


class Imagine(commands.Cog):
    def __init__(self, bot: NanoBananaBot) -> None:
        self.bot = bot
        self.progress = Progress(bot, _cancel_view)
        self.variants = VariantGroups(bot)
        self.starter = Starter(bot, self.progress, self.variants)
        self.delivery = Delivery(bot, self.progress, self.variants)
        self.lost = LostRequests(bot)
        # Installs and contexts as for /imagine (cogs/install.py configures every command).
        self.edit_menu = app_commands.ContextMenu(name=_k("cmd.edit_image", "Edit image"), callback=self.edit_image_menu)
        self.references = References(self.starter, lambda i, prompt: self._request(i, prompt, Typed()))
        self.imagine_with_menu = app_commands.ContextMenu(
            name=_k("refs.cmd.imagine_with", "Imagine with these images"), callback=self.imagine_with_images
        )

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)
        self.bot.tree.add_command(self.edit_menu)
        self.bot.tree.add_command(self.imagine_with_menu)
        self.bot.services.set_handlers(runner=self.delivery.run_job, on_position=self.on_position, on_interrupted=self.on_interrupted)
        self.lost.start()

    async def cog_unload(self) -> None:
        await self.lost.stop()
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)
        self.bot.tree.remove_command(self.imagine_with_menu.name, type=self.imagine_with_menu.type)

    # ---------------------------------------------------------------- /imagine

    @app_commands.command(
        name=_k("cmd.imagine", "imagine"), description=_k("cmd.imagine.desc", "Make a picture from a prompt and optional reference images")
    )
    @app_commands.rename(**_RENAMED)
    @app_commands.describe(**_DESCRIBED)
    @app_commands.choices(
        model=[app_commands.Choice(name=spec.label, value=spec.id) for spec in MODELS.values()],
        thinking=[
            app_commands.Choice(name=_k("choice.thinking.minimal", "minimal (fast)"), value="minimal"),
            app_commands.Choice(name=_k("choice.thinking.high", "high (better for complex prompts)"), value="high"),
        ],
        search=[
            app_commands.Choice(name=_k("live.choice.search.web", "web"), value="web"),
            app_commands.Choice(name=_k("live.choice.search.images", "web + images (3.1 Flash)"), value="images"),
        ],
    )
    async def imagine(
        self,
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        image1: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        model: str | None = None,
        aspect_ratio: str | None = None,
        size: str | None = None,
        search: str | None = None,
        thinking: str | None = None,
        preview: bool | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        style: str | None = None,
        more_images: bool = False,
    ) -> None:
        attachments = [a for a in (image1, image2, image3, image4) if a is not None]
        typed = Typed(model=model, aspect_ratio=aspect_ratio, size=size, count=count, style=style)
        try:
            req, notices, variants, mine = await self._request(
                interaction, prompt, typed, search=search, thinking=thinking, preview=preview
            )
        except Refusal as exc:  # e.g. more variants than this server allows: nothing was charged
            await interaction.response.send_message(embed=render.error_embed(exc, await member_locale(interaction)), ephemeral=True)
            return
        if more_images:  # the rest of the references from a form (references.py)
            await self.references.ask_more(interaction, req, attachments, notices, variants)
            return
        await self.starter.start(interaction, req, attachments=attachments, kind="imagine", notices=notices, count=variants, prefs=mine)

    async def imagine_with_images(self, interaction: Interaction, message: discord.Message) -> None:
        """The message command: that message's pictures as the references (references.py)."""
        try:
            await self.references.from_message(interaction, message)
        except Exception as exc:  # e.g. more pictures than the model takes: nothing was charged
            if not is_user_facing(exc):
                raise
            await interaction.response.send_message(embed=render.error_embed(exc, await member_locale(interaction)), ephemeral=True)

    async def imagine_prompt(self, interaction: Interaction, prompt: str) -> None:
        """/imagine with only a prompt (the member's settings and the server's defaults apply):
        what "Imagine this" under a description starts."""
        try:
            req, notices, variants, mine = await self._request(interaction, prompt, Typed())
        except Refusal as exc:
            await interaction.response.send_message(embed=render.error_embed(exc, await member_locale(interaction)), ephemeral=True)
            return
        await self.starter.start(interaction, req, attachments=[], kind="imagine", notices=notices, count=variants, prefs=mine)

    async def _request(
        self,
        interaction: Interaction,
        prompt: str,
        typed: Typed,
        *,
        search: str | None = None,
        thinking: str | None = None,
        preview: bool | None = None,
    ) -> tuple[JobRequest, list[Notice], int, Preferences]:
        """The request /imagine makes: what the member typed, else their own /settings, else the
        server's defaults; with a notice for each of their settings this server cannot honour;
        and the member's preferences it read (the starter needs them too: passed on, they are
        read once per /imagine, in one round trip with the server's limits)."""
        svc = self.bot.services
        mine, creative = await svc.preferences.for_request(scope_id(interaction), interaction.user.id)
        server = await svc.guild(scope_id(interaction))
        eff = for_request(
            mine,
            server,
            creative,
            model=typed.model,
            aspect_ratio=typed.aspect_ratio,
            size=typed.size,
        )
        req = JobRequest(
            prompt=prompt,
            model=eff.model,
            aspect_ratio=eff.aspect_ratio,
            size=eff.size,
            grounding=search is not None,
            image_search=search == "images",
            preview=server.previews if preview is None else preview,  # /admin defaults previews
            thinking=thinking,
            upload_limit=upload_limit(interaction),
            locale=await member_locale(interaction),
            guild_locale=normalize_locale(interaction.guild_locale or interaction.locale),
        )
        notices: list[Notice] = [(DROPPED[name], {"maximum": eff.variants}) for name in eff.dropped if name in DROPPED]
        await self._styled(interaction, req, typed, eff.style, notices)
        # A typed count over the server's maximum is refused (the member asked for it); a stored
        # one was already capped, with a notice.
        count = variant_count(typed.count, creative) if typed.count is not None else eff.variants
        return req, notices, count, mine

    async def _styled(self, interaction: Interaction, req: JobRequest, typed: Typed, preferred: str | None, notices: list[Notice]) -> None:
        """Apply the style typed (gone: refused, nothing charged) or else the member's own
        default style (gone: a notice, and none is used): its template around the prompt, its
        pictures first among the references, its ratio and size unless the member typed one."""
        name = typed.style or preferred
        if not name:
            return
        try:
            chosen = await self.bot.services.styles.resolve(scope_id(interaction), interaction.user.id, name)
        except Refusal:
            if typed.style:
                raise
            notices.append(("prefs.dropped.style", {"name": name}))
            return
        req.display_prompt, req.style = req.prompt, chosen.name
        req.prompt = chosen.apply(req.prompt)
        req.images = [*await self.bot.services.styles.image_refs(chosen), *req.images]
        req.aspect_ratio = typed.aspect_ratio or chosen.aspect_ratio or req.aspect_ratio
        req.size = typed.size or chosen.size or req.size

    @imagine.autocomplete("style")
    async def style_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        locale = await member_locale(interaction)
        found = await self.bot.services.styles.autocomplete(scope_id(interaction), interaction.user.id, current)
        return [
            app_commands.Choice(name=f"{s.name} ({t('style.personal' if s.personal else 'style.server', locale)})"[:100], value=s.name)
            for s in found
        ]

    @imagine.autocomplete("aspect_ratio")
    async def ratio_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        spec = await self._spec_for(interaction)
        wanted = current.strip().replace(" ", "")
        # What starts with the typed text first ("16" -> 16:9 before 9:16).
        matches = sorted((r for r in spec.aspect_ratios if wanted in r), key=lambda r: not r.startswith(wanted))
        return [app_commands.Choice(name=r, value=r) for r in matches][:25]

    @imagine.autocomplete("size")
    async def size_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        spec = await self._spec_for(interaction)
        if not spec.sizes:
            locale = await member_locale(interaction)
            return [app_commands.Choice(name=t("size.fixed", locale)[:100], value="")]
        wanted = current.strip().lower()
        return [app_commands.Choice(name=display_size(s), value=s) for s in spec.sizes if wanted in display_size(s).lower()][:25]

    async def _spec_for(self, interaction: Interaction) -> ModelSpec:
        chosen = getattr(interaction.namespace, "model", None)
        if not chosen:
            chosen = (await self.bot.services.defaults(scope_id(interaction))).model
        try:
            return resolve_model(chosen)
        except InvalidRequest:
            return next(iter(MODELS.values()))

    # ---------------------------------------------------------------- context menu

    async def edit_image_menu(self, interaction: Interaction, message: discord.Message) -> None:
        locale = await member_locale(interaction)
        images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        if not images:
            await interaction.response.send_message(t("edit.no_image_in_message", locale), ephemeral=True)
            return
        turn = await self.bot.services.conversations.turn_by_message(message.id)
        if turn is not None and not await self.starter.may_continue(interaction, turn.conversation_id):
            turn = None  # someone else's thread: a new picture from this one, not a turn in theirs

        async def submitted(modal_interaction: Interaction, text: str, extra: list[discord.Attachment]) -> None:
            if turn is not None:
                await self.starter.continue_turn(modal_interaction, turn.id, text, extra)
                return
            defaults = await self.bot.services.defaults(scope_id(modal_interaction))
            req = JobRequest(
                prompt=text,
                model=defaults.model,
                upload_limit=upload_limit(modal_interaction),
                locale=await member_locale(modal_interaction),
                guild_locale=normalize_locale(modal_interaction.guild_locale or modal_interaction.locale),
            )
            await self.starter.start(modal_interaction, req, attachments=[*images[:1], *extra], kind="edit")

        model = turn.settings.get("model") if turn is not None else None
        model = model or (await self.bot.services.defaults(scope_id(interaction))).model
        await interaction.response.send_modal(EditModal(locale, submitted, model=model))

    # ---------------------------------------------------------------- the job queue's news

    @commands.Cog.listener()
    async def on_job_queued(self, job: Job) -> None:
        """Another feature queued a job with a progress message (e.g. a message in a result's
        thread): its place in the queue and Cancel, as for /imagine."""
        await self.starter.show_queued(job)

    async def on_position(self, job: Job, position: int) -> None:
        if self.progress.shows_drawing(job) or job.redeliver is not None:
            # A variant whose sibling is being drawn on the same message, or a picture queued
            # again to be posted (records.interrupt): never "queued" again.
            return
        text = render.progress_text("queued", job_locale(job), position=position, since=job.created_at)
        await self.progress.edit(job, text, cancel=True)

    async def on_interrupted(self, job: Job) -> None:
        if await self.delivery.variant_interrupted(job):
            return  # its slot says so in the group's message; the other variants still come
        locale = job_locale(job)
        embed = discord.Embed(colour=render.ERROR, description=t("job.interrupted", locale))
        view = single_button_view(RetryButton(job.id, locale=locale))
        await self.progress.edit(job, None, force=True, must_show=True, embed=embed, view=view)
        self.progress.forget(job)
        await self.bot.services.replies.drop(progress_message_id(job))  # over: a Retry is an interaction of its own
