"""The job queue: every generation is a job row before it is a request.

Life of a job::

    submit ──► queued ──► running ──► delivering ──► done   (runner returned: credits committed)
      │          │           ├────────────┴───► failed   (runner raised, NoImage included: refunded)
      │          └───────────┴────────────────► cancelled (requester cancelled: refunded)
      │                      └────────────┴───► interrupted (process died while running: refunded
      ▼                                              at the next start, ``on_interrupted`` called)
    QuotaExceeded: no row, nothing queued, nothing sent

- **Reservation** happens in the same transaction that inserts the job row (see bot/quota.py
  for why at creation): a refused request leaves no trace and a queued job holds its credits.
- **Limits:** at most ``settings.max_concurrent_jobs`` running in all, ``max_jobs_per_guild``
  per server and ``max_jobs_per_user`` per member; a server may lower its own caps
  (``GuildSettings.max_jobs`` / ``max_jobs_per_user``), never raise them.
- **Fairness:** by server first, then round-robin by member. Each free slot goes to a job of
  the server holding the fewest running jobs (so with ``NB_MAX_JOBS=4`` and three servers
  waiting, no server starts a second job while another server's job waits); among servers
  with as many, members form a rotation: the first member in the rotation with a job that may
  run now is served, then moves to the back. One member's burst of ten waits behind everyone
  else's first job, and one server's hundred members wait behind another server's first job.
  Slots already taken are not pre-empted: a server's jobs hold them at most one job deadline
  (see bot/relays/pool.py), which bounds every other server's wait.
  Positions shown to users follow the same rule (see :meth:`JobQueue.positions`); they are
  exact up to :data:`EXACT_POSITIONS` and coarse after it (:func:`shown_position`), so a queue
  of N jobs costs O(N log N) position updates while it drains, not N².
- **Runner:** ``async runner(job) -> None``, supplied by the bot. Returning means "delivered"
  (commit); raising means "failed" (refund). It may set ``job.relay_name``,
  ``job.latency_ms`` and ``job.result_message_id``; they are saved with the final status.
- **Chains:** a job whose ``request["after_job_id"]`` names a queued or running job waits
  until that one has finished (the second of two quick messages in a thread builds on the
  first one's result; the runner resolves which turn that is).
- **Recording the end** (:meth:`JobQueue._settle`): a final write the database refuses (disk
  full, locked past busy_timeout) is tried again for about a minute, holding the slot, so a
  job is not left ``running`` with credits ``reserved`` until a restart.
- **Cancel:** the requester (or a moderator, ``by_user=None``) cancels a queued job (dropped
  and refunded) or a running one (its task is cancelled, then refunded). Once the runner calls
  :meth:`JobQueue.begin_delivery` (it is about to post the picture) the job is ``delivering``,
  in the database too, and Cancel from any process answers ``delivering``: the picture goes out
  and is charged. A job whose runner has already returned can no longer be cancelled either.
- **Restart:** :meth:`JobQueue.start` turns jobs left ``running`` by a crash into
  ``interrupted``, refunds them and calls ``on_interrupted(job)`` so the bot can offer Retry;
  queued jobs resume in their old order. :meth:`JobQueue.stop` leaves jobs it had to cancel as
  ``running`` on purpose, so a clean stop and a crash take the same recovery path.
- On SQLite one process owns the queue (:class:`JobQueue`, waiting jobs in memory); on
  PostgreSQL the database drives it (:class:`~bot.jobs.leases.LeasedQueue`: claims under a
  lock, leases with heartbeats, a reaper), so gateways and workers in several processes share it.
"""

from typing import Any

from ..db.postgres import PgConnection
from ..store import Connection
from .leases import LeasedQueue
from .model import ACTIVE, EXACT_POSITIONS, TERMINAL, CancelledBeforeDelivery, Job, NewJob, QueueClosed, classify, shown_position
from .queue import JobQueue


def make_queue(db: Connection, *args: Any, **kwargs: Any) -> JobQueue:
    """The queue for this database: leased (shared by processes) on PostgreSQL, in-process on
    SQLite; both take :class:`JobQueue`'s arguments."""
    cls = LeasedQueue if isinstance(db, PgConnection) else JobQueue
    return cls(db, *args, **kwargs)


__all__ = [
    "ACTIVE",
    "CancelledBeforeDelivery",
    "EXACT_POSITIONS",
    "TERMINAL",
    "Job",
    "JobQueue",
    "LeasedQueue",
    "NewJob",
    "QueueClosed",
    "classify",
    "make_queue",
    "shown_position",
]
