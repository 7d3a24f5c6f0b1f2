"""Styles: a named prompt template, optional reference pictures and an optional default shape.

Server styles (``owner_id`` 0) are made by admins; personal styles belong to one member in
one server. A template holds ``{prompt}`` exactly once; applying it splices the member's
prompt in by plain string concatenation, so braces or ``{0}`` in what the member typed are
never read as format fields. Reference pictures are stored through :class:`ImageStore`
(content-addressed), and the style row keeps their SHA-256 references.
"""

from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass

import aiosqlite

from .image_store import ImagePruned, ImageStore
from .refusal import Refusal
from .relay.catalogue import MAX_PROMPT_CHARS, MODELS, normalize_ratio, normalize_size
from .relay.types import InputImage
from .store import Connection, transaction, write

PLACEHOLDER = "{prompt}"
MAX_NAME = 32
MAX_TEMPLATE = 1000
MAX_IMAGES = 4  # reference pictures per style
MAX_SERVER_STYLES = 25  # what one autocomplete answer can show
MAX_PERSONAL_STYLES = 10
SERVER = 0  # owner_id of a server style
# A style made from a result: the member's new prompt, in the manner of that picture. Sent to
# the model, not shown to members (the model follows English instructions best).
FROM_RESULT = "{prompt}\n\nMatch the style, medium, palette and lighting of the reference picture (it was made from: {source})."


class StyleError(Refusal):
    """A style that cannot be saved, found or applied."""


@dataclass(frozen=True)
class Style:
    guild_id: int
    owner_id: int  # SERVER (0) for a server style
    name: str
    template: str
    images: tuple[str, ...] = ()  # SHA-256 references
    aspect_ratio: str | None = None
    size: str | None = None

    @property
    def personal(self) -> bool:
        return self.owner_id != SERVER

    def apply(self, prompt: str) -> str:
        """The model-facing prompt: the template with ``prompt`` in place of ``{prompt}``."""
        before, _, after = self.template.partition(PLACEHOLDER)
        out = before + prompt + after
        if len(out) > MAX_PROMPT_CHARS:
            raise StyleError("styled prompt too long", key="style.too_long", name=self.name, limit=MAX_PROMPT_CHARS)
        return out

    def check_images(self, model: str, own_images: int) -> None:
        """Refuse when the style's pictures and the member's together exceed what ``model`` takes."""
        spec = MODELS.get(model)
        if spec is not None and len(self.images) + own_images > spec.max_images:
            raise StyleError(
                "too many images with this style",
                key="style.too_many_images",
                name=self.name,
                style_images=len(self.images),
                limit=spec.max_images,
            )


def name_key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()


def checked_name(name: str) -> str:
    """A style name: 1–32 characters of letters (any script), digits, spaces, ``-`` ``_`` ``.``;
    runs of spaces become one."""
    clean = " ".join(unicodedata.normalize("NFKC", name).split())
    if not 1 <= len(clean) <= MAX_NAME or not all(c.isalnum() or c in " -_." for c in clean):
        raise StyleError(f"bad style name {name!r}", key="style.bad_name", limit=MAX_NAME)
    return clean


def checked_template(template: str) -> str:
    template = template.strip()
    if template.count(PLACEHOLDER) != 1:
        raise StyleError("template needs {prompt} once", key="style.bad_template", placeholder=PLACEHOLDER)
    if len(template) > MAX_TEMPLATE:
        raise StyleError("template too long", key="style.template_too_long", limit=MAX_TEMPLATE)
    return template


def template_from_result(prompt: str) -> str:
    """The template of a style saved from a result made from ``prompt``."""
    source = " ".join(prompt.replace(PLACEHOLDER, "(prompt)").split())
    room = MAX_TEMPLATE - len(FROM_RESULT) + len("{source}")
    source = source if len(source) <= room else source[: room - 1] + "…"
    return FROM_RESULT.replace("{source}", source)


def _checked_shape(ratio: str | None, size: str | None) -> tuple[str | None, str | None]:
    r = normalize_ratio(ratio) if ratio else None
    s = normalize_size(size) if size else None
    if ratio and r is None:
        raise StyleError("bad ratio", key="style.bad_ratio", value=ratio)
    if size and s is None:
        raise StyleError("bad size", key="style.bad_size", value=size)
    return r, s


_COLUMNS = "guild_id, owner_id, name, template, images, aspect_ratio, size"


def _style(row: aiosqlite.Row) -> Style:
    try:
        refs = tuple(str(h) for h in json.loads(row[4] or "[]"))
    except ValueError:
        refs = ()
    return Style(int(row[0]), int(row[1]), str(row[2]), str(row[3]), refs, row[5], row[6])


