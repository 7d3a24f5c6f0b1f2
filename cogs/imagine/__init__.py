"""The /imagine feature: the command and "Edit image", the buttons on its messages, starting a
job, its progress message and delivering its picture."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cog import Imagine

if TYPE_CHECKING:
    from bot.app import NanoBananaBot

__all__ = ["Imagine", "setup"]


async def setup(bot: NanoBananaBot) -> None:
    await bot.add_cog(Imagine(bot))
