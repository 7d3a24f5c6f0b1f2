"""What a failure looks like to a member, in one place: a refusal with a catalog key is shown
(translated) and not logged as a bug; anything else is logged with its traceback and shown as a
short "something went wrong" reason. No feature imports another feature for this."""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot import rules
from bot.relay.types import NoImage, RelayError, RelayFailed
from cogs import render
from cogs.language import member_locale

log = logging.getLogger(__name__)


class UserFacingError(Exception):
    """A failure with a translation key (not a relay error): shown to the user, not logged as a bug."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


class Interrupted(UserFacingError):
    """The job's process stopped while it ran (refunded by the queue): another try may well work."""

    retry = True


def offers_retry(exc: BaseException | None) -> bool:
    """Whether a failed job offers Retry (:func:`bot.rules.retry_offered`): a failure's own
    ``retry`` when it says (an interruption; a failure recorded by another process), else by
    what the relay answered."""
    said = getattr(exc, "retry", None)
    if isinstance(said, bool):
        return said
    return rules.retry_offered(
        retryable=isinstance(exc, RelayFailed) and exc.retryable,
        status=exc.status if isinstance(exc, RelayFailed) else None,
        no_image_reason=exc.reason if isinstance(exc, NoImage) else None,
    )


def is_user_facing(exc: BaseException) -> bool:
    return isinstance(exc, (RelayError, UserFacingError)) or isinstance(getattr(exc, "key", None), str)


def log_unless_user_facing(exc: BaseException, logger: logging.Logger, what: str, *args: object) -> None:
    """A refusal the member is told about is not a bug; anything else is logged with its traceback."""
    if not is_user_facing(exc):
        logger.error(what, *args, exc_info=exc)


async def report_failure(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Answer a failed button or form with a short translated reason. discord.py only logs
    errors of dynamic items and modals (the tree handler never sees them), so without this
    the member would get Discord's bare "This interaction failed"."""
    log_unless_user_facing(error, log, "a button or form failed")
    await render.reply_privately(interaction, render.error_embed(error, await member_locale(interaction)))
