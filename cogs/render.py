"""How results, progress and errors look in Discord. Every string comes from the catalogs."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.i18n import has_key, t
from bot.jobs import EXACT_POSITIONS, shown_position
from bot.relay.catalogue import MODELS, display_size, ratio_of, size_of
from bot.relay.previews import Preview
from bot.relay.redact import redact
from bot.relay.types import GroundingSource, NoImage

BRAND = discord.Colour.from_rgb(250, 204, 21)  # banana yellow
ERROR = discord.Colour.from_rgb(220, 70, 60)
DRAFT = discord.Colour.from_rgb(150, 150, 150)  # grey: not the picture yet
DRAFT_FILENAME = "draft.jpg"


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def model_label(model: str) -> str:
    spec = MODELS.get(model)
    return spec.label if spec else model


def result_embed(
    *,
    locale: str,
    prompt: str,
    model: str,
    aspect_ratio: str | None,
    size: str | None,
    elapsed_s: float,
    credits: int,
    filename: str,
    sources: Sequence[GroundingSource] = (),
    image_queries: Sequence[str] = (),
    fit_note: str | None = None,
    model_text: str = "",
    width: int | None = None,
    height: int | None = None,
    made_as: str | None = None,
) -> discord.Embed:
    embed = discord.Embed(colour=BRAND, description=shorten(prompt, 300))
    if made_as:
        embed.description = f"{made_as}\n{embed.description}"
    embed.add_field(name=t("result.model", locale), value=model_label(model), inline=True)
    if width and height:
        # What came out, not what was asked (nothing asked used to read "default").
        has_sizes = bool(getattr(MODELS.get(model), "sizes", ()))
        shape = " · ".join(
            x for x in (ratio_of(width, height), display_size(size_of(width, height)) if has_sizes else None, f"{width}×{height}") if x
        )
    else:
        shape = " · ".join(x for x in (aspect_ratio, display_size(size) if size else None) if x) or t("result.default_shape", locale)
    embed.add_field(name=t("result.shape", locale), value=shape, inline=True)
    embed.add_field(name=t("result.time", locale), value=t("result.seconds", locale, seconds=f"{elapsed_s:.1f}"), inline=True)
    embed.add_field(name=t("result.credits", locale), value=str(credits), inline=True)
    if image_queries:
        queries = " · ".join(f"`{shorten(q.replace('`', ''), 80)}`" for q in image_queries[:6])
        embed.add_field(name=t("live.result.image_queries", locale), value=queries[:1024], inline=False)
    if sources:
        embed.add_field(name=t("result.sources", locale), value=source_links(sources, locale), inline=False)
    if model_text:
        embed.add_field(name=t("result.model_said", locale), value=shorten(model_text, 500), inline=False)
    if fit_note:
        embed.set_footer(text=fit_note)
    embed.set_image(url=f"attachment://{filename}")
    return embed


def source_links(sources: Sequence[GroundingSource], locale: str, limit: int = 1024) -> str:
    """One line per source, each a link to its page. An image-search source also links its
    picture, on the same line as (and after) the page it comes from. Whole lines only, so no
    link is cut in half."""
    lines: list[str] = []
    used = 0
    for source in sources[:8]:
        line = f"[{shorten(source.title or source.uri, 60).replace(']', ')')}]({source.uri})"
        if source.image_uri:
            line += f" · [{t('live.result.source_picture', locale)}]({source.image_uri})"
        if used + len(line) + 1 > limit:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def draft_embed(locale: str, preview: Preview, *, with_picture: bool) -> discord.Embed:
    """A preview on the progress message: the model's draft, small and marked as one, and its
    latest thought in one line."""
    title = t("live.draft.title", locale, n=preview.draft) if preview.draft else t("live.draft.thinking", locale)
    embed = discord.Embed(colour=DRAFT, title=title)
    if preview.summary:
        embed.description = t("live.draft.thought", locale, summary=shorten(preview.summary, 200))
    if with_picture:
        embed.set_thumbnail(url=f"attachment://{DRAFT_FILENAME}")
    return embed


def fit_note(how: str, locale: str, *, width: int, height: int, original: tuple[int, int]) -> str | None:
    if how == "reencoded":
        return t("result.fit_reencoded", locale)
    if how == "downscaled":
        return t("result.fit_downscaled", locale, width=width, height=height, ow=original[0], oh=original[1])
    return None


def error_text(exc: BaseException, locale: str) -> str:
    """A short translated reason for any failure a user may meet; never a traceback.

    Relay errors and our own refusals carry a catalog ``key`` and ``params``; a refusal by
    the model also quotes the model's own words.
    """
    key = getattr(exc, "key", None)
    if not (isinstance(key, str) and has_key(key)):
        # Discord's own refusals are not our bugs: say which side failed.
        if isinstance(exc, discord.Forbidden):
            return t("cmd_error.discord_forbidden", locale)
        if isinstance(exc, discord.HTTPException):
            return t("cmd_error.discord_failed", locale)
        return t("cmd_error.unexpected", locale)
    params = {k: (redact(v) if isinstance(v, str) else v) for k, v in (getattr(exc, "params", None) or {}).items()}
    text = t(key, locale, **params)
    if isinstance(exc, NoImage) and exc.model_text and exc.model_text not in text:
        text += "\n> " + shorten(exc.model_text, 400).replace("\n", " ")
    return text


async def reply_privately(interaction: discord.Interaction, embed: discord.Embed) -> None:
    """An ephemeral answer whether or not the interaction was already acknowledged; a Discord
    failure here has nowhere left to be reported, so it is dropped."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(embed=embed, ephemeral=True)
        else:
            await interaction.response.send_message(embed=embed, ephemeral=True)
    except discord.HTTPException:
        pass


def error_embed(exc: BaseException, locale: str) -> discord.Embed:
    return discord.Embed(colour=ERROR, description="⚠️ " + error_text(exc, locale))


def progress_text(stage: str, locale: str, *, position: int | None = None, since: float | None = None, model: str = "") -> str:
    ts = f"<t:{int(since)}:R>" if since else ""
    if stage == "queued":
        if (position or 1) > EXACT_POSITIONS:
            # Coarse far back in line (see bot.jobs.shown_position): "within the first 50".
            return t("fair.queued_within", locale, position=shown_position(position or 1), since=ts)
        return t("progress.queued", locale, position=position or 1, since=ts)
    if stage == "generating":
        return t("progress.generating", locale, model=model_label(model), since=ts)
    if stage == "uploading":
        return t("progress.uploading", locale, since=ts)
    if stage == "cancelled":
        return t("progress.cancelled", locale)
    return t("progress.preparing", locale)


def made_as(variation: str | None, style: str | None, locale: str) -> str | None:
    """One line naming how a picture was made (a variation, a style), so two results of one
    prompt can be told apart; None for a plain one."""
    key = {"subtle": "result.made_as.vary_subtle", "strong": "result.made_as.vary_strong"}.get(variation or "")
    parts = [t(key, locale)] if key else []
    if style:
        parts.append(t("result.made_as.style", locale, name=style))
    return " · ".join(parts) or None
