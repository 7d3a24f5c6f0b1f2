"""A member's recent pictures, and a server's for its admins, read from the job and turn tables.

Only delivered pictures are listed (``jobs.status = 'done'`` with a result turn). Each item
carries the ids a jump link needs: the result message lives in the channel the job posted to
(``request.post_channel_id``, else the channel it was asked in), and its thread is the
conversation's. Paging is by a fixed page size, newest first; a page past the end is a
translated refusal, never an empty surprise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import aiosqlite

from .refusal import Refusal
from .store import Connection

PAGE_SIZE = 5
PROMPT_PREVIEW = 200
DISCORD = "https://discord.com/channels"


class GalleryError(Refusal):
    """A history page or filter that does not exist."""


@dataclass(frozen=True)
class Item:
    job_id: int
    turn_id: int
    guild_id: int | None
    user_id: int
    channel_id: int | None  # where the result message is
    message_id: int | None
    thread_id: int | None
    conversation_id: int | None
    prompt: str
    model: str
    size: str | None
    kind: str
    finished_at: float

    @property
    def message_url(self) -> str | None:
        if self.message_id is None or self.channel_id is None:
            return None
        return f"{DISCORD}/{self.guild_id or '@me'}/{self.channel_id}/{self.message_id}"

    @property
    def thread_url(self) -> str | None:
        return None if self.thread_id is None else f"{DISCORD}/{self.guild_id or '@me'}/{self.thread_id}"


@dataclass(frozen=True)
class Page:
    items: list[Item]
    page: int  # 1-based
    pages: int  # 0 when there is nothing at all
    total: int


def _where(guild_id: int | None, user_id: int | None, model: str | None) -> tuple[str, list[object]]:
    # "guild_id IS NULL" spelled out: "= ?" never matches NULL, in SQLite and PostgreSQL alike.
    clauses = ["j.status = 'done'", "j.result_turn_id IS NOT NULL"]
    params: list[object] = []
    if guild_id is None:
        clauses.append("j.guild_id IS NULL")
    else:
        clauses.append("j.guild_id = ?")
        params.append(guild_id)
    if user_id is not None:
        clauses.append("j.user_id = ?")
        params.append(user_id)
    if model is not None:
        clauses.append("j.model = ?")
        params.append(model)
    return " AND ".join(clauses), params


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PROMPT_PREVIEW else text[: PROMPT_PREVIEW - 1] + "…"


def _item(row: aiosqlite.Row) -> Item:
    try:
        request = json.loads(row["request"] or "{}")
    except ValueError:
        request = {}
    if not isinstance(request, dict):
        request = {}
    # What the member saw: the turn's prompt, else the shown prompt, else the model's prompt.
    prompt = row["turn_prompt"] or request.get("display_prompt") or request.get("prompt") or ""
    post = request.get("post_channel_id")
    return Item(
        job_id=int(row["id"]),
        turn_id=int(row["result_turn_id"]),
        guild_id=row["guild_id"],
        user_id=int(row["user_id"]),
        channel_id=post if isinstance(post, int) else row["channel_id"],
        message_id=row["result_message_id"],
        thread_id=row["thread_id"],
        conversation_id=row["conversation_id"],
        prompt=_preview(str(prompt)),
        model=str(row["model"]),
        size=row["size"],
        kind=str(row["kind"]),
        finished_at=float(row["finished_at"] or row["created_at"]),
    )


_SELECT = (
    "SELECT j.id, j.result_turn_id, j.guild_id, j.user_id, j.channel_id, j.result_message_id, j.request,"
    " j.model, j.size, j.kind, j.finished_at, j.created_at, t.prompt AS turn_prompt, t.conversation_id,"
    " c.thread_id FROM jobs j"
    " LEFT JOIN turns t ON t.id = j.result_turn_id LEFT JOIN conversations c ON c.id = t.conversation_id"
)


class Gallery:
    def __init__(self, db: Connection) -> None:
        self.db = db

    async def page(
        self, guild_id: int | None, *, user_id: int | None, page: int = 1, model: str | None = None, per_page: int = PAGE_SIZE
    ) -> Page:
        """Page ``page`` (1-based) of delivered pictures, newest first: one member's
        (``user_id``) or, with ``user_id=None``, the whole server's (the caller checks that
        the viewer is an admin). ``history.page_out_of_range`` past the last page."""
        where, params = _where(guild_id, user_id, model)
        rows = list(await self.db.execute_fetchall(f"SELECT COUNT(*) FROM jobs j WHERE {where}", params))
        total = int(rows[0][0])
        pages = math.ceil(total / per_page)
        if page < 1 or (page > max(pages, 1)):
            raise GalleryError(f"page {page} of {pages}", key="history.page_out_of_range", page=page, pages=pages)
        found = await self.db.execute_fetchall(
            f"{_SELECT} WHERE {where} ORDER BY j.finished_at DESC, j.id DESC LIMIT ? OFFSET ?",
            [*params, per_page, (page - 1) * per_page],
        )
        return Page([_item(r) for r in found], page, pages, total)

    async def models(self, guild_id: int | None, *, user_id: int | None) -> list[str]:
        """The models that appear in this history, for the filter menu."""
        where, params = _where(guild_id, user_id, None)
        rows = await self.db.execute_fetchall(f"SELECT DISTINCT j.model FROM jobs j WHERE {where} ORDER BY j.model", params)
        return [str(r[0]) for r in rows]

    async def item(self, guild_id: int | None, job_id: int, *, user_id: int | None) -> Item:
        """One delivered picture by job id, as :meth:`page` lists it ("reopen" starts here);
        ``history.gone`` when it is not this member's (or this server's) delivered picture."""
        where, params = _where(guild_id, user_id, None)
        rows = list(
            await self.db.execute_fetchall(
                f"{_SELECT} WHERE {where} AND j.id = ?",
                [*params, job_id],
            )
        )
        if not rows:
            raise GalleryError(f"no picture for job {job_id}", key="history.gone")
        return _item(rows[0])
