"""Pure decisions: who may do what, and the limits that apply. No I/O, no Discord.

Every rule the bot enforces in more than one place is decided here once, from plain values,
so the cogs, the services and the job queue ask the same question and get the same answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

# Who may continue a result's thread (write in it to edit the picture, or branch with a reply).
THREAD_MODES = ("requester", "anyone")


def job_caps(operator_per_guild: int, operator_per_user: int, guild_max: int | None, guild_max_per_user: int | None) -> tuple[int, int]:
    """How many jobs may run at once for one server and for one member of it.

    A server may only lower the operator's caps (NB_MAX_JOBS_PER_GUILD / _PER_USER), never raise
    them; at least one job always runs, so a cap of 0 cannot stall a server forever."""
    per_guild = operator_per_guild if guild_max is None else min(operator_per_guild, guild_max)
    per_user = operator_per_user if guild_max_per_user is None else min(operator_per_user, guild_max_per_user)
    return max(1, per_guild), max(1, per_user)


# --- access: an empty allow-list means "no restriction" -------------------------------------------


def channel_allowed(allowed_channels: Collection[int], channel_id: int, parent_id: int | None = None) -> bool:
    """A thread counts as its parent channel, so allowing a channel allows its threads."""
    if not allowed_channels:
        return True
    return channel_id in allowed_channels or (parent_id is not None and parent_id in allowed_channels)


def member_allowed(allowed_roles: Collection[int], role_ids: Iterable[int]) -> bool:
    return not allowed_roles or any(role in allowed_roles for role in role_ids)


def model_allowed(allowed_models: Collection[str], model: str) -> bool:
    return not allowed_models or model in allowed_models


def access_refusal(
    *,
    allowed_channels: Collection[int],
    allowed_roles: Collection[int],
    allowed_models: Collection[str],
    channel_id: int | None,
    parent_id: int | None,
    role_ids: Iterable[int],
    model: str,
) -> str | None:
    """Why a member may not start a job here (``access.channel`` / ``.role`` / ``.model``), or
    ``None`` when they may. Checked in that order: the first refusal is the one the member sees.
    ``channel_id`` is ``None`` outside a channel (the CLI, a test), where channels do not apply."""
    if channel_id is not None and not channel_allowed(allowed_channels, channel_id, parent_id):
        return "access.channel"
    if not member_allowed(allowed_roles, role_ids):
        return "access.role"
    if not model_allowed(allowed_models, model):
        return "access.model"
    return None


def install_refusal(*, user_install_on: bool, user_installed: bool, in_server: bool, server_allows: bool) -> str | None:
    """Why a request made through a member's own install of the app (not the server's) is
    refused, or None. The operator can turn user installs off (``NB_USER_INSTALL``); a server
    the bot is in keeps its say over what happens in it (``/admin access user_installs``). A
    server the bot is not in has no settings here, so nothing of its applies."""
    if not user_installed:
        return None
    if not user_install_on:
        return "install.off"
    if in_server and not server_allows:
        return "install.server_forbids"
    return None


def may_continue_thread(thread_mode: str, user_id: int, owner_id: int) -> bool:
    """Whether ``user_id`` may continue the thread of a conversation ``owner_id`` started:
    the requester always; anyone else only when the server's thread mode is ``anyone``."""
    return user_id == owner_id or thread_mode == "anyone"


def oldest_left_out(costs: Sequence[int], budget: int) -> int:
    """How many of the oldest exchanges a replayed history leaves out so the rest fit ``budget``
    (``costs``: each exchange's size, oldest first): the oldest go first, whole exchanges only,
    and the newest always stays — the caller decides what to do when it alone is too big."""
    if not costs:
        return 0
    start = len(costs) - 1
    total = costs[start]
    while start > 0 and total + costs[start - 1] <= budget:
        start -= 1
        total += costs[start]
    return start


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


# Answers without a picture that another try may well change: the model drew nothing or only
# wrote (it varies run to run), as opposed to a block, a safety refusal or a refused request.
_LUCK_REASONS = frozenset({"no_image", "text_only"})


def retry_offered(*, retryable: bool | None = None, status: int | None = None, no_image_reason: str | None = None) -> bool:
    """Whether a failed job's notice offers Retry: after a transient relay failure (408, 429,
    5xx, a timeout, the network) or an answer without a picture that was luck; never after a
    block, a refusal, or a relay refusing the key (401/403: failover tries another relay for
    those, but the same relay says the same until an admin mends it)."""
    transient = status is None or status in (408, 429) or status >= 500
    return (bool(retryable) and transient) or no_image_reason in _LUCK_REASONS