class StyleStore:
    def __init__(self, db: Connection, images: ImageStore) -> None:
        self.db = db
        self.images = images

    async def save(
        self,
        guild_id: int,
        name: str,
        template: str,
        *,
        created_by: int,
        owner_id: int = SERVER,
        images: list[InputImage] | None = None,
        aspect_ratio: str | None = None,
        size: str | None = None,
    ) -> Style:
        """Add or replace a style (same name, same owner). Counts against the limit only when new."""
        clean, template = checked_name(name), checked_template(template)
        ratio, canonical_size = _checked_shape(aspect_ratio, size)
        pictures = images or []
        if len(pictures) > MAX_IMAGES:
            raise StyleError("too many reference images", key="style.images_limit", limit=MAX_IMAGES)
        refs = [await self.images.put(p.data, p.mime_type) for p in pictures]
        limit = MAX_PERSONAL_STYLES if owner_id != SERVER else MAX_SERVER_STYLES
        now = time.time()
        async with transaction(self.db) as tx:
            rows = list(
                await tx.execute_fetchall(
                    "SELECT name_key FROM styles WHERE guild_id = ? AND owner_id = ?",
                    (guild_id, owner_id),
                )
            )
            keys = {r[0] for r in rows}
            if name_key(clean) not in keys and len(keys) >= limit:
                raise StyleError("style limit reached", key="style.limit", limit=limit)
            await tx.execute(
                "INSERT INTO styles (guild_id, owner_id, name_key, name, template, images, aspect_ratio, size,"
                " created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (guild_id, owner_id, name_key) DO UPDATE SET name = excluded.name,"
                " template = excluded.template, images = excluded.images, aspect_ratio = excluded.aspect_ratio,"
                " size = excluded.size, updated_at = excluded.updated_at",
                (guild_id, owner_id, name_key(clean), clean, template, json.dumps(refs), ratio, canonical_size, created_by, now, now),
            )
        return Style(guild_id, owner_id, clean, template, tuple(refs), ratio, canonical_size)

    async def save_from_result(
        self, guild_id: int, user_id: int, name: str, prompt: str, image: InputImage, aspect_ratio: str | None = None
    ) -> Style:
        """A member's "save as style" on a result: its picture as the reference, its ratio kept."""
        template = template_from_result(prompt)
        return await self.save(guild_id, name, template, created_by=user_id, owner_id=user_id, images=[image], aspect_ratio=aspect_ratio)

    async def remove(self, guild_id: int, name: str, *, owner_id: int = SERVER) -> bool:
        rows = await write(
            self.db,
            "DELETE FROM styles WHERE guild_id = ? AND owner_id = ? AND name_key = ? RETURNING name",
            (guild_id, owner_id, name_key(name.strip())),
        )
        return bool(rows)

    async def get(self, guild_id: int, name: str, *, owner_id: int = SERVER) -> Style | None:
        rows = list(
            await self.db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM styles WHERE guild_id = ? AND owner_id = ? AND name_key = ?",
                (guild_id, owner_id, name_key(" ".join(name.split()))),
            )
        )
        return _style(rows[0]) if rows else None

    async def resolve(self, guild_id: int | None, user_id: int, name: str) -> Style:
        """The style ``name`` as this member sees it: their own first, then the server's.
        A name that no longer exists is a translated refusal (``style.gone``)."""
        if guild_id:
            for owner in (user_id, SERVER):
                style = await self.get(guild_id, name, owner_id=owner)
                if style is not None:
                    return style
        raise StyleError(f"no style {name!r}", key="style.gone", name=name)

    async def visible(self, guild_id: int | None, user_id: int) -> list[Style]:
        """The member's styles then the server's, each by name."""
        if not guild_id:
            return []
        rows = await self.db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM styles WHERE guild_id = ? AND owner_id IN (?, ?)"
            " ORDER BY CASE WHEN owner_id = ? THEN 1 ELSE 0 END, name_key",
            (guild_id, user_id, SERVER, SERVER),
        )
        return [_style(r) for r in rows]

    async def autocomplete(self, guild_id: int | None, user_id: int, current: str, limit: int = 25) -> list[Style]:
        """Styles whose name contains what was typed (case-folded), the member's own first.
        A personal style hides a server style of the same name, as :meth:`resolve` does."""
        typed = name_key(current.strip())
        seen: set[str] = set()
        out: list[Style] = []
        for style in await self.visible(guild_id, user_id):
            key = name_key(style.name)
            if typed in key and key not in seen:
                seen.add(key)
                out.append(style)
        return out[:limit]

    async def reference_images(self, style: Style) -> list[InputImage]:
        """The style's pictures (touched, so their retention restarts); ``style.images_gone``
        when one was pruned."""
        out: list[InputImage] = []
        for sha in style.images:
            try:
                data, mime = await self.images.get(sha)
            except (KeyError, ImagePruned):
                raise StyleError("reference image gone", key="style.images_gone", name=style.name) from None
            out.append(InputImage(data, mime))
        return out

    async def image_refs(self, style: Style) -> list[str]:
        """The style's pictures as SHA-256 references for a job's ``images`` (already stored:
        nothing is read or copied), touched; ``style.images_gone`` when one was pruned, so the
        member hears it before anything is charged rather than when the job runs."""
        infos = await self.images.infos(list(style.images))
        if any(sha not in infos or infos[sha].pruned for sha in style.images):
            raise StyleError("reference image gone", key="style.images_gone", name=style.name)
        await self.images.touch(list(style.images))
        return list(style.images)

    async def keep_images(self) -> int:
        """Mark every style's pictures used now, so age-based pruning spares them; the prune
        loop calls this before pruning. Returns how many pictures styles refer to."""
        rows = await self.db.execute_fetchall("SELECT images FROM styles")
        shas: list[str] = []
        for (refs,) in rows:
            try:
                shas += [str(h) for h in json.loads(refs or "[]")]
            except ValueError:
                continue
        await self.images.touch(shas)
        return len(set(shas))
