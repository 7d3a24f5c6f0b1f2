"""Pure decisions: who may do what, and the limits that apply. No I/O, no Discord.

Every rule the bot enforces in more than one place is decided here once, from plain values,
so the cogs, the services and the job queue ask the same question and get the same answer.
"""

from __future__ import annotations


def job_caps(operator_per_guild: int, operator_per_user: int, guild_max: int | None, guild_max_per_user: int | None) -> tuple[int, int]:
    """How many jobs may run at once for one server and for one member of it.

    A server may only lower the operator's caps (NB_MAX_JOBS_PER_GUILD / _PER_USER), never raise
    them; at least one job always runs, so a cap of 0 cannot stall a server forever."""
    per_guild = operator_per_guild if guild_max is None else min(operator_per_guild, guild_max)
    per_user = operator_per_user if guild_max_per_user is None else min(operator_per_user, guild_max_per_user)
    return max(1, per_guild), max(1, per_user)
