"""Conversations: a tree of turns bound to a Discord thread, replayed as Gemini history.

A conversation starts with a result and is bound to the thread opened on it (ids are plain
ints; nothing here imports Discord). Each *turn* is one exchange — the user content sent and
the model content received — plus the image delivered for it (``image_sha256``) and the
Discord message showing it (``message_id``). ``parent_id`` makes the tree: a message in the
thread continues from the latest turn, a reply to an earlier picture continues from that one,
and both are just "add a turn under parent P".

Stored form
    ``user_parts``/``model_parts`` are the ``parts`` lists exactly as exchanged (camelCase),
    with one change: every ``inlineData.data`` (base64) is moved into the ImageStore and
    replaced, at the same key position, by ``inlineData.sha256``. Every other key
    (``thoughtSignature``, ``thought``, ``text``…) and the part order are kept as they were.
    Replaying puts the base64 back at that position, so the JSON sent is the JSON received.
    A model turn from the relay client may hold a :class:`~bot.relay.stream.Blob` where the
    base64 string was (a big picture, decoded while it streamed in): its bytes are stored as
    they are, with no base64 round trip. Older callers' base64 strings are decoded as before.
    The only rewrite: snake_case keys some relays answer with (``inline_data``, ``mime_type``,
    ``thought_signature``…) become camelCase, because relays re-serialize requests and can
    silently drop snake_case signatures (field notes §1).

Thought parts (decision)
    Model turns are stored *whole*, thought parts (``"thought": true``, text or draft images)
    included, and ``history`` sends them back by default. Google's rule for multi-turn image
    editing is to return the previous model turn exactly as received, signatures included,
    and the official SDK's chat history does the same (it keeps thought parts). Dropping the
    drafts would save payload but is unverified against the API, so it is opt-in:
    ``history(..., include_thoughts=False)`` leaves out thought parts that carry no
    ``thoughtSignature`` (a part with a signature is always kept). Draft images count against
    the payload budget like any other image.

What is stored of a model turn (decision: "what a later turn needs")
    A relay may answer with any number of parts (61 ``inlineData`` parts were tried: 61 files,
    60 MiB kept for 30 days). A later turn replays the path as stored, and the API checks the
    ``thoughtSignature`` of the parts it sent; an unsigned part is never checked, and the
    picture being edited is the delivered one. So :func:`needed_parts` keeps: the delivered
    picture (the last non-thought image, as ``gemini.parse`` picks it), every part that
    carries a ``thoughtSignature`` (byte for byte, image or text), unsigned text parts up to
    ``MAX_TURN_TEXT`` characters in all, and unsigned draft images (``"thought": true``,
    replayed as received, see "Thought parts") while the turn stays within
    ``MAX_TURN_IMAGES`` images and ``MAX_TURN_IMAGE_BYTES``. Unsigned non-thought images other
    than the delivered one (extra outputs) are never stored. A turn whose delivered and
    signed images alone exceed the caps (signed parts are kept whole or not at all) is
    stored as the delivered picture alone: the next edit replays that picture unsigned, as
    for dialects without history.

Per server (decision)
    :meth:`Conversations.prune_server_overflow` keeps each server's stored pictures under
    ``MAX_SERVER_IMAGE_BYTES``: past it, the server's least recently used pictures are
    pruned early (an edit on them then says they expired, as after the retention period).
    It counts every image a server's turns name (pictures, inputs, signed parts); an image
    two servers share counts for both and goes when either needs the room (content-addressed
    storage makes sharing rare: it needs the same bytes). Run with the retention prune.

Dialects without history (OpenAI-style)
    ``add_turn(model_turn=None)`` stores a synthetic model turn holding just the result image
    (no signature), so paths stay well-formed and ``latest_image`` works for every dialect.

Trimming and expiry
    ``history`` returns the root→turn path, trimmed to a byte budget by leaving out the oldest
    exchanges first, whole user+model pairs only; the chosen turn's own exchange is always
    kept. An older exchange whose images were pruned is left out the same way (the history
    still starts at a clean pair boundary). Only when the chosen turn's own exchange has lost
    an image does it raise ``ImagePruned`` — then there is nothing left to edit.
"""

