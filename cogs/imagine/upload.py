"""What one upload attempt carries: where it goes, the embeds and fitted pictures, what was posted.

Kept apart from delivery.py so the retry loop there reads as steps: fit, send, and on a 413
fit again smaller (Discord counts every file of one message towards its upload limit).
The send with the bot's own token is here; through the interaction, in reach.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import discord

from bot.jobs import Job


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
    # Sent with enforce_nonce (discord.py adds it to any nonce): the same nonce again within a
    # few minutes returns the message it made, so posting again cannot show a picture twice.
    nonce: str

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


async def post_in_channel(bot: discord.Client, job: Job, target: Target, upload: Upload) -> discord.Message:
    """The upload as a message of the bot's own in ``target``, pinging the requester only."""
    channel = bot.get_partial_messageable(target.channel_id, guild_id=job.guild_id)
    reference = None
    if target.reply_to:
        reference = discord.MessageReference(message_id=target.reply_to, channel_id=target.channel_id, fail_if_not_exists=False)
    return await channel.send(
        content=f"<@{job.user_id}>",
        embeds=upload.embeds,
        files=upload.files(),
        view=upload.view or discord.utils.MISSING,
        reference=reference,  # type: ignore[arg-type]  # discord.py's stubs leave None out; it means "no reply"
        nonce=upload.nonce,
        allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)], replied_user=False),
    )
