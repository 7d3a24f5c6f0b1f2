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
- keyed by the job's progress message (the interaction's original response), written before
  the job is queued, so whoever starts the job finds it (variants of one request share it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..secrets import Keyring
from ..store import Connection, transaction

TOKEN_LIFETIME_S = 15 * 60  # Discord's lifetime of an interaction token
SAFE_LIFETIME_S = 14 * 60  # used only while safely alive: a call in flight must not outlive it
STALE_S = 86400  # rows of jobs that never reached their runner are purged this long after


@dataclass(frozen=True)
class Reply:
    """The interaction a job answers through (``token`` never in a repr or a log line)."""

    application_id: int
    token: str = field(repr=False)
    expires_at: float  # unix seconds, SAFE_LIFETIME_S after the interaction was acknowledged
    channel_post: bool  # the bot's own token may post where the member asked

    def alive(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at


class ReplyStore:
    def __init__(self, db: Connection, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring
        self._cache: dict[int, Reply] = {}  # progress message id -> its reply, read once per process

    async def put(self, message_id: int, *, application_id: int, token: str, acked_at: float, channel_post: bool) -> Reply:
        reply = Reply(application_id, token, acked_at + SAFE_LIFETIME_S, channel_post)
        async with transaction(self.db) as db:
            # Rows of jobs that ended without reaching their runner (cancelled in the queue, lost
            # in a crash): their tokens died long ago. A day, so a long job keeps ``channel_post``.
            await db.execute("DELETE FROM job_replies WHERE expires_at < ?", (time.time() - STALE_S,))
            await db.execute(
                "INSERT INTO job_replies (message_id, application_id, token_cipher, expires_at, channel_post) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id) DO UPDATE SET application_id = excluded.application_id,"
                " token_cipher = excluded.token_cipher, expires_at = excluded.expires_at, channel_post = excluded.channel_post",
                (message_id, application_id, self.keyring.encrypt(token), reply.expires_at, int(channel_post)),
            )
        self._cache[message_id] = reply
        return reply

    async def get(self, message_id: int | None) -> Reply | None:
        """The reply of the job whose progress message this is (alive or not: ``channel_post``
        still says where results may go); None for a job that came from a message."""
        if not message_id:
            return None
        if message_id in self._cache:
            return self._cache[message_id]
        async with self.db.execute(
            "SELECT application_id, token_cipher, expires_at, channel_post FROM job_replies WHERE message_id = ?", (message_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        reply = Reply(int(row[0]), self.keyring.decrypt(bytes(row[1])), float(row[2]), bool(row[3]))
        self._cache[message_id] = reply
        return reply

    async def drop(self, message_id: int | None) -> None:
        """The job is over: its token is forgotten here and in the database."""
        if not message_id:
            return
        self._cache.pop(message_id, None)
        async with transaction(self.db) as db:
            await db.execute("DELETE FROM job_replies WHERE message_id = ?", (message_id,))
