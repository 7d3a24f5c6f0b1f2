"""What one upload attempt carries: where it goes, the embeds and fitted pictures, what was posted.

Kept apart from delivery.py so the retry loop there reads as steps: fit, send, and on a 413
fit again smaller (Discord counts every file of one message towards its upload limit).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import discord


@dataclass
class Target:
    """Where the picture goes; moved to another channel when Discord refuses this one."""

    channel_id: int
    reply_to: int | None
    tried: set[int] = field(default_factory=set)


@dataclass
class Upload:
    """One upload attempt: the embeds and the pictures (bytes, filename) as fitted for it."""

    embeds: list[discord.Embed]
    pictures: list[tuple[bytes, str]]
    view: discord.ui.View | None

    @property
    def embed(self) -> discord.Embed:
        return self.embeds[0]

    @property
    def size(self) -> int:
        return sum(len(data) for data, _name in self.pictures)

    def files(self) -> list[discord.File]:
        return [discord.File(fp=io.BytesIO(data), filename=name) for data, name in self.pictures]

    def spoil(self) -> None:
        """Post as spoilers (/admin safety spoiler): Discord covers a ``SPOILER_`` file, but never
        an embed's own image, so the embeds lose theirs."""
        self.pictures = [(data, name if name.startswith("SPOILER_") else f"SPOILER_{name}") for data, name in self.pictures]
        for embed in self.embeds:
            embed.set_image(url=None)


@dataclass
class Posted:
    message: discord.Message
    embed: discord.Embed