from __future__ import annotations

import asyncio
import binascii
import copy
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import pybase64

from bot.image_store import ImagePruned, ImageStore
from bot.relay.client import HISTORY_BUDGET
from bot.relay.gemini import b64_text, materialize
from bot.relay.stream import Blob
from bot.store import write

__all__ = ["Conversation", "Conversations", "History", "ImagePruned", "Turn"]

DEFAULT_BUDGET_BYTES = HISTORY_BUDGET
# Per-turn storage caps (see "What is stored of a model turn").
MAX_TURN_IMAGES = 4
MAX_TURN_IMAGE_BYTES = 64 * 2**20
MAX_TURN_TEXT = 32_000
# Stored pictures per server (see "Per server").
MAX_SERVER_IMAGE_BYTES = 2 * 2**30

# Relays may answer in the proto's snake_case; requests must be camelCase.
_CAMEL = {
    "inline_data": "inlineData",
    "mime_type": "mimeType",
    "thought_signature": "thoughtSignature",
    "file_data": "fileData",
    "file_uri": "fileUri",
    "display_name": "displayName",
    "video_metadata": "videoMetadata",
    "executable_code": "executableCode",
    "code_execution_result": "codeExecutionResult",
    "function_call": "functionCall",
    "function_response": "functionResponse",
}
_URLSAFE = str.maketrans("-_", "+/")
# Base64 is decoded in a worker thread, in slices: the decoder holds the GIL for a whole call,
# so one 20 MB call would stall the event loop; between ~1 MB slices the loop gets its turn.
_B64_SLICE = 4 * 3 * 65536  # a multiple of 4
# Images at least this big are replayed as Blobs, not base64 strings. Measured with a 4K
# picture (26.6 MB): building its 35 MB base64 string took ~20 ms in one C call (the final
# join, page faults included) and stalled the loop 25 ms even from a worker thread. The
# relay client writes a Blob into the request body slice by slice instead.
BLOB_BYTES = 1 << 20


def _decode_slices(s: str) -> bytes:
    return b"".join(pybase64.b64decode(s[i : i + _B64_SLICE], validate=True) for i in range(0, len(s), _B64_SLICE))


def _b64decode(text: str) -> bytes:
    try:
        return _decode_slices(text)
    except binascii.Error:
        pass
    # Rare slow path: line breaks, URL-safe alphabet or missing padding from some relay.
    s = "".join(text.split()).translate(_URLSAFE).rstrip("=")
    s += "=" * (-len(s) % 4)
    try:
        return _decode_slices(s)
    except binascii.Error as exc:
        raise ValueError(f"inlineData.data is not valid base64: {exc}") from None


