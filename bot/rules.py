"""Pure decisions: who may do what, and the limits that apply. No I/O, no Discord.

Every rule the bot enforces in more than one place is decided here once, from plain values,
so the cogs, the services and the job queue ask the same question and get the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence


def job_caps(operator_per_guild: int, operator_per_user: int, guild_max: int | None, guild_max_per_user: int | None) -> tuple[int, int]:
    """How many jobs may run at once for one server and for one member of it.

    A server may only lower the operator's caps (NB_MAX_JOBS_PER_GUILD / _PER_USER), never raise
    them; at least one job always runs, so a cap of 0 cannot stall a server forever."""
    per_guild = operator_per_guild if guild_max is None else min(operator_per_guild, guild_max)
    per_user = operator_per_user if guild_max_per_user is None else min(operator_per_user, guild_max_per_user)
    return max(1, per_guild), max(1, per_user)


def may_delete_result(requester_id: int | None, user_id: int, *, manage_messages: bool) -> bool:
    """Who may delete a result: the member who asked for it, or anyone who may manage messages
    in its channel. ``requester_id`` None: the job is not known (then only moderators may)."""
    return user_id == requester_id or manage_messages


def requested_size(size: str | None, model: str | None, *, default_model: str, default_size: str | None) -> str | None:
    """The size a request asks for. The server's default size belongs to its default model:
    a member who picks another model (and no size) gets that model's own default (None)."""
    if size:
        return size
    return default_size if not model or model == default_model else None


def upscale_sizes(model_sizes: Sequence[str], current: str | None) -> list[str]:
    """The larger sizes (2K, 4K) a result may be upscaled to: those the model offers above the
    result's size. A result without a size, or with one the model does not list, counts as 1K."""
    order = list(model_sizes)
    if current in order:
        at = order.index(current)
    else:
        at = order.index("1K") if "1K" in order else -1
    return [bigger for bigger in ("2K", "4K") if bigger in order and order.index(bigger) > at]
