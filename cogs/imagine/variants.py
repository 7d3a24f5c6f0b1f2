"""How N variants look together: one message, the pictures as one grid, a row of buttons per
variant (which ones ended, and why a slot is empty, is groups.py's)."""

from __future__ import annotations

import discord
from discord import ui

from bot import rules
from bot.i18n import t
from bot.relay.catalogue import MODELS
from cogs import render
from cogs.failures import offers_retry

from .buttons import DeleteButton, EditButton, PersistentButton, RerollButton, RetryButton, SaveStyleButton, UpscaleButton, VaryButton
from .groups import Slot

GALLERY_URL = "https://discord.com/nano-banana/variants/{group}"  # shared embed url: Discord shows the images as one grid


def failure_notes(slots: list[Slot], locale: str) -> list[str]:
    return [
        t("variants.slot_failed", locale, index=s.index, reason=_sentence(render.error_text(s.error, locale), locale))
        for s in slots
        if s.generated is None and s.error is not None
    ]


def _sentence(text: str, locale: str) -> str:
    """A reason ends as a sentence before "Its credits were refunded." follows it (some end on
    a parenthesis or a relay's own words)."""
    text = text.rstrip()
    if text.endswith((".", "!", "?", "。", "！", "？")):
        return text
    return text + ("。" if locale.startswith("zh") else ".")


def gallery_embeds(first: discord.Embed, filenames: list[str], group: int) -> list[discord.Embed]:
    """The first picture's full result embed, then one bare embed per other picture; the same
    url on each makes Discord show them as one grid, every picture kept as its own file."""
    url = GALLERY_URL.format(group=group)
    first.url = url
    return [first, *(discord.Embed(url=url).set_image(url=f"attachment://{name}") for name in filenames[1:])]


def gallery_view(slots: list[Slot], locale: str) -> ui.View:
    """One row per delivered variant: continue it (its own conversation), upscale it, vary it,
    save it as a style; then, on the last row, Retry for each variant whose failure another try
    may mend (an interruption, a relay's passing trouble: refunded, a click is a new job),
    Re-roll (the whole request, as many variants) and Delete for the message. Labels carry the variant's number, as the grid shows them."""
    view = ui.View(timeout=None)
    delivered = [s for s in slots if s.generated is not None]
    for row, slot in enumerate(delivered[:4]):
        generated = slot.generated
        if generated is None or generated.turn is None:
            continue
        turn_id, model = generated.turn.id, generated.result.model
        spec = MODELS.get(model)
        size = (slot.job.request or {}).get("size")
        items: list[PersistentButton] = [EditButton(turn_id, locale=locale)]
        items += [UpscaleButton(turn_id, bigger, locale=locale) for bigger in rules.upscale_sizes(spec.sizes if spec else (), size)[:1]]
        items += [VaryButton(turn_id, strength, locale=locale) for strength in ("subtle", "strong")]
        items.append(SaveStyleButton(turn_id, locale=locale))
        for item in items:
            _numbered(item, slot.index, row)
            view.add_item(item)
    # At most 3 (one variant at least was delivered, of at most 4: with Re-roll and Delete, a row's
    # 5) or 4 (none was, and there is nothing to re-roll from or delete).
    for slot in slots:
        if slot.generated is None and offers_retry(slot.error):
            view.add_item(_numbered(RetryButton(slot.job.id, locale=locale), slot.index, 4))
    first = next((s.generated.turn.id for s in delivered if s.generated and s.generated.turn), None)
    if first is not None:
        # The whole request again, as many variants (a new message of its own), then Delete.
        for item in (RerollButton(first, str(len(slots)), locale=locale), DeleteButton(first, locale=locale)):
            item.row = 4
            view.add_item(item)
    return view


def _numbered(item: PersistentButton, index: int, row: int) -> PersistentButton:
    item.item.label = f"{index} · {item.item.label}"[:80]
    item.row = row
    return item
