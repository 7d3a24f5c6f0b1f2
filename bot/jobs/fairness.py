"""Who runs next, and the place in line each waiting job is shown: pure decisions on a snapshot.

One rule, used by both queues (the in-memory one on SQLite and the one the database drives on
PostgreSQL) so they agree, and by the positions shown to members so the numbers follow it:

- a free slot goes to a job of the server holding the fewest running jobs (no server gets a
  second slot while another server's job waits);
- among servers with as many, members form a rotation: whoever was served longest ago (or
  never) goes first, so one member's burst waits behind everyone else's next job and a member
  who resubmits the moment a job ends cannot jump the line;
- a job stays back while a cap would be broken (global, per server, per member) or while the
  job it is chained after (``request["after_job_id"]``) is queued or running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .model import Job


@dataclass
class Snapshot:
    """The queue as the rule sees it: each member's waiting jobs (oldest first), when each
    member was last served (a rising number), and the jobs running now."""

    queued: dict[int, deque[Job]] = field(default_factory=dict)
    served: dict[int, int] = field(default_factory=dict)
    running: list[Job] = field(default_factory=list)

    def rotation(self) -> list[int]:
        """Members with queued jobs, next to be served first."""
        return sorted(self.queued, key=lambda u: (self.served.get(u, 0), self.queued[u][0].created_at, self.queued[u][0].id))

    def waiting_ids(self) -> set[int]:
        return {job.id for q in self.queued.values() for job in q}


def _counts(running: Iterable[Job]) -> tuple[dict[int | None, int], dict[int, int]]:
    by_guild: dict[int | None, int] = {}
    by_user: dict[int, int] = {}
    for job in running:
        by_guild[job.guild_id] = by_guild.get(job.guild_id, 0) + 1
        by_user[job.user_id] = by_user.get(job.user_id, 0) + 1
    return by_guild, by_user


def _blocked(job: Job, waiting: set[int], running_ids: set[int]) -> bool:
    after = job.request.get("after_job_id") if isinstance(job.request, dict) else None
    return after is not None and (after in waiting or after in running_ids)


def choose(snap: Snapshot, caps: Mapping[int | None, tuple[int, int]], max_total: int) -> Job | None:
    """The job the next free slot goes to, or None (no slot, or every waiting job held back).
    Servers missing from ``caps`` are skipped (their jobs arrived after the caps were read)."""
    if len(snap.running) >= max_total:
        return None
    by_guild, by_user = _counts(snap.running)
    waiting, running_ids = snap.waiting_ids(), {job.id for job in snap.running}
    chosen: Job | None = None
    fewest = 0
    for user_id in snap.rotation():
        for job in snap.queued[user_id]:
            if job.guild_id not in caps or _blocked(job, waiting, running_ids):
                continue
            guild_cap, user_cap = caps[job.guild_id]
            held = by_guild.get(job.guild_id, 0)
            if held < guild_cap and by_user.get(user_id, 0) < user_cap:
                # The server holding the fewest slots wins; the rotation breaks ties.
                if chosen is None or held < fewest:
                    chosen, fewest = job, held
                break
        if chosen is not None and fewest == 0:
            break  # nobody can hold fewer than none
    return chosen


def take(snap: Snapshot, job: Job, seq: int) -> None:
    """Move ``job`` from waiting to running in the snapshot; its member was served at ``seq``."""
    q = snap.queued[job.user_id]
    q.remove(job)
    if not q:
        del snap.queued[job.user_id]
    snap.served[job.user_id] = seq
    snap.running.append(job)


def positions(snap: Snapshot) -> dict[int, int]:
    """Job id -> 1-based place in line, by the rule without the caps: a server's i-th queued
    job (its jobs ordered round-robin by member, members in rotation order) comes in round
    ``running(server) + i``; within a round, servers go in the order of their first member in
    the rotation. (Caps can let a later job start earlier; the number is what the member is
    told, kept current.) O(N log N) in the queue."""
    running, _ = _counts(snap.running)
    per_guild: dict[int | None, list[deque[Job]]] = {}
    for user_id in snap.rotation():
        q = snap.queued[user_id]
        per_guild.setdefault(q[0].guild_id, []).append(q)
    keyed: list[tuple[int, int, int]] = []  # (round, server order, job id)
    for order, (guild_id, queues) in enumerate(per_guild.items()):
        # A member's jobs may name other servers (DMs, several servers): each job counts in the
        # server its member's first job is in, an approximation the caps ignore too.
        i = running.get(guild_id, 0)
        for depth in range(max(len(q) for q in queues)):
            for q in queues:
                if depth < len(q):
                    keyed.append((i, order, q[depth].id))
                    i += 1
    keyed.sort()
    return {job_id: n for n, (_, _, job_id) in enumerate(keyed, start=1)}