def _has_blob(value: Any) -> bool:
    if isinstance(value, Blob):
        return True
    if isinstance(value, dict):
        return any(_has_blob(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_blob(v) for v in value)
    return False


def _b64len(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _inline_data(part: Any) -> Any:
    inline = part.get("inlineData") if isinstance(part, dict) else None
    return inline.get("data") if isinstance(inline, dict) else None


def _data_size(value: Any) -> int:
    if isinstance(value, Blob):
        return len(value.data)
    return len(value) * 3 // 4 if isinstance(value, str) else 0


def needed_parts(parts: list[Any], mime: str) -> list[Any]:
    """The parts of a model turn worth storing (camelCase already): see the module docstring.
    Never modifies the caller's dicts; may return a one-part synthetic turn."""
    images = {i for i, p in enumerate(parts) if isinstance(_inline_data(p), (str, Blob))}
    delivered = next((i for i in sorted(images, reverse=True) if parts[i].get("thought") is not True), None)
    keep: set[int] = set()
    image_count = image_bytes = 0
    text_left = MAX_TURN_TEXT
    for i, part in enumerate(parts):
        signed = isinstance(part, dict) and "thoughtSignature" in part
        if i in images:
            if i == delivered or signed:
                keep.add(i)
                image_count += 1
                image_bytes += _data_size(_inline_data(part))
        elif isinstance(part, dict) and isinstance(part.get("text"), str) and not signed:
            if len(part["text"]) <= text_left:
                keep.add(i)
                text_left -= len(part["text"])
        else:
            keep.add(i)
    if image_count > MAX_TURN_IMAGES or image_bytes > MAX_TURN_IMAGE_BYTES:
        if delivered is None:
            return []
        only = parts[delivered]["inlineData"]
        return [{"inlineData": {"mimeType": only.get("mimeType") or mime, "data": only["data"]}}]
    # Unsigned drafts (thought images) are replayed when kept (as received), while room is left.
    for i in sorted(images - keep):
        part = parts[i]
        size = _data_size(_inline_data(part))
        if part.get("thought") is True and image_count < MAX_TURN_IMAGES and image_bytes + size <= MAX_TURN_IMAGE_BYTES:
            keep.add(i)
            image_count += 1
            image_bytes += size
    return [part for i, part in enumerate(parts) if i in keep]


def _camel(value: Any) -> Any:
    """Rename snake_case wire keys to camelCase, keeping key order. Only the part itself and its
    inline/file data are renamed; free-form values (function args, text) stay as they are."""
    if isinstance(value, dict):
        return {_CAMEL.get(k, k): _camel(v) if k in ("inline_data", "inlineData", "file_data", "fileData") else v for k, v in value.items()}
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _image_refs(parts: list[dict[str, Any]]) -> Iterator[str]:
    for part in parts:
        inline = part.get("inlineData") if isinstance(part, dict) else None
        if isinstance(inline, dict) and isinstance(inline.get("sha256"), str):
            yield inline["sha256"]


def _refs_by_guild(rows: list[tuple[Any, ...]]) -> dict[Any, set[str]]:
    per_guild: dict[Any, set[str]] = {}
    for guild_id, picture, user_parts, model_parts in rows:
        refs = per_guild.setdefault(guild_id, set())
        if picture:
            refs.add(picture)
        for raw in (user_parts, model_parts):
            try:
                refs.update(_image_refs(json.loads(raw)))
            except (TypeError, ValueError, AttributeError):
                continue
    return per_guild


def _with_key_replaced(d: dict[str, Any], old: str, new: str, value: Any) -> dict[str, Any]:
    """``d`` with ``old`` swapped for ``new`` at the same position (JSON key order matters to us)."""
    return {(new if k == old else k): (value if k == old else v) for k, v in d.items()}


@dataclass(frozen=True)
class Conversation:
    id: int
    guild_id: int | None
    channel_id: int
    thread_id: int | None
    owner_id: int
    model: str
    created_at: float


@dataclass(frozen=True)
class Turn:
    """One exchange. ``user_parts``/``model_parts`` are the stored form (images as sha256 refs)."""

    id: int
    conversation_id: int
    parent_id: int | None
    user_parts: list[dict[str, Any]]
    model_parts: list[dict[str, Any]]
    image_sha256: str | None
    message_id: int | None
    job_id: int | None
    prompt: str
    settings: dict[str, Any]
    created_at: float

    def image_refs(self) -> list[str]:
        """Hashes of every image this exchange refers to, user side first, in part order."""
        return [*_image_refs(self.user_parts), *_image_refs(self.model_parts)]


class History(list[dict[str, Any]]):
    """Gemini ``contents`` (user, model, user, model, …) plus what trimming left out.

    ``dropped``: exchanges (pairs) left out from the start of the path; ``expired``: True
    when at least one of them was left out because its images were pruned (not for size).
    Big images are :class:`~bot.relay.stream.Blob` objects, not strings (see ``history``).
    """

    dropped: int = 0
    expired: bool = False


_TURN_COLUMNS = "id, conversation_id, parent_id, user_parts, model_parts, image_sha256, message_id, job_id, prompt, settings, created_at"
_TURN_COLUMNS_T = ", ".join("t." + c.strip() for c in _TURN_COLUMNS.split(","))
_CONV_COLUMNS = "id, guild_id, channel_id, thread_id, owner_id, model, created_at"


def _turn(row: Any) -> Turn:
    return Turn(
        id=row[0],
        conversation_id=row[1],
        parent_id=row[2],
        user_parts=json.loads(row[3]),
        model_parts=json.loads(row[4]),
        image_sha256=row[5],
        message_id=row[6],
        job_id=row[7],
        prompt=row[8],
        settings=json.loads(row[9] or "{}"),
        created_at=float(row[10]),
    )


def _conversation(row: Any) -> Conversation:
    return Conversation(row[0], row[1], row[2], row[3], row[4], row[5], float(row[6]))


@dataclass
class _Pair:
    turn: Turn
    user: list[dict[str, Any]]
    model: list[dict[str, Any]]
    cost: int = 0
    available: bool = True
    refs: list[str] = field(default_factory=list)


class Conversations:
    """Conversation and turn storage over the ``conversations``/``turns`` tables."""

    def __init__(self, db: aiosqlite.Connection, images: ImageStore) -> None:
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
        except sqlite3.IntegrityError:
            raise ValueError(f"thread {thread_id} already belongs to a conversation") from None
        return int(row[0])

    async def bind_thread(self, conversation_id: int, thread_id: int) -> None:
        """Bind the thread opened on the conversation's first result.

        ``ValueError`` if another conversation already owns that thread; ``KeyError`` if the
        conversation does not exist. Re-binding the same pair is a no-op.
        """
        try:
            rows = await write(self.db, "UPDATE conversations SET thread_id = ? WHERE id = ? RETURNING id", (thread_id, conversation_id))
        except sqlite3.IntegrityError:
            raise ValueError(f"thread {thread_id} already belongs to another conversation") from None
        if not rows:
            raise KeyError(conversation_id)

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        async with self.db.execute(f"SELECT {_CONV_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)) as cur:
            row = await cur.fetchone()
        return _conversation(row) if row else None

    async def conversation_by_thread(self, thread_id: int) -> Conversation | None:
        async with self.db.execute(f"SELECT {_CONV_COLUMNS} FROM conversations WHERE thread_id = ?", (thread_id,)) as cur:
            row = await cur.fetchone()
        return _conversation(row) if row else None

    # -- turns ---------------------------------------------------------------------------

    async def _dehydrate(self, parts: list[Any], stored: tuple[bytes, str] | None = None) -> list[Any]:
        """Parts with every inline image moved into the ImageStore (see module docstring).

        ``stored``: (bytes, sha256) of an image just put, so the very same bytes object (a
        Blob's data is the result's image) is not hashed again."""
        out: list[Any] = []
        for raw in parts:
            part = _camel(raw) if isinstance(raw, dict) else raw
            inline = part.get("inlineData") if isinstance(part, dict) else None
            value = inline.get("data") if isinstance(inline, dict) else None
            if isinstance(value, Blob) and (value.prefix or value.next is not None or value.suffix):
                value = await asyncio.to_thread(value.text)  # not bare base64: keep the old path
            if isinstance(value, (str, Blob)):
                assert isinstance(inline, dict)
                # A Blob's bytes are the picture already; a string is decoded off the loop.
                data = value.data if isinstance(value, Blob) else await asyncio.to_thread(_b64decode, value)
                mime = inline.get("mimeType") or "application/octet-stream"
                sha = stored[1] if stored is not None and data is stored[0] else await self.images.put(data, mime)
                part = _with_key_replaced(part, "inlineData", "inlineData", _with_key_replaced(inline, "data", "sha256", sha))
            if _has_blob(part):  # e.g. a data-URL picture inside a text part: stored as its text
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
            async with self.db.execute("SELECT conversation_id FROM turns WHERE id = ?", (parent_id,)) as cur:
                row = await cur.fetchone()
            if row is None or row[0] != conversation_id:
                raise ValueError(f"turn {parent_id} is not a turn of conversation {conversation_id}")
        user_parts_in = copy.deepcopy(user_turn.get("parts") or []) if user_turn is not None else [{"text": prompt}]
        image_sha = await self.images.put(image, mime)
        if model_turn is None:
            model_parts: list[Any] = [{"inlineData": {"mimeType": mime, "sha256": image_sha}}]
        else:
            raw_parts = [_camel(p) if isinstance(p, dict) else p for p in (model_turn.get("parts") or [])]
            model_parts = await self._dehydrate(copy.deepcopy(needed_parts(raw_parts, mime)), (image, image_sha))
        user_parts = await self._dehydrate(user_parts_in)
        now = time.time()
        (row,) = await write(
            self.db,
            "INSERT INTO turns (conversation_id, parent_id, user_parts, model_parts, image_sha256, message_id,"
            " job_id, prompt, settings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                conversation_id,
                parent_id,
                _dumps(user_parts),
                _dumps(model_parts),
                image_sha,
                message_id,
                job_id,
                prompt,
                _dumps(settings or {}),
                now,
            ),
        )
        return Turn(
            id=int(row[0]),
            conversation_id=conversation_id,
            parent_id=parent_id,
            user_parts=user_parts,
            model_parts=model_parts,
            image_sha256=image_sha,
            message_id=message_id,
            job_id=job_id,
            prompt=prompt,
            settings=dict(settings or {}),
            created_at=now,
        )

    async def set_message(self, turn_id: int, message_id: int) -> None:
        """Record the Discord message that shows this turn's picture (``KeyError`` if no such turn)."""
        if not await write(self.db, "UPDATE turns SET message_id = ? WHERE id = ? RETURNING id", (message_id, turn_id)):
            raise KeyError(turn_id)

    async def get_turn(self, turn_id: int) -> Turn | None:
        async with self.db.execute(f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?", (turn_id,)) as cur:
            row = await cur.fetchone()
        return _turn(row) if row else None

    async def turn_by_message(self, message_id: int) -> Turn | None:
        """The turn whose picture is shown by that Discord message (a reply target)."""
        async with self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE message_id = ? ORDER BY id DESC LIMIT 1", (message_id,)
        ) as cur:
            row = await cur.fetchone()
        return _turn(row) if row else None

    async def latest_turn(self, thread_id: int) -> Turn | None:
        """The most recently added turn of the thread's conversation, on whichever branch."""
        # Ids grow with insertion, so the highest id is the newest even if the clock stepped back.
        async with self.db.execute(
            f"SELECT {_TURN_COLUMNS_T}"
            " FROM turns t JOIN conversations c ON c.id = t.conversation_id"
            " WHERE c.thread_id = ? ORDER BY t.id DESC LIMIT 1",
            (thread_id,),
        ) as cur:
            row = await cur.fetchone()
        return _turn(row) if row else None

    async def path(self, turn_id: int) -> list[Turn]:
        """The turns from the root down to ``turn_id`` (``KeyError`` if no such turn)."""
        async with self.db.execute(
            "WITH RECURSIVE up(id, parent_id, depth) AS ("
            " SELECT id, parent_id, 0 FROM turns WHERE id = ?"
            " UNION ALL SELECT t.id, t.parent_id, up.depth + 1 FROM turns t JOIN up ON t.id = up.parent_id)"
            f" SELECT {_TURN_COLUMNS_T}"
            " FROM up JOIN turns t ON t.id = up.id ORDER BY up.depth DESC",
            (turn_id,),
        ) as cur:
            rows = await cur.fetchall()
        if not rows:
            raise KeyError(turn_id)
        return [_turn(r) for r in rows]

    # -- replay --------------------------------------------------------------------------

    async def history(self, turn_id: int, budget_bytes: int = DEFAULT_BUDGET_BYTES, *, include_thoughts: bool = True) -> History:
        """The root→turn path as Gemini ``contents``, images back in place, ready to send.

        Each image is back at its ``inlineData.data`` position: as its base64 string, or, from
        :data:`BLOB_BYTES` up, as a :class:`~bot.relay.stream.Blob` holding its bytes (the relay
        client writes it as that base64; ``bot.relay.gemini.materialize`` makes plain JSON).

        Signatures and part order are exactly as stored. The size counted is the JSON the
        contents serialize to; the new user message is not part of it, so pass a budget that
        leaves room for it. Oldest exchanges are left out first, whole pairs only; the chosen
        turn's exchange is always there even if it alone exceeds the budget. ``ImagePruned``
        if the chosen turn's own images are gone; ``KeyError`` if the turn does not exist.
        """
        pairs: list[_Pair] = []
        for t in await self.path(turn_id):
            model = t.model_parts
            if not include_thoughts:
                model = [p for p in model if not (isinstance(p, dict) and p.get("thought") is True and "thoughtSignature" not in p)]
            pair = _Pair(t, t.user_parts, model)
            pair.refs = [*_image_refs(pair.user), *_image_refs(pair.model)]
            pairs.append(pair)

        infos = await self.images.infos([s for p in pairs for s in p.refs])
        for p in pairs:
            # Each ref's 64-hex "sha256" becomes the base64 "data": counting both over-estimates
            # by ~76 bytes per image, which keeps us on the safe side of the budget.
            p.cost = len(_dumps({"role": "user", "parts": p.user}).encode()) + len(_dumps({"role": "model", "parts": p.model}).encode()) + 2
            for sha in p.refs:
                info = infos.get(sha)
                if info is None or info.pruned:
                    p.available = False
                else:
                    p.cost += _b64len(info.byte_size)

        last = pairs[-1]
        if not last.available:
            missing = next(s for s in last.refs if s not in infos or infos[s].pruned)
            raise ImagePruned(missing)

        # Longest suffix that fits and whose images all still exist: that is "drop the oldest
        # first", and it never starts mid-pair because pairs are the unit.
        start = len(pairs) - 1
        total = last.cost
        expired = False
        while start > 0:
            prev = pairs[start - 1]
            if not prev.available:
                expired = True
                break
            if total + prev.cost > budget_bytes:
                break
            total += prev.cost
            start -= 1

        # Hydrate newest first: if a file vanished since the lookup (a concurrent prune), the
        # older part is left out like an expired pair; only the chosen turn's loss is fatal.
        hydrated: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        cache: dict[str, str | Blob] = {}
        for i in range(len(pairs) - 1, start - 1, -1):
            p = pairs[i]
            try:
                user = await self._hydrate(p.user, cache)
                model = await self._hydrate(p.model, cache)
            except ImagePruned:
                if i == len(pairs) - 1:
                    raise
                start, expired = i + 1, True
                break
            hydrated.append((user, model))
        await self.images.touch(list(cache))

        out = History()
        for user, model in reversed(hydrated):
            out.append({"role": "user", "parts": user})
            out.append({"role": "model", "parts": model})
        out.dropped = start
        out.expired = expired
        return out

    async def _hydrate(self, parts: list[Any], cache: dict[str, str | Blob]) -> list[Any]:
        out: list[Any] = []
        for part in parts:
            inline = part.get("inlineData") if isinstance(part, dict) else None
            if isinstance(inline, dict) and isinstance(inline.get("sha256"), str):
                sha = inline["sha256"]
                if sha not in cache:
                    try:
                        data, _mime = await self.images.get(sha, touch=False)
                    except KeyError:
                        raise ImagePruned(sha) from None
                    cache[sha] = Blob(data) if len(data) >= BLOB_BYTES else b64_text(data)
                part = _with_key_replaced(part, "inlineData", "inlineData", _with_key_replaced(inline, "sha256", "data", cache[sha]))
            out.append(part)
        return out

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
        per_guild = await asyncio.to_thread(_refs_by_guild, rows)  # JSON parsing: off the loop
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
