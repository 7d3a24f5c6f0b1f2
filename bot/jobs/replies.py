"""How a job reaches its member through the interaction that asked for it.

An interaction's token lets whoever holds it edit the interaction's original response (the
progress message) and send followups for 15 minutes; the bot's own token cannot edit that
response, and cannot post at all in a group DM or a server the bot is not in. So the token
goes with the job, for whichever process runs it (a worker has no interaction object):

- stored encrypted with the keyring (it is a credential), never logged nor put in the job's
  request (a Re-roll copies the request; the token must not travel with it);
- with ``channel_post``: whether the bot's token may post where the member asked;
- read back only while alive (a margin under Discord's 15 minutes), and dropped when the job
  ends (:meth:`ReplyStore.drop`); rows of jobs that ended elsewhere expire and are purged;
- written before the interaction is acknowledged, keyed by its id, then keyed by the job's
  progress message (the interaction's original response, made by the acknowledgement) before
  the job is queued, so whoever starts the job finds it (variants of one request share it);
- a row that still has no job :data:`ORPHAN_S` after its acknowledgement belongs to a request
  whose process died before queueing it, even in the instant after the acknowledgement (the
  member would see "Getting ready…" for ever): :meth:`ReplyStore.orphans` hands each to one
  process, which tells the member in ``locale``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..secrets import Keyring
from ..store import Connection, transaction, write, write_alone

TOKEN_LIFETIME_S = 15 * 60  # Discord's lifetime of an interaction token
SAFE_LIFETIME_S = 14 * 60  # used only while safely alive: a call in flight must not outlive it
STALE_S = 86400  # rows of jobs that never reached their runner are purged this long after
# A request is queued within this long of its acknowledgement unless its process died: the
# inputs' download is bounded at cogs.intake.INTAKE_TIMEOUT_S (120 s) and the rest is a few
# statements. Longer is lost; shorter could tell a member "lost" about a request still starting.
ORPHAN_S = 180.0


@dataclass(frozen=True)
class Reply:
    """The interaction a job answers through (``token`` never in a repr or a log line)."""

    application_id: int
    token: str = field(repr=False)
    expires_at: float  # unix seconds, SAFE_LIFETIME_S after the interaction was acknowledged
    channel_post: bool  # the bot's own token may post where the member asked
    locale: str = "en"  # the member's, for news told before any job exists

    def alive(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at


_COLUMNS = "application_id, token_cipher, expires_at, channel_post, locale"


class ReplyStore:
    def __init__(self, db: Connection, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring
        self._cache: dict[int, Reply] = {}  # progress message id -> its reply, read once per process

    async def put(self, key: int, *, application_id: int, token: str, acked_at: float, channel_post: bool, locale: str = "en") -> Reply:
        """Store the token under ``key``: the interaction's id before its acknowledgement (a
        process dying right after the acknowledgement still leaves the token for
        :meth:`orphans`), then :meth:`rekey` to the progress message the acknowledgement made.
        One statement without the writers' lock: it sits on the acknowledgement's path."""
        reply = Reply(application_id, token, acked_at + SAFE_LIFETIME_S, channel_post, locale)
        await write_alone(
            self.db,
            "INSERT INTO job_replies (message_id, application_id, token_cipher, expires_at, channel_post, locale)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO UPDATE SET application_id = excluded.application_id,"
            " token_cipher = excluded.token_cipher, expires_at = excluded.expires_at, channel_post = excluded.channel_post,"
            " locale = excluded.locale",
            (key, application_id, self.keyring.encrypt(token), reply.expires_at, int(channel_post), locale),
        )
        self._cache[key] = reply
        return reply

    async def rekey(self, key: int, message_id: int) -> None:
        """The acknowledgement made the progress message: the token is now found by it."""
        async with transaction(self.db) as db:
            # Rows of jobs that ended without reaching their runner (cancelled in the queue, lost
            # in a crash): their tokens died long ago. A day, so a long job keeps ``channel_post``.
            await db.execute("DELETE FROM job_replies WHERE expires_at < ?", (time.time() - STALE_S,))
            await db.execute("UPDATE job_replies SET message_id = ? WHERE message_id = ?", (message_id, key))
        if key in self._cache:
            self._cache[message_id] = self._cache.pop(key)

    async def get(self, message_id: int | None) -> Reply | None:
        """The reply of the job whose progress message this is (alive or not: ``channel_post``
        still says where results may go); None for a job that came from a message."""
        if not message_id:
            return None
        if message_id in self._cache:
            return self._cache[message_id]
        async with self.db.execute(f"SELECT {_COLUMNS} FROM job_replies WHERE message_id = ?", (message_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        reply = self._cache[message_id] = self._reply(row)
        return reply

    def _reply(self, row: Sequence[Any]) -> Reply:
        return Reply(int(row[0]), self.keyring.decrypt(bytes(row[1])), float(row[2]), bool(row[3]), str(row[4]))

    async def orphans(self, now: float | None = None) -> list[tuple[int, Reply]]:
        """Requests acknowledged over :data:`ORPHAN_S` ago, token still alive, that no job refers
        to: their process died between the acknowledgement and the queue. Each row is deleted
        as it is handed out, so of several processes sweeping at once only one gets it."""
        now = time.time() if now is None else now
        acked_before = now - ORPHAN_S + SAFE_LIFETIME_S  # expires_at = acknowledged + SAFE_LIFETIME_S
        async with self.db.execute(
            f"SELECT message_id, {_COLUMNS} FROM job_replies r WHERE expires_at > ? AND expires_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.progress_message_id = r.message_id)",
            (now, acked_before),
        ) as cur:
            rows = await cur.fetchall()
        # The delete asks again whether a job refers to it: one may have been queued since the
        # read above (a request near the limit), and its token must stay for its runner.
        unclaimed = (
            "DELETE FROM job_replies WHERE message_id = ?"
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.progress_message_id = job_replies.message_id) RETURNING message_id"
        )
        claimed = [row for row in rows if await write(self.db, unclaimed, (row[0],))]
        return [(int(row[0]), self._reply(row[1:])) for row in claimed]

    async def drop(self, message_id: int | None) -> None:
        """The job is over: its token is forgotten here and in the database."""
        if not message_id:
            return
        self._cache.pop(message_id, None)
        async with transaction(self.db) as db:
            await db.execute("DELETE FROM job_replies WHERE message_id = ?", (message_id,))
