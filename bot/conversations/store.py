"""Conversation and turn storage over the ``conversations``/``turns`` tables.

Dialects without history (OpenAI-style)
    ``add_turn(model_turn=None)`` stores a synthetic model turn holding just the result image
    (no signature), so paths stay well-formed and ``latest_image`` works for every dialect.

Per server (decision)
    :meth:`Conversations.prune_server_overflow` keeps each server's stored pictures under
    ``MAX_SERVER_IMAGE_BYTES``: past it, the server's least recently used pictures are
    pruned early (an edit on them then says they expired, as after the retention period).
    It counts every image a server's turns name (pictures, inputs, signed parts); an image
    two servers share counts for both and goes when either needs the room (content-addressed
    storage makes sharing rare: it needs the same bytes). Run with the retention prune.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from typing import Any

from bot import store
from bot.image_store import ImageStore
from bot.relay.gemini import materialize
from bot.relay.stream import Blob
from bot.store import write

from ..store import Connection
from . import replay
from .parts import b64decode, camel, dumps, has_blob, needed_parts, refs_by_guild, with_key_replaced
from .records import CONV_COLUMNS, TURN_COLUMNS, TURN_COLUMNS_T, Conversation, History, Turn, conversation_from_row, turn_from_row
from .replay import DEFAULT_BUDGET_BYTES

# Stored pictures per server (see "Per server").
MAX_SERVER_IMAGE_BYTES = 2 * 2**30


class Conversations:
    """Conversation and turn storage over the ``conversations``/``turns`` tables."""

    def __init__(self, db: Connection, images: ImageStore) -> None:
        self.db = db
        self.images = images

    # -- conversations -------------------------------------------------------------------

    async def create(self, guild_id: int | None, channel_id: int, owner_id: int, model: str, *, thread_id: int | None = None) -> int:
        """A new conversation (optionally already bound to ``thread_id``); returns its id."""
        try:
            (row,) = await write(
                self.db,
                "INSERT INTO conversations (guild_id, channel_id, thread_id, owner_id, model, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (guild_id, channel_id, thread_id, owner_id, model, time.time()),
            )
        except store.IntegrityError:
            raise ValueError(f"thread {thread_id} already belongs to a conversation") from None
        return int(row[0])

    async def bind_thread(self, conversation_id: int, thread_id: int) -> None:
        """Bind the thread opened on the conversation's first result.

        ``ValueError`` if another conversation already owns that thread; ``KeyError`` if the
        conversation does not exist. Re-binding the same pair is a no-op.
        """
        try:
            rows = await write(self.db, "UPDATE conversations SET thread_id = ? WHERE id = ? RETURNING id", (thread_id, conversation_id))
        except store.IntegrityError:
            raise ValueError(f"thread {thread_id} already belongs to another conversation") from None
        if not rows:
            raise KeyError(conversation_id)

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        async with self.db.execute(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)) as cur:
            row = await cur.fetchone()
        return conversation_from_row(row) if row else None

    # -- turns ---------------------------------------------------------------------------

    async def _dehydrate(self, parts: list[Any], stored: tuple[bytes, str] | None = None) -> list[Any]:
        """Parts with every inline image moved into the ImageStore (see bot.conversations.parts).

        ``stored``: (bytes, sha256) of an image just put, so the very same bytes object (a
        Blob's data is the result's image) is not hashed again."""
        out: list[Any] = []
        for raw in parts:
            part = camel(raw) if isinstance(raw, dict) else raw
            inline = part.get("inlineData") if isinstance(part, dict) else None
            value = inline.get("data") if isinstance(inline, dict) else None
            if isinstance(value, Blob) and (value.prefix or value.next is not None or value.suffix):
                value = await asyncio.to_thread(value.text)  # not bare base64: keep the old path
            if isinstance(value, (str, Blob)):
                assert isinstance(inline, dict)
                # A Blob's bytes are the picture already; a string is decoded off the loop.
                data = value.data if isinstance(value, Blob) else await asyncio.to_thread(b64decode, value)
                mime = inline.get("mimeType") or "application/octet-stream"
                sha = stored[1] if stored is not None and data is stored[0] else await self.images.put(data, mime)
                part = with_key_replaced(part, "inlineData", "inlineData", with_key_replaced(inline, "data", "sha256", sha))
            if has_blob(part):  # e.g. a data-URL picture inside a text part: stored as its text
                part = await asyncio.to_thread(materialize, part)
            out.append(part)
        return out

    async def add_turn(
        self,
        conversation_id: int,
        parent_id: int | None,
        user_turn: dict[str, Any] | None,
        model_turn: dict[str, Any] | None,
        image: bytes,
        mime: str,
        *,
        prompt: str,
        settings: dict[str, Any] | None = None,
        job_id: int | None = None,
        message_id: int | None = None,
    ) -> Turn:
        """Record one exchange under ``parent_id`` (None: a root turn) and return it.

        ``user_turn``/``model_turn`` are Gemini ``contents`` entries as exchanged
        (``{"role": ..., "parts": [...]}``); the caller's dicts are not modified.
        ``user_turn=None`` stores ``[{"text": prompt}]``; ``model_turn=None`` (dialects without
        history) stores a synthetic model turn holding ``image``. ``image``/``mime`` are the
        delivered result (what ``latest_image`` returns).
        ``ValueError`` if the parent belongs to another conversation or does not exist.
        """
        if parent_id is not None:
            await self._check_parent(conversation_id, parent_id)
        user_parts_in = copy.deepcopy(user_turn.get("parts") or []) if user_turn is not None else [{"text": prompt}]
        image_sha = await self.images.put(image, mime)
        if model_turn is None:
            model_parts: list[Any] = [{"inlineData": {"mimeType": mime, "sha256": image_sha}}]
        else:
            raw_parts = [camel(p) if isinstance(p, dict) else p for p in (model_turn.get("parts") or [])]
            model_parts = await self._dehydrate(copy.deepcopy(needed_parts(raw_parts, mime)), (image, image_sha))
        user_parts = await self._dehydrate(user_parts_in)
        turn = Turn(
            id=0,  # set by the INSERT below
            conversation_id=conversation_id,
            parent_id=parent_id,
            user_parts=user_parts,
            model_parts=model_parts,
            image_sha256=image_sha,
            message_id=message_id,
            job_id=job_id,
            prompt=prompt,
            settings=dict(settings or {}),
            created_at=time.time(),
        )
        return dataclasses.replace(turn, id=await self._insert(turn))

    async def _insert(self, turn: Turn) -> int:
        (row,) = await write(
            self.db,
            "INSERT INTO turns (conversation_id, parent_id, user_parts, model_parts, image_sha256, message_id,"
            " job_id, prompt, settings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                turn.conversation_id,
                turn.parent_id,
                dumps(turn.user_parts),
                dumps(turn.model_parts),
                turn.image_sha256,
                turn.message_id,
                turn.job_id,
                turn.prompt,
                dumps(turn.settings),
                turn.created_at,
            ),
        )
        return int(row[0])

    async def _check_parent(self, conversation_id: int, parent_id: int) -> None:
        async with self.db.execute("SELECT conversation_id FROM turns WHERE id = ?", (parent_id,)) as cur:
            row = await cur.fetchone()
        if row is None or row[0] != conversation_id:
            raise ValueError(f"turn {parent_id} is not a turn of conversation {conversation_id}")

    async def set_message(self, turn_id: int, message_id: int) -> None:
        """Record the Discord message that shows this turn's picture (``KeyError`` if no such turn)."""
        if not await write(self.db, "UPDATE turns SET message_id = ? WHERE id = ? RETURNING id", (message_id, turn_id)):
            raise KeyError(turn_id)

    async def get_turn(self, turn_id: int) -> Turn | None:
        async with self.db.execute(f"SELECT {TURN_COLUMNS} FROM turns WHERE id = ?", (turn_id,)) as cur:
            row = await cur.fetchone()
        return turn_from_row(row) if row else None

    async def turn_by_message(self, message_id: int) -> Turn | None:
        """The turn whose picture is shown by that Discord message (a reply target)."""
        async with self.db.execute(f"SELECT {TURN_COLUMNS} FROM turns WHERE message_id = ? ORDER BY id DESC LIMIT 1", (message_id,)) as cur:
            row = await cur.fetchone()
        return turn_from_row(row) if row else None

    async def latest_turn(self, thread_id: int) -> Turn | None:
        """The most recently added turn of the thread's conversation, on whichever branch."""
        # Ids grow with insertion, so the highest id is the newest even if the clock stepped back.
        async with self.db.execute(
            f"SELECT {TURN_COLUMNS_T}"
            " FROM turns t JOIN conversations c ON c.id = t.conversation_id"
            " WHERE c.thread_id = ? ORDER BY t.id DESC LIMIT 1",
            (thread_id,),
        ) as cur:
            row = await cur.fetchone()
        return turn_from_row(row) if row else None

    async def path(self, turn_id: int) -> list[Turn]:
        """The turns from the root down to ``turn_id`` (``KeyError`` if no such turn)."""
        async with self.db.execute(
            "WITH RECURSIVE up(id, parent_id, depth) AS ("
            " SELECT id, parent_id, 0 FROM turns WHERE id = ?"
            " UNION ALL SELECT t.id, t.parent_id, up.depth + 1 FROM turns t JOIN up ON t.id = up.parent_id)"
            f" SELECT {TURN_COLUMNS_T}"
            " FROM up JOIN turns t ON t.id = up.id ORDER BY up.depth DESC",
            (turn_id,),
        ) as cur:
            rows = await cur.fetchall()
        if not rows:
            raise KeyError(turn_id)
        return [turn_from_row(r) for r in rows]

    # -- replay --------------------------------------------------------------------------

    async def history(self, turn_id: int, budget_bytes: int = DEFAULT_BUDGET_BYTES, *, include_thoughts: bool = True) -> History:
        """The root→turn path as Gemini ``contents``, images back in place, ready to send
        (see bot.conversations.replay). ``KeyError`` if the turn does not exist."""
        return await replay.history(await self.path(turn_id), self.images, budget_bytes, include_thoughts=include_thoughts)

    async def latest_image(self, turn_id: int) -> tuple[bytes, str]:
        """The turn's delivered picture, for dialects that edit "latest image + instruction".

        ``KeyError`` if the turn does not exist, ``ImagePruned`` if its file is gone.
        """
        turn = await self.get_turn(turn_id)
        if turn is None or turn.image_sha256 is None:
            raise KeyError(turn_id)
        return await self.images.get(turn.image_sha256)

    async def prune_server_overflow(self, limit_bytes: int = MAX_SERVER_IMAGE_BYTES) -> int:
        """Prune each server's least recently used images beyond ``limit_bytes``; returns how
        many were pruned. Reads first (WAL readers do not block writers), then one prune."""
        async with self.db.execute(
            "SELECT c.guild_id, t.image_sha256, t.user_parts, t.model_parts FROM turns t JOIN conversations c ON c.id = t.conversation_id"
        ) as cur:
            rows = [tuple(r) for r in await cur.fetchall()]
        per_guild = await asyncio.to_thread(refs_by_guild, rows)  # JSON parsing: off the loop
        infos = await self.images.infos([sha for refs in per_guild.values() for sha in refs])
        doomed: set[str] = set()
        for refs in per_guild.values():
            live = sorted((infos[s] for s in refs if s in infos and not infos[s].pruned), key=lambda i: i.last_used, reverse=True)
            total = 0
            for info in live:
                total += info.byte_size
                if total > limit_bytes:
                    doomed.add(info.sha256)
        if not doomed:
            return 0
        return await self.images.prune_these(sorted(doomed))
